//! What is sent: one request, encoded for every protocol from the same input values, so transports are compared on
//! the same work. Inputs are generated from the model's metadata (FP32 rows from a fixed seed) or read from a file.

use std::path::Path;

use bytes::Bytes;
use clap::ValueEnum;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::endpoint::Endpoint;
use crate::http1;
use crate::proto::{ModelInferRequest, model_infer_request};

/// How requests travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    /// REST, tensors as JSON arrays.
    RestJson,
    /// REST, tensors in Triton's binary tensor extension (inputs and outputs).
    RestBinary,
    /// gRPC `ModelInfer`, tensors as raw contents.
    Grpc,
    /// gRPC `ModelStreamInfer`: one stream per client, one request in flight on it.
    GrpcStream,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::RestJson => "rest-json",
            Protocol::RestBinary => "rest-binary",
            Protocol::Grpc => "grpc",
            Protocol::GrpcStream => "grpc-stream",
        }
    }

    pub fn is_grpc(self) -> bool {
        matches!(self, Protocol::Grpc | Protocol::GrpcStream)
    }
}

/// One model input, generated.
#[derive(Debug, Clone)]
pub struct Input {
    pub name: String,
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

/// The request, in every encoding.
#[derive(Debug, Clone)]
pub struct Workload {
    pub model: String,
    /// REST body with JSON tensors.
    pub json_body: Bytes,
    /// REST body with binary tensors, and the length of its JSON header.
    pub binary_body: Bytes,
    pub binary_header: usize,
    /// gRPC request; `None` when the request came from a JSON file.
    pub grpc: Option<ModelInferRequest>,
}

/// The concrete shape of an input of `rows` rows: a free first dimension is the batch, other free ones are 1.
pub fn concrete_shape(shape: &[i64], rows: usize) -> Vec<usize> {
    shape
        .iter()
        .enumerate()
        .map(|(axis, &d)| match d {
            d if d >= 0 => d as usize,
            _ if axis == 0 => rows,
            _ => 1,
        })
        .collect()
}

/// `count` values in [0, 10) from a fixed seed (xorshift), the same for the server and the in-process floor.
pub fn sample_values(count: usize) -> Vec<f32> {
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    (0..count)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % 10_000) as f32 / 1000.0
        })
        .collect()
}

impl Workload {
    /// `rows` rows of generated FP32 data for every input the model's metadata lists.
    pub async fn from_metadata(http: &Endpoint, model: &str, rows: usize) -> Result<Workload, String> {
        let path = format!("/v2/models/{model}");
        let answer = http1::once(http, "GET", &path, &[], b"").await?;
        if answer.status != 200 {
            return Err(format!("GET {path} answered {}: {}", answer.status, String::from_utf8_lossy(&answer.body)));
        }
        let metadata: Value =
            serde_json::from_slice(&answer.body).map_err(|e| format!("bad metadata from {path}: {e}"))?;
        let specs = metadata["inputs"].as_array().ok_or_else(|| format!("no inputs in the metadata of {model}"))?;
        let mut inputs = Vec::with_capacity(specs.len());
        for spec in specs {
            if spec["datatype"] != "FP32" {
                return Err(format!(
                    "input {} is {}; pass a body file for non-FP32 models",
                    spec["name"], spec["datatype"]
                ));
            }
            let shape: Vec<i64> = spec["shape"]
                .as_array()
                .ok_or("an input without a shape")?
                .iter()
                .map(|d| d.as_i64().unwrap_or(-1))
                .collect();
            let shape = concrete_shape(&shape, rows);
            let values = sample_values(shape.iter().product());
            inputs.push(Input { name: spec["name"].as_str().unwrap_or_default().to_owned(), shape, values });
        }
        Ok(Workload::from_inputs(model, &inputs))
    }

    /// The encodings of these inputs.
    pub fn from_inputs(model: &str, inputs: &[Input]) -> Workload {
        let json_inputs: Vec<Value> = inputs
            .iter()
            .map(|input| json!({"name": input.name, "shape": input.shape, "datatype": "FP32", "data": input.values}))
            .collect();
        let json_body = serde_json::to_vec(&json!({ "inputs": json_inputs })).unwrap_or_default();

        let raw: Vec<Vec<u8>> =
            inputs.iter().map(|input| input.values.iter().flat_map(|v| v.to_le_bytes()).collect()).collect();
        let binary_inputs: Vec<Value> = inputs
            .iter()
            .zip(&raw)
            .map(|(input, raw)| {
                let parameters = json!({"binary_data_size": raw.len()});
                json!({"name": input.name, "shape": input.shape, "datatype": "FP32", "parameters": parameters})
            })
            .collect();
        let header = json!({ "inputs": binary_inputs, "parameters": {"binary_data_output": true} });
        let mut binary_body = serde_json::to_vec(&header).unwrap_or_default();
        let binary_header = binary_body.len();
        for raw in &raw {
            binary_body.extend_from_slice(raw);
        }

        let grpc = ModelInferRequest {
            model_name: model.to_owned(),
            inputs: inputs
                .iter()
                .map(|input| model_infer_request::InferInputTensor {
                    name: input.name.clone(),
                    datatype: "FP32".to_owned(),
                    shape: input.shape.iter().map(|&d| d as i64).collect(),
                    ..Default::default()
                })
                .collect(),
            raw_input_contents: raw.into_iter().map(Bytes::from).collect(),
            ..Default::default()
        };
        Workload {
            model: model.to_owned(),
            json_body: Bytes::from(json_body),
            binary_body: Bytes::from(binary_body),
            binary_header,
            grpc: Some(grpc),
        }
    }

    /// A REST JSON request body read from a file, sent as it is (REST JSON only).
    pub fn from_body_file(model: &str, path: &Path) -> Result<Workload, String> {
        let body = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Ok(Workload {
            model: model.to_owned(),
            json_body: Bytes::from(body),
            binary_body: Bytes::new(),
            binary_header: 0,
            grpc: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_dimensions_become_rows_then_ones() {
        assert_eq!(concrete_shape(&[-1, 4], 3), vec![3, 4]);
        assert_eq!(concrete_shape(&[-1, 3, -1], 2), vec![2, 3, 1]);
    }

    #[test]
    fn encodings_carry_the_same_values() {
        let inputs = [Input { name: "x".to_owned(), shape: vec![1, 2], values: vec![1.5, 2.0] }];
        let workload = Workload::from_inputs("m", &inputs);
        let json: Value = serde_json::from_slice(&workload.json_body).unwrap();
        assert_eq!(json["inputs"][0]["data"], json!([1.5, 2.0]));
        let raw = &workload.binary_body[workload.binary_header..];
        assert_eq!(raw, [1.5f32.to_le_bytes(), 2.0f32.to_le_bytes()].concat());
        let grpc = workload.grpc.unwrap();
        assert_eq!(grpc.raw_input_contents[0].as_ref(), raw);
        assert_eq!(grpc.inputs[0].shape, vec![1, 2]);
    }
}

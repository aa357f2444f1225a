//! Reading an `MLmodel` file: the ONNX flavor's file and the tensor signature.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::repository::{DeclaredSignature, DeclaredTensor};
use crate::tensor::DataType;

/// What `MLmodel` says that matters here.
#[derive(Debug, Clone, PartialEq)]
pub struct MlModel {
    /// The ONNX flavor's file, relative to the model's artifacts.
    pub model_file: String,
    pub declared: Option<DeclaredSignature>,
}

/// Reads an `MLmodel` (YAML): it must have the `onnx` flavor; its tensor signature, when it has one, is returned to
/// be checked against the graph.
pub fn parse_mlmodel(text: &str) -> Result<MlModel, String> {
    #[derive(Deserialize)]
    struct Document {
        #[serde(default)]
        flavors: BTreeMap<String, serde_yaml_ng::Value>,
        signature: Option<SignatureText>,
    }
    #[derive(Deserialize)]
    struct SignatureText {
        inputs: Option<String>,
        outputs: Option<String>,
    }
    let document: Document = serde_yaml_ng::from_str(text).map_err(|e| format!("MLmodel is not valid: {e}"))?;
    let Some(onnx) = document.flavors.get("onnx") else {
        let flavors: Vec<&str> = document.flavors.keys().map(String::as_str).collect();
        return Err(format!(
            "it is not an ONNX model: its MLmodel has the flavors [{}], not 'onnx' (log it with mlflow.onnx.log_model)",
            flavors.join(", ")
        ));
    };
    let model_file =
        onnx.get("data").and_then(|v| v.as_str()).ok_or("the MLmodel's onnx flavor names no data file")?.to_owned();
    if model_file.is_empty() || model_file.contains(['/', '\\']) || model_file == "." || model_file == ".." {
        return Err(format!("the MLmodel's onnx flavor names '{model_file}', which is not a plain file name"));
    }
    let declared = match document.signature {
        None => None,
        Some(signature) => {
            let inputs = signature.inputs.as_deref().map(tensor_specs).transpose()?;
            let outputs = signature.outputs.as_deref().map(tensor_specs).transpose()?;
            match (inputs, outputs) {
                // Column-based signatures (tables) name no tensors to compare with the graph.
                (Some(None), _) | (_, Some(None)) => None,
                (inputs, outputs) => Some(DeclaredSignature {
                    inputs: inputs.flatten().unwrap_or_default(),
                    outputs: outputs.flatten().unwrap_or_default(),
                }),
            }
        }
    };
    Ok(MlModel { model_file, declared })
}

/// A signature's `inputs` or `outputs` (a JSON string): tensors, or `None` for a column-based one.
fn tensor_specs(json: &str) -> Result<Option<Vec<DeclaredTensor>>, String> {
    #[derive(Deserialize)]
    struct Spec {
        name: Option<String>,
        #[serde(rename = "type")]
        kind: String,
        #[serde(rename = "tensor-spec")]
        tensor: Option<TensorSpec>,
    }
    #[derive(Deserialize)]
    struct TensorSpec {
        dtype: String,
        shape: Vec<i64>,
    }
    let specs: Vec<Spec> =
        serde_json::from_str(json).map_err(|e| format!("the MLmodel signature is not valid: {e}"))?;
    if specs.iter().any(|s| s.kind != "tensor") {
        return Ok(None);
    }
    specs
        .into_iter()
        .map(|spec| {
            let tensor = spec.tensor.ok_or("a tensor in the MLmodel signature has no tensor-spec")?;
            let datatype = numpy_datatype(&tensor.dtype).ok_or_else(|| {
                format!("the MLmodel signature has dtype '{}', which has no tensor type", tensor.dtype)
            })?;
            Ok(DeclaredTensor { name: spec.name, datatype, shape: tensor.shape })
        })
        .collect::<Result<Vec<_>, String>>()
        .map(Some)
}

/// numpy's dtype names, as MLflow writes them.
fn numpy_datatype(dtype: &str) -> Option<DataType> {
    Some(match dtype {
        "bool" => DataType::Bool,
        "uint8" => DataType::Uint8,
        "uint16" => DataType::Uint16,
        "uint32" => DataType::Uint32,
        "uint64" => DataType::Uint64,
        "int8" => DataType::Int8,
        "int16" => DataType::Int16,
        "int32" => DataType::Int32,
        "int64" => DataType::Int64,
        "float32" => DataType::Fp32,
        "float64" => DataType::Fp64,
        "str" | "object" | "bytes" => DataType::Bytes,
        _ => return None,
    })
}

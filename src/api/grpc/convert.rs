//! Between the gRPC messages and the transport-agnostic API types.

use std::time::Duration;

use bytes::Bytes;

use super::proto;
use crate::api::TensorSpec;
use crate::api::VersionPolicyView;
use crate::api::{ApiError, InferRequest, InferResponse, ModelConfigView, ModelMetadata, NamedTensor, StatisticsView};
use crate::telemetry::DurationTotal;
use crate::tensor::{DataType, Tensor, element_count, push_bytes_element};

/// Decodes an inference request. Inputs carry either typed `contents` or, all of them, `raw_input_contents`
/// (taken without copying).
pub fn infer_request(request: proto::ModelInferRequest) -> Result<InferRequest, ApiError> {
    let raw = request.raw_input_contents;
    if !raw.is_empty() && raw.len() != request.inputs.len() {
        return Err(ApiError::malformed(format!(
            "{} raw_input_contents for {} inputs: with raw contents, every input has one",
            raw.len(),
            request.inputs.len()
        )));
    }
    let mut raw = raw.into_iter();
    let inputs = request
        .inputs
        .into_iter()
        .map(|input| {
            let name = input.name;
            let datatype = DataType::parse(&input.datatype).ok_or_else(|| {
                ApiError::malformed(format!("input '{name}' has unknown datatype '{}'", input.datatype))
            })?;
            let shape =
                input.shape.iter().map(|&d| usize::try_from(d)).collect::<Result<Vec<usize>, _>>().map_err(|_| {
                    ApiError::malformed(format!("input '{name}' has a negative dimension: {:?}", input.shape))
                })?;
            let tensor = match (raw.next(), input.contents) {
                (Some(bytes), _) => Tensor::new(datatype, shape, bytes).map_err(|e| e.to_string()),
                (None, Some(contents)) => typed_tensor(datatype, shape, contents),
                (None, None) => Err("it has no contents".to_owned()),
            }
            .map_err(|e| ApiError::malformed(format!("input '{name}': {e}")))?;
            Ok(NamedTensor { name, tensor })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    let outputs = (!request.outputs.is_empty()).then(|| request.outputs.into_iter().map(|o| o.name).collect());
    let timeout = match request.parameters.get("timeout").and_then(|p| p.parameter_choice.as_ref()) {
        Some(proto::infer_parameter::ParameterChoice::Int64Param(us)) => u64::try_from(*us).ok(),
        Some(proto::infer_parameter::ParameterChoice::Uint64Param(us)) => Some(*us),
        _ => None,
    };
    let timeout = timeout.filter(|&us| us > 0).map(Duration::from_micros);
    let routing_key = match request.parameters.get("routing_key").and_then(|p| p.parameter_choice.as_ref()) {
        Some(proto::infer_parameter::ParameterChoice::StringParam(key)) => Some(key.clone()),
        _ => None,
    };
    let id = (!request.id.is_empty()).then_some(request.id);
    Ok(InferRequest { id, inputs, outputs, timeout, routing_key })
}

/// Typed contents to our little-endian bytes; narrower integers arrive in the 32-bit fields and must fit.
fn typed_tensor(datatype: DataType, shape: Vec<usize>, c: proto::InferTensorContents) -> Result<Tensor, String> {
    let expected = element_count(&shape).map_err(|e| e.to_string())?;
    macro_rules! encode {
        ($values:expr, $t:ty) => {{
            let values = $values;
            if values.len() != expected {
                return Err(format!("shape {shape:?} needs {expected} values, {} were given", values.len()));
            }
            let mut out = Vec::with_capacity(expected * std::mem::size_of::<$t>());
            for value in values {
                let value = <$t>::try_from(value).map_err(|_| format!("{value} does not fit {datatype}"))?;
                out.extend_from_slice(&value.to_le_bytes());
            }
            Bytes::from(out)
        }};
    }
    let data = match datatype {
        DataType::Bool => encode!(c.bool_contents.into_iter().map(u8::from).collect::<Vec<u8>>(), u8),
        DataType::Uint8 => encode!(c.uint_contents, u8),
        DataType::Uint16 => encode!(c.uint_contents, u16),
        DataType::Uint32 => encode!(c.uint_contents, u32),
        DataType::Uint64 => encode!(c.uint64_contents, u64),
        DataType::Int8 => encode!(c.int_contents, i8),
        DataType::Int16 => encode!(c.int_contents, i16),
        DataType::Int32 => encode!(c.int_contents, i32),
        DataType::Int64 => encode!(c.int64_contents, i64),
        DataType::Fp32 => encode!(c.fp32_contents, f32),
        DataType::Fp64 => encode!(c.fp64_contents, f64),
        DataType::Bytes => {
            if c.bytes_contents.len() != expected {
                return Err(format!("shape {shape:?} needs {expected} values, {} were given", c.bytes_contents.len()));
            }
            let mut out = Vec::new();
            for element in &c.bytes_contents {
                push_bytes_element(&mut out, element).map_err(|e| e.to_string())?;
            }
            Bytes::from(out)
        }
    };
    Tensor::new(datatype, shape, data).map_err(|e| e.to_string())
}

/// Outputs go back as `raw_output_contents`, as Triton sends them; the tensors' bytes are shared, not copied.
pub fn infer_response(response: InferResponse) -> proto::ModelInferResponse {
    let mut outputs = Vec::with_capacity(response.outputs.len());
    let mut raw = Vec::with_capacity(response.outputs.len());
    for output in response.outputs {
        outputs.push(proto::model_infer_response::InferOutputTensor {
            name: output.name,
            datatype: output.tensor.dtype().as_str().to_owned(),
            shape: output.tensor.shape().iter().map(|&d| d as i64).collect(),
            ..Default::default()
        });
        raw.push(output.tensor.data().clone());
    }
    let parameters = response
        .variant
        .map(|variant| {
            let choice = proto::infer_parameter::ParameterChoice::StringParam(variant);
            ("variant".to_owned(), proto::InferParameter { parameter_choice: Some(choice) })
        })
        .into_iter()
        .collect();
    proto::ModelInferResponse {
        model_name: response.model_name,
        model_version: response.model_version,
        id: response.id.unwrap_or_default(),
        parameters,
        outputs,
        raw_output_contents: raw,
    }
}

fn tensor_metadata(spec: TensorSpec) -> proto::model_metadata_response::TensorMetadata {
    proto::model_metadata_response::TensorMetadata {
        name: spec.name,
        datatype: spec.datatype.as_str().to_owned(),
        shape: spec.shape,
    }
}

pub fn model_metadata(metadata: ModelMetadata) -> proto::ModelMetadataResponse {
    proto::ModelMetadataResponse {
        name: metadata.name,
        versions: metadata.versions,
        platform: metadata.platform.to_owned(),
        inputs: metadata.inputs.into_iter().map(tensor_metadata).collect(),
        outputs: metadata.outputs.into_iter().map(tensor_metadata).collect(),
    }
}

fn data_type(name: &str) -> i32 {
    proto::DataType::from_str_name(name).unwrap_or(proto::DataType::TypeInvalid) as i32
}

pub fn model_config(view: ModelConfigView) -> proto::ModelConfig {
    use proto::model_version_policy::{All, Latest, PolicyChoice, Specific};
    let policy = match view.version_policy {
        VersionPolicyView::Latest { num_versions } => PolicyChoice::Latest(Latest { num_versions }),
        VersionPolicyView::All {} => PolicyChoice::All(All {}),
        VersionPolicyView::Specific { versions } => {
            PolicyChoice::Specific(Specific { versions: versions.into_iter().map(|v| v as i64).collect() })
        }
    };
    proto::ModelConfig {
        name: view.name,
        platform: view.platform.to_owned(),
        backend: view.backend.to_owned(),
        version_policy: Some(proto::ModelVersionPolicy { policy_choice: Some(policy) }),
        max_batch_size: i32::try_from(view.max_batch_size).unwrap_or(i32::MAX),
        input: view
            .input
            .into_iter()
            .map(|t| proto::ModelInput {
                name: t.name,
                data_type: data_type(t.data_type),
                dims: t.dims,
                ..Default::default()
            })
            .collect(),
        output: view
            .output
            .into_iter()
            .map(|t| proto::ModelOutput {
                name: t.name,
                data_type: data_type(t.data_type),
                dims: t.dims,
                ..Default::default()
            })
            .collect(),
        scheduling_choice: view.dynamic_batching.map(|b| {
            proto::model_config::SchedulingChoice::DynamicBatching(proto::ModelDynamicBatching {
                preferred_batch_size: b
                    .preferred_batch_size
                    .iter()
                    .map(|&s| i32::try_from(s).unwrap_or(i32::MAX))
                    .collect(),
                max_queue_delay_microseconds: b.max_queue_delay_microseconds,
                preserve_ordering: false,
                default_queue_policy: Some(proto::ModelQueuePolicy {
                    default_timeout_microseconds: b.default_queue_policy.default_timeout_microseconds,
                    max_queue_size: u32::try_from(b.default_queue_policy.max_queue_size).unwrap_or(u32::MAX),
                    allow_timeout_override: true,
                    ..Default::default()
                }),
            })
        }),
        instance_group: view
            .instance_group
            .into_iter()
            .map(|g| proto::ModelInstanceGroup {
                name: format!("{}_{}", view_kind_name(g.kind), g.count),
                kind: proto::model_instance_group::Kind::from_str_name(g.kind)
                    .unwrap_or(proto::model_instance_group::Kind::Cpu) as i32,
                count: i32::try_from(g.count).unwrap_or(i32::MAX),
                gpus: g.gpus.iter().map(|&gpu| i32::try_from(gpu).unwrap_or(i32::MAX)).collect(),
            })
            .collect(),
        default_model_filename: view.default_model_filename.to_owned(),
    }
}

fn view_kind_name(kind: &str) -> &str {
    kind.strip_prefix("KIND_").unwrap_or(kind)
}

fn duration(total: DurationTotal) -> Option<proto::StatisticDuration> {
    Some(proto::StatisticDuration { count: total.count, ns: total.ns })
}

pub fn statistics(view: StatisticsView) -> proto::ModelStatisticsResponse {
    let model_stats = view
        .model_stats
        .into_iter()
        .map(|m| {
            let s = m.inference_stats;
            proto::ModelStatistics {
                name: m.name,
                version: m.version,
                last_inference: m.last_inference,
                inference_count: m.inference_count,
                execution_count: m.execution_count,
                inference_stats: Some(proto::InferStatistics {
                    success: duration(s.success),
                    fail: duration(s.fail),
                    queue: duration(s.queue),
                    compute_input: duration(s.compute_input),
                    compute_infer: duration(s.compute_infer),
                    compute_output: duration(s.compute_output),
                    cache_hit: duration(s.cache_hit),
                    cache_miss: duration(DurationTotal::default()),
                }),
                batch_stats: m
                    .batch_stats
                    .into_iter()
                    .map(|b| proto::InferBatchStatistics {
                        batch_size: b.batch_size,
                        compute_input: duration(b.compute_input),
                        compute_infer: duration(b.compute_infer),
                        compute_output: duration(b.compute_output),
                    })
                    .collect(),
            }
        })
        .collect();
    proto::ModelStatisticsResponse { model_stats }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contents() -> proto::InferTensorContents {
        proto::InferTensorContents::default()
    }

    #[test]
    fn typed_contents_encode_and_check_ranges() {
        let t = typed_tensor(
            DataType::Int8,
            vec![2],
            proto::InferTensorContents { int_contents: vec![-1, 127], ..contents() },
        )
        .unwrap();
        assert_eq!(t.data().as_ref(), &[0xff, 0x7f]);
        assert!(
            typed_tensor(DataType::Int8, vec![1], proto::InferTensorContents { int_contents: vec![128], ..contents() })
                .is_err()
        );
        assert!(
            typed_tensor(
                DataType::Fp32,
                vec![2],
                proto::InferTensorContents { fp32_contents: vec![1.0], ..contents() }
            )
            .is_err()
        );
        let s = typed_tensor(
            DataType::Bytes,
            vec![2],
            proto::InferTensorContents { bytes_contents: vec![Bytes::from_static(b"ab"), Bytes::new()], ..contents() },
        )
        .unwrap();
        assert_eq!(s.bytes_elements().collect::<Vec<_>>(), [b"ab".as_slice(), b"".as_slice()]);
    }

    #[test]
    fn raw_contents_must_cover_every_input() {
        let input = |name: &str| proto::model_infer_request::InferInputTensor {
            name: name.into(),
            datatype: "FP32".into(),
            shape: vec![1],
            ..Default::default()
        };
        let request = proto::ModelInferRequest {
            inputs: vec![input("a"), input("b")],
            raw_input_contents: vec![Bytes::from_static(&[0, 0, 128, 63])],
            ..Default::default()
        };
        assert!(matches!(infer_request(request), Err(ApiError::MalformedRequest(_))));
        let request = proto::ModelInferRequest {
            inputs: vec![input("a")],
            raw_input_contents: vec![Bytes::from_static(&[0, 0, 128, 63])],
            ..Default::default()
        };
        let decoded = infer_request(request).unwrap();
        assert_eq!(decoded.inputs[0].tensor.data().as_ref(), 1.0f32.to_le_bytes());
    }
}

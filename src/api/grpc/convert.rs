//! Between the gRPC messages and the transport-agnostic API types.

use std::time::Duration;

use bytes::Bytes;

use super::proto;
use super::proto::infer_parameter::ParameterChoice as Choice;
use crate::api::TensorSpec;
use crate::api::VersionPolicyView;
use crate::api::shared_memory::{
    BYTE_SIZE_PARAMETER, OFFSET_PARAMETER, OutputTarget, OutputTargets, REGION_PARAMETER, RegionStatus, SharedMemory,
    SharedRef, target_of,
};
use crate::api::{ApiError, InferRequest, InferResponse, ModelConfigView, ModelMetadata, NamedTensor, StatisticsView};
use crate::telemetry::DurationTotal;
use crate::tensor::{DataType, Tensor, element_count, push_bytes_element};

/// The parameters of a tensor or a request.
type Parameters = std::collections::HashMap<String, proto::InferParameter>;

/// Decodes an inference request, and where the outputs that name a shared-memory region go. Inputs carry typed
/// `contents`, or a shared-memory region, or (all the others) `raw_input_contents`, taken without copying.
pub fn infer_request(
    request: proto::ModelInferRequest,
    shared_memory: &SharedMemory,
) -> Result<(InferRequest, OutputTargets), ApiError> {
    let shared = request
        .inputs
        .iter()
        .map(|input| shared_ref("input", &input.name, &input.parameters))
        .collect::<Result<Vec<_>, ApiError>>()?;
    let raw = request.raw_input_contents;
    let in_band = shared.iter().filter(|at| at.is_none()).count();
    if !raw.is_empty() && raw.len() != in_band {
        return Err(ApiError::malformed(format!(
            "{} raw_input_contents for {in_band} inputs not in shared memory: with raw contents, every such input has one",
            raw.len(),
        )));
    }
    let mut raw = raw.into_iter();
    let inputs = request
        .inputs
        .into_iter()
        .zip(shared)
        .map(|(input, at)| {
            let name = input.name;
            let datatype = DataType::parse(&input.datatype).ok_or_else(|| {
                ApiError::malformed(format!("input '{name}' has unknown datatype '{}'", input.datatype))
            })?;
            let shape =
                input.shape.iter().map(|&d| usize::try_from(d)).collect::<Result<Vec<usize>, _>>().map_err(|_| {
                    ApiError::malformed(format!("input '{name}' has a negative dimension: {:?}", input.shape))
                })?;
            if let Some(at) = at {
                if input.contents.is_some() {
                    return Err(ApiError::malformed(format!(
                        "input '{name}' names a shared memory region and also has contents"
                    )));
                }
                return shared_memory.read_input(name, datatype, shape, &at);
            }
            let tensor = match (raw.next(), input.contents) {
                (Some(bytes), _) => Tensor::new(datatype, shape, bytes).map_err(|e| e.to_string()),
                (None, Some(contents)) => typed_tensor(datatype, shape, *contents),
                (None, None) => Err("it has no contents".to_owned()),
            }
            .map_err(|e| ApiError::malformed(format!("input '{name}': {e}")))?;
            Ok(NamedTensor { name, tensor })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    let mut targets = OutputTargets::new();
    for output in &request.outputs {
        if let Some(at) = shared_ref("output", &output.name, &output.parameters)? {
            targets.push(shared_memory.output_target(output.name.clone(), &at)?);
        }
    }
    let outputs = (!request.outputs.is_empty()).then(|| request.outputs.into_iter().map(|o| o.name).collect());
    let timeout = match request.parameters.get("timeout").and_then(|p| p.parameter_choice.as_ref()) {
        Some(Choice::Int64Param(us)) => u64::try_from(*us).ok(),
        Some(Choice::Uint64Param(us)) => Some(*us),
        _ => None,
    };
    let timeout = timeout.filter(|&us| us > 0).map(Duration::from_micros);
    let routing_key = match request.parameters.get("routing_key").and_then(|p| p.parameter_choice.as_ref()) {
        Some(Choice::StringParam(key)) => Some(key.clone()),
        _ => None,
    };
    let id = (!request.id.is_empty()).then_some(request.id);
    Ok((InferRequest { id, inputs, outputs, timeout, routing_key }, targets))
}

/// The shared-memory region a tensor's parameters name, if any.
fn shared_ref(kind: &str, name: &str, parameters: &Parameters) -> Result<Option<SharedRef>, ApiError> {
    if parameters.is_empty() {
        return Ok(None);
    }
    let wrong = |key: &str, what: &str| ApiError::malformed(format!("{kind} '{name}': {key} must be {what}"));
    let region = match parameters.get(REGION_PARAMETER).and_then(|p| p.parameter_choice.as_ref()) {
        None => None,
        Some(Choice::StringParam(region)) => Some(region.clone()),
        Some(_) => return Err(wrong(REGION_PARAMETER, "a string")),
    };
    let size = |key: &str| match parameters.get(key).and_then(|p| p.parameter_choice.as_ref()) {
        None => Ok(None),
        Some(Choice::Uint64Param(value)) => Ok(Some(*value)),
        Some(Choice::Int64Param(value)) => u64::try_from(*value).map(Some).map_err(|_| wrong(key, "0 or more")),
        Some(_) => Err(wrong(key, "an integer")),
    };
    SharedRef::from_parameters((kind, name), region, size(OFFSET_PARAMETER)?, size(BYTE_SIZE_PARAMETER)?)
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

/// Outputs go back as `raw_output_contents`, as Triton sends them; the tensors' bytes are shared, not copied. An
/// output that names a shared-memory region is written into it, and its raw contents are left empty, so that the
/// others keep their positions (clients find an output's contents by its index).
pub fn infer_response(
    response: InferResponse,
    variant: Option<String>,
    targets: &[OutputTarget],
) -> Result<proto::ModelInferResponse, ApiError> {
    let mut outputs = Vec::with_capacity(response.outputs.len());
    let mut raw = Vec::with_capacity(response.outputs.len());
    for output in response.outputs {
        match target_of(targets, &output.name) {
            Some(target) => {
                target.write(&output.tensor)?;
                raw.push(Bytes::new());
            }
            None => raw.push(output.tensor.data().clone()),
        }
        outputs.push(proto::model_infer_response::InferOutputTensor {
            name: output.name,
            datatype: output.tensor.dtype().as_str().to_owned(),
            shape: output.tensor.shape().iter().map(|&d| d as i64).collect(),
            ..Default::default()
        });
    }
    let parameters =
        variant.map(|variant| ("variant".to_owned(), parameter(Choice::StringParam(variant)))).into_iter().collect();
    Ok(proto::ModelInferResponse {
        model_name: response.model_name,
        model_version: response.model_version,
        id: response.id.unwrap_or_default(),
        parameters,
        outputs,
        raw_output_contents: raw,
    })
}

fn parameter(choice: Choice) -> proto::InferParameter {
    proto::InferParameter { parameter_choice: Some(choice) }
}

/// The registered regions, by name.
pub fn shared_memory_status(regions: Vec<RegionStatus>) -> proto::SystemSharedMemoryStatusResponse {
    let regions = regions
        .into_iter()
        .map(|r| {
            let status = proto::system_shared_memory_status_response::RegionStatus {
                name: r.name.clone(),
                key: r.key,
                offset: r.offset,
                byte_size: r.byte_size,
            };
            (r.name, status)
        })
        .collect();
    proto::SystemSharedMemoryStatusResponse { regions }
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
        assert!(matches!(infer_request(request, &SharedMemory::default()), Err(ApiError::MalformedRequest(_))));
        let request = proto::ModelInferRequest {
            inputs: vec![input("a")],
            raw_input_contents: vec![Bytes::from_static(&[0, 0, 128, 63])],
            ..Default::default()
        };
        let (decoded, _) = infer_request(request, &SharedMemory::default()).unwrap();
        assert_eq!(decoded.inputs[0].tensor.data().as_ref(), 1.0f32.to_le_bytes());
    }
}

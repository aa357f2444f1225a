//! The model configuration endpoint, in the shape Triton's clients read (`max_batch_size`, `input`/`output` with
//! `dims` excluding the batch dimension, `dynamic_batching`, `instance_group`).

use serde::Serialize;

use super::ApiError;
use crate::backend::{Device, TensorSpec};
use crate::lifecycle::ModelTable;
use crate::repository::VersionPolicy;
use crate::tensor::DataType;

#[derive(Debug, Serialize)]
pub struct ModelConfigView {
    pub name: String,
    pub version: String,
    pub platform: &'static str,
    pub backend: &'static str,
    pub version_policy: VersionPolicyView,
    pub max_batch_size: usize,
    pub input: Vec<TensorConfig>,
    pub output: Vec<TensorConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dynamic_batching: Option<DynamicBatching>,
    pub instance_group: Vec<InstanceGroup>,
    pub default_model_filename: &'static str,
}

/// Triton's version policy object: `{"latest": {"num_versions": 1}}`, `{"all": {}}` or `{"specific": {...}}`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VersionPolicyView {
    Latest { num_versions: u32 },
    All {},
    Specific { versions: Vec<u64> },
}

#[derive(Debug, Serialize)]
pub struct TensorConfig {
    pub name: String,
    pub data_type: &'static str,
    pub dims: Vec<i64>,
}

#[derive(Debug, Serialize)]
pub struct DynamicBatching {
    pub preferred_batch_size: Vec<usize>,
    pub max_queue_delay_microseconds: u64,
    pub default_queue_policy: QueuePolicy,
}

#[derive(Debug, Serialize)]
pub struct QueuePolicy {
    pub max_queue_size: usize,
    pub default_timeout_microseconds: u64,
}

#[derive(Debug, Serialize)]
pub struct InstanceGroup {
    pub count: usize,
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub gpus: Vec<u32>,
}

/// The configuration a version is served with; without a version, the one unversioned requests reach.
pub fn model_config(table: &ModelTable, model: &str, version: Option<&str>) -> Result<ModelConfigView, ApiError> {
    let serving = table.resolve(model, version)?;
    let scheduling = serving.scheduler.config();
    let policy = &scheduling.policy;
    let batched = policy.max_batch_size > 0;
    let tensor = |spec: &TensorSpec| TensorConfig {
        name: spec.name.clone(),
        data_type: triton_type(spec.datatype),
        dims: if batched { spec.shape[1..].to_vec() } else { spec.shape.clone() },
    };
    Ok(ModelConfigView {
        name: serving.name.clone(),
        version: serving.version.to_string(),
        platform: super::PLATFORM,
        backend: serving.backend_name,
        version_policy: match &serving.spec.config.version_policy {
            VersionPolicy::Latest(n) => VersionPolicyView::Latest { num_versions: *n },
            VersionPolicy::All => VersionPolicyView::All {},
            VersionPolicy::Specific(versions) => VersionPolicyView::Specific { versions: versions.clone() },
        },
        max_batch_size: policy.max_batch_size,
        input: serving.signature.inputs.iter().map(tensor).collect(),
        output: serving.signature.outputs.iter().map(tensor).collect(),
        dynamic_batching: batched.then(|| DynamicBatching {
            preferred_batch_size: policy.preferred_batch_sizes.clone(),
            max_queue_delay_microseconds: policy.max_queue_delay.as_micros() as u64,
            default_queue_policy: QueuePolicy {
                max_queue_size: policy.max_queue_size,
                default_timeout_microseconds: scheduling.default_timeout.map_or(0, |t| t.as_micros() as u64),
            },
        }),
        instance_group: vec![match serving.device {
            Device::Cpu => InstanceGroup { count: scheduling.instances, kind: "KIND_CPU", gpus: Vec::new() },
            Device::Cuda(gpu) => InstanceGroup { count: scheduling.instances, kind: "KIND_GPU", gpus: vec![gpu] },
        }],
        default_model_filename: crate::repository::local::MODEL_FILE,
    })
}

/// Triton's names for the datatypes (`TYPE_FP32`, ..., `TYPE_STRING` for BYTES).
fn triton_type(datatype: DataType) -> &'static str {
    match datatype {
        DataType::Bool => "TYPE_BOOL",
        DataType::Uint8 => "TYPE_UINT8",
        DataType::Uint16 => "TYPE_UINT16",
        DataType::Uint32 => "TYPE_UINT32",
        DataType::Uint64 => "TYPE_UINT64",
        DataType::Int8 => "TYPE_INT8",
        DataType::Int16 => "TYPE_INT16",
        DataType::Int32 => "TYPE_INT32",
        DataType::Int64 => "TYPE_INT64",
        DataType::Fp32 => "TYPE_FP32",
        DataType::Fp64 => "TYPE_FP64",
        DataType::Bytes => "TYPE_STRING",
    }
}

//! Model repository sources. Every source yields the same [`ModelSpec`]s, so the lifecycle does not care where a
//! model came from.

mod device;
pub mod local;
pub mod mlflow;
mod model_config;
mod observe_config;
mod traffic_config;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use thiserror::Error;

pub use device::Device;
pub use model_config::{
    ArenaStrategy, BackendChoice, BatchingConfig, ConvSearch, CudaConfig, DistributionChoice, ModelConfig,
    MonitoringConfig, OutputMonitoring, VersionPolicy, WarmupConfig,
};
pub use observe_config::{FeedbackConfig, FeedbackTask, LogMode, LogSink, LoggingConfig};
pub use traffic_config::{RolloutConfig, ShadowConfig, Target, TrafficConfig, VariantConfig};

/// One model version to load: where its file is and how the model is configured.
#[derive(Debug, Clone)]
pub struct ModelSpec {
    pub name: String,
    pub version: u64,
    pub model_path: PathBuf,
    pub config: Arc<ModelConfig>,
    /// The signature the source declares (MLflow's `MLmodel`), checked against the graph at load.
    pub declared: Option<Arc<DeclaredSignature>>,
}

/// A signature as a source declares it, to be checked against the model's graph.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DeclaredSignature {
    pub inputs: Vec<DeclaredTensor>,
    pub outputs: Vec<DeclaredTensor>,
}

/// One declared tensor; an unnamed one is matched by position, a -1 dimension by anything.
#[derive(Debug, Clone, PartialEq)]
pub struct DeclaredTensor {
    pub name: Option<String>,
    pub datatype: crate::tensor::DataType,
    pub shape: Vec<i64>,
}

/// What a source found for one model: the versions its policy selects, or why the model cannot be served.
#[derive(Debug)]
pub struct ModelListing {
    pub name: String,
    pub versions: Result<Vec<VersionListing>, RepositoryError>,
    /// Names the source gives versions (MLflow aliases), alias → version.
    pub aliases: BTreeMap<String, u64>,
    /// The version requests that name none go to; `None`: the highest ready one.
    pub default_version: Option<u64>,
}

impl ModelListing {
    /// A listing without aliases, whose unversioned requests go to the highest ready version.
    pub fn plain(name: String, versions: Result<Vec<VersionListing>, RepositoryError>) -> ModelListing {
        ModelListing { name, versions, aliases: BTreeMap::new(), default_version: None }
    }
}

/// One selected version: ready to load, or refused with a reason (e.g. the folder lacks its model file).
#[derive(Debug)]
pub struct VersionListing {
    pub version: u64,
    pub spec: Result<ModelSpec, RepositoryError>,
}

#[derive(Debug, Error)]
pub enum RepositoryError {
    #[error("cannot read {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("invalid {path}: {message}")]
    ModelConfig { path: PathBuf, message: String },
    #[error("{path} holds no numeric version folder")]
    NoVersions { path: PathBuf },
    #[error("version {version} is named in the version policy but {path} does not exist")]
    MissingVersion { version: u64, path: PathBuf },
    #[error("{path} is missing: a version folder must hold model.onnx")]
    MissingModelFile { path: PathBuf },
    #[error("{0}")]
    Source(String),
}

/// Model names travel in URLs and metric labels: letters, digits, '_', '-' and '.', not starting with '.'.
pub fn is_valid_model_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_names() {
        for ok in ["iris", "my-model_2", "resnet.v1"] {
            assert!(is_valid_model_name(ok), "{ok}");
        }
        for bad in ["", ".hidden", "..", "a/b", "a b", "ü", &"x".repeat(129)] {
            assert!(!is_valid_model_name(bad), "{bad}");
        }
    }
}

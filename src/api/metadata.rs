//! Server and model metadata, and model readiness.

use super::ApiError;
use crate::backend::{Device, TensorSpec};
use crate::lifecycle::{LookupError, ModelTable, VersionState};

/// The platform name Triton's clients know for ONNX models.
pub const PLATFORM: &str = "onnxruntime_onnx";

/// `GET /v2`: who we are and which protocol extensions we serve.
#[derive(Debug, serde::Serialize)]
pub struct ServerMetadata {
    pub name: &'static str,
    pub version: &'static str,
    pub extensions: Vec<&'static str>,
}

/// `shared_memory`: whether the system shared-memory extension is on (`--shared-memory`).
pub fn server_metadata(shared_memory: bool) -> ServerMetadata {
    // Triton's extensions we serve: binary tensors over REST, the model configuration, repository and statistics
    // endpoints, and system shared memory when it is on.
    let mut extensions = vec!["binary_tensor_data", "model_configuration", "model_repository", "statistics"];
    if shared_memory {
        extensions.push("system_shared_memory");
    }
    ServerMetadata { name: "infergate", version: env!("CARGO_PKG_VERSION"), extensions }
}

/// `GET /v2/models/{m}[/versions/{v}]`.
#[derive(Debug, serde::Serialize)]
pub struct ModelMetadata {
    pub name: String,
    pub versions: Vec<String>,
    pub platform: &'static str,
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
    /// Where the version runs and what was changed to serve it; an extension of the protocol's metadata object.
    pub parameters: MetadataParameters,
}

#[derive(Debug, serde::Serialize)]
pub struct MetadataParameters {
    pub backend: &'static str,
    pub device: Device,
    /// The ONNX Runtime execution provider the version runs on ("tract" for the embedded backend).
    pub execution_provider: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// The model's metadata; without a version, the signature is the one of the version unversioned requests reach.
pub fn model_metadata(table: &ModelTable, model: &str, version: Option<&str>) -> Result<ModelMetadata, ApiError> {
    let serving = table.resolve(model, version)?;
    let entry = table.entry(model)?;
    let versions = entry
        .versions
        .load()
        .versions
        .iter()
        .filter(|(_, state)| matches!(state, VersionState::Ready(_)))
        .map(|(v, _)| v.to_string())
        .collect();
    Ok(ModelMetadata {
        name: serving.name.clone(),
        versions,
        platform: PLATFORM,
        inputs: serving.signature.inputs.clone(),
        outputs: serving.signature.outputs.clone(),
        parameters: MetadataParameters {
            backend: serving.backend_name,
            device: serving.device,
            execution_provider: match (serving.backend_name, serving.device) {
                ("ort", Device::Cuda(_)) => "CUDAExecutionProvider",
                ("ort", Device::Cpu) => "CPUExecutionProvider",
                _ => "tract",
            },
            notes: serving.signature.notes.clone(),
        },
    })
}

/// Whether the model (or the given version) can take requests now.
pub fn model_ready(table: &ModelTable, model: &str, version: Option<&str>) -> Result<(), ApiError> {
    match table.resolve(model, version) {
        // An on-demand version not loaded yet answers its first request (which loads it): it is ready to.
        Ok(_) | Err(LookupError::NotLoaded { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

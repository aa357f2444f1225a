//! Transport-agnostic API operations. REST and gRPC decode into these types, call these functions and encode
//! what they return; each transport maps [`ApiError`] to its status codes in one place.

mod access;
pub mod grpc;
pub mod http;
mod infer;
mod model_config;
mod repository;
mod statistics;
mod traffic;
mod webhook;

use thiserror::Error;

pub use access::{API_KEY_HEADER, ApiKeys, ModelControl};
pub use infer::{
    InferOutput, InferRequest, InferResponse, NamedTensor, ROUTING_KEY_HEADER, VARIANT_HEADER, infer, infer_routed,
    order_inputs, resolve, route,
};
pub use model_config::{ModelConfigView, VersionPolicyView, model_config};
pub use repository::{IndexRow, load_model, repository_index, unload_model};
pub use statistics::{StatisticsView, statistics};
pub use traffic::{TrafficView, rollout, set_traffic, traffic};
pub use webhook::{Delivery, MlflowHook};

use crate::backend::{BackendError, Device, TensorSpec};
use crate::lifecycle::{LookupError, ModelTable};
use crate::scheduler::SchedulerError;

/// Every way an API call can fail, whatever the transport.
#[derive(Debug, Error)]
pub enum ApiError {
    #[error("{0}")]
    ModelNotFound(String),
    #[error("{0}")]
    ModelUnavailable(String),
    /// The request cannot be decoded (malformed JSON, bad tensor data).
    #[error("{0}")]
    MalformedRequest(String),
    /// The request decodes but does not fit the model's signature.
    #[error("{0}")]
    InvalidInput(String),
    #[error("request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    /// The request asks for more than a configured limit; the message names the limit.
    #[error("{0}")]
    LimitExceeded(String),
    /// The client did not send its whole request in time.
    #[error("{0}")]
    RequestTimeout(String),
    #[error("model '{model}' version {version} is overloaded; retry later")]
    Overloaded { model: String, version: u64 },
    #[error("the request's deadline passed before it was computed")]
    DeadlineExceeded,
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    /// The backend failed; the message (from [`BackendError`]) says how.
    #[error("{0}")]
    Inference(String),
    #[error("the server is shutting down")]
    ShuttingDown,
    /// A management call without valid credentials.
    #[error("{0}")]
    Unauthorized(String),
    /// A management call while management is disabled.
    #[error("{0}")]
    Forbidden(String),
}

impl ApiError {
    pub fn malformed(message: impl Into<String>) -> ApiError {
        ApiError::MalformedRequest(message.into())
    }

    pub fn invalid_input(message: impl Into<String>) -> ApiError {
        ApiError::InvalidInput(message.into())
    }

    /// A short, closed-set name for logs and metrics.
    pub fn error_type(&self) -> &'static str {
        match self {
            ApiError::ModelNotFound(_) => "model_not_found",
            ApiError::ModelUnavailable(_) => "model_unavailable",
            ApiError::MalformedRequest(_) => "malformed_request",
            ApiError::InvalidInput(_) => "invalid_input",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::LimitExceeded(_) => "limit_exceeded",
            ApiError::RequestTimeout(_) => "request_timeout",
            ApiError::Overloaded { .. } => "overloaded",
            ApiError::DeadlineExceeded => "deadline_exceeded",
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed(_) => "method_not_allowed",
            ApiError::Inference(_) => "inference",
            ApiError::ShuttingDown => "shutting_down",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
        }
    }
}

impl From<LookupError> for ApiError {
    fn from(e: LookupError) -> ApiError {
        match e {
            LookupError::ModelNotFound { .. } | LookupError::VersionNotFound { .. } => {
                ApiError::ModelNotFound(e.to_string())
            }
            LookupError::Unavailable { .. } => ApiError::ModelUnavailable(e.to_string()),
            LookupError::Followed { .. } => ApiError::InvalidInput(e.to_string()),
        }
    }
}

impl From<BackendError> for ApiError {
    fn from(e: BackendError) -> ApiError {
        ApiError::Inference(e.to_string())
    }
}

/// The platform name Triton's clients know for ONNX models.
pub const PLATFORM: &str = "onnxruntime_onnx";

/// `GET /v2`: who we are and which protocol extensions we serve.
#[derive(Debug, serde::Serialize)]
pub struct ServerMetadata {
    pub name: &'static str,
    pub version: &'static str,
    pub extensions: Vec<&'static str>,
}

pub fn server_metadata() -> ServerMetadata {
    // Triton's extensions we serve: binary tensors over REST, the model configuration, repository and statistics
    // endpoints.
    ServerMetadata {
        name: "infergate",
        version: env!("CARGO_PKG_VERSION"),
        extensions: vec!["binary_tensor_data", "model_configuration", "model_repository", "statistics"],
    }
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
        .filter(|(_, state)| matches!(state, crate::lifecycle::VersionState::Ready(_)))
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
    table.resolve(model, version).map(|_| ())?;
    Ok(())
}

fn scheduler_error(e: SchedulerError, model: &str, version: u64) -> ApiError {
    match e {
        SchedulerError::Overloaded => ApiError::Overloaded { model: model.to_owned(), version },
        SchedulerError::Stopped => ApiError::ShuttingDown,
        SchedulerError::DeadlineExceeded => ApiError::DeadlineExceeded,
        SchedulerError::BatchTooLarge { .. } | SchedulerError::InvalidBatch(_) => {
            ApiError::invalid_input(e.to_string())
        }
        SchedulerError::Backend(e) => e.into(),
    }
}

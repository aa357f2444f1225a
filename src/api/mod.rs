//! Transport-agnostic API operations. REST and gRPC decode into these types, call these functions and encode
//! what they return; each transport maps [`ApiError`] to its status codes in one place. Inference goes through
//! the one [`pipeline`].

mod access;
mod feedback;
pub mod grpc;
pub mod http;
mod inputs;
mod limits;
mod metadata;
mod model_config;
mod observe;
pub mod pipeline;
mod repository;
mod request_id;
pub mod shared_memory;
mod statistics;
mod traffic;
mod webhook;

use std::sync::Arc;

use thiserror::Error;

pub use access::{API_KEY_HEADER, ApiKeys, ModelControl};
pub use feedback::{FeedbackRecord, FeedbackSummary, feedback};
pub use inputs::order_inputs;
pub use metadata::{
    MetadataParameters, ModelMetadata, PLATFORM, ServerMetadata, model_metadata, model_ready, server_metadata,
};
pub use model_config::{ModelConfigView, VersionPolicyView, model_config};
pub use pipeline::{
    COLD_START_HEADER, Call, InferRequest, InferResponse, NamedTensor, ROUTING_KEY_HEADER, VARIANT_HEADER,
    cold_start_millis,
};
pub use repository::{IndexRow, load_model, repository_index, unload_model};
pub use request_id::{REQUEST_ID_HEADER, generate as generate_request_id};
pub use shared_memory::SharedMemory;
pub use statistics::{StatisticsView, statistics};
pub use traffic::{TrafficView, rollout, set_traffic, traffic};
pub use webhook::{Delivery, MlflowHook, WEBHOOK_DELIVERY_HEADER, WEBHOOK_SIGNATURE_HEADER, WEBHOOK_TIMESTAMP_HEADER};

/// The tensor description of a signature, as metadata and model configuration show it.
pub use crate::backend::TensorSpec;
pub use crate::telemetry::Protocol;

use crate::backend::BackendError;
use crate::config::RequestLimits;
use crate::lifecycle::{LookupError, ModelTable};
use crate::routing::TrafficTable;
use crate::scheduler::SchedulerError;
use crate::telemetry::feedback::{FeedbackSettings, PredictionStore};
use crate::telemetry::payload::PayloadLog;

/// What both transports serve from: the model table, the traffic table, what a request may ask for, and who may
/// call what. Built once at start and shared.
#[derive(Debug)]
pub struct Gateway {
    table: Arc<ModelTable>,
    traffic: Arc<TrafficTable>,
    limits: RequestLimits,
    pub control: ModelControl,
    pub keys: ApiKeys,
    pub hook: MlflowHook,
    /// Triton's system shared-memory regions (the extension is off unless `--shared-memory`).
    pub shared_memory: SharedMemory,
    /// Where sampled requests are logged (no sink unless the server configures one).
    payload_log: Arc<PayloadLog>,
    /// Recent predictions of the models that take feedback.
    predictions: Arc<PredictionStore>,
}

impl Gateway {
    pub fn new(table: Arc<ModelTable>, traffic: Arc<TrafficTable>, limits: RequestLimits) -> Gateway {
        Gateway {
            table,
            traffic,
            limits,
            control: ModelControl::new(None),
            keys: ApiKeys::default(),
            hook: MlflowHook::disabled(),
            shared_memory: SharedMemory::default(),
            payload_log: Arc::new(PayloadLog::default()),
            predictions: Arc::new(PredictionStore::new(FeedbackSettings::default())),
        }
    }

    /// The payload log's sinks, and the store of predictions that feedback is joined to.
    pub fn with_observation(self, payload_log: Arc<PayloadLog>, predictions: Arc<PredictionStore>) -> Gateway {
        Gateway { payload_log, predictions, ..self }
    }

    /// Model management (load, unload, traffic) for callers presenting the admin token.
    pub fn with_control(self, control: ModelControl) -> Gateway {
        Gateway { control, ..self }
    }

    /// Inference and metadata calls need one of these keys (when any is set).
    pub fn with_keys(self, keys: ApiKeys) -> Gateway {
        Gateway { keys, ..self }
    }

    /// Where verified MLflow webhook deliveries go.
    pub fn with_hook(self, hook: MlflowHook) -> Gateway {
        Gateway { hook, ..self }
    }

    /// Triton's system shared-memory extension, on or off.
    pub fn with_shared_memory(self, shared_memory: SharedMemory) -> Gateway {
        Gateway { shared_memory, ..self }
    }

    pub fn table(&self) -> &Arc<ModelTable> {
        &self.table
    }
}

/// Every way an API call can fail, whatever the transport.
#[derive(Debug, Error)]
pub enum ApiError {
    #[error("{0}")]
    ModelNotFound(String),
    #[error("{0}")]
    ModelUnavailable(String),
    /// An on-demand version that cannot answer yet (its load is awaited, or backs off after a failure): worth
    /// retrying after `retry_after_secs`.
    #[error("{message}")]
    LoadPending { message: String, retry_after_secs: u64 },
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
    /// Whether the failure is the server's (it counts against the traffic variant that answered, in a rollout),
    /// not the caller's mistake.
    pub fn is_server_fault(&self) -> bool {
        match self {
            ApiError::Inference(_)
            | ApiError::Overloaded { .. }
            | ApiError::DeadlineExceeded
            | ApiError::ModelUnavailable(_)
            | ApiError::LoadPending { .. }
            | ApiError::ShuttingDown => true,
            ApiError::ModelNotFound(_)
            | ApiError::MalformedRequest(_)
            | ApiError::InvalidInput(_)
            | ApiError::PayloadTooLarge { .. }
            | ApiError::LimitExceeded(_)
            | ApiError::RequestTimeout(_)
            | ApiError::NotFound(_)
            | ApiError::MethodNotAllowed(_)
            | ApiError::Unauthorized(_)
            | ApiError::Forbidden(_) => false,
        }
    }

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
            ApiError::LoadPending { .. } => "load_pending",
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
            // A request loads what is not loaded before it gets here; a version evicted again meanwhile is retried.
            LookupError::NotLoaded { .. } => ApiError::LoadPending { message: e.to_string(), retry_after_secs: 1 },
            LookupError::LoadPending { retry_after, .. } => {
                let retry_after_secs = retry_after.as_secs_f64().ceil().max(1.0) as u64;
                ApiError::LoadPending { message: e.to_string(), retry_after_secs }
            }
        }
    }
}

impl From<BackendError> for ApiError {
    fn from(e: BackendError) -> ApiError {
        ApiError::Inference(e.to_string())
    }
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

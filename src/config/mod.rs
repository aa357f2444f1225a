//! The one validated server configuration.
//!
//! Layers, lowest first: built-in defaults, the TOML file given by `--config`, then `INFERGATE_*` environment
//! variables and command-line flags (clap merges those two, flags winning). Each setting is declared once, in
//! `serve_args`, for all the layers. Cross-field checks run once, here, so the rest of the server never sees an
//! invalid combination.

mod cli;
mod docs;
mod file;
mod layering;
mod resolve;
mod serve_args;
mod validate;

#[cfg(test)]
mod tests;

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

use clap::ValueEnum;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::repository::mlflow::{MlflowAuth, MlflowModel};
use crate::telemetry::feedback::FeedbackSettings;
use crate::telemetry::payload::PayloadLogSettings;

pub use cli::{BackendsArgs, Cli, Command, DocsArgs, DocsPage, ReferenceArgs};
pub use docs::configuration_reference;
pub use serve_args::{MlflowArgs, ServeArgs};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ModelControlMode {
    /// Load everything at start, then watch the repository.
    #[default]
    Poll,
    /// Load only what --load-model names and what the load API asks for.
    Explicit,
    /// Load everything at start, once.
    None,
    /// List the repository at start and load each model on its first request; evict idle versions, least recently
    /// used first, to fit --max-loaded-bytes and --max-loaded-models; watch the repository as poll does.
    #[serde(rename = "on-demand")]
    #[value(name = "on-demand")]
    OnDemand,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// The wire protocol of the OpenTelemetry collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum OtlpProtocol {
    /// OTLP over gRPC.
    Grpc,
    /// OTLP over HTTP, protobuf bodies.
    Http,
}

/// Exporting request spans to an OpenTelemetry collector.
#[derive(Debug, Clone, PartialEq)]
pub struct TracingSettings {
    pub endpoint: String,
    pub protocol: OtlpProtocol,
    /// Share of the requests without a sampled parent that are traced.
    pub sample_ratio: f64,
    pub service_name: String,
}

/// Following the MLflow Model Registry.
#[derive(Debug, Clone)]
pub struct MlflowSettings {
    pub uri: String,
    pub auth: MlflowAuth,
    pub models: Vec<MlflowModel>,
    pub poll: Duration,
    pub cache: PathBuf,
    /// Set: webhook deliveries signed with it are accepted.
    pub webhook_secret: Option<Secret>,
}

/// The validated configuration every part of the server reads.
#[derive(Debug, Clone)]
pub struct Config {
    pub model_repository: PathBuf,
    /// Where each listener binds (`--http-host`, `--grpc-host`, `--metrics-host`, each `--host` when unset).
    pub http_host: IpAddr,
    pub grpc_host: IpAddr,
    pub metrics_host: IpAddr,
    pub http_port: u16,
    pub grpc_port: u16,
    pub metrics_port: u16,
    /// Unix sockets the REST and gRPC APIs are also (or, with `sockets_only`, only) served on.
    pub http_socket: Option<PathBuf>,
    pub grpc_socket: Option<PathBuf>,
    /// The sockets' file mode.
    pub socket_mode: u32,
    /// REST and gRPC listen on their sockets only.
    pub sockets_only: bool,
    /// Triton's system shared-memory extension is served.
    pub shared_memory: bool,
    pub max_request_bytes: usize,
    pub shutdown_grace: Duration,
    pub metrics_window: Duration,
    /// Set: this ONNX Runtime library must load. Unset: it is looked for (see `backend::onnxruntime`).
    pub ort_library: Option<PathBuf>,
    /// Set: model load/unload are enabled for callers presenting it.
    pub admin_token: Option<Secret>,
    /// Set: rollout states are kept there across restarts.
    pub state_dir: Option<PathBuf>,
    pub model_control_mode: ModelControlMode,
    /// Poll mode's interval.
    pub repository_poll: Duration,
    /// How long a changed file must be left alone before it is loaded.
    pub repository_settle: Duration,
    /// Explicit mode's models to load at start.
    pub load_models: Vec<String>,
    /// How on-demand models load and what stays loaded.
    pub on_demand: OnDemandSettings,
    /// Non-empty: inference and metadata calls need one of these keys.
    pub api_keys: Vec<Secret>,
    /// Set: REST and gRPC are served over TLS.
    pub tls: Option<TlsSettings>,
    pub connections: ConnectionLimits,
    pub request_limits: RequestLimits,
    /// Most bytes a version's weights may need, unless its model.toml says otherwise.
    pub max_model_bytes: u64,
    pub log_format: LogFormat,
    pub log_level: String,
    /// Set: request spans are exported.
    pub tracing: Option<TracingSettings>,
    /// Set: these models follow the MLflow Model Registry.
    pub mlflow: Option<MlflowSettings>,
    /// The payload log's sinks and bounds.
    pub payload_log: PayloadLogSettings,
    /// The predictions kept for feedback, and how much a feedback call may carry.
    pub feedback: FeedbackSettings,
}

/// TLS for the REST and gRPC listeners (PEM files).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Set: clients must present a certificate signed by one of these CAs.
    pub client_ca: Option<PathBuf>,
}

/// What one client connection may hold, so slow or idle clients cannot exhaust the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Open connections per listener; further ones wait in the accept backlog.
    pub max_connections: usize,
    /// Time to complete a TLS handshake, and then each request's headers.
    pub header_read_timeout: Duration,
    /// Time to receive a request's whole body.
    pub body_read_timeout: Duration,
    /// Concurrent HTTP/2 streams per connection.
    pub max_concurrent_streams: u32,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_connections: 4096,
            header_read_timeout: Duration::from_secs(30),
            body_read_timeout: Duration::from_secs(60),
            max_concurrent_streams: 1024,
        }
    }
}

/// How on-demand models load, and how many bytes and versions may be loaded at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OnDemandSettings {
    /// Most bytes of loaded versions (each as measured at its load); `None`: no limit.
    pub max_loaded_bytes: Option<u64>,
    /// Most versions loaded at once; `None`: no limit.
    pub max_loaded_models: Option<usize>,
    /// How long a request without a deadline waits for its version to load.
    pub cold_start_timeout: Duration,
}

impl Default for OnDemandSettings {
    fn default() -> Self {
        OnDemandSettings {
            max_loaded_bytes: None,
            max_loaded_models: None,
            cold_start_timeout: Duration::from_secs(30),
        }
    }
}

/// Bounds on what one inference request may ask for, whatever its transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLimits {
    pub max_tensor_elements: usize,
    pub max_request_elements: usize,
    pub max_request_rows: usize,
    pub max_bytes_element: usize,
}

impl Default for RequestLimits {
    fn default() -> Self {
        RequestLimits {
            max_tensor_elements: 1 << 24,
            max_request_elements: 1 << 25,
            max_request_rows: 1 << 16,
            max_bytes_element: 16 << 20,
        }
    }
}

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    ReadFile { path: PathBuf, source: std::io::Error },
    #[error("invalid config file {path}: {message}")]
    ParseFile { path: PathBuf, message: String },
    #[error("model repository {path} is not a readable folder: {reason}")]
    Repository { path: PathBuf, reason: String },
    #[error("{first} and {second} are both set to port {port}; each server needs its own port")]
    PortClash { first: &'static str, second: &'static str, port: u16 },
    #[error("{0}")]
    Invalid(String),
}

/// A secret setting: kept out of `Debug` output, so it never reaches a log line.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            model_repository: PathBuf::from("./models"),
            http_host: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            grpc_host: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            metrics_host: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            http_port: 8000,
            grpc_port: 8001,
            metrics_port: 8002,
            http_socket: None,
            grpc_socket: None,
            socket_mode: 0o660,
            sockets_only: false,
            shared_memory: false,
            max_request_bytes: 64 << 20,
            shutdown_grace: Duration::from_secs(30),
            metrics_window: Duration::from_secs(60),
            ort_library: None,
            admin_token: None,
            state_dir: None,
            model_control_mode: ModelControlMode::Poll,
            repository_poll: Duration::from_secs(5),
            repository_settle: Duration::from_secs(2),
            load_models: Vec::new(),
            on_demand: OnDemandSettings::default(),
            api_keys: Vec::new(),
            tls: None,
            connections: ConnectionLimits::default(),
            request_limits: RequestLimits::default(),
            max_model_bytes: crate::backend::DEFAULT_MAX_MODEL_BYTES,
            log_format: LogFormat::Text,
            log_level: "info".to_owned(),
            tracing: None,
            mlflow: None,
            payload_log: PayloadLogSettings::default(),
            feedback: FeedbackSettings::default(),
        }
    }
}

//! The one validated server configuration.
//!
//! Layers, lowest first: built-in defaults, the TOML file given by `--config`, then `INFERGATE_*` environment
//! variables and command-line flags (clap merges those two, flags winning). Cross-field checks run once, here,
//! so the rest of the server never sees an invalid combination.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Deserialize;
use thiserror::Error;

use crate::repository::ModelConfig;
use crate::repository::mlflow::{self, MlflowAuth, MlflowModel};

#[derive(Debug, Parser)]
#[command(name = "infergate", version, about = "A model serving gateway for ONNX models (KServe v2 protocol).")]
#[command(args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Flags of `serve`, also accepted without the subcommand (serve is the default).
    #[command(flatten)]
    pub serve: ServeArgs,
}

// Parsed once at start; boxing the flags would only add noise to every match.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the models of a model repository (the default).
    Serve(ServeArgs),
    /// Build a version's reference.json (for drift detection) from sample traffic.
    Reference(ReferenceArgs),
    /// Show which backends and execution providers this machine can use, and why not.
    Backends(BackendsArgs),
}

/// Flags of `infergate backends`.
#[derive(Debug, Clone, Args)]
pub struct BackendsArgs {
    /// The ONNX Runtime library to try, as `serve --ort-library`.
    #[arg(long, env = "INFERGATE_ORT_LIBRARY")]
    pub ort_library: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Flags of `infergate reference`.
#[derive(Debug, Clone, Args)]
pub struct ReferenceArgs {
    /// The version's model file, e.g. models/iris/1/model.onnx.
    #[arg(long)]
    pub model: PathBuf,
    /// Sample traffic: a KServe v2 inference request body (JSON) holding many rows, e.g. training data.
    #[arg(long)]
    pub samples: PathBuf,
    /// Buckets per input column (bounds at the samples' quantiles).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(2..=100))]
    pub buckets: u16,
    /// Where to write the reference [default: reference.json beside the model]
    #[arg(long)]
    pub output: Option<PathBuf>,
}

impl Cli {
    /// What to run: `serve` with its flags (also when no subcommand is given), or another command.
    pub fn into_command(self) -> Command {
        self.command.unwrap_or(Command::Serve(self.serve))
    }
}

/// Flags of `infergate serve`. Every one is optional here so that an unset flag falls back to the config file.
#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    /// Server configuration file (TOML); flags and environment variables override it.
    #[arg(long, env = "INFERGATE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Folder holding the models: <repository>/<model>/<version>/model.onnx [default: ./models]
    #[arg(long, env = "INFERGATE_MODEL_REPOSITORY")]
    pub model_repository: Option<PathBuf>,
    /// Address the servers listen on [default: 0.0.0.0]
    #[arg(long, env = "INFERGATE_HOST")]
    pub host: Option<IpAddr>,
    /// Port of the KServe v2 REST API [default: 8000]
    #[arg(long, env = "INFERGATE_HTTP_PORT")]
    pub http_port: Option<u16>,
    /// Port of the KServe v2 gRPC API [default: 8001]
    #[arg(long, env = "INFERGATE_GRPC_PORT")]
    pub grpc_port: Option<u16>,
    /// Port of the Prometheus metrics endpoint (/metrics) [default: 8002]
    #[arg(long, env = "INFERGATE_METRICS_PORT")]
    pub metrics_port: Option<u16>,
    /// Largest accepted request body in bytes; larger ones are answered 413 [default: 67108864]
    #[arg(long, env = "INFERGATE_MAX_REQUEST_BYTES")]
    pub max_request_bytes: Option<usize>,
    /// Seconds in-flight requests get to finish after SIGTERM/SIGINT before the server exits [default: 30]
    #[arg(long, env = "INFERGATE_SHUTDOWN_GRACE_SECONDS")]
    pub shutdown_grace_seconds: Option<u64>,
    /// Span of the sliding windows behind the p50/p90/p99 latency and the drift gauges, in seconds [default: 60]
    #[arg(long, env = "INFERGATE_METRICS_WINDOW_SECONDS")]
    pub metrics_window_seconds: Option<u64>,
    /// The ONNX Runtime library (libonnxruntime.so*) [default: ORT_DYLIB_PATH, next to the binary, the onnxruntime
    /// Python package, the system library path]
    #[arg(long, env = "INFERGATE_ORT_LIBRARY")]
    pub ort_library: Option<PathBuf>,
    /// Enables model load/unload over the repository API, for callers presenting this bearer token (16 characters
    /// or more); prefer the environment variable, which `ps` does not show [default: load/unload disabled]
    #[arg(long, env = "INFERGATE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Folder keeping rollout states across restarts (a restart resumes a rollout where it was, and never
    /// promotes again a rolled-back candidate) [default: <temp>/infergate-state]
    #[arg(long, env = "INFERGATE_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// How the served models follow the repository: poll (watch it and load new versions), explicit (only the
    /// load/unload API and --load-model), none (load once at start) [default: poll]
    #[arg(long, env = "INFERGATE_MODEL_CONTROL_MODE", value_enum)]
    pub model_control_mode: Option<ModelControlMode>,
    /// Seconds between two looks at the repository in poll mode [default: 5]
    #[arg(long, env = "INFERGATE_REPOSITORY_POLL_SECS")]
    pub repository_poll_secs: Option<f64>,
    /// Seconds a changed model file must be left alone before it is loaded, so a copy in progress is never loaded
    /// [default: 2]
    #[arg(long, env = "INFERGATE_REPOSITORY_SETTLE_SECS")]
    pub repository_settle_secs: Option<f64>,
    /// With --model-control-mode explicit: a model to load at start (repeatable).
    #[arg(long = "load-model", env = "INFERGATE_LOAD_MODELS", value_delimiter = ',')]
    pub load_models: Vec<String>,
    /// The MLflow tracking server whose Model Registry to follow, e.g. http://mlflow:5000 (credentials from
    /// MLFLOW_TRACKING_TOKEN, or MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD)
    #[arg(long, env = "INFERGATE_MLFLOW_URI")]
    pub mlflow_uri: Option<String>,
    /// A registered model and an alias to serve, as NAME@ALIAS (repeatable; `latest` is the newest version). The
    /// first alias of a model answers requests that name no version.
    #[arg(long = "mlflow-model", env = "INFERGATE_MLFLOW_MODELS", value_delimiter = ',')]
    pub mlflow_models: Vec<String>,
    /// Seconds between two looks at the registry's aliases [default: 5]
    #[arg(long, env = "INFERGATE_MLFLOW_POLL_SECS")]
    pub mlflow_poll_secs: Option<f64>,
    /// Folder the model versions fetched from MLflow are kept in [default: infergate-mlflow in the temp folder]
    #[arg(long, env = "INFERGATE_MLFLOW_CACHE")]
    pub mlflow_cache: Option<PathBuf>,
    /// Accept MLflow webhook deliveries at POST /v2/mlflow/webhook signed with this secret [default: off]
    #[arg(long, env = "INFERGATE_MLFLOW_WEBHOOK_SECRET", hide_env_values = true)]
    pub mlflow_webhook_secret: Option<String>,
    /// Inference and metadata routes need one of these keys (`Authorization: Bearer <key>` or `x-api-key`;
    /// gRPC metadata alike); health routes never do [default: open]
    #[arg(long = "api-key", env = "INFERGATE_API_KEYS", value_delimiter = ',', hide_env_values = true)]
    pub api_keys: Vec<String>,
    /// Serve REST and gRPC over TLS with this certificate chain (PEM); needs --tls-key
    #[arg(long, env = "INFERGATE_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM)
    #[arg(long, env = "INFERGATE_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Require client certificates signed by these CAs (PEM) on REST and gRPC [default: no client certificates]
    #[arg(long, env = "INFERGATE_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<PathBuf>,
    /// Open connections per listener; more wait to be accepted [default: 4096]
    #[arg(long, env = "INFERGATE_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Seconds a client gets to send a request's headers (and a TLS handshake) before the connection is closed
    /// [default: 30]
    #[arg(long, env = "INFERGATE_HEADER_READ_TIMEOUT_SECS")]
    pub header_read_timeout_secs: Option<f64>,
    /// Seconds a client gets to send a request's body before it is answered 408 [default: 60]
    #[arg(long, env = "INFERGATE_BODY_READ_TIMEOUT_SECS")]
    pub body_read_timeout_secs: Option<f64>,
    /// Concurrent HTTP/2 streams (gRPC calls) per connection [default: 1024]
    #[arg(long, env = "INFERGATE_MAX_CONCURRENT_STREAMS")]
    pub max_concurrent_streams: Option<u32>,
    /// Most elements in one input tensor [default: 16777216]
    #[arg(long, env = "INFERGATE_MAX_TENSOR_ELEMENTS")]
    pub max_tensor_elements: Option<usize>,
    /// Most elements in all the inputs of one request [default: 33554432]
    #[arg(long, env = "INFERGATE_MAX_REQUEST_ELEMENTS")]
    pub max_request_elements: Option<usize>,
    /// Most rows (first dimension) in one request's inputs [default: 65536]
    #[arg(long, env = "INFERGATE_MAX_REQUEST_ROWS")]
    pub max_request_rows: Option<usize>,
    /// Longest element of a BYTES input, in bytes [default: 16777216]
    #[arg(long, env = "INFERGATE_MAX_BYTES_ELEMENT")]
    pub max_bytes_element: Option<usize>,
    /// Most bytes a model version's weights may need (declared initializers); larger models are refused at load.
    /// A model.toml may set a lower or higher `max_model_bytes` [default: 8589934592]
    #[arg(long, env = "INFERGATE_MAX_MODEL_BYTES")]
    pub max_model_bytes: Option<u64>,
    /// Log format [default: text]
    #[arg(long, env = "INFERGATE_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Log filter, in `RUST_LOG` syntax (e.g. `info`, `infergate=debug`) [default: info]
    #[arg(long, env = "INFERGATE_LOG_LEVEL")]
    pub log_level: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ModelControlMode {
    /// Load everything at start, then watch the repository.
    #[default]
    Poll,
    /// Load only what --load-model names and what the load API asks for.
    Explicit,
    /// Load everything at start, once.
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// The `--config` file. Same names as the flags, in snake_case.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    model_repository: Option<PathBuf>,
    host: Option<IpAddr>,
    http_port: Option<u16>,
    grpc_port: Option<u16>,
    metrics_port: Option<u16>,
    max_request_bytes: Option<usize>,
    shutdown_grace_seconds: Option<u64>,
    metrics_window_seconds: Option<u64>,
    ort_library: Option<PathBuf>,
    admin_token: Option<String>,
    state_dir: Option<PathBuf>,
    model_control_mode: Option<ModelControlMode>,
    repository_poll_secs: Option<f64>,
    repository_settle_secs: Option<f64>,
    load_models: Option<Vec<String>>,
    api_keys: Option<Vec<String>>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_client_ca: Option<PathBuf>,
    max_connections: Option<usize>,
    header_read_timeout_secs: Option<f64>,
    body_read_timeout_secs: Option<f64>,
    max_concurrent_streams: Option<u32>,
    max_tensor_elements: Option<usize>,
    max_request_elements: Option<usize>,
    max_request_rows: Option<usize>,
    max_bytes_element: Option<usize>,
    max_model_bytes: Option<u64>,
    log_format: Option<LogFormat>,
    log_level: Option<String>,
    mlflow: Option<MlflowFile>,
}

/// `[mlflow]` of the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct MlflowFile {
    uri: Option<String>,
    poll_secs: Option<f64>,
    cache: Option<PathBuf>,
    webhook_secret: Option<String>,
    #[serde(default)]
    models: Vec<MlflowModelFile>,
}

/// `[[mlflow.models]]`: a registered model, the aliases to serve and, in `[mlflow.models.config]`, the settings
/// a `model.toml` would hold.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MlflowModelFile {
    name: String,
    aliases: Vec<String>,
    serve_as: Option<String>,
    config: Option<ModelConfig>,
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
    pub host: IpAddr,
    pub http_port: u16,
    pub grpc_port: u16,
    pub metrics_port: u16,
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
    /// Set: these models follow the MLflow Model Registry.
    pub mlflow: Option<MlflowSettings>,
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

/// Bounds of the repository poll interval, in seconds.
const MIN_POLL_SECS: f64 = 0.05;
const MAX_POLL_SECS: f64 = 3600.0;

/// Most connections a listener may hold; each costs a task and buffers.
const MAX_CONNECTIONS_CEILING: usize = 1 << 20;

/// Shortest admin token or API key accepted.
const MIN_ADMIN_TOKEN_CHARS: usize = 16;

/// A secret setting: kept out of `Debug` output, so it never reaches a log line.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Largest request body we accept at all: one protobuf/HTTP message past 2 GiB is never legitimate here.
const MAX_REQUEST_BYTES_CEILING: usize = 2 << 30;
/// Longest metrics window: an hour of per-second slots per tracked distribution.
const MAX_METRICS_WINDOW_SECONDS: u64 = 3600;
/// Longest shutdown grace period; Kubernetes' own default is 30 s.
const MAX_SHUTDOWN_GRACE_SECONDS: u64 = 3600;

impl Default for Config {
    fn default() -> Self {
        Config {
            model_repository: PathBuf::from("./models"),
            host: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            http_port: 8000,
            grpc_port: 8001,
            metrics_port: 8002,
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
            api_keys: Vec::new(),
            tls: None,
            connections: ConnectionLimits::default(),
            request_limits: RequestLimits::default(),
            max_model_bytes: crate::backend::DEFAULT_MAX_MODEL_BYTES,
            log_format: LogFormat::Text,
            log_level: "info".to_owned(),
            mlflow: None,
        }
    }
}

impl Config {
    /// Layers defaults, the config file and the flags/environment, then validates the result.
    pub fn resolve(args: ServeArgs) -> Result<Config, ConfigError> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => ConfigFile::default(),
        };
        let defaults = Config::default();
        let mlflow = mlflow_settings(&args, file.mlflow.unwrap_or_default())?;
        let config = Config {
            model_repository: args.model_repository.or(file.model_repository).unwrap_or(defaults.model_repository),
            host: args.host.or(file.host).unwrap_or(defaults.host),
            http_port: args.http_port.or(file.http_port).unwrap_or(defaults.http_port),
            grpc_port: args.grpc_port.or(file.grpc_port).unwrap_or(defaults.grpc_port),
            metrics_port: args.metrics_port.or(file.metrics_port).unwrap_or(defaults.metrics_port),
            max_request_bytes: args.max_request_bytes.or(file.max_request_bytes).unwrap_or(defaults.max_request_bytes),
            shutdown_grace: args
                .shutdown_grace_seconds
                .or(file.shutdown_grace_seconds)
                .map(Duration::from_secs)
                .unwrap_or(defaults.shutdown_grace),
            metrics_window: args
                .metrics_window_seconds
                .or(file.metrics_window_seconds)
                .map(Duration::from_secs)
                .unwrap_or(defaults.metrics_window),
            ort_library: args.ort_library.or(file.ort_library),
            admin_token: args.admin_token.or(file.admin_token).map(Secret),
            state_dir: Some(
                args.state_dir.or(file.state_dir).unwrap_or_else(|| std::env::temp_dir().join("infergate-state")),
            ),
            model_control_mode: args.model_control_mode.or(file.model_control_mode).unwrap_or_default(),
            repository_poll: seconds(
                "--repository-poll-secs",
                args.repository_poll_secs.or(file.repository_poll_secs),
            )?
            .unwrap_or(defaults.repository_poll),
            repository_settle: seconds(
                "--repository-settle-secs",
                args.repository_settle_secs.or(file.repository_settle_secs),
            )?
            .unwrap_or(defaults.repository_settle),
            load_models: if args.load_models.is_empty() {
                file.load_models.unwrap_or_default()
            } else {
                args.load_models
            },
            api_keys: if args.api_keys.is_empty() { file.api_keys.unwrap_or_default() } else { args.api_keys }
                .into_iter()
                .map(Secret)
                .collect(),
            tls: tls_settings(
                args.tls_cert.or(file.tls_cert),
                args.tls_key.or(file.tls_key),
                args.tls_client_ca.or(file.tls_client_ca),
            )?,
            connections: ConnectionLimits {
                max_connections: args
                    .max_connections
                    .or(file.max_connections)
                    .unwrap_or(defaults.connections.max_connections),
                header_read_timeout: timeout(
                    "--header-read-timeout-secs",
                    args.header_read_timeout_secs.or(file.header_read_timeout_secs),
                )?
                .unwrap_or(defaults.connections.header_read_timeout),
                body_read_timeout: timeout(
                    "--body-read-timeout-secs",
                    args.body_read_timeout_secs.or(file.body_read_timeout_secs),
                )?
                .unwrap_or(defaults.connections.body_read_timeout),
                max_concurrent_streams: args
                    .max_concurrent_streams
                    .or(file.max_concurrent_streams)
                    .unwrap_or(defaults.connections.max_concurrent_streams),
            },
            request_limits: RequestLimits {
                max_tensor_elements: args
                    .max_tensor_elements
                    .or(file.max_tensor_elements)
                    .unwrap_or(defaults.request_limits.max_tensor_elements),
                max_request_elements: args
                    .max_request_elements
                    .or(file.max_request_elements)
                    .unwrap_or(defaults.request_limits.max_request_elements),
                max_request_rows: args
                    .max_request_rows
                    .or(file.max_request_rows)
                    .unwrap_or(defaults.request_limits.max_request_rows),
                max_bytes_element: args
                    .max_bytes_element
                    .or(file.max_bytes_element)
                    .unwrap_or(defaults.request_limits.max_bytes_element),
            },
            max_model_bytes: args.max_model_bytes.or(file.max_model_bytes).unwrap_or(defaults.max_model_bytes),
            log_format: args.log_format.or(file.log_format).unwrap_or(defaults.log_format),
            log_level: args.log_level.or(file.log_level).unwrap_or(defaults.log_level),
            mlflow,
        };
        config.validate()?;
        Ok(config)
    }

    /// Cross-field checks, run once at start.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let ports =
            [("--http-port", self.http_port), ("--grpc-port", self.grpc_port), ("--metrics-port", self.metrics_port)];
        for (i, &(first, port)) in ports.iter().enumerate() {
            for &(second, other) in &ports[i + 1..] {
                // Port 0 asks the OS for a free port, so several zeros never clash.
                if port != 0 && port == other {
                    return Err(ConfigError::PortClash { first, second, port });
                }
            }
        }
        if self.max_request_bytes == 0 || self.max_request_bytes > MAX_REQUEST_BYTES_CEILING {
            return Err(ConfigError::Invalid(format!(
                "--max-request-bytes must be between 1 and {MAX_REQUEST_BYTES_CEILING}, got {}",
                self.max_request_bytes
            )));
        }
        if self.shutdown_grace.as_secs() > MAX_SHUTDOWN_GRACE_SECONDS {
            return Err(ConfigError::Invalid(format!(
                "--shutdown-grace-seconds must be at most {MAX_SHUTDOWN_GRACE_SECONDS}, got {}",
                self.shutdown_grace.as_secs()
            )));
        }
        let window = self.metrics_window.as_secs();
        if !(1..=MAX_METRICS_WINDOW_SECONDS).contains(&window) {
            return Err(ConfigError::Invalid(format!(
                "--metrics-window-seconds must be between 1 and {MAX_METRICS_WINDOW_SECONDS}, got {window}"
            )));
        }
        if let Some(token) = &self.admin_token
            && token.0.trim().chars().count() < MIN_ADMIN_TOKEN_CHARS
        {
            return Err(ConfigError::Invalid(format!(
                "--admin-token must be at least {MIN_ADMIN_TOKEN_CHARS} characters; a short token is guessable"
            )));
        }
        if self.api_keys.iter().any(|key| key.0.trim().chars().count() < MIN_ADMIN_TOKEN_CHARS) {
            return Err(ConfigError::Invalid(format!(
                "every --api-key must be at least {MIN_ADMIN_TOKEN_CHARS} characters; a short key is guessable"
            )));
        }
        let limits = [
            ("--max-connections", self.connections.max_connections),
            ("--max-concurrent-streams", self.connections.max_concurrent_streams as usize),
            ("--max-tensor-elements", self.request_limits.max_tensor_elements),
            ("--max-request-elements", self.request_limits.max_request_elements),
            ("--max-request-rows", self.request_limits.max_request_rows),
            ("--max-bytes-element", self.request_limits.max_bytes_element),
            ("--max-model-bytes", usize::try_from(self.max_model_bytes).unwrap_or(usize::MAX)),
        ];
        if let Some((flag, _)) = limits.iter().find(|(_, value)| *value == 0) {
            return Err(ConfigError::Invalid(format!("{flag} must be at least 1")));
        }
        if self.connections.max_connections > MAX_CONNECTIONS_CEILING {
            return Err(ConfigError::Invalid(format!(
                "--max-connections must be at most {MAX_CONNECTIONS_CEILING}, got {}",
                self.connections.max_connections
            )));
        }
        if let Some(tls) = &self.tls {
            for path in [Some(&tls.cert), Some(&tls.key), tls.client_ca.as_ref()].into_iter().flatten() {
                if let Err(e) = std::fs::metadata(path) {
                    return Err(ConfigError::Invalid(format!("cannot read TLS file {}: {e}", path.display())));
                }
            }
        }
        if !self.load_models.is_empty() && self.model_control_mode != ModelControlMode::Explicit {
            return Err(ConfigError::Invalid(
                "--load-model only applies with --model-control-mode explicit (the other modes load every model)"
                    .into(),
            ));
        }
        if let Some(bad) = self.load_models.iter().find(|name| !crate::repository::is_valid_model_name(name)) {
            return Err(ConfigError::Invalid(format!("--load-model '{bad}' is not a model name")));
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log_level) {
            return Err(ConfigError::Invalid(format!("--log-level '{}' is not a valid filter: {e}", self.log_level)));
        }
        check_repository(&self.model_repository)?;
        if let Some(mlflow) = &self.mlflow {
            self.validate_mlflow(mlflow)?;
        }
        Ok(())
    }

    fn validate_mlflow(&self, mlflow: &MlflowSettings) -> Result<(), ConfigError> {
        let mut served = std::collections::HashSet::new();
        for model in &mlflow.models {
            mlflow::check_model(model).map_err(ConfigError::Invalid)?;
            if !served.insert(model.serve_as.as_str()) {
                return Err(ConfigError::Invalid(format!(
                    "two MLflow models are served as '{}'; set serve_as to tell them apart",
                    model.serve_as
                )));
            }
        }
        mlflow::check_uri(&mlflow.uri).map_err(ConfigError::Invalid)?;
        if let Some(secret) = &mlflow.webhook_secret
            && secret.0.trim().chars().count() < MIN_ADMIN_TOKEN_CHARS
        {
            return Err(ConfigError::Invalid(format!(
                "--mlflow-webhook-secret must be at least {MIN_ADMIN_TOKEN_CHARS} characters"
            )));
        }
        // The cache must not be watched as part of the local repository.
        let (cache, repository) = (absolute(&mlflow.cache), absolute(&self.model_repository));
        if cache.starts_with(&repository) {
            return Err(ConfigError::Invalid(format!(
                "--mlflow-cache {} is inside the model repository {}; put it elsewhere",
                mlflow.cache.display(),
                self.model_repository.display()
            )));
        }
        Ok(())
    }
}

/// `path` made absolute and, where it exists, with links resolved.
fn absolute(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).or_else(|_| std::path::absolute(path)).unwrap_or_else(|_| path.to_owned())
}

/// The MLflow settings from flags over the file's `[mlflow]`; `None` when neither names a tracking server.
fn mlflow_settings(args: &ServeArgs, file: MlflowFile) -> Result<Option<MlflowSettings>, ConfigError> {
    let uri = args.mlflow_uri.clone().or(file.uri);
    let models = if args.mlflow_models.is_empty() {
        file.models
            .into_iter()
            .map(|m| {
                let config = m.config.unwrap_or_default();
                config.validate().map_err(|e| ConfigError::Invalid(format!("[mlflow.models] '{}': {e}", m.name)))?;
                Ok(MlflowModel {
                    serve_as: m.serve_as.unwrap_or_else(|| m.name.clone()),
                    registered: m.name,
                    aliases: m.aliases,
                    config: std::sync::Arc::new(config),
                })
            })
            .collect::<Result<Vec<_>, ConfigError>>()?
    } else {
        flag_models(&args.mlflow_models)?
    };
    let webhook_secret = args.mlflow_webhook_secret.clone().or(file.webhook_secret).map(Secret);
    let Some(uri) = uri else {
        if !models.is_empty() || webhook_secret.is_some() {
            return Err(ConfigError::Invalid("MLflow models or a webhook secret are set, but no --mlflow-uri".into()));
        }
        return Ok(None);
    };
    if models.is_empty() {
        return Err(ConfigError::Invalid(format!(
            "--mlflow-uri {uri} is set, but no --mlflow-model NAME@ALIAS says what to serve from it"
        )));
    }
    Ok(Some(MlflowSettings {
        uri,
        auth: MlflowAuth::from_env(),
        models,
        poll: seconds("--mlflow-poll-secs", args.mlflow_poll_secs.or(file.poll_secs))?
            .unwrap_or(Duration::from_secs(5)),
        cache: args
            .mlflow_cache
            .clone()
            .or(file.cache)
            .unwrap_or_else(|| std::env::temp_dir().join("infergate-mlflow")),
        webhook_secret,
    }))
}

/// `--mlflow-model NAME@ALIAS` entries, one model per name with its aliases in the order given.
fn flag_models(entries: &[String]) -> Result<Vec<MlflowModel>, ConfigError> {
    let mut models: Vec<MlflowModel> = Vec::new();
    for entry in entries {
        let Some((name, alias)) = entry.rsplit_once('@') else {
            return Err(ConfigError::Invalid(format!(
                "--mlflow-model '{entry}' must be NAME@ALIAS, e.g. iris@champion or iris@latest"
            )));
        };
        match models.iter_mut().find(|m| m.registered == name) {
            Some(model) if model.aliases.iter().any(|a| a == alias) => {}
            Some(model) => model.aliases.push(alias.to_owned()),
            None => models.push(MlflowModel {
                registered: name.to_owned(),
                serve_as: name.to_owned(),
                aliases: vec![alias.to_owned()],
                config: std::sync::Arc::new(ModelConfig::default()),
            }),
        }
    }
    Ok(models)
}

/// TLS needs a certificate and its key together; a client CA only makes sense with them.
fn tls_settings(
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    client_ca: Option<PathBuf>,
) -> Result<Option<TlsSettings>, ConfigError> {
    match (cert, key) {
        (Some(cert), Some(key)) => Ok(Some(TlsSettings { cert, key, client_ca })),
        (None, None) if client_ca.is_none() => Ok(None),
        (None, None) => Err(ConfigError::Invalid("--tls-client-ca needs --tls-cert and --tls-key".into())),
        _ => Err(ConfigError::Invalid("--tls-cert and --tls-key go together".into())),
    }
}

/// A client timeout in seconds, between 0.1 s and an hour.
fn timeout(flag: &str, value: Option<f64>) -> Result<Option<Duration>, ConfigError> {
    match value {
        None => Ok(None),
        Some(secs) if secs.is_finite() && (0.1..=3600.0).contains(&secs) => Ok(Some(Duration::from_secs_f64(secs))),
        Some(secs) => Err(ConfigError::Invalid(format!("{flag} must be between 0.1 and 3600, got {secs}"))),
    }
}

/// A watcher duration in seconds, within bounds.
fn seconds(flag: &str, value: Option<f64>) -> Result<Option<Duration>, ConfigError> {
    match value {
        None => Ok(None),
        Some(secs) if secs.is_finite() && (MIN_POLL_SECS..=MAX_POLL_SECS).contains(&secs) => {
            Ok(Some(Duration::from_secs_f64(secs)))
        }
        Some(secs) => {
            Err(ConfigError::Invalid(format!("{flag} must be between {MIN_POLL_SECS} and {MAX_POLL_SECS}, got {secs}")))
        }
    }
}

fn read_file(path: &Path) -> Result<ConfigFile, ConfigError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile { path: path.to_owned(), source })?;
    toml::from_str(&text).map_err(|e| ConfigError::ParseFile { path: path.to_owned(), message: e.to_string() })
}

fn check_repository(path: &Path) -> Result<(), ConfigError> {
    let reason = match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => match std::fs::read_dir(path) {
            Ok(_) => return Ok(()),
            Err(e) => e.to_string(),
        },
        Ok(_) => "not a folder".to_owned(),
        Err(e) => e.to_string(),
    };
    Err(ConfigError::Repository { path: path.to_owned(), reason })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> ServeArgs {
        ServeArgs { model_repository: Some(PathBuf::from("models")), ..ServeArgs::default() }
    }

    #[test]
    fn defaults_are_valid() {
        let config = Config::resolve(args()).unwrap();
        assert_eq!(config.http_port, 8000);
        assert_eq!(config.grpc_port, 8001);
        assert_eq!(config.metrics_port, 8002);
        assert_eq!(config.max_request_bytes, 64 << 20);
    }

    #[test]
    fn equal_ports_are_refused() {
        let err = Config::resolve(ServeArgs { grpc_port: Some(8000), ..args() }).unwrap_err();
        assert_eq!(
            err.to_string(),
            "--http-port and --grpc-port are both set to port 8000; each server needs its own port"
        );
        let zeros = ServeArgs { http_port: Some(0), grpc_port: Some(0), metrics_port: Some(0), ..args() };
        assert!(Config::resolve(zeros).is_ok());
    }

    #[test]
    fn missing_repository_is_refused() {
        let err =
            Config::resolve(ServeArgs { model_repository: Some("/nonexistent/models".into()), ..args() }).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/models"), "{err}");
    }

    #[test]
    fn bad_limits_are_refused() {
        assert!(Config::resolve(ServeArgs { max_request_bytes: Some(0), ..args() }).is_err());
        assert!(Config::resolve(ServeArgs { shutdown_grace_seconds: Some(100_000), ..args() }).is_err());
        assert!(Config::resolve(ServeArgs { log_level: Some("info,[".into()), ..args() }).is_err());
        assert!(Config::resolve(ServeArgs { metrics_window_seconds: Some(0), ..args() }).is_err());
    }

    #[test]
    fn secrets_stay_out_of_debug_output_and_tls_needs_both_files() {
        let secret = ServeArgs {
            admin_token: Some("admin-secret-0123456789".into()),
            api_keys: vec!["key-secret-0123456789".into()],
            ..args()
        };
        let text = format!("{:?}", Config::resolve(secret).unwrap());
        assert!(!text.contains("admin-secret") && !text.contains("key-secret"), "{text}");
        let short = ServeArgs { api_keys: vec!["short".into()], ..args() };
        assert!(Config::resolve(short).unwrap_err().to_string().contains("--api-key"));
        let half = ServeArgs { tls_cert: Some("cert.pem".into()), ..args() };
        assert!(Config::resolve(half).unwrap_err().to_string().contains("go together"));
        let ca_only = ServeArgs { tls_client_ca: Some("ca.pem".into()), ..args() };
        assert!(Config::resolve(ca_only).is_err());
        let missing =
            ServeArgs { tls_cert: Some("/nonexistent/cert.pem".into()), tls_key: Some("key.pem".into()), ..args() };
        assert!(Config::resolve(missing).unwrap_err().to_string().contains("/nonexistent/cert.pem"));
        assert!(Config::resolve(ServeArgs { header_read_timeout_secs: Some(0.0), ..args() }).is_err());
        assert!(Config::resolve(ServeArgs { max_request_rows: Some(0), ..args() }).is_err());
    }

    #[test]
    fn file_is_layered_under_flags() {
        let dir = std::env::temp_dir().join(format!("infergate-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("server.toml");
        std::fs::write(&path, "http_port = 9000\nmetrics_port = 9002\nlog_format = \"json\"\n").unwrap();
        let config =
            Config::resolve(ServeArgs { config: Some(path.clone()), metrics_port: Some(9102), ..args() }).unwrap();
        assert_eq!(config.http_port, 9000);
        assert_eq!(config.metrics_port, 9102);
        assert_eq!(config.log_format, LogFormat::Json);

        std::fs::write(&path, "http_prot = 9000\n").unwrap();
        let err = Config::resolve(ServeArgs { config: Some(path), ..args() }).unwrap_err();
        assert!(err.to_string().contains("http_prot"), "{err}");
    }

    #[test]
    fn mlflow_models_from_flags_and_file() {
        let flags = ServeArgs {
            mlflow_uri: Some("http://127.0.0.1:5000".into()),
            mlflow_models: vec!["iris@champion".into(), "iris@challenger".into(), "fraud@latest".into()],
            ..args()
        };
        let mlflow = Config::resolve(flags.clone()).unwrap().mlflow.unwrap();
        let served: Vec<(&str, Vec<&str>)> = mlflow
            .models
            .iter()
            .map(|m| (m.serve_as.as_str(), m.aliases.iter().map(String::as_str).collect()))
            .collect();
        assert_eq!(served, [("iris", vec!["champion", "challenger"]), ("fraud", vec!["latest"])]);
        assert_eq!(mlflow.poll, Duration::from_secs(5));

        let no_alias = ServeArgs { mlflow_models: vec!["iris".into()], ..flags.clone() };
        assert!(Config::resolve(no_alias).unwrap_err().to_string().contains("NAME@ALIAS"));
        let no_models = ServeArgs { mlflow_models: Vec::new(), ..flags.clone() };
        assert!(Config::resolve(no_models).is_err());
        let no_uri = ServeArgs { mlflow_uri: None, ..flags.clone() };
        assert!(Config::resolve(no_uri).is_err());
        let ftp = ServeArgs { mlflow_uri: Some("ftp://mlflow".into()), ..flags.clone() };
        assert!(Config::resolve(ftp).is_err());
        let inside = ServeArgs { mlflow_cache: Some("models/.cache".into()), ..flags };
        assert!(Config::resolve(inside).unwrap_err().to_string().contains("inside the model repository"));

        let dir = std::env::temp_dir().join(format!("infergate-config-mlflow-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("server.toml");
        let file = "[mlflow]\nuri = \"http://mlflow:5000\"\npoll_secs = 2.5\n\n[[mlflow.models]]\nname = \"Fraud Model\"\n\
                    serve_as = \"fraud\"\naliases = [\"champion\"]\n[mlflow.models.config]\nmax_batch_size = 64\n";
        std::fs::write(&path, file).unwrap();
        let mlflow = Config::resolve(ServeArgs { config: Some(path.clone()), ..args() }).unwrap().mlflow.unwrap();
        assert_eq!(mlflow.poll, Duration::from_millis(2500));
        assert_eq!(mlflow.models[0].registered, "Fraud Model");
        assert_eq!(mlflow.models[0].serve_as, "fraud");
        assert_eq!(mlflow.models[0].config.max_batch_size, 64);
        std::fs::write(&path, file.replace("max_batch_size", "max_bacth_size")).unwrap();
        assert!(Config::resolve(ServeArgs { config: Some(path), ..args() }).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn cli_parses_with_and_without_subcommand() {
        let port = |args: &[&str]| match Cli::try_parse_from(args).unwrap().into_command() {
            Command::Serve(serve) => serve.http_port,
            Command::Reference(_) | Command::Backends(_) => panic!("not serve"),
        };
        assert_eq!(port(&["infergate", "--http-port", "1234"]), Some(1234));
        assert_eq!(port(&["infergate", "serve", "--http-port", "4321"]), Some(4321));
        assert!(Cli::try_parse_from(["infergate", "--http-port", "70000"]).is_err());
    }
}

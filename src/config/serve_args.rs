//! Every `serve` setting, declared once: its flag, environment variable, config file key, default and `--help`.
//!
//! The same structs are parsed from the command line and environment (clap) and from the TOML file (serde), then
//! merged field by field (flags over file, see `layering`), so no setting can be known to one layer only.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::Args;
use schemars::JsonSchema;
use serde::Deserialize;

use super::file::MlflowModelFile;
use super::layering::layered_settings;
use super::{LogFormat, ModelControlMode, OtlpProtocol};

layered_settings! {
    /// Flags of `infergate serve`, and the keys of its `--config` file (the field names). Every one is optional here
    /// so that an unset flag falls back to the config file, and an unset key to the default.
    #[derive(Debug, Clone, Default, Args, Deserialize, JsonSchema)]
    #[serde(deny_unknown_fields, default)]
    pub struct ServeArgs {
        /// Server configuration file (TOML); flags and environment variables override it.
        #[arg(long, env = "INFERGATE_CONFIG")]
        #[serde(skip)] // Not a file key: a config file does not name another one.
        pub config: Option<PathBuf>,
        /// Folder holding the models: <repository>/<model>/<version>/model.onnx [default: ./models]
        #[arg(long, env = "INFERGATE_MODEL_REPOSITORY")]
        pub model_repository: Option<PathBuf>,
        /// Address every listener binds unless its own address is set [default: 0.0.0.0]
        #[arg(long, env = "INFERGATE_HOST")]
        pub host: Option<IpAddr>,
        /// Address of the REST listener, e.g. 127.0.0.1 for a sidecar only its pod calls [default: --host]
        #[arg(long, env = "INFERGATE_HTTP_HOST")]
        pub http_host: Option<IpAddr>,
        /// Address of the gRPC listener [default: --host]
        #[arg(long, env = "INFERGATE_GRPC_HOST")]
        pub grpc_host: Option<IpAddr>,
        /// Address of the metrics listener, which also answers /v2/health/live and /v2/health/ready for probes
        /// [default: --host]
        #[arg(long, env = "INFERGATE_METRICS_HOST")]
        pub metrics_host: Option<IpAddr>,
        /// Port of the KServe v2 REST API [default: 8000]
        #[arg(long, env = "INFERGATE_HTTP_PORT")]
        pub http_port: Option<u16>,
        /// Port of the KServe v2 gRPC API [default: 8001]
        #[arg(long, env = "INFERGATE_GRPC_PORT")]
        pub grpc_port: Option<u16>,
        /// Port of the Prometheus metrics endpoint (/metrics) [default: 8002]
        #[arg(long, env = "INFERGATE_METRICS_PORT")]
        pub metrics_port: Option<u16>,
        /// Also serve the REST API on this Unix socket, for clients on the same host or in the same pod
        /// (`curl --unix-socket PATH`) [default: none]
        #[arg(long, env = "INFERGATE_HTTP_SOCKET")]
        pub http_socket: Option<PathBuf>,
        /// Also serve the gRPC API on this Unix socket (clients dial `unix:///PATH`) [default: none]
        #[arg(long, env = "INFERGATE_GRPC_SOCKET")]
        pub grpc_socket: Option<PathBuf>,
        /// File mode of the sockets, in octal: who may connect [default: 660, owner and group]
        #[arg(long, env = "INFERGATE_SOCKET_MODE")]
        pub socket_mode: Option<String>,
        /// Serve REST and gRPC on their sockets only, not on TCP (needs --http-socket and --grpc-socket); the
        /// metrics port stays on TCP for probes and scrapes [default: false]
        #[arg(long, env = "INFERGATE_SOCKETS_ONLY", num_args = 0..=1, default_missing_value = "true")]
        pub sockets_only: Option<bool>,
        /// Serve Triton's system shared-memory extension: clients on this host pass tensors in regions of /dev/shm
        /// instead of request bodies (a region is readable by whoever may open it) [default: false]
        #[arg(long, env = "INFERGATE_SHARED_MEMORY", num_args = 0..=1, default_missing_value = "true")]
        pub shared_memory: Option<bool>,
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
        /// load/unload API and --load-model), none (load once at start), on-demand (list it at start, load each
        /// model on its first request, evict under --max-loaded-bytes and --max-loaded-models, and watch it as
        /// poll does) [default: poll]
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
        /// Most bytes the loaded model versions may take together, as measured at each load (resident memory
        /// before and after); idle on-demand versions are evicted, least recently used first, to fit a new load
        /// [default: no limit]
        #[arg(long, env = "INFERGATE_MAX_LOADED_BYTES")]
        pub max_loaded_bytes: Option<u64>,
        /// Most model versions loaded at once; idle on-demand versions are evicted, least recently used first, to
        /// fit a new load [default: no limit]
        #[arg(long, env = "INFERGATE_MAX_LOADED_MODELS")]
        pub max_loaded_models: Option<usize>,
        /// Seconds a request without a deadline of its own waits for its on-demand version to load (and for room
        /// under the budget) before it is answered 503 with Retry-After [default: 30]
        #[arg(long, env = "INFERGATE_COLD_START_TIMEOUT_SECS")]
        pub cold_start_timeout_secs: Option<f64>,
        /// The `--mlflow-*` flags, and the `[mlflow]` table of the file.
        #[command(flatten)]
        pub mlflow: MlflowArgs,
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
        /// Export request spans to this OpenTelemetry collector, e.g. http://otel-collector:4317 [default: no tracing]
        #[arg(long, env = "INFERGATE_OTLP_ENDPOINT")]
        pub otlp_endpoint: Option<String>,
        /// The collector's protocol: grpc (OTLP/gRPC, port 4317) or http (OTLP/HTTP with protobuf, port 4318; the
        /// path /v1/traces is added to a bare URL) [default: grpc]
        #[arg(long, env = "INFERGATE_OTLP_PROTOCOL", value_enum)]
        pub otlp_protocol: Option<OtlpProtocol>,
        /// Share of the requests without a sampled `traceparent` that are traced, from 0 to 1; a request whose
        /// caller sampled it is always traced [default: 0.01]
        #[arg(long, env = "INFERGATE_TRACE_SAMPLE_RATIO")]
        pub trace_sample_ratio: Option<f64>,
        /// The `service.name` of the exported spans [default: infergate]
        #[arg(long, env = "INFERGATE_TRACE_SERVICE_NAME")]
        pub trace_service_name: Option<String>,
        /// The payload log's file sink: models whose `[logging]` names `sink = "file"` write JSON lines into this
        /// folder [default: no file sink]
        #[arg(long, env = "INFERGATE_PAYLOAD_LOG_DIR")]
        pub payload_log_dir: Option<PathBuf>,
        /// The payload log's HTTP sink: models whose `[logging]` names `sink = "http"` post CloudEvents (KServe's
        /// inference logger shape) to this http:// or https:// URL [default: no HTTP sink]
        #[arg(long, env = "INFERGATE_PAYLOAD_LOG_URL")]
        pub payload_log_url: Option<String>,
        /// The `ce-source` of the payload log's events [default: infergate]
        #[arg(long, env = "INFERGATE_PAYLOAD_LOG_SOURCE")]
        pub payload_log_source: Option<String>,
        /// Records each payload-log sink holds waiting; past it new records are dropped and counted, never waited
        /// for [default: 10000]
        #[arg(long, env = "INFERGATE_PAYLOAD_LOG_QUEUE")]
        pub payload_log_queue: Option<usize>,
        /// The file sink closes its file and starts a new one at this size [default: 67108864]
        #[arg(long, env = "INFERGATE_PAYLOAD_LOG_MAX_FILE_BYTES")]
        pub payload_log_max_file_bytes: Option<u64>,
        /// The file sink also closes its file and starts a new one when the file is this many seconds old
        /// [default: 3600]
        #[arg(long, env = "INFERGATE_PAYLOAD_LOG_MAX_FILE_AGE_SECS")]
        pub payload_log_max_file_age_secs: Option<u64>,
        /// The file sink deletes its oldest closed files past this total [default: 1073741824]
        #[arg(long, env = "INFERGATE_PAYLOAD_LOG_MAX_DISK_BYTES")]
        pub payload_log_max_disk_bytes: Option<u64>,
        /// Predictions kept for feedback (models with `[feedback]`); the oldest are pushed out [default: 1000000]
        #[arg(long, env = "INFERGATE_FEEDBACK_MAX_PREDICTIONS")]
        pub feedback_max_predictions: Option<usize>,
        /// Seconds a prediction is kept for feedback; later labels are counted as expired [default: 3600]
        #[arg(long, env = "INFERGATE_FEEDBACK_MAX_AGE_SECS")]
        pub feedback_max_age_secs: Option<u64>,
        /// Memory the predictions kept for feedback may take, ids included [default: 268435456]
        #[arg(long, env = "INFERGATE_FEEDBACK_MAX_BYTES")]
        pub feedback_max_bytes: Option<usize>,
        /// Most records one feedback call may carry [default: 10000]
        #[arg(long, env = "INFERGATE_FEEDBACK_MAX_BATCH")]
        pub feedback_max_batch: Option<usize>,
    }
}

layered_settings! {
    /// The `--mlflow-*` flags, and the `[mlflow]` table of the config file (the field names without `mlflow_`).
    #[derive(Debug, Clone, Default, Args, Deserialize, JsonSchema)]
    // Type errors in `[mlflow]` still say "expected struct MlflowFile", as before this struct also took the flags.
    #[serde(deny_unknown_fields, default, expecting = "struct MlflowFile")]
    pub struct MlflowArgs {
        /// The MLflow tracking server whose Model Registry to follow, e.g. http://mlflow:5000 (credentials from
        /// MLFLOW_TRACKING_TOKEN, or MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD)
        #[arg(long, env = "INFERGATE_MLFLOW_URI")]
        #[serde(rename = "uri")]
        pub mlflow_uri: Option<String>,
        /// A registered model and an alias to serve, as NAME@ALIAS (repeatable; `latest` is the newest version). The
        /// first alias of a model answers requests that name no version.
        #[arg(long = "mlflow-model", env = "INFERGATE_MLFLOW_MODELS", value_delimiter = ',')]
        #[serde(skip)] // The file says more about a model, in `registry_models`.
        pub mlflow_models: Vec<String>,
        /// Seconds between two looks at the registry's aliases [default: 5]
        #[arg(long, env = "INFERGATE_MLFLOW_POLL_SECS")]
        #[serde(rename = "poll_secs")]
        pub mlflow_poll_secs: Option<f64>,
        /// Folder the model versions fetched from MLflow are kept in [default: infergate-mlflow in the temp folder]
        #[arg(long, env = "INFERGATE_MLFLOW_CACHE")]
        #[serde(rename = "cache")]
        pub mlflow_cache: Option<PathBuf>,
        /// Accept MLflow webhook deliveries at POST /v2/mlflow/webhook signed with this secret [default: off]
        #[arg(long, env = "INFERGATE_MLFLOW_WEBHOOK_SECRET", hide_env_values = true)]
        #[serde(rename = "webhook_secret")]
        pub mlflow_webhook_secret: Option<String>,
        /// The file's form of `--mlflow-model`, which also holds each model's settings; a non-empty `--mlflow-model`
        /// list replaces it.
        #[arg(skip)]
        #[serde(rename = "models")]
        pub(super) registry_models: Vec<MlflowModelFile>,
    }
}

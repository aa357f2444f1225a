//! From the layers to a `Config`: flags and environment over the file, then the defaults for what neither sets.

use std::path::PathBuf;
use std::time::Duration;

use super::file::read_file;
use super::layering::Layer;
use super::{
    Config, ConfigError, ConnectionLimits, MlflowArgs, MlflowSettings, OnDemandSettings, OtlpProtocol, RequestLimits,
    Secret, ServeArgs, TlsSettings, TracingSettings,
};
use crate::repository::ModelConfig;
use crate::repository::mlflow::{MlflowAuth, MlflowModel};
use crate::telemetry::feedback::FeedbackSettings;
use crate::telemetry::payload::PayloadLogSettings;

/// Bounds of the repository and registry poll intervals, in seconds.
const MIN_POLL_SECS: f64 = 0.05;
const MAX_POLL_SECS: f64 = 3600.0;

impl Config {
    /// Layers defaults, the config file and the flags/environment, then validates the result.
    pub fn resolve(args: ServeArgs) -> Result<Config, ConfigError> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => ServeArgs::default(),
        };
        let set = args.over(file);
        let defaults = Config::default();
        let payload_log = payload_log_settings(&set, &defaults.payload_log)?;
        let feedback = feedback_settings(&set, &defaults.feedback);
        let mlflow = mlflow_settings(set.mlflow)?;
        let host = set.host.unwrap_or(defaults.http_host);
        let config = Config {
            model_repository: set.model_repository.unwrap_or(defaults.model_repository),
            http_host: set.http_host.unwrap_or(host),
            grpc_host: set.grpc_host.unwrap_or(host),
            metrics_host: set.metrics_host.unwrap_or(host),
            http_port: set.http_port.unwrap_or(defaults.http_port),
            grpc_port: set.grpc_port.unwrap_or(defaults.grpc_port),
            metrics_port: set.metrics_port.unwrap_or(defaults.metrics_port),
            http_socket: set.http_socket,
            grpc_socket: set.grpc_socket,
            socket_mode: socket_mode(set.socket_mode)?.unwrap_or(defaults.socket_mode),
            sockets_only: set.sockets_only.unwrap_or(defaults.sockets_only),
            shared_memory: set.shared_memory.unwrap_or(defaults.shared_memory),
            max_request_bytes: set.max_request_bytes.unwrap_or(defaults.max_request_bytes),
            shutdown_grace: set.shutdown_grace_seconds.map(Duration::from_secs).unwrap_or(defaults.shutdown_grace),
            metrics_window: set.metrics_window_seconds.map(Duration::from_secs).unwrap_or(defaults.metrics_window),
            ort_library: set.ort_library,
            admin_token: set.admin_token.map(Secret),
            state_dir: Some(set.state_dir.unwrap_or_else(|| std::env::temp_dir().join("infergate-state"))),
            model_control_mode: set.model_control_mode.unwrap_or(defaults.model_control_mode),
            repository_poll: seconds("--repository-poll-secs", set.repository_poll_secs)?
                .unwrap_or(defaults.repository_poll),
            repository_settle: seconds("--repository-settle-secs", set.repository_settle_secs)?
                .unwrap_or(defaults.repository_settle),
            load_models: set.load_models,
            on_demand: OnDemandSettings {
                max_loaded_bytes: set.max_loaded_bytes,
                max_loaded_models: set.max_loaded_models,
                cold_start_timeout: timeout("--cold-start-timeout-secs", set.cold_start_timeout_secs)?
                    .unwrap_or(defaults.on_demand.cold_start_timeout),
            },
            api_keys: set.api_keys.into_iter().map(Secret).collect(),
            tls: tls_settings(set.tls_cert, set.tls_key, set.tls_client_ca)?,
            connections: ConnectionLimits {
                max_connections: set.max_connections.unwrap_or(defaults.connections.max_connections),
                header_read_timeout: timeout("--header-read-timeout-secs", set.header_read_timeout_secs)?
                    .unwrap_or(defaults.connections.header_read_timeout),
                body_read_timeout: timeout("--body-read-timeout-secs", set.body_read_timeout_secs)?
                    .unwrap_or(defaults.connections.body_read_timeout),
                max_concurrent_streams: set
                    .max_concurrent_streams
                    .unwrap_or(defaults.connections.max_concurrent_streams),
            },
            request_limits: RequestLimits {
                max_tensor_elements: set.max_tensor_elements.unwrap_or(defaults.request_limits.max_tensor_elements),
                max_request_elements: set.max_request_elements.unwrap_or(defaults.request_limits.max_request_elements),
                max_request_rows: set.max_request_rows.unwrap_or(defaults.request_limits.max_request_rows),
                max_bytes_element: set.max_bytes_element.unwrap_or(defaults.request_limits.max_bytes_element),
            },
            max_model_bytes: set.max_model_bytes.unwrap_or(defaults.max_model_bytes),
            log_format: set.log_format.unwrap_or(defaults.log_format),
            log_level: set.log_level.unwrap_or(defaults.log_level),
            tracing: tracing_settings(
                set.otlp_endpoint,
                set.otlp_protocol,
                set.trace_sample_ratio,
                set.trace_service_name,
            )?,
            mlflow,
            payload_log,
            feedback,
        };
        config.validate()?;
        Ok(config)
    }
}

/// The payload log's sinks: a folder, an http(s) URL, and their bounds.
fn payload_log_settings(set: &ServeArgs, defaults: &PayloadLogSettings) -> Result<PayloadLogSettings, ConfigError> {
    if let Some(url) = &set.payload_log_url {
        let rest = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://"));
        if rest.is_none_or(|rest| rest.is_empty() || rest.starts_with('/')) {
            return Err(ConfigError::Invalid(format!(
                "--payload-log-url '{url}' must be an http:// or https:// URL with a host, e.g. \
                 http://payload-sink:8080/"
            )));
        }
    }
    let source = set.payload_log_source.clone().unwrap_or_else(|| defaults.source.clone());
    if source.trim().is_empty() || !source.chars().all(|c| (' '..='~').contains(&c)) {
        return Err(ConfigError::Invalid("--payload-log-source must be printable ASCII, not empty".into()));
    }
    // Zeros are refused with the other limits, in `Config::validate`.
    Ok(PayloadLogSettings {
        dir: set.payload_log_dir.clone(),
        url: set.payload_log_url.clone(),
        source,
        queue: set.payload_log_queue.unwrap_or(defaults.queue),
        max_file_bytes: set.payload_log_max_file_bytes.unwrap_or(defaults.max_file_bytes),
        max_file_age: set.payload_log_max_file_age_secs.map_or(defaults.max_file_age, Duration::from_secs),
        max_disk_bytes: set.payload_log_max_disk_bytes.unwrap_or(defaults.max_disk_bytes),
    })
}

/// How many predictions are kept for feedback, for how long and in how much memory (zeros are refused with the
/// other limits, in `Config::validate`).
fn feedback_settings(set: &ServeArgs, defaults: &FeedbackSettings) -> FeedbackSettings {
    FeedbackSettings {
        max_predictions: set.feedback_max_predictions.unwrap_or(defaults.max_predictions),
        max_age: set.feedback_max_age_secs.map_or(defaults.max_age, Duration::from_secs),
        max_bytes: set.feedback_max_bytes.unwrap_or(defaults.max_bytes),
        max_batch: set.feedback_max_batch.unwrap_or(defaults.max_batch),
    }
}

/// The MLflow settings; `None` when no layer names a tracking server. Models come from `--mlflow-model` when it
/// lists any, else from the file's `[[mlflow.models]]`.
fn mlflow_settings(set: MlflowArgs) -> Result<Option<MlflowSettings>, ConfigError> {
    let models = if set.mlflow_models.is_empty() {
        set.registry_models
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
        flag_models(&set.mlflow_models)?
    };
    let webhook_secret = set.mlflow_webhook_secret.map(Secret);
    let Some(uri) = set.mlflow_uri else {
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
        poll: seconds("--mlflow-poll-secs", set.mlflow_poll_secs)?.unwrap_or(Duration::from_secs(5)),
        cache: set.mlflow_cache.unwrap_or_else(|| std::env::temp_dir().join("infergate-mlflow")),
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

/// Tracing is on when a collector is named; its other settings mean nothing without one. The endpoint is plain
/// HTTP: a collector in the cluster or the node's agent.
fn tracing_settings(
    endpoint: Option<String>,
    protocol: Option<OtlpProtocol>,
    sample_ratio: Option<f64>,
    service_name: Option<String>,
) -> Result<Option<TracingSettings>, ConfigError> {
    let Some(endpoint) = endpoint else {
        if protocol.is_some() || sample_ratio.is_some() || service_name.is_some() {
            return Err(ConfigError::Invalid(
                "--otlp-protocol, --trace-sample-ratio and --trace-service-name need --otlp-endpoint".into(),
            ));
        }
        return Ok(None);
    };
    let host = endpoint.strip_prefix("http://").unwrap_or_default();
    if host.is_empty() || host.starts_with('/') {
        return Err(ConfigError::Invalid(format!(
            "--otlp-endpoint '{endpoint}' must be an http:// URL with a host, e.g. http://otel-collector:4317 \
             (TLS to the collector is not supported)"
        )));
    }
    let sample_ratio = sample_ratio.unwrap_or(0.01);
    if !(0.0..=1.0).contains(&sample_ratio) {
        return Err(ConfigError::Invalid(format!("--trace-sample-ratio must be between 0 and 1, got {sample_ratio}")));
    }
    let service_name = service_name.unwrap_or_else(|| "infergate".to_owned());
    if service_name.trim().is_empty() {
        return Err(ConfigError::Invalid("--trace-service-name must not be empty".into()));
    }
    Ok(Some(TracingSettings { endpoint, protocol: protocol.unwrap_or(OtlpProtocol::Grpc), sample_ratio, service_name }))
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

/// `--socket-mode`: octal permission bits, and the owner must be able to connect.
fn socket_mode(value: Option<String>) -> Result<Option<u32>, ConfigError> {
    let Some(text) = value else { return Ok(None) };
    let digits = text.trim_start_matches("0o");
    match u32::from_str_radix(digits, 8) {
        Ok(mode) if mode <= 0o777 && mode & 0o600 == 0o600 => Ok(Some(mode)),
        Ok(_) => Err(ConfigError::Invalid(format!(
            "--socket-mode {text}: permission bits up to 777, with read and write for the owner (e.g. 660)"
        ))),
        Err(_) => Err(ConfigError::Invalid(format!("--socket-mode {text} is not an octal file mode (e.g. 660)"))),
    }
}

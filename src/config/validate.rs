//! Cross-field checks of a `Config`, run once at start with a message naming the flag to fix.

use std::path::{Path, PathBuf};

use super::{Config, ConfigError, MlflowSettings, ModelControlMode};
use crate::repository::mlflow;

/// Most connections a listener may hold; each costs a task and buffers.
const MAX_CONNECTIONS_CEILING: usize = 1 << 20;

/// Shortest admin token or API key accepted.
const MIN_ADMIN_TOKEN_CHARS: usize = 16;

/// Largest request body we accept at all: one protobuf/HTTP message past 2 GiB is never legitimate here.
const MAX_REQUEST_BYTES_CEILING: usize = 2 << 30;
/// Longest metrics window: an hour of per-second slots per tracked distribution.
const MAX_METRICS_WINDOW_SECONDS: u64 = 3600;
/// Longest shutdown grace period; Kubernetes' own default is 30 s.
const MAX_SHUTDOWN_GRACE_SECONDS: u64 = 3600;

/// Longest Unix socket path the kernel accepts (`sun_path` holds 108 bytes with its terminating zero).
const MAX_SOCKET_PATH_BYTES: usize = 107;

impl Config {
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
        self.validate_sockets()?;
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
            ("--payload-log-queue", self.payload_log.queue),
            ("--payload-log-max-file-bytes", usize::try_from(self.payload_log.max_file_bytes).unwrap_or(usize::MAX)),
            (
                "--payload-log-max-file-age-secs",
                usize::try_from(self.payload_log.max_file_age.as_secs()).unwrap_or(usize::MAX),
            ),
            ("--payload-log-max-disk-bytes", usize::try_from(self.payload_log.max_disk_bytes).unwrap_or(usize::MAX)),
            ("--feedback-max-predictions", self.feedback.max_predictions),
            ("--feedback-max-age-secs", usize::try_from(self.feedback.max_age.as_secs()).unwrap_or(usize::MAX)),
            ("--feedback-max-bytes", self.feedback.max_bytes),
            ("--feedback-max-batch", self.feedback.max_batch),
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
        if self.on_demand.max_loaded_bytes == Some(0) || self.on_demand.max_loaded_models == Some(0) {
            return Err(ConfigError::Invalid(
                "--max-loaded-bytes and --max-loaded-models must be at least 1 (leave them unset for no limit)".into(),
            ));
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

/// The repository must be a folder we can list, or no model could ever load.
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

impl Config {
    fn validate_sockets(&self) -> Result<(), ConfigError> {
        let sockets = [("--http-socket", &self.http_socket), ("--grpc-socket", &self.grpc_socket)];
        for (flag, path) in sockets.iter().filter_map(|(flag, path)| path.as_ref().map(|path| (flag, path))) {
            let bytes = path.as_os_str().len();
            if bytes == 0 || bytes > MAX_SOCKET_PATH_BYTES {
                return Err(ConfigError::Invalid(format!(
                    "{flag} must be a path of 1 to {MAX_SOCKET_PATH_BYTES} bytes (the kernel's limit), got {bytes}"
                )));
            }
        }
        if self.http_socket.is_some() && self.http_socket == self.grpc_socket {
            return Err(ConfigError::Invalid("--http-socket and --grpc-socket must be different paths".to_owned()));
        }
        if self.sockets_only && (self.http_socket.is_none() || self.grpc_socket.is_none()) {
            return Err(ConfigError::Invalid(
                "--sockets-only needs both --http-socket and --grpc-socket, or an API would not be served".to_owned(),
            ));
        }
        if self.sockets_only && self.tls.is_some() {
            return Err(ConfigError::Invalid(
                "--sockets-only with TLS: TLS applies to TCP listeners only, and none would be left".to_owned(),
            ));
        }
        Ok(())
    }
}

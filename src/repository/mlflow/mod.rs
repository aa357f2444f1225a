//! The MLflow Model Registry as a model source.
//!
//! A served model follows aliases of one registered model (`champion`, `challenger`, or `latest`: the highest
//! ready version). [`MlflowClient`] resolves the aliases through MLflow's REST API and fetches a version's `MLmodel`
//! and ONNX file through the tracking server's artifact proxy into a local cache. Each version is written to a
//! temporary folder and renamed into place whole, so a half-downloaded file is never loaded; a cached version whose
//! file still has the recorded SHA-256 is reused without a download. Files are fsynced before the rename and the
//! folder after it, so a crash (even `kill -9` or a power cut) leaves either no version or a whole one; the
//! unfinished folders it leaves are removed at the next start.
//!
//! The aliases last served are kept beside the versions (`aliases.json`), so a server restarted while MLflow is
//! unreachable serves those versions from the cache, after checking their files against the recorded SHA-256.
//!
//! MLflow webhooks ([`verify_webhook`]) only say "look now": what is served always comes from the REST API.

mod cache;
mod client;
mod mlmodel;
mod webhook;

use std::path::PathBuf;
use std::sync::Arc;

use thiserror::Error;

use super::{DeclaredSignature, ModelConfig, is_valid_model_name};

pub use cache::{CACHED_MODEL_FILE, remove_unfinished};
pub use client::{MlflowClient, check_uri};
pub use mlmodel::{MlModel, parse_mlmodel};
pub use webhook::{
    WEBHOOK_DELIVERY_HEADER, WEBHOOK_MAX_SKEW, WEBHOOK_SIGNATURE_HEADER, WEBHOOK_TIMESTAMP_HEADER, WebhookError,
    WebhookEvent, verify_webhook,
};

/// The pseudo-alias for the highest version number whose registration is complete.
pub const LATEST: &str = "latest";

/// One served model that follows the registry.
#[derive(Debug, Clone, PartialEq)]
pub struct MlflowModel {
    /// The registered model's name in MLflow.
    pub registered: String,
    /// The name it is served under (the registered name unless configured otherwise).
    pub serve_as: String,
    /// The aliases to serve, in order: the first one answers requests that name no version.
    pub aliases: Vec<String>,
    /// Its `model.toml` settings (batching, backend, warm-up, ...); the versions served are the aliases'.
    pub config: Arc<ModelConfig>,
}

/// Credentials for MLflow, from MLflow's own environment variables (`MLFLOW_TRACKING_TOKEN`, or
/// `MLFLOW_TRACKING_USERNAME` and `MLFLOW_TRACKING_PASSWORD`).
#[derive(Clone, Default, PartialEq, Eq)]
pub enum MlflowAuth {
    #[default]
    None,
    Bearer(String),
    Basic {
        username: String,
        password: String,
    },
}

impl std::fmt::Debug for MlflowAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MlflowAuth::None => "None",
            MlflowAuth::Bearer(_) => "Bearer(..)",
            MlflowAuth::Basic { .. } => "Basic(..)",
        })
    }
}

impl MlflowAuth {
    /// From MLflow's environment variables; a token wins over a user name and password.
    pub fn from_env() -> MlflowAuth {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        match (var("MLFLOW_TRACKING_TOKEN"), var("MLFLOW_TRACKING_USERNAME"), var("MLFLOW_TRACKING_PASSWORD")) {
            (Some(token), _, _) => MlflowAuth::Bearer(token),
            (None, Some(username), Some(password)) => MlflowAuth::Basic { username, password },
            _ => MlflowAuth::None,
        }
    }
}

#[derive(Debug, Error)]
pub enum MlflowError {
    /// MLflow did not answer (connection refused, timeout, 5xx): nothing it said can be trusted, so nothing
    /// served changes.
    #[error("MLflow at {uri} is unreachable: {reason}")]
    Unreachable { uri: String, reason: String },
    #[error("MLflow refused {what}: {status} {message}")]
    Refused { what: String, status: u16, message: String },
    #[error("registered model '{0}' does not exist in MLflow")]
    NoSuchModel(String),
    #[error("version {version} of '{model}': {reason}")]
    Artifact { model: String, version: u64, reason: String },
    #[error("cannot write the model cache at {path}: {reason}")]
    Cache { path: PathBuf, reason: String },
}

impl MlflowError {
    /// Whether MLflow itself failed (as opposed to answering something about this model).
    pub fn is_outage(&self) -> bool {
        matches!(self, MlflowError::Unreachable { .. })
    }
}

/// A version fetched into the cache.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub model_path: PathBuf,
    /// The `MLmodel` signature, when it is tensor-based.
    pub declared: Option<DeclaredSignature>,
    /// Whether the file came from the cache rather than a download.
    pub cached: bool,
}

/// Checks one `--mlflow-model` entry's names.
pub fn check_model(model: &MlflowModel) -> Result<(), String> {
    if model.registered.is_empty() {
        return Err("an MLflow model needs its registered name".to_owned());
    }
    if !is_valid_model_name(&model.serve_as) {
        return Err(format!(
            "MLflow model '{}' would be served as '{}', which is not a model name (letters, digits, '_', '-', '.'); \
             set serve_as",
            model.registered, model.serve_as
        ));
    }
    if model.aliases.is_empty() {
        return Err(format!("MLflow model '{}' names no alias to serve", model.registered));
    }
    let valid_alias =
        |a: &str| !a.is_empty() && a.len() <= 255 && a.chars().all(|c| c.is_alphanumeric() || "_-".contains(c));
    if let Some(bad) = model.aliases.iter().find(|a| !valid_alias(a)) {
        return Err(format!("MLflow model '{}': '{bad}' is not an alias", model.registered));
    }
    Ok(())
}

#[cfg(test)]
mod tests;

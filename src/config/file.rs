//! The `--config` TOML file. Its keys are `ServeArgs`' fields (see `serve_args`), so only what a flag cannot say is
//! declared here: the `[[mlflow.models]]` tables.

use std::path::Path;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{ConfigError, ServeArgs};
use crate::repository::ModelConfig;

/// `[[mlflow.models]]`: a registered model, the aliases to serve and, in `[mlflow.models.config]`, the settings
/// a `model.toml` would hold.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct MlflowModelFile {
    /// The registered model's name in MLflow.
    pub(super) name: String,
    /// The aliases to serve (`latest` is the newest version); the first answers requests that name no version.
    pub(super) aliases: Vec<String>,
    /// The name it is served under [default: the registered name]
    pub(super) serve_as: Option<String>,
    /// `[mlflow.models.config]`: the settings a `model.toml` would hold, with the same keys (below).
    pub(super) config: Option<ModelConfig>,
}

/// The file's layer of settings; unknown keys are an error, so a misspelt setting is never silently ignored.
pub(super) fn read_file(path: &Path) -> Result<ServeArgs, ConfigError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile { path: path.to_owned(), source })?;
    toml::from_str(&text).map_err(|e| ConfigError::ParseFile { path: path.to_owned(), message: e.to_string() })
}

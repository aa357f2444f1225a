//! The `--config` TOML file. Its keys are `ServeArgs`' fields (see `serve_args`), so only what a flag cannot say is
//! declared here: the `[[mlflow.models]]` tables.

use std::path::Path;

use serde::Deserialize;

use super::{ConfigError, ServeArgs};
use crate::repository::ModelConfig;

/// `[[mlflow.models]]`: a registered model, the aliases to serve and, in `[mlflow.models.config]`, the settings
/// a `model.toml` would hold.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct MlflowModelFile {
    pub(super) name: String,
    pub(super) aliases: Vec<String>,
    pub(super) serve_as: Option<String>,
    pub(super) config: Option<ModelConfig>,
}

/// The file's layer of settings; unknown keys are an error, so a misspelt setting is never silently ignored.
pub(super) fn read_file(path: &Path) -> Result<ServeArgs, ConfigError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile { path: path.to_owned(), source })?;
    toml::from_str(&text).map_err(|e| ConfigError::ParseFile { path: path.to_owned(), message: e.to_string() })
}

//! The repository extension: the index of models and versions with their states, and loading and unloading
//! models. Load and unload change what the server serves, so they need the admin token (see `api::access`).

use serde::Serialize;

use super::{ApiError, ModelControl};
use crate::lifecycle::ModelTable;
use crate::repository::is_valid_model_name;
use crate::telemetry::payload::format_time;

/// One row of the repository index, in Triton's shape.
#[derive(Debug, Clone, Serialize)]
pub struct IndexRow {
    pub name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub version: String,
    pub state: &'static str,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// MLflow aliases naming the version.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// The last use of an on-demand version (loaded or evicted), RFC 3339 in UTC.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_use: Option<String>,
    /// What an on-demand version's last load measured, in bytes (resident memory before and after): what the
    /// memory budget counts for it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loaded_bytes: Option<u64>,
}

/// Every model of the repository folder and every version the server knows, with its state; `ready_only` keeps
/// the ready ones.
pub fn repository_index(table: &ModelTable, ready_only: bool) -> Vec<IndexRow> {
    table
        .index()
        .into_iter()
        .filter(|entry| !ready_only || entry.state == "READY")
        .map(|entry| IndexRow {
            name: entry.name,
            version: entry.version.map(|v| v.to_string()).unwrap_or_default(),
            state: entry.state,
            reason: entry.reason,
            aliases: entry.aliases,
            last_use: entry.last_use.map(format_time),
            loaded_bytes: entry.cost,
        })
        .collect()
}

fn checked_name(model: &str) -> Result<(), ApiError> {
    if is_valid_model_name(model) {
        Ok(())
    } else {
        Err(ApiError::invalid_input(format!(
            "'{}' is not a model name: names use letters, digits, '_', '-' and '.', and do not start with '.'",
            model.escape_debug()
        )))
    }
}

/// Loads (or reloads) a model from the repository folder. Fails unless at least one version then serves.
pub async fn load_model(
    table: &ModelTable,
    control: &ModelControl,
    authorization: Option<&str>,
    model: &str,
) -> Result<(), ApiError> {
    control.authorize(authorization)?;
    checked_name(model)?;
    table.load_model(model).await?;
    table.resolve(model, None)?;
    Ok(())
}

/// Takes every version of a model out of service; requests in flight finish.
pub async fn unload_model(
    table: &ModelTable,
    control: &ModelControl,
    authorization: Option<&str>,
    model: &str,
) -> Result<(), ApiError> {
    control.authorize(authorization)?;
    checked_name(model)?;
    Ok(table.unload_model(model).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_tricks_are_not_model_names() {
        for bad in ["../models", "/etc", "a/b", "..", "a\0b", ""] {
            assert!(checked_name(bad).is_err(), "{bad:?}");
        }
    }
}

//! The repository extension: the index of models and versions with their states, and loading and unloading
//! models. Load and unload change what the server serves, so they are off unless an admin token is configured,
//! and then need it as a bearer token.

use serde::Serialize;

use super::ApiError;
use crate::lifecycle::ModelTable;
use crate::repository::is_valid_model_name;

/// Who may load and unload models.
#[derive(Clone)]
pub struct ModelControl {
    token: Option<String>,
}

impl std::fmt::Debug for ModelControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelControl").field("enabled", &self.token.is_some()).finish()
    }
}

impl ModelControl {
    /// Enabled when `token` is set.
    pub fn new(token: Option<String>) -> ModelControl {
        ModelControl { token }
    }

    /// Checks an `Authorization` value ("Bearer <token>").
    pub(super) fn authorize(&self, authorization: Option<&str>) -> Result<(), ApiError> {
        let Some(expected) = &self.token else {
            return Err(ApiError::Forbidden(
                "model management (load, unload, traffic) is disabled; set --admin-token (INFERGATE_ADMIN_TOKEN) to enable it"
                    .to_owned(),
            ));
        };
        let presented = authorization
            .and_then(|value| value.strip_prefix("Bearer "))
            .ok_or_else(|| ApiError::Unauthorized("model management needs 'Authorization: Bearer <token>'".into()))?;
        if constant_time_eq(presented.trim().as_bytes(), expected.as_bytes()) {
            Ok(())
        } else {
            Err(ApiError::Unauthorized("the admin token is not valid".to_owned()))
        }
    }
}

/// Compares without stopping at the first difference, so the time taken does not reveal the token.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

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
    fn tokens_are_checked() {
        let off = ModelControl::new(None);
        assert!(matches!(off.authorize(Some("Bearer x")), Err(ApiError::Forbidden(_))));
        let on = ModelControl::new(Some("s3cret-token-0123456789".to_owned()));
        assert!(on.authorize(Some("Bearer s3cret-token-0123456789")).is_ok());
        for bad in [None, Some("s3cret-token-0123456789"), Some("Bearer wrong"), Some("Basic s3cret-token-0123456789")]
        {
            assert!(matches!(on.authorize(bad), Err(ApiError::Unauthorized(_))), "{bad:?}");
        }
    }

    #[test]
    fn path_tricks_are_not_model_names() {
        for bad in ["../models", "/etc", "a/b", "..", "a\0b", ""] {
            assert!(checked_name(bad).is_err(), "{bad:?}");
        }
    }
}

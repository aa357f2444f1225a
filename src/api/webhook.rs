//! MLflow webhook deliveries. A delivery whose signature checks out and that names a followed registered model
//! makes the MLflow follower look at that model now; what is served still comes from MLflow's REST API, so a
//! delivery can hurry a change but never make one.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;

use super::ApiError;
use crate::repository::mlflow::{self, WebhookError};

/// The headers of a delivery: its id, its timestamp and its signature.
pub use crate::repository::mlflow::{WEBHOOK_DELIVERY_HEADER, WEBHOOK_SIGNATURE_HEADER, WEBHOOK_TIMESTAMP_HEADER};

/// Where verified deliveries go; disabled unless a webhook secret is configured.
#[derive(Clone)]
pub struct MlflowHook {
    enabled: Option<Enabled>,
}

#[derive(Clone)]
struct Enabled {
    secret: Arc<[u8]>,
    /// Registered model names followed.
    followed: Arc<HashSet<String>>,
    nudges: tokio::sync::mpsc::Sender<String>,
}

impl std::fmt::Debug for MlflowHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MlflowHook").field("enabled", &self.enabled.is_some()).finish()
    }
}

/// The answer to a delivery.
#[derive(Debug, Serialize)]
pub struct Delivery {
    pub entity: String,
    pub action: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Whether the follower was asked to look at the model now.
    pub looking: bool,
}

impl MlflowHook {
    pub fn disabled() -> MlflowHook {
        MlflowHook { enabled: None }
    }

    pub fn new(secret: &str, followed: HashSet<String>, nudges: tokio::sync::mpsc::Sender<String>) -> MlflowHook {
        let enabled = Enabled { secret: secret.as_bytes().into(), followed: Arc::new(followed), nudges };
        MlflowHook { enabled: Some(enabled) }
    }

    /// Verifies a delivery (headers as sent) and passes it on.
    pub fn deliver(
        &self,
        delivery_id: Option<&str>,
        timestamp: Option<&str>,
        signature: Option<&str>,
        body: &[u8],
    ) -> Result<Delivery, ApiError> {
        let Some(hook) = &self.enabled else {
            return Err(ApiError::Forbidden(
                "MLflow webhooks are not enabled; set --mlflow-webhook-secret (INFERGATE_MLFLOW_WEBHOOK_SECRET)".into(),
            ));
        };
        let event = mlflow::verify_webhook(&hook.secret, delivery_id, timestamp, signature, body, SystemTime::now())
            .map_err(|e| match e {
                WebhookError::Payload(_) => ApiError::MalformedRequest(e.to_string()),
                WebhookError::MissingHeader(_) | WebhookError::BadSignature | WebhookError::Stale => {
                    ApiError::Unauthorized(e.to_string())
                }
            })?;
        let followed = event.model.as_ref().filter(|name| hook.followed.contains(*name));
        // A full queue already holds looks that will see this change too.
        let looking = followed.is_some_and(|name| hook.nudges.try_send(name.clone()).is_ok());
        tracing::info!(entity = %event.entity, action = %event.action, model = ?event.model, looking, "MLflow webhook delivery");
        Ok(Delivery { entity: event.entity, action: event.action, model: event.model, looking })
    }
}

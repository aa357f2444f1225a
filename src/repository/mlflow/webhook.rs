//! MLflow webhook deliveries: signature, timestamp and payload checks.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;
use thiserror::Error;

/// How far a webhook's timestamp may be from our clock (replayed deliveries are older).
pub const WEBHOOK_MAX_SKEW: Duration = Duration::from_secs(300);

/// What a verified webhook delivery is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookEvent {
    /// e.g. `model_version_alias`, `model_version`, `registered_model`.
    pub entity: String,
    pub action: String,
    /// The registered model it names, when it names one.
    pub model: Option<String>,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum WebhookError {
    #[error("the delivery has no {0} header")]
    MissingHeader(&'static str),
    #[error("the delivery's signature does not match (MLflow signs with the webhook's secret)")]
    BadSignature,
    #[error("the delivery's timestamp is more than {} s away from now; replays are refused", WEBHOOK_MAX_SKEW.as_secs())]
    Stale,
    #[error("the delivery's body is not an MLflow webhook payload: {0}")]
    Payload(String),
}

/// The headers MLflow sends with each delivery.
pub const WEBHOOK_SIGNATURE_HEADER: &str = "x-mlflow-signature";
pub const WEBHOOK_TIMESTAMP_HEADER: &str = "x-mlflow-timestamp";
pub const WEBHOOK_DELIVERY_HEADER: &str = "x-mlflow-delivery-id";

/// Checks a delivery: `signature` is `v1,<base64 HMAC-SHA256 of "<delivery id>.<timestamp>.<body>">` under the
/// webhook's secret, and the timestamp (Unix seconds) is within [`WEBHOOK_MAX_SKEW`] of `now`.
pub fn verify_webhook(
    secret: &[u8],
    delivery_id: Option<&str>,
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now: SystemTime,
) -> Result<WebhookEvent, WebhookError> {
    let delivery_id = delivery_id.ok_or(WebhookError::MissingHeader(WEBHOOK_DELIVERY_HEADER))?;
    let timestamp = timestamp.ok_or(WebhookError::MissingHeader(WEBHOOK_TIMESTAMP_HEADER))?;
    let signature = signature.ok_or(WebhookError::MissingHeader(WEBHOOK_SIGNATURE_HEADER))?;
    let presented = signature
        .strip_prefix("v1,")
        .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64.trim()).ok())
        .ok_or(WebhookError::BadSignature)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|_| WebhookError::BadSignature)?;
    mac.update(delivery_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&presented).map_err(|_| WebhookError::BadSignature)?;
    let sent = timestamp.trim().parse::<u64>().map_err(|_| WebhookError::Stale)?;
    let now = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    if now.abs_diff(sent) > WEBHOOK_MAX_SKEW.as_secs() {
        return Err(WebhookError::Stale);
    }
    #[derive(Deserialize)]
    struct Payload {
        entity: String,
        action: String,
        #[serde(default)]
        data: serde_json::Value,
    }
    let payload: Payload = serde_json::from_slice(body).map_err(|e| WebhookError::Payload(e.to_string()))?;
    let model = payload.data.get("name").and_then(|n| n.as_str()).map(str::to_owned);
    Ok(WebhookEvent { entity: payload.entity, action: payload.action, model })
}

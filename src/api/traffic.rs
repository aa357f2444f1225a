//! The traffic management extension: a model's traffic policy (read like metadata, changed with the admin token) and
//! the state of its rollout.

use serde::Serialize;

use super::{ApiError, Gateway};
use crate::repository::TrafficConfig;
use crate::routing::RolloutStatus;

/// `GET /v2/models/{model}/traffic`: the policy in force, with its current weights.
#[derive(Debug, Serialize)]
pub struct TrafficView {
    pub model: String,
    pub policy: Option<TrafficConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since_unix: Option<u64>,
}

pub fn traffic(gateway: &Gateway, model: &str) -> Result<TrafficView, ApiError> {
    gateway.table.entry(model)?;
    let policy = gateway.traffic.policy(model);
    Ok(TrafficView {
        model: model.to_owned(),
        since_unix: policy.as_ref().map(|p| p.since_unix),
        policy: policy.map(|p| {
            let mut config = p.config.clone();
            for (variant, live) in config.variants.iter_mut().zip(&p.variants) {
                variant.weight = live.weight;
            }
            config
        }),
    })
}

/// `PUT /v2/models/{model}/traffic` with a policy (JSON in the shape of `[traffic]`), or `DELETE` (no body) to
/// remove it. The caller is authorized before the body is parsed; an invalid policy is refused with the reason
/// and the one in force stays.
pub fn set_traffic(
    gateway: &Gateway,
    authorization: Option<&str>,
    model: &str,
    body: Option<&[u8]>,
) -> Result<(), ApiError> {
    gateway.control.authorize(authorization)?;
    let entry = gateway.table.entry(model)?;
    let policy: Option<TrafficConfig> = body
        .map(serde_json::from_slice)
        .transpose()
        .map_err(|e| ApiError::malformed(format!("invalid policy: {e}")))?;
    gateway.traffic.set_traffic(&gateway.table, &entry, policy).map_err(ApiError::InvalidInput)
}

/// `GET /v2/models/{model}/rollout`: the rollout's state and its decisions, with their numbers.
pub fn rollout(gateway: &Gateway, model: &str) -> Result<RolloutStatus, ApiError> {
    gateway.table.entry(model)?;
    let status = gateway.traffic.rollout(model);
    status.map(|s| (*s).clone()).ok_or_else(|| ApiError::ModelNotFound(format!("model '{model}' has no rollout")))
}

//! Triton's system shared-memory extension: register, unregister and status of regions.

use axum::Router;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::{get, post};
use serde::Deserialize;

use super::body::{Keyed, ReadBody};
use super::{AppState, json_body};
use crate::api::ApiError;

pub(super) fn routes(router: Router<AppState>) -> Router<AppState> {
    router
        .route("/v2/systemsharedmemory/status", get(status_all))
        .route("/v2/systemsharedmemory/region/{name}/status", get(status))
        .route("/v2/systemsharedmemory/region/{name}/register", post(register))
        .route("/v2/systemsharedmemory/region/{name}/unregister", post(unregister))
        .route("/v2/systemsharedmemory/unregister", post(unregister_all))
}

/// `{"key": "/name", "offset": 0, "byte_size": 1024}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisterBody {
    key: String,
    #[serde(default)]
    offset: u64,
    byte_size: u64,
}

async fn register(
    _: Keyed,
    State(state): State<AppState>,
    Path(name): Path<String>,
    ReadBody(body): ReadBody,
) -> Result<Response, ApiError> {
    let request: RegisterBody = serde_json::from_slice(&body)
        .map_err(|e| ApiError::malformed(format!("invalid shared memory register request: {e}")))?;
    state.gateway.shared_memory.register(&name, &request.key, request.offset, request.byte_size)?;
    Ok(json_body(&serde_json::json!({})))
}

async fn unregister(_: Keyed, State(state): State<AppState>, Path(name): Path<String>) -> Result<Response, ApiError> {
    state.gateway.shared_memory.unregister(Some(&name))?;
    Ok(json_body(&serde_json::json!({})))
}

async fn unregister_all(_: Keyed, State(state): State<AppState>) -> Result<Response, ApiError> {
    state.gateway.shared_memory.unregister(None)?;
    Ok(json_body(&serde_json::json!({})))
}

async fn status(_: Keyed, State(state): State<AppState>, Path(name): Path<String>) -> Result<Response, ApiError> {
    Ok(json_body(&state.gateway.shared_memory.status(Some(&name))?))
}

async fn status_all(_: Keyed, State(state): State<AppState>) -> Result<Response, ApiError> {
    Ok(json_body(&state.gateway.shared_memory.status(None)?))
}

//! Triton's system shared-memory extension: register, unregister and status of regions.

use axum::extract::State;
use axum::response::Response;
use serde::Deserialize;

use super::body::{Keyed, ReadBody};
use super::routes::{PathParam, Routes};
use super::{AppState, json_body};
use crate::api::ApiError;

pub(super) fn routes(table: Routes<AppState>) -> Routes<AppState> {
    table
        .get("/v2/systemsharedmemory/status", status_all)
        .get("/v2/systemsharedmemory/region/{name}/status", status)
        .post("/v2/systemsharedmemory/region/{name}/register", register)
        .post("/v2/systemsharedmemory/region/{name}/unregister", unregister)
        .post("/v2/systemsharedmemory/unregister", unregister_all)
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
    PathParam(name): PathParam<String>,
    ReadBody(body): ReadBody,
) -> Result<Response, ApiError> {
    let request: RegisterBody = serde_json::from_slice(&body)
        .map_err(|e| ApiError::malformed(format!("invalid shared memory register request: {e}")))?;
    state.gateway.shared_memory.register(&name, &request.key, request.offset, request.byte_size)?;
    Ok(json_body(&serde_json::json!({})))
}

async fn unregister(
    _: Keyed,
    State(state): State<AppState>,
    PathParam(name): PathParam<String>,
) -> Result<Response, ApiError> {
    state.gateway.shared_memory.unregister(Some(&name))?;
    Ok(json_body(&serde_json::json!({})))
}

async fn unregister_all(_: Keyed, State(state): State<AppState>) -> Result<Response, ApiError> {
    state.gateway.shared_memory.unregister(None)?;
    Ok(json_body(&serde_json::json!({})))
}

async fn status(
    _: Keyed,
    State(state): State<AppState>,
    PathParam(name): PathParam<String>,
) -> Result<Response, ApiError> {
    Ok(json_body(&state.gateway.shared_memory.status(Some(&name))?))
}

async fn status_all(_: Keyed, State(state): State<AppState>) -> Result<Response, ApiError> {
    Ok(json_body(&state.gateway.shared_memory.status(None)?))
}

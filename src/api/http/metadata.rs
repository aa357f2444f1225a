//! Metadata: the server's, a model's, its configuration (Triton's model configuration extension) and its
//! statistics (Triton's statistics extension).

use axum::extract::State;
use axum::response::Response;
use serde::Deserialize;

use super::body::Keyed;
use super::routes::{PathParam, Routes};
use super::{AppState, json_body};
use crate::api::{self, ApiError};

pub(super) fn routes(table: Routes<AppState>) -> Routes<AppState> {
    table
        .get("/v2", server_metadata)
        .get("/v2/models/stats", all_statistics)
        .get("/v2/models/{model}/stats", model_statistics)
        .get("/v2/models/{model}/versions/{version}/stats", model_statistics)
        .get("/v2/models/{model}", model_metadata)
        .get("/v2/models/{model}/versions/{version}", model_metadata)
        .get("/v2/models/{model}/config", model_config)
        .get("/v2/models/{model}/versions/{version}/config", model_config)
}

/// `{model}` or `{model}/versions/{version}` of a model route.
#[derive(Debug, Deserialize)]
pub(super) struct ModelRoute {
    pub model: String,
    #[serde(default)]
    pub version: Option<String>,
}

/// A model route's path parameters; one that cannot be decoded is a 400, like every path's (see [`PathParam`]).
pub(super) type RoutePath = PathParam<ModelRoute>;

async fn server_metadata(_: Keyed, State(state): State<AppState>) -> Response {
    json_body(&api::server_metadata(state.gateway.shared_memory.enabled()))
}

async fn model_metadata(
    _: Keyed,
    State(state): State<AppState>,
    PathParam(r): RoutePath,
) -> Result<Response, ApiError> {
    state.gateway.table().ensure_loaded(&r.model, r.version.as_deref()).await?;
    Ok(json_body(&api::model_metadata(state.gateway.table(), &r.model, r.version.as_deref())?))
}

async fn model_config(_: Keyed, State(state): State<AppState>, PathParam(r): RoutePath) -> Result<Response, ApiError> {
    state.gateway.table().ensure_loaded(&r.model, r.version.as_deref()).await?;
    Ok(json_body(&api::model_config(state.gateway.table(), &r.model, r.version.as_deref())?))
}

async fn all_statistics(_: Keyed, State(state): State<AppState>) -> Result<Response, ApiError> {
    Ok(json_body(&api::statistics(state.gateway.table(), None, None)?))
}

async fn model_statistics(
    _: Keyed,
    State(state): State<AppState>,
    PathParam(r): RoutePath,
) -> Result<Response, ApiError> {
    Ok(json_body(&api::statistics(state.gateway.table(), Some(&r.model), r.version.as_deref())?))
}

//! The traffic management extension: a model's traffic policy (read with an API key, changed with the admin
//! token) and its rollout.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;

use super::body::{Keyed, ReadBody, authorization};
use super::routes::{PathParam, Routes};
use super::{AppState, json_body};
use crate::api::{self, ApiError};

pub(super) fn routes(table: Routes<AppState>) -> Routes<AppState> {
    table
        .get("/v2/models/{model}/traffic", traffic)
        .put("/v2/models/{model}/traffic", set_traffic)
        .delete("/v2/models/{model}/traffic", remove_traffic)
        .get("/v2/models/{model}/rollout", rollout)
}

async fn traffic(
    _: Keyed,
    State(state): State<AppState>,
    PathParam(model): PathParam<String>,
) -> Result<Response, ApiError> {
    Ok(json_body(&api::traffic(&state.gateway, &model)?))
}

/// `PUT /v2/models/{model}/traffic`: a policy in the shape of `[traffic]`, as JSON.
async fn set_traffic(
    State(state): State<AppState>,
    PathParam(model): PathParam<String>,
    headers: HeaderMap,
    ReadBody(body): ReadBody,
) -> Result<Response, ApiError> {
    api::set_traffic(&state.gateway, authorization(&headers), &model, Some(&body))?;
    Ok(json_body(&api::traffic(&state.gateway, &model)?))
}

async fn remove_traffic(
    State(state): State<AppState>,
    PathParam(model): PathParam<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    api::set_traffic(&state.gateway, authorization(&headers), &model, None)?;
    Ok(json_body(&api::traffic(&state.gateway, &model)?))
}

async fn rollout(
    _: Keyed,
    State(state): State<AppState>,
    PathParam(model): PathParam<String>,
) -> Result<Response, ApiError> {
    Ok(json_body(&api::rollout(&state.gateway, &model)?))
}

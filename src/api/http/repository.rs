//! The repository extension (index, load, unload) and MLflow webhook deliveries.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::body::{Keyed, ReadBody, authorization};
use super::routes::{PathParam, Routes};
use super::{AppState, json_body};
use crate::api::{self, ApiError};

pub(super) fn routes(table: Routes<AppState>) -> Routes<AppState> {
    table
        .post("/v2/repository/index", repository_index)
        .post("/v2/repository/models/{model}/load", load_model)
        .post("/v2/repository/models/{model}/unload", unload_model)
        .post("/v2/mlflow/webhook", mlflow_webhook)
}

/// `POST /v2/repository/index`, with an optional body `{"ready": true}` to list only ready versions.
async fn repository_index(
    _: Keyed,
    State(state): State<AppState>,
    ReadBody(body): ReadBody,
) -> Result<Response, ApiError> {
    #[derive(Default, Deserialize)]
    struct IndexRequest {
        #[serde(default)]
        ready: bool,
    }
    let request: IndexRequest = if body.iter().all(u8::is_ascii_whitespace) {
        IndexRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::malformed(format!("invalid index request: {e}")))?
    };
    Ok(json_body(&api::repository_index(state.gateway.table(), request.ready)))
}

/// `POST /v2/repository/models/{model}/load` (the body, Triton's optional parameters, is not used).
async fn load_model(
    State(state): State<AppState>,
    PathParam(model): PathParam<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let gateway = &state.gateway;
    api::load_model(gateway.table(), &gateway.control, authorization(&headers), &model).await?;
    Ok(StatusCode::OK.into_response())
}

async fn unload_model(
    State(state): State<AppState>,
    PathParam(model): PathParam<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let gateway = &state.gateway;
    api::unload_model(gateway.table(), &gateway.control, authorization(&headers), &model).await?;
    Ok(StatusCode::OK.into_response())
}

/// `POST /v2/mlflow/webhook`: an MLflow webhook delivery (see `api::MlflowHook`).
async fn mlflow_webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    ReadBody(body): ReadBody,
) -> Result<Response, ApiError> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let delivery = state.gateway.hook.deliver(
        header(api::WEBHOOK_DELIVERY_HEADER),
        header(api::WEBHOOK_TIMESTAMP_HEADER),
        header(api::WEBHOOK_SIGNATURE_HEADER),
        &body,
    )?;
    Ok(json_body(&delivery))
}

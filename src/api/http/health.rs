//! Health: liveness, readiness (with the detail of the model sources) and a model's readiness. Never keyed, so
//! probes need no credentials.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::metadata::RoutePath;
use super::routes::{PathParam, Routes};
use super::{AppState, json_body};
use crate::api::{self, ApiError};
use crate::lifecycle::{MlflowStatus, ModelTable};

pub(super) fn routes(table: Routes<AppState>) -> Routes<AppState> {
    table
        .get("/v2/health/live", live)
        .get("/v2/health/ready", ready)
        .get("/v2/models/{model}/ready", model_ready)
        .get("/v2/models/{model}/versions/{version}/ready", model_ready)
}

#[derive(Serialize)]
struct Live {
    live: bool,
}

#[derive(Serialize)]
struct Ready {
    ready: bool,
}

/// The server's readiness with the detail of its model sources.
#[derive(Serialize)]
struct ServerReady {
    ready: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    mlflow: Option<MlflowStatus>,
}

/// Liveness: the process answers.
pub(super) async fn live() -> Response {
    json_body(&Live { live: true })
}

async fn ready(State(state): State<AppState>) -> Response {
    server_ready(state.gateway.table())
}

/// Readiness: 200 once every model has loaded or failed, 503 before; the same answer on the REST and metrics ports.
pub(super) fn server_ready(table: &ModelTable) -> Response {
    let ready = table.is_ready();
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let mlflow = table.mlflow_status().map(|status| (*status).clone());
    (status, json_body(&ServerReady { ready, mlflow })).into_response()
}

async fn model_ready(State(state): State<AppState>, PathParam(r): RoutePath) -> Result<Response, ApiError> {
    api::model_ready(state.gateway.table(), &r.model, r.version.as_deref())?;
    Ok(json_body(&Ready { ready: true }))
}

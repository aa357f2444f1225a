//! The metrics port: `GET /metrics` for Prometheus, and the server's liveness and readiness for probes, so a
//! sidecar can keep its inference ports on loopback while the kubelet and Prometheus reach this one.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::{health, not_found};
use crate::lifecycle::ModelTable;

pub fn metrics_router(table: Arc<ModelTable>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/v2/health/live", get(health::live))
        .route("/v2/health/ready", get(ready))
        .fallback(not_found)
        .with_state(table)
}

async fn ready(State(table): State<Arc<ModelTable>>) -> Response {
    health::server_ready(&table)
}

async fn metrics(State(table): State<Arc<ModelTable>>) -> Response {
    let versions: Vec<_> = table.serving_versions().iter().map(|v| v.metrics.clone()).collect();
    let body = table.telemetry().render(&versions);
    ([(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"))], body)
        .into_response()
}

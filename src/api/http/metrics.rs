//! The metrics port: `GET /metrics` for Prometheus, and the server's liveness and readiness for probes, so a
//! sidecar can keep its inference ports on loopback while the kubelet and Prometheus reach this one.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use super::routes::{Route, Routes};
use super::{health, method_not_allowed, not_found};
use crate::lifecycle::ModelTable;

/// The metrics listener's router.
pub fn metrics_router(table: Arc<ModelTable>) -> Router {
    routes().router().fallback(not_found).method_not_allowed_fallback(method_not_allowed).with_state(table)
}

/// What the metrics listener serves.
pub fn metrics_routes() -> Vec<Route> {
    routes().served()
}

fn routes() -> Routes<Arc<ModelTable>> {
    Routes::new().get("/metrics", metrics).get("/v2/health/live", health::live).get("/v2/health/ready", ready)
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

//! The KServe v2 REST API (hyper and axum). One file per resource, each registering its own routes; inference,
//! the hot path, is matched by hand in front of the route table ([`RestApi`]). Handlers decode, call the
//! transport-agnostic operations of [`crate::api`] and encode; [`ApiError`] becomes an HTTP status here and
//! nowhere else.

mod body;
mod feedback;
mod health;
mod inference;
mod json;
mod metadata;
mod metrics;
mod repository;
mod routes;
mod shared_memory;
mod traffic;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tower::ServiceExt;

pub use body::Limits;
pub use json::{EncodedResponse, OutputFormat, decode_request, encode_response};
pub use metrics::{metrics_router, metrics_routes};
pub use routes::Route;

use crate::api::{ApiError, Gateway};

/// What every handler reads: the gateway, and how much a client may send and how slowly.
#[derive(Clone, Debug)]
struct AppState {
    gateway: Arc<Gateway>,
    limits: Limits,
}

/// The REST API of a gateway. Bodies are read whole, within `limits`.
pub fn router(gateway: Arc<Gateway>, limits: Limits) -> RestApi {
    let state = AppState { gateway, limits };
    let table = route_table().router();
    let table = table.fallback(not_found).method_not_allowed_fallback(method_not_allowed).with_state(state.clone());
    RestApi(Arc::new((table, state)))
}

/// What the REST listener serves: the inference routes, matched by hand, and the route table's.
pub fn rest_routes() -> Vec<Route> {
    let mut routes = inference::routes();
    routes.extend(route_table().served());
    routes
}

/// Every route but inference's, one resource at a time.
fn route_table() -> routes::Routes<AppState> {
    let table = routes::Routes::new();
    let table = health::routes(table);
    let table = metadata::routes(table);
    let table = traffic::routes(table);
    let table = repository::routes(table);
    let table = shared_memory::routes(table);
    feedback::routes(table)
}

/// The REST API as a service: an inference path goes to the inference handler, everything else through the
/// route table.
///
/// Inference is the one hot route: matching it by hand skips the table's per-request work (the route lookup,
/// the path parameters stored as request extensions, the extractors), which a small model pays on every row.
#[derive(Clone, Debug)]
pub struct RestApi(Arc<(Router, AppState)>);

impl<B> tower::Service<axum::http::Request<B>> for RestApi
where
    B: axum::body::HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: axum::http::Request<B>) -> Self::Future {
        let api = Arc::clone(&self.0);
        Box::pin(async move {
            let (table, state) = &*api;
            let (parts, body) = request.into_parts();
            match inference::path(parts.uri.path()) {
                Some(names) => Ok(inference::infer(state, names, &parts, body).await),
                None => table.clone().oneshot(axum::http::Request::from_parts(parts, body)).await,
            }
        })
    }
}

/// What an error's response carries besides its status and body.
enum Hint {
    None,
    /// Worth retrying after this many seconds: a full queue drains in moments, a load takes a while.
    RetryAfter(u64),
    /// Credentials are missing or wrong: how to present them.
    Authenticate,
}

impl ApiError {
    fn status(&self) -> (StatusCode, Hint) {
        match self {
            ApiError::ModelNotFound(_) | ApiError::NotFound(_) => (StatusCode::NOT_FOUND, Hint::None),
            // A model that failed to load will not recover by itself, so it gets no Retry-After.
            ApiError::ModelUnavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, Hint::None),
            ApiError::LoadPending { retry_after_secs, .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, Hint::RetryAfter(*retry_after_secs))
            }
            ApiError::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, Hint::RetryAfter(1)),
            ApiError::MalformedRequest(_) | ApiError::InvalidInput(_) => (StatusCode::BAD_REQUEST, Hint::None),
            ApiError::PayloadTooLarge { .. } | ApiError::LimitExceeded(_) => {
                (StatusCode::PAYLOAD_TOO_LARGE, Hint::None)
            }
            ApiError::RequestTimeout(_) => (StatusCode::REQUEST_TIMEOUT, Hint::None),
            ApiError::Overloaded { .. } => (StatusCode::TOO_MANY_REQUESTS, Hint::RetryAfter(1)),
            ApiError::DeadlineExceeded => (StatusCode::GATEWAY_TIMEOUT, Hint::None),
            ApiError::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, Hint::None),
            ApiError::Inference(_) => (StatusCode::INTERNAL_SERVER_ERROR, Hint::None),
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, Hint::Authenticate),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, Hint::None),
        }
    }
}

#[derive(Serialize)]
struct ErrorBody {
    error: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, hint) = self.status();
        if status.is_server_error() {
            tracing::warn!(error_type = self.error_type(), error = %self, "request failed");
        } else {
            tracing::debug!(error_type = self.error_type(), error = %self, "request refused");
        }
        let mut response = (status, json_body(&ErrorBody { error: self.to_string() })).into_response();
        let header = match hint {
            Hint::None => None,
            Hint::RetryAfter(secs) => Some((header::RETRY_AFTER, HeaderValue::from(secs))),
            Hint::Authenticate => Some((header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"))),
        };
        if let Some((name, value)) = header {
            response.headers_mut().insert(name, value);
        }
        response
    }
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::NotFound(format!("no route for {method} {}", uri.path()))
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    wrong_method(&method, uri.path())
}

/// A route that exists, asked with a method it does not take.
fn wrong_method(method: &Method, path: &str) -> ApiError {
    ApiError::MethodNotAllowed(format!("{method} is not allowed on {path}"))
}

/// A JSON response body with its content type.
fn json_body<T: Serialize>(value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(bytes) => json_bytes(bytes),
        // Our response types always serialise; this only guards against a future type that does not.
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

fn json_bytes(bytes: Vec<u8>) -> Response {
    body_with_type(bytes, "application/json")
}

/// A 200 response of `bytes` with its content type, built directly: inference answers pass here on every request.
fn body_with_type(bytes: Vec<u8>, content_type: &'static str) -> Response {
    let mut response = Response::new(axum::body::Body::from(bytes));
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

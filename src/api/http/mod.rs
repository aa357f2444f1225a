//! The KServe v2 REST API (axum). Routes decode, call the transport-agnostic operations of [`crate::api`] and
//! encode; [`ApiError`] becomes an HTTP status here and nowhere else.

mod json;
mod routes;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

pub use json::{EncodedResponse, OutputFormat, decode_request, encode_response};
pub use routes::{Limits, RestApi, metrics_router, router};

use crate::api::ApiError;

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::ModelNotFound(_) | ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::ModelUnavailable(_) | ApiError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::MalformedRequest(_) | ApiError::InvalidInput(_) => StatusCode::BAD_REQUEST,
            ApiError::PayloadTooLarge { .. } | ApiError::LimitExceeded(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::Overloaded { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Inference(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
        }
    }
}

#[derive(Serialize)]
struct ErrorBody {
    error: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(error_type = self.error_type(), error = %self, "request failed");
        } else {
            tracing::debug!(error_type = self.error_type(), error = %self, "request refused");
        }
        let mut response = (status, json_body(&ErrorBody { error: self.to_string() })).into_response();
        // Worth retrying soon: a full queue drains in moments. A model that failed to load will not recover by
        // itself, so it gets no Retry-After.
        if matches!(self, ApiError::Overloaded { .. } | ApiError::ShuttingDown) {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if matches!(self, ApiError::Unauthorized(_)) {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
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

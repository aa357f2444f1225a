//! What every REST handler reads before its own work: the body, whole and within limits, and the caller's
//! credentials (checked by `api::access`).

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use http_body_util::{BodyExt, Limited};

use super::AppState;
use crate::api::{self, ApiError};

/// How much a client may send, and how slowly.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Larger bodies are answered 413.
    pub max_request_bytes: usize,
    /// A body not received whole within this time is answered 408.
    pub body_timeout: Duration,
}

/// A request body, read whole within the size and time limits: a client trickling bytes is answered 408 and
/// holds nothing after, and a too-large body is refused (413) as soon as it passes the limit.
pub(super) struct ReadBody(pub Bytes);

impl FromRequest<AppState> for ReadBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<ReadBody, ApiError> {
        read_body(request.into_body(), state.limits).await.map(ReadBody)
    }
}

pub(super) async fn read_body<B>(body: B, limits: Limits) -> Result<Bytes, ApiError>
where
    B: axum::body::HttpBody<Data = Bytes>,
    B::Error: Into<axum::BoxError>,
{
    let Limits { max_request_bytes, body_timeout } = limits;
    let whole = Limited::new(body, max_request_bytes).collect();
    match tokio::time::timeout(body_timeout, whole).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if is_length_limit(&*e) => Err(ApiError::PayloadTooLarge { limit: max_request_bytes }),
        Ok(Err(e)) => Err(ApiError::malformed(format!("cannot read the request body: {e}"))),
        Err(_) => Err(ApiError::RequestTimeout(format!(
            "the request body did not arrive within {} s (--body-read-timeout-secs)",
            body_timeout.as_secs_f64()
        ))),
    }
}

fn is_length_limit(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(error);
    while let Some(e) = source {
        if e.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = e.source();
    }
    false
}

// Header names are built once: a name given as a string is parsed again at every lookup.
static API_KEY_HEADER: HeaderName = HeaderName::from_static(api::API_KEY_HEADER);

/// An inference or metadata handler's proof that the caller presented a valid API key (when keys are set).
pub(super) struct Keyed;

impl FromRequestParts<AppState> for Keyed {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Keyed, ApiError> {
        authorize(state, &parts.headers).map(|()| Keyed)
    }
}

/// Whether the request presents a valid API key (when keys are set).
pub(super) fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let keys = &state.gateway.keys;
    if !keys.required() {
        return Ok(());
    }
    let header = |name| headers.get(name).and_then(|value: &HeaderValue| value.to_str().ok());
    keys.authorize(header(&header::AUTHORIZATION), header(&API_KEY_HEADER))
}

/// The `Authorization` header, for the management calls (which need the admin token).
pub(super) fn authorization(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::AUTHORIZATION).and_then(|value| value.to_str().ok())
}

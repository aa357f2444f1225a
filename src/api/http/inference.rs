//! `POST /v2/models/{model}[/versions/{version}]/infer`, the hot path: the path is matched by hand, the body
//! decoded (JSON, or JSON and binary tensors), the request run through the one pipeline and the answer encoded.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method};
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt;
use percent_encoding::percent_decode_str;
use tracing::Instrument;

use super::body::{authorize, read_body};
use super::routes::Route;
use super::{AppState, body_with_type, json, json_bytes, wrong_method};
use crate::api::{self, ApiError, Call, Gateway, InferRequest, Protocol, pipeline};
use crate::telemetry::trace;

/// Bodies larger than this are decoded on the blocking pool: parsing megabytes of JSON on an async worker
/// would stall every other connection that worker serves.
const INLINE_DECODE_LIMIT: usize = 256 * 1024;

// Header names are built once: a name given as a string is parsed again at every lookup.
static ROUTING_KEY_HEADER: HeaderName = HeaderName::from_static(api::ROUTING_KEY_HEADER);
static VARIANT_HEADER: HeaderName = HeaderName::from_static(api::VARIANT_HEADER);
static COLD_START_HEADER: HeaderName = HeaderName::from_static(api::COLD_START_HEADER);
static REQUEST_ID_HEADER: HeaderName = HeaderName::from_static(api::REQUEST_ID_HEADER);
/// The binary tensor extension's header: the body is this many bytes of JSON, then the tensors.
static HEADER_LENGTH: HeaderName = HeaderName::from_static(json::HEADER_LENGTH);
/// Header a caller may set to bound how long it waits, in milliseconds (like the `timeout` parameter).
static TIMEOUT_HEADER: HeaderName = HeaderName::from_static("x-request-timeout-ms");
static TRACEPARENT: HeaderName = HeaderName::from_static(trace::TRACEPARENT);
static TRACESTATE: HeaderName = HeaderName::from_static(trace::TRACESTATE);

/// The model and version segments of `/v2/models/{model}[/versions/{version}]/infer`, still percent-encoded.
pub(super) type InferPath<'a> = (&'a str, Option<&'a str>);

/// The inference paths [`path`] matches, as route templates.
const PATHS: [&str; 2] = ["/v2/models/{model}/infer", "/v2/models/{model}/versions/{version}/infer"];

/// The inference routes, for the list of what the REST listener serves.
pub(super) fn routes() -> Vec<Route> {
    PATHS.iter().map(|&path| Route { method: Method::POST, path }).collect()
}

/// The model and version of an inference path; `None` for any other path.
pub(super) fn path(path: &str) -> Option<InferPath<'_>> {
    let names = path.strip_prefix("/v2/models/")?.strip_suffix("/infer")?;
    let mut segments = names.split('/');
    match (segments.next(), segments.next(), segments.next(), segments.next()) {
        (Some(model), None, None, None) if !model.is_empty() => Some((model, None)),
        (Some(model), Some("versions"), Some(version), None) if !model.is_empty() && !version.is_empty() => {
            Some((model, Some(version)))
        }
        _ => None,
    }
}

/// Answers one inference request (any error as its status), in its request span. Built of combinators around one
/// `async` block: an `async fn` awaiting that block would hold its future twice (before and after the move to
/// await it), and a request's future is copied whole each time it moves.
pub(super) fn infer<'a, B>(
    state: &'a AppState,
    (model, version): InferPath<'a>,
    parts: &'a Parts,
    body: B,
) -> impl Future<Output = Response> + 'a
where
    B: axum::body::HttpBody<Data = Bytes> + 'a,
    B::Error: Into<axum::BoxError>,
{
    let span = trace::request_span(Protocol::Rest, model);
    if trace::exporting() {
        let header = |name: &HeaderName| parts.headers.get(name).and_then(|v| v.to_str().ok());
        trace::adopt_remote_parent(&span, header(&TRACEPARENT), header(&TRACESTATE));
    }
    let answer = async move {
        if parts.method != Method::POST {
            return Err(Refused::from(wrong_method(&parts.method, parts.uri.path())));
        }
        authorize(state, &parts.headers)?;
        let (model, version) = (decode_segment(model)?, version.map(decode_segment).transpose()?);
        let body = read_body(body, state.limits).await;
        run(state, &model, version.as_deref(), &parts.headers, body).await
    };
    answer.instrument(span.clone()).map(move |answered| {
        trace::record_outcome(&span, answered.as_ref().err().map(|refused| refused.error.error_type()));
        answered.unwrap_or_else(|refused| refused.into_response(&parts.headers))
    })
}

/// A refused inference, with the id the request brought in its body when it was read that far.
struct Refused {
    error: ApiError,
    body_id: Option<String>,
}

impl From<ApiError> for Refused {
    fn from(error: ApiError) -> Refused {
        Refused { error, body_id: None }
    }
}

impl Refused {
    /// The error's answer, which carries a request id like every answer.
    fn into_response(self, headers: &HeaderMap) -> Response {
        let transport = headers.get(&REQUEST_ID_HEADER).and_then(|v| v.to_str().ok());
        let id = api::request_id::for_refusal(self.body_id, transport);
        let mut response = self.error.into_response();
        if let Ok(id) = HeaderValue::from_maybe_shared(Bytes::from(id)) {
            response.headers_mut().insert(REQUEST_ID_HEADER.clone(), id);
        }
        response
    }
}

/// A path segment as a name: percent-decoded, and UTF-8.
fn decode_segment(segment: &str) -> Result<Cow<'_, str>, ApiError> {
    percent_decode_str(segment).decode_utf8().map_err(|e| {
        ApiError::malformed(format!("invalid path: the segment '{segment}' is not UTF-8 once decoded: {e}"))
    })
}

async fn run(
    state: &AppState,
    model: &str,
    version: Option<&str>,
    headers: &HeaderMap,
    body: Result<Bytes, ApiError>,
) -> Result<Response, Refused> {
    let decoded = decode(body, headers, &state.gateway).instrument(tracing::debug_span!("decode")).await;
    // Kept only for a refusal's answer; most callers send no id in the body, and then this costs nothing.
    let body_id = decoded.as_ref().ok().and_then(|(request, ..)| request.id.clone());
    let (request, format, deadline) = match decoded {
        Ok((request, format, deadline)) => (Ok(request), format, deadline),
        Err(e) => (Err(e), json::OutputFormat::default(), None),
    };
    let routing_key = headers.get(&ROUTING_KEY_HEADER).and_then(|v| v.to_str().ok());
    let request_id = headers.get(&REQUEST_ID_HEADER).and_then(|v| v.to_str().ok());
    let call = Call { model, version, routing_key, deadline, protocol: Protocol::Rest, request_id };
    let response = match pipeline::infer(&state.gateway, call, request).await {
        Ok(response) => response,
        Err(error) => return Err(Refused { error, body_id }),
    };
    let encoded = tracing::debug_span!("encode")
        .in_scope(|| json::encode_response(&response, &format))
        // The answer's id is already in the payload log and the feedback store: the refusal keeps it.
        .map_err(|error| Refused { error, body_id: response.id.clone() })?;
    let mut reply = match encoded.header_length {
        None => json_bytes(encoded.body),
        Some(length) => {
            let mut reply = body_with_type(encoded.body, "application/octet-stream");
            reply.headers_mut().insert(HEADER_LENGTH.clone(), HeaderValue::from(length));
            reply
        }
    };
    if let Some(variant) = response.variant.as_deref().and_then(|v| HeaderValue::from_str(v).ok()) {
        reply.headers_mut().insert(VARIANT_HEADER.clone(), variant);
    }
    if let Some(waited) = response.cold_start {
        reply.headers_mut().insert(COLD_START_HEADER.clone(), HeaderValue::from(api::cold_start_millis(waited)));
    }
    // Ids are printable ASCII (the pipeline refuses others), so every one is a valid header value; its bytes move
    // into the header, not copied.
    if let Some(id) = response.id.and_then(|id| HeaderValue::from_maybe_shared(Bytes::from(id)).ok()) {
        reply.headers_mut().insert(REQUEST_ID_HEADER.clone(), id);
    }
    Ok(reply)
}

/// Reads and decodes the body (JSON, or JSON and binary tensors), with the deadline of the timeout header.
async fn decode(
    body: Result<Bytes, ApiError>,
    headers: &HeaderMap,
    gateway: &Arc<Gateway>,
) -> Result<(InferRequest, json::OutputFormat, Option<Duration>), ApiError> {
    let deadline = header_timeout(headers)?;
    let header_length = match headers.get(&HEADER_LENGTH) {
        None => None,
        Some(value) => Some(value.to_str().ok().and_then(|v| v.trim().parse::<usize>().ok()).ok_or_else(|| {
            ApiError::malformed(format!("header {} must be a whole number of bytes", json::HEADER_LENGTH))
        })?),
    };
    let body = body?;
    let json_length = header_length.unwrap_or(body.len());
    let (request, format) = if json_length > INLINE_DECODE_LIMIT {
        let gateway = Arc::clone(gateway);
        tokio::task::spawn_blocking(move || json::decode_request(&body, header_length, &gateway.shared_memory))
            .await
            .map_err(|e| ApiError::Inference(format!("the request decoder failed: {e}")))??
    } else {
        json::decode_request(&body, header_length, &gateway.shared_memory)?
    };
    Ok((request, format, deadline))
}

fn header_timeout(headers: &HeaderMap) -> Result<Option<Duration>, ApiError> {
    let Some(value) = headers.get(&TIMEOUT_HEADER) else {
        return Ok(None);
    };
    let millis: u64 = value.to_str().ok().and_then(|v| v.trim().parse().ok()).ok_or_else(|| {
        ApiError::malformed(format!("header {TIMEOUT_HEADER} must be a whole number of milliseconds"))
    })?;
    // 0 means no deadline, as for the `timeout` parameter and `default_timeout_ms`.
    Ok((millis > 0).then(|| Duration::from_millis(millis)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inference_paths_are_matched_by_hand() {
        assert_eq!(path("/v2/models/mlp/infer"), Some(("mlp", None)));
        assert_eq!(path("/v2/models/mlp/versions/3/infer"), Some(("mlp", Some("3"))));
        assert_eq!(path("/v2/models/versions/infer"), Some(("versions", None)));
        assert_eq!(path("/v2/models/mlp.v2-b_c/infer"), Some(("mlp.v2-b_c", None)));
        assert_eq!(path("/v2/models/my%20model/infer"), Some(("my%20model", None)));
        for other in [
            "/v2/models//infer",
            "/v2/models/infer",
            "/v2/models/mlp/infer/",
            "/v2/models/mlp/versions//infer",
            "/v2/models/mlp/versions/infer",
            "/v2/models/mlp/other/3/infer",
            "/v2/models/mlp/versions/3/extra/infer",
            "/v2/models/a/b/infer",
            "/v2/models/mlp/ready",
            "/v2//models/mlp/infer",
        ] {
            assert_eq!(path(other), None, "{other}");
        }
    }

    #[test]
    fn the_listed_routes_are_the_matched_paths() {
        let filled: Vec<String> =
            PATHS.iter().map(|template| template.replace("{model}", "m").replace("{version}", "7")).collect();
        assert_eq!(path(&filled[0]), Some(("m", None)));
        assert_eq!(path(&filled[1]), Some(("m", Some("7"))));
    }

    #[test]
    fn names_are_percent_decoded() {
        assert_eq!(decode_segment("my%20model").unwrap(), "my model");
        assert_eq!(decode_segment("mlp").unwrap(), "mlp");
        assert!(matches!(decode_segment("bad%FF"), Err(ApiError::MalformedRequest(_))));
    }
}

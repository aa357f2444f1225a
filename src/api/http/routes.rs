//! Route table and handlers of the KServe v2 REST API.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_body_util::{BodyExt, Limited};
use serde::{Deserialize, Serialize};
use tower::ServiceExt;

use super::{body_with_type, json, json_body, json_bytes};
use crate::api::{self, ApiError};
use crate::lifecycle::ModelTable;
use crate::scheduler;

/// Bodies larger than this are decoded on the blocking pool: parsing megabytes of JSON on an async worker
/// would stall every other connection that worker serves.
const INLINE_DECODE_LIMIT: usize = 256 * 1024;

#[derive(Clone, Debug)]
struct AppState {
    table: Arc<ModelTable>,
    limits: Limits,
    control: api::ModelControl,
    keys: api::ApiKeys,
    hook: api::MlflowHook,
}

/// How much a client may send, and how slowly.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Larger bodies are answered 413.
    pub max_request_bytes: usize,
    /// A body not received whole within this time is answered 408.
    pub body_timeout: Duration,
}

/// The REST API over a model table. Bodies are read whole, within `limits` (see [`ReadBody`]).
pub fn router(
    table: Arc<ModelTable>,
    limits: Limits,
    control: api::ModelControl,
    keys: api::ApiKeys,
    hook: api::MlflowHook,
) -> RestApi {
    let state = AppState { table, limits, control, keys, hook };
    RestApi(Arc::new((route_table(state.clone()), state)))
}

/// The REST API as a service: an inference request whose path needs no decoding goes straight to its handler,
/// everything else (inference under a percent-encoded name included) through the route table.
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
            let (router, state) = &*api;
            let (parts, body) = request.into_parts();
            let Some((model, version)) = infer_route(&parts.method, parts.uri.path()) else {
                return router.clone().oneshot(axum::http::Request::from_parts(parts, body)).await;
            };
            let answer = match authorize(state, &parts.headers) {
                Ok(()) => run_infer(state, model, version, &parts.headers, read_body(body, state.limits).await).await,
                Err(e) => Err(e),
            };
            Ok(answer.unwrap_or_else(IntoResponse::into_response))
        })
    }
}

/// The model and version of `POST /v2/models/{model}[/versions/{version}]/infer`, when neither name is
/// percent-encoded (those take the route table, which decodes them).
fn infer_route<'a>(method: &Method, path: &'a str) -> Option<(&'a str, Option<&'a str>)> {
    if method != Method::POST || path.contains('%') {
        return None;
    }
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

fn route_table(state: AppState) -> Router {
    Router::new()
        .route("/v2/health/live", get(live))
        .route("/v2/health/ready", get(ready))
        .route("/v2", get(server_metadata))
        .route("/v2/models/stats", get(all_statistics))
        .route("/v2/models/{model}/stats", get(model_statistics))
        .route("/v2/models/{model}/versions/{version}/stats", get(model_statistics))
        .route("/v2/models/{model}", get(model_metadata))
        .route("/v2/models/{model}/versions/{version}", get(model_metadata))
        .route("/v2/models/{model}/config", get(model_config))
        .route("/v2/models/{model}/versions/{version}/config", get(model_config))
        .route("/v2/models/{model}/ready", get(model_ready))
        .route("/v2/models/{model}/versions/{version}/ready", get(model_ready))
        .route("/v2/models/{model}/traffic", get(traffic).put(set_traffic).delete(remove_traffic))
        .route("/v2/models/{model}/rollout", get(rollout))
        .route("/v2/models/{model}/infer", post(infer))
        .route("/v2/models/{model}/versions/{version}/infer", post(infer))
        .route("/v2/repository/index", post(repository_index))
        .route("/v2/repository/models/{model}/load", post(load_model))
        .route("/v2/repository/models/{model}/unload", post(unload_model))
        .route("/v2/mlflow/webhook", post(mlflow_webhook))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

/// A request body, read whole within the size and time limits: a client trickling bytes is answered 408 and
/// holds nothing after, and a too-large body is refused (413) as soon as it passes the limit.
struct ReadBody(Bytes);

impl FromRequest<AppState> for ReadBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<ReadBody, ApiError> {
        read_body(request.into_body(), state.limits).await.map(ReadBody)
    }
}

/// An inference request's headers (moved, not copied) and its body, or why the body could not be read: the
/// handler answers an unknown model 404 before it looks at the body.
struct InferBody {
    headers: HeaderMap,
    body: Result<Bytes, ApiError>,
}

impl FromRequest<AppState> for InferBody {
    type Rejection = std::convert::Infallible;

    async fn from_request(request: Request, state: &AppState) -> Result<InferBody, Self::Rejection> {
        let (parts, body) = request.into_parts();
        Ok(InferBody { headers: parts.headers, body: read_body(body, state.limits).await })
    }
}

async fn read_body<B>(body: B, limits: Limits) -> Result<Bytes, ApiError>
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

/// An inference or metadata handler's proof that the caller presented a valid API key (when keys are set).
struct Keyed;

impl FromRequestParts<AppState> for Keyed {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Keyed, ApiError> {
        authorize(state, &parts.headers).map(|()| Keyed)
    }
}

/// Whether the request presents a valid API key (when keys are set).
fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    if !state.keys.required() {
        return Ok(());
    }
    let header = |name| headers.get(name).and_then(|value: &HeaderValue| value.to_str().ok());
    state.keys.authorize(header(&header::AUTHORIZATION), header(&API_KEY_HEADER))
}

/// `GET /metrics` on the metrics port, for Prometheus.
pub fn metrics_router(table: Arc<ModelTable>) -> Router {
    Router::new().route("/metrics", get(metrics)).fallback(not_found).with_state(table)
}

async fn metrics(State(table): State<Arc<ModelTable>>) -> Response {
    let versions: Vec<_> = table.serving_versions().iter().map(|v| v.metrics.clone()).collect();
    let body = table.telemetry().render(&versions);
    ([(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"))], body)
        .into_response()
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
    mlflow: Option<crate::lifecycle::MlflowStatus>,
}

async fn live() -> Response {
    json_body(&Live { live: true })
}

async fn ready(State(state): State<AppState>) -> Response {
    let ready = state.table.is_ready();
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, json_body(&ServerReady { ready, mlflow: state.table.mlflow_status().map(|status| (*status).clone()) }))
        .into_response()
}

async fn server_metadata(_: Keyed) -> Response {
    json_body(&api::server_metadata())
}

/// `{model}` or `{model}/versions/{version}` of a model route.
#[derive(Debug, Deserialize)]
struct ModelRoute {
    model: String,
    #[serde(default)]
    version: Option<String>,
}

type RoutePath = Result<Path<ModelRoute>, PathRejection>;

fn route(path: RoutePath) -> Result<ModelRoute, ApiError> {
    path.map(|Path(route)| route).map_err(|e| ApiError::malformed(format!("invalid path: {}", e.body_text())))
}

async fn model_metadata(_: Keyed, State(state): State<AppState>, path: RoutePath) -> Result<Response, ApiError> {
    let r = route(path)?;
    Ok(json_body(&api::model_metadata(&state.table, &r.model, r.version.as_deref())?))
}

async fn model_config(_: Keyed, State(state): State<AppState>, path: RoutePath) -> Result<Response, ApiError> {
    let r = route(path)?;
    Ok(json_body(&api::model_config(&state.table, &r.model, r.version.as_deref())?))
}

async fn all_statistics(_: Keyed, State(state): State<AppState>) -> Result<Response, ApiError> {
    Ok(json_body(&api::statistics(&state.table, None, None)?))
}

async fn model_statistics(_: Keyed, State(state): State<AppState>, path: RoutePath) -> Result<Response, ApiError> {
    let r = route(path)?;
    Ok(json_body(&api::statistics(&state.table, Some(&r.model), r.version.as_deref())?))
}

async fn model_ready(State(state): State<AppState>, path: RoutePath) -> Result<Response, ApiError> {
    let r = route(path)?;
    api::model_ready(&state.table, &r.model, r.version.as_deref())?;
    Ok(json_body(&Ready { ready: true }))
}

async fn infer(
    _: Keyed,
    State(state): State<AppState>,
    path: RoutePath,
    InferBody { headers, body }: InferBody,
) -> Result<Response, ApiError> {
    let r = route(path)?;
    run_infer(&state, &r.model, r.version.as_deref(), &headers, body).await
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
    Ok(json_body(&api::repository_index(&state.table, request.ready)))
}

fn authorization(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::AUTHORIZATION).and_then(|value| value.to_str().ok())
}

/// `POST /v2/repository/models/{model}/load` (the body, Triton's optional parameters, is not used).
async fn load_model(
    State(state): State<AppState>,
    Path(model): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    api::load_model(&state.table, &state.control, authorization(&headers), &model).await?;
    Ok(StatusCode::OK.into_response())
}

async fn unload_model(
    State(state): State<AppState>,
    Path(model): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    api::unload_model(&state.table, &state.control, authorization(&headers), &model).await?;
    Ok(StatusCode::OK.into_response())
}

/// `POST /v2/mlflow/webhook`: an MLflow webhook delivery (see `api::MlflowHook`).
async fn mlflow_webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    ReadBody(body): ReadBody,
) -> Result<Response, ApiError> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    use crate::repository::mlflow::{WEBHOOK_DELIVERY_HEADER, WEBHOOK_SIGNATURE_HEADER, WEBHOOK_TIMESTAMP_HEADER};
    let delivery = state.hook.deliver(
        header(WEBHOOK_DELIVERY_HEADER),
        header(WEBHOOK_TIMESTAMP_HEADER),
        header(WEBHOOK_SIGNATURE_HEADER),
        &body,
    )?;
    Ok(json_body(&delivery))
}

async fn traffic(_: Keyed, State(state): State<AppState>, Path(model): Path<String>) -> Result<Response, ApiError> {
    Ok(json_body(&api::traffic(&state.table, &model)?))
}

/// `PUT /v2/models/{model}/traffic`: a policy in the shape of `[traffic]`, as JSON.
async fn set_traffic(
    State(state): State<AppState>,
    Path(model): Path<String>,
    headers: HeaderMap,
    ReadBody(body): ReadBody,
) -> Result<Response, ApiError> {
    api::set_traffic(&state.table, &state.control, authorization(&headers), &model, Some(&body))?;
    Ok(json_body(&api::traffic(&state.table, &model)?))
}

async fn remove_traffic(
    State(state): State<AppState>,
    Path(model): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    api::set_traffic(&state.table, &state.control, authorization(&headers), &model, None)?;
    Ok(json_body(&api::traffic(&state.table, &model)?))
}

async fn rollout(_: Keyed, State(state): State<AppState>, Path(model): Path<String>) -> Result<Response, ApiError> {
    Ok(json_body(&api::rollout(&state.table, &model)?))
}

// Header names are built once: a name given as a string is parsed again at every lookup.
static ROUTING_KEY_HEADER: HeaderName = HeaderName::from_static(api::ROUTING_KEY_HEADER);
static VARIANT_HEADER: HeaderName = HeaderName::from_static(api::VARIANT_HEADER);
/// The binary tensor extension's header: the body is this many bytes of JSON, then the tensors.
static HEADER_LENGTH: HeaderName = HeaderName::from_static(json::HEADER_LENGTH);
static API_KEY_HEADER: HeaderName = HeaderName::from_static(api::API_KEY_HEADER);

/// Header a caller may set to bound how long it waits, in milliseconds (like the `timeout` parameter).
static TIMEOUT_HEADER: HeaderName = HeaderName::from_static("x-request-timeout-ms");

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

async fn run_infer(
    state: &AppState,
    model: &str,
    version: Option<&str>,
    headers: &HeaderMap,
    body: Result<Bytes, ApiError>,
) -> Result<Response, ApiError> {
    let arrived = Instant::now();
    let header_key = headers.get(&ROUTING_KEY_HEADER).and_then(|v| v.to_str().ok());
    let routed = api::route(&state.table, model, version, header_key)?;
    let (request, format) = decode(body, headers)
        .await
        .inspect_err(|e| routed.serving.metrics.observe_error(e.error_type(), arrived.elapsed()))?;
    let routed = match (&request.routing_key, header_key, version) {
        (Some(key), None, None) => api::route(&state.table, model, None, Some(key))?,
        _ => routed,
    };
    let response = api::infer_routed(&state.table, model, routed, request).await?;
    let encoded = json::encode_response(&response, &format)?;
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
    Ok(reply)
}

/// Reads and decodes the body (JSON, or JSON and binary tensors), and applies the timeout header.
async fn decode(
    body: Result<Bytes, ApiError>,
    headers: &HeaderMap,
) -> Result<(api::InferRequest, json::OutputFormat), ApiError> {
    let header_timeout = header_timeout(headers)?;
    let header_length = match headers.get(&HEADER_LENGTH) {
        None => None,
        Some(value) => Some(value.to_str().ok().and_then(|v| v.trim().parse::<usize>().ok()).ok_or_else(|| {
            ApiError::malformed(format!("header {} must be a whole number of bytes", json::HEADER_LENGTH))
        })?),
    };
    let body = body?;
    let json_length = header_length.unwrap_or(body.len());
    let (mut request, format) = if json_length > INLINE_DECODE_LIMIT {
        tokio::task::spawn_blocking(move || json::decode_request(&body, header_length))
            .await
            .map_err(|e| ApiError::Inference(format!("the request decoder failed: {e}")))??
    } else {
        json::decode_request(&body, header_length)?
    };
    request.timeout = scheduler::shorter(request.timeout, header_timeout);
    Ok((request, format))
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::NotFound(format!("no route for {method} {}", uri.path()))
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::MethodNotAllowed(format!("{method} is not allowed on {}", uri.path()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inference_paths_are_matched_by_hand_and_everything_else_goes_to_the_table() {
        let post = |path| infer_route(&Method::POST, path);
        assert_eq!(post("/v2/models/mlp/infer"), Some(("mlp", None)));
        assert_eq!(post("/v2/models/mlp/versions/3/infer"), Some(("mlp", Some("3"))));
        assert_eq!(post("/v2/models/versions/infer"), Some(("versions", None)));
        assert_eq!(post("/v2/models/mlp.v2-b_c/infer"), Some(("mlp.v2-b_c", None)));
        // Percent-encoded names are decoded by the table.
        assert_eq!(post("/v2/models/my%20model/infer"), None);
        for path in [
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
            assert_eq!(post(path), None, "{path}");
        }
        assert_eq!(infer_route(&Method::GET, "/v2/models/mlp/infer"), None);
        assert_eq!(infer_route(&Method::PUT, "/v2/models/mlp/versions/1/infer"), None);
    }
}

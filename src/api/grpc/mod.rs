//! The KServe v2 gRPC API (`inference.GRPCInferenceService`, tonic), wire-compatible with Triton's clients.
//! Handlers decode into the transport-agnostic types of [`crate::api`], call the same operations as REST and
//! encode; [`ApiError`] becomes a gRPC status here and nowhere else.

pub mod codec;
pub mod convert;
pub mod health;

use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use futures_util::{FutureExt, Stream, StreamExt};
use tonic::metadata::{AsciiMetadataKey, AsciiMetadataValue};
use tonic::{Code, Request, Response, Status, Streaming};
use tracing::Instrument;

use crate::api::{self, ApiError, Call, Gateway, Protocol, pipeline};
use crate::telemetry::trace;

/// The code generated from `proto/inference.proto`.
#[allow(clippy::all, clippy::pedantic, missing_debug_implementations)]
pub mod proto {
    tonic::include_proto!("inference");
}

use proto::grpc_inference_service_server::{GrpcInferenceService, GrpcInferenceServiceServer};

/// Requests of one `ModelStreamInfer` stream computed at once; responses still go back in request order.
const STREAM_IN_FLIGHT: usize = 64;

/// The gRPC API of a gateway as an axum router, served next to (not on) the REST port, with the standard health
/// service beside it; `stop` turning true ends the health watches.
pub fn router(
    gateway: Arc<Gateway>,
    max_request_bytes: usize,
    stop: tokio::sync::watch::Receiver<bool>,
) -> axum::Router {
    let health = health::service(Arc::clone(&gateway), stop);
    let service = GrpcInferenceServiceServer::new(GrpcApi { gateway })
        .max_decoding_message_size(max_request_bytes)
        .max_encoding_message_size(usize::MAX);
    tonic::service::Routes::new(service).add_service(health).prepare().into_axum_router()
}

// Metadata keys are built once: a key given as a string is parsed again at every lookup or insertion.
static API_KEY: LazyLock<AsciiMetadataKey> = LazyLock::new(|| AsciiMetadataKey::from_static(api::API_KEY_HEADER));
static AUTHORIZATION: LazyLock<AsciiMetadataKey> = LazyLock::new(|| AsciiMetadataKey::from_static("authorization"));
static GRPC_TIMEOUT: LazyLock<AsciiMetadataKey> = LazyLock::new(|| AsciiMetadataKey::from_static("grpc-timeout"));
static ROUTING_KEY: LazyLock<AsciiMetadataKey> =
    LazyLock::new(|| AsciiMetadataKey::from_static(api::ROUTING_KEY_HEADER));
static REQUEST_ID: LazyLock<AsciiMetadataKey> = LazyLock::new(|| AsciiMetadataKey::from_static(api::REQUEST_ID_HEADER));
static VARIANT: LazyLock<AsciiMetadataKey> = LazyLock::new(|| AsciiMetadataKey::from_static(api::VARIANT_HEADER));
static COLD_START: LazyLock<AsciiMetadataKey> = LazyLock::new(|| AsciiMetadataKey::from_static(api::COLD_START_HEADER));
static TRACEPARENT: LazyLock<AsciiMetadataKey> = LazyLock::new(|| AsciiMetadataKey::from_static(trace::TRACEPARENT));
static TRACESTATE: LazyLock<AsciiMetadataKey> = LazyLock::new(|| AsciiMetadataKey::from_static(trace::TRACESTATE));

/// What an inference call's metadata says besides its key: the deadline (`grpc-timeout`), the routing key, the
/// request id, and the caller's trace (read only when spans are exported).
#[derive(Debug, Clone, Default)]
struct CallMetadata {
    deadline: Option<Duration>,
    routing_key: Option<String>,
    request_id: Option<String>,
    traceparent: Option<String>,
    tracestate: Option<String>,
}

impl CallMetadata {
    fn of<T>(request: &Request<T>) -> Result<CallMetadata, Status> {
        let text =
            |key: &AsciiMetadataKey| request.metadata().get(key).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let traced = trace::exporting();
        Ok(CallMetadata {
            deadline: grpc_timeout(request)?,
            routing_key: text(&ROUTING_KEY),
            request_id: text(&REQUEST_ID),
            traceparent: traced.then(|| text(&TRACEPARENT)).flatten(),
            tracestate: traced.then(|| text(&TRACESTATE)).flatten(),
        })
    }
}

#[derive(Debug, Clone)]
struct GrpcApi {
    gateway: Arc<Gateway>,
}

impl GrpcApi {
    /// Checks the API key of an inference or metadata call (`authorization: Bearer <key>` or `x-api-key`).
    fn keyed<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let keys = &self.gateway.keys;
        if !keys.required() {
            return Ok(());
        }
        let api_key = request.metadata().get(&*API_KEY).and_then(|v| v.to_str().ok());
        Ok(keys.authorize(authorization(request), api_key)?)
    }

    fn table(&self) -> &crate::lifecycle::ModelTable {
        self.gateway.table()
    }
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Status {
        let code = match &e {
            ApiError::ModelNotFound(_) | ApiError::NotFound(_) => Code::NotFound,
            ApiError::ModelUnavailable(_) | ApiError::LoadPending { .. } | ApiError::ShuttingDown => Code::Unavailable,
            ApiError::MalformedRequest(_) | ApiError::InvalidInput(_) | ApiError::LimitExceeded(_) => {
                Code::InvalidArgument
            }
            ApiError::RequestTimeout(_) => Code::DeadlineExceeded,
            ApiError::PayloadTooLarge { .. } | ApiError::Overloaded { .. } => Code::ResourceExhausted,
            ApiError::DeadlineExceeded => Code::DeadlineExceeded,
            ApiError::MethodNotAllowed(_) => Code::Unimplemented,
            ApiError::Inference(_) => Code::Internal,
            ApiError::Unauthorized(_) => Code::Unauthenticated,
            ApiError::Forbidden(_) => Code::PermissionDenied,
        };
        if code == Code::Internal {
            tracing::warn!(error_type = e.error_type(), error = %e, "gRPC request failed");
        }
        Status::new(code, e.to_string())
    }
}

type GrpcResult<T> = Result<Response<T>, Status>;

/// The id a request's body brings, if any.
fn body_id(request: &proto::ModelInferRequest) -> Option<String> {
    (!request.id.is_empty()).then(|| request.id.clone())
}

/// A refused inference's status, with a request id in its metadata like every answer (see `api::request_id`).
fn with_request_id(mut status: Status, body: Option<String>, transport: Option<&str>) -> Status {
    if let Ok(mut id) = api::request_id::for_refusal(body, transport).parse::<AsciiMetadataValue>() {
        id.set_sensitive(true);
        status.metadata_mut().insert(REQUEST_ID.clone(), id);
    }
    status
}

/// An empty version string means "the version unversioned requests reach".
fn version(text: &str) -> Option<&str> {
    (!text.is_empty()).then_some(text)
}

/// The deadline a client sent in `grpc-timeout` ("100m" = 100 ms; units H, M, S, m, u, n).
fn grpc_timeout<T>(request: &Request<T>) -> Result<Option<Duration>, Status> {
    let Some(value) = request.metadata().get(&*GRPC_TIMEOUT) else {
        return Ok(None);
    };
    let invalid = || Status::invalid_argument("grpc-timeout is not a valid timeout");
    let text = value.to_str().map_err(|_| invalid())?;
    let split = text.len().checked_sub(1).filter(|&at| at > 0 && text.is_char_boundary(at)).ok_or_else(invalid)?;
    let (digits, unit) = text.split_at(split);
    let amount: u64 = digits.parse().map_err(|_| invalid())?;
    let timeout = match unit {
        "H" => Duration::from_secs(amount.saturating_mul(3600)),
        "M" => Duration::from_secs(amount.saturating_mul(60)),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return Err(invalid()),
    };
    Ok(Some(timeout))
}

fn authorization<T>(request: &Request<T>) -> Option<&str> {
    request.metadata().get(&*AUTHORIZATION).and_then(|value| value.to_str().ok())
}

/// An inference's answer, with what the unary call also puts in the response metadata.
struct Reply {
    response: proto::ModelInferResponse,
    /// The traffic variant that answered.
    variant: Option<String>,
    /// How long the request waited for its on-demand version to load.
    cold_start: Option<std::time::Duration>,
}

/// One inference, as both the unary and the streaming calls run it, in its request span. The message is decoded
/// before the future is returned (in the span), so that the future holds the decoded request and not the message
/// as well: a request's future is moved as it is awaited, and every byte of it is copied each time.
fn infer<'a>(
    gateway: &'a Gateway,
    mut request: proto::ModelInferRequest,
    metadata: &'a CallMetadata,
) -> impl Future<Output = Result<Reply, ApiError>> + 'a {
    let span = trace::request_span(Protocol::Grpc, &request.model_name);
    trace::adopt_remote_parent(&span, metadata.traceparent.as_deref(), metadata.tracestate.as_deref());
    // Taken, not copied: decoding the tensors needs neither.
    let model = std::mem::take(&mut request.model_name);
    let version_text = std::mem::take(&mut request.model_version);
    let (decoded, targets) = span.in_scope(|| {
        tracing::debug_span!("decode").in_scope(|| match convert::infer_request(request, &gateway.shared_memory) {
            Ok((request, targets)) => (Ok(request), targets),
            Err(e) => (Err(e), Vec::new()),
        })
    });
    let answer = async move {
        let call = Call {
            model: &model,
            version: version(&version_text),
            routing_key: metadata.routing_key.as_deref(),
            deadline: metadata.deadline,
            protocol: Protocol::Grpc,
            request_id: metadata.request_id.as_deref(),
        };
        let mut response = pipeline::infer(gateway, call, decoded).await?;
        let (variant, cold_start) = (response.variant.take(), response.cold_start);
        let encoded =
            tracing::debug_span!("encode").in_scope(|| convert::infer_response(response, variant.clone(), &targets))?;
        Ok(Reply { response: encoded, variant, cold_start })
    };
    // Combinators, not another `async` block, which would hold the answer's future twice (before and after it is
    // moved to be awaited).
    answer
        .instrument(span.clone())
        .inspect(move |answered| trace::record_outcome(&span, answered.as_ref().err().map(ApiError::error_type)))
}

#[tonic::async_trait]
impl GrpcInferenceService for GrpcApi {
    async fn server_live(&self, _: Request<proto::ServerLiveRequest>) -> GrpcResult<proto::ServerLiveResponse> {
        Ok(Response::new(proto::ServerLiveResponse { live: true }))
    }

    async fn server_ready(&self, _: Request<proto::ServerReadyRequest>) -> GrpcResult<proto::ServerReadyResponse> {
        Ok(Response::new(proto::ServerReadyResponse { ready: self.table().is_ready() }))
    }

    async fn model_ready(&self, request: Request<proto::ModelReadyRequest>) -> GrpcResult<proto::ModelReadyResponse> {
        let request = request.into_inner();
        // Like Triton: an unknown model is an error, a known but unavailable one is "not ready".
        let ready = match api::model_ready(self.table(), &request.name, version(&request.version)) {
            Ok(()) => true,
            Err(ApiError::ModelUnavailable(_) | ApiError::LoadPending { .. }) => false,
            Err(e) => return Err(e.into()),
        };
        Ok(Response::new(proto::ModelReadyResponse { ready }))
    }

    async fn server_metadata(
        &self,
        request: Request<proto::ServerMetadataRequest>,
    ) -> GrpcResult<proto::ServerMetadataResponse> {
        self.keyed(&request)?;
        let metadata = api::server_metadata(self.gateway.shared_memory.enabled());
        Ok(Response::new(proto::ServerMetadataResponse {
            name: metadata.name.to_owned(),
            version: metadata.version.to_owned(),
            extensions: metadata.extensions.iter().map(|e| (*e).to_owned()).collect(),
        }))
    }

    async fn model_metadata(
        &self,
        request: Request<proto::ModelMetadataRequest>,
    ) -> GrpcResult<proto::ModelMetadataResponse> {
        self.keyed(&request)?;
        let request = request.into_inner();
        self.gateway.table().ensure_loaded(&request.name, version(&request.version)).await.map_err(ApiError::from)?;
        let metadata = api::model_metadata(self.table(), &request.name, version(&request.version))?;
        Ok(Response::new(convert::model_metadata(metadata)))
    }

    async fn model_infer(&self, request: Request<proto::ModelInferRequest>) -> GrpcResult<proto::ModelInferResponse> {
        let refused = |status: Status, request: &Request<proto::ModelInferRequest>| {
            let transport = request.metadata().get(&*REQUEST_ID).and_then(|v| v.to_str().ok());
            with_request_id(status, body_id(request.get_ref()), transport)
        };
        if let Err(status) = self.keyed(&request) {
            return Err(refused(status, &request));
        }
        let metadata = match CallMetadata::of(&request) {
            Ok(metadata) => metadata,
            Err(status) => return Err(refused(status, &request)),
        };
        // Kept only for a refusal's answer; most callers send no id in the body, and then this costs nothing.
        let kept_id = body_id(request.get_ref());
        let Reply { response, variant, cold_start } = match infer(&self.gateway, request.into_inner(), &metadata).await
        {
            Ok(reply) => reply,
            Err(error) => return Err(with_request_id(error.into(), kept_id, metadata.request_id.as_deref())),
        };
        let variant = variant.as_deref().and_then(|v| v.parse::<AsciiMetadataValue>().ok());
        // Ids are printable ASCII (the pipeline refuses others), so every one is a valid metadata value.
        let id = response.id.parse::<AsciiMetadataValue>().ok();
        let mut response = Response::new(response);
        if let Some(variant) = variant {
            response.metadata_mut().insert(VARIANT.clone(), variant);
        }
        if let Some(waited) = cold_start {
            response.metadata_mut().insert(COLD_START.clone(), api::cold_start_millis(waited).into());
        }
        if let Some(mut id) = id {
            // Never indexed by HPACK: an id is new in every response, and indexing each one would push the headers
            // every response repeats out of the connection's dynamic table (measured: 10% more CPU per request).
            id.set_sensitive(true);
            response.metadata_mut().insert(REQUEST_ID.clone(), id);
        }
        Ok(response)
    }

    type ModelStreamInferStream =
        Pin<Box<dyn Stream<Item = Result<proto::ModelStreamInferResponse, Status>> + Send + 'static>>;

    /// Each request of the stream is answered in order; an inference error is an `error_message` in its place and
    /// the stream goes on. At most [`STREAM_IN_FLIGHT`] requests of one stream are computed at once.
    async fn model_stream_infer(
        &self,
        request: Request<Streaming<proto::ModelInferRequest>>,
    ) -> GrpcResult<Self::ModelStreamInferStream> {
        self.keyed(&request)?;
        let metadata = Arc::new(CallMetadata::of(&request)?);
        let gateway = Arc::clone(&self.gateway);
        let responses = request
            .into_inner()
            .map(move |message| {
                let (gateway, metadata) = (Arc::clone(&gateway), Arc::clone(&metadata));
                async move {
                    let request = message?;
                    let id = request.id.clone();
                    Ok(match infer(&gateway, request, &metadata).await {
                        Ok(reply) => proto::ModelStreamInferResponse {
                            error_message: String::new(),
                            infer_response: Some(reply.response),
                        },
                        Err(e) => proto::ModelStreamInferResponse {
                            error_message: e.to_string(),
                            infer_response: Some(proto::ModelInferResponse { id, ..Default::default() }),
                        },
                    })
                }
            })
            .buffered(STREAM_IN_FLIGHT);
        Ok(Response::new(Box::pin(responses)))
    }

    async fn model_config(
        &self,
        request: Request<proto::ModelConfigRequest>,
    ) -> GrpcResult<proto::ModelConfigResponse> {
        self.keyed(&request)?;
        let request = request.into_inner();
        self.gateway.table().ensure_loaded(&request.name, version(&request.version)).await.map_err(ApiError::from)?;
        let config = api::model_config(self.table(), &request.name, version(&request.version))?;
        Ok(Response::new(proto::ModelConfigResponse { config: Some(convert::model_config(config)) }))
    }

    async fn model_statistics(
        &self,
        request: Request<proto::ModelStatisticsRequest>,
    ) -> GrpcResult<proto::ModelStatisticsResponse> {
        self.keyed(&request)?;
        let request = request.into_inner();
        let model = (!request.name.is_empty()).then_some(request.name.as_str());
        let statistics = api::statistics(self.table(), model, version(&request.version))?;
        Ok(Response::new(convert::statistics(statistics)))
    }

    async fn repository_index(
        &self,
        request: Request<proto::RepositoryIndexRequest>,
    ) -> GrpcResult<proto::RepositoryIndexResponse> {
        self.keyed(&request)?;
        let rows = api::repository_index(self.table(), request.into_inner().ready);
        let models = rows
            .into_iter()
            .map(|row| proto::repository_index_response::ModelIndex {
                name: row.name,
                version: row.version,
                state: row.state.to_owned(),
                reason: row.reason,
            })
            .collect();
        Ok(Response::new(proto::RepositoryIndexResponse { models }))
    }

    async fn repository_model_load(
        &self,
        request: Request<proto::RepositoryModelLoadRequest>,
    ) -> GrpcResult<proto::RepositoryModelLoadResponse> {
        let auth = authorization(&request).map(str::to_owned);
        let model = request.into_inner().model_name;
        api::load_model(self.table(), &self.gateway.control, auth.as_deref(), &model).await?;
        Ok(Response::new(proto::RepositoryModelLoadResponse {}))
    }

    async fn repository_model_unload(
        &self,
        request: Request<proto::RepositoryModelUnloadRequest>,
    ) -> GrpcResult<proto::RepositoryModelUnloadResponse> {
        let auth = authorization(&request).map(str::to_owned);
        let model = request.into_inner().model_name;
        api::unload_model(self.table(), &self.gateway.control, auth.as_deref(), &model).await?;
        Ok(Response::new(proto::RepositoryModelUnloadResponse {}))
    }

    async fn system_shared_memory_status(
        &self,
        request: Request<proto::SystemSharedMemoryStatusRequest>,
    ) -> GrpcResult<proto::SystemSharedMemoryStatusResponse> {
        self.keyed(&request)?;
        let name = request.into_inner().name;
        let regions = self.gateway.shared_memory.status((!name.is_empty()).then_some(name.as_str()))?;
        Ok(Response::new(convert::shared_memory_status(regions)))
    }

    async fn system_shared_memory_register(
        &self,
        request: Request<proto::SystemSharedMemoryRegisterRequest>,
    ) -> GrpcResult<proto::SystemSharedMemoryRegisterResponse> {
        self.keyed(&request)?;
        let r = request.into_inner();
        self.gateway.shared_memory.register(&r.name, &r.key, r.offset, r.byte_size)?;
        Ok(Response::new(proto::SystemSharedMemoryRegisterResponse {}))
    }

    async fn system_shared_memory_unregister(
        &self,
        request: Request<proto::SystemSharedMemoryUnregisterRequest>,
    ) -> GrpcResult<proto::SystemSharedMemoryUnregisterResponse> {
        self.keyed(&request)?;
        let name = request.into_inner().name;
        self.gateway.shared_memory.unregister((!name.is_empty()).then_some(name.as_str()))?;
        Ok(Response::new(proto::SystemSharedMemoryUnregisterResponse {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_timeout(value: &str) -> Request<()> {
        let mut request = Request::new(());
        request.metadata_mut().insert("grpc-timeout", value.parse().unwrap_or_else(|_| unreachable!()));
        request
    }

    #[test]
    fn grpc_timeouts_parse() {
        assert_eq!(grpc_timeout(&with_timeout("100m")).ok().flatten(), Some(Duration::from_millis(100)));
        assert_eq!(grpc_timeout(&with_timeout("2S")).ok().flatten(), Some(Duration::from_secs(2)));
        assert_eq!(grpc_timeout(&with_timeout("5u")).ok().flatten(), Some(Duration::from_micros(5)));
        assert_eq!(grpc_timeout(&Request::new(())).ok().flatten(), None);
        for bad in ["m", "10", "10x", "-1m"] {
            assert!(grpc_timeout(&with_timeout(bad)).is_err(), "{bad}");
        }
    }
}

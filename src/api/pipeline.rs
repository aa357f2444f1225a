//! The one inference pipeline. Both transports decode a request into [`InferRequest`], call [`infer`] with what
//! they know besides the body ([`Call`]: model, pinned version, routing key, deadline, protocol) and encode what it
//! returns. In order, and nowhere else: limits, routing (once, the transport's key and the body's `routing_key`
//! together; an on-demand version chosen that is not loaded is loaded, the request waiting for it within its
//! deadline), the shadow copy, the scheduler (after the signature check), and the recording of the outcome
//! (request metrics, the variant's metrics and window, statistics, predictions and drift, the payload log and the
//! prediction kept for feedback). Every answer carries the request's id (see [`request_id`]).

use std::time::{Duration, Instant};

use tracing::Instrument;

use super::inputs::{order_inputs, select_outputs};
use super::limits::check_limits;
use super::{ApiError, Gateway, observe, request_id, scheduler_error};
use crate::lifecycle::{LookupError, ServingVersion};
use crate::routing::{Routed, Shadow, VariantWindow};
use crate::telemetry::{Protocol, TrafficMetrics, trace};
use crate::tensor::Tensor;

/// The header (REST) or metadata key (gRPC) a caller may set so that its requests go to the same traffic variant.
pub const ROUTING_KEY_HEADER: &str = "x-routing-key";
/// The header (REST) or metadata key (gRPC) naming the traffic variant that answered.
pub const VARIANT_HEADER: &str = "x-infergate-variant";
/// The header (REST) or metadata key (gRPC) of an answer that waited for its on-demand version to load: how long,
/// in milliseconds.
pub const COLD_START_HEADER: &str = "x-infergate-cold-start-ms";
/// Loads one request may wait for: its version evicted again before it answered, or a variant that failed to load
/// making way for the next.
const MAX_LOADS_PER_REQUEST: usize = 3;

/// A named input or output tensor.
#[derive(Debug, Clone)]
pub struct NamedTensor {
    pub name: String,
    pub tensor: Tensor,
}

/// A decoded inference request, whatever transport it came by.
#[derive(Debug, Default, Clone)]
pub struct InferRequest {
    pub id: Option<String>,
    pub inputs: Vec<NamedTensor>,
    /// Names of the outputs wanted; `None` asks for all of them.
    pub outputs: Option<Vec<String>>,
    /// The body's `timeout` parameter: how long the caller will wait.
    pub timeout: Option<Duration>,
    /// The body's `routing_key` parameter: requests with the same key go to the same traffic variant.
    pub routing_key: Option<String>,
}

#[derive(Debug)]
pub struct InferResponse {
    pub model_name: String,
    pub model_version: String,
    pub id: Option<String>,
    pub outputs: Vec<NamedTensor>,
    /// The traffic variant that answered, when the model has a policy.
    pub variant: Option<String>,
    /// How long the request waited for its on-demand version to load.
    pub cold_start: Option<Duration>,
}

/// What a transport knows of a request besides its body.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    pub model: &'a str,
    /// A pinned version (number or alias); `None` lets the traffic policy choose.
    pub version: Option<&'a str>,
    /// The routing key of the transport's header or metadata; it wins over the body's `routing_key`.
    pub routing_key: Option<&'a str>,
    /// How long the caller will wait, as the transport says (REST timeout header, gRPC `grpc-timeout`).
    pub deadline: Option<Duration>,
    pub protocol: Protocol,
    /// The transport's `x-request-id`; the body's `id` wins over it.
    pub request_id: Option<&'a str>,
}

/// A version's answer, the rows it counted as inferences, and the model's first output when a prediction is kept
/// for feedback.
#[derive(Debug)]
struct Answered {
    response: InferResponse,
    rows: usize,
    first_output: Option<Tensor>,
}

/// Runs one inference, in the request span the transport opened (whose version, variant and rows it fills).
/// `decoded` is the transport's decoding of the body: a body that could not be decoded is answered as an unknown
/// model when the model is unknown, and is counted against the version it was meant for.
pub async fn infer(
    gateway: &Gateway,
    call: Call<'_>,
    decoded: Result<InferRequest, ApiError>,
) -> Result<InferResponse, ApiError> {
    let arrived = Instant::now();
    let mut request = match decoded {
        Ok(request) => request,
        Err(e) => return Err(undecodable(gateway, &call, e, arrived)),
    };
    request.id = Some(request_id::resolve(request.id.take(), call.request_id)?);
    check_limits(&gateway.limits, &request.inputs)?;
    let key = call.routing_key.or(request.routing_key.as_deref());
    request.timeout = shorter(request.timeout, call.deadline);
    let (routed, cold_start) = match gateway.traffic.route(&gateway.table, call.model, call.version, key) {
        Ok(routed) => {
            if routed.serving.evictable {
                gateway.table.telemetry().on_demand.request(true);
            }
            (routed, None)
        }
        // Boxed: every request's future would otherwise carry a load's room, loaded or not.
        Err(LookupError::NotLoaded { model, version }) => {
            let deadline = request.timeout.map(|timeout| arrived + timeout);
            Box::pin(load_then_route(gateway, &call, key, deadline, (model, version))).await?
        }
        Err(e) => return Err(e.into()),
    };
    routed.serving.touch();
    match gateway.traffic.shadow(&gateway.table, call.model, &routed) {
        Some(Ok(shadow)) => send_shadow(gateway.traffic.metrics(), call.model, shadow, request.clone(), call.protocol),
        // The shadow counts as a use: its version loads in the background, and later copies go to it.
        Some(Err(LookupError::NotLoaded { model, version })) => drop(gateway.table.start_load(&model, version)),
        Some(Err(_)) | None => {}
    }
    let window = routed.window();
    let sampled = observe::sample(&routed.serving, &request.inputs);
    // The version's own default timeout runs from when it could take the request, not across its cold start.
    let ready = cold_start.map_or(arrived, |waited| arrived + waited);
    let result = run(&routed.serving, request, window, arrived, ready).await;
    record(&routed.serving, call.protocol, &result, arrived);
    let rows = result.as_ref().map_or(0, |answered| answered.rows);
    trace::record_route(&tracing::Span::current(), routed.serving.version, routed.variant.as_deref(), rows);
    if let Some(variant) = routed.variant.as_deref() {
        record_variant(gateway.traffic.metrics(), call.model, variant, &routed.serving, window, &result, arrived);
    }
    let Answered { response, first_output, .. } = result?;
    let (serving, variant) = (&routed.serving, routed.variant.as_ref());
    if let (Some(first), Some(id)) = (&first_output, response.id.as_deref()) {
        observe::remember(gateway, call.model, id, serving, variant, first);
    }
    if let Some(sampled) = sampled {
        observe::log(gateway, sampled, serving, variant, &response, arrived);
    }
    Ok(InferResponse { variant: routed.variant.as_deref().map(str::to_owned), cold_start, ..response })
}

/// The cold-start header's value: whole milliseconds waited, at least 1 (the request did wait).
pub fn cold_start_millis(waited: Duration) -> u64 {
    u64::try_from(waited.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// Loads `target`, the on-demand version routing chose, and answers with it under the variant that chose it, the
/// request waiting until `deadline` (else the cold-start timeout, from now). A version that fails to load makes way
/// for the next choice of the traffic policy, or the default version. Returns how long the request waited.
async fn load_then_route(
    gateway: &Gateway,
    call: &Call<'_>,
    key: Option<&str>,
    deadline: Option<Instant>,
    mut target: (String, u64),
) -> Result<(Routed, Option<Duration>), ApiError> {
    let metrics = &gateway.table.telemetry().on_demand;
    let deadline = deadline.unwrap_or_else(|| Instant::now() + gateway.table.cold_start_timeout());
    let mut waited = Duration::ZERO;
    let mut failed = None;
    for _ in 0..MAX_LOADS_PER_REQUEST {
        if Instant::now() >= deadline {
            break;
        }
        let started = Instant::now();
        let loaded = gateway.table.load_on_demand(&target.0, target.1, Some(deadline)).await;
        waited += started.elapsed();
        match loaded {
            Ok(serving) => {
                metrics.request(false);
                metrics.cold_start.observe(waited.as_secs_f64());
                let routed = gateway.traffic.loaded(call.model, call.version.is_some(), serving);
                return Ok((routed, Some(waited)));
            }
            Err(e) => failed = Some(ApiError::from(e)),
        }
        target = match gateway.traffic.route(&gateway.table, call.model, call.version, key) {
            Ok(routed) => return Ok((routed, Some(waited))),
            Err(LookupError::NotLoaded { model, version }) => (model, version),
            Err(e) => return Err(e.into()),
        };
    }
    Err(failed.unwrap_or_else(|| ApiError::LoadPending {
        message: format!("model '{}' could not be loaded in time for this request; retry", call.model),
        retry_after_secs: 1,
    }))
}

/// The error for a body that could not be decoded: the model's lookup error when the model cannot answer,
/// else the decoding error, counted against the version the request was meant for.
fn undecodable(gateway: &Gateway, call: &Call<'_>, error: ApiError, arrived: Instant) -> ApiError {
    match gateway.traffic.route(&gateway.table, call.model, call.version, call.routing_key) {
        // The model is known, and loading it would not help a body that cannot be read.
        Err(LookupError::NotLoaded { .. }) => error,
        Err(lookup) => lookup.into(),
        Ok(routed) => {
            routed.serving.metrics.observe_error(call.protocol, error.error_type(), arrived.elapsed());
            error
        }
    }
}

/// The answer of one version, and the rows it counted as inferences. The caller holds the version's `Arc` until
/// it is answered, so a version replaced meanwhile finishes its work before it is freed.
async fn run(
    serving: &ServingVersion,
    request: InferRequest,
    window: Option<&VariantWindow>,
    arrived: Instant,
    ready: Instant,
) -> Result<Answered, ApiError> {
    let output_indices = select_outputs(&serving.signature, &serving.name, request.outputs.as_deref())?;
    let inputs = order_inputs(&serving.signature, &serving.name, request.inputs)?;
    // Input drift counts answered requests only, like prediction drift; the copy shares the tensors' bytes.
    let drift_inputs: Option<Vec<Tensor>> = serving.metrics.drift.tracks_inputs().then(|| inputs.clone());
    let deadline = deadline(arrived, ready, request.timeout, serving);
    let (outputs, rows) = serving
        .scheduler
        .infer(inputs, deadline)
        .await
        .map_err(|e| scheduler_error(e, &serving.name, serving.version))?;
    serving.metrics.predictions.observe(&outputs);
    serving.metrics.drift.observe_outputs(&outputs);
    if let (Some(window), Some(first)) = (window, outputs.first()) {
        window.observe_predictions(first);
    }
    let first_output = serving.spec.config.feedback.and_then(|_| outputs.first().cloned());
    if let Some(inputs) = drift_inputs {
        serving.metrics.drift.observe_inputs(&inputs);
    }
    let mut outputs = outputs.into_iter().map(Some).collect::<Vec<_>>();
    let outputs = output_indices
        .into_iter()
        .map(|ix| {
            let tensor = outputs
                .get_mut(ix)
                .and_then(Option::take)
                .ok_or_else(|| ApiError::Inference(format!("the model returned no value for output {ix}")))?;
            Ok(NamedTensor { name: serving.signature.outputs[ix].name.clone(), tensor })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    let response = InferResponse {
        model_name: serving.name.clone(),
        model_version: serving.version.to_string(),
        id: request.id,
        outputs,
        variant: None,
        cold_start: None,
    };
    Ok(Answered { response, rows, first_output })
}

/// The one place timeouts meet: the caller's (body parameter or transport, already the shorter of the two),
/// counted from the request's arrival, and the version's default, counted from when the version could take it
/// (`ready`: after its cold start, else the arrival); the earlier wins.
fn deadline(
    arrived: Instant,
    ready: Instant,
    requested: Option<Duration>,
    serving: &ServingVersion,
) -> Option<Instant> {
    let caller = requested.map(|timeout| arrived + timeout);
    let version = serving.scheduler.config().default_timeout.map(|timeout| ready + timeout);
    shorter(caller, version)
}

/// The shorter of two optional timeouts (or the earlier of two deadlines); `None` is no limit.
fn shorter<T: Ord>(a: Option<T>, b: Option<T>) -> Option<T> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The request metrics and statistics of the version that answered (or failed).
fn record(serving: &ServingVersion, protocol: Protocol, result: &Result<Answered, ApiError>, arrived: Instant) {
    let metrics = &serving.metrics;
    match result {
        Ok(answered) => metrics.observe_ok(protocol, answered.rows, arrived.elapsed()),
        Err(e) => metrics.observe_error(protocol, e.error_type(), arrived.elapsed()),
    }
}

/// The metrics and window of the traffic variant that answered.
fn record_variant(
    metrics: &TrafficMetrics,
    model: &str,
    variant: &str,
    serving: &ServingVersion,
    window: Option<&VariantWindow>,
    result: &Result<Answered, ApiError>,
    arrived: Instant,
) {
    let labels = [model, variant, &serving.version.to_string(), outcome(result)];
    metrics.variant_requests.with_label_values(&labels).inc();
    metrics.variant_duration.with_label_values(&[model, variant]).observe(arrived.elapsed().as_secs_f64());
    record_in_window(window, result, arrived.elapsed());
}

/// A copy of the request for the shadow: never waited for, and shed when the shadow's queue is half full.
fn send_shadow(metrics: &TrafficMetrics, model: &str, shadow: Shadow, request: InferRequest, protocol: Protocol) {
    shadow.serving.touch();
    let limit = shadow.serving.scheduler.config().policy.max_queue_size / 2;
    if shadow.serving.scheduler.queue_len() >= limit.max(1) {
        metrics.shadow_requests.with_label_values(&[model, &shadow.name, "shed"]).inc();
        return;
    }
    let (metrics, model) = (metrics.clone(), model.to_owned());
    // The copy's own span, a child of the request's: it is sampled with it and may end after it.
    let span =
        tracing::debug_span!("shadow", variant = %shadow.name, version = trace::as_attribute(shadow.serving.version));
    let copy = async move {
        let arrived = Instant::now();
        let window = shadow.window();
        let result = run(&shadow.serving, request, window, arrived, arrived).await;
        record(&shadow.serving, protocol, &result, arrived);
        metrics.shadow_requests.with_label_values(&[model.as_str(), &shadow.name, outcome(&result)]).inc();
        metrics
            .shadow_duration
            .with_label_values(&[model.as_str(), &shadow.name])
            .observe(arrived.elapsed().as_secs_f64());
        record_in_window(window, &result, arrived.elapsed());
    };
    tokio::spawn(copy.instrument(span));
}

/// `ok`, or the error type: the outcome label of the variant and shadow metrics.
fn outcome<T>(result: &Result<T, ApiError>) -> &'static str {
    result.as_ref().map_or_else(ApiError::error_type, |_| "ok")
}

/// Counts an answer, or a failure of the server's, in a variant's window (the caller's mistakes do not count).
fn record_in_window<T>(window: Option<&VariantWindow>, result: &Result<T, ApiError>, elapsed: Duration) {
    if let Some(window) = window
        && result.as_ref().map_or_else(ApiError::is_server_fault, |_| true)
    {
        window.observe(elapsed, result.is_ok());
    }
}

/// An FP32 input of zeros, for the tests of the request checks.
#[cfg(test)]
pub(super) fn zeros(name: &str, shape: Vec<usize>) -> NamedTensor {
    let bytes = shape.iter().product::<usize>() * 4;
    let tensor = Tensor::new(crate::tensor::DataType::Fp32, shape, bytes::Bytes::from(vec![0; bytes]));
    NamedTensor { name: name.into(), tensor: tensor.expect("the shape fits the bytes") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shorter_timeout_wins_and_none_is_no_limit() {
        let ms = Duration::from_millis;
        assert_eq!(shorter(Some(ms(5)), Some(ms(3))), Some(ms(3)));
        assert_eq!(shorter(Some(ms(5)), None), Some(ms(5)));
        assert_eq!(shorter(None, Some(ms(7))), Some(ms(7)));
        assert_eq!(shorter::<Duration>(None, None), None);
    }

    #[test]
    fn only_the_servers_failures_count_in_a_window() {
        let window = VariantWindow::default();
        let failed: Result<(), ApiError> = Err(ApiError::DeadlineExceeded);
        let mistaken: Result<(), ApiError> = Err(ApiError::invalid_input("wrong shape"));
        record_in_window(Some(&window), &Ok::<(), ApiError>(()), Duration::from_millis(1));
        record_in_window(Some(&window), &failed, Duration::from_millis(1));
        record_in_window(Some(&window), &mistaken, Duration::from_millis(1));
        let summary = window.summary();
        assert_eq!((summary.requests, summary.errors), (2, 1));
        assert_eq!(outcome(&failed), "deadline_exceeded");
        assert_eq!(outcome(&Ok::<(), ApiError>(())), "ok");
    }
}

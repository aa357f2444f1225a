//! The inference operation: check a decoded request against the model's signature, queue it, and pick the
//! requested outputs from the answer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::instrument;

use super::{ApiError, scheduler_error};
use crate::backend::Signature;
use crate::backend::signature::describe;
use crate::config::RequestLimits;
use crate::lifecycle::{ModelTable, Routed, ServingVersion};
use crate::tensor::Tensor;
use crate::traffic::VariantWindow;

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
    /// How long the caller will wait; the version's default applies when shorter or when this is `None`.
    pub timeout: Option<Duration>,
    /// The `routing_key` parameter: requests with the same key go to the same traffic variant.
    pub routing_key: Option<String>,
}

#[derive(Debug)]
pub struct InferOutput {
    pub name: String,
    pub tensor: Tensor,
}

#[derive(Debug)]
pub struct InferResponse {
    pub model_name: String,
    pub model_version: String,
    pub id: Option<String>,
    pub outputs: Vec<InferOutput>,
    /// The traffic variant that answered, when the model has a policy.
    pub variant: Option<String>,
}

/// The version a request for `model` (and `version`, if pinned) goes to. Transports resolve before decoding
/// the body, so a request for an unknown model is answered 404 whatever its body holds.
pub fn resolve(table: &ModelTable, model: &str, version: Option<&str>) -> Result<Arc<ServingVersion>, ApiError> {
    Ok(table.resolve(model, version)?)
}

/// The header (REST) or metadata key (gRPC) a caller may set so that its requests go to the same traffic variant.
pub const ROUTING_KEY_HEADER: &str = "x-routing-key";
/// The header (REST) or metadata key (gRPC) naming the traffic variant that answered.
pub const VARIANT_HEADER: &str = "x-infergate-variant";

/// Where a request goes (see [`ModelTable::route`]); `key` is the routing key of the transport's header or
/// metadata. Transports route before decoding the body, and again when the body's `routing_key` parameter is
/// the only key.
pub fn route(table: &ModelTable, model: &str, version: Option<&str>, key: Option<&str>) -> Result<Routed, ApiError> {
    Ok(table.route(model, version, key)?)
}

/// Runs one routed inference: copies it to the shadow when drawn (never waited for, shed first when the
/// shadow's queue is half full), answers from the routed version, and records the answer under its variant.
pub async fn infer_routed(
    table: &ModelTable,
    model: &str,
    routed: Routed,
    request: InferRequest,
) -> Result<InferResponse, ApiError> {
    let started = Instant::now();
    check_limits(table.request_limits(), &request.inputs)?;
    if let Some((name, shadow)) = table.shadow(model, &routed) {
        send_shadow(table, model, &routed, name, shadow, request.clone());
    }
    // The request holds its version once (the draining count of a swapped-out version counts holders).
    let Routed { serving, variant, policy } = routed;
    let version = serving.version;
    let window = policy.as_ref().zip(variant.as_deref()).and_then(|(p, v)| p.variant(v)).map(|v| &v.window);
    let result = infer_with(serving, request, window).await;
    let Some(variant) = variant.as_deref() else { return result };
    let metrics = &table.telemetry().traffic;
    metrics.variant_requests.with_label_values(&[model, variant, &version.to_string(), outcome(&result)]).inc();
    metrics.variant_duration.with_label_values(&[model, variant]).observe(started.elapsed().as_secs_f64());
    record_in_window(window, &result, started.elapsed());
    result.map(|response| InferResponse { variant: Some(variant.to_owned()), ..response })
}

/// Refuses a request that asks for more than the server's limits, naming the limit.
fn check_limits(limits: &RequestLimits, inputs: &[NamedTensor]) -> Result<(), ApiError> {
    let mut total: usize = 0;
    for input in inputs {
        let (tensor, name) = (&input.tensor, &input.name);
        let elements = tensor.element_count();
        if elements > limits.max_tensor_elements {
            return Err(ApiError::LimitExceeded(format!(
                "input '{name}' has {elements} elements, more than the limit of {} (--max-tensor-elements)",
                limits.max_tensor_elements
            )));
        }
        total = total.saturating_add(elements);
        if let Some(&rows) = tensor.shape().first()
            && rows > limits.max_request_rows
        {
            return Err(ApiError::LimitExceeded(format!(
                "input '{name}' has {rows} rows, more than the limit of {} (--max-request-rows)",
                limits.max_request_rows
            )));
        }
        if let Some(longest) = tensor.bytes_elements().map(<[u8]>::len).max()
            && longest > limits.max_bytes_element
        {
            return Err(ApiError::LimitExceeded(format!(
                "input '{name}' has a BYTES element of {longest} bytes, more than the limit of {} \
                 (--max-bytes-element)",
                limits.max_bytes_element
            )));
        }
    }
    if total > limits.max_request_elements {
        return Err(ApiError::LimitExceeded(format!(
            "the request's inputs have {total} elements, more than the limit of {} (--max-request-elements)",
            limits.max_request_elements
        )));
    }
    Ok(())
}

/// `ok`, or the error type: the outcome label of the variant and shadow metrics.
fn outcome(result: &Result<InferResponse, ApiError>) -> &'static str {
    result.as_ref().map_or_else(ApiError::error_type, |_| "ok")
}

/// Counts an answer, or a failure of the server's, in a variant's window (the caller's mistakes do not count).
fn record_in_window(window: Option<&VariantWindow>, result: &Result<InferResponse, ApiError>, elapsed: Duration) {
    if let Some(window) = window
        && result.as_ref().map_or_else(variant_fault, |_| true)
    {
        window.observe(elapsed, result.is_ok());
    }
}

/// Whether a failure counts against the variant that answered (its error rate in a rollout): the server's
/// failures do, the caller's mistakes (a malformed or invalid request) do not.
fn variant_fault(error: &ApiError) -> bool {
    matches!(
        error,
        ApiError::Inference(_)
            | ApiError::Overloaded { .. }
            | ApiError::DeadlineExceeded
            | ApiError::ModelUnavailable(_)
            | ApiError::ShuttingDown
    )
}

fn send_shadow(
    table: &ModelTable,
    model: &str,
    routed: &Routed,
    name: Arc<str>,
    shadow: Arc<ServingVersion>,
    request: InferRequest,
) {
    let metrics = table.telemetry().traffic.clone();
    let limit = shadow.scheduler.config().policy.max_queue_size / 2;
    if shadow.scheduler.queue_len() >= limit.max(1) {
        metrics.shadow_requests.with_label_values(&[model, &name, "shed"]).inc();
        return;
    }
    let policy = routed.policy.clone();
    let model = model.to_owned();
    tokio::spawn(async move {
        let started = Instant::now();
        let window = policy.as_ref().and_then(|p| p.variant(&name)).map(|v| &v.window);
        let result = infer_with(shadow, request, window).await;
        metrics.shadow_requests.with_label_values(&[model.as_str(), &name, outcome(&result)]).inc();
        metrics.shadow_duration.with_label_values(&[model.as_str(), &name]).observe(started.elapsed().as_secs_f64());
        record_in_window(window, &result, started.elapsed());
    });
}

/// Runs one inference on a resolved version. The request holds the `Arc` of its version until it is answered,
/// so a version replaced meanwhile finishes its work before it is freed.
#[instrument(skip_all, fields(model = %serving.name, version = serving.version))]
pub async fn infer(serving: Arc<ServingVersion>, request: InferRequest) -> Result<InferResponse, ApiError> {
    infer_with(serving, request, None).await
}

/// [`infer`], binning the model's first output into a traffic variant's window when one is given.
async fn infer_with(
    serving: Arc<ServingVersion>,
    request: InferRequest,
    window: Option<&VariantWindow>,
) -> Result<InferResponse, ApiError> {
    let started = Instant::now();
    let result = run(&serving, request, window).await;
    match &result {
        Ok((_, rows)) => serving.metrics.observe_ok(*rows, started.elapsed()),
        Err(e) => serving.metrics.observe_error(e.error_type(), started.elapsed()),
    }
    result.map(|(response, _)| response)
}

/// The answer, and the rows it counted as inferences.
async fn run(
    serving: &ServingVersion,
    request: InferRequest,
    window: Option<&VariantWindow>,
) -> Result<(InferResponse, usize), ApiError> {
    let output_indices = select_outputs(&serving.signature, &serving.name, request.outputs.as_deref())?;
    let inputs = order_inputs(&serving.signature, &serving.name, request.inputs)?;
    // Input drift counts answered requests only, like prediction drift; the copy shares the tensors' bytes.
    let drift_inputs: Option<Vec<Tensor>> = serving.metrics.drift.tracks_inputs().then(|| inputs.clone());
    let (outputs, rows) = serving
        .scheduler
        .infer(inputs, request.timeout)
        .await
        .map_err(|e| scheduler_error(e, &serving.name, serving.version))?;
    serving.metrics.predictions.observe(&outputs);
    serving.metrics.drift.observe_outputs(&outputs);
    if let (Some(window), Some(first)) = (window, outputs.first()) {
        window.observe_predictions(first);
    }
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
            Ok(InferOutput { name: serving.signature.outputs[ix].name.clone(), tensor })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    let response = InferResponse {
        model_name: serving.name.clone(),
        model_version: serving.version.to_string(),
        id: request.id,
        outputs,
        variant: None,
    };
    Ok((response, rows))
}

/// Puts the inputs in signature order, refusing missing, repeated, unknown or ill-fitting ones.
pub fn order_inputs(signature: &Signature, model: &str, inputs: Vec<NamedTensor>) -> Result<Vec<Tensor>, ApiError> {
    let mut slots: Vec<Option<Tensor>> = vec![None; signature.inputs.len()];
    for input in inputs {
        let Some(ix) = signature.inputs.iter().position(|spec| spec.name == input.name) else {
            return Err(ApiError::invalid_input(format!(
                "unknown input '{}'; model '{model}' takes {}",
                input.name,
                list_specs(signature)
            )));
        };
        let spec = &signature.inputs[ix];
        if slots[ix].is_some() {
            return Err(ApiError::invalid_input(format!("input '{}' is given more than once", spec.name)));
        }
        if !spec.accepts(input.tensor.dtype(), input.tensor.shape()) {
            return Err(ApiError::invalid_input(format!(
                "input '{}' expects {}, got {}",
                spec.name,
                spec.describe(),
                describe(input.tensor.dtype(), input.tensor.shape())
            )));
        }
        slots[ix] = Some(input.tensor);
    }
    slots
        .into_iter()
        .zip(&signature.inputs)
        .map(|(slot, spec)| {
            slot.ok_or_else(|| {
                ApiError::invalid_input(format!(
                    "missing input '{}' ({}); model '{model}' takes {}",
                    spec.name,
                    spec.describe(),
                    list_specs(signature)
                ))
            })
        })
        .collect()
}

/// Indices of the requested outputs, in the order asked; all outputs when none are named.
fn select_outputs(signature: &Signature, model: &str, wanted: Option<&[String]>) -> Result<Vec<usize>, ApiError> {
    let Some(wanted) = wanted else {
        return Ok((0..signature.outputs.len()).collect());
    };
    let mut indices = Vec::with_capacity(wanted.len());
    for name in wanted {
        let ix = signature.output_index(name).ok_or_else(|| {
            let names: Vec<&str> = signature.outputs.iter().map(|o| o.name.as_str()).collect();
            ApiError::invalid_input(format!("unknown output '{name}'; model '{model}' outputs {}", names.join(", ")))
        })?;
        if indices.contains(&ix) {
            return Err(ApiError::invalid_input(format!("output '{name}' is requested more than once")));
        }
        indices.push(ix);
    }
    Ok(indices)
}

fn list_specs(signature: &Signature) -> String {
    let specs: Vec<String> =
        signature.inputs.iter().map(|spec| format!("'{}' {}", spec.name, spec.describe())).collect();
    specs.join(", ")
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::backend::TensorSpec;
    use crate::tensor::DataType;

    fn signature() -> Signature {
        let spec = |name: &str, shape: Vec<i64>| TensorSpec {
            name: name.into(),
            datatype: DataType::Fp32,
            dim_names: vec![None; shape.len()],
            shape,
        };
        Signature {
            inputs: vec![spec("a", vec![-1, 2]), spec("b", vec![1])],
            outputs: vec![spec("y", vec![-1])],
            notes: vec![],
        }
    }

    fn input(name: &str, shape: Vec<usize>) -> NamedTensor {
        let bytes = shape.iter().product::<usize>() * 4;
        NamedTensor {
            name: name.into(),
            tensor: Tensor::new(DataType::Fp32, shape, Bytes::from(vec![0; bytes])).unwrap(),
        }
    }

    #[test]
    fn orders_inputs_by_signature() {
        let ordered = order_inputs(&signature(), "m", vec![input("b", vec![1]), input("a", vec![3, 2])]).unwrap();
        assert_eq!(ordered[0].shape(), [3, 2]);
        assert_eq!(ordered[1].shape(), [1]);
    }

    #[test]
    fn names_the_input_and_both_signatures() {
        let err = order_inputs(&signature(), "m", vec![input("a", vec![2, 5]), input("b", vec![1])]).unwrap_err();
        assert_eq!(err.to_string(), "input 'a' expects FP32 [-1,2], got FP32 [2,5]");
        let err = order_inputs(&signature(), "m", vec![input("a", vec![2, 2])]).unwrap_err();
        assert_eq!(err.to_string(), "missing input 'b' (FP32 [1]); model 'm' takes 'a' FP32 [-1,2], 'b' FP32 [1]");
        let err = order_inputs(&signature(), "m", vec![input("c", vec![1])]).unwrap_err();
        assert!(err.to_string().starts_with("unknown input 'c'"), "{err}");
        let err = order_inputs(&signature(), "m", vec![input("b", vec![1]), input("b", vec![1])]).unwrap_err();
        assert_eq!(err.to_string(), "input 'b' is given more than once");
    }

    #[test]
    fn limits_name_the_limit() {
        let limits = RequestLimits {
            max_tensor_elements: 8,
            max_request_elements: 12,
            max_request_rows: 3,
            max_bytes_element: 4,
        };
        assert!(check_limits(&limits, &[input("a", vec![3, 2])]).is_ok());
        let err = check_limits(&limits, &[input("a", vec![2, 5])]).unwrap_err();
        assert!(err.to_string().contains("--max-tensor-elements"), "{err}");
        let err = check_limits(&limits, &[input("a", vec![4, 1])]).unwrap_err();
        assert!(err.to_string().contains("--max-request-rows"), "{err}");
        let err = check_limits(&limits, &[input("a", vec![2, 4]), input("b", vec![1, 6])]).unwrap_err();
        assert!(err.to_string().contains("--max-request-elements"), "{err}");
        let mut data = Vec::new();
        for element in [&b"abcd"[..], b"abcde"] {
            crate::tensor::push_bytes_element(&mut data, element).unwrap();
        }
        let bytes =
            NamedTensor { name: "s".into(), tensor: Tensor::new(DataType::Bytes, vec![2], Bytes::from(data)).unwrap() };
        let err = check_limits(&limits, &[bytes]).unwrap_err();
        assert!(matches!(err, ApiError::LimitExceeded(_)) && err.to_string().contains("5 bytes"), "{err}");
    }

    #[test]
    fn selects_outputs() {
        assert_eq!(select_outputs(&signature(), "m", None).unwrap(), [0]);
        assert_eq!(select_outputs(&signature(), "m", Some(&["y".into()])).unwrap(), [0]);
        assert!(select_outputs(&signature(), "m", Some(&["z".into()])).is_err());
        assert!(select_outputs(&signature(), "m", Some(&["y".into(), "y".into()])).is_err());
    }
}

//! What the pipeline keeps of an answered request besides its metrics: a payload-log record for a sample of the
//! requests (the model's `[logging]`), and its prediction for the labels sent back later (`[feedback]`). Both hand
//! their work over without waiting: a record to its sink's queue, a prediction to the sharded store.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use super::Gateway;
use super::pipeline::{InferResponse, NamedTensor};
use crate::lifecycle::ServingVersion;
use crate::repository::{FeedbackTask, LogMode, LogSink};
use crate::routing::random_unit;
use crate::telemetry::feedback::Prediction;
use crate::telemetry::payload::{PayloadRecord, Sink};
use crate::tensor::{DataType, Tensor};

/// A request drawn for the payload log, with what its record keeps of the inputs.
#[derive(Debug)]
pub(super) struct Sampled {
    inputs: Option<Vec<(String, Tensor)>>,
    omitted: Vec<String>,
    mode: LogMode,
    sink: Sink,
    max_bytes: usize,
}

/// Draws whether this request of `serving` is logged; when it is, copies the inputs its record keeps (the copies
/// share the request's bytes).
pub(super) fn sample(serving: &ServingVersion, inputs: &[NamedTensor]) -> Option<Sampled> {
    let logging = serving.spec.config.logging.as_ref()?;
    if logging.percent < 100.0 && random_unit() * 100.0 >= logging.percent {
        return None;
    }
    let excluded = |input: &NamedTensor| {
        (logging.exclude_bytes && input.tensor.dtype() == DataType::Bytes)
            || logging.exclude_inputs.contains(&input.name)
    };
    let (mut kept, mut omitted) = (Vec::new(), Vec::new());
    if logging.mode.inputs() {
        for input in inputs {
            if excluded(input) {
                omitted.push(input.name.clone());
            } else {
                kept.push((input.name.clone(), input.tensor.clone()));
            }
        }
    }
    let sink = match logging.sink {
        LogSink::File => Sink::File,
        LogSink::Http => Sink::Http,
    };
    Some(Sampled {
        inputs: logging.mode.inputs().then_some(kept),
        omitted,
        mode: logging.mode,
        sink,
        max_bytes: logging.max_record_bytes,
    })
}

/// Hands the record of an answered, sampled request to its sink.
pub(super) fn log(
    gateway: &Gateway,
    sampled: Sampled,
    serving: &ServingVersion,
    variant: Option<&Arc<str>>,
    response: &InferResponse,
    arrived: Instant,
) {
    let latency = arrived.elapsed();
    let outputs = sampled.mode.outputs().then(|| {
        response.outputs.iter().map(|output| (output.name.clone(), output.tensor.clone())).collect::<Vec<_>>()
    });
    let record = PayloadRecord {
        id: response.id.clone().unwrap_or_default(),
        time: SystemTime::now().checked_sub(latency).unwrap_or_else(SystemTime::now),
        model: serving.name.clone(),
        version: serving.version,
        variant: variant.cloned(),
        latency,
        inputs: sampled.inputs,
        outputs,
        omitted_inputs: sampled.omitted,
        max_bytes: sampled.max_bytes,
    };
    gateway.payload_log.submit(sampled.sink, record);
}

/// Keeps what `serving` predicted for request `id` of `model` (the model the caller named), when it takes feedback.
pub(super) fn remember(
    gateway: &Gateway,
    model: &str,
    id: &str,
    serving: &ServingVersion,
    variant: Option<&Arc<str>>,
    first_output: &Tensor,
) {
    let Some(feedback) = serving.spec.config.feedback else { return };
    let prediction = match feedback.task {
        FeedbackTask::Classification => Prediction::classes(first_output),
        FeedbackTask::Regression => Prediction::values(first_output),
        FeedbackTask::Auto if Prediction::looks_like_classes(first_output) => Prediction::classes(first_output),
        FeedbackTask::Auto => Prediction::values(first_output),
    };
    if let Some(prediction) = prediction {
        gateway.predictions.remember(model, id, serving.version, variant.cloned(), prediction);
    }
}

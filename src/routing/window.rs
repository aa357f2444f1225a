//! What a traffic variant answered since its policy was set: counts, latencies (the server's one latency
//! histogram) and its predictions binned. The rollout compares the baseline's window with the candidate's.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::telemetry::{LatencyHistogram, for_each_class, for_each_value};
use crate::tensor::{DataType, Tensor};

/// Prediction bins of a window: class indices (or integer labels) modulo this, or score bins.
pub const PREDICTION_BINS: usize = 32;

/// A variant's answers since its policy was set; written by every request it answers, without a lock.
#[derive(Debug)]
pub struct VariantWindow {
    ok: AtomicU64,
    errors: AtomicU64,
    latency: LatencyHistogram,
    predictions: [AtomicU64; PREDICTION_BINS],
    /// Classified rows labelled by feedback, and how many of those the variant got right.
    labels: AtomicU64,
    correct: AtomicU64,
}

impl Default for VariantWindow {
    fn default() -> Self {
        VariantWindow {
            ok: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            latency: LatencyHistogram::default(),
            predictions: std::array::from_fn(|_| AtomicU64::new(0)),
            labels: AtomicU64::new(0),
            correct: AtomicU64::new(0),
        }
    }
}

/// A window read at one moment.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct WindowSummary {
    pub requests: u64,
    pub errors: u64,
    pub error_rate: f64,
    pub p99_ms: f64,
    #[serde(skip)]
    pub predictions: Vec<u64>,
    /// Classified rows labelled by feedback, and the share the variant got right (none before the first label).
    pub labels: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f64>,
}

impl VariantWindow {
    /// Counts an answer (`ok`) or a failure of the variant, with its latency.
    pub fn observe(&self, elapsed: Duration, ok: bool) {
        let counter = if ok { &self.ok } else { &self.errors };
        counter.fetch_add(1, Ordering::Relaxed);
        self.latency.record(elapsed);
    }

    /// Bins the rows of the model's first output (whatever outputs the caller asked for).
    pub fn observe_predictions(&self, first_output: &Tensor) {
        for_each_bin(first_output, |bin| {
            self.predictions[bin].fetch_add(1, Ordering::Relaxed);
        });
    }

    /// A classified row labelled by feedback: whether the variant predicted it right.
    pub fn observe_label(&self, correct: bool) {
        self.labels.fetch_add(1, Ordering::Relaxed);
        if correct {
            self.correct.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn summary(&self) -> WindowSummary {
        let labels = self.labels.load(Ordering::Relaxed);
        let correct = self.correct.load(Ordering::Relaxed);
        let ok = self.ok.load(Ordering::Relaxed);
        let errors = self.errors.load(Ordering::Relaxed);
        let requests = ok + errors;
        WindowSummary {
            requests,
            errors,
            error_rate: if requests == 0 { 0.0 } else { errors as f64 / requests as f64 },
            p99_ms: self.latency.quantile(0.99).map_or(0.0, |p99| p99.as_secs_f64() * 1000.0),
            predictions: self.predictions.iter().map(|c| c.load(Ordering::Relaxed)).collect(),
            labels,
            accuracy: (labels > 0).then(|| correct as f64 / labels as f64),
        }
    }
}

/// Calls `f` with the bin of every row of a model's first output: the class of a float output of shape [N, K]
/// (its highest column), a float score of shape [N] or [N, 1] binned over [0, 1] (clamped), or the value of an
/// integer or boolean label, modulo the bins. BYTES outputs have nothing to bin.
fn for_each_bin(tensor: &Tensor, mut f: impl FnMut(usize)) {
    let bins = PREDICTION_BINS as f64;
    let float = matches!(tensor.dtype(), DataType::Fp32 | DataType::Fp64);
    let columns = tensor.shape().get(1).copied().unwrap_or(1);
    match (float, columns > 1) {
        (true, true) => for_each_class(tensor, true, |class| f(class as usize % PREDICTION_BINS)),
        (true, false) => for_each_value(tensor, |score| f((score.clamp(0.0, 1.0) * (bins - 1.0)) as usize)),
        (false, _) => for_each_value(tensor, |label| f(label.rem_euclid(bins) as usize)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_count_and_bin_predictions() {
        let window = VariantWindow::default();
        let probabilities: Vec<u8> = [0.1f32, 0.9, 0.8, 0.2].iter().flat_map(|v| v.to_le_bytes()).collect();
        let tensor = Tensor::new(DataType::Fp32, vec![2, 2], bytes::Bytes::from(probabilities)).unwrap();
        window.observe(Duration::from_millis(2), true);
        window.observe_predictions(&tensor);
        window.observe(Duration::from_millis(30), false);
        let summary = window.summary();
        assert_eq!((summary.requests, summary.errors, summary.error_rate), (2, 1, 0.5));
        assert_eq!(&summary.predictions[..2], [1, 1]);
        // The latency histogram's buckets are 5 % wide.
        assert!(summary.p99_ms >= 30.0 && summary.p99_ms < 31.5, "{}", summary.p99_ms);
        assert_eq!((summary.labels, summary.accuracy), (0, None));
        window.observe_label(true);
        window.observe_label(false);
        window.observe_label(true);
        window.observe_label(true);
        assert_eq!((window.summary().labels, window.summary().accuracy), (4, Some(0.75)));
    }
}

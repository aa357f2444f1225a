//! Ground truth joined to predictions: the store of recent predictions ([`PredictionStore`]) and the metrics of
//! the labels sent back for them, per model, version and traffic variant (accuracy for classifiers, absolute and
//! squared error for regressors, and an accuracy gauge over the sliding window).

mod store;

use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use prometheus::{Counter, CounterVec, GaugeVec, IntCounterVec, Opts, Registry};

pub use store::{Lookup, PredictionStore};

use super::count_window::CountWindow;
use super::{for_each_class, for_each_value, registered};
use crate::tensor::{DataType, Tensor};

/// How many predictions are kept for feedback, for how long, and how much one call may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeedbackSettings {
    pub max_predictions: usize,
    pub max_age: Duration,
    /// Memory the kept predictions may take, ids included (an estimate per entry).
    pub max_bytes: usize,
    /// Records one feedback call may carry.
    pub max_batch: usize,
}

impl Default for FeedbackSettings {
    fn default() -> Self {
        FeedbackSettings {
            max_predictions: 1_000_000,
            max_age: Duration::from_secs(3600),
            max_bytes: 256 << 20,
            max_batch: 10_000,
        }
    }
}

/// What a model predicted for each row of a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Prediction {
    /// Class labels (a label output's value, or the highest column of a score output).
    Classes(Vec<i64>),
    /// Regression values.
    Values(Vec<f64>),
}

impl Prediction {
    /// The classes of a model's first output: an integer or boolean label per row, or the highest column of a
    /// float [N, K] output. `None` for BYTES outputs, which hold no number to compare.
    pub fn classes(first: &Tensor) -> Option<Prediction> {
        let float = matches!(first.dtype(), DataType::Fp32 | DataType::Fp64);
        let mut classes = Vec::with_capacity(first.shape().first().copied().unwrap_or(1));
        (first.dtype() != DataType::Bytes).then_some(())?;
        for_each_class(first, float, |class| classes.push(class as i64));
        Some(Prediction::Classes(classes))
    }

    /// The values of a regressor's first output, one per row.
    pub fn values(first: &Tensor) -> Option<Prediction> {
        (first.dtype() != DataType::Bytes).then_some(())?;
        let mut values = Vec::with_capacity(first.shape().first().copied().unwrap_or(1));
        for_each_value(first, |value| values.push(value));
        Some(Prediction::Values(values))
    }

    /// Whether a model's first output reads as classes when the model does not say: integer and boolean labels,
    /// and float scores of two or more columns.
    pub fn looks_like_classes(first: &Tensor) -> bool {
        let float = matches!(first.dtype(), DataType::Fp32 | DataType::Fp64);
        !float || first.shape().get(1).copied().unwrap_or(1) > 1
    }

    pub fn rows(&self) -> usize {
        match self {
            Prediction::Classes(c) => c.len(),
            Prediction::Values(v) => v.len(),
        }
    }

    /// Memory it holds, for the store's budget.
    fn bytes(&self) -> usize {
        self.rows() * 8
    }
}

/// The labelled rows of one (model, version, variant): counters, and the window behind the accuracy gauge.
#[derive(Debug, Clone)]
pub struct LabelRecorder {
    labels: Counter,
    correct: Counter,
    absolute_error: Counter,
    squared_error: Counter,
    window: Arc<CountWindow>,
}

impl LabelRecorder {
    /// A classified row: whether the prediction was the true class.
    pub fn classified(&self, correct: bool) {
        self.labels.inc();
        if correct {
            self.correct.inc();
        }
        self.window.add(usize::from(correct), Instant::now());
    }

    /// A regressed row: the error of its prediction.
    pub fn regressed(&self, error: f64) {
        self.labels.inc();
        self.absolute_error.inc_by(error.abs());
        self.squared_error.inc_by(error * error);
    }
}

/// Feedback's metric families, and the accuracy windows of every (model, version, variant) labelled so far.
#[derive(Debug, Clone)]
pub struct FeedbackMetrics {
    records: IntCounterVec,
    labels: CounterVec,
    correct: CounterVec,
    absolute_error: CounterVec,
    squared_error: CounterVec,
    accuracy: GaugeVec,
    windows: Arc<DashMap<[String; 3], Arc<CountWindow>>>,
    window: Duration,
}

/// The outcomes of a feedback record: the `result` label.
pub const FEEDBACK_RESULTS: [&str; 4] = ["matched", "unknown_id", "expired", "duplicate"];

impl FeedbackMetrics {
    /// The families, registered in `registry`; `window` is the span of the accuracy gauge.
    pub(super) fn register(registry: &Registry, window: Duration) -> FeedbackMetrics {
        let mvv = &["model", "version", "variant"];
        let sum = |name: &str, help: &str| {
            registered(registry, CounterVec::new(Opts::new(name, help), mvv).expect("constant options"))
        };
        FeedbackMetrics {
            records: registered(
                registry,
                IntCounterVec::new(
                    Opts::new(
                        "infergate_feedback_total",
                        "Feedback records by result: matched, unknown_id, expired (pushed out of the prediction \
                         store), duplicate (the id was labelled already).",
                    ),
                    &["model", "result"],
                )
                .expect("constant options"),
            ),
            labels: sum("infergate_feedback_labels_total", "Rows labelled by feedback, per version and variant."),
            correct: sum(
                "infergate_feedback_correct_total",
                "Classified rows whose prediction was the label sent as feedback.",
            ),
            absolute_error: sum(
                "infergate_feedback_absolute_error_total",
                "Sum of |prediction - label| of regressed rows (divide by the labels for the mean absolute error).",
            ),
            squared_error: sum(
                "infergate_feedback_squared_error_total",
                "Sum of (prediction - label)^2 of regressed rows (divide by the labels for the mean squared error).",
            ),
            accuracy: registered(
                registry,
                GaugeVec::new(
                    Opts::new(
                        "infergate_feedback_accuracy",
                        "Share of the classified rows labelled over the sliding window (--metrics-window-seconds) \
                         whose prediction was right.",
                    ),
                    mvv,
                )
                .expect("constant options"),
            ),
            windows: Arc::new(DashMap::new()),
            window,
        }
    }

    /// Counts `n` records of a model with this result (one of [`FEEDBACK_RESULTS`]).
    pub fn count(&self, model: &str, result: &str, n: u64) {
        if n > 0 {
            self.records.with_label_values(&[model, result]).inc_by(n);
        }
    }

    /// The recorder of one version and variant (`""` when no traffic policy chose it).
    pub fn recorder(&self, model: &str, version: u64, variant: &str) -> LabelRecorder {
        let version = version.to_string();
        let labels = [model, version.as_str(), variant];
        let key = [model.to_owned(), version.clone(), variant.to_owned()];
        let window =
            Arc::clone(self.windows.entry(key).or_insert_with(|| Arc::new(CountWindow::new(self.window, 2))).value());
        LabelRecorder {
            labels: self.labels.with_label_values(&labels),
            correct: self.correct.with_label_values(&labels),
            absolute_error: self.absolute_error.with_label_values(&labels),
            squared_error: self.squared_error.with_label_values(&labels),
            window,
        }
    }

    /// Sets the accuracy gauges from the windows, at scrape time.
    pub(super) fn refresh(&self) {
        let now = Instant::now();
        for entry in self.windows.iter() {
            let totals = entry.value().totals(now);
            let (wrong, right) = (totals[0], totals[1]);
            let gauge = self.accuracy.with_label_values(&[&entry.key()[0], &entry.key()[1], &entry.key()[2]]);
            gauge.set(if wrong + right == 0 { f64::NAN } else { right as f64 / (wrong + right) as f64 });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(dtype: DataType, shape: Vec<usize>, bytes: Vec<u8>) -> Tensor {
        Tensor::new(dtype, shape, bytes::Bytes::from(bytes)).unwrap()
    }

    #[test]
    fn predictions_are_labels_highest_columns_or_values() {
        let labels = tensor(DataType::Int64, vec![2], [2i64, 0].map(i64::to_le_bytes).concat());
        assert_eq!(Prediction::classes(&labels), Some(Prediction::Classes(vec![2, 0])));
        assert!(Prediction::looks_like_classes(&labels));
        let scores =
            tensor(DataType::Fp32, vec![2, 3], [0.1f32, 0.7, 0.2, 0.5, 0.3, 0.2].map(f32::to_le_bytes).concat());
        assert_eq!(Prediction::classes(&scores), Some(Prediction::Classes(vec![1, 0])));
        assert!(Prediction::looks_like_classes(&scores));
        let values = tensor(DataType::Fp32, vec![2, 1], [1.5f32, -2.0].map(f32::to_le_bytes).concat());
        assert!(!Prediction::looks_like_classes(&values));
        assert_eq!(Prediction::values(&values), Some(Prediction::Values(vec![1.5, -2.0])));
        let text = tensor(DataType::Bytes, vec![1], [1u32.to_le_bytes().to_vec(), b"a".to_vec()].concat());
        assert_eq!(Prediction::classes(&text), None);
    }
}

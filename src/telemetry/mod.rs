//! Prometheus metrics: every name, label and bucket lives here.
//!
//! Label values come from a closed set (model and version names from the repository, protocol names, error
//! types), never from request content, so cardinality stays bounded. Per-version handles are resolved once when
//! a version loads ([`VersionMetrics`]), so the request path does no label lookups.

mod count_window;
mod drift;
pub mod feedback;
mod latency;
mod latency_window;
mod on_demand;
pub mod payload;
mod plan;
mod predictions;
mod psi;
mod statistics;
pub mod trace;

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

pub use drift::{DriftMonitor, MAX_FEATURES, Reference, ReferenceDistribution, build_reference};
pub use latency::LatencyHistogram;
pub use latency_window::LatencyWindow;
pub use on_demand::OnDemandMetrics;
pub use plan::{OutputShape, Watched, monitor_plan};
pub use predictions::{Distribution, MAX_CLASSES, MonitorSpec, PredictionMonitor};
pub(crate) use predictions::{for_each_class, for_each_value};
pub use psi::{psi, psi_of_counts};
pub use statistics::{BatchTotals, ComputeTimes, DurationTotal, Statistics};

/// The transport a request came by: the `protocol` label of the request metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Rest,
    Grpc,
}

impl Protocol {
    pub const ALL: [Protocol; 2] = [Protocol::Rest, Protocol::Grpc];

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Rest => "rest",
            Protocol::Grpc => "grpc",
        }
    }
}

/// Request, queue and compute duration buckets, in seconds: fine below a millisecond for small models, wide
/// enough for models that take seconds.
pub const DURATION_BUCKETS: [f64; 19] = [
    0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0, 30.0,
];
/// Rows per backend run.
pub const BATCH_SIZE_BUCKETS: [f64; 12] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0];
/// Percentiles published from the sliding latency window. The label is `percentile`, not `quantile`, which
/// Prometheus reserves for summaries.
pub const WINDOW_PERCENTILES: [(&str, f64); 3] = [("50", 0.5), ("90", 0.9), ("99", 0.99)];
/// Buckets of score histograms when `model.toml` gives none: scores in [0, 1], such as probabilities.
pub const DEFAULT_SCORE_BUCKETS: [f64; 11] = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0];
/// The version states published by `infergate_model_version_state`.
pub const VERSION_STATES: [&str; 4] = ["loading", "warming_up", "ready", "failed"];

/// The registry and every metric family of the server.
#[derive(Debug)]
pub struct Telemetry {
    registry: Registry,
    requests: IntCounterVec,
    inferences: IntCounterVec,
    request_duration: HistogramVec,
    queue_duration: HistogramVec,
    compute_duration: HistogramVec,
    batch_size: HistogramVec,
    queue_depth: IntGaugeVec,
    in_flight: IntGaugeVec,
    version_state: IntGaugeVec,
    load_duration: GaugeVec,
    window_latency: GaugeVec,
    predictions: IntCounterVec,
    prediction_drift: GaugeVec,
    feature_drift: GaugeVec,
    mlflow_up: IntGaugeVec,
    mlflow_errors: IntCounterVec,
    mlflow_alias: IntGaugeVec,
    pub traffic: TrafficMetrics,
    pub feedback: feedback::FeedbackMetrics,
    pub on_demand: OnDemandMetrics,
    window: Duration,
}

/// Traffic splitting, shadows and rollouts, per model and variant.
#[derive(Debug, Clone)]
pub struct TrafficMetrics {
    /// Answers by variant: `model`, `variant`, `version` (that answered), `outcome` (`ok` or the error type).
    pub variant_requests: IntCounterVec,
    pub variant_duration: HistogramVec,
    /// Shadow copies: `outcome` is `ok`, the error type, or `shed` (not sent: the shadow's queue was filling).
    pub shadow_requests: IntCounterVec,
    pub shadow_duration: HistogramVec,
    pub weight: IntGaugeVec,
    pub rollout_decisions: IntCounterVec,
    pub rollout_percent: IntGaugeVec,
}

/// What became of the finished spans of sampled requests: one set for the process, whose tracing is global too.
#[derive(Debug)]
pub(crate) struct TraceSpanMetrics {
    spans: IntCounterVec,
    /// Sent to the collector.
    pub exported: IntCounter,
    /// Dropped: the export queue was full.
    pub queue_full: IntCounter,
    /// Dropped: the collector refused them or did not answer in time.
    pub export_failed: IntCounter,
    /// Dropped: they ended after the exporter stopped.
    pub stopped: IntCounter,
}

/// The span counters, created on first use and registered in every registry.
pub(crate) fn trace_spans() -> &'static TraceSpanMetrics {
    static METRICS: LazyLock<TraceSpanMetrics> = LazyLock::new(|| {
        let spans = IntCounterVec::new(
            Opts::new(
                "infergate_trace_spans_total",
                "Spans of sampled requests: exported, or dropped (outcome queue_full, export_failed, stopped).",
            ),
            &["outcome"],
        )
        .expect("constant options");
        TraceSpanMetrics {
            exported: spans.with_label_values(&["exported"]),
            queue_full: spans.with_label_values(&["queue_full"]),
            export_failed: spans.with_label_values(&["export_failed"]),
            stopped: spans.with_label_values(&["stopped"]),
            spans,
        }
    });
    &METRICS
}

/// Handles of one model version, resolved once at load.
#[derive(Debug, Clone)]
pub struct VersionMetrics {
    model: String,
    version: String,
    requests: IntCounterVec,
    /// Answered requests and request durations, per [`Protocol`] (indexed by it), resolved once.
    ok: [IntCounter; 2],
    inferences: IntCounter,
    request_duration: [Histogram; 2],
    pub queue_duration: Histogram,
    pub compute_duration: Histogram,
    pub batch_size: Histogram,
    pub queue_depth: IntGauge,
    pub in_flight: IntGauge,
    pub latency: Arc<LatencyWindow>,
    pub predictions: Arc<PredictionMonitor>,
    pub drift: Arc<DriftMonitor>,
    pub statistics: Arc<Statistics>,
}

fn registered<M: prometheus::core::Collector + Clone + 'static>(registry: &Registry, metric: M) -> M {
    // Names are constants of this module and registered once per registry: a clash is a bug here.
    registry.register(Box::new(metric.clone())).expect("metric names are unique; this is a bug");
    metric
}

fn histogram(name: &str, help: &str, buckets: &[f64], labels: &[&str]) -> HistogramVec {
    HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets.to_vec()), labels)
        .expect("histogram options are constants; this is a bug")
}

impl Telemetry {
    /// A fresh registry; `window` is the span of the p50/p90/p99 latency gauges.
    pub fn new(window: Duration) -> Telemetry {
        let registry = Registry::new();
        // The standard process_* families (CPU, resident memory, open and max fds, threads, start time) that stock
        // dashboards and alerts read, from /proc/self at each scrape.
        registry
            .register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))
            .expect("the process collector is registered once; this is a bug");
        registered(&registry, trace_spans().spans.clone());
        let payload = payload::metrics();
        registered(&registry, payload.records.clone());
        registered(&registry, payload.dropped.clone());
        registered(&registry, payload.files_deleted.clone());
        let mv = &["model", "version"];
        let counter = |name: &str, help: &str, labels: &[&str]| {
            registered(&registry, IntCounterVec::new(Opts::new(name, help), labels).expect("constant options"))
        };
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            registered(&registry, IntGaugeVec::new(Opts::new(name, help), labels).expect("constant options"))
        };
        let float_gauge = |name: &str, help: &str, labels: &[&str]| {
            registered(&registry, GaugeVec::new(Opts::new(name, help), labels).expect("constant options"))
        };
        Telemetry {
            requests: counter(
                "infergate_requests_total",
                "Inference requests answered, by protocol and error type (\"none\" when answered).",
                &["model", "version", "protocol", "error_type"],
            ),
            inferences: counter("infergate_inferences_total", "Rows inferred (a request of N rows counts N).", mv),
            request_duration: registered(
                &registry,
                histogram(
                    "infergate_request_duration_seconds",
                    "Time from a request reaching its model version to its answer or error, queue and compute included.",
                    &DURATION_BUCKETS,
                    &["model", "version", "protocol"],
                ),
            ),
            queue_duration: registered(
                &registry,
                histogram(
                    "infergate_queue_duration_seconds",
                    "Time requests wait in the version's queue.",
                    &DURATION_BUCKETS,
                    mv,
                ),
            ),
            compute_duration: registered(
                &registry,
                histogram(
                    "infergate_compute_duration_seconds",
                    "Time of one backend run (one batch).",
                    &DURATION_BUCKETS,
                    mv,
                ),
            ),
            batch_size: registered(
                &registry,
                histogram("infergate_batch_size", "Rows per backend run.", &BATCH_SIZE_BUCKETS, mv),
            ),
            queue_depth: gauge("infergate_queue_depth", "Requests waiting in the version's queue.", mv),
            in_flight: gauge("infergate_in_flight_requests", "Requests queued or computing.", mv),
            version_state: gauge(
                "infergate_model_version_state",
                "1 for the state a model version is in (loading, ready, failed), 0 for the others.",
                &["model", "version", "state"],
            ),
            load_duration: float_gauge(
                "infergate_model_load_duration_seconds",
                "Time the version took to load and start.",
                mv,
            ),
            window_latency: float_gauge(
                "infergate_request_latency_window_seconds",
                "Request latency percentiles (50, 90, 99) over the recent sliding window (--metrics-window-seconds).",
                &["model", "version", "percentile"],
            ),
            predictions: counter(
                "infergate_predictions_total",
                "Predicted classes per output (a label output's value, or a score row's highest column).",
                &["model", "version", "output", "class"],
            ),
            prediction_drift: float_gauge(
                "infergate_prediction_drift_psi",
                "Population stability index of an output's live distribution (sliding window) against reference.json.",
                &["model", "version", "output"],
            ),
            feature_drift: float_gauge(
                "infergate_feature_drift_psi",
                "Population stability index of an input column's live distribution against reference.json.",
                &["model", "version", "input", "feature"],
            ),
            // Without labels they show nothing until MLflow is followed.
            mlflow_up: gauge(
                "infergate_mlflow_up",
                "1 when the MLflow tracking server answered the last look, else 0.",
                &[],
            ),
            mlflow_errors: counter(
                "infergate_mlflow_errors_total",
                "Looks at the MLflow Model Registry that failed (MLflow unreachable, a model it could not follow).",
                &[],
            ),
            mlflow_alias: gauge(
                "infergate_mlflow_alias_version",
                "The version each followed MLflow alias points at, as last resolved.",
                &["model", "alias"],
            ),
            traffic: TrafficMetrics {
                variant_requests: counter(
                    "infergate_variant_requests_total",
                    "Requests answered per traffic variant, by the version that answered and the outcome.",
                    &["model", "variant", "version", "outcome"],
                ),
                variant_duration: registered(
                    &registry,
                    histogram(
                        "infergate_variant_request_duration_seconds",
                        "Time from a request's arrival to its answer, per traffic variant.",
                        &DURATION_BUCKETS,
                        &["model", "variant"],
                    ),
                ),
                shadow_requests: counter(
                    "infergate_shadow_requests_total",
                    "Copies of requests for a shadow variant: answered (ok), failed (error type) or shed.",
                    &["model", "variant", "outcome"],
                ),
                shadow_duration: registered(
                    &registry,
                    histogram(
                        "infergate_shadow_request_duration_seconds",
                        "Time a shadow variant took to answer its copy of a request.",
                        &DURATION_BUCKETS,
                        &["model", "variant"],
                    ),
                ),
                weight: gauge(
                    "infergate_traffic_weight_percent",
                    "Share of a model's unpinned requests each variant receives.",
                    &["model", "variant"],
                ),
                rollout_decisions: counter(
                    "infergate_rollout_decisions_total",
                    "Rollout decisions: start, resume, advance, rollback, promote.",
                    &["model", "candidate", "decision"],
                ),
                rollout_percent: gauge(
                    "infergate_rollout_candidate_percent",
                    "The rollout candidate's current share of its and the baseline's traffic.",
                    &["model"],
                ),
            },
            feedback: feedback::FeedbackMetrics::register(&registry, window),
            on_demand: OnDemandMetrics::register(&registry),
            window,
            registry,
        }
    }

    /// Span of the sliding windows behind the latency percentiles and the drift gauges.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// Handles for one version, with recorders for the outputs whose predictions are watched and the drift
    /// trackers its reference asks for.
    pub fn version(&self, model: &str, version: u64, monitors: &[MonitorSpec], drift: DriftMonitor) -> VersionMetrics {
        let version = version.to_string();
        let mv = [model, version.as_str()];
        let score_histogram = |output: &str, buckets: &[f64]| self.score_histogram(model, &version, output, buckets);
        let predictions = PredictionMonitor::new(monitors, model, &version, &self.predictions, score_histogram);
        VersionMetrics {
            model: model.to_owned(),
            version: version.clone(),
            requests: self.requests.clone(),
            ok: Protocol::ALL.map(|p| self.requests.with_label_values(&[model, &version, p.as_str(), "none"])),
            inferences: self.inferences.with_label_values(&mv),
            request_duration: Protocol::ALL
                .map(|p| self.request_duration.with_label_values(&[model, &version, p.as_str()])),
            queue_duration: self.queue_duration.with_label_values(&mv),
            compute_duration: self.compute_duration.with_label_values(&mv),
            batch_size: self.batch_size.with_label_values(&mv),
            queue_depth: self.queue_depth.with_label_values(&mv),
            in_flight: self.in_flight.with_label_values(&mv),
            latency: Arc::new(LatencyWindow::new(self.window)),
            predictions: Arc::new(predictions),
            drift: Arc::new(drift),
            statistics: Arc::new(Statistics::default()),
        }
    }

    /// `infergate_prediction_value` of one output. Outputs differ in buckets, so each is its own histogram with
    /// its labels fixed, registered under the shared name.
    fn score_histogram(&self, model: &str, version: &str, output: &str, buckets: &[f64]) -> Histogram {
        let labels = [("model", model), ("version", version), ("output", output)]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let opts = HistogramOpts::new("infergate_prediction_value", "Scores a model output predicted, per row.")
            .const_labels(labels)
            .buckets(buckets.to_vec());
        let histogram = Histogram::with_opts(opts).expect("buckets are checked by the model config; this is a bug");
        if let Err(e) = self.registry.register(Box::new(histogram.clone())) {
            tracing::warn!(model, version, output, error = %e, "score histogram not exported");
        }
        histogram
    }

    /// Publishes a version's state: 1 for `state`, 0 for the others.
    pub fn set_version_state(&self, model: &str, version: u64, state: &str) {
        let version = version.to_string();
        for known in VERSION_STATES {
            self.version_state.with_label_values(&[model, &version, known]).set(i64::from(known == state));
        }
    }

    pub fn set_mlflow_up(&self, up: bool) {
        self.mlflow_up.with_label_values::<&str>(&[]).set(i64::from(up));
    }

    pub fn count_mlflow_error(&self) {
        self.mlflow_errors.with_label_values::<&str>(&[]).inc();
    }

    pub fn set_mlflow_alias(&self, model: &str, alias: &str, version: u64) {
        self.mlflow_alias.with_label_values(&[model, alias]).set(i64::try_from(version).unwrap_or(i64::MAX));
    }

    pub fn set_load_duration(&self, model: &str, version: u64, took: Duration) {
        self.load_duration.with_label_values(&[model, &version.to_string()]).set(took.as_secs_f64());
    }

    /// The Prometheus text exposition of every metric, after refreshing the gauges computed at scrape time.
    pub fn render(&self, versions: &[VersionMetrics]) -> Vec<u8> {
        for v in versions {
            let quantiles = v.latency.quantiles(&WINDOW_PERCENTILES.map(|(_, q)| q));
            for ((label, _), value) in WINDOW_PERCENTILES.iter().zip(quantiles) {
                let gauge: Gauge =
                    self.window_latency.with_label_values(&[v.model.as_str(), v.version.as_str(), label]);
                gauge.set(value.map_or(f64::NAN, |d| d.as_secs_f64()));
            }
        }
        for v in versions {
            for (name, feature, psi) in v.drift.readings() {
                let labels = [v.model.as_str(), v.version.as_str(), name];
                match feature {
                    None => self.prediction_drift.with_label_values(&labels).set(psi),
                    Some(c) => {
                        let c = c.to_string();
                        self.feature_drift.with_label_values(&[labels[0], labels[1], labels[2], c.as_str()]).set(psi)
                    }
                }
            }
        }
        self.feedback.refresh();
        let mut out = Vec::with_capacity(16 * 1024);
        // Encoding into a Vec fails only on a malformed family, which this module never builds.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}

impl VersionMetrics {
    /// A request answered: its rows and its latency.
    pub fn observe_ok(&self, protocol: Protocol, rows: usize, took: Duration) {
        self.ok[protocol as usize].inc();
        self.inferences.inc_by(rows as u64);
        self.request_duration[protocol as usize].observe(took.as_secs_f64());
        self.latency.record(took);
        self.statistics.record_success(rows, took);
    }

    /// A request refused or failed after it reached this version, `took` after it arrived.
    pub fn observe_error(&self, protocol: Protocol, error_type: &str, took: Duration) {
        self.statistics.fail.add(took);
        // The request histogram holds refused and failed requests too, so a p99 alert sees overload (429, 504).
        self.request_duration[protocol as usize].observe(took.as_secs_f64());
        let labels = [self.model.as_str(), self.version.as_str(), protocol.as_str(), error_type];
        self.requests.with_label_values(&labels).inc();
    }
}

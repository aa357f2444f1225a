//! On-demand loading and the memory budget: requests that found their version loaded or waited for it, loads,
//! evictions, cold-start waits, and what is loaded against the budget. Process-wide, without a model label: with
//! thousands of on-demand models a label per model would multiply the series; the repository index has the
//! per-model view (state, reason, last use).

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

use super::registered;

/// Seconds a request may wait for its version to load: from a small model's few milliseconds to the default
/// 30-second cold-start timeout.
const COLD_START_BUCKETS: [f64; 14] =
    [0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

#[derive(Debug, Clone)]
pub struct OnDemandMetrics {
    /// Requests that found their on-demand version loaded, and those that waited for its load.
    hits: IntCounter,
    misses: IntCounter,
    /// `outcome`: `loaded` or `failed`.
    loads: IntCounterVec,
    pub evictions: IntCounter,
    /// How long a request waited for its version to load (and for room under the budget).
    pub cold_start: Histogram,
    pub loaded_bytes: IntGauge,
    pub loaded_versions: IntGauge,
    pub max_loaded_bytes: IntGauge,
    pub max_loaded_versions: IntGauge,
}

impl OnDemandMetrics {
    pub(super) fn register(registry: &Registry) -> OnDemandMetrics {
        let counter = |name: &str, help: &str, labels: &[&str]| {
            registered(registry, IntCounterVec::new(Opts::new(name, help), labels).expect("constant options"))
        };
        let gauge = |name: &str, help: &str| registered(registry, IntGauge::new(name, help).expect("constant options"));
        let cold_start = HistogramOpts::new(
            "infergate_cold_start_seconds",
            "How long a request waited for its on-demand version to load, room under the budget included.",
        )
        .buckets(COLD_START_BUCKETS.to_vec());
        let requests = counter(
            "infergate_on_demand_requests_total",
            "Requests to on-demand versions: hit (loaded already) or miss (waited for a load).",
            &["result"],
        );
        OnDemandMetrics {
            hits: requests.with_label_values(&["hit"]),
            misses: requests.with_label_values(&["miss"]),
            loads: counter(
                "infergate_on_demand_loads_total",
                "Loads of on-demand versions, by outcome (loaded, failed).",
                &["outcome"],
            ),
            evictions: registered(
                registry,
                IntCounter::new(
                    "infergate_evictions_total",
                    "Idle on-demand versions evicted, least recently used first, to fit a load under the budget.",
                )
                .expect("constant options"),
            ),
            cold_start: registered(registry, Histogram::with_opts(cold_start).expect("constant options")),
            loaded_bytes: gauge(
                "infergate_loaded_bytes",
                "Bytes of the loaded versions (each as measured at its load), those still draining included.",
            ),
            loaded_versions: gauge(
                "infergate_loaded_versions",
                "Model versions loaded, those still draining included.",
            ),
            max_loaded_bytes: gauge("infergate_max_loaded_bytes", "--max-loaded-bytes; 0 when there is no limit."),
            max_loaded_versions: gauge(
                "infergate_max_loaded_models",
                "--max-loaded-models (model versions); 0 when there is no limit.",
            ),
        }
    }

    /// A request to an on-demand version found it loaded (`true`) or waited for it.
    pub fn request(&self, hit: bool) {
        if hit { &self.hits } else { &self.misses }.inc();
    }

    pub fn load(&self, loaded: bool) {
        self.loads.with_label_values(&[if loaded { "loaded" } else { "failed" }]).inc();
    }
}

//! The figures of a stretch of load, as a table line and as JSON.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::drive::Tally;

/// One stretch's figures. Latencies are of answered requests, in µs.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// The phase (or run label).
    pub label: String,
    pub model: String,
    pub protocol: &'static str,
    pub concurrency: usize,
    /// Open-loop arrival rate at the start and the end, req/s; absent for a closed loop.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Option<(f64, f64)>,
    pub seconds: f64,
    /// Every request sent.
    pub requests: u64,
    pub ok: u64,
    /// Refused for load (429 / RESOURCE_EXHAUSTED).
    pub shed: u64,
    /// Every request that was not answered: shed plus failed.
    pub errors: u64,
    pub errors_by_kind: BTreeMap<String, u64>,
    /// Answers per second.
    pub requests_per_second: f64,
    pub mean_us: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    /// Share of the answers per traffic variant.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub variants: BTreeMap<String, f64>,
}

impl Summary {
    pub fn new(
        label: &str,
        model: &str,
        protocol: &'static str,
        concurrency: usize,
        rate: Option<(f64, f64)>,
        tally: &Tally,
    ) -> Summary {
        let quantile = |q: f64| if tally.ok == 0 { 0 } else { tally.latency.value_at_quantile(q) };
        let failed: u64 = tally.failed.values().sum();
        let mut errors_by_kind = tally.failed.clone();
        if tally.shed > 0 {
            errors_by_kind.insert("shed".to_owned(), tally.shed);
        }
        let answered: u64 = tally.variants.values().sum();
        Summary {
            label: label.to_owned(),
            model: model.to_owned(),
            protocol,
            concurrency,
            rate,
            seconds: tally.seconds,
            requests: tally.requests(),
            ok: tally.ok,
            shed: tally.shed,
            errors: tally.shed + failed,
            errors_by_kind,
            requests_per_second: if tally.seconds > 0.0 { tally.ok as f64 / tally.seconds } else { 0.0 },
            mean_us: if tally.ok == 0 { 0.0 } else { tally.latency.mean() },
            p50_us: quantile(0.50),
            p90_us: quantile(0.90),
            p99_us: quantile(0.99),
            p999_us: quantile(0.999),
            max_us: if tally.ok == 0 { 0 } else { tally.latency.max() },
            variants: tally.variants.iter().map(|(v, &n)| (v.clone(), n as f64 / answered.max(1) as f64)).collect(),
        }
    }

    /// Failed (not shed) requests over all requests.
    pub fn error_rate(&self) -> f64 {
        (self.errors - self.shed) as f64 / self.requests.max(1) as f64
    }

    pub fn shed_rate(&self) -> f64 {
        self.shed as f64 / self.requests.max(1) as f64
    }

    /// One line of the summary table.
    pub fn line(&self) -> String {
        let load = match self.rate {
            Some((a, b)) if (a - b).abs() < f64::EPSILON => format!("open {a:.0}/s"),
            Some((a, b)) => format!("open {a:.0}→{b:.0}/s"),
            None => format!("c={}", self.concurrency),
        };
        let errors = if self.errors_by_kind.is_empty() {
            "0".to_owned()
        } else {
            self.errors_by_kind.iter().map(|(k, n)| format!("{k}: {n}")).collect::<Vec<_>>().join(", ")
        };
        format!(
            "{:<22} {:<11} {:<16} {:>9.0} req/s  p50 {:>7} µs  p90 {:>7} µs  p99 {:>7} µs  p99.9 {:>7} µs  max {:>8} µs  errors {}",
            self.label,
            self.protocol,
            load,
            self.requests_per_second,
            self.p50_us,
            self.p90_us,
            self.p99_us,
            self.p999_us,
            self.max_us,
            errors
        )
    }
}

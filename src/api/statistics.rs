//! The statistics endpoint (Triton's statistics extension), with the sliding-window latency percentiles added to
//! each version's entry.

use serde::Serialize;

use super::ApiError;
use crate::lifecycle::{Listed, LookupError, ModelTable, ServingVersion, VersionState};
use crate::telemetry::{BatchTotals, DurationTotal, LatencyWindow, Statistics, WINDOW_PERCENTILES};

#[derive(Debug, Serialize)]
pub struct StatisticsView {
    pub model_stats: Vec<ModelStatistics>,
}

#[derive(Debug, Serialize)]
pub struct ModelStatistics {
    pub name: String,
    pub version: String,
    pub last_inference: u64,
    pub inference_count: u64,
    pub execution_count: u64,
    pub inference_stats: InferenceStatistics,
    pub batch_stats: Vec<BatchTotals>,
    /// Request latency percentiles over the sliding window, in microseconds; absent without recent traffic.
    pub latency_window_us: LatencyPercentiles,
}

#[derive(Debug, Serialize)]
pub struct InferenceStatistics {
    pub success: DurationTotal,
    pub fail: DurationTotal,
    pub queue: DurationTotal,
    pub compute_input: DurationTotal,
    pub compute_infer: DurationTotal,
    pub compute_output: DurationTotal,
    pub cache_hit: DurationTotal,
}

#[derive(Debug, Serialize)]
pub struct LatencyPercentiles {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p50: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p90: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p99: Option<u64>,
}

/// Statistics of every version (no model), of every version of a model, or of one version: the versions serving,
/// and the on-demand versions evicted, whose counts go on when they load again (their latency window is empty).
pub fn statistics(table: &ModelTable, model: Option<&str>, version: Option<&str>) -> Result<StatisticsView, ApiError> {
    let mut rows = match (model, version) {
        (Some(model), Some(_)) => match table.resolve(model, version) {
            Ok(serving) => vec![(model.to_owned(), serving.version, serving_statistics(&serving))],
            Err(LookupError::NotLoaded { version, .. }) => {
                evicted(table, Some(model)).into_iter().filter(|row| row.1 == version).collect()
            }
            Err(e) => return Err(e.into()),
        },
        (Some(model), None) => {
            table.entry(model)?;
            let serving = table.serving_versions().into_iter().filter(|v| v.name == model);
            serving
                .map(|v| (v.name.clone(), v.version, serving_statistics(&v)))
                .chain(evicted(table, Some(model)))
                .collect()
        }
        (None, _) => {
            let serving = table.serving_versions().into_iter();
            serving.map(|v| (v.name.clone(), v.version, serving_statistics(&v))).chain(evicted(table, None)).collect()
        }
    };
    rows.sort_by(|a: &(String, u64, ModelStatistics), b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    Ok(StatisticsView { model_stats: rows.into_iter().map(|(_, _, row)| row).collect() })
}

/// (model, version, statistics) of every evicted version of `model` (of every model without one).
fn evicted(table: &ModelTable, model: Option<&str>) -> Vec<(String, u64, ModelStatistics)> {
    let names = model.map_or_else(|| table.model_names(), |model| vec![model.to_owned()]);
    let mut rows = Vec::new();
    for entry in names.iter().filter_map(|name| table.entry(name).ok()) {
        for (&version, state) in &entry.versions.load().versions {
            if let VersionState::Listed(Listed { evicted: Some(evicted), .. }) = state {
                let row = version_statistics(&entry.name, version, &evicted.statistics, None);
                rows.push((entry.name.clone(), version, row));
            }
        }
    }
    rows
}

fn serving_statistics(serving: &ServingVersion) -> ModelStatistics {
    version_statistics(&serving.name, serving.version, &serving.metrics.statistics, Some(&serving.metrics.latency))
}

fn version_statistics(
    name: &str,
    version: u64,
    stats: &Statistics,
    latency: Option<&LatencyWindow>,
) -> ModelStatistics {
    let quantiles = latency.map(|latency| latency.quantiles(&WINDOW_PERCENTILES.map(|(_, q)| q)));
    let [p50, p90, p99] = quantiles.unwrap_or_default().map(|d| d.map(|d| d.as_micros() as u64));
    ModelStatistics {
        name: name.to_owned(),
        version: version.to_string(),
        last_inference: stats.last_inference_ms(),
        inference_count: stats.inference_count(),
        execution_count: stats.execution_count(),
        inference_stats: InferenceStatistics {
            success: stats.success.total(),
            fail: stats.fail.total(),
            queue: stats.queue.total(),
            compute_input: stats.compute_input.total(),
            compute_infer: stats.compute_infer.total(),
            compute_output: stats.compute_output.total(),
            // infergate keeps no response cache.
            cache_hit: DurationTotal::default(),
        },
        batch_stats: stats.batches(),
        latency_window_us: LatencyPercentiles { p50, p90, p99 },
    }
}

//! The statistics endpoint (Triton's statistics extension), with the sliding-window latency percentiles added to
//! each version's entry.

use serde::Serialize;

use super::ApiError;
use crate::lifecycle::{ModelTable, ServingVersion};
use crate::telemetry::{BatchTotals, DurationTotal, WINDOW_PERCENTILES};

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

/// Statistics of every serving version (no model), of every serving version of a model, or of one version.
pub fn statistics(table: &ModelTable, model: Option<&str>, version: Option<&str>) -> Result<StatisticsView, ApiError> {
    let mut versions = match (model, version) {
        (Some(model), Some(_)) => vec![table.resolve(model, version)?],
        (Some(model), None) => {
            table.entry(model)?;
            table.serving_versions().into_iter().filter(|v| v.name == model).collect()
        }
        (None, _) => table.serving_versions(),
    };
    versions.sort_by(|a, b| (&a.name, a.version).cmp(&(&b.name, b.version)));
    Ok(StatisticsView { model_stats: versions.iter().map(|v| version_statistics(v)).collect() })
}

fn version_statistics(serving: &ServingVersion) -> ModelStatistics {
    let stats = &serving.metrics.statistics;
    let [p50, p90, p99] =
        serving.metrics.latency.quantiles(&WINDOW_PERCENTILES.map(|(_, q)| q)).map(|d| d.map(|d| d.as_micros() as u64));
    ModelStatistics {
        name: serving.name.clone(),
        version: serving.version.to_string(),
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

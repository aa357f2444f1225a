//! Exact per-version counters behind the statistics endpoint (Triton's statistics extension): counts and
//! cumulative nanoseconds of successes, failures, queueing and each phase of compute, per batch size too.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// A count and a total duration.
#[derive(Debug, Default)]
pub struct DurationStat {
    count: AtomicU64,
    ns: AtomicU64,
}

/// A snapshot of a [`DurationStat`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DurationTotal {
    pub count: u64,
    pub ns: u64,
}

fn nanos(took: Duration) -> u64 {
    u64::try_from(took.as_nanos()).unwrap_or(u64::MAX)
}

impl DurationStat {
    pub fn add(&self, took: Duration) {
        self.add_many(1, took);
    }

    /// `count` occurrences, each lasting `took`.
    pub fn add_many(&self, count: u64, took: Duration) {
        self.count.fetch_add(count, Ordering::Relaxed);
        self.ns.fetch_add(nanos(took).saturating_mul(count), Ordering::Relaxed);
    }

    pub fn total(&self) -> DurationTotal {
        DurationTotal { count: self.count.load(Ordering::Relaxed), ns: self.ns.load(Ordering::Relaxed) }
    }
}

/// The three phases of one backend run: stacking the inputs, running the model, splitting the outputs.
#[derive(Debug, Clone, Copy, Default)]
pub struct ComputeTimes {
    pub input: Duration,
    pub infer: Duration,
    pub output: Duration,
}

/// Per-batch-size totals of the compute phases.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BatchTotals {
    pub batch_size: u64,
    pub compute_input: DurationTotal,
    pub compute_infer: DurationTotal,
    pub compute_output: DurationTotal,
}

#[derive(Debug, Default)]
pub struct Statistics {
    pub success: DurationStat,
    pub fail: DurationStat,
    pub queue: DurationStat,
    pub compute_input: DurationStat,
    pub compute_infer: DurationStat,
    pub compute_output: DurationStat,
    inference_count: AtomicU64,
    execution_count: AtomicU64,
    last_inference_ms: AtomicU64,
    /// Batch sizes seen; one entry per distinct size, so bounded by max_batch_size. Locked once per backend run.
    batches: Mutex<BTreeMap<u64, BatchTotals>>,
}

impl Statistics {
    /// A request answered: its rows and its duration.
    pub fn record_success(&self, rows: usize, took: Duration) {
        self.success.add(took);
        self.inference_count.fetch_add(rows as u64, Ordering::Relaxed);
        let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        self.last_inference_ms.fetch_max(now_ms, Ordering::Relaxed);
    }

    /// One backend run of `requests` requests holding `rows` rows. As in Triton, every request of the batch is
    /// charged the batch's compute time in the per-request totals; the per-batch-size totals count runs.
    pub fn record_execution(&self, requests: usize, rows: usize, times: ComputeTimes) {
        self.execution_count.fetch_add(1, Ordering::Relaxed);
        let requests = requests as u64;
        self.compute_input.add_many(requests, times.input);
        self.compute_infer.add_many(requests, times.infer);
        self.compute_output.add_many(requests, times.output);
        let mut batches = self.batches.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let entry = batches.entry(rows as u64).or_insert(BatchTotals { batch_size: rows as u64, ..Default::default() });
        let add = |total: &mut DurationTotal, took: Duration| {
            total.count += 1;
            total.ns = total.ns.saturating_add(nanos(took));
        };
        add(&mut entry.compute_input, times.input);
        add(&mut entry.compute_infer, times.infer);
        add(&mut entry.compute_output, times.output);
    }

    pub fn inference_count(&self) -> u64 {
        self.inference_count.load(Ordering::Relaxed)
    }

    pub fn execution_count(&self) -> u64 {
        self.execution_count.load(Ordering::Relaxed)
    }

    pub fn last_inference_ms(&self) -> u64 {
        self.last_inference_ms.load(Ordering::Relaxed)
    }

    pub fn batches(&self) -> Vec<BatchTotals> {
        self.batches.lock().unwrap_or_else(std::sync::PoisonError::into_inner).values().copied().collect()
    }
}

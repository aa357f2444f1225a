//! The one latency histogram of the server: log-scale buckets 5 % apart from 1 µs to ~10 minutes. The sliding
//! window behind the p50/p90/p99 gauges and a traffic variant's window (read by the rollout) both count in it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Bucket `i` holds latencies up to `MIN_US * GROWTH^i` microseconds.
const GROWTH: f64 = 1.05;
const MIN_US: f64 = 1.0;
pub const LATENCY_BUCKETS: usize = 420;

/// The bucket a latency is counted in.
pub fn latency_bucket(latency: Duration) -> usize {
    let us = latency.as_secs_f64() * 1e6;
    if us <= MIN_US {
        return 0;
    }
    ((us / MIN_US).ln() / GROWTH.ln()).ceil().min((LATENCY_BUCKETS - 1) as f64) as usize
}

/// The largest latency bucket `bucket` holds.
pub fn bucket_upper_bound(bucket: usize) -> Duration {
    Duration::from_secs_f64(MIN_US * GROWTH.powi(bucket as i32) / 1e6)
}

/// The `q` quantile (0..=1) of bucket counts, as the bucket's upper bound; `None` when nothing was counted.
pub fn quantile(counts: &[u64], q: f64) -> Option<Duration> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
    let mut seen = 0;
    counts
        .iter()
        .position(|&c| {
            seen += c;
            seen >= rank
        })
        .map(bucket_upper_bound)
}

/// Latencies counted since it was made, without a lock: what a traffic variant answered since its policy was set.
#[derive(Debug)]
pub struct LatencyHistogram {
    counts: Box<[AtomicU64]>,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram { counts: (0..LATENCY_BUCKETS).map(|_| AtomicU64::new(0)).collect() }
    }
}

impl LatencyHistogram {
    pub fn record(&self, latency: Duration) {
        self.counts[latency_bucket(latency)].fetch_add(1, Ordering::Relaxed);
    }

    /// The `q` quantile of what was recorded; `None` when nothing was.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let counts: Vec<u64> = self.counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        quantile(&counts, q)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_five_percent_wide() {
        for us in [1.5f64, 10.0, 180.0, 2_500.0, 1e6] {
            let latency = Duration::from_secs_f64(us / 1e6);
            let upper = bucket_upper_bound(latency_bucket(latency)).as_secs_f64() * 1e6;
            assert!(upper >= us * 0.999_999 && upper <= us * 1.05 + 1e-9, "{us} µs -> {upper}");
        }
        assert_eq!(latency_bucket(Duration::ZERO), 0);
        assert_eq!(latency_bucket(Duration::from_secs(100_000)), LATENCY_BUCKETS - 1);
    }

    #[test]
    fn quantiles_of_a_histogram() {
        let histogram = LatencyHistogram::default();
        assert_eq!(histogram.quantile(0.99), None);
        for us in 1..=1000u64 {
            histogram.record(Duration::from_micros(us));
        }
        let p99 = histogram.quantile(0.99).unwrap().as_secs_f64() * 1e6;
        assert!((990.0..=1040.0).contains(&p99), "{p99}");
        // A p99 ratio of 1.1 between two windows is visible: the buckets are finer than that.
        let slower = LatencyHistogram::default();
        for us in 1..=1000u64 {
            slower.record(Duration::from_micros(us * 11 / 10));
        }
        let ratio = slower.quantile(0.99).unwrap().as_secs_f64() / histogram.quantile(0.99).unwrap().as_secs_f64();
        assert!((1.05..1.16).contains(&ratio), "{ratio}");
    }
}

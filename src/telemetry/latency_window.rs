//! Latency quantiles over a sliding window, without PromQL: a log-scale histogram per second of the window.

use std::time::{Duration, Instant};

use super::count_window::CountWindow;

/// Bucket `i` holds latencies up to `MIN_US * GROWTH^i` microseconds: 5% resolution from 1 µs to ~10 minutes.
const GROWTH: f64 = 1.05;
const MIN_US: f64 = 1.0;
const BUCKETS: usize = 420;

/// Request latencies of the last `window`, as a log-scale histogram per second.
#[derive(Debug)]
pub struct LatencyWindow {
    counts: CountWindow,
}

fn bucket_of(latency: Duration) -> usize {
    let us = latency.as_secs_f64() * 1e6;
    if us <= MIN_US {
        return 0;
    }
    ((us / MIN_US).ln() / GROWTH.ln()).ceil().min((BUCKETS - 1) as f64) as usize
}

fn upper_bound(bucket: usize) -> Duration {
    Duration::from_secs_f64(MIN_US * GROWTH.powi(bucket as i32) / 1e6)
}

impl LatencyWindow {
    pub fn new(window: Duration) -> LatencyWindow {
        LatencyWindow { counts: CountWindow::new(window, BUCKETS) }
    }

    pub fn record(&self, latency: Duration) {
        self.counts.add(bucket_of(latency), Instant::now());
    }

    /// The given quantiles (0..=1) of the latencies recorded in the window, as bucket upper bounds; `None` when
    /// nothing was recorded.
    pub fn quantiles<const N: usize>(&self, qs: &[f64; N]) -> [Option<Duration>; N] {
        self.quantiles_at(qs, Instant::now())
    }

    fn quantiles_at<const N: usize>(&self, qs: &[f64; N], now: Instant) -> [Option<Duration>; N] {
        let merged = self.counts.totals(now);
        let total: u64 = merged.iter().sum();
        qs.map(|q| {
            if total == 0 {
                return None;
            }
            let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
            let mut seen = 0;
            merged
                .iter()
                .position(|&c| {
                    seen += c;
                    seen >= rank
                })
                .map(upper_bound)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_within_bucket_resolution() {
        let w = LatencyWindow::new(Duration::from_secs(60));
        let now = w.counts.start();
        for us in 1..=1000u64 {
            w.counts.add(bucket_of(Duration::from_micros(us)), now);
        }
        let [p50, p99] = w.quantiles_at(&[0.5, 0.99], now);
        let (p50, p99) = (p50.unwrap().as_secs_f64() * 1e6, p99.unwrap().as_secs_f64() * 1e6);
        assert!((500.0..=525.0).contains(&p50), "{p50}");
        assert!((990.0..=1040.0).contains(&p99), "{p99}");
    }

    #[test]
    fn old_seconds_leave_the_window() {
        let w = LatencyWindow::new(Duration::from_secs(10));
        let t0 = w.counts.start();
        w.counts.add(bucket_of(Duration::from_millis(100)), t0);
        w.counts.add(bucket_of(Duration::from_micros(10)), t0 + Duration::from_secs(5));
        let [max] = w.quantiles_at(&[1.0], t0 + Duration::from_secs(9));
        assert!(max.unwrap() >= Duration::from_millis(100));
        // Ten seconds on, the slow one has left the window; the fast one is still in it.
        let [max] = w.quantiles_at(&[1.0], t0 + Duration::from_secs(10));
        assert!(max.unwrap() < Duration::from_micros(11), "{max:?}");
        // A new second reuses the slot of the oldest and forgets it.
        w.counts.add(bucket_of(Duration::from_micros(50)), t0 + Duration::from_secs(20));
        let [max] = w.quantiles_at(&[1.0], t0 + Duration::from_secs(20));
        assert!(max.unwrap() < Duration::from_micros(53), "{max:?}");
        assert_eq!(LatencyWindow::new(Duration::from_secs(5)).quantiles(&[0.5]), [None]);
    }
}

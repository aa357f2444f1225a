//! Latency quantiles over a sliding window, without PromQL: the latency histogram (`super::latency`) per second
//! of the window.

use std::time::{Duration, Instant};

use super::count_window::CountWindow;
use super::latency::{LATENCY_BUCKETS, latency_bucket, quantile};

/// Request latencies of the last `window`, as a log-scale histogram per second.
#[derive(Debug)]
pub struct LatencyWindow {
    counts: CountWindow,
}

impl LatencyWindow {
    pub fn new(window: Duration) -> LatencyWindow {
        LatencyWindow { counts: CountWindow::new(window, LATENCY_BUCKETS) }
    }

    pub fn record(&self, latency: Duration) {
        self.counts.add(latency_bucket(latency), Instant::now());
    }

    /// The given quantiles (0..=1) of the latencies recorded in the window, as bucket upper bounds; `None` when
    /// nothing was recorded.
    pub fn quantiles<const N: usize>(&self, qs: &[f64; N]) -> [Option<Duration>; N] {
        self.quantiles_at(qs, Instant::now())
    }

    fn quantiles_at<const N: usize>(&self, qs: &[f64; N], now: Instant) -> [Option<Duration>; N] {
        let merged = self.counts.totals(now);
        qs.map(|q| quantile(&merged, q))
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
            w.counts.add(latency_bucket(Duration::from_micros(us)), now);
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
        w.counts.add(latency_bucket(Duration::from_millis(100)), t0);
        w.counts.add(latency_bucket(Duration::from_micros(10)), t0 + Duration::from_secs(5));
        let [max] = w.quantiles_at(&[1.0], t0 + Duration::from_secs(9));
        assert!(max.unwrap() >= Duration::from_millis(100));
        // Ten seconds on, the slow one has left the window; the fast one is still in it.
        let [max] = w.quantiles_at(&[1.0], t0 + Duration::from_secs(10));
        assert!(max.unwrap() < Duration::from_micros(11), "{max:?}");
        // A new second reuses the slot of the oldest and forgets it.
        w.counts.add(latency_bucket(Duration::from_micros(50)), t0 + Duration::from_secs(20));
        let [max] = w.quantiles_at(&[1.0], t0 + Duration::from_secs(20));
        assert!(max.unwrap() < Duration::from_micros(53), "{max:?}");
        assert_eq!(LatencyWindow::new(Duration::from_secs(5)).quantiles(&[0.5]), [None]);
    }
}

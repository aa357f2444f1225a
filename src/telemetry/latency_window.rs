//! Latency quantiles over a sliding window, without PromQL: one small log-scale histogram per second of the
//! window, recorded with atomics (no lock, no allocation per request) and merged when read.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Bucket `i` holds latencies up to `MIN_US * GROWTH^i` microseconds: 5% resolution from 1 µs to ~10 minutes.
const GROWTH: f64 = 1.05;
const MIN_US: f64 = 1.0;
const BUCKETS: usize = 420;

struct Slot {
    /// The second (since the window's start) the counts belong to.
    second: AtomicU64,
    counts: Box<[AtomicU32]>,
}

/// Request latencies of the last `window`, bucketed per second.
pub struct LatencyWindow {
    start: Instant,
    slots: Box<[Slot]>,
}

impl std::fmt::Debug for LatencyWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LatencyWindow").field("seconds", &self.slots.len()).finish_non_exhaustive()
    }
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
        let seconds = window.as_secs().max(1) as usize;
        let slots = (0..seconds)
            .map(|_| Slot {
                second: AtomicU64::new(u64::MAX),
                counts: (0..BUCKETS).map(|_| AtomicU32::new(0)).collect(),
            })
            .collect();
        LatencyWindow { start: Instant::now(), slots }
    }

    pub fn record(&self, latency: Duration) {
        self.record_at(latency, Instant::now());
    }

    fn record_at(&self, latency: Duration, now: Instant) {
        let second = now.saturating_duration_since(self.start).as_secs();
        let slot = &self.slots[second as usize % self.slots.len()];
        let seen = slot.second.load(Ordering::Acquire);
        if seen != second && slot.second.compare_exchange(seen, second, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            // This thread moved the slot to a new second: clear what the old one counted. A record racing with
            // the clear may be lost; the window is an estimate for dashboards, not an account.
            for count in slot.counts.iter() {
                count.store(0, Ordering::Relaxed);
            }
        }
        slot.counts[bucket_of(latency)].fetch_add(1, Ordering::Relaxed);
    }

    /// The given quantiles (0..=1) of the latencies recorded in the window, as bucket upper bounds; `None` when
    /// nothing was recorded.
    pub fn quantiles<const N: usize>(&self, qs: &[f64; N]) -> [Option<Duration>; N] {
        self.quantiles_at(qs, Instant::now())
    }

    fn quantiles_at<const N: usize>(&self, qs: &[f64; N], now: Instant) -> [Option<Duration>; N] {
        let current = now.saturating_duration_since(self.start).as_secs();
        let oldest = current.saturating_sub(self.slots.len() as u64 - 1);
        let mut merged = vec![0u64; BUCKETS];
        for slot in self.slots.iter() {
            let second = slot.second.load(Ordering::Acquire);
            if second != u64::MAX && second >= oldest && second <= current {
                for (total, count) in merged.iter_mut().zip(slot.counts.iter()) {
                    *total += u64::from(count.load(Ordering::Relaxed));
                }
            }
        }
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
        let now = w.start;
        for us in 1..=1000u64 {
            w.record_at(Duration::from_micros(us), now);
        }
        let [p50, p99] = w.quantiles_at(&[0.5, 0.99], now);
        let (p50, p99) = (p50.unwrap().as_secs_f64() * 1e6, p99.unwrap().as_secs_f64() * 1e6);
        assert!((500.0..=525.0).contains(&p50), "{p50}");
        assert!((990.0..=1040.0).contains(&p99), "{p99}");
    }

    #[test]
    fn old_seconds_leave_the_window() {
        let w = LatencyWindow::new(Duration::from_secs(10));
        let t0 = w.start;
        w.record_at(Duration::from_millis(100), t0);
        w.record_at(Duration::from_micros(10), t0 + Duration::from_secs(5));
        let [max] = w.quantiles_at(&[1.0], t0 + Duration::from_secs(9));
        assert!(max.unwrap() >= Duration::from_millis(100));
        // Ten seconds on, the slow one has left the window; the fast one is still in it.
        let [max] = w.quantiles_at(&[1.0], t0 + Duration::from_secs(10));
        assert!(max.unwrap() < Duration::from_micros(11), "{max:?}");
        // A new second reuses the slot of the oldest and forgets it.
        w.record_at(Duration::from_micros(50), t0 + Duration::from_secs(20));
        let [max] = w.quantiles_at(&[1.0], t0 + Duration::from_secs(20));
        assert!(max.unwrap() < Duration::from_micros(53), "{max:?}");
        assert_eq!(LatencyWindow::new(Duration::from_secs(5)).quantiles(&[0.5]), [None]);
    }
}

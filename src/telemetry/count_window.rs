//! Counts per bin over a sliding window of seconds: one row of atomic counters per second, recorded without
//! locks or allocation and merged when read. The latency percentiles and the drift gauges both read from one.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

struct Slot {
    /// The second (since the window's start) the counts belong to; `u64::MAX` before first use.
    second: AtomicU64,
    counts: Box<[AtomicU32]>,
}

/// Counts of `bins` bins over the last `window`, kept per second.
pub struct CountWindow {
    start: Instant,
    slots: Box<[Slot]>,
}

impl std::fmt::Debug for CountWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CountWindow").field("seconds", &self.slots.len()).finish_non_exhaustive()
    }
}

impl CountWindow {
    pub fn new(window: Duration, bins: usize) -> CountWindow {
        let seconds = window.as_secs().max(1) as usize;
        let slots = (0..seconds)
            .map(|_| Slot {
                second: AtomicU64::new(u64::MAX),
                counts: (0..bins.max(1)).map(|_| AtomicU32::new(0)).collect(),
            })
            .collect();
        CountWindow { start: Instant::now(), slots }
    }

    #[cfg(test)]
    pub fn start(&self) -> Instant {
        self.start
    }

    /// Adds one to `bin` (clamped to the last bin) in the slot of `now`.
    pub fn add(&self, bin: usize, now: Instant) {
        let second = now.saturating_duration_since(self.start).as_secs();
        let slot = &self.slots[second as usize % self.slots.len()];
        let seen = slot.second.load(Ordering::Acquire);
        if seen != second && slot.second.compare_exchange(seen, second, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            // This thread moved the slot to a new second: clear what the old one counted. A count racing with
            // the clear may be lost; the window is an estimate for dashboards and alerts, not an account.
            for count in slot.counts.iter() {
                count.store(0, Ordering::Relaxed);
            }
        }
        slot.counts[bin.min(slot.counts.len() - 1)].fetch_add(1, Ordering::Relaxed);
    }

    /// The counts of every bin over the seconds of the window that ends at `now`.
    pub fn totals(&self, now: Instant) -> Vec<u64> {
        let current = now.saturating_duration_since(self.start).as_secs();
        let oldest = current.saturating_sub(self.slots.len() as u64 - 1);
        let mut totals = vec![0u64; self.slots[0].counts.len()];
        for slot in self.slots.iter() {
            let second = slot.second.load(Ordering::Acquire);
            if second != u64::MAX && second >= oldest && second <= current {
                for (total, count) in totals.iter_mut().zip(slot.counts.iter()) {
                    *total += u64::from(count.load(Ordering::Relaxed));
                }
            }
        }
        totals
    }
}

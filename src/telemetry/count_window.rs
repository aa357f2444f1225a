//! Counts per bin over a sliding window of seconds: one row of atomic counters per second, recorded without
//! locks or allocation and merged when read. The latency percentiles and the drift gauges both read from one.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A slot not used yet.
const UNUSED: u64 = u64::MAX;
/// A slot being cleared for a new second.
const CLEARING: u64 = u64::MAX - 1;

struct Slot {
    /// The second (since the window's start) the counts belong to, or `UNUSED`, or `CLEARING`.
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
                second: AtomicU64::new(UNUSED),
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
        loop {
            let seen = slot.second.load(Ordering::Acquire);
            if seen == second {
                break;
            }
            if seen == CLEARING {
                std::hint::spin_loop();
                continue;
            }
            if seen != UNUSED && seen > second {
                // The slot already moved on to a later second: this count is older than the window's newest.
                return;
            }
            // Move the slot forward: mark it, clear the old second's counts, then publish the new second, so a
            // reader never takes the old counts for the new second.
            if slot.second.compare_exchange(seen, CLEARING, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                for count in slot.counts.iter() {
                    count.store(0, Ordering::Relaxed);
                }
                slot.second.store(second, Ordering::Release);
                break;
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
            if second != UNUSED && second != CLEARING && second >= oldest && second <= current {
                for (total, count) in totals.iter_mut().zip(slot.counts.iter()) {
                    *total += u64::from(count.load(Ordering::Relaxed));
                }
            }
        }
        totals
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_stay_in_their_second_and_late_counts_are_dropped() {
        let w = CountWindow::new(Duration::from_secs(2), 3);
        let t0 = w.start();
        w.add(0, t0);
        w.add(1, t0 + Duration::from_secs(1));
        assert_eq!(w.totals(t0 + Duration::from_secs(1)), [1, 1, 0]);
        // Second 2 reuses second 0's slot and forgets it.
        w.add(2, t0 + Duration::from_secs(2));
        assert_eq!(w.totals(t0 + Duration::from_secs(2)), [0, 1, 1]);
        // A count stamped with second 0, arriving late, does not wipe second 2.
        w.add(0, t0);
        assert_eq!(w.totals(t0 + Duration::from_secs(2)), [0, 1, 1]);
        // Bins past the last are clamped.
        w.add(9, t0 + Duration::from_secs(2));
        assert_eq!(w.totals(t0 + Duration::from_secs(2)), [0, 1, 2]);
    }
}

//! The batching decision, as a plain struct: which queued requests form the next batch, and when.
//!
//! No runtime, no threads, no clock of its own: callers pass `now`, so every boundary is unit-tested exactly.
//! The oldest live request is always in the next batch, so no request starves behind others.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How a version batches. `max_batch_size == 0` means the model has no batch dimension: one request per run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchPolicy {
    /// Most rows (dim 0) one backend run may hold.
    pub max_batch_size: usize,
    /// How long the oldest request may wait for company; zero dispatches whatever is queued at once.
    pub max_queue_delay: Duration,
    /// Batch sizes (rows) worth dispatching before the delay is over, ascending.
    pub preferred_batch_sizes: Vec<usize>,
    /// Most requests waiting; past it, new ones are refused.
    pub max_queue_size: usize,
}

/// What the queue needs to know of an entry.
pub trait Queued {
    /// Rows the entry adds to a batch.
    fn rows(&self) -> usize;
    /// Entries stack only with entries whose inputs have the same non-batch dimensions.
    fn stacks_with(&self, other: &Self) -> bool;
    fn enqueued(&self) -> Instant;
    fn deadline(&self) -> Option<Instant>;
    /// The caller has gone; computing its answer would be wasted.
    fn is_cancelled(&self) -> bool;
}

/// What an instance should do next.
#[derive(Debug)]
pub enum Next<E> {
    /// Run these entries as one batch, in this order.
    Batch(Vec<E>),
    /// Nothing to dispatch before this instant, unless new entries arrive.
    WaitUntil(Instant),
    /// The queue is empty.
    Idle,
}

#[derive(Debug)]
pub struct BatchQueue<E> {
    entries: VecDeque<E>,
    policy: BatchPolicy,
}

impl<E: Queued> BatchQueue<E> {
    pub fn new(policy: BatchPolicy) -> BatchQueue<E> {
        BatchQueue { entries: VecDeque::new(), policy }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Queues an entry, or hands it back when the queue is full.
    pub fn push(&mut self, entry: E) -> Result<(), E> {
        if self.entries.len() >= self.policy.max_queue_size {
            return Err(entry);
        }
        self.entries.push_back(entry);
        Ok(())
    }

    /// Removes entries whose caller has gone (dropped) and whose deadline has passed (returned, to be told so).
    pub fn remove_expired(&mut self, now: Instant) -> Vec<E> {
        let mut expired = Vec::new();
        let mut kept = VecDeque::with_capacity(self.entries.len());
        for entry in self.entries.drain(..) {
            if entry.is_cancelled() {
                continue;
            }
            if entry.deadline().is_some_and(|deadline| deadline <= now) {
                expired.push(entry);
            } else {
                kept.push_back(entry);
            }
        }
        self.entries = kept;
        expired
    }

    /// The next batch, if one should be dispatched at `now`. Call [`BatchQueue::remove_expired`] first.
    pub fn next(&mut self, now: Instant) -> Next<E> {
        let Some(head) = self.entries.front() else {
            return Next::Idle;
        };
        if self.policy.max_batch_size == 0 {
            return self.entries.pop_front().map_or(Next::Idle, |e| Next::Batch(vec![e]));
        }
        let max = self.policy.max_batch_size;
        let mut picked = Vec::new();
        let mut rows = 0;
        for (ix, entry) in self.entries.iter().enumerate() {
            if rows == max {
                break;
            }
            if (ix == 0 || entry.stacks_with(head)) && rows.saturating_add(entry.rows()) <= max {
                rows += entry.rows();
                picked.push(ix);
            }
        }
        let waited_enough = now >= head.enqueued() + self.policy.max_queue_delay;
        let preferred = self.policy.preferred_batch_sizes.contains(&rows)
            || self.policy.preferred_batch_sizes.last().is_some_and(|&largest| rows >= largest);
        if rows >= max || preferred || waited_enough {
            return Next::Batch(self.take(&picked));
        }
        Next::WaitUntil(head.enqueued() + self.policy.max_queue_delay)
    }

    /// Removes the entries at these (ascending) positions, keeping their order.
    fn take(&mut self, positions: &[usize]) -> Vec<E> {
        let mut batch = Vec::with_capacity(positions.len());
        let mut kept = VecDeque::with_capacity(self.entries.len() - positions.len());
        let mut wanted = positions.iter().peekable();
        for (ix, entry) in self.entries.drain(..).enumerate() {
            if wanted.peek() == Some(&&ix) {
                wanted.next();
                batch.push(entry);
            } else {
                kept.push_back(entry);
            }
        }
        self.entries = kept;
        batch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq)]
    struct Entry {
        id: u32,
        rows: usize,
        width: usize,
        enqueued: Instant,
        deadline: Option<Instant>,
        cancelled: bool,
    }

    impl Queued for Entry {
        fn rows(&self) -> usize {
            self.rows
        }
        fn stacks_with(&self, other: &Self) -> bool {
            self.width == other.width
        }
        fn enqueued(&self) -> Instant {
            self.enqueued
        }
        fn deadline(&self) -> Option<Instant> {
            self.deadline
        }
        fn is_cancelled(&self) -> bool {
            self.cancelled
        }
    }

    fn policy(max: usize, delay_us: u64, preferred: &[usize]) -> BatchPolicy {
        BatchPolicy {
            max_batch_size: max,
            max_queue_delay: Duration::from_micros(delay_us),
            preferred_batch_sizes: preferred.to_vec(),
            max_queue_size: 100,
        }
    }

    fn entry(id: u32, rows: usize, at: Instant) -> Entry {
        Entry { id, rows, width: 4, enqueued: at, deadline: None, cancelled: false }
    }

    fn ids(next: Next<Entry>) -> Vec<u32> {
        match next {
            Next::Batch(batch) => batch.into_iter().map(|e| e.id).collect(),
            other => panic!("expected a batch, got {other:?}"),
        }
    }

    #[test]
    fn eager_takes_whatever_is_queued() {
        let t0 = Instant::now();
        let mut q = BatchQueue::new(policy(8, 0, &[]));
        assert!(matches!(q.next(t0), Next::Idle));
        q.push(entry(1, 1, t0)).unwrap();
        assert_eq!(ids(q.next(t0)), [1]);
        for id in 2..=4 {
            q.push(entry(id, 2, t0)).unwrap();
        }
        assert_eq!(ids(q.next(t0)), [2, 3, 4]);
        assert!(q.is_empty());
    }

    #[test]
    fn batches_never_exceed_the_maximum_and_skip_what_does_not_fit() {
        let t0 = Instant::now();
        let mut q = BatchQueue::new(policy(8, 0, &[]));
        for (id, rows) in [(1, 5), (2, 4), (3, 3), (4, 1)] {
            q.push(entry(id, rows, t0)).unwrap();
        }
        // 5 + 3 = 8: entry 2 does not fit beside entry 1, entry 3 does, then the batch is full.
        assert_eq!(ids(q.next(t0)), [1, 3]);
        assert_eq!(ids(q.next(t0)), [2, 4]);
    }

    #[test]
    fn delay_boundaries() {
        let t0 = Instant::now();
        let mut q = BatchQueue::new(policy(8, 1000, &[]));
        q.push(entry(1, 1, t0)).unwrap();
        q.push(entry(2, 1, t0 + Duration::from_micros(500))).unwrap();
        match q.next(t0 + Duration::from_micros(999)) {
            Next::WaitUntil(at) => assert_eq!(at, t0 + Duration::from_micros(1000)),
            other => panic!("{other:?}"),
        }
        // Exactly at the delay, never later.
        assert_eq!(ids(q.next(t0 + Duration::from_micros(1000))), [1, 2]);
    }

    #[test]
    fn a_full_batch_goes_before_the_delay() {
        let t0 = Instant::now();
        let mut q = BatchQueue::new(policy(4, 1_000_000, &[]));
        q.push(entry(1, 3, t0)).unwrap();
        assert!(matches!(q.next(t0), Next::WaitUntil(_)));
        q.push(entry(2, 1, t0)).unwrap();
        assert_eq!(ids(q.next(t0)), [1, 2]);
    }

    #[test]
    fn preferred_sizes_go_before_the_delay() {
        let t0 = Instant::now();
        let mut q = BatchQueue::new(policy(16, 1_000_000, &[4, 8]));
        q.push(entry(1, 3, t0)).unwrap();
        assert!(matches!(q.next(t0), Next::WaitUntil(_)));
        q.push(entry(2, 1, t0)).unwrap();
        assert_eq!(ids(q.next(t0)), [1, 2]);
        q.push(entry(3, 5, t0)).unwrap();
        assert!(matches!(q.next(t0), Next::WaitUntil(_)), "5 rows is not a preferred size");
        q.push(entry(4, 4, t0)).unwrap();
        assert_eq!(ids(q.next(t0)), [3, 4], "9 rows is past the largest preferred size");
    }

    #[test]
    fn mixed_shapes_go_to_separate_batches_in_order() {
        let t0 = Instant::now();
        let mut q = BatchQueue::new(policy(8, 0, &[]));
        q.push(entry(1, 1, t0)).unwrap();
        q.push(Entry { width: 7, ..entry(2, 1, t0) }).unwrap();
        q.push(entry(3, 1, t0)).unwrap();
        assert_eq!(ids(q.next(t0)), [1, 3]);
        assert_eq!(ids(q.next(t0)), [2]);
    }

    #[test]
    fn expired_and_cancelled_entries_are_never_batched() {
        let t0 = Instant::now();
        let mut q = BatchQueue::new(policy(8, 0, &[]));
        q.push(Entry { deadline: Some(t0 + Duration::from_millis(5)), ..entry(1, 1, t0) }).unwrap();
        q.push(Entry { cancelled: true, ..entry(2, 1, t0) }).unwrap();
        q.push(Entry { deadline: Some(t0 + Duration::from_millis(50)), ..entry(3, 1, t0) }).unwrap();
        let expired = q.remove_expired(t0 + Duration::from_millis(5));
        assert_eq!(expired.iter().map(|e| e.id).collect::<Vec<_>>(), [1]);
        assert_eq!(ids(q.next(t0)), [3]);
    }

    #[test]
    fn a_full_queue_refuses() {
        let t0 = Instant::now();
        let mut q = BatchQueue::new(BatchPolicy { max_queue_size: 2, ..policy(8, 0, &[]) });
        q.push(entry(1, 1, t0)).unwrap();
        q.push(entry(2, 1, t0)).unwrap();
        assert_eq!(q.push(entry(3, 1, t0)).unwrap_err().id, 3);
    }

    #[test]
    fn unbatched_models_run_one_request_at_a_time() {
        let t0 = Instant::now();
        let mut q = BatchQueue::new(policy(0, 1000, &[]));
        q.push(entry(1, 3, t0)).unwrap();
        q.push(entry(2, 3, t0)).unwrap();
        assert_eq!(ids(q.next(t0)), [1]);
        assert_eq!(ids(q.next(t0)), [2]);
    }

    #[test]
    fn no_request_starves() {
        // Small requests keep arriving; the big one at the head is still served in the next batch.
        let t0 = Instant::now();
        let mut q = BatchQueue::new(policy(8, 0, &[]));
        q.push(entry(1, 1, t0)).unwrap();
        q.push(entry(2, 8, t0)).unwrap();
        for id in 3..10 {
            q.push(entry(id, 1, t0)).unwrap();
        }
        assert_eq!(ids(q.next(t0)), [1, 3, 4, 5, 6, 7, 8, 9]);
        q.push(entry(10, 1, t0)).unwrap();
        assert_eq!(ids(q.next(t0)), [2]);
        assert_eq!(ids(q.next(t0)), [10]);
    }
}

//! Per-version dynamic batching: a bounded queue, and instance threads that each take the next batch when free.
//!
//! Inference never runs on tokio workers. The async side pushes a job and waits on a oneshot, with its deadline;
//! instance threads ask the [`BatchQueue`] what to run, stack the inputs along dimension 0, run the backend once
//! and hand every caller its own rows. A free instance takes whatever is queued, so light traffic pays no window
//! and batches grow by themselves under load.

pub mod batch_queue;

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use thiserror::Error;
use tokio::sync::oneshot;

pub use batch_queue::{BatchPolicy, BatchQueue, Next, Queued};

use crate::backend::{Backend, BackendError, Session};
use crate::telemetry::{ComputeTimes, VersionMetrics, trace};
use crate::tensor::{Tensor, concat_rows, split_rows};

/// How one version is scheduled.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    pub policy: BatchPolicy,
    /// Backend runs that may go at once, each on its own thread.
    pub instances: usize,
    /// Deadline of requests that set none.
    pub default_timeout: Option<Duration>,
    /// What each instance runs on its own session before the version takes traffic.
    pub warmup: Option<Warmup>,
}

/// Warm-up runs: `row` (one row of every input) stacked to each of `batch_sizes`, `runs` times each.
#[derive(Debug, Clone)]
pub struct Warmup {
    pub row: Vec<Tensor>,
    pub batch_sizes: Vec<usize>,
    pub runs: usize,
}

#[derive(Debug, Error)]
pub enum SchedulerError {
    #[error("the queue of this model version is full")]
    Overloaded,
    #[error("this model version is shutting down")]
    Stopped,
    #[error("the request's deadline passed before it could be computed")]
    DeadlineExceeded,
    #[error("the request holds {rows} rows but max_batch_size is {max}")]
    BatchTooLarge { rows: usize, max: usize },
    #[error("{0}")]
    InvalidBatch(String),
    #[error(transparent)]
    Backend(#[from] BackendError),
}

type Reply = Result<Vec<Tensor>, SchedulerError>;

/// Runs `f` when dropped: keeps a gauge right on every exit path, cancellation included.
fn scopeguard<F: FnOnce()>(f: F) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}

/// One queued request: its inputs, where its answer goes, when it arrived, its deadline, its request span and
/// the span of its wait in the queue (ended when an instance takes it).
struct Job {
    inputs: Vec<Tensor>,
    rows: usize,
    reply: oneshot::Sender<Reply>,
    enqueued: Instant,
    deadline: Option<Instant>,
    span: tracing::Span,
    queued: tracing::Span,
}

impl Queued for Job {
    fn rows(&self) -> usize {
        self.rows
    }

    fn stacks_with(&self, other: &Job) -> bool {
        self.inputs.len() == other.inputs.len()
            && self.inputs.iter().zip(&other.inputs).all(|(a, b)| a.shape().get(1..) == b.shape().get(1..))
    }

    fn enqueued(&self) -> Instant {
        self.enqueued
    }

    fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    fn is_cancelled(&self) -> bool {
        self.reply.is_closed()
    }
}

struct State {
    queue: BatchQueue<Job>,
    /// Set when the version is dropped: instances answer what is queued, then end.
    closed: bool,
    /// Instances blocked on [`Shared::wake`]. A push wakes one only when some wait: a busy instance takes the job
    /// with its next batch, and a notification nobody waits for still costs a system call per request.
    waiting: usize,
}

struct Shared {
    state: Mutex<State>,
    /// Signalled when a job arrives or the version closes.
    wake: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the queue half-updated (every update is one call), so a
        // poisoned lock is still safe to use.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Blocks an instance until a push or the close wakes it, or `timeout` passes, counting it among the
    /// waiting meanwhile.
    fn wait<'a>(&self, mut state: MutexGuard<'a, State>, timeout: Option<Duration>) -> MutexGuard<'a, State> {
        state.waiting += 1;
        let mut state = match timeout {
            Some(timeout) => self.wake.wait_timeout(state, timeout).unwrap_or_else(PoisonError::into_inner).0,
            None => self.wake.wait(state).unwrap_or_else(PoisonError::into_inner),
        };
        state.waiting -= 1;
        state
    }
}

/// The queue of one served version. Dropping it closes the queue: the instance threads answer every queued
/// request, then end, which is how a version drains.
pub struct Scheduler {
    shared: Arc<Shared>,
    config: SchedulerConfig,
    metrics: VersionMetrics,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler").field("config", &self.config).finish_non_exhaustive()
    }
}

impl Scheduler {
    /// Starts the instance threads and waits until each has its session, so a version that cannot create one is
    /// never served.
    pub fn start(
        label: &str,
        backend: Arc<dyn Backend>,
        config: SchedulerConfig,
        metrics: VersionMetrics,
    ) -> Result<Scheduler, BackendError> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State { queue: BatchQueue::new(config.policy.clone()), closed: false, waiting: 0 }),
            wake: Condvar::new(),
        });
        let scheduler = Scheduler { shared: Arc::clone(&shared), config, metrics };
        for instance in 0..scheduler.config.instances {
            // Capacity 1: the thread sends exactly one message, whether its session could be created.
            let (started_tx, started_rx) = std::sync::mpsc::sync_channel(1);
            let (shared, backend) = (Arc::clone(&shared), Arc::clone(&backend));
            let batched = scheduler.config.policy.max_batch_size > 0;
            let metrics = scheduler.metrics.clone();
            let name: String = format!("{label}/{instance}").chars().take(15).collect();
            let warmup = scheduler.config.warmup.clone();
            std::thread::Builder::new()
                .name(name)
                .spawn(move || match backend.session().and_then(|session| warm_up(session, warmup)) {
                    Ok(session) => {
                        let _ = started_tx.send(Ok(()));
                        Instance { shared, backend, session, batched, metrics }.run();
                    }
                    Err(e) => {
                        let _ = started_tx.send(Err(e));
                    }
                })
                .map_err(|e| BackendError::Compute(format!("cannot start an instance thread: {e}")))?;
            started_rx
                .recv()
                .map_err(|_| BackendError::Compute("an instance thread ended before starting".to_owned()))??;
        }
        Ok(scheduler)
    }

    pub fn config(&self) -> &SchedulerConfig {
        &self.config
    }

    /// Requests waiting for an instance.
    pub fn queue_len(&self) -> usize {
        self.shared.lock().queue.len()
    }

    /// Queues one request and waits for its outputs, until `deadline` (the caller merged the request's timeouts
    /// with the version's default). Returns the outputs and the rows the request counted for (1 for a model
    /// without a batch dimension).
    pub async fn infer(
        &self,
        inputs: Vec<Tensor>,
        deadline: Option<Instant>,
    ) -> Result<(Vec<Tensor>, usize), SchedulerError> {
        let enqueued = Instant::now();
        let rows = self.rows_of(&inputs)?;
        let (reply, answer) = oneshot::channel();
        let queued = tracing::debug_span!("queue");
        let job = Job { inputs, rows, reply, enqueued, deadline, span: tracing::Span::current(), queued };
        let someone_waits = {
            let mut state = self.shared.lock();
            if state.closed {
                return Err(SchedulerError::Stopped);
            }
            state.queue.push(job).map_err(|_| SchedulerError::Overloaded)?;
            self.metrics.queue_depth.set(state.queue.len() as i64);
            state.waiting > 0
        };
        if someone_waits {
            self.shared.wake.notify_one();
        }
        self.metrics.in_flight.inc();
        let _in_flight = scopeguard(|| self.metrics.in_flight.dec());
        let answer = match deadline {
            Some(deadline) => {
                tokio::time::timeout_at(deadline.into(), answer).await.map_err(|_| SchedulerError::DeadlineExceeded)?
            }
            None => answer.await,
        };
        // Instances answer every job they take, even at shutdown; a dropped reply means an instance thread died.
        let outputs =
            answer.map_err(|_| BackendError::Compute("the instance thread stopped before answering".to_owned()))??;
        Ok((outputs, rows))
    }

    /// Rows a request adds to a batch (1 for a model without a batch dimension); refuses requests that cannot be
    /// batched as they are.
    fn rows_of(&self, inputs: &[Tensor]) -> Result<usize, SchedulerError> {
        let max = self.config.policy.max_batch_size;
        if max == 0 {
            return Ok(1);
        }
        let mut rows = None;
        for input in inputs {
            let Some(&n) = input.shape().first() else {
                return Err(SchedulerError::InvalidBatch("a batched model takes no scalar inputs".to_owned()));
            };
            match rows {
                None => rows = Some(n),
                Some(r) if r != n => {
                    return Err(SchedulerError::InvalidBatch(format!(
                        "inputs disagree on the batch dimension: {r} and {n} rows"
                    )));
                }
                Some(_) => {}
            }
        }
        let rows = rows.unwrap_or(1);
        if rows > max {
            return Err(SchedulerError::BatchTooLarge { rows, max });
        }
        if rows == 0 {
            return Err(SchedulerError::InvalidBatch("a request must hold at least one row".to_owned()));
        }
        Ok(rows)
    }
}

/// Runs the warm-up inputs through a fresh session (first runs allocate, pick kernels per shape, fill caches),
/// so the version's first requests do not pay for it. A failure fails the version's start.
fn warm_up(mut session: Box<dyn Session>, warmup: Option<Warmup>) -> Result<Box<dyn Session>, BackendError> {
    let Some(warmup) = warmup else { return Ok(session) };
    for &rows in &warmup.batch_sizes {
        let inputs = if rows == 1 {
            warmup.row.clone()
        } else {
            let stacked = warmup.row.iter().map(|row| concat_rows(&vec![row; rows]));
            stacked
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| BackendError::Compute(format!("warm-up inputs of {rows} rows: {e}")))?
        };
        for _ in 0..warmup.runs {
            session
                .run(inputs.clone())
                .map_err(|e| BackendError::Compute(format!("warm-up failed on {rows} row(s): {e}")))?;
        }
    }
    Ok(session)
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_all();
    }
}

/// One instance thread: its session, and the queue it serves.
struct Instance {
    shared: Arc<Shared>,
    backend: Arc<dyn Backend>,
    session: Box<dyn Session>,
    /// Whether requests are stacked (max_batch_size > 0).
    batched: bool,
    metrics: VersionMetrics,
}

impl Instance {
    fn run(mut self) {
        while let Some(batch) = self.next_batch() {
            self.compute(batch);
        }
    }

    /// Blocks until there is a batch to run; `None` once the version is closed and its queue empty.
    fn next_batch(&self) -> Option<Vec<Job>> {
        if self.batched {
            // Let request tasks that are ready to run enqueue first: on a busy core this turns a train of
            // one-request runs into one batch; on an idle core it returns at once.
            std::thread::yield_now();
        }
        let mut state = self.shared.lock();
        loop {
            let now = Instant::now();
            for job in state.queue.remove_expired(now) {
                let _ = job.reply.send(Err(SchedulerError::DeadlineExceeded));
            }
            self.metrics.queue_depth.set(state.queue.len() as i64);
            state = match state.queue.next(now) {
                Next::Batch(batch) => {
                    self.metrics.queue_depth.set(state.queue.len() as i64);
                    if !state.queue.is_empty() && state.waiting > 0 {
                        // More work is waiting: let another free instance look at it.
                        self.shared.wake.notify_one();
                    }
                    return Some(batch);
                }
                Next::WaitUntil(at) => self.shared.wait(state, Some(at - now)),
                Next::Idle if state.closed => return None,
                Next::Idle => self.shared.wait(state, None),
            };
        }
    }

    fn compute(&mut self, mut batch: Vec<Job>) {
        let size = batch.len();
        let rows: Vec<usize> = batch.iter().map(|job| job.rows).collect();
        let total_rows = rows.iter().sum::<usize>();
        for job in &mut batch {
            // The wait is over: end its span before the run's begins.
            drop(std::mem::replace(&mut job.queued, tracing::Span::none()));
        }
        let span = trace::batch_span(batch.iter().map(|job| &job.span), size, total_rows);
        let _entered = span.enter();
        for job in &batch {
            let queued = job.enqueued.elapsed();
            self.metrics.queue_duration.observe(queued.as_secs_f64());
            self.metrics.statistics.queue.add(queued);
        }
        self.metrics.batch_size.observe(total_rows as f64);
        let started = Instant::now();
        let (inputs, replies): (Vec<Vec<Tensor>>, Vec<oneshot::Sender<Reply>>) =
            batch.into_iter().map(|job| (job.inputs, job.reply)).unzip();
        let mut times = ComputeTimes::default();
        let stacked = if size == 1 { None } else { Some(self.run_stacked(&inputs, &rows, &mut times)) };
        let results: Vec<Reply> = match stacked {
            Some(Ok(per_job)) => per_job.into_iter().map(Ok).collect(),
            // One request the model fails on must not fail the others it was batched with: run each alone, so
            // every caller gets its own answer or its own error.
            Some(Err(e)) => {
                tracing::debug!(error = %e, size, "batch failed; running its requests one by one");
                let alone = Instant::now();
                let results = inputs.into_iter().map(|inputs| self.run_session(inputs)).collect();
                times.infer += alone.elapsed();
                results
            }
            None => {
                let results = inputs.into_iter().map(|inputs| self.run_session(inputs)).collect();
                times.infer = started.elapsed();
                results
            }
        };
        self.metrics.compute_duration.observe(started.elapsed().as_secs_f64());
        self.metrics.statistics.record_execution(size, total_rows, times);
        // The run ends before its requests are answered, so its span ends within theirs.
        drop(_entered);
        drop(span);
        for (reply, result) in replies.into_iter().zip(results) {
            let _ = reply.send(result);
        }
    }

    /// Stacks the inputs, runs them once and splits the outputs back; `times` gets each phase's duration.
    fn run_stacked(
        &mut self,
        inputs: &[Vec<Tensor>],
        rows: &[usize],
        times: &mut ComputeTimes,
    ) -> Result<Vec<Vec<Tensor>>, SchedulerError> {
        let phase = Instant::now();
        let stacked = (0..inputs[0].len())
            .map(|ix| {
                let parts: Vec<&Tensor> = inputs.iter().map(|job| &job[ix]).collect();
                concat_rows(&parts)
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| BackendError::Compute(e.to_string()))?;
        times.input = phase.elapsed();
        let phase = Instant::now();
        let outputs = self.run_session(stacked);
        times.infer = phase.elapsed();
        let outputs = outputs?;
        let phase = Instant::now();
        let mut per_job: Vec<Vec<Tensor>> = rows.iter().map(|_| Vec::with_capacity(outputs.len())).collect();
        for (ix, output) in outputs.iter().enumerate() {
            let parts = split_rows(output, rows).map_err(|e| {
                BackendError::Compute(format!(
                    "output {ix} of shape {:?} cannot be split back into requests: {e}",
                    output.shape()
                ))
            })?;
            for (job, part) in per_job.iter_mut().zip(parts) {
                job.push(part);
            }
        }
        times.output = phase.elapsed();
        Ok(per_job)
    }

    /// Runs the session, turning a backend panic into an error for this run and a fresh session for the next.
    fn run_session(&mut self, inputs: Vec<Tensor>) -> Reply {
        match std::panic::catch_unwind(AssertUnwindSafe(|| self.session.run(inputs))) {
            Ok(result) => Ok(result?),
            Err(_) => {
                tracing::error!("the backend panicked; starting a fresh session");
                match self.backend.session() {
                    Ok(fresh) => self.session = fresh,
                    Err(e) => tracing::error!(error = %e, "cannot recreate the session"),
                }
                Err(BackendError::Compute("the backend failed on this batch".to_owned()).into())
            }
        }
    }
}

#[cfg(test)]
mod tests;

//! Per-version request queue and the instance thread that computes it.
//!
//! Inference never runs on tokio workers: each served version owns a dedicated thread fed by a bounded queue.
//! The async side waits on a oneshot; a full queue is answered "overloaded" at once instead of growing.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::time::Instant;

use thiserror::Error;
use tokio::sync::oneshot;

use crate::backend::{Backend, BackendError, Session};
use crate::tensor::Tensor;

/// Requests a version may hold waiting for its instance thread. Enough to absorb a burst from a few hundred
/// concurrent clients on a sub-millisecond model; past it, callers are told to retry rather than pile up memory.
pub const DEFAULT_QUEUE_CAPACITY: usize = 256;

/// One queued request: its inputs, where its answer goes, when it arrived and the span it belongs to.
struct Job {
    inputs: Vec<Tensor>,
    reply: oneshot::Sender<Result<Vec<Tensor>, BackendError>>,
    enqueued: Instant,
    span: tracing::Span,
}

#[derive(Debug, Error)]
pub enum SchedulerError {
    #[error("the queue of this model version is full")]
    Overloaded,
    #[error("this model version is shutting down")]
    Stopped,
    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// Handle to a version's queue; cheap to clone. The instance thread ends once every handle is dropped and the
/// jobs already queued have been answered, which is how a version drains.
#[derive(Clone, Debug)]
pub struct Scheduler {
    queue: SyncSender<Job>,
}

impl Scheduler {
    /// Starts the instance thread and waits until its session exists, so a version that cannot create one is
    /// never served.
    pub fn start(label: &str, backend: Arc<dyn Backend>, queue_capacity: usize) -> Result<Scheduler, BackendError> {
        let (queue, jobs) = mpsc::sync_channel::<Job>(queue_capacity);
        // Capacity 1: the thread sends exactly one message, whether its session could be created.
        let (started_tx, started_rx) = mpsc::sync_channel(1);
        let thread_name = format!("infer-{label}");
        std::thread::Builder::new()
            .name(thread_name.chars().take(15).collect())
            .spawn(move || match backend.session() {
                Ok(session) => {
                    let _ = started_tx.send(Ok(()));
                    instance_loop(&*backend, session, jobs);
                }
                Err(e) => {
                    let _ = started_tx.send(Err(e));
                }
            })
            .map_err(|e| BackendError::Compute(format!("cannot start the instance thread: {e}")))?;
        started_rx
            .recv()
            .map_err(|_| BackendError::Compute("the instance thread ended before starting".to_owned()))??;
        Ok(Scheduler { queue })
    }

    /// Queues one request and waits for its outputs.
    pub async fn infer(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, SchedulerError> {
        let (reply, answer) = oneshot::channel();
        let job = Job { inputs, reply, enqueued: Instant::now(), span: tracing::Span::current() };
        self.queue.try_send(job).map_err(|e| match e {
            TrySendError::Full(_) => SchedulerError::Overloaded,
            TrySendError::Disconnected(_) => SchedulerError::Stopped,
        })?;
        Ok(answer.await.map_err(|_| SchedulerError::Stopped)??)
    }
}

fn instance_loop(backend: &dyn Backend, mut session: Box<dyn Session>, jobs: mpsc::Receiver<Job>) {
    for job in jobs {
        // The client has gone: computing its answer would only delay the others.
        if job.reply.is_closed() {
            continue;
        }
        let _entered = job.span.enter();
        let queued = job.enqueued.elapsed();
        let inputs = job.inputs;
        let result = match std::panic::catch_unwind(AssertUnwindSafe(|| session.run(inputs))) {
            Ok(result) => result,
            Err(_) => {
                tracing::error!("the backend panicked; starting a fresh session");
                match backend.session() {
                    Ok(fresh) => session = fresh,
                    Err(e) => tracing::error!(error = %e, "cannot recreate the session"),
                }
                Err(BackendError::Compute("the backend failed on this request".to_owned()))
            }
        };
        tracing::trace!(queued_us = queued.as_micros() as u64, "computed");
        let _ = job.reply.send(result);
    }
}

//! The payload log: a sample of answered requests (inputs, outputs or both) written for retraining pipelines and
//! offline drift tools, to a folder of JSON-lines files or to an HTTP endpoint as CloudEvents.
//!
//! The request path only hands a record over: each sink has one bounded queue, filled with `try_send`, so a slow
//! or stalled sink never blocks or slows a request; a full queue drops the record and counts it
//! (`infergate_payload_log_dropped_total{sink, reason="queue_full"}`). Encoding and writing happen on the sink's
//! own thread.

mod file;
mod http;
mod record;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, LazyLock, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use prometheus::{IntCounter, IntCounterVec, Opts};

pub use record::{PayloadRecord, format_time};

/// The server's payload-log settings: which sinks exist and how they are bounded.
#[derive(Debug, Clone, PartialEq)]
pub struct PayloadLogSettings {
    /// Set: the file sink writes JSON lines into this folder.
    pub dir: Option<PathBuf>,
    /// Set: the HTTP sink posts CloudEvents to this URL.
    pub url: Option<String>,
    /// The events' `ce-source`.
    pub source: String,
    /// Records each sink may hold waiting before new ones are dropped.
    pub queue: usize,
    pub max_file_bytes: u64,
    pub max_file_age: Duration,
    /// Closed files past this total are deleted, oldest first.
    pub max_disk_bytes: u64,
}

impl Default for PayloadLogSettings {
    fn default() -> Self {
        PayloadLogSettings {
            dir: None,
            url: None,
            source: "infergate".to_owned(),
            queue: 10_000,
            max_file_bytes: 64 << 20,
            max_file_age: Duration::from_secs(3600),
            max_disk_bytes: 1 << 30,
        }
    }
}

/// The sinks a model's `[logging]` can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sink {
    File,
    Http,
}

impl Sink {
    pub fn as_str(self) -> &'static str {
        match self {
            Sink::File => "file",
            Sink::Http => "http",
        }
    }
}

/// How long a stopping server lets a sink finish what it holds before the rest is counted as dropped.
const DRAIN_LIMIT: Duration = Duration::from_secs(5);

/// One sink: its queue's sending end, and the thread that empties it.
#[derive(Debug)]
struct SinkQueue {
    sender: SyncSender<PayloadRecord>,
    counters: SinkCounters,
}

/// The payload log of the server: one queue and thread per configured sink.
#[derive(Debug, Default)]
pub struct PayloadLog {
    file: Option<SinkQueue>,
    http: Option<SinkQueue>,
    /// Set when the server stops: the sink threads write what they hold and end.
    stopping: Arc<AtomicBool>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// A model names a sink the server does not have: said once in the log, counted always.
    warned_no_sink: AtomicBool,
}

impl PayloadLog {
    /// Starts the configured sinks. The file sink's folder is created, and a file a crash left open is closed.
    pub fn start(settings: &PayloadLogSettings) -> std::io::Result<PayloadLog> {
        let log = PayloadLog::default();
        let mut threads = Vec::new();
        let file = match &settings.dir {
            None => None,
            Some(dir) => {
                let writer = file::FileWriter::open(dir.clone(), settings, SinkCounters::of(Sink::File))?;
                let (sender, receiver) = sync_channel(settings.queue.max(1));
                let stopping = Arc::clone(&log.stopping);
                threads.push(spawn("infergate-payload-file", move || writer.run(&receiver, &stopping))?);
                Some(SinkQueue { sender, counters: SinkCounters::of(Sink::File) })
            }
        };
        let http = match &settings.url {
            None => None,
            Some(url) => {
                let poster = http::Poster::new(url.clone(), settings.source.clone(), SinkCounters::of(Sink::Http))?;
                let (sender, receiver) = sync_channel(settings.queue.max(1));
                let stopping = Arc::clone(&log.stopping);
                threads.push(spawn("infergate-payload-http", move || poster.run(receiver, &stopping))?);
                Some(SinkQueue { sender, counters: SinkCounters::of(Sink::Http) })
            }
        };
        *log.threads.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = threads;
        Ok(PayloadLog { file, http, ..log })
    }

    /// Hands a record to a sink without waiting: a full queue, or a sink the server does not have, drops it.
    pub fn submit(&self, sink: Sink, record: PayloadRecord) {
        let queue = match sink {
            Sink::File => self.file.as_ref(),
            Sink::Http => self.http.as_ref(),
        };
        let Some(queue) = queue else {
            if !self.warned_no_sink.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    model = %record.model,
                    sink = sink.as_str(),
                    "a model's [logging] names a sink this server does not have (--payload-log-dir or \
                     --payload-log-url); its records are dropped"
                );
            }
            metrics().dropped.with_label_values(&[sink.as_str(), "no_sink"]).inc();
            return;
        };
        match queue.sender.try_send(record) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => queue.counters.queue_full.inc(),
            Err(TrySendError::Disconnected(_)) => queue.counters.stopped.inc(),
        }
    }

    /// Stops the sinks: each writes or sends what it holds (the file sink closes its file), for at most a few
    /// seconds, and what is left is counted as dropped.
    pub fn shutdown(&self) {
        self.stopping.store(true, Ordering::Release);
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        for thread in threads {
            if thread.join().is_err() {
                tracing::error!("a payload-log sink thread panicked");
            }
        }
    }
}

fn spawn(name: &str, work: impl FnOnce() + Send + 'static) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name(name.to_owned()).spawn(work)
}

/// Takes the next record, or `None` once the queue is empty and the server is stopping (or every sender is gone).
/// Waits at most `tick` so the caller can rotate or retry on time.
fn next_record(receiver: &Receiver<PayloadRecord>, stopping: &AtomicBool, tick: Duration) -> Next {
    match receiver.recv_timeout(tick) {
        Ok(record) => Next::Record(Box::new(record)),
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) if stopping.load(Ordering::Acquire) => Next::Stop,
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Next::Idle,
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => Next::Stop,
    }
}

enum Next {
    Record(Box<PayloadRecord>),
    Idle,
    Stop,
}

/// When a stopping sink must give up on what it still holds.
fn drain_deadline(stopping: &AtomicBool, since: &mut Option<Instant>) -> bool {
    if !stopping.load(Ordering::Acquire) {
        return false;
    }
    since.get_or_insert_with(Instant::now).elapsed() >= DRAIN_LIMIT
}

/// The counters of one sink, resolved once.
#[derive(Debug, Clone)]
struct SinkCounters {
    delivered: IntCounter,
    queue_full: IntCounter,
    too_large: IntCounter,
    send_failed: IntCounter,
    rejected: IntCounter,
    write_failed: IntCounter,
    stopped: IntCounter,
}

impl SinkCounters {
    fn of(sink: Sink) -> SinkCounters {
        let m = metrics();
        let dropped = |reason: &str| m.dropped.with_label_values(&[sink.as_str(), reason]);
        SinkCounters {
            delivered: m.records.with_label_values(&[sink.as_str()]),
            queue_full: dropped("queue_full"),
            too_large: dropped("too_large"),
            send_failed: dropped("send_failed"),
            rejected: dropped("rejected"),
            write_failed: dropped("write_failed"),
            stopped: dropped("stopped"),
        }
    }
}

/// The payload log's metric families: one set for the process, registered in every registry.
#[derive(Debug)]
pub(crate) struct PayloadLogMetrics {
    pub records: IntCounterVec,
    pub dropped: IntCounterVec,
    pub files_deleted: IntCounter,
}

pub(crate) fn metrics() -> &'static PayloadLogMetrics {
    static METRICS: LazyLock<PayloadLogMetrics> = LazyLock::new(|| PayloadLogMetrics {
        records: IntCounterVec::new(
            Opts::new(
                "infergate_payload_log_records_total",
                "Payload-log records delivered: file lines written, or events the HTTP sink accepted.",
            ),
            &["sink"],
        )
        .expect("constant options"),
        dropped: IntCounterVec::new(
            Opts::new(
                "infergate_payload_log_dropped_total",
                "Payload-log records dropped, by reason: queue_full, too_large, no_sink, send_failed, rejected, \
                 write_failed, stopped.",
            ),
            &["sink", "reason"],
        )
        .expect("constant options"),
        files_deleted: IntCounter::new(
            "infergate_payload_log_files_deleted_total",
            "Closed payload-log files deleted, oldest first, to stay under --payload-log-max-disk-bytes.",
        )
        .expect("constant options"),
    });
    &METRICS
}

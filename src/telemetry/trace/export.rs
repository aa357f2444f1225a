//! The way out for finished spans: a bounded queue that a span's end never waits on, and one thread that sends
//! them to the collector in batches.
//!
//! The SDK's own batch processor counts what it drops only in a log line at shutdown; this one counts every span
//! it could not deliver in `infergate_trace_spans_total`, by outcome, as it happens.

use std::sync::Mutex;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use opentelemetry::Context;
use opentelemetry_otlp::{SpanExporter, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter as _, SpanProcessor};

use super::{OtlpProtocol, TraceExport};
use crate::telemetry::trace_spans;

/// Finished spans waiting for the export thread. At 100 % sampling a request makes about five spans, so this holds
/// a couple of seconds of a few hundred requests a second, or a burst of thousands: enough to ride out a slow
/// export; past it spans are dropped, not queued without bound.
const QUEUE_SPANS: usize = 8192;
/// Spans sent in one export call (OTLP collectors accept a few thousand; smaller calls fail less at once).
const BATCH_SPANS: usize = 512;
/// A failed export is logged at most this often; the counter has every failure.
const FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(60);

enum Message {
    Span(Box<SpanData>),
    Resource(Resource),
    /// Export what is queued, then answer.
    Flush(SyncSender<()>),
    /// Export what is queued, answer, and end the thread.
    Shutdown(SyncSender<()>),
}

/// A span processor that hands finished, sampled spans to the export thread without ever blocking.
#[derive(Debug)]
pub struct QueueProcessor {
    queue: SyncSender<Message>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl QueueProcessor {
    /// Starts the export thread, which builds the OTLP client on a runtime of its own: exports never run on the
    /// request workers. Fails when the client cannot be built.
    pub fn start(export: &TraceExport, interval: Duration, timeout: Duration) -> Result<QueueProcessor, String> {
        let (queue, spans) = sync_channel(QUEUE_SPANS);
        let (built_tx, built_rx) = sync_channel(1);
        let export = export.clone();
        let thread = std::thread::Builder::new()
            .name("trace-export".to_owned())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let _ = built_tx.send(Err(format!("cannot start the export runtime: {e}")));
                        return;
                    }
                };
                // The gRPC and HTTP clients bind to the runtime they are built on.
                let exporter = runtime.block_on(async { build_exporter(&export) });
                match exporter {
                    Ok(exporter) => {
                        let _ = built_tx.send(Ok(()));
                        ExportLoop { runtime, exporter, timeout, interval, last_failure_log: None }.run(&spans);
                    }
                    Err(e) => {
                        let _ = built_tx.send(Err(e));
                    }
                }
            })
            .map_err(|e| format!("cannot start the export thread: {e}"))?;
        built_rx.recv().map_err(|_| "the export thread ended while starting".to_owned())??;
        Ok(QueueProcessor { queue, thread: Mutex::new(Some(thread)) })
    }

    /// Sends `message` and waits up to `timeout` for the export thread's answer.
    fn ask(&self, message: impl FnOnce(SyncSender<()>) -> Message, timeout: Duration) -> OTelSdkResult {
        let (ack, answered) = sync_channel(1);
        self.queue.send(message(ack)).map_err(|_| OTelSdkError::AlreadyShutdown)?;
        answered.recv_timeout(timeout).map_err(|_| OTelSdkError::Timeout(timeout))
    }
}

impl SpanProcessor for QueueProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        match self.queue.try_send(Message::Span(Box::new(span))) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => trace_spans().queue_full.inc(),
            Err(TrySendError::Disconnected(_)) => trace_spans().stopped.inc(),
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.ask(Message::Flush, super::EXPORT_TIMEOUT)
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.ask(Message::Shutdown, timeout)?;
        let thread = self.thread.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
        Ok(())
    }

    fn set_resource(&mut self, resource: &Resource) {
        // Sent before any span: the provider sets its resource while it is built.
        if self.queue.try_send(Message::Resource(resource.clone())).is_err() {
            tracing::warn!("the trace resource could not reach the export thread");
        }
    }
}

/// The export thread's state.
struct ExportLoop {
    runtime: tokio::runtime::Runtime,
    exporter: SpanExporter,
    timeout: Duration,
    interval: Duration,
    last_failure_log: Option<Instant>,
}

impl ExportLoop {
    fn run(mut self, spans: &Receiver<Message>) {
        let mut batch = Vec::with_capacity(BATCH_SPANS);
        // When the oldest span of the batch must be sent at the latest.
        let mut due: Option<Instant> = None;
        loop {
            let received = match due {
                Some(due) => spans.recv_timeout(due.saturating_duration_since(Instant::now())),
                None => spans.recv().map_err(|_| RecvTimeoutError::Disconnected),
            };
            match received {
                Ok(Message::Span(span)) => {
                    batch.push(*span);
                    due.get_or_insert_with(|| Instant::now() + self.interval);
                    if batch.len() < BATCH_SPANS {
                        continue;
                    }
                }
                Ok(Message::Resource(resource)) => {
                    self.exporter.set_resource(&resource);
                    continue;
                }
                Ok(Message::Flush(ack)) => {
                    self.drain(spans, &mut batch);
                    let _ = ack.send(());
                }
                Ok(Message::Shutdown(ack)) => {
                    self.drain(spans, &mut batch);
                    let _ = self.exporter.shutdown();
                    let _ = ack.send(());
                    return;
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    self.send(&mut batch);
                    return;
                }
            }
            self.send(&mut batch);
            due = None;
        }
    }

    /// Sends the batch and every span already queued behind it.
    fn drain(&mut self, spans: &Receiver<Message>, batch: &mut Vec<SpanData>) {
        while let Ok(message) = spans.try_recv() {
            if let Message::Span(span) = message {
                batch.push(*span);
                if batch.len() == BATCH_SPANS {
                    self.send(batch);
                }
            }
        }
        self.send(batch);
    }

    fn send(&mut self, batch: &mut Vec<SpanData>) {
        if batch.is_empty() {
            return;
        }
        let count = batch.len() as u64;
        let spans = std::mem::replace(batch, Vec::with_capacity(BATCH_SPANS));
        // The timer is made inside the runtime: a tokio timer needs one when it is created.
        let (exporter, timeout) = (&self.exporter, self.timeout);
        let sent = self.runtime.block_on(async move { tokio::time::timeout(timeout, exporter.export(spans)).await });
        let error = match sent {
            Ok(Ok(())) => {
                trace_spans().exported.inc_by(count);
                return;
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {:?}", self.timeout),
        };
        trace_spans().export_failed.inc_by(count);
        let now = Instant::now();
        if self.last_failure_log.is_none_or(|at| now.duration_since(at) >= FAILURE_LOG_INTERVAL) {
            self.last_failure_log = Some(now);
            tracing::warn!(error, spans = count, "spans could not be exported to the OTLP collector");
        }
    }
}

/// The OTLP client: gRPC, or HTTP with protobuf bodies posted to `<endpoint>/v1/traces` (unless the endpoint
/// already names a path).
fn build_exporter(export: &TraceExport) -> Result<SpanExporter, String> {
    let built = match export.protocol {
        OtlpProtocol::Grpc => SpanExporter::builder()
            .with_tonic()
            .with_endpoint(&export.endpoint)
            .with_timeout(super::EXPORT_TIMEOUT)
            .build(),
        OtlpProtocol::HttpProtobuf => SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_endpoint(traces_url(&export.endpoint))
            .with_timeout(super::EXPORT_TIMEOUT)
            .build(),
    };
    built.map_err(|e| e.to_string())
}

/// The OTLP/HTTP traces URL of a collector given by its base URL.
fn traces_url(endpoint: &str) -> String {
    let trimmed = endpoint.trim_end_matches('/');
    let path_given = trimmed.split_once("://").is_some_and(|(_, rest)| rest.contains('/'));
    if path_given { endpoint.to_owned() } else { format!("{trimmed}/v1/traces") }
}

#[cfg(test)]
mod tests {
    use super::traces_url;

    #[test]
    fn the_traces_path_is_added_to_a_bare_collector_url() {
        assert_eq!(traces_url("http://collector:4318"), "http://collector:4318/v1/traces");
        assert_eq!(traces_url("http://collector:4318/"), "http://collector:4318/v1/traces");
        assert_eq!(traces_url("http://collector:4318/custom/traces"), "http://collector:4318/custom/traces");
    }
}

//! The HTTP sink: each record becomes CloudEvents 1.0 in binary content mode, in the shape of KServe's inference
//! logger (`org.kubeflow.serving.inference.request` / `.response`, `ce-id` the request's id), so that consumers
//! written for it work unchanged. Events go out in rounds of up to [`ROUND`] at once; each is tried up to
//! [`BACKOFF`]`.len() + 1` times with a bounded timeout, then dropped and counted.

use std::sync::atomic::AtomicBool;
use std::sync::mpsc::Receiver;
use std::time::Duration;

use super::{Next, PayloadRecord, SinkCounters, drain_deadline, format_time, next_record};

/// Events sent at once.
const ROUND: usize = 16;
/// Waits before the second and third tries.
const BACKOFF: [Duration; 2] = [Duration::from_millis(100), Duration::from_millis(400)];
const TRY_TIMEOUT: Duration = Duration::from_secs(2);
const REQUEST_TYPE: &str = "org.kubeflow.serving.inference.request";
const RESPONSE_TYPE: &str = "org.kubeflow.serving.inference.response";

#[derive(Debug)]
pub(super) struct Poster {
    url: String,
    source: String,
    /// The pod's namespace (Downward API), sent as `ce-namespace` like KServe's logger does.
    namespace: Option<String>,
    counters: SinkCounters,
    client: reqwest::Client,
}

/// One event: its type and body.
struct Event {
    kind: &'static str,
    body: Vec<u8>,
}

/// How one try ended.
enum Sent {
    Delivered,
    /// The sink refused the event for good (a 4xx other than 408 and 429).
    Rejected,
    /// Worth another try: no answer, a timeout, 408, 429 or 5xx.
    Failed,
}

impl Poster {
    pub(super) fn new(url: String, source: String, counters: SinkCounters) -> std::io::Result<Poster> {
        let client = reqwest::Client::builder().timeout(TRY_TIMEOUT).build().map_err(std::io::Error::other)?;
        let namespace = std::env::var("POD_NAMESPACE").ok().filter(|n| !n.is_empty());
        Ok(Poster { url, source, namespace, counters, client })
    }

    pub(super) fn run(self, receiver: Receiver<PayloadRecord>, stopping: &AtomicBool) {
        let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(runtime) => runtime,
            Err(e) => {
                tracing::error!(error = %e, "the payload-log HTTP sink cannot start; its records are dropped");
                return;
            }
        };
        let mut drain_since = None;
        loop {
            let first = match next_record(&receiver, stopping, Duration::from_millis(200)) {
                Next::Record(record) => record,
                Next::Idle => continue,
                Next::Stop => break,
            };
            let mut round = vec![*first];
            while round.len() < ROUND
                && let Ok(record) = receiver.try_recv()
            {
                round.push(record);
            }
            runtime.block_on(futures_util::future::join_all(round.iter().map(|record| self.deliver(record))));
            if drain_deadline(stopping, &mut drain_since) {
                // The server is stopping and the sink is slow: what is left is counted, not sent.
                let left: usize = receiver.try_iter().map(|record| event_count(&record)).sum();
                self.counters.stopped.inc_by(left as u64);
                break;
            }
        }
    }

    /// Sends a record's events, in order, each counted as delivered or dropped.
    async fn deliver(&self, record: &PayloadRecord) {
        for event in events(record) {
            if event.body.len() > record.max_bytes {
                self.counters.too_large.inc();
                continue;
            }
            let mut outcome = self.post(record, &event).await;
            for wait in BACKOFF {
                if !matches!(outcome, Sent::Failed) {
                    break;
                }
                tokio::time::sleep(wait).await;
                outcome = self.post(record, &event).await;
            }
            match outcome {
                Sent::Delivered => self.counters.delivered.inc(),
                Sent::Rejected => self.counters.rejected.inc(),
                Sent::Failed => self.counters.send_failed.inc(),
            }
        }
    }

    async fn post(&self, record: &PayloadRecord, event: &Event) -> Sent {
        let mut request = self
            .client
            .post(&self.url)
            .header("ce-specversion", "1.0")
            .header("ce-id", &record.id)
            .header("ce-source", &self.source)
            .header("ce-type", event.kind)
            .header("ce-time", format_time(record.time))
            .header("ce-inferenceservicename", &record.model)
            .header("ce-modelversion", record.version.to_string())
            .header("ce-component", "predictor")
            .header("content-type", "application/json")
            .body(event.body.clone());
        if let Some(variant) = record.variant.as_deref() {
            request = request.header("ce-endpoint", variant);
        }
        if let Some(namespace) = &self.namespace {
            request = request.header("ce-namespace", namespace);
        }
        match request.send().await {
            Ok(answer) if answer.status().is_success() => Sent::Delivered,
            Ok(answer) => {
                let status = answer.status();
                let retry = status.is_server_error() || status.as_u16() == 408 || status.as_u16() == 429;
                if retry { Sent::Failed } else { Sent::Rejected }
            }
            Err(e) if e.is_builder() => Sent::Rejected,
            Err(_) => Sent::Failed,
        }
    }
}

/// How many events a record makes, without encoding them.
fn event_count(record: &PayloadRecord) -> usize {
    usize::from(record.inputs.is_some()) + usize::from(record.outputs.is_some())
}

/// A record's events: the request (when it holds the inputs), then the response (when it holds the outputs).
fn events(record: &PayloadRecord) -> Vec<Event> {
    let request = record.request_body().map(|body| Event { kind: REQUEST_TYPE, body });
    let response = record.response_body().map(|body| Event { kind: RESPONSE_TYPE, body });
    request.into_iter().chain(response).collect()
}

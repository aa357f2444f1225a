//! Logs and traces: the process's `tracing` subscriber, and the export of request spans to an OpenTelemetry
//! collector over OTLP.
//!
//! Request spans are at debug level. Without an OTLP endpoint the only layer is the log formatter, whose filter
//! (`--log-level`, `info` by default) disables them where they are declared, so tracing costs nothing. With one,
//! a second layer turns infergate's spans (and only spans) into OpenTelemetry spans, sampled parent-first: a request
//! whose `traceparent` says "sampled" is traced as a child of its caller's span whatever the ratio, one without
//! is traced with probability `sample_ratio`. Finished spans go through a bounded queue to one export thread
//! ([`export`]), so a slow or unreachable collector never slows a request: what does not fit is dropped and counted.

mod export;
mod propagation;
mod spans;

use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

pub use propagation::{TRACEPARENT, TRACESTATE, adopt_remote_parent};
pub use spans::{as_attribute, batch_span, exporting, record_outcome, record_route, request_span};

/// How logs are written to standard error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStyle {
    Text,
    Json,
}

/// The wire protocol of the OTLP collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// OTLP over gRPC (a collector's port 4317).
    Grpc,
    /// OTLP over HTTP with protobuf bodies (a collector's port 4318, path `/v1/traces`).
    HttpProtobuf,
}

/// Where and how request spans are exported.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceExport {
    /// The collector's URL, e.g. `http://otel-collector:4317`.
    pub endpoint: String,
    pub protocol: OtlpProtocol,
    /// Share of the requests without a sampled parent that are traced, in [0, 1].
    pub sample_ratio: f64,
    /// The `service.name` resource attribute.
    pub service_name: String,
}

/// Spans exported at most this long after they end (unless the queue fills a batch sooner).
const EXPORT_INTERVAL: Duration = Duration::from_millis(500);
/// One export call gives up after this long; its spans are counted as dropped.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);
/// What [`Tracing::shutdown`] gives the last export.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(3);

/// The installed subscriber; keep it until the server stops, then call [`Tracing::shutdown`] to export what is
/// queued.
#[derive(Debug)]
pub struct Tracing {
    provider: Option<SdkTracerProvider>,
}

/// Why tracing could not start.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("cannot set up the OTLP exporter for {endpoint}: {reason}")]
    Exporter { endpoint: String, reason: String },
    #[error("a tracing subscriber is already installed in this process")]
    AlreadyInstalled,
}

/// Installs the process's subscriber: logs with `filter` (checked by the caller) in `style`, and, with `export`,
/// request spans sent to an OTLP collector. Call once per process.
pub fn install(filter: &str, style: LogStyle, export: Option<&TraceExport>) -> Result<Tracing, TraceError> {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = match style {
        LogStyle::Text => tracing_subscriber::fmt::layer().with_writer(std::io::stderr).boxed(),
        LogStyle::Json => {
            tracing_subscriber::fmt::layer().json().flatten_event(true).with_writer(std::io::stderr).boxed()
        }
    };
    let logs = logs.with_filter(filter);
    let Some(export) = export else {
        tracing_subscriber::registry().with(logs).try_init().map_err(|_| TraceError::AlreadyInstalled)?;
        return Ok(Tracing { provider: None });
    };
    let processor = export::QueueProcessor::start(export, EXPORT_INTERVAL, EXPORT_TIMEOUT)
        .map_err(|reason| TraceError::Exporter { endpoint: export.endpoint.clone(), reason })?;
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(export.sample_ratio))))
        .with_resource(resource(&export.service_name))
        .build();
    let spans = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("infergate"))
        // Spans start when created or linked, not each time a task polls them: no context switch per poll.
        .with_context_activation(false)
        .with_tracked_inactivity(false)
        .with_threads(false)
        .with_location(false)
        .with_level(false)
        .with_target(false)
        .with_filter(tracing_subscriber::filter::filter_fn(|meta| {
            meta.is_span() && meta.target().starts_with("infergate")
        }));
    tracing_subscriber::registry().with(logs).with(spans).try_init().map_err(|_| TraceError::AlreadyInstalled)?;
    spans::enable();
    Ok(Tracing { provider: Some(provider) })
}

impl Tracing {
    /// Exports the spans still queued (for a few seconds at most) and stops the export thread.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(e) = provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT)
        {
            tracing::warn!(error = %e, "the last spans could not be exported");
        }
    }
}

/// `service.name` and `service.version`, the pod and namespace when the Downward API sets `POD_NAME` and
/// `POD_NAMESPACE`, and what `OTEL_RESOURCE_ATTRIBUTES` adds.
fn resource(service_name: &str) -> Resource {
    let mut builder = Resource::builder()
        .with_service_name(service_name.to_owned())
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")));
    for (variable, key) in [("POD_NAME", "k8s.pod.name"), ("POD_NAMESPACE", "k8s.namespace.name")] {
        if let Ok(value) = std::env::var(variable)
            && !value.is_empty()
        {
            builder = builder.with_attribute(KeyValue::new(key, value));
        }
    }
    builder.build()
}

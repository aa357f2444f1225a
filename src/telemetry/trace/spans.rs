//! The spans of a request: one from transport to answer, and the batch run that computed it.
//!
//! The other children (decode, queue wait, encode, shadow copy) are plain `debug_span!`s of the code that does
//! the work; these two need more than a name: the request span has fields filled as the request goes, and the
//! batch span has many requests behind it.

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::trace::{SpanContext, TraceContextExt};
use tracing::Span;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::telemetry::Protocol;

/// Set once spans are exported: only then is it worth asking a span for its OpenTelemetry context.
static EXPORTING: AtomicBool = AtomicBool::new(false);

pub(super) fn enable() {
    EXPORTING.store(true, Ordering::Relaxed);
}

/// Whether request spans go to a collector.
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// The span of one inference request, from the transport's first look at it to its answer. The pipeline sets what
/// answered ([`record_route`]), the transport how it ended ([`record_outcome`]).
pub fn request_span(protocol: Protocol, model: &str) -> Span {
    tracing::debug_span!(
        "infer",
        otel.kind = "server",
        otel.status_code = Empty,
        protocol = protocol.as_str(),
        model,
        version = Empty,
        variant = Empty,
        rows = Empty,
        outcome = Empty,
        error_type = Empty,
    )
}

/// What answered the request: the version, the traffic variant when the model has a policy, and the rows.
pub fn record_route(span: &Span, version: u64, variant: Option<&str>, rows: usize) {
    if span.is_disabled() {
        return;
    }
    span.record("version", as_attribute(version)).record("rows", as_attribute(rows as u64));
    if let Some(variant) = variant {
        span.record("variant", variant);
    }
}

/// How the request ended: `ok`, or `error` with its error type, whatever step it failed in.
pub fn record_outcome(span: &Span, error_type: Option<&str>) {
    if span.is_disabled() {
        return;
    }
    match error_type {
        None => span.record("outcome", "ok"),
        Some(error_type) => {
            span.record("outcome", "error").record("error_type", error_type).record("otel.status_code", "ERROR")
        }
    };
}

/// The span of one backend run over the requests whose spans are given. Exported, it is the child of the first
/// sampled request and linked to every sampled one (a batch has many parents; a span has one); when no request
/// is sampled there is nothing to record.
pub fn batch_span<'a>(requests: impl Iterator<Item = &'a Span>, size: usize, rows: usize) -> Span {
    let (size, rows) = (as_attribute(size as u64), as_attribute(rows as u64));
    let mut requests = requests.peekable();
    if !exporting() {
        return match requests.peek() {
            Some(first) => tracing::debug_span!(parent: *first, "batch", size, rows),
            None => Span::none(),
        };
    }
    let sampled: Vec<(&Span, SpanContext)> = requests
        .filter_map(|request| {
            let context = request.context().span().span_context().clone();
            context.is_sampled().then_some((request, context))
        })
        .collect();
    let Some((parent, _)) = sampled.first() else {
        return Span::none();
    };
    let span = tracing::debug_span!(parent: *parent, "batch", size, rows);
    for (_, context) in sampled {
        span.add_link(context);
    }
    span
}

/// A count as a span field: OpenTelemetry's integers are signed, and an unsigned field would be exported as text.
pub fn as_attribute(count: u64) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

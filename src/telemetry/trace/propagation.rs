//! W3C trace context: a request that carries a `traceparent` (REST header or gRPC metadata) joins its caller's
//! trace, `tracestate` kept.

use std::collections::HashMap;

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The header or metadata key of the caller's span.
pub const TRACEPARENT: &str = "traceparent";
/// The header or metadata key of vendor trace state, passed on unchanged.
pub const TRACESTATE: &str = "tracestate";

/// Makes `span` (not yet started) a child of the caller's span named by `traceparent`. Does nothing when spans
/// are not exported, when there is no `traceparent`, or when it is malformed (the request then starts a trace).
pub fn adopt_remote_parent(span: &Span, traceparent: Option<&str>, tracestate: Option<&str>) {
    let Some(traceparent) = traceparent else { return };
    if !super::spans::exporting() || span.is_disabled() {
        return;
    }
    let mut carrier = HashMap::with_capacity(2);
    carrier.insert(TRACEPARENT, traceparent);
    if let Some(tracestate) = tracestate {
        carrier.insert(TRACESTATE, tracestate);
    }
    let parent = TraceContextPropagator::new().extract(&Carrier(carrier));
    if parent.span().span_context().is_valid() {
        // Fails only if the span already started, which a span fresh from `request_span` has not.
        let _ = span.set_parent(parent);
    }
}

struct Carrier<'a>(HashMap<&'static str, &'a str>);

impl Extractor for Carrier<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).copied()
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().copied().collect()
    }
}

//! Request spans exported over OTLP to a real receiver built from the OpenTelemetry protocol definitions
//! (tests/interop/otlp_receiver.py), from infergate processes started with tracing on: the span tree of REST and
//! gRPC requests under their caller's trace, batch links, sampling, OTLP/HTTP, and an unreachable collector
//! (tests/interop/tracing_clients.py). Tracing is set up once per process, so the server runs as its binary here.
#![allow(clippy::unwrap_used)]

mod common;

#[tokio::test]
#[ignore = "needs opentelemetry-proto and tritonclient in .venv; scripts/test installs and runs it"]
async fn request_spans_reach_an_otlp_collector() {
    let work = common::temp_dir("tracing");
    let (binary, limit) = (env!("CARGO_BIN_EXE_infergate"), std::time::Duration::from_secs(600));
    common::run_interop_script("tracing_clients.py", &[], binary, &work, limit, "tracing: all checks passed").await;
}

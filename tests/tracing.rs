//! Request spans exported over OTLP to a real receiver built from the OpenTelemetry protocol definitions
//! (tests/interop/otlp_receiver.py), from infergate processes started with tracing on: the span tree of REST and
//! gRPC requests under their caller's trace, batch links, sampling, OTLP/HTTP, and an unreachable collector
//! (tests/interop/tracing_clients.py). Tracing is set up once per process, so the server runs as its binary here.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

#[tokio::test]
#[ignore = "needs opentelemetry-proto and tritonclient in .venv; scripts/test installs and runs it"]
async fn request_spans_reach_an_otlp_collector() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let work = common::temp_dir("tracing");
    let run = tokio::process::Command::new(root.join(".venv/bin/python"))
        .arg(root.join("tests/interop/tracing_clients.py"))
        .args(["--infergate", env!("CARGO_BIN_EXE_infergate")])
        .arg("--models")
        .arg(common::bundled_models())
        .arg("--work")
        .arg(&work)
        .kill_on_drop(true)
        .output();
    // The script stops every server it starts; a hang is a failure, not a stuck suite.
    let output = tokio::time::timeout(std::time::Duration::from_secs(600), run)
        .await
        .expect("tracing_clients.py did not finish within 10 minutes")
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(output.status.success(), "tracing_clients.py failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("tracing: all checks passed"), "{stdout}");
    std::fs::remove_dir_all(&work).unwrap();
}

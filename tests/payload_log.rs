//! Payload logging end to end (tests/interop/payload_log_clients.py): request ids over REST and gRPC; CloudEvents
//! received by a consumer built on the CloudEvents SDK (tests/interop/cloudevents_sink.py), with sampling; JSON-lines
//! files rotated, closed and read back with pandas; a consumer that never answers, which must slow no request; and a
//! kill -9 in the middle of writing, after which closed files are whole and the next start closes the one left open.
//! SIGTERM, SIGKILL and a restart on the same folder are part of what is tested, so the server runs as its binary,
//! started by the script.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::time::Duration;

/// The checks start servers and one measures latencies: they run one at a time, not on each other's cores.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Runs one check of payload_log_clients.py in a fresh work folder; it must exit 0 and say it passed.
async fn run_check(check: &str) {
    let _serial = SERIAL.lock().await;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let work = common::temp_dir(&format!("payload-log-{check}"));
    let run = tokio::process::Command::new(root.join(".venv/bin/python"))
        .arg(root.join("tests/interop/payload_log_clients.py"))
        .args(["--check", check, "--infergate", env!("CARGO_BIN_EXE_infergate")])
        .arg("--models")
        .arg(common::bundled_models())
        .arg("--work")
        .arg(&work)
        .kill_on_drop(true)
        .output();
    // The script stops every server it starts; a hang is a failure, not a stuck suite.
    let output = tokio::time::timeout(Duration::from_secs(300), run)
        .await
        .unwrap_or_else(|_| panic!("payload_log_clients.py --check {check} did not finish within 5 minutes"))
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(output.status.success(), "payload_log_clients.py --check {check} failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains(&format!("payload log {check}: all checks passed")), "{stdout}");
    std::fs::remove_dir_all(&work).unwrap();
}

/// Ids from the body, the x-request-id header or gRPC metadata, or generated (UUIDv7), answered in the body and the
/// header; every request to a model logged at 100% arrives as one request and one response event with that id, the
/// KServe inference-logger types and extensions, and the tensors sent and answered; 50% logs about half; the
/// delivered counter equals the events the consumer received.
#[tokio::test]
#[ignore = "needs cloudevents, pandas and tritonclient in .venv; scripts/test installs and runs it"]
async fn every_logged_request_reaches_a_cloudevents_consumer_under_its_id() {
    run_check("http").await;
}

/// Files rotated at 4 KiB and closed at SIGTERM, read back with pandas: one row per request with every field and
/// the tensors sent and answered; mode "request" logs no outputs; exclude_inputs leaves the input out, named.
#[tokio::test]
#[ignore = "needs pandas in .venv; scripts/test installs and runs it"]
async fn rotated_files_read_back_with_pandas_one_row_per_request() {
    run_check("file").await;
}

/// A consumer that accepts connections and never answers: requests to the logged model are as fast as to an
/// unlogged one in the same server, and what the queue of 64 cannot hold is counted as dropped (queue_full).
#[tokio::test]
#[ignore = "needs the packages of tests/requirements.txt in .venv; scripts/test installs and runs it"]
async fn a_stalled_consumer_slows_no_request_and_drops_are_counted() {
    run_check("stalled").await;
}

/// SIGKILL while records are written: every closed file is whole; the next start cuts the file left open after
/// its last complete line and closes it, and logs on.
#[tokio::test]
#[ignore = "needs pandas in .venv; scripts/test installs and runs it"]
async fn a_kill_mid_write_leaves_whole_files_and_the_next_start_closes_the_open_one() {
    run_check("crash").await;
}

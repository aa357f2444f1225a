//! Payload logging end to end (tests/interop/payload_log_clients.py): request ids over REST and gRPC; CloudEvents
//! received by a consumer built on the CloudEvents SDK (tests/interop/cloudevents_sink.py), with sampling; JSON-lines
//! files rotated, closed and read back with pandas; a consumer that never answers, which must slow no request; and a
//! kill -9 in the middle of writing, after which closed files are whole and the next start closes the one left open.
//! SIGTERM, SIGKILL and a restart on the same folder are part of what is tested, so the server runs as its binary,
//! started by the script.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

/// The checks start servers and one measures latencies: they run one at a time, not on each other's cores.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Runs one check of payload_log_clients.py in a fresh work folder; it must exit 0 and say it passed.
async fn run_check(check: &str) {
    let _serial = SERIAL.lock().await;
    let work = common::temp_dir(&format!("payload-log-{check}"));
    let passed = format!("payload log {check}: all checks passed");
    let (script, binary, limit) = ("payload_log_clients.py", env!("CARGO_BIN_EXE_infergate"), Duration::from_secs(300));
    common::run_interop_script(script, &["--check", check], binary, &work, limit, &passed).await;
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

//! Triton's own clients against infergate: tritonclient HTTP (binary and JSON tensors) and gRPC on every bundled
//! model, metadata, config, statistics, the repository API, the gRPC stream's order, and perf_analyzer over both
//! protocols (tests/interop/triton_clients.py). Needs the packages of tests/requirements.txt in .venv and Debian's
//! libb64-0d, which scripts/test installs.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use common::{TestServer, bundled_models, config_with_ort};
use infergate::config::Secret;

const TOKEN: &str = "interop-admin-token-0123456789";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs tritonclient and perf_analyzer in .venv and Debian's libb64-0d; scripts/test installs and runs it"]
async fn triton_clients_and_perf_analyzer_work_unchanged() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut config = config_with_ort(&bundled_models());
    config.admin_token = Some(Secret(TOKEN.to_owned()));
    let server = TestServer::start(config).await;
    let output = tokio::process::Command::new(root.join(".venv/bin/python"))
        .arg(root.join("tests/interop/triton_clients.py"))
        .args(["--http", &server.server.http_addr().to_string()])
        .args(["--grpc", &server.server.grpc_addr().to_string()])
        .args(["--golden", root.join("tests/golden").to_str().unwrap()])
        .args(["--token", TOKEN])
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(output.status.success(), "the interoperability checks failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("interoperability: all checks passed"), "{stdout}");
}

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
    let (http, grpc) = (server.server.http_addr().unwrap().to_string(), server.server.grpc_addr().unwrap().to_string());
    let golden = root.join("tests/golden");
    let args = ["--http", &http, "--grpc", &grpc, "--golden", golden.to_str().unwrap(), "--token", TOKEN];
    run_python("triton_clients.py", &args, "interoperability: all checks passed").await;
    // Each transport's requests are counted under their own protocol.
    let text = common::scrape(&server).await;
    for protocol in ["rest", "grpc"] {
        let series =
            format!(r#"infergate_requests_total{{error_type="none",model="iris",protocol="{protocol}",version="1"}}"#);
        let answered = common::metric(&text, &series).unwrap_or(0.0);
        assert!(answered > 0.0, "no {protocol} request counted:\n{text}");
    }
}

/// Runs a script of tests/interop with the .venv's Python; it must exit 0 and print `passed`.
async fn run_python(script: &str, args: &[&str], passed: &str) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let output = tokio::process::Command::new(root.join(".venv/bin/python"))
        .arg(root.join("tests/interop").join(script))
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(output.status.success(), "{script} failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains(passed), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs tritonclient in .venv and openssl; scripts/test installs and runs it"]
async fn triton_clients_over_tls_with_client_certificates_and_api_keys() {
    const KEY: &str = "interop-api-key-0123456789";
    let certs = common::temp_dir("interop-tls");
    common::make_certificates(&certs);
    let mut config = config_with_ort(&bundled_models());
    config.admin_token = Some(Secret(TOKEN.to_owned()));
    config.api_keys = vec![Secret(KEY.to_owned())];
    config.request_limits.max_request_rows = 8;
    config.tls = Some(infergate::config::TlsSettings {
        cert: certs.join("server.pem"),
        key: certs.join("server.key"),
        client_ca: Some(certs.join("ca.pem")),
    });
    let server = infergate::Server::start(config).await.unwrap();
    // Readiness over TLS is part of what the script checks; give the models time to load first.
    let deadline = std::time::Instant::now() + common::READY_TIMEOUT;
    while !server.models().is_ready() {
        assert!(std::time::Instant::now() < deadline, "the models did not load");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let (http, grpc) = (
        format!("localhost:{}", server.http_addr().unwrap().port()),
        format!("localhost:{}", server.grpc_addr().unwrap().port()),
    );
    let args = ["--http", &http, "--grpc", &grpc, "--certs", certs.to_str().unwrap(), "--key", KEY, "--token", TOKEN];
    run_python("secure_clients.py", &args, "secure clients: all checks passed").await;
    server.shutdown();
    server.wait().await.unwrap();
    std::fs::remove_dir_all(&certs).unwrap();
}

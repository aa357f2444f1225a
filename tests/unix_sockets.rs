//! REST and gRPC over Unix domain sockets: curl and Triton's gRPC client unchanged, the socket file's life (mode,
//! stale file replaced, live one refused, removed at the end), and the same keys and drain as over TCP.
#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{TestServer, bundled_models, config_with_ort};
use infergate::config::{Config, Secret};
use infergate::server::{Server, Stopped};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const IRIS: &str = r#"{"inputs":[{"name":"X","shape":[1,4],"datatype":"FP32","data":[5.1,3.5,1.4,0.2]}]}"#;

fn with_sockets(dir: &Path) -> Config {
    Config {
        http_socket: Some(dir.join("http.sock")),
        grpc_socket: Some(dir.join("grpc.sock")),
        ..config_with_ort(&bundled_models())
    }
}

/// One HTTP/1.1 exchange over the socket, the connection closed after it: (status, body).
async fn exchange(socket: &Path, request: &str) -> (u16, String) {
    let mut stream = tokio::net::UnixStream::connect(socket).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).await.unwrap();
    let reply = String::from_utf8(reply).unwrap();
    let status = reply.split(' ').nth(1).unwrap().parse().unwrap();
    let body = reply.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default();
    (status, body)
}

fn infer_request(model: &str, body: &str, extra_headers: &str) -> String {
    format!(
        "POST /v2/models/{model}/infer HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n{extra_headers}\r\n{body}",
        body.len()
    )
}

async fn wait_ready(server: &Server) {
    let deadline = Instant::now() + common::READY_TIMEOUT;
    while !server.models().is_ready() {
        assert!(Instant::now() < deadline, "the models did not load");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn stop(server: Server) {
    server.shutdown();
    assert_eq!(server.wait().await.unwrap(), Stopped::Drained);
}

/// curl's `--unix-socket` and tritonclient's `unix://` targets reach every bundled model with the TCP listeners
/// off; the socket files get the default mode (owner and group) and are gone after the stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs tritonclient in .venv; scripts/test installs and runs it"]
async fn curl_and_tritonclient_grpc_reach_every_model_over_the_sockets() {
    let dir = common::temp_dir("unix-clients");
    let config = Config { sockets_only: true, ..with_sockets(&dir) };
    let server = Server::start(config).await.unwrap();
    assert_eq!((server.http_addr(), server.grpc_addr()), (None, None), "TCP listeners with --sockets-only");
    wait_ready(&server).await;
    let (http, grpc) = (dir.join("http.sock"), dir.join("grpc.sock"));
    for socket in [&http, &grpc] {
        let mode = std::fs::metadata(socket).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o660, "{}", socket.display());
    }
    for file in ["iris_v1.json", "mlp_v1.json", "gbt_v1.json"] {
        let golden = common::golden(file);
        let url = format!("http://localhost/v2/models/{}/versions/{}/infer", golden.model, golden.version);
        let output = tokio::process::Command::new("curl")
            .args(["--silent", "--show-error", "--fail", "--unix-socket", http.to_str().unwrap(), &url])
            .args(["-H", "content-type: application/json", "--data-binary", &golden.request.to_string()])
            .output()
            .await
            .unwrap();
        assert!(output.status.success(), "curl: {}", String::from_utf8_lossy(&output.stderr));
        let reply: Value = serde_json::from_slice(&output.stdout).unwrap();
        common::assert_outputs_match(&reply, &golden.outputs, common::TOLERANCE);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let golden = root.join("tests/golden");
    let output = tokio::process::Command::new(root.join(".venv/bin/python"))
        .arg(root.join("tests/interop/unix_socket_clients.py"))
        .args(["--http-socket", http.to_str().unwrap(), "--grpc-socket", grpc.to_str().unwrap()])
        .args(["--golden", golden.to_str().unwrap()])
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("unix socket clients: all checks passed"), "{stdout}");
    stop(server).await;
    assert!(!http.exists() && !grpc.exists(), "socket files left after the stop");
}

/// A socket file left by a crashed server (bound, never removed) is replaced; the TCP listeners still serve.
#[tokio::test]
async fn a_stale_socket_file_is_replaced() {
    let dir = common::temp_dir("unix-stale");
    let http = dir.join("http.sock");
    drop(std::os::unix::net::UnixListener::bind(&http).unwrap());
    assert!(http.exists(), "the stale file is there");
    let server = Server::start(with_sockets(&dir)).await.unwrap();
    wait_ready(&server).await;
    let (status, body) = exchange(&http, &infer_request("iris", IRIS, "")).await;
    assert_eq!(status, 200, "{body}");
    assert!(server.http_addr().is_some(), "TCP is served beside the socket by default");
    stop(server).await;
}

/// A socket a live server answers on is refused with a clear error, and left working; a path holding a file that
/// is not a socket is never deleted.
#[tokio::test]
async fn a_live_socket_is_refused_and_other_files_are_left_alone() {
    let dir = common::temp_dir("unix-live");
    let first = Server::start(with_sockets(&dir)).await.unwrap();
    let error = Server::start(with_sockets(&dir)).await.unwrap_err().to_string();
    assert!(error.contains("http.sock") && error.contains("another server is listening"), "{error}");
    wait_ready(&first).await;
    let (status, _) = exchange(&dir.join("http.sock"), &infer_request("iris", IRIS, "")).await;
    assert_eq!(status, 200, "the first server lost its socket");
    stop(first).await;

    let other = common::temp_dir("unix-not-a-socket");
    std::fs::write(other.join("http.sock"), b"precious").unwrap();
    let error = Server::start(with_sockets(&other)).await.unwrap_err().to_string();
    assert!(error.contains("not a socket"), "{error}");
    assert_eq!(std::fs::read(other.join("http.sock")).unwrap(), b"precious");
}

/// The mode is settable; API keys hold over the socket as over TCP.
#[tokio::test]
async fn the_socket_mode_is_set_and_keys_are_required() {
    const KEY: &str = "unix-socket-api-key-0123456789";
    let dir = common::temp_dir("unix-keys");
    let config = Config { socket_mode: 0o600, api_keys: vec![Secret(KEY.to_owned())], ..with_sockets(&dir) };
    let server = Server::start(config).await.unwrap();
    wait_ready(&server).await;
    let http = dir.join("http.sock");
    assert_eq!(std::fs::metadata(&http).unwrap().permissions().mode() & 0o777, 0o600);
    let (status, body) = exchange(&http, &infer_request("iris", IRIS, "")).await;
    assert_eq!(status, 401, "{body}");
    let (status, body) = exchange(&http, &infer_request("iris", IRIS, &format!("x-api-key: {KEY}\r\n"))).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = exchange(&http, &infer_request("nope", IRIS, &format!("x-api-key: {KEY}\r\n"))).await;
    assert_eq!(status, 404, "{body}");
    stop(server).await;
}

/// A request arriving over the socket when the stop begins (its body half sent) is answered before the server
/// ends, and the file goes only then.
#[tokio::test]
async fn the_drain_answers_a_request_in_flight_on_the_socket() {
    let dir = common::temp_dir("unix-drain");
    let server = TestServer::start(with_sockets(&dir)).await;
    let http: PathBuf = dir.join("http.sock");
    let mut stream = tokio::net::UnixStream::connect(&http).await.unwrap();
    let request = infer_request("iris", IRIS, "");
    let half = request.len() - IRIS.len() / 2;
    stream.write_all(&request.as_bytes()[..half]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    server.server.shutdown();
    let wait = tokio::spawn(server.server.wait());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!wait.is_finished(), "the server stopped with a request still arriving");
    assert!(http.exists(), "the socket file went before the drain ended");
    stream.write_all(&request.as_bytes()[half..]).await.unwrap();
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).await.unwrap();
    assert!(reply.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&reply));
    assert_eq!(wait.await.unwrap().unwrap(), Stopped::Drained);
    assert!(!http.exists(), "the socket file is left after the stop");
}

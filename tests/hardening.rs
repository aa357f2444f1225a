//! What clients and model files may throw at the server: silent and trickling connections, too many of them,
//! slow bodies, requests past the limits, calls without keys, hostile or broken model files. Each test starts a
//! real server on 127.0.0.1, port 0, and checks that the good requests keep being answered.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{TestServer, bundled_models, config, copy_model, iris_rows, temp_dir};
use infergate::config::{ConnectionLimits, RequestLimits, Secret};
use prost::Message;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tract_onnx::pb;

const ADMIN: &str = "hardening-admin-token-0123456789";
const KEY: &str = "hardening-api-key-0123456789";

fn limits(max_connections: usize) -> ConnectionLimits {
    ConnectionLimits {
        max_connections,
        header_read_timeout: Duration::from_millis(800),
        body_read_timeout: Duration::from_millis(800),
        max_concurrent_streams: 64,
    }
}

/// Waits until the server closes the connection (EOF or reset); returns how long that took.
async fn closed_after(mut stream: TcpStream, started: Instant) -> Duration {
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return started.elapsed(),
            Ok(Ok(_)) => {}
            Err(_) => panic!("the connection was still open after 10 s"),
        }
    }
}

/// Sends `bytes` one at a time, `every` apart, until the server stops taking them.
fn trickle(mut stream: TcpStream, bytes: &'static [u8], every: Duration) -> tokio::task::JoinHandle<Duration> {
    tokio::spawn(async move {
        let started = Instant::now();
        for byte in bytes.iter().cycle() {
            if stream.write_all(&[*byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(every).await;
            if started.elapsed() > Duration::from_secs(10) {
                panic!("a trickling client was still connected after 10 s");
            }
        }
        started.elapsed()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_trickling_clients_are_cut_off_while_others_are_served() {
    let server = TestServer::start(infergate::Config { connections: limits(256), ..config(&bundled_models()) }).await;
    let (http, grpc) = (server.server.http_addr().unwrap(), server.server.grpc_addr().unwrap());
    let started = Instant::now();
    let mut silent = Vec::new();
    let mut trickling = Vec::new();
    for _ in 0..20 {
        silent.push(tokio::spawn(closed_after(TcpStream::connect(http).await.unwrap(), started)));
        silent.push(tokio::spawn(closed_after(TcpStream::connect(grpc).await.unwrap(), started)));
        let every = Duration::from_millis(50);
        trickling.push(trickle(
            TcpStream::connect(http).await.unwrap(),
            b"GET /v2/health/live HTTP/1.1\r\nX-A: b",
            every,
        ));
        trickling.push(trickle(TcpStream::connect(grpc).await.unwrap(), b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", every));
    }
    // Meanwhile a good client is answered at once, again and again.
    for _ in 0..20 {
        let asked = Instant::now();
        let (status, _) = server.post_json("/v2/models/iris/infer", &iris_rows(2)).await;
        assert_eq!(status, 200);
        assert!(asked.elapsed() < Duration::from_millis(500), "a good request waited {:?}", asked.elapsed());
    }
    for task in silent.into_iter().chain(trickling) {
        let closed = task.await.unwrap();
        assert!(closed >= Duration::from_millis(700) && closed < Duration::from_secs(5), "closed after {closed:?}");
    }

    // A body trickled slower than the body timeout is answered 408, naming the setting.
    let mut slow_body = TcpStream::connect(http).await.unwrap();
    slow_body
        .write_all(b"POST /v2/models/iris/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
        .await
        .unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(5), slow_body.read_to_string(&mut answer)).await.unwrap().unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("--body-read-timeout-secs"), "{answer}");
    let (status, _) = server.post_json("/v2/models/iris/infer", &iris_rows(2)).await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_cap_wait_instead_of_failing() {
    let server = TestServer::start(infergate::Config { connections: limits(4), ..config(&bundled_models()) }).await;
    let http = server.server.http_addr().unwrap();
    // The ready check's keep-alive connection holds a slot until its idle deadline; let it go first.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let started = Instant::now();
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(tokio::spawn(closed_after(TcpStream::connect(http).await.unwrap(), started)));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The fifth client is accepted once a silent one is cut off, and answered then.
    let client = reqwest::Client::new();
    let response = client.post(server.url("/v2/models/iris/infer")).json(&iris_rows(1)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(600), "answered after {waited:?}, before any slot was free");
    for task in held {
        task.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_past_the_limits_are_refused_naming_the_limit() {
    let request_limits =
        RequestLimits { max_tensor_elements: 20, max_request_elements: 20, max_request_rows: 4, max_bytes_element: 16 };
    let server =
        TestServer::start(infergate::Config { request_limits, max_request_bytes: 4096, ..config(&bundled_models()) })
            .await;
    let (status, body) = server.post_json("/v2/models/iris/infer", &iris_rows(6)).await;
    assert_eq!(status, 413, "{body}");
    assert!(body["error"].as_str().unwrap().contains("--max-tensor-elements"), "{body}");
    let (status, body) = server.post_json("/v2/models/iris/infer", &iris_rows(4)).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = server.post_raw("/v2/models/iris/infer", vec![b' '; 5000]).await;
    assert_eq!(status, 413, "{body}");
    assert!(body["error"].as_str().unwrap().contains("4096 bytes"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_guard_inference_and_the_admin_token_guards_management() {
    let server = TestServer::start(infergate::Config {
        api_keys: vec![Secret(KEY.to_owned())],
        admin_token: Some(Secret(ADMIN.to_owned())),
        ..config(&bundled_models())
    })
    .await;
    let client = &server.client;
    let status = |response: reqwest::Response| response.status().as_u16();
    // Health is always open.
    for path in ["/v2/health/live", "/v2/health/ready", "/v2/models/iris/ready"] {
        assert_eq!(status(client.get(server.url(path)).send().await.unwrap()), 200, "{path}");
    }
    let infer = || client.post(server.url("/v2/models/iris/infer")).json(&iris_rows(1));
    let missing = infer().send().await.unwrap();
    assert_eq!(missing.status(), 401);
    assert_eq!(missing.headers()["www-authenticate"], "Bearer");
    assert_eq!(status(infer().bearer_auth("not-the-key-0123456789").send().await.unwrap()), 401);
    assert_eq!(status(infer().bearer_auth(KEY).send().await.unwrap()), 200);
    assert_eq!(status(infer().header("x-api-key", KEY).send().await.unwrap()), 200);
    for path in ["/v2", "/v2/models/iris", "/v2/models/iris/config", "/v2/models/stats", "/v2/models/iris/traffic"] {
        assert_eq!(status(client.get(server.url(path)).send().await.unwrap()), 401, "{path}");
        assert_eq!(status(client.get(server.url(path)).header("x-api-key", KEY).send().await.unwrap()), 200, "{path}");
    }
    // An API key does not manage models; the admin token does.
    let load = || client.post(server.url("/v2/repository/models/iris/load"));
    assert_eq!(status(load().bearer_auth(KEY).send().await.unwrap()), 401);
    assert_eq!(status(load().bearer_auth(ADMIN).send().await.unwrap()), 200);
    let policy = json!({"variants": [{"name": "a", "version": 1, "weight": 1}]});
    let put = client.put(server.url("/v2/models/iris/traffic")).header("x-api-key", KEY).json(&policy);
    assert_eq!(status(put.send().await.unwrap()), 401);
    // Neither secret reaches the metrics.
    let metrics = common::scrape(&server).await;
    assert!(!metrics.contains(KEY) && !metrics.contains(ADMIN));
}

/// A model file of `source` whose first initializer is rewritten by `change`.
fn rewritten(source: &str, change: impl FnOnce(&mut pb::TensorProto)) -> Vec<u8> {
    let bytes = std::fs::read(bundled_models().join(source)).unwrap();
    let mut model = pb::ModelProto::decode(bytes.as_slice()).unwrap();
    let graph = model.graph.as_mut().unwrap();
    change(graph.initializer.first_mut().expect("the model has initializers"));
    model.encode_to_vec()
}

fn external(location: &str) -> impl FnOnce(&mut pb::TensorProto) {
    let location = location.to_owned();
    move |tensor| {
        let size = tensor.raw_data.len() + 4 * tensor.float_data.len();
        tensor.raw_data.clear();
        tensor.float_data.clear();
        tensor.data_location = Some(pb::tensor_proto::DataLocation::External as i32);
        let entry = |key: &str, value: String| pb::StringStringEntryProto { key: key.to_owned(), value };
        tensor.external_data = vec![entry("location", location), entry("length", size.to_string())];
    }
}

async fn reason(server: &TestServer, model: &str) -> String {
    let response = server.client.post(server.url("/v2/repository/index")).body("{}").send().await.unwrap();
    let rows: Vec<Value> = response.json().await.unwrap();
    let row =
        rows.iter().find(|row| row["name"] == model && row["version"] == "1").unwrap_or_else(|| panic!("{rows:?}"));
    assert_eq!(row["state"], "UNAVAILABLE", "{row}");
    row["reason"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_and_broken_model_files_are_refused_with_a_reason() {
    let root = temp_dir("hostile-models");
    copy_model(&root, "iris", 1, "iris/1/model.onnx");
    let write = |model: &str, bytes: &[u8]| {
        let dir = root.join(model).join("1");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("model.onnx"), bytes).unwrap();
        dir
    };
    write("escape", &rewritten("mlp/1/model.onnx", external("../../../../etc/passwd")));
    write("absolute", &rewritten("mlp/1/model.onnx", external("/etc/passwd")));
    let linked = write("linked", &rewritten("mlp/1/model.onnx", external("weights.bin")));
    std::os::unix::fs::symlink("/etc/hostname", linked.join("weights.bin")).unwrap();
    write("huge", &rewritten("mlp/1/model.onnx", |tensor| tensor.dims = vec![1 << 20, 1 << 20, 1 << 10]));
    write("overflow", &rewritten("mlp/1/model.onnx", |tensor| tensor.dims = vec![i64::MAX, i64::MAX]));
    let mlp = std::fs::read(bundled_models().join("mlp/1/model.onnx")).unwrap();
    write("truncated", &mlp[..mlp.len() / 2]);
    write("budget", &mlp);
    std::fs::write(root.join("budget/model.toml"), "max_model_bytes = 1000\n").unwrap();
    write("garbage", b"\xff\xfe not an onnx file at all");

    let server = TestServer::start(config(&root)).await;
    let (status, _) = server.post_json("/v2/models/iris/infer", &iris_rows(2)).await;
    assert_eq!(status, 200);
    for (model, expected) in [
        ("escape", "outside the version's folder"),
        ("absolute", "outside the version's folder"),
        ("linked", "links outside the version's folder"),
        ("huge", "more than the budget of 8589934592"),
        ("overflow", "impossible shape"),
        ("truncated", "not a valid ONNX file"),
        ("budget", "more than the budget of 1000 (max_model_bytes"),
        ("garbage", "not a valid ONNX file"),
    ] {
        let reason = reason(&server, model).await;
        assert!(reason.contains(expected), "{model}: {reason}");
        let (status, _) = server.post_json(&format!("/v2/models/{model}/infer"), &iris_rows(1)).await;
        assert_eq!(status, 503, "{model}");
    }
    std::fs::remove_dir_all(&root).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_client_certificates_on_rest() {
    let dir = temp_dir("tls");
    common::make_certificates(&dir);
    let tls = infergate::config::TlsSettings {
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
        client_ca: Some(dir.join("ca.pem")),
    };
    let server =
        infergate::Server::start(infergate::Config { tls: Some(tls), ..config(&bundled_models()) }).await.unwrap();
    let url = format!("https://{}/v2/models/iris/infer", server.http_addr().unwrap());
    let ca = reqwest::Certificate::from_pem(&std::fs::read(dir.join("ca.pem")).unwrap()).unwrap();
    let identity =
        [std::fs::read(dir.join("client.pem")).unwrap(), std::fs::read(dir.join("client.key")).unwrap()].concat();
    let trusted = reqwest::Client::builder()
        .add_root_certificate(ca.clone())
        .identity(reqwest::Identity::from_pem(&identity).unwrap())
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let response = trusted.post(&url).json(&iris_rows(3)).send().await.unwrap();
        if response.status() == 200 {
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["model_name"], "iris");
            break;
        }
        assert!(Instant::now() < deadline, "iris never answered over TLS");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // No client certificate: the handshake fails. Plain HTTP on the TLS port: no answer.
    let anonymous = reqwest::Client::builder().add_root_certificate(ca).build().unwrap();
    assert!(anonymous.post(&url).json(&iris_rows(1)).send().await.is_err());
    let plain = format!("http://{}/v2/health/live", server.http_addr().unwrap());
    assert!(reqwest::Client::new().get(plain).send().await.is_err());
    server.shutdown();
    server.wait().await.unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

//! Graceful shutdown, and the binary's command line: refusals at start, SIGTERM handling.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::TestServer;
use infergate::server::Stopped;
use serde_json::json;

/// A state directory that cannot be written (here below a file; in a pod, a read-only root with no volume there)
/// stops the start with the path and the cause, before any listener is bound.
#[tokio::test]
async fn an_unwritable_state_directory_fails_the_start() {
    let root = common::temp_dir("unwritable-state");
    let file = root.join("a-file");
    std::fs::write(&file, b"").unwrap();
    let config =
        infergate::config::Config { state_dir: Some(file.join("state")), ..common::config(&common::bundled_models()) };
    let error = infergate::server::Server::start(config).await.unwrap_err().to_string();
    assert!(error.contains("state directory") && error.contains("a-file/state"), "{error}");
    assert!(error.contains("give it a writable volume"), "{error}");
}

/// A request still arriving when shutdown begins (its body half sent) keeps the server waiting, and is answered.
/// The idle gRPC listener ends at once on shutdown: that must not end the wait. Repeated, as which listener's end
/// is seen first is a race.
#[tokio::test]
async fn the_wait_outlasts_an_idle_listener_while_a_request_arrives() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = br#"{"inputs":[{"name":"X","shape":[1,4],"datatype":"FP32","data":[5.1,3.5,1.4,0.2]}]}"#;
    let head = format!("POST /v2/models/iris/infer HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n\r\n", body.len());
    for round in 0..8 {
        let server = TestServer::bundled().await;
        let mut stream = tokio::net::TcpStream::connect(server.server.http_addr().unwrap()).await.unwrap();
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(&body[..body.len() / 2]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        server.server.shutdown();
        let wait = tokio::spawn(server.server.wait());
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!wait.is_finished(), "round {round}: the server stopped with a request still arriving");
        stream.write_all(&body[body.len() / 2..]).await.unwrap();
        let mut reply = Vec::new();
        stream.read_to_end(&mut reply).await.unwrap();
        assert!(reply.starts_with(b"HTTP/1.1 200"), "round {round}: {}", String::from_utf8_lossy(&reply));
        assert_eq!(wait.await.unwrap().unwrap(), Stopped::Drained);
    }
}

#[tokio::test]
async fn shutdown_drains_an_in_flight_request() {
    let root = common::temp_dir("shutdown-drain");
    common::copy_fixture(&root, "slow", 1, "slow/1/model.onnx");
    let server = TestServer::start(common::config_with_ort(&root)).await;
    let client = server.client.clone();
    let url = server.url("/v2/models/slow/infer");
    let body = serde_json::to_vec(&common::slow_rows(1000)).unwrap();
    let in_flight = tokio::spawn(async move {
        let started = Instant::now();
        let response = client.post(url).body(body).send().await.unwrap();
        let status = response.status().as_u16();
        let reply: serde_json::Value = response.json().await.unwrap();
        (status, reply, started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!in_flight.is_finished(), "the slow request finished before shutdown; make it slower");

    let addr = server.server.http_addr().unwrap();
    server.server.shutdown();
    // New connections are refused while the in-flight request finishes.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "still accepting after shutdown");

    let stopped = server.server.wait().await.unwrap();
    assert_eq!(stopped, Stopped::Drained);
    let (status, reply, took) = in_flight.await.unwrap();
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["outputs"][0]["shape"], json!([1000, 256]));
    assert!(took > Duration::from_millis(300));
    std::fs::remove_dir_all(&root).unwrap();
}

fn infergate() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_infergate"));
    command.current_dir(env!("CARGO_MANIFEST_DIR"));
    for (key, _) in std::env::vars() {
        if key.starts_with("INFERGATE_") {
            command.env_remove(key);
        }
    }
    command
}

/// Arguments, environment variables, and what the refusal must say.
type RefusalCase = (&'static [&'static str], &'static [(&'static str, &'static str)], &'static str);

#[test]
fn invalid_configurations_are_refused_at_start() {
    let cases: [RefusalCase; 5] = [
        (&["--http-port", "9000", "--grpc-port", "9000"], &[], "--http-port and --grpc-port are both set to port 9000"),
        (&["serve", "--model-repository", "/nonexistent/models"], &[], "model repository /nonexistent/models"),
        (&["--max-request-bytes", "0"], &[], "--max-request-bytes must be between 1"),
        (&[], &[("INFERGATE_METRICS_PORT", "8000")], "--http-port and --metrics-port are both set to port 8000"),
        (&["--config", "/nonexistent/server.toml"], &[], "cannot read config file /nonexistent/server.toml"),
    ];
    for (args, env, message) in cases {
        let output = infergate().args(args).envs(env.iter().copied()).output().unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }
    let output = infergate().args(["--log-format", "xml"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
}

/// Kills the child if the test ends before it does (a failed assertion), so no server outlives its test holding the
/// test's output pipes open.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[test]
fn sigterm_stops_the_binary_cleanly() {
    let child = infergate()
        .args(["serve", "--host", "127.0.0.1", "--http-port", "0", "--grpc-port", "0", "--metrics-port", "0"])
        .args(["--log-format", "json"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    // A server that hangs without a word is killed after two minutes, which ends the reads below.
    let pid = child.0.id().to_string();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(120));
        let _ = Command::new("kill").args(["-KILL", &pid]).status();
    });
    let mut lines = BufReader::new(child.0.stderr.take().unwrap()).lines();
    // A log line names the bound address (after the backends found); every line is JSON.
    let listening = lines
        .by_ref()
        .map(|line| serde_json::from_str::<serde_json::Value>(&line.unwrap()).unwrap())
        .find(|line| line["message"] == "infergate listening")
        .unwrap();
    let addr = listening["http_addr"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let line = lines.next().unwrap().unwrap();
        let event: serde_json::Value = serde_json::from_str(&line).unwrap();
        if event["message"] == "model repository loaded" {
            break;
        }
        assert!(Instant::now() < deadline, "never loaded");
    }
    assert!(std::net::TcpStream::connect(&addr).is_ok());
    let status = Command::new("kill").args(["-TERM", &child.0.id().to_string()]).status().unwrap();
    assert!(status.success());
    let exit = child.0.wait().unwrap();
    assert_eq!(exit.code(), Some(0));
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(rest.iter().any(|l| l.contains("SIGTERM received")), "{rest:?}");
}

#[test]
fn a_busy_port_is_a_clear_startup_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let output = infergate()
        .args(["--host", "127.0.0.1", "--http-port", "0", "--grpc-port", "0", "--metrics-port", &port])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&format!("cannot listen on 127.0.0.1:{port} (metrics)")), "{stderr}");
}

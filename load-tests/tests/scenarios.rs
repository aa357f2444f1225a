//! The CI scenario (`scenarios/ci.toml`) against a real infergate on port 0 serving the bundled models, over REST
//! (JSON and binary) and gRPC (unary and streaming): `loadgen` must exit 0 (every expectation held), and its JSON
//! report must hold what it claims. The server runs in this process, so `--server-pid` samples it. Also every
//! protocol over Unix sockets, the overload scenario (shedding with a bounded p99, then recovery) and the one-minute
//! soak. The tests run one at a time: each measures latency or the process's growth, which a neighbour's load would
//! distort.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use infergate::config::{ModelControlMode, Secret};
use infergate::{Config, Server};
use infergate_load_tests::endpoint::Endpoint;
use infergate_load_tests::http1;
use serde_json::Value;

const TOKEN: &str = "load-test-admin-token-0123456789";

/// Held by each test for its whole run.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn bundled_models() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().join("models")
}

fn scenario(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios").join(name)
}

async fn start() -> Server {
    start_on(&bundled_models()).await
}

async fn start_on(repository: &Path) -> Server {
    let config = config(repository);
    config.validate().unwrap();
    let server = Server::start(config).await.unwrap();
    let ready = format!("{}/v2/health/ready", rest_url(&server));
    let deadline = Instant::now() + Duration::from_secs(120);
    while !reqwest::get(&ready).await.is_ok_and(|r| r.status() == 200) {
        assert!(Instant::now() < deadline, "not ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server
}

/// A server on port 0 serving `repository`, with the admin token.
fn config(repository: &Path) -> Config {
    // Each server its own state folder: the comparison test runs two at once.
    static STARTED: AtomicUsize = AtomicUsize::new(0);
    let number = STARTED.fetch_add(1, Ordering::Relaxed);
    let state = std::env::temp_dir().join(format!("infergate-load-tests-{}-{number}", std::process::id()));
    Config {
        model_repository: repository.to_owned(),
        http_host: "127.0.0.1".parse().unwrap(),
        grpc_host: "127.0.0.1".parse().unwrap(),
        metrics_host: "127.0.0.1".parse().unwrap(),
        http_port: 0,
        grpc_port: 0,
        metrics_port: 0,
        model_control_mode: ModelControlMode::None,
        admin_token: Some(Secret(TOKEN.to_owned())),
        state_dir: Some(state),
        ..Config::default()
    }
}

/// The REST base URL of a server listening on TCP.
fn rest_url(server: &Server) -> String {
    format!("http://{}", server.http_addr().unwrap())
}

/// The gRPC URL of a server listening on TCP.
fn grpc_url(server: &Server) -> String {
    format!("http://{}", server.grpc_addr().unwrap())
}

/// Runs loadgen with `--json` against the server: whether it exited 0, its JSON figures, its stderr.
async fn loadgen(server: &Server, args: &[&str]) -> (bool, Value, String) {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_loadgen"));
    command
        .args(["--url", &rest_url(server)])
        .args(["--grpc-url", &grpc_url(server)])
        .args(args)
        .arg("--json")
        .env("INFERGATE_ADMIN_TOKEN", TOKEN);
    let output = command.output().await.unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let figures = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("no JSON figures ({e}): {stderr}"));
    (output.status.success(), figures, stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ci_scenario_passes_on_every_protocol() {
    let _serial = SERIAL.lock().await;
    let server = start().await;
    let file = scenario("ci.toml");
    let pid = std::process::id().to_string();
    for protocol in ["rest-json", "rest-binary", "grpc", "grpc-stream"] {
        let args = ["--scenario", file.to_str().unwrap(), "--protocol", protocol, "--server-pid", &pid];
        let (passed, report, stderr) = loadgen(&server, &args).await;
        assert!(passed, "{protocol}: {stderr}");
        assert_eq!(report["passed"], true);
        let open = &report["phases"][1];
        assert_eq!(open["protocol"], protocol);
        // 300 req/s for 3 s, all answered.
        assert_eq!(open["requests"], 900, "{protocol}: {open}");
        assert_eq!(open["ok"], 900);
        assert!(report["total"]["p99_us"].as_u64().unwrap() > 0);
        assert_eq!(report["actions"][0]["status"], 200, "{protocol}: the reload during the load");
        assert!(report["samples"].as_array().unwrap().len() >= 5, "{protocol}: process samples");
    }
    server.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_expectations_and_errors_are_reported() {
    let _serial = SERIAL.lock().await;
    let server = start().await;
    let dir = std::env::temp_dir().join(format!("infergate-load-tests-scenario-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // An unknown model: every request fails with 404, so the error-rate bound fails and loadgen exits 1.
    let scenario = dir.join("impossible.toml");
    std::fs::write(
        &scenario,
        "name = \"impossible\"\nconcurrency = 2\n[[phase]]\nname = \"p\"\nseconds = 1\n[expect]\nmax_error_rate = 0.0\nmax_p99_ms = 0.0001\n",
    )
    .unwrap();
    let body = dir.join("body.json");
    std::fs::write(&body, r#"{"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}"#)
        .unwrap();
    let args = ["--scenario", scenario.to_str().unwrap(), "--model", "missing", "--body", body.to_str().unwrap()];
    let (passed, report, stderr) = loadgen(&server, &args).await;
    assert!(!passed, "{stderr}");
    assert_eq!(report["passed"], false);
    assert!(report["total"]["errors_by_kind"]["http 404"].as_u64().unwrap() > 0, "{report}");
    assert!(stderr.contains("FAILED total: error rate"), "{stderr}");

    // One run from flags prints one line of figures, as the scripts read them.
    let args = ["--model", "iris", "--protocol", "grpc", "--duration", "1", "--warmup", "0.2", "--rate", "200"];
    let (passed, run, stderr) = loadgen(&server, &args).await;
    assert!(passed, "{stderr}");
    assert_eq!((run["requests"].as_u64(), run["errors"].as_u64()), (Some(200), Some(0)), "{run}");
    std::fs::remove_dir_all(&dir).unwrap();
    server.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_weighted_split_is_seen_in_the_answers() {
    let _serial = SERIAL.lock().await;
    let server = start().await;
    let dir = std::env::temp_dir().join(format!("infergate-load-tests-split-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // The bundled ab-split scenario, shorter and slower for CI: set 70/30 over iris' two versions, check the
    // shares of the answers' variants, remove the policy.
    let bundled = std::fs::read_to_string(scenario("ab-split.toml")).unwrap();
    let scenario = dir.join("ab-split.toml");
    std::fs::write(&scenario, bundled.replace("seconds = 10\nrate = 2000", "seconds = 4\nrate = 500")).unwrap();
    for protocol in ["rest-json", "grpc"] {
        let args = ["--scenario", scenario.to_str().unwrap(), "--protocol", protocol];
        let (passed, report, stderr) = loadgen(&server, &args).await;
        assert!(passed, "{protocol}: {stderr}");
        let split = &report["phases"][1];
        assert_eq!(split["requests"], 2000, "{protocol}: {split}");
        let shares = &split["variants"];
        assert!((shares["v1"].as_f64().unwrap() - 0.7).abs() < 0.03, "{protocol}: {shares}");
        let statuses: Vec<&Value> = report["actions"].as_array().unwrap().iter().map(|a| &a["status"]).collect();
        assert_eq!(statuses, [200, 200], "{protocol}: the policy set and removed");
    }
    std::fs::remove_dir_all(&dir).unwrap();
    server.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_compared_side_by_side_share_the_requests() {
    let _serial = SERIAL.lock().await;
    let (first, second) = (start().await, start().await);
    for protocol in ["rest-binary", "grpc"] {
        let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_loadgen"))
            .args(["--url", &rest_url(&first)])
            .args(["--grpc-url", &grpc_url(&first)])
            .args(["--compare-url", &rest_url(&second)])
            .args(["--compare-grpc-url", &grpc_url(&second)])
            .args(["--label", "first", "--compare-label", "second", "--model", "iris", "--protocol", protocol])
            .args(["--concurrency", "2", "--duration", "1", "--warmup", "0.2", "--json"])
            .output()
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{protocol}: {stderr}");
        let figures: Vec<Value> =
            String::from_utf8_lossy(&output.stdout).lines().map(|line| serde_json::from_str(line).unwrap()).collect();
        let labels: Vec<&Value> = figures.iter().map(|f| &f["label"]).collect();
        assert_eq!(labels, ["first", "second"], "{protocol}: {stderr}");
        // Each caller alternates, so the sides' counts differ by at most one request per caller.
        let counts: Vec<u64> = figures.iter().map(|f| f["requests"].as_u64().unwrap()).collect();
        assert!(counts[0] > 50 && counts[0].abs_diff(counts[1]) <= 2, "{protocol}: {counts:?}");
        for side in &figures {
            assert_eq!((side["ok"].as_u64(), side["errors"].as_u64()), (side["requests"].as_u64(), Some(0)), "{side}");
            assert!(side["p99_us"].as_u64().unwrap() > 0, "{side}");
        }
    }
    // gRPC needs the second server's gRPC endpoint named: without it, loadgen refuses to start.
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(["--url", &rest_url(&first)])
        .args(["--compare-url", &rest_url(&second)])
        .args(["--model", "iris", "--protocol", "grpc", "--duration", "1"])
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--compare-grpc-url"));
    first.shutdown();
    second.shutdown();
}

/// A server serving REST and gRPC on Unix sockets in `dir` only, once it is ready.
async fn start_on_sockets(dir: &Path) -> Server {
    let (http, grpc) = (dir.join("http.sock"), dir.join("grpc.sock"));
    let config = Config {
        http_socket: Some(http.clone()),
        grpc_socket: Some(grpc),
        sockets_only: true,
        ..config(&bundled_models())
    };
    config.validate().unwrap();
    let server = Server::start(config).await.unwrap();
    let rest = Endpoint::Unix(http);
    let deadline = Instant::now() + Duration::from_secs(120);
    while !http1::once(&rest, "GET", "/v2/health/ready", &[], b"").await.is_ok_and(|a| a.status == 200) {
        assert!(Instant::now() < deadline, "not ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_protocol_reaches_a_server_on_unix_sockets_only() {
    let _serial = SERIAL.lock().await;
    let dir = std::env::temp_dir().join(format!("infergate-load-tests-sockets-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // No TCP listener for REST or gRPC: an answer can only have come over a socket.
    let server = start_on_sockets(&dir).await;
    let (http, grpc) = (dir.join("http.sock"), dir.join("grpc.sock"));
    let by_flag = ["--http-socket", http.to_str().unwrap(), "--grpc-socket", grpc.to_str().unwrap()];
    let (http_url, grpc_url) = (format!("unix://{}", http.display()), format!("unix:{}", grpc.display()));
    let by_url = ["--url", &http_url, "--grpc-url", &grpc_url];
    for (protocol, endpoints) in
        [("rest-json", by_flag), ("rest-binary", by_url), ("grpc", by_flag), ("grpc-stream", by_url)]
    {
        let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_loadgen"))
            .args(endpoints)
            .args(["--model", "iris", "--protocol", protocol, "--concurrency", "2", "--duration", "1"])
            .args(["--warmup", "0.2", "--json"])
            .output()
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{protocol}: {stderr}");
        let run: Value =
            serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("{protocol} ({e}): {stderr}"));
        assert_eq!(run["protocol"], protocol);
        assert!(run["requests"].as_u64().unwrap() > 0, "{protocol}: {run}");
        assert_eq!((run["ok"].as_u64(), run["errors"].as_u64()), (run["requests"].as_u64(), Some(0)), "{run}");
    }
    // A socket and a TCP address for the same API are refused.
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(["--url", "http://127.0.0.1:1", "--http-socket", http.to_str().unwrap(), "--model", "iris"])
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", String::from_utf8_lossy(&output.stderr));
    server.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Prints a report's per-phase figures and process samples, for the test log.
fn print_report(name: &str, report: &Value) {
    for phase in report["phases"].as_array().unwrap() {
        println!(
            "{name} {}: {} requests, {} ok, shed {}, p50 {} us, p99 {} us, {:.0} req/s",
            phase["label"],
            phase["requests"],
            phase["ok"],
            phase["shed"],
            phase["p50_us"],
            phase["p99_us"],
            phase["requests_per_second"].as_f64().unwrap_or_default()
        );
    }
    for sample in report["samples"].as_array().into_iter().flatten() {
        println!(
            "{name} sample at {:.0} s: RSS {:.1} MB, {} threads, {} descriptors",
            sample["at"].as_f64().unwrap(),
            sample["rss_bytes"].as_f64().unwrap() / 1e6,
            sample["threads"],
            sample["open_fds"]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_is_shed_with_a_bounded_p99_and_the_server_recovers() {
    let _serial = SERIAL.lock().await;
    // iris with a bounded queue, as the scenario asks.
    let repository = std::env::temp_dir().join(format!("infergate-load-tests-overload-{}", std::process::id()));
    for version in ["1", "2"] {
        std::fs::create_dir_all(repository.join("iris").join(version)).unwrap();
        let file = Path::new("iris").join(version).join("model.onnx");
        std::fs::copy(bundled_models().join(&file), repository.join(&file)).unwrap();
    }
    let toml = std::fs::read_to_string(bundled_models().join("iris/model.toml")).unwrap();
    std::fs::write(repository.join("iris/model.toml"), toml + "\n[batching]\nmax_queue_size = 64\n").unwrap();
    let server = start_on(&repository).await;
    let file = scenario("overload.toml");
    let args = ["--scenario", file.to_str().unwrap(), "--protocol", "rest-json"];
    let (passed, report, stderr) = loadgen(&server, &args).await;
    print_report("overload", &report);
    assert!(passed, "{stderr}");
    let phase = |name: &str| report["phases"].as_array().unwrap().iter().find(|p| p["label"] == name).unwrap();
    assert!(phase("overload")["shed"].as_u64().unwrap() > 0);
    assert_eq!(phase("recovered")["shed"], 0);
    server.shutdown();
    std::fs::remove_dir_all(&repository).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minute_of_swaps_and_splits_under_load_loses_nothing_and_grows_nothing() {
    let _serial = SERIAL.lock().await;
    let server = start().await;
    let pid = std::process::id().to_string();
    let file = scenario("soak-ci.toml");
    let args = ["--scenario", file.to_str().unwrap(), "--protocol", "rest-json", "--server-pid", &pid];
    let (passed, report, stderr) = loadgen(&server, &args).await;
    print_report("soak-ci", &report);
    assert!(passed, "{stderr}");
    let soak = &report["phases"][1];
    assert_eq!(soak["requests"], 18_000, "{soak}");
    assert_eq!(soak["ok"], 18_000, "{soak}");
    let actions = report["actions"].as_array().unwrap();
    assert!(actions.len() >= 35, "{} actions", actions.len());
    assert!(actions.iter().all(|a| a["status"] == 200), "{actions:?}");
    server.shutdown();
}

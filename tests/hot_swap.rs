//! Versions change while serving: the repository is watched, new versions load once complete, broken ones never
//! replace a serving one, and swaps under load fail no request.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{TestServer, config, copy_model, temp_dir};
use infergate::config::{Config, ModelControlMode};
use serde_json::{Value, json};

const POLL: Duration = Duration::from_millis(200);

fn polling(root: &Path) -> Config {
    let settle = Duration::from_secs(1);
    Config {
        model_control_mode: ModelControlMode::Poll,
        repository_poll: POLL,
        repository_settle: settle,
        ..config(root)
    }
}

fn mlp_request() -> Value {
    json!({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": vec![0.25f32; 64]}]})
}

/// The version unversioned requests reach now.
async fn serving_version(server: &TestServer) -> Option<String> {
    let (status, body) = server.post_json("/v2/models/m/infer", &mlp_request()).await;
    (status == 200).then(|| body["model_version"].as_str().unwrap().to_owned())
}

/// Waits until `check` holds, polling; fails after `timeout`.
async fn eventually<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn index_state(server: &TestServer, version: &str) -> Option<(String, String)> {
    let index: Value =
        server.client.post(server.url("/v2/repository/index")).send().await.unwrap().json().await.unwrap();
    index
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row["name"] == "m" && row["version"] == version)
        .map(|row| (row["state"].as_str().unwrap().to_owned(), row["reason"].as_str().unwrap_or_default().to_owned()))
}

#[tokio::test]
async fn new_versions_load_and_broken_ones_never_replace_a_serving_one() {
    let root = temp_dir("watch-broken");
    copy_model(&root, "m", 1, "mlp/1/model.onnx");
    let server = TestServer::start(polling(&root)).await;
    assert_eq!(serving_version(&server).await.as_deref(), Some("1"));

    // A truncated model file: refused, and version 1 keeps serving.
    let good = std::fs::read(common::bundled_models().join("mlp/1/model.onnx")).unwrap();
    std::fs::create_dir_all(root.join("m/2")).unwrap();
    std::fs::write(root.join("m/2/model.onnx"), &good[..good.len() / 2]).unwrap();
    eventually("the truncated version 2 is refused", Duration::from_secs(10), || async {
        index_state(&server, "2").await.is_some_and(|(state, _)| state == "UNAVAILABLE")
    })
    .await;
    assert_eq!(serving_version(&server).await.as_deref(), Some("1"));

    // A complete file whose checksum does not match: refused too.
    std::fs::write(root.join("m/2/model.onnx.sha256"), format!("{}  model.onnx\n", "0".repeat(64))).unwrap();
    std::fs::write(root.join("m/2/model.onnx"), &good).unwrap();
    eventually("the version 2 with a wrong checksum is refused", Duration::from_secs(10), || async {
        index_state(&server, "2").await.is_some_and(|(_, reason)| reason.contains("SHA-256"))
    })
    .await;
    assert_eq!(serving_version(&server).await.as_deref(), Some("1"));

    // The right checksum: version 2 takes over and version 1 (no longer selected) is drained away.
    let digest = sha256_hex(&good);
    std::fs::write(root.join("m/2/model.onnx.sha256"), format!("{digest}  model.onnx\n")).unwrap();
    eventually("version 2 serves", Duration::from_secs(10), || async {
        serving_version(&server).await.as_deref() == Some("2")
    })
    .await;
    eventually("version 1 is drained and listed as unloaded", Duration::from_secs(10), || async {
        index_state(&server, "1").await == Some(("UNAVAILABLE".to_owned(), "unloaded".to_owned()))
    })
    .await;

    // Deleting version 2's folder unloads it; version 1, present again, serves.
    std::fs::remove_dir_all(root.join("m/2")).unwrap();
    eventually("version 1 serves again", Duration::from_secs(10), || async {
        serving_version(&server).await.as_deref() == Some("1")
    })
    .await;
    std::fs::remove_dir_all(&root).unwrap();
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// A version written in chunks over two seconds is not even tried before its file is complete and left alone.
#[tokio::test]
async fn a_version_copied_slowly_loads_only_once_complete() {
    let root = temp_dir("watch-slow");
    copy_model(&root, "m", 1, "mlp/1/model.onnx");
    let server = TestServer::start(polling(&root)).await;
    let good = std::fs::read(common::bundled_models().join("mlp/1/model.onnx")).unwrap();
    std::fs::create_dir_all(root.join("m/2")).unwrap();
    let path = root.join("m/2/model.onnx");
    let chunks = 10;
    let chunk = good.len().div_ceil(chunks);
    let mut file = std::fs::File::create(&path).unwrap();
    for part in good.chunks(chunk) {
        use std::io::Write;
        file.write_all(part).unwrap();
        file.flush().unwrap();
        // While the copy goes on, version 2 has not been tried: no state for it, and version 1 serves.
        assert_eq!(index_state(&server, "2").await, None, "a partial version 2 was loaded");
        assert_eq!(serving_version(&server).await.as_deref(), Some("1"));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(file);
    eventually("the complete version 2 serves", Duration::from_secs(10), || async {
        serving_version(&server).await.as_deref() == Some("2")
    })
    .await;
    std::fs::remove_dir_all(&root).unwrap();
}

/// 50 swaps between two versions while clients send requests without pause: no request fails, and every answer
/// comes from one of the two versions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swaps_under_load_fail_no_request() {
    let root = temp_dir("swap-load");
    copy_model(&root, "m", 1, "mlp/1/model.onnx");
    copy_model(&root, "m", 2, "mlp/1/model.onnx");
    let policy = |v: u64| format!("version_policy = {{ specific = [{v}] }}\nmax_batch_size = 64\n");
    std::fs::write(root.join("m/model.toml"), policy(1)).unwrap();
    let server = Arc::new(TestServer::start(config(&root)).await);

    let stop = Arc::new(AtomicBool::new(false));
    let (answered, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (server, stop, answered, failed) =
            (Arc::clone(&server), Arc::clone(&stop), Arc::clone(&answered), Arc::clone(&failed));
        clients.push(tokio::spawn(async move {
            let mut versions = std::collections::BTreeSet::new();
            let mut latencies = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let (status, body) = server.post_json("/v2/models/m/infer", &mlp_request()).await;
                latencies.push((started, started.elapsed()));
                if status == 200 {
                    answered.fetch_add(1, Ordering::Relaxed);
                    versions.insert(body["model_version"].as_str().unwrap().to_owned());
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                    eprintln!("failed during a swap: {status} {body}");
                }
            }
            (versions, latencies)
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let steady = answered.load(Ordering::Relaxed);
    let swaps_started = Instant::now();
    for swap in 0..50u64 {
        std::fs::write(root.join("m/model.toml"), policy(2 - swap % 2)).unwrap();
        server.server.models().sync_model("m", false).await.unwrap();
    }
    let swapping = swaps_started.elapsed();
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    let mut versions = std::collections::BTreeSet::new();
    let mut latencies = Vec::new();
    for client in clients {
        let (v, l) = client.await.unwrap();
        versions.extend(v);
        latencies.extend(l);
    }
    // p99 of the requests sent before the swaps (steady) and of those sent while they ran.
    let p99 = |during: bool| {
        let mut window: Vec<Duration> = latencies
            .iter()
            .filter(|(sent, _)| (*sent >= swaps_started && *sent <= swaps_started + swapping) == during)
            .filter(|(sent, _)| during || *sent < swaps_started)
            .map(|&(_, took)| took)
            .collect();
        window.sort();
        (window.len(), window.get(window.len() * 99 / 100).copied().unwrap_or_default())
    };
    let ((steady_n, steady_p99), (during_n, during_p99)) = (p99(false), p99(true));
    let total = answered.load(Ordering::Relaxed);
    println!(
        "swap-under-load: 50 swaps in {swapping:?}, {total} answered, {} failed; steady: {steady_n} requests p99 \
         {steady_p99:?}; during the swaps: {during_n} requests p99 {during_p99:?}",
        failed.load(Ordering::Relaxed)
    );
    assert!(steady > 0 && during_n > 0);
    assert_eq!(failed.load(Ordering::Relaxed), 0);
    assert_eq!(versions, ["1".to_owned(), "2".to_owned()].into_iter().collect());
    assert_eq!(serving_version(&server).await.as_deref(), Some("1"));
    std::fs::remove_dir_all(&root).unwrap();
}

/// File-system notifications bring a new version in long before the next periodic look.
#[tokio::test]
async fn notifications_pick_up_a_new_version_between_polls() {
    let root = temp_dir("watch-notify");
    copy_model(&root, "m", 1, "mlp/1/model.onnx");
    let config = Config {
        model_control_mode: ModelControlMode::Poll,
        repository_poll: Duration::from_secs(600),
        repository_settle: Duration::from_millis(300),
        ..config(&root)
    };
    let server = TestServer::start(config).await;
    assert_eq!(serving_version(&server).await.as_deref(), Some("1"));
    let written = Instant::now();
    copy_model(&root, "m", 2, "mlp/1/model.onnx");
    eventually("version 2 serves without waiting for the 10-minute poll", Duration::from_secs(10), || async {
        serving_version(&server).await.as_deref() == Some("2")
    })
    .await;
    println!("new version serving {:?} after it was written", written.elapsed());
    std::fs::remove_dir_all(&root).unwrap();
}

/// Every state a version passes through shows in the repository index: the new version is LOADING, then
/// LOADING "warming up", then READY; the version it replaces is UNLOADING while a request still holds it, which
/// is answered by it, and UNAVAILABLE "unloaded" once that request is done.
#[tokio::test]
async fn the_index_shows_every_state_of_a_swap() {
    let root = temp_dir("watch-states");
    common::copy_fixture(&root, "s", 1, "slow/1/model.onnx");
    std::fs::write(root.join("s/model.toml"), "max_batch_size = 4096\n[warmup]\nruns = 100\n").unwrap();
    let server = Arc::new(TestServer::start(polling(&root)).await);

    // A long request holds version 1.
    let long = {
        let server = Arc::clone(&server);
        tokio::spawn(async move { server.post_json("/v2/models/s/infer", &common::slow_rows(3000)).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!long.is_finished(), "the long request finished too soon to hold version 1");

    // Record every (version, state, reason) the index shows while version 2 arrives.
    let seen = Arc::new(std::sync::Mutex::new(Vec::<(String, String, String)>::new()));
    let watching = Arc::new(AtomicBool::new(true));
    let watcher = {
        let (server, seen, watching) = (Arc::clone(&server), Arc::clone(&seen), Arc::clone(&watching));
        tokio::spawn(async move {
            while watching.load(Ordering::Relaxed) {
                let index: Value =
                    server.client.post(server.url("/v2/repository/index")).send().await.unwrap().json().await.unwrap();
                {
                    let mut seen = seen.lock().unwrap();
                    for row in index.as_array().unwrap().iter().filter(|row| row["name"] == "s") {
                        let text = |key: &str| row[key].as_str().unwrap_or_default().to_owned();
                        let state = (text("version"), text("state"), text("reason"));
                        if !seen.contains(&state) {
                            seen.push(state);
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    common::copy_fixture(&root, "s", 2, "slow/1/model.onnx");
    let (status, answer) = long.await.unwrap();
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["model_version"], "1", "the request in flight is answered by the version it started on");
    eventually("version 1 is unloaded", Duration::from_secs(20), || async {
        let seen = seen.lock().unwrap();
        seen.iter().any(|(v, state, _)| v == "2" && state == "READY")
            && seen.iter().any(|(v, state, reason)| v == "1" && state == "UNAVAILABLE" && reason == "unloaded")
    })
    .await;
    watching.store(false, Ordering::Relaxed);
    watcher.await.unwrap();

    let seen = seen.lock().unwrap().clone();
    let position = |version: &str, state: &str, reason: &dyn Fn(&str) -> bool| {
        seen.iter()
            .position(|(v, s, r)| v == version && s == state && reason(r))
            .unwrap_or_else(|| panic!("version {version} never showed {state}; the index showed {seen:?}"))
    };
    let loading = position("2", "LOADING", &|r| r.is_empty());
    let warming = position("2", "LOADING", &|r| r == "warming up");
    let ready = position("2", "READY", &|_| true);
    let draining = position("1", "UNLOADING", &|r| r.starts_with("draining: 1 request"));
    let unloaded = position("1", "UNAVAILABLE", &|r| r == "unloaded");
    assert!(loading < warming && warming < ready, "{seen:?}");
    assert!(ready <= draining + 1 && draining < unloaded, "{seen:?}");
    std::fs::remove_dir_all(&root).unwrap();
}

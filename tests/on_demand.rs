//! On-demand loading and the memory budget, against a real server: concurrent first requests share one load, a
//! version chosen for eviction finishes the request it holds, a model kept loaded survives pressure, a broken
//! model is not loaded again on every request (and is once its file changes), a load that finds no room answers
//! 503 with Retry-After, and the statistics keep counting across evictions.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{TestServer, config_with_ort, metric, metric_sum, scrape, temp_dir};
use infergate::Config;
use infergate::config::{ModelControlMode, OnDemandSettings};
use serde_json::{Value, json};

fn on_demand(root: &Path, settings: OnDemandSettings) -> Config {
    Config { model_control_mode: ModelControlMode::OnDemand, on_demand: settings, ..config_with_ort(root) }
}

fn at_most(versions: usize) -> OnDemandSettings {
    OnDemandSettings { max_loaded_models: Some(versions), ..OnDemandSettings::default() }
}

fn mlp_request() -> Value {
    json!({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": vec![0.25f32; 64]}]})
}

/// Models named `names`, each a copy of the bundled mlp.
fn mlp_models(root: &Path, names: &[&str]) {
    for name in names {
        common::copy_model(root, name, 1, "mlp/1/model.onnx");
    }
}

/// (state, reason) of `model` version 1 in the repository index.
async fn state(server: &TestServer, model: &str) -> (String, String) {
    let index: Value =
        server.client.post(server.url("/v2/repository/index")).send().await.unwrap().json().await.unwrap();
    let row = index.as_array().unwrap().iter().find(|row| row["name"] == model && row["version"] == "1").unwrap();
    (row["state"].as_str().unwrap().to_owned(), row["reason"].as_str().unwrap_or_default().to_owned())
}

async fn loads(server: &TestServer, outcome: &str) -> f64 {
    let text = scrape(server).await;
    metric(&text, &format!("infergate_on_demand_loads_total{{outcome=\"{outcome}\"}}")).unwrap_or(0.0)
}

async fn infer(server: &TestServer, model: &str) -> reqwest::Response {
    server.client.post(server.url(&format!("/v2/models/{model}/infer"))).json(&mlp_request()).send().await.unwrap()
}

#[tokio::test]
async fn concurrent_first_requests_share_one_load() {
    let root = temp_dir("on-demand-single-flight");
    mlp_models(&root, &["m", "other"]);
    let server = Arc::new(TestServer::start(on_demand(&root, OnDemandSettings::default())).await);
    assert_eq!(state(&server, "m").await.0, "UNLOADED", "listed at start, not loaded");
    assert_eq!(loads(&server, "loaded").await, 0.0);

    let requests: Vec<_> = (0..16)
        .map(|_| {
            let server = Arc::clone(&server);
            tokio::spawn(async move {
                let response = infer(&server, "m").await;
                let cold = response.headers().get("x-infergate-cold-start-ms").map(|v| v.to_str().unwrap().to_owned());
                let status = response.status().as_u16();
                let body: Value = response.json().await.unwrap();
                (status, cold, body)
            })
        })
        .collect();
    let mut waited = 0;
    for request in requests {
        let (status, cold, body) = request.await.unwrap();
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["outputs"][0]["shape"], json!([1, 10]), "{body}");
        if let Some(ms) = cold {
            assert!(ms.parse::<u64>().unwrap() >= 1, "{ms}");
            waited += 1;
        }
    }
    assert!(waited >= 1, "the first requests waited for the load and said so");
    assert_eq!(loads(&server, "loaded").await, 1.0, "sixteen concurrent first requests, one load");
    let text = scrape(&server).await;
    assert_eq!(metric(&text, "infergate_on_demand_requests_total{result=\"miss\"}"), Some(f64::from(waited)));
    let hits = metric(&text, "infergate_on_demand_requests_total{result=\"hit\"}").unwrap_or(0.0);
    assert_eq!(hits, f64::from(16 - waited));
    assert_eq!(metric(&text, "infergate_cold_start_seconds_count"), Some(f64::from(waited)));
    assert_eq!(metric(&text, "infergate_loaded_versions"), Some(1.0));
    assert!(metric(&text, "infergate_loaded_bytes").unwrap() > 0.0);

    // A warm answer carries no cold-start header; the index shows the version ready, with its last use.
    let warm = infer(&server, "m").await;
    assert_eq!(warm.status(), 200);
    assert!(warm.headers().get("x-infergate-cold-start-ms").is_none());
    let text = scrape(&server).await;
    assert_eq!(metric(&text, "infergate_on_demand_requests_total{result=\"hit\"}"), Some(hits + 1.0));
    assert_eq!(state(&server, "m").await.0, "READY");
    assert_eq!(state(&server, "other").await.0, "UNLOADED", "a model never asked for is never loaded");
    std::fs::remove_dir_all(&root).unwrap();
}

/// With room for one version, a request to another model evicts the one a long request holds: that request is
/// answered by it, and the new load waits until its memory is freed.
#[tokio::test]
async fn a_request_in_flight_on_an_evicted_version_completes_on_it() {
    let root = temp_dir("on-demand-in-flight");
    common::copy_fixture(&root, "s", 1, "slow/1/model.onnx");
    std::fs::write(root.join("s/model.toml"), "max_batch_size = 4096\n").unwrap();
    mlp_models(&root, &["m"]);
    let server = Arc::new(TestServer::start(on_demand(&root, at_most(1))).await);
    let (status, body) = server.post_json("/v2/models/s/infer", &common::slow_rows(1)).await;
    assert_eq!(status, 200, "{body}");

    let sent = Instant::now();
    let long = {
        let server = Arc::clone(&server);
        tokio::spawn(async move { server.post_json("/v2/models/s/infer", &common::slow_rows(1500)).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!long.is_finished(), "the long request finished too soon to hold its version");
    let other = infer(&server, "m").await;
    assert_eq!(other.status(), 200);
    let cold: u64 = other.headers()["x-infergate-cold-start-ms"].to_str().unwrap().parse().unwrap();
    let (status, answer) = tokio::time::timeout(Duration::from_secs(60), long).await.unwrap().unwrap();
    let long_took = sent.elapsed();
    // The new load waited for the evicted version's request: most of that request's time was spent waiting.
    let waited_at_least = long_took.saturating_sub(Duration::from_millis(1000)).as_millis() as u64 / 2;
    assert!(cold >= waited_at_least.max(100), "waited {cold} ms while the long request took {long_took:?}");
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["model_name"], "s");
    assert_eq!(answer["outputs"][0]["shape"][0], 1500, "{answer}");

    assert_eq!(state(&server, "s").await, ("UNLOADED".to_owned(), "evicted".to_owned()));
    let text = scrape(&server).await;
    assert_eq!(metric(&text, "infergate_evictions_total"), Some(1.0));
    assert_eq!(metric(&text, "infergate_loaded_versions"), Some(1.0), "never more than the budget once drained");
    std::fs::remove_dir_all(&root).unwrap();
}

/// A model kept loaded is loaded at start and never evicted; the others take turns, least recently used first,
/// and their statistics go on counting across evictions.
#[tokio::test]
async fn a_pinned_model_survives_pressure_and_statistics_survive_evictions() {
    let root = temp_dir("on-demand-pinned");
    mlp_models(&root, &["pinned", "a", "b", "c"]);
    std::fs::write(root.join("pinned/model.toml"), "keep_loaded = true\n").unwrap();
    let server = TestServer::start(on_demand(&root, at_most(3))).await;
    assert_eq!(state(&server, "pinned").await.0, "READY", "kept loaded: loaded at start");

    for model in ["a", "b", "c", "a", "b", "pinned", "c", "a"] {
        assert_eq!(infer(&server, model).await.status(), 200, "{model}");
        let text = scrape(&server).await;
        assert!(metric(&text, "infergate_loaded_versions").unwrap() <= 3.0, "over the budget after {model}");
    }
    assert_eq!(state(&server, "pinned").await.0, "READY");
    let index: Value =
        server.client.post(server.url("/v2/repository/index")).send().await.unwrap().json().await.unwrap();
    for row in index.as_array().unwrap() {
        let measured = row["loaded_bytes"].as_u64();
        match row["name"].as_str().unwrap() {
            "pinned" => assert!(measured.is_none() && row.get("last_use").is_none(), "{row}"),
            _ => assert!(measured.is_some_and(|bytes| bytes > 0) && row["last_use"].is_string(), "{row}"),
        }
    }
    let (b, reason) = state(&server, "b").await;
    assert_eq!((b.as_str(), reason.as_str()), ("UNLOADED", "evicted"), "b was the least recently used");
    let text = scrape(&server).await;
    // a and b loaded into free room; then each of c, a, b, c, a evicted the least recently used of the other two.
    assert_eq!(metric(&text, "infergate_evictions_total"), Some(5.0));

    let (status, stats) = server.get("/v2/models/a/stats").await;
    assert_eq!(status, 200, "{stats}");
    assert_eq!(stats["model_stats"][0]["inference_count"], 3, "a's three requests, across two evictions: {stats}");
    // An evicted version's counts are shown while it is evicted.
    for path in ["/v2/models/b/stats", "/v2/models/b/versions/1/stats"] {
        let (status, stats) = server.get(path).await;
        assert_eq!(status, 200, "{stats}");
        assert_eq!(stats["model_stats"][0]["inference_count"], 2, "{path}: {stats}");
    }
    let (_, all) = server.get("/v2/models/stats").await;
    let names: Vec<&str> = all["model_stats"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["a", "b", "c", "pinned"], "{all}");
    std::fs::remove_dir_all(&root).unwrap();
}

/// A model whose file is corrupt is loaded once, not on every request: the others are answered 503 with the
/// reason and Retry-After while it backs off. Once the file is replaced, the next request loads it.
#[tokio::test]
async fn a_broken_model_is_not_reloaded_on_every_request() {
    let root = temp_dir("on-demand-broken");
    std::fs::create_dir_all(root.join("broken/1")).unwrap();
    std::fs::write(root.join("broken/1/model.onnx"), b"not an onnx file").unwrap();
    let config = Config {
        repository_poll: Duration::from_millis(200),
        repository_settle: Duration::from_millis(200),
        ..on_demand(&root, OnDemandSettings::default())
    };
    let server = TestServer::start(config).await;
    let started = Instant::now();
    for _ in 0..20 {
        let response = infer(&server, "broken").await;
        assert_eq!(response.status(), 503);
        assert!(response.headers().get("retry-after").is_some());
        let body: Value = response.json().await.unwrap();
        assert!(body["error"].as_str().unwrap().contains("failed to load"), "{body}");
    }
    // Tried at once, then after 1, 2, 4 ... seconds: a slow machine may reach the second try, never one a request.
    let elapsed = started.elapsed().as_secs_f64();
    let tries_possible = 1.0 + (1.0 + elapsed).log2().floor();
    let failed = loads(&server, "failed").await;
    assert!(failed >= 1.0 && failed <= tries_possible, "{failed} failed loads in {elapsed:.1} s of twenty requests");
    let (state_now, reason) = state(&server, "broken").await;
    assert_eq!(state_now, "UNAVAILABLE");
    assert!(reason.contains("when its files change"), "{reason}");

    common::copy_model(&root, "broken", 1, "mlp/1/model.onnx");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let response = infer(&server, "broken").await;
        if response.status() == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the replaced file was not loaded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(loads(&server, "loaded").await, 1.0);
    std::fs::remove_dir_all(&root).unwrap();
}

/// With the only room taken by a model kept loaded, a request waits for room until its deadline, then gets 503
/// with Retry-After; nothing is loaded over the budget.
#[tokio::test]
async fn a_load_with_no_room_waits_then_answers_503_with_retry_after() {
    let root = temp_dir("on-demand-no-room");
    mlp_models(&root, &["pinned", "a"]);
    std::fs::write(root.join("pinned/model.toml"), "keep_loaded = true\n").unwrap();
    let settings = OnDemandSettings { cold_start_timeout: Duration::from_millis(300), ..at_most(1) };
    let server = TestServer::start(on_demand(&root, settings)).await;
    let started = Instant::now();
    let response = infer(&server, "a").await;
    assert_eq!(response.status(), 503);
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(250) && waited < Duration::from_secs(5), "waited {waited:?} for room");
    assert_eq!(response.headers()["retry-after"], "1");
    let body: Value = response.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("deadline"), "{body}");
    assert_eq!(state(&server, "pinned").await.0, "READY");
    assert_eq!(state(&server, "a").await.0, "UNLOADED");
    let text = scrape(&server).await;
    assert_eq!(metric_sum(&text, "infergate_on_demand_loads_total", &[]), None, "nothing loaded");
    std::fs::remove_dir_all(&root).unwrap();
}

/// A traffic split's variants and its shadow are uses like any other: the first requests load the variant they
/// are sent to, and the shadow's version loads in the background.
#[tokio::test]
async fn a_splits_variants_and_its_shadow_load_on_use() {
    let root = temp_dir("on-demand-variants");
    for version in [1, 2, 3] {
        common::copy_model(&root, "split", version, "mlp/1/model.onnx");
    }
    let toml = "version_policy = \"all\"\n[traffic]\nvariants = [{ name = \"one\", version = 1, weight = 50 }, \
                { name = \"two\", version = 2, weight = 50 }]\nshadow = { name = \"three\", version = 3, percent = 100.0 }\n";
    std::fs::write(root.join("split/model.toml"), toml).unwrap();
    let config = Config {
        repository_poll: Duration::from_millis(200),
        repository_settle: Duration::from_millis(200),
        ..on_demand(&root, OnDemandSettings::default())
    };
    let server = TestServer::start(config).await;
    let mut variants = std::collections::BTreeSet::new();
    for _ in 0..40 {
        let response = infer(&server, "split").await;
        assert_eq!(response.status(), 200);
        variants.insert(response.headers()["x-infergate-variant"].to_str().unwrap().to_owned());
    }
    assert_eq!(variants.into_iter().collect::<Vec<_>>(), ["one", "two"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while loads(&server, "loaded").await < 3.0 {
        assert!(Instant::now() < deadline, "the shadow's version was not loaded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert_eq!(infer(&server, "split").await.status(), 200);
        let text = scrape(&server).await;
        if metric_sum(&text, "infergate_shadow_requests_total", &[("outcome", "ok")]).is_some_and(|ok| ok >= 1.0) {
            break;
        }
        assert!(Instant::now() < deadline, "no shadow copy was answered once its version loaded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    std::fs::remove_dir_all(&root).unwrap();
}

/// A new version of an evicted model, found by the repository watch, is listed and loads only when asked for.
#[tokio::test]
async fn a_new_version_of_an_evicted_model_loads_only_when_asked_for() {
    let root = temp_dir("on-demand-new-version");
    mlp_models(&root, &["evicted", "serving"]);
    let config = Config {
        repository_poll: Duration::from_millis(200),
        repository_settle: Duration::from_millis(200),
        ..on_demand(&root, at_most(1))
    };
    let server = TestServer::start(config).await;
    assert_eq!(infer(&server, "evicted").await.status(), 200);
    assert_eq!(infer(&server, "serving").await.status(), 200);
    assert_eq!(state(&server, "evicted").await.1, "evicted");
    assert_eq!(loads(&server, "loaded").await, 2.0);

    common::copy_model(&root, "evicted", 2, "mlp/1/model.onnx");
    let rows = |index: &Value, model: &str| -> Vec<(String, String)> {
        let rows = index.as_array().unwrap().iter().filter(|row| row["name"] == model);
        rows.map(|row| (row["version"].as_str().unwrap().to_owned(), row["state"].as_str().unwrap().to_owned()))
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let index: Value =
            server.client.post(server.url("/v2/repository/index")).send().await.unwrap().json().await.unwrap();
        if rows(&index, "evicted").iter().any(|(version, _)| version == "2") {
            assert_eq!(rows(&index, "evicted"), [("2".to_owned(), "UNLOADED".to_owned())], "{index}");
            break;
        }
        assert!(Instant::now() < deadline, "the new version was not listed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(loads(&server, "loaded").await, 2.0, "listing the new version loaded nothing");
    let (status, answer) = server.post_json("/v2/models/evicted/infer", &mlp_request()).await;
    assert_eq!((status, answer["model_version"].as_str()), (200, Some("2")), "{answer}");
    assert_eq!(loads(&server, "loaded").await, 3.0);
    std::fs::remove_dir_all(&root).unwrap();
}

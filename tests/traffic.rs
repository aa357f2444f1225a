//! Traffic management against the real server: weighted splits, sticky keys, live policy changes, shadows that
//! fail or crawl, and rollouts that promote a good candidate and roll back a bad one (time compressed by config).
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{TestServer, copy_fixture, copy_model, golden, temp_dir};
use infergate::Config;
use serde_json::{Value, json};

const TOKEN: &str = "traffic-admin-token-0123";

/// The tests of this file measure latencies and splits: they run one at a time, not on each other's cores.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn write(root: &Path, model: &str, toml: &str) {
    std::fs::write(root.join(model).join("model.toml"), toml).unwrap();
}

fn config(root: &Path, state: &Path) -> Config {
    Config {
        admin_token: Some(infergate::config::Secret(TOKEN.to_owned())),
        state_dir: Some(state.to_owned()),
        ..common::config(root)
    }
}

/// The mlp's 8 golden rows in one request: every answer has the same class histogram, so two variants with
/// the same model predict identical distributions and different models clearly different ones.
fn mlp_request() -> Value {
    golden("mlp_v1.json").request
}

/// Sends `body` to `model` with an optional routing key; returns the variant header, the body and the latency.
async fn call(
    server: &TestServer,
    model: &str,
    key: Option<&str>,
    body: &Value,
) -> (u16, Option<String>, Value, Duration) {
    let started = Instant::now();
    let mut request = server.client.post(server.url(&format!("/v2/models/{model}/infer"))).json(body);
    if let Some(key) = key {
        request = request.header("x-routing-key", key);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let variant = response.headers().get("x-infergate-variant").map(|v| v.to_str().unwrap().to_owned());
    let body: Value = response.json().await.unwrap();
    (status, variant, body, started.elapsed())
}

async fn put_policy(server: &TestServer, model: &str, policy: &Value, token: Option<&str>) -> (u16, Value) {
    let mut request = server.client.put(server.url(&format!("/v2/models/{model}/traffic"))).json(policy);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

/// `n` requests from `clients` concurrent clients, counting the variants that answered.
async fn spread(server: &Arc<TestServer>, model: &str, n: usize, clients: usize) -> HashMap<String, usize> {
    let body = Arc::new(mlp_request());
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (server, body, model) = (Arc::clone(server), Arc::clone(&body), model.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut counts: HashMap<String, usize> = HashMap::new();
            for _ in (c..n).step_by(clients) {
                let (status, variant, answer, _) = call(&server, &model, None, &body).await;
                assert_eq!(status, 200, "{answer}");
                let variant = variant.unwrap();
                assert_eq!(answer["parameters"]["variant"], variant.as_str());
                *counts.entry(variant).or_default() += 1;
            }
            counts
        }));
    }
    let mut counts = HashMap::new();
    for task in tasks {
        for (k, v) in task.await.unwrap() {
            *counts.entry(k).or_default() += v;
        }
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn splits_follow_weights_keys_stick_and_policies_change_live() {
    let _serial = SERIAL.lock().await;
    let root = temp_dir("traffic-split");
    copy_model(&root, "mlp", 1, "mlp/1/model.onnx");
    copy_model(&root, "mlp", 2, "mlp/1/model.onnx");
    copy_fixture(&root, "mlp_other", 1, "mlp_other/1/model.onnx");
    copy_model(&root, "iris", 1, "iris/1/model.onnx");
    write(
        &root,
        "mlp",
        "version_policy = \"all\"\n[traffic]\nvariants = [{ name = \"a\", version = 1, weight = 70 }, \
         { name = \"b\", version = 2, weight = 20 }, { name = \"c\", model = \"mlp_other\", weight = 10 }]\n",
    );
    let server = Arc::new(TestServer::start(config(&root, &root.join(".state"))).await);

    // Split accuracy over 10,000 requests.
    let counts = spread(&server, "mlp", 10_000, 8).await;
    for (variant, weight) in [("a", 70.0), ("b", 20.0), ("c", 10.0)] {
        let share = counts.get(variant).copied().unwrap_or(0) as f64 / 100.0;
        println!("split: variant {variant} weight {weight}% got {share:.2}%");
        assert!((share - weight).abs() <= 2.0, "variant {variant}: {share}% for a weight of {weight}%");
    }
    // Who answered: the variant's version (or model) is in the answer.
    let body = mlp_request();
    for _ in 0..50 {
        let (_, variant, answer, _) = call(&server, "mlp", None, &body).await;
        let expected = match variant.as_deref() {
            Some("a") => ("mlp", "1"),
            Some("b") => ("mlp", "2"),
            _ => ("mlp_other", "1"),
        };
        assert_eq!((answer["model_name"].as_str().unwrap(), answer["model_version"].as_str().unwrap()), expected);
    }
    // A pinned version bypasses the split.
    let (status, pinned) = server.post_json("/v2/models/mlp/versions/1/infer", &body).await;
    assert_eq!((status, pinned["model_version"].as_str()), (200, Some("1")));
    assert!(pinned.get("parameters").is_none(), "{pinned}");

    // Sticky keys: 1,000 keys, each asked twice, land on one variant.
    let mut before = HashMap::new();
    for i in 0..1000 {
        let key = format!("customer-{i}");
        let (_, first, _, _) = call(&server, "mlp", Some(&key), &body).await;
        let (_, second, _, _) = call(&server, "mlp", Some(&key), &body).await;
        assert_eq!(first, second, "key {key} moved while the weights stayed");
        before.insert(key, first.unwrap());
    }
    let share = |map: &HashMap<String, String>, v: &str| map.values().filter(|x| *x == v).count() as f64 / 10.0;
    println!("keys before: a {}% b {}% c {}%", share(&before, "a"), share(&before, "b"), share(&before, "c"));
    assert!((share(&before, "a") - 70.0).abs() <= 5.0);

    // Refused policies leave the one in force.
    let bad_sum =
        json!({"variants": [{"name": "a", "version": 1, "weight": 60}, {"name": "b", "version": 2, "weight": 60}]});
    let (status, error) = put_policy(&server, "mlp", &bad_sum, Some(TOKEN)).await;
    assert_eq!(status, 400, "{error}");
    assert!(error["error"].as_str().unwrap().contains("sum to 100"), "{error}");
    let unknown = json!({"variants": [{"name": "a", "version": 7, "weight": 100}]});
    let (status, error) = put_policy(&server, "mlp", &unknown, Some(TOKEN)).await;
    assert_eq!(status, 400, "{error}");
    assert!(error["error"].as_str().unwrap().contains("no version 7"), "{error}");
    let other_signature =
        json!({"variants": [{"name": "a", "weight": 50}, {"name": "x", "model": "iris", "weight": 50}]});
    let (status, error) = put_policy(&server, "mlp", &other_signature, Some(TOKEN)).await;
    assert_eq!(status, 400, "{error}");
    assert!(error["error"].as_str().unwrap().contains("another signature"), "{error}");
    let moved = json!({"variants": [{"name": "a", "version": 1, "weight": 50}, {"name": "b", "version": 2, "weight": 40},
        {"name": "c", "model": "mlp_other", "weight": 10}]});
    let (status, _) = put_policy(&server, "mlp", &moved, None).await;
    assert_eq!(status, 401);
    let (status, _) = put_policy(&server, "mlp", &moved, Some("not-the-admin-token-at-all")).await;
    assert_eq!(status, 401);
    let (_, view) = server.get("/v2/models/mlp/traffic").await;
    assert_eq!(view["policy"]["variants"][0]["weight"], 70, "{view}");

    // A new split moves few keys: b gains 20 points from a, and no key leaves b or joins a.
    let (status, view) = put_policy(&server, "mlp", &moved, Some(TOKEN)).await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["policy"]["variants"][1]["weight"], 40);
    let mut changed = 0;
    for (key, was) in &before {
        let (_, now, _, _) = call(&server, "mlp", Some(key), &body).await;
        let now = now.unwrap();
        if &now != was {
            changed += 1;
            // b's weight rose and a's fell: keys may join b and leave a, never the other way.
            assert!(was != "b" && now != "a", "key {key} moved from {was} to {now}");
        }
    }
    println!("keys moved when b went from 20% to 40%: {}%", changed as f64 / 10.0);
    assert!((changed as f64 / 10.0) <= 25.0, "{changed} of 1000 keys moved");

    // Every answer is counted under its variant.
    let metrics = common::scrape(&server).await;
    assert!(
        metrics.contains("infergate_variant_requests_total{model=\"mlp\",outcome=\"ok\",variant=\"a\",version=\"1\"}")
    );
    assert!(metrics.contains("infergate_traffic_weight_percent{model=\"mlp\",variant=\"b\"} 40"));

    // A restart keeps the policy set through the API while model.toml stays as it was.
    server.server.shutdown();
    let server = Arc::try_unwrap(server).ok().unwrap();
    server.server.wait().await.unwrap();
    let server = TestServer::start(config(&root, &root.join(".state"))).await;
    let (_, view) = server.get("/v2/models/mlp/traffic").await;
    assert_eq!(view["policy"]["variants"][1]["weight"], 40, "{view}");
    let _ = std::fs::remove_dir_all(&root);
}

/// Client-side p99 of `n` requests from 4 clients, and whether every answer equaled `expected`.
async fn primary_p99(server: &Arc<TestServer>, n: usize, expected: &Value) -> Duration {
    let body = Arc::new(mlp_request());
    let expected = Arc::new(expected.clone());
    let mut tasks = Vec::new();
    for c in 0..4 {
        let (server, body, expected) = (Arc::clone(server), Arc::clone(&body), Arc::clone(&expected));
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            for _ in (c..n).step_by(4) {
                let (status, _, answer, elapsed) = call(&server, "prim", None, &body).await;
                assert_eq!(status, 200, "{answer}");
                assert_eq!(answer["outputs"], *expected, "the primary's answer changed");
                latencies.push(elapsed);
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    all.sort();
    all[all.len() * 99 / 100]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_and_failing_shadows_leave_the_primary_alone() {
    let _serial = SERIAL.lock().await;
    let root = temp_dir("traffic-shadow");
    copy_model(&root, "prim", 1, "mlp/1/model.onnx");
    copy_fixture(&root, "crawl", 1, "mlp_slow/1/model.onnx");
    copy_fixture(&root, "failing", 1, "mlp_slow/1/model.onnx");
    write(&root, "crawl", "max_batch_size = 0\n[batching]\nmax_queue_size = 8\n");
    // Every copy sent to `failing` waits behind a slow one past its 1 ms deadline, or finds the queue full.
    write(&root, "failing", "max_batch_size = 0\n[batching]\nmax_queue_size = 2\ndefault_timeout_ms = 1\n");
    write(&root, "prim", "[traffic]\nvariants = [{ name = \"main\", weight = 100 }]\n");
    let server = Arc::new(TestServer::start(config(&root, &root.join(".state"))).await);
    let (_, reference) = server.post_json("/v2/models/prim/versions/1/infer", &mlp_request()).await;
    let expected = reference["outputs"].clone();

    let alone = primary_p99(&server, 2000, &expected).await;
    let slow = json!({"variants": [{"name": "main", "weight": 100}],
        "shadow": {"name": "crawl", "model": "crawl", "percent": 100.0}});
    assert_eq!(put_policy(&server, "prim", &slow, Some(TOKEN)).await.0, 200);
    let with_slow = primary_p99(&server, 2000, &expected).await;
    let failing = json!({"variants": [{"name": "main", "weight": 100}],
        "shadow": {"name": "failing", "model": "failing", "percent": 100.0}});
    assert_eq!(put_policy(&server, "prim", &failing, Some(TOKEN)).await.0, 200);
    let with_failing = primary_p99(&server, 2000, &expected).await;
    println!("primary p99: alone {alone:?}, with a slow shadow {with_slow:?}, with a failing shadow {with_failing:?}");

    tokio::time::sleep(Duration::from_millis(500)).await;
    let metrics = common::scrape(&server).await;
    let series = |variant: &str, outcome: &str| {
        common::metric(
            &metrics,
            &format!("infergate_shadow_requests_total{{model=\"prim\",outcome=\"{outcome}\",variant=\"{variant}\"}}"),
        )
        .unwrap_or(0.0)
    };
    let (crawled, shed) = (series("crawl", "ok"), series("crawl", "shed"));
    let failed = series("failing", "deadline_exceeded") + series("failing", "overloaded");
    println!("shadow copies: crawl answered {crawled}, crawl shed {shed}, failing failed {failed}");
    assert!(crawled > 0.0 && shed > 0.0, "the slow shadow answered some copies and shed the rest");
    assert!(failed > 0.0, "the failing shadow's copies failed (deadline or full queue), counted as such");
    // The shadow shares the machine (2 cores in CI), not the primary's queue: its p99 stays in the same range.
    let bound = alone * 4 + Duration::from_millis(5);
    assert!(
        with_slow <= bound && with_failing <= bound,
        "primary p99 {alone:?} became {with_slow:?} / {with_failing:?}"
    );
    let _ = std::fs::remove_dir_all(&root);
}

const ROLLOUT: &str = "[rollout]\nbaseline = \"base\"\ncandidate = \"cand\"\nsteps = [10, 50, 100]\nstep_secs = 1.0\n\
    check_secs = 0.05\nmin_requests = 50\nmax_p99_ratio = 1000.0\nmax_psi = 0.2\nmax_error_rate_increase = 0.05\n";

/// Sends requests from 4 clients until `done` says so (or 60 s pass); returns when the first candidate answer came.
async fn drive(server: &Arc<TestServer>, model: &str, done: impl Fn(&Value) -> bool) -> (Option<Instant>, Value) {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let first_candidate = Arc::new(std::sync::Mutex::new(None::<Instant>));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (server, stop, first, model) =
            (Arc::clone(server), Arc::clone(&stop), Arc::clone(&first_candidate), model.to_owned());
        tasks.push(tokio::spawn(async move {
            let body = mlp_request();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let (status, variant, answer, _) = call(&server, &model, None, &body).await;
                assert_eq!(status, 200, "{answer}");
                if variant.as_deref() == Some("cand") {
                    first.lock().unwrap().get_or_insert_with(Instant::now);
                }
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        let (code, status) = server.get(&format!("/v2/models/{model}/rollout")).await;
        if code == 200 && done(&status) {
            break status;
        }
        assert!(Instant::now() < deadline, "rollout did not finish: {status}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap();
    }
    let first = *first_candidate.lock().unwrap();
    (first, status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rollouts_promote_a_good_candidate_roll_back_a_bad_one_and_survive_restarts() {
    let _serial = SERIAL.lock().await;
    let root = temp_dir("traffic-rollout");
    let state = root.join(".state");
    copy_model(&root, "good", 1, "mlp/1/model.onnx");
    copy_model(&root, "good", 2, "mlp/1/model.onnx");
    copy_model(&root, "bad", 1, "mlp/1/model.onnx");
    copy_fixture(&root, "other", 1, "mlp_other/1/model.onnx");
    let variants = |candidate: &str| {
        format!(
            "[traffic]\nvariants = [{{ name = \"base\", version = 1, weight = 100 }}, {{ name = \"cand\", {candidate}, weight = 0 }}]\n"
        )
    };
    write(&root, "good", &format!("version_policy = \"all\"\n{}{ROLLOUT}", variants("version = 2")));
    write(&root, "bad", &format!("{}{ROLLOUT}", variants("model = \"other\"")));
    let server = Arc::new(TestServer::start(config(&root, &state)).await);

    let started = Instant::now();
    let (_, promoted) = drive(&server, "good", |s| s["state"] == "promoted").await;
    println!("good candidate promoted after {:?}: {}", started.elapsed(), promoted["decisions"]);
    let (_, view) = server.get("/v2/models/good/traffic").await;
    assert_eq!(view["policy"]["variants"][1]["weight"], 100, "{view}");

    let (first, rolled_back) = drive(&server, "bad", |s| s["state"] == "rolled_back").await;
    let zero_after = first.map(|t| t.elapsed());
    let decisions = rolled_back["decisions"].as_array().unwrap();
    let rollback = decisions.iter().find(|d| d["decision"] == "rollback").unwrap();
    println!("bad candidate: first answer to weight 0 within {zero_after:?}; decision {rollback}");
    assert!(rollback["reason"].as_str().unwrap().contains("PSI"), "{rollback}");
    assert!(rollback["psi"].as_f64().unwrap() > 0.2);
    let (_, view) = server.get("/v2/models/bad/traffic").await;
    assert_eq!(view["policy"]["variants"][1]["weight"], 0, "{view}");
    let metrics = common::scrape(&server).await;
    assert!(
        metrics.contains("infergate_rollout_decisions_total{candidate=\"cand\",decision=\"rollback\",model=\"bad\"} 1")
    );

    // A restart resumes both end states: the rolled-back candidate gets nothing, the promoted one everything.
    server.server.shutdown();
    let server = Arc::try_unwrap(server).ok().unwrap();
    server.server.wait().await.unwrap();
    let server = TestServer::start(config(&root, &state)).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.get("/v2/models/good/rollout").await.0 != 200 || server.get("/v2/models/bad/rollout").await.0 != 200 {
        assert!(Instant::now() < deadline, "the rollouts did not resume");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (_, bad) = server.get("/v2/models/bad/rollout").await;
    assert_eq!(bad["state"], "rolled_back", "{bad}");
    assert_eq!(bad["decisions"][0]["decision"], "resume");
    let (_, view) = server.get("/v2/models/bad/traffic").await;
    assert_eq!(view["policy"]["variants"][1]["weight"], 0, "{view}");
    let (_, good) = server.get("/v2/models/good/rollout").await;
    assert_eq!(good["state"], "promoted", "{good}");
    let _ = std::fs::remove_dir_all(&root);
}

//! Ground-truth feedback against the real server: labels joined by request id to the predictions they answer and
//! counted per version and variant (a known error rate comes out as the accuracy), unknown, duplicate and expired
//! ids counted rather than refused, bad feedback refused whole, and a rollout whose candidate differs from the
//! baseline only in being wrong rolled back on accuracy alone.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use common::{TestServer, config_from_flags, copy_fixture, copy_model, golden, metric_sum, scrape, temp_dir};
use serde_json::{Value, json};

/// The rollout test compares latencies (its p99 check stays on): the tests of this file run one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// iris with its predictions kept for feedback, batched as the bundled one.
const FEEDBACK_TOML: &str = "max_batch_size = 1024\n[feedback]\n";

/// iris v1's golden rows (4 features each) and its labels for them, taken as the truth.
struct Iris {
    x: Vec<f64>,
    labels: Vec<i64>,
}

static IRIS: LazyLock<Iris> = LazyLock::new(|| {
    let g = golden("iris_v1.json");
    let numbers = |v: &Value| v.as_array().unwrap().clone();
    Iris {
        x: numbers(&g.request["inputs"][0]["data"]).iter().map(|v| v.as_f64().unwrap()).collect(),
        labels: numbers(&g.outputs["label"]["data"]).iter().map(|v| v.as_i64().unwrap()).collect(),
    }
});

/// A server on `root` from `infergate serve` flags, its rollout state kept in the test's own folder.
async fn start(root: &Path, flags: &[&str]) -> TestServer {
    let state = root.join(".state");
    let mut all = vec!["--state-dir", state.to_str().unwrap()];
    all.extend_from_slice(flags);
    TestServer::start(config_from_flags(root, &all)).await
}

/// An answered request: the id the server gave it, who answered, and the labels it predicted.
struct Answer {
    id: String,
    variant: Option<String>,
    version: String,
    labels: Vec<i64>,
}

/// Infers golden `rows` on `model` (unpinned) with an optional body id and `x-request-id` header; the id must come
/// back in the body and the header alike, and be the body's, else the header's.
async fn infer(
    server: &TestServer,
    model: &str,
    rows: &[usize],
    body_id: Option<&str>,
    header: Option<&str>,
) -> Answer {
    let data: Vec<f64> = rows.iter().flat_map(|&r| IRIS.x[r * 4..r * 4 + 4].to_vec()).collect();
    let mut body = json!({"inputs": [{"name": "X", "shape": [rows.len(), 4], "datatype": "FP32", "data": data}]});
    if let Some(id) = body_id {
        body["id"] = json!(id);
    }
    let mut request = server.client.post(server.url(&format!("/v2/models/{model}/infer"))).json(&body);
    if let Some(id) = header {
        request = request.header("x-request-id", id);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let answer: Value = response.json().await.unwrap();
    assert_eq!(status, 200, "{answer}");
    let named = |name: &str| headers.get(name).map(|v| v.to_str().unwrap().to_owned());
    let id = answer["id"].as_str().unwrap_or_else(|| panic!("an answer without id: {answer}")).to_owned();
    assert_eq!(named("x-request-id").as_deref(), Some(id.as_str()), "header and body ids differ");
    if let Some(expected) = body_id.or(header) {
        assert_eq!(id, expected);
    }
    let variant = named("x-infergate-variant");
    assert_eq!(answer["parameters"]["variant"].as_str(), variant.as_deref(), "{answer}");
    let outputs = answer["outputs"].as_array().unwrap();
    let label = outputs.iter().find(|o| o["name"] == "label").unwrap();
    let labels = label["data"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
    Answer { id, variant, version: answer["model_version"].as_str().unwrap().to_owned(), labels }
}

async fn feedback(server: &TestServer, model: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
    server.post_raw(&format!("/v2/models/{model}/feedback"), body).await
}

/// Feedback that must be taken: its counts, in the order matched, unknown_id, expired, duplicate.
async fn accepted(server: &TestServer, model: &str, body: &Value) -> [u64; 4] {
    let (status, answer) = feedback(server, model, serde_json::to_vec(body).unwrap()).await;
    assert_eq!(status, 200, "{body} -> {answer}");
    ["matched", "unknown_id", "expired", "duplicate"].map(|k| answer[k].as_u64().unwrap_or_else(|| panic!("{answer}")))
}

/// Feedback that must be refused whole, with a reason.
async fn refused(server: &TestServer, body: impl Into<reqwest::Body>) -> String {
    let (status, answer) = feedback(server, "iris", body).await;
    assert_eq!(status, 400, "{answer}");
    let reason = answer["error"].as_str().unwrap_or_default().to_owned();
    assert!(!reason.is_empty(), "a refusal without its reason: {answer}");
    reason
}

/// Scrapes until `settled` holds, for 5 s at most, and returns the last exposition.
async fn scrape_until(server: &TestServer, settled: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = scrape(server).await;
        if settled(&text) || Instant::now() >= deadline {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `infergate_feedback_<family>` summed over the series with these labels; 0 when there is none.
fn counted(text: &str, family: &str, labels: &[(&str, &str)]) -> f64 {
    metric_sum(text, &format!("infergate_feedback_{family}"), labels).unwrap_or(0.0)
}

/// `infergate_feedback_total` of iris by result: matched, unknown_id, expired, duplicate.
fn results(text: &str) -> [f64; 4] {
    ["matched", "unknown_id", "expired", "duplicate"]
        .map(|r| counted(text, "total", &[("model", "iris"), ("result", r)]))
}

/// A generated id: a UUIDv7, 36 lowercase hexadecimal characters and hyphens.
fn is_uuid_v7(id: &str) -> bool {
    let b = id.as_bytes();
    let shaped = b.len() == 36
        && b.iter().enumerate().all(|(i, &c)| {
            if [8, 13, 18, 23].contains(&i) { c == b'-' } else { c.is_ascii_digit() || (b'a'..=b'f').contains(&c) }
        });
    shaped && b[14] == b'7' && matches!(b[19], b'8' | b'9' | b'a' | b'b')
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn known_error_rate_comes_out_as_the_accuracy() {
    let _serial = SERIAL.lock().await;
    let root = temp_dir("feedback-accuracy");
    common::repository_with(&root, "iris", "iris/1/model.onnx", FEEDBACK_TOML);
    // A window longer than the test: the accuracy gauge sees every label sent.
    let server = Arc::new(start(&root, &["--metrics-window-seconds", "600"]).await);

    // 1,000 single-row requests from 4 clients, so rows of different requests share batches; even ones name their
    // id in the body, odd ones are given one.
    let mut tasks = Vec::new();
    for client in 0..4 {
        let server = Arc::clone(&server);
        tasks.push(tokio::spawn(async move {
            let mut answers = Vec::new();
            for i in (client..1000).step_by(4) {
                let named = (i % 2 == 0).then(|| format!("client-id-{i}"));
                let answer = infer(&server, "iris", &[i % 32], named.as_deref(), None).await;
                assert_eq!(answer.labels, [IRIS.labels[i % 32]], "row {}", i % 32);
                answers.push((i, answer));
            }
            answers
        }));
    }
    let mut answers = Vec::new();
    for task in tasks {
        answers.extend(task.await.unwrap());
    }
    answers.sort_by_key(|(i, _)| *i);
    let generated: HashSet<&str> = answers.iter().filter(|(i, _)| i % 2 == 1).map(|(_, a)| a.id.as_str()).collect();
    assert_eq!(generated.len(), 500, "generated ids repeat");
    assert!(generated.iter().all(|id| is_uuid_v7(id)), "{generated:?}");

    // Exactly 137 wrong targets: i * 37 mod 1000 runs over 0..1000 once.
    let records: Vec<Value> = answers
        .iter()
        .map(|(i, a)| {
            let target = if i * 37 % 1000 < 137 { (a.labels[0] + 1) % 3 } else { a.labels[0] };
            json!({"id": a.id, "target": target})
        })
        .collect();
    // The first 100 one at a time, the other 900 as batches of up to 250.
    let mut matched = 0;
    for record in &records[..100] {
        let counts = accepted(&server, "iris", record).await;
        assert_eq!(counts, [1, 0, 0, 0], "{record}");
        matched += counts[0];
    }
    for batch in records[100..].chunks(250) {
        let counts = accepted(&server, "iris", &json!(batch)).await;
        assert_eq!(counts, [batch.len() as u64, 0, 0, 0]);
        matched += counts[0];
    }
    assert_eq!(matched, 1000);

    let v1 = [("model", "iris"), ("variant", ""), ("version", "1")];
    let text = scrape_until(&server, |t| counted(t, "labels_total", &v1) >= 1000.0).await;
    assert_eq!(counted(&text, "labels_total", &v1), 1000.0, "{text}");
    assert_eq!(counted(&text, "correct_total", &v1), 863.0);
    let accuracy = metric_sum(&text, "infergate_feedback_accuracy", &v1).unwrap();
    assert!((accuracy - 0.863).abs() <= 0.001, "accuracy gauge {accuracy}");
    assert_eq!(results(&text), [1000.0, 0.0, 0.0, 0.0]);

    // A 3-row request labelled by an array, one value per row: 3 rows more, the last one wrong.
    let rows = [0, 1, 12];
    let three = infer(&server, "iris", &rows, Some("three-rows"), None).await;
    let truth: Vec<i64> = rows.iter().map(|&r| IRIS.labels[r]).collect();
    assert_eq!(three.labels, truth);
    let targets = [truth[0], truth[1], (truth[2] + 1) % 3];
    assert_eq!(accepted(&server, "iris", &json!({"id": "three-rows", "target": targets})).await, [1, 0, 0, 0]);
    let text = scrape_until(&server, |t| counted(t, "labels_total", &v1) >= 1003.0).await;
    assert_eq!(counted(&text, "labels_total", &v1), 1003.0);
    assert_eq!(counted(&text, "correct_total", &v1), 865.0);
    let accuracy = metric_sum(&text, "infergate_feedback_accuracy", &v1).unwrap();
    assert!((accuracy - 865.0 / 1003.0).abs() <= 0.001, "accuracy gauge {accuracy}");
    assert_eq!(results(&text)[0], 1001.0);
    let _ = std::fs::remove_dir_all(&root);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unknown_and_duplicate_ids_are_counted_not_refused() {
    let _serial = SERIAL.lock().await;
    let root = temp_dir("feedback-ids");
    common::repository_with(&root, "iris", "iris/1/model.onnx", FEEDBACK_TOML);
    let server = start(&root, &[]).await;

    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let never: Vec<Value> =
        (0..5).map(|k| json!({"id": format!("never-answered-{nanos:x}-{k}"), "target": 0})).collect();
    assert_eq!(accepted(&server, "iris", &json!(never)).await, [0, 5, 0, 0]);

    // Without a body id the header's is the request's; with both, the body's wins and the header's is unknown.
    let from_header = infer(&server, "iris", &[12], None, Some("from-header-1")).await;
    let from_body = infer(&server, "iris", &[13], Some("from-body-1"), Some("from-header-2")).await;
    let label = json!({"id": "from-header-1", "target": from_header.labels[0]});
    assert_eq!(accepted(&server, "iris", &label).await, [1, 0, 0, 0]);
    assert_eq!(accepted(&server, "iris", &label).await, [0, 0, 0, 1], "a second label is a duplicate");
    let other = json!({"id": "from-header-1", "target": (from_header.labels[0] + 1) % 3});
    assert_eq!(accepted(&server, "iris", &other).await, [0, 0, 0, 1], "a different second label too");
    assert_eq!(accepted(&server, "iris", &json!({"id": "from-body-1", "target": from_body.labels[0]})).await[0], 1);
    assert_eq!(accepted(&server, "iris", &json!({"id": "from-header-2", "target": 1})).await, [0, 1, 0, 0]);

    let text = scrape_until(&server, |t| results(t) == [2.0, 6.0, 0.0, 2.0]).await;
    assert_eq!(results(&text), [2.0, 6.0, 0.0, 2.0], "{text}");
    let v1 = [("model", "iris"), ("version", "1")];
    assert_eq!(counted(&text, "labels_total", &v1), 2.0, "duplicates label nothing");
    assert_eq!(counted(&text, "correct_total", &v1), 2.0, "the first label stands");
    let _ = std::fs::remove_dir_all(&root);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn predictions_expire_by_age() {
    let _serial = SERIAL.lock().await;
    let root = temp_dir("feedback-age");
    common::repository_with(&root, "iris", "iris/1/model.onnx", FEEDBACK_TOML);
    let server = start(&root, &["--feedback-max-age-secs", "1"]).await;

    let fresh = infer(&server, "iris", &[0], Some("fresh"), None).await;
    assert_eq!(accepted(&server, "iris", &json!({"id": "fresh", "target": fresh.labels[0]})).await, [1, 0, 0, 0]);
    let mut aging = Vec::new();
    for k in 0..20 {
        aging.push(infer(&server, "iris", &[k], Some(format!("aging-{k}").as_str()), None).await);
    }
    let answered = Instant::now();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // Each try spends one prediction: one answered over a second ago expires, at the latest soon after.
    let mut matched_late = 0u32;
    let mut expired_after = None;
    for answer in &aging {
        let counts = accepted(&server, "iris", &json!({"id": answer.id, "target": answer.labels[0]})).await;
        assert_eq!(counts[1] + counts[3], 0, "{}: {counts:?}: an aged prediction is expired, not unknown", answer.id);
        if counts[2] == 1 {
            expired_after = Some(answered.elapsed());
            break;
        }
        assert_eq!(counts, [1, 0, 0, 0], "{}", answer.id);
        matched_late += 1;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    println!("aged predictions expired {expired_after:?} after they were answered ({matched_late} still matched)");
    assert!(expired_after.is_some(), "no prediction expired within 6 s of a 1 s age limit");

    let expected = [1.0 + f64::from(matched_late), 0.0, 1.0, 0.0];
    let text = scrape_until(&server, |t| results(t) == expected).await;
    assert_eq!(results(&text), expected, "{text}");
    let _ = std::fs::remove_dir_all(&root);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn predictions_past_the_count_are_evicted_oldest_first() {
    let _serial = SERIAL.lock().await;
    let root = temp_dir("feedback-count");
    common::repository_with(&root, "iris", "iris/1/model.onnx", FEEDBACK_TOML);
    let server = start(&root, &["--feedback-max-predictions", "10"]).await;

    // Far more than 10, so that the first is pushed out however the store divides its count among its parts.
    let mut answers = Vec::new();
    for k in 0..200 {
        answers.push(infer(&server, "iris", &[k % 32], Some(format!("kept-{k}").as_str()), None).await);
    }
    let label = |k: usize| json!({"id": answers[k].id, "target": answers[k].labels[0]});
    assert_eq!(accepted(&server, "iris", &label(0)).await, [0, 0, 1, 0], "the oldest was evicted");
    assert_eq!(accepted(&server, "iris", &label(199)).await, [1, 0, 0, 0], "the newest is kept");

    let text = scrape_until(&server, |t| results(t) == [1.0, 0.0, 1.0, 0.0]).await;
    assert_eq!(results(&text), [1.0, 0.0, 1.0, 0.0], "{text}");
    assert_eq!(counted(&text, "labels_total", &[("model", "iris")]), 1.0);
    let _ = std::fs::remove_dir_all(&root);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_feedback_is_refused_whole() {
    let _serial = SERIAL.lock().await;
    let root = temp_dir("feedback-refused");
    common::repository_with(&root, "iris", "iris/1/model.onnx", FEEDBACK_TOML);
    common::repository_with(&root, "plain", "iris/1/model.onnx", "max_batch_size = 1024\n");
    let server = start(&root, &["--feedback-max-batch", "10"]).await;

    let mut answers = Vec::new();
    for k in 0..12 {
        answers.push(infer(&server, "iris", &[k], Some(format!("bad-{k}").as_str()), None).await);
    }
    let label = |k: usize| json!({"id": answers[k].id, "target": answers[k].labels[0]});
    let batch = |range: std::ops::Range<usize>| json!(range.map(label).collect::<Vec<_>>());
    let bytes = |v: Value| serde_json::to_vec(&v).unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("not JSON", b"{\"id\": \"bad-0\", \"target\"".to_vec()),
        ("not JSON either", b"id=bad-0&target=1".to_vec()),
        ("no target", bytes(json!({"id": "bad-0"}))),
        ("no id", bytes(json!({"target": 1}))),
        ("a string target", bytes(json!({"id": "bad-0", "target": "1"}))),
        ("a fractional target for a classifier", bytes(json!({"id": "bad-0", "target": 1.5}))),
        ("2 targets for a one-row request", bytes(json!({"id": "bad-0", "target": [0, 0]}))),
        ("11 records, past --feedback-max-batch 10", bytes(batch(0..11))),
        ("an empty batch", b"[]".to_vec()),
        ("a good record then a bad one", bytes(json!([label(11), {"id": "bad-0", "target": "x"}]))),
    ];
    for (case, body) in cases {
        let reason = refused(&server, body).await;
        println!("{case}: 400 {reason}");
    }
    let text = scrape(&server).await;
    assert_eq!(results(&text), [0.0; 4], "refused feedback counted: {text}");
    assert_eq!(counted(&text, "labels_total", &[("model", "iris")]), 0.0, "refused feedback labelled rows");

    // None of it was applied: the refused batches' records are matched when sent again, not duplicates.
    assert_eq!(accepted(&server, "iris", &batch(0..10)).await, [10, 0, 0, 0]);
    assert_eq!(accepted(&server, "iris", &label(11)).await, [1, 0, 0, 0], "the good half of a refused batch");
    assert_eq!(accepted(&server, "iris", &label(10)).await, [1, 0, 0, 0]);
    let text = scrape_until(&server, |t| results(t)[0] == 12.0).await;
    assert_eq!(results(&text), [12.0, 0.0, 0.0, 0.0]);
    assert_eq!(counted(&text, "labels_total", &[("model", "iris")]), 12.0);

    let (status, answer) = feedback(&server, "no-such-model", bytes(json!({"id": "bad-0", "target": 0}))).await;
    assert_eq!(status, 404, "{answer}");
    // A model without [feedback] keeps no predictions: its ids are unknown, which is no error.
    let plain = infer(&server, "plain", &[0], Some("plain-1"), None).await;
    assert_eq!(accepted(&server, "plain", &json!({"id": plain.id, "target": plain.labels[0]})).await, [0, 1, 0, 0]);
    let _ = std::fs::remove_dir_all(&root);
}

/// Baseline iris v1 against its copy with every label rotated: same trees, latency and (on balanced rows) class
/// distribution, so error rate, p99 and PSI cannot tell them apart; only labels can.
const ROLLOUT_TOML: &str = "version_policy = \"all\"\nmax_batch_size = 1024\n[feedback]\n[traffic]\n\
    variants = [{ name = \"baseline\", version = 1, weight = 100 }, { name = \"candidate\", version = 2, weight = 0 }]\n\
    [rollout]\nbaseline = \"baseline\"\ncandidate = \"candidate\"\nsteps = [50, 100]\nstep_secs = 600.0\n\
    check_secs = 0.2\nmin_requests = 50\nmax_error_rate_increase = 0.01\nmax_p99_ratio = 3.0\n\
    max_accuracy_drop = 0.2\nmin_feedback = 50\n";

/// Polls the rollout endpoint until `done` accepts its status (or `limit` passes).
async fn rollout_until(server: &TestServer, limit: Duration, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let (status, rollout) = server.get("/v2/models/iris/rollout").await;
        if status == 200 && done(&rollout) {
            return rollout;
        }
        assert!(Instant::now() < deadline, "rollout not there within {limit:?}: {rollout}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_candidate_wrong_only_in_its_labels_is_rolled_back_on_accuracy() {
    let _serial = SERIAL.lock().await;
    let root = temp_dir("feedback-rollout");
    copy_model(&root, "iris", 1, "iris/1/model.onnx");
    copy_fixture(&root, "iris", 2, "iris_shuffled/1/model.onnx");
    std::fs::write(root.join("iris/model.toml"), ROLLOUT_TOML).unwrap();
    let server = start(&root, &["--metrics-window-seconds", "600"]).await;
    rollout_until(&server, Duration::from_secs(10), |r| r["state"] == "running" && r["candidate_percent"] == 50).await;
    // Pinned requests (outside the split and its windows) warm both versions before their latencies are compared.
    let row = IRIS.x[..4].to_vec();
    let warm = json!({"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": row}]});
    for version in [1, 2, 1, 2, 1, 2] {
        assert_eq!(server.post_json(&format!("/v2/models/iris/versions/{version}/infer"), &warm).await.0, 200);
    }

    // One row of each class per request, cycling through the golden rows: both variants predict exactly one of
    // each label per request, so their prediction distributions are equal whatever the random split.
    let of_class = |c: i64| (0..32).filter(|&r| IRIS.labels[r] == c).collect::<Vec<_>>();
    let classes = [of_class(0), of_class(1), of_class(2)];
    let mut answers = Vec::new();
    let (mut baseline, mut candidate) = (0u32, 0u32);
    while baseline < 300 || candidate < 300 {
        assert!(answers.len() < 5000, "the split sent {baseline} to the baseline and {candidate} to the candidate");
        let k = answers.len();
        let rows: Vec<usize> = classes.iter().map(|c| c[k % c.len()]).collect();
        let answer = infer(&server, "iris", &rows, None, None).await;
        let truth: Vec<i64> = rows.iter().map(|&r| IRIS.labels[r]).collect();
        match answer.variant.as_deref() {
            Some("baseline") => {
                assert_eq!((answer.version.as_str(), &answer.labels), ("1", &truth));
                baseline += 1;
            }
            Some("candidate") => {
                let rotated: Vec<i64> = truth.iter().map(|l| (l + 1) % 3).collect();
                assert_eq!((answer.version.as_str(), &answer.labels), ("2", &rotated), "every label wrong");
                candidate += 1;
            }
            other => panic!("answered by {other:?}"),
        }
        answers.push((answer, truth));
    }
    // Several checks later, with both windows past min_requests, nothing else tells the candidate apart.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (_, before) = server.get("/v2/models/iris/rollout").await;
    println!("{baseline} baseline and {candidate} candidate answers, no labels yet: {before}");
    assert_eq!((before["state"].as_str(), before["candidate_percent"].as_u64()), (Some("running"), Some(50)));
    assert!(before["decisions"].as_array().unwrap().iter().all(|d| d["decision"] != "rollback"), "{before}");

    // The truth arrives: the baseline is always right, the candidate never.
    let records: Vec<Value> = answers.iter().map(|(a, truth)| json!({"id": a.id, "target": truth})).collect();
    for batch in records.chunks(250) {
        assert_eq!(accepted(&server, "iris", &json!(batch)).await, [batch.len() as u64, 0, 0, 0]);
    }
    let labelled = Instant::now();
    let after = rollout_until(&server, Duration::from_secs(60), |r| r["state"] == "rolled_back").await;
    let decisions = after["decisions"].as_array().unwrap();
    let rollback = decisions.iter().find(|d| d["decision"] == "rollback").unwrap();
    println!("rolled back {:?} after the labels: {rollback}", labelled.elapsed());
    assert!(rollback["reason"].as_str().unwrap().starts_with("accuracy"), "{rollback}");
    assert_eq!(after["candidate_percent"], 0, "{after}");

    let (_, traffic) = server.get("/v2/models/iris/traffic").await;
    let variants = traffic["policy"]["variants"].as_array().unwrap();
    let weight = |name: &str| variants.iter().find(|v| v["name"] == name).unwrap()["weight"].clone();
    assert_eq!((weight("baseline"), weight("candidate")), (json!(100), json!(0)), "{traffic}");
    let text = scrape(&server).await;
    assert!(text.contains("infergate_traffic_weight_percent{model=\"iris\",variant=\"candidate\"} 0"), "{text}");
    assert!(
        text.contains(
            "infergate_rollout_decisions_total{candidate=\"candidate\",decision=\"rollback\",model=\"iris\"} 1"
        )
    );
    let accuracy = |variant: &str, version: &str| {
        let labels = [("model", "iris"), ("variant", variant), ("version", version)];
        (counted(&text, "labels_total", &labels), metric_sum(&text, "infergate_feedback_accuracy", &labels))
    };
    assert_eq!(accuracy("baseline", "1"), (3.0 * f64::from(baseline), Some(1.0)));
    assert_eq!(accuracy("candidate", "2"), (3.0 * f64::from(candidate), Some(0.0)));
    for k in 0..30 {
        let answer = infer(&server, "iris", &[k], None, None).await;
        assert_eq!(answer.variant.as_deref(), Some("baseline"), "the rolled-back candidate still answers");
    }
    let _ = std::fs::remove_dir_all(&root);
}

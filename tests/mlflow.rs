//! The MLflow Model Registry as a source, against a real `mlflow server` (sqlite backend, one worker, artifacts
//! proxied) started here on 127.0.0.1. The iris models are logged with `mlflow.onnx.log_model` and registered
//! (tests/mlflow/register.py); aliases are set and moved over MLflow's REST API and infergate follows each move,
//! through a signed webhook, then through polling alone; a version whose MLmodel signature does not match its
//! graph never replaces the one its alias named; on demand, the aliases' versions load on their first request;
//! MLflow going down changes nothing that is served. Needs
//! `.venv-mlflow` (tests/mlflow/requirements.txt), which scripts/test installs.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{TOLERANCE, TestServer, assert_outputs_match, config, golden, temp_dir};
use infergate::config::{MlflowSettings, Secret};
use infergate::repository::ModelConfig;
use infergate::repository::mlflow::{MlflowAuth, MlflowModel};
use serde_json::{Value, json};

const SECRET: &str = "webhook-secret-0123456789";
const REGISTERED: &str = "iris-classifier";

impl Drop for Mlflow {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A tracking server for the length of the test.
struct Mlflow {
    child: tokio::process::Child,
    uri: String,
    log: PathBuf,
}

impl Mlflow {
    async fn start(dir: &Path) -> Mlflow {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let log = dir.join("mlflow.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = tokio::process::Command::new(root.join(".venv-mlflow/bin/mlflow"))
            .args(["server", "--host", "127.0.0.1", "--port", &port.to_string(), "--workers", "1"])
            .arg("--backend-store-uri")
            .arg(format!("sqlite:///{}", dir.join("mlflow.db").display()))
            .arg("--artifacts-destination")
            .arg(dir.join("artifacts"))
            .env("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
            // Webhook deliveries go to infergate on 127.0.0.1 over plain HTTP.
            .env("MLFLOW_WEBHOOK_ALLOWED_SCHEMES", "http,https")
            .env("MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS", "true")
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            // Its own process group: the server's workers are its children, and stopping MLflow stops them all.
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mlflow = Mlflow { child, uri: format!("http://127.0.0.1:{port}"), log };
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            if let Ok(r) = client.get(format!("{}/health", mlflow.uri)).send().await
                && r.status() == 200
            {
                return mlflow;
            }
            assert!(Instant::now() < deadline, "mlflow server did not start:\n{}", mlflow.log_text());
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Stops the server and its workers.
    fn stop(&mut self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill").args(["-KILL", "--", &format!("-{pid}")]).status();
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Points an alias at a version, as `MlflowClient.set_registered_model_alias` does.
    async fn set_alias(&self, alias: &str, version: u64) {
        let response = reqwest::Client::new()
            .post(format!("{}/api/2.0/mlflow/registered-models/alias", self.uri))
            .json(&json!({"name": REGISTERED, "alias": alias, "version": version.to_string()}))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "{}", response.text().await.unwrap());
    }
}

fn settings(mlflow: &Mlflow, cache: &Path, poll: Duration, webhook: bool) -> MlflowSettings {
    MlflowSettings {
        uri: mlflow.uri.clone(),
        auth: MlflowAuth::None,
        models: vec![MlflowModel {
            registered: REGISTERED.to_owned(),
            serve_as: "iris".to_owned(),
            aliases: vec!["champion".to_owned(), "challenger".to_owned()],
            config: Arc::new(ModelConfig::default()),
        }],
        poll,
        cache: cache.to_owned(),
        webhook_secret: webhook.then(|| Secret(SECRET.to_owned())),
    }
}

/// The version that answered an iris request at `path`, or the error status.
async fn answered_by(server: &TestServer, path: &str) -> Result<String, u16> {
    let (status, body) = server.post_json(path, &golden("iris_v1.json").request).await;
    if status == 200 { Ok(body["model_version"].as_str().unwrap().to_owned()) } else { Err(status) }
}

/// Waits until `path` is answered by `version`; returns how long that took.
async fn until_answered(server: &TestServer, path: &str, version: &str, timeout: Duration) -> Duration {
    let started = Instant::now();
    loop {
        if answered_by(server, path).await.as_deref() == Ok(version) {
            return started.elapsed();
        }
        assert!(started.elapsed() < timeout, "{path} not answered by version {version} within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn index_rows(server: &TestServer) -> Vec<Value> {
    let index: Value =
        server.client.post(server.url("/v2/repository/index")).send().await.unwrap().json().await.unwrap();
    index.as_array().unwrap().iter().filter(|row| row["name"] == "iris").cloned().collect()
}

async fn eventually_in_index(server: &TestServer, what: &str, check: impl Fn(&[Value]) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let rows = index_rows(server).await;
        if check(&rows) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: the index shows {rows:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn row<'a>(rows: &'a [Value], version: &str) -> Option<&'a Value> {
    rows.iter().find(|row| row["version"] == version)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs mlflow in .venv-mlflow; scripts/test installs and runs it"]
async fn infergate_follows_aliases_in_a_real_mlflow_registry() {
    let dir = temp_dir("mlflow");
    let repository = dir.join("models");
    let cache = dir.join("cache");
    std::fs::create_dir_all(&repository).unwrap();
    let mut mlflow = Mlflow::start(&dir).await;

    // Before the model is registered: ready (MLflow answered), the model says why it does not serve.
    let server = TestServer::start(infergate::config::Config {
        mlflow: Some(settings(&mlflow, &cache, Duration::from_secs(600), true)),
        ..config(&repository)
    })
    .await;
    let (status, ready) = server.get("/v2/health/ready").await;
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["mlflow"]["reachable"], true, "{ready}");
    let (status, body) = server.post_json("/v2/models/iris/infer", &golden("iris_v1.json").request).await;
    assert_eq!(status, 503, "{body}");
    assert!(body["error"].as_str().unwrap().contains("does not exist"), "{body}");

    // Three versions, logged and registered as ML teams do; MLflow calls infergate's webhook on alias changes.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let webhook = format!("http://{}/v2/mlflow/webhook", server.server.http_addr().unwrap());
    let output = tokio::process::Command::new(root.join(".venv-mlflow/bin/python"))
        .arg(root.join("tests/mlflow/register.py"))
        .args([&mlflow.uri, REGISTERED, "--webhook", &webhook, "--secret", SECRET])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "register.py failed:\n{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    let registered: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(registered["versions"], json!([1, 2, 3]));

    // Polling is off (600 s): only the webhook can bring these moves in.
    mlflow.set_alias("champion", 1).await;
    let first = until_answered(&server, "/v2/models/iris/infer", "1", Duration::from_secs(20)).await;
    let (_, body) = server.post_json("/v2/models/iris/infer", &golden("iris_v1.json").request).await;
    assert_outputs_match(&body, &golden("iris_v1.json").outputs, TOLERANCE);
    mlflow.set_alias("challenger", 2).await;
    until_answered(&server, "/v2/models/iris/versions/challenger/infer", "2", Duration::from_secs(20)).await;
    let (_, body) =
        server.post_json("/v2/models/iris/versions/challenger/infer", &golden("iris_v2.json").request).await;
    assert_outputs_match(&body, &golden("iris_v2.json").outputs, TOLERANCE);
    assert_eq!(answered_by(&server, "/v2/models/iris/infer").await, Ok("1".to_owned()), "champion answers by default");
    eventually_in_index(&server, "aliases in the index", |rows| {
        row(rows, "1").is_some_and(|r| r["aliases"] == json!(["champion"]) && r["state"] == "READY")
            && row(rows, "2").is_some_and(|r| r["aliases"] == json!(["challenger"]) && r["state"] == "READY")
    })
    .await;

    // Version 3's MLmodel declares an FP64 input its graph does not have: refused, and the challenger stays 2.
    mlflow.set_alias("challenger", 3).await;
    eventually_in_index(&server, "version 3 refused", |rows| {
        row(rows, "3").is_some_and(|r| {
            r["state"] == "UNAVAILABLE" && r["reason"].as_str().unwrap().contains("MLmodel signature declares input")
        })
    })
    .await;
    assert_eq!(answered_by(&server, "/v2/models/iris/versions/challenger/infer").await, Ok("2".to_owned()));

    // The champion moves to 2: unversioned traffic follows, version 1 drains away.
    mlflow.set_alias("champion", 2).await;
    let webhook_move = until_answered(&server, "/v2/models/iris/infer", "2", Duration::from_secs(20)).await;
    eventually_in_index(&server, "version 1 unloaded", |rows| {
        row(rows, "1").is_some_and(|r| r["state"] == "UNAVAILABLE" && r["reason"] == "unloaded")
    })
    .await;

    // A forged delivery is refused.
    let forged = server
        .client
        .post(server.url("/v2/mlflow/webhook"))
        .header("x-mlflow-delivery-id", "forged")
        .header("x-mlflow-timestamp", "0")
        .header("x-mlflow-signature", "v1,AAAA")
        .body(r#"{"entity": "model_version_alias", "action": "created", "data": {"name": "iris-classifier"}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);
    server.server.shutdown();
    assert_eq!(server.server.wait().await.unwrap(), infergate::server::Stopped::Drained);

    // A second server on the same cache, polling every 0.5 s and without the webhook: the cached versions are
    // reused, and the next move is found by polling.
    let cached = cache.join("iris/2/model.onnx");
    let stamp = std::fs::metadata(&cached).unwrap().modified().unwrap();
    let server = TestServer::start(infergate::config::Config {
        mlflow: Some(settings(&mlflow, &cache, Duration::from_millis(500), false)),
        ..config(&repository)
    })
    .await;
    assert_eq!(answered_by(&server, "/v2/models/iris/infer").await, Ok("2".to_owned()));
    assert_eq!(std::fs::metadata(&cached).unwrap().modified().unwrap(), stamp, "the cached version was fetched again");
    mlflow.set_alias("champion", 1).await;
    let polled_move = until_answered(&server, "/v2/models/iris/infer", "1", Duration::from_secs(20)).await;
    // This server never served version 2 as the challenger, so the broken version 3 leaves it without one.
    assert_eq!(answered_by(&server, "/v2/models/iris/versions/challenger/infer").await, Err(503));
    mlflow.set_alias("challenger", 2).await;
    until_answered(&server, "/v2/models/iris/versions/challenger/infer", "2", Duration::from_secs(20)).await;

    // On demand, the aliases' versions are fetched and listed, and load on their first request.
    let on_demand = TestServer::start(infergate::config::Config {
        mlflow: Some(settings(&mlflow, &cache, Duration::from_millis(500), false)),
        model_control_mode: infergate::config::ModelControlMode::OnDemand,
        ..config(&repository)
    })
    .await;
    eventually_in_index(&on_demand, "the aliases' versions listed, not loaded", |rows| {
        row(rows, "1").is_some_and(|r| r["state"] == "UNLOADED" && r["aliases"] == json!(["champion"]))
            && row(rows, "2").is_some_and(|r| r["state"] == "UNLOADED" && r["aliases"] == json!(["challenger"]))
    })
    .await;
    let response = on_demand
        .client
        .post(on_demand.url("/v2/models/iris/infer"))
        .json(&golden("iris_v1.json").request)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("x-infergate-cold-start-ms").is_some(), "the first request waited for the load");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["model_version"], "1", "{body}");
    assert_outputs_match(&body, &golden("iris_v1.json").outputs, TOLERANCE);
    let rows = index_rows(&on_demand).await;
    assert_eq!(row(&rows, "1").unwrap()["state"], "READY", "{rows:?}");
    assert_eq!(row(&rows, "2").unwrap()["state"], "UNLOADED", "the challenger is not asked for: {rows:?}");
    on_demand.server.shutdown();
    on_demand.server.wait().await.unwrap();

    // MLflow goes down: everything loaded keeps serving; readiness and metrics say MLflow is unreachable.
    mlflow.stop();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, ready) = server.get("/v2/health/ready").await;
        assert_eq!(status, 200, "{ready}");
        if ready["mlflow"]["reachable"] == false {
            assert!(ready["mlflow"]["error"].as_str().unwrap().contains("unreachable"), "{ready}");
            break;
        }
        assert!(Instant::now() < deadline, "MLflow's outage not reported: {ready}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(answered_by(&server, "/v2/models/iris/infer").await, Ok("1".to_owned()));
    assert_eq!(answered_by(&server, "/v2/models/iris/versions/challenger/infer").await, Ok("2".to_owned()));
    let metrics = common::scrape(&server).await;
    assert_eq!(common::metric(&metrics, "infergate_mlflow_up"), Some(0.0), "{metrics}");
    assert!(common::metric(&metrics, "infergate_mlflow_errors_total").unwrap() >= 1.0);
    assert_eq!(common::metric(&metrics, r#"infergate_mlflow_alias_version{alias="champion",model="iris"}"#), Some(1.0));

    // A restart while MLflow is down serves the aliases last served, from the cache. What a crash in the middle of
    // a download leaves (a staging folder with half a file) is removed at start and never served.
    server.server.shutdown();
    server.server.wait().await.unwrap();
    let leftover = cache.join("iris/.download-3-1-1");
    std::fs::create_dir_all(&leftover).unwrap();
    let whole = std::fs::read(cache.join("iris/1/model.onnx")).unwrap();
    std::fs::write(leftover.join("model.onnx"), &whole[..whole.len() / 2]).unwrap();
    let server = TestServer::start(infergate::config::Config {
        mlflow: Some(settings(&mlflow, &cache, Duration::from_millis(500), false)),
        ..config(&repository)
    })
    .await;
    assert_eq!(answered_by(&server, "/v2/models/iris/infer").await, Ok("1".to_owned()));
    assert_eq!(answered_by(&server, "/v2/models/iris/versions/challenger/infer").await, Ok("2".to_owned()));
    assert!(!leftover.exists(), "the unfinished download is still there");
    let (_, ready) = server.get("/v2/health/ready").await;
    assert_eq!(ready["mlflow"]["reachable"], false, "{ready}");

    println!(
        "alias move to serving: first alias {} ms, webhook {} ms, polling (0.5 s) {} ms",
        first.as_millis(),
        webhook_move.as_millis(),
        polled_move.as_millis()
    );
    drop(server);
    std::fs::remove_dir_all(&dir).unwrap();
}

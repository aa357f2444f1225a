//! Start with a thousand on-demand models: the repository is listed, not loaded, and the server is ready within a
//! second. Its own test binary, so no other test's load competes for the cores while it is timed.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{TestServer, config_with_ort, temp_dir};
use infergate::Config;
use infergate::config::ModelControlMode;
use serde_json::{Value, json};

const MODELS: usize = 1000;

#[tokio::test]
async fn a_thousand_listed_models_start_in_under_a_second() {
    let root = temp_dir("on-demand-thousand");
    let source = common::bundled_models().join("mlp/1/model.onnx");
    for n in 0..MODELS {
        let dir = root.join(format!("m{n:04}/1"));
        std::fs::create_dir_all(&dir).unwrap();
        // Linked, not copied: the test is about listing, and a thousand links take no room.
        std::fs::hard_link(&source, dir.join("model.onnx")).unwrap();
    }
    let config = Config { model_control_mode: ModelControlMode::OnDemand, ..config_with_ort(&root) };
    let started = Instant::now();
    let server = TestServer::start(config).await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(1), "ready {took:?} after start with {MODELS} models listed");

    let index: Value =
        server.client.post(server.url("/v2/repository/index")).send().await.unwrap().json().await.unwrap();
    let rows = index.as_array().unwrap();
    assert_eq!(rows.len(), MODELS);
    assert!(rows.iter().all(|row| row["state"] == "UNLOADED"), "nothing loaded at start");
    let request =
        json!({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": vec![0.5f32; 64]}]});
    let (status, answer) = server.post_json("/v2/models/m0999/infer", &request).await;
    assert_eq!(status, 200, "{answer}");
    std::fs::remove_dir_all(&root).unwrap();
}

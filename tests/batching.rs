//! Dynamic batching end to end: every caller gets exactly its rows, deadlines, back-pressure and limits.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{
    TOLERANCE, TestServer, config, config_with_ort, copy_fixture, golden, repository_with, slow_rows, temp_dir,
};
use serde_json::{Value, json};

/// A small deterministic generator (xorshift), so a failing interleaving can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Random interleavings of requests of 1–8 rows, batched with a window so batches really form: each caller's
/// outputs equal ONNX Runtime's unbatched outputs for its rows.
#[tokio::test]
async fn every_caller_gets_exactly_its_rows() {
    let root = temp_dir("batching-property");
    repository_with(
        &root,
        "mlp",
        "mlp/1/model.onnx",
        "max_batch_size = 32\n[batching]\nmax_queue_delay_us = 3000\npreferred_batch_sizes = [16]\n",
    );
    let server = TestServer::start(config(&root)).await;
    let g = golden("mlp_v1.json");
    let inputs: Vec<f64> =
        g.request["inputs"][0]["data"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    let outputs: Vec<f64> =
        g.outputs["probabilities"]["data"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();

    for seed in 1..=5u64 {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ seed);
        let mut tasks = Vec::new();
        for request in 0..40 {
            let rows: Vec<usize> = (0..1 + rng.below(8)).map(|_| rng.below(8) as usize).collect();
            let data: Vec<f64> = rows.iter().flat_map(|&r| inputs[r * 64..(r + 1) * 64].iter().copied()).collect();
            let body = json!({"id": format!("{seed}-{request}"),
                "inputs":[{"name":"input","shape":[rows.len(), 64],"datatype":"FP32","data":data}]});
            let pause = Duration::from_micros(rng.below(2000));
            let client = server.client.clone();
            let url = server.url("/v2/models/mlp/infer");
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep(pause).await;
                let response = client.post(url).json(&body).send().await.unwrap();
                let status = response.status().as_u16();
                let reply: Value = response.json().await.unwrap();
                (rows, status, reply)
            }));
        }
        for task in tasks {
            let (rows, status, reply) = task.await.unwrap();
            assert_eq!(status, 200, "{reply}");
            assert_eq!(reply["outputs"][0]["shape"], json!([rows.len(), 10]));
            let got = reply["outputs"][0]["data"].as_array().unwrap();
            for (i, &row) in rows.iter().enumerate() {
                for k in 0..10 {
                    let (g, w) = (got[i * 10 + k].as_f64().unwrap(), outputs[row * 10 + k]);
                    assert!(
                        (g - w).abs() <= TOLERANCE,
                        "seed {seed} {}: row {i} (golden {row}) [{k}]: {g} vs {w}",
                        reply["id"]
                    );
                }
            }
        }
    }
    std::fs::remove_dir_all(&root).unwrap();
}

/// Keeps the only instance busy with a slow request, so what follows has to wait in the queue.
async fn occupy(server: &TestServer, path: &str) -> tokio::task::JoinHandle<u16> {
    let client = server.client.clone();
    let url = server.url(path);
    let body = serde_json::to_vec(&slow_rows(1000)).unwrap();
    let handle = tokio::spawn(async move { client.post(url).body(body).send().await.unwrap().status().as_u16() });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!handle.is_finished(), "the slow request finished too soon to occupy the instance");
    handle
}

#[tokio::test]
async fn deadlines_answer_504_and_the_rest_still_serve() {
    let root = temp_dir("batching-deadline");
    copy_fixture(&root, "slow", 1, "slow/1/model.onnx");
    std::fs::write(root.join("slow/model.toml"), "max_batch_size = 1024\n[batching]\ndefault_timeout_ms = 60000\n")
        .unwrap();
    let server = TestServer::start(config_with_ort(&root)).await;
    let busy = occupy(&server, "/v2/models/slow/infer").await;

    // A header deadline and a `timeout` parameter (µs, as Triton's clients send it) both run out while queued
    // behind the busy batch.
    let response = server
        .client
        .post(server.url("/v2/models/slow/infer"))
        .header("x-request-timeout-ms", "50")
        .json(&slow_rows(1))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 504);
    let body: Value = response.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("deadline"), "{body}");

    let mut with_parameter = slow_rows(2);
    with_parameter["parameters"] = json!({"timeout": 50_000});
    let (status, body) = server.post_json("/v2/models/slow/infer", &with_parameter).await;
    assert_eq!(status, 504, "{body}");

    let response = server
        .client
        .post(server.url("/v2/models/slow/infer"))
        .header("x-request-timeout-ms", "soon")
        .json(&slow_rows(1))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);

    assert_eq!(busy.await.unwrap(), 200);
    let (status, body) = server.post_json("/v2/models/slow/infer", &slow_rows(3)).await;
    assert_eq!(status, 200, "{body}");
    std::fs::remove_dir_all(&root).unwrap();
}

#[tokio::test]
async fn a_full_queue_answers_429_with_retry_after() {
    let root = temp_dir("batching-full");
    copy_fixture(&root, "slow", 1, "slow/1/model.onnx");
    std::fs::write(root.join("slow/model.toml"), "max_batch_size = 1024\n[batching]\nmax_queue_size = 1\n").unwrap();
    let server = TestServer::start(config_with_ort(&root)).await;
    let busy = occupy(&server, "/v2/models/slow/infer").await;
    // This one waits behind the busy batch and fills the one queue slot.
    let client = server.client.clone();
    let url = server.url("/v2/models/slow/infer");
    let queued =
        tokio::spawn(async move { client.post(url).json(&slow_rows(1000)).send().await.unwrap().status().as_u16() });
    tokio::time::sleep(Duration::from_millis(100)).await;

    let response = server.client.post(server.url("/v2/models/slow/infer")).json(&slow_rows(1)).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 429);
    assert_eq!(response.headers()["retry-after"], "1");
    let body: Value = response.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("overloaded"), "{body}");

    assert_eq!(busy.await.unwrap(), 200);
    assert_eq!(queued.await.unwrap(), 200);
    std::fs::remove_dir_all(&root).unwrap();
}

#[tokio::test]
async fn limits_and_config_endpoint() {
    let server = TestServer::bundled().await;
    let (status, body) = server
        .post_json(
            "/v2/models/mlp/infer",
            &json!({"inputs":[{"name":"input","shape":[65,64],"datatype":"FP32","data":vec![0.5; 65 * 64]}]}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "the request holds 65 rows but max_batch_size is 64");

    let (status, config) = server.get("/v2/models/mlp/config").await;
    assert_eq!(status, 200, "{config}");
    assert_eq!(config["max_batch_size"], 64);
    assert_eq!(config["input"], json!([{"name":"input","data_type":"TYPE_FP32","dims":[64]}]));
    assert_eq!(config["output"], json!([{"name":"probabilities","data_type":"TYPE_FP32","dims":[10]}]));
    assert_eq!(config["dynamic_batching"]["max_queue_delay_microseconds"], 0);
    assert_eq!(config["dynamic_batching"]["default_queue_policy"]["max_queue_size"], 1024);
    assert_eq!(config["instance_group"], json!([{"count":1,"kind":"KIND_CPU"}]));

    let (status, config) = server.get("/v2/models/iris/versions/1/config").await;
    assert_eq!(status, 200);
    assert_eq!(config["version"], "1");
    assert_eq!(config["output"][0], json!({"name":"label","data_type":"TYPE_INT64","dims":[]}));
    assert_eq!(server.get("/v2/models/nope/config").await.0, 404);
}

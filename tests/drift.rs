//! Drift: `infergate reference` builds a reference from sample traffic; traffic like it keeps the PSI gauges low,
//! shifted traffic raises them past the alert threshold (0.25, as in deploy/prometheus/alerts.yaml).
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

use common::{TestServer, config, copy_model, golden, iris_rows, scrape, temp_dir};

/// The threshold of the drift alerts.
const ALERT_PSI: f64 = 0.25;

fn psi(text: &str, series: &str) -> f64 {
    common::metric(text, series).unwrap_or_else(|| panic!("{series} missing from\n{text}"))
}

#[tokio::test]
async fn shifted_traffic_raises_the_drift_gauges() {
    let root = temp_dir("drift");
    copy_model(&root, "iris", 1, "iris/1/model.onnx");
    let samples = root.join("samples.json");
    let g = golden("iris_v1.json");
    std::fs::write(&samples, serde_json::to_vec(&g.request).unwrap()).unwrap();
    let model = root.join("iris/1/model.onnx");
    let output = Command::new(env!("CARGO_BIN_EXE_infergate"))
        .args(["reference", "--model", model.to_str().unwrap(), "--samples", samples.to_str().unwrap()])
        .args(["--buckets", "4"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let reference: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("iris/1/reference.json")).unwrap()).unwrap();
    assert!(reference["predictions"]["label"]["classes"].is_object(), "{reference}");
    assert_eq!(reference["features"]["X"].as_array().unwrap().len(), 4);

    let label = r#"infergate_prediction_drift_psi{model="iris",output="label",version="1"}"#;
    let petal = r#"infergate_feature_drift_psi{feature="2",input="X",model="iris",version="1"}"#;

    // Traffic like the samples.
    let server = TestServer::start(config(&root)).await;
    for _ in 0..3 {
        assert_eq!(server.post_json("/v2/models/iris/infer", &g.request).await.0, 200);
    }
    let text = scrape(&server).await;
    assert!(psi(&text, label) < 0.1, "{}", psi(&text, label));
    assert!(psi(&text, petal) < 0.1, "{}", psi(&text, petal));
    drop(server);

    // Shifted traffic: every row alike, long sepals and short petals.
    let server = TestServer::start(config(&root)).await;
    for _ in 0..2 {
        assert_eq!(server.post_json("/v2/models/iris/infer", &iris_rows(50)).await.0, 200);
    }
    let text = scrape(&server).await;
    assert!(psi(&text, label) > ALERT_PSI, "{}", psi(&text, label));
    assert!(psi(&text, petal) > ALERT_PSI, "{}", psi(&text, petal));
    std::fs::remove_dir_all(&root).unwrap();
}

#[tokio::test]
async fn a_broken_reference_fails_the_version_with_the_reason() {
    let root = temp_dir("drift-broken");
    copy_model(&root, "iris", 1, "iris/1/model.onnx");
    std::fs::write(root.join("iris/1/reference.json"), r#"{"predictions":{"label":{"classes":{"0":0.2}}}}"#).unwrap();
    let server = TestServer::start(config(&root)).await;
    let (status, body) = server.get("/v2/models/iris/ready").await;
    assert_eq!(status, 503);
    assert!(body["error"].as_str().unwrap().contains("sum to 1"), "{body}");
    std::fs::remove_dir_all(&root).unwrap();
}

//! Broken models are reported with their path and reason, and never stop the other models from serving.
#![allow(clippy::unwrap_used)]

mod common;

use common::{TestServer, bundled_models, config, golden, temp_dir};
use serde_json::json;

fn copy_mlp(root: &std::path::Path, name: &str, version: u64) {
    common::copy_model(root, name, version, "mlp/1/model.onnx");
}

#[tokio::test]
async fn broken_models_are_reported_and_the_rest_serve() {
    let root = temp_dir("broken-repo");
    copy_mlp(&root, "good", 1);
    // Not ONNX at all.
    std::fs::create_dir_all(root.join("garbage/1")).unwrap();
    std::fs::write(root.join("garbage/1/model.onnx"), b"this is not a protobuf \xff\xff\xff").unwrap();
    // A valid file cut in half.
    let mlp = std::fs::read(bundled_models().join("mlp/1/model.onnx")).unwrap();
    std::fs::create_dir_all(root.join("truncated/1")).unwrap();
    std::fs::write(root.join("truncated/1/model.onnx"), &mlp[..mlp.len() / 2]).unwrap();
    // A typo in model.toml.
    copy_mlp(&root, "typo", 1);
    std::fs::write(root.join("typo/model.toml"), "bakend = \"tract\"\n").unwrap();
    // Version 2 is broken, version 1 still serves through the policy.
    copy_mlp(&root, "half", 1);
    std::fs::create_dir_all(root.join("half/2")).unwrap();
    std::fs::write(root.join("half/2/model.onnx"), b"").unwrap();
    std::fs::write(root.join("half/model.toml"), "version_policy = { latest = 2 }\n").unwrap();
    // A version folder without its file.
    std::fs::create_dir_all(root.join("nofile/1")).unwrap();

    let server = TestServer::start(config(&root)).await;
    let g = golden("mlp_v1.json");
    let (status, body) = server.post_json("/v2/models/good/infer", &g.request).await;
    assert_eq!(status, 200, "{body}");
    common::assert_outputs_match(&body, &g.outputs, common::TOLERANCE);

    for (model, reason) in [
        ("garbage", "garbage/1/model.onnx"),
        ("truncated", "truncated/1/model.onnx"),
        ("typo", "bakend"),
        ("nofile", "must hold model.onnx"),
    ] {
        let (status, body) = server.post_json(&format!("/v2/models/{model}/infer"), &g.request).await;
        assert_eq!(status, 503, "{model}: {body}");
        let error = body["error"].as_str().unwrap();
        assert!(error.contains(reason), "{model}: {error:?} should mention {reason:?}");
        assert_eq!(server.get(&format!("/v2/models/{model}/ready")).await.0, 503);
    }

    // A model-level failure answers 503 on versioned routes too.
    let (status, body) = server.post_json("/v2/models/typo/versions/1/infer", &g.request).await;
    assert_eq!(status, 503, "{body}");
    assert!(body["error"].as_str().unwrap().contains("bakend"), "{body}");

    // The broken version is reported; unversioned traffic goes to the version that loaded.
    let (status, body) = server.post_json("/v2/models/half/infer", &g.request).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["model_version"], "1");
    let (status, body) = server.post_json("/v2/models/half/versions/2/infer", &g.request).await;
    assert_eq!(status, 503);
    assert!(body["error"].as_str().unwrap().contains("version 2 failed"), "{body}");
    assert_eq!(server.get("/v2/models/half").await.1["versions"], json!(["1"]));

    std::fs::remove_dir_all(&root).unwrap();
}

#[tokio::test]
async fn version_policy_latest_by_default() {
    let root = temp_dir("policy-repo");
    copy_mlp(&root, "m", 3);
    copy_mlp(&root, "m", 10);
    let server = TestServer::start(config(&root)).await;
    let (status, meta) = server.get("/v2/models/m").await;
    assert_eq!(status, 200);
    assert_eq!(meta["versions"], json!(["10"]));
    assert_eq!(server.get("/v2/models/m/versions/3/ready").await.0, 404);
    std::fs::remove_dir_all(&root).unwrap();
}

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

/// The repository API: an index for everyone; load and unload only with the admin token, never with a name that
/// leaves the repository folder. A reload that fails leaves the loaded copy serving.
#[tokio::test]
async fn repository_index_load_and_unload() {
    let root = temp_dir("repository-api");
    copy_mlp(&root, "m", 1);
    let token = "repository-admin-token-0123456789";
    let mut cfg = config(&root);
    cfg.admin_token = Some(infergate::config::Secret(token.to_owned()));
    let server = TestServer::start(cfg).await;
    let post = |path: &str, auth: Option<&str>| {
        let mut request = server.client.post(server.url(path));
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        request.send()
    };
    let bearer = format!("Bearer {token}");

    let index: serde_json::Value = post("/v2/repository/index", None).await.unwrap().json().await.unwrap();
    assert_eq!(index, json!([{"name": "m", "version": "1", "state": "READY"}]));

    let response = post("/v2/repository/models/m/unload", None).await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    assert_eq!(post("/v2/repository/models/m/unload", Some("Bearer wrong")).await.unwrap().status(), 401);
    // (A bare ".." never arrives: clients resolve it in the URL before sending.)
    for trick in ["..%2F..%2Fetc", "%2Fetc", "a%00b", ".hidden", "m%2F1"] {
        let status = post(&format!("/v2/repository/models/{trick}/load"), Some(&bearer)).await.unwrap().status();
        assert_eq!(status, 400, "{trick}");
    }
    assert_eq!(post("/v2/repository/models/absent/load", Some(&bearer)).await.unwrap().status(), 404);

    assert_eq!(post("/v2/repository/models/m/unload", Some(&bearer)).await.unwrap().status(), 200);
    let (status, body) = server.get("/v2/models/m/ready").await;
    assert_eq!(status, 503, "{body}");
    assert!(body["error"].as_str().unwrap().contains("unloaded"), "{body}");

    // A new version appears; loading picks it up. Then a broken copy of it: the reload keeps the loaded one.
    copy_mlp(&root, "m", 2);
    assert_eq!(post("/v2/repository/models/m/load", Some(&bearer)).await.unwrap().status(), 200);
    assert_eq!(server.get("/v2/models/m").await.1["versions"], json!(["2"]));
    std::fs::write(root.join("m/2/model.onnx"), b"broken").unwrap();
    assert_eq!(post("/v2/repository/models/m/load", Some(&bearer)).await.unwrap().status(), 200);
    assert_eq!(server.get("/v2/models/m/versions/2/ready").await.0, 200);
    std::fs::remove_dir_all(&root).unwrap();
}

#[tokio::test]
async fn load_and_unload_are_off_without_a_token() {
    let server = TestServer::bundled().await;
    let response = server.client.post(server.url("/v2/repository/models/iris/unload")).send().await.unwrap();
    assert_eq!(response.status(), 403);
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("INFERGATE_ADMIN_TOKEN"), "{body}");
    assert_eq!(server.get("/v2/models/iris/ready").await.0, 200);
}

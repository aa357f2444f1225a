//! Both backends against ONNX Runtime's own outputs (every bundled model, every tree ensemble fixture), ZipMap
//! models, the ONNX Runtime library paths (missing, wrong), a GPU device without a GPU, and `infergate backends`.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Command;

use common::{
    TOLERANCE, TestServer, assert_outputs_match, config_with_ort, copy_fixture, copy_model, golden, temp_dir,
};
use serde_json::json;

const BACKENDS: [&str; 2] = ["ort", "tract"];

fn write_toml(root: &Path, model: &str, toml: &str) {
    std::fs::write(root.join(model).join("model.toml"), toml).unwrap();
}

#[tokio::test]
async fn bundled_models_match_onnx_runtime_on_both_backends() {
    for backend in BACKENDS {
        let root = temp_dir(&format!("bundled-{backend}"));
        for (model, versions) in [("iris", &[1, 2][..]), ("mlp", &[1]), ("gbt", &[1])] {
            for &v in versions {
                copy_model(&root, model, v, &format!("{model}/{v}/model.onnx"));
            }
            write_toml(
                &root,
                model,
                &format!("backend = \"{backend}\"\nversion_policy = \"all\"\nmax_batch_size = 64\n"),
            );
        }
        let server = TestServer::start(config_with_ort(&root)).await;
        for file in ["iris_v1.json", "iris_v2.json", "mlp_v1.json", "gbt_v1.json"] {
            let golden = golden(file);
            let path = format!("/v2/models/{}/versions/{}/infer", golden.model, golden.version);
            let (status, body) = server.post_json(&path, &golden.request).await;
            assert_eq!(status, 200, "{backend} {file}: {body}");
            assert_outputs_match(&body, &golden.outputs, TOLERANCE);

            // One row at a time too: batch 1 takes other paths in both runtimes.
            let input = &golden.request["inputs"][0];
            let width = input["shape"][1].as_u64().unwrap() as usize;
            let first: Vec<_> = input["data"].as_array().unwrap()[..width].to_vec();
            let one =
                json!({"inputs": [{"name": input["name"], "shape": [1, width], "datatype": "FP32", "data": first}]});
            let (status, body) = server.post_json(&path, &one).await;
            assert_eq!(status, 200, "{backend} {file} (one row): {body}");
            for output in body["outputs"].as_array().unwrap() {
                let want = &golden.outputs[output["name"].as_str().unwrap()];
                let columns = output["data"].as_array().unwrap().len();
                let expected = json!({ output["name"].as_str().unwrap(): {
                    "datatype": want["datatype"],
                    "shape": output["shape"],
                    "data": want["data"].as_array().unwrap()[..columns].to_vec(),
                }});
                assert_outputs_match(&json!({"outputs": [output]}), &expected, TOLERANCE);
            }
        }
        let (status, meta) = server.get("/v2/models/gbt").await;
        assert_eq!(status, 200);
        assert_eq!(meta["parameters"]["backend"], backend, "{meta}");
        assert_eq!(meta["parameters"]["device"], "cpu", "{meta}");
        let provider = if backend == "ort" { "CPUExecutionProvider" } else { "tract" };
        assert_eq!(meta["parameters"]["execution_provider"], provider, "{meta}");
        let (_, config) = server.get("/v2/models/gbt/config").await;
        assert_eq!(config["backend"], backend, "{config}");
        std::fs::remove_dir_all(&root).unwrap();
    }
}

/// Random forests (binary, string labels), gradient boosting (multiclass, regression), a two-target regressor and
/// a ZipMap classifier, each compared with ONNX Runtime's answer; labels exactly, scores within the tolerance.
#[tokio::test]
async fn tree_ensembles_match_onnx_runtime_on_both_backends() {
    let names = ["rf_binary", "gbc_multiclass", "rf_strings", "gbr", "rf_regressor", "zipmap"];
    for backend in BACKENDS {
        let root = temp_dir(&format!("trees-{backend}"));
        for name in names {
            copy_fixture(&root, name, 1, &format!("trees/{name}/1/model.onnx"));
            write_toml(&root, name, &format!("backend = \"{backend}\"\nmax_batch_size = 64\n"));
        }
        let server = TestServer::start(config_with_ort(&root)).await;
        for name in names {
            let golden = golden(&format!("trees_{name}.json"));
            let (status, body) = server.post_json(&format!("/v2/models/{name}/infer"), &golden.request).await;
            assert_eq!(status, 200, "{backend} {name}: {body}");
            assert_outputs_match(&body, &golden.outputs, TOLERANCE);
        }
        // The ZipMap output is served as the probability matrix that fed it, and the metadata says so.
        let (status, meta) = server.get("/v2/models/zipmap").await;
        assert_eq!(status, 200, "{meta}");
        let probabilities = meta["outputs"].as_array().unwrap().iter().find(|o| o["name"] == "output_probability");
        assert_eq!(probabilities.unwrap()["datatype"], "FP32", "{meta}");
        assert_eq!(probabilities.unwrap()["shape"], json!([-1, 3]), "{meta}");
        let notes = meta["parameters"]["notes"].to_string();
        assert!(notes.contains("ZipMap") && notes.contains("output_probability"), "{meta}");
        std::fs::remove_dir_all(&root).unwrap();
    }
}

#[tokio::test]
async fn unsupported_operators_are_named_on_both_backends() {
    let root = temp_dir("unsupported");
    for backend in BACKENDS {
        copy_fixture(&root, backend, 1, "unsupported/1/model.onnx");
        write_toml(&root, backend, &format!("backend = \"{backend}\"\n"));
    }
    let server = TestServer::start(config_with_ort(&root)).await;
    for backend in BACKENDS {
        let (status, body) = server.get(&format!("/v2/models/{backend}")).await;
        assert_eq!(status, 503, "{body}");
        let error = body["error"].as_str().unwrap();
        assert!(error.contains(&format!("{backend}/1/model.onnx")) && error.contains("Frobnicate"), "{error}");
    }
    std::fs::remove_dir_all(&root).unwrap();
}

/// Without a GPU (or without CUDA in the library), a model asked to run on one fails to load with the provider's
/// reason; it never falls back to the CPU, and the other models serve.
#[tokio::test]
async fn a_gpu_model_without_a_gpu_fails_alone() {
    let root = temp_dir("cuda");
    copy_model(&root, "iris", 1, "iris/1/model.onnx");
    write_toml(&root, "iris", "backend = \"ort\"\ndevice = \"cuda:0\"\n");
    copy_model(&root, "mlp", 1, "mlp/1/model.onnx");
    let server = TestServer::start(config_with_ort(&root)).await;
    let (status, body) = server.get("/v2/models/iris").await;
    assert_eq!(status, 503, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(error.contains("cuda:0") && error.to_lowercase().contains("cuda"), "{error}");
    assert_eq!(server.get("/v2/models/mlp/ready").await.0, 200);
    std::fs::remove_dir_all(&root).unwrap();
}

fn infergate(args: &[&str]) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_infergate"));
    command.current_dir(env!("CARGO_MANIFEST_DIR")).args(args).env_remove("ORT_DYLIB_PATH");
    for (key, _) in std::env::vars() {
        if key.starts_with("INFERGATE_") {
            command.env_remove(key);
        }
    }
    command.output().unwrap()
}

#[test]
fn the_backends_command_reports_the_library_and_providers() {
    let library = common::ort_library();
    let output = infergate(&["backends", "--ort-library", library.to_str().unwrap(), "--json"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let statuses: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let ort = statuses.as_array().unwrap().iter().find(|s| s["name"] == "ort").unwrap();
    assert_eq!(ort["available"], true, "{ort}");
    assert!(ort["detail"].as_str().unwrap().contains(library.to_str().unwrap()), "{ort}");
    let cuda = ort["execution_providers"].as_array().unwrap().iter().find(|p| p["name"] == "cuda").unwrap();
    assert!(!cuda["detail"].as_str().unwrap().is_empty(), "{cuda}");

    let text = infergate(&["backends", "--ort-library", library.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("tract") && text.contains("ort    available"), "{text}");
}

/// A library that is missing or is not ONNX Runtime stops the start with the real reason, never a panic.
#[test]
fn missing_and_wrong_libraries_are_refused_with_the_reason() {
    let dir = temp_dir("wrong-library");
    let not_a_library = dir.join("libonnxruntime.so");
    std::fs::write(&not_a_library, "not an ELF file\n".repeat(256)).unwrap();
    // A real shared library that is not ONNX Runtime: the provider bridge shipped beside it.
    let bridge = common::ort_library().with_file_name("libonnxruntime_providers_shared.so");
    let missing = dir.join("nowhere/libonnxruntime.so.1.31.1");
    let cases = [
        (missing.clone(), "No such file"),
        (not_a_library.clone(), "invalid ELF header"),
        (bridge.clone(), "does not export `OrtGetApiBase`"),
    ];
    for (library, reason) in &cases {
        let library = library.to_str().unwrap();
        let output = infergate(&["backends", "--ort-library", library]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{library}: {stderr}");
        assert!(stderr.contains(library) && stderr.contains(reason), "{library}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");

        let output = infergate(&[
            "serve",
            "--model-repository",
            "models",
            "--http-port",
            "0",
            "--grpc-port",
            "0",
            "--metrics-port",
            "0",
            "--ort-library",
            library,
        ]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{library}: {stderr}");
        assert!(stderr.contains(library) && stderr.contains(reason), "{library}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

//! The KServe v2 REST API against the bundled models, served in-process.
#![allow(clippy::unwrap_used)]

mod common;

use common::{TOLERANCE, TestServer, assert_outputs_match, golden};
use infergate::config::Config;
use serde_json::{Value, json};

#[tokio::test]
async fn golden_outputs_match_onnx_runtime() {
    let server = TestServer::bundled().await;
    for file in ["iris_v1.json", "iris_v2.json", "mlp_v1.json"] {
        let g = golden(file);
        let path = format!("/v2/models/{}/versions/{}/infer", g.model, g.version);
        let (status, body) = server.post_json(&path, &g.request).await;
        assert_eq!(status, 200, "{file}: {body}");
        assert_eq!(body["model_name"], g.model.as_str());
        assert_eq!(body["model_version"], g.version.as_str());
        assert_eq!(body["id"], g.request["id"]);
        assert_outputs_match(&body, &g.outputs, TOLERANCE);
    }
}

#[tokio::test]
async fn readme_example_returns_the_onnx_runtime_classes() {
    let server = TestServer::bundled().await;
    let request =
        json!({"inputs":[{"name":"X","shape":[2,4],"datatype":"FP32","data":[5.1,3.5,1.4,0.2,6.7,3.0,5.2,2.3]}]});
    let (status, body) = server.post_raw("/v2/models/iris/infer", serde_json::to_vec(&request).unwrap()).await;
    assert_eq!(status, 200, "{body}");
    // Unversioned requests go to the highest version; the golden rows start with the README's two rows.
    assert_eq!(body["model_version"], "2");
    let g = golden("iris_v2.json");
    let labels = &g.outputs["label"]["data"].as_array().unwrap()[..2];
    assert_eq!(body["outputs"][0]["name"], "label");
    assert_eq!(body["outputs"][0]["data"].as_array().unwrap(), labels);
    assert_eq!(body["outputs"][1]["shape"], json!([2, 3]));
}

#[tokio::test]
async fn nested_data_and_output_selection() {
    let server = TestServer::bundled().await;
    let request = json!({
        "id": "nested",
        "inputs": [{"name":"X","shape":[2,4],"datatype":"FP32","data":[[5.1,3.5,1.4,0.2],[6.7,3.0,5.2,2.3]]}],
        "outputs": [{"name": "probabilities"}]
    });
    let (status, body) = server.post_json("/v2/models/iris/versions/1/infer", &request).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["id"], "nested");
    let outputs = body["outputs"].as_array().unwrap();
    assert_eq!(outputs.len(), 1);
    assert_eq!(outputs[0]["name"], "probabilities");
    let g = golden("iris_v1.json");
    let want = &g.outputs["probabilities"]["data"].as_array().unwrap()[..6];
    for (got, want) in outputs[0]["data"].as_array().unwrap().iter().zip(want) {
        assert!((got.as_f64().unwrap() - want.as_f64().unwrap()).abs() <= TOLERANCE);
    }
}

/// A sidecar's layout: inference on one address, metrics and probes on another. The metrics port answers the
/// server's health routes, never inference, and the REST port is not bound on the metrics address.
#[tokio::test]
async fn each_listener_binds_its_own_address_and_probes_reach_the_metrics_port() {
    let config = Config {
        http_host: "127.0.0.1".parse().unwrap(),
        grpc_host: "127.0.0.1".parse().unwrap(),
        metrics_host: "127.0.0.2".parse().unwrap(),
        ..common::config(&common::bundled_models())
    };
    let server = TestServer::start(config).await;
    let metrics = server.server.metrics_addr();
    assert_eq!(metrics.ip().to_string(), "127.0.0.2");
    assert_eq!(server.server.http_addr().unwrap().ip().to_string(), "127.0.0.1");
    for (path, want) in [("/v2/health/live", json!({"live": true})), ("/v2/health/ready", json!({"ready": true}))] {
        let response = server.client.get(format!("http://{metrics}{path}")).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(response.json::<Value>().await.unwrap(), want);
    }
    let scrape = server.client.get(format!("http://{metrics}/metrics")).send().await.unwrap();
    assert_eq!(scrape.status(), 200);
    let inference = server.client.post(format!("http://{metrics}/v2/models/iris/infer")).body("{}").send().await;
    assert_eq!(inference.unwrap().status(), 404, "the metrics port serves no inference");
    let rest_on_metrics_address =
        format!("http://127.0.0.2:{}/v2/health/live", server.server.http_addr().unwrap().port());
    assert!(server.client.get(rest_on_metrics_address).send().await.is_err(), "REST must not listen on 127.0.0.2");
}

#[tokio::test]
async fn health_and_metadata() {
    let server = TestServer::bundled().await;
    assert_eq!(server.get("/v2/health/live").await, (200, json!({"live": true})));
    assert_eq!(server.get("/v2/health/ready").await, (200, json!({"ready": true})));

    let (status, meta) = server.get("/v2").await;
    assert_eq!(status, 200);
    assert_eq!(meta["name"], "infergate");
    assert!(meta["extensions"].is_array());

    let (status, meta) = server.get("/v2/models/iris").await;
    assert_eq!(status, 200, "{meta}");
    assert_eq!(meta["name"], "iris");
    assert_eq!(meta["versions"], json!(["1", "2"]));
    assert_eq!(meta["inputs"], json!([{"name":"X","datatype":"FP32","shape":[-1,4]}]));
    assert_eq!(
        meta["outputs"],
        json!([{"name":"label","datatype":"INT64","shape":[-1]},{"name":"probabilities","datatype":"FP32","shape":[-1,3]}])
    );

    let (status, meta) = server.get("/v2/models/mlp/versions/1").await;
    assert_eq!(status, 200, "{meta}");
    assert_eq!(meta["inputs"], json!([{"name":"input","datatype":"FP32","shape":[-1,64]}]));
    assert_eq!(meta["outputs"], json!([{"name":"probabilities","datatype":"FP32","shape":[-1,10]}]));

    assert_eq!(server.get("/v2/models/iris/ready").await.0, 200);
    assert_eq!(server.get("/v2/models/iris/versions/1/ready").await.0, 200);
    assert_eq!(server.get("/v2/models/iris/versions/3/ready").await.0, 404);
    assert_eq!(server.get("/v2/models/nope/ready").await.0, 404);
}

fn iris_input(shape: Value, datatype: &str, data: Value) -> Value {
    json!({"inputs":[{"name":"X","shape":shape,"datatype":datatype,"data":data}]})
}

/// Every error case of the protocol: the status and a message that names what is wrong.
#[tokio::test]
async fn errors_name_the_problem() {
    let server = TestServer::bundled().await;
    let row = json!([5.1, 3.5, 1.4, 0.2]);
    let cases: Vec<(&str, &str, Vec<u8>, u16, &str)> = vec![
        ("unknown model", "/v2/models/nope/infer", serde_json::to_vec(&iris_input(json!([1,4]), "FP32", row.clone())).unwrap(), 404, "unknown model 'nope'"),
        ("unknown version", "/v2/models/iris/versions/7/infer", serde_json::to_vec(&iris_input(json!([1,4]), "FP32", row.clone())).unwrap(), 404, "has no version '7'"),
        ("non-numeric version", "/v2/models/iris/versions/latest/infer", serde_json::to_vec(&iris_input(json!([1,4]), "FP32", row.clone())).unwrap(), 404, "has no version 'latest'"),
        ("path trick", "/v2/models/..%2F..%2Fetc/infer", b"{}".to_vec(), 404, "unknown model '../../etc'"),
        ("malformed JSON", "/v2/models/iris/infer", b"{\"inputs\": [".to_vec(), 400, "invalid inference request"),
        ("not an object", "/v2/models/iris/infer", b"[1,2,3]".to_vec(), 400, "invalid inference request"),
        ("empty body", "/v2/models/iris/infer", Vec::new(), 400, "invalid inference request"),
        ("missing input", "/v2/models/iris/infer", br#"{"inputs":[]}"#.to_vec(), 400, "missing input 'X' (FP32 [-1,4])"),
        ("extra input", "/v2/models/iris/infer", serde_json::to_vec(&json!({"inputs":[
            {"name":"X","shape":[1,4],"datatype":"FP32","data":row.clone()},
            {"name":"Y","shape":[1],"datatype":"FP32","data":[1]}]})).unwrap(), 400, "unknown input 'Y'; model 'iris' takes 'X' FP32 [-1,4]"),
        ("wrong datatype", "/v2/models/iris/infer", serde_json::to_vec(&iris_input(json!([1,4]), "FP64", row.clone())).unwrap(), 400, "input 'X' expects FP32 [-1,4], got FP64 [1,4]"),
        ("wrong shape", "/v2/models/iris/infer", serde_json::to_vec(&iris_input(json!([2,2]), "FP32", row.clone())).unwrap(), 400, "input 'X' expects FP32 [-1,4], got FP32 [2,2]"),
        ("wrong rank", "/v2/models/iris/infer", serde_json::to_vec(&iris_input(json!([4]), "FP32", row.clone())).unwrap(), 400, "input 'X' expects FP32 [-1,4], got FP32 [4]"),
        ("data shorter than shape", "/v2/models/iris/infer", serde_json::to_vec(&iris_input(json!([2,4]), "FP32", row.clone())).unwrap(), 400, "input 'X' has shape [2, 4] but 4 data elements were given"),
        ("huge shape", "/v2/models/iris/infer", serde_json::to_vec(&iris_input(json!([1_000_000_000_000u64,4]), "FP32", row.clone())).unwrap(), 400, "input 'X' has shape [1000000000000, 4]"),
        ("float shape", "/v2/models/iris/infer", br#"{"inputs":[{"name":"X","shape":[1e12,4],"datatype":"FP32","data":[1,2,3,4]}]}"#.to_vec(), 400, "invalid inference request"),
        ("negative shape", "/v2/models/iris/infer", serde_json::to_vec(&iris_input(json!([-1,4]), "FP32", row.clone())).unwrap(), 400, "invalid inference request"),
        ("unknown datatype", "/v2/models/iris/infer", serde_json::to_vec(&iris_input(json!([1,4]), "FP128", row.clone())).unwrap(), 400, "unknown datatype 'FP128'"),
        ("string data", "/v2/models/iris/infer", serde_json::to_vec(&iris_input(json!([1,4]), "FP32", json!(["a","b","c","d"]))).unwrap(), 400, "element 0 is \"a\", which is not a number"),
        ("unknown output", "/v2/models/iris/infer", serde_json::to_vec(&json!({"inputs":[{"name":"X","shape":[1,4],"datatype":"FP32","data":row.clone()}],"outputs":[{"name":"proba"}]})).unwrap(), 400, "unknown output 'proba'; model 'iris' outputs label, probabilities"),
        ("no route", "/v2/nothing/here", Vec::new(), 404, "no route for POST /v2/nothing/here"),
        ("wrong method", "/v2/health/live", Vec::new(), 405, "POST is not allowed on /v2/health/live"),
    ];
    for (what, path, body, status, message) in cases {
        let (got, reply) = server.post_raw(path, body).await;
        assert_eq!(got, status, "{what}: {reply}");
        let error = reply["error"].as_str().unwrap_or_else(|| panic!("{what}: no error field in {reply}"));
        assert!(error.contains(message), "{what}: {error:?} does not contain {message:?}");
    }
}

/// Inference paths are read like every other route: percent-encoded names decoded, other methods refused.
#[tokio::test]
async fn inference_paths_decode_names_and_refuse_other_methods() {
    let server = TestServer::bundled().await;
    let body = iris_input(json!([1, 4]), "FP32", json!([5.1, 3.5, 1.4, 0.2]));
    let (status, reply) = server.post_json("/v2/models/ir%69s/versions/%31/infer", &body).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!((reply["model_name"].as_str(), reply["model_version"].as_str()), (Some("iris"), Some("1")));
    let (status, reply) = server.get("/v2/models/iris/infer").await;
    assert_eq!(status, 405, "{reply}");
    assert_eq!(reply["error"], "GET is not allowed on /v2/models/iris/infer");
    let (status, reply) = server.post_raw("/v2/models/bad%FFname/infer", b"{}".to_vec()).await;
    assert_eq!(status, 400, "{reply}");
    assert!(reply["error"].as_str().unwrap_or_default().contains("invalid path"), "{reply}");
}

#[tokio::test]
async fn oversized_bodies_get_413() {
    let mut config = common::config(&common::bundled_models());
    config.max_request_bytes = 4096;
    let server = TestServer::start(config).await;
    let big = iris_input(json!([400, 4]), "FP32", json!(vec![1.5; 1600]));
    let (status, body) = server.post_json("/v2/models/iris/infer", &big).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"], "request body is larger than the limit of 4096 bytes");
    // Bodies under the limit still work.
    let (status, body) =
        server.post_json("/v2/models/iris/infer", &iris_input(json!([1, 4]), "FP32", json!([1, 2, 3, 4]))).await;
    assert_eq!(status, 200, "{body}");
}

/// 100 malformed requests, sent concurrently with good ones: only 4xx answers for the bad, and the good keep
/// getting ONNX Runtime's answers in between.
#[tokio::test]
async fn malformed_flood_does_not_disturb_good_requests() {
    let server = TestServer::bundled().await;
    let g = golden("iris_v1.json");
    let good_path = "/v2/models/iris/versions/1/infer";
    let bad_bodies: Vec<Vec<u8>> = (0..100)
        .map(|i| match i % 10 {
            0 => b"{not json".to_vec(),
            1 => {
                serde_json::to_vec(&iris_input(json!([1_000_000_000_000u64, 4]), "FP32", json!([1, 2, 3, 4]))).unwrap()
            }
            2 => br#"{"inputs":[{"name":"X","shape":[1e12,4],"datatype":"FP32","data":[1,2,3,4]}]}"#.to_vec(),
            3 => serde_json::to_vec(&iris_input(json!([1, 4]), "INT64", json!([1, 2, 3, 4]))).unwrap(),
            4 => serde_json::to_vec(&iris_input(json!([1, 5]), "FP32", json!([1, 2, 3, 4, 5]))).unwrap(),
            5 => serde_json::to_vec(&iris_input(json!([4, 1]), "FP32", json!([1, 2, 3, 4]))).unwrap(),
            6 => serde_json::to_vec(&iris_input(json!([2, 4]), "FP32", json!([[1, 2, 3, 4], [5, 6, 7]]))).unwrap(),
            7 => serde_json::to_vec(&iris_input(json!([1, 4]), "FP32", json!([1, null, 3, 4]))).unwrap(),
            8 => format!("{}{}", "[".repeat(5000), "]".repeat(5000)).into_bytes(),
            _ => vec![0xff, 0xfe, 0x00, 0x01],
        })
        .collect();
    let mut tasks = Vec::new();
    for (i, body) in bad_bodies.into_iter().enumerate() {
        let client = server.client.clone();
        let url = server.url(good_path);
        tasks.push(tokio::spawn(async move {
            let response = client.post(url).body(body).send().await.unwrap();
            let status = response.status().as_u16();
            let reply: Value = response.json().await.unwrap();
            assert!((400..500).contains(&status), "bad request {i}: status {status}: {reply}");
            assert!(reply["error"].is_string(), "bad request {i}: {reply}");
        }));
        if i % 10 == 9 {
            let (status, body) = server.post_json(good_path, &g.request).await;
            assert_eq!(status, 200, "{body}");
            assert_outputs_match(&body, &g.outputs, TOLERANCE);
        }
    }
    for task in tasks {
        task.await.unwrap();
    }
    let (status, body) = server.post_json(good_path, &g.request).await;
    assert_eq!(status, 200);
    assert_outputs_match(&body, &g.outputs, TOLERANCE);
}

/// A request of about a megabyte is decoded off the async workers and answered like a small one.
#[tokio::test]
async fn large_requests_are_answered_correctly() {
    let root = common::temp_dir("large-requests");
    common::repository_with(&root, "mlp", "mlp/1/model.onnx", "max_batch_size = 0\n");
    let server = TestServer::start(common::config(&root)).await;
    let g = golden("mlp_v1.json");
    let rows = g.request["inputs"][0]["data"].as_array().unwrap().clone();
    let repeats = 125; // 8 golden rows × 125 = 1000 rows of 64 floats
    let data: Vec<Value> = (0..repeats).flat_map(|_| rows.iter().cloned()).collect();
    let request = json!({"inputs":[{"name":"input","shape":[8 * repeats, 64],"datatype":"FP32","data":data}]});
    let body = serde_json::to_vec(&request).unwrap();
    assert!(body.len() > 512 * 1024, "{} bytes", body.len());
    let (status, reply) = server.post_raw("/v2/models/mlp/infer", body).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["outputs"][0]["shape"], json!([8 * repeats, 10]));
    let got = reply["outputs"][0]["data"].as_array().unwrap();
    let want = g.outputs["probabilities"]["data"].as_array().unwrap();
    for (i, value) in got.iter().enumerate() {
        let expected = want[i % want.len()].as_f64().unwrap();
        assert!((value.as_f64().unwrap() - expected).abs() <= TOLERANCE, "element {i}");
    }
}

/// Triton's binary tensor extension over REST: raw little-endian inputs after the JSON header, and binary outputs
/// when asked, with the same answers as JSON.
#[tokio::test]
async fn binary_tensor_data_round_trips() {
    let server = TestServer::bundled().await;
    let golden = golden("iris_v1.json");
    let input = &golden.request["inputs"][0];
    let values: Vec<f32> = input["data"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
    let header = serde_json::to_vec(&json!({
        "inputs": [{"name": "X", "shape": input["shape"], "datatype": "FP32",
                    "parameters": {"binary_data_size": values.len() * 4}}],
        "outputs": [{"name": "label", "parameters": {"binary_data": true}}, {"name": "probabilities"}]
    }))
    .unwrap();
    let mut body = header.clone();
    values.iter().for_each(|v| body.extend_from_slice(&v.to_le_bytes()));
    let response = server
        .client
        .post(server.url("/v2/models/iris/versions/1/infer"))
        .header("inference-header-content-length", header.len())
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let length: usize = response.headers()["inference-header-content-length"].to_str().unwrap().parse().unwrap();
    let bytes = response.bytes().await.unwrap();
    let reply: Value = serde_json::from_slice(&bytes[..length]).unwrap();
    let labels: Vec<i64> = bytes[length..].chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect();
    assert_eq!(reply["outputs"][0]["parameters"]["binary_data_size"], labels.len() * 8);
    assert_eq!(json!(labels), golden.outputs["label"]["data"]);
    let probabilities = json!({"outputs": [reply["outputs"][1]]});
    let expected = json!({"probabilities": golden.outputs["probabilities"]});
    assert_outputs_match(&probabilities, &expected, TOLERANCE);

    // A header length past the body, or binary data left over, is a clear 400.
    let response = server
        .client
        .post(server.url("/v2/models/iris/versions/1/infer"))
        .header("inference-header-content-length", 1_000_000)
        .body(header)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
}

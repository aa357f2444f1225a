//! Triton's system shared-memory extension, end to end on a real server: off by default (and then refused, and
//! not listed), regions registered over REST with inputs read from one and outputs written into another, and each
//! bad handle answered 400 while the server goes on; then Triton's own clients and helpers over HTTP and gRPC.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};

use common::{TestServer, bundled_models, config_with_ort};
use infergate::config::Config;
use serde_json::{Value, json};

/// A shared-memory object in /dev/shm, removed on drop.
struct Object {
    key: String,
    path: PathBuf,
}

impl Object {
    fn new(tag: &str, contents: &[u8]) -> Object {
        let key = format!("/infergate-test-{tag}-{}", std::process::id());
        let path = Path::new("/dev/shm").join(&key[1..]);
        std::fs::write(&path, contents).unwrap();
        Object { key, path }
    }
}

impl Object {
    /// A symbolic link in /dev/shm to `target`.
    fn link(tag: &str, target: &str) -> Object {
        let key = format!("/infergate-test-{tag}-{}", std::process::id());
        let path = Path::new("/dev/shm").join(&key[1..]);
        std::os::unix::fs::symlink(target, &path).unwrap();
        Object { key, path }
    }
}

impl Drop for Object {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

async fn with_shared_memory() -> TestServer {
    TestServer::start(Config { shared_memory: true, ..config_with_ort(&bundled_models()) }).await
}

fn le_bytes(values: &[f64]) -> Vec<u8> {
    values.iter().flat_map(|&v| (v as f32).to_le_bytes()).collect()
}

/// The golden iris request with its input in `region` and the outputs named in `outputs` written into regions.
fn shared_request(golden: &Value, region: &str, outputs: Value) -> Value {
    let input = &golden["inputs"][0];
    let byte_size = input["data"].as_array().unwrap().len() * 4;
    json!({
        "inputs": [{
            "name": input["name"], "shape": input["shape"], "datatype": input["datatype"],
            "parameters": {"shared_memory_region": region, "shared_memory_byte_size": byte_size}
        }],
        "outputs": outputs
    })
}

#[tokio::test]
async fn the_extension_is_off_unless_asked_for() {
    let server = TestServer::start(config_with_ort(&bundled_models())).await;
    let (_, metadata) = server.get("/v2").await;
    let extensions = metadata["extensions"].as_array().unwrap();
    assert!(!extensions.contains(&json!("system_shared_memory")), "{metadata}");
    let object = Object::new("off", &[0; 64]);
    let (status, body) = server
        .post_json("/v2/systemsharedmemory/region/r/register", &json!({"key": object.key, "byte_size": 64}))
        .await;
    assert_eq!(status, 403, "{body}");
    assert!(body["error"].as_str().unwrap().contains("--shared-memory"), "{body}");
    let (status, _) = server.get("/v2/systemsharedmemory/status").await;
    assert_eq!(status, 403);
    let golden = common::golden("iris_v1.json");
    let (status, body) =
        server.post_json("/v2/models/iris/infer", &shared_request(&golden.request, "r", json!(null))).await;
    assert_eq!(status, 403, "{body}");

    let server = with_shared_memory().await;
    let (_, metadata) = server.get("/v2").await;
    assert!(metadata["extensions"].as_array().unwrap().contains(&json!("system_shared_memory")), "{metadata}");
}

/// Every output written into a region at its offset, the input read from another; status lists both.
#[tokio::test]
async fn inputs_are_read_from_a_region_and_outputs_written_into_one() {
    let server = with_shared_memory().await;
    let golden = common::golden("iris_v1.json");
    let values: Vec<f64> =
        golden.request["inputs"][0]["data"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    let input = Object::new("rest-in", &le_bytes(&values));
    let output = Object::new("rest-out", &[0; 4096]);
    for (name, object, size) in [("in", &input, values.len() * 4), ("out", &output, 4096)] {
        let (status, body) = server
            .post_json(
                &format!("/v2/systemsharedmemory/region/{name}/register"),
                &json!({"key": object.key, "offset": 0, "byte_size": size}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let names: Vec<String> = golden.outputs.as_object().unwrap().keys().cloned().collect();
    let outputs: Vec<Value> = names
        .iter()
        .enumerate()
        .map(|(ix, name)| {
            json!({"name": name, "parameters": {
                "shared_memory_region": "out", "shared_memory_offset": ix * 2048, "shared_memory_byte_size": 2048
            }})
        })
        .collect();
    let (status, reply) = server
        .post_json("/v2/models/iris/versions/1/infer", &shared_request(&golden.request, "in", json!(outputs)))
        .await;
    assert_eq!(status, 200, "{reply}");
    let written = std::fs::read(&output.path).unwrap();
    // Rebuild the outputs as JSON from the region, then compare them with the goldens as any response.
    let mut rebuilt = reply.clone();
    for (ix, out) in rebuilt["outputs"].as_array_mut().unwrap().iter_mut().enumerate() {
        // As Triton answers it: the datatype and shape, no data and no parameters.
        assert!(out.get("data").is_none() && out.get("parameters").is_none(), "{out}");
        let count: usize = out["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).product();
        let bytes = &written[ix * 2048..];
        out["data"] = match out["datatype"].as_str().unwrap() {
            "FP32" => json!(
                bytes
                    .chunks_exact(4)
                    .take(count)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                    .collect::<Vec<_>>()
            ),
            "INT64" => json!(
                bytes
                    .chunks_exact(8)
                    .take(count)
                    .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                    .collect::<Vec<_>>()
            ),
            other => panic!("no golden of datatype {other}"),
        };
    }
    common::assert_outputs_match(&rebuilt, &golden.outputs, common::TOLERANCE);

    let (status, regions) = server.get("/v2/systemsharedmemory/status").await;
    assert_eq!(status, 200);
    assert_eq!(
        regions,
        json!([
            {"name": "in", "key": input.key, "offset": 0, "byte_size": values.len() * 4},
            {"name": "out", "key": output.key, "offset": 0, "byte_size": 4096}
        ])
    );
    let (status, _) = server.post_json("/v2/systemsharedmemory/unregister", &json!({})).await;
    assert_eq!(status, 200);
    let (_, regions) = server.get("/v2/systemsharedmemory/status").await;
    assert_eq!(regions, json!([]));
}

/// Each bad handle is answered 400 with what is wrong, and the next request is served.
#[tokio::test]
async fn bad_handles_are_refused_and_the_server_goes_on() {
    let server = with_shared_memory().await;
    let golden = common::golden("iris_v1.json");
    let values: Vec<f64> =
        golden.request["inputs"][0]["data"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    let object = Object::new("rest-bad", &le_bytes(&values));
    let size = values.len() * 4;
    let register = |name: &str, key: &str, byte_size: usize| {
        let (path, body) =
            (format!("/v2/systemsharedmemory/region/{name}/register"), json!({"key": key, "byte_size": byte_size}));
        let server = &server;
        async move { server.post_json(&path, &body).await }
    };
    let link = Object::link("link", "/etc/passwd");
    for (key, fragment) in [
        ("/../etc/passwd", "after the first character"),
        ("/..", "names no object"),
        (link.key.as_str(), "cannot open"),
        ("/infergate-test-no-such-object", "cannot open"),
    ] {
        let (status, body) = register("evil", key, 16).await;
        assert_eq!(status, 400, "{key}: {body}");
        assert!(body["error"].as_str().unwrap().contains(fragment), "{key}: {body}");
    }
    let (status, body) = register("r", &object.key, size + 1).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(register("r", &object.key, size).await.0, 200);
    let (status, body) = register("r", &object.key, size).await;
    assert!(status == 400 && body["error"].as_str().unwrap().contains("already registered"), "{body}");

    let mut request = shared_request(&golden.request, "r", json!(null));
    let cases = [
        ("/inputs/0/parameters/shared_memory_region", json!("nope"), "no system shared memory region named 'nope'"),
        ("/inputs/0/parameters/shared_memory_byte_size", json!(size - 4), &*format!("needs {size} bytes")),
        ("/inputs/0/parameters/shared_memory_byte_size", json!(size + 4), "past the end of region 'r'"),
    ];
    for (pointer, value, fragment) in cases {
        let mut bad = request.clone();
        *bad.pointer_mut(pointer).unwrap() = value;
        let (status, body) = server.post_json("/v2/models/iris/infer", &bad).await;
        assert_eq!(status, 400, "{pointer}: {body}");
        assert!(body["error"].as_str().unwrap().contains(fragment), "{pointer}: {body}");
    }
    request["outputs"] =
        json!([{"name": "label", "parameters": {"shared_memory_region": "r", "shared_memory_byte_size": 8}}]);
    let (status, body) = server.post_json("/v2/models/iris/infer", &request).await;
    assert!(status == 400 && body["error"].as_str().unwrap().contains("shared_memory_byte_size is 8"), "{body}");
    request["outputs"] = json!([{"name": "label", "parameters": {"shared_memory_offset": 8}}]);
    let (status, body) = server.post_json("/v2/models/iris/infer", &request).await;
    assert!(status == 400 && body["error"].as_str().unwrap().contains("without shared_memory_region"), "{body}");

    // The owner truncates its object: a short read, the client's error.
    std::fs::OpenOptions::new().write(true).open(&object.path).unwrap().set_len(4).unwrap();
    request["outputs"] = json!(null);
    let (status, body) = server.post_json("/v2/models/iris/infer", &request).await;
    assert!(status == 400 && body["error"].as_str().unwrap().contains("shorter than when it was registered"), "{body}");

    let (status, reply) = server.post_json("/v2/models/iris/versions/1/infer", &golden.request).await;
    assert_eq!(status, 200, "{reply}");
    common::assert_outputs_match(&reply, &golden.outputs, common::TOLERANCE);
}

/// tritonclient HTTP and gRPC with their shared-memory helpers: every bundled model (over TCP, and over gRPC's Unix
/// socket), outputs in regions, bad handles beside steady traffic, and a region unregistered while in use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs tritonclient in .venv; scripts/test installs and runs it"]
async fn tritonclient_http_and_grpc_through_shared_memory() {
    let dir = common::temp_dir("shm-interop");
    let socket = dir.join("grpc.sock");
    let config =
        Config { shared_memory: true, grpc_socket: Some(socket.clone()), ..config_with_ort(&bundled_models()) };
    let server = TestServer::start(config).await;
    let grpc = server.server.grpc_addr().unwrap();
    let http = server.server.http_addr().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let output = tokio::process::Command::new(root.join(".venv/bin/python"))
        .arg(root.join("tests/interop/shared_memory_clients.py"))
        .args(["--http", &http.to_string(), "--grpc", &grpc.to_string(), "--grpc-socket", socket.to_str().unwrap()])
        .args(["--golden", root.join("tests/golden").to_str().unwrap()])
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("shared memory: every check passed"), "{stdout}");
    println!("{stdout}");
}

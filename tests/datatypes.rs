//! Every datatype the backend serves travels through JSON, the backend and back unchanged.
#![allow(clippy::unwrap_used)]

mod common;

use common::{TestServer, config};
use serde_json::{Value, json};

#[tokio::test]
async fn every_datatype_round_trips_through_the_backend() {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let server = TestServer::start(config(&fixtures)).await;
    let cases: [(&str, Value); 12] = [
        ("BOOL", json!([[true, false], [false, true]])),
        ("UINT8", json!([[0, 255], [1, 2]])),
        ("UINT16", json!([[0, 65535], [1, 2]])),
        ("UINT32", json!([[0, 4294967295u64], [1, 2]])),
        ("UINT64", json!([[0, 18446744073709551615u64], [1, 2]])),
        ("INT8", json!([[-128, 127], [0, -1]])),
        ("INT16", json!([[-32768, 32767], [0, -1]])),
        ("INT32", json!([[-2147483648i64, 2147483647], [0, -1]])),
        ("INT64", json!([[i64::MIN, i64::MAX], [0, -1]])),
        ("FP32", json!([[-1.5, 0.25], [3.0e38, -7.0]])),
        ("FP64", json!([[-1.5, 1e300], [5e-324, 0.1]])),
        ("BYTES", json!([["", "héllo"], ["a b", "\u{1F600}"]])),
    ];
    let inputs: Vec<Value> = cases
        .iter()
        .map(|(dt, data)| json!({"name": format!("in_{dt}"), "shape": [2, 2], "datatype": dt, "data": data}))
        .collect();
    let (status, body) = server.post_json("/v2/models/passthrough/infer", &json!({"inputs": inputs})).await;
    assert_eq!(status, 200, "{body}");
    let outputs = body["outputs"].as_array().unwrap();
    assert_eq!(outputs.len(), cases.len());
    for (dt, data) in &cases {
        let output = outputs.iter().find(|o| o["name"] == format!("out_{dt}")).unwrap();
        assert_eq!(output["datatype"], *dt);
        assert_eq!(output["shape"], json!([2, 2]));
        let flat: Vec<Value> =
            data.as_array().unwrap().iter().flat_map(|row| row.as_array().unwrap().clone()).collect();
        assert_eq!(output["data"], Value::Array(flat), "{dt}");
    }

    let (status, meta) = server.get("/v2/models/passthrough").await;
    assert_eq!(status, 200);
    assert_eq!(meta["inputs"].as_array().unwrap().len(), 12);
    assert_eq!(meta["inputs"][0], json!({"name": "in_BOOL", "datatype": "BOOL", "shape": [-1, 2]}));
}

//! Loading and unloading a version again and again does not grow the process: 200 cycles of the mlp, and the
//! resident memory after the last is within 10% of what it was after the 20th (alone in its test binary, so no
//! other test's memory is counted).
#![allow(clippy::unwrap_used)]

mod common;

use common::{TestServer, config_with_ort, copy_model, temp_dir};

fn resident_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|line| line.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test]
async fn two_hundred_load_unload_cycles_do_not_grow_memory() {
    let root = temp_dir("reload-memory");
    copy_model(&root, "m", 1, "mlp/1/model.onnx");
    let server = TestServer::start(config_with_ort(&root)).await;
    let table = server.server.models();
    let request = serde_json::json!({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": vec![0.5f32; 64]}]});
    let mut curve = Vec::new();
    for cycle in 1..=200 {
        table.unload_model("m").await.unwrap();
        table.load_model("m").await.unwrap();
        assert_eq!(server.post_json("/v2/models/m/infer", &request).await.0, 200);
        if cycle % 20 == 0 {
            curve.push((cycle, resident_kib()));
        }
    }
    println!("RSS (KiB) by cycle: {curve:?}");
    let after_20 = curve[0].1 as f64;
    let last = curve.last().unwrap().1 as f64;
    assert!(last <= after_20 * 1.10, "RSS grew from {after_20} KiB to {last} KiB over 180 cycles: {curve:?}");
    std::fs::remove_dir_all(&root).unwrap();
}

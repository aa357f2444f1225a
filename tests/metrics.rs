//! The Prometheus endpoint on the metrics port: counters equal what was sent, histograms and gauges are there.
#![allow(clippy::unwrap_used)]

mod common;

use common::{TestServer, golden, metric as sample, scrape};
use serde_json::json;

#[tokio::test]
async fn counters_histograms_and_gauges() {
    let server = TestServer::bundled().await;
    let g = golden("mlp_v1.json");
    let sent = 25;
    for _ in 0..sent {
        let (status, _) = server.post_json("/v2/models/mlp/infer", &g.request).await;
        assert_eq!(status, 200);
    }
    let bad = json!({"inputs":[{"name":"input","shape":[1,3],"datatype":"FP32","data":[1,2,3]}]});
    for _ in 0..3 {
        assert_eq!(server.post_json("/v2/models/mlp/infer", &bad).await.0, 400);
    }
    assert_eq!(server.post_raw("/v2/models/mlp/infer", "{").await.0, 400);
    // Requests for unknown models never become label values.
    assert_eq!(server.post_json("/v2/models/evil-label/infer", &g.request).await.0, 404);

    let text = scrape(&server).await;
    let mv = r#"model="mlp",version="1""#;
    let mv_rest = r#"model="mlp",protocol="rest",version="1""#;
    let requests = |error_type: &str| {
        sample(&text, &format!(r#"infergate_requests_total{{error_type="{error_type}",{mv_rest}}}"#))
    };
    assert_eq!(requests("none"), Some(sent as f64), "{text}");
    assert_eq!(requests("invalid_input"), Some(3.0));
    assert_eq!(requests("malformed_request"), Some(1.0));
    // Each golden request holds 8 rows.
    assert_eq!(sample(&text, &format!("infergate_inferences_total{{{mv}}}")), Some(8.0 * sent as f64));
    // The text format lists labels in name order.
    // The request histogram counts the refused requests too: 3 invalid, 1 malformed.
    let count = r#"infergate_request_duration_seconds_count{model="mlp",protocol="rest",version="1"}"#;
    assert_eq!(sample(&text, count), Some(sent as f64 + 4.0));
    assert!(text.contains(
        r#"infergate_request_duration_seconds_bucket{model="mlp",protocol="rest",version="1",le="0.000025"}"#
    ));
    assert!(
        text.contains(r#"infergate_request_duration_seconds_bucket{model="mlp",protocol="rest",version="1",le="30"}"#)
    );
    assert_eq!(sample(&text, &format!("infergate_batch_size_sum{{{mv}}}")), Some(8.0 * sent as f64));
    assert_eq!(sample(&text, &format!("infergate_queue_duration_seconds_count{{{mv}}}")), Some(sent as f64));
    assert!(sample(&text, &format!("infergate_compute_duration_seconds_count{{{mv}}}")).unwrap() >= 1.0);
    assert_eq!(sample(&text, &format!("infergate_queue_depth{{{mv}}}")), Some(0.0));
    assert_eq!(sample(&text, &format!("infergate_in_flight_requests{{{mv}}}")), Some(0.0));
    assert_eq!(sample(&text, r#"infergate_model_version_state{model="mlp",state="ready",version="1"}"#), Some(1.0));
    assert_eq!(sample(&text, r#"infergate_model_version_state{model="mlp",state="failed",version="1"}"#), Some(0.0));
    assert!(sample(&text, &format!("infergate_model_load_duration_seconds{{{mv}}}")).unwrap() > 0.0);
    let p50 =
        sample(&text, r#"infergate_request_latency_window_seconds{model="mlp",percentile="50",version="1"}"#).unwrap();
    let p99 =
        sample(&text, r#"infergate_request_latency_window_seconds{model="mlp",percentile="99",version="1"}"#).unwrap();
    assert!(p50 > 0.0 && p50 <= p99 && p99 < 5.0, "p50 {p50} p99 {p99}");
    // The standard process families, under the names stock dashboards and alerts read.
    assert!(sample(&text, "process_resident_memory_bytes").unwrap() > 1e6);
    assert!(sample(&text, "process_open_fds").unwrap() > 0.0);
    assert!(sample(&text, "process_cpu_seconds_total").unwrap() >= 0.0);
    assert!(sample(&text, "process_start_time_seconds").unwrap() > 1.6e9);
    assert!(sample(&text, "process_threads").unwrap() >= 1.0);
    assert!(!text.contains("infergate_process_"));
    // Tracing is off here: the span counters are exported, at zero.
    assert_eq!(sample(&text, r#"infergate_trace_spans_total{outcome="exported"}"#), Some(0.0));
    assert!(!text.contains("evil-label"));
    // Versions without traffic have no window yet: NaN, not a made-up zero.
    let idle = sample(&text, r#"infergate_request_latency_window_seconds{model="iris",percentile="50",version="1"}"#);
    assert!(idle.unwrap().is_nan());
}

/// Classifier outputs are inferred: a counter per predicted class, for the label output and for the argmax of
/// the probabilities, equal to what ONNX Runtime predicted for the same rows.
#[tokio::test]
async fn prediction_distributions() {
    let server = TestServer::bundled().await;
    let g = golden("iris_v1.json");
    for _ in 0..2 {
        assert_eq!(server.post_json("/v2/models/iris/versions/1/infer", &g.request).await.0, 200);
    }
    let mut expected = [0.0; 3];
    for label in g.outputs["label"]["data"].as_array().unwrap() {
        expected[label.as_u64().unwrap() as usize] += 2.0;
    }
    let text = scrape(&server).await;
    for (class, count) in expected.iter().enumerate() {
        for output in ["label", "probabilities"] {
            let series =
                format!(r#"infergate_predictions_total{{class="{class}",model="iris",output="{output}",version="1"}}"#);
            let got = sample(&text, &series).unwrap_or(0.0);
            assert_eq!(got, *count, "{series}");
        }
    }
}

/// A configured score histogram: every probability of every row lands in it.
#[tokio::test]
async fn configured_score_histogram() {
    let root = common::temp_dir("score-histogram");
    common::repository_with(
        &root,
        "mlp",
        "mlp/1/model.onnx",
        "[[monitoring.outputs]]\nname = \"probabilities\"\ndistribution = \"histogram\"\nbuckets = [0.01, 0.5]\n",
    );
    let server = TestServer::start(common::config(&root)).await;
    let g = golden("mlp_v1.json");
    assert_eq!(server.post_json("/v2/models/mlp/infer", &g.request).await.0, 200);
    let text = scrape(&server).await;
    let base = r#"model="mlp",output="probabilities",version="1""#;
    assert_eq!(sample(&text, &format!("infergate_prediction_value_count{{{base}}}")), Some(80.0), "{text}");
    let below_half =
        g.outputs["probabilities"]["data"].as_array().unwrap().iter().filter(|v| v.as_f64().unwrap() <= 0.5).count();
    assert_eq!(
        sample(&text, &format!(r#"infergate_prediction_value_bucket{{{base},le="0.5"}}"#)),
        Some(below_half as f64)
    );
    assert!(!text.contains("infergate_predictions_total{"), "no class counters were asked for");
    std::fs::remove_dir_all(&root).unwrap();
}

/// The statistics endpoint, in the shape of Triton's statistics extension, agrees with what was sent.
#[tokio::test]
async fn statistics_endpoint() {
    let server = TestServer::bundled().await;
    let g = golden("mlp_v1.json");
    let sent = 12u64;
    for _ in 0..sent {
        assert_eq!(server.post_json("/v2/models/mlp/infer", &g.request).await.0, 200);
    }
    assert_eq!(server.post_raw("/v2/models/mlp/infer", "{").await.0, 400);

    let (status, body) = server.get("/v2/models/mlp/stats").await;
    assert_eq!(status, 200, "{body}");
    let stats = &body["model_stats"][0];
    assert_eq!(body["model_stats"].as_array().unwrap().len(), 1);
    assert_eq!(stats["name"], "mlp");
    assert_eq!(stats["version"], "1");
    assert_eq!(stats["inference_count"], 8 * sent);
    let inference = &stats["inference_stats"];
    assert_eq!(inference["success"]["count"], sent);
    assert!(inference["success"]["ns"].as_u64().unwrap() > 0);
    assert_eq!(inference["fail"]["count"], 1);
    assert_eq!(inference["queue"]["count"], sent);
    let executions = stats["execution_count"].as_u64().unwrap();
    assert!((1..=sent).contains(&executions));
    assert_eq!(inference["compute_infer"]["count"], executions);
    let batch_runs: u64 =
        stats["batch_stats"].as_array().unwrap().iter().map(|b| b["compute_infer"]["count"].as_u64().unwrap()).sum();
    assert_eq!(batch_runs, executions);
    assert!(stats["last_inference"].as_u64().unwrap() > 1_700_000_000_000);
    let p99 = stats["latency_window_us"]["p99"].as_u64().unwrap();
    assert!(p99 >= stats["latency_window_us"]["p50"].as_u64().unwrap());

    let (_, all) = server.get("/v2/models/stats").await;
    let names: Vec<(&str, &str)> = all["model_stats"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap(), s["version"].as_str().unwrap()))
        .collect();
    assert_eq!(names, [("gbt", "1"), ("iris", "1"), ("iris", "2"), ("mlp", "1")]);
    assert_eq!(server.get("/v2/models/iris/versions/2/stats").await.1["model_stats"][0]["version"], "2");
    assert_eq!(server.get("/v2/models/nope/stats").await.0, 404);
    let extensions = json!(["binary_tensor_data", "model_configuration", "model_repository", "statistics"]);
    assert_eq!(server.get("/v2").await.1["extensions"], extensions);
}

/// A model without a batch dimension counts one inference per request, whatever its first dimension holds.
#[tokio::test]
async fn unbatched_models_count_one_inference_per_request() {
    let root = common::temp_dir("unbatched-count");
    common::repository_with(&root, "mlp", "mlp/1/model.onnx", "max_batch_size = 0\n");
    let server = TestServer::start(common::config(&root)).await;
    let g = golden("mlp_v1.json");
    assert_eq!(server.post_json("/v2/models/mlp/infer", &g.request).await.0, 200);
    let text = scrape(&server).await;
    assert_eq!(sample(&text, r#"infergate_inferences_total{model="mlp",version="1"}"#), Some(1.0));
    assert_eq!(server.get("/v2/models/mlp/stats").await.1["model_stats"][0]["inference_count"], 1);
    std::fs::remove_dir_all(&root).unwrap();
}

//! One inference through the whole server stack without the network: the REST and gRPC routers called in-process
//! (routing, decoding, model lookup, traffic, the scheduler's queue and instance thread, the backend, metrics,
//! encoding) on the bundled iris model, batch 1. ONNX Runtime serves it when found (as the server finds it),
//! else tract. Subtract the `backend` bench's iris figure to get the gateway's own cost.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use bytes::{BufMut, Bytes, BytesMut};
use criterion::{Criterion, criterion_group, criterion_main};
use infergate::api::grpc::proto;
use infergate::api::{self, Gateway};
use infergate::backend::Backends;
use infergate::config::RequestLimits;
use infergate::lifecycle::ModelTable;
use infergate::routing::TrafficTable;
use infergate::telemetry::Telemetry;
use prost::Message;
use tower::ServiceExt;

const ROW: [f32; 4] = [5.1, 3.5, 1.4, 0.2];

/// A gateway over a table with the iris model loaded, as the server builds it.
fn gateway(runtime: &tokio::runtime::Runtime) -> Arc<Gateway> {
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    let backends = Arc::new(Backends::discover(None).unwrap());
    let telemetry = Arc::new(Telemetry::new(std::time::Duration::from_secs(60)));
    let traffic = Arc::new(TrafficTable::new(telemetry.traffic.clone(), None));
    let table = Arc::new(ModelTable::new(telemetry, backends, models).with_listing_observer(traffic.clone()));
    runtime.block_on(table.load_model("iris")).unwrap();
    Arc::new(Gateway::new(table, traffic, RequestLimits::default()))
}

fn grpc_frame(request: &proto::ModelInferRequest) -> Bytes {
    let message = request.encode_to_vec();
    let mut frame = BytesMut::with_capacity(message.len() + 5);
    frame.put_u8(0);
    frame.put_u32(message.len() as u32);
    frame.put_slice(&message);
    frame.freeze()
}

fn end_to_end(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let gateway = gateway(&runtime);
    let limits = api::http::Limits { max_request_bytes: 64 << 20, body_timeout: Duration::from_secs(60) };
    let rest = api::http::router(Arc::clone(&gateway), limits);
    let (_running, stop) = tokio::sync::watch::channel(false);
    let grpc = api::grpc::router(gateway, 64 << 20, stop);

    let json = Bytes::from(
        serde_json::to_vec(
            &serde_json::json!({"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": ROW}]}),
        )
        .unwrap(),
    );
    let raw: Vec<u8> = ROW.iter().flat_map(|v| v.to_le_bytes()).collect();
    let grpc_body = grpc_frame(&proto::ModelInferRequest {
        model_name: "iris".to_owned(),
        inputs: vec![proto::model_infer_request::InferInputTensor {
            name: "X".to_owned(),
            datatype: "FP32".to_owned(),
            shape: vec![1, 4],
            ..Default::default()
        }],
        raw_input_contents: vec![Bytes::from(raw)],
        ..Default::default()
    });

    let mut group = c.benchmark_group("end_to_end_iris");
    group.bench_function("rest-json", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let request = axum::http::Request::post("/v2/models/iris/infer")
                    .header("content-type", "application/json")
                    .body(Body::from(json.clone()))
                    .unwrap();
                let response = rest.clone().oneshot(request).await.unwrap();
                assert_eq!(response.status(), 200);
                axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap()
            })
        })
    });
    group.bench_function("grpc", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let request = axum::http::Request::post("/inference.GRPCInferenceService/ModelInfer")
                    .header("content-type", "application/grpc")
                    .header("te", "trailers")
                    .body(Body::from(grpc_body.clone()))
                    .unwrap();
                let response = grpc.clone().oneshot(request).await.unwrap();
                assert_eq!(response.status(), 200);
                let body = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
                assert!(body.len() > 5, "a gRPC answer");
                body
            })
        })
    });
    group.finish();
}

criterion_group!(benches, end_to_end);
criterion_main!(benches);

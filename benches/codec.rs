//! Request decoding and response encoding per transport, against the size of the tensors: REST JSON, REST with
//! binary tensors, and gRPC protobuf (prost plus the conversion to and from the API types). One FP32 input or
//! output of 256 values (1 KiB) and of 16,384 values (64 KiB).
#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use infergate::api::grpc::{convert, proto};
use infergate::api::http::{OutputFormat, decode_request, encode_response};
use infergate::api::{InferResponse, NamedTensor, SharedMemory};
use infergate::tensor::{DataType, Tensor};
use prost::Message;
use serde_json::json;

fn values(count: usize) -> Vec<f32> {
    (0..count).map(|i| (i % 1000) as f32 * 0.731 + 0.5).collect()
}

fn json_request(count: usize) -> Bytes {
    let body = json!({"inputs": [{"name": "x", "shape": [1, count], "datatype": "FP32", "data": values(count)}]});
    Bytes::from(serde_json::to_vec(&body).unwrap())
}

fn binary_request(count: usize, binary_output: bool) -> (Bytes, usize) {
    let header = json!({
        "inputs": [{"name": "x", "shape": [1, count], "datatype": "FP32", "parameters": {"binary_data_size": count * 4}}],
        "parameters": {"binary_data_output": binary_output},
    });
    let mut body = serde_json::to_vec(&header).unwrap();
    let length = body.len();
    body.extend(values(count).iter().flat_map(|v| v.to_le_bytes()));
    (Bytes::from(body), length)
}

fn grpc_request(count: usize) -> Bytes {
    let request = proto::ModelInferRequest {
        model_name: "m".to_owned(),
        inputs: vec![proto::model_infer_request::InferInputTensor {
            name: "x".to_owned(),
            datatype: "FP32".to_owned(),
            shape: vec![1, count as i64],
            ..Default::default()
        }],
        raw_input_contents: vec![Bytes::from(values(count).iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<_>>())],
        ..Default::default()
    };
    Bytes::from(request.encode_to_vec())
}

fn response(count: usize) -> InferResponse {
    let data: Vec<u8> = values(count).iter().flat_map(|v| v.to_le_bytes()).collect();
    InferResponse {
        model_name: "m".to_owned(),
        model_version: "1".to_owned(),
        id: None,
        outputs: vec![NamedTensor {
            name: "y".to_owned(),
            tensor: Tensor::new(DataType::Fp32, vec![1, count], Bytes::from(data)).unwrap(),
        }],
        variant: None,
        cold_start: None,
    }
}

fn codecs(c: &mut Criterion) {
    let mut decode = c.benchmark_group("decode");
    for count in [256, 16_384] {
        let kib = format!("{}KiB", count * 4 / 1024);
        decode.throughput(Throughput::Bytes((count * 4) as u64));
        let body = json_request(count);
        decode.bench_function(BenchmarkId::new("rest-json", &kib), |b| {
            b.iter(|| decode_request(&body, None, &SharedMemory::default()).unwrap())
        });
        let (body, length) = binary_request(count, false);
        decode.bench_function(BenchmarkId::new("rest-binary", &kib), |b| {
            b.iter(|| decode_request(&body, Some(length), &SharedMemory::default()).unwrap())
        });
        let body = grpc_request(count);
        decode.bench_function(BenchmarkId::new("grpc", &kib), |b| {
            b.iter(|| {
                convert::infer_request(
                    proto::ModelInferRequest::decode(body.clone()).unwrap(),
                    &SharedMemory::default(),
                )
                .unwrap()
            })
        });
    }
    decode.finish();

    let mut encode = c.benchmark_group("encode");
    let (body, length) = binary_request(4, true);
    let binary_format = decode_request(&body, Some(length), &SharedMemory::default()).unwrap().1;
    for count in [256, 16_384] {
        let kib = format!("{}KiB", count * 4 / 1024);
        encode.throughput(Throughput::Bytes((count * 4) as u64));
        encode.bench_function(BenchmarkId::new("rest-json", &kib), |b| {
            b.iter_batched(
                || response(count),
                |r| encode_response(&r, &OutputFormat::default()).unwrap(),
                criterion::BatchSize::SmallInput,
            )
        });
        encode.bench_function(BenchmarkId::new("rest-binary", &kib), |b| {
            b.iter_batched(
                || response(count),
                |r| encode_response(&r, &binary_format).unwrap(),
                criterion::BatchSize::SmallInput,
            )
        });
        encode.bench_function(BenchmarkId::new("grpc", &kib), |b| {
            b.iter_batched(
                || response(count),
                |r| convert::infer_response(r, None, &[]).unwrap().encode_to_vec(),
                criterion::BatchSize::SmallInput,
            )
        });
    }
    encode.finish();
}

criterion_group!(benches, codecs);
criterion_main!(benches);

//! One backend run (µs per inference) for every bundled model on both backends, at batch 1 and 32.
//!
//! ONNX Runtime is found as the server finds it (`ORT_DYLIB_PATH`, the onnxruntime Python package, ...); without
//! it, only tract is measured. Inputs are the golden request rows, repeated to fill the batch.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use infergate::backend::Backends;
use infergate::repository::{BackendChoice, ModelConfig};
use infergate::tensor::{DataType, Tensor};

/// (model file, golden record) of every bundled model.
const MODELS: [(&str, &str); 4] = [
    ("iris/1/model.onnx", "iris_v1.json"),
    ("iris/2/model.onnx", "iris_v2.json"),
    ("mlp/1/model.onnx", "mlp_v1.json"),
    ("gbt/1/model.onnx", "gbt_v1.json"),
];

/// `rows` rows of the golden request's input, cycling through its rows.
fn input(golden: &str, rows: usize) -> Tensor {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(golden);
    let record: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let input = &record["request"]["inputs"][0];
    let width = input["shape"][1].as_u64().unwrap() as usize;
    let data: Vec<f32> = input["data"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
    let bytes: Vec<u8> = data.iter().cycle().take(rows * width).flat_map(|v| v.to_le_bytes()).collect();
    Tensor::new(DataType::Fp32, vec![rows, width], Bytes::from(bytes)).unwrap()
}

fn backends(c: &mut Criterion) {
    let available = Backends::discover(None).unwrap_or_else(|e| panic!("{e}"));
    let mut choices = vec![("tract", BackendChoice::Tract)];
    match available.ort() {
        Ok(_) => choices.insert(0, ("ort", BackendChoice::Ort)),
        Err(reason) => eprintln!("ONNX Runtime not measured: {reason}"),
    }
    let mut group = c.benchmark_group("backend");
    for (file, golden) in MODELS {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("models").join(file);
        let model = file.split('/').take(2).collect::<Vec<_>>().join("_v");
        for &(name, choice) in &choices {
            let config = ModelConfig { backend: choice, ..ModelConfig::default() };
            let backend = available.load(&path, &config).unwrap();
            let mut session = backend.session().unwrap();
            for batch in [1, 32] {
                let x = input(golden, batch);
                group.bench_function(BenchmarkId::new(format!("{model}/{name}"), batch), |b| {
                    b.iter(|| session.run(vec![x.clone()]).unwrap())
                });
            }
        }
    }
    group.finish();
}

criterion_group!(benches, backends);
criterion_main!(benches);

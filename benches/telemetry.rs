//! What metrics cost a request: the observations one answered request makes, and one latency-window record.

use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use infergate::telemetry::{Distribution, MonitorSpec, Protocol, Telemetry};
use infergate::tensor::{DataType, Tensor};

fn per_request(c: &mut Criterion) {
    let telemetry = Telemetry::new(Duration::from_secs(60));
    let argmax = MonitorSpec { output: 0, name: "probabilities".into(), distribution: Distribution::Argmax };
    let metrics = telemetry.version("mlp", 1, &[argmax], Default::default());
    // One answered mlp row: ten class probabilities.
    let row: Vec<u8> = (0..10).flat_map(|i| (i as f32 / 45.0).to_le_bytes()).collect();
    let outputs = [Tensor::new(DataType::Fp32, vec![1, 10], Bytes::from(row)).expect("valid tensor")];
    let latency = Duration::from_micros(180);
    c.bench_function("telemetry/request (answer, queue, compute, batch)", |b| {
        b.iter(|| {
            metrics.observe_ok(Protocol::Rest, std::hint::black_box(1), latency);
            metrics.queue_duration.observe(0.000_02);
            metrics.compute_duration.observe(0.000_01);
            metrics.batch_size.observe(1.0);
        })
    });
    c.bench_function("telemetry/predictions (argmax of 10 classes, one row)", |b| {
        b.iter(|| metrics.predictions.observe(std::hint::black_box(&outputs)))
    });
    c.bench_function("telemetry/latency window record", |b| b.iter(|| metrics.latency.record(latency)));
    c.bench_function("telemetry/render one version", |b| {
        let versions = vec![metrics.clone()];
        b.iter(|| telemetry.render(&versions))
    });
}

criterion_group!(benches, per_request);
criterion_main!(benches);

//! What metrics cost a request: the observations one answered request makes, and one latency-window record.

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use infergate::telemetry::Telemetry;

fn per_request(c: &mut Criterion) {
    let telemetry = Telemetry::new(Duration::from_secs(60));
    let metrics = telemetry.version("mlp", 1);
    let latency = Duration::from_micros(180);
    c.bench_function("telemetry/request (answer, queue, compute, batch)", |b| {
        b.iter(|| {
            metrics.observe_ok(std::hint::black_box(1), latency);
            metrics.queue_duration.observe(0.000_02);
            metrics.compute_duration.observe(0.000_01);
            metrics.batch_size.observe(1.0);
        })
    });
    c.bench_function("telemetry/latency window record", |b| b.iter(|| metrics.latency.record(latency)));
    c.bench_function("telemetry/render one version", |b| {
        let versions = vec![metrics.clone()];
        b.iter(|| telemetry.render(&versions))
    });
}

criterion_group!(benches, per_request);
criterion_main!(benches);

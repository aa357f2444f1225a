//! What traffic splitting costs a request: choosing a variant (random draw, routing key), drawing for the shadow,
//! and recording the answer in the variant's window.

use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use infergate::repository::{ShadowConfig, TrafficConfig, VariantConfig};
use infergate::routing::Policy;
use infergate::tensor::{DataType, Tensor};

fn policy() -> Policy {
    let variant = |name: &str, version: u64, weight: u32| VariantConfig {
        name: name.into(),
        model: None,
        version: Some(version),
        weight,
    };
    let shadow = ShadowConfig { name: "next".into(), model: None, version: Some(4), percent: 10.0 };
    Policy::new(TrafficConfig {
        variants: vec![variant("champion", 1, 80), variant("challenger", 2, 15), variant("canary", 3, 5)],
        shadow: Some(shadow),
    })
}

fn routing(c: &mut Criterion) {
    let policy = policy();
    c.bench_function("traffic/choose a variant (random, 3 variants)", |b| {
        b.iter(|| std::hint::black_box(policy.order(None))[0].weight)
    });
    c.bench_function("traffic/choose a variant (routing key, 3 variants)", |b| {
        b.iter(|| std::hint::black_box(policy.order(Some(std::hint::black_box("customer-1234567")))[0].weight))
    });
    c.bench_function("traffic/shadow draw", |b| b.iter(|| std::hint::black_box(policy.shadow_draw()).is_some()));
    let row: Vec<u8> = (0..10).flat_map(|i| (i as f32 / 45.0).to_le_bytes()).collect();
    let outputs = [Tensor::new(DataType::Fp32, vec![1, 10], Bytes::from(row)).expect("valid tensor")];
    let window = &policy.variants[0].window;
    c.bench_function("traffic/window record (one row of 10 classes)", |b| {
        b.iter(|| {
            window.observe(Duration::from_micros(180), true);
            window.observe_predictions(std::hint::black_box(&outputs[0]));
        })
    });
}

criterion_group!(benches, routing);
criterion_main!(benches);

//! Cost of stacking requests into a batch and splitting the outputs back, against the size of the data moved.
#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use infergate::tensor::{DataType, Tensor, concat_rows, split_rows};

fn fp32_rows(rows: usize, width: usize) -> Tensor {
    let data: Vec<u8> = (0..rows * width).flat_map(|i| (i as f32).to_le_bytes()).collect();
    Tensor::new(DataType::Fp32, vec![rows, width], Bytes::from(data)).unwrap()
}

fn concat_and_split(c: &mut Criterion) {
    let mut group = c.benchmark_group("batch");
    // The mlp's input (64 floats per row) and a wider one, in batches of 8 and 64 single-row requests.
    for (requests, width) in [(8, 64), (64, 64), (64, 1024)] {
        let parts: Vec<Tensor> = (0..requests).map(|_| fp32_rows(1, width)).collect();
        let refs: Vec<&Tensor> = parts.iter().collect();
        let rows = vec![1; requests];
        let stacked = concat_rows(&refs).unwrap();
        let id = format!("{requests}x{width}");
        group.throughput(Throughput::Bytes((requests * width * 4) as u64));
        group.bench_with_input(BenchmarkId::new("concat_rows", &id), &refs, |b, refs| {
            b.iter(|| concat_rows(std::hint::black_box(refs)).unwrap())
        });
        group.bench_with_input(BenchmarkId::new("split_rows", &id), &stacked, |b, stacked| {
            b.iter(|| split_rows(std::hint::black_box(stacked), &rows).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, concat_and_split);
criterion_main!(benches);

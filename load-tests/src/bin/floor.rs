//! `floor`: the in-process floor a server is measured against. Loads a model file with infergate's own backends
//! (ONNX Runtime or tract, one intra-op thread by default) and runs it back to back on one thread, on the same
//! generated input `loadgen` sends, with no server, network or encoding: inferences/s and latency quantiles.
//!
//!   floor --model-file models/iris/1/model.onnx --backend ort --seconds 5 --json

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use infergate::backend::Backends;
use infergate::repository::{BackendChoice, ModelConfig};
use infergate::tensor::{DataType, Tensor};
use infergate_load_tests::workload::{concrete_shape, sample_values};
use serde::Serialize;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Backend {
    Ort,
    Tract,
}

#[derive(Debug, Parser)]
#[command(about = "In-process inference floor: a model run back to back without a server")]
struct Args {
    #[arg(long)]
    model_file: PathBuf,
    #[arg(long, value_enum, default_value = "ort")]
    backend: Backend,
    /// ONNX Runtime intra-op threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    #[arg(long, default_value_t = 1)]
    rows: usize,
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    #[arg(long, default_value = "floor")]
    label: String,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct Report {
    label: String,
    backend: &'static str,
    rows: usize,
    seconds: f64,
    inferences: u64,
    inferences_per_second: f64,
    mean_us: f64,
    p50_us: u64,
    p90_us: u64,
    p99_us: u64,
    max_us: u64,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("floor: {message}");
            ExitCode::from(2)
        }
    }
}

fn run(args: Args) -> Result<(), String> {
    let backends = Backends::discover(None)?;
    let choice = match args.backend {
        Backend::Ort => BackendChoice::Ort,
        Backend::Tract => BackendChoice::Tract,
    };
    let config = ModelConfig { backend: choice, intra_op_threads: args.threads, ..ModelConfig::default() };
    let model = backends.load(&args.model_file, &config).map_err(|e| e.to_string())?;
    let inputs = model
        .signature()
        .inputs
        .iter()
        .map(|spec| {
            if spec.datatype != DataType::Fp32 {
                return Err(format!("input {} is not FP32", spec.name));
            }
            let shape = concrete_shape(&spec.shape, args.rows);
            let data: Vec<u8> = sample_values(shape.iter().product()).iter().flat_map(|v| v.to_le_bytes()).collect();
            Tensor::new(DataType::Fp32, shape, Bytes::from(data)).map_err(|e| e.to_string())
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut session = model.session().map_err(|e| e.to_string())?;

    let warm_until = Instant::now() + Duration::from_secs_f64(args.warmup);
    while Instant::now() < warm_until {
        session.run(inputs.clone()).map_err(|e| e.to_string())?;
    }
    let mut latency = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).map_err(|e| e.to_string())?;
    let start = Instant::now();
    let until = start + Duration::from_secs_f64(args.seconds);
    loop {
        let began = Instant::now();
        if began >= until {
            break;
        }
        session.run(inputs.clone()).map_err(|e| e.to_string())?;
        latency.saturating_record((began.elapsed().as_micros() as u64).max(1));
    }
    let seconds = start.elapsed().as_secs_f64();
    let report = Report {
        label: args.label,
        backend: model.name(),
        rows: args.rows,
        seconds,
        inferences: latency.len(),
        inferences_per_second: latency.len() as f64 / seconds,
        mean_us: latency.mean(),
        p50_us: latency.value_at_quantile(0.5),
        p90_us: latency.value_at_quantile(0.9),
        p99_us: latency.value_at_quantile(0.99),
        max_us: latency.max(),
    };
    eprintln!(
        "{:<22} {:<11} {:>9.0} inf/s  p50 {:>7} µs  p90 {:>7} µs  p99 {:>7} µs  max {:>8} µs",
        report.label,
        report.backend,
        report.inferences_per_second,
        report.p50_us,
        report.p90_us,
        report.p99_us,
        report.max_us
    );
    if args.json {
        println!("{}", serde_json::to_string(&report).map_err(|e| e.to_string())?);
    }
    Ok(())
}

//! `loadgen`: drives a KServe v2 REST endpoint with concurrent clients and reports throughput and latency.
//!
//! Closed loop: `--concurrency` clients each send the next request as soon as the previous one is answered,
//! for `--duration` seconds after a warm-up. The body is a file (`--body`) or random FP32 rows built from the
//! model's metadata (`--rows`). Prints a summary line and, with `--json`, a JSON object.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use serde::Serialize;
use serde_json::{Value, json};

#[derive(Debug, Parser)]
#[command(about = "Closed-loop load generator for KServe v2 REST servers")]
struct Args {
    /// Server base URL.
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    url: String,
    /// Model to call.
    #[arg(long)]
    model: String,
    /// Concurrent clients.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Seconds of measurement.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of warm-up before measuring.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Request body file; without it, random FP32 data shaped by the model metadata.
    #[arg(long)]
    body: Option<PathBuf>,
    /// Rows per generated request (the batch dimension).
    #[arg(long, default_value_t = 1)]
    rows: usize,
    /// Send generated inputs and ask for outputs with Triton's binary tensor extension instead of JSON data.
    #[arg(long)]
    binary: bool,
    /// A label for the run, echoed in the report.
    #[arg(long, default_value = "run")]
    label: String,
    /// Print the report as JSON too.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct Report {
    label: String,
    model: String,
    concurrency: usize,
    seconds: f64,
    requests: u64,
    errors: u64,
    requests_per_second: f64,
    p50_us: u64,
    p90_us: u64,
    p99_us: u64,
    max_us: u64,
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let args = Args::parse();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
    let (body, header_length) = match &args.body {
        Some(path) => (std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?, None),
        None => generated_body(&client, &args).await?,
    };
    let body = Arc::new(bytes::Bytes::from(body));
    let url = Arc::new(format!("{}/v2/models/{}/infer", args.url, args.model));

    let warmup = Duration::from_secs_f64(args.warmup);
    let measure = Duration::from_secs_f64(args.duration);
    let start = Instant::now();
    let (measure_from, measure_until) = (start + warmup, start + warmup + measure);
    let mut clients = Vec::with_capacity(args.concurrency);
    for _ in 0..args.concurrency {
        let (client, url, body) = (client.clone(), Arc::clone(&url), Arc::clone(&body));
        clients.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            loop {
                let sent = Instant::now();
                if sent >= measure_until {
                    break;
                }
                let mut request = client.post(url.as_str()).body(body.as_ref().clone());
                if let Some(length) = header_length {
                    request = request.header("inference-header-content-length", length);
                }
                let ok = match request.send().await {
                    Ok(response) => response.status().is_success() && response.bytes().await.is_ok(),
                    Err(_) => false,
                };
                if sent >= measure_from {
                    if ok {
                        latencies.push(sent.elapsed().as_micros() as u64);
                    } else {
                        errors += 1;
                    }
                }
            }
            (latencies, errors)
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    for client in clients {
        let (l, e) = client.await.map_err(|e| format!("a client failed: {e}"))?;
        latencies.extend(l);
        errors += e;
    }
    latencies.sort_unstable();
    let quantile = |q: f64| -> u64 {
        if latencies.is_empty() {
            return 0;
        }
        latencies[((latencies.len() - 1) as f64 * q).round() as usize]
    };
    let report = Report {
        label: args.label.clone(),
        model: args.model.clone(),
        concurrency: args.concurrency,
        seconds: measure.as_secs_f64(),
        requests: latencies.len() as u64,
        errors,
        requests_per_second: latencies.len() as f64 / measure.as_secs_f64(),
        p50_us: quantile(0.50),
        p90_us: quantile(0.90),
        p99_us: quantile(0.99),
        max_us: latencies.last().copied().unwrap_or(0),
    };
    eprintln!(
        "{:<24} c={:<4} {:>9.0} req/s  p50 {:>7} µs  p90 {:>7} µs  p99 {:>7} µs  max {:>7} µs  errors {}",
        report.label,
        report.concurrency,
        report.requests_per_second,
        report.p50_us,
        report.p90_us,
        report.p99_us,
        report.max_us,
        report.errors
    );
    if args.json {
        let line = serde_json::to_string(&report).map_err(|e| e.to_string())?;
        println!("{line}");
    }
    Ok(())
}

/// A request of `--rows` rows of random FP32 data for every input, shaped by the model metadata; with `--binary`,
/// the JSON header's length too (the data follows it as raw little-endian floats).
async fn generated_body(client: &reqwest::Client, args: &Args) -> Result<(Vec<u8>, Option<usize>), String> {
    let url = format!("{}/v2/models/{}", args.url, args.model);
    let metadata: Value = client
        .get(&url)
        .send()
        .await
        .map_err(|e| format!("cannot read {url}: {e}"))?
        .json()
        .await
        .map_err(|e| format!("bad metadata from {url}: {e}"))?;
    let inputs = metadata["inputs"].as_array().ok_or_else(|| format!("no inputs in the metadata of {url}"))?;
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut requests = Vec::new();
    let mut binary = Vec::new();
    for input in inputs {
        if input["datatype"] != "FP32" {
            return Err(format!("input {} is {}; pass --body for non-FP32 models", input["name"], input["datatype"]));
        }
        let shape: Vec<usize> = input["shape"]
            .as_array()
            .ok_or("input without a shape")?
            .iter()
            .enumerate()
            .map(|(axis, d)| match d.as_i64() {
                Some(-1) if axis == 0 => args.rows,
                Some(-1) => 1,
                Some(n) => n as usize,
                None => 1,
            })
            .collect();
        let count: usize = shape.iter().product();
        let data: Vec<f32> = (0..count)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                (seed % 10_000) as f32 / 1000.0
            })
            .collect();
        if args.binary {
            let size = data.len() * 4;
            binary.extend(data.iter().flat_map(|v| v.to_le_bytes()));
            let parameters = json!({"binary_data_size": size});
            requests.push(json!({"name": input["name"], "shape": shape, "datatype": "FP32", "parameters": parameters}));
        } else {
            requests.push(json!({"name": input["name"], "shape": shape, "datatype": "FP32", "data": data}));
        }
    }
    let request = if args.binary {
        json!({ "inputs": requests, "parameters": {"binary_data_output": true} })
    } else {
        json!({ "inputs": requests })
    };
    let mut body = serde_json::to_vec(&request).map_err(|e| e.to_string())?;
    if !args.binary {
        return Ok((body, None));
    }
    let header_length = body.len();
    body.extend_from_slice(&binary);
    Ok((body, Some(header_length)))
}

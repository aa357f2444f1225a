//! `loadgen`: drives a KServe v2 server (REST with JSON or binary tensors, gRPC unary or streaming) in a closed loop
//! or at an open-loop arrival rate, and reports throughput, latency quantiles (HDR histogram) and errors by kind.
//!
//! One run from flags:
//!   loadgen --model iris --protocol grpc --concurrency 8 --duration 10
//!   loadgen --model iris --rate 2000 --duration 10          (open loop: latency from the intended send time)
//! Over Unix domain sockets (as a sidecar's application reaches the server), by flag or by `unix:` URL:
//!   loadgen --model iris --http-socket /run/infergate/http.sock --grpc-socket /run/infergate/grpc.sock
//!   loadgen --model iris --protocol grpc --grpc-url unix:///run/infergate/grpc.sock
//! A scenario file (phases, actions, expectations; see load-tests/scenarios/):
//!   loadgen --scenario load-tests/scenarios/overload.toml --model iris --server-pid 1234
//! Two servers side by side, each caller alternating between them (closed loop), to compare their latencies under
//! the same conditions:
//!   loadgen --model mlp --concurrency 1 --url http://127.0.0.1:8000 --compare-url http://127.0.0.1:9000
//! Prints a table on stderr; `--json` prints the figures on stdout. Exits 1 when a scenario's expectations fail.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use infergate_load_tests::caller::Target;
use infergate_load_tests::endpoint::Endpoint;
use infergate_load_tests::paired::{self, Side};
use infergate_load_tests::scenario::{self, Expect, Options, Phase, Scenario};
use infergate_load_tests::workload::{Protocol, Workload};

#[derive(Debug, Parser)]
#[command(about = "Load generator for KServe v2 servers: closed and open loop, REST and gRPC, scenario files")]
struct Args {
    /// REST base URL: `http://host:port`, or `unix:/path` (`unix:///path`) for a Unix domain socket.
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    url: String,
    /// gRPC URL: `http://host:port`, or `unix:/path` (`unix:///path`) for a Unix domain socket.
    #[arg(long, default_value = "http://127.0.0.1:8001")]
    grpc_url: String,
    /// REST over this Unix domain socket instead of `--url`'s TCP address.
    #[arg(long, value_name = "PATH", conflicts_with = "url")]
    http_socket: Option<PathBuf>,
    /// gRPC over this Unix domain socket instead of `--grpc-url`'s TCP address.
    #[arg(long, value_name = "PATH", conflicts_with = "grpc_url")]
    grpc_socket: Option<PathBuf>,
    /// Model to call (a scenario may name it).
    #[arg(long)]
    model: Option<String>,
    #[arg(long, value_enum)]
    protocol: Option<Protocol>,
    /// Same as `--protocol rest-binary`.
    #[arg(long)]
    binary: bool,
    /// Concurrent callers: connections (REST and gRPC) or streams.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Open loop at this many requests per second; closed loop without it.
    #[arg(long)]
    rate: Option<f64>,
    /// Ramp the open-loop rate linearly to this by the end.
    #[arg(long, requires = "rate")]
    rate_end: Option<f64>,
    /// Seconds of measurement.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of warm-up before measuring (same load, not recorded).
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// REST JSON request body file; without it, random FP32 rows shaped by the model's metadata.
    #[arg(long)]
    body: Option<PathBuf>,
    /// Rows per generated request (the batch dimension).
    #[arg(long, default_value_t = 1)]
    rows: usize,
    /// Cycle requests through this many routing keys.
    #[arg(long, default_value_t = 0)]
    routing_keys: usize,
    /// A request unanswered after this many milliseconds is a `timeout` error.
    #[arg(long, default_value_t = 30_000)]
    timeout_ms: u64,
    /// A label for the run, echoed in the report.
    #[arg(long, default_value = "run")]
    label: String,
    /// Run this scenario file instead of one measurement from the flags.
    #[arg(long)]
    scenario: Option<PathBuf>,
    /// The server's process id, sampled (memory, threads, descriptors) when the scenario asks.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Admin token for scenario actions that change the server.
    #[arg(long, env = "INFERGATE_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// A second server's REST base URL (or `unix:/path`): each caller alternates between the first server and
    /// this one, and both are reported (closed loop, no scenario).
    #[arg(long, conflicts_with_all = ["scenario", "rate", "server_pid"])]
    compare_url: Option<String>,
    /// The second server's gRPC URL, or `unix:/path` (needed for the gRPC protocols).
    #[arg(long, requires = "compare_url")]
    compare_grpc_url: Option<String>,
    /// The label of the second server's figures.
    #[arg(long, default_value = "compare", requires = "compare_url")]
    compare_label: String,
    /// Print the figures as JSON on stdout.
    #[arg(long)]
    json: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(message) => {
            eprintln!("loadgen: {message}");
            ExitCode::from(2)
        }
    }
}

/// Whether every expectation held.
async fn run(args: Args) -> Result<bool, String> {
    let from_file = args.scenario.is_some();
    let scenario = match &args.scenario {
        Some(path) => Scenario::read(path)?,
        None => flags_scenario(&args),
    };
    let model = args.model.clone().or(scenario.model.clone()).ok_or("name the model: --model, or in the scenario")?;
    let protocol = match (args.binary, args.protocol) {
        (true, _) => Protocol::RestBinary,
        (false, Some(protocol)) => protocol,
        (false, None) => scenario.protocol.unwrap_or(Protocol::RestJson),
    };
    let http = match &args.http_socket {
        Some(path) => Endpoint::Unix(path.clone()),
        None => Endpoint::rest(&args.url)?,
    };
    let grpc = match &args.grpc_socket {
        Some(path) => Endpoint::Unix(path.clone()),
        None => Endpoint::grpc(&args.grpc_url)?,
    };
    let workload = match &args.body {
        Some(path) => Workload::from_body_file(&model, path)?,
        None => Workload::from_metadata(&http, &model, scenario.rows).await?,
    };
    let target = Target {
        http,
        grpc,
        protocol,
        routing_keys: scenario.routing_keys,
        timeout: Duration::from_millis(scenario.timeout_ms),
    };
    if let Some(url) = &args.compare_url {
        return side_by_side(&args, url, target, &workload).await;
    }
    let options = Options { target, server_pid: args.server_pid, admin_token: args.admin_token.clone() };
    let report = scenario::run(&scenario, &workload, &options).await?;
    if args.json {
        let json = if from_file {
            serde_json::to_string(&report)
        } else {
            // One run: the measured phase alone, one line (scripts collect these).
            serde_json::to_string(report.phases.last().unwrap_or(&report.total))
        };
        println!("{}", json.map_err(|e| e.to_string())?);
    }
    for failure in report.failures() {
        eprintln!("FAILED {failure}");
    }
    if from_file {
        eprintln!("scenario {}: {}", report.scenario, if report.passed { "passed" } else { "FAILED" });
    }
    Ok(report.passed)
}

/// Both servers' figures, each caller alternating between the first server and `--compare-url`.
async fn side_by_side(args: &Args, url: &str, target: Target, workload: &Workload) -> Result<bool, String> {
    let grpc = match (&args.compare_grpc_url, target.protocol.is_grpc()) {
        (Some(grpc_url), _) => Endpoint::grpc(grpc_url)?,
        // Never called: the REST protocols leave gRPC alone.
        (None, false) => Endpoint::Tcp(String::new()),
        (None, true) => return Err("name the second server's gRPC endpoint: --compare-grpc-url".to_owned()),
    };
    let other = Target { http: Endpoint::rest(url)?, grpc, ..target.clone() };
    let sides = [Side { label: args.label.clone(), target }, Side { label: args.compare_label.clone(), target: other }];
    let summaries = paired::compare(sides, workload, args.concurrency, args.warmup, args.duration).await?;
    for summary in &summaries {
        eprintln!("{}", summary.line());
        if args.json {
            println!("{}", serde_json::to_string(summary).map_err(|e| e.to_string())?);
        }
    }
    Ok(true)
}

/// One measurement from the flags: a warm-up phase (not recorded), then the measured one.
fn flags_scenario(args: &Args) -> Scenario {
    let phase = |name: &str, seconds: f64, record: bool| Phase {
        name: name.to_owned(),
        seconds,
        rate: args.rate,
        rate_end: args.rate_end,
        record,
        actions: Vec::new(),
        expect: Expect::default(),
    };
    let mut phases = Vec::new();
    if args.warmup > 0.0 {
        phases.push(phase("warm-up", args.warmup, false));
    }
    phases.push(phase(&args.label, args.duration, true));
    Scenario {
        name: args.label.clone(),
        description: String::new(),
        model: args.model.clone(),
        protocol: args.protocol,
        concurrency: args.concurrency,
        rows: args.rows,
        routing_keys: args.routing_keys,
        timeout_ms: args.timeout_ms,
        sample_seconds: None,
        phases,
        expect: Expect::default(),
    }
}

use std::process::ExitCode;

use clap::Parser;
use infergate::backend::Backends;
use infergate::config::{
    BackendsArgs, Cli, Command, Config, DocsArgs, DocsPage, LogFormat, OtlpProtocol, ReferenceArgs,
};
use infergate::server::{Server, ShutdownTrigger};
use infergate::telemetry::trace::{self, LogStyle, TraceExport};

fn main() -> ExitCode {
    let args = match Cli::parse().into_command() {
        Command::Serve(args) => args,
        Command::Reference(args) => return reference(&args),
        Command::Backends(args) => return backends(&args),
        Command::Docs(args) => return docs(&args),
    };
    let config = match Config::resolve(args) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("infergate: invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    let traces = match install_tracing(&config) {
        Ok(traces) => traces,
        Err(e) => {
            eprintln!("infergate: {e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(serve(config));
    // After the drain: the last requests' spans are queued; send them before exiting.
    traces.shutdown();
    code
}

/// Logs to standard error and, with `--otlp-endpoint`, request spans to the collector.
fn install_tracing(config: &Config) -> Result<trace::Tracing, trace::TraceError> {
    let style = match config.log_format {
        LogFormat::Text => LogStyle::Text,
        LogFormat::Json => LogStyle::Json,
    };
    let export = config.tracing.as_ref().map(|t| TraceExport {
        endpoint: t.endpoint.clone(),
        protocol: match t.protocol {
            OtlpProtocol::Grpc => trace::OtlpProtocol::Grpc,
            OtlpProtocol::Http => trace::OtlpProtocol::HttpProtobuf,
        },
        sample_ratio: t.sample_ratio,
        service_name: t.service_name.clone(),
    });
    // The filter was checked by Config::validate.
    trace::install(&config.log_level, style, export.as_ref())
}

/// `infergate docs PAGE`: prints a generated page of the documentation.
fn docs(args: &DocsArgs) -> ExitCode {
    match args.page {
        DocsPage::Config => match infergate::config::configuration_reference() {
            Ok(page) => {
                print!("{page}");
                ExitCode::SUCCESS
            }
            Err(undocumented) => {
                eprintln!("infergate docs: these have no description: {}", undocumented.join(", "));
                ExitCode::FAILURE
            }
        },
    }
}

/// `infergate reference`: writes the reference.json of a version from sample traffic.
fn reference(args: &ReferenceArgs) -> ExitCode {
    let built = infergate::reference::reference_for(&args.model, &args.samples, usize::from(args.buckets));
    let output = args.output.clone().unwrap_or_else(|| infergate::reference::default_output(&args.model));
    let written = built.and_then(|reference| {
        let json = serde_json::to_vec_pretty(&reference).map_err(|e| e.to_string())?;
        std::fs::write(&output, json).map_err(|e| format!("cannot write {}: {e}", output.display()))
    });
    match written {
        Ok(()) => {
            eprintln!("infergate: wrote {}", output.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("infergate reference: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `infergate backends`: what this machine can run models on, and why not.
fn backends(args: &BackendsArgs) -> ExitCode {
    let backends = match Backends::discover(args.ort_library.as_deref()) {
        Ok(backends) => backends,
        Err(e) => {
            eprintln!("infergate backends: {e}");
            return ExitCode::FAILURE;
        }
    };
    let statuses = backends.statuses(true);
    if args.json {
        match serde_json::to_string_pretty(&statuses) {
            Ok(json) => println!("{json}"),
            Err(e) => {
                eprintln!("infergate backends: {e}");
                return ExitCode::FAILURE;
            }
        }
        return ExitCode::SUCCESS;
    }
    for status in statuses {
        let state = if status.available { "available" } else { "unavailable" };
        println!("{:<6} {state}: {}", status.name, status.detail);
        for provider in status.execution_providers {
            let state = if provider.available { "available" } else { "unavailable" };
            let detail = if provider.detail.is_empty() { String::new() } else { format!(": {}", provider.detail) };
            println!("       {:<5} {state}{detail}", provider.name);
        }
    }
    ExitCode::SUCCESS
}

async fn serve(config: Config) -> ExitCode {
    let server = match Server::start(config).await {
        Ok(server) => server,
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            return ExitCode::FAILURE;
        }
    };
    tokio::spawn(stop_on_signal(server.shutdown_trigger()));
    match server.wait().await {
        Ok(stopped) => {
            tracing::info!(?stopped, "infergate stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = %e, "server failed");
            ExitCode::FAILURE
        }
    }
}

/// SIGTERM (Kubernetes) or SIGINT (Ctrl-C) starts a graceful shutdown.
async fn stop_on_signal(trigger: ShutdownTrigger) {
    use tokio::signal::unix::{SignalKind, signal};
    let (mut term, mut int) = match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(term), Ok(int)) => (term, int),
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!(error = %e, "cannot listen for shutdown signals");
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
    trigger.shutdown();
}

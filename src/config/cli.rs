//! The command line: the subcommands and the flags of those that are not `serve` (whose flags are in `serve_args`).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use super::ServeArgs;

#[derive(Debug, Parser)]
#[command(name = "infergate", version, about = "A model serving gateway for ONNX models (KServe v2 protocol).")]
#[command(args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Flags of `serve`, also accepted without the subcommand (serve is the default).
    #[command(flatten)]
    pub serve: ServeArgs,
}

// Parsed once at start; boxing the flags would only add noise to every match.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the models of a model repository (the default).
    Serve(ServeArgs),
    /// Build a version's reference.json (for drift detection) from sample traffic.
    Reference(ReferenceArgs),
    /// Show which backends and execution providers this machine can use, and why not.
    Backends(BackendsArgs),
    /// Print a page of the documentation that is generated from the code.
    Docs(DocsArgs),
}

/// Flags of `infergate docs`.
#[derive(Debug, Clone, Args)]
pub struct DocsArgs {
    /// The page: `config` is docs/configuration-reference.md, every flag, variable and key.
    #[arg(value_enum)]
    pub page: DocsPage,
}

/// A generated page of the documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DocsPage {
    /// Every flag, environment variable, config file key and `model.toml` key, with default and meaning.
    Config,
}

/// Flags of `infergate backends`.
#[derive(Debug, Clone, Args)]
pub struct BackendsArgs {
    /// The ONNX Runtime library to try, as `serve --ort-library`.
    #[arg(long, env = "INFERGATE_ORT_LIBRARY")]
    pub ort_library: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Flags of `infergate reference`.
#[derive(Debug, Clone, Args)]
pub struct ReferenceArgs {
    /// The version's model file, e.g. models/iris/1/model.onnx.
    #[arg(long)]
    pub model: PathBuf,
    /// Sample traffic: a KServe v2 inference request body (JSON) holding many rows, e.g. training data.
    #[arg(long)]
    pub samples: PathBuf,
    /// Buckets per input column (bounds at the samples' quantiles).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(2..=100))]
    pub buckets: u16,
    /// Where to write the reference [default: reference.json beside the model]
    #[arg(long)]
    pub output: Option<PathBuf>,
}

impl Cli {
    /// What to run: `serve` with its flags (also when no subcommand is given), or another command.
    pub fn into_command(self) -> Command {
        self.command.unwrap_or(Command::Serve(self.serve))
    }
}

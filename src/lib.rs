//! layerbuild: declarative, content-addressed builds of layered node images.
//!
//! Data flows one way, one module per arrow:
//! `Layerfile.toml` → [`workspace`] (validated model) → [`graph`] (DAG,
//! selection) → [`fingerprint`] (manifest + blake3 digest per layer) →
//! [`ops::build`] (plan against the [`cache`]) → [`scheduler`] (ready queue,
//! bounded parallelism) → [`executor`] (buildah + ansible-playbook) → cache
//! record. Only the last three touch processes or SQLite; everything before
//! reads files and is unit-tested without buildah. [`cli`] holds the clap
//! types; [`ops`] one function per subcommand.

pub mod cache;
pub mod cli;
pub mod error;
pub mod executor;
pub mod fingerprint;
pub mod graph;
pub mod label;
pub mod ops;
pub mod progress;
pub mod scheduler;
pub mod workspace;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command};
use error::{Error, Result};
use ops::Context;

/// Entry point: parse arguments, run, print errors, map them to exit codes.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn print_json<T: serde::Serialize>(v: &T) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).expect("output serialises")
    );
}

pub fn run(cli: Cli) -> Result<()> {
    let dir = match &cli.directory {
        Some(d) => d.clone(),
        None => {
            std::env::current_dir().map_err(|e| Error::env(format!("current directory: {e}")))?
        }
    };
    let ctx = Context::load(&dir)?;
    match cli.command {
        Command::Build(args) => {
            let patterns = ops::parse_patterns(&args.labels)?;
            let opts = ops::build::BuildOptions {
                patterns: patterns.clone(),
                system: args.system.system,
                jobs: args.jobs,
                keep_going: args.keep_going,
                isolation: args.isolation,
            };
            let executor = executor::buildah::Buildah::default();
            let report = ops::build::build(&ctx, &opts, &executor, &|n| {
                if args.json {
                    Box::new(progress::PlainReporter::new(n))
                } else {
                    progress::reporter(n)
                }
            })?;
            if args.json {
                print_json(&report);
            } else {
                let targets: Vec<String> = patterns
                    .iter()
                    .filter(|p| matches!(p, label::Pattern::Exact(_)))
                    .map(|p| p.to_string())
                    .collect();
                print!("{}", ops::build::render_summary(&report, &targets));
            }
            if report.failed > 0 {
                let failed: Vec<&str> = report
                    .layers
                    .iter()
                    .filter(|l| l.status == "failed")
                    .map(|l| l.label.as_str())
                    .collect();
                return Err(Error::BuildFailed(format!(
                    "build failed: {}",
                    failed.join(", ")
                )));
            }
            Ok(())
        }
        Command::Hash(args) => {
            let label = ops::parse_label(&args.label)?;
            let report = ops::hash::hash(&ctx, &label, args.system.system.as_deref())?;
            if args.json {
                print_json(&report);
            } else {
                print!("{}", ops::hash::render(&report));
            }
            Ok(())
        }
        Command::Graph(args) => {
            print!("{}", ops::graph::graph(&ctx, args.format));
            Ok(())
        }
        Command::Ls(args) => {
            let executor = executor::buildah::Buildah::default();
            let (entries, warning) = ops::ls::ls(&ctx, args.system.system.as_deref(), &executor)?;
            if let Some(w) = warning {
                eprintln!("warning: {w}");
            }
            if args.json {
                print_json(&entries);
            } else {
                print!("{}", ops::ls::render(&entries));
            }
            Ok(())
        }
    }
}

//! Command-line types (clap derive) only; no logic.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::ops::graph::GraphFormat;

/// Declarative, content-addressed builds of layered node images with buildah and Ansible.
///
/// Layers are declared in Layerfile.toml; each layer's inputs are hashed into a
/// digest, and only layers whose digest is not in the cache are rebuilt.
#[derive(Debug, Parser)]
#[command(name = "layerbuild", version, propagate_version = true)]
pub struct Cli {
    /// Run as if started in DIR (the workspace is DIR or its nearest parent holding Layerfile.toml).
    #[arg(short = 'C', global = true, value_name = "DIR")]
    pub directory: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build layers (and their ancestors) that are not in the cache.
    Build(BuildArgs),
    /// Print a layer's digest (first line) and a summary of its inputs.
    Hash(HashArgs),
    /// Print the layer graph.
    Graph(GraphArgs),
    /// List every layer with its status: cached, needs build, never built.
    Ls(LsArgs),
}

#[derive(Debug, Args)]
pub struct SystemArg {
    /// The system (Ansible inventory + vars) to build for; required when several are declared.
    #[arg(long, value_name = "NAME")]
    pub system: Option<String>,
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Labels to build: //TYPE/LAYER, //TYPE/... or //...
    #[arg(value_name = "LABEL", required = true)]
    pub labels: Vec<String>,
    #[command(flatten)]
    pub system: SystemArg,
    /// Layers to build at once (default: [build] jobs, else the number of cores).
    #[arg(short, long, value_name = "N")]
    pub jobs: Option<usize>,
    /// After a failure, keep building branches that do not depend on it.
    #[arg(short, long)]
    pub keep_going: bool,
    /// buildah isolation for run steps (overrides [build] isolation).
    #[arg(long, value_parser = ["chroot", "oci", "rootless"])]
    pub isolation: Option<String>,
    /// Print a machine-readable report on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct HashArgs {
    /// The layer: //TYPE/LAYER
    #[arg(value_name = "LABEL")]
    pub label: String,
    #[command(flatten)]
    pub system: SystemArg,
    /// Print {label, digest, system, inputs} as JSON, inputs being the full manifest.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct GraphArgs {
    /// Output format.
    #[arg(long, value_enum, default_value = "dot")]
    pub format: GraphFormat,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    #[command(flatten)]
    pub system: SystemArg,
    /// Print a JSON array of {label, digest, status, image_name}.
    #[arg(long)]
    pub json: bool,
}

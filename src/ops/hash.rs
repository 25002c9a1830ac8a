//! `layerbuild hash LABEL...`: layers' digests and the manifests they come from.
//!
//! I/O: fingerprinting (files through the observer, the fingerprint
//! database's stat cache and memo); no container storage.

use serde::Serialize;

use super::Context;
use crate::digest::Digest;
use crate::error::Result;
use crate::fingerprint::{self, Manifest};
use crate::label::{Label, Pattern};

/// Schema version of `hash --json`.
pub const HASH_VERSION: u32 = 1;

#[derive(Debug, Serialize)]
pub struct HashReport {
    pub version: u32,
    pub label: String,
    pub digest: Digest,
    pub system: Option<String>,
    pub inputs: Manifest,
}

/// The layers `patterns` match, in topological order, for `system`.
pub fn hash(
    ctx: &Context,
    patterns: &[Pattern],
    system: Option<&crate::workspace::System>,
) -> Result<Vec<HashReport>> {
    let matched: Vec<Label> = ctx.graph.matching(patterns)?;
    let labels = ctx.graph.select(patterns)?;
    let mut prints = crate::ops::manifests(&ctx.ws, system, &labels)?;
    Ok(matched
        .iter()
        .map(|label| {
            let fp = prints
                .remove(label)
                .expect("selected label is fingerprinted");
            HashReport {
                version: HASH_VERSION,
                label: label.to_string(),
                digest: fp.digest,
                system: system.map(|s| s.name.clone()),
                inputs: fp.manifest,
            }
        })
        .collect())
}

/// Digest on the first line, then a short account of the inputs;
/// `verbose`: and every input file.
pub fn render(r: &HashReport, verbose: bool) -> String {
    let m = &r.inputs;
    let parent = match &m.parent {
        fingerprint::ParentInput::Scratch => "scratch".to_string(),
        fingerprint::ParentInput::Layer { label, digest } => {
            format!("{label} ({})", digest.short())
        }
        fingerprint::ParentInput::Image { reference } => reference.clone(),
    };
    let mut out = format!("{}\n", r.digest);
    out.push_str(&format!("  label:    {}\n", r.label));
    out.push_str(&format!("  parent:   {parent}\n"));
    out.push_str(&format!("  files:    {}\n", m.files.len()));
    out.push_str(&format!("  packages: {}\n", m.packages.len()));
    out.push_str(&format!(
        "  commands: {} setup, {} run, {} scripts\n",
        m.definition.setup.len(),
        m.definition.run.len(),
        m.definition.scripts.len()
    ));
    if !m.vars.is_empty() {
        out.push_str(&format!(
            "  vars:     {}\n",
            m.vars.keys().cloned().collect::<Vec<_>>().join(", ")
        ));
    }
    if let Some(system) = &r.system {
        out.push_str(&format!("  system:   {system}\n"));
    }
    for n in &m.notes {
        out.push_str(&format!("  note:     {n}\n"));
    }
    if verbose {
        for f in m.files.keys() {
            out.push_str(&format!("    {f}\n"));
        }
    }
    out
}

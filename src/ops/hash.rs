//! `layerbuild hash LABEL`: a layer's digest and the manifest it comes from.
//!
//! I/O: fingerprinting (files through the observer, the fingerprint
//! database's stat cache and memo); no container storage.

use serde::Serialize;

use super::Context;
use crate::digest::Digest;
use crate::error::Result;
use crate::fingerprint::{self, Manifest};
use crate::label::{Label, Pattern};

#[derive(Debug, Serialize)]
pub struct HashReport {
    pub label: String,
    pub digest: Digest,
    pub system: Option<String>,
    pub inputs: Manifest,
}

pub fn hash(ctx: &Context, label: &Label, system: Option<&str>) -> Result<HashReport> {
    let system = ctx.ws.system(system)?;
    let labels = ctx.graph.select(&[Pattern::Exact(label.clone())])?;
    let mut prints = crate::ops::manifests(&ctx.ws, system, &labels)?;
    let fp = prints
        .remove(label)
        .expect("selected label is fingerprinted");
    Ok(HashReport {
        label: label.to_string(),
        digest: fp.digest,
        system: system.map(|s| s.name.clone()),
        inputs: fp.manifest,
    })
}

/// Digest on the first line, then a short account of the inputs.
pub fn render(r: &HashReport) -> String {
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
    for n in &m.notes {
        out.push_str(&format!("  note:     {n}\n"));
    }
    out
}

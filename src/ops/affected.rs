//! `layerbuild affected --since REV`: the labels whose digest differs between
//! a git revision and the working tree (or another revision), each with the
//! first line `why` would print. Revisions are read from git's objects into
//! temporary directories; the working tree is not touched.
//!
//! I/O: `git archive` (through `ops::git`) into a temporary directory, and
//! fingerprinting both trees; no container storage, no cache writes.

use std::collections::BTreeMap;

use serde::Serialize;

use super::Context;
use super::git::{export_revision, tempfile_dir};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::explain::{self, Side};
use crate::fingerprint::{self, Fingerprint};
use crate::graph::LayerGraph;
use crate::label::{Label, Pattern};
use crate::plan::HistoryLookup;
use crate::workspace::Workspace;

pub const AFFECTED_VERSION: u32 = 1;

#[derive(Debug, Serialize)]
pub struct AffectedReport {
    pub version: u32,
    pub since: String,
    /// `None`: the working tree.
    pub until: Option<String>,
    pub system: Option<String>,
    /// In topological order.
    pub affected: Vec<AffectedLayer>,
}

#[derive(Debug, Serialize)]
pub struct AffectedLayer {
    pub label: String,
    /// `None` when the layer did not exist at `since`.
    pub old_digest: Option<Digest>,
    pub new_digest: Digest,
    pub reason: String,
}

/// `live`: the working tree, whose stat cache may serve; an exported revision is read whole.
fn fingerprint_all(
    ws: &Workspace,
    system: Option<&str>,
    live: bool,
) -> Result<BTreeMap<Label, Fingerprint>> {
    let graph = LayerGraph::new(ws)?;
    let labels = graph.select(&[Pattern::All])?;
    let sys = match system {
        Some(name) => ws.systems.get(name),
        None => ws.system(None)?,
    };
    if live {
        crate::ops::manifests(ws, sys, &labels)
    } else {
        fingerprint::fingerprint(ws, sys, &labels)
    }
}

fn load_at(ctx: &Context, rev: &str, dir: &std::path::Path) -> Result<Workspace> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    export_revision(&ctx.ws.root, rev, dir)?;
    Workspace::load(dir).map_err(|e| match e {
        Error::Input(i) => Error::input(format!("at {rev}: {}", i.message))
            .with_hint("the Layerfile at that revision is not valid"),
        other => other,
    })
}

pub fn affected(
    ctx: &Context,
    since: &str,
    until: Option<&str>,
    system: Option<&str>,
) -> Result<AffectedReport> {
    let system = ctx.ws.system(system)?.map(|s| s.name.clone());
    let old_dir = tempfile_dir(&ctx.ws)?;
    let old_ws = load_at(ctx, since, &old_dir.path().join("since"))?;
    let new_dir;
    let new_ws = match until {
        Some(rev) => {
            new_dir = tempfile_dir(&ctx.ws)?;
            load_at(ctx, rev, &new_dir.path().join("until"))?
        }
        None => ctx.ws.clone(),
    };
    let old = fingerprint_all(&old_ws, system.as_deref(), false)?;
    let new = fingerprint_all(&new_ws, system.as_deref(), until.is_none())?;
    let mut lookup = HistoryLookup::new(None, &old);
    lookup.known.extend(HistoryLookup::new(None, &new).known);
    let side = |f: &Fingerprint| Side::from(f);
    let order = LayerGraph::new(&new_ws)?;
    let mut out = vec![];
    for label in order.order() {
        let n = &new[label];
        match old.get(label) {
            Some(o) if o.digest == n.digest => {}
            Some(o) => {
                let changes = explain::diff(&side(o), &side(n), &lookup, false);
                out.push(AffectedLayer {
                    label: label.to_string(),
                    old_digest: Some(o.digest.clone()),
                    new_digest: n.digest.clone(),
                    reason: explain::one_line(&changes, &label.to_string()),
                });
            }
            None => out.push(AffectedLayer {
                label: label.to_string(),
                old_digest: None,
                new_digest: n.digest.clone(),
                reason: format!("{label} did not exist at {since}"),
            }),
        }
    }
    Ok(AffectedReport {
        version: AFFECTED_VERSION,
        since: since.to_string(),
        until: until.map(str::to_string),
        system,
        affected: out,
    })
}

pub fn render(r: &AffectedReport) -> String {
    if r.affected.is_empty() {
        return format!("no layer is affected since {}\n", r.since);
    }
    let width = r.affected.iter().map(|a| a.label.len()).max().unwrap_or(0);
    r.affected
        .iter()
        .map(|a| format!("{:width$}  {}\n", a.label, a.reason))
        .collect()
}

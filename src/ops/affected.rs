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
    /// The architecture whose build of the layer is affected, when the
    /// workspace builds for several (each is compared with itself).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arch: Option<crate::arch::Arch>,
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
    // Every architecture the workspace builds for, each side for the same
    // one (the command's first): a change that only an aarch64 build sees
    // (a layer only it builds, `overlay-{arch}`) affects it.
    let mut arches = vec![new_ws.arch];
    arches.extend(
        new_ws
            .build
            .architectures
            .iter()
            .filter(|a| **a != new_ws.arch),
    );
    let several = arches.len() > 1;
    let mut out = vec![];
    for arch in arches {
        let new_ws = new_ws.for_arch(arch)?;
        if new_ws.layers.is_empty() {
            continue;
        }
        let old = match old_ws.for_arch(arch) {
            Ok(old_ws) if !old_ws.layers.is_empty() => {
                fingerprint_all(&old_ws, system.as_deref(), false)?
            }
            // It did not build for this architecture then.
            _ => BTreeMap::new(),
        };
        let new = fingerprint_all(&new_ws, system.as_deref(), until.is_none())?;
        let mut lookup = HistoryLookup::new(None, &old);
        lookup.known.extend(HistoryLookup::new(None, &new).known);
        let side = |f: &Fingerprint| Side::from(f);
        let order = LayerGraph::new(&new_ws)?;
        let arch = several.then_some(arch);
        for label in order.order() {
            let n = &new[label];
            match old.get(label) {
                Some(o) if o.digest == n.digest => {}
                Some(o) => {
                    let changes = explain::diff(&side(o), &side(n), &lookup, false);
                    out.push(AffectedLayer {
                        label: label.to_string(),
                        arch,
                        old_digest: Some(o.digest.clone()),
                        new_digest: n.digest.clone(),
                        reason: explain::one_line(&changes, &label.to_string()),
                    });
                }
                None => out.push(AffectedLayer {
                    label: label.to_string(),
                    arch,
                    old_digest: None,
                    new_digest: n.digest.clone(),
                    reason: match arch {
                        Some(a)
                            if old_ws.layers.contains_key(label)
                                || old_ws.other_arch_layers.contains_key(label) =>
                        {
                            format!("{label} was not built for {a} at {since}")
                        }
                        _ => format!("{label} did not exist at {since}"),
                    },
                }),
            }
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
    let name = |a: &AffectedLayer| match a.arch {
        Some(arch) => format!("{} ({arch})", a.label),
        None => a.label.clone(),
    };
    let width = r.affected.iter().map(|a| name(a).len()).max().unwrap_or(0);
    r.affected
        .iter()
        .map(|a| format!("{:width$}  {}\n", name(a), a.reason))
        .collect()
}

//! `build --dry-run`: what a build would do, without building. Each layer
//! is fresh or dirty by the same predicate a build uses
//! ([`crate::plan::fresh_row`]), with the first reason for a rebuild; with
//! `-v`, the commands the backend would run for each dirty layer.
//!
//! I/O: fingerprinting (files, the fingerprint database), the build cache
//! (read), one listing of the image store through the backend.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

use super::BuildOptions;
use super::request::{attempt_request, base_image};
use crate::cache::Cache;
use crate::digest::Digest;
use crate::error::Result;
use crate::executor::Backend;
use crate::fingerprint::session::{Source, Want};
use crate::ops::Context;
use crate::plan::{Freshness, HistoryLookup, freshness};
pub use crate::status::LayerState;

/// Schema version of `build --dry-run --json`.
pub const PLAN_VERSION: u32 = 1;

#[derive(Debug, Serialize)]
pub struct PlanReport {
    pub version: u32,
    pub system: Option<String>,
    /// The architecture planned for.
    pub arch: crate::arch::Arch,
    /// In topological order.
    pub layers: Vec<PlannedLayer>,
    pub dirty: usize,
    pub fresh: usize,
}

#[derive(Debug, Serialize)]
pub struct PlannedLayer {
    pub label: String,
    pub digest: Digest,
    /// `up_to_date`, `needs_build` or `never_built`.
    pub status: LayerState,
    /// One line: the first root cause, or the image that would be reused.
    pub reason: String,
    pub image_name: Option<String>,
    pub freshness: Freshness,
    /// What a build of a dirty layer runs, one shell line each (`-v`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub commands: Vec<String>,
}

/// `build --dry-run`: what a build would do, without building; with
/// `commands`, what each dirty layer's build would run.
pub fn plan(
    ctx: &Context,
    opts: &BuildOptions,
    executor: &dyn Backend,
    commands: bool,
) -> Result<PlanReport> {
    let ws = &ctx.ws;
    let system = ws.system(opts.system.as_deref())?;
    let labels = ctx.graph.select(&opts.patterns)?;
    // Digests from the memo when nothing changed; whole manifests only
    // when a layer has a build history to explain a change against (none
    // without a cache).
    let cache = Cache::open_existing(&ws.db_path())?;
    let want = match cache {
        Some(_) => Want::Digests,
        None => Want::DigestsOnly,
    };
    let fp = crate::ops::fingerprints(ws, system, &labels, want)?;
    let images = match &cache {
        Some(_) => Some(executor.images()?),
        None => None,
    };
    let sys = system.map(|s| s.name.as_str());
    let prints = match (&cache, fp.source) {
        (Some(c), Source::Memo) => {
            let lookup = HistoryLookup::new(Some(c), &fp.prints);
            let mut all_fresh = true;
            for fp in fp.prints.values() {
                let f = freshness(Some(c), images.as_ref(), fp, sys, &lookup, false)?;
                if !matches!(f, Freshness::Fresh { .. }) {
                    all_fresh = false;
                    break;
                }
            }
            if all_fresh {
                fp.prints
            } else {
                crate::ops::fingerprints(ws, system, &labels, Want::Manifests)?.prints
            }
        }
        _ => fp.prints,
    };
    let lookup = HistoryLookup::new(cache.as_ref(), &prints);
    let mut report = PlanReport {
        version: PLAN_VERSION,
        system: sys.map(str::to_string),
        arch: ws.arch,
        layers: vec![],
        dirty: 0,
        fresh: 0,
    };
    for l in &labels {
        let fp = &prints[l];
        let f = freshness(cache.as_ref(), images.as_ref(), fp, sys, &lookup, false)?;
        let label = l.to_string();
        let status = f.state();
        let image_name = match &f {
            Freshness::Fresh { image_name, .. } => {
                report.fresh += 1;
                Some(image_name.clone())
            }
            Freshness::Dirty { .. } => {
                report.dirty += 1;
                None
            }
        };
        report.layers.push(PlannedLayer {
            reason: f.one_line(&label),
            label,
            digest: fp.digest.clone(),
            status,
            image_name,
            freshness: f,
            commands: vec![],
        });
    }
    if commands && report.dirty > 0 {
        // Light prints (the memo's) lack the secret values to redact.
        let full;
        let prints = if prints.values().any(|p| p.light) {
            full = crate::ops::manifests(ws, system, &labels)?;
            &full
        } else {
            &prints
        };
        add_commands(ctx, opts, system, prints, &mut report, executor);
    }
    Ok(report)
}

/// The commands of each dirty layer of `report`, as the backend would run
/// them; a parent that is dirty too has no image yet (a placeholder).
fn add_commands(
    ctx: &Context,
    opts: &BuildOptions,
    system: Option<&crate::workspace::System>,
    prints: &BTreeMap<crate::label::Label, crate::fingerprint::Fingerprint>,
    report: &mut PlanReport,
    executor: &dyn Backend,
) {
    let ws = &ctx.ws;
    let isolation = opts.isolation.as_deref().unwrap_or(&ws.build.isolation);
    let images: BTreeMap<String, String> = report
        .layers
        .iter()
        .filter_map(|l| match &l.freshness {
            Freshness::Fresh { image_id, .. } => Some((l.label.clone(), image_id.clone())),
            Freshness::Dirty { .. } => None,
        })
        .collect();
    for (label, fp) in prints {
        let Some(layer) = report
            .layers
            .iter_mut()
            .find(|l| l.label == label.to_string() && l.status != LayerState::UpToDate)
        else {
            continue;
        };
        let from = base_image(ws, label, |p| images.get(&p.to_string()).cloned());
        let req = attempt_request(ws, system, fp, isolation, from, PathBuf::new());
        layer.commands = executor.planned_steps(&req);
    }
}

pub fn render_plan(p: &PlanReport) -> String {
    let width = p.layers.iter().map(|l| l.label.len()).max().unwrap_or(0);
    let mut s = String::new();
    for l in &p.layers {
        s.push_str(&format!(
            "{:width$}  {:<11}  {}\n",
            l.label,
            l.status.words(),
            l.reason
        ));
        for c in &l.commands {
            s.push_str(&format!("    {c}\n"));
        }
    }
    s.push_str(&format!("{} to build, {} up to date\n", p.dirty, p.fresh));
    s
}

//! `layerbuild why` and `layerbuild hash-diff`: explain a digest change as a
//! diff of manifests, down to the file, variable or package.

use std::collections::BTreeMap;

use serde::Serialize;

pub use crate::status::WhyStatus;

use super::git::{export_revision, tempfile_dir};
use super::{Context, format_time};
use crate::cache::{BuildRow, Cache};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::executor::Backend;
use crate::explain::{self, Change, Lookup, Side};
use crate::fingerprint::{self, Fingerprint};
use crate::label::{Label, Pattern};
use crate::plan::{self, DirtyReason, Freshness, HistoryLookup};
use crate::workspace::Workspace;

pub const WHY_VERSION: u32 = 1;

#[derive(Debug, Serialize)]
pub struct WhyReport {
    pub version: u32,
    pub label: String,
    pub system: Option<String>,
    pub digest: Digest,
    pub status: WhyStatus,
    /// The build an up-to-date label would reuse, or the one compared against.
    pub compared_to: Option<Compared>,
    pub changes: Vec<Change>,
    /// For a label never built: what a build would build, in order.
    pub would_build: Vec<String>,
    /// Where the analysis over-approximated, and why (e.g. every inventory
    /// variable counts because a role uses `hostvars`).
    pub notes: Vec<String>,
    #[serde(skip)]
    text: String,
}

#[derive(Debug, Serialize)]
pub struct Compared {
    pub digest: Digest,
    pub built_at: Option<i64>,
    pub image_name: Option<String>,
    /// `--since`: the git revision.
    pub revision: Option<String>,
}

impl WhyReport {
    /// An empty report about `fp`, to be filled in with a status and text.
    fn start(fp: &Fingerprint, system: Option<String>) -> WhyReport {
        WhyReport {
            version: WHY_VERSION,
            label: fp.label.to_string(),
            system,
            digest: fp.digest.clone(),
            status: WhyStatus::NeverBuilt,
            compared_to: None,
            changes: vec![],
            would_build: vec![],
            notes: fp.manifest.notes.clone(),
            text: String::new(),
        }
    }

    pub fn text(&self) -> &str {
        &self.text
    }
}

pub struct WhyOptions {
    pub label: Label,
    pub system: Option<String>,
    pub since: Option<String>,
    pub show_values: bool,
}

pub fn why(ctx: &Context, opts: &WhyOptions, backend: &dyn Backend) -> Result<WhyReport> {
    let mut r = why_inner(ctx, opts, backend)?;
    for n in &r.notes {
        r.text.push_str(&format!("  note: {n}\n"));
    }
    Ok(r)
}

fn why_inner(ctx: &Context, opts: &WhyOptions, backend: &dyn Backend) -> Result<WhyReport> {
    let ws = &ctx.ws;
    let system = ws.system(opts.system.as_deref())?;
    let labels = ctx.graph.select(&[Pattern::Exact(opts.label.clone())])?;
    if let Some(rev) = &opts.since {
        return why_since(
            ws,
            &labels,
            &opts.label,
            system.map(|s| s.name.clone()),
            rev,
            opts.show_values,
        );
    }
    let prints = crate::ops::manifests(ws, system, &labels)?;
    let fp = &prints[&opts.label];
    let cache = Cache::open_existing(&ws.db_path())?;
    let images = cache.as_ref().and_then(|_| backend.images().ok());
    let lookup = HistoryLookup::new(cache.as_ref(), &prints);
    let sys = system.map(|s| s.name.as_str());
    let label = opts.label.to_string();
    let fresh = plan::freshness(
        cache.as_ref(),
        images.as_ref(),
        fp,
        sys,
        &lookup,
        opts.show_values,
    )?;

    let mut report = WhyReport::start(fp, sys.map(str::to_string));
    if let Freshness::Dirty {
        reason: DirtyReason::NeverBuilt,
    } = fresh
    {
        let for_system = sys.map(|s| format!(" for system {s}")).unwrap_or_default();
        for l in &labels {
            let f = plan::freshness(
                cache.as_ref(),
                images.as_ref(),
                &prints[l],
                sys,
                &lookup,
                false,
            )?;
            if !f.is_fresh() {
                report.would_build.push(l.to_string());
            }
        }
        report.text = format!(
            "{label}: never built{for_system}; a build would build: {}\n",
            report.would_build.join(", ")
        );
        return Ok(report);
    }
    explain_freshness(&mut report, fresh);
    Ok(report)
}

/// Fills `report` in for a layer that is up to date or was built before.
fn explain_freshness(report: &mut WhyReport, fresh: Freshness) {
    let label = report.label.clone();
    match fresh {
        Freshness::Fresh {
            image_name,
            built_at,
            ..
        } => {
            report.status = WhyStatus::UpToDate;
            report.text = format!(
                "{label} is up to date: a build would reuse {image_name} (built {}, digest {}…)\n",
                format_time(built_at),
                report.digest.short()
            );
            report.compared_to = Some(Compared {
                digest: report.digest.clone(),
                built_at: Some(built_at),
                image_name: Some(image_name),
                revision: None,
            });
        }
        Freshness::Dirty {
            reason: DirtyReason::NeverBuilt,
        } => {}
        Freshness::Dirty {
            reason:
                DirtyReason::Changed {
                    last_digest,
                    last_built_at,
                    changes,
                },
        } => {
            report.status = WhyStatus::NeedsBuild;
            report.text = format!(
                "{label} needs build (last built {}, digest {}…):\n{}",
                format_time(last_built_at),
                last_digest.short(),
                explain::render(&changes, &label, 2)
            );
            report.compared_to = Some(Compared {
                digest: last_digest,
                built_at: Some(last_built_at),
                image_name: None,
                revision: None,
            });
            report.changes = changes;
        }
        Freshness::Dirty {
            reason:
                DirtyReason::Unreadable {
                    last_digest,
                    last_built_at,
                },
        } => {
            report.status = WhyStatus::NeedsBuild;
            report.text = format!(
                "{label} needs build (last built {}, digest {}…): that build was recorded by another layerbuild format, so its inputs cannot be compared\n",
                format_time(last_built_at),
                last_digest.short()
            );
        }
    }
}

/// Compares against the workspace as it was at git revision `rev`: the
/// revision's files are exported to a temporary directory (the working
/// tree is not touched) and fingerprinted there.
fn why_since(
    ws: &Workspace,
    labels: &[Label],
    label: &Label,
    system: Option<String>,
    rev: &str,
    show_values: bool,
) -> Result<WhyReport> {
    let old_root = tempfile_dir(ws)?;
    export_revision(&ws.root, rev, old_root.path())?;
    let old_ws = Workspace::load(old_root.path()).map_err(|e| match e {
        Error::Input(i) => Error::input(format!("at {rev}: {}", i.message))
            .with_hint("the Layerfile at that revision is not valid"),
        other => other,
    })?;
    let new_sys = ws.system(system.as_deref())?;
    let prints = crate::ops::manifests(ws, new_sys, labels)?;
    let fp = &prints[label];
    let mut report = WhyReport::start(fp, system.clone());
    if !old_ws.layers.contains_key(label) {
        report.status = WhyStatus::ChangedSince;
        report.text = format!("{label} did not exist at {rev}\n");
        return Ok(report);
    }
    let old_graph = crate::graph::LayerGraph::new(&old_ws)?;
    let old_labels = old_graph.select(&[Pattern::Exact(label.clone())])?;
    let old_sys = match &system {
        Some(s) => old_ws.systems.get(s),
        None => None,
    };
    let old_prints = fingerprint::fingerprint(&old_ws, old_sys, &old_labels)?;
    let ofp = &old_prints[label];
    let mut lookup = HistoryLookup::new(None, &prints);
    lookup
        .known
        .extend(HistoryLookup::new(None, &old_prints).known);
    let changes = explain::diff(&side(ofp), &side(fp), &lookup, show_values);
    report.compared_to = Some(Compared {
        digest: ofp.digest.clone(),
        built_at: None,
        image_name: None,
        revision: Some(rev.to_string()),
    });
    if ofp.digest == fp.digest {
        report.status = WhyStatus::UnchangedSince;
        report.text = format!(
            "{label} is unchanged since {rev} (digest {}…)\n",
            fp.digest.short()
        );
    } else {
        report.status = WhyStatus::ChangedSince;
        report.text = format!(
            "{label} changed since {rev} (digest {}… -> {}…):\n{}",
            ofp.digest.short(),
            fp.digest.short(),
            explain::render(&changes, &report.label, 2)
        );
        report.changes = changes;
    }
    Ok(report)
}

fn side(fp: &Fingerprint) -> Side {
    Side::from(fp)
}

#[derive(Debug, Serialize)]
pub struct HashDiffReport {
    pub version: u32,
    pub a: DigestInfo,
    pub b: DigestInfo,
    pub changes: Vec<Change>,
    #[serde(skip)]
    text: String,
}

#[derive(Debug, Serialize)]
pub struct DigestInfo {
    pub digest: Digest,
    pub label: String,
    pub system: Option<String>,
    pub built_at: i64,
    pub status: String,
}

impl HashDiffReport {
    pub fn text(&self) -> &str {
        &self.text
    }
}

fn resolve_prefix(cache: &Cache, prefix: &str) -> Result<BuildRow> {
    if prefix.is_empty() || !prefix.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(
            Error::input(format!("'{prefix}' is not a digest or digest prefix"))
                .with_hint("digests are hexadecimal; `layerbuild hash LABEL` or `ls` prints them"),
        );
    }
    let mut rows = cache.builds_with_digest_prefix(&prefix.to_lowercase())?;
    match rows.len() {
        0 => Err(Error::input(format!(
            "no recorded manifest has a digest starting with {prefix}"
        ))
        .with_hint("only digests that were built (or failed to build) here are recorded")),
        1 => Ok(rows.remove(0)),
        _ => Err(Error::input(format!(
            "digest prefix {prefix} is ambiguous: it matches {}",
            rows.iter()
                .map(|r| format!("{} ({})", r.digest.short(), r.label))
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .with_hint("give more digits")),
    }
}

pub fn hash_diff(ctx: &Context, a: &str, b: &str, show_values: bool) -> Result<HashDiffReport> {
    let Some(cache) = Cache::open_existing(&ctx.ws.db_path())? else {
        return Err(
            Error::input("no build has been recorded in this workspace yet")
                .with_hint("hash-diff compares manifests of recorded builds; run a build first"),
        );
    };
    let ra = resolve_prefix(&cache, a)?;
    let rb = resolve_prefix(&cache, b)?;
    let (Some(sa), Some(sb)) = (plan::side_of(&ra), plan::side_of(&rb)) else {
        return Err(Error::input(
            "one of these manifests was recorded by another layerbuild format",
        )
        .with_hint("compare digests recorded by this version"));
    };
    let lookup = HistoryLookup {
        cache: Some(&cache),
        known: BTreeMap::new(),
    };
    let changes = explain::diff(&sa, &sb, &lookup as &dyn Lookup, show_values);
    let info = |r: &BuildRow| DigestInfo {
        digest: r.digest.clone(),
        label: r.label.clone(),
        system: r.system.clone(),
        built_at: r.started_at,
        status: r.status.clone(),
    };
    let text = if changes.is_empty() {
        format!(
            "{} ({}) and {} ({}) have the same inputs\n",
            ra.digest.short(),
            ra.label,
            rb.digest.short(),
            rb.label
        )
    } else {
        format!(
            "{} ({}) -> {} ({}):\n{}",
            ra.digest.short(),
            ra.label,
            rb.digest.short(),
            rb.label,
            explain::render(&changes, &rb.label, 2)
        )
    };
    Ok(HashDiffReport {
        version: WHY_VERSION,
        a: info(&ra),
        b: info(&rb),
        changes,
        text,
    })
}

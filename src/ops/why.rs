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
    /// `--release A --release B`: B, whose digest `digest` is (absent:
    /// the current inputs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
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
    /// `--release`: the release holding `digest`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
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
            release: None,
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
                release: None,
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
                release: None,
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
        release: None,
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

/// `why --release A [--release B]`.
pub struct ReleaseWhyOptions {
    /// The layer (`None`: the one layer the releases were recorded for).
    pub label: Option<Label>,
    pub system: Option<String>,
    /// One release (compared with the current inputs) or two (A, then B).
    pub releases: Vec<String>,
    pub show_values: bool,
}

/// What changed between two releases of a layer, or from a release to
/// the layer's current inputs: a diff of the manifests the cache recorded
/// for their digests, as `hash-diff` compares two digests.
pub fn why_release(ctx: &Context, opts: &ReleaseWhyOptions) -> Result<WhyReport> {
    let (a, b) = match opts.releases.as_slice() {
        [a] => (a, None),
        [a, b] => (a, Some(b)),
        _ => {
            return Err(Error::input("--release is given once or twice").with_hint(
                "--release A: from A to the current inputs; --release A --release B: from A to B",
            ));
        }
    };
    for r in &opts.releases {
        super::promote::check_release_name(r)?;
    }
    let Some(cache) = Cache::open_existing(&ctx.ws.db_path())? else {
        return Err(no_release(a));
    };
    let arch = ctx.ws.arch.name();
    let ra = promotion(&cache, opts, arch, opts.label.as_ref(), a)?;
    let label = Label::parse(&ra.label).map_err(Error::input)?;
    let rb = match b {
        Some(b) => Some(promotion(&cache, opts, arch, Some(&label), b)?),
        None => None,
    };
    let sa = recorded_side(&cache, &ra)?;
    let compared = Compared {
        digest: ra.digest.clone(),
        built_at: cache.build_with_digest(&ra.digest)?.map(|r| r.started_at),
        image_name: None,
        revision: None,
        release: Some(ra.release.clone()),
    };
    let (mut report, changes) = match &rb {
        Some(rb) => {
            let sb = recorded_side(&cache, rb)?;
            let lookup = HistoryLookup {
                cache: Some(&cache),
                known: BTreeMap::new(),
            };
            let changes = explain::diff(&sa, &sb, &lookup as &dyn Lookup, opts.show_values);
            let report = WhyReport {
                version: WHY_VERSION,
                label: label.to_string(),
                system: rb.system.clone(),
                digest: rb.digest.clone(),
                status: WhyStatus::NeverBuilt,
                compared_to: None,
                changes: vec![],
                would_build: vec![],
                notes: sb.manifest.notes.clone(),
                release: Some(rb.release.clone()),
                text: String::new(),
            };
            (report, changes)
        }
        None => {
            if !ctx.ws.layers.contains_key(&label) {
                return Err(Error::input(format!(
                    "{label} is no longer in the Layerfile: its current inputs cannot be compared with release {a}"
                ))
                .with_hint("compare two releases: --release A --release B"));
            }
            let system = opts.system.clone().or_else(|| ra.system.clone());
            let sys = ctx.ws.system(system.as_deref())?;
            let labels = ctx.graph.select(&[Pattern::Exact(label.clone())])?;
            let prints = crate::ops::manifests(&ctx.ws, sys, &labels)?;
            let fp = &prints[&label];
            let lookup = HistoryLookup::new(Some(&cache), &prints);
            let changes = explain::diff(&sa, &side(fp), &lookup, opts.show_values);
            let report = WhyReport::start(fp, sys.map(|s| s.name.clone()));
            (report, changes)
        }
    };
    report.compared_to = Some(compared);
    let (from, to) = (ra.digest.short(), report.digest.short().to_string());
    let since = match b {
        Some(b) => format!("from release {a} to release {b}"),
        None => format!("since release {a}"),
    };
    if ra.digest == report.digest || changes.is_empty() {
        report.status = WhyStatus::UnchangedSince;
        report.text = match ra.digest == report.digest {
            true => format!("{label} is unchanged {since} (digest {from}…)\n"),
            false => format!("{label} has the same inputs {since} (digest {from}… -> {to}…)\n"),
        };
    } else {
        report.status = WhyStatus::ChangedSince;
        report.text = format!(
            "{label} changed {since} (digest {from}… -> {to}…):\n{}",
            explain::render(&changes, &report.label, 2)
        );
        report.changes = changes;
    }
    Ok(report)
}

fn no_release(name: &str) -> Error {
    Error::input(format!("no promotion to release {name} is recorded here"))
        .with_hint("`layerbuild releases` lists the recorded promotions")
}

/// The newest recorded promotion to `name` (of `label`, when given): of
/// one layer, whose label then names it.
fn promotion(
    cache: &Cache,
    opts: &ReleaseWhyOptions,
    arch: &str,
    label: Option<&Label>,
    name: &str,
) -> Result<crate::cache::ReleaseRecord> {
    let labels = label.map(|l| vec![l.to_string()]);
    let mut rows = cache.releases(labels.as_deref(), Some(&[name.to_string()]))?;
    // A release of several architectures: this one's image (`--arch`).
    if rows.iter().any(|r| r.arch == arch) {
        rows.retain(|r| r.arch == arch);
    }
    if let Some(s) = &opts.system
        && rows.iter().any(|r| r.system.as_deref() == Some(s))
    {
        rows.retain(|r| r.system.as_deref() == Some(s));
    }
    let mut layers: Vec<&str> = rows.iter().map(|r| r.label.as_str()).collect();
    layers.sort();
    layers.dedup();
    match layers.len() {
        0 => Err(match label {
            Some(l) => Error::input(format!(
                "no promotion of {l} to release {name} is recorded here"
            ))
            .with_hint(format!("`layerbuild releases {l}` lists its promotions")),
            None => no_release(name),
        }),
        1 => Ok(rows.remove(0)),
        _ => Err(Error::input(format!(
            "release {name} names several layers: {}",
            layers.join(", ")
        ))
        .with_hint(format!(
            "name one: layerbuild why {} --release {name}",
            layers[0]
        ))),
    }
}

/// The manifest recorded for a release's digest.
fn recorded_side(cache: &Cache, r: &crate::cache::ReleaseRecord) -> Result<Side> {
    let row = cache.build_with_digest(&r.digest)?;
    row.as_ref().and_then(plan::side_of).ok_or_else(|| {
        Error::input(format!(
            "the manifest of release {} ({} at {}) is not in this cache",
            r.release,
            r.label,
            r.digest.short()
        ))
        .with_hint("promoted from another checkout, removed by gc, or recorded by another layerbuild format: `layerbuild hash-diff` compares digests recorded here")
    })
}

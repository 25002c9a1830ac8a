//! `layerbuild cache verify` and `layerbuild cache rebuild-index`: the
//! SQLite index checked against, and rebuilt from, container storage.
//!
//! Container storage is the truth: every image a build commits is named
//! `localhost/layerbuild/<ws>/<type>/<layer>:<digest12>` and labelled with
//! `layerbuild.digest` and `layerbuild.label`, so the index can be rebuilt
//! from it; deleting `cache/layerbuild.db` loses logs and history, not
//! builds. [`committed_build`] is the test both this and a build's adoption
//! of an image committed by an interrupted build use.
//!
//! I/O: SQLite, `buildah images` and `buildah inspect`, and (rebuild-index)
//! fingerprinting the workspace to recover manifests of current digests.

use std::collections::HashMap;

use serde::Serialize;

pub use crate::status::IndexStatus;

use super::{Context, image_name, now_secs};
use crate::cache::repair::{self, Recovered};
use crate::cache::{BuildRecord, Cache};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::executor::inspect::ImageMeta;
use crate::executor::{Backend, ImageStore};
use crate::fingerprint::{self, Fingerprint};
use crate::label::{Label, Pattern};

/// Does this image come from a build of `label` at `digest`? Its labels say so.
pub fn is_build_of(meta: &ImageMeta, label: &Label, digest: &Digest) -> bool {
    meta.digest.as_ref() == Some(digest) && meta.label.as_deref() == Some(&label.to_string())
}

/// The image named `name` if a build of `label` at `digest` committed it.
pub(crate) fn committed_build(
    store: &dyn ImageStore,
    name: &str,
    label: &Label,
    digest: &Digest,
) -> Option<ImageMeta> {
    store
        .committed_image(name)
        .ok()
        .flatten()
        .filter(|m| is_build_of(m, label, digest))
}

/// Schema version of `cache verify --json` and `cache rebuild-index --json`.
pub const REPORT_VERSION: u32 = 1;

#[derive(Debug, Serialize)]
pub struct VerifyReport {
    pub version: u32,
    pub database: String,
    /// Rows of the `layers` table checked.
    pub rows: usize,
    /// `PRAGMA integrity_check` findings; empty when the file is sound.
    pub integrity: Vec<String>,
    pub problems: Vec<RowProblem>,
    pub repaired: usize,
}

#[derive(Debug, Serialize)]
pub struct RowProblem {
    pub label: String,
    pub system: Option<String>,
    pub digest: Digest,
    pub image_id: String,
    pub image_name: String,
    /// `missing` (no such image in container storage) or `mismatched` (its
    /// `layerbuild.digest` label is another digest).
    pub problem: &'static str,
    /// The digest label found on a mismatched image.
    pub found: Option<Digest>,
    /// The row was deleted (`--repair`).
    pub repaired: bool,
}

impl VerifyReport {
    /// Problems left: unrepaired rows, and any integrity finding.
    pub fn unresolved(&self) -> usize {
        self.integrity.len() + self.problems.iter().filter(|p| !p.repaired).count()
    }
}

/// Checks every cache row against container storage; with `repair`,
/// deletes the rows that name a missing or mismatched image (the next build
/// rebuilds those layers).
pub fn verify(ctx: &Context, backend: &dyn Backend, repair: bool) -> Result<VerifyReport> {
    let db = ctx.ws.db_path();
    let mut report = VerifyReport {
        version: REPORT_VERSION,
        database: ctx.ws.display_path(&db),
        rows: 0,
        integrity: vec![],
        problems: vec![],
        repaired: 0,
    };
    let Some(mut cache) = Cache::open_existing(&db)? else {
        return Ok(report);
    };
    report.integrity = cache.integrity_problems()?;
    let rows = cache.all_layers()?;
    report.rows = rows.len();
    let images = backend.images()?;
    for row in rows {
        let (problem, found) = if !images.contains(&row.image_id) {
            ("missing", None)
        } else {
            match backend.committed_image(&row.image_id)? {
                None => ("missing", None),
                Some(m) if m.digest.as_ref() == Some(&row.digest) => continue,
                Some(m) => ("mismatched", Some(m.digest.unwrap_or_default())),
            }
        };
        report.problems.push(RowProblem {
            label: row.label,
            system: row.system,
            digest: row.digest,
            image_id: row.image_id,
            image_name: row.image_name,
            problem,
            found,
            repaired: false,
        });
    }
    if repair {
        for p in &mut report.problems {
            cache.forget_layer(&p.digest)?;
            p.repaired = true;
            report.repaired += 1;
        }
    }
    Ok(report)
}

pub fn render_verify(r: &VerifyReport) -> String {
    let mut s = String::new();
    for line in &r.integrity {
        s.push_str(&format!("integrity: {line}\n"));
    }
    for p in &r.problems {
        let what = match (p.problem, &p.found) {
            ("mismatched", Some(f)) => format!(
                "its image {} is labelled with digest '{}'",
                p.image_name,
                f.short()
            ),
            _ => format!(
                "its image {} ({}) is not in container storage",
                p.image_name,
                crate::digest::short(&p.image_id)
            ),
        };
        let done = if p.repaired {
            "; row deleted, the next build rebuilds it"
        } else {
            ""
        };
        s.push_str(&format!("{} {}: {what}{done}\n", p.label, p.digest.short()));
    }
    let bad = r.problems.len();
    if !r.integrity.is_empty() {
        s.push_str(&format!(
            "{}: the database is damaged; run `{}`\n",
            r.database,
            repair::REPAIR_COMMAND
        ));
    }
    if bad == 0 {
        s.push_str(&format!(
            "{} cache rows checked: every image is in container storage with its digest label\n",
            r.rows
        ));
    } else if r.repaired == bad {
        s.push_str(&format!(
            "{} cache rows checked, {bad} bad, {} deleted\n",
            r.rows, r.repaired
        ));
    } else {
        s.push_str(&format!(
            "{} cache rows checked, {bad} bad; delete them with: layerbuild cache verify --repair\n",
            r.rows
        ));
    }
    s
}

#[derive(Debug, Serialize)]
pub struct RebuildReport {
    pub version: u32,
    pub database: String,
    /// Where a damaged database was moved.
    pub moved_aside: Option<String>,
    pub images: Vec<IndexedImage>,
    /// Rows written.
    pub recorded: usize,
    /// Things that could not be looked at (fingerprinting failed...).
    pub notes: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct IndexedImage {
    pub image_name: String,
    pub image_id: String,
    pub label: Option<String>,
    pub digest: Option<Digest>,
    /// With a reason when skipped.
    pub status: IndexStatus,
    /// For `recorded`: whether the manifest is `known` (the digest is a
    /// current layer's: its manifest and system are recorded) or `unknown`.
    pub manifest: Option<&'static str>,
    pub reason: Option<String>,
}

/// Rebuilds the index from this workspace's images in container storage: a
/// row for every image named as a build names it whose labels match its
/// name. A damaged database is first moved aside. Digests of the current
/// layers (for every system) get their real manifest; others an unknown one.
pub fn rebuild_index(ctx: &Context, backend: &dyn Backend) -> Result<RebuildReport> {
    let ws = &ctx.ws;
    let db = ws.db_path();
    let mut report = RebuildReport {
        version: REPORT_VERSION,
        database: ws.display_path(&db),
        moved_aside: None,
        images: vec![],
        recorded: 0,
        notes: vec![],
    };
    let sound = || -> Result<Cache> {
        let c = Cache::open(&db)?;
        match c.integrity_problems()?.first() {
            Some(p) => Err(Error::env(format!("integrity check: {p}"))),
            None => Ok(c),
        }
    };
    let mut cache = match sound() {
        Ok(c) => c,
        Err(e) if db.exists() && is_damage(&e) => {
            let to = repair::move_aside(&db, now_secs())?;
            report.moved_aside = Some(ws.display_path(&to));
            Cache::open(&db)?
        }
        Err(e) => return Err(e),
    };

    let current = current_fingerprints(ctx, &mut report.notes);
    let images = backend.image_list()?;
    let present = backend.images()?;
    let prefix = format!("localhost/layerbuild/{}/", ws.name);
    for info in &images {
        for name in info.names.iter().filter(|n| n.starts_with(&prefix)) {
            let mut item = IndexedImage {
                image_name: name.clone(),
                image_id: info.id.clone(),
                label: None,
                digest: None,
                status: IndexStatus::Skipped,
                manifest: None,
                reason: None,
            };
            index_one(ctx, backend, &mut cache, &current, &present, &mut item)?;
            if item.status == IndexStatus::Recorded {
                report.recorded += 1;
            }
            report.images.push(item);
        }
    }
    report
        .images
        .sort_by(|a, b| a.image_name.cmp(&b.image_name));
    Ok(report)
}

fn is_damage(e: &Error) -> bool {
    matches!(e, Error::Environment { message, .. }
        if message.contains("is damaged") || message.starts_with("integrity check:"))
}

/// digest -> (fingerprint, system name) for every layer and system; a
/// failure to fingerprint only costs the manifests (noted).
fn current_fingerprints(
    ctx: &Context,
    notes: &mut Vec<String>,
) -> HashMap<Digest, (Fingerprint, Option<String>)> {
    let ws = &ctx.ws;
    let mut out = HashMap::new();
    let Ok(labels) = ctx.graph.select(&[Pattern::All]) else {
        return out;
    };
    let systems: Vec<_> = if ws.systems.is_empty() {
        vec![None]
    } else {
        ws.systems.values().map(Some).collect()
    };
    for system in systems {
        match fingerprint::fingerprint(ws, system, &labels) {
            Ok(prints) => {
                for fp in prints.into_values() {
                    out.insert(fp.digest.clone(), (fp, system.map(|s| s.name.clone())));
                }
            }
            Err(e) => notes.push(format!(
                "cannot fingerprint the workspace{} ({e}); its images are recorded with unknown manifests",
                system
                    .map(|s| format!(" for system {}", s.name))
                    .unwrap_or_default()
            )),
        }
    }
    out
}

fn index_one(
    ctx: &Context,
    store: &dyn ImageStore,
    cache: &mut Cache,
    current: &HashMap<Digest, (Fingerprint, Option<String>)>,
    present: &std::collections::HashSet<String>,
    item: &mut IndexedImage,
) -> Result<()> {
    let Some(meta) = store.committed_image(&item.image_name)? else {
        item.reason = Some("removed while listed".into());
        return Ok(());
    };
    item.label = meta.label.clone();
    item.digest = meta.digest.clone();
    let (Some(label_s), Some(digest)) = (&meta.label, &meta.digest) else {
        item.reason = Some("no layerbuild.digest and layerbuild.label labels".into());
        return Ok(());
    };
    let Ok(label) = Label::parse(label_s) else {
        item.reason = Some(format!("its layerbuild.label '{label_s}' is not a label"));
        return Ok(());
    };
    if digest.as_str().len() < 12 || image_name(&ctx.ws, &label, digest) != item.image_name {
        // e.g. NAME-failed: an image whose tests failed.
        item.reason = Some("not the name a build of its labels commits to".into());
        return Ok(());
    }
    if let Some(row) = cache.lookup(digest)?
        && present.contains(&row.image_id)
    {
        item.status = IndexStatus::Present;
        return Ok(());
    }
    let built_at = meta.created.unwrap_or_else(now_secs);
    match current.get(digest) {
        Some((fp, _))
            if meta.arch.as_deref().is_some_and(|a| {
                let built_for = fp.manifest.definition.arch.as_deref().unwrap_or("x86_64");
                crate::arch::Arch::parse(a).map(|a| a.name()) != Some(built_for)
            }) =>
        {
            // Before layerbuild knew architectures, an aarch64 machine's
            // build had the digest an x86_64 build of the layer has now.
            item.reason = Some(format!(
                "of architecture {}, not its digest's",
                meta.arch.as_deref().unwrap_or_default()
            ));
            return Ok(());
        }
        Some((fp, system)) => {
            let record = BuildRecord {
                label: label_s,
                system: system.as_deref(),
                digest,
                manifest: &fp.manifest,
                started_at: built_at,
                duration: std::time::Duration::ZERO,
                log_path: None,
                vars: &fp.vars,
                inventory: fp.inventory.as_deref(),
                source: crate::status::RecordSource::Adopted,
            };
            cache.record_built(&record, &meta.id, &item.image_name)?;
            item.manifest = Some("known");
        }
        None => {
            cache.record_recovered(&Recovered {
                digest,
                label: label_s,
                image_id: &meta.id,
                image_name: &item.image_name,
                built_at,
            })?;
            item.manifest = Some("unknown");
        }
    }
    item.status = IndexStatus::Recorded;
    Ok(())
}

pub fn render_rebuild(r: &RebuildReport) -> String {
    let mut s = String::new();
    if let Some(to) = &r.moved_aside {
        s.push_str(&format!("moved the damaged {} aside to {to}\n", r.database));
    }
    for i in &r.images {
        match i.status {
            IndexStatus::Recorded => s.push_str(&format!(
                "recorded {} ({}, manifest {})\n",
                i.image_name,
                i.label.as_deref().unwrap_or(""),
                i.manifest.unwrap_or("unknown")
            )),
            IndexStatus::Skipped => s.push_str(&format!(
                "skipped {}: {}\n",
                i.image_name,
                i.reason.as_deref().unwrap_or("")
            )),
            IndexStatus::Present => {}
        }
    }
    let present = r
        .images
        .iter()
        .filter(|i| i.status == IndexStatus::Present)
        .count();
    s.push_str(&format!(
        "{} images of this workspace: {} recorded, {present} already indexed\n",
        r.images.len(),
        r.recorded
    ));
    s
}

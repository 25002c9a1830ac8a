//! `layerbuild gc`: removes the images, cache rows, history rows and logs of
//! builds that no current layer needs, keeping the newest N per layer (and
//! the history rows of released digests), and the working containers of
//! builds whose process is gone.
//!
//! The choices ([`select_layers`], [`select_history`], [`stale_container`])
//! are pure and unit-tested. [`gc`] gathers their inputs (fingerprints of
//! every system, SQLite, buildah's image and container lists, the
//! storage's owner records (or a checkout's older `owner.pid` files) and
//! `/proc`) and carries the removals out. Only this workspace's
//! images (`localhost/layerbuild/<ws>/...`) and working containers
//! (`layerbuild-<ws>-...`) are ever touched, and of those neither an image
//! the cache of another checkout sharing the container storage names, nor
//! a working container another checkout builds (or kept) in
//! ([`crate::cache::shared`]).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde::Serialize;

pub use crate::status::GcImageStatus;

use super::Context;
use super::build::OWNER_PID_FILE;
use super::export::human_bytes;
use crate::cache::lock::DigestLock;
use crate::cache::shared::Coord;
use crate::cache::{BuildRow, Cache, CachedLayer};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::executor::{Backend, ImageInfo, RmiOutcome};
use crate::label::Pattern;

pub struct GcOptions {
    /// Cache rows to keep per layer and system, the current one included.
    pub keep: usize,
    pub dry_run: bool,
}

/// Schema version of `gc --json`.
pub const REPORT_VERSION: u32 = 1;

#[derive(Debug, Serialize)]
pub struct GcReport {
    pub version: u32,
    pub dry_run: bool,
    pub keep: usize,
    pub images: Vec<GcImage>,
    pub cache_rows: Vec<GcRow>,
    pub history_rows: Vec<GcHistoryRow>,
    pub logs: Vec<GcLog>,
    /// Working containers of builds whose process is gone.
    pub containers: Vec<GcContainer>,
    /// Kept containers of failed builds of removed digests: gc leaves them
    /// (and their history rows) to `clean --failed`.
    pub kept_failed_containers: Vec<String>,
    /// Bytes of the removed images (each counted whole, layers shared with
    /// kept images included, so an upper bound) and logs.
    pub reclaimed_bytes: u64,
}

#[derive(Debug, Serialize)]
pub struct GcImage {
    /// The label and digest of the cache row; none for an image no row names.
    pub label: Option<String>,
    pub digest: Option<Digest>,
    pub image_name: String,
    pub image_id: String,
    pub bytes: u64,
    /// With a `reason` when skipped or failed.
    pub status: GcImageStatus,
    pub reason: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct GcRow {
    pub label: String,
    pub system: Option<String>,
    pub digest: Digest,
    pub built_at: i64,
}

#[derive(Debug, Serialize)]
pub struct GcHistoryRow {
    pub id: i64,
    pub label: String,
    pub system: Option<String>,
    pub digest: Digest,
    pub status: String,
}

#[derive(Debug, Serialize)]
pub struct GcLog {
    pub path: String,
    pub bytes: u64,
    /// Set when the file could not be removed.
    pub error: Option<String>,
    #[serde(skip)]
    full: PathBuf,
}

#[derive(Debug, Serialize)]
pub struct GcContainer {
    pub name: String,
    pub reason: String,
    /// Set when the container could not be removed.
    pub error: Option<String>,
}

impl GcReport {
    /// Items that could not be removed.
    pub fn failures(&self) -> usize {
        self.images
            .iter()
            .filter(|i| i.status == GcImageStatus::Failed)
            .count()
            + self.logs.iter().filter(|l| l.error.is_some()).count()
            + self.containers.iter().filter(|c| c.error.is_some()).count()
    }
}

/// Splits the cache rows into kept digests and removed rows. Per label and
/// system (`rows` holds each group newest first), every current digest is
/// kept, then the newest others until the group keeps `keep` rows: the
/// current row counts, so `keep` 2 is the current one and the newest older
/// one, and `keep` 0 the current one only.
pub(crate) fn select_layers<'a>(
    rows: &'a [CachedLayer],
    current: &HashSet<Digest>,
    keep: usize,
) -> (HashSet<&'a Digest>, Vec<&'a CachedLayer>) {
    let mut groups: BTreeMap<(&str, Option<&str>), Vec<&CachedLayer>> = BTreeMap::new();
    for r in rows {
        groups
            .entry((r.label.as_str(), r.system.as_deref()))
            .or_default()
            .push(r);
    }
    let mut kept = HashSet::new();
    let mut removed = vec![];
    for group in groups.into_values() {
        let currents = group.iter().filter(|r| current.contains(&r.digest)).count();
        let mut room = keep.saturating_sub(currents);
        for r in group {
            if current.contains(&r.digest) {
                kept.insert(&r.digest);
            } else if room > 0 {
                room -= 1;
                kept.insert(&r.digest);
            } else {
                removed.push(r);
            }
        }
    }
    (kept, removed)
}

/// History rows to delete: those of digests not kept, except failed builds
/// whose kept container still exists (`debug` and `clean --failed` need
/// their rows). Returns the rows and the names of those containers.
pub(crate) fn select_history<'a>(
    builds: &'a [BuildRow],
    kept: &HashSet<&Digest>,
    containers: &HashSet<String>,
) -> (Vec<&'a BuildRow>, BTreeSet<String>) {
    let mut delete = vec![];
    let mut kept_failed = BTreeSet::new();
    for b in builds {
        if kept.contains(&b.digest) {
            continue;
        }
        let live_container = b.is_failed()
            && !b.container_removed
            && b.container.as_ref().is_some_and(|c| containers.contains(c));
        if live_container {
            kept_failed.extend(b.container.clone());
        } else {
            delete.push(b);
        }
    }
    (delete, kept_failed)
}

/// Who builds in a working container, from its owner record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Owner {
    Missing,
    Dead(u32),
    Alive(u32),
    /// A build of another checkout sharing the storage, over (a failed
    /// build's kept container, or a killed one): left to that checkout.
    Elsewhere,
}

/// Why `name` is a stale working container of this workspace, or `None` to
/// leave it. Working containers are `<prefix><slug>-<12 hex digits>`. A live
/// owner is a build in progress; a dead one of another checkout sharing the
/// storage that still exists is left to that checkout (its kept container
/// of a failed build). Without an owner (a build by an older
/// layerbuild, or a crash before it was written) the container is taken only
/// when its slug is one of this workspace's layers: the prefix alone cannot
/// tell workspace `a` from a workspace `a-b` sharing the storage.
pub(crate) fn stale_container(
    name: &str,
    prefix: &str,
    slugs: &HashSet<String>,
    owner: Owner,
) -> Option<String> {
    let rest = name.strip_prefix(prefix)?;
    let (slug, hex) = rest.rsplit_once('-')?;
    let digest_like = hex.len() == 12 && hex.bytes().all(|c| c.is_ascii_hexdigit());
    if slug.is_empty() || !digest_like {
        return None;
    }
    match owner {
        Owner::Alive(_) | Owner::Elsewhere => None,
        Owner::Dead(pid) => Some(format!("its build process {pid} is gone")),
        Owner::Missing if slugs.contains(slug) => Some("no build process recorded".into()),
        Owner::Missing => None,
    }
}

/// The file a build writes the system's vars to for ansible-playbook
/// (it may hold secret values), in its working directory.
pub const VARS_FILE: &str = "vars.json";

/// Removes the vars file of every working directory in `cache_dir/tmp`
/// whose build is over (its process is gone, or never recorded one): a
/// build removes its own when the play ends, but not when it is killed.
/// Returns the files removed.
pub fn remove_leftover_vars(cache_dir: &Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(cache_dir.join("tmp")) else {
        return vec![];
    };
    let mut removed = vec![];
    for e in entries.flatten() {
        if matches!(read_owner(&e.path()), Owner::Alive(_)) {
            continue;
        }
        // The play's task events may quote secret values too.
        for name in [VARS_FILE, crate::executor::ansible::EVENTS_FILE] {
            let file = e.path().join(name);
            if std::fs::remove_file(&file).is_ok() {
                removed.push(file);
            }
        }
    }
    removed
}

fn read_owner(work_dir: &Path) -> Owner {
    let Ok(text) = std::fs::read_to_string(work_dir.join(OWNER_PID_FILE)) else {
        return Owner::Missing;
    };
    match text.trim().parse::<u32>() {
        // A reused pid keeps the container: the safe mistake.
        Ok(pid) if Path::new("/proc").join(pid.to_string()).exists() => Owner::Alive(pid),
        Ok(pid) => Owner::Dead(pid),
        Err(_) => Owner::Missing,
    }
}

pub fn gc(ctx: &Context, opts: &GcOptions, backend: &dyn Backend) -> Result<GcReport> {
    let ws = &ctx.ws;
    // Current digests first, for every system: an input that cannot be read
    // stops gc here, before anything is removed.
    let labels = ctx.graph.select(&[Pattern::All])?;
    let current = current_digests(ctx, &labels)?;

    let mut cache = Cache::open_existing(&ws.db_path())?;
    let images = backend.image_list()?;
    let containers = backend.containers()?;
    let shared = Shared::read(ctx, backend, cache.is_some())?;
    let (rows, builds, kept_containers) = match &cache {
        Some(c) => (c.all_layers()?, c.all_builds()?, c.kept_containers()?),
        None => (vec![], vec![], vec![]),
    };

    let (mut kept, removed) = select_layers(&rows, &current, opts.keep);
    kept.extend(&current);
    // A released digest keeps its history rows, whose manifests `why
    // --release` diffs (its image lives on in the registry).
    let released: HashSet<Digest> = match &cache {
        Some(c) => c
            .releases(None, None)?
            .into_iter()
            .map(|r| r.digest)
            .collect(),
        None => HashSet::new(),
    };
    let mut described = kept.clone();
    described.extend(&released);
    let (history, kept_failed) = select_history(&builds, &described, &containers);

    let mut report = GcReport {
        version: REPORT_VERSION,
        dry_run: opts.dry_run,
        keep: opts.keep,
        images: plan_images(ctx, &rows, &kept, &removed, &current, &images, &shared),
        cache_rows: removed.iter().map(|r| GcRow::of(r)).collect(),
        history_rows: history.iter().map(|b| GcHistoryRow::of(b)).collect(),
        logs: plan_logs(ctx, &builds, &history),
        containers: stale_containers(ctx, &labels, &containers, &kept_containers, &shared),
        kept_failed_containers: kept_failed.into_iter().collect(),
        reclaimed_bytes: 0,
    };
    if !opts.dry_run {
        // Rows first, in one transaction, then the images. A crash in
        // between leaves images no row names, which the next gc finds under
        // this workspace's image names and removes; the other order would
        // leave rows naming removed images, which every reader must then
        // second-guess.
        if let Some(c) = cache.as_mut() {
            let digests: Vec<&Digest> = removed.iter().map(|r| &r.digest).collect();
            let ids: Vec<i64> = history.iter().map(|b| b.id).collect();
            c.delete_rows(&digests, &ids)?;
        }
        remove(ctx, backend, &mut report, &shared.coord);
        shared.prune_owners(&containers);
    }
    report.reclaimed_bytes = report.reclaimed();
    Ok(report)
}

/// Whether another checkout's cache names `image_id` now (a cache that
/// cannot be read counts as naming it).
fn named_elsewhere(ctx: &Context, coord: &Coord, image_id: &str) -> bool {
    coord
        .other_checkouts(&ctx.ws.db_path(), &ctx.ws.name)
        .iter()
        .any(|db| Cache::image_ids_in(db).map_or(true, |ids| ids.iter().any(|i| i == image_id)))
}

/// What the other checkouts sharing the container storage use.
struct Shared {
    coord: Coord,
    /// Image ids their caches name, with one checkout naming each.
    named: HashMap<String, PathBuf>,
    /// Working containers by whose build they are (from the storage's
    /// owner records).
    owners: BTreeMap<String, crate::cache::shared::OwnerRecord>,
    own_db: PathBuf,
}

impl Shared {
    /// Reads the other checkouts' caches (one that cannot be read stops gc
    /// before anything is removed: its images would look unused) and
    /// records this checkout when it has a cache.
    fn read(ctx: &Context, backend: &dyn Backend, has_cache: bool) -> Result<Shared> {
        let ws = &ctx.ws;
        let coord = match backend.storage_root()? {
            Some(root) => Coord::of_storage(&root),
            None => Coord::checkout_only(&ws.cache_dir),
        };
        if has_cache {
            coord.register(&ws.db_path(), &ws.name)?;
        }
        let mut named = HashMap::new();
        for db in coord.other_checkouts(&ws.db_path(), &ws.name) {
            let ids = Cache::image_ids_in(&db).map_err(|e| {
                Error::env(format!(
                    "cannot read the cache of another checkout of {} sharing this container storage: {e}",
                    ws.name
                ))
                .with_hint(format!(
                    "gc would remove images it may use; repair it (layerbuild cache rebuild-index in that checkout), or delete {} if that checkout is gone",
                    db.display()
                ))
            })?;
            for id in ids {
                named.entry(id).or_insert_with(|| db.clone());
            }
        }
        Ok(Shared {
            owners: coord.owners(),
            coord,
            named,
            own_db: crate::cache::shared::checkout_key(&ws.db_path()),
        })
    }

    /// Who builds in `container`, from the storage's record, else (a build
    /// of an older layerbuild) this checkout's `owner.pid`.
    fn owner(&self, ctx: &Context, container: &str) -> Owner {
        match self.owners.get(container) {
            Some(rec) if rec.alive() => Owner::Alive(rec.pid),
            Some(rec)
                if rec
                    .checkout
                    .as_ref()
                    .is_some_and(|c| *c != self.own_db && c.exists()) =>
            {
                Owner::Elsewhere
            }
            Some(rec) => Owner::Dead(rec.pid),
            None => read_owner(&ctx.ws.cache_dir.join("tmp").join(container)),
        }
    }

    /// Tags (`DIGEST12`) of this workspace's images being built now: a live
    /// build's image has no cache row until after its commit.
    fn building(&self, ws_name: &str) -> HashSet<String> {
        let prefix = format!("layerbuild-{ws_name}-");
        self.owners
            .iter()
            .filter(|(name, rec)| name.starts_with(&prefix) && rec.alive())
            .filter_map(|(name, _)| name.rsplit_once('-').map(|(_, t)| t.to_string()))
            .collect()
    }

    /// Removes the owner records of containers that are gone, whose build
    /// is over.
    fn prune_owners(&self, containers: &HashSet<String>) {
        for (name, rec) in &self.owners {
            if !containers.contains(name) && !rec.alive() {
                self.coord.release(name);
            }
        }
    }
}

/// The digests of every layer now, for every system.
fn current_digests(ctx: &Context, labels: &[crate::label::Label]) -> Result<HashSet<Digest>> {
    let ws = &ctx.ws;
    let systems: Vec<_> = if ws.systems.is_empty() {
        vec![None]
    } else {
        ws.systems.values().map(Some).collect()
    };
    let mut current = HashSet::new();
    for system in systems {
        let prints = crate::ops::manifests(ws, system, labels)?;
        current.extend(prints.into_values().map(|fp| fp.digest));
    }
    Ok(current)
}

/// Working containers of this workspace that no build owns any more
/// (not those kept from failed builds).
fn stale_containers(
    ctx: &Context,
    labels: &[crate::label::Label],
    containers: &HashSet<String>,
    kept_containers: &[BuildRow],
    shared: &Shared,
) -> Vec<GcContainer> {
    let ws = &ctx.ws;
    let prefix = format!("layerbuild-{}-", ws.name);
    let slugs: HashSet<String> = labels.iter().map(|l| l.slug()).collect();
    let failed_kept: HashSet<&str> = kept_containers
        .iter()
        .filter_map(|r| r.container.as_deref())
        .collect();
    let mut names: Vec<&String> = containers.iter().collect();
    names.sort();
    let mut out = vec![];
    for name in names {
        if failed_kept.contains(name.as_str()) {
            continue;
        }
        let owner = shared.owner(ctx, name);
        if let Some(reason) = stale_container(name, &prefix, &slugs, owner) {
            out.push(GcContainer {
                name: name.clone(),
                reason,
                error: None,
            });
        }
    }
    out
}

/// Removes what `report` plans: containers (a dead build's container holds
/// its image), then images, then logs; each item says how it went.
fn remove(ctx: &Context, backend: &dyn Backend, report: &mut GcReport, coord: &Coord) {
    for c in &mut report.containers {
        match backend.remove_container(&c.name) {
            Ok(()) => {
                let _ = std::fs::remove_dir_all(ctx.ws.cache_dir.join("tmp").join(&c.name));
                coord.release(&c.name);
            }
            Err(e) => c.error = Some(e.to_string()),
        }
    }
    for img in report
        .images
        .iter_mut()
        .filter(|i| i.status == GcImageStatus::WouldRemove)
    {
        // Held while the image goes: a checkout sharing the storage that
        // adopts or builds this digest waits, then finds it gone; one that
        // adopted it before names it in its cache by now.
        let lock = match &img.digest {
            Some(d) if coord.is_shared() => {
                match DigestLock::acquire(coord.lock_dir(), d, "gc", &mut |_| {}) {
                    Ok(lock) => Some(lock),
                    Err(e) => {
                        img.status = GcImageStatus::Failed;
                        img.reason = Some(e.to_string());
                        img.bytes = 0;
                        continue;
                    }
                }
            }
            _ => None,
        };
        if lock.is_some() && named_elsewhere(ctx, coord, &img.image_id) {
            img.status = GcImageStatus::Skipped;
            img.reason = Some("another checkout sharing the storage took it meanwhile".into());
            img.bytes = 0;
            continue;
        }
        let (status, reason) = match backend.remove_image(&img.image_name) {
            Ok(RmiOutcome::Removed) => (GcImageStatus::Removed, None),
            Ok(RmiOutcome::Untagged) => (GcImageStatus::Untagged, None),
            Ok(RmiOutcome::NotKnown) => (GcImageStatus::Absent, None),
            Ok(RmiOutcome::InUse) => (
                GcImageStatus::Skipped,
                Some("in use by a container".to_string()),
            ),
            Err(e) => (GcImageStatus::Failed, Some(e.to_string())),
        };
        img.status = status;
        if status != GcImageStatus::Removed {
            img.bytes = 0;
        }
        if reason.is_some() {
            img.reason = reason;
        }
    }
    for log in &mut report.logs {
        match std::fs::remove_file(&log.full) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => log.bytes = 0,
            Err(e) => {
                log.error = Some(e.to_string());
                log.bytes = 0;
            }
        }
    }
}

impl GcReport {
    /// Bytes of the images and logs removed (or that would be).
    fn reclaimed(&self) -> u64 {
        let images: u64 = self.removed_images().map(|i| i.bytes).sum();
        let logs: u64 = self.removed_logs().map(|l| l.bytes).sum();
        images + logs
    }

    /// The images removed (or that would be).
    fn removed_images(&self) -> impl Iterator<Item = &GcImage> {
        self.images.iter().filter(|i| {
            matches!(
                i.status,
                GcImageStatus::Removed | GcImageStatus::WouldRemove
            )
        })
    }

    /// The logs removed (or that would be).
    fn removed_logs(&self) -> impl Iterator<Item = &GcLog> {
        self.logs.iter().filter(|l| l.error.is_none())
    }
}

impl GcRow {
    fn of(r: &CachedLayer) -> GcRow {
        GcRow {
            label: r.label.clone(),
            system: r.system.clone(),
            digest: r.digest.clone(),
            built_at: r.built_at,
        }
    }
}

impl GcHistoryRow {
    fn of(b: &BuildRow) -> GcHistoryRow {
        GcHistoryRow {
            id: b.id,
            label: b.label.clone(),
            system: b.system.clone(),
            digest: b.digest.clone(),
            status: b.status.clone(),
        }
    }
}

/// The images to remove: those of removed rows, and this workspace's images
/// no row names (left by an interrupted gc), deepest layers first so a
/// parent goes after the images built on it. An image the cache of another
/// checkout sharing the storage names is kept (a removed row's is listed as
/// skipped), and so is one being built.
fn plan_images(
    ctx: &Context,
    rows: &[CachedLayer],
    kept: &HashSet<&Digest>,
    removed: &[&CachedLayer],
    current: &HashSet<Digest>,
    images: &[ImageInfo],
    shared: &Shared,
) -> Vec<GcImage> {
    let building = shared.building(&ctx.ws.name);
    let prefix = format!("localhost/layerbuild/{}/", ctx.ws.name);
    let by_id: HashMap<&str, &ImageInfo> = images.iter().map(|i| (i.id.as_str(), i)).collect();
    let kept_ids: HashSet<&str> = rows
        .iter()
        .filter(|r| kept.contains(&r.digest))
        .map(|r| r.image_id.as_str())
        .collect();
    // A single name: removing it removes the image.
    let whole = |i: &ImageInfo| if i.names.len() == 1 { i.size } else { 0 };
    let mut out = vec![];
    for r in removed {
        let info = by_id.get(r.image_id.as_str());
        let mut img = GcImage {
            label: Some(r.label.clone()),
            digest: Some(r.digest.clone()),
            image_name: r.image_name.clone(),
            image_id: r.image_id.clone(),
            bytes: 0,
            status: GcImageStatus::WouldRemove,
            reason: None,
        };
        if kept_ids.contains(r.image_id.as_str()) {
            img.status = GcImageStatus::Skipped;
            img.reason = Some("a kept cache row names the same image".into());
        } else if let Some(db) = shared.named.get(&r.image_id) {
            img.status = GcImageStatus::Skipped;
            img.reason = Some(format!(
                "the cache of another checkout sharing this storage names it ({})",
                db.display()
            ));
        } else if building.contains(r.digest.short()) {
            img.status = GcImageStatus::Skipped;
            img.reason = Some("a build of this digest is running".into());
        } else if !r.image_name.starts_with(&prefix) {
            img.status = GcImageStatus::Skipped;
            img.reason = Some(format!(
                "not named under {prefix} (pulled from a registry); remove it with buildah rmi"
            ));
        } else {
            match info {
                Some(i) if i.names.contains(&r.image_name) => img.bytes = whole(i),
                _ => img.status = GcImageStatus::Absent,
            }
        }
        out.push(img);
    }

    // An image being committed gets its row only afterwards: spare the
    // current digests' names.
    let named: HashSet<&str> = rows.iter().map(|r| r.image_id.as_str()).collect();
    let current_tags: HashSet<&str> = current.iter().map(Digest::short).collect();
    for i in images {
        if named.contains(i.id.as_str()) || shared.named.contains_key(&i.id) {
            continue;
        }
        for name in i.names.iter().filter(|n| n.starts_with(&prefix)) {
            let tag = name.rsplit_once(':').map_or("", |(_, t)| t);
            if current_tags.contains(tag) || building.contains(tag) {
                continue;
            }
            out.push(GcImage {
                label: None,
                digest: None,
                image_name: name.clone(),
                image_id: i.id.clone(),
                bytes: whole(i),
                status: GcImageStatus::WouldRemove,
                reason: None,
            });
        }
    }

    let depth: HashMap<String, usize> = ctx
        .graph
        .select(&[Pattern::All])
        .unwrap_or_default()
        .iter()
        .map(|l| (l.to_string(), ctx.graph.ancestors(l).len()))
        .collect();
    out.sort_by_key(|i| {
        std::cmp::Reverse(
            i.label
                .as_ref()
                .and_then(|l| depth.get(l).copied())
                .unwrap_or(0),
        )
    });
    out
}

/// Log files of the deleted history rows that no remaining row names, and
/// only inside this workspace's cache directory.
fn plan_logs(ctx: &Context, builds: &[BuildRow], deleted: &[&BuildRow]) -> Vec<GcLog> {
    let deleted_ids: HashSet<i64> = deleted.iter().map(|b| b.id).collect();
    let still_named: HashSet<&str> = builds
        .iter()
        .filter(|b| !deleted_ids.contains(&b.id))
        .filter_map(|b| b.log_path.as_deref())
        .collect();
    let Ok(cache_dir) = ctx.ws.cache_dir.canonicalize() else {
        return vec![];
    };
    let mut seen = HashSet::new();
    let mut out = vec![];
    for p in deleted.iter().filter_map(|b| b.log_path.as_deref()) {
        if still_named.contains(p) || !seen.insert(p) {
            continue;
        }
        let path = PathBuf::from(p);
        let Ok(full) = path.canonicalize() else {
            continue; // already gone
        };
        if !full.starts_with(&cache_dir) {
            continue;
        }
        let Ok(meta) = std::fs::metadata(&full) else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        out.push(GcLog {
            path: ctx.ws.display_path(&full),
            bytes: meta.len(),
            error: None,
            full,
        });
    }
    out
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

pub fn render(r: &GcReport) -> String {
    let verb = if r.dry_run { "would remove" } else { "removed" };
    let mut s: String = r
        .images
        .iter()
        .filter_map(|i| image_line(i, verb))
        .collect();
    for row in &r.cache_rows {
        let system = row
            .system
            .as_deref()
            .map(|x| format!(" ({x})"))
            .unwrap_or_default();
        s.push_str(&format!(
            "{verb} cache row {}{system} {} built {}\n",
            row.label,
            row.digest.short(),
            super::format_time(row.built_at)
        ));
    }
    for l in &r.logs {
        match &l.error {
            None => s.push_str(&format!("{verb} log {}\n", l.path)),
            Some(e) => s.push_str(&format!("could not remove log {}: {e}\n", l.path)),
        }
    }
    for c in &r.containers {
        match &c.error {
            None => s.push_str(&format!(
                "{verb} stale container {} ({})\n",
                c.name, c.reason
            )),
            Some(e) => s.push_str(&format!("could not remove container {}: {e}\n", c.name)),
        }
    }
    if !r.kept_failed_containers.is_empty() {
        s.push_str(&format!(
            "note: gc leaves {} of failed builds ({}) and their history; remove them with: layerbuild clean --failed\n",
            plural(
                r.kept_failed_containers.len(),
                "kept container",
                "kept containers"
            ),
            r.kept_failed_containers.join(", ")
        ));
    }
    s.push_str(&summary(r, verb));
    s
}

/// What became of one image, or `None` (an absent image: only its row
/// goes, listed with the rows).
fn image_line(i: &GcImage, verb: &str) -> Option<String> {
    let what = match (&i.label, &i.digest) {
        (Some(l), Some(d)) => format!("{l} {}", d.short()),
        _ => "named by no cache row".into(),
    };
    let reason = i.reason.as_deref().unwrap_or("");
    let name = &i.image_name;
    Some(match i.status {
        GcImageStatus::Removed | GcImageStatus::WouldRemove => {
            format!("{verb} image {name} ({what}, {})\n", human_bytes(i.bytes))
        }
        GcImageStatus::Untagged => {
            format!("untagged image {name} ({what}): images built on it still use it\n")
        }
        GcImageStatus::Skipped => format!("skipped image {name}: {reason}\n"),
        GcImageStatus::Failed => format!("could not remove image {name}: {reason}\n"),
        GcImageStatus::Absent => return None,
    })
}

/// The counts, or that there is nothing to remove.
fn summary(r: &GcReport, verb: &str) -> String {
    let images = r.removed_images().count();
    let logs = r.removed_logs().count();
    let containers = r.containers.iter().filter(|c| c.error.is_none()).count();
    if images + r.cache_rows.len() + r.history_rows.len() + logs + containers == 0 {
        return format!("nothing to remove (keeping {} per layer)\n", r.keep.max(1));
    }
    format!(
        "{verb} {}, {}, {}, {}, {}; {} {}\n",
        plural(images, "image", "images"),
        plural(r.cache_rows.len(), "cache row", "cache rows"),
        plural(r.history_rows.len(), "history row", "history rows"),
        plural(logs, "log", "logs"),
        plural(containers, "stale container", "stale containers"),
        if r.dry_run {
            "would reclaim"
        } else {
            "reclaimed"
        },
        human_bytes(r.reclaimed_bytes)
    )
}

/// `--keep` as the user gave it.
pub fn check_keep(keep: i64) -> Result<usize> {
    usize::try_from(keep).map_err(|_| {
        Error::input(format!("--keep {keep}: must be 0 or more"))
            .with_hint("--keep N keeps the current image and the newest N-1 others per layer")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(label: &str, digest: &str, built_at: i64) -> CachedLayer {
        CachedLayer {
            digest: digest.into(),
            image_id: format!("id-{digest}"),
            image_name: format!("img-{digest}"),
            label: label.into(),
            system: None,
            built_at,
            duration_ms: 0,
            arch: None,
        }
    }

    fn digests<'a>(v: &[&'a CachedLayer]) -> Vec<&'a str> {
        v.iter().map(|r| r.digest.as_str()).collect()
    }

    fn texts<'a>(kept: &HashSet<&'a Digest>) -> HashSet<&'a str> {
        kept.iter().map(|d| d.as_str()).collect()
    }

    #[test]
    fn keeps_the_current_digest_and_the_newest_others_up_to_n() {
        // Newest first, as Cache::all_layers returns them.
        let rows = vec![
            row("//a/a", "a5", 5),
            row("//a/a", "a4", 4),
            row("//a/a", "a3", 3),
            row("//a/a", "a2", 2),
            row("//a/a", "a1", 1),
        ];
        let current: HashSet<Digest> = ["a3".into()].into();
        let (kept, removed) = select_layers(&rows, &current, 2);
        assert_eq!(texts(&kept), ["a3", "a5"].into());
        assert_eq!(digests(&removed), ["a4", "a2", "a1"]);

        let (kept, removed) = select_layers(&rows, &current, 0);
        assert_eq!(texts(&kept), ["a3"].into());
        assert_eq!(removed.len(), 4);

        // Not built yet: the newest N others stay.
        let (kept, _) = select_layers(&rows, &HashSet::new(), 2);
        assert_eq!(texts(&kept), ["a5", "a4"].into());
    }

    #[test]
    fn counts_per_label_and_system() {
        let mut other = row("//a/a", "s1", 9);
        other.system = Some("prod".into());
        let rows = vec![
            row("//a/a", "a2", 2),
            row("//a/a", "a1", 1),
            other,
            row("//b/b", "b1", 1),
        ];
        let (kept, removed) = select_layers(&rows, &HashSet::new(), 1);
        assert_eq!(texts(&kept), ["a2", "s1", "b1"].into());
        assert_eq!(digests(&removed), ["a1"]);
    }

    fn build(id: i64, digest: &str, status: &str, container: Option<&str>) -> BuildRow {
        BuildRow {
            id,
            label: "//a/a".into(),
            system: None,
            digest: digest.into(),
            status: status.into(),
            started_at: 0,
            duration_ms: 0,
            image_id: None,
            container: container.map(str::to_string),
            log_path: None,
            error: None,
            manifest: String::new(),
            vars: None,
            container_removed: false,
            inventory: None,
        }
    }

    #[test]
    fn history_of_removed_digests_goes_unless_a_kept_container_exists() {
        let builds = vec![
            build(1, "old", "built", None),
            build(2, "old", "failed", Some("ctr-gone")),
            build(3, "old", "failed", Some("ctr-here")),
            build(4, "cur", "failed", Some("ctr-cur")),
            build(5, "cur", "built", None),
        ];
        let cur = Digest::from("cur");
        let kept: HashSet<&Digest> = [&cur].into();
        let present: HashSet<String> = ["ctr-here".to_string(), "ctr-cur".to_string()].into();
        let (delete, kept_failed) = select_history(&builds, &kept, &present);
        let ids: Vec<i64> = delete.iter().map(|b| b.id).collect();
        assert_eq!(ids, [1, 2]);
        assert_eq!(kept_failed, ["ctr-here".to_string()].into());
    }

    #[test]
    fn a_working_container_is_stale_only_when_its_owner_is_gone() {
        let slugs: HashSet<String> = ["uan-uan".to_string()].into();
        let p = "layerbuild-ws-";
        let name = "layerbuild-ws-uan-uan-0123456789ab";
        assert!(stale_container(name, p, &slugs, Owner::Dead(7)).is_some());
        assert!(stale_container(name, p, &slugs, Owner::Missing).is_some());
        assert_eq!(stale_container(name, p, &slugs, Owner::Alive(7)), None);
        assert_eq!(stale_container(name, p, &slugs, Owner::Elsewhere), None);
        // Unknown slug: only with a recorded, dead owner.
        let other = "layerbuild-ws-x-y-0123456789ab";
        assert!(stale_container(other, p, &slugs, Owner::Dead(7)).is_some());
        assert_eq!(stale_container(other, p, &slugs, Owner::Missing), None);
        // Not a working container of this workspace.
        for n in [
            "layerbuild-wsx-uan-uan-0123456789ab",
            "layerbuild-ws-uan-uan-1234",
            "layerbuild-debug-ws-uan-uan-4242",
            "busybox-working-container",
        ] {
            assert_eq!(stale_container(n, p, &slugs, Owner::Dead(7)), None, "{n}");
        }
    }
}

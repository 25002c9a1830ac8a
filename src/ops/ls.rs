//! `layerbuild ls`: every layer with its status against the cache.
//!
//! I/O: fingerprinting, the cache database (reads) and the backend's image
//! listing.

use std::collections::HashSet;

use serde::Serialize;

pub use crate::status::LayerState;

use super::Context;
use crate::cache::{Cache, CachedLayer};
use crate::digest::Digest;
use crate::error::Result;
use crate::executor::Backend;
use crate::label::Pattern;
use crate::status::RecordStatus;

#[derive(Debug, Serialize)]
pub struct LsEntry {
    pub label: String,
    /// The system it was fingerprinted for (`null`: the workspace declares none).
    pub system: Option<String>,
    pub digest: Digest,
    pub status: LayerState,
    pub image_name: Option<String>,
}

/// What a layer's status is read from: the cache database (when there is
/// one) and the image ids in storage (when they could be listed). `ls` and
/// `graph --status` both ask it, so they say the same thing.
pub struct Statuses {
    pub cache: Option<Cache>,
    images: Option<HashSet<String>>,
    /// Set when the images could not be listed.
    pub warning: Option<String>,
}

impl Statuses {
    /// Opens the cache (never creating it) and lists the images.
    pub fn open(ctx: &Context, backend: &dyn Backend) -> Result<Statuses> {
        let cache = Cache::open_existing(&ctx.ws.db_path())?;
        let mut warning = None;
        let images = match cache.as_ref().map(|_| backend.images()) {
            Some(Ok(i)) => Some(i),
            Some(Err(e)) => {
                warning = Some(format!(
                    "cannot list images ({e}); statuses trust the cache database alone"
                ));
                None
            }
            None => None,
        };
        Ok(Statuses {
            cache,
            images,
            warning,
        })
    }

    /// The state of `label` at `digest` for `system`, its cache row when it
    /// is up to date (the freshness test of [`crate::plan::fresh_row`]),
    /// and its newest recorded build. `failed`: not up to date, and that
    /// build, at this digest, failed.
    pub fn of(&self, label: &str, digest: &Digest, system: Option<&str>) -> Result<Status> {
        let Some(c) = &self.cache else {
            return Ok(Status {
                state: LayerState::NeverBuilt,
                row: None,
                last: None,
            });
        };
        let last = c
            .recent_builds(Some(&[label.to_string()]), system, 1)?
            .into_iter()
            .next()
            .map(crate::ops::history::entry);
        let failed_here = last
            .as_ref()
            .is_some_and(|l| l.outcome == RecordStatus::Failed && &l.digest == digest);
        let (state, row) = match crate::plan::fresh_row(c, self.images.as_ref(), digest)? {
            Some(row) => (LayerState::UpToDate, Some(row)),
            None if failed_here => (LayerState::Failed, None),
            None if c.lookup(digest)?.is_some() || c.ever_built(label, system)? => {
                (LayerState::NeedsBuild, None)
            }
            None => (LayerState::NeverBuilt, None),
        };
        Ok(Status { state, row, last })
    }
}

/// What [`Statuses::of`] says of one layer.
pub struct Status {
    pub state: LayerState,
    /// Its cache row, when it is up to date.
    pub row: Option<CachedLayer>,
    /// Its newest recorded build (for this system), failed ones included.
    pub last: Option<crate::ops::history::HistoryEntry>,
}

/// The layers `patterns` match (every layer when there are none), in
/// topological order, for each of `systems` in turn.
pub fn ls(
    ctx: &Context,
    patterns: &[Pattern],
    systems: &[Option<&crate::workspace::System>],
    backend: &dyn Backend,
) -> Result<(Vec<LsEntry>, Option<String>)> {
    let (labels, with_ancestors) = match patterns {
        [] => (ctx.graph.order().to_vec(), ctx.graph.order().to_vec()),
        p => (ctx.graph.matching(p)?, ctx.graph.select(p)?),
    };
    let statuses = Statuses::open(ctx, backend)?;
    let mut out = vec![];
    for system in systems {
        let prints = crate::ops::fingerprints(
            &ctx.ws,
            *system,
            &with_ancestors,
            crate::fingerprint::session::Want::DigestsOnly,
        )?
        .prints;
        let sys = system.map(|s| s.name.as_str());
        for label in &labels {
            let fp = &prints[label];
            let st = statuses.of(&label.to_string(), &fp.digest, sys)?;
            out.push(LsEntry {
                label: label.to_string(),
                system: sys.map(str::to_string),
                digest: fp.digest.clone(),
                status: st.state,
                image_name: st.row.map(|r| r.image_name),
            });
        }
    }
    Ok((out, statuses.warning))
}

/// A line per layer: label, (system, when there are several), status,
/// short digest; `verbose`: and the image name of a layer up to date.
pub fn render(entries: &[LsEntry], verbose: bool) -> String {
    let width = entries.iter().map(|e| e.label.len()).max().unwrap_or(0);
    let several = entries
        .iter()
        .any(|e| e.system != entries.first().and_then(|f| f.system.clone()));
    let sys_width = entries
        .iter()
        .map(|e| e.system.as_deref().unwrap_or("").len())
        .max()
        .unwrap_or(0);
    let mut s = String::new();
    for e in entries {
        let mut line = format!("{:width$}  ", e.label);
        if several {
            line.push_str(&format!(
                "{:sys_width$}  ",
                e.system.as_deref().unwrap_or("")
            ));
        }
        line.push_str(&format!("{:<11}  {}", e.status.words(), e.digest.short()));
        if verbose && let Some(name) = &e.image_name {
            line.push_str(&format!("  {name}"));
        }
        line.push('\n');
        s.push_str(&line);
    }
    s
}

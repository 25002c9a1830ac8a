//! `layerbuild ls`: every layer with its status against the cache.
//!
//! I/O: fingerprinting, the cache database (reads) and the backend's image
//! listing.

use std::collections::HashSet;

use serde::Serialize;

pub use crate::status::LsStatus;

use super::Context;
use crate::cache::{Cache, CachedLayer};
use crate::digest::Digest;
use crate::error::Result;
use crate::executor::Backend;
use crate::label::Pattern;

#[derive(Debug, Serialize)]
pub struct LsEntry {
    pub label: String,
    pub digest: Digest,
    pub status: LsStatus,
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

    /// The status of `label` at `digest` for `system`, and its cache row
    /// when it is cached (the freshness test of [`crate::plan::fresh_row`]).
    pub fn of(
        &self,
        label: &str,
        digest: &Digest,
        system: Option<&str>,
    ) -> Result<(LsStatus, Option<CachedLayer>)> {
        let Some(c) = &self.cache else {
            return Ok((LsStatus::NeverBuilt, None));
        };
        if let Some(row) = crate::plan::fresh_row(c, self.images.as_ref(), digest)? {
            return Ok((LsStatus::Cached, Some(row)));
        }
        if c.lookup(digest)?.is_some() || c.ever_built(label, system)? {
            Ok((LsStatus::NeedsBuild, None))
        } else {
            Ok((LsStatus::NeverBuilt, None))
        }
    }
}

pub fn ls(
    ctx: &Context,
    system: Option<&str>,
    backend: &dyn Backend,
) -> Result<(Vec<LsEntry>, Option<String>)> {
    let system = ctx.ws.system(system)?;
    let labels = ctx.graph.select(&[Pattern::All])?;
    let prints = crate::ops::fingerprints(
        &ctx.ws,
        system,
        &labels,
        crate::fingerprint::session::Want::DigestsOnly,
    )?
    .prints;
    let statuses = Statuses::open(ctx, backend)?;
    let sys = system.map(|s| s.name.as_str());
    let mut out = vec![];
    for label in &labels {
        let fp = &prints[label];
        let (status, row) = statuses.of(&label.to_string(), &fp.digest, sys)?;
        out.push(LsEntry {
            label: label.to_string(),
            digest: fp.digest.clone(),
            status,
            image_name: row.map(|r| r.image_name),
        });
    }
    Ok((out, statuses.warning))
}

pub fn render(entries: &[LsEntry]) -> String {
    let width = entries.iter().map(|e| e.label.len()).max().unwrap_or(0);
    let mut s = String::new();
    for e in entries {
        let status = e.status.as_str().replace('_', " ");
        s.push_str(&format!(
            "{:width$}  {:<11}  {}\n",
            e.label,
            status,
            e.digest.short()
        ));
    }
    s
}

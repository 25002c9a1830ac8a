//! `layerbuild ls`: every layer with its status against the cache.
//!
//! I/O: fingerprinting, the cache database (reads) and the backend's image
//! listing.

use serde::Serialize;

pub use crate::status::LsStatus;

use super::Context;
use crate::cache::Cache;
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
    let sys = system.map(|s| s.name.as_str());
    let mut out = vec![];
    for label in &labels {
        let fp = &prints[label];
        let (status, image_name) = match &cache {
            None => (LsStatus::NeverBuilt, None),
            Some(c) => match c.lookup(&fp.digest)? {
                Some(row) if crate::plan::in_storage(&row, images.as_ref()) => {
                    (LsStatus::Cached, Some(row.image_name))
                }
                Some(_) => (LsStatus::NeedsBuild, None),
                None if c.ever_built(&label.to_string(), sys)? => (LsStatus::NeedsBuild, None),
                None => (LsStatus::NeverBuilt, None),
            },
        };
        out.push(LsEntry {
            label: label.to_string(),
            digest: fp.digest.clone(),
            status,
            image_name,
        });
    }
    Ok((out, warning))
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

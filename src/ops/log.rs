//! `layerbuild log`: the full log of a layer's last (or a given) build.
//!
//! I/O: reads the cache database and the log file it names.

use super::Context;
use crate::cache::{BuildRow, Cache};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::label::Label;

pub fn find_build(
    ctx: &Context,
    label: &Label,
    system: Option<&str>,
    digest: Option<&str>,
) -> Result<BuildRow> {
    let sys = ctx.ws.system(system)?.map(|s| s.name.clone());
    ctx.graph
        .select(&[crate::label::Pattern::Exact(label.clone())])?;
    let no_builds = || {
        Error::input(format!("no build of {label} is recorded"))
            .with_hint(format!("build it first: layerbuild build {label}"))
    };
    let cache = Cache::open_existing(&ctx.ws.db_path())?.ok_or_else(no_builds)?;
    match digest {
        None => cache
            .last_build(&label.to_string(), sys.as_deref(), None)?
            .ok_or_else(no_builds),
        Some(d) => {
            let mut rows = cache.build_of_digest(&label.to_string(), &d.to_lowercase())?;
            let distinct: std::collections::BTreeSet<&Digest> =
                rows.iter().map(|r| &r.digest).collect();
            match distinct.len() {
                0 => Err(Error::input(format!(
                    "no build of {label} has a digest starting with {d}"
                ))
                .with_hint("`layerbuild why` and `ls` print digests")),
                1 => Ok(rows.remove(0)),
                _ => Err(Error::input(format!(
                    "digest prefix {d} matches several builds of {label}"
                ))
                .with_hint("give more digits")),
            }
        }
    }
}

pub fn log(
    ctx: &Context,
    label: &Label,
    system: Option<&str>,
    digest: Option<&str>,
) -> Result<(BuildRow, String)> {
    let row = find_build(ctx, label, system, digest)?;
    let Some(path) = &row.log_path else {
        return Err(Error::env(format!("the build of {label} recorded no log")));
    };
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::env(format!("cannot read the log {path}: {e}"))
            .with_hint("logs under the cache directory may have been pruned")
    })?;
    Ok((row, text))
}

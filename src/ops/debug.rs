//! `layerbuild debug`: a shell (or a command) in the kept working container
//! of a layer's last failed build, or with `--fresh` in a new container from
//! its built image. `ls --failed` and `clean --failed` manage kept containers.
//!
//! I/O: the cache database (reads; `clean` deletes history rows) and the
//! backend's containers, with the command attached to the terminal.

use std::io::IsTerminal;

use serde::Serialize;

use super::Context;
use crate::cache::Cache;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::executor::{AttachedRun, Backend};
use crate::label::{Label, Pattern};

pub struct DebugOptions {
    pub label: Label,
    pub system: Option<String>,
    pub fresh: bool,
    pub isolation: Option<String>,
    pub command: Vec<String>,
}

/// Runs the debug session; returns the command's exit code.
pub fn debug(ctx: &Context, opts: &DebugOptions, backend: &dyn Backend) -> Result<i32> {
    let ws = &ctx.ws;
    let system = ws.system(opts.system.as_deref())?;
    let labels = ctx.graph.select(&[Pattern::Exact(opts.label.clone())])?;
    let sys = system.map(|s| s.name.as_str());
    let isolation = opts
        .isolation
        .clone()
        .unwrap_or_else(|| ws.build.isolation.clone());
    let label = opts.label.to_string();
    let cache = Cache::open_existing(&ws.db_path())?;
    let tty = opts.command.is_empty() && std::io::stdin().is_terminal();

    if !opts.fresh {
        let containers = backend.containers()?;
        let kept = match &cache {
            Some(c) => c.kept_containers()?.into_iter().find(|r| {
                r.label == label
                    && r.system.as_deref() == sys
                    && r.container.as_ref().is_some_and(|n| containers.contains(n))
            }),
            None => None,
        };
        if kept.is_none()
            && let Some(c) = &cache
            && let Some(f) = failed_image(ws, c, &opts.label, sys, backend)?
        {
            // Its image tests failed: the image is kept, not a container.
            eprintln!(
                "note: {label}'s last build (digest {}) failed its image tests; a container from its kept image {}",
                f.digest.short(),
                f.image
            );
            return run_in_new_container(ws, opts, backend, &f.image, isolation, tty);
        }
        let Some(row) = kept else {
            return Err(
                Error::input(format!("{label} has no kept container of a failed build")).with_hint(
                    format!(
                        "open one from its built image instead: layerbuild debug --fresh {label}"
                    ),
                ),
            );
        };
        let run = AttachedRun {
            container: row.container.unwrap_or_default(),
            isolation,
            tty,
            argv: opts.command.clone(),
        };
        eprintln!("$ {}", backend.attached_command_line(&run));
        return Ok(backend.run_attached(&run)?);
    }

    // --fresh: the image the current inputs would reuse, else the last built one.
    let prints = crate::ops::manifests(ws, system, &labels)?;
    let fp = &prints[&opts.label];
    let no_image = || {
        Error::input(format!("{label} has no built image to start from"))
            .with_hint(format!("build it first: layerbuild build {label}"))
    };
    let cache = cache.ok_or_else(no_image)?;
    let images = backend.images()?;
    let image = match cache.lookup(&fp.digest)? {
        Some(row) if images.contains(&row.image_id) => row.image_id,
        _ => {
            let row = cache
                .last_build(&label, sys, Some(crate::status::RecordStatus::Built))?
                .ok_or_else(no_image)?;
            let id = row
                .image_id
                .filter(|i| images.contains(i))
                .ok_or_else(no_image)?;
            eprintln!(
                "note: {label}'s current inputs are not built; using its last built image (digest {})",
                row.digest.short()
            );
            id
        }
    };
    run_in_new_container(ws, opts, backend, &image, isolation, tty)
}

/// The command (or a shell) in a new container from `image`, removed after.
fn run_in_new_container(
    ws: &crate::workspace::Workspace,
    opts: &DebugOptions,
    backend: &dyn Backend,
    image: &str,
    isolation: String,
    tty: bool,
) -> Result<i32> {
    let name = format!(
        "layerbuild-debug-{}-{}-{}",
        ws.name,
        opts.label.slug(),
        std::process::id()
    );
    backend.create_container(&name, image)?;
    let run = AttachedRun {
        container: name,
        isolation,
        tty,
        argv: opts.command.clone(),
    };
    eprintln!("$ {}", backend.attached_command_line(&run));
    let code = backend.run_attached(&run);
    let removed = backend.remove_container(&run.container);
    let code = code?;
    removed?;
    Ok(code)
}

/// What a failed build left to inspect: its working container (a failed
/// step), or its committed image (failed image tests).
#[derive(Debug, Serialize)]
pub struct KeptContainer {
    pub label: String,
    pub system: Option<String>,
    /// The kept working container (a step failed).
    pub container: Option<String>,
    /// The kept image, `NAME:DIGEST12-failed` (its image tests failed).
    pub image: Option<String>,
    pub digest: Digest,
    pub failed_at: i64,
    pub error: Option<String>,
    pub log: Option<String>,
}

/// The image kept by `label`'s last build if it failed its image tests and
/// the image is still in storage.
struct FailedImage {
    digest: Digest,
    image: String,
    row: crate::cache::BuildRow,
}

fn failed_image(
    ws: &crate::workspace::Workspace,
    cache: &Cache,
    label: &Label,
    system: Option<&str>,
    backend: &dyn Backend,
) -> Result<Option<FailedImage>> {
    let Some(last) = cache.last_build(&label.to_string(), system, None)? else {
        return Ok(None);
    };
    if last.status != crate::status::RecordStatus::Failed.as_str() || last.container.is_some() {
        return Ok(None);
    }
    let image = format!("{}-failed", super::image_name(ws, label, &last.digest));
    Ok(backend.committed_image(&image)?.map(|_| FailedImage {
        digest: last.digest.clone(),
        image,
        row: last,
    }))
}

/// Kept containers of failed builds that still exist, then the images kept
/// by builds whose image tests failed.
pub fn kept(ctx: &Context, backend: &dyn Backend) -> Result<Vec<KeptContainer>> {
    let Some(cache) = Cache::open_existing(&ctx.ws.db_path())? else {
        return Ok(vec![]);
    };
    let present = backend.containers()?;
    let mut out: Vec<KeptContainer> = cache
        .kept_containers()?
        .into_iter()
        .filter_map(|r| {
            let c = r.container.clone()?;
            if !present.contains(&c) {
                return None;
            }
            Some(KeptContainer {
                label: r.label,
                system: r.system,
                container: Some(c),
                image: None,
                digest: r.digest,
                failed_at: r.started_at,
                error: r.error,
                log: r.log_path,
            })
        })
        .collect();
    for f in failed_images(ctx, &cache, backend)? {
        out.push(KeptContainer {
            label: f.row.label,
            system: f.row.system,
            container: None,
            image: Some(f.image),
            digest: f.digest,
            failed_at: f.row.started_at,
            error: f.row.error,
            log: f.row.log_path,
        });
    }
    Ok(out)
}

/// The images kept by each layer's (and system's) last build, where it
/// failed its image tests.
fn failed_images(ctx: &Context, cache: &Cache, backend: &dyn Backend) -> Result<Vec<FailedImage>> {
    let ws = &ctx.ws;
    let systems: Vec<Option<&str>> = match ws.systems.is_empty() {
        true => vec![None],
        false => ws.systems.keys().map(|s| Some(s.as_str())).collect(),
    };
    let mut out = vec![];
    for label in ws.layers.keys() {
        for sys in &systems {
            if let Some(f) = failed_image(ws, cache, label, *sys, backend)? {
                out.push(f);
            }
        }
    }
    Ok(out)
}

pub fn render_kept(list: &[KeptContainer]) -> String {
    if list.is_empty() {
        return "no kept containers of failed builds\n".into();
    }
    let mut s = String::new();
    for k in list {
        let what = match (&k.container, &k.image) {
            (Some(c), _) => c.clone(),
            (None, Some(i)) => format!("image {i}"),
            (None, None) => String::new(),
        };
        s.push_str(&format!(
            "{}  {what}  failed {}: {}\n",
            k.label,
            super::format_time(k.failed_at),
            k.error.as_deref().unwrap_or("")
        ));
    }
    s
}

/// Removes every kept container of a failed build; returns their names.
pub fn clean_failed(ctx: &Context, backend: &dyn Backend) -> Result<Vec<String>> {
    let Some(mut cache) = Cache::open_existing(&ctx.ws.db_path())? else {
        return Ok(vec![]);
    };
    let present = backend.containers()?;
    let mut removed = vec![];
    for row in cache.kept_containers()? {
        let Some(c) = row.container else { continue };
        if present.contains(&c) {
            backend.remove_container(&c)?;
            removed.push(c.clone());
        }
        cache.container_removed(&c)?;
    }
    for f in failed_images(ctx, &cache, backend)? {
        backend.remove_image(&f.image)?;
        removed.push(f.image);
    }
    Ok(removed)
}

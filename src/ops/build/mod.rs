//! `layerbuild build`: fingerprint the selected layers, then build what the
//! cache does not hold, independent branches in parallel.
//!
//! - [`attempt`]: one layer's chain of steps (recheck, lock, adopt, pull,
//!   build, record, push);
//! - [`registry`]: how the shared registry cache is used;
//! - [`outputs`]: the layers' declared exports and pushes after the build;
//! - [`report`]: the statuses and the summary;
//! - [`request`]: the plain-data request an executor builds from;
//! - [`dry_run`] (`--dry-run`) and [`from_failed`] (`--from-failed`).
//!
//! This file composes them: I/O through the backend traits, the cache and
//! the fingerprint session.

mod attempt;
pub mod dry_run;
pub mod from_failed;
mod outputs;
pub mod registry;
pub mod report;
mod request;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use super::Context;
use crate::cache::Cache;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::executor::{Backend, Exporter, ImageNames, Registry};
use crate::fingerprint::Fingerprint;
use crate::fingerprint::session::{Prints, Source, Want};
use crate::label::{Label, Pattern};
use crate::progress::Reporter;
use crate::workspace::{CacheMode, Parent, System, Workspace};

pub use attempt::OWNER_PID_FILE;
pub use dry_run::{PLAN_VERSION, PlanReport, PlannedLayer, plan, render_plan};
pub use from_failed::{FromFailedReport, from_failed};
pub use registry::RegistryUse;
pub use report::{BuildReport, LayerResult, LayerStatus, REPORT_VERSION, render_summary};
pub(crate) use request::{new_log_path, play_request};

#[derive(Clone)]
pub struct BuildOptions {
    pub patterns: Vec<Pattern>,
    pub system: Option<String>,
    pub jobs: Option<usize>,
    pub keep_going: bool,
    pub isolation: Option<String>,
    /// Overrides `[cache] registry`.
    pub registry: Option<String>,
    /// Overrides `[cache] mode`.
    pub cache_mode: Option<CacheMode>,
    /// Skip the layers' declared outputs.
    pub no_outputs: bool,
}

/// Builds the layers `opts` selects and their parents; see the module doc.
pub fn build(
    ctx: &Context,
    opts: &BuildOptions,
    executor: &dyn Backend,
    registry: Option<&dyn Registry>,
    exporter: Option<&dyn Exporter>,
    reporter_for: &dyn Fn(usize) -> Box<dyn Reporter>,
) -> Result<BuildReport> {
    let ws = &ctx.ws;
    let started = Instant::now();
    let system = ws.system(opts.system.as_deref())?;
    let labels = ctx.graph.select(&opts.patterns)?;
    if opts.jobs == Some(0) {
        return Err(Error::input("-j/--jobs must be at least 1")
            .with_hint("omit -j to use [build] jobs or one job per core"));
    }
    let (fp, listing) = fingerprint_and_list(ws, system, &labels, executor);
    let fp = fp?;

    // Only now touch the environment: bad input above never reaches it.
    let t = Instant::now();
    let (images, names) = listing?;
    let cache = Cache::open(&ws.db_path())?;
    let (prints, local_misses) = settle(ws, system, &labels, fp, &cache, &images)?;
    let t = crate::timings::phase("look the digests up", t);
    let registry = registry_use(ws, opts, registry)?;
    if let Some(r) = &registry {
        r.prefetch(&local_misses);
    }
    // Start ansible-playbook (a second of Python) only if a layer that runs
    // a play will be built here.
    let needs_play = local_misses.iter().any(|(l, d)| {
        ws.layers[l].playbook.is_some() && !registry.as_ref().is_some_and(|r| r.holds(d))
    });
    executor.preflight(needs_play)?;
    if ws.arch.is_foreign() && !local_misses.is_empty() {
        executor.emulation(ws.arch)?;
    }

    let reporter = reporter_for(labels.len());
    let run = attempt::RunCtx {
        ws,
        system,
        labels: &labels,
        full: OnceLock::new(),
        isolation: opts.isolation.as_deref().unwrap_or(&ws.build.isolation),
        executor,
        reporter: reporter.as_ref(),
        cache: Mutex::new(cache),
        shared: Mutex::new(attempt::Shared {
            names,
            images,
            image_of: BTreeMap::new(),
        }),
        registry: registry.as_ref(),
        coord: OnceLock::new(),
    };
    let jobs = opts.jobs.unwrap_or(ws.build.jobs);
    let results = crate::scheduler::run(&parents(ws, &labels), jobs, opts.keep_going, |i| {
        let r = attempt::attempt(&run, &prints[&labels[i]]);
        if let Ok(done) = &r {
            run.shared()
                .image_of
                .insert(labels[i].clone(), done.image_id().to_string());
        }
        r
    });

    let mut report = report::BuildReport::new(
        system.map(|s| s.name.clone()),
        ws.arch,
        registry.as_ref().map(|r| r.url.clone()),
        warnings(registry.as_ref(), needs_play),
    );
    if let Some(r) = &registry {
        (report.pushed, report.not_pushed) = r.pushes();
    }
    for (i, node) in results.into_iter().enumerate() {
        let digest = prints[&labels[i]].digest.clone();
        report.push(report::LayerResult::from_node(
            ws,
            &labels,
            i,
            digest,
            node,
            reporter.as_ref(),
        ));
    }
    if let Some(exporter) = exporter.filter(|_| !opts.no_outputs) {
        outputs::run(
            ws,
            &run.cache,
            exporter,
            &labels,
            &mut report,
            reporter.as_ref(),
        );
    }
    reporter.finish();
    crate::timings::phase("run", t);
    report.duration_ms = started.elapsed().as_millis();
    Ok(report)
}

/// What did not fail the build but should be said: registry trouble, and
/// the `ANSIBLE_*` variables plays ran without.
fn warnings(registry: Option<&RegistryUse>, needs_play: bool) -> Vec<String> {
    let mut w = registry.map(|r| r.warnings()).unwrap_or_default();
    if needs_play {
        let left_out = crate::executor::ansible::left_out_of_env();
        w.extend(crate::executor::ansible::left_out_warning(&left_out));
    }
    w
}

/// The digests (from the memo when nothing changed since the last
/// fingerprint; in full otherwise) and, meanwhile, the image store's
/// listing (read-only; its answer is used only once the fingerprint
/// succeeded).
#[allow(clippy::type_complexity)]
fn fingerprint_and_list(
    ws: &Workspace,
    system: Option<&System>,
    labels: &[Label],
    executor: &dyn Backend,
) -> (
    Result<Prints>,
    Result<(HashSet<String>, Option<ImageNames>)>,
) {
    std::thread::scope(|s| {
        let listing = s.spawn(|| executor.images_named().map_err(Error::from));
        let fp = crate::ops::fingerprints(ws, system, labels, Want::Digests);
        let images = listing
            .join()
            .unwrap_or_else(|_| Err(Error::env("listing the images failed")));
        (fp, images)
    })
}

/// The run's fingerprints and the layers the local cache misses. Digests
/// from the memo serve when every layer hits; something to build or pull
/// needs its full manifest and variables for the record.
#[allow(clippy::type_complexity)]
fn settle(
    ws: &Workspace,
    system: Option<&System>,
    labels: &[Label],
    mut fp: Prints,
    cache: &Cache,
    images: &HashSet<String>,
) -> Result<(BTreeMap<Label, Fingerprint>, Vec<(Label, Digest)>)> {
    let mut local_misses = misses(cache, images, labels, &fp.prints)?;
    if fp.source == Source::Memo && !local_misses.is_empty() {
        fp = crate::ops::fingerprints(ws, system, labels, Want::Manifests)?;
        local_misses = misses(cache, images, labels, &fp.prints)?;
    }
    Ok((fp.prints, local_misses))
}

/// The shared registry of this run: `--registry` or `[cache] registry`.
fn registry_use<'a>(
    ws: &Workspace,
    opts: &BuildOptions,
    client: Option<&'a dyn Registry>,
) -> Result<Option<RegistryUse<'a>>> {
    let (Some(client), Some(url)) = (
        client,
        crate::ops::ci::registry_url(opts.registry.as_deref(), ws)?,
    ) else {
        return Ok(None);
    };
    Ok(Some(RegistryUse::new(
        client,
        url,
        ws.cache.tls_verify,
        opts.cache_mode.unwrap_or(ws.cache.mode),
    )))
}

/// Each layer's parent among `labels`, by index (the scheduler's edges).
fn parents(ws: &Workspace, labels: &[Label]) -> Vec<Vec<usize>> {
    let index: HashMap<&Label, usize> = labels.iter().enumerate().map(|(i, l)| (l, i)).collect();
    labels
        .iter()
        .map(|l| match &ws.layers[l].parent {
            Parent::Layer(p) => vec![index[p]],
            _ => vec![],
        })
        .collect()
}

/// Layers whose digest has no fresh cached image here.
fn misses(
    cache: &Cache,
    images: &HashSet<String>,
    labels: &[Label],
    prints: &BTreeMap<Label, Fingerprint>,
) -> Result<Vec<(Label, Digest)>> {
    let mut out = vec![];
    for l in labels {
        let digest = &prints[l].digest;
        if crate::plan::fresh_row(cache, Some(images), digest)?.is_none() {
            out.push((l.clone(), digest.clone()));
        }
    }
    Ok(out)
}

//! `build LABEL --from-failed`: re-runs a layer's steps in the container
//! kept from its last failed build. Never cached; a failure is recorded.
//!
//! I/O: fingerprinting, the build cache, the layer's log; processes only
//! through the backend.

use std::time::Instant;

use serde::Serialize;

use super::BuildOptions;
use super::attempt::log_tail;
use super::report::REPORT_VERSION;
use super::request::{new_log_path, play_request, record, request, with_vault_files};
use crate::cache::Cache;
use crate::error::{Error, Result};
use crate::executor::{Backend, BuildRequest};
use crate::label::{Label, Pattern};
use crate::ops::{Context, now_secs};
use crate::progress::Reporter;
pub use crate::status::RunStatus;

#[derive(Debug, Serialize)]
pub struct FromFailedReport {
    pub version: u32,
    pub label: String,
    pub container: String,
    pub status: RunStatus,
    /// Always false: only builds from a clean container are cached.
    pub cached: bool,
    pub error: Option<String>,
    pub log: String,
}

/// `build LABEL --from-failed`: re-runs the layer's steps in the container
/// kept from its last failed build. Never cached.
pub fn from_failed(
    ctx: &Context,
    label: &Label,
    opts: &BuildOptions,
    buildah: &dyn Backend,
    reporter: &dyn Reporter,
) -> Result<FromFailedReport> {
    let ws = &ctx.ws;
    let system = ws.system(opts.system.as_deref())?;
    let labels = ctx.graph.select(&[Pattern::Exact(label.clone())])?;
    let prints = crate::ops::manifests(ws, system, &labels)?;
    let fp = &prints[label];
    let sys = system.map(|s| s.name.as_str());
    let label_s = label.to_string();
    let present = buildah.containers()?;
    let mut cache = Cache::open_existing(&ws.db_path())?.ok_or_else(|| no_kept(&label_s))?;
    let row = cache
        .kept_containers()?
        .into_iter()
        .find(|r| {
            r.label == label_s
                && r.system.as_deref() == sys
                && r.container.as_ref().is_some_and(|c| present.contains(c))
        })
        .ok_or_else(|| no_kept(&label_s))?;
    let container = row.container.clone().unwrap_or_default();
    let isolation = opts
        .isolation
        .clone()
        .unwrap_or_else(|| ws.build.isolation.clone());
    let started_at = now_secs();
    let log_path = new_log_path(ws, label, started_at, &fp.digest, "-from-failed");
    let req = BuildRequest {
        container_name: container.clone(),
        log_path: log_path.clone(),
        work_dir: ws.cache_dir.join("tmp").join(&container),
        reuse_container: true,
        tests: vec![],
        secrets: fp.secrets.clone(),
        play: with_vault_files(ws, play_request(ws, system, label), fp),
        ..request(ws, system, label, &fp.digest, &isolation)
    };
    reporter.started(&label_s, &fp.digest);
    let t0 = Instant::now();
    let outcome = buildah.build(&req, reporter);
    let elapsed = t0.elapsed();
    let log = ws.display_path(&log_path);
    let mut report = FromFailedReport {
        version: REPORT_VERSION,
        label: label_s.clone(),
        container: container.clone(),
        status: RunStatus::Succeeded,
        cached: false,
        error: None,
        log: log.clone(),
    };
    match outcome {
        Ok(_) => reporter.built(&label_s, elapsed),
        Err(f) => {
            let rec = record(
                &label_s,
                system,
                fp,
                started_at,
                elapsed,
                Some(&log_path),
                crate::status::RecordSource::Built,
            );
            let _ = cache.record_failed(&rec, Some(&container), &f.message);
            reporter.failed(&label_s, &f.message);
            let tail = log_tail(&log_path, 15);
            if !tail.is_empty() {
                reporter.println(&format!("---- last lines of {log} ----\n{tail}\n----"));
            }
            report.status = RunStatus::Failed;
            report.error = Some(f.message);
        }
    }
    reporter.finish();
    Ok(report)
}

fn no_kept(label: &str) -> Error {
    Error::input(format!(
        "{label} has no kept container of a failed build to re-run in"
    ))
    .with_hint(format!("build it normally: layerbuild build {label}"))
}

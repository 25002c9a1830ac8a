//! `layerbuild test LABEL... [--all] [--boot]`: re-runs built layers'
//! image tests (and, with `--all`, their ancestors'), each layer in a
//! fresh container from its cached image, in topological order; with
//! `--boot`, then boots each layer that has boot tests and runs them.
//! Nothing is cached or changed; each run has its own log.

use serde::Serialize;

use super::build::new_log_path;
use super::{Context, container_name, now_secs};
use crate::digest::Digest;
use crate::error::Result;
use crate::executor::{Backend, TestOutcome, TestRequest};
use crate::label::Pattern;

/// Schema version of `test --json`.
pub const TEST_VERSION: u32 = 1;

#[derive(Debug, Serialize)]
pub struct TestReport {
    pub version: u32,
    pub layers: Vec<LayerTests>,
    pub passed: usize,
    pub failed: usize,
    /// How the boots ran (TCG, and why), for the person reading.
    #[serde(skip)]
    pub notes: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct LayerTests {
    pub label: String,
    pub digest: Digest,
    pub tests: Vec<TestOutcome>,
    pub log: Option<String>,
}

pub struct TestOptions {
    pub patterns: Vec<Pattern>,
    pub system: Option<String>,
    pub all: bool,
    pub isolation: Option<String>,
    /// Also run the boot tests, each layer booted in a virtual machine.
    pub boot: bool,
}

pub fn test(ctx: &Context, opts: &TestOptions, backend: &dyn Backend) -> Result<TestReport> {
    let ws = &ctx.ws;
    // The layers named, with --all their ancestors too; oldest first.
    let chain = match opts.all {
        true => ctx.graph.select(&opts.patterns)?,
        false => ctx.graph.matching(&opts.patterns)?,
    };
    let isolation = opts
        .isolation
        .clone()
        .unwrap_or_else(|| ws.build.isolation.clone());
    let mut report = TestReport {
        version: TEST_VERSION,
        layers: vec![],
        passed: 0,
        failed: 0,
        notes: vec![],
    };
    let cache = match opts.boot {
        true => Some(std::sync::Mutex::new(crate::cache::Cache::open(
            &ws.db_path(),
        )?)),
        false => None,
    };
    for label in &chain {
        let (digest, image_id) =
            super::export::built_image(ctx, label, opts.system.as_deref(), backend)?;
        let tests = &ws.layers[label].tests;
        let mut lt = LayerTests {
            label: label.to_string(),
            digest: digest.clone(),
            tests: vec![],
            log: None,
        };
        let log = new_log_path(ws, label, now_secs(), &digest, "-test");
        if !tests.is_empty() {
            lt.tests = backend.run_tests(&TestRequest {
                label: label.to_string(),
                isolation: isolation.clone(),
                image: image_id.clone(),
                container: format!("{}-test", container_name(ws, label, &digest)),
                tests: tests.clone(),
                log_path: log.clone(),
            })?;
            lt.log = Some(ws.display_path(&log));
        }
        let boot_tests = &ws.layers[label].boot_tests;
        if let Some(cache) = cache.as_ref().filter(|_| !boot_tests.is_empty()) {
            let image = super::boot::BootImage {
                label,
                digest: &digest,
                image_id: &image_id,
            };
            let run = super::boot::boot_image(
                ws,
                cache,
                &image,
                super::boot::BootPlan {
                    tests: boot_tests.clone(),
                    interactive: false,
                    log: Some(log.clone()),
                },
                backend,
                &mut |h| eprintln!("{}", super::boot::waiting_line(label, h)),
            )?;
            report
                .notes
                .extend(run.note.filter(|n| !report.notes.contains(n)));
            lt.tests.extend(run.outcomes);
            lt.log = Some(ws.display_path(&log));
        }
        report.passed += lt.tests.iter().filter(|t| t.passed).count();
        report.failed += lt.tests.iter().filter(|t| !t.passed).count();
        report.layers.push(lt);
    }
    Ok(report)
}

pub fn render(r: &TestReport) -> String {
    let mut s = String::new();
    for l in &r.layers {
        if l.tests.is_empty() {
            s.push_str(&format!("{}  no tests declared\n", l.label));
            continue;
        }
        let n = l.tests.len();
        s.push_str(&format!(
            "{}  ({}, {n} test{})\n",
            l.label,
            l.digest.short(),
            if n == 1 { "" } else { "s" }
        ));
        for t in &l.tests {
            if t.passed {
                s.push_str(&format!("  ok    {}\n", t.command));
            } else {
                s.push_str(&format!(
                    "  FAIL  {} ({})\n",
                    t.command,
                    t.error.as_deref().unwrap_or("failed")
                ));
                for line in t.output.lines() {
                    s.push_str(&format!("        | {line}\n"));
                }
            }
        }
        if let Some(log) = &l.log {
            s.push_str(&format!("  log: {log}\n"));
        }
    }
    s.push_str(&format!("{} passed, {} failed\n", r.passed, r.failed));
    s
}

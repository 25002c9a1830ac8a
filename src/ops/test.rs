//! `layerbuild test LABEL... [--all]`: re-runs built layers' image tests
//! (and, with `--all`, their ancestors'), each layer in a fresh container
//! from its cached image, in topological order. Nothing is cached or
//! changed; each run has its own log.

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
        if !tests.is_empty() {
            let log = new_log_path(ws, label, now_secs(), &digest, "-test");
            lt.tests = backend.run_tests(&TestRequest {
                label: label.to_string(),
                isolation: isolation.clone(),
                image: image_id,
                container: format!("{}-test", container_name(ws, label, &digest)),
                tests: tests.clone(),
                log_path: log.clone(),
            })?;
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

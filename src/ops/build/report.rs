//! What a build reports: a [`LayerStatus`] per layer, the counts, the
//! outputs, and the summary text. Pure data and rendering; no I/O.

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::digest::Digest;
use crate::executor::TestOutcome;
use crate::label::Label;
use crate::progress::{Reporter, format_duration};
use crate::scheduler::NodeStatus;
pub use crate::status::LayerStatus;
use crate::workspace::Workspace;

/// Schema version of `build --json`.
pub const REPORT_VERSION: u32 = 1;

#[derive(Debug, Serialize)]
pub struct BuildReport {
    pub version: u32,
    pub system: Option<String>,
    /// The architecture built for.
    pub arch: crate::arch::Arch,
    pub layers: Vec<LayerResult>,
    pub built: usize,
    /// Pulled from the shared registry instead of built.
    pub pulled: usize,
    pub cached: usize,
    pub failed: usize,
    pub skipped: usize,
    pub duration_ms: u128,
    /// The registry used, if any.
    pub registry: Option<String>,
    /// Layers pushed to it.
    pub pushed: usize,
    /// Layers built in read-write mode that did not reach it (refused,
    /// unreachable): the build fails, since the next machine will not
    /// find them.
    pub not_pushed: Vec<super::registry::NotPushed>,
    /// Registry trouble that did not fail the build (unreachable, push failed,
    /// an entry rejected).
    pub warnings: Vec<String>,
    /// The declared outputs of the layers that are built (or up to date).
    pub outputs: Vec<crate::ops::export::OutputResult>,
    pub outputs_failed: usize,
}

#[derive(Debug, Serialize)]
pub struct LayerResult {
    pub label: String,
    pub digest: Digest,
    pub status: LayerStatus,
    pub image_id: Option<String>,
    pub image_name: Option<String>,
    pub duration_ms: Option<u128>,
    pub error: Option<String>,
    /// The kept working container of a failed layer.
    pub container: Option<String>,
    pub log: Option<String>,
    /// A failure of the machine, not of the layer (`error` says which).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub environment: bool,
    /// What to do about `error`, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// The image tests this run ran on the layer (a layer built here).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tests: Vec<TestOutcome>,
}

/// How a layer of the run ended well.
pub(super) enum Done {
    Cached {
        image_id: String,
        image_name: String,
    },
    Pulled {
        image_id: String,
        reference: String,
    },
    Built {
        image_id: String,
        image_name: String,
        elapsed: Duration,
        log: PathBuf,
        tests: Vec<TestOutcome>,
    },
}

/// How a layer of the run failed.
pub(super) struct Failed {
    pub(super) message: String,
    pub(super) container: Option<String>,
    pub(super) log: Option<PathBuf>,
    /// The machine failed (cache directory, locks, storage bookkeeping)
    /// before or after the layer's own steps, not the layer.
    pub(super) environment: bool,
    pub(super) hint: Option<String>,
    /// The image tests that ran before it failed (boxed: a failure stays
    /// small in every `Result`).
    pub(super) tests: Box<[TestOutcome]>,
}

impl Failed {
    /// The layer itself failed (its inputs, its steps).
    pub(super) fn layer(message: String) -> Failed {
        Failed {
            message,
            container: None,
            log: None,
            environment: false,
            hint: None,
            tests: Box::default(),
        }
    }

    /// The machine failed around the layer's steps.
    pub(super) fn environment(message: String, hint: Option<String>) -> Failed {
        Failed {
            environment: true,
            hint,
            ..Failed::layer(message)
        }
    }
}

impl Done {
    pub(super) fn image_id(&self) -> &str {
        match self {
            Done::Cached { image_id, .. }
            | Done::Built { image_id, .. }
            | Done::Pulled { image_id, .. } => image_id,
        }
    }
}

impl LayerResult {
    fn new(label: &Label, digest: Digest, status: LayerStatus) -> LayerResult {
        LayerResult {
            label: label.to_string(),
            digest,
            status,
            image_id: None,
            image_name: None,
            duration_ms: None,
            error: None,
            container: None,
            log: None,
            environment: false,
            hint: None,
            tests: vec![],
        }
    }

    /// A layer's result from how its node of the run ended.
    pub(super) fn from_node(
        ws: &Workspace,
        labels: &[Label],
        i: usize,
        digest: Digest,
        node: NodeStatus<Done, Failed>,
        reporter: &dyn Reporter,
    ) -> LayerResult {
        let label = &labels[i];
        match node {
            NodeStatus::Done(Done::Pulled {
                image_id,
                reference,
            }) => LayerResult {
                image_id: Some(image_id),
                image_name: Some(reference),
                ..LayerResult::new(label, digest, LayerStatus::Pulled)
            },
            NodeStatus::Done(Done::Cached {
                image_id,
                image_name,
            }) => LayerResult {
                image_id: Some(image_id),
                image_name: Some(image_name),
                ..LayerResult::new(label, digest, LayerStatus::UpToDate)
            },
            NodeStatus::Done(Done::Built {
                image_id,
                image_name,
                elapsed,
                log,
                tests,
            }) => LayerResult {
                image_id: Some(image_id),
                image_name: Some(image_name),
                duration_ms: Some(elapsed.as_millis()),
                log: Some(ws.display_path(&log)),
                tests,
                ..LayerResult::new(label, digest, LayerStatus::Built)
            },
            NodeStatus::Failed(f) => LayerResult {
                error: Some(f.message),
                container: f.container,
                log: f.log.map(|l| ws.display_path(&l)),
                environment: f.environment,
                hint: f.hint,
                tests: f.tests.into_vec(),
                ..LayerResult::new(label, digest, LayerStatus::Failed)
            },
            NodeStatus::SkippedDependency(d) => {
                let why = format!("{} did not build", labels[d]);
                reporter.skipped(&label.to_string(), &why);
                LayerResult {
                    error: Some(why),
                    ..LayerResult::new(label, digest, LayerStatus::Skipped)
                }
            }
            NodeStatus::NotStarted => {
                reporter.skipped(
                    &label.to_string(),
                    "not started after an earlier failure (--keep-going builds independent branches)",
                );
                LayerResult {
                    error: Some("not started: an earlier layer failed (use --keep-going to build independent branches)".into()),
                    ..LayerResult::new(label, digest, LayerStatus::NotStarted)
                }
            }
        }
    }
}

impl BuildReport {
    pub(super) fn new(
        system: Option<String>,
        arch: crate::arch::Arch,
        registry: Option<String>,
        warnings: Vec<String>,
    ) -> Self {
        BuildReport {
            version: REPORT_VERSION,
            system,
            arch,
            layers: vec![],
            built: 0,
            pulled: 0,
            cached: 0,
            failed: 0,
            skipped: 0,
            duration_ms: 0,
            registry,
            pushed: 0,
            not_pushed: vec![],
            warnings,
            outputs: vec![],
            outputs_failed: 0,
        }
    }

    /// Adds a layer's result to the list and the counts.
    pub(super) fn push(&mut self, r: LayerResult) {
        *match r.status {
            LayerStatus::Built => &mut self.built,
            LayerStatus::Pulled => &mut self.pulled,
            LayerStatus::UpToDate => &mut self.cached,
            LayerStatus::Failed => &mut self.failed,
            LayerStatus::Skipped | LayerStatus::NotStarted => &mut self.skipped,
        } += 1;
        self.layers.push(r);
    }

    /// The layers that failed.
    pub fn failed_layers(&self) -> impl Iterator<Item = &LayerResult> {
        self.layers
            .iter()
            .filter(|l| l.status == LayerStatus::Failed)
    }
}

/// The human summary printed after a build.
pub fn render_summary(report: &BuildReport, targets: &[String]) -> String {
    let mut out = String::new();
    let total = report.layers.len();
    let elapsed = format_duration(Duration::from_millis(report.duration_ms as u64));
    if report.built == 0 && report.failed == 0 && report.skipped == 0 {
        if report.pulled > 0 {
            out.push_str(&format!(
                "nothing built: {} pulled from {}, {} up to date ({elapsed})\n",
                report.pulled,
                report.registry.as_deref().unwrap_or("the registry"),
                report.cached
            ));
        } else {
            out.push_str(&format!("all {total} layers up to date ({elapsed})\n"));
        }
    } else {
        let pushed = match &report.registry {
            Some(r) if report.pushed + report.not_pushed.len() > 0 => format!(
                ", {} pushed to {r}{}",
                report.pushed,
                match report.not_pushed.len() {
                    0 => String::new(),
                    n => format!(" ({n} not pushed)"),
                }
            ),
            _ => String::new(),
        };
        out.push_str(&format!(
            "{} built, {} pulled, {} up to date, {} failed, {} skipped{pushed} in {elapsed}\n",
            report.built, report.pulled, report.cached, report.failed, report.skipped
        ));
    }
    for l in &report.layers {
        if targets.iter().any(|t| t == &l.label)
            && let Some(name) = &l.image_name
        {
            out.push_str(&format!("{} -> {name}\n", l.label));
        }
    }
    // A machine failure ends the run with its own error line.
    for l in report.failed_layers().filter(|l| !l.environment) {
        if let Some(e) = &l.error {
            out.push_str(&format!("{} failed: {e}\n", l.label));
        }
    }
    out
}

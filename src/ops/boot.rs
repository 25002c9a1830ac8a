//! `layerbuild boot LABEL [-- CMD]`: boots a built layer's image in a
//! virtual machine as a diskless node boots (its netboot export) and runs
//! its `boot_tests`, or CMD instead. The export is kept under
//! `cache/boot/` and rewritten only when the digest changes.
//!
//! I/O: the export (through [`super::export::OutputJob`]) and the boot
//! (through the backend); nothing is cached about the run.

use std::time::Duration;

use super::build::new_log_path;
use super::test::{LayerTests, TEST_VERSION, TestReport};
use super::{Context, now_secs};
use crate::cache::lock::{DigestLock, Holder};
use crate::error::{Error, Result};
use crate::executor::Backend;
use crate::executor::netboot::cmdline;
use crate::executor::qemu::BootRequest;
use crate::label::Label;
use crate::status::OutputStatus;
use crate::workspace::{ExportFormat, Output};

pub struct BootOptions {
    pub label: Label,
    pub system: Option<String>,
    /// Run these instead of the layer's `boot_tests`.
    pub command: Option<String>,
    pub interactive: bool,
}

/// The report, and a note on how the machine ran (TCG, and why).
pub fn boot(
    ctx: &Context,
    opts: &BootOptions,
    backend: &dyn Backend,
) -> Result<(TestReport, Option<String>)> {
    let ws = &ctx.ws;
    let label = &opts.label;
    let (digest, image_id) =
        super::export::built_image(ctx, label, opts.system.as_deref(), backend)?;
    let cache = std::sync::Mutex::new(crate::cache::Cache::open(&ws.db_path())?);
    let tests = match &opts.command {
        Some(c) => vec![c.clone()],
        None => ws.layers[label].boot_tests.clone(),
    };
    let image = BootImage {
        label,
        digest: &digest,
        image_id: &image_id,
    };
    let run = boot_image(
        ws,
        &cache,
        &image,
        BootPlan {
            tests,
            interactive: opts.interactive,
            log: None,
        },
        backend,
        &mut |h| eprintln!("{}", waiting_line(label, h)),
    )?;
    let failed = run.outcomes.iter().filter(|t| !t.passed).count();
    let report = TestReport {
        version: TEST_VERSION,
        passed: run.outcomes.len() - failed,
        failed,
        notes: vec![],
        layers: vec![LayerTests {
            label: label.to_string(),
            digest,
            tests: run.outcomes,
            log: (!opts.interactive).then(|| ws.display_path(&run.log)),
        }],
    };
    Ok((report, run.note))
}

/// A committed image of a layer, to boot.
pub struct BootImage<'a> {
    pub label: &'a Label,
    pub digest: &'a crate::digest::Digest,
    pub image_id: &'a str,
}

/// How a boot went: each test's outcome (the boot's own checks first), a
/// note on how the machine ran, and the log with the console.
pub struct BootRun {
    pub outcomes: Vec<crate::executor::TestOutcome>,
    pub note: Option<String>,
    pub log: std::path::PathBuf,
}

/// What a boot waiting for another boot of the same directories says.
pub fn waiting_line(label: &Label, h: &Holder) -> String {
    let pid = h.pid.map(|p| format!(" (pid {p})")).unwrap_or_default();
    match &h.label {
        Some(other) if other != &label.to_string() => {
            format!("{label}: waiting for another layerbuild booting {other}{pid}")
        }
        _ => format!("{label}: waiting for another layerbuild booting it{pid}"),
    }
}

/// What a boot runs, and where it writes.
pub struct BootPlan {
    /// Run in the booted system (none, interactive).
    pub tests: Vec<String>,
    /// A serial console on this terminal instead of tests.
    pub interactive: bool,
    /// The console and the tests' output (`build` passes the layer's build
    /// log); `None`: a log of the boot's own.
    pub log: Option<std::path::PathBuf>,
}

/// Boots `image` from its netboot export (kept under `cache/boot/`,
/// rewritten when the digest changes) and runs the plan's tests in it
/// (`boot`, `test --boot`, and `build` for a layer with `boot_tests`).
/// The export and the boot's scratch directory are the layer's, not its
/// digest's: one boot of them at a time (another system's build, another
/// process's, a `boot`, a layer of the same slug), the others waiting
/// (`on_wait` told who holds them).
pub fn boot_image(
    ws: &crate::workspace::Workspace,
    cache: &std::sync::Mutex<crate::cache::Cache>,
    image: &BootImage<'_>,
    plan: BootPlan,
    backend: &dyn Backend,
    on_wait: &mut dyn FnMut(&Holder),
) -> Result<BootRun> {
    let BootPlan {
        tests,
        interactive,
        log,
    } = plan;
    let label = image.label;
    let layer = &ws.layers[label];
    let dir = ws.cache_dir.join("boot").join(label.slug());
    let _lock = DigestLock::acquire_at(
        ws.cache_dir
            .join("boot")
            .join(format!("{}.lock", label.slug())),
        &label.to_string(),
        on_wait,
    )?;
    let job = super::export::OutputJob {
        ws,
        cache,
        exporter: backend,
        label,
        digest: image.digest,
        image_id: image.image_id,
        force: false,
    };
    let exported = job.perform(&Output::File {
        format: ExportFormat::Netboot,
        path: dir.clone(),
        // Fast to make and to read; the export is scratch.
        compression: Some("lz4".into()),
    });
    if exported.status == OutputStatus::Failed {
        return Err(Error::BuildFailed(format!(
            "{label}: cannot export it to boot: {}",
            exported.error.unwrap_or_default()
        )));
    }
    let log = log.unwrap_or_else(|| new_log_path(ws, label, now_secs(), image.digest, "-boot"));
    let req = BootRequest {
        label: label.to_string(),
        dir,
        cmdline: cmdline(&layer.boot.cmdline),
        memory_mib: layer.boot.memory_mib,
        timeout: Duration::from_secs(layer.boot.timeout_secs),
        tests,
        log_path: log.clone(),
        work_dir: ws
            .cache_dir
            .join("tmp")
            .join(format!("boot-{}", label.slug())),
        interactive,
    };
    let (outcomes, note) = backend.boot(&req)?;
    Ok(BootRun {
        outcomes,
        note,
        log,
    })
}

//! One layer's attempt, as a chain of small steps, each of which may finish
//! the layer: recheck the cache → take the digest's lock → recheck →
//! adopt an image a killed build committed → pull from the registry →
//! build → record → push.
//!
//! I/O: the cache (SQLite, behind the run's mutex), the digest lock files
//! and owner records of the container storage ([`Coord`]), the layer's
//! scratch directory and log; processes only through the backend's
//! [`Executor`] and [`crate::executor::Registry`].

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use super::registry::{RegistryUse, try_pull};
use super::report::{Done, Failed};
use super::request::{attempt_request, base_image, new_log_path, record};
use crate::cache::Cache;
use crate::cache::lock::{DigestLock, Holder};
use crate::cache::shared::Coord;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::executor::{Backend, BaseImage, BuildFailure, ImageNames};
use crate::fingerprint::Fingerprint;
use crate::label::Label;
use crate::ops::{image_name, now_secs};
use crate::progress::Reporter;
use crate::status::RecordSource;
use crate::workspace::{System, Workspace};

/// What the layers of a run learn as they go, behind one mutex.
pub(super) struct Shared {
    /// Image names in storage when the run began (`None`: unknown), so a
    /// layer to build asks about an image of its name only if there is one.
    pub(super) names: Option<ImageNames>,
    /// Ids of the images in storage.
    pub(super) images: HashSet<String>,
    /// The image each finished layer of the run ended with (its children
    /// start from it).
    pub(super) image_of: BTreeMap<Label, String>,
}

/// What every layer of one build shares.
pub(super) struct RunCtx<'a> {
    pub(super) ws: &'a Workspace,
    pub(super) system: Option<&'a System>,
    /// The labels of the run, and their full fingerprints once computed
    /// (when the memo served digests and a layer turns out to need
    /// building after all: its image vanished meanwhile).
    pub(super) labels: &'a [Label],
    pub(super) full: OnceLock<std::result::Result<BTreeMap<Label, Fingerprint>, String>>,
    pub(super) isolation: &'a str,
    pub(super) executor: &'a dyn Backend,
    pub(super) reporter: &'a dyn Reporter,
    pub(super) cache: Mutex<Cache>,
    pub(super) shared: Mutex<Shared>,
    pub(super) registry: Option<&'a RegistryUse<'a>>,
    /// Where the digest locks and working-container owners are: the
    /// container storage's, shared with every checkout using it (found
    /// when a first layer needs building).
    pub(super) coord: OnceLock<std::result::Result<Coord, String>>,
}

impl RunCtx<'_> {
    pub(super) fn cache(&self) -> MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn shared(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The storage's coordination directory; this checkout is recorded
    /// there as one keeping images in it (for `gc` in the others).
    fn coord(&self) -> Result<&Coord> {
        self.coord
            .get_or_init(|| {
                let root = self
                    .executor
                    .storage_root()
                    .map_err(|e| Error::from(e).to_string())?;
                let Some(root) = root else {
                    return Ok(Coord::checkout_only(&self.ws.cache_dir));
                };
                let coord = Coord::of_storage(&root);
                coord
                    .register(&self.ws.db_path(), &self.ws.name)
                    .map_err(|e| e.to_string())?;
                Ok(coord)
            })
            .as_ref()
            .map_err(|m| Error::env(m.clone()))
    }

    /// The machine failed around `label`'s steps (said as it happens).
    fn environment_failure(&self, label: &str, e: Error) -> Failed {
        let (message, hint) = e.message_and_hint();
        self.reporter.failed(label, &message);
        Failed::environment(message, hint)
    }

    /// `label` itself failed (said as it happens).
    fn layer_failure(&self, label: &str, message: String) -> Failed {
        self.reporter.failed(label, &message);
        Failed::layer(message)
    }

    /// The full fingerprint of the layer `light` stands for; an error if
    /// its digest is no longer the one the build started with.
    fn full_print(&self, light: &Fingerprint) -> std::result::Result<Fingerprint, String> {
        let all = self.full.get_or_init(|| {
            crate::ops::manifests(self.ws, self.system, self.labels).map_err(|e| e.to_string())
        });
        let fp = all.as_ref().map_err(Clone::clone)?[&light.label].clone();
        if fp.digest != light.digest {
            return Err(format!(
                "the inputs of {} changed during the build (its digest is now {}); run the build again",
                light.label,
                fp.digest.short()
            ));
        }
        Ok(fp)
    }
}

/// One layer of the run, from its (maybe light) fingerprint to its image.
pub(super) fn attempt(run: &RunCtx<'_>, fp: &Fingerprint) -> std::result::Result<Done, Failed> {
    let label_s = fp.label.to_string();
    let fail = |e: Error| run.environment_failure(&label_s, e);

    // Look the digest up right before starting: another process (or an
    // earlier layer of this run) may have built it since the plan was made.
    if let Some(done) = reuse_cached(run, fp, false).map_err(fail)? {
        return Ok(done);
    }
    if crate::interrupt::requested() {
        return Err(run.layer_failure(&label_s, "not started: the build was interrupted".into()));
    }
    let full_fp;
    let fp = if fp.light {
        full_fp = run
            .full_print(fp)
            .map_err(|m| run.layer_failure(&label_s, m))?;
        &full_fp
    } else {
        fp
    };
    // A miss: build it holding the digest's lock, so concurrent layerbuilds
    // build each digest once. Whoever waited looks again afterwards.
    // The lock is the container storage's: checkouts sharing it build each
    // digest once too, and never race for its working container's name.
    let coord = run.coord().map_err(fail)?;
    let mut waited = false;
    let _lock = DigestLock::acquire(coord.lock_dir(), &fp.digest, &label_s, &mut |h| {
        waited = true;
        run.reporter.println(&waiting_line(&label_s, h));
    })
    .map_err(fail)?;
    if let Some(done) = reuse_cached(run, fp, true).map_err(fail)? {
        return Ok(done);
    }
    if waited {
        // Whoever held the lock may have committed meanwhile.
        run.shared().names = None;
    }
    let adopting = match coord.is_shared() {
        true => Adopting::SharedStorage,
        false => Adopting::Unrecorded,
    };
    if let Some(done) = adopt_committed(run, fp, adopting) {
        return Ok(done);
    }
    if let Some(reg) = run.registry
        && let Some(done) = try_pull(run, reg, fp)
    {
        return Ok(done);
    }
    build_here(run, fp, coord)
}

/// The image `fp`'s layer starts from.
fn parent_image(run: &RunCtx<'_>, fp: &Fingerprint) -> Result<BaseImage> {
    match base_image(run.ws, &fp.label, |p| run.shared().image_of.get(p).cloned()) {
        BaseImage::Unbuilt(p) => Err(Error::env(format!("internal: parent {p} has no image"))),
        from => Ok(from),
    }
}

/// Runs the layer's steps in a clean container and records the outcome.
fn build_here(
    run: &RunCtx<'_>,
    fp: &Fingerprint,
    coord: &Coord,
) -> std::result::Result<Done, Failed> {
    let ws = run.ws;
    let label = &fp.label;
    let label_s = label.to_string();
    let fail = |e: Error| run.environment_failure(&label_s, e);
    let from = parent_image(run, fp).map_err(fail)?;
    let started_at = now_secs();
    let log_path = new_log_path(ws, label, started_at, &fp.digest, "");
    let req = attempt_request(ws, run.system, fp, run.isolation, from, log_path.clone());
    let image = req.image_name.clone();
    // `NAME-unbooted` while boot tests are to run.
    let built_name = req.built_name();
    let work_dir = req.work_dir.clone();
    let container = req.container_name.clone();

    // Before the container exists: `gc` (in any checkout sharing the
    // storage) removes a working container whose owner is missing or dead,
    // so it must never see this build's container without one. The
    // checkout's owner.pid also marks the scratch directory as in use.
    coord.claim(&container, &ws.db_path()).map_err(fail)?;
    write_owner_pid(&work_dir).map_err(fail)?;
    run.reporter.started(&label_s, &fp.digest);
    let t0 = Instant::now();
    let outcome = run.executor.build(&req, run.reporter);
    let elapsed = t0.elapsed();
    let rec = record(
        &label_s,
        run.system,
        fp,
        started_at,
        elapsed,
        Some(&log_path),
        RecordSource::Built,
    );
    let (image_id, mut tests) = match outcome {
        Ok(out) => (out.image_id, out.tests),
        Err(f) => {
            let _ = run
                .cache()
                .record_failed(&rec, f.container.as_deref(), &f.message);
            // A kept container keeps its record: whose it is, for `gc`.
            if f.container.is_none() {
                coord.release(&container);
            }
            return Err(said_failure(run, &label_s, f, log_path));
        }
    };
    // Boot tests, after the image tests: a failure fails the layer as a
    // failed image test does (not cached, the image kept as NAME-failed).
    // Until they passed the image is `NAME-unbooted`: a build killed
    // meanwhile leaves nothing to adopt.
    if req.boot_tests_follow {
        run.reporter.step(&label_s, "boot tests");
        let boot = boot_tests(run, fp, &image_id, &log_path);
        // Booting at all failing (QEMU missing, the export failing) is the
        // machine's failure, not the layer's; either way the image is not
        // left under its name, where it would pass for a tested build.
        let machine = boot.is_err();
        let failure = match boot {
            Ok(outcomes) => {
                let failed = outcomes.iter().filter(|o| !o.passed).count();
                let first = outcomes.iter().find(|o| !o.passed).map(|o| match &o.error {
                    Some(e) => format!("`{}`: {e}", o.command),
                    None => format!("`{}` failed", o.command),
                });
                let of = outcomes.len();
                tests.extend(outcomes);
                first.map(|f| format!("{failed} of {of} boot tests failed; first: {f}"))
            }
            Err(e) => Some(format!("could not boot it: {e}")),
        };
        if let Some(message) = failure {
            let kept = format!("{image}-failed");
            let renamed = run
                .executor
                .tag_image(&image_id, &kept)
                .and_then(|()| run.executor.remove_image(&built_name).map(drop));
            let message = match renamed {
                Ok(()) => format!("{message}; the image is kept as {kept}"),
                Err(e) => format!("{message}; could not rename the image: {e}"),
            };
            let _ = run.cache().record_failed(&rec, None, &message);
            coord.release(&container);
            run.reporter.failed(&label_s, &message);
            let failed = match machine {
                true => Failed::environment(
                    message,
                    Some("boot tests need qemu-system-x86 (scripts/install-deps.sh installs it) and a kernel and initramfs in the image's /boot; `layerbuild boot LABEL` runs them alone".into()),
                ),
                false => Failed::layer(message),
            };
            return Err(Failed {
                log: Some(log_path),
                tests: tests.into_boxed_slice(),
                ..failed
            });
        }
        if let Err(e) = run.executor.tag_image(&image_id, &image) {
            let message = format!("its boot tests passed, but the image could not be named: {e}");
            let _ = run.cache().record_failed(&rec, None, &message);
            coord.release(&container);
            run.reporter.failed(&label_s, &message);
            return Err(Failed {
                log: Some(log_path),
                tests: tests.into_boxed_slice(),
                ..Failed::environment(message, None)
            });
        }
        // Best effort: a name left over names an image the cache records.
        let _ = run.executor.remove_image(&built_name);
    }
    let recorded = run.cache().record_built(&rec, &image_id, &image);
    coord.release(&container);
    if let Err(e) = recorded {
        run.reporter.failed(
            &label_s,
            &format!("built, but could not record it in the cache: {e}"),
        );
        return Err(Failed {
            log: Some(log_path),
            ..Failed::environment(format!("could not record in the cache: {e}"), None)
        });
    }
    let _ = std::fs::remove_dir_all(&work_dir);
    run.shared().images.insert(image_id.clone());
    if let Some(reg) = run.registry {
        reg.push_built(label, &fp.digest, &image_id, run.reporter);
    }
    run.reporter.built(&label_s, elapsed);
    Ok(Done::Built {
        image_id,
        image_name: image,
        elapsed,
        log: log_path,
        tests,
    })
}

/// Boots the layer's image just built and runs its `boot_tests`.
fn boot_tests(
    run: &RunCtx<'_>,
    fp: &Fingerprint,
    image_id: &str,
    log: &std::path::Path,
) -> Result<Vec<crate::executor::TestOutcome>> {
    let image = crate::ops::boot::BootImage {
        label: &fp.label,
        digest: &fp.digest,
        image_id,
    };
    let tests = run.ws.layers[&fp.label].boot_tests.clone();
    let booted = crate::ops::boot::boot_image(
        run.ws,
        &run.cache,
        &image,
        crate::ops::boot::BootPlan {
            tests,
            interactive: false,
            log: Some(log.to_path_buf()),
        },
        run.executor,
        &mut |h| {
            run.reporter
                .println(&crate::ops::boot::waiting_line(&fp.label, h))
        },
    )?;
    if let Some(note) = booted.note {
        run.reporter.println(&format!("note: {note}"));
    }
    Ok(booted.outcomes)
}

/// A failed build step, said with the end of its log (long command lines
/// shortened: they are whole in the log), then how to look further:
/// `layerbuild debug` in the kept container, `layerbuild log`, and the
/// buildah commands with the storage in use.
fn said_failure(run: &RunCtx<'_>, label: &str, f: BuildFailure, log_path: PathBuf) -> Failed {
    run.reporter.failed(label, &f.message);
    let mut text = String::new();
    let tail = log_tail(&log_path, 15);
    if !tail.is_empty() {
        text.push_str(&format!(
            "---- last lines of {} ----\n{tail}\n----\n",
            run.ws.display_path(&log_path)
        ));
    }
    let system = match (run.system, run.ws.systems.len() > 1) {
        (Some(s), true) => format!(" --system {}", s.name),
        _ => String::new(),
    };
    if let Some(c) = &f.container {
        text.push_str(&format!(
            "  enter the kept working container: layerbuild debug {label}{system}\n    or: {}\n  remove it: {}\n",
            run.executor
                .tool_command(&format!("run --isolation {} {c} sh", run.isolation)),
            run.executor.tool_command(&format!("rm {c}"))
        ));
    }
    text.push_str(&format!("  the whole log: layerbuild log {label}{system}"));
    run.reporter.println(&text);
    Failed {
        container: f.container,
        log: Some(log_path),
        tests: f.tests.into_boxed_slice(),
        ..Failed::layer(f.message)
    }
}

/// The cached image of `fp`'s digest, if the cache has a row and storage
/// the image. A row whose image was deleted is a miss, not an error; with
/// `repair` (the digest's lock held) the row is deleted.
fn reuse_cached(run: &RunCtx<'_>, fp: &Fingerprint, repair: bool) -> Result<Option<Done>> {
    let label_s = fp.label.to_string();
    let Some(row) = run.cache().lookup(&fp.digest)? else {
        return Ok(None);
    };
    let mut present = crate::plan::in_storage(&row, Some(&run.shared().images));
    if !present {
        // The store may have changed since the run began.
        if let Ok(fresh) = run.executor.images() {
            present = crate::plan::in_storage(&row, Some(&fresh));
            run.shared().images = fresh;
        }
    }
    if !present {
        if repair {
            // Another container storage (`--storage-root` switched) or a
            // removed image: this storage may hold the digest's build.
            if let Some(done) = adopt_committed(run, fp, Adopting::RowElsewhere) {
                return Ok(Some(done));
            }
            run.cache().forget_layer(&fp.digest)?;
            run.reporter.println(&format!(
                "{label_s}: its cached image {} is gone from container storage; building it again",
                row.image_name
            ));
        }
        return Ok(None);
    }
    // The row is a file anyone may edit: its image must be this layer's
    // build. The listing shows it when a name layerbuild gives only to this
    // layer's builds of this digest (its local name, or the registry
    // reference it was pulled as) is on that image; otherwise its labels
    // are read (a retagged or renamed image, an edited row).
    let names = run.shared().names.clone();
    let on_image = |name: &str| names.as_ref().and_then(|n| n.get(name)) == Some(&row.image_id);
    let own = image_name(run.ws, &fp.label, &fp.digest);
    let trusted = [own.as_str(), row.image_name.as_str()]
        .into_iter()
        .any(|n| on_image(n) && names_build(n, &fp.label, &fp.digest))
        || crate::ops::cache::committed_build(run.executor, &row.image_id, &fp.label, &fp.digest)
            .is_some_and(|m| m.id == row.image_id);
    if !trusted {
        run.cache().forget_layer(&fp.digest)?;
        run.reporter.println(&format!(
            "{label_s}: the cache names image {} for it, which is not its build (its labels say otherwise); building it again",
            crate::fingerprint::short(&row.image_id)
        ));
        return Ok(None);
    }
    // A row that does not say its image's architecture (recorded before
    // layerbuild knew architectures, or recovered): an aarch64 machine's
    // build then had the digest an x86_64 build of the layer has now.
    if row.arch.is_none() {
        let meta =
            crate::ops::cache::committed_build(run.executor, &row.image_id, &fp.label, &fp.digest);
        match meta.and_then(|m| m.arch) {
            Some(a) if !of_arch(&a, run.ws.arch) => {
                run.cache().forget_layer(&fp.digest)?;
                run.reporter.println(&format!(
                    "{label_s}: its cached image {} is of architecture {a}, not {} (built before layerbuild knew architectures); building it again",
                    crate::fingerprint::short(&row.image_id),
                    run.ws.arch.oci()
                ));
                return Ok(None);
            }
            Some(_) => {
                let _ = run.cache().set_arch(&fp.digest, run.ws.arch.name());
            }
            None => {}
        }
    }
    // Report a name only while it still names this image.
    let image_name = [row.image_name.as_str(), own.as_str()]
        .into_iter()
        .find(|n| on_image(n))
        .map_or_else(|| row.image_id.clone(), str::to_string);
    run.reporter.cached(&label_s, &row.image_id);
    Ok(Some(Done::Cached {
        image_id: row.image_id,
        image_name,
    }))
}

/// Is `oci` (an image's architecture, OCI's name) `arch`?
fn of_arch(oci: &str, arch: crate::arch::Arch) -> bool {
    crate::arch::Arch::parse(oci) == Some(arch)
}

/// Is `name` one layerbuild gives only to `label`'s builds of `digest`:
/// `…/TYPE/LAYER:TAG` with a tag of 12 or more leading characters of the
/// digest (the local name, a registry reference)?
fn names_build(name: &str, label: &Label, digest: &Digest) -> bool {
    let Some((repo, tag)) = name.rsplit_once(':') else {
        return false;
    };
    let path = format!(
        "/{}/{}",
        label.image_type().to_lowercase(),
        label.layer().to_lowercase()
    );
    tag.len() >= 12 && digest.as_str().starts_with(tag) && repo.ends_with(&path)
}

/// After a build was killed between `buildah commit` and its cache record,
/// its image is in storage under this digest's name and label but has no
/// row: record it (source `adopted`) instead of building again. A layer
/// with image tests gets that name only after they passed (it is committed
/// as `NAME-untested`), one with boot tests only after those passed (it is
/// `NAME-unbooted` until then). Anything unexpected (inspect failing) means
/// building.
/// Why an image in storage may be adopted.
#[derive(Clone, Copy, PartialEq)]
enum Adopting {
    /// No cache row: a build killed before recording it.
    Unrecorded,
    /// As `Unrecorded`, on a storage other checkouts share.
    SharedStorage,
    /// The cache row names an image this storage lacks (built on another
    /// storage root, or removed).
    RowElsewhere,
}

fn adopt_committed(run: &RunCtx<'_>, fp: &Fingerprint, why: Adopting) -> Option<Done> {
    let shared = why != Adopting::Unrecorded;
    let label = &fp.label;
    let name = image_name(run.ws, label, &fp.digest);
    // No image of that name when the run began: none to adopt, without
    // asking storage (a `buildah inspect` per layer built). When this run
    // waited for the digest's lock the names are unknown and storage is
    // asked. An image committed by a process that died between our listing
    // and our lock, without our waiting, is built again: wasted work, never
    // a wrong image. On a storage other checkouts share, one of them may
    // have built the digest and let its lock go just before we took it,
    // without our waiting: storage is always asked.
    let named = run.shared().names.as_ref().map(|n| n.contains_key(&name));
    if named == Some(false) && !shared {
        return None;
    }
    let meta = crate::ops::cache::committed_build(run.executor, &name, label, &fp.digest)?;
    let label_s = label.to_string();
    // Its labels are this build's, but an aarch64 machine's build had the
    // digest an x86_64 build of the layer has now, before layerbuild knew
    // architectures.
    if let Some(a) = &meta.arch
        && !of_arch(a, run.ws.arch)
    {
        run.reporter.println(&format!(
            "{label_s}: not adopting {name}: it is of architecture {a}, not {} (built before layerbuild knew architectures)",
            run.ws.arch.oci()
        ));
        return None;
    }
    let started_at = meta.created.unwrap_or_else(now_secs);
    let rec = record(
        &label_s,
        run.system,
        fp,
        started_at,
        Duration::ZERO,
        None,
        RecordSource::Adopted,
    );
    run.cache().record_built(&rec, &meta.id, &name).ok()?;
    run.shared().images.insert(meta.id.clone());
    let said = match why {
        Adopting::RowElsewhere => {
            "in this container storage with this digest; the cache named an image it lacks (another storage root, or a removed image)"
        }
        _ => {
            "already in container storage with this digest (an interrupted build, or another copy of the workspace), not recorded here"
        }
    };
    run.reporter
        .println(&format!("{label_s}: adopted {name}: {said}"));
    run.reporter.cached(&label_s, &meta.id);
    Some(Done::Cached {
        image_id: meta.id,
        image_name: name,
    })
}

/// The progress line of a layer waiting for another process's lock.
fn waiting_line(label: &str, h: &Holder) -> String {
    match h.pid {
        Some(pid) => format!("waiting for another layerbuild building {label} (pid {pid})"),
        None => format!("waiting for another layerbuild building {label}"),
    }
}

/// The file in a working container's scratch directory naming the process
/// that builds in it (read by `gc`).
pub const OWNER_PID_FILE: &str = "owner.pid";

fn write_owner_pid(work_dir: &Path) -> Result<()> {
    std::fs::create_dir_all(work_dir).map_err(|e| Error::io(work_dir, e))?;
    let p = work_dir.join(OWNER_PID_FILE);
    std::fs::write(&p, format!("{}\n", std::process::id())).map_err(|e| Error::io(&p, e))
}

pub(super) fn log_tail(path: &Path, n: usize) -> String {
    let Ok(text) = std::fs::read_to_string(path) else {
        return String::new();
    };
    let lines: Vec<String> = text
        .trim_end()
        .lines()
        .map(|l| match l.strip_prefix("$ ") {
            Some(cmd) if l.len() > LONG_COMMAND => shortened(cmd),
            _ => l.to_string(),
        })
        .collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Command lines longer than this are shortened in a failure's log tail.
const LONG_COMMAND: usize = 200;

/// A long `$ …` log line as its program and first arguments: the
/// environment assignments, `cd` and namespace wrappers left out.
fn shortened(cmd: &str) -> String {
    let cmd = cmd.rsplit(" && ").next().unwrap_or(cmd);
    let words: Vec<&str> = cmd.split_whitespace().collect();
    // The play or tool the wrappers run: the last of these programs named.
    let start = words
        .iter()
        .rposition(|w| {
            let w = w.trim_matches('\'');
            ["ansible-playbook", "buildah", "sh", "mksquashfs", "tar"]
                .iter()
                .any(|p| w == *p || w.ends_with(&format!("/{p}")))
        })
        .unwrap_or(0);
    let shown = words[start..].join(" ");
    let shown: String = match shown.char_indices().nth(120) {
        Some((i, _)) => format!("{}…", &shown[..i]),
        None => shown,
    };
    format!("$ {shown}  [{} bytes; whole in the log]", cmd.len())
}

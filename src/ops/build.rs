//! `layerbuild build`: fingerprint the selected layers, then build what the
//! cache does not hold, independent branches in parallel.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{Context, container_name, image_name, now_secs};
use crate::cache::lock::{DigestLock, Holder};
use crate::cache::{BuildRecord, Cache};
use crate::error::{Error, Result};
use crate::executor::{Backend, BuildRequest, PlayRequest, Registry, RegistryEntry};
use crate::fingerprint::Fingerprint;
use crate::fingerprint::session::{Source, Want};
use crate::label::{Label, Pattern};
use crate::progress::{Reporter, format_duration};
use crate::scheduler::{self, NodeStatus};
use crate::workspace::{CacheMode, Parent, System, Workspace};

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

/// The shared registry as this run uses it.
pub struct RegistryUse<'a> {
    pub client: &'a dyn Registry,
    pub url: String,
    pub tls_verify: bool,
    pub mode: CacheMode,
    /// Cleared at the first failure to reach the registry: one warning, then local only.
    reachable: std::sync::atomic::AtomicBool,
    /// digest -> what the registry holds for it (looked up before building).
    entries: Mutex<HashMap<String, RegistryEntry>>,
    warnings: Mutex<Vec<String>>,
}

impl<'a> RegistryUse<'a> {
    pub fn new(client: &'a dyn Registry, url: String, tls_verify: bool, mode: CacheMode) -> Self {
        RegistryUse {
            client,
            url,
            tls_verify,
            mode,
            reachable: std::sync::atomic::AtomicBool::new(true),
            entries: Mutex::new(HashMap::new()),
            warnings: Mutex::new(vec![]),
        }
    }

    /// `<registry>/<type>/<layer>:<digest>`: one repository per label, tagged by digest.
    pub fn reference(&self, label: &Label, digest: &str) -> String {
        format!(
            "{}/{}/{}:{digest}",
            self.url,
            label.image_type().to_lowercase(),
            label.layer().to_lowercase()
        )
    }

    fn usable(&self) -> bool {
        self.mode != CacheMode::Off && self.reachable.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn warn(&self, w: String) {
        self.warnings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(w);
    }

    fn unreachable(&self, err: &str) {
        if self
            .reachable
            .swap(false, std::sync::atomic::Ordering::SeqCst)
        {
            self.warn(format!(
                "registry {} is unreachable ({}); building from the local cache and local builds only",
                self.url,
                err.lines().last().unwrap_or(err)
            ));
        }
    }

    /// Looks every digest up (a few requests at a time) and returns what was found.
    pub fn lookup_all(&self, wanted: &[(Label, String)]) -> HashMap<String, RegistryEntry> {
        self.prefetch(wanted);
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn take_warnings(&self) -> Vec<String> {
        std::mem::take(&mut *self.warnings.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Looks every digest up, a few requests at a time.
    fn prefetch(&self, wanted: &[(Label, String)]) {
        if !self.usable() || wanted.is_empty() {
            return;
        }
        let results: Mutex<Vec<(String, std::result::Result<RegistryEntry, String>)>> =
            Mutex::new(vec![]);
        let next = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for _ in 0..wanted.len().min(8) {
                scope.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        let Some((label, digest)) = wanted.get(i) else {
                            break;
                        };
                        if !self.reachable.load(std::sync::atomic::Ordering::SeqCst) {
                            break;
                        }
                        let r = self
                            .client
                            .lookup(&self.reference(label, digest), self.tls_verify)
                            .map_err(|e| e.to_string());
                        if let Err(e) = &r {
                            self.unreachable(e);
                        }
                        results
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push((digest.clone(), r));
                    }
                });
            }
        });
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        for (d, r) in results.into_inner().unwrap_or_default() {
            if let Ok(e) = r {
                entries.insert(d, e);
            }
        }
    }
}

/// Schema version of `build --json`.
pub const REPORT_VERSION: u32 = 1;

#[derive(Debug, Serialize)]
pub struct BuildReport {
    pub version: u32,
    pub system: Option<String>,
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
    /// Registry trouble that did not fail the build (unreachable, push failed,
    /// an entry rejected).
    pub warnings: Vec<String>,
    /// The declared outputs of the layers that are built (or up to date).
    pub outputs: Vec<super::export::OutputResult>,
    pub outputs_failed: usize,
}

#[derive(Debug, Serialize)]
pub struct LayerResult {
    pub label: String,
    pub digest: String,
    /// `built`, `pulled`, `cached`, `failed`, `skipped` (a dependency failed) or `not_started`.
    pub status: &'static str,
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
}

enum Done {
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
    },
}

struct Failed {
    message: String,
    container: Option<String>,
    log: Option<PathBuf>,
    /// The machine failed (cache directory, locks, storage bookkeeping)
    /// before or after the layer's own steps, not the layer.
    environment: bool,
    hint: Option<String>,
}

pub fn build(
    ctx: &Context,
    opts: &BuildOptions,
    executor: &dyn Backend,
    registry: Option<&dyn Registry>,
    exporter: Option<&dyn crate::executor::Exporter>,
    reporter_for: &dyn Fn(usize) -> Box<dyn Reporter>,
) -> Result<BuildReport> {
    let ws = &ctx.ws;
    let started = Instant::now();
    let system = ws.system(opts.system.as_deref())?;
    let labels = ctx.graph.select(&opts.patterns)?;
    if let Some(j) = opts.jobs
        && j == 0
    {
        return Err(Error::input("-j/--jobs must be at least 1")
            .with_hint("omit -j to use [build] jobs or one job per core"));
    }
    // Digests only, from the memo, when nothing changed since the last
    // fingerprint; in full (manifests, variables) otherwise. Meanwhile the
    // image store is listed (read-only; its answer is used only once the
    // fingerprint succeeded).
    let (fp, images) = std::thread::scope(|s| {
        let listing = s.spawn(|| executor.images_named().map_err(Error::from));
        let fp = crate::ops::fingerprints(ws, system, &labels, Want::Digests);
        let images = listing
            .join()
            .unwrap_or_else(|_| Err(Error::env("listing the images failed")));
        (fp, images)
    });
    let mut fp = fp?;
    let jobs = opts.jobs.unwrap_or(ws.build.jobs);
    let isolation = opts
        .isolation
        .clone()
        .unwrap_or_else(|| ws.build.isolation.clone());

    // Only now touch the environment: bad input above never reaches it.
    let t = Instant::now();
    let (images, names) = images?;
    let cache = Cache::open(&ws.db_path())?;
    let mut local_misses = misses(&cache, &images, &labels, &fp.prints)?;
    if fp.source == Source::Memo && !local_misses.is_empty() {
        // Something is to be built or pulled: its record needs the full
        // manifest and variables.
        fp = crate::ops::fingerprints(ws, system, &labels, Want::Manifests)?;
        local_misses = misses(&cache, &images, &labels, &fp.prints)?;
    }
    let prints = fp.prints;
    let t = crate::timings::phase("look the digests up", t);
    let registry_url = opts.registry.clone().or_else(|| ws.cache.registry.clone());
    let registry = match (registry, registry_url) {
        (Some(client), Some(url)) => Some(RegistryUse::new(
            client,
            crate::workspace::parse_registry(&url).map_err(|e| {
                Error::input(e)
                    .with_hint("write host[:port]/path, e.g. registry.example.org/hpc/layers")
            })?,
            ws.cache.tls_verify,
            opts.cache_mode.unwrap_or(ws.cache.mode),
        )),
        _ => None,
    };
    if let Some(r) = &registry {
        r.prefetch(&local_misses);
    }
    // Start ansible-playbook (a second of Python) only if a layer that runs
    // a play will be built here.
    let needs_play = local_misses.iter().any(|(l, d)| {
        let pullable = registry.as_ref().is_some_and(|r| {
            r.usable()
                && matches!(r.entries.lock().unwrap_or_else(|e| e.into_inner()).get(d),
                    Some(RegistryEntry::Present { label }) if label == d)
        });
        ws.layers[l].playbook.is_some() && !pullable
    });
    executor.preflight(needs_play)?;
    let images = Mutex::new(images);
    let cache = Mutex::new(cache);

    let index: HashMap<&Label, usize> = labels.iter().enumerate().map(|(i, l)| (l, i)).collect();
    let deps: Vec<Vec<usize>> = labels
        .iter()
        .map(|l| match &ws.layers[l].parent {
            Parent::Layer(p) => vec![index[p]],
            _ => vec![],
        })
        .collect();

    let reporter = reporter_for(labels.len());
    let image_of: Mutex<BTreeMap<Label, String>> = Mutex::new(BTreeMap::new());
    let system_name = system.map(|s| s.name.clone());
    let full = std::sync::OnceLock::new();
    let names = Mutex::new(names);
    let run = RunCtx {
        names: &names,
        ws,
        system,
        labels: &labels,
        full: &full,
        isolation: &isolation,
        executor,
        reporter: reporter.as_ref(),
        cache: &cache,
        images: &images,
        image_of: &image_of,
        registry: registry.as_ref(),
    };
    let results = scheduler::run(&deps, jobs, opts.keep_going, |i| {
        let label = &labels[i];
        let fp = &prints[label];
        let r = build_one(&run, fp);
        if let Ok(
            Done::Cached { image_id, .. }
            | Done::Built { image_id, .. }
            | Done::Pulled { image_id, .. },
        ) = &r
        {
            image_of
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(label.clone(), image_id.clone());
        }
        r
    });

    let mut report = BuildReport {
        version: REPORT_VERSION,
        system: system_name,
        layers: vec![],
        built: 0,
        pulled: 0,
        cached: 0,
        failed: 0,
        skipped: 0,
        duration_ms: 0,
        registry: registry.as_ref().map(|r| r.url.clone()),
        warnings: registry
            .as_ref()
            .map(|r| r.warnings.lock().unwrap_or_else(|e| e.into_inner()).clone())
            .unwrap_or_default(),
        outputs: vec![],
        outputs_failed: 0,
    };
    for (i, status) in results.into_iter().enumerate() {
        let label = &labels[i];
        let digest = prints[label].digest.clone();
        let mut res = LayerResult {
            label: label.to_string(),
            digest,
            status: "",
            image_id: None,
            image_name: None,
            duration_ms: None,
            error: None,
            container: None,
            log: None,
            environment: false,
            hint: None,
        };
        match status {
            NodeStatus::Done(Done::Pulled {
                image_id,
                reference,
            }) => {
                report.pulled += 1;
                res.status = "pulled";
                res.image_id = Some(image_id);
                res.image_name = Some(reference);
            }
            NodeStatus::Done(Done::Cached {
                image_id,
                image_name,
            }) => {
                report.cached += 1;
                res.status = "cached";
                res.image_id = Some(image_id);
                res.image_name = Some(image_name);
            }
            NodeStatus::Done(Done::Built {
                image_id,
                image_name,
                elapsed,
                log,
            }) => {
                report.built += 1;
                res.status = "built";
                res.image_id = Some(image_id);
                res.image_name = Some(image_name);
                res.duration_ms = Some(elapsed.as_millis());
                res.log = Some(ws.display_path(&log));
            }
            NodeStatus::Failed(f) => {
                report.failed += 1;
                res.status = "failed";
                res.error = Some(f.message);
                res.container = f.container;
                res.log = f.log.map(|l| ws.display_path(&l));
                res.environment = f.environment;
                res.hint = f.hint;
            }
            NodeStatus::SkippedDependency(d) => {
                report.skipped += 1;
                res.status = "skipped";
                res.error = Some(format!("{} did not build", labels[d]));
                reporter.skipped(&res.label, &format!("{} did not build", labels[d]));
            }
            NodeStatus::NotStarted => {
                report.skipped += 1;
                res.status = "not_started";
                res.error = Some("not started: an earlier layer failed (use --keep-going to build independent branches)".into());
                reporter.skipped(&res.label, "not started after an earlier failure (--keep-going builds independent branches)");
            }
        }
        report.layers.push(res);
    }
    if let Some(exporter) = exporter.filter(|_| !opts.no_outputs) {
        for (label, res) in labels.iter().zip(&report.layers) {
            let Some(image_id) = &res.image_id else {
                continue;
            };
            for output in &ws.layers[label].outputs {
                let r = super::export::perform(
                    ws,
                    &cache,
                    exporter,
                    label,
                    &res.digest,
                    image_id,
                    output,
                    false,
                );
                reporter.println(super::export::render(std::slice::from_ref(&r)).trim_end());
                if r.status == "failed" {
                    report.outputs_failed += 1;
                }
                report.outputs.push(r);
            }
        }
    }
    reporter.finish();
    crate::timings::phase("run", t);
    report.duration_ms = started.elapsed().as_millis();
    Ok(report)
}

/// Layers whose digest has no cached image here.
fn misses(
    cache: &Cache,
    images: &HashSet<String>,
    labels: &[Label],
    prints: &BTreeMap<Label, Fingerprint>,
) -> Result<Vec<(Label, String)>> {
    let mut out = vec![];
    for l in labels {
        let hit = cache.lookup(&prints[l].digest)?;
        if !hit.is_some_and(|row| images.contains(&row.image_id)) {
            out.push((l.clone(), prints[l].digest.clone()));
        }
    }
    Ok(out)
}

/// What every layer of one build shares.
struct RunCtx<'a> {
    ws: &'a Workspace,
    system: Option<&'a System>,
    /// The labels of the run, and their full fingerprints once computed
    /// (when the memo served digests and a layer turns out to need
    /// building after all: its image vanished meanwhile).
    labels: &'a [Label],
    full: &'a std::sync::OnceLock<std::result::Result<BTreeMap<Label, Fingerprint>, String>>,
    /// Image names in storage when the run began (`None`: unknown), so a
    /// layer to build asks about an image of its name only if there is one.
    names: &'a Mutex<Option<HashMap<String, String>>>,
    isolation: &'a str,
    executor: &'a dyn Backend,
    reporter: &'a dyn Reporter,
    cache: &'a Mutex<Cache>,
    images: &'a Mutex<HashSet<String>>,
    image_of: &'a Mutex<BTreeMap<Label, String>>,
    registry: Option<&'a RegistryUse<'a>>,
}

fn build_one(run: &RunCtx<'_>, fp: &Fingerprint) -> std::result::Result<Done, Failed> {
    let RunCtx {
        ws,
        system,
        labels: _,
        full: _,
        names: _,
        isolation,
        executor,
        reporter,
        cache,
        images,
        image_of,
        registry,
    } = *run;
    let label = &fp.label;
    let label_s = label.to_string();
    let fail = |e: Error| {
        let (message, hint) = e.message_and_hint();
        reporter.failed(&label_s, &message);
        Failed {
            message,
            container: None,
            log: None,
            environment: true,
            hint,
        }
    };

    // Look the digest up right before starting: another process (or an
    // earlier layer of this run) may have built it since the plan was made.
    if let Some(done) = reuse_cached(run, fp, false).map_err(fail)? {
        return Ok(done);
    }
    if crate::interrupt::requested() {
        let message = "not started: the build was interrupted".to_string();
        reporter.failed(&label_s, &message);
        return Err(Failed {
            message,
            container: None,
            log: None,
            environment: false,
            hint: None,
        });
    }
    let full_fp;
    let fp = if fp.light {
        full_fp = run.full_print(fp).map_err(|message| {
            reporter.failed(&label_s, &message);
            Failed {
                message,
                container: None,
                log: None,
                environment: false,
                hint: None,
            }
        })?;
        &full_fp
    } else {
        fp
    };
    // A miss: build it holding the digest's lock, so concurrent layerbuilds
    // build each digest once. Whoever waited looks again afterwards.
    let mut waited = false;
    let _lock = DigestLock::acquire(&ws.cache_dir, &fp.digest, &label_s, &mut |h| {
        waited = true;
        reporter.println(&waiting_line(&label_s, h));
    })
    .map_err(fail)?;
    if let Some(done) = reuse_cached(run, fp, true).map_err(fail)? {
        return Ok(done);
    }
    if waited {
        // Whoever held the lock may have committed meanwhile.
        *run.names.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
    if let Some(done) = adopt_committed(run, fp) {
        return Ok(done);
    }

    if let Some(reg) = registry
        && let Some(done) = try_pull(run, reg, fp)
    {
        return Ok(done);
    }

    let layer = &ws.layers[label];
    let from = match &layer.parent {
        Parent::Scratch => None,
        Parent::Image(r) => Some(r.clone()),
        Parent::Layer(p) => Some(
            image_of
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(p)
                .cloned()
                .ok_or_else(|| fail(Error::env(format!("internal: parent {p} has no image"))))?,
        ),
    };
    let started_at = now_secs();
    let image = image_name(ws, label, &fp.digest);
    let container = container_name(ws, label, &fp.digest);
    let log_path = new_log_path(ws, label, started_at, &fp.digest, "");
    let work_dir = ws.cache_dir.join("tmp").join(&container);
    let req = BuildRequest {
        image_name: image.clone(),
        container_name: container.clone(),
        from,
        log_path: log_path.clone(),
        work_dir: work_dir.clone(),
        reuse_container: false,
        secrets: fp.secrets.clone(),
        play: with_vault_files(ws, play_request(ws, system, label), fp),
        ..request(ws, system, label, &fp.digest, isolation)
    };

    // Before the container exists: `gc` removes a working container whose
    // owner.pid is missing or names a dead process, so it must never see
    // this build's container without it.
    write_owner_pid(&work_dir).map_err(fail)?;
    reporter.started(&label_s, &fp.digest);
    let t0 = Instant::now();
    let outcome = executor.build(&req, reporter);
    let elapsed = t0.elapsed();
    let record = BuildRecord {
        label: &label_s,
        system: system.map(|s| s.name.as_str()),
        digest: &fp.digest,
        manifest: &fp.manifest,
        started_at,
        duration: elapsed,
        log_path: Some(&log_path),
        vars: &fp.vars,
        inventory: fp.inventory.as_deref(),
        source: "built",
    };
    match outcome {
        Ok(out) => {
            let recorded = cache
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .record_built(&record, &out.image_id, &image);
            if let Err(e) = recorded {
                reporter.failed(
                    &label_s,
                    &format!("built, but could not record it in the cache: {e}"),
                );
                return Err(Failed {
                    message: format!("could not record in the cache: {e}"),
                    container: None,
                    log: Some(log_path),
                    environment: true,
                    hint: None,
                });
            }
            let _ = std::fs::remove_dir_all(&work_dir);
            images
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(out.image_id.clone());
            if let Some(reg) = registry
                && reg.mode == CacheMode::ReadWrite
                && reg.usable()
            {
                let reference = reg.reference(label, &fp.digest);
                if let Err(e) = reg
                    .client
                    .push(&out.image_id, &reference, reg.tls_verify)
                    .map_err(|e| e.to_string())
                {
                    reg.warn(format!(
                        "{label_s}: push to {reference} failed ({}); the build itself succeeded",
                        e.lines().last().unwrap_or(&e)
                    ));
                }
            }
            reporter.built(&label_s, elapsed);
            Ok(Done::Built {
                image_id: out.image_id,
                image_name: image,
                elapsed,
                log: log_path,
            })
        }
        Err(f) => {
            let _ = cache
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .record_failed(&record, f.container.as_deref(), &f.message);
            reporter.failed(&label_s, &f.message);
            let mut text = String::new();
            let tail = log_tail(&log_path, 15);
            if !tail.is_empty() {
                text.push_str(&format!(
                    "---- last lines of {} ----\n{tail}\n----\n",
                    ws.display_path(&log_path)
                ));
            }
            if let Some(c) = &f.container {
                text.push_str(&format!(
                    "  the working container is kept; enter it with:\n    {}\n  remove it with: {}",
                    executor.tool_command(&format!("run --isolation {isolation} {c} sh")),
                    executor.tool_command(&format!("rm {c}"))
                ));
            }
            if !text.is_empty() {
                reporter.println(&text);
            }
            Err(Failed {
                message: f.message,
                container: f.container,
                log: Some(log_path),
                environment: false,
                hint: None,
            })
        }
    }
}

impl RunCtx<'_> {
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
                crate::fingerprint::short(&fp.digest)
            ));
        }
        Ok(fp)
    }
}

/// The cached image of `fp`'s digest, if the cache has a row and storage
/// the image. A row whose image was deleted is a miss, not an error; with
/// `repair` (the digest's lock held) the row is deleted.
fn reuse_cached(run: &RunCtx<'_>, fp: &Fingerprint, repair: bool) -> Result<Option<Done>> {
    let label_s = fp.label.to_string();
    let hit = run
        .cache
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .lookup(&fp.digest)?;
    let Some(row) = hit else { return Ok(None) };
    let mut present = run
        .images
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .contains(&row.image_id);
    if !present {
        // The store may have changed since the run began.
        if let Ok(fresh) = run.executor.images() {
            present = fresh.contains(&row.image_id);
            *run.images.lock().unwrap_or_else(|e| e.into_inner()) = fresh;
        }
    }
    if present {
        // The row is a file anyone may edit: its image must be this
        // layer's build. The listing shows it when a name layerbuild gives
        // only to this layer's builds of this digest (its local name, or
        // the registry reference it was pulled as) is on that image;
        // otherwise its labels are read (a retagged or renamed image, an
        // edited row).
        let names = run.names.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let on_image = |name: &str| names.as_ref().and_then(|n| n.get(name)) == Some(&row.image_id);
        let own = image_name(run.ws, &fp.label, &fp.digest);
        let trusted = [own.as_str(), row.image_name.as_str()]
            .into_iter()
            .any(|n| on_image(n) && names_build(n, &fp.label, &fp.digest))
            || super::cache::committed_build(run.executor, &row.image_id, &fp.label, &fp.digest)
                .is_some_and(|m| m.id == row.image_id);
        if trusted {
            // Report a name only while it still names this image.
            let image_name = [row.image_name.as_str(), own.as_str()]
                .into_iter()
                .find(|n| on_image(n))
                .map_or_else(|| row.image_id.clone(), str::to_string);
            run.reporter.cached(&label_s, &row.image_id);
            return Ok(Some(Done::Cached {
                image_id: row.image_id,
                image_name,
            }));
        }
        run.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .forget_layer(&fp.digest)?;
        run.reporter.println(&format!(
            "{label_s}: the cache names image {} for it, which is not its build (its labels say otherwise); building it again",
            crate::fingerprint::short(&row.image_id)
        ));
        return Ok(None);
    }
    if repair {
        run.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .forget_layer(&fp.digest)?;
        run.reporter.println(&format!(
            "{label_s}: its cached image {} is gone from container storage; building it again",
            row.image_name
        ));
    }
    Ok(None)
}

/// Is `name` one layerbuild gives only to `label`'s builds of `digest`:
/// `…/TYPE/LAYER:TAG` with a tag of 12 or more leading characters of the
/// digest (the local name, a registry reference)?
fn names_build(name: &str, label: &Label, digest: &str) -> bool {
    let Some((repo, tag)) = name.rsplit_once(':') else {
        return false;
    };
    let path = format!(
        "/{}/{}",
        label.image_type().to_lowercase(),
        label.layer().to_lowercase()
    );
    tag.len() >= 12 && digest.starts_with(tag) && repo.ends_with(&path)
}

/// After a build was killed between `buildah commit` and its cache record,
/// its image is in storage under this digest's name and label but has no
/// row: record it (source `adopted`) instead of building again. A layer
/// with image tests gets that name only after they passed (it is committed
/// as `NAME-untested`). Anything unexpected (inspect failing) means building.
fn adopt_committed(run: &RunCtx<'_>, fp: &Fingerprint) -> Option<Done> {
    let label = &fp.label;
    let name = image_name(run.ws, label, &fp.digest);
    // No image of that name when the run began: none to adopt, without
    // asking storage (a `buildah inspect` per layer built). When this run
    // waited for the digest's lock the names are unknown and storage is
    // asked. An image committed by a process that died between our listing
    // and our lock, without our waiting, is built again: wasted work, never
    // a wrong image.
    let named = run
        .names
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .map(|n| n.contains_key(&name));
    if named == Some(false) {
        return None;
    }
    let meta = super::cache::committed_build(run.executor, &name, label, &fp.digest)?;
    let label_s = label.to_string();
    let record = BuildRecord {
        label: &label_s,
        system: run.system.map(|s| s.name.as_str()),
        digest: &fp.digest,
        manifest: &fp.manifest,
        started_at: meta.created.unwrap_or_else(now_secs),
        duration: Duration::ZERO,
        log_path: None,
        vars: &fp.vars,
        inventory: fp.inventory.as_deref(),
        source: "adopted",
    };
    run.cache
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .record_built(&record, &meta.id, &name)
        .ok()?;
    run.images
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(meta.id.clone());
    run.reporter.println(&format!(
        "{label_s}: adopted {name}: already in container storage with this digest (an interrupted build, or another copy of the workspace), not recorded here"
    ));
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

fn write_owner_pid(work_dir: &std::path::Path) -> Result<()> {
    std::fs::create_dir_all(work_dir).map_err(|e| Error::io(work_dir, e))?;
    let p = work_dir.join(OWNER_PID_FILE);
    std::fs::write(&p, format!("{}\n", std::process::id())).map_err(|e| Error::io(&p, e))
}

fn log_tail(path: &std::path::Path, n: usize) -> String {
    let Ok(text) = std::fs::read_to_string(path) else {
        return String::new();
    };
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
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
        out.push_str(&format!(
            "{} built, {} pulled, {} up to date, {} failed, {} skipped in {elapsed}\n",
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
    for l in report
        .layers
        .iter()
        .filter(|l| l.status == "failed" && !l.environment)
    {
        if let Some(e) = &l.error {
            out.push_str(&format!("{} failed: {e}\n", l.label));
        }
    }
    out
}

/// Schema version of `build --dry-run --json`.
pub const PLAN_VERSION: u32 = 1;

#[derive(Debug, Serialize)]
pub struct PlanReport {
    pub version: u32,
    pub system: Option<String>,
    /// In topological order.
    pub layers: Vec<PlannedLayer>,
    pub dirty: usize,
    pub fresh: usize,
}

#[derive(Debug, Serialize)]
pub struct PlannedLayer {
    pub label: String,
    pub digest: String,
    /// `fresh` (an image would be reused) or `dirty` (would be built).
    pub status: &'static str,
    /// One line: the first root cause, or the image that would be reused.
    pub reason: String,
    pub image_name: Option<String>,
    pub freshness: crate::plan::Freshness,
}

/// `build --dry-run`: what a build would do, without building.
pub fn plan(ctx: &Context, opts: &BuildOptions, executor: &dyn Backend) -> Result<PlanReport> {
    let ws = &ctx.ws;
    let system = ws.system(opts.system.as_deref())?;
    let labels = ctx.graph.select(&opts.patterns)?;
    // Digests from the memo when nothing changed; whole manifests only
    // when a layer has a build history to explain a change against (none
    // without a cache).
    let cache = Cache::open_existing(&ws.db_path())?;
    let want = match cache {
        Some(_) => Want::Digests,
        None => Want::DigestsOnly,
    };
    let fp = crate::ops::fingerprints(ws, system, &labels, want)?;
    let images = match &cache {
        Some(_) => Some(executor.images()?),
        None => None,
    };
    let sys = system.map(|s| s.name.as_str());
    let prints = match (&cache, fp.source) {
        (Some(c), Source::Memo) => {
            let lookup = crate::plan::HistoryLookup::new(Some(c), &fp.prints);
            let mut all_fresh = true;
            for fp in fp.prints.values() {
                let f = crate::plan::freshness(Some(c), images.as_ref(), fp, sys, &lookup, false)?;
                if !matches!(f, crate::plan::Freshness::Fresh { .. }) {
                    all_fresh = false;
                    break;
                }
            }
            if all_fresh {
                fp.prints
            } else {
                crate::ops::fingerprints(ws, system, &labels, Want::Manifests)?.prints
            }
        }
        _ => fp.prints,
    };
    let lookup = crate::plan::HistoryLookup::new(cache.as_ref(), &prints);
    let mut report = PlanReport {
        version: PLAN_VERSION,
        system: sys.map(str::to_string),
        layers: vec![],
        dirty: 0,
        fresh: 0,
    };
    for l in &labels {
        let fp = &prints[l];
        let f = crate::plan::freshness(cache.as_ref(), images.as_ref(), fp, sys, &lookup, false)?;
        let label = l.to_string();
        let (status, image_name) = match &f {
            crate::plan::Freshness::Fresh { image_name, .. } => {
                report.fresh += 1;
                ("fresh", Some(image_name.clone()))
            }
            crate::plan::Freshness::Dirty { .. } => {
                report.dirty += 1;
                ("dirty", None)
            }
        };
        report.layers.push(PlannedLayer {
            reason: f.one_line(&label),
            label,
            digest: fp.digest.clone(),
            status,
            image_name,
            freshness: f,
        });
    }
    Ok(report)
}

pub fn render_plan(p: &PlanReport) -> String {
    let width = p.layers.iter().map(|l| l.label.len()).max().unwrap_or(0);
    let mut s = String::new();
    for l in &p.layers {
        s.push_str(&format!(
            "{:width$}  {:<5}  {}\n",
            l.label, l.status, l.reason
        ));
    }
    s.push_str(&format!("{} to build, {} up to date\n", p.dirty, p.fresh));
    s
}

#[derive(Debug, Serialize)]
pub struct FromFailedReport {
    pub version: u32,
    pub label: String,
    pub container: String,
    /// `succeeded` or `failed`.
    pub status: &'static str,
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
        status: "succeeded",
        cached: false,
        error: None,
        log: log.clone(),
    };
    match outcome {
        Ok(_) => reporter.built(&label_s, elapsed),
        Err(f) => {
            let record = BuildRecord {
                label: &label_s,
                system: sys,
                digest: &fp.digest,
                manifest: &fp.manifest,
                started_at,
                duration: elapsed,
                log_path: Some(&log_path),
                vars: &fp.vars,
                inventory: fp.inventory.as_deref(),
                source: "built",
            };
            let _ = cache.record_failed(&record, Some(&container), &f.message);
            reporter.failed(&label_s, &f.message);
            let tail = log_tail(&log_path, 15);
            if !tail.is_empty() {
                reporter.println(&format!("---- last lines of {log} ----\n{tail}\n----"));
            }
            report.status = "failed";
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

/// The request for building `label` at `digest`, with the fields that
/// depend on the attempt (names, paths, parent image) left empty.
fn request(
    ws: &Workspace,
    system: Option<&System>,
    label: &Label,
    digest: &str,
    isolation: &str,
) -> BuildRequest {
    let layer = &ws.layers[label];
    BuildRequest {
        label: label.to_string(),
        digest: digest.to_string(),
        image_name: String::new(),
        container_name: String::new(),
        from: None,
        workspace_root: ws.root.clone(),
        isolation: isolation.to_string(),
        setup: layer.setup.clone(),
        packages: layer.packages.clone(),
        package_command: layer
            .package_command
            .clone()
            .unwrap_or_else(|| ws.build.package_command.clone()),
        scripts: layer.scripts.iter().map(|s| ws.root.join(s)).collect(),
        run: layer.run.clone(),
        play: play_request(ws, system, label),
        tests: layer.tests.clone(),
        timestamp: ws.build.reproducible.then_some(ws.build.source_date_epoch),
        log_path: PathBuf::new(),
        work_dir: PathBuf::new(),
        reuse_container: false,
        secrets: Default::default(),
    }
}

/// `play` with the fingerprint's files of vault data.
fn with_vault_files(
    ws: &Workspace,
    play: Option<PlayRequest>,
    fp: &Fingerprint,
) -> Option<PlayRequest> {
    play.map(|p| PlayRequest {
        vault_files: fp.vault_files.iter().map(|f| ws.root.join(f)).collect(),
        ..p
    })
}

pub(crate) fn play_request(
    ws: &Workspace,
    system: Option<&System>,
    label: &Label,
) -> Option<PlayRequest> {
    let layer = &ws.layers[label];
    layer.playbook.as_ref().map(|pb| {
        let source = layer.source.as_deref().unwrap_or(".");
        PlayRequest {
            source_dir: ws.root.join(source),
            playbook: pb.clone(),
            host_name: label.slug(),
            groups: layer.groups.clone(),
            inventory: system
                .and_then(|s| s.inventory.as_ref())
                .map(|i| ws.root.join(i)),
            vars: system
                .map(|s| s.vars.clone().into_iter().collect())
                .unwrap_or_default(),
            roles_path: layer.roles_path.iter().map(|r| ws.root.join(r)).collect(),
            connection: crate::executor::Connection::parse(
                layer
                    .ansible_connection
                    .as_deref()
                    .unwrap_or(&ws.build.ansible_connection),
            ),
            vault_files: vec![],
        }
    })
}

/// A fresh log file name per build attempt: logs are kept, never overwritten.
pub(crate) fn new_log_path(
    ws: &Workspace,
    label: &Label,
    started_at: i64,
    digest: &str,
    suffix: &str,
) -> PathBuf {
    let dir = ws
        .cache_dir
        .join("logs")
        .join(label.image_type())
        .join(label.layer());
    let stamp = super::format_time(started_at)
        .replace([' ', ':'], "")
        .replace('-', "");
    let mut n = 1;
    loop {
        let extra = if n == 1 {
            String::new()
        } else {
            format!("-{n}")
        };
        let p = dir.join(format!(
            "{stamp}-{}{suffix}{extra}.log",
            crate::fingerprint::short(digest)
        ));
        if !p.exists() {
            return p;
        }
        n += 1;
    }
}

/// On a local miss, takes the layer from the shared registry if it holds an
/// image whose digest label is exactly this digest. Anything else (absent,
/// wrong label, pull failure) falls back to building; a mismatched entry is
/// never used.
fn try_pull(run: &RunCtx<'_>, reg: &RegistryUse<'_>, fp: &Fingerprint) -> Option<Done> {
    if !reg.usable() {
        return None;
    }
    let label = &fp.label;
    let label_s = label.to_string();
    let reference = reg.reference(label, &fp.digest);
    let entry = reg
        .entries
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&fp.digest)
        .cloned();
    match entry {
        Some(RegistryEntry::Present { label: found }) if found == fp.digest => {}
        Some(RegistryEntry::Present { label: found }) => {
            reg.warn(format!(
                "{label_s}: rejected {reference}: its digest label is '{found}', not the expected digest; building it here"
            ));
            return None;
        }
        _ => return None,
    }
    let started_at = now_secs();
    let t0 = Instant::now();
    let image_id = match reg
        .client
        .pull(&reference, reg.tls_verify)
        .map_err(|e| e.to_string())
    {
        Ok(id) => id,
        Err(e) => {
            reg.warn(format!(
                "{label_s}: pull of {reference} failed ({}); building it here",
                e.lines().last().unwrap_or(&e)
            ));
            return None;
        }
    };
    // Check what was pulled, not only what was advertised.
    match reg.client.digest_label(&image_id) {
        Ok(l) if l == fp.digest => {}
        Ok(l) => {
            reg.warn(format!(
                "{label_s}: rejected the image pulled from {reference}: its digest label is '{l}'; building it here"
            ));
            return None;
        }
        Err(e) => {
            reg.warn(format!("{label_s}: cannot inspect the image pulled from {reference} ({e}); building it here"));
            return None;
        }
    }
    let record = BuildRecord {
        label: &label_s,
        system: run.system.map(|s| s.name.as_str()),
        digest: &fp.digest,
        manifest: &fp.manifest,
        started_at,
        duration: t0.elapsed(),
        log_path: None,
        vars: &fp.vars,
        inventory: fp.inventory.as_deref(),
        source: "pulled",
    };
    if let Err(e) = run
        .cache
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .record_built(&record, &image_id, &reference)
    {
        reg.warn(format!(
            "{label_s}: pulled, but could not record it in the cache ({e}); building it here"
        ));
        return None;
    }
    run.images
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(image_id.clone());
    run.reporter.pulled(&label_s, &reference);
    Some(Done::Pulled {
        image_id,
        reference,
    })
}

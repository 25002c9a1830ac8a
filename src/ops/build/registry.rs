//! How a build uses the shared registry cache: look every missing digest
//! up before building, pull an entry whose digest label is exactly the
//! digest, push what was built (read-write mode), and fall back to local
//! builds, with one warning, when the registry cannot be reached. The
//! registry is reached through the backend's [`Registry`]; no I/O here.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use super::attempt::RunCtx;
use super::report::Done;
use super::request::record;
use crate::digest::Digest;
use crate::executor::{Registry, RegistryEntry};
use crate::fingerprint::Fingerprint;
use crate::label::Label;
use crate::ops::now_secs;
use crate::workspace::CacheMode;

/// A layer built in read-write mode that did not reach the registry, and why.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NotPushed {
    pub label: String,
    pub reason: String,
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
    entries: Mutex<HashMap<Digest, RegistryEntry>>,
    warnings: Mutex<Vec<String>>,
    /// Layers pushed.
    pushed: std::sync::atomic::AtomicUsize,
    /// Layers built in read-write mode that did not reach the registry.
    not_pushed: Mutex<Vec<NotPushed>>,
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
            pushed: Default::default(),
            not_pushed: Mutex::new(vec![]),
        }
    }

    /// `<registry>/<type>/<layer>:<digest>`: one repository per label, tagged by digest.
    pub fn reference(&self, label: &Label, digest: &Digest) -> String {
        format!(
            "{}/{}/{}:{digest}",
            self.url,
            label.image_type().to_lowercase(),
            label.layer().to_lowercase()
        )
    }

    /// Does the registry hold an entry of exactly this digest?
    pub(super) fn holds(&self, digest: &Digest) -> bool {
        self.usable()
            && matches!(self.entries.lock().unwrap_or_else(|e| e.into_inner()).get(digest),
                Some(RegistryEntry::Present { label }) if label == digest)
    }

    /// Pushes a layer built here (read-write mode), saying it as a step
    /// of the layer; a failure is a warning.
    pub(super) fn push_built(
        &self,
        label: &Label,
        digest: &Digest,
        image_id: &str,
        steps: &dyn crate::executor::StepSink,
    ) {
        if self.mode != CacheMode::ReadWrite {
            return;
        }
        steps.step(
            &label.to_string(),
            &format!("push {}", self.reference(label, digest)),
        );
        if !self.usable() {
            self.not_pushed(label, "the registry is unreachable");
            return;
        }
        let reference = self.reference(label, digest);
        match self
            .client
            .push(image_id, &reference, self.tls_verify)
            .map_err(|e| e.to_string())
        {
            Ok(()) => {
                self.pushed
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            Err(e) => {
                // Said once, by the build's error naming what was not pushed.
                let why = e.lines().last().unwrap_or(&e).to_string();
                self.not_pushed(label, &why);
            }
        }
    }

    /// A layer built in read-write mode that did not reach the registry.
    fn not_pushed(&self, label: &Label, why: &str) {
        self.not_pushed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(NotPushed {
                label: label.to_string(),
                reason: why.to_string(),
            });
    }

    /// The layers pushed, and those built but not pushed, so far.
    pub fn pushes(&self) -> (usize, Vec<NotPushed>) {
        (
            self.pushed.load(std::sync::atomic::Ordering::SeqCst),
            self.not_pushed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
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
    pub fn lookup_all(&self, wanted: &[(Label, Digest)]) -> HashMap<Digest, RegistryEntry> {
        self.prefetch(wanted);
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The warnings so far.
    pub fn warnings(&self) -> Vec<String> {
        self.warnings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn take_warnings(&self) -> Vec<String> {
        std::mem::take(&mut *self.warnings.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Looks every digest up, a few requests at a time.
    pub(super) fn prefetch(&self, wanted: &[(Label, Digest)]) {
        if !self.usable() || wanted.is_empty() {
            return;
        }
        let results: Mutex<Vec<(Digest, std::result::Result<RegistryEntry, String>)>> =
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

/// On a local miss, takes the layer from the shared registry if it holds an
/// image whose digest label is exactly this digest. Anything else (absent,
/// wrong label, pull failure) falls back to building; a mismatched entry is
/// never used.
pub(super) fn try_pull(run: &RunCtx<'_>, reg: &RegistryUse<'_>, fp: &Fingerprint) -> Option<Done> {
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
    run.reporter.step(&label_s, &format!("pull {reference}"));
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
    // The architecture too: before layerbuild knew architectures, a layer
    // built on an aarch64 machine was pushed under the digest its x86_64
    // build has now (x86_64 digests did not change).
    let expected = run.ws.arch.oci();
    match reg.client.image_arch(&image_id) {
        Ok(Some(a)) if crate::arch::Arch::parse(&a) != Some(run.ws.arch) => {
            reg.warn(format!(
                "{label_s}: rejected the image pulled from {reference}: its architecture is {a}, not {expected} ({}), most likely pushed by a layerbuild that did not know architectures; building it here",
                run.ws.arch
            ));
            let _ = run.executor.remove_image(&reference);
            return None;
        }
        Ok(_) => {}
        Err(e) => {
            reg.warn(format!("{label_s}: cannot inspect the image pulled from {reference} ({e}); building it here"));
            return None;
        }
    }
    let rec = record(
        &label_s,
        run.system,
        fp,
        started_at,
        t0.elapsed(),
        None,
        crate::status::RecordSource::Pulled,
    );
    if let Err(e) = run.cache().record_built(&rec, &image_id, &reference) {
        reg.warn(format!(
            "{label_s}: pulled, but could not record it in the cache ({e}); building it here"
        ));
        return None;
    }
    run.shared().images.insert(image_id.clone());
    run.reporter.pulled(&label_s, &reference);
    Some(Done::Pulled {
        image_id,
        reference,
    })
}

//! `layerbuild promote` and `layerbuild releases`: a release is a tag
//! (`<registry>/<type>/<layer>:<release>`) pointed at the image a layer's
//! content tag (`...:<digest>`) names in the shared registry, the exact
//! bytes that were tested, with no rebuild and no upload: a manifest copy
//! within the registry. Only a digest that is built (its cache row: its
//! image tests and boot tests passed, as failures are never cached) and
//! pushed (its content tag there, labelled with the digest) is promoted,
//! and a release tag holding another digest moves only with `force`.
//! Every promotion is recorded in the cache.
//!
//! The decisions are pure ([`check_release_name`], [`decide`]); I/O: the
//! cache database, and the registry through the backend's [`Registry`].

use serde::Serialize;

use super::Context;
use crate::cache::{Cache, ReleaseRecord};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::executor::{Registry, RegistryEntry, ToolError};
use crate::label::{Label, Pattern};
use crate::status::{PromoteStatus, RecordStatus};

/// What `promote` is asked.
pub struct PromoteOptions {
    pub label: Label,
    pub system: Option<String>,
    /// The release tag.
    pub release: String,
    /// A digest (or unique prefix) of the layer's to promote instead of its current one.
    pub digest: Option<String>,
    /// `--registry`, else `[cache] registry`.
    pub registry: Option<String>,
    pub dry_run: bool,
    pub force: bool,
    /// Who promotes ([`promoter`]).
    pub by: String,
}

/// How a promotion went (`promote --json`).
#[derive(Debug, Serialize)]
pub struct Promotion {
    pub version: u32,
    pub release: String,
    pub label: String,
    pub system: Option<String>,
    pub digest: Digest,
    /// The release tag.
    pub reference: String,
    /// The content tag it points at.
    pub source: String,
    /// The manifest digest both tags name.
    pub manifest_digest: String,
    /// The layer digest the release tag held before, when it held another.
    pub previous: Option<Digest>,
    pub status: PromoteStatus,
    pub dry_run: bool,
    /// Unix time, seconds (the promotion recorded; `null` when nothing moved).
    pub promoted_at: Option<i64>,
    pub promoted_by: String,
    /// A release of several architectures: each one's image (the release
    /// tag names a manifest list of them, `manifest_digest` the list's).
    /// Empty for a release of one.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub architectures: Vec<ArchImage>,
}

/// One architecture's image in a release's manifest list.
#[derive(Debug, Clone, Serialize)]
pub struct ArchImage {
    pub arch: crate::arch::Arch,
    pub digest: Digest,
    /// Its content tag.
    pub source: String,
    /// Its manifest: the list's entry.
    pub manifest_digest: String,
    /// The layer digest the release held for this architecture before,
    /// when another (`None`: the same, or none).
    pub previous: Option<Digest>,
}

/// Who promotes: the CI job (`CI_JOB_URL`), else the user (`USER`), else `unknown`.
pub fn promoter(ci_job_url: Option<&str>, user: Option<&str>) -> String {
    [ci_job_url, user]
        .into_iter()
        .flatten()
        .map(str::trim)
        .find(|s| !s.is_empty())
        .unwrap_or("unknown")
        .to_string()
}

/// A release name is an OCI tag (`[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`),
/// and not a full layer digest, which would be a content tag.
pub fn check_release_name(name: &str) -> Result<()> {
    let hint = "a release name is a tag: letters, digits, `_`, `.` and `-`, at most 128 characters, not starting with `.` or `-` (e.g. stable, 2026.12)";
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !first_ok || !rest_ok || name.len() > 128 {
        return Err(Error::input(format!("'{name}' is not a valid release name")).with_hint(hint));
    }
    if Digest::from(name).is_full() {
        return Err(Error::input(format!(
            "'{name}' is a layer digest: the registry's content tags are digests"
        ))
        .with_hint("name the release, e.g. stable or 2026.12"));
    }
    Ok(())
}

/// `<registry>/<type>/<layer>:<tag>`: the repository the shared cache
/// pushes `label` to (as the build does), at `tag`.
pub fn reference(registry: &str, label: &Label, tag: &str) -> String {
    format!(
        "{registry}/{}/{}:{tag}",
        label.image_type().to_lowercase(),
        label.layer().to_lowercase()
    )
}

/// What the registry holds, as [`decide`] needs it.
pub struct Held {
    /// The content tag's `layerbuild.digest` label (`None`: no such tag).
    pub content: Option<Digest>,
    /// The release tag's label (`None`: no such tag; an empty digest: an
    /// image without the label).
    pub release: Option<Digest>,
    /// Do both tags name the same manifest?
    pub same_manifest: bool,
}

/// What to do, or why not.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// Copy the manifest; the tag held `previous` (another layer digest) before.
    Promote {
        previous: Option<Digest>,
    },
    UpToDate,
    /// The content tag is missing.
    NotPushed,
    /// The content tag names an image of another digest.
    ContentMislabelled(Digest),
    /// The release tag holds another digest, and `force` was not given.
    Held(Digest),
}

/// Whether the release tag may point at the content tag of `digest`.
pub fn decide(digest: &Digest, held: &Held, force: bool) -> Decision {
    match &held.content {
        None => return Decision::NotPushed,
        Some(d) if d != digest => return Decision::ContentMislabelled(d.clone()),
        Some(_) => {}
    }
    match &held.release {
        None => Decision::Promote { previous: None },
        Some(d) if d == digest && held.same_manifest => Decision::UpToDate,
        // The same layer digest, another image (pushed again since): the
        // tag follows the content tag, no --force needed.
        Some(d) if d == digest => Decision::Promote { previous: None },
        Some(d) if force => Decision::Promote {
            previous: Some(d.clone()),
        },
        Some(d) => Decision::Held(d.clone()),
    }
}

/// A registry that could not be asked or refused: the tool's error, with
/// a hint for a plain-HTTP registry.
fn registry_error(e: ToolError, url: &str) -> Error {
    let plain_http = e
        .message()
        .contains("server gave HTTP response to HTTPS client");
    let e: Error = e.into();
    if plain_http {
        return e.with_hint(format!(
            "{url} speaks plain HTTP: set tls_verify = false under [cache] in Layerfile.toml"
        ));
    }
    e
}

pub fn promote(ctx: &Context, opts: &PromoteOptions, registry: &dyn Registry) -> Result<Promotion> {
    check_release_name(&opts.release)?;
    let ws = &ctx.ws;
    let label = &opts.label;
    let url = super::ci::registry_url(opts.registry.as_deref(), ws)?.ok_or_else(|| {
        Error::input("promote needs the shared registry, and none is set").with_hint(
            "give --registry host[:port]/path, or set registry under [cache] in Layerfile.toml",
        )
    })?;
    let tls = ws.cache.tls_verify;
    let system = ws.system(opts.system.as_deref())?;
    let system_name = system.map(|s| s.name.clone());
    let cache = Cache::open_existing(&ws.db_path())?;
    let digest = match &opts.digest {
        Some(prefix) => digest_of(cache.as_ref(), label, prefix)?,
        None => {
            let labels = ctx.graph.select(&[Pattern::Exact(label.clone())])?;
            let prints = super::fingerprints(
                ws,
                system,
                &labels,
                crate::fingerprint::session::Want::Digests,
            )?;
            prints.prints[label].digest.clone()
        }
    };
    check_built(cache.as_ref(), label, &digest, opts.digest.is_some())?;

    let source = reference(&url, label, digest.as_str());
    let target = reference(&url, label, &opts.release);
    let ask = |r: &str| -> Result<Option<Digest>> {
        match registry
            .lookup(r, tls)
            .map_err(|e| registry_error(e, &url))?
        {
            RegistryEntry::Present { label } => Ok(Some(label)),
            RegistryEntry::Absent => Ok(None),
        }
    };
    let manifest = |r: &str| -> Result<Option<String>> {
        registry
            .manifest_digest(r, tls)
            .map_err(|e| registry_error(e, &url))
    };
    let content = ask(&source)?;
    let source_manifest = match content {
        Some(_) => manifest(&source)?,
        None => None,
    };
    let release = ask(&target)?;
    let target_manifest = match release {
        Some(_) => manifest(&target)?,
        None => None,
    };
    let held = Held {
        content: content.filter(|_| source_manifest.is_some()),
        release,
        same_manifest: source_manifest.is_some() && source_manifest == target_manifest,
    };
    let short = digest.short();
    let previous = match decide(&digest, &held, opts.force) {
        Decision::NotPushed => {
            return Err(Error::refused(format!(
                "{label} at {short} is not in the registry: {source} does not exist"
            ))
            .with_hint(format!(
                "push it: a build in read-write cache mode pushes every layer it builds, or `layerbuild push {label} {source}{}`",
                if tls { "" } else { " --tls-verify=false" }
            )));
        }
        Decision::ContentMislabelled(other) => {
            return Err(Error::refused(format!(
                "{source} is not {label} at {short}: its image is labelled with digest {}",
                other.short()
            ))
            .with_hint(format!(
                "push the tested image again: `layerbuild push --force {label} {source}`"
            )));
        }
        Decision::Held(other) => {
            return Err(held_refusal(cache.as_ref(), opts, &target, &digest, &other));
        }
        Decision::UpToDate => None,
        Decision::Promote { previous } => Some(previous),
    };
    let source_manifest = source_manifest.unwrap_or_default();
    let mut report = Promotion {
        version: 1,
        release: opts.release.clone(),
        label: label.to_string(),
        system: system_name.clone(),
        digest: digest.clone(),
        reference: target.clone(),
        source: source.clone(),
        manifest_digest: source_manifest.clone(),
        previous: previous.clone().flatten(),
        status: PromoteStatus::UpToDate,
        dry_run: opts.dry_run,
        promoted_at: None,
        promoted_by: opts.by.clone(),
        architectures: vec![],
    };
    if previous.is_none() {
        return Ok(report);
    }
    check_arch(registry, &source, tls, ws.arch, label, &digest)
        .map_err(|e| registry_error(e, &url))??;
    if opts.dry_run {
        report.status = PromoteStatus::WouldPromote;
        return Ok(report);
    }
    registry
        .copy_tag(&source, &target, tls)
        .map_err(|e| registry_error(e, &url))?;
    let now = manifest(&target)?;
    if now.as_deref() != Some(source_manifest.as_str()) {
        return Err(Error::env(format!(
            "after the copy, {target} names manifest {}, not {source}'s {source_manifest}",
            now.as_deref().unwrap_or("(none)")
        ))
        .with_hint("another promotion may have moved it meanwhile: `layerbuild promote` again"));
    }
    let promoted_at = super::now_secs();
    let mut cache = Cache::open(&ws.db_path())?;
    cache.record_release(&ReleaseRecord {
        release: opts.release.clone(),
        label: label.to_string(),
        system: system_name,
        digest,
        reference: target,
        manifest_digest: source_manifest,
        previous: report.previous.clone(),
        promoted_at,
        promoted_by: opts.by.clone(),
        arch: ws.arch.name().to_string(),
    })?;
    report.status = PromoteStatus::Promoted;
    report.promoted_at = Some(promoted_at);
    Ok(report)
}

/// [`promote`] for a layer built for several architectures, one context
/// each (the first the default one): the release tag becomes a manifest
/// list of their content tags, written alone (no image is copied). Each
/// architecture is refused as [`promote`] refuses one; a release holding
/// other layer digests for any of them moves only with `force`.
pub fn promote_list(
    contexts: &[Context],
    opts: &PromoteOptions,
    registry: &dyn Registry,
) -> Result<Promotion> {
    check_release_name(&opts.release)?;
    if opts.digest.is_some() {
        return Err(Error::input(format!(
            "--digest names one architecture's image, and {} is built for several",
            opts.label
        ))
        .with_hint(
            "name the architecture too: --arch ARCH --digest DIGEST (a release of that one alone)",
        ));
    }
    let ws = &contexts[0].ws;
    let label = &opts.label;
    let url = super::ci::registry_url(opts.registry.as_deref(), ws)?.ok_or_else(|| {
        Error::input("promote needs the shared registry, and none is set").with_hint(
            "give --registry host[:port]/path, or set registry under [cache] in Layerfile.toml",
        )
    })?;
    let tls = ws.cache.tls_verify;
    let system_name = ws.system(opts.system.as_deref())?.map(|s| s.name.clone());
    let cache = Cache::open_existing(&ws.db_path())?;
    let target = reference(&url, label, &opts.release);
    let err = |e| registry_error(e, &url);
    // Each architecture's digest, built, pushed and labelled.
    let mut images: Vec<ArchImage> = vec![];
    for ctx in contexts {
        let ws = &ctx.ws;
        let system = ws.system(opts.system.as_deref())?;
        let labels = ctx.graph.select(&[Pattern::Exact(label.clone())])?;
        let prints = super::fingerprints(
            ws,
            system,
            &labels,
            crate::fingerprint::session::Want::Digests,
        )?;
        let digest = prints.prints[label].digest.clone();
        check_built(cache.as_ref(), label, &digest, false)?;
        let source = reference(&url, label, digest.as_str());
        let held = match registry.lookup(&source, tls).map_err(err)? {
            RegistryEntry::Present { label } => Some(label),
            RegistryEntry::Absent => None,
        };
        let manifest = match held {
            Some(_) => registry.manifest_digest(&source, tls).map_err(err)?,
            None => None,
        };
        let short = digest.short();
        let manifest = match (held, manifest) {
            (Some(l), Some(m)) if l == digest => m,
            (Some(l), Some(_)) => {
                return Err(Error::refused(format!(
                    "{source} is not {label} at {short} ({}): its image is labelled with digest {}",
                    ws.arch,
                    l.short()
                ))
                .with_hint(format!(
                    "push the tested image again: `layerbuild --arch {} push --force {label} {source}`",
                    ws.arch
                )));
            }
            _ => {
                return Err(Error::refused(format!(
                    "{label} at {short} ({}) is not in the registry: {source} does not exist",
                    ws.arch
                ))
                .with_hint(format!(
                    "push it: a build in read-write cache mode pushes every layer it builds, or `layerbuild --arch {} push {label} {source}`",
                    ws.arch
                )));
            }
        };
        check_arch(registry, &source, tls, ws.arch, label, &digest).map_err(err)??;
        images.push(ArchImage {
            arch: ws.arch,
            digest,
            source,
            manifest_digest: manifest,
            previous: None,
        });
    }
    // What the release holds now, architecture by architecture.
    let held_entries = registry.manifest_list(&target, tls).map_err(err)?;
    let mut same = held_entries.is_some();
    let mut moved = vec![];
    if let Some(entries) = &held_entries {
        let repository = target.rsplit_once(':').map(|(r, _)| r).unwrap_or(&target);
        let single = entries.is_empty();
        for image in &mut images {
            let entry = match single {
                // A release of one image (promoted before the layer had
                // several architectures): it holds the default one's.
                true => (image.arch == ws.arch).then(|| target.clone()),
                false => entries
                    .iter()
                    .find(|(a, _)| a == image.arch.oci())
                    .map(|(_, d)| format!("{repository}@{d}")),
            };
            let held_digest = match &entry {
                Some(r) => match registry.lookup(r, tls).map_err(err)? {
                    RegistryEntry::Present { label } => Some(label),
                    RegistryEntry::Absent => None,
                },
                None => None,
            };
            let held_manifest = match (single, &entry) {
                (false, Some(r)) => r.rsplit_once('@').map(|(_, d)| d.to_string()),
                _ => None,
            };
            if held_manifest.as_deref() != Some(image.manifest_digest.as_str()) {
                same = false;
            }
            if held_digest.as_ref() != Some(&image.digest) {
                image.previous = Some(held_digest.unwrap_or_default());
                moved.push(image.arch);
            }
        }
        if entries.len() > images.len() {
            same = false;
        }
    }
    let first = images[0].clone();
    let mut report = Promotion {
        version: 1,
        release: opts.release.clone(),
        label: label.to_string(),
        system: system_name.clone(),
        digest: first.digest.clone(),
        reference: target.clone(),
        source: first.source.clone(),
        manifest_digest: String::new(),
        previous: first.previous.clone(),
        status: PromoteStatus::UpToDate,
        dry_run: opts.dry_run,
        promoted_at: None,
        promoted_by: opts.by.clone(),
        architectures: images.clone(),
    };
    if same {
        report.manifest_digest = registry
            .manifest_digest(&target, tls)
            .map_err(err)?
            .unwrap_or_default();
        return Ok(report);
    }
    if held_entries.is_some() && !moved.is_empty() && !opts.force {
        let what: Vec<String> = images
            .iter()
            .filter_map(|i| {
                i.previous.as_ref().map(|p| match p.as_str().is_empty() {
                    true => format!("{}: no image of {label}", i.arch),
                    false => format!("{}: {}", i.arch, p.short()),
                })
            })
            .collect();
        return Err(Error::refused(format!(
            "release {} of {label} holds other images ({}), not {}: {target}",
            opts.release,
            what.join(", "),
            images
                .iter()
                .map(|i| format!("{}: {}", i.arch, i.digest.short()))
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .with_hint(format!(
            "--force moves it; `layerbuild why {label} --release {}` shows what changed since",
            opts.release
        )));
    }
    if opts.dry_run {
        report.status = PromoteStatus::WouldPromote;
        return Ok(report);
    }
    let sources: Vec<String> = images.iter().map(|i| i.source.clone()).collect();
    registry
        .put_manifest_list(&target, &sources, tls)
        .map_err(err)?;
    // The list written names exactly the tested images.
    let now = registry
        .manifest_list(&target, tls)
        .map_err(err)?
        .unwrap_or_default();
    let mut want: Vec<(String, String)> = images
        .iter()
        .map(|i| (i.arch.oci().to_string(), i.manifest_digest.clone()))
        .collect();
    let mut got = now.clone();
    want.sort();
    got.sort();
    if got != want {
        return Err(Error::env(format!(
            "after the push, {target} names {got:?}, not the tested images {want:?}"
        ))
        .with_hint("another promotion may have moved it meanwhile: `layerbuild promote` again"));
    }
    report.manifest_digest = registry
        .manifest_digest(&target, tls)
        .map_err(err)?
        .unwrap_or_default();
    let promoted_at = super::now_secs();
    let mut cache = Cache::open(&ws.db_path())?;
    for i in &images {
        cache.record_release(&ReleaseRecord {
            release: opts.release.clone(),
            label: label.to_string(),
            system: system_name.clone(),
            digest: i.digest.clone(),
            reference: target.clone(),
            manifest_digest: i.manifest_digest.clone(),
            previous: i.previous.clone().filter(|p| !p.as_str().is_empty()),
            promoted_at,
            promoted_by: opts.by.clone(),
            arch: i.arch.name().to_string(),
        })?;
    }
    report.status = PromoteStatus::Promoted;
    report.promoted_at = Some(promoted_at);
    Ok(report)
}

/// Refuses a content tag labelled with the digest but of another
/// architecture: before layerbuild knew architectures, an aarch64 machine
/// pushed its layers under the digests their x86_64 builds have now.
fn check_arch(
    registry: &dyn Registry,
    source: &str,
    tls: bool,
    arch: crate::arch::Arch,
    label: &Label,
    digest: &Digest,
) -> std::result::Result<Result<()>, ToolError> {
    let Some(a) = registry.remote_arch(source, tls)? else {
        return Ok(Ok(()));
    };
    if crate::arch::Arch::parse(&a) == Some(arch) {
        return Ok(Ok(()));
    }
    Ok(Err(Error::refused(format!(
        "{source} is not {label} at {} for {arch}: its image's architecture is {a}, not {} (pushed before layerbuild knew architectures?)",
        digest.short(),
        arch.oci()
    ))
    .with_hint(format!(
        "push the tested image again: `layerbuild --arch {arch} push --force {label} {source}`"
    ))))
}

/// The one digest of `label`'s builds that starts with `prefix`.
fn digest_of(cache: Option<&Cache>, label: &Label, prefix: &str) -> Result<Digest> {
    if prefix.is_empty() || !prefix.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(
            Error::input(format!("'{prefix}' is not a digest or digest prefix")).with_hint(
                format!("`layerbuild history {label}` lists its builds' digests"),
            ),
        );
    }
    let rows = match cache {
        Some(c) => c.build_of_digest(&label.to_string(), &prefix.to_lowercase())?,
        None => vec![],
    };
    let mut digests: Vec<Digest> = rows.into_iter().map(|r| r.digest).collect();
    digests.sort();
    digests.dedup();
    match digests.len() {
        0 => Err(Error::refused(format!(
            "{label} was never built at a digest starting with {prefix}"
        ))
        .with_hint(format!(
            "`layerbuild history {label}` lists its builds' digests"
        ))),
        1 => Ok(digests.remove(0)),
        _ => Err(Error::input(format!(
            "digest prefix {prefix} is ambiguous: {label} was built at {}",
            digests
                .iter()
                .map(|d| d.short().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .with_hint("give more digits")),
    }
}

/// Refuses a digest without a cache row: not built, or its build (steps,
/// image tests or boot tests) failed; a row means they all passed.
fn check_built(cache: Option<&Cache>, label: &Label, digest: &Digest, given: bool) -> Result<()> {
    let short = digest.short();
    let at = if given {
        format!("at {short}")
    } else {
        format!("at its current digest {short}")
    };
    let Some(cache) = cache else {
        return Err(not_built(label, &at, None));
    };
    if let Some(row) = cache.lookup(digest)? {
        if row.label == label.to_string() {
            return Ok(());
        }
        return Err(Error::input(format!(
            "digest {short} is {}'s, not {label}'s",
            row.label
        )));
    }
    let last = cache
        .build_of_digest(&label.to_string(), digest.as_str())?
        .into_iter()
        .next();
    let failure = last
        .filter(|r| r.status == RecordStatus::Failed.as_str())
        .map(|r| r.error.unwrap_or_else(|| "failed".into()));
    Err(not_built(label, &at, failure.as_deref()))
}

fn not_built(label: &Label, at: &str, failure: Option<&str>) -> Error {
    let why = match failure {
        Some(e) => format!(
            "its last build there failed: {}",
            e.lines().next().unwrap_or(e)
        ),
        None => "it was not built there (or its cache row was removed)".into(),
    };
    Error::refused(format!(
        "{label} is not built and tested {at}: {why}; only a layer whose build and tests passed is promoted"
    ))
    .with_hint(format!(
        "build it: `layerbuild build {label}` (a layer is cached only once its image tests and boot tests passed); `layerbuild why {label}` says what changed"
    ))
}

/// The refusal to move `target` off the digest `other` it holds.
fn held_refusal(
    cache: Option<&Cache>,
    opts: &PromoteOptions,
    target: &str,
    digest: &Digest,
    other: &Digest,
) -> Error {
    let label = opts.label.to_string();
    if other.as_str().is_empty() {
        return Error::refused(format!(
            "{target} already exists and is not a layerbuild image (no layerbuild.digest label)"
        ))
        .with_hint("--force replaces it");
    }
    let by = cache
        .and_then(|c| {
            c.releases(
                Some(std::slice::from_ref(&label)),
                Some(std::slice::from_ref(&opts.release)),
            )
            .ok()
        })
        .and_then(|rows| rows.into_iter().find(|r| &r.digest == other))
        .map(|r| {
            format!(
                " (promoted by {} at {})",
                r.promoted_by,
                super::format_time(r.promoted_at)
            )
        })
        .unwrap_or_default();
    Error::refused(format!(
        "release {} of {label} holds digest {}{by}, not {}: {target}",
        opts.release,
        other.as_str(),
        digest.short()
    ))
    .with_hint(format!(
        "--force moves it to {}; `layerbuild why {label} --release {}` shows what changed since",
        digest.short(),
        opts.release
    ))
}

/// What `releases` lists.
pub struct ReleasesOptions<'a> {
    /// Layers whose promotions to list (empty: every layer's).
    pub patterns: &'a [Pattern],
    /// Release names to list (empty: every release).
    pub names: &'a [String],
}

/// The recorded promotions, newest first.
pub fn releases(ctx: &Context, opts: &ReleasesOptions<'_>) -> Result<Vec<ReleaseRecord>> {
    let labels = super::matched_labels(&ctx.graph, opts.patterns)?;
    for n in opts.names {
        check_release_name(n)?;
    }
    let names = (!opts.names.is_empty()).then_some(opts.names);
    let Some(cache) = Cache::open_existing(&ctx.ws.db_path())? else {
        return Ok(vec![]);
    };
    cache.releases(labels.as_deref(), names)
}

/// The promotions as a table, newest first.
pub fn render_releases(rows: &[ReleaseRecord]) -> String {
    if rows.is_empty() {
        return "no promotion recorded\n".into();
    }
    let head = [
        "PROMOTED",
        "RELEASE",
        "LABEL",
        "SYSTEM",
        "DIGEST",
        "BY",
        "REFERENCE",
    ];
    let lines: Vec<[String; 7]> = rows
        .iter()
        .map(|r| {
            let digest = match &r.previous {
                Some(p) => format!("{} (was {})", r.digest.short(), p.short()),
                None => r.digest.short().to_string(),
            };
            [
                super::format_time(r.promoted_at),
                r.release.clone(),
                r.label.clone(),
                r.system.clone().unwrap_or_else(|| "-".into()),
                digest,
                r.promoted_by.clone(),
                r.reference.clone(),
            ]
        })
        .collect();
    let mut widths = head.map(str::len);
    for l in &lines {
        for (w, c) in widths.iter_mut().zip(l) {
            *w = (*w).max(c.chars().count());
        }
    }
    // An ARCH column once a release of another architecture than x86_64
    // is recorded.
    let arch = rows.iter().any(|r| r.arch != "x86_64");
    let with_arch = |mut cells: Vec<&'static str>, a: &'static str| {
        if arch {
            cells.insert(4, a);
        }
        cells
    };
    let head_cells = with_arch(head.to_vec(), "ARCH");
    let mut widths_all: Vec<usize> = widths.to_vec();
    if arch {
        let w = rows.iter().map(|r| r.arch.len()).max().unwrap_or(0).max(4);
        widths_all.insert(4, w);
    }
    let row = |cells: Vec<&str>| -> String {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = widths_all[i]));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = row(head_cells);
    for (l, r) in lines.iter().zip(rows) {
        let mut cells: Vec<&str> = l.iter().map(String::as_str).collect();
        if arch {
            cells.insert(4, r.arch.as_str());
        }
        out.push_str(&row(cells));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_names_are_tags_and_not_digests() {
        for ok in [
            "stable",
            "2026.12",
            "compute_v1",
            "_x",
            "a-b.c",
            &"a".repeat(128),
        ] {
            check_release_name(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in ["", ".x", "-x", "a/b", "a:b", "a b", "é", &"a".repeat(129)] {
            let e = check_release_name(bad).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad}");
        }
        assert!(
            check_release_name(&"ab".repeat(32))
                .unwrap_err()
                .to_string()
                .contains("layer digest")
        );
    }

    #[test]
    fn the_promoter_is_the_ci_job_else_the_user() {
        assert_eq!(
            promoter(Some("https://ci/j/1"), Some("ann")),
            "https://ci/j/1"
        );
        assert_eq!(promoter(Some(" "), Some("ann")), "ann");
        assert_eq!(promoter(None, None), "unknown");
    }

    #[test]
    fn a_release_moves_only_to_a_pushed_digest_and_off_another_only_with_force() {
        let (d, e) = (Digest::from("d"), Digest::from("e"));
        let held = |content: Option<&Digest>, release: Option<&Digest>, same: bool| Held {
            content: content.cloned(),
            release: release.cloned(),
            same_manifest: same,
        };
        assert_eq!(
            decide(&d, &held(None, None, false), true),
            Decision::NotPushed
        );
        assert_eq!(
            decide(&d, &held(Some(&e), None, false), true),
            Decision::ContentMislabelled(e.clone())
        );
        assert_eq!(
            decide(&d, &held(Some(&d), None, false), false),
            Decision::Promote { previous: None }
        );
        assert_eq!(
            decide(&d, &held(Some(&d), Some(&d), true), false),
            Decision::UpToDate
        );
        assert_eq!(
            decide(&d, &held(Some(&d), Some(&d), false), false),
            Decision::Promote { previous: None }
        );
        assert_eq!(
            decide(&d, &held(Some(&d), Some(&e), false), false),
            Decision::Held(e.clone())
        );
        assert_eq!(
            decide(&d, &held(Some(&d), Some(&e), false), true),
            Decision::Promote {
                previous: Some(e.clone())
            }
        );
    }
}

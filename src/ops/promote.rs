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
    };
    if previous.is_none() {
        return Ok(report);
    }
    // Labelled with the digest, but of the architecture built? Before
    // layerbuild knew architectures, an aarch64 machine pushed its layers
    // under the digests their x86_64 builds have now.
    if let Some(a) = registry
        .remote_arch(&source, tls)
        .map_err(|e| registry_error(e, &url))?
        && crate::arch::Arch::parse(&a) != Some(ws.arch)
    {
        return Err(Error::refused(format!(
            "{source} is not {label} at {short} for {}: its image's architecture is {a}, not {} (pushed before layerbuild knew architectures?)",
            ws.arch,
            ws.arch.oci()
        ))
        .with_hint(format!(
            "push the tested image again: `layerbuild push --force {label} {source}`"
        )));
    }
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
    })?;
    report.status = PromoteStatus::Promoted;
    report.promoted_at = Some(promoted_at);
    Ok(report)
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
    let row = |cells: Vec<&str>| -> String {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = row(head.to_vec());
    for l in &lines {
        out.push_str(&row(l.iter().map(String::as_str).collect()));
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

//! `layerbuild publish LABEL --release NAME`: a built and tested layer's
//! netboot export, published to S3-compatible storage (`[publish.s3]`).
//!
//! Two kinds of objects. Content-addressed ones,
//! `<prefix>/by-digest/<digest>/<arch>/{vmlinuz,initramfs.img,rootfs.squashfs,boot.json}`,
//! are uploaded once, each with its sha256 as metadata, read back and
//! checked, and skipped when the bucket already holds them. Release
//! pointers, `<prefix>/<release>/<arch>/{boot.ipxe,release.json}`, are
//! written only after every object they name is in place and checked:
//! `boot.ipxe` names the by-digest files by relative URL, and
//! `release.json` (written last) names their keys and sha256s. Each pointer
//! is one small object, replaced in one step, and names only complete,
//! verified objects, so a reader never sees a half-published release, and
//! an interrupted publish leaves the previous one whole; running it again
//! skips what is there and finishes. Publishing a release again at another
//! digest rewrites the two pointers; it uploads nothing already present.
//!
//! The decisions are pure ([`keys`], [`needs_upload`], [`release_ipxe`],
//! [`is_current`]); I/O: the netboot export (through
//! [`super::export::OutputJob`]) in a scratch directory under the cache,
//! the bucket through [`ObjectStore`], and the cache database, where each
//! publish is recorded beside promotions (`layerbuild releases`).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::Context;
use crate::cache::ReleaseRecord;
use crate::cache::lock::DigestLock;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::executor::netboot::{BOOT_JSON, BootJson, INITRD, KERNEL, ROOTFS};
use crate::executor::{Backend, ObjectInfo, ObjectStore};
use crate::label::Label;
use crate::status::{ObjectStatus, OutputStatus, PublishStatus};
use crate::workspace::{ExportFormat, Output, S3Settings};

/// The architecture published (one for now; the keys carry it).
pub const ARCH: &str = "x86_64";
/// The release pointer a publish writes last.
pub const RELEASE_JSON: &str = "release.json";
/// The iPXE script of a release.
pub const RELEASE_IPXE: &str = "boot.ipxe";
/// The initramfs's object name (the export's `initrd.img`).
pub const INITRAMFS: &str = "initramfs.img";
/// The folder of content-addressed objects under the prefix.
pub const BY_DIGEST: &str = "by-digest";

/// What `publish` is asked.
pub struct PublishOptions {
    pub label: Label,
    pub system: Option<String>,
    pub release: String,
    pub arch: String,
    /// Who publishes ([`super::promote::promoter`]).
    pub by: String,
}

/// One by-digest object of a publish.
#[derive(Debug, Clone, Serialize)]
pub struct PublishedObject {
    /// `vmlinuz`, `initramfs.img`, `rootfs.squashfs`, `boot.json`.
    pub name: String,
    pub key: String,
    pub sha256: String,
    pub bytes: u64,
    pub status: ObjectStatus,
}

/// How a publish went (`publish --json`).
#[derive(Debug, Serialize)]
pub struct Publication {
    pub version: u32,
    pub release: String,
    pub label: String,
    pub system: Option<String>,
    pub digest: Digest,
    pub arch: String,
    /// `s3://BUCKET/<prefix>/<release>/<arch>/release.json`.
    pub pointer: String,
    /// `s3://BUCKET/<prefix>/<release>/<arch>/boot.ipxe`.
    pub ipxe: String,
    pub objects: Vec<PublishedObject>,
    /// The digest the release pointed at before, when another.
    pub previous: Option<Digest>,
    pub status: PublishStatus,
    /// Unix time, seconds (`null` when nothing was written).
    pub published_at: Option<i64>,
    pub published_by: String,
}

/// One file `release.json` names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PointerFile {
    pub key: String,
    pub sha256: String,
    pub bytes: u64,
}

/// `release.json`: the release pointer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReleasePointer {
    pub version: u32,
    pub release: String,
    pub label: String,
    pub digest: Digest,
    pub arch: String,
    pub kernel_version: String,
    pub cmdline: String,
    pub published_at: i64,
    pub published_by: String,
    /// By object name.
    pub files: BTreeMap<String, PointerFile>,
}

/// `<prefix>/<rest>`, or `rest` under an empty prefix.
fn under(prefix: &str, rest: &str) -> String {
    if prefix.is_empty() {
        rest.to_string()
    } else {
        format!("{prefix}/{rest}")
    }
}

/// The keys of a publish: (by-digest folder, release folder), each
/// ending with `/`.
pub fn keys(prefix: &str, digest: &Digest, release: &str, arch: &str) -> (String, String) {
    (
        under(prefix, &format!("{BY_DIGEST}/{}/{arch}/", digest.as_str())),
        under(prefix, &format!("{release}/{arch}/")),
    )
}

/// Whether an object must be uploaded: it is absent, or holds other bytes
/// (another size or sha256, or no sha256 metadata: not ours).
pub fn needs_upload(held: Option<&ObjectInfo>, sha256: &str, bytes: u64) -> bool {
    !matches!(held, Some(o) if o.size == bytes && o.sha256.as_deref() == Some(sha256))
}

/// The release's iPXE script: the by-digest files, by URLs relative to the
/// script's own (`<prefix>/<release>/<arch>/` is two folders below the
/// prefix), so that it is complete the moment it is written, whatever
/// the release held before.
pub fn release_ipxe(p: &ReleasePointer, own_cmdline: &str) -> String {
    let base = format!("../../{BY_DIGEST}/{}/{}/", p.digest.as_str(), p.arch);
    let own = match own_cmdline.trim() {
        "" => String::new(),
        o => format!(" {o}"),
    };
    format!(
        "#!ipxe\n\
         # release {release} of {label}: {digest}, kernel {kv} (written by layerbuild publish)\n\
         # rootfs.squashfs is fetched by the initramfs (dracut dmsquash-live and livenet).\n\
         isset ${{root-url}} || set root-url ${{cwduri}}{base}{ROOTFS}\n\
         kernel {base}{KERNEL} initrd={INITRAMFS} root=live:${{root-url}} ro rd.live.image rd.live.overlay.overlayfs=1{own}\n\
         initrd --name {INITRAMFS} {base}{INITRAMFS}\n\
         boot\n",
        release = p.release,
        label = p.label,
        digest = p.digest,
        kv = p.kernel_version,
    )
}

/// Does the pointer already name these files of `digest`?
pub fn is_current(
    held: Option<&ReleasePointer>,
    digest: &Digest,
    files: &BTreeMap<String, PointerFile>,
) -> bool {
    held.is_some_and(|p| &p.digest == digest && &p.files == files)
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn store_error(e: crate::executor::ToolError, s3: &S3Settings) -> Error {
    let at = s3.endpoint.as_deref().unwrap_or("AWS S3");
    let e: Error = e.into();
    e.with_hint(format!(
        "check [publish.s3] (bucket {} at {at}) and the AWS credentials in the environment or ~/.aws",
        s3.bucket
    ))
}

/// Uploads `path` to `key` unless the bucket holds it, then reads it back
/// and checks its sha256.
fn put_verified(
    store: &dyn ObjectStore,
    s3: &S3Settings,
    key: &str,
    path: &Path,
    sha256: &str,
    bytes: u64,
    content_type: &str,
) -> Result<ObjectStatus> {
    let held = store.head(key).map_err(|e| store_error(e, s3))?;
    if !needs_upload(held.as_ref(), sha256, bytes) {
        return Ok(ObjectStatus::Present);
    }
    store
        .put_file(key, path, sha256, content_type)
        .map_err(|e| store_error(e, s3))?;
    let (got, n) = store.read_sha256(key).map_err(|e| store_error(e, s3))?;
    if got != sha256 || n != bytes {
        return Err(Error::env(format!(
            "{} reads back as {n} bytes with sha256 {got}, not the {bytes} bytes with sha256 {sha256} uploaded",
            store.url(key)
        ))
        .with_hint("publish again: the release still points at what it held"));
    }
    Ok(ObjectStatus::Uploaded)
}

/// `[publish.s3]`, or the error saying it is missing.
pub fn settings(ws: &crate::workspace::Workspace) -> Result<&S3Settings> {
    ws.publish_s3.as_ref().ok_or_else(|| {
        Error::input("publish needs a bucket, and [publish.s3] is not set in Layerfile.toml")
            .with_hint("add [publish.s3] with endpoint, bucket, prefix and region (credentials come from the AWS environment or ~/.aws, never the Layerfile)")
    })
}

pub fn publish(
    ctx: &Context,
    opts: &PublishOptions,
    backend: &dyn Backend,
    store: &dyn ObjectStore,
) -> Result<Publication> {
    super::promote::check_release_name(&opts.release)?;
    if opts.release == BY_DIGEST {
        return Err(Error::input(format!(
            "'{BY_DIGEST}' is where the content-addressed objects go, not a release name"
        )));
    }
    let ws = &ctx.ws;
    let label = &opts.label;
    let s3 = settings(ws)?;
    let system = ws.system(opts.system.as_deref())?;
    let system_name = system.map(|s| s.name.clone());
    let (digest, image_id) =
        super::export::built_image(ctx, label, opts.system.as_deref(), backend)?;

    // The netboot export, kept (and reused while the digest stays) under
    // cache/publish/, one publish of a layer at a time.
    let dir = ws.cache_dir.join("publish").join(label.slug());
    let _lock = DigestLock::acquire_at(
        ws.cache_dir
            .join("publish")
            .join(format!("{}.lock", label.slug())),
        &label.to_string(),
        &mut |h| eprintln!("{}", super::boot::waiting_line(label, h)),
    )?;
    let cache = std::sync::Mutex::new(crate::cache::Cache::open(&ws.db_path())?);
    let job = super::export::OutputJob {
        ws,
        cache: &cache,
        exporter: backend,
        label,
        digest: &digest,
        image_id: &image_id,
        force: false,
    };
    let exported = job.perform(&Output::File {
        format: ExportFormat::Netboot,
        path: dir.clone(),
        compression: None,
    });
    if exported.status == OutputStatus::Failed {
        return Err(Error::BuildFailed(format!(
            "{label}: cannot export it to publish: {}",
            exported.error.unwrap_or_default()
        )));
    }
    let boot_json_path = dir.join(BOOT_JSON);
    let text = std::fs::read(&boot_json_path).map_err(|e| Error::io(&boot_json_path, e))?;
    let boot: BootJson = serde_json::from_slice(&text).map_err(|e| {
        Error::env(format!("{}: unreadable: {e}", boot_json_path.display()))
            .with_hint("remove the directory and publish again")
    })?;
    if boot.digest != digest {
        return Err(Error::env(format!(
            "{} is of digest {}, not {}",
            boot_json_path.display(),
            boot.digest.short(),
            digest.short()
        )));
    }

    let (obj_dir, rel_dir) = keys(&s3.prefix, &digest, &opts.release, &opts.arch);
    let mut sources: Vec<(&str, &str, String, u64, &str)> = vec![];
    for (name, file, ctype) in [
        (KERNEL, KERNEL, "application/octet-stream"),
        (INITRAMFS, INITRD, "application/octet-stream"),
        (ROOTFS, ROOTFS, "application/octet-stream"),
    ] {
        let entry = boot
            .files
            .get(file)
            .ok_or_else(|| Error::env(format!("{} names no {file}", boot_json_path.display())))?;
        sources.push((name, file, entry.sha256.clone(), entry.bytes, ctype));
    }
    sources.push((
        BOOT_JSON,
        BOOT_JSON,
        sha256_hex(&text),
        text.len() as u64,
        "application/json",
    ));

    let mut objects = vec![];
    let mut files = BTreeMap::new();
    for (name, file, sha256, bytes, ctype) in sources {
        let key = format!("{obj_dir}{name}");
        let path = dir.join(file);
        let status = put_verified(store, s3, &key, &path, &sha256, bytes, ctype)?;
        files.insert(
            name.to_string(),
            PointerFile {
                key: key.clone(),
                sha256: sha256.clone(),
                bytes,
            },
        );
        objects.push(PublishedObject {
            name: name.to_string(),
            key,
            sha256,
            bytes,
            status,
        });
    }

    let pointer_key = format!("{rel_dir}{RELEASE_JSON}");
    let ipxe_key = format!("{rel_dir}{RELEASE_IPXE}");
    let held: Option<ReleasePointer> = store
        .get(&pointer_key)
        .map_err(|e| store_error(e, s3))?
        .and_then(|b| serde_json::from_slice(&b).ok());
    let previous = held
        .as_ref()
        .map(|p| p.digest.clone())
        .filter(|d| d != &digest);
    let published_at = super::now_secs();
    let mut pointer = ReleasePointer {
        version: 1,
        release: opts.release.clone(),
        label: label.to_string(),
        digest: digest.clone(),
        arch: opts.arch.clone(),
        kernel_version: boot.kernel_version.clone(),
        cmdline: boot.cmdline.clone(),
        published_at,
        published_by: opts.by.clone(),
        files,
    };
    let ipxe = release_ipxe(&pointer, &boot.own_cmdline);
    let ipxe_sha = sha256_hex(ipxe.as_bytes());
    let mut report = Publication {
        version: 1,
        release: opts.release.clone(),
        label: label.to_string(),
        system: system_name.clone(),
        digest: digest.clone(),
        arch: opts.arch.clone(),
        pointer: store.url(&pointer_key),
        ipxe: store.url(&ipxe_key),
        objects,
        previous: previous.clone(),
        status: PublishStatus::UpToDate,
        published_at: None,
        published_by: opts.by.clone(),
    };
    let ipxe_held = store.head(&ipxe_key).map_err(|e| store_error(e, s3))?;
    if is_current(held.as_ref(), &digest, &pointer.files)
        && !needs_upload(ipxe_held.as_ref(), &ipxe_sha, ipxe.len() as u64)
    {
        return Ok(report);
    }

    // The pointers, each naming only the verified objects above; release.json last.
    let scratch = ws
        .cache_dir
        .join("tmp")
        .join(format!("publish-{}", label.slug()));
    std::fs::create_dir_all(&scratch).map_err(|e| Error::io(&scratch, e))?;
    let ipxe_path = scratch.join(RELEASE_IPXE);
    std::fs::write(&ipxe_path, &ipxe).map_err(|e| Error::io(&ipxe_path, e))?;
    put_verified(
        store,
        s3,
        &ipxe_key,
        &ipxe_path,
        &ipxe_sha,
        ipxe.len() as u64,
        "text/plain",
    )?;
    pointer.published_at = published_at;
    let json =
        serde_json::to_string_pretty(&pointer).map_err(|e| Error::env(e.to_string()))? + "\n";
    let json_sha = sha256_hex(json.as_bytes());
    let json_path = scratch.join(RELEASE_JSON);
    std::fs::write(&json_path, &json).map_err(|e| Error::io(&json_path, e))?;
    put_verified(
        store,
        s3,
        &pointer_key,
        &json_path,
        &json_sha,
        json.len() as u64,
        "application/json",
    )?;
    let _ = std::fs::remove_dir_all(&scratch);

    let mut cache = cache.into_inner().unwrap_or_else(|e| e.into_inner());
    cache.record_release(&ReleaseRecord {
        release: opts.release.clone(),
        label: label.to_string(),
        system: system_name,
        digest,
        reference: store.url(&pointer_key),
        manifest_digest: format!("sha256:{json_sha}"),
        previous,
        promoted_at: published_at,
        promoted_by: opts.by.clone(),
    })?;
    report.status = PublishStatus::Published;
    report.published_at = Some(published_at);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_keep_the_arch_and_an_empty_prefix_adds_no_slash() {
        let d = Digest::from("ab12");
        assert_eq!(
            keys("site/images", &d, "stable", "x86_64"),
            (
                "site/images/by-digest/ab12/x86_64/".to_string(),
                "site/images/stable/x86_64/".to_string()
            )
        );
        assert_eq!(keys("", &d, "stable", "x86_64").1, "stable/x86_64/");
    }

    #[test]
    fn an_object_is_uploaded_unless_it_holds_the_same_bytes() {
        let o = |size, sha: Option<&str>| ObjectInfo {
            size,
            sha256: sha.map(str::to_string),
        };
        assert!(needs_upload(None, "aa", 3));
        assert!(!needs_upload(Some(&o(3, Some("aa"))), "aa", 3));
        assert!(needs_upload(Some(&o(3, Some("bb"))), "aa", 3));
        assert!(needs_upload(Some(&o(4, Some("aa"))), "aa", 3));
        assert!(needs_upload(Some(&o(3, None)), "aa", 3));
    }

    #[test]
    fn the_release_script_names_only_by_digest_files() {
        let p = ReleasePointer {
            version: 1,
            release: "stable".into(),
            label: "//uan/base".into(),
            digest: Digest::from("ab12"),
            arch: "x86_64".into(),
            kernel_version: "6.1".into(),
            cmdline: String::new(),
            published_at: 0,
            published_by: "ann".into(),
            files: BTreeMap::new(),
        };
        let s = release_ipxe(&p, "console=ttyS0");
        assert!(s.starts_with("#!ipxe\n"));
        assert!(s.contains("kernel ../../by-digest/ab12/x86_64/vmlinuz initrd=initramfs.img"));
        assert!(
            s.contains("initrd --name initramfs.img ../../by-digest/ab12/x86_64/initramfs.img")
        );
        assert!(s.contains("${cwduri}../../by-digest/ab12/x86_64/rootfs.squashfs"));
        assert!(s.contains("console=ttyS0\n"));
    }
}

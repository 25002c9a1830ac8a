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

/// The architecture of the unit tests' publications (the keys carry it).
#[cfg(test)]
const ARCH: &str = "x86_64";
/// The release pointer a publish writes last.
pub const RELEASE_JSON: &str = "release.json";
/// The iPXE script of a release.
pub const RELEASE_IPXE: &str = "boot.ipxe";
/// The initramfs's object name (the export's too).
pub const INITRAMFS: &str = INITRD;
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
    /// Take over a release that holds another layer.
    pub force: bool,
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
    // cache/publish/, one per layer and architecture, one publish of it
    // at a time.
    let slug = match ws.arch {
        crate::arch::Arch::X86_64 => label.slug(),
        other => format!("{}@{other}", label.slug()),
    };
    let dir = ws.cache_dir.join("publish").join(&slug);
    let _lock = DigestLock::acquire_at(
        ws.cache_dir.join("publish").join(format!("{slug}.lock")),
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

    let scratch = ws.cache_dir.join("tmp").join(format!("publish-{slug}"));
    let sent = send(
        store,
        s3,
        &Sending {
            dir: &dir,
            boot: &boot,
            boot_json: &text,
            release: &opts.release,
            arch: &opts.arch,
            by: &opts.by,
            force: opts.force,
            scratch: &scratch,
        },
    )?;
    let mut report = Publication {
        version: 1,
        release: opts.release.clone(),
        label: label.to_string(),
        system: system_name.clone(),
        digest: digest.clone(),
        arch: opts.arch.clone(),
        pointer: store.url(&sent.pointer_key),
        ipxe: store.url(&sent.ipxe_key),
        objects: sent.objects,
        previous: sent.previous.clone(),
        status: PublishStatus::UpToDate,
        published_at: None,
        published_by: opts.by.clone(),
    };
    let Some((published_at, json_sha)) = sent.written else {
        return Ok(report);
    };
    let mut cache = cache.into_inner().unwrap_or_else(|e| e.into_inner());
    cache.record_release(&ReleaseRecord {
        release: opts.release.clone(),
        label: label.to_string(),
        system: system_name,
        digest,
        reference: store.url(&sent.pointer_key),
        manifest_digest: format!("sha256:{json_sha}"),
        previous: sent.previous,
        promoted_at: published_at,
        promoted_by: opts.by.clone(),
        arch: opts.arch.clone(),
    })?;
    report.status = PublishStatus::Published;
    report.published_at = Some(published_at);
    Ok(report)
}

/// What [`send`] uploads: a netboot export (`dir`, with its `boot.json`
/// parsed and as bytes) as `release`, scratch files in `scratch`.
pub struct Sending<'a> {
    pub dir: &'a Path,
    pub boot: &'a BootJson,
    pub boot_json: &'a [u8],
    pub release: &'a str,
    pub arch: &'a str,
    pub by: &'a str,
    /// Take over a release holding another layer.
    pub force: bool,
    pub scratch: &'a Path,
}

/// What [`send`] did.
pub struct Sent {
    pub objects: Vec<PublishedObject>,
    pub pointer_key: String,
    pub ipxe_key: String,
    /// The digest the release held before, when another.
    pub previous: Option<Digest>,
    /// When the pointers were written: the time, and release.json's sha256
    /// (`None`: the release already pointed at these objects).
    pub written: Option<(i64, String)>,
}

/// Uploads the by-digest objects of an export that the bucket lacks, each
/// checked, then the release's boot.ipxe and, last, its release.json.
pub fn send(store: &dyn ObjectStore, s3: &S3Settings, req: &Sending<'_>) -> Result<Sent> {
    let (dir, boot) = (req.dir, req.boot);
    let digest = boot.digest.clone();
    let (obj_dir, rel_dir) = keys(&s3.prefix, &digest, req.release, req.arch);
    let mut sources: Vec<(&str, &str, String, u64, &str)> = vec![];
    for (name, file, ctype) in [
        (KERNEL, KERNEL, "application/octet-stream"),
        (INITRAMFS, INITRD, "application/octet-stream"),
        (ROOTFS, ROOTFS, "application/octet-stream"),
    ] {
        let entry = boot
            .files
            .get(file)
            .ok_or_else(|| Error::env(format!("the export's boot.json names no {file}")))?;
        sources.push((name, file, entry.sha256.clone(), entry.bytes, ctype));
    }
    sources.push((
        BOOT_JSON,
        BOOT_JSON,
        sha256_hex(req.boot_json),
        req.boot_json.len() as u64,
        "application/json",
    ));

    // The release as it is, read first: it may belong to another layer.
    let pointer_key = format!("{rel_dir}{RELEASE_JSON}");
    let ipxe_key = format!("{rel_dir}{RELEASE_IPXE}");
    let held: Option<ReleasePointer> = store
        .get(&pointer_key)
        .map_err(|e| store_error(e, s3))?
        .and_then(|b| serde_json::from_slice(&b).ok());
    if let Some(p) = &held
        && p.label != boot.label
        && !req.force
    {
        return Err(Error::refused(format!(
            "release {} ({}) is {}'s, at {}: {}",
            req.release,
            req.arch,
            p.label,
            p.digest.short(),
            store.url(&pointer_key)
        ))
        .with_hint(format!(
            "a release holds one layer: name another release, or --force makes it {}'s",
            boot.label
        )));
    }

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

    let previous = held
        .as_ref()
        .map(|p| p.digest.clone())
        .filter(|d| d != &digest);
    let published_at = super::now_secs();
    let pointer = ReleasePointer {
        version: 1,
        release: req.release.to_string(),
        label: boot.label.clone(),
        digest: digest.clone(),
        arch: req.arch.to_string(),
        kernel_version: boot.kernel_version.clone(),
        cmdline: boot.cmdline.clone(),
        published_at,
        published_by: req.by.to_string(),
        files,
    };
    let ipxe = release_ipxe(&pointer, &boot.own_cmdline);
    let ipxe_sha = sha256_hex(ipxe.as_bytes());
    let ipxe_held = store.head(&ipxe_key).map_err(|e| store_error(e, s3))?;
    if is_current(held.as_ref(), &digest, &pointer.files)
        && !needs_upload(ipxe_held.as_ref(), &ipxe_sha, ipxe.len() as u64)
    {
        return Ok(Sent {
            objects,
            pointer_key,
            ipxe_key,
            previous,
            written: None,
        });
    }

    // The pointers, each naming only the verified objects above; release.json last.
    let scratch = req.scratch;
    std::fs::create_dir_all(scratch).map_err(|e| Error::io(scratch, e))?;
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
    let _ = std::fs::remove_dir_all(scratch);
    Ok(Sent {
        objects,
        pointer_key,
        ipxe_key,
        previous,
        written: Some((published_at, json_sha)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::netboot::{BOOT_JSON_VERSION, FileEntry};
    use crate::executor::recording::MemoryStore;

    fn s3() -> S3Settings {
        S3Settings {
            endpoint: None,
            bucket: "images".into(),
            prefix: "site".into(),
            region: None,
        }
    }

    /// A netboot export of digest `d` in `dir`, whose files hold `seed`.
    fn export(dir: &Path, d: &str, seed: &str) -> (BootJson, Vec<u8>) {
        std::fs::create_dir_all(dir).unwrap();
        let mut files = BTreeMap::new();
        for name in [KERNEL, INITRD, ROOTFS] {
            let bytes = format!("{name} of {seed}\n");
            std::fs::write(dir.join(name), &bytes).unwrap();
            files.insert(
                name.to_string(),
                FileEntry {
                    sha256: sha256_hex(bytes.as_bytes()),
                    bytes: bytes.len() as u64,
                    source: "/".into(),
                },
            );
        }
        let boot = BootJson {
            version: BOOT_JSON_VERSION,
            label: "//uan/uan".into(),
            digest: Digest::from(d),
            kernel_version: "1".into(),
            cmdline: "ro".into(),
            own_cmdline: String::new(),
            files,
        };
        let text = serde_json::to_vec_pretty(&boot).unwrap();
        std::fs::write(dir.join(BOOT_JSON), &text).unwrap();
        (boot, text)
    }

    fn send_to(
        store: &MemoryStore,
        dir: &Path,
        export: &(BootJson, Vec<u8>),
        release: &str,
    ) -> Result<Sent> {
        send(
            store,
            &s3(),
            &Sending {
                dir,
                boot: &export.0,
                boot_json: &export.1,
                release,
                arch: ARCH,
                by: "ann",
                force: false,
                scratch: &dir.join("scratch"),
            },
        )
    }

    fn pointed(store: &MemoryStore, release: &str) -> ReleasePointer {
        let b = store
            .get(&format!("site/{release}/x86_64/release.json"))
            .unwrap()
            .unwrap();
        serde_json::from_slice(&b).unwrap()
    }

    fn statuses(sent: &Sent) -> Vec<ObjectStatus> {
        sent.objects.iter().map(|o| o.status).collect()
    }

    #[test]
    fn objects_go_up_once_and_the_pointer_last() {
        let t = tempfile::tempdir().unwrap();
        let store = MemoryStore::default();
        let a = export(&t.path().join("a"), "aaaa", "a");
        let sent = send_to(&store, &t.path().join("a"), &a, "stable").unwrap();
        assert_eq!(statuses(&sent), [ObjectStatus::Uploaded; 4]);
        assert!(sent.written.is_some());
        let puts = store.puts();
        assert_eq!(puts.len(), 6);
        assert_eq!(puts[4], "site/stable/x86_64/boot.ipxe");
        assert_eq!(puts[5], "site/stable/x86_64/release.json");
        assert_eq!(pointed(&store, "stable").digest, Digest::from("aaaa"));

        // Again: nothing written.
        let again = send_to(&store, &t.path().join("a"), &a, "stable").unwrap();
        assert_eq!(statuses(&again), [ObjectStatus::Present; 4]);
        assert!(again.written.is_none());
        assert_eq!(store.puts().len(), 6);

        // Another release: its pointers only.
        let next = send_to(&store, &t.path().join("a"), &a, "next").unwrap();
        assert_eq!(statuses(&next), [ObjectStatus::Present; 4]);
        assert_eq!(store.puts().len(), 8);
        assert_eq!(
            pointed(&store, "next").files,
            pointed(&store, "stable").files
        );
    }

    #[test]
    fn an_interrupted_publish_leaves_the_old_release_and_a_rerun_finishes() {
        let t = tempfile::tempdir().unwrap();
        let store = MemoryStore::default();
        let a = export(&t.path().join("a"), "aaaa", "a");
        send_to(&store, &t.path().join("a"), &a, "stable").unwrap();
        let ipxe = store.get("site/stable/x86_64/boot.ipxe").unwrap();

        let b = export(&t.path().join("b"), "bbbb", "b");
        store.fail_puts_of(Some(ROOTFS));
        assert!(send_to(&store, &t.path().join("b"), &b, "stable").is_err());
        assert_eq!(pointed(&store, "stable").digest, Digest::from("aaaa"));
        assert_eq!(store.get("site/stable/x86_64/boot.ipxe").unwrap(), ipxe);

        store.fail_puts_of(None);
        let before = store.puts().len();
        let sent = send_to(&store, &t.path().join("b"), &b, "stable").unwrap();
        assert_eq!(sent.previous, Some(Digest::from("aaaa")));
        assert_eq!(
            statuses(&sent),
            [
                ObjectStatus::Present,
                ObjectStatus::Present,
                ObjectStatus::Uploaded,
                ObjectStatus::Uploaded
            ]
        );
        assert_eq!(store.puts().len(), before + 4);
        assert_eq!(pointed(&store, "stable").digest, Digest::from("bbbb"));
    }

    #[test]
    fn a_release_of_another_layer_is_taken_over_only_with_force() {
        let t = tempfile::tempdir().unwrap();
        let store = MemoryStore::default();
        let a = export(&t.path().join("a"), "aaaa", "a");
        send_to(&store, &t.path().join("a"), &a, "stable").unwrap();
        let mut b = export(&t.path().join("b"), "bbbb", "b");
        b.0.label = "//compute/slurm".into();
        let puts = store.puts().len();
        let e = send_to(&store, &t.path().join("b"), &b, "stable")
            .err()
            .unwrap();
        assert!(e.to_string().contains("is //uan/uan's"), "{e}");
        assert_eq!(e.exit_code(), 1);
        assert_eq!(store.puts().len(), puts, "nothing uploaded");
        let sent = send(
            &store,
            &s3(),
            &Sending {
                dir: &t.path().join("b"),
                boot: &b.0,
                boot_json: &b.1,
                release: "stable",
                arch: ARCH,
                by: "ann",
                force: true,
                scratch: &t.path().join("scratch"),
            },
        )
        .unwrap();
        assert!(sent.written.is_some());
        assert_eq!(pointed(&store, "stable").label, "//compute/slurm");
    }

    #[test]
    fn an_object_that_reads_back_otherwise_fails_the_publish_before_any_pointer() {
        let t = tempfile::tempdir().unwrap();
        let store = MemoryStore::default();
        let a = export(&t.path().join("a"), "aaaa", "a");
        store.corrupt_puts_of(Some(ROOTFS));
        let e = send_to(&store, &t.path().join("a"), &a, "stable")
            .err()
            .unwrap();
        assert!(e.to_string().contains("reads back"), "{e}");
        assert!(store.list("site/stable/").unwrap().is_empty());
    }

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

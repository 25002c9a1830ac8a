//! `layerbuild export`, `layerbuild push`, and the `outputs` a build performs
//! once a layer is built. An output already holding the layer's digest is
//! skipped: for files, the cache records what each export wrote (digest,
//! format, size, mtime); for registries, the image's `layerbuild.digest`
//! label is asked for.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

pub use crate::status::OutputStatus;

use super::{Context, container_name, image_name, now_secs};
use crate::cache::{Cache, OutputRecord};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::executor::Exporter;
use crate::executor::export::ExportRequest;
use crate::executor::netboot::{BOOT_JSON, NetbootRequest};
use crate::label::{Label, Pattern};
use crate::workspace::{ExportFormat, Output, Workspace};

/// What happened to one output.
#[derive(Debug, Clone, Serialize)]
pub struct OutputResult {
    pub label: String,
    pub digest: Digest,
    /// `squashfs`, `oci-archive`, ..., or `push`.
    pub format: String,
    /// The file written or the push destination.
    pub target: String,
    pub status: OutputStatus,
    pub bytes: Option<u64>,
    pub error: Option<String>,
}

/// The image of `label`'s current digest: (digest, image id). An error
/// with a hint when the layer is not built.
pub fn built_image(
    ctx: &Context,
    label: &Label,
    system: Option<&str>,
    exporter: &dyn Exporter,
) -> Result<(Digest, String)> {
    let ws = &ctx.ws;
    let system = ws.system(system)?;
    let labels = ctx.graph.select(&[Pattern::Exact(label.clone())])?;
    let prints = crate::ops::manifests(ws, system, &labels)?;
    let digest = prints[label].digest.clone();
    let not_built = || {
        Error::input(format!(
            "{label} is not built at its current digest {}",
            digest.short()
        ))
        .with_hint(format!(
            "build it first: layerbuild build {label} (layerbuild why {label} says what changed)"
        ))
    };
    let Some(cache) = Cache::open_existing(&ws.db_path())? else {
        return Err(not_built());
    };
    let Some(row) = cache.lookup(&digest)? else {
        return Err(not_built());
    };
    if !exporter.has_image(&row.image_id)? {
        return Err(not_built());
    }
    Ok((digest, row.image_id))
}

/// A built layer whose outputs are to be performed, and where: the
/// workspace, the cache that records what each output holds, and the
/// backend that writes them.
pub struct OutputJob<'a> {
    pub ws: &'a Workspace,
    pub cache: &'a std::sync::Mutex<Cache>,
    pub exporter: &'a dyn Exporter,
    pub label: &'a Label,
    pub digest: &'a Digest,
    pub image_id: &'a str,
    /// Write even when the target already holds `digest`.
    pub force: bool,
}

impl OutputJob<'_> {
    /// Performs one output of the layer, skipping it when its target
    /// already holds the digest (unless `force`).
    pub fn perform(&self, output: &Output) -> OutputResult {
        let mut r = OutputResult {
            label: self.label.to_string(),
            digest: self.digest.clone(),
            format: String::new(),
            target: String::new(),
            status: OutputStatus::Failed,
            bytes: None,
            error: None,
        };
        let outcome = match output {
            Output::File {
                format,
                path,
                compression,
            } => {
                r.format = format.name().to_string();
                r.target = self.ws.display_path(path);
                self.export_file(*format, path, compression.as_deref())
                    .map(|(status, bytes)| {
                        r.bytes = bytes;
                        status
                    })
            }
            Output::Push {
                destination,
                tls_verify,
            } => {
                r.format = "push".into();
                let dest = push_destination(destination, self.label, self.digest);
                r.target = dest.clone();
                push_to(
                    self.exporter,
                    self.digest,
                    self.image_id,
                    &dest,
                    *tls_verify,
                    self.force,
                )
            }
        };
        match outcome {
            Ok(status) => r.status = status,
            Err(e) => r.error = Some(e),
        }
        r
    }

    fn export_file(
        &self,
        format: ExportFormat,
        path: &Path,
        compression: Option<&str>,
    ) -> std::result::Result<(OutputStatus, Option<u64>), String> {
        let (ws, label, digest) = (self.ws, self.label, self.digest);
        // Inside the workspace, keyed by its path there: a copy or clone
        // of the workspace at another path (a CI checkout) holding the
        // same file (size and mtime) skips it too.
        let target = match path.strip_prefix(&ws.root) {
            Ok(rel) => rel.display().to_string(),
            Err(_) => path.display().to_string(),
        };
        let netboot = NetbootRequest {
            label: label.to_string(),
            digest: digest.clone(),
            kernel: ws.layers.get(label).and_then(|l| l.boot.kernel.clone()),
            cmdline: ws
                .layers
                .get(label)
                .map(|l| l.boot.cmdline.clone())
                .unwrap_or_default(),
        };
        // A netboot export holds the kernel chosen and the command line
        // too, which are not in the digest of a layer without boot tests;
        // `layout=2`: the initramfs is `initramfs.img` (before: `initrd.img`).
        let options = match format {
            ExportFormat::Netboot => format!(
                "{} layout=2 kernel={:?} cmdline={:?}",
                compression.unwrap_or(""),
                netboot.kernel,
                netboot.cmdline
            ),
            _ => compression.unwrap_or("").to_string(),
        };
        let recorded = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .output(&target)
            .map_err(|e| e.to_string())?;
        if !self.force
            && let Some(rec) = &recorded
            && rec.digest == *digest
            && rec.format == format.name()
            && rec.options == options
            && stat_of(format, path) == Some((rec.size, rec.mtime_ns))
        {
            return Ok((OutputStatus::UpToDate, None));
        }
        let container = format!("{}-export", container_name(ws, label, digest));
        // Marks the temporary container as in use (for `gc`).
        let work = ws.cache_dir.join("tmp").join(&container);
        let _ = std::fs::create_dir_all(&work);
        let _ = std::fs::write(work.join("owner.pid"), std::process::id().to_string());
        let req = ExportRequest {
            image_id: self.image_id.to_string(),
            reference: image_name(ws, label, digest),
            format,
            path: path.to_path_buf(),
            compression: compression.map(str::to_string),
            container,
            source_date_epoch: ws.build.reproducible.then_some(ws.build.source_date_epoch),
            netboot,
        };
        let written = self.exporter.export(&req);
        let _ = std::fs::remove_dir_all(&work);
        let bytes = written.map_err(|e| e.to_string())?;
        if let Some((size, mtime_ns)) = stat_of(format, path) {
            let rec = OutputRecord {
                target,
                format: format.name().to_string(),
                options,
                label: label.to_string(),
                digest: digest.clone(),
                size,
                mtime_ns,
            };
            self.cache
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .record_output(&rec, now_secs())
                .map_err(|e| format!("written, but not recorded in the cache: {e}"))?;
        }
        Ok((OutputStatus::Written, Some(bytes)))
    }
}

/// Size and mtime of an export (of its index.json for an OCI layout, its
/// boot.json for netboot).
fn stat_of(format: ExportFormat, path: &Path) -> Option<(i64, i64)> {
    let p: PathBuf = match format {
        ExportFormat::OciDir => path.join("index.json"),
        ExportFormat::Netboot => path.join(BOOT_JSON),
        _ => path.to_path_buf(),
    };
    let m = std::fs::metadata(p).ok()?;
    Some((m.size() as i64, m.mtime() * 1_000_000_000 + m.mtime_nsec()))
}

const TRANSPORTS: &[&str] = &[
    "oci-archive:",
    "docker-archive:",
    "oci:",
    "dir:",
    "containers-storage:",
    "docker-daemon:",
];

/// A `buildah push` destination with the default tag filled in: a registry
/// repository without a tag gets `TYPE-LAYER-DIGEST12`. Other transports are
/// used as given.
pub fn push_destination(dest: &str, label: &Label, digest: &Digest) -> String {
    let dest = dest.trim();
    if TRANSPORTS.iter().any(|t| dest.starts_with(t)) {
        return dest.to_string();
    }
    let repo = dest.strip_prefix("docker://").unwrap_or(dest);
    let last = repo.rsplit('/').next().unwrap_or(repo);
    if repo.contains('/') && (last.contains(':') || last.contains('@')) {
        return format!("docker://{repo}");
    }
    format!(
        "docker://{repo}:{}-{}-{}",
        label.image_type().to_lowercase(),
        label.layer().to_lowercase(),
        digest.short()
    )
}

fn push_to(
    exporter: &dyn Exporter,
    digest: &Digest,
    image_id: &str,
    dest: &str,
    tls_verify: bool,
    force: bool,
) -> std::result::Result<OutputStatus, String> {
    if !force
        && let Some(reference) = dest.strip_prefix("docker://")
        && exporter
            .remote_digest_label(reference, tls_verify)
            .ok()
            .flatten()
            .as_ref()
            == Some(digest)
    {
        return Ok(OutputStatus::UpToDate);
    }
    exporter
        .push_to(image_id, dest, tls_verify)
        .map_err(|e| e.to_string())?;
    Ok(OutputStatus::Pushed)
}

/// One line per output, for people.
pub fn render(results: &[OutputResult]) -> String {
    let mut s = String::new();
    for r in results {
        let line = match r.status {
            OutputStatus::Written => format!(
                "{} -> {} ({}, {})",
                r.label,
                r.target,
                r.format,
                human_bytes(r.bytes.unwrap_or(0))
            ),
            OutputStatus::Pushed => format!("{} -> {} (pushed)", r.label, r.target),
            OutputStatus::UpToDate => format!(
                "{} -> {} ({}, already holds {})",
                r.label,
                r.target,
                r.format,
                r.digest.short()
            ),
            OutputStatus::Failed => format!(
                "{} -> {} FAILED: {}",
                r.label,
                r.target,
                r.error.as_deref().unwrap_or("")
            ),
        };
        s.push_str(&line);
        s.push('\n');
    }
    s
}

/// `12.3 MiB`: binary units, one decimal; bytes below 1 KiB as they are.
pub fn human_bytes(n: u64) -> String {
    const UNITS: &[&str] = &["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_destinations_get_the_default_tag() {
        let l = Label::parse("//compute/slurm").unwrap();
        let d = &Digest::from("0123456789abcdef0123");
        for (to, dest) in [
            (
                "registry.example.org/hpc/images",
                "docker://registry.example.org/hpc/images:compute-slurm-0123456789ab",
            ),
            (
                "docker://localhost:5000/hpc",
                "docker://localhost:5000/hpc:compute-slurm-0123456789ab",
            ),
            ("localhost:5000/hpc:v1", "docker://localhost:5000/hpc:v1"),
            ("oci-archive:/tmp/x.tar", "oci-archive:/tmp/x.tar"),
        ] {
            assert_eq!(push_destination(to, &l, d), dest, "{to}");
        }
    }

    #[test]
    fn sizes_read_well() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(3 * 1024 * 1024 / 2), "1.5 MiB");
        assert_eq!(human_bytes(12_900_000), "12.3 MiB");
        assert_eq!(human_bytes(3 * 1024 * 1024 * 1024), "3.0 GiB");
    }
}

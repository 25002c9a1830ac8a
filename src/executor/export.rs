//! Exports of committed images: OCI and docker archives and OCI layouts via
//! `buildah push`, the root file system as a tar archive or a squashfs image
//! from a mounted container. Every export writes to a temporary name beside
//! its destination and renames it into place, so an interrupted export never
//! leaves a truncated file at the destination.
//!
//! I/O: spawns buildah, tar and mksquashfs; writes the destination.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use super::buildah::Buildah;
use crate::workspace::ExportFormat;

/// One export of one image.
#[derive(Debug, Clone)]
pub struct ExportRequest {
    pub image_id: String,
    /// The name the image carries inside archives (`NAME:TAG`).
    pub reference: String,
    pub format: ExportFormat,
    /// Absolute destination.
    pub path: PathBuf,
    /// squashfs compressor (mksquashfs -comp).
    pub compression: Option<String>,
    /// The name of the container used to mount the image's root file system.
    pub container: String,
    /// `SOURCE_DATE_EPOCH` for mksquashfs, for reproducible file system images.
    pub source_date_epoch: Option<i64>,
}

impl Buildah {
    /// Exports `req.image_id` to `req.path`; returns the bytes written.
    pub fn export(&self, req: &ExportRequest) -> Result<u64, String> {
        let parent = req
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        let name = req
            .path
            .file_name()
            .ok_or_else(|| format!("{} has no file name", req.path.display()))?
            .to_string_lossy()
            .into_owned();
        let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
        remove_any(&tmp);
        let written = self.export_to(req, &tmp).and_then(|_| {
            let size = size_of(&tmp);
            replace(&tmp, &req.path)?;
            Ok(size)
        });
        if written.is_err() {
            remove_any(&tmp);
        }
        written
    }

    fn export_to(&self, req: &ExportRequest, tmp: &Path) -> Result<(), String> {
        let tmp_s = tmp.display().to_string();
        match req.format {
            ExportFormat::OciArchive => self.push_quiet(
                &req.image_id,
                &format!("oci-archive:{tmp_s}:{}", req.reference),
            ),
            ExportFormat::DockerArchive => self.push_quiet(
                &req.image_id,
                &format!("docker-archive:{tmp_s}:{}", req.reference),
            ),
            ExportFormat::OciDir => {
                self.push_quiet(&req.image_id, &format!("oci:{tmp_s}:{}", req.reference))
            }
            ExportFormat::RootfsTar => self.with_root(req, |root| {
                self.tool_ok(
                    "tar",
                    &[
                        "--create",
                        "--file",
                        &tmp_s,
                        "--numeric-owner",
                        "--xattrs",
                        "--xattrs-include=*",
                        "--acls",
                        "--sort=name",
                        "--directory",
                        &root.display().to_string(),
                        ".",
                    ],
                    None,
                )
            }),
            ExportFormat::Squashfs => self.with_root(req, |root| {
                let root_s = root.display().to_string();
                let mut args = vec![
                    root_s.as_str(),
                    tmp_s.as_str(),
                    "-noappend",
                    "-no-progress",
                    "-quiet",
                ];
                if let Some(c) = &req.compression {
                    args.extend(["-comp", c.as_str()]);
                }
                self.tool_ok("mksquashfs", &args, req.source_date_epoch)
            }),
        }
    }

    fn push_quiet(&self, image_id: &str, dest: &str) -> Result<(), String> {
        self.tool_ok(&self.buildah, &["push", "--quiet", image_id, dest], None)
    }

    /// Runs a tool to completion; its stderr becomes the error.
    fn tool_ok(&self, program: &str, args: &[&str], epoch: Option<i64>) -> Result<(), String> {
        let mut c = self.command(program);
        c.args(args).stdout(Stdio::null());
        if let Some(e) = epoch {
            c.env("SOURCE_DATE_EPOCH", e.to_string());
        }
        let out = c.output().map_err(|e| {
            format!("cannot run {program}: {e} (Debian/Ubuntu: apt-get install -y buildah squashfs-tools tar)")
        })?;
        if !out.status.success() {
            return Err(format!(
                "{program} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(())
    }

    /// Mounts the image's root file system in a temporary container, runs
    /// `f` on it, and removes the container whatever happens.
    fn with_root(
        &self,
        req: &ExportRequest,
        f: impl FnOnce(&Path) -> Result<(), String>,
    ) -> Result<(), String> {
        let _ = self.tool_ok(&self.buildah, &["rm", &req.container], None);
        self.tool_ok(
            &self.buildah,
            &[
                "from",
                "--pull-never",
                "--name",
                &req.container,
                &req.image_id,
            ],
            None,
        )?;
        let result = self
            .run_tool(&self.buildah, &["mount", &req.container])
            .and_then(|root| f(Path::new(root.trim())));
        let _ = self.tool_ok(&self.buildah, &["umount", &req.container], None);
        let removed = self.tool_ok(&self.buildah, &["rm", &req.container], None);
        result.and(removed)
    }
}

fn size_of(p: &Path) -> u64 {
    if p.is_dir() {
        walkdir::WalkDir::new(p)
            .into_iter()
            .filter_map(|e| e.ok())
            .filter_map(|e| e.metadata().ok())
            .filter(|m| m.is_file())
            .map(|m| m.len())
            .sum()
    } else {
        std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
    }
}

fn remove_any(p: &Path) {
    if p.is_dir() {
        let _ = std::fs::remove_dir_all(p);
    } else {
        let _ = std::fs::remove_file(p);
    }
}

/// Moves `tmp` to `dest`. A file replaces a file atomically; a directory
/// (oci-dir) replaces an old one by moving the old one aside first.
fn replace(tmp: &Path, dest: &Path) -> Result<(), String> {
    if tmp.is_dir() && dest.is_dir() {
        let old = dest.with_file_name(format!(
            ".{}.old-{}",
            dest.file_name().unwrap_or_default().to_string_lossy(),
            std::process::id()
        ));
        std::fs::rename(dest, &old)
            .map_err(|e| format!("cannot move {} aside: {e}", dest.display()))?;
        std::fs::rename(tmp, dest)
            .map_err(|e| format!("cannot rename into {}: {e}", dest.display()))?;
        let _ = std::fs::remove_dir_all(&old);
        return Ok(());
    }
    if dest.is_dir() {
        return Err(format!(
            "{} is a directory; remove it or choose another path",
            dest.display()
        ));
    }
    std::fs::rename(tmp, dest).map_err(|e| format!("cannot rename into {}: {e}", dest.display()))
}

impl super::Exporter for Buildah {
    fn has_image(&self, image_id: &str) -> crate::error::Result<bool> {
        use super::Executor;
        Ok(self.images()?.contains(image_id))
    }
    fn export(&self, req: &ExportRequest) -> Result<u64, String> {
        Buildah::export(self, req)
    }
    fn push_to(&self, image_id: &str, destination: &str, tls_verify: bool) -> Result<(), String> {
        let tls = format!("--tls-verify={tls_verify}");
        self.tool_ok(
            &self.buildah,
            &["push", "--quiet", &tls, image_id, destination],
            None,
        )
    }
    fn remote_digest_label(
        &self,
        reference: &str,
        tls_verify: bool,
    ) -> Result<Option<String>, String> {
        match self.registry_lookup(reference, tls_verify)? {
            super::buildah::RegistryEntry::Present { label } => Ok(Some(label)),
            super::buildah::RegistryEntry::Absent => Ok(None),
        }
    }
}

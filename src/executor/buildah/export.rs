//! How [`Buildah`] writes images out: OCI and docker archives and OCI
//! layouts via `buildah push`, the root file system as a tar archive or a
//! squashfs image from a mounted container, and the netboot directory
//! (its kernel, initramfs and squashfs root).
//!
//! I/O: through [`crate::executor::cli`], buildah, tar and mksquashfs;
//! the destination is written by [`write_atomically`].

use std::path::Path;
use std::process::Stdio;

use super::Buildah;
use crate::digest::Digest;
use crate::executor::export::{ExportRequest, local, write_atomically};
use crate::executor::netboot;
use crate::executor::{
    Exporter, ImageStore, RegistryEntry, ToolError, ToolErrorKind, ToolResult, cli,
};
use crate::workspace::ExportFormat;

impl Buildah {
    fn export_to(&self, req: &ExportRequest, tmp: &Path) -> ToolResult<()> {
        let tmp_s = tmp.display().to_string();
        let archive = |transport: &str| format!("{transport}:{tmp_s}:{}", req.reference);
        match req.format {
            ExportFormat::OciArchive => self.push_quiet(&req.image_id, &archive("oci-archive")),
            ExportFormat::DockerArchive => {
                self.push_quiet(&req.image_id, &archive("docker-archive"))
            }
            ExportFormat::OciDir => self.push_quiet(&req.image_id, &archive("oci")),
            ExportFormat::RootfsTar => self.with_root(req, |root| {
                let root_s = root.display().to_string();
                let args = [
                    "--create",
                    "--file",
                    &tmp_s,
                    "--numeric-owner",
                    "--xattrs",
                    "--xattrs-include=*",
                    "--acls",
                    "--sort=name",
                    "--directory",
                    &root_s,
                    ".",
                ];
                self.tool_ok("tar", &args, None)
            }),
            ExportFormat::Squashfs => self.with_root(req, |root| self.mksquashfs(req, root, tmp)),
            ExportFormat::Netboot => self.with_root(req, |root| {
                // The kernel is chosen before the squashfs is made: an
                // image without one fails at once.
                let files = netboot::choose_in(root, &req.netboot).map_err(local)?;
                std::fs::create_dir_all(tmp)
                    .map_err(|e| local(format!("cannot create {}: {e}", tmp.display())))?;
                self.mksquashfs(req, root, &tmp.join(netboot::ROOTFS))?;
                netboot::write_boot_files(root, tmp, &files, &req.netboot).map_err(local)?;
                Ok(())
            }),
        }
    }

    fn mksquashfs(&self, req: &ExportRequest, root: &Path, dest: &Path) -> ToolResult<()> {
        let root_s = root.display().to_string();
        let dest_s = dest.display().to_string();
        let mut args = vec![
            root_s.as_str(),
            dest_s.as_str(),
            "-noappend",
            "-no-progress",
            "-quiet",
        ];
        if let Some(c) = &req.compression {
            args.extend(["-comp", c.as_str()]);
        }
        self.tool_ok("mksquashfs", &args, req.source_date_epoch)
    }

    fn push_quiet(&self, image_id: &str, dest: &str) -> ToolResult<()> {
        self.tool_ok(&self.buildah, &["push", "--quiet", image_id, dest], None)
    }

    /// Runs a tool to completion; its stderr becomes the error.
    fn tool_ok(&self, program: &str, args: &[&str], epoch: Option<i64>) -> ToolResult<()> {
        let operation = args.first().copied().unwrap_or("");
        let mut c = self.command(program);
        c.args(args).stdout(Stdio::null());
        if let Some(e) = epoch {
            c.env("SOURCE_DATE_EPOCH", e.to_string());
        }
        let out = cli::output(&mut c).map_err(|e| {
            ToolError::new(ToolErrorKind::NotStarted, program, operation, format!(
                "cannot run {program}: {e} (Debian/Ubuntu: apt-get install -y buildah squashfs-tools tar)"
            ))
        })?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            return Err(ToolError::failed(
                program,
                operation,
                &stderr,
                format!("{program} failed ({}): {}", out.status, stderr.trim()),
            ));
        }
        Ok(())
    }

    /// Mounts the image's root file system in a temporary container, runs
    /// `f` on it, and removes the container whatever happens.
    fn with_root(
        &self,
        req: &ExportRequest,
        f: impl FnOnce(&Path) -> ToolResult<()>,
    ) -> ToolResult<()> {
        let ctr = req.container.as_str();
        let _ = self.tool_ok(&self.buildah, &["rm", ctr], None);
        let from = ["from", "--pull-never", "--name", ctr, &req.image_id];
        self.tool_ok(&self.buildah, &from, None)?;
        let result = self
            .run_tool(&self.buildah, &["mount", ctr])
            .and_then(|root| f(Path::new(root.trim())));
        let _ = self.tool_ok(&self.buildah, &["umount", ctr], None);
        let removed = self.tool_ok(&self.buildah, &["rm", ctr], None);
        result.and(removed)
    }
}

impl Exporter for Buildah {
    fn has_image(&self, image_id: &str) -> ToolResult<bool> {
        Ok(self.images()?.contains(image_id))
    }

    fn export(&self, req: &ExportRequest) -> ToolResult<u64> {
        write_atomically(&req.path, |tmp| self.export_to(req, tmp))
    }

    fn push_to(&self, image_id: &str, destination: &str, tls_verify: bool) -> ToolResult<()> {
        let tls = format!("--tls-verify={tls_verify}");
        let args = ["push", "--quiet", &tls, image_id, destination];
        self.tool_ok(&self.buildah, &args, None)
    }

    fn remote_digest_label(&self, reference: &str, tls_verify: bool) -> ToolResult<Option<Digest>> {
        match self.registry_lookup(reference, tls_verify)? {
            RegistryEntry::Present { label } => Ok(Some(label)),
            RegistryEntry::Absent => Ok(None),
        }
    }
}

//! Exports of committed images: the plain-data [`ExportRequest`], and
//! [`write_atomically`], which every exporter writes through: to a
//! temporary name beside the destination, renamed into place, so an
//! interrupted export never leaves a truncated file at the destination.
//!
//! I/O: creates, renames and removes the destination and its temporary.

use std::path::{Path, PathBuf};

use super::{ToolError, ToolErrorKind, ToolResult};
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
    /// The layer and how it boots, for the netboot export.
    pub netboot: super::netboot::NetbootRequest,
}

pub(crate) fn local(message: String) -> ToolError {
    ToolError::new(ToolErrorKind::Local, "layerbuild", "export", message)
}

/// Runs `write` on a temporary path beside `dest`, then moves the result
/// to `dest`; returns the bytes written. The temporary is removed on failure.
pub fn write_atomically(
    dest: &Path,
    write: impl FnOnce(&Path) -> ToolResult<()>,
) -> ToolResult<u64> {
    let parent = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)
        .map_err(|e| local(format!("cannot create {}: {e}", parent.display())))?;
    let name = dest
        .file_name()
        .ok_or_else(|| local(format!("{} has no file name", dest.display())))?
        .to_string_lossy()
        .into_owned();
    let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    remove_any(&tmp);
    let written = write(&tmp).and_then(|_| {
        let size = size_of(&tmp);
        replace(&tmp, dest).map_err(local)?;
        Ok(size)
    });
    if written.is_err() {
        remove_any(&tmp);
    }
    written
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

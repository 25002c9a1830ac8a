//! What the checkouts sharing one container storage coordinate through.
//!
//! Images and working containers live in the container storage, which
//! several checkouts of a workspace (copies at different paths, each with
//! its own `cache/`) may share: one CI runner serving two pipelines. What
//! guards them is therefore kept with the storage, in a `layerbuild/`
//! directory inside its root (graphroot), not in a checkout's cache:
//!
//! - `locks/DIGEST.lock`: the per-digest build locks ([`super::lock`]);
//! - `owners/CONTAINER`: who builds in a working container (pid, boot id,
//!   the checkout's cache database), written before the container exists
//!   and removed once its image is recorded; `gc` reads it;
//! - `checkouts/KEY`: the cache database of every checkout that recorded
//!   images of this storage, and its workspace name, so that `gc` in one
//!   checkout spares the images another one's cache names.
//!
//! Inside the root rather than beside it: the root is the storage's
//! identity whatever path names it (a symlink, a bind mount), it is
//! writable by whoever may use the storage, and removing the storage
//! removes these records with it. A backend without a storage on disk
//! (the recording backend) coordinates per checkout, as before: locks in
//! `cache/locks`, no owner or checkout records.
//!
//! I/O: files under the storage's `layerbuild/` directory (or the cache's
//! `locks/`), `/proc`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Where the locks and records of one container storage live.
#[derive(Debug, Clone)]
pub struct Coord {
    locks: PathBuf,
    /// The storage's `layerbuild/` directory; `None` when only this checkout
    /// coordinates (no storage on disk).
    shared: Option<PathBuf>,
}

/// A working container's owner, as its record says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerRecord {
    pub pid: u32,
    /// The boot the process ran in (a pid means nothing after a reboot).
    pub boot: Option<String>,
    /// The cache database of the checkout that builds in it.
    pub checkout: Option<PathBuf>,
}

impl OwnerRecord {
    fn parse(text: &str) -> Option<OwnerRecord> {
        let mut lines = text.lines();
        let pid = lines.next()?.trim().parse().ok()?;
        let field = |l: Option<&str>| l.map(str::trim).filter(|l| !l.is_empty()).map(String::from);
        Some(OwnerRecord {
            pid,
            boot: field(lines.next()),
            checkout: field(lines.next()).map(PathBuf::from),
        })
    }

    /// Is the process still running (in this boot)? A reused pid keeps the
    /// container: the safe mistake.
    pub fn alive(&self) -> bool {
        if let (Some(then), Some(now)) = (&self.boot, boot_id())
            && *then != now
        {
            return false;
        }
        Path::new("/proc").join(self.pid.to_string()).exists()
    }
}

fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_string())
}

/// A checkout's cache database as recorded: its resolved path when it
/// exists, so two spellings of one file are one checkout.
pub fn checkout_key(db: &Path) -> PathBuf {
    db.canonicalize().unwrap_or_else(|_| db.to_path_buf())
}

impl Coord {
    /// The coordination directory of the storage whose root is `root`.
    pub fn of_storage(root: &Path) -> Coord {
        let dir = root.join("layerbuild");
        Coord {
            locks: dir.join("locks"),
            shared: Some(dir),
        }
    }

    /// Per-checkout coordination, for a backend without a storage on disk.
    pub fn checkout_only(cache_dir: &Path) -> Coord {
        Coord {
            locks: cache_dir.join("locks"),
            shared: None,
        }
    }

    /// Where the per-digest lock files are.
    pub fn lock_dir(&self) -> &Path {
        &self.locks
    }

    /// Do other checkouts of this storage see these records?
    pub fn is_shared(&self) -> bool {
        self.shared.is_some()
    }

    fn owner_path(&self, container: &str) -> Option<PathBuf> {
        Some(self.shared.as_ref()?.join("owners").join(container))
    }

    /// Records this process as the builder in `container` (before it is
    /// created), for the checkout whose cache database is `db`.
    pub fn claim(&self, container: &str, db: &Path) -> Result<()> {
        let Some(path) = self.owner_path(container) else {
            return Ok(());
        };
        let text = format!(
            "{}\n{}\n{}\n",
            std::process::id(),
            boot_id().unwrap_or_default(),
            checkout_key(db).display()
        );
        write_atomically(&path, &text)
    }

    /// Forgets `container`'s owner (its image is recorded, or it is gone).
    pub fn release(&self, container: &str) {
        if let Some(p) = self.owner_path(container) {
            let _ = std::fs::remove_file(p);
        }
    }

    /// `container`'s owner record, if any.
    pub fn owner(&self, container: &str) -> Option<OwnerRecord> {
        let text = std::fs::read_to_string(self.owner_path(container)?).ok()?;
        OwnerRecord::parse(&text)
    }

    /// Every owner record, by container name.
    pub fn owners(&self) -> BTreeMap<String, OwnerRecord> {
        let Some(dir) = &self.shared else {
            return BTreeMap::new();
        };
        let Ok(entries) = std::fs::read_dir(dir.join("owners")) else {
            return BTreeMap::new();
        };
        entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                if name.starts_with('.') {
                    return None;
                }
                let rec = OwnerRecord::parse(&std::fs::read_to_string(e.path()).ok()?)?;
                Some((name, rec))
            })
            .collect()
    }

    /// Records that the checkout whose cache database is `db` (workspace
    /// `workspace`) keeps images in this storage.
    pub fn register(&self, db: &Path, workspace: &str) -> Result<()> {
        let Some(dir) = &self.shared else {
            return Ok(());
        };
        let db = checkout_key(db);
        let path = dir
            .join("checkouts")
            .join(&blake3::hash(db.as_os_str().as_encoded_bytes()).to_hex()[..16]);
        let text = format!("{}\n{workspace}\n", db.display());
        if std::fs::read_to_string(&path).is_ok_and(|t| t == text) {
            return Ok(());
        }
        write_atomically(&path, &text)
    }

    /// The cache databases of the other checkouts of `workspace` recorded
    /// here that still exist (`own` excluded). Records of checkouts whose
    /// database is gone are removed.
    pub fn other_checkouts(&self, own: &Path, workspace: &str) -> Vec<PathBuf> {
        let Some(dir) = &self.shared else {
            return vec![];
        };
        let Ok(entries) = std::fs::read_dir(dir.join("checkouts")) else {
            return vec![];
        };
        let own = checkout_key(own);
        let mut out = vec![];
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let Ok(text) = std::fs::read_to_string(e.path()) else {
                continue;
            };
            let mut lines = text.lines();
            let (Some(db), Some(ws)) = (lines.next(), lines.next()) else {
                continue;
            };
            let db = PathBuf::from(db);
            if !db.exists() {
                let _ = std::fs::remove_file(e.path());
                continue;
            }
            if ws == workspace && db != own {
                out.push(db);
            }
        }
        out.sort();
        out
    }
}

/// Writes `path` whole or not at all (a reader never sees half a record).
fn write_atomically(path: &Path, text: &str) -> Result<()> {
    let dir = path.parent().expect("a record has a directory");
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let tmp = dir.join(format!(
        ".{}.{}",
        path.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ));
    std::fs::write(&tmp, text).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_are_recorded_read_and_released() {
        let dir = tempfile::tempdir().unwrap();
        let c = Coord::of_storage(dir.path());
        let db = dir.path().join("ws/cache/layerbuild.db");
        c.claim("layerbuild-ws-a-a-0123456789ab", &db).unwrap();
        let rec = c.owner("layerbuild-ws-a-a-0123456789ab").unwrap();
        assert_eq!(rec.pid, std::process::id());
        assert_eq!(rec.checkout.as_deref(), Some(db.as_path()));
        assert!(rec.alive());
        assert_eq!(c.owners().len(), 1);
        c.release("layerbuild-ws-a-a-0123456789ab");
        assert_eq!(c.owner("layerbuild-ws-a-a-0123456789ab"), None);
    }

    #[test]
    fn a_pid_of_another_boot_is_dead() {
        let rec = OwnerRecord::parse(&format!("{}\nother-boot\n/x\n", std::process::id())).unwrap();
        assert!(!rec.alive() || boot_id().is_none());
        let legacy = OwnerRecord::parse(&format!("{}\n", std::process::id())).unwrap();
        assert_eq!(legacy.boot, None);
        assert!(legacy.alive());
    }

    #[test]
    fn lists_the_other_live_checkouts_of_a_workspace() {
        let dir = tempfile::tempdir().unwrap();
        let c = Coord::of_storage(&dir.path().join("storage"));
        let mut dbs = vec![];
        for n in ["a", "b", "c", "gone"] {
            let db = dir.path().join(n).join("layerbuild.db");
            std::fs::create_dir_all(db.parent().unwrap()).unwrap();
            std::fs::write(&db, "").unwrap();
            c.register(&db, if n == "c" { "other" } else { "ws" })
                .unwrap();
            dbs.push(checkout_key(&db));
        }
        std::fs::remove_file(&dbs[3]).unwrap();
        assert_eq!(c.other_checkouts(&dbs[0], "ws"), [dbs[1].clone()]);
        let records = std::fs::read_dir(dir.path().join("storage/layerbuild/checkouts"))
            .unwrap()
            .count();
        assert_eq!(records, 3, "the gone checkout's record is removed");
        assert!(
            Coord::checkout_only(dir.path())
                .other_checkouts(&dbs[0], "ws")
                .is_empty()
        );
    }
}

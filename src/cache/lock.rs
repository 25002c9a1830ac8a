//! Per-digest build locks: an advisory `flock` on `<dir>/<digest>.lock`
//! held while one process builds (or pulls, or adopts) a digest. Other
//! processes wanting the same digest block on it, then look the cache up
//! again and reuse (or adopt) what the holder made. The directory is the
//! container storage's ([`super::shared::Coord::lock_dir`]), so checkouts
//! sharing a storage exclude each other too.
//!
//! The kernel drops a `flock` when the holding process dies, `kill -9`
//! included, so a crashed build never leaves a lock behind. The file is
//! opened close-on-exec (std's default), so buildah and ansible-playbook
//! children never inherit it: an orphaned child of a killed build does not
//! keep the digest locked.
//!
//! The holder removes the file before unlocking, so `locks/` does not grow
//! with every digest ever built. A waiter may thus lock a file that was just
//! unlinked; it checks that the path still names the inode it locked and
//! starts over when it does not (the usual pattern for unlinked lock files).
//!
//! I/O: files under the lock directory.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::digest::Digest;
use crate::error::{Error, Result};

/// A held per-digest lock; released (and its file removed) when dropped.
#[derive(Debug)]
pub struct DigestLock {
    path: PathBuf,
    file: Option<File>,
}

/// Who held the lock when we had to wait for it, as its file says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub pid: Option<u32>,
    pub label: Option<String>,
}

impl Holder {
    fn parse(text: &str) -> Holder {
        let mut lines = text.lines();
        Holder {
            pid: lines.next().and_then(|l| l.trim().parse().ok()),
            label: lines
                .next()
                .map(|l| l.trim().to_string())
                .filter(|l| !l.is_empty()),
        }
    }
}

/// The lock file of `digest` in the lock directory `dir`.
pub fn lock_path(dir: &Path, digest: &Digest) -> PathBuf {
    dir.join(format!("{digest}.lock"))
}

impl DigestLock {
    /// Takes the lock of `digest`, blocking while another process holds it;
    /// `on_wait` is called once, before blocking, with what the lock file
    /// says about the holder. `label` is written for the next waiter to see.
    pub fn acquire(
        dir: &Path,
        digest: &Digest,
        label: &str,
        on_wait: &mut dyn FnMut(&Holder),
    ) -> Result<DigestLock> {
        DigestLock::acquire_at(lock_path(dir, digest), label, on_wait)
    }

    /// [`DigestLock::acquire`] of the lock file `path`, for what is not a
    /// digest (the directories a layer boots from).
    pub fn acquire_at(
        path: PathBuf,
        label: &str,
        on_wait: &mut dyn FnMut(&Holder),
    ) -> Result<DigestLock> {
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let mut waited = false;
        loop {
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(|e| Error::io(&path, e))?;
            match file.try_lock() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => {
                    if !waited {
                        waited = true;
                        let mut text = String::new();
                        let _ = file.read_to_string(&mut text);
                        on_wait(&Holder::parse(&text));
                    }
                    file.lock().map_err(|e| lock_error(&path, e))?;
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(lock_error(&path, e)),
            }
            // The holder before us may have removed the file after we opened
            // it: a lock on an unlinked inode excludes nobody.
            let same = match (std::fs::metadata(&path), file.metadata()) {
                (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
                _ => false,
            };
            if !same {
                continue;
            }
            // Best effort: only shown to waiters.
            let _ = file.set_len(0);
            let _ = file.seek(SeekFrom::Start(0));
            let _ = write!(file, "{}\n{label}\n", std::process::id());
            return Ok(DigestLock {
                path,
                file: Some(file),
            });
        }
    }
}

impl Drop for DigestLock {
    fn drop(&mut self) {
        // Unlink while still holding the lock, then unlock by closing.
        let _ = std::fs::remove_file(&self.path);
        drop(self.file.take());
    }
}

fn lock_error(path: &Path, e: std::io::Error) -> Error {
    Error::env(format!("cannot lock {}: {e}", path.display())).with_hint(
        "the lock directory must support flock(2): keep container storage and [workspace] cache on a local file system",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Barrier};
    use std::time::Duration;

    #[test]
    fn excludes_other_holders_and_reports_the_holder_to_waiters() {
        let dir = tempfile::tempdir().unwrap();
        let d = Digest::from("ab".repeat(32));
        let first =
            DigestLock::acquire(dir.path(), &d, "//a/a", &mut |_| panic!("nobody holds it"))
                .unwrap();
        let inside = Arc::new(AtomicUsize::new(1));
        let seen = Arc::new(std::sync::Mutex::new(None));
        let t = {
            let (dir, d, inside, seen) = (
                dir.path().to_path_buf(),
                d.clone(),
                inside.clone(),
                seen.clone(),
            );
            std::thread::spawn(move || {
                let _l = DigestLock::acquire(&dir, &d, "//a/a", &mut |h| {
                    *seen.lock().unwrap() = Some(h.clone());
                })
                .unwrap();
                // The first holder is gone before we get in.
                assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0);
                inside.fetch_sub(1, Ordering::SeqCst);
            })
        };
        std::thread::sleep(Duration::from_millis(200));
        inside.fetch_sub(1, Ordering::SeqCst);
        drop(first);
        t.join().unwrap();
        assert_eq!(
            *seen.lock().unwrap(),
            Some(Holder {
                pid: Some(std::process::id()),
                label: Some("//a/a".into())
            })
        );
        assert!(!lock_path(dir.path(), &d).exists(), "the file is removed");
    }

    #[test]
    fn many_threads_never_hold_one_digest_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let d = Digest::from("cd".repeat(32));
        let inside = Arc::new(AtomicUsize::new(0));
        let barrier = Arc::new(Barrier::new(8));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (dir, d, inside, barrier) = (
                    dir.path().to_path_buf(),
                    d.clone(),
                    inside.clone(),
                    barrier.clone(),
                );
                std::thread::spawn(move || {
                    barrier.wait();
                    for _ in 0..20 {
                        let _l = DigestLock::acquire(&dir, &d, "//a/a", &mut |_| {}).unwrap();
                        assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0);
                        std::thread::yield_now();
                        inside.fetch_sub(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    }

    #[test]
    fn reads_the_holder_from_the_file() {
        assert_eq!(
            Holder::parse("42\n//compute/slurm\n"),
            Holder {
                pid: Some(42),
                label: Some("//compute/slurm".into())
            }
        );
        assert_eq!(
            Holder::parse(""),
            Holder {
                pid: None,
                label: None
            }
        );
    }
}

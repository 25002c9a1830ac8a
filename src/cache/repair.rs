//! Keeping the cache database trustworthy after crashes and damage: the
//! user-facing error for a SQLite error on a given database file (damaged,
//! locked, read-only, full), `PRAGMA integrity_check`, moving a
//! damaged file aside, and rows recorded for images found in container
//! storage (`cache rebuild-index`, and builds adopting an image committed by
//! a build killed before it could record it).
//!
//! I/O: the database file (and its `-wal`/`-shm` companions).

use std::path::{Path, PathBuf};

use rusqlite::ffi::ErrorCode;
use rusqlite::params;

use super::Cache;
use crate::digest::Digest;
use crate::error::{Error, Result};

/// Is this error SQLite saying the file is not (or no longer) a database?
pub fn is_damage(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt)
    )
}

/// The command that repairs a damaged database.
pub const REPAIR_COMMAND: &str = "layerbuild cache rebuild-index";

/// The error users see for an error of the database at `path`: a damaged
/// file names the file and the command that repairs it; a lock held too
/// long says who to suspect.
pub(crate) fn user_error(path: &Path, e: &rusqlite::Error) -> Error {
    let file = path.display();
    if is_damage(e) {
        return Error::env(format!("the cache database {file} is damaged: {e}")).with_hint(
            format!(
                "run `{REPAIR_COMMAND}`: it moves the file aside (to {}.damaged-TIME) and rebuilds the index from the images in container storage; only build logs and history are lost",
                path.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "layerbuild.db".into())
            ),
        );
    }
    if e.sqlite_error_code() == Some(ErrorCode::DatabaseBusy) {
        return Error::env(format!("cache database {file}: {e}")).with_hint(
            "another layerbuild kept the database locked for more than 30 s; retry, or look for a hung layerbuild process",
        );
    }
    let hint = match e.sqlite_error_code() {
        Some(ErrorCode::ReadOnly) => Some(format!(
            "{file} or its directory is read-only (a read-only mount, or files owned by another user): make it writable, or point [workspace] cache at a writable directory"
        )),
        Some(ErrorCode::CannotOpen) => Some(format!(
            "{file} cannot be created or opened: check that its directory exists, is a directory, is writable by this user and has free space"
        )),
        Some(ErrorCode::DiskFull) => Some(format!(
            "the file system holding {file} is full: free space (`layerbuild gc` removes old images and logs) and retry"
        )),
        Some(ErrorCode::SystemIoFailure) => Some(format!(
            "the system failed to read or write {file}: a full disk is the usual cause (check `df`), then a failing disk or network mount"
        )),
        _ => None,
    };
    let err = Error::env(format!("cache database {file}: {e}"));
    match hint {
        Some(h) => err.with_hint(h),
        None => err,
    }
}

/// Moves a damaged database and its WAL files aside; returns the new name.
pub fn move_aside(path: &Path, now: i64) -> Result<PathBuf> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "layerbuild.db".into());
    let target = path.with_file_name(format!("{name}.damaged-{now}"));
    for suffix in ["-wal", "-shm"] {
        let from = path.with_file_name(format!("{name}{suffix}"));
        if from.exists() {
            let to = path.with_file_name(format!("{name}.damaged-{now}{suffix}"));
            std::fs::rename(&from, &to).map_err(|e| Error::io(&from, e))?;
        }
    }
    std::fs::rename(path, &target).map_err(|e| Error::io(path, e))?;
    Ok(target)
}

/// A manifest for a row whose inputs are unknown (found in container
/// storage by `rebuild-index` for a digest no current layer has). Format 0:
/// `why` reports such a build as recorded by another format, so a rebuild
/// of that layer cannot be explained against it.
pub const UNKNOWN_MANIFEST: &str =
    r#"{"format":0,"unknown":"recovered by `layerbuild cache rebuild-index`"}"#;

/// A row recovered from an image in container storage, without a manifest.
#[derive(Debug, Clone)]
pub struct Recovered<'a> {
    pub digest: &'a Digest,
    pub label: &'a str,
    pub image_id: &'a str,
    pub image_name: &'a str,
    pub built_at: i64,
}

impl Cache {
    /// `PRAGMA integrity_check`: empty when the file is sound, else SQLite's findings.
    pub fn integrity_problems(&self) -> Result<Vec<String>> {
        let found: Vec<String> = self.read(|conn| {
            conn.prepare("PRAGMA integrity_check")?
                .query_map([], |r| r.get::<_, String>(0))?
                .collect()
        })?;
        Ok(found.into_iter().filter(|l| l != "ok").collect())
    }

    /// Records a recovered image as cached, with an unknown manifest, and a
    /// history row with source `adopted`, in one transaction.
    pub fn record_recovered(&mut self, r: &Recovered<'_>) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "INSERT OR REPLACE INTO layers (digest, image_id, image_name, label, system, manifest, built_at, duration_ms)
                 VALUES (?1, ?2, ?3, ?4, NULL, ?5, ?6, 0)",
                params![r.digest.as_str(), r.image_id, r.image_name, r.label, UNKNOWN_MANIFEST, r.built_at],
            )?;
            tx.execute(
                "INSERT INTO builds (label, system, digest, status, started_at, duration_ms, image_id, manifest, source)
                 VALUES (?1, NULL, ?2, 'built', ?3, 0, ?4, ?5, 'adopted')",
                params![r.label, r.digest.as_str(), r.built_at, r.image_id, UNKNOWN_MANIFEST],
            )?;
            Ok(())
        })
    }

    /// Deletes the cache row of `digest` (its image is gone); history stays.
    pub fn forget_layer(&mut self, digest: &Digest) -> Result<()> {
        self.read(|conn| {
            conn.execute(
                "DELETE FROM layers WHERE digest = ?1",
                params![digest.as_str()],
            )
        })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_only_full_or_failing_database_says_what_to_do() {
        for (code, says) in [
            (rusqlite::ffi::SQLITE_READONLY, "read-only"),
            (rusqlite::ffi::SQLITE_CANTOPEN, "writable by this user"),
            (rusqlite::ffi::SQLITE_FULL, "is full"),
            (rusqlite::ffi::SQLITE_IOERR, "full disk"),
        ] {
            let e = rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None);
            match user_error(Path::new("/c/layerbuild.db"), &e) {
                Error::Environment { hint: Some(h), .. } => assert!(h.contains(says), "{h}"),
                other => panic!("no hint for code {code}: {other:?}"),
            }
        }
    }

    /// Each cache names its own file, whichever was opened last.
    #[test]
    fn an_error_names_the_database_it_came_from() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.db"), dir.path().join("b.db"));
        let first = Cache::open(&a).unwrap();
        let _second = Cache::open(&b).unwrap();
        let e = first
            .read(|conn| conn.execute("SELECT * FROM no_such_table", []))
            .unwrap_err();
        let text = e.to_string();
        assert!(
            text.starts_with(&format!("cache database {}: ", a.display())),
            "{text}"
        );
        assert_eq!(e.exit_code(), 3);
    }

    #[test]
    fn a_garbled_file_is_reported_as_damaged_with_the_repair_command() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("layerbuild.db");
        std::fs::write(&db, vec![0x5a; 8192]).unwrap();
        let e = match Cache::open(&db) {
            Err(e) => e,
            Ok(_) => panic!("a garbled file opened"),
        };
        let text = e.to_string();
        assert_eq!(e.exit_code(), 3);
        assert!(text.contains(&db.display().to_string()), "{text}");
        assert!(text.contains("is damaged"), "{text}");
        assert!(text.contains(REPAIR_COMMAND), "{text}");
    }

    #[test]
    fn recovered_rows_are_lookups_and_integrity_is_ok() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("layerbuild.db");
        let mut c = Cache::open(&db).unwrap();
        let d = Digest::from("e".repeat(64));
        c.record_recovered(&Recovered {
            digest: &d,
            label: "//a/a",
            image_id: "img",
            image_name: "localhost/layerbuild/w/a/a:eeeeeeeeeeee",
            built_at: 5,
        })
        .unwrap();
        let row = c.lookup(&d).unwrap().unwrap();
        assert_eq!(row.image_id, "img");
        let b = c.build_with_digest(&d).unwrap().unwrap();
        assert_eq!(b.format(), Some(0));
        assert!(b.manifest().is_none());
        assert!(c.integrity_problems().unwrap().is_empty());
        c.forget_layer(&d).unwrap();
        assert!(c.lookup(&d).unwrap().is_none());
    }

    #[test]
    fn moves_the_file_and_its_wal_aside() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("layerbuild.db");
        std::fs::write(&db, "x").unwrap();
        std::fs::write(dir.path().join("layerbuild.db-wal"), "w").unwrap();
        let to = move_aside(&db, 7).unwrap();
        assert_eq!(to, dir.path().join("layerbuild.db.damaged-7"));
        assert!(!db.exists());
        assert!(dir.path().join("layerbuild.db.damaged-7-wal").exists());
    }
}

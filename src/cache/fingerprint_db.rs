//! The fingerprint database (`CACHE_DIR/fingerprint.db`): storage for the
//! two pure caches of [`crate::fingerprint::session`], the stat cache
//! (table `file_stats`) and the memo (table `memo`). It is kept apart from
//! the build cache (`layerbuild.db`, which says which images exist) so that
//! read-only commands can create and refresh it, as `git status` refreshes
//! the index, without ever writing the build cache.
//!
//! Everything here is only a cache: a file that cannot be created, opened,
//! migrated or written is skipped (a damaged one is replaced), writes that
//! cannot take the lock quickly are dropped, and the next command reads
//! the files again. It never fails a command.
//!
//! I/O: this one SQLite file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::fingerprint::session::{MemoRow, MemoStore, StatStore};
use crate::fingerprint::statcache::{self, StatCache, StatEntry, now_ns};

/// The file's name in the cache directory.
pub const FILE: &str = "fingerprint.db";
/// Memos kept (one per selection and system used recently).
const KEEP: i64 = 8;
/// How long a write waits for another writer before giving up.
const WRITE_WAIT: Duration = Duration::from_millis(200);

/// Append-only, keyed on `PRAGMA user_version`.
const MIGRATIONS: &[&str] = &[
    // 1: the stat cache and the memo.
    "CREATE TABLE file_stats (
        path        TEXT PRIMARY KEY,
        size        INTEGER NOT NULL,
        mtime_ns    INTEGER NOT NULL,
        ctime_ns    INTEGER NOT NULL,
        inode       INTEGER NOT NULL,
        device      INTEGER NOT NULL,
        mode        INTEGER NOT NULL,
        hash        BLOB NOT NULL,
        jinja       INTEGER NOT NULL,
        recorded_ns INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE memo (
        key          TEXT PRIMARY KEY,
        created_ns   INTEGER NOT NULL,
        observations BLOB NOT NULL,
        signature    BLOB NOT NULL,
        digests      TEXT NOT NULL
    );",
    // 2: a file starting with a `#jinja2:` header is now Jinja: entries
    //    recorded before say otherwise.
    "DELETE FROM file_stats;
    DELETE FROM memo;",
    // 3: the stat cache as one encoded value (`statcache::encode`) instead
    //    of a row per file.
    "DROP TABLE file_stats;
    CREATE TABLE stat_cache (
        id      INTEGER PRIMARY KEY CHECK (id = 1),
        entries BLOB NOT NULL
    );",
];

pub struct FingerprintDb {
    conn: Mutex<Connection>,
}

impl FingerprintDb {
    /// The database in `cache_dir`, created if needed; `None` when it
    /// cannot be used (read-only or network file system, a newer schema).
    /// A damaged file is replaced.
    pub fn open(cache_dir: &Path) -> Option<FingerprintDb> {
        std::fs::create_dir_all(cache_dir).ok()?;
        if super::netfs::check(cache_dir).is_err() {
            return None;
        }
        let path = cache_dir.join(FILE);
        match Self::open_at(&path) {
            Ok(db) => Some(db),
            Err(e) if super::repair::is_damage(&e) => {
                for p in [
                    path.clone(),
                    with_suffix(&path, "-wal"),
                    with_suffix(&path, "-shm"),
                ] {
                    let _ = std::fs::remove_file(p);
                }
                Self::open_at(&path).ok()
            }
            Err(_) => None,
        }
    }

    fn open_at(path: &Path) -> rusqlite::Result<FingerprintDb> {
        let mut conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        let mode: String = conn.pragma_query_value(None, "journal_mode", |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            conn.pragma_update(None, "journal_mode", "WAL")?;
        }
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        loop {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let version: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
            let Some(sql) = MIGRATIONS.get(version as usize) else {
                if version as usize > MIGRATIONS.len() {
                    // Written by a newer layerbuild: leave it alone.
                    return Err(rusqlite::Error::InvalidQuery);
                }
                break;
            };
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", version + 1)?;
            tx.commit()?;
        }
        conn.busy_timeout(WRITE_WAIT)?;
        Ok(FingerprintDb {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn load(&self) -> rusqlite::Result<HashMap<String, StatEntry>> {
        let bytes: Option<Vec<u8>> = self
            .conn()
            .query_row("SELECT entries FROM stat_cache WHERE id = 1", [], |r| {
                r.get(0)
            })
            .optional()?;
        // Malformed: empty (the files are read instead).
        Ok(bytes
            .and_then(|b| statcache::decode(&b))
            .unwrap_or_default())
    }

    /// The entries loaded, less those of vanished files, with the scan's
    /// new ones, written as one value.
    fn write_stats<'a>(
        &self,
        stat: &'a StatCache,
        new: &statcache::NewEntries<'a>,
    ) -> rusqlite::Result<()> {
        let kept = statcache::kept(&stat.entries, &stat.removed);
        // Written into the row in pieces, twice encoded (its length first):
        // neither the encoding nor a copy for SQLite is held whole.
        let mut len = 0usize;
        let _ = statcache::encode_to(statcache::merged(&kept, new()), &mut |b| {
            len += b.len();
            Ok(())
        });
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "INSERT OR REPLACE INTO stat_cache (id, entries) VALUES (1, zeroblob(?1))",
            params![len as i64],
        )?;
        {
            let mut blob = tx.blob_open(rusqlite::MAIN_DB, c"stat_cache", c"entries", 1, false)?;
            let mut written = 0usize;
            statcache::encode_to(statcache::merged(&kept, new()), &mut |b| {
                written += b.len();
                std::io::Write::write_all(&mut blob, b)
            })
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
            if written != len {
                // Never: the same entries encode the same. Nothing is stored.
                return Err(rusqlite::Error::ToSqlConversionFailure(
                    "the stat cache encoded to two lengths".into(),
                ));
            }
        }
        tx.commit()
    }

    fn write_memo(&self, id: &str, row: &MemoRow) -> rusqlite::Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "INSERT OR REPLACE INTO memo (key, created_ns, observations, signature, digests)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![id, now_ns(), row.observations, row.signature, row.digests],
        )?;
        tx.execute(
            "DELETE FROM memo WHERE key NOT IN
             (SELECT key FROM memo ORDER BY created_ns DESC LIMIT ?1)",
            params![KEEP],
        )?;
        tx.commit()
    }
}

impl StatStore for FingerprintDb {
    fn load_stats(&self) -> HashMap<String, StatEntry> {
        self.load().unwrap_or_default()
    }

    fn store_stats<'a>(&self, stat: &'a StatCache, new: &statcache::NewEntries<'a>) -> bool {
        !stat.dirty() || self.write_stats(stat, new).is_ok()
    }
}

impl MemoStore for FingerprintDb {
    fn memo(&self, id: &str) -> Option<MemoRow> {
        self.conn()
            .query_row(
                "SELECT observations, signature, digests FROM memo WHERE key = ?1",
                params![id],
                |r| {
                    Ok(MemoRow {
                        observations: r.get(0)?,
                        signature: r.get(1)?,
                        digests: r.get(2)?,
                    })
                },
            )
            .optional()
            .ok()
            .flatten()
    }

    fn store_memo(&self, id: &str, row: &MemoRow) -> bool {
        self.write_memo(id, row).is_ok()
    }
}

/// The fingerprint database of a cache directory, opened on first use and
/// created only to store: a command that fails on bad input before its
/// fingerprint is done leaves no file behind.
pub struct LazyFingerprintDb {
    dir: PathBuf,
    db: std::sync::OnceLock<Option<FingerprintDb>>,
}

impl LazyFingerprintDb {
    pub fn new(cache_dir: &Path) -> LazyFingerprintDb {
        LazyFingerprintDb {
            dir: cache_dir.to_path_buf(),
            db: std::sync::OnceLock::new(),
        }
    }

    /// The database, if it exists (or was created by a store).
    fn existing(&self) -> Option<&FingerprintDb> {
        if self.db.get().is_none() && !self.dir.join(FILE).exists() {
            return None;
        }
        self.created()
    }

    fn created(&self) -> Option<&FingerprintDb> {
        self.db
            .get_or_init(|| FingerprintDb::open(&self.dir))
            .as_ref()
    }
}

impl StatStore for LazyFingerprintDb {
    fn load_stats(&self) -> HashMap<String, StatEntry> {
        self.existing().map(|d| d.load_stats()).unwrap_or_default()
    }

    fn store_stats<'a>(&self, stat: &'a StatCache, new: &statcache::NewEntries<'a>) -> bool {
        !stat.dirty() || self.created().is_some_and(|d| d.store_stats(stat, new))
    }
}

impl MemoStore for LazyFingerprintDb {
    fn memo(&self, id: &str) -> Option<MemoRow> {
        self.existing()?.memo(id)
    }

    fn store_memo(&self, id: &str, row: &MemoRow) -> bool {
        self.created().is_some_and(|d| d.store_memo(id, row))
    }
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memos_are_kept_to_the_newest_and_garbage_is_replaced() {
        let d = tempfile::tempdir().unwrap();
        let db = FingerprintDb::open(d.path()).unwrap();
        let row = MemoRow {
            observations: vec![],
            signature: vec![1; 32],
            digests: String::new(),
        };
        for i in 0..KEEP + 3 {
            assert!(db.store_memo(&format!("k{i}"), &row));
        }
        let n: i64 = db
            .conn()
            .query_row("SELECT count(*) FROM memo", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, KEEP);
        assert_eq!(db.memo(&format!("k{}", KEEP + 2)), Some(row));
        assert_eq!(db.memo("k0"), None);
        drop(db);
        std::fs::write(d.path().join(FILE), "not a database, longer than a header").unwrap();
        let _ = std::fs::remove_file(d.path().join("fingerprint.db-wal"));
        let db = FingerprintDb::open(d.path()).expect("a damaged file is replaced");
        assert!(db.load_stats().is_empty());
    }
}

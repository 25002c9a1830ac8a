//! The SQLite cache: digest -> committed image, plus a history of every build
//! attempt (successful or failed) with its manifest and log.
//!
//! Schema changes are append-only migrations keyed on `PRAGMA user_version`.
//! A layer's cache row is written only after its commit succeeded, in one
//! transaction with its history row; a failed layer never gets one.
//!
//! Concurrent processes share the file safely: WAL, a 30 s busy timeout,
//! every write transaction started with `BEGIN IMMEDIATE` (a deferred one
//! that upgrades to a write can fail with `database is locked` at once),
//! migrations re-checked under that lock, one connection per process that
//! is never used across a fork (children are exec'd at once). Building a
//! digest is serialised across processes by [`lock::DigestLock`].
//!
//! I/O: the database file under the cache directory.

pub mod fingerprint_db;
pub mod lock;
pub mod netfs;
pub mod repair;
pub mod shared;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde::Serialize;

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::fingerprint::Manifest;
use crate::fingerprint::inventory::VarSnapshot;
use crate::status::{RecordSource, RecordStatus};

/// Append-only: never edit a released entry, add a new one.
const MIGRATIONS: &[&str] = &[
    // 1: layers and builds.
    "CREATE TABLE layers (
        digest      TEXT PRIMARY KEY,
        image_id    TEXT NOT NULL,
        image_name  TEXT NOT NULL,
        label       TEXT NOT NULL,
        system      TEXT,
        manifest    TEXT NOT NULL,
        built_at    INTEGER NOT NULL,
        duration_ms INTEGER NOT NULL
    );
    CREATE TABLE builds (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        label       TEXT NOT NULL,
        system      TEXT,
        digest      TEXT NOT NULL,
        status      TEXT NOT NULL CHECK (status IN ('built', 'failed')),
        started_at  INTEGER NOT NULL,
        duration_ms INTEGER NOT NULL,
        image_id    TEXT,
        container   TEXT,
        log_path    TEXT,
        error       TEXT,
        manifest    TEXT NOT NULL
    );
    CREATE INDEX builds_by_label ON builds (label, system, id);",
    // 2: inventory variables beside each build's manifest (for `why`);
    //    a failed build's kept container can be removed (`clean --failed`).
    "ALTER TABLE builds ADD COLUMN vars TEXT;
    ALTER TABLE builds ADD COLUMN container_removed INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX builds_by_digest ON builds (digest);",
    // 3: the inventory directory a build's variables were read from (for display).
    "ALTER TABLE builds ADD COLUMN inventory TEXT;",
    // 4: where a cached layer came from: built here, or pulled from the registry.
    "ALTER TABLE builds ADD COLUMN source TEXT NOT NULL DEFAULT 'built';",
    // 5: exports written, so an output already holding a digest is skipped.
    "CREATE TABLE outputs (
        target      TEXT PRIMARY KEY,
        format      TEXT NOT NULL,
        options     TEXT NOT NULL,
        label       TEXT NOT NULL,
        digest      TEXT NOT NULL,
        size        INTEGER NOT NULL,
        mtime_ns    INTEGER NOT NULL,
        written_at  INTEGER NOT NULL
    );",
    // 6: the stat cache (see `stat.rs`): a file's stat data -> its content hash.
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
    ) WITHOUT ROWID;",
    // 7: the fingerprint memo (see `memo.rs`): digests and what they were computed from.
    "CREATE TABLE memo (
        key          TEXT PRIMARY KEY,
        created_ns   INTEGER NOT NULL,
        observations BLOB NOT NULL,
        signature    BLOB NOT NULL,
        digests      TEXT NOT NULL
    );",
    // 8: the stat cache and the memo moved to their own file
    //    (`fingerprint_db.rs`), which read-only commands may write.
    "DROP TABLE file_stats;
    DROP TABLE memo;",
    // 9: large groups of a manifest's files (a role's, a whole-workspace
    //    fallback's) stored once, by content, for every layer sharing them
    //    (see `compact_manifest`).
    "CREATE TABLE file_sets (
        id    TEXT PRIMARY KEY,
        files TEXT NOT NULL
    );",
    // 10: promotions (`promote`): a release tag pointed at a layer's
    //     image in the registry, by whom and when; every one kept.
    "CREATE TABLE releases (
        id              INTEGER PRIMARY KEY AUTOINCREMENT,
        release         TEXT NOT NULL,
        label           TEXT NOT NULL,
        system          TEXT,
        digest          TEXT NOT NULL,
        reference       TEXT NOT NULL,
        manifest_digest TEXT NOT NULL,
        previous        TEXT,
        promoted_at     INTEGER NOT NULL,
        promoted_by     TEXT NOT NULL
    );
    CREATE INDEX releases_by_name ON releases (release, label, id);",
    // 11: the architecture of a promotion (a release of several is a
    //     manifest list: one row per architecture, `manifest_digest` its
    //     entry's manifest).
    "ALTER TABLE releases ADD COLUMN arch TEXT NOT NULL DEFAULT 'x86_64';",
    // 12: the architecture of a cached layer's image (`x86_64`, `aarch64`);
    //     NULL for rows recorded before layerbuild knew architectures (and
    //     recovered ones), whose image is checked before it is reused: an
    //     aarch64 machine's build then had the digest an x86_64 build of
    //     the layer has now.
    "ALTER TABLE layers ADD COLUMN arch TEXT;",
];

/// A group of a manifest's files with one origin is stored as a shared
/// file set from this many entries on.
const FILE_SET_MIN: usize = 8;

/// The stored form of a manifest: its files grouped by origin (`role:X`,
/// `workspace`...), each group of [`FILE_SET_MIN`] entries or more moved to
/// the `file_sets` table under the blake3 of its canonical JSON and named
/// in `file_sets`. Layers sharing a role store its files once, not once
/// per layer: the history grows with files plus layers, not their
/// product. [`expand_manifest`] restores the manifest exactly (the digest
/// is always computed over the whole manifest, never over this form).
fn compact_manifest(tx: &rusqlite::Transaction<'_>, m: &Manifest) -> rusqlite::Result<String> {
    let mut v = serde_json::to_value(m).expect("manifest serialises");
    let Some(files) = v.get_mut("files").and_then(|f| f.as_object_mut()) else {
        return Ok(serde_json::to_string(&v).expect("manifest serialises"));
    };
    let mut groups: BTreeMap<String, serde_json::Map<String, serde_json::Value>> = BTreeMap::new();
    for (path, f) in files.iter() {
        let origin = f["origin"].as_str().unwrap_or_default().to_string();
        groups
            .entry(origin)
            .or_default()
            .insert(path.clone(), f.clone());
    }
    let mut ids = vec![];
    for group in groups.into_values().filter(|g| g.len() >= FILE_SET_MIN) {
        for path in group.keys() {
            files.remove(path);
        }
        let text = serde_json::to_string(&group).expect("files serialise");
        let id = blake3::hash(text.as_bytes()).to_hex().to_string();
        tx.execute(
            "INSERT OR IGNORE INTO file_sets (id, files) VALUES (?1, ?2)",
            params![id, text],
        )?;
        ids.push(serde_json::Value::String(id));
    }
    if !ids.is_empty() {
        v["file_sets"] = serde_json::Value::Array(ids);
    }
    Ok(serde_json::to_string(&v).expect("manifest serialises"))
}

/// [`compact_manifest`] undone: the file sets merged back into `files`. A
/// set that cannot be read leaves the text as it is (it then does not
/// parse as a manifest: shown as unknown, never as a wrong one).
fn expand_manifest(conn: &Connection, text: String) -> String {
    if !text.contains("\"file_sets\"") {
        return text;
    }
    let Ok(mut v) = serde_json::from_str::<serde_json::Value>(&text) else {
        return text;
    };
    let Some(ids) = v
        .as_object_mut()
        .and_then(|o| o.remove("file_sets"))
        .and_then(|ids| ids.as_array().cloned())
    else {
        return text;
    };
    let mut merged = serde_json::Map::new();
    for id in ids {
        let set: Option<String> = conn
            .query_row(
                "SELECT files FROM file_sets WHERE id = ?1",
                params![id.as_str().unwrap_or_default()],
                |r| r.get(0),
            )
            .optional()
            .ok()
            .flatten();
        let Some(set) = set.and_then(|s| {
            serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&s).ok()
        }) else {
            return text;
        };
        merged.extend(set);
    }
    if let Some(files) = v.get_mut("files").and_then(|f| f.as_object_mut()) {
        merged.extend(std::mem::take(files));
        // serde_json's map is sorted (no preserve_order): canonical again.
        *files = merged;
    }
    serde_json::to_string(&v).expect("manifest serialises")
}

/// An export as recorded: what it holds, and the file's size and mtime
/// then, so a file changed since is not taken for the recorded one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputRecord {
    pub target: String,
    pub format: String,
    pub options: String,
    pub label: String,
    pub digest: Digest,
    pub size: i64,
    pub mtime_ns: i64,
}

/// One promotion: the release tag `reference` (`<registry>/<type>/<layer>:<release>`)
/// pointed at the image of `label` at `digest`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReleaseRecord {
    pub release: String,
    pub label: String,
    pub system: Option<String>,
    pub digest: Digest,
    pub reference: String,
    /// The manifest digest (`sha256:...`) the release tag and the content
    /// tag share.
    pub manifest_digest: String,
    /// The layer digest the tag held before (moved with `--force`).
    pub previous: Option<Digest>,
    /// Unix time, seconds.
    pub promoted_at: i64,
    /// `CI_JOB_URL`, else `$USER`, else `unknown`.
    pub promoted_by: String,
    /// The architecture (`x86_64`, `aarch64`).
    pub arch: String,
}

pub struct Cache {
    conn: Connection,
    /// The database file, named in every error a query reports.
    path: PathBuf,
}

#[derive(Debug, Clone, Serialize)]
pub struct CachedLayer {
    pub digest: Digest,
    pub image_id: String,
    pub image_name: String,
    pub label: String,
    pub system: Option<String>,
    pub built_at: i64,
    pub duration_ms: i64,
    /// The image's architecture (`x86_64`, `aarch64`); `None`: not known
    /// (a row from before layerbuild knew architectures, a recovered one).
    pub arch: Option<String>,
}

/// One build attempt, for the history table.
#[derive(Debug, Clone)]
pub struct BuildRecord<'a> {
    pub label: &'a str,
    pub system: Option<&'a str>,
    pub digest: &'a Digest,
    pub manifest: &'a Manifest,
    pub started_at: i64,
    pub duration: Duration,
    pub log_path: Option<&'a Path>,
    pub vars: &'a VarSnapshot,
    pub inventory: Option<&'a str>,
    pub source: RecordSource,
}

/// A row of the build history.
#[derive(Debug, Clone, Serialize)]
pub struct BuildRow {
    pub id: i64,
    pub label: String,
    pub system: Option<String>,
    pub digest: Digest,
    /// `built` or `failed` ([`RecordStatus`]; kept as read, since anyone
    /// may edit the file).
    pub status: String,
    pub started_at: i64,
    pub duration_ms: i64,
    pub image_id: Option<String>,
    pub container: Option<String>,
    pub log_path: Option<String>,
    pub error: Option<String>,
    #[serde(skip)]
    pub manifest: String,
    #[serde(skip)]
    pub vars: Option<String>,
    pub container_removed: bool,
    pub inventory: Option<String>,
}

impl BuildRow {
    /// Did this attempt fail?
    pub fn is_failed(&self) -> bool {
        self.status == RecordStatus::Failed.as_str()
    }
}

impl BuildRow {
    /// The recorded manifest, if this version of layerbuild can read it.
    pub fn manifest(&self) -> Option<Manifest> {
        serde_json::from_str(&self.manifest).ok()
    }

    /// The format version the manifest was recorded with.
    pub fn format(&self) -> Option<u64> {
        serde_json::from_str::<serde_json::Value>(&self.manifest)
            .ok()
            .and_then(|v| v["format"].as_u64())
    }

    pub fn vars(&self) -> VarSnapshot {
        self.vars
            .as_deref()
            .and_then(|v| serde_json::from_str(v).ok())
            .unwrap_or_default()
    }
}

/// A history row without its manifest, and where its image came from
/// (`builds.source`: `built`, `pulled`, `adopted`; kept as read).
#[derive(Debug, Clone)]
pub struct BuildSummary {
    pub row: BuildRow,
    pub source: String,
}

const BUILD_COLUMNS: &str = "id, label, system, digest, status, started_at, duration_ms, image_id, container, log_path, error, manifest, vars, container_removed, inventory";

/// A `layers` row selected as `digest, image_id, image_name, label, system, built_at, duration_ms`.
fn cached_layer(r: &rusqlite::Row<'_>) -> rusqlite::Result<CachedLayer> {
    Ok(CachedLayer {
        digest: r.get::<_, String>(0)?.into(),
        image_id: r.get(1)?,
        image_name: r.get(2)?,
        label: r.get(3)?,
        system: r.get(4)?,
        built_at: r.get(5)?,
        duration_ms: r.get(6)?,
        arch: r.get(7)?,
    })
}

fn build_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<BuildRow> {
    Ok(BuildRow {
        id: r.get(0)?,
        label: r.get(1)?,
        system: r.get(2)?,
        digest: r.get::<_, String>(3)?.into(),
        status: r.get(4)?,
        started_at: r.get(5)?,
        duration_ms: r.get(6)?,
        image_id: r.get(7)?,
        container: r.get(8)?,
        log_path: r.get(9)?,
        error: r.get(10)?,
        manifest: r.get(11)?,
        vars: r.get(12)?,
        container_removed: r.get(13)?,
        inventory: r.get(14)?,
    })
}

/// Whether this process may create files in `dir` (`access(2)`: a
/// read-only mount says so even to root).
fn writable(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: a NUL-terminated path that lives across the call.
    if unsafe { libc::access(c.as_ptr(), libc::W_OK) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

impl Cache {
    /// Opens (creating if needed) the database at `path` and migrates it.
    pub fn open(path: &Path) -> Result<Cache> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
            netfs::check(dir)?;
        }
        let conn = Connection::open(path).map_err(|e| {
            // SQLite says only "unable to open database file": say why.
            match path.parent().map(|d| (d, writable(d))) {
                Some((dir, Err(why))) => Error::io(dir, why),
                _ => Error::env(format!("cannot open cache {}: {e}", path.display())).with_hint(
                    "check that the file is a layerbuild cache database and is readable and writable by this user",
                ),
            }
        })?;
        let mut cache = Cache {
            conn,
            path: path.to_path_buf(),
        };
        cache
            .conn
            .set_transaction_behavior(TransactionBehavior::Immediate);
        cache.read(|conn| {
            conn.busy_timeout(Duration::from_secs(30))?;
            // WAL is a property of the file: set it once, not on every open
            // (switching takes an exclusive lock).
            let mode: String = conn.pragma_query_value(None, "journal_mode", |r| r.get(0))?;
            if !mode.eq_ignore_ascii_case("wal") {
                conn.pragma_update(None, "journal_mode", "WAL")?;
            }
            conn.pragma_update(None, "synchronous", "NORMAL")
        })?;
        cache.migrate().map_err(|e| match e {
            // A damaged file or a lock held too long: already says what to do.
            Error::Environment {
                message,
                hint: Some(h),
            } if message.contains(&path.display().to_string()) => Error::env(message).with_hint(h),
            Error::Environment { message, .. } => {
                Error::env(format!("{}: {message}", path.display())).with_hint(
                    "if the file is not a layerbuild cache, point [workspace] cache elsewhere",
                )
            }
            other => other,
        })?;
        Ok(cache)
    }

    /// A SQLite error as users see it: naming this database, and what to
    /// do when it is damaged, locked, read-only or full.
    fn err(&self, e: rusqlite::Error) -> Error {
        repair::user_error(&self.path, &e)
    }

    /// Runs `f` on the connection; a SQLite error names this database.
    fn read<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T> {
        f(&self.conn).map_err(|e| self.err(e))
    }

    /// Runs `f` in one write transaction (`BEGIN IMMEDIATE`), committed
    /// when `f` succeeds; a SQLite error names this database.
    fn write<T>(
        &mut self,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<T>,
    ) -> Result<T> {
        let tx = self.conn.transaction();
        let done = tx.and_then(|tx| {
            let value = f(&tx)?;
            tx.commit()?;
            Ok(value)
        });
        done.map_err(|e| self.err(e))
    }

    /// The image ids another checkout's cache at `path` names (for `gc`),
    /// read without writing to it (no migration, no journal change).
    pub fn image_ids_in(path: &Path) -> Result<std::collections::HashSet<String>> {
        let read = || -> rusqlite::Result<std::collections::HashSet<String>> {
            let conn = Connection::open_with_flags(
                path,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
                    | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?;
            conn.busy_timeout(Duration::from_secs(30))?;
            let has_layers: bool = conn
                .query_row(
                    "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'layers'",
                    [],
                    |r| r.get::<_, i64>(0),
                )
                .map(|n| n > 0)?;
            if !has_layers {
                return Ok(Default::default());
            }
            let mut st = conn.prepare("SELECT image_id FROM layers")?;
            st.query_map([], |r| r.get(0))?.collect()
        };
        read().map_err(|e| repair::user_error(path, &e))
    }

    /// Opens the database only if it exists (read paths must not create it).
    pub fn open_existing(path: &Path) -> Result<Option<Cache>> {
        if path.exists() {
            Cache::open(path).map(Some)
        } else {
            Ok(None)
        }
    }

    fn migrate(&mut self) -> Result<()> {
        let version: i64 =
            self.read(|conn| conn.pragma_query_value(None, "user_version", |r| r.get(0)))?;
        if version as usize > MIGRATIONS.len() {
            return Err(Error::env(format!(
                "cache schema version {version} is newer than this layerbuild understands ({})",
                MIGRATIONS.len()
            ))
            .with_hint("upgrade layerbuild, or use another cache directory"));
        }
        if version as usize == MIGRATIONS.len() {
            return Ok(());
        }
        // Another process may be migrating too: read the version again
        // under the write lock, one migration per transaction.
        loop {
            let migrated = self.write(|tx| {
                let version: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
                let Some(sql) = MIGRATIONS.get(version as usize) else {
                    return Ok(false);
                };
                tx.execute_batch(sql)?;
                tx.pragma_update(None, "user_version", version + 1)?;
                Ok(true)
            })?;
            if !migrated {
                return Ok(());
            }
        }
    }

    pub fn lookup(&self, digest: &Digest) -> Result<Option<CachedLayer>> {
        // Called for every layer of a build, twice: prepared once.
        self.read(|conn| {
            conn.prepare_cached(
                "SELECT digest, image_id, image_name, label, system, built_at, duration_ms, arch
                 FROM layers WHERE digest = ?1",
            )?
            .query_row(params![digest.as_str()], cached_layer)
            .optional()
        })
    }

    /// Records a successful build: the cache row and its history row, atomically.
    pub fn record_built(
        &mut self,
        rec: &BuildRecord<'_>,
        image_id: &str,
        image_name: &str,
    ) -> Result<()> {
        complete(rec)?;
        self.write(|tx| {
            let manifest = compact_manifest(tx, rec.manifest)?;
            tx.execute(
                "INSERT OR REPLACE INTO layers (digest, image_id, image_name, label, system, manifest, built_at, duration_ms, arch)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    rec.digest.as_str(),
                    image_id,
                    image_name,
                    rec.label,
                    rec.system,
                    manifest,
                    rec.started_at,
                    rec.duration.as_millis() as i64,
                    rec.arch()
                ],
            )?;
            insert_build(tx, rec, RecordStatus::Built, Some(image_id), None, None, &manifest)
        })
    }

    /// Records the architecture of a cached layer's image, once checked.
    pub fn set_arch(&mut self, digest: &Digest, arch: &str) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "UPDATE layers SET arch = ?2 WHERE digest = ?1",
                params![digest.as_str(), arch],
            )?;
            Ok(())
        })
    }

    /// Records a failed build in the history only; no cache row.
    pub fn record_failed(
        &mut self,
        rec: &BuildRecord<'_>,
        container: Option<&str>,
        error: &str,
    ) -> Result<()> {
        complete(rec)?;
        self.write(|tx| {
            let manifest = compact_manifest(tx, rec.manifest)?;
            insert_build(
                tx,
                rec,
                RecordStatus::Failed,
                None,
                container,
                Some(error),
                &manifest,
            )
        })
    }

    /// Does the history know this label (for `ls`: "needs build" vs "never built")?
    pub fn ever_built(&self, label: &str, system: Option<&str>) -> Result<bool> {
        self.read(|conn| {
            conn.query_row(
                "SELECT 1 FROM layers WHERE label = ?1 AND system IS ?2 LIMIT 1",
                params![label, system],
                |_| Ok(()),
            )
            .optional()
        })
        .map(|row| row.is_some())
    }

    /// The newest build of `label` for `system` with `status` (any status if `None`).
    pub fn last_build(
        &self,
        label: &str,
        system: Option<&str>,
        status: Option<RecordStatus>,
    ) -> Result<Option<BuildRow>> {
        let row = self.read(|conn| {
            conn.query_row(
                &format!(
                    "SELECT {BUILD_COLUMNS} FROM builds WHERE label = ?1 AND system IS ?2 AND (?3 IS NULL OR status = ?3)
                     ORDER BY id DESC LIMIT 1"
                ),
                params![label, system, status.map(RecordStatus::as_str)],
                build_row,
            )
            .optional()
        })?;
        Ok(row.map(|r| self.expanded(r)))
    }

    /// The newest build of `label` whose digest starts with `prefix`.
    pub fn build_of_digest(&self, label: &str, prefix: &str) -> Result<Vec<BuildRow>> {
        self.builds(
            &format!(
                "SELECT {BUILD_COLUMNS} FROM builds WHERE label = ?1 AND digest LIKE ?2 || '%' ORDER BY id DESC"
            ),
            params![label, prefix],
        )
    }

    /// One recorded build per distinct digest starting with `prefix` (the newest).
    pub fn builds_with_digest_prefix(&self, prefix: &str) -> Result<Vec<BuildRow>> {
        self.builds(
            &format!(
                "SELECT {BUILD_COLUMNS} FROM builds WHERE id IN
                   (SELECT max(id) FROM builds WHERE digest LIKE ?1 || '%' GROUP BY digest)
                 ORDER BY digest"
            ),
            params![prefix],
        )
    }

    /// The newest recorded build with exactly this digest.
    pub fn build_with_digest(&self, digest: &Digest) -> Result<Option<BuildRow>> {
        let row = self.read(|conn| {
            conn.query_row(
                &format!(
                    "SELECT {BUILD_COLUMNS} FROM builds WHERE digest = ?1 ORDER BY id DESC LIMIT 1"
                ),
                params![digest.as_str()],
                build_row,
            )
            .optional()
        })?;
        Ok(row.map(|r| self.expanded(r)))
    }

    /// Failed builds whose kept container has not been removed, newest first,
    /// one per container.
    pub fn kept_containers(&self) -> Result<Vec<BuildRow>> {
        self.builds(
            &format!(
                "SELECT {BUILD_COLUMNS} FROM builds WHERE id IN
                   (SELECT max(id) FROM builds WHERE status = 'failed' AND container IS NOT NULL
                    AND container_removed = 0 GROUP BY container)
                 ORDER BY id DESC"
            ),
            [],
        )
    }

    /// Marks every failed build that kept `container` as cleaned up.
    pub fn container_removed(&mut self, container: &str) -> Result<()> {
        self.read(|conn| {
            conn.execute(
                "UPDATE builds SET container_removed = 1 WHERE container = ?1",
                params![container],
            )
        })?;
        Ok(())
    }

    pub fn output(&self, target: &str) -> Result<Option<OutputRecord>> {
        self.read(|conn| {
            conn.query_row(
                "SELECT target, format, options, label, digest, size, mtime_ns FROM outputs WHERE target = ?1",
                params![target],
                |r| {
                    Ok(OutputRecord {
                        target: r.get(0)?,
                        format: r.get(1)?,
                        options: r.get(2)?,
                        label: r.get(3)?,
                        digest: r.get::<_, String>(4)?.into(),
                        size: r.get(5)?,
                        mtime_ns: r.get(6)?,
                    })
                },
            )
            .optional()
        })
    }

    pub fn record_output(&mut self, rec: &OutputRecord, written_at: i64) -> Result<()> {
        self.read(|conn| {
            conn.execute(
                "INSERT OR REPLACE INTO outputs (target, format, options, label, digest, size, mtime_ns, written_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    rec.target,
                    rec.format,
                    rec.options,
                    rec.label,
                    rec.digest.as_str(),
                    rec.size,
                    rec.mtime_ns,
                    written_at
                ],
            )
        })?;
        Ok(())
    }

    /// Every cache row, each label's (and system's) newest first (for `gc`).
    pub fn all_layers(&self) -> Result<Vec<CachedLayer>> {
        self.read(|conn| {
            conn.prepare(
                "SELECT digest, image_id, image_name, label, system, built_at, duration_ms, arch
                 FROM layers ORDER BY label, system, built_at DESC, rowid DESC",
            )?
            .query_map([], cached_layer)?
            .collect()
        })
    }

    /// The newest `limit` builds, newest first (for `history`): of
    /// `labels` (every label when `None`), for `system` (every system when
    /// `None`). Manifests are not read: `manifest` and `vars` are empty.
    pub fn recent_builds(
        &self,
        labels: Option<&[String]>,
        system: Option<&str>,
        limit: usize,
    ) -> Result<Vec<BuildSummary>> {
        let labels = labels.map(|l| serde_json::to_string(l).expect("labels serialise"));
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(|conn| {
            conn.prepare(
                "SELECT id, label, system, digest, status, started_at, duration_ms, image_id,
                        container, log_path, error, '', NULL, container_removed, inventory, source
                 FROM builds
                 WHERE (?1 IS NULL OR label IN (SELECT value FROM json_each(?1)))
                   AND (?2 IS NULL OR system = ?2)
                 ORDER BY id DESC LIMIT ?3",
            )?
            .query_map(params![labels, system, limit], |r| {
                Ok(BuildSummary {
                    row: build_row(r)?,
                    source: r.get(15)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map(|rows| {
            rows.into_iter()
                .map(|mut b| {
                    b.row.log_path = self.log_path_of(b.row.log_path);
                    b
                })
                .collect()
        })
    }

    /// The whole build history, oldest first (for `gc`).
    pub fn all_builds(&self) -> Result<Vec<BuildRow>> {
        self.builds(
            &format!("SELECT {BUILD_COLUMNS} FROM builds ORDER BY id"),
            [],
        )
    }

    /// A history row with its manifest's file sets merged back.
    fn expanded(&self, mut row: BuildRow) -> BuildRow {
        row.manifest = expand_manifest(&self.conn, std::mem::take(&mut row.manifest));
        row.log_path = self.log_path_of(row.log_path);
        row
    }

    /// The cache's directory (the database's), which log paths are
    /// stored relative to.
    fn dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }

    /// A stored log path as a path to read: relative ones (every log in
    /// the cache directory) are in this cache's directory, wherever the
    /// workspace was copied or cloned to; absolute ones as stored.
    fn log_path_of(&self, stored: Option<String>) -> Option<String> {
        stored.map(|p| self.dir().join(p).to_string_lossy().into_owned())
    }

    /// The history rows `sql` (selecting [`BUILD_COLUMNS`]) finds, expanded.
    fn builds(&self, sql: &str, params: impl rusqlite::Params) -> Result<Vec<BuildRow>> {
        let rows: Vec<BuildRow> =
            self.read(|conn| conn.prepare(sql)?.query_map(params, build_row)?.collect())?;
        Ok(rows.into_iter().map(|r| self.expanded(r)).collect())
    }

    /// Deletes cache rows by digest and history rows by id, and the file
    /// sets no manifest names any more, in one transaction.
    pub fn delete_rows(&mut self, digests: &[&Digest], build_ids: &[i64]) -> Result<()> {
        self.write(|tx| {
            for d in digests {
                tx.execute("DELETE FROM layers WHERE digest = ?1", params![d.as_str()])?;
            }
            for id in build_ids {
                tx.execute("DELETE FROM builds WHERE id = ?1", params![id])?;
            }
            tx.execute(
                "DELETE FROM file_sets WHERE NOT EXISTS
                   (SELECT 1 FROM builds WHERE instr(builds.manifest, file_sets.id) > 0)
                 AND NOT EXISTS
                   (SELECT 1 FROM layers WHERE instr(layers.manifest, file_sets.id) > 0)",
                [],
            )?;
            Ok(())
        })
    }

    /// Records one promotion.
    pub fn record_release(&mut self, r: &ReleaseRecord) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO releases (release, label, system, digest, reference, manifest_digest, previous, promoted_at, promoted_by, arch)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![
                    r.release,
                    r.label,
                    r.system,
                    r.digest.as_str(),
                    r.reference,
                    r.manifest_digest,
                    r.previous.as_ref().map(Digest::as_str),
                    r.promoted_at,
                    r.promoted_by,
                    r.arch
                ],
            )?;
            Ok(())
        })
    }

    /// Recorded promotions, newest first: of `labels` (every label when
    /// `None`), to `releases` (every release name when `None`).
    pub fn releases(
        &self,
        labels: Option<&[String]>,
        releases: Option<&[String]>,
    ) -> Result<Vec<ReleaseRecord>> {
        let labels = labels.map(|l| serde_json::to_string(l).expect("labels serialise"));
        let releases = releases.map(|r| serde_json::to_string(r).expect("names serialise"));
        self.read(|conn| {
            conn.prepare(
                "SELECT release, label, system, digest, reference, manifest_digest, previous, promoted_at, promoted_by, arch
                 FROM releases
                 WHERE (?1 IS NULL OR label IN (SELECT value FROM json_each(?1)))
                   AND (?2 IS NULL OR release IN (SELECT value FROM json_each(?2)))
                 ORDER BY id DESC",
            )?
            .query_map(params![labels, releases], |r| {
                Ok(ReleaseRecord {
                    release: r.get(0)?,
                    label: r.get(1)?,
                    system: r.get(2)?,
                    digest: r.get::<_, String>(3)?.into(),
                    reference: r.get(4)?,
                    manifest_digest: r.get(5)?,
                    previous: r.get::<_, Option<String>>(6)?.map(Digest::from),
                    promoted_at: r.get(7)?,
                    promoted_by: r.get(8)?,
                    arch: r.get(9)?,
                })
            })?
            .collect()
        })
    }

    pub fn layer_count(&self) -> Result<i64> {
        self.read(|conn| conn.query_row("SELECT count(*) FROM layers", [], |r| r.get(0)))
    }
}

/// A log path as stored: relative to the database's directory (the cache
/// directory, where every build log is) when inside it, so a workspace
/// copied or cloned elsewhere with its cache still finds its logs.
fn stored_log_path(conn: &Connection, p: &Path) -> String {
    let dir = conn.path().and_then(|d| Path::new(d).parent());
    match dir.and_then(|d| p.strip_prefix(d).ok()) {
        Some(rel) => rel.to_string_lossy().into_owned(),
        None => p.to_string_lossy().into_owned(),
    }
}

/// A digest served without its manifest (format 0) is never recorded.
impl BuildRecord<'_> {
    /// The architecture built for, as its manifest says (x86_64 unless
    /// it names another).
    fn arch(&self) -> &str {
        self.manifest
            .definition
            .arch
            .as_deref()
            .unwrap_or(crate::arch::Arch::X86_64.name())
    }
}

fn complete(rec: &BuildRecord<'_>) -> Result<()> {
    if rec.manifest.format == 0 {
        return Err(Error::env(format!(
            "internal: {} would be recorded without its manifest",
            rec.label
        )));
    }
    Ok(())
}

fn insert_build(
    tx: &rusqlite::Transaction<'_>,
    rec: &BuildRecord<'_>,
    status: RecordStatus,
    image_id: Option<&str>,
    container: Option<&str>,
    error: Option<&str>,
    manifest: &str,
) -> rusqlite::Result<()> {
    let vars = serde_json::to_string(rec.vars).expect("vars serialise");
    tx.execute(
        "INSERT INTO builds (label, system, digest, status, started_at, duration_ms, image_id, container, log_path, error, manifest, vars, inventory, source)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
        params![
            rec.label,
            rec.system,
            rec.digest.as_str(),
            status.as_str(),
            rec.started_at,
            rec.duration.as_millis() as i64,
            image_id,
            container,
            rec.log_path.map(|p| stored_log_path(tx, p)),
            error,
            manifest,
            vars,
            rec.inventory,
            rec.source.as_str()
        ],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fingerprint::{FileInput, Fingerprint};
    use crate::label::Label;

    fn manifest(layer: &str, own: usize) -> Manifest {
        let label = Label::parse(layer).unwrap();
        let mut m = Fingerprint::light(label, Digest::default()).manifest;
        m.format = 4;
        let file = |origin: &str, n: usize| FileInput {
            hash: crate::fingerprint::files::ContentHash::from_hex(&format!("{n:064x}")).unwrap(),
            mode: "100644".into(),
            origin: origin.into(),
        };
        for n in 0..20 {
            m.files
                .insert(format!("site/roles/common/f{n}"), file("role:common", n));
        }
        for n in 0..own {
            m.files
                .insert(format!("site/{layer}/x{n}"), file("play", n));
        }
        m.files.insert("site/play.yml".into(), file("playbook", 1));
        m
    }

    /// A role's files shared by many layers are stored once; every
    /// history row reads back its exact manifest; gc drops sets no row names.
    #[test]
    fn shared_files_are_stored_once_and_read_back_exactly() {
        let d = tempfile::tempdir().unwrap();
        let mut cache = Cache::open(&d.path().join("db")).unwrap();
        let vars = VarSnapshot::default();
        let layers: Vec<(String, Manifest)> = (0..50)
            .map(|i| {
                let l = format!("//t/l{i:02}");
                let m = manifest(&l, i % 3);
                (l, m)
            })
            .collect();
        for (i, (l, m)) in layers.iter().enumerate() {
            let digest = Digest::from(format!("{i:064x}"));
            let rec = BuildRecord {
                label: l,
                system: None,
                digest: &digest,
                manifest: m,
                started_at: 1,
                duration: Duration::from_secs(1),
                log_path: None,
                vars: &vars,
                inventory: None,
                source: RecordSource::Built,
            };
            cache.record_built(&rec, "img", "name").unwrap();
        }
        let sets: i64 = cache
            .conn
            .query_row("SELECT count(*) FROM file_sets", [], |r| r.get(0))
            .unwrap();
        assert_eq!(sets, 1, "the common role's files are one set");
        let stored: String = cache
            .conn
            .query_row("SELECT manifest FROM builds WHERE id = 1", [], |r| r.get(0))
            .unwrap();
        assert!(!stored.contains("site/roles/common/f3"), "{stored}");
        for (i, (_, m)) in layers.iter().enumerate() {
            let row = cache
                .build_with_digest(&Digest::from(format!("{i:064x}")))
                .unwrap()
                .unwrap();
            let back = row.manifest().expect("parses");
            assert_eq!(back.digest(), m.digest());
            assert_eq!(back.files, m.files);
        }
        let ids: Vec<i64> = (1..=50).collect();
        let digests: Vec<Digest> = (0..50).map(|i| Digest::from(format!("{i:064x}"))).collect();
        let digests: Vec<&Digest> = digests.iter().collect();
        cache.delete_rows(&digests[..49], &ids[..49]).unwrap();
        let sets: i64 = cache
            .conn
            .query_row("SELECT count(*) FROM file_sets", [], |r| r.get(0))
            .unwrap();
        assert_eq!(sets, 1, "still named by the last row");
        cache.delete_rows(&digests[49..], &ids[49..]).unwrap();
        let sets: i64 = cache
            .conn
            .query_row("SELECT count(*) FROM file_sets", [], |r| r.get(0))
            .unwrap();
        assert_eq!(sets, 0);
    }
}

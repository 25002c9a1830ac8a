//! The SQLite cache: digest -> committed image, plus a history of every build
//! attempt (successful or failed) with its manifest and log.
//!
//! Schema changes are append-only migrations keyed on `PRAGMA user_version`.
//! A layer's cache row is written only after its commit succeeded, in one
//! transaction with its history row; a failed layer never gets one.
//!
//! I/O: the database file under the cache directory.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::fingerprint::Manifest;

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
];

pub struct Cache {
    conn: Connection,
}

#[derive(Debug, Clone, Serialize)]
pub struct CachedLayer {
    pub digest: String,
    pub image_id: String,
    pub image_name: String,
    pub label: String,
    pub system: Option<String>,
    pub built_at: i64,
    pub duration_ms: i64,
}

/// One build attempt, for the history table.
#[derive(Debug, Clone)]
pub struct BuildRecord<'a> {
    pub label: &'a str,
    pub system: Option<&'a str>,
    pub digest: &'a str,
    pub manifest: &'a Manifest,
    pub started_at: i64,
    pub duration: Duration,
    pub log_path: Option<&'a Path>,
}

impl Cache {
    /// Opens (creating if needed) the database at `path` and migrates it.
    pub fn open(path: &Path) -> Result<Cache> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let conn = Connection::open(path)
            .map_err(|e| Error::env(format!("cannot open cache {}: {e}", path.display())))?;
        conn.busy_timeout(Duration::from_secs(30))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        let mut cache = Cache { conn };
        cache.migrate().map_err(|e| match e {
            Error::Environment { message, .. } => {
                Error::env(format!("{}: {message}", path.display())).with_hint(
                    "if the file is not a layerbuild cache, point [workspace] cache elsewhere",
                )
            }
            other => other,
        })?;
        Ok(cache)
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
        let version: i64 = self
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version as usize > MIGRATIONS.len() {
            return Err(Error::env(format!(
                "cache schema version {version} is newer than this layerbuild understands ({})",
                MIGRATIONS.len()
            ))
            .with_hint("upgrade layerbuild, or use another cache directory"));
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = self.conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
            tx.commit()?;
        }
        Ok(())
    }

    pub fn lookup(&self, digest: &str) -> Result<Option<CachedLayer>> {
        Ok(self
            .conn
            .query_row(
                "SELECT digest, image_id, image_name, label, system, built_at, duration_ms
                 FROM layers WHERE digest = ?1",
                params![digest],
                |r| {
                    Ok(CachedLayer {
                        digest: r.get(0)?,
                        image_id: r.get(1)?,
                        image_name: r.get(2)?,
                        label: r.get(3)?,
                        system: r.get(4)?,
                        built_at: r.get(5)?,
                        duration_ms: r.get(6)?,
                    })
                },
            )
            .optional()?)
    }

    /// Records a successful build: the cache row and its history row, atomically.
    pub fn record_built(
        &mut self,
        rec: &BuildRecord<'_>,
        image_id: &str,
        image_name: &str,
    ) -> Result<()> {
        let manifest = serde_json::to_string(rec.manifest).expect("manifest serialises");
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT OR REPLACE INTO layers (digest, image_id, image_name, label, system, manifest, built_at, duration_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                rec.digest,
                image_id,
                image_name,
                rec.label,
                rec.system,
                manifest,
                rec.started_at,
                rec.duration.as_millis() as i64
            ],
        )?;
        insert_build(&tx, rec, "built", Some(image_id), None, None, &manifest)?;
        tx.commit()?;
        Ok(())
    }

    /// Records a failed build in the history only; no cache row.
    pub fn record_failed(
        &mut self,
        rec: &BuildRecord<'_>,
        container: Option<&str>,
        error: &str,
    ) -> Result<()> {
        let manifest = serde_json::to_string(rec.manifest).expect("manifest serialises");
        let tx = self.conn.transaction()?;
        insert_build(&tx, rec, "failed", None, container, Some(error), &manifest)?;
        tx.commit()?;
        Ok(())
    }

    /// Does the history know this label (for `ls`: "needs build" vs "never built")?
    pub fn ever_built(&self, label: &str, system: Option<&str>) -> Result<bool> {
        Ok(self
            .conn
            .query_row(
                "SELECT 1 FROM layers WHERE label = ?1 AND system IS ?2 LIMIT 1",
                params![label, system],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    pub fn layer_count(&self) -> Result<i64> {
        Ok(self
            .conn
            .query_row("SELECT count(*) FROM layers", [], |r| r.get(0))?)
    }
}

fn insert_build(
    tx: &rusqlite::Transaction<'_>,
    rec: &BuildRecord<'_>,
    status: &str,
    image_id: Option<&str>,
    container: Option<&str>,
    error: Option<&str>,
    manifest: &str,
) -> Result<()> {
    tx.execute(
        "INSERT INTO builds (label, system, digest, status, started_at, duration_ms, image_id, container, log_path, error, manifest)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        params![
            rec.label,
            rec.system,
            rec.digest,
            status,
            rec.started_at,
            rec.duration.as_millis() as i64,
            image_id,
            container,
            rec.log_path.map(|p| p.to_string_lossy().into_owned()),
            error,
            manifest
        ],
    )?;
    Ok(())
}

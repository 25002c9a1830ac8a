//! The stat cache's table (`file_stats`): loaded whole before a scan (one
//! SELECT, so the parallel hashing never waits on SQLite), written back
//! after it in one transaction. It is only a cache: when the database is
//! busy or unusable the write-back is skipped and the next scan reads the
//! files again; it never fails a command.
//!
//! `LAYERBUILD_STATS=1` prints to stderr how many files were read and how
//! many were served from the stat cache.
//!
//! I/O: the cache database.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use rusqlite::{TransactionBehavior, params};

use super::Cache;
use crate::error::Result;
use crate::fingerprint::Fingerprint;
use crate::fingerprint::statcache::{StatCache, StatEntry};
use crate::label::Label;
use crate::workspace::{System, Workspace};

/// How long the write-back waits for another writer before giving up.
const WRITE_WAIT: Duration = Duration::from_millis(200);

impl Cache {
    /// Every entry of the stat cache.
    pub fn load_stats(&self) -> Result<HashMap<String, StatEntry>> {
        let mut stmt = self.conn.prepare(
            "SELECT path, size, mtime_ns, ctime_ns, inode, device, mode, hash, jinja, recorded_ns
             FROM file_stats",
        )?;
        let mut rows = stmt.query([])?;
        let mut out = HashMap::new();
        while let Some(r) = rows.next()? {
            // A malformed row is skipped (the file is read instead).
            let blob = r.get_ref(7)?;
            let Some(hash) = blob
                .as_blob()
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
            else {
                continue;
            };
            out.insert(
                r.get::<_, String>(0)?,
                StatEntry {
                    size: r.get::<_, i64>(1)? as u64,
                    mtime_ns: r.get(2)?,
                    ctime_ns: r.get(3)?,
                    inode: r.get::<_, i64>(4)? as u64,
                    device: r.get::<_, i64>(5)? as u64,
                    mode: r.get(6)?,
                    hash,
                    jinja: r.get(8)?,
                    recorded_ns: r.get(9)?,
                },
            );
        }
        Ok(out)
    }

    /// Writes the scan's new entries and drops vanished files' entries, in
    /// one transaction. Returns false (and writes nothing) when the database
    /// is busy or the write fails.
    pub fn store_stats(&mut self, stat: &StatCache) -> bool {
        if !stat.dirty() {
            return true;
        }
        let _ = self.conn.busy_timeout(WRITE_WAIT);
        let written = self.write_stats(stat).is_ok();
        let _ = self.conn.busy_timeout(Duration::from_secs(30));
        written
    }

    fn write_stats(&mut self, stat: &StatCache) -> rusqlite::Result<()> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let mut put = tx.prepare(
                "INSERT OR REPLACE INTO file_stats
                 (path, size, mtime_ns, ctime_ns, inode, device, mode, hash, jinja, recorded_ns)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )?;
            for (path, e) in &stat.updates {
                put.execute(params![
                    path,
                    e.size as i64,
                    e.mtime_ns,
                    e.ctime_ns,
                    e.inode as i64,
                    e.device as i64,
                    e.mode,
                    &e.hash[..],
                    e.jinja,
                    e.recorded_ns
                ])?;
            }
            let mut del = tx.prepare("DELETE FROM file_stats WHERE path = ?1")?;
            for path in &stat.removed {
                del.execute(params![path])?;
            }
        }
        tx.commit()
    }
}

/// The stat cache of the workspace's database, or an empty one when there
/// is no database yet (or it cannot be read: it is only a cache).
pub fn load(ws: &Workspace) -> StatCache {
    let entries = Cache::open_existing(&ws.db_path())
        .ok()
        .flatten()
        .and_then(|c| c.load_stats().ok())
        .unwrap_or_default();
    StatCache::new(entries)
}

/// `LAYERBUILD_STATS=1`: how the files' hashes were obtained, and how many
/// files the play analysis read, on stderr.
pub fn report(stat: &StatCache, analysis_reads: usize) {
    if stats_wanted() {
        eprintln!(
            "layerbuild stats: {} files read and hashed, {} from the stat cache, {analysis_reads} read by the analysis",
            stat.hashed, stat.reused
        );
    }
}

/// `LAYERBUILD_STATS=1` when the memo served every digest: nothing read.
pub fn report_memo(layers: usize) {
    if stats_wanted() {
        eprintln!(
            "layerbuild stats: 0 files read and hashed, 0 from the stat cache, 0 read by the analysis; {layers} digests from the memo"
        );
    }
}

fn stats_wanted() -> bool {
    crate::timings::wanted()
}

/// The full fingerprints of `labels` through the workspace's stat cache
/// and memo, for commands that only read: what was learnt is stored if the
/// database exists. A workspace without a database (a revision exported to
/// a temporary directory, a fresh clone) is fingerprinted by reading every file.
pub fn fingerprint(
    ws: &Workspace,
    system: Option<&System>,
    labels: &[Label],
) -> Result<BTreeMap<Label, Fingerprint>> {
    let mut out = super::memo::fingerprint(ws, system, labels, false)?;
    if let Some(mut cache) = out.cache.take() {
        out.store(&mut cache);
    }
    Ok(out.prints)
}

/// [`fingerprint`] for commands that need digests only: served by the memo
/// when nothing changed (manifests empty: [`Fingerprint::light`]).
pub fn digests(
    ws: &Workspace,
    system: Option<&System>,
    labels: &[Label],
) -> Result<BTreeMap<Label, Fingerprint>> {
    let mut out = super::memo::fingerprint(ws, system, labels, true)?;
    if let Some(mut cache) = out.cache.take() {
        out.store(&mut cache);
    }
    Ok(out.prints)
}

//! The fingerprint memo (table `memo`): for one workspace model, system and
//! selection of layers, the digests a full fingerprint computed, with
//! everything it observed in the file system ([`crate::fingerprint::observe`]).
//! When `stat` says none of that changed, the digests are reused without
//! reading a file or analysing a play: a no-op build of hundreds of layers
//! costs stat calls, not reads.
//!
//! The key is a hash of everything else a fingerprint depends on: the
//! loaded workspace model (its `Debug` rendering, which holds every field
//! by construction: Layerfile values, included fragments, the package list
//! read from a `packages_file`), the system, the labels, the manifest
//! format, and the layerbuild executable itself (path, inode, size, mtime:
//! a rebuilt binary may analyse differently). A memo is written only when
//! its record is trustworthy (no file modified within the racy margin of
//! the scan, none seen changing during it); anything unsure is a miss.
//!
//! Like the stat cache it is only a cache: unreadable, busy or malformed
//! rows are misses, and writes that cannot take the lock quickly are
//! skipped. Digests served from the memo come without manifests; a caller
//! that needs more (a layer to build) fingerprints fully.
//!
//! `LAYERBUILD_MEMO=0` turns it off (neither read nor written): every
//! command then fingerprints in full, through the stat cache.
//!
//! I/O: the cache database; `stat` calls on the observed paths.

use std::collections::BTreeMap;
use std::time::Duration;

use rusqlite::{OptionalExtension, TransactionBehavior, params};

use super::Cache;
use crate::error::Result;
use crate::fingerprint::observe::{self, Observer, Record};
use crate::fingerprint::{self, FORMAT_VERSION, Fingerprint};
use crate::label::Label;
use crate::workspace::{System, Workspace};

/// Memos kept (one per selection and system used recently).
const KEEP: i64 = 8;
/// How long a memo write waits for another writer before giving up.
const WRITE_WAIT: Duration = Duration::from_millis(200);

/// What a fingerprint depends on besides the files it observes; `None`
/// when the executable cannot be identified (no memo then).
pub fn key(ws: &Workspace, system: Option<&System>, labels: &[Label]) -> Option<String> {
    let exe = std::env::current_exe().ok()?;
    let meta = std::fs::metadata(&exe).ok()?;
    let id = crate::fingerprint::statcache::Stat::of(&meta)?;
    let mut h = blake3::Hasher::new();
    h.update(b"layerbuild fingerprint memo 1\0");
    h.update(env!("CARGO_PKG_VERSION").as_bytes());
    h.update(&FORMAT_VERSION.to_le_bytes());
    h.update(exe.as_os_str().as_encoded_bytes());
    for n in [id.device, id.inode, id.size] {
        h.update(&n.to_le_bytes());
    }
    h.update(&id.mtime_ns.to_le_bytes());
    h.update(format!("{ws:?}\0{system:?}\0").as_bytes());
    for l in labels {
        h.update(l.to_string().as_bytes());
        h.update(b"\0");
    }
    Some(h.finalize().to_hex().to_string())
}

/// Is the memo in use (not turned off with `LAYERBUILD_MEMO=0`)?
fn enabled() -> bool {
    std::env::var_os("LAYERBUILD_MEMO").is_none_or(|v| v != "0")
}

/// A stored memo.
struct Row {
    observations: Vec<u8>,
    signature: Vec<u8>,
    digests: String,
}

impl Cache {
    fn memo_row(&self, key: &str) -> Result<Option<Row>> {
        Ok(self
            .conn
            .query_row(
                "SELECT observations, signature, digests FROM memo WHERE key = ?1",
                params![key],
                |r| {
                    Ok(Row {
                        observations: r.get(0)?,
                        signature: r.get(1)?,
                        digests: r.get(2)?,
                    })
                },
            )
            .optional()?)
    }

    /// Stores a memo, keeping the [`KEEP`] newest. False (nothing written)
    /// when the database is busy or the write fails.
    fn store_memo(&mut self, key: &str, rec: &Record, digests: &str) -> bool {
        let _ = self.conn.busy_timeout(WRITE_WAIT);
        let written = (|| -> rusqlite::Result<()> {
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute(
                "INSERT OR REPLACE INTO memo (key, created_ns, observations, signature, digests)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    key,
                    crate::fingerprint::statcache::now_ns(),
                    observe::encode(&rec.observations),
                    &rec.signature[..],
                    digests
                ],
            )?;
            tx.execute(
                "DELETE FROM memo WHERE key NOT IN
                 (SELECT key FROM memo ORDER BY created_ns DESC LIMIT ?1)",
                params![KEEP],
            )?;
            tx.commit()
        })()
        .is_ok();
        let _ = self.conn.busy_timeout(Duration::from_secs(30));
        written
    }

    /// Drops every memo (`cache verify --repair`, tests).
    pub fn clear_memos(&mut self) -> Result<()> {
        self.conn.execute("DELETE FROM memo", [])?;
        Ok(())
    }
}

fn encode_digests(prints: &BTreeMap<Label, Fingerprint>) -> String {
    prints
        .iter()
        .map(|(l, f)| format!("{l} {}\n", f.digest))
        .collect()
}

/// The digests of `labels` from the memo of `key`, if nothing it observed
/// changed. Any doubt (no row, a malformed one, another set of labels) is
/// a miss.
fn lookup(cache: &Cache, key: &str, labels: &[Label]) -> Option<BTreeMap<Label, String>> {
    let t = std::time::Instant::now();
    let row = cache.memo_row(key).ok().flatten()?;
    let t = crate::timings::phase("  memo: read the row", t);
    let observations = observe::decode(&row.observations)?;
    let t = crate::timings::phase("  memo: decode", t);
    let same = observe::current_signature(&observations)[..] == row.signature[..];
    crate::timings::phase(&format!("  memo: stat {} paths", observations.len()), t);
    if !same {
        return None;
    }
    let mut out = BTreeMap::new();
    for line in row.digests.lines() {
        let (l, d) = line.split_once(' ')?;
        out.insert(Label::parse(l).ok()?, d.to_string());
    }
    (out.len() == labels.len() && labels.iter().all(|l| out.contains_key(l))).then_some(out)
}

/// How [`fingerprint`] obtained the prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// From the memo: digests only (manifests empty, [`Fingerprint::light`]).
    Memo,
    /// By a full fingerprint.
    Computed,
}

/// Fingerprints, and what computing them taught the caches.
pub struct Outcome {
    pub prints: BTreeMap<Label, Fingerprint>,
    pub source: Source,
    /// The database, when it existed (opened for the lookup).
    pub cache: Option<Cache>,
    stat: crate::fingerprint::statcache::StatCache,
    memo: Option<(String, Record)>,
}

impl Outcome {
    /// Stores the stat-cache entries and the memo learnt. Never fails: a
    /// cache that cannot be written is read again next time.
    pub fn store(&mut self, cache: &mut Cache) {
        cache.store_stats(&self.stat);
        self.stat = Default::default();
        if let Some((key, rec)) = self.memo.take() {
            cache.store_memo(&key, &rec, &encode_digests(&self.prints));
        }
    }
}

/// The fingerprints of `labels`: from the memo when nothing it observed
/// changed and `light_ok` (the caller needs digests only), else computed
/// in full through the stat cache, with a new memo to store
/// ([`Outcome::store`]).
pub fn fingerprint(
    ws: &Workspace,
    system: Option<&System>,
    labels: &[Label],
    light_ok: bool,
) -> Result<Outcome> {
    let t = std::time::Instant::now();
    let cache = Cache::open_existing(&ws.db_path()).ok().flatten();
    let t = crate::timings::phase("open the cache", t);
    let key = key(ws, system, labels).filter(|_| enabled());
    let t = crate::timings::phase("memo key", t);
    let hit = match (&cache, &key) {
        (Some(c), Some(key)) if light_ok => lookup(c, key, labels),
        _ => None,
    };
    let t = crate::timings::phase("memo lookup", t);
    if let Some(digests) = hit {
        super::stat::report_memo(labels.len());
        let prints = digests
            .into_iter()
            .map(|(l, d)| (l.clone(), Fingerprint::light(l, d)))
            .collect();
        return Ok(Outcome {
            prints,
            source: Source::Memo,
            cache,
            stat: Default::default(),
            memo: None,
        });
    }
    let mut stat = match &cache {
        Some(c) => {
            crate::fingerprint::statcache::StatCache::new(c.load_stats().unwrap_or_default())
        }
        None => Default::default(),
    };
    let obs = Observer::new();
    let prints = fingerprint::fingerprint_observed(ws, system, labels, Some(&mut stat), &obs)?;
    crate::timings::phase("fingerprint", t);
    super::stat::report(&stat, obs.reads());
    let memo = key.and_then(|k| obs.finish().ok().map(|rec| (k, rec)));
    Ok(Outcome {
        prints,
        source: Source::Computed,
        cache,
        stat,
        memo,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_round_trip_and_reject_other_selections() {
        let d = tempfile::tempdir().unwrap();
        let mut cache = Cache::open(&d.path().join("db")).unwrap();
        let a = Label::parse("//a/b").unwrap();
        let b = Label::parse("//a/c").unwrap();
        let obs = Observer::new();
        let rec = obs.finish().unwrap();
        assert!(cache.store_memo("k", &rec, &format!("{a} 1234\n{b} 5678\n")));
        let got = lookup(&cache, "k", &[a.clone(), b.clone()]).unwrap();
        assert_eq!(got[&a], "1234");
        assert!(lookup(&cache, "k", std::slice::from_ref(&a)).is_none());
        assert!(lookup(&cache, "other", &[a.clone(), b.clone()]).is_none());
        for i in 0..KEEP + 3 {
            assert!(cache.store_memo(&format!("k{i}"), &rec, ""));
        }
        let n: i64 = cache
            .conn
            .query_row("SELECT count(*) FROM memo", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, KEEP);
    }
}

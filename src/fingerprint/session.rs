//! A fingerprint session: the one way commands obtain fingerprints. It
//! takes the two pure caches as narrow stores, so this module decides
//! everything about them and the storage only keeps bytes:
//!
//! - the **stat cache** ([`StatStore`]): a file's stat data → its content
//!   hash, so unchanged files are not read again;
//! - the **memo** ([`MemoStore`]): for one [`MemoKey`], the digests a full
//!   fingerprint computed and everything it observed in the file system
//!   ([`super::observe`]). When `stat` says none of that changed, the
//!   digests are reused without reading a file or analysing a play.
//!
//! Both are only caches: a store that is missing, busy or malformed costs
//! a full fingerprint, never a wrong digest or a failed command. What a
//! session learnt is handed to the stores at once, whatever the command
//! (read-only ones included: `ls` warms them as `git status` refreshes
//! the index). The build cache (which images exist) is not touched here.
//!
//! `LAYERBUILD_MEMO=0` turns the memo off (neither read nor written);
//! `LAYERBUILD_STATS=1` prints what was read and where the time went.
//!
//! I/O: through the stores and the [`Observer`]; `stat` calls on the
//! observed paths when checking a memo.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use super::observe::{self, Observer};
use super::statcache::{StatCache, StatEntry};
use super::{FORMAT_VERSION, Fingerprint};
use crate::digest::Digest;
use crate::error::Result;
use crate::label::Label;
use crate::workspace::{System, Workspace};

/// Where the stat cache's entries are kept.
pub trait StatStore: Sync {
    /// Every entry (empty when there is none or it cannot be read).
    fn load_stats(&self) -> HashMap<String, StatEntry>;
    /// Writes the scan's `new` entries (sorted by path) and drops vanished
    /// files' entries; false (nothing written) when that cannot be done
    /// quickly.
    fn store_stats<'a>(&self, stat: &'a StatCache, new: &super::statcache::NewEntries<'a>) -> bool;
}

/// A memo as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoRow {
    /// [`observe::encode`]d observations.
    pub observations: Vec<u8>,
    /// Their signature when recorded.
    pub signature: Vec<u8>,
    /// One `LABEL DIGEST` line per layer.
    pub digests: String,
}

/// Where memos are kept, by [`MemoKey::id`].
pub trait MemoStore: Sync {
    fn memo(&self, id: &str) -> Option<MemoRow>;
    /// False (nothing written) when that cannot be done quickly.
    fn store_memo(&self, id: &str, row: &MemoRow) -> bool;
}

/// The executable, by identity: a rebuilt binary may analyse differently.
#[derive(Debug, Serialize)]
struct Executable {
    path: std::path::PathBuf,
    device: u64,
    inode: u64,
    size: u64,
    mtime_ns: i64,
}

/// Everything a fingerprint depends on besides the files it observes:
/// the loaded workspace model (which holds what loading read outside the
/// observer: Layerfile values, included fragments, the package list of a
/// `packages_file`), the system, the selection, the manifest format and
/// the executable. Hashed as canonical JSON into [`MemoKey::id`].
#[derive(Debug, Serialize)]
pub struct MemoKey<'a> {
    /// Of this struct's layout.
    version: u32,
    layerbuild: &'static str,
    manifest_format: u32,
    executable: Executable,
    workspace: &'a Workspace,
    system: Option<&'a System>,
    labels: &'a [Label],
}

impl<'a> MemoKey<'a> {
    /// `None` when the executable cannot be identified (no memo then).
    pub fn new(
        ws: &'a Workspace,
        system: Option<&'a System>,
        labels: &'a [Label],
    ) -> Option<MemoKey<'a>> {
        let path = std::env::current_exe().ok()?;
        let meta = std::fs::metadata(&path).ok()?; // observed: held by the key itself
        let id = super::stat::Stat::of(&meta)?;
        Some(MemoKey {
            version: 1,
            layerbuild: env!("CARGO_PKG_VERSION"),
            manifest_format: FORMAT_VERSION,
            executable: Executable {
                path,
                device: id.device,
                inode: id.inode,
                size: id.size,
                mtime_ns: id.mtime_ns,
            },
            workspace: ws,
            system,
            labels,
        })
    }

    /// blake3 of the key's canonical JSON.
    pub fn id(&self) -> String {
        let bytes = serde_json::to_vec(self).expect("a memo key always serialises");
        blake3::hash(&bytes).to_hex().to_string()
    }
}

/// What the caller needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// Digests only: the memo may serve them (manifests left empty,
    /// [`Fingerprint::light`]); computed ones come with their manifests.
    Digests,
    /// Digests and nothing else, even when computed: each manifest is
    /// dropped as soon as it is hashed (a fraction of the memory).
    DigestsOnly,
    /// Whole manifests (a layer to build or explain).
    Manifests,
}

/// How a session obtained the prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Memo,
    Computed,
}

/// Fingerprints and how they were obtained.
#[derive(Debug)]
pub struct Prints {
    pub prints: BTreeMap<Label, Fingerprint>,
    pub source: Source,
}

/// Fingerprints of one workspace and system, through the pure caches.
pub struct Session<'a> {
    ws: &'a Workspace,
    system: Option<&'a System>,
    stats: Option<&'a dyn StatStore>,
    memos: Option<&'a dyn MemoStore>,
}

impl<'a> Session<'a> {
    /// A session with no stores: every file is read (an exported revision,
    /// tests).
    pub fn new(ws: &'a Workspace, system: Option<&'a System>) -> Session<'a> {
        Session {
            ws,
            system,
            stats: None,
            memos: None,
        }
    }

    pub fn with_stats(mut self, store: &'a dyn StatStore) -> Session<'a> {
        self.stats = Some(store);
        self
    }

    /// Uses `store` for memos unless `LAYERBUILD_MEMO=0`.
    pub fn with_memos(mut self, store: &'a dyn MemoStore) -> Session<'a> {
        if memo_enabled() {
            self.memos = Some(store);
        }
        self
    }

    /// The fingerprints of `labels` (in topological order, closed under
    /// ancestors): from the memo when `want` allows and nothing it
    /// observed changed, else computed in full through the stat cache.
    /// What was learnt is stored before returning.
    pub fn fingerprint(&self, labels: &[Label], want: Want) -> Result<Prints> {
        let t = std::time::Instant::now();
        let key = self
            .memos
            .and_then(|_| MemoKey::new(self.ws, self.system, labels))
            .map(|k| k.id());
        let t = crate::timings::phase("memo key", t);
        if want != Want::Manifests
            && let (Some(store), Some(id)) = (self.memos, &key)
            && let Some(digests) = lookup(store, id, labels)
        {
            crate::timings::phase("memo lookup", t);
            report_memo(labels.len());
            let prints = digests
                .into_iter()
                .map(|(l, d)| (l.clone(), Fingerprint::light(l, d)))
                .collect();
            return Ok(Prints {
                prints,
                source: Source::Memo,
            });
        }
        let mut stat = StatCache::new(self.stats.map(|s| s.load_stats()).unwrap_or_default());
        let t = crate::timings::phase("stat cache", t);
        let obs = Observer::within(&self.ws.root);
        let (prints, leftovers) = super::fingerprint_observed(
            self.ws,
            self.system,
            labels,
            Some(&mut stat),
            &obs,
            want != Want::DigestsOnly,
        )?;
        let t = crate::timings::phase("fingerprint", t);
        report(&stat, obs.reads());
        // The analyses are freed before anything is stored (their memory
        // is then reused); the index once the stat cache is written.
        let super::Leftovers { index, rest } = leftovers;
        drop(rest);
        crate::memory::release();
        let t = crate::timings::phase("free the analyses", t);
        // The stat cache is written while the memo's record is put in
        // order (both take about as long; the database serialises the writes).
        std::thread::scope(|s| {
            match self.stats {
                Some(store) => {
                    let stat = &stat;
                    s.spawn(move || {
                        store.store_stats(stat, &|| Box::new(index.stat_updates()));
                        drop(index);
                        crate::memory::release();
                        crate::timings::phase("  store the stat cache", t);
                    });
                }
                None => drop(index),
            }
            if let (Some(store), Some(id)) = (self.memos, key)
                && let Ok((observations, signature)) = obs.finish_encoded()
            {
                let row = row(observations, &signature, &prints);
                let t = crate::timings::phase("  memo: the record", t);
                store.store_memo(&id, &row);
                crate::timings::phase("  memo: store", t);
            }
        });
        crate::timings::phase("store the caches", t);
        Ok(Prints {
            prints,
            source: Source::Computed,
        })
    }
}

/// Is the memo in use (not turned off with `LAYERBUILD_MEMO=0`)?
fn memo_enabled() -> bool {
    std::env::var_os("LAYERBUILD_MEMO").is_none_or(|v| v != "0")
}

fn row(observations: Vec<u8>, signature: &[u8], prints: &BTreeMap<Label, Fingerprint>) -> MemoRow {
    let digests: String = prints
        .iter()
        .map(|(l, f)| format!("{l} {}\n", f.digest))
        .collect();
    MemoRow {
        observations,
        signature: sealed(signature, &digests),
        digests,
    }
}

/// What a row's `signature` holds: the observations' signature and the
/// digests the row serves, hashed together, so that a row whose digests
/// were edited or swapped (the database is a file anyone may touch) is a
/// miss, as one whose observations changed is.
fn sealed(observed: &[u8], digests: &str) -> Vec<u8> {
    let mut h = blake3::Hasher::new();
    h.update(b"layerbuild memo row\0");
    h.update(observed);
    h.update(digests.as_bytes());
    h.finalize().as_bytes().to_vec()
}

/// The digests of `labels` from the memo `id`, if nothing it observed
/// changed. Any doubt (no row, a malformed one, another set of labels) is
/// a miss.
fn lookup(store: &dyn MemoStore, id: &str, labels: &[Label]) -> Option<BTreeMap<Label, Digest>> {
    let t = std::time::Instant::now();
    let row = store.memo(id)?;
    let t = crate::timings::phase("  memo: read the row", t);
    let observations = observe::decode(&row.observations)?;
    let t = crate::timings::phase("  memo: decode", t);
    let same = sealed(&observe::current_signature(&observations), &row.digests) == row.signature;
    crate::timings::phase(&format!("  memo: stat {} paths", observations.len()), t);
    if !same {
        return None;
    }
    let mut out = BTreeMap::new();
    for line in row.digests.lines() {
        let (l, d) = line.split_once(' ')?;
        out.insert(Label::parse(l).ok()?, Digest::from(d));
    }
    (out.len() == labels.len() && labels.iter().all(|l| out.contains_key(l))).then_some(out)
}

/// `LAYERBUILD_STATS=1`: how the files' hashes were obtained, and how many
/// files the play analysis read, on stderr.
fn report(stat: &StatCache, analysis_reads: usize) {
    if crate::timings::wanted() {
        eprintln!(
            "layerbuild stats: {} files read and hashed, {} from the stat cache, {analysis_reads} read by the analysis",
            stat.hashed, stat.reused
        );
    }
}

/// `LAYERBUILD_STATS=1` when the memo served every digest: nothing read.
fn report_memo(layers: usize) {
    if crate::timings::wanted() {
        eprintln!(
            "layerbuild stats: 0 files read and hashed, 0 from the stat cache, 0 read by the analysis; {layers} digests from the memo"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Memos(Mutex<HashMap<String, MemoRow>>);

    impl MemoStore for Memos {
        fn memo(&self, id: &str) -> Option<MemoRow> {
            self.0.lock().unwrap().get(id).cloned()
        }
        fn store_memo(&self, id: &str, row: &MemoRow) -> bool {
            self.0.lock().unwrap().insert(id.into(), row.clone());
            true
        }
    }

    #[test]
    fn digests_round_trip_and_other_selections_miss() {
        let store = Memos::default();
        let a = Label::parse("//a/b").unwrap();
        let b = Label::parse("//a/c").unwrap();
        let rec = Observer::new().finish().unwrap();
        let digests = format!("{a} 1234\n{b} 5678\n");
        let row = MemoRow {
            observations: observe::encode(&rec.observations),
            signature: sealed(&rec.signature, &digests),
            digests,
        };
        store.store_memo("k", &row);
        let got = lookup(&store, "k", &[a.clone(), b.clone()]).unwrap();
        assert_eq!(got[&a], "1234");
        assert!(lookup(&store, "k", std::slice::from_ref(&a)).is_none());
        assert!(lookup(&store, "other", &[a.clone(), b.clone()]).is_none());
        // A row whose signature no longer matches is a miss.
        let mut stale = row.clone();
        stale.signature[0] ^= 1;
        store.store_memo("k", &stale);
        assert!(lookup(&store, "k", &[a.clone(), b.clone()]).is_none());
        // So is one whose digests were edited: swapped between layers, or
        // one replaced.
        for digests in [
            format!("{a} 5678\n{b} 1234\n"),
            format!("{a} 1234\n{b} 9999\n"),
        ] {
            let edited = MemoRow {
                digests,
                ..row.clone()
            };
            store.store_memo("k", &edited);
            assert!(lookup(&store, "k", &[a.clone(), b.clone()]).is_none());
        }
        store.store_memo("k", &row);
        assert!(lookup(&store, "k", &[a, b]).is_some());
    }

    #[test]
    fn the_key_is_canonical_json_of_the_model() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("Layerfile.toml"),
            "[workspace]\nname = \"k\"\n\n[layers.\"a/b\"]\nparent = \"scratch\"\nrun = [\"true\"]\n",
        )
        .unwrap();
        let ws = Workspace::load(dir.path()).unwrap();
        let labels = [Label::parse("//a/b").unwrap()];
        let one = MemoKey::new(&ws, None, &labels).unwrap();
        let json = serde_json::to_value(&one).unwrap();
        assert_eq!(json["workspace"]["layers"]["//a/b"]["run"][0], "true");
        assert_eq!(one.id(), MemoKey::new(&ws, None, &labels).unwrap().id());
        let mut other = ws.clone();
        other
            .layers
            .get_mut(&labels[0])
            .unwrap()
            .run
            .push("false".into());
        assert_ne!(one.id(), MemoKey::new(&other, None, &labels).unwrap().id());
    }
}

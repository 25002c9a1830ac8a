//! Everything a fingerprint learnt from the file system, so that a later
//! run can tell from `stat` calls alone that none of it changed, and reuse
//! the digests without reading a file (the memo, [`super::session`]):
//! git's index plus its untracked cache, for the whole analysis.
//!
//! Every file-system access of the fingerprint goes through an [`Observer`]
//! (a unit test below rejects any other in `src/fingerprint`). Each access
//! is recorded as an [`Observation`] with a *signature* of what it saw,
//! taken at the time of the access:
//!
//! - [`Look::Stat`] — a file read, a directory listed, permission bits
//!   used: device, inode, full mode, size, mtime and ctime. A directory's
//!   times change when an entry is added, removed or renamed; a file's when
//!   its content or mode does (ctime cannot be set back by users).
//! - [`Look::Kind`] — only whether and what a path is (`is_file`, `exists`):
//!   type, device and inode. A path that does not exist is recorded as such.
//! - [`Look::Canon`] — where a path resolves through symbolic links.
//! - [`Look::Owner`] — who owns a path (user and group ids), with its
//!   type, device and inode: the workspace root's, whose owner decides
//!   which copied files count theirs, without its listing (a new file
//!   beside the cache leaves it alone).
//!
//! Git's racy rule applies to `Stat` signatures: content can change within
//! one clock tick without the stat data changing, so a file or directory
//! whose mtime or ctime is not older than the start of the fingerprint
//! (minus [`super::stat::racy_margin_ns`]) makes the record unusable. So does a path
//! seen twice with different signatures (it changed during the run).
//! Over-approximate: a memo that cannot be trusted is not written, and the
//! next run reads the files again.
//!
//! I/O: the file-system calls it wraps; nothing else.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use rayon::prelude::*;

use super::stat::{Stat, is_racy, now_ns, racy_margin_text};

/// What an access depended on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Look {
    Stat,
    Kind,
    Canon,
    Owner,
}

impl Look {
    fn code(self) -> u8 {
        match self {
            Look::Stat => b'S',
            Look::Kind => b'K',
            Look::Canon => b'C',
            Look::Owner => b'O',
        }
    }

    fn from_code(c: u8) -> Option<Look> {
        match c {
            b'S' => Some(Look::Stat),
            b'K' => Some(Look::Kind),
            b'C' => Some(Look::Canon),
            b'O' => Some(Look::Owner),
            _ => None,
        }
    }
}

/// One access: an absolute path, what was looked at, and whether the last
/// component was followed if it is a symbolic link.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Observation {
    pub path: PathBuf,
    pub look: Look,
    pub follow: bool,
}

/// By the path's bytes (a record holds hundreds of thousands: comparing
/// paths component by component was most of the sort).
impl Ord for Observation {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.path
            .as_os_str()
            .as_encoded_bytes()
            .cmp(other.path.as_os_str().as_encoded_bytes())
            .then(self.look.cmp(&other.look))
            .then(self.follow.cmp(&other.follow))
    }
}

impl PartialOrd for Observation {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// Records accesses; shared by reference (the hashing runs in parallel).
#[derive(Debug)]
pub struct Observer {
    started_ns: i64,
    seen: Mutex<Seen>,
    /// Why the record cannot be trusted, once known.
    unusable: Mutex<Option<String>>,
    /// Files read whole by the analysis (not by the hashing).
    reads: AtomicUsize,
    /// Directory listings read for lookups (see [`Observer::is_file`]).
    /// Keyed by the path's bytes (`Path`'s own hash walks components).
    listings: Mutex<FastMap<std::ffi::OsString, Option<std::sync::Arc<Listing>>>>,
    /// What the analysis derived from a file (its parsed YAML...), once
    /// per run however many layers share the file; see [`Observer::derived`].
    /// `None` for a file asked for once so far.
    derived: Mutex<std::collections::HashMap<(std::any::TypeId, PathBuf), Option<Derived>>>,
    /// Directories strictly below this one may stand, by their listing,
    /// for names looked up in them and not found (see [`Observer::within`]).
    root: Option<PathBuf>,
    /// Lookups answered from listings and already recorded (every layer
    /// asks about the same names: recorded once).
    /// Each path by a 128-bit hash of its bytes (a fifth of the memory
    /// of the names themselves; a collision, about 2^-89 likely at a
    /// million paths, would leave one observation out).
    noted: Mutex<[FastSet<u128>; 3]>,
}

/// Maps of the run's own paths and names: no untrusted keys from outside
/// the workspace reach them, so the fast hasher serves (SipHash was a
/// tenth of a cold dry run).
type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
type FastSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;

type Derived = std::sync::Arc<dyn std::any::Any + Send + Sync>;

/// What was recorded of a path from a listing (see [`Observer::noted`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Noted {
    Kind,
    KindNoFollow,
    Listing,
}

/// What a directory entry is, not following links.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entry {
    File,
    Dir,
    Link,
    Other,
}

/// A directory's entries (kind and inode by name) and its device.
#[derive(Debug)]
struct Listing {
    device: u64,
    entries: FastMap<std::ffi::OsString, (Entry, u64)>,
    /// The names, sorted, once asked for (see [`Observer::read_dir`]).
    sorted: std::sync::OnceLock<std::sync::Arc<[std::ffi::OsString]>>,
    /// Whether the listing was recorded (see [`Observer::note_listing`]):
    /// a name found missing here is then known recorded without a lookup.
    noted: std::sync::atomic::AtomicBool,
}

impl Listing {
    /// The `Kind` signature `stat` would give an entry that is a file or a
    /// directory. A mount point's listed inode is not the one `stat`
    /// shows: the signature then differs and the memo misses (safe).
    fn kind_sig(&self, kind: Entry, inode: u64) -> Vec<u8> {
        let mode = if kind == Entry::File {
            0o100000
        } else {
            0o040000
        };
        let stat = Stat {
            device: self.device,
            inode,
            mode,
            size: 0,
            mtime_ns: 0,
            ctime_ns: 0,
        };
        sig_of_stat(Look::Kind, &stat)
    }
}

/// Does `path` have a `..` component? (Bytes, not `components()`: this
/// is asked for every name the analysis tries.)
fn has_parent_dir(path: &Path) -> bool {
    let b = path.as_os_str().as_encoded_bytes();
    b == b".." || b.starts_with(b"../") || b.ends_with(b"/..") || b.windows(4).any(|w| w == b"/../")
}

impl Default for Observer {
    fn default() -> Self {
        Observer::new()
    }
}

/// What a finished fingerprint depended on: observations in canonical
/// order and one hash over their signatures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub observations: Vec<Observation>,
    pub signature: [u8; 32],
}

impl Observer {
    pub fn new() -> Observer {
        Observer {
            started_ns: now_ns(),
            seen: Mutex::new(Seen::default()),
            unusable: Mutex::new(None),
            reads: AtomicUsize::new(0),
            listings: Mutex::new(FastMap::default()),
            derived: Mutex::new(std::collections::HashMap::new()),
            root: None,
            noted: Mutex::new(Default::default()),
        }
    }

    /// An observer of a fingerprint of the workspace at `root`: a name
    /// looked up in a directory below the root and not found is recorded as
    /// that directory's listing (its times change when the name appears),
    /// not as one absent path per name and layer: a memo then stats far
    /// fewer paths. Directories at or above the root are never recorded as
    /// listings this way, so a new `out/` or `notes.txt` beside the cache
    /// leaves the memo in use.
    pub fn within(root: &Path) -> Observer {
        Observer {
            root: Some(root.to_path_buf()),
            ..Observer::new()
        }
    }

    /// Records `obs` with the signature `sig` seen now.
    fn note(&self, obs: Observation, sig: Vec<u8>) {
        if obs.look == Look::Stat
            && let Some(stat) = stat_of_sig(&sig)
            && is_racy(stat.mtime_ns, stat.ctime_ns, self.started_ns)
        {
            self.give_up(format!(
                "{} was modified less than {} before the scan",
                obs.path.display(),
                racy_margin_text()
            ));
        }
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(obs, Sig::from(sig));
    }

    /// Marks the record unusable.
    pub fn give_up(&self, why: String) {
        let mut u = self.unusable.lock().unwrap_or_else(|e| e.into_inner());
        if u.is_none() {
            *u = Some(why);
        }
    }

    /// Records a `Stat` look at `path` whose metadata the caller already
    /// has (`meta` from `symlink_metadata` when `follow` is false).
    pub fn saw(&self, path: &Path, follow: bool, meta: &io::Result<std::fs::Metadata>) {
        let obs = Observation {
            path: path.to_path_buf(),
            look: Look::Stat,
            follow,
        };
        let sig = sig_from(Look::Stat, meta);
        self.note(obs, sig);
    }

    fn look(&self, path: &Path, look: Look, follow: bool) -> io::Result<std::fs::Metadata> {
        let meta = if follow {
            std::fs::metadata(path)
        } else {
            std::fs::symlink_metadata(path)
        };
        let obs = Observation {
            path: path.to_path_buf(),
            look,
            follow,
        };
        self.note(obs, sig_from(look, &meta));
        meta
    }

    /// The user and group ids owning `path` (following links), recorded
    /// as an `Owner` look: a `chown` changes the record, a new entry in
    /// the directory does not.
    pub fn owner(&self, path: &Path) -> Option<(u32, u32)> {
        let meta = self.look(path, Look::Owner, true).ok()?;
        owner_of(&meta)
    }

    /// What `path` is (not following a link there): type and identity only.
    pub fn kind_nofollow(&self, path: &Path) -> io::Result<std::fs::Metadata> {
        self.look(path, Look::Kind, false)
    }

    /// `Path::is_file`.
    pub fn is_file(&self, path: &Path) -> bool {
        self.kind(path) == Some(Entry::File)
    }

    /// `Path::is_dir`.
    pub fn is_dir(&self, path: &Path) -> bool {
        self.kind(path) == Some(Entry::Dir)
    }

    /// `Path::exists`.
    pub fn exists(&self, path: &Path) -> bool {
        self.kind(path).is_some()
    }

    /// What `path` is, following links, answered from its directory's
    /// listing (one `readdir` per directory, however many names the
    /// analysis tries there). Each answer is recorded as a `Kind` look at
    /// that one path, exactly as a `stat` would record it (type, device,
    /// inode; absent), so a new file beside it changes nothing. A link, or
    /// anything not a file or directory, is looked up itself.
    fn kind(&self, path: &Path) -> Option<Entry> {
        let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
            return self.look_kind(path);
        };
        if has_parent_dir(path) {
            return self.look_kind(path);
        }
        let Some(listing) = self.listing(dir) else {
            if let Some(up) = self.listed_ancestor(dir) {
                // The directory itself is missing: it can only appear in
                // the listing of an ancestor that exists.
                self.note_listing(&up);
                return None;
            }
            return self.look_kind(path);
        };
        let entry = listing.entries.get(name).copied();
        if entry.is_none() && self.below_root(dir) {
            // Recorded as the directory's listing (once per run).
            if !listing.noted.load(std::sync::atomic::Ordering::Acquire) {
                self.note_listing(dir);
                listing
                    .noted
                    .store(true, std::sync::atomic::Ordering::Release);
            }
            return None;
        }
        if !self.first_note(path, Noted::Kind) {
            // Recorded already, with the same answer (the listing is memoised).
            return match entry {
                None => None,
                Some((kind @ (Entry::File | Entry::Dir), _)) => Some(kind),
                Some(_) => self.look_kind(path),
            };
        }
        let obs = Observation {
            path: path.to_path_buf(),
            look: Look::Kind,
            follow: true,
        };
        match entry {
            None => {
                self.note(obs, sig_err(&io::Error::from_raw_os_error(libc::ENOENT)));
                None
            }
            Some((kind @ (Entry::File | Entry::Dir), inode)) => {
                self.note(obs, listing.kind_sig(kind, inode));
                Some(kind)
            }
            Some(_) => self.look_kind(path),
        }
    }

    /// Is any component of `rel` (workspace-relative, below `root`) a
    /// symbolic link, or missing? Answered from the directories' listings;
    /// each component is recorded as a `Kind` look that does not follow
    /// links, so a directory later replaced by a link changes the record.
    pub fn through_link(&self, root: &Path, rel: &str) -> bool {
        let mut dir = root.to_path_buf();
        rel.split('/')
            .filter(|c| !c.is_empty() && *c != ".")
            .any(|c| self.link_step(&mut dir, c))
    }

    /// [`Observer::through_link`] of `name` in `dir` (absolute), a
    /// directory already known to be reached with no link on the way.
    pub fn through_link_in(&self, dir: &Path, name: &str) -> bool {
        let mut dir = dir.to_path_buf();
        name.split('/')
            .filter(|c| !c.is_empty() && *c != ".")
            .any(|c| self.link_step(&mut dir, c))
    }

    /// One step of [`Observer::through_link`]: is `c` in `dir` a link
    /// (or unknown)? `dir` becomes `dir/c`.
    fn link_step(&self, dir: &mut PathBuf, c: &str) -> bool {
        if c == ".." {
            return true;
        }
        let Some(listing) = self.listing(dir) else {
            return true;
        };
        dir.push(c);
        match listing.entries.get(std::ffi::OsStr::new(c)) {
            Some(&(kind @ (Entry::File | Entry::Dir), inode)) => {
                if self.first_note(dir, Noted::KindNoFollow) {
                    let obs = Observation {
                        path: dir.clone(),
                        look: Look::Kind,
                        follow: false,
                    };
                    self.note(obs, listing.kind_sig(kind, inode));
                }
                false
            }
            _ => true,
        }
    }

    /// True the first time `path` is noted as `what` in this run.
    fn first_note(&self, path: &Path, what: Noted) -> bool {
        let h = blake3::hash(path.as_os_str().as_encoded_bytes());
        let key = u128::from_le_bytes(h.as_bytes()[..16].try_into().expect("16 bytes"));
        let mut noted = self.noted.lock().unwrap_or_else(|e| e.into_inner());
        noted[what as usize].insert(key)
    }

    /// Is `dir` strictly below the workspace root (see [`Observer::within`])?
    fn below_root(&self, dir: &Path) -> bool {
        self.root.as_deref().is_some_and(|r| {
            let (d, r) = (
                dir.as_os_str().as_encoded_bytes(),
                r.as_os_str().as_encoded_bytes(),
            );
            d.len() > r.len() + 1 && d.starts_with(r) && d[r.len()] == b'/'
        })
    }

    /// The nearest ancestor of the missing directory `dir` that is a
    /// directory strictly below the root, if any.
    fn listed_ancestor(&self, dir: &Path) -> Option<PathBuf> {
        let mut d = dir.parent();
        while let Some(up) = d {
            if !self.below_root(up) {
                return None;
            }
            if self.listing(up).is_some() {
                return Some(up.to_path_buf());
            }
            d = up.parent();
        }
        None
    }

    /// Records the listing of `dir` (a `Stat`), once per run.
    fn note_listing(&self, dir: &Path) {
        if self.first_note(dir, Noted::Listing) {
            self.look(dir, Look::Stat, true).ok();
        }
    }

    fn look_kind(&self, path: &Path) -> Option<Entry> {
        let m = self.look(path, Look::Kind, true).ok()?;
        Some(if m.is_file() {
            Entry::File
        } else if m.is_dir() {
            Entry::Dir
        } else {
            Entry::Other
        })
    }

    /// The entries of `dir` by name (memoised for the run, not recorded:
    /// each answer taken from it is); `None` when it is not a readable
    /// directory.
    fn listing(&self, dir: &Path) -> Option<std::sync::Arc<Listing>> {
        if let Some(l) = self
            .listings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(dir.as_os_str())
        {
            return l.clone();
        }
        let listing = std::fs::metadata(dir)
            .ok()
            .filter(std::fs::Metadata::is_dir)
            .and_then(|m| {
                use std::os::unix::fs::{DirEntryExt, MetadataExt};
                let rd = std::fs::read_dir(dir).ok()?;
                let mut entries = FastMap::default();
                for e in rd.filter_map(|e| e.ok()) {
                    let kind = match e.file_type() {
                        Ok(t) if t.is_symlink() => Entry::Link,
                        Ok(t) if t.is_dir() => Entry::Dir,
                        Ok(t) if t.is_file() => Entry::File,
                        _ => Entry::Other,
                    };
                    entries.insert(e.file_name(), (kind, e.ino()));
                }
                Some(std::sync::Arc::new(Listing {
                    device: m.dev(),
                    entries,
                    sorted: Default::default(),
                    noted: Default::default(),
                }))
            });
        self.listings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(dir.as_os_str().to_owned(), listing.clone());
        listing
    }

    /// `make()` of the file `path`, shared by every layer that asks (one
    /// value per type and path). Kept from the second request on: most
    /// files (a layer's own playbook and role) are asked for once, and
    /// keeping their parsed YAML until every play is read was a tenth of a
    /// large run's peak memory; a shared file is computed twice at most.
    /// `make` reads through this observer, so each call records the
    /// accesses (the same ones each time).
    pub fn derived<T: std::any::Any + Send + Sync>(
        &self,
        path: &Path,
        make: impl FnOnce() -> T,
    ) -> std::sync::Arc<T> {
        let key = (std::any::TypeId::of::<T>(), path.to_path_buf());
        let asked = {
            let map = self.derived.lock().unwrap_or_else(|e| e.into_inner());
            match map.get(&key) {
                Some(Some(v)) => {
                    if let Ok(v) = v.clone().downcast::<T>() {
                        return v;
                    }
                    true
                }
                Some(None) => true,
                None => false,
            }
        };
        // Computed outside the lock (two layers may both compute it: same value).
        let v = std::sync::Arc::new(make());
        let kept: Option<Derived> = asked.then(|| v.clone() as Derived);
        let mut map = self.derived.lock().unwrap_or_else(|e| e.into_inner());
        match map.get_mut(&key) {
            Some(slot @ None) => *slot = kept,
            Some(Some(_)) => {}
            None => {
                map.insert(key, kept);
            }
        }
        v
    }

    /// Drops what [`Observer::derived`] kept (the plays are analysed: their
    /// parsed YAML is not needed any more).
    pub fn forget_derived(&self) {
        let derived = std::mem::take(&mut *self.derived.lock().unwrap_or_else(|e| e.into_inner()));
        // Freed on another thread: a large workspace's parsed plays are
        // tens of thousands of allocations nobody needs to wait for.
        std::thread::spawn(move || drop(derived));
    }

    /// `std::fs::metadata`, all of whose fields the caller may use.
    pub fn metadata(&self, path: &Path) -> io::Result<std::fs::Metadata> {
        self.look(path, Look::Stat, true)
    }

    /// `std::fs::symlink_metadata`, all of whose fields the caller may use.
    pub fn symlink_metadata(&self, path: &Path) -> io::Result<std::fs::Metadata> {
        self.look(path, Look::Stat, false)
    }

    /// `std::fs::read_to_string`: stat first, then read (a change in
    /// between shows in the times, which the racy rule catches).
    pub fn read_to_string(&self, path: &Path) -> io::Result<String> {
        self.look(path, Look::Stat, true)?;
        self.reads.fetch_add(1, Ordering::Relaxed);
        std::fs::read_to_string(path)
    }

    /// `std::fs::read`, like [`Observer::read_to_string`].
    pub fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.look(path, Look::Stat, true)?;
        self.reads.fetch_add(1, Ordering::Relaxed);
        std::fs::read(path)
    }

    /// How many files the analysis read whole.
    pub fn reads(&self) -> usize {
        self.reads.load(Ordering::Relaxed)
    }

    /// `Path::canonicalize`.
    pub fn canonicalize(&self, path: &Path) -> io::Result<PathBuf> {
        let r = std::fs::canonicalize(path);
        let obs = Observation {
            path: path.to_path_buf(),
            look: Look::Canon,
            follow: true,
        };
        self.note(obs, sig_of_canon(&r));
        r
    }

    /// The entries of the directory `dir` (names, sorted), following links.
    /// Recorded as its listing (a `Stat` of it) once per run, and read
    /// once per run: every layer of a shared source lists the same
    /// playbook directory.
    pub fn read_dir(&self, dir: &Path) -> io::Result<std::sync::Arc<[std::ffi::OsString]>> {
        let Some(listing) = self.listing(dir) else {
            // Not a readable directory: the look records why, and `read_dir`
            // gives the error it would.
            self.look(dir, Look::Stat, true)?;
            std::fs::read_dir(dir)?;
            return Err(io::Error::other(format!(
                "{} is not a readable directory",
                dir.display()
            )));
        };
        self.note_listing(dir);
        Ok(listing
            .sorted
            .get_or_init(|| {
                let mut names: Vec<std::ffi::OsString> = listing.entries.keys().cloned().collect();
                names.sort();
                names.into()
            })
            .clone())
    }

    /// The regular files below `dir` (following links), sorted; every
    /// directory met is recorded as listed.
    pub fn files_below(&self, dir: &Path) -> Vec<PathBuf> {
        let mut out = vec![];
        for e in walkdir::WalkDir::new(dir)
            .follow_links(true)
            .into_iter()
            .filter_map(|e| e.ok())
        {
            if e.file_type().is_dir() {
                self.look(e.path(), Look::Stat, true).ok();
            } else {
                // Only whether it is a file matters here.
                self.look(e.path(), Look::Kind, true).ok();
                if e.file_type().is_file() {
                    out.push(e.into_path());
                }
            }
        }
        // An unreadable subdirectory is skipped by the walk: its own
        // signature (recorded above) changes when that is fixed.
        out.sort();
        out
    }

    /// `glob::glob` of an absolute pattern: the matching paths. Every
    /// directory below the pattern's literal prefix is recorded as listed
    /// (a new match can appear in any of them).
    pub fn glob(&self, pattern: &str) -> Vec<PathBuf> {
        let literal: PathBuf = Path::new(pattern)
            .components()
            .take_while(|c| !c.as_os_str().to_string_lossy().contains(['*', '?', '[']))
            .collect();
        // The literal prefix's parent is listed too (the prefix may appear).
        if let Some(parent) = literal.parent() {
            self.look(parent, Look::Stat, true).ok();
        }
        if self
            .look(&literal, Look::Stat, true)
            .is_ok_and(|m| m.is_dir())
        {
            // Following links: a match may appear in a linked directory.
            for e in walkdir::WalkDir::new(&literal)
                .min_depth(1)
                .follow_links(true)
                .into_iter()
                .filter_map(|e| e.ok())
            {
                if e.file_type().is_dir() {
                    self.look(e.path(), Look::Stat, true).ok();
                }
            }
        }
        match glob::glob(pattern) {
            Ok(paths) => paths.flatten().collect(),
            Err(_) => vec![],
        }
    }

    /// The record, or why it cannot be trusted.
    pub fn finish(self) -> std::result::Result<Record, String> {
        let (encoded, signature) = self.finish_encoded()?;
        Ok(Record {
            observations: decode(&encoded).ok_or("an observation record that does not decode")?,
            signature,
        })
    }

    /// [`Observer::finish`] as the memo stores it: the observations
    /// [`encode`]d, and their signature. Works on the paths as kept
    /// (directory id and last component): no whole path is built but the
    /// bytes written.
    pub fn finish_encoded(self) -> std::result::Result<(Vec<u8>, [u8; 32]), String> {
        if let Some(why) = self
            .unusable
            .into_inner()
            .unwrap_or_else(|e| e.into_inner())
        {
            return Err(why);
        }
        drop(self.listings);
        drop(self.derived);
        drop(self.noted);
        let Seen {
            chunks,
            dir_ids,
            dirs,
        } = self.seen.into_inner().unwrap_or_else(|e| e.into_inner());
        // Sorted by reference: the looks stay where they are (a copy to
        // sort was the largest part of the memory the record took).
        let mut looks: Vec<&SeenLook> = chunks.iter().flatten().collect();
        // By the whole path's bytes, then what was looked at (the order of
        // `Observation`'s `Ord`), then the signature.
        looks.par_sort_unstable_by(|a, b| {
            let by_path = if a.0 == b.0 {
                a.1.cmp(&b.1)
            } else {
                cmp_concat(path_parts(&dirs, a), path_parts(&dirs, b))
            };
            by_path
                .then(a.2.cmp(&b.2))
                .then(a.3.cmp(&b.3))
                .then_with(|| a.4.cmp(&b.4))
        });
        // One path is one (directory id, name): directories are interned.
        looks.dedup();
        if let Some(w) = looks
            .windows(2)
            .find(|w| (w[0].0, &w[0].1, w[0].2, w[0].3) == (w[1].0, &w[1].1, w[1].2, w[1].3))
        {
            return Err(format!(
                "{} changed while it was being read",
                String::from_utf8_lossy(&path_parts(&dirs, w[0]).concat())
            ));
        }
        // A path whose own `Stat` (not following) shows no symbolic link:
        // following it reaches the same inode, so looks that follow it or
        // only ask its kind say nothing more.
        let plain: FastSet<(u32, &[u8])> = looks
            .iter()
            .filter(|l| {
                l.2 == Look::Stat
                    && !l.3
                    && stat_of_sig(l.4.as_ref()).is_some_and(|s| s.mode & 0o170000 != 0o120000)
            })
            .map(|l| (l.0, &l.1[..]))
            .collect();
        // Directories whose listing is recorded (through links or not: a
        // lookup below either reaches the same directory), by their id as
        // the directory of other paths.
        let listed: FastSet<u32> = looks
            .iter()
            .filter(|l| {
                l.2 == Look::Stat
                    && stat_of_sig(l.4.as_ref()).is_some_and(|s| s.mode & 0o170000 == 0o040000)
            })
            .filter_map(|l| dir_ids.get(&path_parts(&dirs, l).concat()[..]).copied())
            .collect();
        let kept: Vec<&SeenLook> = looks
            .iter()
            .copied()
            .filter(|l| {
                !(l.2 != Look::Canon
                    && ((l.3 && plain.contains(&(l.0, &l.1[..])))
                        // Not there, in a directory whose listing is recorded
                        // (git's untracked cache): it appears only by changing
                        // that listing.
                        || (absent(l.4.as_ref()) && l.0 != NO_DIR && listed.contains(&l.0))))
            })
            .collect();
        drop(looks);
        let signature = combine(
            kept.par_chunks(CHUNK)
                .map(|c| chunk_hash(&c.iter().map(|l| &l.4).collect::<Vec<_>>()))
                .collect(),
        );
        let mut out = Vec::with_capacity(ENCODING.len() + kept.len() * 16);
        out.extend_from_slice(ENCODING);
        let mut prev: Vec<u8> = vec![];
        let mut path: Vec<u8> = vec![];
        for l in kept {
            path.clear();
            for part in path_parts(&dirs, l) {
                path.extend_from_slice(part);
            }
            encode_one(&mut out, &prev, &path, l.2, l.3);
            std::mem::swap(&mut prev, &mut path);
        }
        Ok((out, signature))
    }
}

/// The observations of a run as the observer keeps them until
/// [`Observer::finish`]: each path as the id of its directory (one copy of
/// each directory's path) and its last component, a third of the memory of
/// whole paths for the hundred thousand looks of a large workspace.
#[derive(Debug, Default)]
struct Seen {
    /// In chunks of [`SEEN_CHUNK`]: one growing list held up to twice the
    /// memory of its looks (a twentieth of a large run's peak).
    chunks: Vec<Vec<SeenLook>>,
    dir_ids: FastMap<Box<[u8]>, u32>,
    dirs: Vec<Box<[u8]>>,
}

/// One look: directory id, last component, what was looked at, whether a
/// link there was followed, and the signature.
type SeenLook = (u32, Box<[u8]>, Look, bool, Sig);

/// The directory id of a path without a `/`.
const NO_DIR: u32 = u32::MAX;

/// Looks per chunk of [`Seen::chunks`] (about 300 KiB).
const SEEN_CHUNK: usize = 4096;

impl Seen {
    fn push(&mut self, obs: Observation, sig: Sig) {
        let bytes = obs.path.as_os_str().as_encoded_bytes();
        let (dir, name) = match bytes.iter().rposition(|&b| b == b'/') {
            Some(i) => {
                let dir = &bytes[..i];
                let id = match self.dir_ids.get(dir) {
                    Some(&id) => id,
                    None => {
                        let id = self.dirs.len() as u32;
                        self.dirs.push(dir.into());
                        self.dir_ids.insert(dir.into(), id);
                        id
                    }
                };
                (id, &bytes[i + 1..])
            }
            None => (NO_DIR, bytes),
        };
        let look = (dir, name.into(), obs.look, obs.follow, sig);
        match self.chunks.last_mut() {
            Some(c) if c.len() < SEEN_CHUNK => c.push(look),
            _ => {
                let mut c = Vec::with_capacity(SEEN_CHUNK);
                c.push(look);
                self.chunks.push(c);
            }
        }
    }
}

/// A signature as the observer keeps it: inline (every one but a
/// canonical path's fits), a third of the memory of a `Vec` and its
/// allocation for the hundred thousand looks of a large workspace.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Sig {
    Inline { len: u8, buf: [u8; SIG_INLINE] },
    Heap(Box<[u8]>),
}

/// The longest signature kept inline (a `Stat` look's).
const SIG_INLINE: usize = 45;

impl From<Vec<u8>> for Sig {
    fn from(v: Vec<u8>) -> Sig {
        if v.len() <= SIG_INLINE {
            let mut buf = [0u8; SIG_INLINE];
            buf[..v.len()].copy_from_slice(&v);
            Sig::Inline {
                len: v.len() as u8,
                buf,
            }
        } else {
            Sig::Heap(v.into_boxed_slice())
        }
    }
}

impl AsRef<[u8]> for Sig {
    fn as_ref(&self) -> &[u8] {
        match self {
            Sig::Inline { len, buf } => &buf[..*len as usize],
            Sig::Heap(b) => b,
        }
    }
}

/// Observations hashed per chunk, in parallel.
const CHUNK: usize = 2048;

fn chunk_hash<S: AsRef<[u8]>>(sigs: &[S]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    for s in sigs {
        let s = s.as_ref();
        h.update(&(s.len() as u32).to_le_bytes());
        h.update(s);
    }
    *h.finalize().as_bytes()
}

fn combine(chunks: Vec<[u8; 32]>) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(b"layerbuild observations v1");
    for c in chunks {
        h.update(&c);
    }
    *h.finalize().as_bytes()
}

/// The signature of every observation as the file system is now, in the
/// same form as [`Record::signature`]: equal means nothing observed changed.
pub fn current_signature(observations: &[Observation]) -> [u8; 32] {
    combine(
        observations
            .par_chunks(CHUNK)
            .map(|c| chunk_hash(&signatures_now(c)))
            .collect(),
    )
}

/// The signatures of `chunk` now. Observations are sorted by path, so
/// siblings are adjacent: each directory is opened once and its entries
/// are stat'ed relative to it (`fstatat`), which spares the kernel the
/// lookup of every path component for every file. The answer is the one
/// `stat` of the whole path gives (the directory is reached the same way,
/// through links), which a unit test checks.
#[cfg(target_os = "linux")]
fn signatures_now(chunk: &[Observation]) -> Vec<Vec<u8>> {
    use std::ffi::CString;
    use std::os::fd::{FromRawFd, OwnedFd};
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::io::AsRawFd;

    let mut dir: Option<(&Path, Option<OwnedFd>)> = None;
    chunk
        .iter()
        .map(|obs| {
            let (Some(parent), Some(name)) = (obs.path.parent(), obs.path.file_name()) else {
                return signature_now(obs);
            };
            if obs.look == Look::Canon {
                return signature_now(obs);
            }
            if dir.as_ref().is_none_or(|(p, _)| *p != parent) {
                let fd = CString::new(parent.as_os_str().as_bytes())
                    .ok()
                    .and_then(|c| {
                        // SAFETY: a valid NUL-terminated path; the descriptor
                        // returned, if any, is owned by the OwnedFd.
                        let fd = unsafe {
                            libc::open(
                                c.as_ptr(),
                                libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
                            )
                        };
                        // SAFETY: fd was just opened by us and is not shared.
                        (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
                    });
                dir = Some((parent, fd));
            }
            let Some((_, Some(fd))) = &dir else {
                return signature_now(obs);
            };
            let Ok(cname) = CString::new(name.as_bytes()) else {
                return signature_now(obs);
            };
            let flags = if obs.follow {
                0
            } else {
                libc::AT_SYMLINK_NOFOLLOW
            };
            // SAFETY: `st` is plain data filled by the kernel; fd and cname are valid.
            let mut st: libc::stat = unsafe { std::mem::zeroed() };
            let r = unsafe { libc::fstatat(fd.as_raw_fd(), cname.as_ptr(), &mut st, flags) };
            if r != 0 {
                return sig_err(&io::Error::last_os_error());
            }
            if obs.look == Look::Owner {
                return sig_of_owner(st.st_dev, st.st_ino, st.st_mode, st.st_uid, st.st_gid);
            }
            let stat = Stat {
                size: st.st_size as u64,
                mtime_ns: st.st_mtime.saturating_mul(1_000_000_000) + st.st_mtime_nsec,
                ctime_ns: st.st_ctime.saturating_mul(1_000_000_000) + st.st_ctime_nsec,
                inode: st.st_ino,
                device: st.st_dev,
                mode: st.st_mode,
            };
            sig_of_stat(obs.look, &stat)
        })
        .collect()
}

#[cfg(not(target_os = "linux"))]
fn signatures_now(chunk: &[Observation]) -> Vec<Vec<u8>> {
    chunk.iter().map(signature_now).collect()
}

fn signature_now(obs: &Observation) -> Vec<u8> {
    match obs.look {
        Look::Canon => sig_of_canon(&std::fs::canonicalize(&obs.path)),
        look => {
            let meta = if obs.follow {
                std::fs::metadata(&obs.path)
            } else {
                std::fs::symlink_metadata(&obs.path)
            };
            sig_from(look, &meta)
        }
    }
}

/// Does the signature say "no such file" (or "a component is not a directory")?
fn absent(sig: &[u8]) -> bool {
    sig.len() == 5
        && sig[0] == 0
        && matches!(
            i32::from_le_bytes([sig[1], sig[2], sig[3], sig[4]]),
            libc::ENOENT | libc::ENOTDIR
        )
}

fn sig_err(e: &io::Error) -> Vec<u8> {
    let mut v = vec![0u8];
    match e.raw_os_error() {
        Some(code) => v.extend_from_slice(&code.to_le_bytes()),
        None => v.extend_from_slice(format!("{:?}", e.kind()).as_bytes()),
    }
    v
}

fn sig_from(look: Look, meta: &io::Result<std::fs::Metadata>) -> Vec<u8> {
    let m = match meta {
        Err(e) => return sig_err(e),
        Ok(m) => m,
    };
    if look == Look::Owner {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            return sig_of_owner(m.dev(), m.ino(), m.mode(), m.uid(), m.gid());
        }
        #[cfg(not(unix))]
        return vec![2];
    }
    match Stat::of(m) {
        Some(s) => sig_of_stat(look, &s),
        // No stat data to compare (not unix): never equal to anything later.
        None => vec![2],
    }
}

fn sig_of_stat(look: Look, s: &Stat) -> Vec<u8> {
    let mut v = Vec::with_capacity(45);
    v.push(1);
    v.extend_from_slice(&s.device.to_le_bytes());
    v.extend_from_slice(&s.inode.to_le_bytes());
    match look {
        Look::Stat => {
            v.extend_from_slice(&s.mode.to_le_bytes());
            v.extend_from_slice(&s.size.to_le_bytes());
            v.extend_from_slice(&s.mtime_ns.to_le_bytes());
            v.extend_from_slice(&s.ctime_ns.to_le_bytes());
        }
        // Only the type bits.
        _ => v.extend_from_slice(&(s.mode & 0o170000).to_le_bytes()),
    }
    v
}

/// An `Owner` look's signature: identity, type and the owning ids.
fn sig_of_owner(device: u64, inode: u64, mode: u32, uid: u32, gid: u32) -> Vec<u8> {
    let mut v = Vec::with_capacity(29);
    v.push(1);
    v.extend_from_slice(&device.to_le_bytes());
    v.extend_from_slice(&inode.to_le_bytes());
    v.extend_from_slice(&(mode & 0o170000).to_le_bytes());
    v.extend_from_slice(&uid.to_le_bytes());
    v.extend_from_slice(&gid.to_le_bytes());
    v
}

/// The user and group ids owning a file (`None` where there are none).
pub fn owner_of(meta: &std::fs::Metadata) -> Option<(u32, u32)> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        Some((meta.uid(), meta.gid()))
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        None
    }
}

/// The times back out of a `Stat` signature, for the racy rule.
fn stat_of_sig(sig: &[u8]) -> Option<Stat> {
    if sig.len() != 45 || sig[0] != 1 {
        return None;
    }
    let u64_at = |i: usize| u64::from_le_bytes(sig[i..i + 8].try_into().unwrap_or_default());
    Some(Stat {
        device: u64_at(1),
        inode: u64_at(9),
        mode: u32::from_le_bytes(sig[17..21].try_into().unwrap_or_default()),
        size: u64_at(21),
        mtime_ns: u64_at(29) as i64,
        ctime_ns: u64_at(37) as i64,
    })
}

fn sig_of_canon(r: &io::Result<PathBuf>) -> Vec<u8> {
    match r {
        Err(e) => sig_err(e),
        Ok(p) => {
            let mut v = vec![1u8];
            v.extend_from_slice(p.as_os_str().as_encoded_bytes());
            v
        }
    }
}

/// What an encoded record starts with (its format).
const ENCODING: &[u8] = b"layerbuild observations 2\n";

/// Observations as bytes: per observation its look, follow flag, how many
/// leading bytes its path shares with the previous one (LEB128) and the
/// rest of the path, NUL-terminated (paths never hold NUL). Sorted paths
/// share most of their bytes: a quarter of the size of whole paths, which
/// is what storing and loading a memo costs.
pub fn encode(observations: &[Observation]) -> Vec<u8> {
    let mut out = Vec::with_capacity(ENCODING.len() + observations.len() * 16);
    out.extend_from_slice(ENCODING);
    let mut prev: &[u8] = &[];
    for o in observations {
        let path = o.path.as_os_str().as_encoded_bytes();
        encode_one(&mut out, prev, path, o.look, o.follow);
        prev = path;
    }
    out
}

/// One observation of [`encode`], after the one at `prev`.
fn encode_one(out: &mut Vec<u8>, prev: &[u8], path: &[u8], look: Look, follow: bool) {
    let shared = prev.iter().zip(path).take_while(|(a, b)| a == b).count();
    out.push(look.code());
    out.push(if follow { b'1' } else { b'0' });
    super::stat::varint(out, shared);
    out.extend_from_slice(&path[shared..]);
    out.push(0);
}

/// A kept path's bytes in three parts: its directory, `/` and its name.
fn path_parts<'a>(dirs: &'a [Box<[u8]>], l: &'a SeenLook) -> [&'a [u8]; 3] {
    if l.0 == NO_DIR {
        [&l.1, b"", b""]
    } else {
        [&dirs[l.0 as usize], b"/", &l.1]
    }
}

/// Byte order of two byte strings each given in three parts.
fn cmp_concat(a: [&[u8]; 3], b: [&[u8]; 3]) -> std::cmp::Ordering {
    let (mut ai, mut bi) = (0, 0);
    let (mut ar, mut br): (&[u8], &[u8]) = (a[0], b[0]);
    loop {
        while ar.is_empty() && ai < 2 {
            ai += 1;
            ar = a[ai];
        }
        while br.is_empty() && bi < 2 {
            bi += 1;
            br = b[bi];
        }
        if ar.is_empty() || br.is_empty() {
            return ar.len().cmp(&br.len());
        }
        let n = ar.len().min(br.len());
        match ar[..n].cmp(&br[..n]) {
            std::cmp::Ordering::Equal => {
                ar = &ar[n..];
                br = &br[n..];
            }
            o => return o,
        }
    }
}

/// [`encode`] reversed; `None` for anything malformed (or in another format).
pub fn decode(bytes: &[u8]) -> Option<Vec<Observation>> {
    let mut rest = bytes.strip_prefix(ENCODING)?;
    let mut out: Vec<Observation> = vec![];
    let mut prev: Vec<u8> = vec![];
    while !rest.is_empty() {
        let [code, follow, tail @ ..] = rest else {
            return None;
        };
        let look = Look::from_code(*code)?;
        let follow = match follow {
            b'1' => true,
            b'0' => false,
            _ => return None,
        };
        let mut tail = tail;
        let shared = super::stat::read_varint(&mut tail)?;
        let end = tail.iter().position(|&b| b == 0)?;
        if shared > prev.len() || shared + end == 0 {
            return None;
        }
        prev.truncate(shared);
        prev.extend_from_slice(&tail[..end]);
        rest = &tail[end + 1..];
        #[cfg(unix)]
        let path = {
            use std::os::unix::ffi::OsStrExt;
            PathBuf::from(std::ffi::OsStr::from_bytes(&prev))
        };
        #[cfg(not(unix))]
        let path = PathBuf::from(String::from_utf8(prev.clone()).ok()?);
        out.push(Observation { path, look, follow });
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// An observer for which every file already there is older than the
    /// racy margin (as if the scan started well after they were written).
    fn aged_observer() -> Observer {
        Observer {
            started_ns: now_ns() + 3 * crate::fingerprint::stat::racy_margin_ns(),
            ..Observer::new()
        }
    }

    #[test]
    fn signatures_match_until_something_observed_changes() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        std::fs::create_dir_all(root.join("a")).unwrap();
        std::fs::write(root.join("a/f"), "one").unwrap();
        let o = aged_observer();
        assert_eq!(o.read_to_string(&root.join("a/f")).unwrap(), "one");
        assert!(!o.is_file(&root.join("a/g")));
        assert_eq!(o.read_dir(&root.join("a")).unwrap().len(), 1);
        let rec = o.finish().unwrap();
        // The file, and the directory (listed, and where `g` is absent).
        assert_eq!(rec.observations.len(), 2);
        assert_eq!(current_signature(&rec.observations), rec.signature);
        let back = decode(&encode(&rec.observations)).unwrap();
        assert_eq!(back, rec.observations);

        // A negative lookup turning positive is a change.
        std::fs::write(root.join("a/g"), "").unwrap();
        assert_ne!(current_signature(&rec.observations), rec.signature);
        std::fs::remove_file(root.join("a/g")).unwrap();
        // The directory listing's times changed too (entry added, removed).
        assert_ne!(current_signature(&rec.observations), rec.signature);
    }

    #[test]
    fn same_size_rewrite_is_seen() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("f");
        std::fs::write(&f, "one").unwrap();
        let o = aged_observer();
        o.read_to_string(&f).unwrap();
        let rec = o.finish().unwrap();
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(&f, "two").unwrap();
        assert_ne!(current_signature(&rec.observations), rec.signature);
    }

    #[test]
    fn recent_files_make_the_record_unusable() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("f");
        std::fs::write(&f, "fresh").unwrap();
        let o = Observer::new();
        o.read_to_string(&f).unwrap();
        let why = o.finish().unwrap_err();
        assert!(why.contains("modified less than"), "{why}");
    }

    #[test]
    fn a_path_seen_twice_differently_makes_the_record_unusable() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("f");
        std::fs::write(&f, "one").unwrap();
        let o = aged_observer();
        o.metadata(&f).unwrap();
        std::fs::write(&f, "three").unwrap();
        o.metadata(&f).unwrap();
        assert!(o.finish().unwrap_err().contains("changed while"));
    }

    #[test]
    fn canonical_paths_are_compared() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        std::fs::create_dir_all(root.join("x")).unwrap();
        std::fs::create_dir_all(root.join("y")).unwrap();
        std::os::unix::fs::symlink("x", root.join("l")).unwrap();
        let o = Observer::new();
        o.canonicalize(&root.join("l")).unwrap();
        let rec = o.finish().unwrap();
        assert_eq!(current_signature(&rec.observations), rec.signature);
        std::fs::remove_file(root.join("l")).unwrap();
        std::os::unix::fs::symlink("y", root.join("l")).unwrap();
        assert_ne!(current_signature(&rec.observations), rec.signature);
    }

    #[test]
    fn relative_stats_give_what_whole_path_stats_give() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().canonicalize().unwrap();
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::write(root.join("a/f"), "x").unwrap();
        std::fs::write(root.join("a/b/g"), "y").unwrap();
        std::os::unix::fs::symlink("b", root.join("a/l")).unwrap();
        std::os::unix::fs::symlink("nowhere", root.join("a/dangling")).unwrap();
        std::fs::write(root.join("file"), "").unwrap();
        let mut obs = vec![];
        for p in [
            "a",
            "a/f",
            "a/b",
            "a/b/g",
            "a/l",
            "a/l/g",
            "a/dangling",
            "a/missing",
            "missing/x",
            "file/x",
            "a/b/..",
        ] {
            for follow in [false, true] {
                for look in [Look::Stat, Look::Kind] {
                    obs.push(Observation {
                        path: root.join(p),
                        look,
                        follow,
                    });
                }
            }
        }
        obs.sort();
        let whole: Vec<Vec<u8>> = obs.iter().map(signature_now).collect();
        assert_eq!(signatures_now(&obs), whole);
    }

    #[test]
    fn encoding_shares_prefixes_and_round_trips() {
        let long = format!("/{}", "d".repeat(300));
        let paths = [
            "/a".to_string(),
            "/a/b".into(),
            "/a/b.c".into(),
            "/b".into(),
            format!("{long}/x"),
            format!("{long}/y"),
            format!("{long}/y/z"),
        ];
        let obs: Vec<Observation> = paths
            .iter()
            .enumerate()
            .map(|(i, p)| Observation {
                path: PathBuf::from(p),
                look: [Look::Stat, Look::Kind, Look::Canon][i % 3],
                follow: i % 2 == 0,
            })
            .collect();
        let bytes = encode(&obs);
        assert_eq!(decode(&bytes).unwrap(), obs);
        let whole: usize = paths.iter().map(|p| p.len()).sum();
        assert!(bytes.len() < ENCODING.len() + whole / 2, "{}", bytes.len());
    }

    #[test]
    fn decode_rejects_garbage() {
        let with = |body: &[u8]| [ENCODING, body].concat();
        assert!(decode(&with(b"Z1\x00/x\0")).is_none());
        assert!(decode(&with(b"S2\x00/x\0")).is_none());
        // More shared bytes than the previous path has, a path never
        // ended, an empty path, the old format without a header.
        assert!(decode(&with(b"S1\x05/x\0")).is_none());
        assert!(decode(&with(b"S1\x00/x")).is_none());
        assert!(decode(&with(b"S1\x00\0")).is_none());
        assert!(decode(b"S1/x\0").is_none());
        assert_eq!(decode(&with(b"")).unwrap(), vec![]);
        assert!(decode(b"").is_none());
    }

    /// Every file-system access in `src/fingerprint` goes through an
    /// [`Observer`]; an access that bypassed it would be missing from the
    /// memo's record, and a change to it would go unnoticed (a false hit).
    /// Lines that must touch the file system directly (the parallel
    /// hashing, which reports what it saw) carry the marker `observed:`.
    #[test]
    fn the_fingerprint_touches_the_file_system_only_through_the_observer() {
        const FORBIDDEN: &[&str] = &[
            "fs::read",
            "fs::metadata",
            "fs::symlink_metadata",
            "fs::canonicalize",
            "fs::File",
            "File::open",
            "WalkDir::new",
            "WalkBuilder::new",
            "glob::glob",
            ".exists()",
            ".try_exists(",
            ".canonicalize()",
            ".read_dir()",
            ".read_link()",
            ".metadata()",
            ".symlink_metadata()",
        ];
        // `is_file`/`is_dir` of metadata and file types already obtained
        // are fine; of a path they are a file-system access.
        const METADATA: &[&str] = &["m", "meta", "lmeta", "ft", "file_type()"];
        let path_test = |line: &str| {
            [".is_file()", ".is_dir()"].iter().any(|t| {
                line.match_indices(t).any(|(i, _)| {
                    !METADATA.iter().any(|m| {
                        line[..i].ends_with(m)
                            && !line[..i - m.len()]
                                .ends_with(|c: char| c.is_alphanumeric() || c == '_')
                    })
                })
            })
        };
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/fingerprint");
        let mut bad = vec![];
        for e in std::fs::read_dir(&dir).unwrap() {
            let path = e.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if name == "observe.rs" || !name.ends_with(".rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            // Unit tests (`mod tests { ... }` up to its closing brace at
            // the start of a line) may set up files as they like.
            let mut in_tests = false;
            for (i, line) in text.lines().enumerate() {
                if line.starts_with("mod tests") {
                    in_tests = true;
                } else if in_tests && line == "}" {
                    in_tests = false;
                    continue;
                }
                let t = line.trim_start();
                if in_tests || t.starts_with("//") || line.contains("observed:") {
                    continue;
                }
                if let Some(f) = FORBIDDEN.iter().find(|f| line.contains(*f)) {
                    bad.push(format!("{name}:{}: {f}: {}", i + 1, t));
                } else if path_test(line) {
                    bad.push(format!("{name}:{}: is_file/is_dir of a path: {}", i + 1, t));
                }
            }
        }
        assert!(
            bad.is_empty(),
            "file-system access outside the Observer:\n{}",
            bad.join("\n")
        );
    }
}

//! Content hashes of workspace files.
//!
//! One walk of the workspace (with `ignore`, so `.gitignore`d files do not
//! count) restricted to the directories some layer needs, then blake3 over
//! every file in parallel. Paths are workspace-relative with `/`; mode is
//! reduced to what git keeps (regular, executable, symlink) so a clone with
//! another umask gets the same digests; mtimes never count. The exact
//! permissions, the owner of files and directories not owned as the
//! workspace root is, and directories with unusual permissions are kept
//! beside the hashes for the inputs that host commands copy with them
//! ([`FileHash::copied_mode`], [`FileIndex::owner`],
//! [`FileIndex::dirs_under`]). With a
//! [`StatCache`], a file whose stat data match a trusted entry is not read
//! (the cost of hashing role files is opening and reading them, not blake3).
//!
//! A layer's source may be a git submodule: its `.git` file is skipped like
//! a `.git` directory, and `.gitignore` rules apply across the submodule's
//! boundary as they do in a plain directory (`require_git(false)`: no
//! repository root stops them), so its digests are a plain copy's.
//!
//! Symbolic links are never followed by the walk: each is hashed as a link
//! (mode `120000`, blake3 of its target string), whether it points at a file
//! or a directory, inside the workspace or out, or nowhere (dangling, a
//! loop). Where each link leads is recorded ([`LinkTarget`]) so the caller
//! can count targets inside the workspace too (Ansible follows links) and
//! reject reads outside it. The one exception: a link whose target lies in
//! a directory of `[workspace] allow_outside` is followed, and what it leads
//! to counts under the link's path.
//!
//! I/O: reads the workspace; writes nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::observe::{Observer, owner_of};
use super::stat::{Stat, now_ns};
use super::statcache::{StatCache, StatEntry};
use crate::error::{Error, Result};

/// A blake3 hash of a file's content (or of a link's target), written as
/// 64 hex digits wherever it is serialised, so manifests and their digests
/// read as before; 32 bytes in memory instead of a 64-character string.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContentHash(pub [u8; 32]);

impl ContentHash {
    pub fn of(bytes: &[u8]) -> ContentHash {
        ContentHash(*blake3::hash(bytes).as_bytes())
    }

    /// From 64 hex digits.
    pub fn from_hex(s: &str) -> Option<ContentHash> {
        blake3::Hash::from_hex(s)
            .ok()
            .map(|h| ContentHash(*h.as_bytes()))
    }

    pub fn to_hex(&self) -> String {
        blake3::Hash::from_bytes(self.0).to_hex().to_string()
    }
}

impl std::fmt::Display for ContentHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(blake3::Hash::from_bytes(self.0).to_hex().as_str())
    }
}

impl std::fmt::Debug for ContentHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self}")
    }
}

impl Serialize for ContentHash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(blake3::Hash::from_bytes(self.0).to_hex().as_str())
    }
}

impl<'de> Deserialize<'de> for ContentHash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        ContentHash::from_hex(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("not a content hash: '{s}'")))
    }
}

/// A file's content and the part of its mode that counts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileHash {
    pub hash: ContentHash,
    /// `100644`, `100755`, or `120000` for a symlink (hash of its target string).
    pub mode: std::borrow::Cow<'static, str>,
    /// The content holds `{{` or `{%`: it may be rendered as a Jinja template.
    #[serde(skip)]
    pub jinja: bool,
    /// Full permission bits (for files copied by host commands, which keep them).
    #[serde(skip)]
    pub perm: u32,
    /// The stat taken before the content was read in this scan: with the
    /// hash, the stat cache's new entry for the file (see
    /// [`FileIndex::stat_updates`]). `None` for a hash the stat cache gave,
    /// a link, or a file with no usable stat.
    #[serde(skip)]
    pub new_stat: Option<Stat>,
}

/// Equal content, mode and permissions (how a scan got them aside).
impl PartialEq for FileHash {
    fn eq(&self, other: &FileHash) -> bool {
        (self.hash, &self.mode, self.jinja, self.perm)
            == (other.hash, &other.mode, other.jinja, other.perm)
    }
}

impl Eq for FileHash {}

impl FileHash {
    /// The mode as host-side copies (`cp -a`, `rsync -a`) keep it: the git
    /// view for the usual permissions (so umask 022 and 002 agree), the exact
    /// bits otherwise (600, 700, 640...).
    pub fn copied_mode(&self) -> std::borrow::Cow<'static, str> {
        match self.perm {
            0o644 | 0o664 | 0o755 | 0o775 | 0 => self.mode.clone(),
            p => format!("100{p:03o}").into(),
        }
    }
}

/// A directory's permissions and owner, kept when either is unusual
/// (see [`FileIndex::dirs_under`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirMeta {
    /// Full permission bits.
    pub perm: u32,
    /// The owning user and group ids, when they are not the workspace
    /// root's.
    pub owner: Option<(u32, u32)>,
}

impl DirMeta {
    /// The mode as host-side copies keep it: `40000` (git's directory
    /// mode) for the usual 755 and 775 (so umask 022 and 002 agree), the
    /// exact bits otherwise (`40700`, `42775`...), with the owner when it
    /// is not the workspace root's.
    pub fn copied_mode(&self) -> std::borrow::Cow<'static, str> {
        let mode = if usual_dir_perm(self.perm) {
            "40000".to_string()
        } else {
            format!("40{:03o}", self.perm)
        };
        match self.owner {
            Some(o) => format!("{mode} {}", owner_text(o)).into(),
            None => mode.into(),
        }
    }
}

/// An owner as the manifest writes it: `UID:GID`.
pub fn owner_text((uid, gid): (u32, u32)) -> String {
    format!("{uid}:{gid}")
}

/// Is `perm` a usual directory mode (see [`DirMeta::copied_mode`])?
fn usual_dir_perm(perm: u32) -> bool {
    matches!(perm, 0o755 | 0o775 | 0)
}

/// Hashes of every non-ignored file under the requested roots.
#[derive(Debug, Default)]
pub struct FileIndex {
    files: BTreeMap<String, FileHash>,
    /// The owner of the workspace root, once looked up (a fresh clone
    /// owns everything as the user who cloned it).
    root_owner: Option<Option<(u32, u32)>>,
    /// Files (not links) whose owner is not the workspace root's, with
    /// their owner: empty in a plain clone.
    owners: BTreeMap<String, (u32, u32)>,
    /// Directories walked whose permissions are unusual or whose owner is
    /// not the workspace root's (`.` for the root): empty in a plain clone.
    dirs: BTreeMap<String, DirMeta>,
    /// Every symlink met, by workspace-relative path.
    links: BTreeMap<String, LinkTarget>,
    /// When the scan began (nanoseconds): the stat cache's racy rule.
    scan_started: i64,
    /// The variable analysis of files read for hashing, from the same
    /// bytes (taken by [`FileIndex::take_analysed`]).
    analysed: Vec<(String, Result<super::vars::FileUse>)>,
    /// Whether the whole workspace was walked (with its ignore rules).
    whole: bool,
    /// The roots walked with the ignore rules, reached with no link on
    /// the way (see [`reached`]).
    walked: BTreeSet<String>,
    /// Whether those walks met a `.gitignore` (which may have left files
    /// out that a path named outright still counts).
    gitignore_met: bool,
}

/// Where a symbolic link leads, resolved through every link on the way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkTarget {
    /// A workspace-relative path (`.` for the root).
    Inside(String),
    /// An absolute path outside the workspace and outside `allow_outside`.
    Outside(PathBuf),
    /// An absolute path in an `allow_outside` directory: followed.
    Allowed(PathBuf),
    /// Dangling, or a loop.
    Broken,
}

impl LinkTarget {
    /// Resolves the link at `full` (absolute). `root` must be canonical.
    pub fn of(obs: &Observer, root: &Path, full: &Path, allow_outside: &[PathBuf]) -> LinkTarget {
        match obs.canonicalize(full) {
            Err(_) => LinkTarget::Broken,
            Ok(real) => match real.strip_prefix(root) {
                Ok(rel) if rel.as_os_str().is_empty() => LinkTarget::Inside(".".into()),
                Ok(rel) => LinkTarget::Inside(rel_str(Path::new(""), rel)),
                Err(_) if allow_outside.iter().any(|a| real.starts_with(a)) => {
                    LinkTarget::Allowed(real)
                }
                Err(_) => LinkTarget::Outside(real),
            },
        }
    }
}

/// What one walk collects: workspace-relative paths to hash (with whether
/// a link there is followed) and the links met.
#[derive(Default)]
struct Found {
    paths: BTreeMap<String, bool>,
    links: BTreeMap<String, LinkTarget>,
    /// Canonical directories being walked through allowed links, from the
    /// outermost link to the innermost: a link back into one of them is a
    /// loop. Only that chain: another link into a directory walked before
    /// is walked again, under its own path (each counts for whoever reads
    /// it).
    followed: BTreeSet<PathBuf>,
    /// A `.gitignore` was met in a directory the walk entered.
    gitignore_met: bool,
    /// Directories listed whose permissions or owner are unusual.
    dirs: BTreeMap<String, DirMeta>,
}

impl FileIndex {
    /// Walks `roots` (workspace-relative directories, `.` for all) under
    /// `root`, skipping `.git` (a directory, or a submodule's file) and `exclude`, and hashes every file found.
    /// `explicit` paths (files or directories a layer names outright) are
    /// hashed whether or not an ignore file matches them. With `stat`, files
    /// its trusted entries cover are not read, and the scan's new entries,
    /// vanished files and counts are left in it for the caller to store.
    pub fn build(
        root: &Path,
        roots: &BTreeSet<String>,
        explicit: &BTreeSet<String>,
        exclude: &Path,
        stat: Option<&mut StatCache>,
    ) -> Result<FileIndex> {
        let obs = Observer::new();
        FileIndex::build_allowing(&obs, root, roots, explicit, exclude, &[], stat)
    }

    /// [`FileIndex::build`], following links into the `allow_outside`
    /// directories (absolute, canonical).
    pub fn build_allowing(
        obs: &Observer,
        root: &Path,
        roots: &BTreeSet<String>,
        explicit: &BTreeSet<String>,
        exclude: &Path,
        allow_outside: &[PathBuf],
        mut stat: Option<&mut StatCache>,
    ) -> Result<FileIndex> {
        let mut index = FileIndex::walk_roots(
            obs,
            root,
            roots,
            exclude,
            allow_outside,
            stat.as_deref_mut(),
        )?;
        index.finish(
            obs,
            root,
            roots,
            roots,
            explicit,
            exclude,
            allow_outside,
            stat,
        )?;
        Ok(index)
    }

    /// The first part of [`FileIndex::build_allowing`]: walks and hashes
    /// `roots` only, so that it can run while the plays are discovered
    /// (the layers' sources are known before their plays are read).
    pub fn walk_roots(
        obs: &Observer,
        root: &Path,
        roots: &BTreeSet<String>,
        exclude: &Path,
        allow_outside: &[PathBuf],
        stat: Option<&mut StatCache>,
    ) -> Result<FileIndex> {
        // Before any file is looked at: an entry is trusted later only for
        // files not modified since (see the racy rule in `stat`).
        let mut index = FileIndex {
            scan_started: now_ns(),
            ..FileIndex::default()
        };
        let mut found = Found::default();
        let t = std::time::Instant::now();
        if !roots.is_empty() {
            let owner = index.root_owner(obs, root);
            Walk::new(obs, root, exclude, allow_outside, owner).roots(roots, &mut found)?;
            index.walked.extend(reached(obs, root, roots));
        }
        let t = crate::timings::phase("    index: walk", t);
        index.add_found(obs, root, found, stat)?;
        crate::timings::phase("    index: hash what the walk found", t);
        Ok(index)
    }

    /// The rest of [`FileIndex::build_allowing`] after
    /// [`FileIndex::walk_roots`] of `walked`: the `roots` not inside a
    /// walked one (walked with the same ignore rules: a walk starts at the
    /// workspace root whatever its roots), the `explicit` paths, and the
    /// stat-cache entries of files gone from all of them.
    #[allow(clippy::too_many_arguments)]
    pub fn finish(
        &mut self,
        obs: &Observer,
        root: &Path,
        walked: &BTreeSet<String>,
        roots: &BTreeSet<String>,
        explicit: &BTreeSet<String>,
        exclude: &Path,
        allow_outside: &[PathBuf],
        mut stat: Option<&mut StatCache>,
    ) -> Result<()> {
        let t = std::time::Instant::now();
        let rest: BTreeSet<String> = roots
            .iter()
            .filter(|r| !inside(r, walked))
            .cloned()
            .collect();
        if !rest.is_empty() {
            let mut found = Found::default();
            let owner = self.root_owner(obs, root);
            Walk::new(obs, root, exclude, allow_outside, owner).roots(&rest, &mut found)?;
            self.walked.extend(reached(obs, root, &rest));
            self.add_found(obs, root, found, stat.as_deref_mut())?;
        }
        self.whole = roots.contains(".") || walked.contains(".");
        self.add_explicit(
            obs,
            root,
            explicit,
            exclude,
            allow_outside,
            stat.as_deref_mut(),
        )?;
        if let Some(stat) = stat {
            self.forget_vanished(root, roots, explicit, stat);
        }
        crate::timings::phase("    index: the paths the plays name", t);
        Ok(())
    }

    /// Has the whole workspace been walked (a root `.`)?
    pub fn whole(&self) -> bool {
        self.whole
    }

    /// Walks the whole workspace (with its ignore rules, like any root)
    /// into the index, once.
    pub fn add_workspace(
        &mut self,
        obs: &Observer,
        root: &Path,
        exclude: &Path,
        allow_outside: &[PathBuf],
        stat: Option<&mut StatCache>,
    ) -> Result<()> {
        if self.whole {
            return Ok(());
        }
        let mut found = Found::default();
        let roots = BTreeSet::from([".".to_string()]);
        let owner = self.root_owner(obs, root);
        Walk::new(obs, root, exclude, allow_outside, owner).roots(&roots, &mut found)?;
        self.whole = true;
        self.walked.insert(".".into());
        self.add_found(obs, root, found, stat)
    }

    /// Adds files and directories named outright (hashed whether or not an
    /// ignore file matches them), skipping those already indexed.
    pub fn add_explicit(
        &mut self,
        obs: &Observer,
        root: &Path,
        explicit: &BTreeSet<String>,
        exclude: &Path,
        allow_outside: &[PathBuf],
        stat: Option<&mut StatCache>,
    ) -> Result<()> {
        let mut found = Found::default();
        let exclude_rel = exclude
            .strip_prefix(root)
            .ok()
            .map(|x| rel_str(Path::new(""), x));
        let owner = self.root_owner(obs, root);
        let walk = Walk::new(obs, root, exclude, allow_outside, owner);
        // Named paths: files directly, directories walked from themselves.
        for rel in explicit {
            if self.files.contains_key(rel) {
                continue;
            }
            // Inside a root walked without meeting a .gitignore, with no
            // link on the way: a directory walked already, or nothing (a
            // file would be indexed). Not looked at again: the walk
            // recorded the directories that would change if it appeared.
            let covered = !self.gitignore_met
                && inside(rel, &self.walked)
                && !left_out_by_walk(rel, exclude_rel.as_deref());
            if covered
                && !self.links.contains_key(rel)
                && !rel
                    .match_indices('/')
                    .any(|(i, _)| self.links.contains_key(&rel[..i]))
            {
                continue;
            }
            let full = root.join(rel);
            match obs.symlink_metadata(&full) {
                Ok(m) if m.file_type().is_symlink() => {
                    walk.symlink(rel, &mut found)?;
                }
                // Inside a root walked without meeting a .gitignore: every
                // file below it is indexed already.
                Ok(m) if m.is_dir() && covered => {}
                Ok(m) if m.is_dir() => walk.from(rel, &mut found)?,
                Ok(_) => {
                    found.paths.insert(rel.clone(), false);
                }
                Err(_) => {}
            }
        }
        self.add_found(obs, root, found, stat)
    }

    fn add_found(
        &mut self,
        obs: &Observer,
        root: &Path,
        found: Found,
        stat: Option<&mut StatCache>,
    ) -> Result<()> {
        self.gitignore_met |= found.gitignore_met;
        self.dirs.extend(found.dirs);
        let root_owner = self.root_owner(obs, root);
        let files = &self.files;
        let known = stat.as_deref().map(|s| &s.entries);
        // Hashed in parallel a slice at a time into one list sized once
        // (growing lists, or joining each worker's, was a tenth of the run
        // in copies and fresh pages), then moved where each result belongs:
        // the list never holds more than a slice (all of a large workspace's
        // at once was a third of the peak memory).
        let mut todo: Vec<(String, bool)> = found
            .paths
            .into_iter()
            .filter(|(rel, _)| !files.contains_key(rel))
            .collect();
        const SLICE: usize = 4096;
        let (mut reused, mut fresh, mut new) = (0, 0, 0);
        let mut slice_files: Vec<(String, FileHash)> = Vec::with_capacity(todo.len().min(SLICE));
        let mut hashed: Vec<Result<HashedFile>> = Vec::with_capacity(todo.len().min(SLICE));
        for slice in todo.chunks_mut(SLICE) {
            slice
                .par_iter_mut()
                .map_init(super::vars::Analyzer::default, |analyzer, (rel, follow)| {
                    let rel = std::mem::take(rel);
                    let full = root.join(&rel);
                    let entry = known.and_then(|k| k.get(&rel));
                    let mut done = None;
                    let analyse = |bytes: &[u8], jinja: bool| {
                        done = analyzer.analyse_bytes(&rel, jinja, bytes).map(Box::new);
                    };
                    hash_entry(obs, &full, *follow, entry, analyse).map(|(h, lookup, owner)| {
                        HashedFile {
                            rel,
                            h,
                            lookup,
                            done,
                            owner,
                        }
                    })
                })
                .collect_into_vec(&mut hashed);
            for r in hashed.drain(..) {
                let HashedFile {
                    rel,
                    h,
                    lookup,
                    done,
                    owner,
                } = r?;
                if let Some(owner) = owner.filter(|o| Some(*o) != root_owner) {
                    self.owners.insert(rel.clone(), owner);
                }
                if let Some(done) = done {
                    self.analysed.push((rel.clone(), *done));
                }
                match lookup {
                    Lookup::Reused => reused += 1,
                    Lookup::Hashed => {
                        fresh += 1;
                        new += usize::from(h.new_stat.is_some());
                    }
                }
                slice_files.push((rel, h));
            }
            // Sorted already: built in bulk, the map's nodes are full (one
            // insert at a time leaves them half empty, twice the memory).
            // A few files into a large map are inserted (appending rebuilds
            // the whole map).
            if slice_files.len() * 8 < self.files.len() {
                self.files.extend(slice_files.drain(..));
            } else {
                let mut add: BTreeMap<String, FileHash> = slice_files.drain(..).collect();
                self.files.append(&mut add);
            }
        }
        if let Some(stat) = stat {
            stat.reused += reused;
            stat.hashed += fresh;
            stat.new += new;
        }
        self.links.extend(found.links);
        Ok(())
    }

    /// Drops the stat-cache entries of files gone from the part of the
    /// workspace this scan covered (entries elsewhere are left alone: a
    /// scan of a few layers must not stat every file the cache knows).
    fn forget_vanished(
        &self,
        root: &Path,
        roots: &BTreeSet<String>,
        explicit: &BTreeSet<String>,
        stat: &mut StatCache,
    ) {
        stat.removed = stat
            .entries
            .keys()
            .filter(|k| !self.files.contains_key(*k))
            .filter(|k| inside(k, roots) || inside(k, explicit))
            .filter(|k| {
                // Cache upkeep, not an input of any digest.
                std::fs::symlink_metadata(root.join(k)) // observed: not an input
                    .is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound)
            })
            .cloned()
            .collect();
    }

    /// The stat cache's new entries: every file read in this scan, sorted
    /// by path. Kept in the index (a stat beside each hash) rather than in a
    /// list of their own, which held every path a second time: a sixth of
    /// a large run's peak memory.
    pub fn stat_updates(&self) -> impl Iterator<Item = (&str, StatEntry)> {
        self.files.iter().filter_map(|(p, h)| {
            let s = h.new_stat?;
            Some((p.as_str(), s.entry(h.hash.0, h.jinja, self.scan_started)))
        })
    }

    /// The analyses made while hashing since the last call.
    pub fn take_analysed(&mut self) -> Vec<(String, Result<super::vars::FileUse>)> {
        std::mem::take(&mut self.analysed)
    }

    /// Every symlink indexed, with where it leads.
    pub fn links(&self) -> &BTreeMap<String, LinkTarget> {
        &self.links
    }

    /// Where the link at `rel` leads, if `rel` is an indexed link.
    pub fn link(&self, rel: &str) -> Option<&LinkTarget> {
        self.links.get(rel)
    }

    /// Files at or below `rel` (a file or a directory).
    pub fn under<'a>(
        &'a self,
        rel: &'a str,
    ) -> impl Iterator<Item = (&'a String, &'a FileHash)> + 'a {
        subtree(&self.files, rel)
    }

    pub fn get(&self, rel: &str) -> Option<&FileHash> {
        self.files.get(rel)
    }

    /// The owner of the file at `rel` when it is not the workspace
    /// root's (never for a link).
    pub fn owner(&self, rel: &str) -> Option<(u32, u32)> {
        self.owners.get(rel).copied()
    }

    /// Directories at or below `rel` whose permissions are unusual (not
    /// 755 or 775) or whose owner is not the workspace root's, as walked.
    /// Their stat was recorded when they were listed, so the memo sees a
    /// `chmod` or `chown` (both change the ctime).
    pub fn dirs_under<'a>(
        &'a self,
        rel: &'a str,
    ) -> impl Iterator<Item = (&'a String, &'a DirMeta)> + 'a {
        subtree(&self.dirs, rel)
    }

    /// The owner of the workspace root, looked up once (an `Owner` look:
    /// the memo sees a `chown` of the root, not a new file in it).
    fn root_owner(&mut self, obs: &Observer, root: &Path) -> Option<(u32, u32)> {
        *self.root_owner.get_or_insert_with(|| obs.owner(root))
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

/// The `roots` the walk can have entered: reached from the workspace root
/// with no symbolic link on the way (the walk does not follow links, so a
/// link above a root, which it does not record, hides the root's files).
fn reached<'a>(
    obs: &'a Observer,
    root: &'a Path,
    roots: &'a BTreeSet<String>,
) -> impl Iterator<Item = String> + 'a {
    roots
        .iter()
        .filter(move |r| *r == "." || !obs.through_link(root, r))
        .cloned()
}

/// Is `rel` where a walk never looks whatever its roots: a `.git` (a
/// directory, or a submodule's file) or below one, or the excluded
/// directory (`exclude`, workspace-relative; `None` when it lies outside
/// the workspace)? Named outright, such a path is still read.
fn left_out_by_walk(rel: &str, exclude: Option<&str>) -> bool {
    rel.split('/').any(|c| c == ".git")
        || exclude.is_some_and(|x| {
            x.is_empty()
                || rel == x
                || (rel.starts_with(x) && rel.as_bytes().get(x.len()) == Some(&b'/'))
        })
}

/// Is `rel` inside one of `roots` (a root itself or below one)?
fn inside(rel: &str, roots: &BTreeSet<String>) -> bool {
    if roots.contains(".") || roots.contains(rel) {
        return true;
    }
    rel.match_indices('/')
        .any(|(i, _)| roots.contains(&rel[..i]))
}

/// Should the walk enter `rel`: inside a root, or above one?
fn related(rel: &str, roots: &BTreeSet<String>) -> bool {
    if rel.is_empty() || inside(rel, roots) {
        return true;
    }
    let prefix = format!("{rel}/");
    roots
        .range(prefix.clone()..)
        .next()
        .is_some_and(|r| r.starts_with(&prefix))
}

/// The entries of `map` (keyed by workspace-relative path) at or below
/// `rel` (`.`: all), found by range.
fn subtree<'a, V>(
    map: &'a BTreeMap<String, V>,
    rel: &'a str,
) -> impl Iterator<Item = (&'a String, &'a V)> + 'a {
    let all = rel == ".";
    let prefix = format!("{rel}/");
    let start = if all { String::new() } else { rel.to_string() };
    let prefix2 = prefix.clone();
    map.range(start..)
        // Keys between `rel` and `rel/` sort like `rel.txt`: skip them, stop after the subtree.
        .take_while(move |(k, _)| {
            all || k.as_str() == rel || k.as_str() < prefix.as_str() || k.starts_with(&prefix)
        })
        .filter(move |(k, _)| all || k.as_str() == rel || k.starts_with(&prefix2))
}

/// A walk below `dir` that applies no filter of its own (no hidden-file,
/// parent or ignore rules) and never follows a link: the callers add what
/// they decide by.
fn plain_walk(dir: &Path) -> ignore::WalkBuilder {
    let mut builder = ignore::WalkBuilder::new(dir); // observed: by `collect`
    builder
        .standard_filters(false)
        .hidden(false)
        .parents(false)
        .follow_links(false);
    builder
}

/// What every walk of the workspace shares: where file reads are
/// recorded, the workspace root, the directory left out (the cache's) and
/// the outside directories links may lead into.
struct Walk<'a> {
    obs: &'a Observer,
    root: &'a Path,
    exclude: &'a Path,
    allow_outside: &'a [PathBuf],
    /// The workspace root's owner (directories owned by another count it).
    root_owner: Option<(u32, u32)>,
}

impl<'a> Walk<'a> {
    fn new(
        obs: &'a Observer,
        root: &'a Path,
        exclude: &'a Path,
        allow_outside: &'a [PathBuf],
        root_owner: Option<(u32, u32)>,
    ) -> Walk<'a> {
        Walk {
            obs,
            root,
            exclude,
            allow_outside,
            root_owner,
        }
    }

    /// Walks the workspace below `roots` with `.gitignore` rules (and nothing
    /// outside the workspace: no global or per-clone excludes).
    fn roots(&self, roots: &BTreeSet<String>, out: &mut Found) -> Result<()> {
        let (obs, root) = (self.obs, self.root);
        let root_buf = root.to_path_buf();
        let exclude_buf = self.exclude.to_path_buf();
        let roots_owned = roots.clone();
        // `collect` records every directory entered, and its .gitignore.
        let mut builder = plain_walk(root);
        builder
            .sort_by_file_name(|a, b| a.cmp(b))
            .filter_entry(move |e| {
                let path = e.path();
                if path == exclude_buf || e.file_name() == ".git" {
                    return false;
                }
                let rel = rel_str(&root_buf, path);
                related(&rel, &roots_owned)
            })
            .git_ignore(true)
            // `.ignore` files are a ripgrep convention git does not know:
            // only .gitignore decides what is not an input.
            .ignore(false)
            .require_git(false)
            .git_global(false)
            .git_exclude(false);
        // A root the walk never meets (missing): its absence is recorded.
        for r in roots.iter().filter(|r| *r != ".") {
            obs.kind_nofollow(&root.join(r)).ok();
        }
        let keep = |rel: &str| inside(rel, roots);
        let owner = self.root_owner;
        for rel in collect(obs, true, builder, root, "", keep, keep, owner, out)? {
            self.symlink(&rel, out)?;
        }
        Ok(())
    }

    /// Every file below `rel` (no ignore rules: the path was named outright).
    fn from(&self, rel: &str, out: &mut Found) -> Result<()> {
        self.dir(&self.root.join(rel), "", out)
    }

    /// Every file below the directory `dir`, recorded under `prefix` (the
    /// workspace path of the allowed link `dir` was reached through) or, with
    /// an empty prefix, under its own workspace-relative path.
    fn dir(&self, dir: &Path, prefix: &str, out: &mut Found) -> Result<()> {
        let (obs, root) = (self.obs, self.root);
        let exclude_buf = self.exclude.to_path_buf();
        let mut builder = plain_walk(dir);
        builder.filter_entry(move |e| e.path() != exclude_buf && e.file_name() != ".git");
        let all = |_: &str| true;
        let owner = self.root_owner;
        let links = if prefix.is_empty() {
            collect(obs, false, builder, root, "", all, all, owner, out)?
        } else {
            collect(obs, false, builder, dir, prefix, all, all, owner, out)?
        };
        for rel in links {
            self.symlink(&rel, out)?;
        }
        Ok(())
    }

    /// Records the symlink at `rel`: hashed as a link, except that a link into
    /// an `allow_outside` directory is followed (a directory is walked, its
    /// files recorded below `rel`).
    fn symlink(&self, rel: &str, out: &mut Found) -> Result<()> {
        let (obs, root) = (self.obs, self.root);
        let target = LinkTarget::of(obs, root, &root.join(rel), self.allow_outside);
        if let LinkTarget::Allowed(real) = &target {
            if obs.is_dir(real) {
                if out.followed.insert(real.clone()) {
                    let walked = self.dir(&real.clone(), rel, out);
                    out.followed.remove(real);
                    walked?;
                }
            } else {
                out.paths.insert(rel.to_string(), true);
            }
        } else {
            out.paths.insert(rel.to_string(), false);
        }
        out.links.insert(rel.to_string(), target);
        Ok(())
    }
}

/// Runs a walk, keeping the files whose workspace-relative path `keep`
/// accepts; returns the symlinks it accepts, for [`Walk::symlink`]. Paths are
/// relative to `base` and put below `prefix` (when walking through an
/// allowed link). Every directory entered is recorded, with its
/// `.gitignore` when `gitignore` rules apply: as listed when `listed`
/// accepts it (what it holds counts), else only as a directory (one the
/// walk passes through on its way to a root: other entries there are not
/// inputs, so a new file beside the workspace's cache directory does not
/// make the record stale). A listed directory whose permissions are
/// unusual or whose owner is not `root_owner` is kept in `out.dirs`, from
/// the stat recorded for it.
#[allow(clippy::too_many_arguments)]
fn collect(
    obs: &Observer,
    gitignore: bool,
    builder: ignore::WalkBuilder,
    base: &Path,
    prefix: &str,
    keep: impl Fn(&str) -> bool,
    listed: impl Fn(&str) -> bool,
    root_owner: Option<(u32, u32)>,
    out: &mut Found,
) -> Result<Vec<String>> {
    let ws_rel = |path: &Path| {
        let r = rel_str(base, path);
        match (prefix.is_empty(), r.is_empty()) {
            (true, _) => r,
            (false, true) => prefix.to_string(),
            (false, false) => format!("{prefix}/{r}"),
        }
    };
    let mut links = vec![];
    for entry in builder.build() {
        // Links are not followed, so an error is an unreadable directory:
        // never silently skipped.
        let entry = entry.map_err(|err| Error::env(format!("walking the workspace: {err}")))?;
        let Some(ft) = entry.file_type() else {
            continue;
        };
        if ft.is_dir() {
            let ignore_file = entry.path().join(".gitignore");
            let rel = ws_rel(entry.path());
            if listed(&rel) {
                // Its listing decided what the walk met below it (the
                // times change when an entry is added, removed or renamed;
                // the ctime when its permissions or owner do).
                if let Ok(meta) = obs.symlink_metadata(entry.path()) {
                    let perm = permissions(&meta);
                    let owner = owner_of(&meta).filter(|o| Some(*o) != root_owner);
                    if !usual_dir_perm(perm) || owner.is_some() {
                        let rel = if rel.is_empty() { ".".to_string() } else { rel };
                        out.dirs.insert(rel, DirMeta { perm, owner });
                    }
                }
            } else {
                obs.kind_nofollow(entry.path()).ok();
            }
            if gitignore && obs.metadata(&ignore_file).is_ok() {
                out.gitignore_met = true;
            }
            continue;
        }
        if ft.is_file() || ft.is_symlink() {
            let rel = ws_rel(entry.path());
            if !keep(&rel) {
                continue;
            }
            if ft.is_symlink() {
                links.push(rel);
            } else {
                out.paths.insert(rel, false);
            }
        }
    }
    Ok(links)
}

fn rel_str(root: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(root).unwrap_or(path);
    // Called for every entry of the walk: the common case without a copy
    // per component (paths are `/`-separated already where `/` is the separator).
    if std::path::MAIN_SEPARATOR == '/'
        && let Some(s) = rel.to_str()
    {
        return s.trim_end_matches('/').to_string();
    }
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// One file hashed by [`FileIndex::add_found`], with its analysis.
struct HashedFile {
    rel: String,
    h: FileHash,
    lookup: Lookup,
    done: Option<Box<Result<super::vars::FileUse>>>,
    /// The owner of a regular file (from the stat recorded for it).
    owner: Option<(u32, u32)>,
}

/// How a file's hash was obtained.
enum Lookup {
    /// From a trusted stat-cache entry: the content was not read.
    Reused,
    /// By reading the content.
    Hashed,
}

/// A file's hash, how it was obtained, and its owner (from the stat
/// recorded for it; `None` for a link).
type HashResult = (FileHash, Lookup, Option<(u32, u32)>);

/// Hashes one workspace entry: a symlink as a link (blake3 of its target
/// string, mode 120000) unless `follow`; a dangling one always so. A file
/// whose stat data `entry` matches (and is trusted for) is not read.
fn hash_entry(
    obs: &Observer,
    full: &Path,
    follow: bool,
    entry: Option<&StatEntry>,
    analyse: impl FnOnce(&[u8], bool),
) -> Result<HashResult> {
    let link_hash = || -> Result<HashResult> {
        // A link's target changes only with its inode and ctime (recorded below).
        let target = std::fs::read_link(full); // observed: by its lstat
        let target = target.map_err(|e| Error::io(full, e))?;
        let h = FileHash {
            hash: ContentHash::of(target.to_string_lossy().as_bytes()),
            mode: "120000".into(),
            jinja: false,
            perm: 0,
            new_stat: None,
        };
        Ok((h, Lookup::Hashed, None))
    };
    // A file the stat cache does not know is read anyway: opened first
    // (not through a link), its stat taken from the open file. Three
    // system calls fewer than a stat before the open, and what is recorded
    // is still never newer than what is read.
    if entry.is_none()
        && !follow
        && let Some((file, meta)) = open_regular(full)
    {
        obs.saw(full, false, &Ok(meta.clone()));
        return hashed_file(full, file, &meta, analyse);
    }
    // Stat before reading: what is recorded is never newer than what was read.
    let lmeta = std::fs::symlink_metadata(full); // observed: just below
    obs.saw(full, false, &lmeta);
    let lmeta = lmeta.map_err(|e| Error::io(full, e))?;
    if lmeta.file_type().is_symlink() && !follow {
        return link_hash();
    }
    let meta = if follow {
        let m = std::fs::metadata(full); // observed: just below
        obs.saw(full, true, &m);
        m
    } else {
        Ok(lmeta)
    };
    let meta = match meta {
        Ok(m) if m.is_file() => m,
        _ => return link_hash(),
    };
    let stat = Stat::of(&meta);
    if let (Some(e), Some(now)) = (entry, &stat)
        && e.trusted_for(now)
    {
        let h = FileHash {
            hash: ContentHash(e.hash),
            mode: git_mode(&meta).into(),
            jinja: e.jinja,
            perm: permissions(&meta),
            new_stat: None,
        };
        return Ok((h, Lookup::Reused, owner_of(&meta)));
    }
    // The caller recorded the file's stat before this.
    let file = std::fs::File::open(full); // observed: by the caller
    let file = file.map_err(|e| Error::io(full, e))?;
    hashed_file(full, file, &meta, analyse)
}

/// An open file and its stat (taken from the open file).
type Opened = (OpenFile, std::fs::Metadata);

/// A file the caller opened (and whose stat it recorded).
type OpenFile = std::fs::File; // observed: by whoever opened it

/// A regular file opened without following a link, and its stat; `None`
/// for anything else (a link, a directory, a FIFO: never blocks on one).
#[cfg(unix)]
fn open_regular(full: &Path) -> Option<Opened> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new() // observed: by the caller, from the open file's stat
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(full)
        .ok()?;
    let meta = file.metadata().ok()?; // observed: by the caller (`Observer::saw`)
    meta.is_file().then_some((file, meta))
}

#[cfg(not(unix))]
fn open_regular(_full: &Path) -> Option<Opened> {
    None
}

/// The hash of a regular file opened by the caller, whose stat `meta`
/// was taken (and recorded) before it is read.
fn hashed_file(
    full: &Path,
    file: OpenFile,
    meta: &std::fs::Metadata,
    analyse: impl FnOnce(&[u8], bool),
) -> Result<HashResult> {
    let (hash, jinja) = hash_content(full, file, meta, analyse)?;
    let h = FileHash {
        hash: ContentHash(*hash.as_bytes()),
        mode: git_mode(meta).into(),
        jinja,
        perm: permissions(meta),
        new_stat: Stat::of(meta),
    };
    Ok((h, Lookup::Hashed, owner_of(meta)))
}

/// blake3 of the file's content, and whether it may be a Jinja template.
/// `analyse` is given the content of files read whole (not of large ones,
/// which are streamed).
fn hash_content(
    full: &Path,
    mut file: OpenFile,
    meta: &std::fs::Metadata,
    analyse: impl FnOnce(&[u8], bool),
) -> Result<(blake3::Hash, bool)> {
    let mut hasher = blake3::Hasher::new();
    let jinja = if meta.len() > 1 << 20 {
        // Large files are streamed; treat them as possible templates
        // (over-approximate) rather than read them twice.
        hasher
            .update_reader(&mut file)
            .map_err(|e| Error::io(full, e))?;
        true
    } else {
        // Into the thread's buffer: a fresh one per file left pages of
        // every size class half used in each thread (megabytes of a large
        // run's peak), for nothing.
        thread_local! {
            static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        BUF.with_borrow_mut(|buf| -> Result<bool> {
            buf.clear();
            buf.reserve(meta.len() as usize + 1);
            // Up to the size the stat gave and one byte more (a file that
            // grew still hashes whole): `File::read_to_end` would stat it again.
            std::io::Read::by_ref(&mut file)
                .take(meta.len() + 1)
                .read_to_end(buf)
                .map_err(|e| Error::io(full, e))?;
            if buf.len() as u64 > meta.len() {
                file.read_to_end(buf).map_err(|e| Error::io(full, e))?;
            }
            hasher.update(buf);
            let jinja = has_jinja_marker(buf);
            analyse(buf, jinja);
            // A file that grew past the streaming size: not kept for the next.
            if buf.capacity() > (2 << 20) {
                *buf = Vec::new();
            }
            Ok(jinja)
        })?
    };
    Ok((hasher.finalize(), jinja))
}

/// Does `buf` contain `{{` or `{%`?
fn has_jinja_marker(buf: &[u8]) -> bool {
    // A `#jinja2:` header may set other delimiters (`[[ x ]]`).
    if buf.starts_with(b"#jinja2:") {
        return true;
    }
    let mut rest = buf;
    while let Some(i) = rest.iter().position(|&b| b == b'{') {
        if matches!(rest.get(i + 1), Some(b'{' | b'%')) {
            return true;
        }
        rest = &rest[i + 1..];
    }
    false
}

#[cfg(unix)]
fn permissions(meta: &std::fs::Metadata) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o7777
}

#[cfg(not(unix))]
fn permissions(_meta: &std::fs::Metadata) -> u32 {
    0
}

/// A regular file's mode as git records it.
fn git_mode(meta: &std::fs::Metadata) -> &'static str {
    if is_executable(meta) {
        "100755"
    } else {
        "100644"
    }
}

#[cfg(unix)]
fn is_executable(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o111 != 0
}

#[cfg(not(unix))]
fn is_executable(_meta: &std::fs::Metadata) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_jinja_markers() {
        assert!(has_jinja_marker(b"a {{ x }}"));
        assert!(has_jinja_marker(b"{% if %}"));
        assert!(!has_jinja_marker(b"${#a[@]} { x }"));
        assert!(!has_jinja_marker(b"{"));
    }

    #[test]
    fn walk_filters_roots_exactly() {
        let roots: BTreeSet<String> = ["a/b", "c"].iter().map(|s| s.to_string()).collect();
        assert!(inside("a/b", &roots) && inside("a/b/x/y", &roots) && inside("c/z", &roots));
        assert!(!inside("a/bc", &roots) && !inside("a", &roots) && !inside("d", &roots));
        assert!(related("a", &roots) && related("", &roots) && related("a/b/q", &roots));
        assert!(!related("a/c", &roots) && !related("ab", &roots));
    }

    #[test]
    fn under_selects_exact_subtrees() {
        let mut idx = FileIndex::default();
        for p in ["a/b", "a/b/c", "a/b/d/e", "a/bc", "a/b.txt", "z"] {
            idx.files.insert(
                p.into(),
                FileHash {
                    hash: ContentHash::default(),
                    mode: "100644".into(),
                    jinja: false,
                    perm: 0o644,
                    new_stat: None,
                },
            );
        }
        let got: Vec<&str> = idx.under("a/b").map(|(k, _)| k.as_str()).collect();
        assert_eq!(got, vec!["a/b", "a/b/c", "a/b/d/e"]);
        assert_eq!(idx.under(".").count(), 6);
        assert_eq!(idx.under("a/bc").count(), 1);
    }
}

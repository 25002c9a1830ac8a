//! Content hashes of workspace files.
//!
//! One walk of the workspace (with `ignore`, so `.gitignore`d files do not
//! count) restricted to the directories some layer needs, then blake3 over
//! every file in parallel. Paths are workspace-relative with `/`; mode is
//! reduced to what git keeps (regular, executable, symlink) so a clone with
//! another umask gets the same digests; mtimes never count. With a
//! [`StatCache`], a file whose stat data match a trusted entry is not read
//! (the cost of hashing role files is opening and reading them, not blake3).
//!
//! I/O: reads the workspace; writes nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::statcache::{Stat, StatCache, StatEntry, now_ns};
use crate::error::{Error, Result};

/// A file's content and the part of its mode that counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileHash {
    pub hash: String,
    /// `100644`, `100755`, or `120000` for a dangling symlink (hash of its target path).
    pub mode: String,
    /// The content holds `{{` or `{%`: it may be rendered as a Jinja template.
    #[serde(skip)]
    pub jinja: bool,
    /// Full permission bits (for files copied by host commands, which keep them).
    #[serde(skip)]
    pub perm: u32,
}

impl FileHash {
    /// The mode as host-side copies (`cp -a`, `rsync -a`) keep it: the git
    /// view for the usual permissions (so umask 022 and 002 agree), the exact
    /// bits otherwise (600, 700, 640...).
    pub fn copied_mode(&self) -> String {
        match self.perm {
            0o644 | 0o664 | 0o755 | 0o775 | 0 => self.mode.clone(),
            p => format!("100{p:03o}"),
        }
    }
}

/// Hashes of every non-ignored file under the requested roots.
#[derive(Debug, Default)]
pub struct FileIndex {
    files: BTreeMap<String, FileHash>,
}

impl FileIndex {
    /// Walks `roots` (workspace-relative directories, `.` for all) under
    /// `root`, skipping `.git` and `exclude`, and hashes every file found.
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
        // Before any file is looked at: an entry is trusted later only for
        // files not modified since (see the racy rule in `statcache`).
        let scan_started = now_ns();
        let mut paths: BTreeSet<String> = BTreeSet::new();
        if !roots.is_empty() {
            walk(root, roots, exclude, &mut paths)?;
        }
        // Named paths: files directly, directories walked from themselves.
        let mut dirs = BTreeSet::new();
        for rel in explicit {
            let full = root.join(rel);
            match std::fs::symlink_metadata(&full) {
                Ok(m) if m.is_dir() || (m.file_type().is_symlink() && full.is_dir()) => {
                    dirs.insert(rel.clone());
                }
                Ok(_) => {
                    paths.insert(rel.clone());
                }
                Err(_) => {}
            }
        }
        for d in &dirs {
            walk_from(root, d, exclude, &mut paths)?;
        }
        let known = stat.as_deref().map(|s| &s.entries);
        let hashed: Vec<(String, FileHash, Lookup)> = paths
            .into_par_iter()
            .map(|rel| {
                let full = root.join(&rel);
                let entry = known.and_then(|k| k.get(&rel));
                hash_cached(&full, entry, scan_started).map(|(h, l)| (rel, h, l))
            })
            .collect::<Result<_>>()?;
        let mut files = BTreeMap::new();
        match stat {
            None => files.extend(hashed.into_iter().map(|(rel, h, _)| (rel, h))),
            Some(stat) => {
                for (rel, h, lookup) in hashed {
                    match lookup {
                        Lookup::Reused => stat.reused += 1,
                        Lookup::Hashed(entry) => {
                            stat.hashed += 1;
                            if let Some(e) = entry {
                                stat.updates.push((rel.clone(), e));
                            }
                        }
                    }
                    files.insert(rel, h);
                }
                // Entries of files gone from the workspace (not merely
                // outside this scan) are dropped.
                stat.removed = stat
                    .entries
                    .keys()
                    .filter(|k| !files.contains_key(*k))
                    .filter(|k| {
                        std::fs::symlink_metadata(root.join(k))
                            .is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound)
                    })
                    .cloned()
                    .collect();
            }
        }
        Ok(FileIndex { files })
    }

    /// Files at or below `rel` (a file or a directory).
    pub fn under<'a>(
        &'a self,
        rel: &'a str,
    ) -> impl Iterator<Item = (&'a String, &'a FileHash)> + 'a {
        let all = rel == ".";
        let prefix = format!("{rel}/");
        let start = if all { String::new() } else { rel.to_string() };
        let prefix2 = prefix.clone();
        self.files
            .range(start..)
            // Keys between `rel` and `rel/` sort like `rel.txt`: skip them, stop after the subtree.
            .take_while(move |(k, _)| {
                all || k.as_str() == rel || k.as_str() < prefix.as_str() || k.starts_with(&prefix)
            })
            .filter(move |(k, _)| all || k.as_str() == rel || k.starts_with(&prefix2))
    }

    pub fn get(&self, rel: &str) -> Option<&FileHash> {
        self.files.get(rel)
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
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

/// Walks the workspace below `roots` with `.gitignore` rules (and nothing
/// outside the workspace: no global or per-clone excludes).
fn walk(
    root: &Path,
    roots: &BTreeSet<String>,
    exclude: &Path,
    out: &mut BTreeSet<String>,
) -> Result<()> {
    let root_buf = root.to_path_buf();
    let exclude = exclude.to_path_buf();
    let roots_owned = roots.clone();
    let mut builder = ignore::WalkBuilder::new(root);
    builder
        .standard_filters(false)
        .hidden(false)
        .parents(false)
        .follow_links(true)
        .sort_by_file_name(|a, b| a.cmp(b))
        .filter_entry(move |e| {
            let path = e.path();
            if path == exclude || e.file_name() == ".git" {
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
    collect(builder, root, |rel| inside(rel, roots), out)
}

/// Every file below `rel` (no ignore rules: the path was named outright).
fn walk_from(root: &Path, rel: &str, exclude: &Path, out: &mut BTreeSet<String>) -> Result<()> {
    let exclude = exclude.to_path_buf();
    let mut builder = ignore::WalkBuilder::new(root.join(rel));
    builder
        .standard_filters(false)
        .hidden(false)
        .parents(false)
        .follow_links(true)
        .filter_entry(move |e| e.path() != exclude && e.file_name() != ".git");
    collect(builder, root, |_| true, out)
}

/// Runs a walk, keeping the files whose workspace-relative path `keep` accepts.
fn collect(
    builder: ignore::WalkBuilder,
    root: &Path,
    keep: impl Fn(&str) -> bool,
    out: &mut BTreeSet<String>,
) -> Result<()> {
    for entry in builder.build() {
        let entry = match entry {
            Ok(e) => e,
            Err(err) => {
                // A dangling symlink still counts (by its target path); loops
                // and unreadable directories are errors, never silently skipped.
                if let Some(path) = io_error_path(&err)
                    && path
                        .symlink_metadata()
                        .is_ok_and(|m| m.file_type().is_symlink())
                {
                    out.insert(rel_str(root, &path));
                    continue;
                }
                return Err(Error::env(format!("walking the workspace: {err}")));
            }
        };
        if entry.file_type().is_some_and(|t| t.is_file()) {
            let rel = rel_str(root, entry.path());
            if keep(&rel) {
                out.insert(rel);
            }
        }
    }
    Ok(())
}

fn io_error_path(err: &ignore::Error) -> Option<PathBuf> {
    match err {
        ignore::Error::WithPath { path, .. } => Some(path.clone()),
        ignore::Error::WithDepth { err, .. } => io_error_path(err),
        ignore::Error::WithLineNumber { err, .. } => io_error_path(err),
        _ => None,
    }
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

/// How a file's hash was obtained.
enum Lookup {
    /// From a trusted stat-cache entry: the content was not read.
    Reused,
    /// By reading the content; the entry to record, if the file can have one.
    Hashed(Option<StatEntry>),
}

/// Hashes one file (following symlinks). A dangling symlink is hashed by its
/// target path.
pub fn hash_path(full: &Path) -> Result<FileHash> {
    hash_cached(full, None, now_ns()).map(|(h, _)| h)
}

/// [`hash_path`], reusing `entry` when the file's stat data say it may.
fn hash_cached(
    full: &Path,
    entry: Option<&StatEntry>,
    scan_started: i64,
) -> Result<(FileHash, Lookup)> {
    let meta = match std::fs::metadata(full) {
        Ok(m) => m,
        Err(_) => {
            let target = std::fs::read_link(full).map_err(|e| Error::io(full, e))?;
            let h = FileHash {
                hash: blake3::hash(target.to_string_lossy().as_bytes())
                    .to_hex()
                    .to_string(),
                mode: "120000".into(),
                jinja: false,
                perm: 0,
            };
            return Ok((h, Lookup::Hashed(None)));
        }
    };
    let mode = if is_executable(&meta) {
        "100755"
    } else {
        "100644"
    };
    let stat = Stat::of(&meta);
    if let (Some(e), Some(now)) = (entry, &stat)
        && e.trusted_for(now)
    {
        let h = FileHash {
            hash: blake3::Hash::from_bytes(e.hash).to_hex().to_string(),
            mode: mode.into(),
            jinja: e.jinja,
            perm: permissions(&meta),
        };
        return Ok((h, Lookup::Reused));
    }
    let (hash, jinja) = hash_content(full, &meta)?;
    let h = FileHash {
        hash: hash.to_hex().to_string(),
        mode: mode.into(),
        jinja,
        perm: permissions(&meta),
    };
    let entry = stat
        .filter(|_| meta.is_file())
        .map(|s| s.entry(*hash.as_bytes(), jinja, scan_started));
    Ok((h, Lookup::Hashed(entry)))
}

/// blake3 of the file's content, and whether it may be a Jinja template.
fn hash_content(full: &Path, meta: &std::fs::Metadata) -> Result<(blake3::Hash, bool)> {
    let mut hasher = blake3::Hasher::new();
    let mut file = std::fs::File::open(full).map_err(|e| Error::io(full, e))?;
    let jinja = if meta.len() > 1 << 20 {
        // Large files are streamed; treat them as possible templates
        // (over-approximate) rather than read them twice.
        hasher
            .update_reader(&mut file)
            .map_err(|e| Error::io(full, e))?;
        true
    } else {
        let mut buf = Vec::with_capacity(meta.len() as usize);
        file.read_to_end(&mut buf).map_err(|e| Error::io(full, e))?;
        hasher.update(&buf);
        has_jinja_marker(&buf)
    };
    Ok((hasher.finalize(), jinja))
}

/// Does `buf` contain `{{` or `{%`?
fn has_jinja_marker(buf: &[u8]) -> bool {
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
                    hash: String::new(),
                    mode: "100644".into(),
                    jinja: false,
                    perm: 0o644,
                },
            );
        }
        let got: Vec<&str> = idx.under("a/b").map(|(k, _)| k.as_str()).collect();
        assert_eq!(got, vec!["a/b", "a/b/c", "a/b/d/e"]);
        assert_eq!(idx.under(".").count(), 6);
        assert_eq!(idx.under("a/bc").count(), 1);
    }
}

//! The workspace as it was at a git revision, for `--since` and `--until`:
//! `git archive` of the revision into a temporary directory, and of each
//! submodule at the commit the revision's gitlink records, read from the
//! submodule's own objects (recursively). The working tree, the index and
//! the submodules' checkouts are not touched.
//!
//! I/O: runs `git` and `tar` (the only processes started outside
//! `executor/cli.rs`) and writes the temporary tree it extracts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::{Error, Result};
use crate::workspace::Workspace;

pub(crate) fn tempfile_dir(ws: &Workspace) -> Result<TempDir> {
    // One directory per revision exported by this process.
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let base = std::env::temp_dir().join(format!(
        "layerbuild-rev-{}-{}-{n}",
        ws.name,
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base).map_err(|e| Error::io(&base, e))?;
    Ok(TempDir(base))
}

/// A directory removed on drop.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs git; stdout on success, stderr (trimmed) on failure.
fn run(cmd: &mut Command) -> std::result::Result<Vec<u8>, String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run git: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    Ok(out.stdout)
}

/// git in the directory `root` (found the way git finds it), stdout trimmed.
fn git(root: &Path, args: &[&str]) -> std::result::Result<String, String> {
    let out = run(Command::new("git").arg("-C").arg(root).args(args))?;
    Ok(String::from_utf8_lossy(&out).trim().to_string())
}

/// A repository read through its git directory, and where its checkout
/// is (or would be) in the working tree.
struct Repo {
    git_dir: PathBuf,
    checkout: PathBuf,
}

impl Repo {
    fn git(&self) -> Command {
        let mut c = Command::new("git");
        c.arg("--git-dir").arg(&self.git_dir);
        c
    }

    fn has_commit(&self, sha: &str) -> bool {
        run(self
            .git()
            .args(["cat-file", "-e", &format!("{sha}^{{commit}}")]))
        .is_ok()
    }

    /// `(path, commit)` of every gitlink in `tree`, paths relative to it.
    fn gitlinks(&self, tree: &str) -> Result<Vec<(String, String)>> {
        let out = run(self.git().args(["ls-tree", "-r", "-z", tree]))
            .map_err(|e| Error::env(format!("git ls-tree {tree}: {e}")))?;
        Ok(out
            .split(|&b| b == 0)
            .filter_map(|rec| {
                let rec = String::from_utf8_lossy(rec);
                let (meta, path) = rec.split_once('\t')?;
                let mut meta = meta.split(' ');
                let (mode, kind, sha) = (meta.next()?, meta.next()?, meta.next()?);
                (mode == "160000" && kind == "commit").then(|| (path.to_string(), sha.to_string()))
            })
            .collect())
    }

    /// Submodule names by path, from `.gitmodules` at `commit` (empty when
    /// it has none).
    fn submodule_names(&self, commit: &str) -> BTreeMap<String, String> {
        let blob = format!("{commit}:.gitmodules");
        let Ok(out) = run(self.git().args([
            "config",
            "-z",
            "--blob",
            &blob,
            "--get-regexp",
            r"^submodule\..*\.path$",
        ])) else {
            return BTreeMap::new();
        };
        out.split(|&b| b == 0)
            .filter_map(|rec| {
                let rec = String::from_utf8_lossy(rec);
                let (key, path) = rec.split_once('\n')?;
                let name = key.strip_prefix("submodule.")?.strip_suffix(".path")?;
                Some((path.trim_end_matches('/').to_string(), name.to_string()))
            })
            .collect()
    }

    /// The repository of the submodule at `path` (relative to this
    /// repository's top), named `name`: its checkout when initialised,
    /// else the git directory `git submodule` keeps for it.
    fn submodule(&self, path: &str, name: &str) -> Option<Repo> {
        let checkout = self.checkout.join(path);
        if checkout.join(".git").exists()
            && let Ok(dir) = git(&checkout, &["rev-parse", "--absolute-git-dir"])
        {
            return Some(Repo {
                git_dir: PathBuf::from(dir),
                checkout,
            });
        }
        // A linked worktree keeps its submodules' repositories under its
        // own git directory; the main worktree's may have the commit too.
        let common = run(self.git().args(["rev-parse", "--git-common-dir"]))
            .ok()
            .map(|o| {
                let p = PathBuf::from(String::from_utf8_lossy(&o).trim());
                if p.is_absolute() {
                    p
                } else {
                    self.git_dir.join(p)
                }
            });
        [Some(self.git_dir.clone()), common]
            .into_iter()
            .flatten()
            .map(|d| d.join("modules").join(name))
            .find(|d| {
                d.is_dir()
                    && run(Command::new("git")
                        .arg("--git-dir")
                        .arg(d)
                        .args(["rev-parse", "--git-dir"]))
                    .is_ok()
            })
            .map(|git_dir| Repo { git_dir, checkout })
    }
}

/// Extracts `tree` of `repo` into `to` (which must exist); git's stderr
/// when git fails.
fn archive(repo: &Repo, tree: &str, to: &Path) -> Result<std::result::Result<(), String>> {
    let mut archive = repo
        .git()
        .args(["archive", "--format=tar", tree])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::env(format!("cannot run git archive: {e}")))?;
    let stdout = archive.stdout.take().expect("piped stdout");
    let tar = Command::new("tar")
        .arg("-x")
        .arg("-C")
        .arg(to)
        .stdin(stdout)
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| Error::env(format!("cannot run tar: {e}")))?;
    let git_out = archive
        .wait_with_output()
        .map_err(|e| Error::env(format!("git archive: {e}")))?;
    if !git_out.status.success() {
        return Ok(Err(String::from_utf8_lossy(&git_out.stderr)
            .trim()
            .to_string()));
    }
    if !tar.status.success() {
        return Err(Error::env(format!(
            "tar: {}",
            String::from_utf8_lossy(&tar.stderr).trim()
        )));
    }
    Ok(Ok(()))
}

/// The path of `root` inside its git checkout (`""` at the top, `dir/`
/// below it), or `None` outside a repository.
pub(crate) fn checkout_prefix(root: &Path) -> Option<String> {
    git(root, &["rev-parse", "--show-prefix"]).ok()
}

/// Whether the repository at `root` is a shallow clone.
fn is_shallow(root: &Path) -> bool {
    git(root, &["rev-parse", "--is-shallow-repository"]).is_ok_and(|o| o == "true")
}

/// Why the workspace at `root` cannot be compared with `rev`, so that every
/// layer counts, or `None` when it can: no revision (an all-zero SHA: a new
/// branch, a first push), a revision this clone lacks, or one without the
/// workspace's Layerfile (the change that adds it).
pub(crate) fn uncomparable(root: &Path, rev: &str) -> Option<String> {
    if rev.trim().is_empty() {
        return Some(
            "no base revision (CI_MERGE_REQUEST_DIFF_BASE_SHA and CI_COMMIT_BEFORE_SHA are unset)"
                .into(),
        );
    }
    if rev.bytes().all(|b| b == b'0') {
        return Some(format!(
            "no base revision ({rev}: a new branch or a first push)"
        ));
    }
    let Ok(commit) = git(
        root,
        &[
            "rev-parse",
            "--verify",
            "--quiet",
            &format!("{rev}^{{commit}}"),
        ],
    ) else {
        let shallow = if is_shallow(root) {
            " (this clone is shallow: GIT_DEPTH)"
        } else {
            ""
        };
        return Some(format!("revision '{rev}' is not in this clone{shallow}"));
    };
    let prefix = git(root, &["rev-parse", "--show-prefix"]).unwrap_or_default();
    let layerfile = format!("{commit}:{prefix}{}", crate::workspace::LAYERFILE);
    if git(root, &["cat-file", "-e", &layerfile]).is_err() {
        return Some(format!(
            "there is no {} at {rev} (the change adds the workspace)",
            crate::workspace::LAYERFILE
        ));
    }
    None
}

/// Writes the workspace at `root` as it was at `rev` into `to`, with the
/// content of its submodules at the commits `rev` records for them.
pub(crate) fn export_revision(root: &Path, rev: &str, to: &Path) -> Result<()> {
    let toplevel = git(root, &["rev-parse", "--show-toplevel"]).map_err(|e| {
        Error::input(format!(
            "--since needs a git repository: {} is not in one ({e})",
            root.display()
        ))
        .with_hint(
            "run `git init` and commit, or compare against the last build by leaving out --since",
        )
    })?;
    let commit = git(
        root,
        &[
            "rev-parse",
            "--verify",
            "--quiet",
            &format!("{rev}^{{commit}}"),
        ],
    )
    .map_err(|_| {
        let hint = if is_shallow(root) {
            "this clone is shallow (GitLab's GIT_DEPTH): the revision may be older than the history it holds; fetch it (`git fetch --unshallow`) or set GIT_DEPTH: 0 for this job"
        } else {
            "give a commit, branch or tag, e.g. HEAD~1 or main"
        };
        Error::input(format!("unknown git revision '{rev}'")).with_hint(hint)
    })?;
    let git_dir = git(root, &["rev-parse", "--absolute-git-dir"])
        .map_err(|e| Error::env(format!("git rev-parse --absolute-git-dir: {e}")))?;
    let repo = Repo {
        git_dir: PathBuf::from(git_dir),
        checkout: PathBuf::from(toplevel),
    };
    let prefix = git(root, &["rev-parse", "--show-prefix"]).unwrap_or_default();
    let prefix = prefix.trim_end_matches('/');
    let tree = if prefix.is_empty() {
        commit.clone()
    } else {
        format!("{commit}:{prefix}")
    };
    if let Err(e) = archive(&repo, &tree, to)? {
        return Err(
            Error::input(format!("the workspace does not exist at {rev}: {e}"))
                .with_hint("choose a revision where Layerfile.toml exists"),
        );
    }
    if !to.join(crate::workspace::LAYERFILE).exists() {
        return Err(Error::input(format!("there is no Layerfile.toml at {rev}"))
            .with_hint("choose a revision where the workspace existed"));
    }
    let at = Revision {
        rev,
        top: &repo.checkout,
        shown: "",
    };
    export_submodules(&repo, &commit, prefix, to, &at)
}

/// Where a submodule is, for messages.
struct Revision<'a> {
    /// As the user gave it.
    rev: &'a str,
    /// The checkout of the workspace's repository.
    top: &'a Path,
    /// The workspace-relative path of the repository being read.
    shown: &'a str,
}

/// Fills in the gitlinks of `commit` below `prefix` (the directory of
/// `repo` extracted at `to`) with each submodule's content at the recorded
/// commit, and theirs in turn.
fn export_submodules(
    repo: &Repo,
    commit: &str,
    prefix: &str,
    to: &Path,
    at: &Revision,
) -> Result<()> {
    let tree = if prefix.is_empty() {
        commit.to_string()
    } else {
        format!("{commit}:{prefix}")
    };
    let links = repo.gitlinks(&tree)?;
    if links.is_empty() {
        return Ok(());
    }
    let names = repo.submodule_names(commit);
    for (path, sha) in links {
        let in_repo = if prefix.is_empty() {
            path.clone()
        } else {
            format!("{prefix}/{path}")
        };
        let shown = if at.shown.is_empty() {
            path.clone()
        } else {
            format!("{}/{path}", at.shown)
        };
        let name = names.get(&in_repo).map_or(in_repo.as_str(), String::as_str);
        let Some(sub) = repo.submodule(&in_repo, name) else {
            return Err(Error::input(format!(
                "{} records submodule '{shown}' at commit {sha}, but that submodule is not initialised here: there is no repository to read it from",
                at.rev
            ))
            .with_hint(format!(
                "run `git -C {} submodule update --init --recursive`, then try again",
                at.top.display()
            )));
        };
        if !sub.has_commit(&sha) {
            return Err(Error::input(format!(
                "{} records submodule '{shown}' at commit {sha}, which its repository here does not have",
                at.rev
            ))
            .with_hint(format!(
                "fetch it: `git -C {} fetch`, or `git -C {} submodule update --init --recursive`",
                sub.checkout.display(),
                at.top.display()
            )));
        }
        let dest = to.join(&path);
        std::fs::create_dir_all(&dest).map_err(|e| Error::io(&dest, e))?;
        if let Err(e) = archive(&sub, &sha, &dest)? {
            return Err(Error::env(format!(
                "reading submodule '{shown}' at {sha}: {e}"
            )));
        }
        let inner = Revision {
            rev: at.rev,
            top: at.top,
            shown: &shown,
        };
        export_submodules(&sub, &sha, "", &dest, &inner)?;
    }
    Ok(())
}

//! The workspace as it was at a git revision, for `--since` and `--until`:
//! `git archive` of the revision into a temporary directory. The working
//! tree and the index are not touched.

use std::path::Path;
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
pub(crate) struct TempDir(std::path::PathBuf);

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

fn git(root: &Path, args: &[&str]) -> std::result::Result<String, String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(root)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run git: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

pub(crate) fn export_revision(root: &Path, rev: &str, to: &Path) -> Result<()> {
    git(root, &["rev-parse", "--show-toplevel"]).map_err(|e| {
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
        Error::input(format!("unknown git revision '{rev}'"))
            .with_hint("give a commit, branch or tag, e.g. HEAD~1 or main")
    })?;
    let prefix = git(root, &["rev-parse", "--show-prefix"]).unwrap_or_default();
    let tree = if prefix.is_empty() {
        commit.clone()
    } else {
        format!("{commit}:{}", prefix.trim_end_matches('/'))
    };
    let mut archive = Command::new("git")
        .arg("-C")
        .arg(root)
        .args(["archive", "--format=tar", &tree])
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
        return Err(Error::input(format!(
            "the workspace does not exist at {rev}: {}",
            String::from_utf8_lossy(&git_out.stderr).trim()
        ))
        .with_hint("choose a revision where Layerfile.toml exists"));
    }
    if !tar.status.success() {
        return Err(Error::env(format!(
            "tar: {}",
            String::from_utf8_lossy(&tar.stderr).trim()
        )));
    }
    if !to.join(crate::workspace::LAYERFILE).exists() {
        return Err(Error::input(format!("there is no Layerfile.toml at {rev}"))
            .with_hint("choose a revision where the workspace existed"));
    }
    Ok(())
}

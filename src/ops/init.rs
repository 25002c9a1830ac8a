//! `layerbuild init [DIR]`: a minimal workspace that builds as it is: a
//! busybox base layer made from scratch, an Ansible layer with one role
//! (a `raw` task, which needs no Python in the image) and an inventory
//! with one system.
//!
//! I/O: creates DIR and writes the files; never writes over a Layerfile.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::workspace::LAYERFILE;

#[derive(Debug, Serialize)]
pub struct InitReport {
    pub root: PathBuf,
    /// The files written, relative to `root`.
    pub files: Vec<String>,
}

/// The files of a new workspace named `name`: (relative path, text).
pub fn files(name: &str) -> Vec<(&'static str, String)> {
    vec![
        (
            LAYERFILE,
            format!(
                r#"# A layerbuild workspace: each layer is built on its parent, and rebuilt
# only when its inputs change. Build it with: layerbuild build //...
#
#   //base/os ── //compute/node

[workspace]
name = "{name}"

[build]
isolation = "chroot"

# A system is an Ansible inventory plus variables; layers are built for one.
[systems.demo]
inventory = "inventory/demo"
vars = {{ site_name = "demo" }}

# A root file system made from scratch: busybox and its applets.
[layers."base/os"]
parent = "scratch"
setup = ["sh scripts/busybox-root.sh {{root}}"]
run = ["echo 'built by layerbuild' > /etc/motd"]

# An Ansible layer: the play runs against the image for the hosts of its groups.
[layers."compute/node"]
parent = "//base/os"
source = "ansible"
playbook = "node.yml"
groups = ["compute"]
"#
            ),
        ),
        (
            "scripts/busybox-root.sh",
            r#"#!/bin/sh
# Populates a root file system with busybox-static and its applets
# (apt-get install busybox-static).
set -eu
root="$1"
mkdir -p "$root/bin" "$root/etc" "$root/tmp"
cp "$(command -v busybox)" "$root/bin/busybox"
for applet in $("$root/bin/busybox" --list); do
  [ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
done
"#
            .into(),
        ),
        (
            "ansible/node.yml",
            "- hosts: compute\n  gather_facts: false\n  roles:\n    - site\n".into(),
        ),
        (
            "ansible/roles/site/tasks/main.yml",
            r#"# `raw` runs a shell command: the busybox image has no Python for other modules.
- name: record the site name
  raw: echo "{{ site_name }}" > /etc/site-name
  args:
    executable: /bin/sh
"#
            .into(),
        ),
        ("inventory/demo/hosts", "[compute]\n".into()),
        (".gitignore", "/cache/\n".into()),
    ]
}

/// Writes a new workspace at `root`; an existing Layerfile is an input error.
pub fn init(root: &Path) -> Result<InitReport> {
    let layerfile = root.join(LAYERFILE);
    if layerfile.exists() {
        return Err(Error::input(format!(
            "{} already exists; init does not write over a workspace",
            layerfile.display()
        ))
        .with_hint("choose another directory: layerbuild init DIR"));
    }
    std::fs::create_dir_all(root).map_err(|e| Error::io(root, e))?;
    let root = root.canonicalize().map_err(|e| Error::io(root, e))?;
    let dir_name = root
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = crate::workspace::sanitize_name(&dir_name);
    let mut written = vec![];
    for (rel, text) in files(&name) {
        let path = root.join(rel);
        if rel != LAYERFILE && path.exists() {
            // The user's own file stays; the workspace may then differ.
            continue;
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        std::fs::write(&path, text).map_err(|e| Error::io(&path, e))?;
        written.push(rel.to_string());
    }
    Ok(InitReport {
        root,
        files: written,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_new_workspace_is_valid() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("My Site");
        let r = super::init(&root).unwrap();
        assert!(r.files.contains(&"Layerfile.toml".to_string()));
        let ws = crate::workspace::Workspace::load(&r.root).unwrap();
        assert_eq!(ws.name, "my-site");
        assert_eq!(ws.layers.len(), 2);
        let again = super::init(&root).unwrap_err();
        assert_eq!(again.exit_code(), 2);
    }
}

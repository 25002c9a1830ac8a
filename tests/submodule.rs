//! A workspace whose layer sources are git submodules (per-layer config
//! repos, one with a role that is itself a submodule): digests equal a
//! plain copy's; `affected`, `why` and `ci gitlab --since` read each
//! submodule at the revision's gitlink commit; a commit missing from the
//! submodule is a clear error. No buildah needed.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Run, digests_of, git};

const LAYERFILE: &str = r#"[workspace]
name = "submodules"

[systems.test]
inventory = "inventory/test"
vars = { cluster_name = "testcluster" }

[layers."base/os"]
parent = "scratch"
run = ["echo base > /etc/layer-base"]

[layers."base/hsn"]
parent = "//base/os"
source = "hsn-config"
playbook = "hsn.yml"
groups = ["Compute"]

[layers."compute/slurmd"]
parent = "//base/hsn"
source = "slurm-config"
playbook = "slurmd.yml"
groups = ["Compute"]

[layers."service/slurmctld"]
parent = "//base/hsn"
source = "slurm-config"
playbook = "slurmctld.yml"
groups = ["Compute"]
"#;

fn task(what: &str) -> String {
    format!("- name: {what}\n  raw: echo {what} > /etc/{what}\n  args:\n    executable: /bin/sh\n")
}

fn play(roles: &[&str]) -> String {
    let mut s = String::from("- hosts: Compute\n  gather_facts: false\n  roles:\n");
    for r in roles {
        s.push_str(&format!("    - {r}\n"));
    }
    s
}

fn write(path: &Path, content: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

fn append(path: &Path, content: &str) {
    let old = std::fs::read_to_string(path).unwrap();
    std::fs::write(path, old + content).unwrap();
}

/// A repository at `dir` with `files`, committed.
fn repo(dir: &Path, files: &[(&str, String)]) {
    std::fs::create_dir_all(dir).unwrap();
    git(dir, &["init", "-q"]);
    for (rel, content) in files {
        write(&dir.join(rel), content);
    }
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-qm", "initial"]);
}

/// The upstream config repos and the site superproject using them.
struct Site {
    _dir: tempfile::TempDir,
    /// The upstream repos, by name.
    up: PathBuf,
    /// The superproject's checkout: the workspace.
    root: PathBuf,
}

impl Site {
    fn new() -> Site {
        let dir = tempfile::tempdir().unwrap();
        let up = dir.path().join("up");
        repo(&up.join("munge-role"), &[("tasks/main.yml", task("munge"))]);
        repo(
            &up.join("hsn-config"),
            &[
                ("hsn.yml", play(&["hsn"])),
                ("roles/hsn/tasks/main.yml", task("hsn")),
            ],
        );
        let slurm = up.join("slurm-config");
        repo(
            &slurm,
            &[
                ("slurmd.yml", play(&["slurm_client"])),
                ("slurmctld.yml", play(&["slurmctld", "munge"])),
                ("roles/slurm_client/tasks/main.yml", task("slurmd")),
                (
                    "roles/slurm_client/files/cgroup.conf",
                    "Constrain=yes\n".into(),
                ),
                ("roles/slurmctld/tasks/main.yml", task("slurmctld")),
                (".gitignore", "*.retry\n".into()),
                ("README.md", "slurm config\n".into()),
            ],
        );
        let munge_url = up.join("munge-role").display().to_string();
        git(
            &slurm,
            &["submodule", "add", "-q", &munge_url, "roles/munge"],
        );
        git(&slurm, &["commit", "-qm", "munge role"]);

        let root = dir.path().join("site");
        repo(
            &root,
            &[
                ("Layerfile.toml", LAYERFILE.into()),
                ("inventory/test/hosts", "[Compute]\n".into()),
                (
                    "inventory/test/group_vars/all.yml",
                    "slurm_partitions: [batch]\n".into(),
                ),
                (".gitignore", "/cache/\n".into()),
            ],
        );
        for name in ["hsn-config", "slurm-config"] {
            let url = up.join(name).display().to_string();
            git(&root, &["submodule", "add", "-q", &url, name]);
        }
        git(
            &root,
            &["submodule", "update", "-q", "--init", "--recursive"],
        );
        git(&root, &["commit", "-qm", "config submodules"]);
        // Ignored inside the submodule, as in a plain copy.
        write(
            &root.join("slurm-config/roles/slurm_client/files/site.retry"),
            "local\n",
        );
        Site {
            _dir: dir,
            up,
            root,
        }
    }

    fn lb_in(dir: &Path, args: &[&str]) -> Run {
        common::lb_in(dir, args, &[])
    }

    fn lb(&self, args: &[&str]) -> Run {
        Site::lb_in(&self.root, args)
    }

    /// Commits `change` in the submodule checkout at `sub` and the bump in
    /// the superproject (and in each repository in between).
    fn bump(&self, sub: &str, change: impl FnOnce(&Path)) {
        let path = self.root.join(sub);
        change(&path);
        git(&path, &["commit", "-qam", "change"]);
        // Up through the enclosing repositories.
        let mut inner = PathBuf::from(sub);
        while let Some(parent) = inner.parent() {
            let top = PathBuf::from(git(
                &self.root.join(parent),
                &["rev-parse", "--show-toplevel"],
            ));
            let rel = self.root.join(&inner);
            let rel = rel.strip_prefix(&top).unwrap().display().to_string();
            git(&top, &["add", &rel]);
            git(&top, &["commit", "-qm", "bump"]);
            if top == self.root {
                break;
            }
            inner = top.strip_prefix(&self.root).unwrap().to_path_buf();
        }
    }
}

/// A copy of `from` without git: no `.git` directory or file, no `.gitmodules`.
fn plain_copy(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if name == ".git" || name == ".gitmodules" {
            continue;
        }
        let target = to.join(&name);
        let ft = entry.file_type().unwrap();
        if ft.is_dir() {
            plain_copy(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

fn affected_labels(r: &serde_json::Value) -> Vec<String> {
    r["affected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["label"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn submodule_sources_have_the_digests_of_a_plain_copy() {
    let site = Site::new();
    assert!(site.root.join("slurm-config/.git").is_file());
    assert!(site.root.join("slurm-config/roles/munge/.git").is_file());
    let copy = site.root.parent().unwrap().join("copy");
    plain_copy(&site.root, &copy);
    assert!(!copy.join("slurm-config/.git").exists());

    let ours = digests_of(&site.lb(&["ls", "--json"]).ok().json());
    let plain = digests_of(&Site::lb_in(&copy, &["ls", "--json"]).ok().json());
    assert_eq!(ours.len(), 4);
    assert_eq!(ours, plain);
    let hash = |dir: &Path| {
        Site::lb_in(dir, &["hash", "--json", "//service/slurmctld"])
            .ok()
            .stdout
    };
    assert_eq!(hash(&site.root), hash(&copy));

    // The role that is a submodule is an input: its files count...
    append(
        &site.root.join("slurm-config/roles/munge/tasks/main.yml"),
        "# tuned\n",
    );
    let after = digests_of(&site.lb(&["ls", "--json"]).ok().json());
    assert_ne!(after["//service/slurmctld"], ours["//service/slurmctld"]);
    assert_eq!(after["//compute/slurmd"], ours["//compute/slurmd"]);
    // ...its .git file does not (rewritten with an absolute path: still
    // valid, other bytes), and the submodule's .gitignore applies.
    let dot_git = site.root.join("slurm-config/roles/munge/.git");
    let gitdir = git(
        &site.root.join("slurm-config/roles/munge"),
        &["rev-parse", "--absolute-git-dir"],
    );
    write(&dot_git, &format!("gitdir: {gitdir}\n"));
    git(
        &site.root.join("slurm-config/roles/munge"),
        &["status", "--porcelain"],
    );
    write(
        &site
            .root
            .join("slurm-config/roles/slurm_client/files/site.retry"),
        "changed\n",
    );
    let again = digests_of(&site.lb(&["ls", "--json"]).ok().json());
    assert_eq!(again, after);
}

#[test]
fn affected_and_why_since_read_submodules_at_the_gitlink_commit() {
    let site = Site::new();
    // A bump that changes one role: only the layer using it.
    site.bump("slurm-config", |p| {
        append(&p.join("roles/slurm_client/tasks/main.yml"), "# tuned\n")
    });
    let r = site
        .lb(&["affected", "--since", "HEAD~1", "--json"])
        .ok()
        .json();
    assert_eq!(affected_labels(&r), vec!["//compute/slurmd"]);
    let reason = r["affected"][0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("slurm-config/roles/slurm_client/tasks/main.yml modified"),
        "{reason}"
    );
    // Both sides read from git.
    let r = site
        .lb(&["affected", "--since", "HEAD~1", "--until", "HEAD", "--json"])
        .ok()
        .json();
    assert_eq!(affected_labels(&r), vec!["//compute/slurmd"]);
    let r = site
        .lb(&["affected", "--since", "HEAD", "--json"])
        .ok()
        .json();
    assert_eq!(affected_labels(&r), Vec::<String>::new());

    let out = site
        .lb(&["why", "//compute/slurmd", "--since", "HEAD~1"])
        .ok()
        .stdout;
    assert!(out.contains("changed since HEAD~1"), "{out}");
    assert!(
        out.contains("slurm-config/roles/slurm_client/tasks/main.yml modified"),
        "{out}"
    );
    let out = site
        .lb(&["why", "//service/slurmctld", "--since", "HEAD~1"])
        .ok()
        .stdout;
    assert!(out.contains("unchanged since HEAD~1"), "{out}");

    let ci = site.lb(&["ci", "gitlab", "--since", "HEAD~1"]).ok().stdout;
    assert!(ci.contains("build:compute/slurmd"), "{ci}");
    assert!(!ci.contains("build:service/slurmctld"), "{ci}");
    assert!(!ci.contains("build:base/hsn"), "{ci}");

    // A file no play reads: nothing affected.
    site.bump("slurm-config", |p| append(&p.join("README.md"), "more\n"));
    let r = site
        .lb(&["affected", "--since", "HEAD~1", "--json"])
        .ok()
        .json();
    assert_eq!(affected_labels(&r), Vec::<String>::new());

    // A role that is a submodule of a submodule.
    site.bump("slurm-config/roles/munge", |p| {
        append(&p.join("tasks/main.yml"), "# tuned\n")
    });
    let r = site
        .lb(&["affected", "--since", "HEAD~1", "--json"])
        .ok()
        .json();
    assert_eq!(affected_labels(&r), vec!["//service/slurmctld"]);
    let reason = r["affected"][0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("slurm-config/roles/munge/tasks/main.yml modified"),
        "{reason}"
    );

    // The base's config: every layer above it.
    site.bump("hsn-config", |p| {
        append(&p.join("roles/hsn/tasks/main.yml"), "# tuned\n")
    });
    let r = site
        .lb(&["affected", "--since", "HEAD~1", "--json"])
        .ok()
        .json();
    let mut labels = affected_labels(&r);
    labels.sort();
    assert_eq!(
        labels,
        vec!["//base/hsn", "//compute/slurmd", "//service/slurmctld"]
    );
    // Four commits back, across every bump.
    let r = site
        .lb(&["affected", "--since", "HEAD~4", "--json"])
        .ok()
        .json();
    assert_eq!(affected_labels(&r).len(), 3);

    // The submodules' checkouts were not touched.
    let status = git(
        &site.root,
        &["status", "--porcelain", "--ignore-submodules=none"],
    );
    assert_eq!(status, "");
}

#[test]
fn a_gitlink_commit_missing_locally_is_an_error_with_a_hint() {
    let site = Site::new();
    // Upstream moves on; the superproject records the new commit without
    // it being fetched into the local submodule.
    let up = site.up.join("slurm-config");
    append(
        &up.join("roles/slurm_client/tasks/main.yml"),
        "# upstream\n",
    );
    git(&up, &["commit", "-qam", "upstream change"]);
    let sha = git(&up, &["rev-parse", "HEAD"]);
    git(
        &site.root,
        &[
            "update-index",
            "--cacheinfo",
            &format!("160000,{sha},slurm-config"),
        ],
    );
    git(&site.root, &["commit", "-qm", "bump slurm-config"]);

    for args in [
        &["affected", "--since", "HEAD"][..],
        &["why", "//compute/slurmd", "--since", "HEAD"],
        &["ci", "gitlab", "--since", "HEAD"],
    ] {
        let r = site.lb(args);
        assert_eq!(r.code, 2, "{args:?}: {}", r.stderr);
        assert!(
            r.stderr.contains("submodule 'slurm-config'"),
            "{}",
            r.stderr
        );
        assert!(r.stderr.contains(&sha), "{}", r.stderr);
        assert!(r.stderr.contains("hint:"), "{}", r.stderr);
        assert!(r.stderr.contains("fetch"), "{}", r.stderr);
        assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    }
    // The revision before the bump is still readable.
    site.lb(&["affected", "--since", "HEAD~1", "--until", "HEAD~1"])
        .ok();
    // Following the hint.
    git(&site.root.join("slurm-config"), &["fetch", "-q"]);
    let r = site
        .lb(&["affected", "--since", "HEAD~1", "--until", "HEAD", "--json"])
        .ok()
        .json();
    assert_eq!(affected_labels(&r), vec!["//compute/slurmd"]);
}

#[test]
fn a_submodule_without_a_repository_is_an_error_with_a_hint() {
    let site = Site::new();
    // The submodule becomes a plain directory of the superproject, with the
    // same files: nothing is affected. The old revision is read from the
    // repositories git keeps for removed submodules (.git/modules).
    let saved = site.root.parent().unwrap().join("saved");
    plain_copy(&site.root.join("slurm-config"), &saved);
    git(&site.root, &["rm", "-q", "-r", "slurm-config"]);
    plain_copy(&saved, &site.root.join("slurm-config"));
    git(&site.root, &["add", "slurm-config", ".gitmodules"]);
    git(
        &site.root,
        &["commit", "-qm", "slurm-config in the superproject"],
    );
    assert!(!site.root.join("slurm-config/.git").exists());
    let r = site
        .lb(&["affected", "--since", "HEAD~1", "--json"])
        .ok()
        .json();
    assert_eq!(affected_labels(&r), Vec::<String>::new());

    // Without that repository, the old revision cannot be read.
    let sha = git(&site.root, &["rev-parse", "HEAD~1:slurm-config"]);
    std::fs::remove_dir_all(site.root.join(".git/modules/slurm-config")).unwrap();
    let r = site.lb(&["affected", "--since", "HEAD~1"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("submodule 'slurm-config'"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains(&sha), "{}", r.stderr);
    assert!(r.stderr.contains("not initialised"), "{}", r.stderr);
    assert!(
        r.stderr.contains("submodule update --init --recursive"),
        "{}",
        r.stderr
    );
}

/// A clone made without `--recurse-submodules` has empty source
/// directories: the error says so and how to check them out.
#[test]
fn a_clone_without_its_submodules_says_how_to_check_them_out() {
    let site = Site::new();
    let clone = site.root.parent().unwrap().join("clone");
    let out = Command::new("git")
        .args(["-c", "protocol.file.allow=always", "clone", "-q"])
        .arg(&site.root)
        .arg(&clone)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = Site::lb_in(&clone, &["ls"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("does not exist"), "{}", r.stderr);
    assert!(
        r.stderr.contains("git submodule update --init --recursive"),
        "{}",
        r.stderr
    );
}

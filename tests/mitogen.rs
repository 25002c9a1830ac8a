//! The `mitogen` connection (`ansible_connection = "mitogen"`): one
//! persistent Python interpreter in the mounted root serves every task of
//! a play, in the chroot connection's private namespace. The demo's
//! layers built with it are the chroot connection's, file by file; the
//! image's /dev, /proc and /sys stay empty and nothing is left mounted or
//! running; a root without Python, or a machine without Mitogen, is
//! served by community.general.chroot, saying so. Real buildah,
//! ansible-playbook and Mitogen (installed by scripts/install-deps.sh).

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use common::{Edit, TestWs, buildah, require_buildah};
use sha2::Digest as _;

fn require_mitogen() {
    assert!(
        Path::new("/usr/local/lib/layerbuild/mitogen/ansible_mitogen").is_dir(),
        "this test needs Mitogen in /usr/local/lib/layerbuild/mitogen: run scripts/install-deps.sh"
    );
}

/// What two builds of the same layer differ in whatever the connection:
/// logs and caches stamped with the time of the build.
const VOLATILE: &[&str] = &[
    "etc/machine-id",
    "var/cache/ldconfig/aux-cache",
    "var/log/",
    "var/cache/apt/",
    "var/cache/debconf/",
    "var/lib/apt/lists/",
    "var/lib/dpkg/status-old",
    "var/lib/dpkg/diversions-old",
    "var/lib/dpkg/statoverride-old",
];

/// Every entry of an image's tree: path -> type, mode, owner, size,
/// sha256 of its contents or link target (the volatile ones left out).
fn tree(image: &str) -> BTreeMap<String, String> {
    let ctr = buildah(&["from", "--pull-never", image]);
    let root = std::path::PathBuf::from(buildah(&["mount", &ctr]));
    let mut out = BTreeMap::new();
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let rel = p
                .strip_prefix(&root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if VOLATILE
                .iter()
                .any(|v| rel == *v || (v.ends_with('/') && rel.starts_with(v)))
            {
                continue;
            }
            let m = std::fs::symlink_metadata(&p).unwrap();
            let what = if m.file_type().is_symlink() {
                format!("link {}", std::fs::read_link(&p).unwrap().display())
            } else if m.is_dir() {
                stack.push(p.clone());
                "dir".to_string()
            } else if m.is_file() {
                let bytes = std::fs::read(&p).unwrap();
                format!("file {} {:x}", m.len(), sha2::Sha256::digest(&bytes))
            } else {
                format!("special {}", m.rdev())
            };
            out.insert(
                rel,
                format!("{what} mode {:o} owner {}:{}", m.mode(), m.uid(), m.gid()),
            );
        }
    }
    buildah(&["umount", &ctr]);
    buildah(&["rm", &ctr]);
    out
}

/// The differences between two trees, one line each.
fn differences(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> Vec<String> {
    let mut d = vec![];
    for (k, v) in a {
        match b.get(k) {
            None => d.push(format!("only with chroot: {k} ({v})")),
            Some(w) if w != v => d.push(format!("{k}: chroot {v}, mitogen {w}")),
            _ => {}
        }
    }
    for (k, v) in b {
        if !a.contains_key(k) {
            d.push(format!("only with mitogen: {k} ({v})"));
        }
    }
    d
}

fn images(report: &serde_json::Value) -> BTreeMap<String, String> {
    report["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["label"].as_str().unwrap().to_string(),
                l["image_name"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn special_dirs_empty(image: &str) {
    let ctr = buildah(&["from", "--pull-never", image]);
    let root = buildah(&["mount", &ctr]);
    // /dev holds the base's device nodes (the trees compare it).
    for d in ["proc", "sys"] {
        let n = std::fs::read_dir(Path::new(&root).join(d))
            .map(|r| r.count())
            .unwrap_or(0);
        assert_eq!(n, 0, "{image}: /{d} is not empty");
    }
    buildah(&["umount", &ctr]);
    buildah(&["rm", &ctr]);
}

/// Processes whose command line names `needle`.
fn processes_naming(needle: &str) -> Vec<String> {
    let mut found = vec![];
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(c) = std::fs::read(e.path().join("cmdline")) {
            let c = String::from_utf8_lossy(&c).replace('\0', " ");
            // Not this test, nor cargo running it.
            if c.contains(needle) && !c.contains("target/debug") && !c.contains("cargo") {
                found.push(c);
            }
        }
    }
    found
}

#[test]
fn the_demo_built_over_mitogen_is_the_chroot_connections_file_by_file() {
    require_buildah();
    require_mitogen();
    let ws = TestWs::demo();
    let labels = ["//compute/slurm"];
    let args = |json: bool| {
        let mut a = vec!["build"];
        if json {
            a.push("--json");
        }
        a.extend(labels);
        a
    };
    ws.write(
        "Layerfile.toml",
        &ws.read("Layerfile.toml").edit(
            "isolation = \"chroot\"\n",
            "isolation = \"chroot\"\nansible_connection = \"chroot\"\n",
        ),
    );
    let chroot = ws.lb(&args(true)).ok().json();
    let chroot = images(&chroot);

    // The default.
    ws.write(
        "Layerfile.toml",
        &ws.read("Layerfile.toml")
            .edit("ansible_connection = \"chroot\"\n", ""),
    );
    let r = ws.lb(&args(true)).ok().json();
    // The connection is an input of the layers with a play only.
    let statuses: BTreeMap<&str, &str> = r["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["label"].as_str().unwrap(), l["status"].as_str().unwrap()))
        .collect();
    assert_eq!(statuses["//base/os"], "up_to_date", "{r}");
    assert_eq!(statuses["//compute/slurm"], "built", "{r}");
    let mitogen = images(&r);
    for layer in r["layers"].as_array().unwrap() {
        let label = layer["label"].as_str().unwrap();
        if label == "//base/os" {
            continue;
        }
        // Mitogen served the play: no fallback said.
        let log = std::fs::read_to_string(ws.path(layer["log"].as_str().unwrap())).unwrap();
        assert!(log.contains("ANSIBLE_STRATEGY=linear"), "{label}: {log}");
        assert!(!log.contains("community.general.chroot"), "{label}: {log}");
        let d = differences(&tree(&chroot[label]), &tree(&mitogen[label]));
        assert!(d.is_empty(), "{label} differs:\n{}", d.join("\n"));
        special_dirs_empty(&mitogen[label]);
    }
    // Nothing left mounted or running.
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts
            .lines()
            .any(|l| l.contains("/merged/proc") || l.contains("/merged/dev")),
        "{mounts}"
    );
    assert!(
        processes_naming("mitogen").is_empty(),
        "{:?}",
        processes_naming("mitogen")
    );

    // Without Mitogen, the chroot connection serves, saying why.
    let mut ws = ws;
    ws.env
        .push(("LAYERBUILD_MITOGEN".into(), "/nonexistent/mitogen".into()));
    rebuild_slurm_over_chroot(
        &ws,
        "Mitogen is not installed where layerbuild looks (/nonexistent/mitogen)",
    );

    // With an ansible-core that Mitogen is not run with (Ansible reads its
    // version as 2.19.0 here), the same.
    ws.env.retain(|(k, _)| k != "LAYERBUILD_MITOGEN");
    let fake_dir = tempfile::tempdir().unwrap();
    let fake = fake_dir.path();
    std::fs::write(
        fake.join("sitecustomize.py"),
        "try:\n    import ansible.release\n    ansible.release.__version__ = '2.19.0'\nexcept ImportError:\n    pass\n",
    )
    .unwrap();
    ws.env
        .push(("PYTHONPATH".into(), fake.to_string_lossy().into_owned()));
    rebuild_slurm_over_chroot(
        &ws,
        "ansible-core 2.19.0 is not one layerbuild runs Mitogen with (2.10 to 2.18)",
    );
}

/// Edits the slurm role's template and rebuilds `//compute/slurm`: built,
/// its log saying `why` Mitogen could not serve and that the play ran over
/// the chroot connection.
fn rebuild_slurm_over_chroot(ws: &TestWs, why: &str) {
    let template = "demo/slurm-config/roles/slurm/templates/slurm.conf.j2";
    ws.write(template, &format!("{}\n# edited\n", ws.read(template)));
    let r = ws.lb(&["build", "--json", "//compute/slurm"]).ok().json();
    let slurm = common::layer(&r, "//compute/slurm");
    assert_eq!(slurm["status"], "built", "{r}");
    let log = std::fs::read_to_string(ws.path(slurm["log"].as_str().unwrap())).unwrap();
    // Ansible folds its warnings at 80 columns.
    let log = log.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        log.contains(why) && log.contains("the play runs over community.general.chroot"),
        "{log}"
    );
}

#[test]
fn a_root_without_python_is_served_by_the_chroot_connection() {
    require_buildah();
    // The default connection.
    let ws = TestWs::new("chain");
    let r = ws.lb(&["build", "--json", "//compute/compute"]).ok().json();
    let layer = &r["layers"][2];
    assert_eq!(layer["status"], "built", "{r}");
    let log = std::fs::read_to_string(ws.path(layer["log"].as_str().unwrap())).unwrap();
    assert!(
        log.contains("the image has no Python")
            && log.contains("the play runs over community.general.chroot"),
        "{log}"
    );
}

/// Every module task runs in the one interpreter: a module that sets the
/// process's umask (git's `umask:`, cron's 022) must not set it for the
/// tasks after it, or what they create gets other modes than over the
/// chroot connection (a process per task), here 0700 and 0600.
#[test]
fn a_modules_umask_does_not_reach_the_next_tasks() {
    require_buildah();
    require_mitogen();
    let ws = TestWs::new("debian");
    ws.append(
        "compute-config/compute.yml",
        "- hosts: Compute\n  gather_facts: false\n  tasks:\n\
         \x20   - ansible.builtin.git: {repo: /nonexistent, dest: /tmp/none, executable: /bin/true, umask: \"0077\"}\n\
         \x20     ignore_errors: true\n\
         \x20   - ansible.builtin.command: mkdir /opt/made\n\
         \x20   - ansible.builtin.copy: {content: \"x\\n\", dest: /opt/made/f}\n",
    );
    let r = ws.lb(&["build", "--json", "//compute/compute"]).ok().json();
    let layer = common::layer(&r, "//compute/compute");
    let log = std::fs::read_to_string(ws.path(layer["log"].as_str().unwrap())).unwrap();
    assert!(!log.contains("community.general.chroot"), "{log}");
    let image = layer["image_id"].as_str().unwrap();
    assert_eq!(
        TestWs::run_in_image(image, "stat -c '%a %n' /opt/made /opt/made/f"),
        "755 /opt/made\n644 /opt/made/f\n"
    );
}

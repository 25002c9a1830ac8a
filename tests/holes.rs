//! Regression tests for false cache hits found in review: each case applies a
//! change that Ansible or buildah would see (`NAME.b`) on top of a set-up
//! workspace (`NAME.a`, both bash scripts run in a copy of the chain
//! fixture), and the affected layer's digest must change.

mod common;

use common::TestWs;

fn digest(ws: &TestWs, label: &str) -> String {
    let out = ws.lb(&["hash", label]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    out.stdout.lines().next().unwrap().to_string()
}

fn run_script(ws: &TestWs, path: &std::path::Path) {
    let out = std::process::Command::new("bash")
        .arg("-e")
        .arg(path)
        .current_dir(&ws.root)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn every_reviewed_change_changes_the_digest() {
    let dir = common::fixture_dir("holes");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_suffix(".a")
                .map(str::to_string)
        })
        .collect();
    names.sort();
    assert!(names.len() > 40, "{names:?}");
    let mut holes = vec![];
    for name in &names {
        let label = match name.as_str() {
            "p15" | "p15b" | "p40" | "p42" => "//base/os",
            _ => "//compute/slurm",
        };
        let ws = TestWs::new("chain");
        run_script(&ws, &dir.join(format!("{name}.a")));
        let a = digest(&ws, label);
        run_script(&ws, &dir.join(format!("{name}.b")));
        let b = digest(&ws, label);
        if a == b {
            holes.push(name.clone());
        }
    }
    assert!(
        holes.is_empty(),
        "changes that did not change the digest: {holes:?}"
    );
}

/// Open holes of the play analysis (which files of the source a play reads),
/// found in review: `tests/fixtures/holes/open/NAME.a` sets the chain
/// workspace up, `NAME.b` makes a change ansible-playbook acts on, and the
/// digest of `//compute/slurm` must change. Each test is ignored until the
/// hole is fixed; then move the pair up to `holes/` (the sweep above) and
/// drop the test.
fn open_hole_closed(name: &str) {
    let dir = common::fixture_dir("holes").join("open");
    let ws = TestWs::new("chain");
    run_script(&ws, &dir.join(format!("{name}.a")));
    let a = digest(&ws, "//compute/slurm");
    run_script(&ws, &dir.join(format!("{name}.b")));
    let b = digest(&ws, "//compute/slurm");
    assert_ne!(a, b, "{name}: the change did not change the digest");
}

/// As [`open_hole_closed`], but rejecting the workspace (a read from
/// outside it, with file and hint) closes the hole too.
fn open_hole_closed_or_rejected(name: &str) {
    let dir = common::fixture_dir("holes").join("open");
    let ws = TestWs::new("chain");
    run_script(&ws, &dir.join(format!("{name}.a")));
    let a = ws.lb(&["hash", "//compute/slurm"]);
    if a.code != 0 {
        return;
    }
    run_script(&ws, &dir.join(format!("{name}.b")));
    let b = ws.lb(&["hash", "//compute/slurm"]);
    if b.code != 0 {
        return;
    }
    assert_ne!(
        a.stdout.lines().next(),
        b.stdout.lines().next(),
        "{name}: the change did not change the digest, and nothing was rejected"
    );
}

#[test]
#[ignore = "hole: ansible.cfg `library: PATH` (colon delimiter) is not read"]
fn hole_ansible_cfg_colon() {
    open_hole_closed("ansible_cfg_colon");
}

#[test]
#[ignore = "hole: ansible.cfg `library = PATH ; comment` is not read"]
fn hole_ansible_cfg_inline_comment() {
    open_hole_closed("ansible_cfg_inline_comment");
}

#[test]
#[ignore = "hole: ansible.cfg `LIBRARY = PATH` (upper case) is not read"]
fn hole_ansible_cfg_uppercase_key() {
    open_hole_closed("ansible_cfg_uppercase_key");
}

#[test]
#[ignore = "hole: an absolute ansible.cfg path outside the workspace is neither counted nor rejected"]
fn hole_ansible_cfg_absolute_outside() {
    open_hole_closed_or_rejected("ansible_cfg_absolute_outside");
}

#[test]
#[ignore = "hole: a .gitignored vars/main.yml of a used role does not count"]
fn hole_gitignored_role_vars() {
    open_hole_closed("gitignored_role_vars");
}

#[test]
#[ignore = "hole: a .gitignored defaults/main.yml of a used role does not count"]
fn hole_gitignored_role_defaults() {
    open_hole_closed("gitignored_role_defaults");
}

#[test]
#[ignore = "hole: an unresolved read's whole-source fallback misses paths outside the source"]
fn hole_unresolved_read_outside_source() {
    open_hole_closed("unresolved_read_outside_source");
}

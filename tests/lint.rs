//! `lint`: every problem at once, with file:line, without building (real
//! ansible-playbook; buildah is never run).

mod common;

use common::{Edit, Run, TestWs};

const NOTE: &str =
    "note: ansible-lint not found; install it (pip install ansible-lint) for style checks";

/// Finding lines of a text report (everything but the totals).
fn findings(run: &Run) -> Vec<&str> {
    run.stdout
        .lines()
        .filter(|l| l.contains(": error: ") || l.contains(": warning: "))
        .collect()
}

#[track_caller]
fn assert_no_buildah(log: &std::path::Path) {
    let calls = std::fs::read_to_string(log).unwrap_or_default();
    assert!(calls.trim().is_empty(), "buildah was run:\n{calls}");
}

/// Without ansible-lint whatever the machine has, so the note is predictable.
fn without_ansible_lint(ws: &mut TestWs) {
    ws.env.push((
        "LAYERBUILD_ANSIBLE_LINT".into(),
        "/nonexistent/ansible-lint".into(),
    ));
}

#[test]
fn playbook_errors_come_with_their_file_and_line() {
    let mut ws = TestWs::new("chain");
    without_ansible_lint(&mut ws);
    let buildah_log = ws.log_buildah();
    ws.write(
        "slurm-config/slurm.yml",
        "- hosts: Compute\n  gather_facts: false\n  roles: [slurm\n",
    );
    ws.write(
        "compute-config/compute.yml",
        "- hosts: Compute\n  gather_facts: false\n  roles:\n    - common\n    - munge\n",
    );
    let run = ws.lb(&["lint"]);
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    let found = findings(&run);
    assert_eq!(found.len(), 2, "{}", run.stdout);
    assert!(
        found[0]
            .starts_with("compute-config/compute.yml:5:7: error: the role 'munge' was not found")
            && found[0].ends_with("(//compute/compute)"),
        "{}",
        run.stdout
    );
    assert!(
        found[1].starts_with("slurm-config/slurm.yml:")
            && found[1].contains(": error: YAML syntax error")
            && found[1].ends_with("(//compute/slurm)"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.ends_with("2 errors, 0 warnings\n"),
        "{}",
        run.stdout
    );
    assert_no_buildah(&buildah_log);
    assert!(!ws.db().exists(), "lint wrote the cache database");
    assert!(
        !ws.path("cache").exists(),
        "lint left its work files behind"
    );

    // Only the selected layers' playbooks are checked.
    let run = ws.lb(&["lint", "//compute/compute"]);
    assert_eq!(run.code, 1);
    assert_eq!(findings(&run).len(), 1, "{}", run.stdout);
    assert!(run.stdout.contains("compute-config/compute.yml:5:7"));
}

#[test]
fn every_layerfile_error_at_once() {
    let mut ws = TestWs::new("chain");
    without_ansible_lint(&mut ws);
    let buildah_log = ws.log_buildah();
    let lf = ws
        .read("Layerfile.toml")
        .edit(
            "[layers.\"base/hsn\"]\nparent = \"//base/os\"",
            "[layers.\"base/hsn\"]\nparent = \"//base/oss\"",
        )
        .edit("scripts/uan.sh", "scripts/gone.sh")
        .edit("playbook = \"slurm.yml\"", "playbook = \"slurmm.yml\"");
    ws.write("Layerfile.toml", &lf);
    let line_of = |needle: &str| {
        lf.lines()
            .position(|l| l.contains(needle))
            .map(|i| i + 1)
            .unwrap()
    };

    let run = ws.lb(&["lint"]);
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    let found = findings(&run);
    assert_eq!(found.len(), 3, "{}", run.stdout);
    let expect = [
        (line_of("//base/oss"), "unknown parent //base/oss"),
        (line_of("slurmm.yml"), "playbook 'slurm-config/slurmm.yml'"),
        (line_of("scripts/gone.sh"), "script 'scripts/gone.sh'"),
    ];
    for ((line, message), got) in expect.iter().zip(&found) {
        assert!(
            got.starts_with(&format!("Layerfile.toml:{line}:")) && got.contains(message),
            "expected {message} at line {line}:\n{}",
            run.stdout
        );
    }
    assert!(run.stdout.ends_with("3 errors, 0 warnings\n"));
    assert_no_buildah(&buildah_log);

    // build still stops at the first, as bad input.
    let run = ws.lb(&["build", "//..."]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("unknown parent //base/oss"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("slurmm.yml"), "{}", run.stderr);
    assert!(!run.stderr.contains("gone.sh"), "{}", run.stderr);
}

#[test]
fn unknown_keys_in_several_layers() {
    let mut ws = TestWs::new("chain");
    without_ansible_lint(&mut ws);
    let lf = ws
        .read("Layerfile.toml")
        .edit("playbook = \"slurm.yml\"", "playbok = \"slurm.yml\"")
        .edit("scripts = [", "script = [");
    ws.write("Layerfile.toml", &lf);
    let run = ws.lb(&["lint"]);
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("unknown field `playbok`"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("unknown field `script`"),
        "{}",
        run.stdout
    );
    // The other layers' playbooks are still checked, and found clean.
    assert!(
        run.stdout.ends_with("2 errors, 0 warnings\n"),
        "{}",
        run.stdout
    );
}

#[test]
fn a_clean_workspace() {
    let mut ws = TestWs::new("chain");
    without_ansible_lint(&mut ws);
    let buildah_log = ws.log_buildah();
    let run = ws.lb(&["lint"]).ok();
    assert_eq!(run.stdout, "0 errors, 0 warnings\n");
    assert!(run.stderr.contains(NOTE), "{}", run.stderr);
    assert_no_buildah(&buildah_log);
    // Only the pure caches, kept warm as by every read-only command: no
    // build cache, nothing left of the syntax checks.
    let left: Vec<String> = std::fs::read_dir(ws.path("cache"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with("fingerprint.db"))
        .collect();
    assert!(left.is_empty(), "lint left {left:?}");
}

#[test]
fn bad_labels_are_bad_input() {
    let ws = TestWs::new("chain");
    let run = ws.lb(&["lint", "compute/slurm"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    let run = ws.lb(&["lint", "//nope/..."]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("matches no layer"), "{}", run.stderr);
}

#[test]
fn ansible_lint_findings_are_warnings() {
    let mut ws = TestWs::new("chain");
    // A stand-in for ansible-lint printing its parseable format.
    let fake = ws.path("../ansible-lint");
    std::fs::write(
        &fake,
        "#!/bin/sh\n[ \"$1\" = --version ] && exit 0\n\
         for a; do last=$a; done\n\
         echo \"$last:2:3: yaml[truthy]: Truthy value should be one of [false, true]\"\n\
         exit 2\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    ws.env
        .push(("LAYERBUILD_ANSIBLE_LINT".into(), fake.display().to_string()));
    let run = ws.lb(&["lint"]).ok();
    assert!(
        !run.stderr.contains("ansible-lint not found"),
        "{}",
        run.stderr
    );
    assert_eq!(
        findings(&run),
        vec![
            "compute-config/compute.yml:2:3: warning: yaml[truthy]: Truthy value should be one of [false, true] (//compute/compute)",
            "slurm-config/slurm.yml:2:3: warning: yaml[truthy]: Truthy value should be one of [false, true] (//compute/slurm)",
        ],
        "{}",
        run.stdout
    );
    assert!(run.stdout.ends_with("0 errors, 2 warnings\n"));
}

#[test]
fn json_report() {
    let mut ws = TestWs::new("chain");
    without_ansible_lint(&mut ws);
    ws.write(
        "compute-config/compute.yml",
        "- hosts: Compute\n  gather_facts: false\n  roles:\n    - common\n    - munge\n",
    );
    let lf = ws
        .read("Layerfile.toml")
        .edit("scripts/uan.sh", "scripts/gone.sh");
    ws.write("Layerfile.toml", &lf);
    let run = ws.lb(&["lint", "--json"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let r = run.json();
    assert_eq!(r["version"], 1);
    assert_eq!(
        r["notes"],
        serde_json::json!([NOTE.trim_start_matches("note: ")])
    );
    let f = r["findings"].as_array().unwrap();
    assert_eq!(f.len(), 2, "{r:#}");
    let keys: Vec<&str> = f[0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut want = vec![
        "file", "line", "column", "severity", "source", "label", "message", "hint",
    ];
    want.sort();
    let mut keys = keys;
    keys.sort();
    assert_eq!(keys, want);

    assert_eq!(f[0]["file"], "Layerfile.toml");
    assert_eq!(f[0]["source"], "layerfile");
    assert_eq!(f[0]["severity"], "error");
    assert_eq!(f[0]["label"], serde_json::Value::Null);
    assert!(f[0]["line"].as_u64().is_some());
    assert!(f[0]["hint"].as_str().is_some());

    assert_eq!(f[1]["file"], "compute-config/compute.yml");
    assert_eq!(f[1]["line"], 5);
    assert_eq!(f[1]["column"], 7);
    assert_eq!(f[1]["source"], "syntax-check");
    assert_eq!(f[1]["label"], "//compute/compute");
}

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

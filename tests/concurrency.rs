//! Many `layerbuild build` processes at once on one workspace, with real
//! buildah on the busybox `chain` fixture: every digest is built once (a
//! per-digest lock; the others wait and reuse it) and SQLite's locking
//! never surfaces to the user.

mod common;

use std::collections::BTreeMap;

use common::{Run, TestWs, require_buildah};

#[test]
fn eight_builds_at_once_with_overlapping_labels_build_each_digest_once() {
    require_buildah();
    let mut ws = TestWs::new("chain");
    let calls = ws.log_buildah();
    // A fresh workspace: the eight also race to create and migrate the database.
    let labels = [
        "//...",
        "//compute/slurm",
        "//uan/uan",
        "//...",
        "//compute/compute",
        "//base/hsn",
        "//compute/slurm",
        "//uan/uan",
    ];
    let runs: Vec<Run> = std::thread::scope(|s| {
        let handles: Vec<_> = labels
            .iter()
            .map(|l| {
                let ws = &ws;
                s.spawn(move || ws.lb(&["build", "--json", l]))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });

    let mut built: BTreeMap<String, usize> = BTreeMap::new();
    let mut waited = 0;
    for (run, label) in runs.iter().zip(labels) {
        assert_eq!(
            run.code, 0,
            "build {label} failed\nstdout:\n{}\nstderr:\n{}",
            run.stdout, run.stderr
        );
        for bad in ["database is locked", "panicked", "already exists", "in use"] {
            assert!(
                !run.stderr.contains(bad),
                "{label}: '{bad}' in stderr:\n{}",
                run.stderr
            );
        }
        waited += run
            .stderr
            .matches("waiting for another layerbuild building //")
            .count();
        let report = run.json();
        assert_eq!(report["failed"], 0, "{report}");
        for l in TestWs::labels_with(&report, "built") {
            *built.entry(l).or_default() += 1;
        }
    }
    let all: BTreeMap<String, usize> = ws.digests().into_keys().map(|l| (l, 1)).collect();
    assert_eq!(built, all, "each of the 5 layers built exactly once");

    let log = std::fs::read_to_string(&calls).unwrap();
    let commits = log.lines().filter(|l| l.starts_with("commit ")).count();
    let froms = log.lines().filter(|l| l.starts_with("from ")).count();
    assert_eq!(commits, 5, "one commit per digest:\n{log}");
    assert_eq!(froms, 5, "one working container per digest:\n{log}");
    assert!(
        waited > 0,
        "some build must have waited for another's lock (8 builds of a chain)"
    );

    // One row per digest, a sound file, no lock files left behind, and the
    // next build is a no-op.
    assert_eq!(ws.cached_digests().len(), 5);
    let conn = rusqlite::Connection::open(ws.db()).unwrap();
    let ok: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
    let built_rows: i64 = conn
        .query_row(
            "SELECT count(*) FROM builds WHERE status = 'built'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(built_rows, 5);
    let locks: Vec<_> = std::fs::read_dir(ws.path("cache/locks")).unwrap().collect();
    assert!(locks.is_empty(), "{locks:?}");
    let again = ws.lb(&["build", "--json", "//..."]).ok().json();
    assert_eq!(again["built"], 0, "{again}");
    assert_eq!(again["cached"], 5, "{again}");
}

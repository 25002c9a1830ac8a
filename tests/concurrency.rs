//! Many `layerbuild build` processes at once on one workspace, with real
//! buildah on the busybox `chain` fixture: every digest is built once (a
//! per-digest lock; the others wait and reuse it) and SQLite's locking
//! never surfaces to the user.
//!
//! Also two checkouts of one workspace (copies at different paths, the
//! same workspace name) sharing one container storage, as one CI runner
//! serving two pipelines does: builds of overlapping labels at once never
//! break each other (a working container is never taken for a stale one),
//! each digest is committed once across the checkouts (the others adopt
//! it), and `gc` in one checkout leaves the images the other's cache names.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use common::{Run, TestWs, buildah_on, require_buildah};

/// `buildah` on the storage at `root`, which must succeed; its stdout.
fn buildah_ok(root: &Path, args: &[&str]) -> String {
    buildah_on(root, args).ok().stdout
}

#[test]
fn eight_builds_at_once_with_overlapping_labels_build_each_digest_once() {
    require_buildah();
    let mut ws = TestWs::new("chain");
    // A storage of its own: other tests building the same base layers on
    // the default one would be waited for or adopted from.
    let storage = tempfile::tempdir().unwrap();
    let _emptied = DropStorage(storage.path());
    ws.env.push((
        "LAYERBUILD_STORAGE_ROOT".into(),
        storage.path().display().to_string(),
    ));
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
    // The locks are the container storage's, not the checkout's.
    assert!(!ws.path("cache/locks").exists());
    let locks = storage.path().join("layerbuild/locks");
    assert!(locks.is_dir(), "{}", locks.display());
    for digest in ws.digests().values() {
        let lock = locks.join(format!("{digest}.lock"));
        assert!(!lock.exists(), "{} left behind", lock.display());
    }
    let again = ws.lb(&["build", "--json", "//..."]).ok().json();
    assert_eq!(again["built"], 0, "{again}");
    assert_eq!(again["cached"], 5, "{again}");
}

/// Removes what the test left in its storage.
struct DropStorage<'a>(&'a Path);

impl Drop for DropStorage<'_> {
    fn drop(&mut self) {
        for args in [&["rm", "--all"][..], &["rmi", "--all", "--force"][..]] {
            let _ = Command::new("buildah")
                .arg("--root")
                .arg(self.0)
                .arg("--runroot")
                .arg(self.0.join("run"))
                .args(args)
                .output();
        }
    }
}

/// The compute role, different each round (so compute/compute and
/// compute/slurm get new digests).
fn compute_role(round: usize) -> String {
    format!(
        "- name: record the cluster name\n  raw: echo \"{{{{ cluster_name }}}} round {round}\" > /etc/cluster-name\n  args:\n    executable: /bin/sh\n"
    )
}

fn check(run: &Run, who: &str, round: usize) -> serde_json::Value {
    assert_eq!(
        run.code, 0,
        "round {round}: {who} failed\nstdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
    for bad in ["not known", "executable file not found", "panicked"] {
        assert!(
            !run.stderr.contains(bad),
            "round {round}: {who}: '{bad}' in stderr:\n{}",
            run.stderr
        );
    }
    let report = run.json();
    assert_eq!(report["failed"], 0, "round {round}: {who}: {report}");
    report
}

/// Two checkouts (copies at two paths) of one workspace, same name, whose
/// Layerfile puts the storage at `storage`; and that Layerfile.
fn two_checkouts(storage: &Path) -> (TestWs, TestWs, String) {
    let a = TestWs::new("chain");
    let mut b = TestWs::new("chain");
    let layerfile = a.read("Layerfile.toml").replacen(
        "[build]\n",
        &format!("[build]\nstorage_root = \"{}\"\n", storage.display()),
        1,
    );
    assert!(layerfile.contains("storage_root"));
    a.write("Layerfile.toml", &layerfile);
    b.write("Layerfile.toml", &layerfile);
    b.name = a.name.clone();
    (a, b, layerfile)
}

#[test]
fn two_checkouts_sharing_a_storage_build_each_digest_once_and_gc_spares_the_others_images() {
    require_buildah();
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().join("storage");
    let _cleanup = DropStorage(&storage);
    let (mut a, mut b, _) = two_checkouts(&storage);
    let calls = [a.log_buildah(), b.log_buildah()];

    let t0 = Instant::now();
    let mut digests = BTreeSet::new();
    let mut built = 0;
    for round in 0..8 {
        if round > 0 {
            for ws in [&a, &b] {
                ws.write(
                    "compute-config/roles/common/tasks/main.yml",
                    &compute_role(round),
                );
            }
        }
        let (ra, rb) = std::thread::scope(|s| {
            let ha = s.spawn(|| a.lb(&["build", "--json", "//compute/slurm"]));
            let hb = s.spawn(|| b.lb(&["build", "--json", "//..."]));
            (ha.join().unwrap(), hb.join().unwrap())
        });
        let ja = check(&ra, "a: build //compute/slurm", round);
        let jb = check(&rb, "b: build //...", round);
        built += ja["built"].as_u64().unwrap() + jb["built"].as_u64().unwrap();
        let now = a.digests();
        assert_eq!(now, b.digests(), "round {round}: the copies agree");
        digests.extend(now.into_values());
    }
    let elapsed = t0.elapsed();

    let commits: usize = calls
        .iter()
        .map(|c| {
            std::fs::read_to_string(c)
                .unwrap_or_default()
                .lines()
                .filter(|l| l.starts_with("commit "))
                .count()
        })
        .sum();
    // 5 layers, then compute/compute and compute/slurm anew each round.
    assert_eq!(digests.len(), 5 + 7 * 2);
    assert_eq!(commits, digests.len(), "each digest committed once");
    assert_eq!(built as usize, digests.len(), "each digest built once");
    let containers = buildah_ok(&storage, &["containers", "--format", "{{.ContainerName}}"]);
    assert_eq!(containers.trim(), "", "no working container left");
    eprintln!("8 rounds of two checkouts at once: {elapsed:?}");

    // gc in one checkout keeps what the other's cache names.
    let gc = a.lb(&["gc", "--keep", "0", "--json"]).ok().json();
    assert!(
        gc["cache_rows"].as_array().unwrap().len() >= 14,
        "a's old rows go: {gc}"
    );
    let verify = b.lb(&["cache", "verify", "--json"]);
    assert_eq!(
        verify.code, 0,
        "b's cache is intact after a's gc\n{}\n{}",
        verify.stdout, verify.stderr
    );
    assert_eq!(verify.json()["problems"], serde_json::json!([]));
    let again = b.lb(&["build", "--json", "//..."]).ok().json();
    assert_eq!(again["built"], 0, "{again}");

    // Once no checkout names an old image, gc removes it.
    let gc = b.lb(&["gc", "--keep", "0", "--json"]).ok().json();
    let removed = gc["images"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["status"] == "removed")
        .count();
    assert_eq!(removed, 14, "{gc}");
    for ws in [&a, &b] {
        let v = ws.lb(&["cache", "verify", "--json"]);
        assert_eq!(v.code, 0, "{}\n{}", v.stdout, v.stderr);
    }
    let images = buildah_ok(&storage, &["images", "--format", "{{.Name}}:{{.Tag}}"]);
    assert_eq!(images.lines().count(), 5, "{images}");
}

/// gc decides from the other checkouts' caches, then removes: a checkout
/// that takes an old image in between (an adoption, a rebuilt index) must
/// not lose it. gc removes an image only while holding its digest's lock,
/// and asks the other caches again once it holds it.
#[test]
fn gc_holds_the_digest_lock_and_spares_an_image_another_checkout_took_meanwhile() {
    require_buildah();
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().join("storage");
    let _cleanup = DropStorage(&storage);
    let (a, b, layerfile) = two_checkouts(&storage);
    // b: the same workspace at another revision, a checkout of the storage
    // whose cache names nothing of a's.
    b.write(
        "Layerfile.toml",
        &layerfile.replacen("echo base > /etc/layer-base", "echo b > /etc/layer-base", 1),
    );
    assert_ne!(b.read("Layerfile.toml"), layerfile, "the edit took");
    b.lb(&["build", "--json", "//base/os"]).ok();
    // a builds //base/os, then a new version of it: the old one is gc's.
    let old = a.lb(&["build", "--json", "//base/os"]).ok().json();
    let old_digest = old["layers"][0]["digest"].as_str().unwrap().to_string();
    a.write(
        "Layerfile.toml",
        &layerfile.replacen(
            "echo base > /etc/layer-base",
            "echo base2 > /etc/layer-base",
            1,
        ),
    );
    assert_ne!(a.read("Layerfile.toml"), layerfile, "the edit took");
    a.lb(&["build", "--json", "//base/os"]).ok();

    // Someone holds the old digest's lock (as an adoption of it would).
    let lock = storage
        .join("layerbuild/locks")
        .join(format!("{old_digest}.lock"));
    std::fs::create_dir_all(lock.parent().unwrap()).unwrap();
    let mut holder = Command::new("flock")
        .arg(&lock)
        .args(["-c", "sleep 3"])
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let gc = std::thread::scope(|s| {
        let h = s.spawn(|| a.lb(&["gc", "--keep", "1", "--json"]));
        // gc has read the caches and waits for the lock; meanwhile b takes
        // the old image into its cache (its index rebuilt from storage).
        std::thread::sleep(std::time::Duration::from_millis(1200));
        b.lb(&["cache", "rebuild-index"]).ok();
        holder.wait().unwrap();
        h.join().unwrap()
    });
    assert_eq!(gc.code, 0, "{}", gc.stderr);
    let report = gc.json();
    let old_image = report["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["digest"] == old_digest.as_str())
        .unwrap_or_else(|| panic!("gc considered the old image: {report}"));
    assert_eq!(old_image["status"], "skipped", "{report}");
    // b's cache names it, and is whole.
    assert!(
        b.cached_digests().contains(&old_digest),
        "b took the old image"
    );
    let verify = b.lb(&["cache", "verify", "--json"]).ok().json();
    assert_eq!(verify["problems"], serde_json::json!([]), "{verify}");
    assert!(buildah_ok(&storage, &["images", "--format", "{{.Tag}}"]).contains(&old_digest[..12]));
}

//! `layerbuild gc` on the busybox `chain` fixture.
//!
//! One test runs real buildah end to end,
//! `gc_keep_2_leaves_the_current_digest_and_the_newest_other_and_the_next_build_is_a_no_op`:
//! it proves gc really removes images from buildah's storage (with their
//! rows and logs), keeps the ones it should, and that the next build then
//! reuses what is left. The others test gc's choices (which working
//! containers are stale, kept containers of failed builds, checking
//! `--keep`): they run in this process against the recording backend
//! ([`TestWs::recorded`]: no buildah, no root), whose containers and images
//! they set up and read directly.

mod common;

use std::process::Command;

use common::{TestWs, layer, require_buildah};
use layerbuild::executor::ImageStore;
use layerbuild::executor::recording::Recording;

/// Builds //uan/uan with the next version of its script; returns (digest, image name).
fn build_uan_version(ws: &TestWs, v: usize) -> (String, String) {
    ws.append("scripts/uan.sh", &format!("echo v{v} > /etc/uan-version\n"));
    let r = ws.lb(&["build", "--json", "//uan/uan"]).ok().json();
    let uan = layer(&r, "//uan/uan");
    assert_eq!(uan["status"], "built", "{r}");
    (
        uan["digest"].as_str().unwrap().to_string(),
        uan["image_name"].as_str().unwrap().to_string(),
    )
}

fn image_names() -> Vec<String> {
    // Listing fails while a parallel test removes an image: try again.
    for _ in 0..10 {
        let out = Command::new("buildah")
            .args(["images", "--format", "{{.Name}}:{{.Tag}}"])
            .output()
            .unwrap();
        if out.status.success() {
            return String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(str::to_string)
                .collect();
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    panic!("buildah images keeps failing");
}

fn column(ws: &TestWs, sql: &str) -> Vec<String> {
    let conn = rusqlite::Connection::open(ws.db()).unwrap();
    let mut st = conn.prepare(sql).unwrap();
    st.query_map([], |r| r.get(0))
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
}

fn strings(v: &serde_json::Value, field: &str) -> Vec<String> {
    let mut out: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x[field].as_str().unwrap().to_string())
        .collect();
    out.sort();
    out
}

/// Does the recording's store hold a working container of this name?
fn container_exists(rec: &Recording, name: &str) -> bool {
    rec.containers().unwrap().contains(name)
}

/// Every name the recording's store gives an image.
fn recorded_image_names(rec: &Recording) -> Vec<String> {
    rec.images_stored()
        .into_iter()
        .flat_map(|i| i.names)
        .collect()
}

#[test]
fn gc_keep_2_leaves_the_current_digest_and_the_newest_other_and_the_next_build_is_a_no_op() {
    require_buildah();
    let ws = TestWs::new("chain");
    let versions: Vec<(String, String)> = (1..=5).map(|v| build_uan_version(&ws, v)).collect();
    let digests: Vec<&str> = versions.iter().map(|(d, _)| d.as_str()).collect();
    let uan_rows = "SELECT digest FROM layers WHERE label = '//uan/uan' ORDER BY digest";
    assert_eq!(column(&ws, uan_rows).len(), 5);
    let logs_of = |d: &str| {
        column(
            &ws,
            &format!("SELECT log_path FROM builds WHERE digest = '{d}'"),
        )
    };
    // Stored relative to the cache directory.
    let old_logs: Vec<String> = digests[..3]
        .iter()
        .flat_map(|d| logs_of(d))
        .map(|l| ws.path("cache").join(l).display().to_string())
        .collect();
    assert_eq!(old_logs.len(), 3);
    let mut gone: Vec<String> = digests[..3].iter().map(|d| d.to_string()).collect();
    gone.sort();

    // --dry-run lists the three oldest and removes nothing.
    let dry = ws
        .lb(&["gc", "--keep", "2", "--dry-run", "--json"])
        .ok()
        .json();
    assert_eq!(dry["dry_run"], true);
    assert_eq!(strings(&dry["cache_rows"], "digest"), gone);
    assert_eq!(strings(&dry["images"], "digest"), gone);
    assert!(
        dry["images"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["status"] == "would_remove"),
        "{dry}"
    );
    assert_eq!(dry["logs"].as_array().unwrap().len(), 3, "{dry}");
    let text = ws.lb(&["gc", "--keep", "2", "--dry-run"]).ok().stdout;
    assert!(
        text.contains("would remove 3 images, 3 cache rows, 3 history rows, 3 logs"),
        "{text}"
    );
    assert_eq!(column(&ws, uan_rows).len(), 5);
    let names = image_names();
    for (_, image) in &versions {
        assert!(names.contains(image), "dry run removed {image}");
    }
    assert!(old_logs.iter().all(|l| std::path::Path::new(l).exists()));

    let run = ws.lb(&["gc", "--keep", "2"]).ok();
    assert!(
        run.stdout.contains(
            "removed 3 images, 3 cache rows, 3 history rows, 3 logs, 0 stale containers; reclaimed"
        ),
        "{}",
        run.stdout
    );
    let mut left = vec![digests[3].to_string(), digests[4].to_string()];
    left.sort();
    assert_eq!(column(&ws, uan_rows), left);
    assert_eq!(
        column(
            &ws,
            "SELECT DISTINCT digest FROM builds WHERE label = '//uan/uan' ORDER BY digest"
        ),
        left
    );
    assert_eq!(
        column(&ws, "SELECT digest FROM layers").len(),
        4,
        "os, hsn, 2 uan"
    );
    let names = image_names();
    for (i, (_, image)) in versions.iter().enumerate() {
        assert_eq!(names.contains(image), i >= 3, "{image} in {names:?}");
    }
    for l in &old_logs {
        assert!(!std::path::Path::new(l).exists(), "{l} was not removed");
    }
    for d in &digests[3..] {
        for l in logs_of(d) {
            let l = ws.path("cache").join(l);
            assert!(l.exists(), "kept log {} removed", l.display());
        }
    }

    let r = ws.lb(&["build", "--json", "//uan/uan"]).ok().json();
    assert_eq!(r["built"], 0, "{r}");
    assert_eq!(r["cached"], 3, "{r}");
    assert_eq!(layer(&r, "//uan/uan")["digest"], digests[4]);

    let again = ws.lb(&["gc", "--keep", "2"]).ok();
    assert!(
        again.stdout.contains("nothing to remove"),
        "{}",
        again.stdout
    );
}

#[test]
fn gc_removes_working_containers_whose_build_process_is_gone() {
    let ws = TestWs::recorded("chain");
    let rec = ws.rec();
    let r = ws.lb(&["build", "--json", "//base/os"]).ok().json();
    let image = layer(&r, "//base/os")["image_name"]
        .as_str()
        .unwrap()
        .to_string();
    let mut child = Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let me = std::process::id();

    let container = |slug: &str, hex: &str, owner: Option<u32>| {
        let name = format!("layerbuild-{}-{slug}-{hex}", ws.name);
        rec.create_container(&name, &image).unwrap();
        if let Some(pid) = owner {
            ws.write(&format!("cache/tmp/{name}/owner.pid"), &format!("{pid}\n"));
        }
        name
    };
    let dead_owner = container("x-y", "0123456789ab", Some(dead));
    let live_owner = container("x-y", "abcdef012345", Some(me));
    // No owner.pid: taken only when the name is one of this workspace's layers.
    let no_owner_known = container("base-hsn", "00000000000a", None);
    let no_owner_unknown = container("x-y", "00000000000b", None);

    let dry = ws.lb(&["gc", "--dry-run", "--json"]).ok().json();
    let mut stale = vec![dead_owner.clone(), no_owner_known.clone()];
    stale.sort();
    assert_eq!(strings(&dry["containers"], "name"), stale, "{dry}");
    assert!(container_exists(rec, &dead_owner));

    let run = ws.lb(&["gc"]).ok();
    assert!(
        run.stdout
            .contains(&format!("removed stale container {dead_owner}")),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("2 stale containers"), "{}", run.stdout);
    assert!(!container_exists(rec, &dead_owner));
    assert!(!container_exists(rec, &no_owner_known));
    assert!(!ws.path(&format!("cache/tmp/{dead_owner}")).exists());
    assert!(container_exists(rec, &live_owner));
    assert!(container_exists(rec, &no_owner_unknown));
    // The current image stays.
    assert!(recorded_image_names(rec).contains(&image));
}

#[test]
fn gc_leaves_kept_containers_of_failed_builds_and_says_so() {
    let ws = TestWs::recorded("chain");
    let rec = ws.rec();
    let original = ws.read("scripts/uan.sh");
    ws.lb(&["build", "//uan/uan"]).ok();
    // Another digest of //uan/uan, whose build fails and keeps its container.
    ws.append("scripts/uan.sh", "echo about to fail; exit 4\n");
    rec.fail_label("//uan/uan");
    let run = ws.lb(&["build", "--json", "//uan/uan"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let failed = run.json();
    let kept = layer(&failed, "//uan/uan")["container"]
        .as_str()
        .unwrap()
        .to_string();
    // Back to the digest built before: cached, so no build of it fails.
    ws.write("scripts/uan.sh", &original);
    ws.lb(&["build", "//uan/uan"]).ok();

    let run = ws.lb(&["gc", "--keep", "1"]).ok();
    assert!(container_exists(rec, &kept), "gc removed {kept}");
    assert!(
        run.stdout.contains("layerbuild clean --failed") && run.stdout.contains(&kept),
        "{}",
        run.stdout
    );
    let ls = ws.lb(&["ls", "--failed", "--json"]).ok().json();
    assert_eq!(strings(&ls["containers"], "container"), vec![kept]);
}

#[test]
fn gc_rejects_a_negative_or_non_numeric_keep() {
    let ws = TestWs::recorded("chain");
    let run = ws.lb(&["gc", "--keep", "-1"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("--keep -1"), "{}", run.stderr);
    let run = ws.lb(&["gc", "--keep", "many"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("'many'"), "{}", run.stderr);
}

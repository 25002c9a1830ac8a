//! The cache index against container storage on the busybox `chain`
//! fixture: an image removed behind layerbuild's back, `cache verify` (and
//! `--repair`), edited and odd rows, images trusted by the reference they
//! were pulled as, `cache rebuild-index`, and damaged database files.
//!
//! One test runs real buildah end to end,
//! `rebuild_index_after_the_database_is_deleted_makes_the_next_build_a_no_op`:
//! it proves the index can be rebuilt from what buildah's storage really
//! holds (the labels real builds commit, read back through buildah's own
//! listing and inspect), and that the next build then commits nothing. The
//! others test the bookkeeping above the executor: they run in this process
//! against the recording backend ([`TestWs::recorded`]: no buildah, no
//! root), whose store they change directly where the real tests ran
//! `buildah rmi` or `buildah tag`. A panic there fails the test itself.

mod common;

use common::{TestWs, layer, require_buildah};
use layerbuild::executor::recording::{Call, Recording};
use layerbuild::executor::{ImageStore, RmiOutcome};

fn status<'a>(report: &'a serde_json::Value, label: &str) -> &'a serde_json::Value {
    &layer(report, label)["status"]
}

/// `buildah rmi NAME` on the recording's store: the name goes, and the
/// image with it when it was its last name.
fn rmi(rec: &Recording, name: &str) {
    let outcome = rec.remove_image(name).unwrap();
    assert!(
        matches!(outcome, RmiOutcome::Removed | RmiOutcome::Untagged),
        "rmi {name}: {outcome:?}"
    );
}

/// `buildah tag ID NAME` on the recording's store: the name moves onto the
/// image `id`.
fn tag(rec: &Recording, id: &str, name: &str) {
    let mut image = rec
        .images_stored()
        .into_iter()
        .find(|i| i.id == id)
        .unwrap_or_else(|| panic!("no image {id} in the store"));
    image.names = vec![name.to_string()];
    rec.add_image(image);
}

fn remove_db(ws: &TestWs) {
    for f in ["layerbuild.db", "layerbuild.db-wal", "layerbuild.db-shm"] {
        let _ = std::fs::remove_file(ws.path("cache").join(f));
    }
}

#[test]
fn an_image_removed_behind_our_back_is_a_miss_that_verify_reports_and_build_repairs() {
    let ws = TestWs::recorded("chain");
    let first = ws.lb(&["build", "--json", "//..."]).ok().json();
    let slurm = first["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["label"] == "//compute/slurm")
        .unwrap()
        .clone();
    rmi(ws.rec(), slurm["image_name"].as_str().unwrap());

    let v = ws.lb(&["cache", "verify", "--json"]);
    assert_eq!(v.code, 1, "{}\n{}", v.stdout, v.stderr);
    let v = v.json();
    assert_eq!(v["rows"], 5);
    let problems = v["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{v}");
    assert_eq!(problems[0]["label"], "//compute/slurm");
    assert_eq!(problems[0]["problem"], "missing");
    assert_eq!(v["integrity"].as_array().unwrap().len(), 0);
    let text = ws.lb(&["cache", "verify"]);
    assert!(
        text.stdout.contains("//compute/slurm ")
            && text.stdout.contains("is not in container storage"),
        "{}",
        text.stdout
    );

    // The next build treats the row as a miss, deletes it and rebuilds.
    let run = ws.lb(&["build", "--json", "//..."]).ok();
    assert!(
        run.stderr.contains("is gone from container storage"),
        "{}",
        run.stderr
    );
    let again = run.json();
    assert_eq!(status(&again, "//compute/slurm"), "built", "{again}");
    assert_eq!(again["built"], 1);
    ws.lb(&["cache", "verify"]).ok();
}

#[test]
fn verify_repair_deletes_bad_rows_and_the_next_build_rebuilds_them() {
    let ws = TestWs::recorded("chain");
    let first = ws.lb(&["build", "--json", "//uan/uan"]).ok().json();
    let uan = first["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["label"] == "//uan/uan")
        .unwrap()
        .clone();
    rmi(ws.rec(), uan["image_name"].as_str().unwrap());
    // A row naming an image labelled with another digest: //base/hsn's row
    // pointed at //base/os's image.
    let conn = rusqlite::Connection::open(ws.db()).unwrap();
    conn.execute(
        "UPDATE layers SET image_id = (SELECT image_id FROM layers WHERE label = '//base/os')
         WHERE label = '//base/hsn'",
        [],
    )
    .unwrap();
    drop(conn);

    let v = ws
        .lb(&["cache", "verify", "--repair", "--json"])
        .ok()
        .json();
    let mut found: Vec<(String, String)> = v["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            assert_eq!(p["repaired"], true);
            (
                p["label"].as_str().unwrap().to_string(),
                p["problem"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    found.sort();
    assert_eq!(
        found,
        [
            ("//base/hsn".to_string(), "mismatched".to_string()),
            ("//uan/uan".to_string(), "missing".to_string())
        ]
    );
    assert_eq!(v["repaired"], 2);
    ws.lb(&["cache", "verify"]).ok();
    assert_eq!(ws.cached_digests().len(), 1);
    let again = ws.lb(&["build", "--json", "//uan/uan"]).ok().json();
    // //base/hsn's own image still exists under its name: adopted.
    assert_eq!(status(&again, "//base/os"), "up_to_date");
    assert_eq!(status(&again, "//base/hsn"), "up_to_date", "{again}");
    assert_eq!(status(&again, "//uan/uan"), "built");
}

#[test]
fn an_edited_row_is_not_reused_and_a_moved_name_is_not_reported() {
    let ws = TestWs::recorded("chain");
    let first = ws.lb(&["build", "--json", "//compute/slurm"]).ok().json();
    let id = |l: &str| layer(&first, l)["image_id"].as_str().unwrap().to_string();
    let (os, hsn, slurm) = (id("//base/os"), id("//base/hsn"), id("//compute/slurm"));
    let slurm_name = layer(&first, "//compute/slurm")["image_name"]
        .as_str()
        .unwrap()
        .to_string();

    // //base/hsn's row edited to name //base/os's image: a build does not
    // reuse it (its labels are //base/os's), and takes //base/hsn's own
    // image again (still in storage under its name, with its labels).
    let conn = rusqlite::Connection::open(ws.db()).unwrap();
    conn.execute(
        "UPDATE layers SET image_id = ?1 WHERE label = '//base/hsn'",
        [&os],
    )
    .unwrap();
    drop(conn);
    let run = ws.lb(&["build", "--json", "//compute/slurm"]).ok();
    assert!(
        run.stderr.contains("which is not its build"),
        "{}",
        run.stderr
    );
    let again = run.json();
    assert_eq!(
        layer(&again, "//base/hsn")["image_id"],
        hsn.as_str(),
        "{again}"
    );
    assert_eq!(
        layer(&again, "//compute/slurm")["status"],
        "up_to_date",
        "{again}"
    );
    ws.lb(&["cache", "verify"]).ok();

    // Another image tagged with //compute/slurm's name: the build reuses
    // slurm's own image by id, and does not report the name, which now
    // leads elsewhere.
    tag(ws.rec(), &os, &slurm_name);
    let again = ws.lb(&["build", "--json", "//compute/slurm"]).ok().json();
    let s = layer(&again, "//compute/slurm");
    assert_eq!(s["status"], "up_to_date", "{again}");
    assert_eq!(s["image_id"], slurm.as_str());
    assert_eq!(s["image_name"], slurm.as_str(), "{again}");
    // Untouched layers keep their names.
    assert!(
        layer(&again, "//base/os")["image_name"]
            .as_str()
            .unwrap()
            .starts_with("localhost/"),
        "{again}"
    );
}

#[test]
fn rebuild_index_after_the_database_is_deleted_makes_the_next_build_a_no_op() {
    require_buildah();
    let mut ws = TestWs::new("chain");
    ws.lb(&["build", "//..."]).ok();
    // An older //uan/uan, which no current layer has any more.
    let old_uan = ws.digests()["//uan/uan"].clone();
    ws.append("scripts/uan.sh", "echo v2 > /etc/uan-version\n");
    ws.lb(&["build", "//uan/uan"]).ok();
    remove_db(&ws);

    let r = ws.lb(&["cache", "rebuild-index", "--json"]).ok().json();
    assert_eq!(r["recorded"], 6, "{r}");
    assert_eq!(r["moved_aside"], serde_json::Value::Null);
    for i in r["images"].as_array().unwrap() {
        let expected = if i["digest"] == old_uan.as_str() {
            "unknown"
        } else {
            "known"
        };
        assert_eq!(i["status"], "recorded", "{i}");
        assert_eq!(i["manifest"], expected, "{i}");
    }

    let calls = ws.log_buildah();
    let again = ws.lb(&["build", "--json", "//..."]).ok().json();
    assert_eq!(again["built"], 0, "{again}");
    assert_eq!(again["cached"], 5, "{again}");
    let log = std::fs::read_to_string(&calls).unwrap_or_default();
    assert!(!log.lines().any(|l| l.starts_with("commit ")), "{log}");
    let why = ws.lb(&["why", "--json", "//compute/slurm"]).ok().json();
    assert_eq!(why["status"], "up_to_date", "{why}");
    ws.lb(&["cache", "verify"]).ok();

    // Run again: nothing new.
    let r = ws.lb(&["cache", "rebuild-index", "--json"]).ok().json();
    assert_eq!(r["recorded"], 0, "{r}");
}

#[test]
fn a_damaged_database_names_the_file_and_rebuild_index_moves_it_aside() {
    let ws = TestWs::recorded("chain");
    ws.lb(&["build", "//..."]).ok();
    let db = ws.db();
    let len = std::fs::metadata(&db).unwrap().len();

    for (how, damage) in [
        (
            "truncated",
            Box::new(|p: &std::path::Path| {
                let f = std::fs::OpenOptions::new().write(true).open(p).unwrap();
                f.set_len(len / 2).unwrap();
            }) as Box<dyn Fn(&std::path::Path)>,
        ),
        (
            "garbled",
            Box::new(|p: &std::path::Path| {
                std::fs::write(p, vec![0x5au8; len as usize]).unwrap();
            }),
        ),
    ] {
        // The last connection checkpointed the WAL: the damage is to everything.
        let _ = std::fs::remove_file(db.with_extension("db-wal"));
        let _ = std::fs::remove_file(db.with_extension("db-shm"));
        damage(&db);
        for args in [
            &["build", "//..."][..],
            &["ls"][..],
            &["why", "//uan/uan"][..],
            &["cache", "verify"][..],
        ] {
            let r = ws.lb(args);
            assert_eq!(r.code, 3, "{how}, {args:?}: {}\n{}", r.stdout, r.stderr);
            assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
            assert!(
                r.stderr.contains(&db.display().to_string())
                    && r.stderr.contains("is damaged")
                    && r.stderr.contains("layerbuild cache rebuild-index"),
                "{how}, {args:?}: {}",
                r.stderr
            );
        }
        let r = ws.lb(&["cache", "rebuild-index", "--json"]).ok().json();
        let moved = r["moved_aside"].as_str().unwrap().to_string();
        assert!(moved.starts_with("cache/layerbuild.db.damaged-"), "{r}");
        assert_eq!(r["recorded"], 5, "{r}");
        let again = ws.lb(&["build", "--json", "//..."]).ok().json();
        assert_eq!(again["built"], 0, "{how}: {again}");
        std::fs::remove_file(ws.root.join(&moved)).unwrap();
    }
}

#[test]
fn short_or_odd_digests_in_edited_rows_never_panic() {
    let ws = TestWs::recorded("chain");
    ws.lb(&["build", "//base/hsn"]).ok();
    let conn = rusqlite::Connection::open(ws.db()).unwrap();
    conn.execute_batch(
        "UPDATE builds SET digest = 'é1';
         UPDATE layers SET digest = 'ab' WHERE label = '//base/os';",
    )
    .unwrap();
    drop(conn);
    for args in [
        &["ls"][..],
        &["ls", "--failed"],
        &["log", "//base/hsn"],
        &["log", "//base/os"],
        &["cache", "verify"],
        &["build", "--dry-run", "//base/hsn"],
        &["why", "//base/hsn"],
        &["build", "//base/hsn"],
    ] {
        let r = ws.lb(args);
        assert!(
            !r.stderr.contains("panicked") && r.code != 101,
            "{args:?}: {}",
            r.stderr
        );
    }
}

/// A row whose image carries a name layerbuild gives only to this layer's
/// builds of this digest (the registry reference it was pulled as) is
/// trusted from the listing, without reading the image's labels; with no
/// such name left, its labels are read, and it is still reused.
#[test]
fn a_pulled_image_is_trusted_by_its_reference_without_an_inspect() {
    let ws = TestWs::recorded("chain");
    let rec = ws.rec();
    let first = ws.lb(&["build", "--json", "//base/os"]).ok().json();
    let os = layer(&first, "//base/os");
    let (id, local) = (
        os["image_id"].as_str().unwrap().to_string(),
        os["image_name"].as_str().unwrap().to_string(),
    );
    let reference = format!(
        "127.0.0.1:5999/{}/base/os:{}",
        ws.name,
        os["digest"].as_str().unwrap()
    );
    tag(rec, &id, &reference);
    rmi(rec, &local);
    let conn = rusqlite::Connection::open(ws.db()).unwrap();
    conn.execute("UPDATE layers SET image_name = ?1", [&reference])
        .unwrap();
    drop(conn);
    // What `buildah inspect` does: read an image's labels.
    let start = rec.calls().len();
    let inspected = || {
        rec.calls()[start..]
            .iter()
            .any(|c| matches!(c, Call::CommittedImage(_) | Call::DigestLabel(_)))
    };
    let again = ws.lb(&["build", "--json", "//base/os"]).ok().json();
    assert_eq!(
        layer(&again, "//base/os")["status"],
        "up_to_date",
        "{again}"
    );
    assert_eq!(layer(&again, "//base/os")["image_name"], reference.as_str());
    assert!(!inspected(), "{:?}", &rec.calls()[start..]);

    // No name of this build left (only another one, which keeps the
    // image): the labels are read, and they agree.
    let other = format!("localhost/{}/unrelated:latest", ws.name);
    tag(rec, &id, &other);
    rmi(rec, &reference);
    let again = ws.lb(&["build", "--json", "//base/os"]).ok().json();
    assert_eq!(
        layer(&again, "//base/os")["status"],
        "up_to_date",
        "{again}"
    );
    assert_eq!(layer(&again, "//base/os")["image_id"], id.as_str());
    assert!(inspected(), "{:?}", &rec.calls()[start..]);
}

//! The stat cache never serves a stale hash: every way of changing a file
//! (a same-size edit in the same tick, an edit with its old mtime put back,
//! a replacement by rename, a deletion, a mode change) changes the digest,
//! and an unchanged workspace is fingerprinted without reading any file.
//! These run the real binary (`LAYERBUILD_STATS=1` counts the files read).

mod common;

use std::collections::BTreeMap;
use std::time::SystemTime;

use common::{Edit, TestWs};
use layerbuild::fingerprint::statcache::{self, Stat, StatEntry};

const FILE: &str = "slurm-config/roles/slurm/templates/README";
const SLURM: &str = "//compute/slurm";

/// The stat cache's entries as stored.
fn entries(ws: &TestWs) -> std::collections::HashMap<String, StatEntry> {
    let bytes: Vec<u8> = rusqlite::Connection::open(ws.fingerprint_db())
        .unwrap()
        .query_row("SELECT entries FROM stat_cache WHERE id = 1", [], |r| {
            r.get(0)
        })
        .unwrap();
    statcache::decode(&bytes).expect("a stat cache layerbuild wrote decodes")
}

/// Stores `entries` as the stat cache.
fn put_entries(ws: &TestWs, entries: &std::collections::HashMap<String, StatEntry>) {
    let bytes = statcache::encode(entries.iter().map(|(p, e)| (p.as_str(), e)));
    let n = rusqlite::Connection::open(ws.fingerprint_db())
        .unwrap()
        .execute("UPDATE stat_cache SET entries = ?1 WHERE id = 1", [bytes])
        .unwrap();
    assert_eq!(n, 1);
}

/// (files read, files served by the stat cache) of a run.
fn counts(stderr: &str) -> (usize, usize) {
    let line = stderr
        .lines()
        .find(|l| l.starts_with("layerbuild stats: "))
        .unwrap_or_else(|| panic!("no stats line in:\n{stderr}"));
    let nums: Vec<usize> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    (nums[0], nums[1])
}

/// label -> digest, and the counts of the scan.
fn scan(ws: &TestWs) -> (BTreeMap<String, String>, (usize, usize)) {
    let r = ws.lb(&["ls", "--json"]).ok();
    let digests = r.json()["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["label"].as_str().unwrap().to_string(),
                e["digest"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    (digests, counts(&r.stderr))
}

/// A chain workspace with a cache database, whose every file's entry is
/// trusted: the next scan reads nothing. Its later runs have a racy margin
/// of 0 (a test setting), so no test waits for files it writes to age:
/// nothing writes the workspace while a scan runs.
fn warm() -> (TestWs, BTreeMap<String, String>) {
    let mut ws = TestWs::new("chain");
    ws.env.push(("LAYERBUILD_STATS".into(), "1".into()));
    // The stat cache itself, not the memo above it (tests/memo.rs).
    ws.env.push(("LAYERBUILD_MEMO".into(), "0".into()));
    let (cold, (read, reused)) = scan(&ws);
    assert!(
        read > 0 && reused == 0,
        "cold scan: {read} read, {reused} reused"
    );
    // With the default margin (2 s), files copied just now are racy: the
    // cold scan's entries are not trusted.
    let (again, (read, _)) = scan(&ws);
    assert!(read > 0, "racy entries must be read again");
    // With none, the entries of the scan just before are.
    ws.racy_margin_ms(0);
    let (digests, (read, reused)) = scan(&ws);
    assert_eq!((read, reused > 0), (0, true), "warm scan read files");
    assert_eq!(cold, again);
    assert_eq!(cold, digests);
    (ws, digests)
}

fn mtime(ws: &TestWs, rel: &str) -> SystemTime {
    std::fs::metadata(ws.path(rel)).unwrap().modified().unwrap()
}

fn set_mtime(ws: &TestWs, rel: &str, t: SystemTime) {
    std::fs::File::options()
        .write(true)
        .open(ws.path(rel))
        .unwrap()
        .set_modified(t)
        .unwrap();
}

/// Same length as the fixture's file, different bytes.
fn same_size_edit(ws: &TestWs, rel: &str) -> String {
    let old = ws.read(rel);
    let new: String = old
        .chars()
        .map(|c| if c == 'a' { 'b' } else { c })
        .collect();
    assert_ne!(old, new, "the fixture file needs an 'a'");
    assert_eq!(old.len(), new.len());
    new
}

fn slurm_changed(before: &BTreeMap<String, String>, ws: &TestWs) -> (usize, usize) {
    let (after, counts) = scan(ws);
    assert_ne!(before[SLURM], after[SLURM], "stale digest of {SLURM}");
    counts
}

#[test]
fn a_warm_scan_reads_no_file_and_gives_the_same_digests() {
    // All of it is asserted in `warm`; a fresh copy elsewhere agrees.
    let (_ws, digests) = warm();
    let fresh = TestWs::new("chain");
    assert_eq!(fresh.digests(), digests);
}

#[test]
fn a_same_size_edit_in_the_same_tick_is_caught() {
    let (ws, before) = warm();
    // In place (same inode), right after the scan that recorded the entry.
    let new = same_size_edit(&ws, FILE);
    std::fs::write(ws.path(FILE), &new).unwrap();
    let (read, _) = slurm_changed(&before, &ws);
    assert!(read >= 1);
    // And again within the tick of the scan that just hashed it.
    let (now, _) = scan(&ws);
    std::fs::write(ws.path(FILE), new.edit("b", "c")).unwrap();
    slurm_changed(&now, &ws);
}

#[test]
fn a_same_size_edit_with_its_old_mtime_restored_is_caught() {
    let (ws, before) = warm();
    let old = mtime(&ws, FILE);
    let new = same_size_edit(&ws, FILE);
    std::fs::write(ws.path(FILE), new).unwrap();
    set_mtime(&ws, FILE, old);
    assert_eq!(mtime(&ws, FILE), old);
    slurm_changed(&before, &ws);
}

#[test]
fn a_file_replaced_by_rename_is_read_again() {
    let (ws, before) = warm();
    let old = mtime(&ws, FILE);
    let tmp = format!("{FILE}.new");
    std::fs::write(ws.path(&tmp), same_size_edit(&ws, FILE)).unwrap();
    set_mtime(&ws, &tmp, old);
    std::fs::rename(ws.path(&tmp), ws.path(FILE)).unwrap();
    slurm_changed(&before, &ws);
}

#[test]
fn a_deleted_file_changes_the_digest_and_leaves_the_stat_cache() {
    let (ws, before) = warm();
    assert!(entries(&ws).contains_key(FILE));
    std::fs::remove_file(ws.path(FILE)).unwrap();
    slurm_changed(&before, &ws);
    assert!(
        !entries(&ws).contains_key(FILE),
        "the vanished file's entry is kept"
    );
}

#[test]
fn a_mode_change_changes_the_digest() {
    use std::os::unix::fs::PermissionsExt;
    let (ws, before) = warm();
    std::fs::set_permissions(ws.path(FILE), std::fs::Permissions::from_mode(0o755)).unwrap();
    slurm_changed(&before, &ws);
}

/// The entry is made to match the edited file's stat data exactly, with the
/// old hash: only the racy rule stands between it and a stale digest. Then
/// the same entry recorded long enough after the edit is trusted, which
/// shows the cache really serves hashes (the first half is not vacuous).
/// The margin is set to a second; every other entry is made old enough for
/// it, so only the edited file can be read.
#[test]
fn an_entry_matching_an_edited_file_is_not_trusted_when_racy() {
    use std::os::unix::fs::MetadataExt;
    const MARGIN_MS: i64 = 1000;
    let (mut ws, before) = warm();
    ws.racy_margin_ms(MARGIN_MS as u64);
    let old_hash = entries(&ws)[FILE].hash;
    std::fs::write(ws.path(FILE), same_size_edit(&ws, FILE)).unwrap();
    let m = std::fs::metadata(ws.path(FILE)).unwrap();
    let ctime_ns = m.ctime() * 1_000_000_000 + m.ctime_nsec();
    let mtime_ns = m.mtime() * 1_000_000_000 + m.mtime_nsec();
    let forge = |recorded_ns: i64| {
        let mut all = entries(&ws);
        for e in all.values_mut() {
            e.recorded_ns = e.stat.mtime_ns.max(e.stat.ctime_ns) + 2 * MARGIN_MS * 1_000_000;
        }
        all.insert(
            FILE.to_string(),
            StatEntry {
                stat: Stat {
                    size: m.size(),
                    mtime_ns,
                    ctime_ns,
                    inode: m.ino(),
                    device: m.dev(),
                    mode: m.mode(),
                },
                hash: old_hash,
                jinja: all[FILE].jinja,
                recorded_ns,
            },
        );
        put_entries(&ws, &all);
    };
    let edited = ctime_ns.max(mtime_ns);
    // Recorded in the very tick of the edit, or just within the margin
    // after it: racy, read again.
    for recorded_ns in [edited, edited + MARGIN_MS * 1_000_000 - 1_000_000] {
        forge(recorded_ns);
        let (read, _) = slurm_changed(&before, &ws);
        assert_eq!(read, 1, "only the racy file is read");
    }
    // Recorded just past the margin: trusted, so the old hash comes back.
    forge(edited + MARGIN_MS * 1_000_000 + 1_000_000);
    let (after, (read, _)) = scan(&ws);
    assert_eq!(read, 0);
    assert_eq!(after[SLURM], before[SLURM]);
}

#[test]
fn a_no_op_build_reads_no_file() {
    common::require_buildah();
    let mut ws = TestWs::new("chain");
    ws.env.push(("LAYERBUILD_STATS".into(), "1".into()));
    ws.racy_margin_ms(0);
    let first = ws.lb(&["build", "//..."]).ok();
    let (read, reused) = counts(&first.stderr);
    assert!(read > 0 && reused == 0, "{read} read, {reused} reused");
    let again = ws.lb(&["build", "//...", "--json"]).ok();
    assert_eq!(counts(&again.stderr).0, 0, "{}", again.stderr);
    assert_eq!(again.json()["cached"], 5);
    // An edit after the build is seen by the next one.
    ws.append(FILE, "more\n");
    let third = ws.lb(&["build", "//...", "--json"]).ok();
    assert_eq!(counts(&third.stderr).0, 1);
    assert_eq!(third.json()["built"], 1);
}

//! `kill -9` of layerbuild in the middle of builds, with real buildah on the
//! busybox `chain` fixture: no cache row ever names a missing image, the
//! database stays sound, and the next build succeeds, reusing what was
//! committed and removing the working containers of dead builds.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Edit, TestWs, require_buildah};

/// Starts `layerbuild build --json //...` in its own process group.
fn spawn_build(ws: &TestWs, env: &[(&str, String)]) -> Child {
    let mut c = Command::new(env!("CARGO_BIN_EXE_layerbuild"));
    c.arg("-C")
        .arg(&ws.root)
        .args(["build", "--json", "//..."])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0);
    for (k, v) in &ws.env {
        c.env(k, v);
    }
    for (k, v) in env {
        c.env(k, v);
    }
    c.spawn().unwrap()
}

/// `kill -9 PID`, or `-PGID` for a whole process group; a process that has
/// just exited is not an error.
fn kill9(target: &str) {
    Command::new("kill")
        .args(["-9", "--", target])
        .stderr(Stdio::null())
        .status()
        .unwrap();
}

/// Processes left in process group `pgid` (orphaned buildah, ansible...).
fn group_members(pgid: u32) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid pgrp ...
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.get(2).and_then(|p| p.parse::<u32>().ok()) == Some(pgid) && fields[0] != "Z" {
            n += 1;
        }
    }
    n
}

fn wait_for_groups(pgids: &[u32]) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while pgids.iter().any(|p| group_members(*p) > 0) {
        assert!(
            Instant::now() < deadline,
            "orphans of killed builds still running"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Ids of every image in storage.
fn image_ids() -> HashSet<String> {
    for _ in 0..20 {
        let out = Command::new("buildah")
            .args(["images", "--all", "--no-trunc", "--quiet"])
            .output()
            .unwrap();
        if out.status.success() {
            return String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(|l| l.trim().trim_start_matches("sha256:").to_string())
                .filter(|l| !l.is_empty())
                .collect();
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("buildah images keeps failing");
}

/// Every cache row names an existing image; `PRAGMA integrity_check` is ok.
fn check_invariants(ws: &TestWs, when: &str) {
    if !ws.db().exists() {
        return;
    }
    let conn = rusqlite::Connection::open(ws.db()).unwrap();
    let ok: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok", "{when}");
    let mut st = conn.prepare("SELECT label, image_id FROM layers").unwrap();
    let rows: Vec<(String, String)> = st
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    let ids = image_ids();
    for (label, id) in rows {
        assert!(
            ids.contains(&id),
            "{when}: the row of {label} names image {id}, which does not exist"
        );
    }
}

/// The `layerbuild.digest` label of the image named `name`, if it exists.
fn digest_label(name: &str) -> Option<String> {
    let out = Command::new("buildah")
        .args([
            "inspect",
            "--type",
            "image",
            "--format",
            "{{index .OCIv1.Config.Labels \"layerbuild.digest\"}}",
            name,
        ])
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn containers() -> Vec<String> {
    let out = Command::new("buildah")
        .args(["containers", "--format", "{{.ContainerName}}"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

fn image_name(ws: &TestWs, label: &str, digest: &str) -> String {
    format!(
        "localhost/layerbuild/{}/{}:{}",
        ws.name,
        label.trim_start_matches("//"),
        &digest[..12]
    )
}

fn container_name(ws: &TestWs, label: &str, digest: &str) -> String {
    format!(
        "layerbuild-{}-{}-{}",
        ws.name,
        label.trim_start_matches("//").replace('/', "-"),
        &digest[..12]
    )
}

/// xorshift64: reproducible random delays (`LAYERBUILD_CRASH_SEED=N`).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn kill_9_at_random_moments_never_leaves_a_row_without_its_image() {
    require_buildah();
    let ws = TestWs::new("chain");
    let seed = std::env::var("LAYERBUILD_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("LAYERBUILD_CRASH_SEED={seed}");
    let mut rng = Rng(seed);
    let mut groups = vec![];
    for i in 0..15 {
        // Every third round changes the base layer, so every layer has work
        // again; the rounds between resume the same digests.
        if i % 3 == 0 {
            ws.append("scripts/busybox-root.sh", &format!("# round {i}\n"));
        }
        let mut child = spawn_build(&ws, &[]);
        let pid = child.id();
        groups.push(pid);
        let delay = 100 + rng.next() % 6000;
        let deadline = Instant::now() + Duration::from_millis(delay);
        let mut finished = None;
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait().unwrap() {
                finished = Some(status);
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Odd rounds kill the whole process group (buildah and Ansible
        // too), even rounds only layerbuild: its children live on.
        let whole_group = i % 2 == 1;
        let when = format!(
            "round {i} (seed {seed}, killed after {delay} ms{})",
            if whole_group {
                " with its children"
            } else {
                ""
            }
        );
        match finished {
            Some(status) => assert!(status.success(), "{when}: finished but failed: {status}"),
            None => {
                kill9(&if whole_group {
                    format!("-{pid}")
                } else {
                    pid.to_string()
                });
                let _ = child.wait();
            }
        }
        check_invariants(&ws, &when);
    }

    // Let orphaned children of the killed builds finish, then build.
    wait_for_groups(&groups);
    check_invariants(&ws, "after the orphans finished");
    let digests = ws.digests();
    let committed: BTreeMap<&String, bool> = digests
        .iter()
        .map(|(l, d)| {
            (
                l,
                digest_label(&image_name(&ws, l, d)).as_deref() == Some(d.as_str()),
            )
        })
        .collect();
    let run = ws.lb(&["build", "--json", "//..."]).ok();
    assert!(!run.stderr.contains("database is locked"), "{}", run.stderr);
    let report = run.json();
    for l in report["layers"].as_array().unwrap() {
        let label = l["label"].as_str().unwrap().to_string();
        if committed[&label] {
            assert_eq!(
                l["status"], "up_to_date",
                "{label} was committed before: reused, not rebuilt\n{report}"
            );
        } else {
            assert_eq!(l["status"], "built", "{label}\n{report}");
        }
        let ctr = container_name(&ws, &label, l["digest"].as_str().unwrap());
        assert!(
            !TestWs::container_exists(&ctr),
            "{ctr} of a dead build is left"
        );
    }
    let reused = committed.values().filter(|c| **c).count();
    assert_eq!(report["built"].as_u64().unwrap() as usize, 5 - reused);
    assert_eq!(report["cached"].as_u64().unwrap() as usize, reused);
    check_invariants(&ws, "after the final build");

    // Working containers of older rounds' dead builds: gc removes them.
    ws.lb(&["gc", "--json"]).ok();
    let prefix = format!("layerbuild-{}-", ws.name);
    let left: Vec<String> = containers()
        .into_iter()
        .filter(|c| c.starts_with(&prefix))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    ws.lb(&["cache", "verify"]).ok();
    let again = ws.lb(&["build", "--json", "//..."]).ok().json();
    assert_eq!(again["built"], 0, "{again}");
}

/// A wrapper for `tool` that runs the shell `act`, once, when its
/// arguments match the shell `pattern`, `before` or after running the
/// real tool (`name` keeps wrappers of one test apart).
fn wrapper(dir: &Path, name: &str, tool: &str, pattern: &str, before: bool, act: &str) -> String {
    let path = dir.join(format!("{name}-{tool}.sh"));
    let flag = dir.join(format!("{name}-{tool}.armed"));
    std::fs::write(&flag, "").unwrap();
    let (pre, post) = if before { (act, "") } else { ("", act) };
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\ncase \"$*\" in {pattern}) if rm '{flag}' 2>/dev/null; then {pre}{tool} \"$@\"; rc=$?; {post}exit $rc; fi;; esac\nexec {tool} \"$@\"\n",
            flag = flag.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path.display().to_string()
}

/// A wrapper for `tool` that kills its parent (layerbuild) with SIGKILL, once,
/// when its arguments match the shell `pattern`, `before` or after running
/// the real tool.
fn killing_wrapper(dir: &Path, tool: &str, pattern: &str, before: bool) -> String {
    wrapper(dir, "kill", tool, pattern, before, "kill -9 $PPID; ")
}

/// A wrapper for ansible-playbook, which runs in the play's PID namespace
/// where layerbuild is not to be seen: once, when its arguments match
/// `pattern`, it touches `fired` (the test then kills layerbuild with
/// SIGKILL, [`killed_when_fired`]) and waits 2 s, `before` or after running
/// the real tool.
fn firing_wrapper(dir: &Path, tool: &str, pattern: &str, before: bool) -> (String, PathBuf) {
    let fired = dir.join(format!("fire-{tool}.fired"));
    let act = format!("touch '{}'; sleep 2; ", fired.display());
    (wrapper(dir, "fire", tool, pattern, before, &act), fired)
}

/// Waits for `child`, killing it with SIGKILL as soon as `fired` exists.
fn killed_when_fired(child: &mut Child, fired: &Path) -> std::process::ExitStatus {
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if fired.exists() {
            let _ = child.kill();
            return child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn run_killed(ws: &TestWs, env: &[(&str, String)]) {
    let mut child = spawn_build(ws, env);
    let pid = child.id();
    let status = child.wait().unwrap();
    assert!(!status.success(), "the build was not killed");
    wait_for_groups(&[pid]);
}

fn source_of(ws: &TestWs, digest: &str) -> Vec<String> {
    let conn = rusqlite::Connection::open(ws.db()).unwrap();
    let mut st = conn
        .prepare("SELECT source FROM builds WHERE digest = ?1 ORDER BY id")
        .unwrap();
    st.query_map([digest], |r| r.get(0))
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
}

#[test]
fn a_build_killed_between_commit_and_record_is_adopted_not_rebuilt() {
    require_buildah();
    let mut ws = TestWs::new("chain");
    let digests = ws.digests();
    let uan = &digests["//uan/uan"];
    let dir = ws.root.parent().unwrap().to_path_buf();
    let wrapper = killing_wrapper(&dir, "buildah", "commit*/uan/uan:*", false);
    run_killed(&ws, &[("LAYERBUILD_BUILDAH", wrapper)]);

    // Committed, named and labelled, but never recorded.
    assert_eq!(
        digest_label(&image_name(&ws, "//uan/uan", uan)).as_deref(),
        Some(uan.as_str())
    );
    assert!(!ws.cached_digests().contains(uan));
    check_invariants(&ws, "after the kill");

    let calls = ws.log_buildah();
    let report = ws.lb(&["build", "--json", "//..."]).ok();
    assert!(
        report.stderr.contains("//uan/uan: adopted"),
        "{}",
        report.stderr
    );
    let report = report.json();
    let status = |l: &str| {
        report["layers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["label"] == l)
            .unwrap()["status"]
            .clone()
    };
    assert_eq!(status("//uan/uan"), "up_to_date", "{report}");
    let log = std::fs::read_to_string(&calls).unwrap();
    assert!(
        !log.lines()
            .any(|l| l.starts_with("commit ") && l.contains("/uan/uan:")),
        "{log}"
    );
    assert_eq!(source_of(&ws, uan), ["adopted"]);
    assert!(ws.cached_digests().contains(uan));
    check_invariants(&ws, "after adopting");
    // why can explain the adopted row: its manifest is the real one.
    let why = ws.lb(&["why", "--json", "//uan/uan"]).ok().json();
    assert_eq!(why["status"], "up_to_date", "{why}");
}

#[test]
fn killed_as_commit_or_ansible_starts_the_next_build_succeeds_beside_the_orphan() {
    require_buildah();
    let ws = TestWs::new("chain");
    let dir = ws.root.parent().unwrap().to_path_buf();
    // The commit of //base/hsn outlives layerbuild; the next build starts at once.
    let wrapper = killing_wrapper(&dir, "buildah", "commit*/base/hsn:*", true);
    let mut child = spawn_build(&ws, &[("LAYERBUILD_BUILDAH", wrapper)]);
    let first = child.id();
    assert!(!child.wait().unwrap().success());
    let r = ws.lb(&["build", "--json", "//base/..."]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    wait_for_groups(&[first]);
    check_invariants(&ws, "after the commit kill");

    // ansible-playbook of //compute/compute outlives layerbuild.
    let (wrapper, fired) = firing_wrapper(&dir, "ansible-playbook", "*compute.yml*", true);
    let mut child = spawn_build(&ws, &[("LAYERBUILD_ANSIBLE_PLAYBOOK", wrapper)]);
    let second = child.id();
    assert!(!killed_when_fired(&mut child, &fired).success());
    let r = ws.lb(&["build", "--json", "//..."]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    wait_for_groups(&[second]);
    check_invariants(&ws, "after the ansible kill");
    let again = ws.lb(&["build", "--json", "//..."]).ok().json();
    assert_eq!(again["built"], 0, "{again}");
    ws.lb(&["cache", "verify"]).ok();
}

#[test]
fn an_image_whose_tests_did_not_run_is_never_adopted_one_that_passed_them_is() {
    require_buildah();
    let ws = TestWs::new("chain");
    let lf = ws.read("Layerfile.toml").replacen(
        "scripts = [\"scripts/uan.sh\"]",
        "scripts = [\"scripts/uan.sh\"]\ntests = [\"test -d /etc\"]",
        1,
    );
    ws.write("Layerfile.toml", &lf);
    let digests = ws.digests();
    let uan = &digests["//uan/uan"];
    let name = image_name(&ws, "//uan/uan", uan);
    let dir = ws.root.parent().unwrap().to_path_buf();

    // Killed right after the commit, before the tests: the image is only
    // `NAME-untested`, and the next build tests it again (builds it).
    let wrapper = killing_wrapper(&dir, "buildah", "commit*/uan/uan:*-untested", false);
    run_killed(&ws, &[("LAYERBUILD_BUILDAH", wrapper)]);
    assert_eq!(digest_label(&name), None, "named before its tests ran");
    assert_eq!(
        digest_label(&format!("{name}-untested")).as_deref(),
        Some(uan.as_str())
    );
    let r = ws.lb(&["build", "--json", "//uan/uan"]).ok();
    assert!(!r.stderr.contains("adopted"), "{}", r.stderr);
    let r = r.json();
    assert_eq!(TestWs::labels_with(&r, "built"), vec!["//uan/uan"], "{r}");
    assert_eq!(digest_label(&name).as_deref(), Some(uan.as_str()));
    assert_eq!(digest_label(&format!("{name}-untested")), None);
    check_invariants(&ws, "after the rebuild");

    // Killed after the tests passed and the image got its name, before the
    // cache record: adopted.
    let lf = ws
        .read("Layerfile.toml")
        .replacen("test -d /etc", "test -d /bin", 1);
    ws.write("Layerfile.toml", &lf);
    let uan = ws.digests()["//uan/uan"].clone();
    let wrapper = killing_wrapper(&dir, "buildah", "rmi*/uan/uan:*-untested", false);
    run_killed(&ws, &[("LAYERBUILD_BUILDAH", wrapper)]);
    assert!(!ws.cached_digests().contains(&uan));
    let r = ws.lb(&["build", "--json", "//uan/uan"]).ok();
    assert!(r.stderr.contains("//uan/uan: adopted"), "{}", r.stderr);
    assert_eq!(source_of(&ws, &uan), ["adopted"]);
    check_invariants(&ws, "after adopting");
}

#[test]
fn the_vars_a_build_killed_mid_play_leaves_are_removed_by_the_next_command() {
    require_buildah();
    let ws = TestWs::new("chain");
    let dir = ws.root.parent().unwrap().to_path_buf();
    // layerbuild dies as ansible-playbook of //compute/compute finishes:
    // the vars file it wrote for the play is still there.
    let (wrapper, fired) = firing_wrapper(&dir, "ansible-playbook", "*compute.yml*", false);
    let mut child = spawn_build(&ws, &[("LAYERBUILD_ANSIBLE_PLAYBOOK", wrapper)]);
    let pid = child.id();
    assert!(
        !killed_when_fired(&mut child, &fired).success(),
        "the build was not killed"
    );
    wait_for_groups(&[pid]);
    let left = || -> Vec<std::path::PathBuf> {
        std::fs::read_dir(ws.path("cache/tmp"))
            .map(|d| {
                d.flatten()
                    .map(|e| e.path().join("vars.json"))
                    .filter(|p| p.exists())
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(
        left().len(),
        1,
        "the killed build left no vars file to test with"
    );
    let r = ws.lb(&["ls"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(left().is_empty(), "left behind: {:?}", left());
}

/// Ctrl-C (SIGINT to layerbuild's process group, as a terminal sends it)
/// and SIGTERM (to layerbuild alone, as a CI runner cancelling a job
/// does) during a play: the play stops within seconds, layerbuild says
/// what was interrupted and exits 130, no process of the play is left
/// running, and the working container is kept and listed by
/// `ls --failed`. The next build starts that layer again.
#[test]
fn ctrl_c_and_sigterm_stop_the_running_play_and_keep_its_container_listed() {
    require_buildah();
    for (signal, whole_group) in [("INT", true), ("TERM", false)] {
        let ws = TestWs::new("chain");
        let marker = ws.path("../play-started");
        ws.append(
            "slurm-config/roles/slurm/tasks/main.yml",
            &format!(
                "- name: a long step\n  raw: touch {} && sleep 120\n  args: {{executable: /bin/sh}}\n  delegate_to: localhost\n",
                marker.display()
            ),
        );
        let mut c = Command::new(env!("CARGO_BIN_EXE_layerbuild"));
        c.arg("-C")
            .arg(&ws.root)
            .args(["build", "//compute/slurm"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let child = c.spawn().unwrap();
        let pid = child.id();
        let deadline = Instant::now() + Duration::from_secs(120);
        while !marker.exists() {
            assert!(
                Instant::now() < deadline,
                "the play never reached the long step"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let target = if whole_group {
            format!("-{pid}")
        } else {
            pid.to_string()
        };
        let sent = Instant::now();
        Command::new("kill")
            .args([&format!("-{signal}"), "--", &target])
            .status()
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            sent.elapsed() < Duration::from_secs(30),
            "SIG{signal}: took {:?}",
            sent.elapsed()
        );
        assert_eq!(out.status.code(), Some(130), "SIG{signal}: {stderr}");
        assert!(
            stderr.contains("interrupted: //compute/slurm not built")
                && stderr.contains("ls --failed"),
            "SIG{signal}: {stderr}"
        );
        // Nothing of the play runs on (the sleep was in its own group).
        std::thread::sleep(Duration::from_millis(500));
        let sleeping = Command::new("pgrep")
            .args(["-f", &format!("touch {}", marker.display())])
            .output()
            .unwrap();
        assert!(
            sleeping.stdout.is_empty(),
            "SIG{signal}: left running: {}",
            String::from_utf8_lossy(&sleeping.stdout)
        );
        let failed = ws.lb(&["ls", "--failed", "--json"]).ok().json();
        let listed = failed.to_string();
        assert!(
            listed.contains("//compute/slurm"),
            "SIG{signal}: not listed: {failed}"
        );
        // The next build runs the layer again (and is stopped by the same
        // long step: removed first).
        let tasks = ws
            .read("slurm-config/roles/slurm/tasks/main.yml")
            .edit("sleep 120", "true");
        ws.write("slurm-config/roles/slurm/tasks/main.yml", &tasks);
        let again = ws.lb(&["build", "--json", "//compute/slurm"]).ok().json();
        assert_eq!(
            TestWs::labels_with(&again, "built"),
            ["//compute/slurm"],
            "SIG{signal}: {again}"
        );
    }
}

/// Ctrl-C typed in a terminal while the live display runs and a task runs
/// in the container (where SIGINT is ignored: Ansible's workers ignore it,
/// and what they start inherits that): the build stops within the grace
/// periods (SIGTERM, then SIGKILL to the step), says so above the display,
/// exits 130, leaves the terminal clean (no bar left drawn, the cursor
/// shown), and the kept container is listed by `ls --failed`.
#[test]
fn ctrl_c_in_a_terminal_stops_a_task_in_the_container_and_leaves_the_screen_clean() {
    require_buildah();
    let ws = TestWs::new("chain");
    let marker = ws.path("../play-started");
    ws.append(
        "slurm-config/roles/slurm/tasks/main.yml",
        &format!(
            "- name: note the start\n  raw: touch {}\n  delegate_to: localhost\n- name: a long step in the container\n  raw: sleep 127\n",
            marker.display()
        ),
    );
    let typescript = ws.path("../typescript");
    let cmd = format!(
        "exec {} -C {} build //compute/slurm",
        env!("CARGO_BIN_EXE_layerbuild"),
        ws.root.display()
    );
    // `script` gives the build a pseudo-terminal; a ^C written to it is
    // what a terminal sends on Ctrl-C (SIGINT to the foreground group).
    let mut child = Command::new("script")
        .args(["-qfec", &cmd])
        .arg(&typescript)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("this test needs `script` (util-linux)");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !marker.exists() {
        assert!(
            Instant::now() < deadline,
            "the play never reached the long step"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(1500));
    let sent = Instant::now();
    {
        use std::io::Write;
        let stdin = child.stdin.as_mut().unwrap();
        stdin.write_all(b"\x03").unwrap();
        stdin.flush().unwrap();
    }
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            sent.elapsed() < Duration::from_secs(40),
            "still running after Ctrl-C"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let screen = String::from_utf8_lossy(&std::fs::read(&typescript).unwrap()).into_owned();
    assert_eq!(status.code(), Some(130), "{screen}");
    assert!(
        sent.elapsed() < Duration::from_secs(20),
        "took {:?}",
        sent.elapsed()
    );
    let said = screen
        .find("layerbuild: interrupted: stopping the running steps")
        .unwrap_or_else(|| panic!("no interrupt message in:\n{screen}"));
    let end = screen
        .find("interrupted: //compute/slurm not built")
        .unwrap_or_else(|| panic!("no final line in:\n{screen}"));
    assert!(said < end);
    // After the last line, no frame of the display is drawn again.
    let tail = &screen[end..];
    assert!(
        !tail.contains("layers"),
        "a bar was drawn after the end: {tail:?}"
    );
    // A hidden cursor is shown again.
    if let Some(hidden) = screen.rfind("\x1b[?25l") {
        assert!(
            screen[hidden..].contains("\x1b[?25h"),
            "the cursor is left hidden"
        );
    }
    let failed = ws.lb(&["ls", "--failed", "--json"]).ok().json();
    assert!(failed.to_string().contains("//compute/slurm"), "{failed}");
    let sleeping = Command::new("pgrep")
        .args(["-x", "sleep", "-a"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&sleeping.stdout).contains("sleep 127"),
        "left running: {}",
        String::from_utf8_lossy(&sleeping.stdout)
    );
}

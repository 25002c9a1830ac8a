//! Bad input: a clear message naming the file (and line), a hint, exit code
//! 2, no panic, and nothing written to the cache.

mod common;

use common::{Edit, Run, Test, TestWs};

#[track_caller]
fn assert_input_error(ws: &TestWs, run: &Run, must_contain: &[&str]) {
    assert_eq!(run.code, 2, "exit code\nstderr:\n{}", run.stderr);
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    assert!(run.stderr.starts_with("error: "), "{}", run.stderr);
    assert!(run.stderr.contains("hint: "), "no hint:\n{}", run.stderr);
    for s in must_contain {
        assert!(run.stderr.contains(s), "expected {s:?} in:\n{}", run.stderr);
    }
    assert!(!ws.db().exists(), "the cache was written on bad input");
    assert!(
        !ws.fingerprint_db().exists(),
        "the fingerprint cache was written on bad input"
    );
    assert!(
        !ws.path("cache/logs").exists(),
        "logs were written on bad input"
    );
}

fn with_layerfile(edit: impl Fn(String) -> String) -> TestWs {
    let ws = TestWs::new("chain");
    let lf = edit(ws.read("Layerfile.toml"));
    ws.write("Layerfile.toml", &lf);
    ws
}

#[test]
fn a_cycle() {
    let (ws, run) = Test::new("chain")
        .edit(
            "Layerfile.toml",
            "parent = \"scratch\"",
            "parent = \"//compute/slurm\"",
        )
        .args(&["build", "//compute/slurm"])
        .status(2)
        .run();
    assert_input_error(
        &ws,
        &run,
        &[
            "Layerfile.toml:",
            "cycle",
            "//base/hsn -> //compute/compute -> //compute/slurm -> //base/os -> //base/hsn",
        ],
    );
}

#[test]
fn an_unknown_parent() {
    let (ws, run) = Test::new("chain")
        .edit(
            "Layerfile.toml",
            "parent = \"//base/hsn\"\nscripts",
            "parent = \"//base/hns\"\nscripts",
        )
        .args(&["build", "//..."])
        .status(2)
        .run();
    assert_input_error(&ws, &run, &["Layerfile.toml:", "unknown parent //base/hns"]);
    insta::assert_snapshot!(run.stderr);
}

#[test]
fn a_malformed_label_in_the_layerfile() {
    let (ws, run) = Test::new("chain")
        .edit("Layerfile.toml", "[layers.\"uan/uan\"]", "[layers.\"uan\"]")
        .args(&["build", "//..."])
        .status(2)
        .run();
    assert_input_error(&ws, &run, &["Layerfile.toml:", "IMAGE_TYPE/LAYER"]);
}

#[test]
fn a_malformed_label_on_the_command_line() {
    let ws = TestWs::new("chain");
    let run = ws.lb(&["build", "compute/slurm"]);
    assert_input_error(&ws, &run, &["did you mean '//compute/slurm'"]);
    let run = ws.lb(&["build", "//compute/slurmm"]);
    assert_input_error(&ws, &run, &["matches no layer", "//compute/slurm"]);
}

#[test]
fn a_missing_playbook() {
    let (ws, run) = Test::new("chain")
        .remove("slurm-config/slurm.yml")
        .args(&["build", "//compute/slurm"])
        .status(2)
        .run();
    assert_input_error(
        &ws,
        &run,
        &[
            "Layerfile.toml:",
            "playbook 'slurm-config/slurm.yml'",
            "does not exist",
        ],
    );
}

#[test]
fn a_missing_role() {
    let ws = TestWs::new("chain");
    ws.write(
        "slurm-config/slurm.yml",
        "- hosts: Compute\n  gather_facts: false\n  roles:\n    - slurm\n    - munge\n",
    );
    let run = ws.lb(&["build", "//compute/slurm"]);
    assert_input_error(
        &ws,
        &run,
        &[
            "slurm-config/slurm.yml:5",
            "role 'munge' not found",
            "slurm-config/roles/munge",
        ],
    );
    // Each place searched is named once (the playbook's directory is the
    // source here: two candidates, one path).
    let hint = run
        .stderr
        .lines()
        .find(|l| l.contains("searched "))
        .unwrap_or_else(|| panic!("no hint: {}", run.stderr));
    let places: Vec<&str> = hint
        .split("searched ")
        .nth(1)
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .split(", ")
        .collect();
    let mut unique = places.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(places.len(), unique.len(), "a place named twice: {hint}");
    assert!(places.contains(&"slurm-config/munge"), "{hint}");
}

#[test]
fn an_unknown_key() {
    let (ws, run) = Test::new("chain")
        .edit(
            "Layerfile.toml",
            "playbook = \"slurm.yml\"",
            "playbok = \"slurm.yml\"",
        )
        .args(&["build", "//compute/slurm"])
        .status(2)
        .run();
    assert_input_error(
        &ws,
        &run,
        &["Layerfile.toml:", "unknown field `playbok`", "playbook"],
    );
    insta::assert_snapshot!(run.stderr);
}

#[test]
fn a_toml_syntax_error() {
    let (ws, run) = Test::new("chain")
        .edit(
            "Layerfile.toml",
            "[layers.\"base/hsn\"]",
            "[layers.\"base/hsn\"",
        )
        .args(&["build", "//..."])
        .status(2)
        .run();
    assert_input_error(&ws, &run, &["Layerfile.toml:19", "expected `]`"]);
}

/// An error far along a long line (past column 65,535) shows the part of
/// the line around it, with the caret under the column, and no panic.
#[test]
fn a_syntax_error_at_the_end_of_a_very_long_line() {
    let ws = with_layerfile(|s| format!("{s}\nnote = \"{}\" ?\n", "a".repeat(70_000)));
    let run = ws.lb(&["build", "//compute/slurm"]);
    assert_input_error(&ws, &run, &["Layerfile.toml:", "..."]);
    assert!(
        run.stderr.lines().all(|l| l.chars().count() < 400),
        "{}",
        &run.stderr[..run.stderr.len().min(2000)]
    );
    // The line is cut where it is long, and the caret stands under the `?`.
    let lines: Vec<&str> = run.stderr.lines().collect();
    let caret = lines
        .iter()
        .position(|l| l.ends_with('^'))
        .unwrap_or_else(|| panic!("no caret:\n{}", run.stderr));
    let (src, at) = (lines[caret - 1], lines[caret].chars().count() - 1);
    assert!(src.contains("..."), "{src}");
    assert_eq!(src.chars().nth(at), Some('?'), "{src}\n{}", lines[caret]);
}

/// A role's task file that is not UTF-8 is bad input (exit 2) naming the
/// file, line and byte, not a failure of the machine.
#[test]
fn invalid_utf8_in_a_role_task_file() {
    let ws = TestWs::new("chain");
    std::fs::write(
        ws.path("slurm-config/roles/slurm/tasks/main.yml"),
        b"- name: ok\n  debug:\n    msg: \"caf\xe9\"\n",
    )
    .unwrap();
    let run = ws.lb(&["build", "//compute/slurm"]);
    assert_input_error(
        &ws,
        &run,
        &[
            "slurm-config/roles/slurm/tasks/main.yml:3:",
            "not valid UTF-8 (at byte 33",
        ],
    );
}

/// A task file whose aliases expand to billions of nodes (1 KB of text,
/// nine aliases nine deep) is refused at the alias that crosses the bound,
/// quickly and in little memory.
#[test]
fn a_yaml_alias_bomb_in_a_role_task_file() {
    let ws = TestWs::new("chain");
    let mut bomb = String::from("- name: x\n  debug:\n    msg: hi\n  vars:\n    a0: &a0 [x]\n");
    for l in 1..10 {
        let refs = vec![format!("*a{}", l - 1); 9].join(", ");
        bomb.push_str(&format!("    a{l}: &a{l} [{refs}]\n"));
    }
    ws.write("slurm-config/roles/slurm/tasks/main.yml", &bomb);
    let run = ws.lb(&["build", "//compute/slurm"]);
    assert_input_error(
        &ws,
        &run,
        &[
            "slurm-config/roles/slurm/tasks/main.yml:",
            "aliases expand to more than",
        ],
    );
}

#[test]
fn a_yaml_syntax_error_in_a_playbook() {
    let ws = TestWs::new("chain");
    ws.write(
        "slurm-config/slurm.yml",
        "- hosts: Compute\n  roles: [slurm\n",
    );
    let run = ws.lb(&["build", "//compute/slurm"]);
    assert_input_error(&ws, &run, &["slurm-config/slurm.yml:", "YAML syntax error"]);
}

#[test]
fn an_unpinned_external_parent() {
    let (ws, run) = Test::new("chain")
        .edit(
            "Layerfile.toml",
            "parent = \"scratch\"",
            "parent = \"docker.io/library/debian:bookworm\"",
        )
        .args(&["build", "//..."])
        .status(2)
        .run();
    assert_input_error(
        &ws,
        &run,
        &["Layerfile.toml:", "pinned by digest", "@sha256:"],
    );
}

#[test]
fn a_label_that_cannot_be_an_image_name_is_refused_at_load() {
    // Each would pass a looser check, run its play, then fail at
    // `buildah commit: invalid reference format` with the container kept.
    let long = "x".repeat(300);
    for bad in ["b-", "b.", "x_", "b..c", "b__-c", long.as_str()] {
        let (ws, run) = Test::new("chain")
            .edit(
                "Layerfile.toml",
                "[layers.\"uan/uan\"]",
                &format!("[layers.\"uan/{bad}\"]"),
            )
            .args(&["build", "//...", "--dry-run"])
            .status(2)
            .run();
        assert_input_error(&ws, &run, &["Layerfile.toml:", "image name"]);
        // `lint` reports it as a finding (exit 1), with the line.
        let run = ws.lb(&["lint"]);
        assert_eq!(run.code, 1, "{}", run.stderr);
        let out = format!("{}{}", run.stdout, run.stderr);
        assert!(
            out.contains("Layerfile.toml:35:") && out.contains("image name"),
            "{out}"
        );
    }
}

#[test]
fn a_workspace_name_that_cannot_be_an_image_name_is_refused_at_load() {
    let ws = with_layerfile(|s| {
        let (head, rest) = s
            .split_once("\nname = \"")
            .expect("the fixture names its workspace");
        let rest = rest.split_once('"').expect("a quoted name").1;
        format!("{head}\nname = \"site..a\"{rest}")
    });
    let run = ws.lb(&["build", "//...", "--dry-run"]);
    assert_input_error(&ws, &run, &["Layerfile.toml:4", "workspace name 'site..a'"]);
}

#[test]
fn a_malformed_pin_is_refused_at_load() {
    let good = format!(
        "registry.example.org:5000/hpc/base@sha256:{}",
        "a".repeat(64)
    );
    for (bad, why) in [
        ("debian@sha256:zz".to_string(), "64 lower-case hex"),
        (
            format!("debian@sha256:{}", "A".repeat(64)),
            "64 lower-case hex",
        ),
        (format!("@sha256:{}", "a".repeat(64)), "empty"),
        (
            format!("Debian@sha256:{}", "a".repeat(64)),
            "lower-case name",
        ),
        (
            format!("bad_host:x/debian@sha256:{}", "a".repeat(64)),
            "host[:port]",
        ),
    ] {
        let (ws, run) = Test::new("chain")
            .edit(
                "Layerfile.toml",
                "parent = \"scratch\"",
                &format!("parent = \"{bad}\""),
            )
            .args(&["build", "//...", "--dry-run"])
            .status(2)
            .run();
        assert_input_error(
            &ws,
            &run,
            &["Layerfile.toml:", "not a valid pinned image", why],
        );
    }
    // A well-formed pin passes the Layerfile check (and fails later only
    // because no registry serves it).
    let ws = with_layerfile(|s| s.edit("parent = \"scratch\"", &format!("parent = \"{good}\"")));
    let run = ws.lb(&["lint"]);
    assert!(
        !run.stderr.contains("not a valid pinned image"),
        "{}",
        run.stderr
    );
}

#[test]
fn an_absolute_path() {
    let (ws, run) = Test::new("chain")
        .edit(
            "Layerfile.toml",
            "source = \"slurm-config\"",
            "source = \"/etc\"",
        )
        .args(&["build", "//..."])
        .status(2)
        .run();
    assert_input_error(&ws, &run, &["Layerfile.toml:", "absolute"]);
}

#[test]
fn a_missing_script() {
    let (ws, run) = Test::new("chain")
        .remove("scripts/uan.sh")
        .args(&["build", "//..."])
        .status(2)
        .run();
    assert_input_error(&ws, &run, &["Layerfile.toml:", "script 'scripts/uan.sh'"]);
}

#[test]
fn a_duplicate_layer_across_an_include() {
    let ws =
        with_layerfile(|s| s.replacen("name = \"", "include = [\"layers/*.toml\"]\nname = \"", 1));
    ws.write(
        "layers/extra.toml",
        "[layers.\"uan/uan\"]\nparent = \"scratch\"\n",
    );
    let run = ws.lb(&["build", "//..."]);
    assert_input_error(&ws, &run, &["declared twice", "first declared at"]);
}

#[test]
fn systems_must_be_chosen_when_several_exist() {
    let ws = with_layerfile(|s| s + "\n[systems.other]\ninventory = \"inventory/test\"\n");
    let run = ws.lb(&["build", "//..."]);
    assert_input_error(&ws, &run, &["several systems", "--system", "other, test"]);
    let run = ws.lb(&["build", "//...", "--system", "nope"]);
    assert_input_error(&ws, &run, &["unknown system 'nope'", "other, test"]);
}

#[test]
fn no_workspace() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_layerbuild"))
        .args(["-C", dir.path().to_str().unwrap(), "ls"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no Layerfile.toml found") && err.contains("-C DIR"),
        "{err}"
    );
}

#[test]
fn bad_flags() {
    let ws = TestWs::new("chain");
    let run = ws.lb(&["build", "//...", "--jobs", "zero"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    let run = ws.lb(&["build", "//...", "--jobs", "0"]);
    assert_input_error(&ws, &run, &["at least 1"]);
    let run = ws.lb(&["build"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(!ws.db().exists());
}

#[test]
fn a_closed_stdout_pipe_ends_quietly() {
    let ws = TestWs::new("chain");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_layerbuild"))
        .arg("-C")
        .arg(&ws.root)
        .args(["graph", "--format", "json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Close the read end before the program writes.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(out.status.code().is_some(), "killed by a signal");
}

#[test]
fn a_missing_ansible_playbook_is_named_before_anything_is_built() {
    common::require_buildah();
    let mut ws = TestWs::new("chain");
    ws.env.push((
        "LAYERBUILD_ANSIBLE_PLAYBOOK".into(),
        "/nonexistent/ansible-playbook".into(),
    ));
    let run = ws.lb(&["build", "//compute/compute"]);
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(
        run.stderr.contains("/nonexistent/ansible-playbook")
            && run.stderr.contains("apt-get install -y ansible"),
        "{}",
        run.stderr
    );
    assert!(ws.cached_digests().is_empty(), "nothing was built");
}

/// An unusable cache directory: exit 3, the path, what is wrong with it
/// and what to do, before anything is built.
#[track_caller]
fn assert_cache_error(run: &Run, must_contain: &[&str]) {
    assert_eq!(run.code, 3, "exit code\nstderr:\n{}", run.stderr);
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    assert!(run.stderr.contains("hint: "), "no hint:\n{}", run.stderr);
    for s in must_contain {
        assert!(run.stderr.contains(s), "expected {s:?} in:\n{}", run.stderr);
    }
}

#[test]
fn a_cache_that_is_a_dangling_link_is_named_with_its_target() {
    let ws = TestWs::new("chain");
    std::os::unix::fs::symlink("/nonexistent/layerbuild-cache", ws.path("cache")).unwrap();
    let run = ws.lb(&["build", "//base/os"]);
    assert_cache_error(
        &run,
        &["cache is a symbolic link to /nonexistent/layerbuild-cache, which does not exist"],
    );
}

#[test]
fn a_cache_that_is_a_file_is_named() {
    let ws = TestWs::new("chain");
    ws.write("cache", "not a directory\n");
    let run = ws.lb(&["build", "//base/os"]);
    assert_cache_error(&run, &["cache is a file where a directory is needed"]);
}

#[test]
fn a_read_only_cache_says_so() {
    let ws = TestWs::new("chain");
    let cache = ws.path("cache");
    std::fs::create_dir(&cache).unwrap();
    let c = cache.to_str().unwrap();
    let mount = |args: &[&str]| {
        let ok = std::process::Command::new("mount").args(args).status();
        assert!(
            ok.is_ok_and(|s| s.success()),
            "mount {args:?} failed: this test needs root and mount(8)"
        );
    };
    mount(&["--bind", c, c]);
    mount(&["-o", "remount,bind,ro", c]);
    let run = ws.lb(&["build", "//base/os"]);
    let _ = std::process::Command::new("umount").arg(c).status();
    assert_cache_error(&run, &["Read-only file system", "writable directory"]);
}

#[test]
fn a_machine_failure_during_a_build_says_its_cause_with_exit_3() {
    // The triggers: the cache's `tmp` directory, or the storage's lock
    // directory (`ROOT/layerbuild/locks`), replaced by a file. The layer's
    // own steps never ran: not a build failure (exit 1).
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().join("storage");
    let locks = storage.join("layerbuild/locks");
    let locks_s = locks.display().to_string();
    let storage_s = storage.display().to_string();
    for (broken, global) in [
        ("cache/tmp".to_string(), vec![]),
        (locks_s.clone(), vec!["--storage-root", storage_s.as_str()]),
    ] {
        let ws = TestWs::new("chain");
        std::fs::create_dir_all(ws.path("cache")).unwrap();
        if broken == locks_s {
            std::fs::create_dir_all(locks.parent().unwrap()).unwrap();
            std::fs::write(&locks, "not a directory\n").unwrap();
        } else {
            ws.write(&broken, "not a directory\n");
        }
        let args = |json: bool| -> Vec<&str> {
            let mut a = global.clone();
            a.extend(["build", "//base/os"]);
            if json {
                a.push("--json");
            }
            a
        };
        let run = ws.lb(&args(false));
        assert_cache_error(
            &run,
            &[
                "error: build failed: //base/os: ",
                &format!("{broken} is a file where a directory is needed"),
            ],
        );
        let run = ws.lb(&args(true));
        assert_eq!(run.code, 3, "{}", run.stderr);
        let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
        let layer = &v["layers"][0];
        assert_eq!(layer["status"], "failed", "{layer}");
        assert_eq!(layer["environment"], true, "{layer}");
        assert!(
            layer["hint"]
                .as_str()
                .unwrap()
                .contains("a directory is needed"),
            "{layer}"
        );
    }
}

#[test]
fn a_toml_error_on_a_line_with_a_secret_does_not_show_it() {
    let secret = r#"pl4nted-s3cret\"q"#;
    let ws = with_layerfile(|s| {
        s.edit(
            "vars = { cluster_name = \"testcluster\" }",
            &format!(
                "vars = {{ cluster_name = \"testcluster\", munge_key = \"{secret}\" ,, }}\nsecret_vars = [\"munge_key\"]"
            ),
        )
    });
    assert!(ws.read("Layerfile.toml").contains(secret));
    for args in [
        &["build", "//..."][..],
        &["ls"],
        &["lint"],
        &["hash", "//base/os"],
    ] {
        let run = ws.lb(args);
        assert_ne!(run.code, 0, "{args:?}");
        let out = format!("{}{}", run.stdout, run.stderr);
        assert!(out.contains("Layerfile.toml:12:"), "{args:?}: {out}");
        // `lint` lists the error without the excerpt.
        assert!(
            !out.contains("munge_key") || out.contains("munge_key = \"****"),
            "{args:?}: {out}"
        );
        assert!(
            !out.contains("pl4nted"),
            "{args:?} shows the secret:\n{out}"
        );
    }
}

/// The harness itself: an edit whose text is absent fails the test, so no
/// test here can pass because its edit changed nothing.
#[test]
#[should_panic(expected = "the text to edit has no")]
fn an_edit_of_absent_text_fails_the_test() {
    let _ = Test::new("chain").edit("Layerfile.toml", "no such text", "x");
}

/// Per-runner settings the documented way: the storage, the system and
/// the cache mode from the environment (`LAYERBUILD_STORAGE_ROOT`,
/// `LAYERBUILD_SYSTEM`, `LAYERBUILD_CACHE_MODE`), checked like the flags.
#[test]
fn per_runner_settings_come_from_the_environment() {
    let ws = TestWs::new("chain");
    let storage = ws.path("../runner-storage");
    let storage = storage.to_str().unwrap();
    let run = common::lb_in(
        &ws.root,
        &["build", "--dry-run", "-v", "//base/os"],
        &[("LAYERBUILD_STORAGE_ROOT", storage)],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains("CONTAINERS_STORAGE_CONF="),
        "{}",
        run.stdout
    );
    let conf = ws.read("cache/storage/storage.conf");
    assert!(
        conf.contains(&format!("graphroot = \"{storage}\"")),
        "{conf}"
    );

    let run = common::lb_in(
        &ws.root,
        &["build", "--dry-run", "//base/os"],
        &[("LAYERBUILD_SYSTEM", "nope")],
    );
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("unknown system 'nope'"),
        "{}",
        run.stderr
    );

    let run = common::lb_in(
        &ws.root,
        &["build", "--dry-run", "//base/os"],
        &[("LAYERBUILD_CACHE_MODE", "bogus")],
    );
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("--cache-mode"), "{}", run.stderr);
}

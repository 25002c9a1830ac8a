//! The command line as a whole: one vocabulary of statuses across
//! commands, `version` in every JSON object and errors as JSON under
//! `--json`, label patterns and several systems where they make sense,
//! `-q`/`-v`, help headings, `completions`, `man` and `init`.
//!
//! Most run in-process on the recording backend; `init` then `build` runs
//! the real binary with buildah.

mod common;

use std::collections::BTreeMap;

use common::{Edit, TestWs, require_buildah};

/// label -> the `status` of each entry of `entries`.
fn statuses(entries: &serde_json::Value) -> BTreeMap<String, String> {
    entries
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {entries}"))
        .iter()
        .map(|e| {
            (
                e["label"].as_str().unwrap().to_string(),
                e["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn ls_graph_dry_run_why_and_build_say_a_state_in_the_same_words() {
    let ws = TestWs::every_status();
    let ls = statuses(&ws.lb(&["ls", "--json"]).ok().json()["layers"]);
    let expected: BTreeMap<String, String> = [
        ("//base/os", "up_to_date"),
        ("//base/hsn", "up_to_date"),
        ("//compute/compute", "needs_build"),
        ("//compute/slurm", "never_built"),
        ("//uan/uan", "failed"),
    ]
    .into_iter()
    .map(|(l, s)| (l.to_string(), s.to_string()))
    .collect();
    assert_eq!(ls, expected);

    // graph --status: the same words.
    let graph = ws.lb(&["graph", "--status", "--json"]).ok().json();
    assert_eq!(statuses(&graph["nodes"]), expected);

    // build --dry-run: the same words (it does not read the history, so a
    // layer whose only build failed was never built).
    let plan = statuses(&ws.lb(&["build", "-n", "--json", "//..."]).ok().json()["layers"]);
    for (label, word) in &expected {
        let want = if word == "failed" {
            "never_built"
        } else {
            word
        };
        assert_eq!(plan[label], want, "{label}");
    }

    // why: the same words, for every layer at once (a pattern).
    let why = ws.lb(&["why", "--json", "//..."]).ok().json();
    assert_eq!(why["version"], 1);
    let why = statuses(&why["layers"]);
    for (label, word) in &expected {
        let want = if word == "failed" {
            "never_built"
        } else {
            word
        };
        assert_eq!(why[label], want, "{label}");
    }

    // The text of each says the words with spaces, never the old ones.
    let texts = [
        ws.lb(&["ls"]).ok().stdout,
        ws.lb(&["build", "-n", "//..."]).ok().stdout,
        ws.lb(&["graph", "--status", "--format", "text"])
            .ok()
            .stdout,
        ws.lb(&["why", "//..."]).ok().stdout,
    ];
    for text in &texts {
        for old in [" cached", " fresh ", " dirty ", "needs a rebuild", "needs_"] {
            assert!(!text.contains(old), "{old:?} in:\n{text}");
        }
    }
    let ls_text = &texts[0];
    for (label, word) in &expected {
        let line = ls_text
            .lines()
            .find(|l| l.starts_with(label.as_str()))
            .unwrap();
        assert!(line.contains(&word.replace('_', " ")), "{line}");
    }
    assert!(
        texts[1].contains("//base/os          up to date   reuses "),
        "{}",
        texts[1]
    );
    assert!(
        texts[3].contains("//compute/compute needs build ("),
        "{}",
        texts[3]
    );

    // build --json: a layer reused is `up_to_date`, as ls says of it.
    let built = ws.lb(&["build", "--json", "//base/hsn"]).ok().json();
    assert_eq!(statuses(&built["layers"])["//base/hsn"], "up_to_date");
    assert_eq!(built["cached"], 2, "{built}");
    assert_eq!(TestWs::labels_with(&built, "up_to_date").len(), 2);
}

/// Every command's `--json` is an object with `version` 1.
#[test]
fn every_json_object_has_a_version() {
    let ws = TestWs::recorded("chain");
    ws.lb(&["build", "//..."]).ok();
    let out = ws.path("../os.tar");
    let out = out.to_str().unwrap();
    for args in [
        &["build", "--json", "//..."][..],
        &["build", "-n", "--json", "//..."],
        &["ls", "--json"],
        &["ls", "--failed", "--json"],
        &["hash", "--json", "//base/os"],
        &["hash", "--json", "//base/..."],
        &["why", "--json", "//base/os"],
        &["why", "--json", "//base/..."],
        &["hash-diff", "--json", "3f", "3f"],
        &["graph", "--json"],
        &["graph", "--status", "--json"],
        &["history", "--json"],
        &["releases", "--json"],
        &["test", "--json", "//base/os"],
        &["test", "--json", "//..."],
        &[
            "export",
            "--json",
            "//base/os",
            "-f",
            "rootfs-tar",
            "-o",
            out,
        ],
        &["push", "--json", "//base/os", "registry.example.org/x"],
        &["gc", "-n", "--json"],
        &["cache", "verify", "--json"],
        &["cache", "rebuild-index", "--json"],
    ] {
        let run = ws.lb(args);
        if args[0] == "hash-diff" {
            // Digest prefixes of this run are not known here: an error,
            // which is JSON too.
            assert_eq!(run.json()["version"], 1, "{args:?}: {}", run.stdout);
            continue;
        }
        let json = run.ok().json();
        assert!(json.is_object(), "{args:?}: {json}");
        assert_eq!(json["version"], 1, "{args:?}: {json}");
    }
    // export and push: the output's fields beside the version.
    let e = ws
        .lb(&[
            "export",
            "--json",
            "--force",
            "//base/os",
            "-f",
            "rootfs-tar",
            "-o",
            out,
        ])
        .ok()
        .json();
    assert_eq!(
        (e["label"].as_str(), e["format"].as_str()),
        (Some("//base/os"), Some("rootfs-tar"))
    );
}

#[test]
fn a_failing_json_command_says_its_error_as_json_with_the_same_exit_code() {
    let ws = TestWs::recorded("chain");
    // An unknown label: an input error, exit 2.
    let run = ws.lb(&["why", "--json", "//nope/x"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    let j = run.json();
    assert_eq!(j["version"], 1);
    assert_eq!(j["error"]["kind"], "input");
    assert_eq!(j["error"]["message"], "//nope/x matches no layer");
    assert_eq!(j["error"]["exit_code"], 2);
    assert!(
        j["error"]["hint"]
            .as_str()
            .unwrap()
            .contains("layerbuild ls")
    );
    // stderr still has the message for people.
    assert!(
        run.stderr.contains("error: //nope/x matches no layer"),
        "{}",
        run.stderr
    );
    // Without --json, stdout stays empty.
    let run = ws.lb(&["why", "//nope/x"]);
    assert_eq!((run.code, run.stdout.as_str()), (2, ""));

    // A bad Layerfile: the file and the line.
    let lf = ws
        .read("Layerfile.toml")
        .edit("jobs = 2", "jobs = 2\nbogus = 1");
    ws.write("Layerfile.toml", &lf);
    let run = ws.lb(&["ls", "--json"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    let e = &run.json()["error"];
    assert_eq!(e["kind"], "input", "{e}");
    assert!(
        e["file"].as_str().unwrap().ends_with("Layerfile.toml"),
        "{e}"
    );
    assert_eq!(e["line"], 9, "{e}");
    assert!(e["message"].as_str().unwrap().contains("bogus"), "{e}");

    // A command line clap rejects, with --json: JSON too, clap's text on
    // stderr, exit 2.
    let run = common::lb_in(&ws.root, &["ls", "--json", "--bogus"], &[]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    let e = &run.json()["error"];
    assert_eq!(e["message"], "unexpected argument '--bogus' found", "{e}");
    assert!(
        run.stderr.contains("Usage: layerbuild ls"),
        "{}",
        run.stderr
    );
    let run = common::lb_in(&ws.root, &["ls", "--bogus"], &[]);
    assert_eq!((run.code, run.stdout.as_str()), (2, ""));
}

#[test]
fn a_build_that_fails_says_its_report_once_not_an_error_object() {
    let ws = TestWs::recorded("chain");
    ws.rec().fail_label("//base/os");
    let run = ws.lb(&["build", "--json", "//base/os"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let j = run.json();
    assert!(j.get("error").is_none(), "{j}");
    assert_eq!(statuses(&j["layers"])["//base/os"], "failed");
}

#[test]
fn commands_about_layers_take_patterns() {
    let ws = TestWs::recorded("chain");
    ws.lb(&["build", "//..."]).ok();

    // test: each matching layer, in topological order ("malformed" before).
    let t = ws.lb(&["test", "--json", "//compute/..."]).ok().json();
    let labels: Vec<&str> = t["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["label"].as_str().unwrap())
        .collect();
    assert_eq!(labels, ["//compute/compute", "//compute/slurm"]);
    // --all adds the ancestors, once each.
    let t = ws
        .lb(&["test", "--json", "--all", "//compute/..."])
        .ok()
        .json();
    assert_eq!(t["layers"].as_array().unwrap().len(), 4, "{t}");

    // hash: a block per layer; --json a list.
    let h = ws.lb(&["hash", "//base/..."]).ok().stdout;
    let blocks: Vec<&str> = h.split("\n\n").collect();
    assert_eq!(blocks.len(), 2, "{h}");
    assert!(blocks[0].contains("label:    //base/os"), "{h}");
    assert!(blocks[1].contains("label:    //base/hsn"), "{h}");
    let h = ws.lb(&["hash", "--json", "//..."]).ok().json();
    assert_eq!(h["layers"].as_array().unwrap().len(), 5, "{h}");
    // One label named exactly keeps its object.
    let h = ws.lb(&["hash", "--json", "//base/os"]).ok().json();
    assert_eq!(h["label"], "//base/os");

    // ls: only the layers named.
    let ls = ws
        .lb(&["ls", "--json", "//compute/...", "//uan/uan"])
        .ok()
        .json();
    let listed: Vec<String> = statuses(&ls["layers"]).into_keys().collect();
    assert_eq!(
        listed,
        ["//compute/compute", "//compute/slurm", "//uan/uan"]
    );

    // log, export, push, debug: a pattern that matches one layer is fine...
    let log = ws.lb(&["log", "//uan/..."]).ok();
    assert!(log.stderr.contains("//uan/uan"), "{}", log.stderr);
    // ...more than one is an error naming them.
    for args in [
        &["log", "//compute/..."][..],
        &["export", "//compute/...", "-f", "rootfs-tar", "-o", "x.tar"],
        &["push", "//compute/...", "registry.example.org/x"],
        &["debug", "//compute/..."],
    ] {
        let run = ws.lb(args);
        assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
        assert!(
            run.stderr
                .contains("//compute/... matches 2 layers (//compute/compute, //compute/slurm)"),
            "{args:?}: {}",
            run.stderr
        );
    }
}

/// The chain fixture with a second system.
fn two_systems() -> TestWs {
    let ws = TestWs::recorded("chain");
    ws.append(
        "Layerfile.toml",
        "\n[systems.other]\ninventory = \"inventory/test\"\nvars = { cluster_name = \"othercluster\" }\n",
    );
    ws
}

#[test]
fn several_systems_or_all_where_they_make_sense() {
    let ws = two_systems();
    // Without --system, several declared: an error, as before, that
    // says how to name them all.
    let run = ws.lb(&["ls"]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("or every one of them: --system all"),
        "{}",
        run.stderr
    );
    ws.lb(&["build", "--system", "test", "//compute/compute"])
        .ok();

    // ls: every layer for each system.
    let ls = ws.lb(&["ls", "--json", "--system", "all"]).ok().json();
    let entries = ls["layers"].as_array().unwrap();
    assert_eq!(entries.len(), 10, "{ls}");
    let of = |sys: &str, label: &str| {
        entries
            .iter()
            .find(|e| e["system"] == sys && e["label"] == label)
            .unwrap_or_else(|| panic!("{sys} {label} in {ls}"))
            .clone()
    };
    assert_eq!(of("test", "//compute/compute")["status"], "up_to_date");
    assert_eq!(of("other", "//compute/compute")["status"], "never_built");
    // The vars differ: so do the digests of the Ansible layer, not the base.
    assert_ne!(
        of("test", "//compute/compute")["digest"],
        of("other", "//compute/compute")["digest"]
    );
    assert_eq!(
        of("test", "//base/os")["digest"],
        of("other", "//base/os")["digest"]
    );
    let text = ws
        .lb(&["ls", "--system", "test", "--system", "other"])
        .ok()
        .stdout;
    assert!(
        text.lines().any(|l| l.contains("//compute/compute")
            && l.contains(" other ")
            && l.contains("never built")),
        "{text}"
    );

    // hash, why: a report per layer and system.
    let h = ws
        .lb(&[
            "hash",
            "--json",
            "--system",
            "test",
            "--system",
            "other",
            "//compute/compute",
        ])
        .ok()
        .json();
    let systems: Vec<&str> = h["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["system"].as_str().unwrap())
        .collect();
    assert_eq!(systems, ["test", "other"]);
    let w = ws
        .lb(&["why", "--json", "--system", "all", "//compute/compute"])
        .ok()
        .json();
    let w: Vec<(&str, &str)> = w["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["system"].as_str().unwrap(), l["status"].as_str().unwrap()))
        .collect();
    assert_eq!(w, [("other", "never_built"), ("test", "up_to_date")]);

    // build --dry-run: a plan per system.
    let p = ws
        .lb(&[
            "build",
            "-n",
            "--json",
            "--system",
            "all",
            "//compute/compute",
        ])
        .ok()
        .json();
    assert_eq!(p["version"], 1);
    let plans = p["plans"].as_array().unwrap();
    assert_eq!(plans.len(), 2, "{p}");
    assert_eq!(plans[0]["system"], "other");
    // The base layers are the same for both (no system vars): only the
    // Ansible layer is to build for the other system.
    assert_eq!(plans[0]["dirty"], 1);
    assert_eq!(plans[1]["dirty"], 0);
    let text = ws
        .lb(&["build", "-n", "--system", "all", "//compute/compute"])
        .ok()
        .stdout;
    assert!(
        text.starts_with("system other:\n") && text.contains("\nsystem test:\n"),
        "{text}"
    );

    // A command that works on one system says so.
    for args in [
        &["build", "--system", "all", "//base/os"][..],
        &[
            "build",
            "--system",
            "test",
            "--system",
            "other",
            "//base/os",
        ],
        &["graph", "--status", "--system", "all"],
        &["test", "--system", "all", "//base/os"],
        &["log", "--system", "all", "//base/os"],
    ] {
        let run = ws.lb(args);
        assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
        assert!(
            run.stderr
                .contains(&format!("`{}` works on one system at a time", args[0])),
            "{args:?}: {}",
            run.stderr
        );
    }
    // An unknown system among several: named.
    let run = ws.lb(&["ls", "--system", "test", "--system", "nope"]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("unknown system 'nope'"),
        "{}",
        run.stderr
    );
}

#[test]
fn quiet_says_only_the_report_and_verbose_says_more() {
    let ws = TestWs::recorded("chain");
    let loud = ws.lb(&["build", "//base/os"]).ok();
    assert!(loud.stderr.contains("//base/os"), "{}", loud.stderr);
    let quiet = ws.lb(&["-q", "build", "//base/hsn"]).ok();
    assert_eq!(quiet.stderr, "", "progress under -q");
    assert!(quiet.stdout.contains("1 built"), "{}", quiet.stdout);
    // After the command too; and its errors still say themselves.
    let run = ws.lb(&["build", "--quiet", "//nope/x"]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("error: //nope/x matches no layer"),
        "{}",
        run.stderr
    );
    // -q and -v together: refused.
    assert_eq!(ws.lb(&["-q", "-v", "ls"]).code, 2);

    // -v: ls shows the image names of the layers up to date.
    let plain = ws.lb(&["ls"]).ok().stdout;
    let verbose = ws.lb(&["ls", "-v"]).ok().stdout;
    assert!(!plain.contains("localhost/layerbuild/"), "{plain}");
    let os = verbose
        .lines()
        .find(|l| l.starts_with("//base/os"))
        .unwrap();
    assert!(
        os.contains(&format!("localhost/layerbuild/{}/base/os:", ws.name)),
        "{verbose}"
    );
    // hash -v: the input files.
    let h = ws.lb(&["hash", "-v", "//base/os"]).ok().stdout;
    assert!(h.contains("\n    scripts/busybox-root.sh\n"), "{h}");
}

#[test]
fn help_separates_global_options_from_the_commands_own() {
    let ws = TestWs::recorded("chain");
    let help = ws.lb(&["build", "--help"]).stdout;
    let global = help.find("Global options:").expect(&help);
    let own = help.find("\nOptions:").expect(&help);
    assert!(own < global, "{help}");
    for flag in ["--dry-run", "--keep-going", "--json"] {
        let at = help.find(flag).unwrap();
        assert!(own < at && at < global, "{flag} under Options:\n{help}");
    }
    for flag in [
        "--storage-root",
        "--quiet",
        "--verbose",
        "--progress",
        "--color",
        "-C <DIR>",
    ] {
        assert!(
            help.find(flag).unwrap() > global,
            "{flag} under Global options:\n{help}"
        );
    }
}

fn lb(args: &[&str]) -> common::Run {
    let dir = tempfile::tempdir().unwrap();
    common::lb_in(dir.path(), args, &[])
}

#[test]
fn completions_source_in_bash_and_man_pages_render() {
    let bin = env!("CARGO_BIN_EXE_layerbuild");
    let out = std::process::Command::new("bash")
        .args([
            "-c",
            &format!("source <('{bin}' completions bash) && complete -p layerbuild"),
        ])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("-F _layerbuild layerbuild"), "{said}");
    let zsh = lb(&["completions", "zsh"]).ok().stdout;
    assert!(zsh.starts_with("#compdef layerbuild"), "{zsh}");
    assert_eq!(lb(&["completions", "tcsh"]).code, 2);

    let man = lb(&["man"]).ok().stdout;
    assert!(man.contains(".TH layerbuild 1"), "{man}");
    assert!(man.contains("layerbuild\\-build"), "{man}");
    let dir = tempfile::tempdir().unwrap();
    let pages = dir.path().join("man1");
    lb(&["man", pages.to_str().unwrap()]).ok();
    for page in [
        "layerbuild.1",
        "layerbuild-build.1",
        "layerbuild-cache-verify.1",
    ] {
        let text =
            std::fs::read_to_string(pages.join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(text.contains(".TH"), "{page}");
    }
}

#[test]
fn init_refuses_to_write_over_a_workspace() {
    let ws = TestWs::recorded("chain");
    let before = ws.read("Layerfile.toml");
    let run = ws.lb(&["init"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("Layerfile.toml already exists"),
        "{}",
        run.stderr
    );
    assert_eq!(ws.read("Layerfile.toml"), before);
}

#[test]
fn init_writes_a_workspace_that_builds() {
    require_buildah();
    let dir = tempfile::tempdir().unwrap();
    // A unique name, so the images it makes are this test's.
    let name = format!("t{}-init", std::process::id());
    let root = dir.path().join(&name);
    let run = common::lb_in(dir.path(), &["init", &name], &[]).ok();
    assert!(run.stdout.contains("Layerfile.toml"), "{}", run.stdout);
    let ws = TestWs::adopt(dir, root, &name);
    let built = ws.lb(&["build", "--json", "//..."]).ok().json();
    assert_eq!(built["built"], 2, "{built}");
    let again = ws.lb(&["ls", "--json"]).ok().json();
    assert!(
        statuses(&again["layers"])
            .values()
            .all(|s| s == "up_to_date"),
        "{again}"
    );
    // The Ansible layer's role ran, with the system's variable.
    let image = common::layer(&built, "//compute/node")["image_name"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        TestWs::run_in_image(&image, "cat /etc/site-name").trim(),
        "demo"
    );
    // Again: refused.
    let run = common::lb_in(ws.root.parent().unwrap(), &["init", &name], &[]);
    assert_eq!(run.code, 2, "{}", run.stderr);
}

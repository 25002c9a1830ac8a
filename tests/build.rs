//! Builds with real buildah and ansible-playbook on a busybox base.

mod common;

use std::time::Instant;

use common::{Edit, TestWs, require_buildah};

fn build_json(ws: &TestWs, args: &[&str]) -> (i32, serde_json::Value, String) {
    let mut a = vec!["build", "--json"];
    a.extend_from_slice(args);
    let run = ws.lb(&a);
    let code = run.code;
    let stderr = run.stderr.clone();
    (code, run.json(), stderr)
}

#[test]
fn a_second_build_runs_no_build_command_and_reports_every_layer_up_to_date() {
    require_buildah();
    let mut ws = TestWs::new("chain");
    let first = ws.lb(&["build", "//compute/slurm"]).ok();
    assert!(first.stdout.contains("4 built"), "{}", first.stdout);
    let calls = ws.log_buildah();
    let t = Instant::now();
    let second = ws.lb(&["build", "//compute/slurm"]).ok();
    let elapsed = t.elapsed();
    assert!(
        second.stdout.starts_with("all 4 layers up to date"),
        "{}",
        second.stdout
    );
    for label in [
        "//base/os",
        "//base/hsn",
        "//compute/compute",
        "//compute/slurm",
    ] {
        assert!(
            second.stderr.contains(&format!("{label} up to date")),
            "{}",
            second.stderr
        );
    }
    // Only read-only queries of the image store: no from, run, commit.
    let log = std::fs::read_to_string(&calls).unwrap_or_default();
    for line in log.lines() {
        assert!(
            line.starts_with("--version") || line.starts_with("images "),
            "a cached build ran `buildah {line}`"
        );
    }
    eprintln!("no-op build took {elapsed:?}");
}

#[test]
fn changing_a_role_rebuilds_only_its_layer_and_a_parent_playbook_rebuilds_the_subtree() {
    require_buildah();
    let ws = TestWs::new("chain");
    let (code, r, err) = build_json(&ws, &["//..."]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(TestWs::labels_with(&r, "built").len(), 5);

    ws.append(
        "slurm-config/roles/slurm/tasks/main.yml",
        "\n- name: one more\n  raw: touch /etc/slurm.tuned\n  args:\n    executable: /bin/sh\n",
    );
    let (code, r, err) = build_json(&ws, &["//..."]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(TestWs::labels_with(&r, "built"), vec!["//compute/slurm"]);
    assert_eq!(TestWs::labels_with(&r, "up_to_date").len(), 4);
    let slurm = r["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["label"] == "//compute/slurm")
        .unwrap();
    let image = slurm["image_name"].as_str().unwrap();
    let conf = TestWs::run_in_image(image, "cat /etc/slurm.conf; ls /etc/slurm.tuned");
    assert!(
        conf.contains("ClusterName=testcluster") && conf.contains("/etc/slurm.tuned"),
        "{conf}"
    );

    ws.append(
        "compute-config/compute.yml",
        "\n# a comment is a change too\n",
    );
    let (code, r, err) = build_json(&ws, &["//..."]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        TestWs::labels_with(&r, "built"),
        vec!["//compute/compute", "//compute/slurm"]
    );
    assert_eq!(
        TestWs::labels_with(&r, "up_to_date"),
        vec!["//base/os", "//base/hsn", "//uan/uan"]
    );
}

#[test]
fn a_failing_playbook_keeps_its_container_caches_nothing_for_it_and_spares_siblings() {
    require_buildah();
    let ws = TestWs::new("chain");
    ws.write(
        "slurm-config/roles/slurm/tasks/main.yml",
        "- name: this fails\n  raw: echo about to fail; exit 3\n  args:\n    executable: /bin/sh\n",
    );
    let before = ws.digests();
    let run = ws.lb(&["build", "--json", "--keep-going", "//..."]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let r = run.json();
    assert_eq!(TestWs::labels_with(&r, "failed"), vec!["//compute/slurm"]);
    assert_eq!(
        TestWs::labels_with(&r, "built").len(),
        4,
        "siblings and ancestors build"
    );
    let slurm = r["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["label"] == "//compute/slurm")
        .unwrap();
    let container = slurm["container"].as_str().unwrap();
    assert!(
        TestWs::container_exists(container),
        "container {container} was not kept"
    );
    assert!(
        run.stderr
            .contains(&format!("buildah run --isolation chroot {container} sh")),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("about to fail"),
        "log tail missing:\n{}",
        run.stderr
    );
    let cached = ws.cached_digests();
    assert_eq!(cached.len(), 4);
    assert!(
        !cached.contains(&before["//compute/slurm"]),
        "a failed layer was cached"
    );
    // The failure is in the history with its log.
    let conn = rusqlite::Connection::open(ws.db()).unwrap();
    let (status, log): (String, String) = conn
        .query_row(
            "SELECT status, log_path FROM builds WHERE label = '//compute/slurm'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(status, "failed");
    // Stored relative to the cache directory (a moved workspace finds it).
    assert!(!log.starts_with('/'), "{log}");
    assert!(
        std::fs::read_to_string(ws.path("cache").join(&log))
            .unwrap()
            .contains("about to fail")
    );
}

#[test]
fn a_failure_stops_new_layers_but_not_running_ones_without_keep_going() {
    require_buildah();
    let ws = TestWs::new("chain");
    let lf = ws.read("Layerfile.toml").edit(
        "run = [\"echo hsn > /etc/layer-hsn\"]",
        "run = [\"exit 7\"]",
    );
    ws.write("Layerfile.toml", &lf);
    let run = ws.lb(&["build", "--json", "//..."]);
    assert_eq!(run.code, 1);
    let r = run.json();
    assert_eq!(TestWs::labels_with(&r, "built"), vec!["//base/os"]);
    assert_eq!(TestWs::labels_with(&r, "failed"), vec!["//base/hsn"]);
    assert_eq!(TestWs::labels_with(&r, "skipped").len(), 3);
    assert_eq!(ws.cached_digests().len(), 1);
}

#[test]
fn independent_branches_build_in_parallel() {
    require_buildah();
    let ws = TestWs::new("chain");
    ws.write(
        "Layerfile.toml",
        &format!(
            "[workspace]\nname = \"{}\"\n[layers.\"base/os\"]\nparent = \"scratch\"\nsetup = [\"sh scripts/busybox-root.sh {{root}}\"]\n\
             [layers.\"a/x\"]\nparent = \"//base/os\"\nrun = [\"sleep 5\"]\n\
             [layers.\"b/y\"]\nparent = \"//base/os\"\nrun = [\"sleep 5\"]\n",
            ws.name
        ),
    );
    ws.lb(&["build", "//base/os"]).ok();
    let t = Instant::now();
    ws.lb(&["build", "-j", "2", "//..."]).ok();
    let two = t.elapsed().as_secs_f64();
    // Sequential would be at least 10 s; parallel is 5 s plus buildah overhead.
    assert!(two < 9.0, "two 5 s branches took {two:.1} s with -j 2");
}

#[test]
fn a_cached_image_deleted_from_storage_is_a_miss_not_an_error() {
    require_buildah();
    let ws = TestWs::new("chain");
    let (code, r, err) = build_json(&ws, &["//compute/compute"]);
    assert_eq!(code, 0, "{err}");
    let hsn = r["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["label"] == "//base/hsn")
        .unwrap();
    let image = hsn["image_name"].as_str().unwrap();
    let out = std::process::Command::new("buildah")
        .args(["rmi", "-f", image])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (code, r, err) = build_json(&ws, &["//compute/compute"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(TestWs::labels_with(&r, "built"), vec!["//base/hsn"]);
}

#[test]
fn ls_shows_up_to_date_needs_build_and_never_built() {
    require_buildah();
    let ws = TestWs::new("chain");
    ws.lb(&["build", "//compute/slurm"]).ok();
    ws.append("slurm-config/slurm.yml", "\n# changed\n");
    let out = ws.lb(&["ls", "--json"]).ok().json();
    let status = |l: &str| {
        out["layers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["label"] == l)
            .unwrap()["status"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(out["version"], 1);
    assert_eq!(status("//compute/compute"), "up_to_date");
    assert_eq!(status("//compute/slurm"), "needs_build");
    assert_eq!(status("//uan/uan"), "never_built");
}

#[test]
fn dry_run_verbose_prints_each_dirty_layers_commands_in_order_without_secrets() {
    // A dry run needs no image: no buildah is started.
    let ws = TestWs::new("chain");
    const SECRET: &str = "planted-munge-key-4711";
    let lf = ws
        .read("Layerfile.toml")
        .edit(
            "vars = { cluster_name = \"testcluster\" }",
            &format!(
                "vars = {{ cluster_name = \"testcluster\", munge_key = \"{SECRET}\" }}\nsecret_vars = [\"munge_key\"]"
            ),
        )
        .edit(
            "run = [\"echo hsn > /etc/layer-hsn\"]",
            &format!("run = [\"echo hsn > /etc/layer-hsn\", \"echo {SECRET} > /etc/k\"]"),
        );
    ws.write("Layerfile.toml", &lf);
    let plain = ws
        .lb(&["build", "--dry-run", "//compute/slurm"])
        .ok()
        .stdout;
    let verbose = ws
        .lb(&["build", "--dry-run", "-v", "//compute/slurm"])
        .ok()
        .stdout;
    assert!(!verbose.contains(SECRET), "{verbose}");
    assert!(verbose.contains("echo [secret] > /etc/k"), "{verbose}");

    // Without -v, the plan as before: the verbose one without its commands.
    assert!(!plain.lines().any(|l| l.starts_with(' ')), "{plain}");
    let outline: Vec<&str> = verbose.lines().filter(|l| !l.starts_with(' ')).collect();
    assert_eq!(outline.join("\n") + "\n", plain);

    // //compute/slurm's commands, in order, its dirty parent a placeholder.
    let slurm: Vec<&str> = verbose
        .lines()
        .skip_while(|l| !l.starts_with("//compute/slurm"))
        .skip(1)
        .take_while(|l| l.starts_with("    "))
        .map(str::trim)
        .collect();
    let expected_starts = [
        "buildah from --name layerbuild-",
        "buildah inspect --type container --format {{.OCIv1.Architecture}} layerbuild-",
        "buildah mount layerbuild-",
        "# write ",
        "cd ",
        "buildah config --label 'layerbuild.digest=",
        "buildah commit --rm --quiet --iidfile ",
    ];
    assert_eq!(slurm.len(), expected_starts.len(), "{verbose}");
    for (line, start) in slurm.iter().zip(expected_starts) {
        assert!(
            line.starts_with(start),
            "{line:?} is not {start}...:\n{verbose}"
        );
    }
    assert!(
        slurm[0].ends_with(" $IMAGE_ID(//compute/compute)"),
        "{}",
        slurm[0]
    );
    assert!(
        slurm[4].contains(" unshare --mount ") && slurm[4].contains(" ansible-playbook "),
        "{}",
        slurm[4]
    );
    assert!(slurm[4].ends_with(" slurm.yml"), "{}", slurm[4]);

    // --json -v adds each planned layer's commands; --json alone does not.
    let json = ws
        .lb(&["build", "--dry-run", "-v", "--json", "//compute/slurm"])
        .ok()
        .json();
    let layers = json["layers"].as_array().unwrap();
    assert_eq!(layers[3]["commands"].as_array().unwrap().len(), slurm.len());
    assert!(!json.to_string().contains(SECRET));
    let json = ws
        .lb(&["build", "--dry-run", "--json", "//compute/slurm"])
        .ok()
        .json();
    assert!(json["layers"][3].get("commands").is_none(), "{json}");

    // -v is a global option: before the command too.
    let before = ws
        .lb(&["-v", "build", "--dry-run", "//compute/slurm"])
        .ok()
        .stdout;
    assert_eq!(before, verbose);
}

/// `text` with what changes from run to run replaced: the workspace's
/// path and name, digests (by their label), times of day, durations, log
/// file times, and the length of shortened command lines.
fn normalised(ws: &TestWs, text: &str) -> String {
    let mut t = text.replace(ws.root.to_str().unwrap(), "[WS]");
    t = t.replace(&ws.name, "[NAME]");
    for (label, digest) in ws.digests() {
        t = t.replace(&digest, &format!("[{label}]"));
        t = t.replace(&digest[..12], &format!("[{label}]"));
    }
    let is_duration = |w: &str| {
        let w = w.trim_end_matches([',', ')', ':']);
        let Some(n) = w.strip_suffix('s') else {
            return false;
        };
        !n.is_empty()
            && n.chars()
                .all(|c| c.is_ascii_digit() || c == '.' || c == 'm')
    };
    t.lines()
        .map(|line| {
            if line.contains("bytes; whole in the log]") {
                let words: Vec<&str> = line.split(' ').take(2).collect();
                return format!("{} …[shortened]", words.join(" "));
            }
            let mut line = line.to_string();
            let b = line.as_bytes();
            if b.len() >= 8
                && b[2] == b':'
                && b[5] == b':'
                && b[..8].iter().all(|c| c.is_ascii_digit() || *c == b':')
            {
                line.replace_range(..8, "HH:MM:SS");
            }
            line.split(' ')
                .map(|w| {
                    if is_duration(w) {
                        let tail: String = w
                            .chars()
                            .skip_while(|c| *c != ',' && *c != ')' && *c != ':')
                            .collect();
                        format!("[T]{tail}")
                    } else if let Some(at) = w.find("/logs/") {
                        let (head, rest) = w.split_at(at);
                        let rest: String = rest
                            .split('/')
                            .map(|p| match p.split_once('-') {
                                Some((ts, d))
                                    if ts.len() == 14 && ts.chars().all(|c| c.is_ascii_digit()) =>
                                {
                                    format!("[TIME]-{d}")
                                }
                                _ => p.to_string(),
                            })
                            .collect::<Vec<_>>()
                            .join("/");
                        format!("{head}{rest}")
                    } else {
                        w.to_string()
                    }
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A failed Ansible task as a CI log shows it (`--progress plain`): a
/// timestamped line per step and task as it runs, then the failure led by
/// the task (name, role, file:line, message, from Ansible's own events),
/// the end of the log with the long command line shortened, and how to look
/// further (`debug`, `log`, buildah with the storage in use).
#[test]
fn a_failed_task_leads_the_report_and_plain_progress_streams_each_task() {
    require_buildah();
    let mut ws = TestWs::new("chain");
    // A storage of its own: no other test's build of the same base layers
    // to wait for or adopt.
    let storage = tempfile::tempdir().unwrap();
    ws.env.push((
        "LAYERBUILD_STORAGE_ROOT".into(),
        storage.path().display().to_string(),
    ));
    ws.append(
        "slurm-config/roles/slurm/tasks/main.yml",
        "- name: check munge key\n  raw: 'echo looking; echo \"munge.key - no such file\" >&2; exit 4'\n",
    );
    let run = ws.lb(&["--progress", "plain", "build", "//compute/slurm"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    insta::assert_snapshot!(normalised(&ws, &run.stderr));
    // The same in --json: the layer's error leads with the task.
    let run = ws.lb(&["build", "--json", "//compute/slurm"]);
    let slurm = &run.json()["layers"][3];
    assert_eq!(
        slurm["error"],
        "task `slurm : check munge key` (slurm-config/roles/slurm/tasks/main.yml:5) failed: munge.key - no such file (rc 4)"
    );
    for args in [&["rm", "--all"][..], &["rmi", "--all", "--force"]] {
        let _ = std::process::Command::new("buildah")
            .arg("--root")
            .arg(storage.path())
            .arg("--runroot")
            .arg(storage.path().join("run"))
            .args(args)
            .output();
    }
}

/// `build --profile`: a Chrome trace-event file Perfetto opens: a span per
/// layer (on at most `jobs` worker tracks), its steps and each Ansible
/// task inside it, in time.
#[test]
fn the_profile_is_a_trace_with_a_span_per_layer_step_and_task() {
    require_buildah();
    let ws = TestWs::new("chain");
    let file = ws.path("trace.json");
    ws.lb(&["build", "--profile", file.to_str().unwrap(), "//..."])
        .ok();
    let trace: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let events = trace["traceEvents"].as_array().unwrap();
    let spans: Vec<&serde_json::Value> = events.iter().filter(|e| e["ph"] == "X").collect();
    for s in &spans {
        for key in ["name", "cat", "ts", "dur", "pid", "tid"] {
            assert!(!s[key].is_null(), "{key} missing in {s}");
        }
    }
    let of = |cat: &str| -> Vec<&&serde_json::Value> {
        spans.iter().filter(|s| s["cat"] == cat).collect()
    };
    let layers = of("layer");
    let mut names: Vec<&str> = layers.iter().map(|s| s["name"].as_str().unwrap()).collect();
    names.sort();
    assert_eq!(
        names,
        vec![
            "//base/hsn",
            "//base/os",
            "//compute/compute",
            "//compute/slurm",
            "//uan/uan"
        ]
    );
    assert!(layers.iter().all(|l| l["args"]["status"] == "built"));
    // Two jobs ([build] jobs = 2): two worker tracks at most, each named.
    assert!(layers.iter().all(|l| l["tid"].as_u64().unwrap() < 2));
    assert!(
        events
            .iter()
            .any(|e| e["ph"] == "M" && e["args"]["name"] == "worker 1")
    );
    let tasks = of("task");
    let task_names: Vec<&str> = tasks.iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(
        task_names,
        vec![
            "common : record the cluster name",
            "slurm : write slurm.conf"
        ]
    );
    assert!(of("step").iter().any(|s| s["name"] == "buildah commit"));
    // Every step and task lies within a layer span of its track.
    let within = |s: &serde_json::Value| {
        let (ts, end) = (
            s["ts"].as_u64().unwrap(),
            s["ts"].as_u64().unwrap() + s["dur"].as_u64().unwrap(),
        );
        layers.iter().any(|l| {
            let lts = l["ts"].as_u64().unwrap();
            l["tid"] == s["tid"] && lts <= ts && end <= lts + l["dur"].as_u64().unwrap()
        })
    };
    for s in of("step").into_iter().chain(tasks) {
        assert!(within(s), "{s} is outside its layer");
    }
}

//! Past one machine: the shared registry cache, `affected --since`, and
//! `ci gitlab` validated against GitLab's CI JSON schema.
//!
//! Real buildah and a real OCI registry (Debian's docker-registry on
//! 127.0.0.1), with "machines" of separate storage roots and cache
//! directories, for what only they prove: layers really pushed by one
//! machine and pulled into another's storage (a second machine pulls every
//! layer; the demo pulled whole, its exports read by real tools) and `push`
//! sending a layer once. `affected --since` and `ci gitlab` need no buildah.
//! The fallback logic (an entry with the wrong digest label rejected and
//! rebuilt, an unreachable registry, read-only mode) is logic over the
//! registry interface: it runs in this process against the recording
//! backend ([`TestWs::recorded`]: no buildah, no root), whose registry is
//! shared by the machines of a test ([`RecordedMachine`]).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::registry::Registry;
use common::{Edit, TestWs, copy_dir, git, lb_recorded, require_buildah, validated};
use layerbuild::executor::Registry as _;
use layerbuild::executor::recording::{Call, Recording};

/// The registry the recorded tests name (the recording backend holds it).
const RECORDED_REGISTRY: &str = "registry.example.org:5000/hpc/layers";

/// A second machine: a copy of the workspace at another path, with its own
/// cache directory and its own containers storage root.
struct Machine {
    _dir: tempfile::TempDir,
    root: PathBuf,
    storage: PathBuf,
}

impl Machine {
    fn clone_of(ws: &TestWs) -> Machine {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("elsewhere/ws");
        copy_dir(&ws.root, &root);
        let _ = std::fs::remove_dir_all(root.join("cache"));
        let storage = dir.path().join("storage");
        Machine {
            _dir: dir,
            root,
            storage,
        }
    }

    fn lb(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_layerbuild"))
            .arg("-C")
            .arg(&self.root)
            .arg("--storage-root")
            .arg(&self.storage)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn buildah(&self, args: &[&str]) -> String {
        let out = Command::new("buildah")
            .arg("--root")
            .arg(&self.storage)
            .arg("--runroot")
            .arg(self.storage.join("run"))
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        let ids = self.buildah(&["images", "-q"]);
        for id in ids.lines() {
            let _ = self.buildah(&["rmi", "-f", id]);
        }
    }
}

/// Another machine on the recording backend: a copy of the workspace at
/// another path with no cache directory, and an empty image store. The
/// recording holds one store, so making a machine empties it (the machines
/// before it are not used again); its registry is what the machines share.
struct RecordedMachine {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

impl RecordedMachine {
    fn clone_of(ws: &TestWs) -> RecordedMachine {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("elsewhere/ws");
        copy_dir(&ws.root, &root);
        let _ = std::fs::remove_dir_all(root.join("cache"));
        let rec = ws.rec();
        for image in rec.images_stored() {
            rec.delete_image(&image.id);
        }
        RecordedMachine { _dir: dir, root }
    }

    fn lb(&self, rec: &Recording, args: &[&str]) -> (i32, String, String) {
        let r = lb_recorded(&self.root, args, rec);
        (r.code, r.stdout, r.stderr)
    }
}

fn with_registry(ws: &TestWs, url: &str) {
    ws.append(
        "Layerfile.toml",
        &format!("\n[cache]\nregistry = \"{url}\"\ntls_verify = false\n"),
    );
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

#[test]
fn a_second_machine_pulls_every_layer_and_builds_nothing() {
    require_buildah();
    let reg = Registry::start();
    let ws = TestWs::new("chain");
    with_registry(&ws, &reg.url());
    let a = ws.lb(&["build", "--json", "//compute/slurm"]).ok().json();
    assert_eq!(a["built"], 4);
    assert!(
        a["warnings"].as_array().unwrap().is_empty(),
        "{}",
        a["warnings"]
    );

    let b = Machine::clone_of(&ws);
    let (code, out, err) = b.lb(&["build", "--json", "//compute/slurm"]);
    assert_eq!(code, 0, "{err}");
    let r = json(&out);
    assert_eq!(r["built"], 0, "{out}");
    assert_eq!(r["pulled"], 4, "{out}");
    // The text summary says so, and a second run is entirely local.
    let b2 = Machine {
        _dir: tempfile::tempdir().unwrap(),
        root: b.root.clone(),
        storage: b.storage.clone(),
    };
    let (_, out, _) = b2.lb(&["build", "//compute/slurm"]);
    assert!(out.starts_with("all 4 layers up to date"), "{out}");
    std::mem::forget(b2);
    // The pulled image is really in B's own storage, with the right label.
    let slurm = r["layers"][3]["image_id"].as_str().unwrap();
    let label = b.buildah(&[
        "inspect",
        "--type",
        "image",
        "--format",
        "{{index .OCIv1.Config.Labels \"layerbuild.label\"}}",
        slurm,
    ]);
    assert_eq!(label.trim(), "//compute/slurm");

    // Text output on a fresh third machine.
    let c = Machine::clone_of(&ws);
    let (code, out, err) = c.lb(&["build", "//compute/slurm"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with(&format!("nothing built: 4 pulled from {}", reg.url())),
        "{out}"
    );
}

/// The image of `name` in `m`'s storage: its id (the config's digest) and
/// its manifest.
fn id_and_manifest(m: &Machine, name: &str) -> (String, String) {
    let f = |format: &str| m.buildah(&["inspect", "--type", "image", "--format", format, name]);
    (f("{{.FromImageID}}"), f("{{.Manifest}}"))
}

/// With `reproducible = true`, a layer built on a parent pulled from the
/// registry is the very image built on the parent built here: nothing in
/// it names where the parent came from.
#[test]
fn a_reproducible_layer_is_the_same_image_on_a_pulled_parent() {
    require_buildah();
    let reg = Registry::start();
    let ws = TestWs::new("chain");
    ws.write(
        "Layerfile.toml",
        &ws.read("Layerfile.toml")
            .replacen("[build]\n", "[build]\nreproducible = true\n", 1),
    );
    with_registry(&ws, &reg.url());
    // A builds both layers and pushes only the parent.
    let a = Machine::clone_of(&ws);
    let (code, _, err) = a.lb(&["build", "--no-outputs", "//base/os"]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = a.lb(&[
        "build",
        "--json",
        "--no-outputs",
        "--cache-mode",
        "off",
        "//base/hsn",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(json(&out)["built"], 1, "{out}");
    // B pulls the parent and builds the leaf itself.
    let b = Machine::clone_of(&ws);
    let (code, out, err) = b.lb(&[
        "build",
        "--json",
        "--no-outputs",
        "--cache-mode",
        "read-only",
        "//base/hsn",
    ]);
    assert_eq!(code, 0, "{err}");
    let r = json(&out);
    assert_eq!(
        (r["pulled"].as_u64(), r["built"].as_u64()),
        (Some(1), Some(1)),
        "{out}"
    );
    let name = r["layers"][1]["image_name"].as_str().unwrap();
    let (id_a, manifest_a) = id_and_manifest(&a, name);
    let (id_b, manifest_b) = id_and_manifest(&b, name);
    assert!(!id_a.trim().is_empty(), "no image {name} on A");
    assert_eq!(
        id_a, id_b,
        "same inputs, same image, wherever the parent came from"
    );
    assert_eq!(manifest_a, manifest_b);
    assert!(!manifest_b.contains("127.0.0.1"), "{manifest_b}");
}

#[test]
fn a_registry_entry_with_the_wrong_digest_label_is_rejected_and_rebuilt() {
    let ws = TestWs::recorded("chain");
    let rec = ws.rec();
    with_registry(&ws, RECORDED_REGISTRY);
    let a = ws.lb(&["build", "--json", "//base/hsn"]).ok().json();
    let os_digest = a["layers"][0]["digest"].as_str().unwrap().to_string();
    let hsn_image = a["layers"][1]["image_id"].as_str().unwrap().to_string();
    // Overwrite //base/os's tag with another layer's image.
    let tampered = format!("{RECORDED_REGISTRY}/base/os:{os_digest}");
    rec.push(&hsn_image, &tampered, false).unwrap();

    let b = RecordedMachine::clone_of(&ws);
    let (code, out, err) = b.lb(rec, &["build", "--json", "//base/hsn"]);
    assert_eq!(code, 0, "{err}");
    let r = json(&out);
    assert_eq!(
        r["layers"][0]["status"], "built",
        "a tampered entry was used: {out}"
    );
    assert!(err.contains(&format!("rejected {tampered}")), "{err}");
    // //base/hsn's own entry is genuine: pulled.
    assert_eq!(r["layers"][1]["status"], "pulled", "{out}");
}

#[test]
fn an_unreachable_registry_warns_once_and_builds_locally() {
    let ws = TestWs::recorded("chain");
    ws.rec().set_registry_unreachable(true);
    with_registry(&ws, RECORDED_REGISTRY);
    let run = ws.lb(&["build", "//compute/slurm"]);
    // Built here; in read-write mode, not reaching the registry fails the
    // run (exit 3) instead of passing in silence.
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(run.stdout.contains("4 built"), "{}", run.stdout);
    assert!(
        run.stderr.contains("4 layer(s) built but not pushed"),
        "{}",
        run.stderr
    );
    let warnings: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.starts_with("warning:"))
        .collect();
    assert_eq!(warnings.len(), 1, "{}", run.stderr);
    assert!(warnings[0].contains("unreachable"), "{}", warnings[0]);
    // The local cache still works.
    let again = ws.lb(&["build", "//compute/slurm"]).ok();
    assert!(
        again.stdout.starts_with("all 4 layers up to date"),
        "{}",
        again.stdout
    );
}

/// With a registry, `ci gitlab`'s jobs are the layers it lacks: affected
/// or not (a missing ancestor gets its own job, so no layer is built by
/// two), and none on a re-run after everything was pushed.
#[test]
fn ci_gitlab_with_a_registry_plans_what_it_lacks() {
    let ws = TestWs::recorded("chain");
    with_registry(&ws, RECORDED_REGISTRY);
    let jobs = |out: &str| -> Vec<(String, serde_json::Value)> {
        let v = validated(out);
        v.as_object()
            .unwrap()
            .iter()
            .filter(|(k, _)| k.starts_with("build:") || k.starts_with("layerbuild:"))
            .map(|(k, body)| (k.clone(), body["needs"].clone()))
            .collect()
    };
    // A fresh registry: every layer, in DAG order.
    let run = ws.lb(&["ci", "gitlab"]).ok();
    assert_eq!(jobs(&run.stdout).len(), 5, "{}", run.stdout);
    // Its base layers pushed by another machine: the rest, whose parents
    // are pulled (no `needs` on a job that is not in the pipeline).
    ws.lb(&["build", "//base/hsn"]).ok();
    let run = ws.lb(&["ci", "gitlab", "--since", "HEAD"]).ok();
    assert_eq!(
        jobs(&run.stdout),
        vec![
            ("build:compute/compute".to_string(), serde_json::json!([])),
            (
                "build:compute/slurm".to_string(),
                serde_json::json!([{"job": "build:compute/compute", "artifacts": false}])
            ),
            ("build:uan/uan".to_string(), serde_json::json!([])),
        ]
    );
    assert!(
        run.stderr.contains("--since changes nothing"),
        "{}",
        run.stderr
    );
    // Everything pushed: a re-run has only the no-op job.
    ws.lb(&["build", "//..."]).ok();
    let run = ws.lb(&["ci", "gitlab"]).ok();
    assert_eq!(
        jobs(&run.stdout),
        vec![(
            "layerbuild:nothing-to-build".to_string(),
            serde_json::Value::Null
        )]
    );
}

/// A registry that refuses pushes (no credentials in a merge-request
/// pipeline, a read-only mirror) fails a read-write build with a hint,
/// instead of every later job rebuilding in silence; read-only mode is the
/// way to build without publishing.
#[test]
fn a_refused_push_fails_a_read_write_build_with_a_hint() {
    let ws = TestWs::recorded("chain");
    ws.rec().set_registry_refuses_pushes(true);
    with_registry(&ws, RECORDED_REGISTRY);
    let run = ws.lb(&["build", "--json", "//base/hsn"]);
    assert_eq!(run.code, 3, "{}", run.stderr);
    let r = run.json();
    assert_eq!(r["built"], 2);
    assert_eq!(r["pushed"], 0);
    assert_eq!(r["not_pushed"].as_array().unwrap().len(), 2, "{r}");
    assert!(
        r["not_pushed"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("unauthorized"),
        "{r}"
    );
    assert!(
        run.stderr
            .contains("2 layer(s) built but not pushed to registry.example.org:5000/hpc/layers"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("--cache-mode read-only"),
        "{}",
        run.stderr
    );
    // The layers are cached here all the same.
    let again = ws.lb(&["build", "//base/hsn"]).ok();
    assert!(
        again.stdout.starts_with("all 2 layers up to date"),
        "{}",
        again.stdout
    );
    // Read-only: built, not pushed, not failed.
    ws.append("scripts/uan.sh", "\necho changed\n");
    let ro = ws
        .lb(&["build", "--cache-mode", "read-only", "//uan/uan"])
        .ok();
    assert!(ro.stdout.contains("1 built"), "{}", ro.stdout);
    // Pushes that work are counted in the summary.
    ws.rec().set_registry_refuses_pushes(false);
    ws.append("scripts/uan.sh", "\necho again\n");
    let rw = ws.lb(&["build", "//uan/uan"]).ok();
    assert!(
        rw.stdout
            .contains("1 built, 0 pulled, 2 up to date, 0 failed, 0 skipped, 1 pushed to registry.example.org:5000/hpc/layers"),
        "{}",
        rw.stdout
    );
}

#[test]
fn read_only_mode_pulls_but_never_pushes() {
    let ws = TestWs::recorded("chain");
    let rec = ws.rec();
    with_registry(&ws, RECORDED_REGISTRY);
    ws.lb(&["build", "//base/hsn"]).ok();
    let b = RecordedMachine::clone_of(&ws);
    std::fs::write(
        b.root.join("scripts/uan.sh"),
        "#!/bin/sh\necho changed > /etc/motd\n",
    )
    .unwrap();
    let start = rec.calls().len();
    let (code, out, err) = b.lb(
        rec,
        &["build", "--json", "--cache-mode", "read-only", "//uan/uan"],
    );
    assert_eq!(code, 0, "{err}");
    let r = json(&out);
    assert_eq!(r["pulled"], 2);
    assert_eq!(r["built"], 1);
    let pushes: Vec<Call> = rec.calls()[start..]
        .iter()
        .filter(|c| matches!(c, Call::Push { .. }))
        .cloned()
        .collect();
    assert!(pushes.is_empty(), "read-only mode pushed: {pushes:?}");
    // Nothing was pushed: a third machine must build //uan/uan.
    let c = RecordedMachine::clone_of(&ws);
    std::fs::write(
        c.root.join("scripts/uan.sh"),
        "#!/bin/sh\necho changed > /etc/motd\n",
    )
    .unwrap();
    let (_, out, _) = c.lb(
        rec,
        &["build", "--json", "--cache-mode", "off", "//uan/uan"],
    );
    assert_eq!(json(&out)["built"], 3, "off mode must not pull either");
}

#[test]
fn affected_since_lists_exactly_the_layers_a_commit_changed() {
    let ws = TestWs::new("chain");
    ws.write(".gitignore", "/cache/\n");
    git(&ws.root, &["init", "-q"]);
    git(&ws.root, &["add", "-A"]);
    git(&ws.root, &["commit", "-qm", "one"]);

    ws.append("slurm-config/roles/slurm/tasks/main.yml", "# tuned\n");
    git(&ws.root, &["commit", "-qam", "slurm role"]);
    let r = ws
        .lb(&["affected", "--since", "HEAD~1", "--json"])
        .ok()
        .json();
    let labels: Vec<&str> = r["affected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["label"].as_str().unwrap())
        .collect();
    assert_eq!(labels, vec!["//compute/slurm"]);
    assert!(
        r["affected"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("slurm-config/roles/slurm/tasks/main.yml modified")
    );

    ws.append("compute-config/roles/common/tasks/main.yml", "# tuned\n");
    git(&ws.root, &["commit", "-qam", "compute role"]);
    let text = ws.lb(&["affected", "--since", "HEAD~1"]).ok().stdout;
    let labels: Vec<&str> = text
        .lines()
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(
        labels,
        vec!["//compute/compute", "//compute/slurm"],
        "{text}"
    );
    // Two commits back, with --until.
    let r = ws
        .lb(&[
            "affected", "--since", "HEAD~2", "--until", "HEAD~1", "--json",
        ])
        .ok()
        .json();
    assert_eq!(r["affected"].as_array().unwrap().len(), 1);

    ws.write("README.md", "docs only\n");
    git(&ws.root, &["add", "-A"]);
    git(&ws.root, &["commit", "-qm", "docs"]);
    let run = ws.lb(&["affected", "--since", "HEAD~1", "--json"]).ok();
    assert_eq!(run.json()["affected"], serde_json::json!([]));
    let run = ws.lb(&["affected", "--since", "HEAD~1"]).ok();
    assert_eq!(run.stdout, "no layer is affected since HEAD~1\n");
    // The working tree was not touched.
    let status = Command::new("git")
        .args(["status", "--porcelain"])
        .current_dir(&ws.root)
        .output()
        .unwrap();
    assert!(
        status.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&status.stdout)
    );
    let bad = ws.lb(&["affected", "--since", "nope"]);
    assert_eq!(bad.code, 2, "{}", bad.stderr);
}

/// The `needs` edges of a pipeline, as (parent job, job).
fn needs(v: &serde_json::Value) -> Vec<(String, String)> {
    let mut out = vec![];
    for (job, body) in v.as_object().unwrap() {
        for n in body["needs"].as_array().into_iter().flatten() {
            // Each job's artifacts are its own logs: none are downloaded.
            assert_eq!(n["artifacts"], false, "{job}: {n}");
            out.push((n["job"].as_str().unwrap().to_string(), job.clone()));
        }
    }
    out.sort();
    out
}

#[test]
fn ci_gitlab_pipelines_pass_the_schema_and_follow_the_dag() {
    // The demo workspace, with no registry: every layer needs a job.
    let out = Command::new(env!("CARGO_BIN_EXE_layerbuild"))
        .args(["-C", env!("CARGO_MANIFEST_DIR"), "ci", "gitlab"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = validated(&String::from_utf8_lossy(&out.stdout));
    let build_jobs = v
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| k.starts_with("build:"))
        .count();
    assert_eq!(build_jobs, 6);
    // Created under any parent, merge-request ones included.
    assert_eq!(
        v["workflow"]["rules"][0]["if"],
        "$CI_PIPELINE_SOURCE == \"parent_pipeline\""
    );
    assert_eq!(
        needs(&v),
        vec![
            (
                "build:base/hsn".to_string(),
                "build:compute/compute".to_string()
            ),
            ("build:base/hsn".into(), "build:uan/uan".into()),
            ("build:base/os".into(), "build:base/hsn".into()),
            ("build:compute/compute".into(), "build:compute/slurm".into()),
            ("build:compute/slurm".into(), "build:compute/netboot".into()),
        ]
    );
    // Per system: two systems' pipelines never queue on each other.
    assert_eq!(
        v["build:compute/slurm"]["resource_group"],
        "layerbuild/clusterA/compute/slurm"
    );
    assert_eq!(v["build:compute/slurm"]["interruptible"], true);
    // A failed job's layer logs outlive its runner; a layer with image
    // tests reports them to GitLab's test tab.
    assert_eq!(
        v["build:compute/slurm"]["artifacts"],
        serde_json::json!({"when": "always", "expire_in": "1 week", "paths": ["cache/logs/"],
            "reports": {"junit": "cache/junit.xml"}})
    );
    assert_eq!(
        v["build:compute/slurm"]["script"][0],
        "layerbuild build //compute/slurm --system clusterA --junit cache/junit.xml"
    );
    assert_eq!(
        v["build:base/hsn"]["artifacts"],
        serde_json::json!({"when": "always", "expire_in": "1 week", "paths": ["cache/logs/"]})
    );
    assert_eq!(
        v["build:base/hsn"]["script"][0],
        "layerbuild build //base/hsn --system clusterA"
    );

    // 100 generated layers with defaults from the Layerfile, written to a file.
    let ws = TestWs::new("chain");
    let mut lf = format!(
        "[workspace]\nname = \"{}\"\n[ci.gitlab]\nimage = \"debian:bookworm\"\ntags = [\"buildah\"]\nbefore_script = [\"sh scripts/install-deps.sh\"]\nvariables = {{ GIT_DEPTH = \"1\" }}\n",
        ws.name
    );
    for t in 0..10 {
        for l in 0..10 {
            let parent = if l == 0 {
                "scratch".to_string()
            } else {
                format!("//t{t}/l{}", l - 1)
            };
            lf.push_str(&format!(
                "[layers.\"t{t}/l{l}\"]\nparent = \"{parent}\"\nrun = [\"true\"]\n"
            ));
        }
    }
    ws.write("Layerfile.toml", &lf);
    let file = ws.path("pipeline.yml");
    ws.lb(&["ci", "gitlab", "-o", file.to_str().unwrap()]).ok();
    let v = validated(&std::fs::read_to_string(&file).unwrap());
    let jobs: Vec<&String> = v
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| k.starts_with("build:"))
        .collect();
    assert_eq!(jobs.len(), 100);
    assert_eq!(needs(&v).len(), 90);
    assert_eq!(v["default"]["image"], "debian:bookworm");

    // Restricted to what is affected: only jobs present are needed.
    ws.write(".gitignore", "/cache/\n/pipeline.yml\n");
    git(&ws.root, &["init", "-q"]);
    git(&ws.root, &["add", "-A"]);
    git(&ws.root, &["commit", "-qm", "one"]);
    ws.write(
        "Layerfile.toml",
        &lf.edit(
            "[layers.\"t3/l7\"]\nparent = \"//t3/l6\"\nrun = [\"true\"]",
            "[layers.\"t3/l7\"]\nparent = \"//t3/l6\"\nrun = [\"true\", \"true\"]",
        ),
    );
    let out = ws.lb(&["ci", "gitlab", "--since", "HEAD"]).ok().stdout;
    let v = validated(&out);
    let jobs: Vec<&String> = v
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| k.starts_with("build:"))
        .collect();
    assert_eq!(jobs, vec!["build:t3/l7", "build:t3/l8", "build:t3/l9"]);
    assert_eq!(
        needs(&v),
        vec![
            ("build:t3/l7".into(), "build:t3/l8".into()),
            ("build:t3/l8".into(), "build:t3/l9".into())
        ]
    );
    assert_eq!(v["build:t3/l7"]["needs"], serde_json::json!([]));

    // Nothing to build: still a valid pipeline, with one job saying so.
    let out = ws
        .lb(&["ci", "gitlab", "--since", "HEAD", "//t0/..."])
        .ok()
        .stdout;
    let v = validated(&out);
    assert!(v.get("layerbuild:nothing-to-build").is_some(), "{out}");
}

/// The README's parent pipeline, as written there: valid for GitLab, it
/// generates with `--since auto` and the system, fetches the whole history
/// for it, runs in branch and merge-request pipelines, and triggers the
/// generated child.
#[test]
fn the_readme_parent_pipeline_is_valid_and_complete() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let block = readme
        .split("```yaml\n")
        .skip(1)
        .map(|b| b.split("```").next().unwrap())
        .find(|b| b.contains("generate-layers:") && b.contains("trigger:"))
        .expect("README.md shows the parent pipeline");
    let v = validated(block);
    let gen_job = &v["generate-layers"];
    let script = gen_job["script"][0].as_str().unwrap();
    assert!(
        script.contains("ci gitlab --since auto") && script.contains("--system"),
        "{script}"
    );
    assert_eq!(gen_job["variables"]["GIT_DEPTH"], 0);
    assert!(gen_job["image"].is_string() && gen_job["tags"].is_array());
    for job in ["generate-layers", "build-layers"] {
        let rules = v[job]["rules"].to_string();
        assert!(
            rules.contains("merge_request_event") && rules.contains("CI_COMMIT_BRANCH"),
            "{job}: {rules}"
        );
    }
    assert_eq!(
        v["build-layers"]["trigger"]["include"][0]["artifact"],
        "layers.yml"
    );
}

/// `ci gitlab --system all`: one pipeline for every system, in which a
/// layer the systems share (the same digest: no play reads their vars) is
/// built by one job, and the others get a job per system, named with it.
#[test]
fn ci_gitlab_for_all_systems_builds_a_shared_layer_once() {
    let ws = TestWs::new("chain");
    ws.append(
        "Layerfile.toml",
        "\n[systems.other]\ninventory = \"inventory/test\"\nvars = { cluster_name = \"othercluster\" }\n",
    );
    let run = ws.lb(&["ci", "gitlab", "--system", "all"]).ok();
    let v = validated(&run.stdout);
    let mut jobs: Vec<&String> = v
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| k.starts_with("build:"))
        .collect();
    jobs.sort();
    // base/os, base/hsn and uan/uan run no play: one job each, for the
    // first system; compute/compute and compute/slurm: one per system.
    assert_eq!(
        jobs,
        vec![
            "build:base/hsn@other",
            "build:base/os@other",
            "build:compute/compute@other",
            "build:compute/compute@test",
            "build:compute/slurm@other",
            "build:compute/slurm@test",
            "build:uan/uan@other",
        ],
        "{}",
        run.stdout
    );
    // Each system's play layers hang off the one shared base.
    assert_eq!(
        v["build:compute/compute@test"]["needs"],
        serde_json::json!([{"job": "build:base/hsn@other", "artifacts": false}])
    );
    assert_eq!(
        v["build:compute/slurm@test"]["needs"],
        serde_json::json!([{"job": "build:compute/compute@test", "artifacts": false}])
    );
    assert!(
        v["build:compute/slurm@test"]["script"][0]
            .as_str()
            .unwrap()
            .contains("--system test")
    );
    assert_eq!(
        v["build:compute/slurm@test"]["resource_group"],
        "layerbuild/test/compute/slurm"
    );
    // One system: names as before.
    let run = ws.lb(&["ci", "gitlab", "--system", "test"]).ok();
    assert!(validated(&run.stdout).get("build:compute/slurm").is_some());
}

/// `ci gitlab --since` as GitLab calls it, in an MR pipeline, a branch
/// pipeline, a new branch, the MR adding the Layerfile and a shallow clone:
/// a revision it cannot compare with makes every layer count, with a note,
/// never an error.
#[test]
fn ci_gitlab_since_auto_and_revisions_it_cannot_compare() {
    let ws = TestWs::new("chain");
    ws.write(".gitignore", "/cache/\n");
    git(&ws.root, &["init", "-q"]);
    // The first commit has no Layerfile (the MR that adds it).
    git(&ws.root, &["add", "-A", "--", ".", ":!Layerfile.toml"]);
    git(&ws.root, &["commit", "-qm", "before the workspace"]);
    git(&ws.root, &["add", "-A"]);
    git(&ws.root, &["commit", "-qm", "the workspace"]);
    ws.append("slurm-config/roles/slurm/tasks/main.yml", "\n# edited\n");
    git(&ws.root, &["commit", "-qam", "one role"]);
    let jobs = |run: &common::Run| -> Vec<String> {
        let v = validated(&run.stdout);
        v.as_object()
            .unwrap()
            .keys()
            .filter(|k| k.starts_with("build:"))
            .cloned()
            .collect()
    };
    let ci = |env: &[(&str, &str)], since: &str| {
        let mut all: Vec<(&str, &str)> = vec![
            ("CI_MERGE_REQUEST_DIFF_BASE_SHA", ""),
            ("CI_COMMIT_BEFORE_SHA", ""),
        ];
        all.extend_from_slice(env);
        common::lb_in(&ws.root, &["ci", "gitlab", "--since", since], &all)
    };
    let all_five = 5;

    // A merge-request pipeline: the MR base; a branch pipeline: the commit
    // before the push. One role changed: one job.
    let mr = ci(&[("CI_MERGE_REQUEST_DIFF_BASE_SHA", "HEAD~1")], "auto").ok();
    assert_eq!(jobs(&mr), vec!["build:compute/slurm"], "{}", mr.stderr);
    let branch = ci(&[("CI_COMMIT_BEFORE_SHA", "HEAD~1")], "auto").ok();
    assert_eq!(jobs(&branch), vec!["build:compute/slurm"]);

    // A new branch (all zeros), no variable at all, the MR adding the
    // Layerfile: every layer counts, said on stderr and in the pipeline.
    let zeros = "0000000000000000000000000000000000000000";
    for (env, since, note) in [
        (
            vec![("CI_COMMIT_BEFORE_SHA", zeros)],
            "auto",
            "a new branch",
        ),
        (vec![], "auto", "CI_COMMIT_BEFORE_SHA are unset"),
        (vec![], "HEAD~2", "there is no Layerfile.toml at HEAD~2"),
        (vec![], "no-such-rev", "'no-such-rev' is not in this clone"),
    ] {
        let run = ci(&env, since).ok();
        assert_eq!(jobs(&run).len(), all_five, "{since}: {}", run.stdout);
        assert!(run.stderr.contains(note), "{since}: {}", run.stderr);
        assert!(run.stderr.contains("every layer counts"), "{}", run.stderr);
        assert!(
            run.stdout.contains(note),
            "the pipeline says why: {}",
            run.stdout
        );
    }

    // A shallow clone (GitLab's GIT_DEPTH: 1): ci counts every layer and
    // says the clone is shallow; `affected` fails with a hint saying so.
    let shallow = ws.path("../shallow");
    git(
        &ws.root,
        &[
            "clone",
            "-q",
            "--depth",
            "1",
            &format!("file://{}", ws.root.display()),
            shallow.to_str().unwrap(),
        ],
    );
    let run = common::lb_in(&shallow, &["ci", "gitlab", "--since", "HEAD~1"], &[]).ok();
    assert_eq!(jobs(&run).len(), all_five);
    assert!(run.stderr.contains("shallow"), "{}", run.stderr);
    let run = common::lb_in(&shallow, &["affected", "--since", "HEAD~1"], &[]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("unknown git revision 'HEAD~1'")
            && run.stderr.contains("shallow")
            && run.stderr.contains("GIT_DEPTH"),
        "{}",
        run.stderr
    );
}

#[test]
fn the_demo_built_on_one_machine_is_pulled_whole_by_another() {
    require_buildah();
    let reg = Registry::start();
    // Machine A: a copy of the repository's demo workspace.
    let dir = tempfile::tempdir().unwrap();
    let a_root = dir.path().join("a/ws");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    copy_dir(&repo.join("demo"), &a_root.join("demo"));
    let name = format!("demo{}", std::process::id());
    let lf = std::fs::read_to_string(repo.join("Layerfile.toml"))
        .unwrap()
        .replacen("name = \"demo\"", &format!("name = \"{name}\""), 1);
    std::fs::write(
        a_root.join("Layerfile.toml"),
        format!(
            "{lf}\n[cache]\nregistry = \"{}\"\ntls_verify = false\n",
            reg.url()
        ),
    )
    .unwrap();
    let a_storage = dir.path().join("a/storage");
    let a = Machine {
        _dir: tempfile::tempdir().unwrap(),
        root: a_root.clone(),
        storage: a_storage,
    };
    let (code, out, err) = a.lb(&["build", "--json", "//compute/slurm"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(json(&out)["built"], 4, "{out}");

    // Machine B: another path, another cache directory, another storage root.
    let b_root = dir.path().join("b/somewhere/else/ws");
    copy_dir(&a_root, &b_root);
    let _ = std::fs::remove_dir_all(b_root.join("cache"));
    let b = Machine {
        _dir: tempfile::tempdir().unwrap(),
        root: b_root,
        storage: dir.path().join("b/storage"),
    };
    let (code, out, err) = b.lb(&["build", "//compute/slurm"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("nothing built: 4 pulled from"),
        "{out}\n{err}"
    );
    let conf = b.buildah(&["images", "--format", "{{.Name}}"]);
    assert!(conf.contains("compute/slurm"), "{conf}");

    // The demo declares a squashfs output: machine A wrote it after building.
    let listing = tool_out(
        "unsquashfs",
        &[
            "-l",
            a_root.join("out/compute-slurm.squashfs").to_str().unwrap(),
        ],
    );
    assert!(
        listing.contains("squashfs-root/etc/slurm/slurm.conf"),
        "{listing}"
    );
    // Every export format of //compute/slurm, each read by a real consumer.
    let out_dir = dir.path().join("exports");
    let export = |format: &str, name: &str| {
        let path = out_dir.join(name);
        let (code, out, err) = a.lb(&[
            "export",
            "//compute/slurm",
            "--format",
            format,
            "-o",
            path.to_str().unwrap(),
        ]);
        assert_eq!(code, 0, "{format}: {out}\n{err}");
        path.display().to_string()
    };
    let digest = json(&a.lb(&["hash", "--json", "//compute/slurm"]).1)["digest"]
        .as_str()
        .unwrap()
        .to_string();
    for (transport, path) in [
        ("oci-archive", export("oci-archive", "slurm-oci.tar")),
        (
            "docker-archive",
            export("docker-archive", "slurm-docker.tar"),
        ),
        ("oci", export("oci-dir", "slurm-oci")),
    ] {
        let info = json(&tool_out(
            "skopeo",
            &["inspect", &format!("{transport}:{path}")],
        ));
        assert_eq!(
            info["Labels"]["layerbuild.digest"],
            digest.as_str(),
            "{transport}"
        );
        assert_eq!(info["Labels"]["layerbuild.label"], "//compute/slurm");
    }
    let tar = tool_out("tar", &["-tf", &export("rootfs-tar", "slurm-rootfs.tar")]);
    assert!(
        tar.lines().any(|l| l == "./etc/slurm/slurm.conf"),
        "rootfs tar"
    );
    let sq = export("squashfs", "slurm.squashfs");
    let listing = tool_out("unsquashfs", &["-l", &sq]);
    assert!(listing.contains("squashfs-root/etc/slurm/slurm.conf"));
    assert!(listing.contains("squashfs-root/usr/bin/python3"));
}

fn tool_out(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn push_sends_a_built_layer_to_a_registry_once() {
    require_buildah();
    let reg = Registry::start();
    let ws = TestWs::new("chain");
    let r = ws.lb(&["build", "--json", "//base/hsn"]).ok().json();
    let digest = r["layers"][1]["digest"].as_str().unwrap().to_string();
    let repo = format!("127.0.0.1:{}/hpc/images", reg.port);
    // A plain-HTTP registry with TLS verification on: the failure is said
    // once, with what to do.
    let refused = ws.lb(&["push", "//base/hsn", &repo]);
    assert_eq!(refused.code, 1, "{}", refused.stderr);
    let said = format!("{}{}", refused.stdout, refused.stderr);
    assert_eq!(
        said.matches("server gave HTTP response to HTTPS client")
            .count(),
        1,
        "{said}"
    );
    assert!(
        refused
            .stderr
            .contains("hint: the registry speaks plain HTTP: add --tls-verify=false"),
        "{}",
        refused.stderr
    );
    let r = ws
        .lb(&["push", "--json", "--tls-verify=false", "//base/hsn", &repo])
        .ok()
        .json();
    assert_eq!(r["status"], "pushed", "{r}");
    // The default tag: TYPE-LAYER-DIGEST12.
    let target = format!("docker://{repo}:base-hsn-{}", &digest[..12]);
    assert_eq!(r["target"], target.as_str());
    let info = json(&tool_out(
        "skopeo",
        &["inspect", "--tls-verify=false", &target],
    ));
    assert_eq!(info["Labels"]["layerbuild.digest"], digest.as_str());
    // Pushing again finds it there.
    let r = ws
        .lb(&["push", "--json", "--tls-verify=false", "//base/hsn", &repo])
        .ok()
        .json();
    assert_eq!(r["status"], "up_to_date", "{r}");
    // A declared push output, with an explicit tag.
    ws.append(
        "Layerfile.toml",
        &format!(
            "\n[[layers.\"base/hsn\".outputs]]\npush = \"{repo}:stable\"\ntls_verify = false\n"
        ),
    );
    let r = ws.lb(&["build", "--json", "//base/hsn"]).ok().json();
    assert_eq!(r["outputs"][0]["status"], "pushed", "{r}");
    let info = json(&tool_out(
        "skopeo",
        &[
            "inspect",
            "--tls-verify=false",
            &format!("docker://{repo}:stable"),
        ],
    ));
    assert_eq!(info["Labels"]["layerbuild.digest"], digest.as_str());
    // An unreachable destination fails the command, not the cache.
    let run = ws.lb(&[
        "push",
        "--tls-verify=false",
        "//base/hsn",
        "127.0.0.1:9/x/y",
    ]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    // Said once, as the error, naming the layer and the destination.
    assert!(
        run.stderr
            .contains("//base/hsn -> docker://127.0.0.1:9/x/y"),
        "{}",
        run.stderr
    );
    assert!(run.stdout.is_empty(), "{}", run.stdout);
}

//! Digests: what must change them, and what must not. These run the real
//! binary on real files; no buildah is needed to fingerprint.

mod common;

use std::collections::BTreeMap;

use common::{Edit, TestWs, copy_dir};

/// Labels whose digest differs between two snapshots.
fn changed(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> Vec<String> {
    a.iter()
        .filter(|(k, v)| b.get(*k) != Some(*v))
        .map(|(k, _)| k.clone())
        .collect()
}

#[test]
fn a_copy_at_another_path_has_identical_digests() {
    let ws = TestWs::new("chain");
    let before = ws.digests();
    assert_eq!(before.len(), 5);
    let other = tempfile::tempdir().unwrap();
    let copy = other.path().join("somewhere/else/entirely");
    copy_dir(&ws.root, &copy);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_layerbuild"))
        .args(["-C", copy.to_str().unwrap(), "ls", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let after: BTreeMap<String, String> = v["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["label"].as_str().unwrap().into(),
                e["digest"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(before, after);
}

#[test]
fn mtime_alone_changes_nothing() {
    let ws = TestWs::new("chain");
    let before = ws.digests();
    let p = ws.path("slurm-config/roles/slurm/tasks/main.yml");
    let f = std::fs::File::options().write(true).open(&p).unwrap();
    f.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(3600))
        .unwrap();
    assert_eq!(before, ws.digests());
}

#[test]
fn a_role_file_used_only_by_slurm_changes_only_slurm() {
    let ws = TestWs::new("chain");
    let before = ws.digests();
    ws.append("slurm-config/roles/slurm/tasks/main.yml", "\n# tuned\n");
    assert_eq!(changed(&before, &ws.digests()), vec!["//compute/slurm"]);
}

#[test]
fn a_parent_playbook_change_changes_it_and_its_descendants_only() {
    let ws = TestWs::new("chain");
    let before = ws.digests();
    ws.append("compute-config/compute.yml", "\n# tuned\n");
    assert_eq!(
        changed(&before, &ws.digests()),
        vec!["//compute/compute", "//compute/slurm"]
    );
}

#[test]
fn a_base_change_ripples_to_every_descendant() {
    let ws = TestWs::new("chain");
    let before = ws.digests();
    ws.append("scripts/busybox-root.sh", "\n# tuned\n");
    assert_eq!(changed(&before, &ws.digests()).len(), 5);
}

#[test]
fn file_mode_counts() {
    use std::os::unix::fs::PermissionsExt;
    let ws = TestWs::new("chain");
    let before = ws.digests();
    let p = ws.path("slurm-config/roles/slurm/templates/README");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(changed(&before, &ws.digests()), vec!["//compute/slurm"]);
    // Group-write (umask differences between machines) does not count.
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o775)).unwrap();
    let mid = ws.digests();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(mid, ws.digests());
}

#[test]
fn gitignored_files_do_not_count_but_others_do() {
    let ws = TestWs::new("chain");
    ws.write(".gitignore", "*.retry\n/cache/\n");
    let before = ws.digests();
    ws.write("slurm-config/roles/slurm/files/slurm.retry", "host\n");
    assert_eq!(before, ws.digests(), "an ignored file changed a digest");
    // A used role counts whole (its files may be read by templated names).
    ws.write("slurm-config/roles/slurm/files/extra.conf", "x\n");
    assert_eq!(changed(&before, &ws.digests()), vec!["//compute/slurm"]);
}

#[test]
fn what_ansible_loads_from_a_used_role_counts_whatever_gitignore_says() {
    let ws = TestWs::new("chain");
    // Ignored anywhere, or only below the role (the walk meets that
    // .gitignore on its way, not the workspace's).
    for (ignore_file, rule) in [
        (".gitignore", "extra.yml\n/cache/\n"),
        ("slurm-config/roles/slurm/.gitignore", "tasks/extra.yml\n"),
    ] {
        let _ = std::fs::remove_file(ws.path(".gitignore"));
        let _ = std::fs::remove_file(ws.path("slurm-config/roles/slurm/.gitignore"));
        ws.write(ignore_file, rule);
        ws.write(
            "slurm-config/roles/slurm/tasks/extra.yml",
            "- raw: echo 1\n",
        );
        let before = ws.digests();
        ws.write(
            "slurm-config/roles/slurm/tasks/extra.yml",
            "- raw: echo 2\n",
        );
        assert_eq!(
            changed(&before, &ws.digests()),
            vec!["//compute/slurm"],
            "ignored by {ignore_file}"
        );
    }
    // Without any .gitignore the walk indexed it already.
    let _ = std::fs::remove_file(ws.path("slurm-config/roles/slurm/.gitignore"));
    let before = ws.digests();
    ws.write(
        "slurm-config/roles/slurm/tasks/extra.yml",
        "- raw: echo 3\n",
    );
    assert_eq!(changed(&before, &ws.digests()), vec!["//compute/slurm"]);
}

#[test]
fn an_unused_role_does_not_count() {
    let ws = TestWs::new("chain");
    let before = ws.digests();
    ws.write(
        "slurm-config/roles/unused/tasks/main.yml",
        "- raw: echo hi\n",
    );
    assert_eq!(before, ws.digests());
}

#[test]
fn role_dependencies_and_include_role_are_followed() {
    let ws = TestWs::new("chain");
    ws.write(
        "slurm-config/roles/munge/tasks/main.yml",
        "- raw: echo munge\n",
    );
    ws.write(
        "slurm-config/roles/slurm/meta/main.yml",
        "dependencies:\n  - role: munge\n",
    );
    ws.write("slurm-config/roles/nhc/tasks/main.yml", "- raw: echo nhc\n");
    ws.append(
        "slurm-config/roles/slurm/tasks/main.yml",
        "- name: nhc\n  block:\n    - include_role:\n        name: nhc\n",
    );
    let before = ws.digests();
    ws.append("slurm-config/roles/munge/tasks/main.yml", "# changed\n");
    let mid = ws.digests();
    assert_eq!(changed(&before, &mid), vec!["//compute/slurm"]);
    ws.append("slurm-config/roles/nhc/tasks/main.yml", "# changed\n");
    assert_eq!(changed(&mid, &ws.digests()), vec!["//compute/slurm"]);
}

#[test]
fn a_templated_role_name_makes_every_role_count() {
    let ws = TestWs::new("chain");
    ws.append(
        "slurm-config/roles/slurm/tasks/main.yml",
        "- include_role:\n    name: \"{{ extra_role }}\"\n",
    );
    ws.write(
        "slurm-config/roles/other/tasks/main.yml",
        "- raw: echo other\n",
    );
    let before = ws.digests();
    ws.append("slurm-config/roles/other/tasks/main.yml", "# changed\n");
    assert_eq!(changed(&before, &ws.digests()), vec!["//compute/slurm"]);
    let h = ws.lb(&["hash", "//compute/slurm", "--json"]).ok().json();
    let notes = h["inputs"]["notes"].as_array().unwrap();
    assert!(
        notes[0].as_str().unwrap().contains("templated"),
        "{notes:?}"
    );
}

#[test]
fn system_vars_count_only_for_layers_that_run_a_play() {
    let ws = TestWs::new("chain");
    let before = ws.digests();
    let lf = ws
        .read("Layerfile.toml")
        .edit("testcluster", "othercluster");
    ws.write("Layerfile.toml", &lf);
    assert_eq!(
        changed(&before, &ws.digests()),
        vec!["//compute/compute", "//compute/slurm"]
    );
}

#[test]
fn packages_count_entry_by_entry() {
    let ws = TestWs::new("chain");
    let lf = ws.read("Layerfile.toml").edit(
        "run = [\"echo hsn > /etc/layer-hsn\"]",
        "run = [\"echo hsn > /etc/layer-hsn\"]\npackages = [\"libfabric\"]\npackage_command = \"echo {packages} >> /etc/packages\"",
    );
    ws.write("Layerfile.toml", &lf);
    let before = ws.digests();
    ws.write(
        "Layerfile.toml",
        &lf.edit("[\"libfabric\"]", "[\"libfabric\", \"ucx\"]"),
    );
    let h = ws.lb(&["hash", "//base/hsn", "--json"]).ok().json();
    assert_eq!(
        h["inputs"]["packages"],
        serde_json::json!(["libfabric", "ucx"])
    );
    assert_eq!(
        changed(&before, &ws.digests()),
        vec![
            "//base/hsn",
            "//compute/compute",
            "//compute/slurm",
            "//uan/uan"
        ]
    );
}

#[test]
fn setup_commands_count_the_workspace_files_they_name() {
    let ws = TestWs::new("chain");
    let before = ws.digests();
    // busybox-root.sh is named by //base/os's setup command, not by `inputs`.
    let h = ws.lb(&["hash", "//base/os", "--json"]).ok().json();
    assert_eq!(
        h["inputs"]["files"]["scripts/busybox-root.sh"]["origin"],
        "setup"
    );
    ws.append("scripts/busybox-root.sh", "# changed\n");
    assert_eq!(changed(&before, &ws.digests()).len(), 5);
}

#[test]
fn hash_prints_the_digest_first_and_json_has_the_manifest() {
    let ws = TestWs::new("chain");
    let text = ws.lb(&["hash", "//compute/slurm"]).ok();
    let first = text.stdout.lines().next().unwrap();
    assert_eq!(first.len(), 64);
    assert!(first.chars().all(|c| c.is_ascii_hexdigit()));
    let j = ws.lb(&["hash", "//compute/slurm", "--json"]).ok().json();
    assert_eq!(j["label"], "//compute/slurm");
    assert_eq!(j["digest"], first);
    let inputs = &j["inputs"];
    assert_eq!(inputs["parent"]["kind"], "layer");
    assert_eq!(inputs["parent"]["label"], "//compute/compute");
    assert_eq!(
        inputs["files"]["slurm-config/slurm.yml"]["origin"],
        "playbook"
    );
    assert_eq!(
        inputs["files"]["slurm-config/roles/slurm/tasks/main.yml"]["origin"],
        "role:slurm"
    );
    // Inventory variables count by name, relative to the inventory.
    assert!(inputs["inventory_vars"]["slurm_partitions"]["group_vars/all.yml"].is_string());
    assert!(
        inputs["files"]
            .get("inventory/test/group_vars/all.yml")
            .is_none()
    );
    assert_eq!(inputs["vars"]["cluster_name"], "testcluster");
    // No absolute path anywhere in the manifest.
    assert!(!j["inputs"].to_string().contains(ws.root.to_str().unwrap()));
}

#[test]
fn graph_formats() {
    let ws = TestWs::new("chain");
    let dot = ws.lb(&["graph"]).ok().stdout;
    assert!(
        dot.contains("\"//compute/compute\" -> \"//compute/slurm\""),
        "{dot}"
    );
    let mermaid = ws.lb(&["graph", "--format", "mermaid"]).ok().stdout;
    assert!(
        mermaid.contains("compute_compute --> compute_slurm"),
        "{mermaid}"
    );
    let json = ws.lb(&["graph", "--format", "json"]).ok().json();
    assert_eq!(json["nodes"].as_array().unwrap().len(), 5);
    assert_eq!(json["edges"].as_array().unwrap().len(), 4);
}

#[test]
fn ls_reports_never_built_without_creating_a_cache() {
    let ws = TestWs::new("chain");
    let out = ws.lb(&["ls"]).ok().stdout;
    assert_eq!(out.lines().count(), 5);
    assert!(out.lines().all(|l| l.contains("never built")), "{out}");
    assert!(!ws.db().exists());
}

#[test]
fn files_outside_the_source_named_by_relative_paths_count() {
    let ws = TestWs::new("chain");
    ws.write("common/files/motd", "shared banner\n");
    ws.append(
        "slurm-config/roles/slurm/tasks/main.yml",
        "- name: shared motd\n  ansible.builtin.copy:\n    src: ../../../../common/files/motd\n    dest: /etc/motd\n",
    );
    let before = ws.digests();
    let h = ws.lb(&["hash", "//compute/slurm", "--json"]).ok().json();
    assert_eq!(
        h["inputs"]["files"]["common/files/motd"]["origin"], "play",
        "{}",
        h["inputs"]["files"]
    );
    ws.write("common/files/motd", "changed banner\n");
    assert_eq!(changed(&before, &ws.digests()), vec!["//compute/slurm"]);
}

#[test]
fn include_fragments_join_one_dag() {
    let ws = TestWs::new("chain");
    let lf = ws.read("Layerfile.toml");
    let start = lf.find("[layers.\"uan/uan\"]").unwrap();
    ws.write("layers/uan.toml", &lf[start..]);
    ws.write(
        "Layerfile.toml",
        &lf[..start].replacen("name = \"", "include = [\"layers/*.toml\"]\nname = \"", 1),
    );
    let g = ws.lb(&["graph", "--format", "json"]).ok().json();
    assert!(
        g["edges"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!(["//base/hsn", "//uan/uan"]))
    );
    let before = ws.digests();
    assert_eq!(before.len(), 5);
    // The fragment's own text is not an input: only what it declares.
    ws.append("layers/uan.toml", "\n# a comment\n");
    assert_eq!(before, ws.digests());
}

#[test]
fn the_demo_workspace_is_valid_and_fingerprints() {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_layerbuild"))
        .args(["-C", root, "hash", "//compute/slurm", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let files = j["inputs"]["files"].as_object().unwrap();
    assert!(
        files
            .keys()
            .any(|k| k.starts_with("demo/slurm-config/roles/slurm/")),
        "{files:?}"
    );
    let vars = j["inputs"]["inventory_vars"].as_object().unwrap();
    assert!(vars.contains_key("slurm_partitions"), "{vars:?}");
    assert!(
        !files.keys().any(|k| k.starts_with("demo/compute-config/")),
        "a parent's files leaked in"
    );
}

//! `why`, `hash-diff`, `build --dry-run`, `log`, `debug`, `--from-failed`
//! and kept containers. Explanations are snapshot-tested with digests and
//! times redacted; they run in this process against the recording backend
//! ([`TestWs::recorded`]: no buildah), since what they test is the
//! bookkeeping above the executor. `debug`, `--from-failed` and kept
//! containers run on real builds (busybox base, real buildah and
//! ansible-playbook).

mod common;

use std::process::Command;

use common::{Edit, Run, TestWs, require_buildah};

fn redact(s: &str) -> String {
    let digests = regex::Regex::new(r"\b[0-9a-f]{12,64}\b").unwrap();
    let times = regex::Regex::new(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}").unwrap();
    let names = regex::Regex::new(r"t\d+-\d+-chain").unwrap();
    let s = digests.replace_all(s, "[digest]");
    let s = times.replace_all(&s, "[time]");
    names.replace_all(&s, "[ws]").into_owned()
}

/// The chain fixture with packages on //compute/slurm (installed by a
/// command that works on busybox), built once.
fn built_chain() -> TestWs {
    let ws = TestWs::recorded("chain");
    let lf = ws.read("Layerfile.toml").edit(
        "playbook = \"slurm.yml\"",
        "playbook = \"slurm.yml\"\npackages = [\"munge\"]\npackage_command = \"echo {packages} >> /etc/packages\"",
    );
    ws.write("Layerfile.toml", &lf);
    ws.lb(&["build", "//..."]).ok();
    ws
}

fn why(ws: &TestWs, args: &[&str]) -> String {
    let mut a = vec!["why"];
    a.extend_from_slice(args);
    redact(&ws.lb(&a).ok().stdout)
}

/// Applies `change`, snapshots `why //compute/slurm` (or `label`), restores the file.
fn with_change(
    ws: &TestWs,
    file: &str,
    change: impl Fn(String) -> String,
    label: &str,
    name: &str,
) {
    let before = ws.read(file);
    ws.write(file, &change(before.clone()));
    let out = why(ws, &[label]);
    insta::assert_snapshot!(name, out);
    ws.write(file, &before);
}

#[test]
fn why_explains_each_kind_of_change() {
    let ws = built_chain();

    insta::assert_snapshot!("up_to_date", why(&ws, &["//compute/slurm"]));

    // Two parents up: //base/hsn's run command, seen from //compute/slurm.
    with_change(
        &ws,
        "Layerfile.toml",
        |s| s.edit("echo hsn > /etc/layer-hsn", "echo hsn2 > /etc/layer-hsn"),
        "//compute/slurm",
        "command_changed_two_parents_up",
    );
    with_change(
        &ws,
        "Layerfile.toml",
        |s| s.edit("[\"munge\"]", "[\"munge\", \"slurm-client\"]"),
        "//compute/slurm",
        "package_added",
    );
    with_change(
        &ws,
        "Layerfile.toml",
        |s| s.edit("[\"munge\"]", "[]"),
        "//compute/slurm",
        "package_removed",
    );
    with_change(
        &ws,
        "inventory/test/group_vars/all.yml",
        |s| s.edit("  - debug\n", "  - debug\n  - gpu\n"),
        "//compute/slurm",
        "inventory_var_changed",
    );
    with_change(
        &ws,
        "inventory/test/group_vars/all.yml",
        |s| s + "slurm_extra_conf: SchedulerType=sched/backfill\n",
        "//compute/slurm",
        "inventory_var_added",
    );
    with_change(
        &ws,
        "inventory/test/group_vars/all.yml",
        |_| "# no variables left\n".into(),
        "//compute/slurm",
        "inventory_var_removed",
    );
    with_change(
        &ws,
        "Layerfile.toml",
        |s| s.edit("testcluster", "othercluster"),
        "//compute/slurm",
        "system_var_changed",
    );
    // The play stops using two variables that are still defined: not
    // "removed from" where they still are.
    with_change(
        &ws,
        "slurm-config/roles/slurm/tasks/main.yml",
        |s| {
            s.edit("ClusterName={{ cluster_name }}", "ClusterName=fixed")
                .edit("{{ slurm_partitions | join(\",\") }}", "batch")
        },
        "//compute/slurm",
        "vars_no_longer_used",
    );
    with_change(
        &ws,
        "slurm-config/roles/slurm/tasks/main.yml",
        |s| s + "# tuned\n",
        "//compute/slurm",
        "role_file_modified",
    );
    with_change(
        &ws,
        "Layerfile.toml",
        |s| {
            s.replacen(
                "groups = [\"Compute\"]\n\n[layers.\"uan/uan\"]",
                "groups = [\"Compute\", \"Slurm\"]\n\n[layers.\"uan/uan\"]",
                1,
            )
        },
        "//compute/slurm",
        "definition_key_changed",
    );
    with_change(
        &ws,
        "Layerfile.toml",
        |s| {
            s.edit(
                "[layers.\"uan/uan\"]\nparent = \"//base/hsn\"",
                "[layers.\"uan/uan\"]\nparent = \"//base/os\"",
            )
        },
        "//uan/uan",
        "parent_image_changed",
    );
    with_change(
        &ws,
        "scripts/uan.sh",
        |s| s.edit("user access node", "login node"),
        "//uan/uan",
        "script_modified",
    );

    // File added, file removed, mode changed: one layer, three changes.
    use std::os::unix::fs::PermissionsExt;
    ws.write("slurm-config/roles/slurm/files/gres.conf", "Name=gpu\n");
    std::fs::remove_file(ws.path("slurm-config/roles/slurm/templates/README")).unwrap();
    std::fs::set_permissions(
        ws.path("slurm-config/slurm.yml"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    insta::assert_snapshot!("file_added_removed_mode", why(&ws, &["//compute/slurm"]));
    let json = ws.lb(&["why", "--json", "//compute/slurm"]).ok().json();
    assert_eq!(json["version"], 1);
    assert_eq!(json["status"], "needs_build");
    let kinds: Vec<&str> = json["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        vec!["file_added", "file_removed", "file_mode_changed"]
    );
}

#[test]
fn why_on_a_layer_never_built_lists_what_a_build_would_build() {
    let ws = TestWs::recorded("chain");
    ws.lb(&["build", "//base/hsn"]).ok();
    insta::assert_snapshot!("never_built", why(&ws, &["//compute/slurm"]));
    let j = ws.lb(&["why", "--json", "//compute/slurm"]).ok().json();
    assert_eq!(j["status"], "never_built");
    assert_eq!(
        j["would_build"],
        serde_json::json!(["//compute/compute", "//compute/slurm"])
    );
}

#[test]
fn why_after_an_upgrade_names_the_format_change() {
    let ws = TestWs::recorded("chain");
    ws.lb(&["build", "//base/os"]).ok();
    // Pretend the last build was recorded by an older format, and its image is gone.
    let conn = rusqlite::Connection::open(ws.db()).unwrap();
    conn.execute_batch(
        "UPDATE builds SET manifest = json_set(manifest, '$.format', 0), digest = 'ab' || substr(digest, 3);
         DELETE FROM layers;",
    )
    .unwrap();
    let out = why(&ws, &["//base/os"]);
    assert!(out.contains("format version changed: 0 -> 4"), "{out}");
    insta::assert_snapshot!("format_changed", out);
}

fn vault(args: &[&str], dir: &std::path::Path) -> String {
    let out = Command::new("ansible-vault")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ansible-vault {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn why_never_prints_vault_values() {
    let mut ws = TestWs::recorded("chain");
    let pw = ws.path("../vault-pass");
    std::fs::write(&pw, "correct horse\n").unwrap();
    ws.env.push((
        "ANSIBLE_VAULT_PASSWORD_FILE".into(),
        pw.display().to_string(),
    ));
    let inv = ws.path("inventory/test/group_vars");
    let pwf = pw.display().to_string();
    // A whole encrypted file, and an inline !vault value beside a plain one.
    ws.write(
        "inventory/test/group_vars/Compute/vault.yml",
        "munge_key: first-secret-key\n",
    );
    vault(
        &[
            "encrypt",
            "--vault-password-file",
            &pwf,
            "Compute/vault.yml",
        ],
        &inv,
    );
    let inline = vault(
        &[
            "encrypt_string",
            "--vault-password-file",
            &pwf,
            "--name",
            "db_password",
            "hunter2-first",
        ],
        &inv,
    );
    ws.write(
        "inventory/test/group_vars/Compute/main.yml",
        &format!("slurm_db: slurmdb01\n{inline}"),
    );
    ws.append(
        "slurm-config/roles/slurm/tasks/main.yml",
        "- name: accounting database\n  raw: echo '{{ slurm_db }} {{ db_password | length }}' > /etc/slurmdbd.host\n  args:\n    executable: /bin/sh\n",
    );
    ws.lb(&["build", "//compute/slurm"]).ok();

    ws.write(
        "inventory/test/group_vars/Compute/vault.yml",
        "munge_key: second-secret-key\n",
    );
    vault(
        &[
            "encrypt",
            "--vault-password-file",
            &pwf,
            "Compute/vault.yml",
        ],
        &inv,
    );
    let inline = vault(
        &[
            "encrypt_string",
            "--vault-password-file",
            &pwf,
            "--name",
            "db_password",
            "hunter2-second",
        ],
        &inv,
    );
    ws.write(
        "inventory/test/group_vars/Compute/main.yml",
        &format!("slurm_db: slurmdb02\n{inline}"),
    );

    let shown = ws
        .lb(&["why", "--show-values", "//compute/slurm"])
        .ok()
        .stdout;
    let json = ws
        .lb(&["why", "--show-values", "--json", "//compute/slurm"])
        .ok()
        .stdout;
    for out in [&shown, &json] {
        for secret in [
            "first-secret-key",
            "second-secret-key",
            "hunter2",
            "$ANSIBLE_VAULT",
        ] {
            assert!(!out.contains(secret), "{secret} leaked:\n{out}");
        }
    }
    assert!(shown.contains("inventory var db_password changed in inventory/test/group_vars/Compute/main.yml (ansible-vault value: never shown)"), "{shown}");
    assert!(shown.contains("inventory/test/group_vars/Compute/vault.yml modified (ansible-vault encrypted: variables not shown)"), "{shown}");
    // Plain values only with --show-values.
    assert!(shown.contains("slurm_db changed in inventory/test/group_vars/Compute/main.yml: \"slurmdb01\" -> \"slurmdb02\""), "{shown}");
    let hidden = ws.lb(&["why", "//compute/slurm"]).ok().stdout;
    assert!(!hidden.contains("slurmdb0"), "{hidden}");
    insta::assert_snapshot!("vault", redact(&hidden));
}

#[test]
fn dry_run_json_predicts_exactly_what_is_built() {
    let ws = built_chain();
    let lf = ws
        .read("Layerfile.toml")
        .edit("echo hsn > /etc/layer-hsn", "echo hsn3 > /etc/layer-hsn");
    ws.write("Layerfile.toml", &lf);
    ws.append("scripts/uan.sh", "echo more >> /etc/motd\n");
    let calls_before = ws.cached_digests();
    let plan = ws
        .lb(&["build", "--dry-run", "--json", "//..."])
        .ok()
        .json();
    assert_eq!(plan["version"], 1);
    assert_eq!(
        ws.cached_digests(),
        calls_before,
        "a dry run wrote to the cache"
    );
    let dirty: Vec<String> = plan["layers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["status"] != "up_to_date")
        .map(|l| l["label"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        dirty,
        vec![
            "//base/hsn",
            "//compute/compute",
            "//compute/slurm",
            "//uan/uan"
        ]
    );
    let reason = plan["layers"][2]["reason"].as_str().unwrap();
    assert!(reason.starts_with("run commands changed"), "{reason}");
    let text = redact(&ws.lb(&["build", "--dry-run", "//..."]).ok().stdout);
    insta::assert_snapshot!("dry_run", text);

    let report = ws.lb(&["build", "--json", "//..."]).ok().json();
    assert_eq!(TestWs::labels_with(&report, "built"), dirty);
}

fn failing_slurm() -> TestWs {
    let ws = TestWs::new("chain");
    ws.write(
        "slurm-config/roles/slurm/tasks/main.yml",
        "- name: mark the container\n  raw: echo inside > /etc/debug-mark\n  args:\n    executable: /bin/sh\n\
         - name: this fails\n  raw: echo about to fail; test -f /etc/fixed\n  args:\n    executable: /bin/sh\n",
    );
    let run = ws.lb(&["build", "//compute/slurm"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    ws
}

#[test]
fn debug_log_from_failed_and_clean_on_a_failed_layer() {
    require_buildah();
    let ws = failing_slurm();

    // log: the failed build's full log.
    let log = ws.lb(&["log", "//compute/slurm"]).ok();
    assert!(
        log.stdout.contains("TASK [slurm : this fails]") && log.stdout.contains("about to fail"),
        "{}",
        log.stdout
    );
    assert!(log.stderr.contains("failed"), "{}", log.stderr);

    // ls --failed names the kept container.
    let kept = ws.lb(&["ls", "--failed", "--json"]).ok().json();
    let kept = &kept["containers"];
    let container = kept[0]["container"].as_str().unwrap().to_string();
    assert_eq!(kept[0]["label"], "//compute/slurm");

    // debug runs a command in the kept container, non-interactively.
    let d = ws
        .lb(&[
            "debug",
            "//compute/slurm",
            "--",
            "cat",
            "/etc/debug-mark",
            "/etc/layer-base",
        ])
        .ok();
    assert_eq!(d.stdout, "inside\nbase\n");
    assert!(
        d.stderr.contains(&format!(
            "$ buildah run --isolation chroot {container} -- cat /etc/debug-mark"
        )),
        "{}",
        d.stderr
    );
    let d: Run = ws.lb(&["debug", "//compute/slurm", "--", "sh", "-c", "exit 3"]);
    assert_eq!(d.code, 3);

    // --fresh starts from a built image (of //compute/compute here: slurm never built).
    let f = ws
        .lb(&[
            "debug",
            "--fresh",
            "//compute/compute",
            "--",
            "cat",
            "/etc/cluster-name",
        ])
        .ok();
    assert_eq!(f.stdout, "testcluster\n");
    let f = ws.lb(&["debug", "--fresh", "//compute/slurm", "--", "true"]);
    assert_eq!(f.code, 2, "{}", f.stderr);

    // --from-failed re-runs in the kept container and never caches.
    let r = ws.lb(&["build", "--from-failed", "//compute/slurm"]);
    assert_eq!(r.code, 1, "still failing: {}", r.stderr);
    ws.lb(&["debug", "//compute/slurm", "--", "touch", "/etc/fixed"])
        .ok();
    let r = ws.lb(&["build", "--from-failed", "//compute/slurm"]).ok();
    assert!(
        r.stdout
            .contains("not cached: only builds from a clean container are cached"),
        "{}",
        r.stdout
    );
    let slurm = ws
        .lb(&["hash", "//compute/slurm"])
        .ok()
        .stdout
        .lines()
        .next()
        .unwrap()
        .to_string();
    assert!(
        !ws.cached_digests().contains(&slurm),
        "a --from-failed result was cached"
    );

    // clean --failed removes it.
    let c = ws.lb(&["clean", "--failed"]).ok();
    assert!(c.stdout.contains(&container), "{}", c.stdout);
    assert!(!TestWs::container_exists(&container));
    assert_eq!(
        ws.lb(&["ls", "--failed"]).ok().stdout,
        "no kept containers of failed builds\n"
    );
    let d = ws.lb(&["debug", "//compute/slurm", "--", "true"]);
    assert_eq!(d.code, 2);
    assert!(d.stderr.contains("--fresh"), "{}", d.stderr);
}

#[test]
fn hash_diff_compares_recorded_manifests() {
    let ws = built_chain();
    let old = ws.lb(&["hash", "//compute/slurm"]).ok().stdout[..64].to_string();
    ws.append("slurm-config/roles/slurm/tasks/main.yml", "# tuned\n");
    ws.lb(&["build", "//compute/slurm"]).ok();
    let new = ws.lb(&["hash", "//compute/slurm"]).ok().stdout[..64].to_string();
    let out = ws.lb(&["hash-diff", &old[..8], &new[..10]]).ok().stdout;
    assert!(
        out.contains("slurm-config/roles/slurm/tasks/main.yml modified (role slurm"),
        "{out}"
    );
    let log = ws
        .lb(&["log", "//compute/slurm", "--digest", &old[..10]])
        .ok()
        .stdout;
    assert!(log.contains(&format!("digest {old}")), "{log}");
}

#[test]
fn bad_input_to_why_hash_diff_log_and_debug() {
    let ws = built_chain();
    let expect2 = |r: Run, what: &str| {
        assert_eq!(r.code, 2, "{what}: {}", r.stderr);
        assert!(r.stderr.contains("hint:"), "{what}: {}", r.stderr);
        assert!(!r.stderr.contains("panicked"));
    };
    expect2(ws.lb(&["why", "//compute/slurmm"]), "unknown label");
    expect2(ws.lb(&["why", "compute/slurm"]), "malformed label");
    expect2(ws.lb(&["hash-diff", "ffffffffffff", "0000"]), "no match");
    expect2(ws.lb(&["hash-diff", "xyz", "0000"]), "not hex");
    // Two recorded manifests sharing a prefix.
    let conn = rusqlite::Connection::open(ws.db()).unwrap();
    let d: String = conn
        .query_row("SELECT digest FROM builds LIMIT 1", [], |r| r.get(0))
        .unwrap();
    let twin = format!("{}{}", &d[..8], "0".repeat(56));
    conn.execute(
        "INSERT INTO builds (label, system, digest, status, started_at, duration_ms, manifest) SELECT label, system, ?1, status, started_at, duration_ms, manifest FROM builds WHERE digest = ?2",
        rusqlite::params![twin, d],
    )
    .unwrap();
    let r = ws.lb(&["hash-diff", &d[..8], &d]);
    assert!(r.stderr.contains("ambiguous"), "{}", r.stderr);
    expect2(r, "ambiguous prefix");
    expect2(
        ws.lb(&["why", "//compute/slurm", "--since", "HEAD"]),
        "outside git",
    );
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .args(args)
            .current_dir(&ws.root)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    git(&["init", "-q"]);
    git(&["-c", "user.name=t", "-c", "user.email=t@t", "add", "-A"]);
    git(&[
        "-c",
        "user.name=t",
        "-c",
        "user.email=t@t",
        "commit",
        "-qm",
        "init",
    ]);
    expect2(
        ws.lb(&["why", "//compute/slurm", "--since", "no-such-rev"]),
        "bad revision",
    );
    expect2(
        ws.lb(&["log", "//uan/uan", "--digest", "ffff"]),
        "log digest no match",
    );
}

#[test]
fn why_since_a_git_revision_reads_the_revision_not_the_working_tree() {
    let ws = TestWs::recorded("chain");
    ws.write(".gitignore", "/cache/\n");
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@t"])
            .args(args)
            .current_dir(&ws.root)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    git(&["init", "-q"]);
    git(&["add", "-A"]);
    git(&["commit", "-qm", "one"]);
    ws.append("compute-config/roles/common/tasks/main.yml", "# changed\n");
    let status_before = Command::new("git")
        .args(["status", "--porcelain"])
        .current_dir(&ws.root)
        .output()
        .unwrap()
        .stdout;
    let out = ws
        .lb(&["why", "//compute/slurm", "--since", "HEAD"])
        .ok()
        .stdout;
    assert!(out.contains("changed since HEAD"), "{out}");
    assert!(out.contains("parent //compute/compute changed:"), "{out}");
    assert!(out.contains("compute-config/roles/common/tasks/main.yml modified (role common, used by //compute/compute)"), "{out}");
    let status_after = Command::new("git")
        .args(["status", "--porcelain"])
        .current_dir(&ws.root)
        .output()
        .unwrap()
        .stdout;
    assert_eq!(status_before, status_after, "the working tree was touched");
    let out = ws.lb(&["why", "//uan/uan", "--since", "HEAD"]).ok().stdout;
    assert!(out.contains("unchanged since HEAD"), "{out}");
}

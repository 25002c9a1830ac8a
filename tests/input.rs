//! Bad input: paths that escape the workspace (through symlinks too),
//! symlinks inside roles and sources, secrets that must never be shown,
//! and regression tests for crashes found by fuzzing (`scripts/fuzz`).

mod common;

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use common::{Edit, TestWs};

fn digest(ws: &TestWs, label: &str) -> String {
    let out = ws.lb(&["hash", label]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    out.stdout.lines().next().unwrap().to_string()
}

fn manifest_files(ws: &TestWs, label: &str) -> serde_json::Map<String, serde_json::Value> {
    let out = ws.lb(&["hash", label, "--json"]).ok();
    out.json()["inputs"]["files"].as_object().unwrap().clone()
}

/// A directory beside the workspace (outside it), with one file.
fn outside_dir(ws: &TestWs, name: &str) -> PathBuf {
    let dir = ws.root.parent().unwrap().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("data.txt"), "outside 1\n").unwrap();
    dir.canonicalize().unwrap()
}

fn allow_outside(ws: &TestWs, dir: &Path) {
    let text = ws.read("Layerfile.toml").replacen(
        "[workspace]\n",
        &format!("[workspace]\nallow_outside = [\"{}\"]\n", dir.display()),
        1,
    );
    ws.write("Layerfile.toml", &text);
}

fn line_of(text: &str, needle: &str) -> usize {
    text.lines().position(|l| l.contains(needle)).unwrap() + 1
}

#[test]
fn every_layerfile_path_leading_out_through_a_symlink_is_rejected_unless_allowed() {
    // key, value, and the symlink (workspace path -> outside path) it goes through
    let cases: &[(&str, &str, &str, &str)] = &[
        ("scripts", "scripts = [\"ext/run.sh\"]", "ext", ""),
        ("inputs", "inputs = [\"overlay\"]", "overlay", ""),
        (
            "packages_file",
            "packages_file = \"pkgs.txt\"",
            "pkgs.txt",
            "pkgs.txt",
        ),
        ("source", "source = \"ext\"", "ext", ""),
        ("roles_path", "roles_path = [\"ext\"]", "ext", ""),
    ];
    for (key, line, link, file) in cases {
        let ws = TestWs::new("chain");
        let out = outside_dir(&ws, "elsewhere");
        std::fs::write(out.join("run.sh"), "echo hi\n").unwrap();
        std::fs::write(out.join("pkgs.txt"), "chrony\n").unwrap();
        let target = if file.is_empty() {
            out.clone()
        } else {
            out.join(file)
        };
        symlink(&target, ws.path(link)).unwrap();
        ws.append(
            "Layerfile.toml",
            &format!("\n[layers.\"x/esc\"]\nparent = \"//base/os\"\n{line}\n"),
        );
        let r = ws.lb(&["hash", "//x/esc"]);
        assert_eq!(r.code, 2, "{key}: {}{}", r.stdout, r.stderr);
        let at = line_of(&ws.read("Layerfile.toml"), line);
        assert!(
            r.stderr.contains(&format!("Layerfile.toml:{at}:"))
                && r.stderr.contains("leads out of the workspace")
                && r.stderr.contains(&target.display().to_string())
                && r.stderr.contains("allow_outside"),
            "{key}: {}",
            r.stderr
        );
        allow_outside(&ws, &out);
        let r = ws.lb(&["hash", "//x/esc"]);
        assert_eq!(r.code, 0, "{key} allowed: {}", r.stderr);
    }

    // The inventory of a system, and the playbook inside a source.
    let ws = TestWs::new("chain");
    let out = outside_dir(&ws, "inv");
    std::fs::write(out.join("hosts"), "[Compute]\n").unwrap();
    symlink(&out, ws.path("inventory/ext")).unwrap();
    let lf = ws
        .read("Layerfile.toml")
        .edit("inventory/test", "inventory/ext");
    ws.write("Layerfile.toml", &lf);
    let r = ws.lb(&["ls"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("inventory path 'inventory/ext' leads out"),
        "{}",
        r.stderr
    );

    let ws = TestWs::new("chain");
    let out = outside_dir(&ws, "pb");
    std::fs::write(out.join("slurm.yml"), "- hosts: all\n").unwrap();
    std::fs::remove_file(ws.path("slurm-config/slurm.yml")).unwrap();
    symlink(out.join("slurm.yml"), ws.path("slurm-config/slurm.yml")).unwrap();
    let r = ws.lb(&["ls"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("playbook path 'slurm-config/slurm.yml' leads out"),
        "{}",
        r.stderr
    );

    // Lexical escapes stay rejected, allowed or not.
    let ws = TestWs::new("chain");
    let out = outside_dir(&ws, "lex");
    allow_outside(&ws, &out);
    for bad in [
        "\"../lex/run.sh\"",
        &format!("\"{}/data.txt\"", out.display()),
    ] {
        let ws2 = TestWs::new("chain");
        allow_outside(&ws2, &out);
        ws2.append(
            "Layerfile.toml",
            &format!("\n[layers.\"x/lex\"]\nparent = \"scratch\"\ninputs = [{bad}]\n"),
        );
        let r = ws2.lb(&["ls"]);
        assert_eq!(r.code, 2, "{bad}: {}", r.stderr);
        assert!(r.stderr.contains("leaves the workspace") || r.stderr.contains("is absolute"));
    }
    // An allow_outside entry must be an absolute, existing directory.
    let ws = TestWs::new("chain");
    let lf = ws.read("Layerfile.toml").replacen(
        "[workspace]\n",
        "[workspace]\nallow_outside = [\"relative/dir\"]\n",
        1,
    );
    ws.write("Layerfile.toml", &lf);
    let r = ws.lb(&["ls"]);
    assert_eq!(r.code, 2);
    let at = line_of(&lf, "relative/dir");
    assert!(
        r.stderr.contains(&format!("Layerfile.toml:{at}:"))
            && r.stderr.contains("not an absolute path"),
        "{}",
        r.stderr
    );
}

#[test]
fn symlinks_in_roles_are_hashed_as_links_and_never_followed_out() {
    let ws = TestWs::new("chain");
    let out = outside_dir(&ws, "etcish");
    std::fs::create_dir_all(out.join("sub")).unwrap();
    std::fs::write(out.join("sub/deep.txt"), "deep\n").unwrap();
    let other = outside_dir(&ws, "other");
    let files = "slurm-config/roles/slurm/files";
    std::fs::create_dir_all(ws.path(files)).unwrap();
    // A directory link and a file link pointing out, neither read by a task.
    symlink(&out, ws.path(&format!("{files}/etc"))).unwrap();
    symlink(out.join("data.txt"), ws.path(&format!("{files}/data"))).unwrap();
    // A loop, a dangling link and a link back up into the role.
    symlink("loop-b", ws.path(&format!("{files}/loop-a"))).unwrap();
    symlink("loop-a", ws.path(&format!("{files}/loop-b"))).unwrap();
    symlink("nowhere", ws.path(&format!("{files}/dangling"))).unwrap();
    symlink("..", ws.path(&format!("{files}/up"))).unwrap();

    let m = manifest_files(&ws, "//compute/slurm");
    for link in ["etc", "data", "loop-a", "loop-b", "dangling", "up"] {
        let f = &m[&format!("{files}/{link}")];
        assert_eq!(f["mode"], "120000", "{link}: {f}");
        assert_eq!(f["origin"], "role:slurm", "{link}: {f}");
    }
    // The walk did not enter the outside directory, nor loop through `up`.
    assert!(
        !m.keys()
            .any(|k| k.starts_with(&format!("{files}/etc/"))
                || k.starts_with(&format!("{files}/up/"))),
        "{:?}",
        m.keys().collect::<Vec<_>>()
    );

    let before = digest(&ws, "//compute/slurm");
    // The content behind an outside link is not an input: it is a link.
    std::fs::write(out.join("data.txt"), "outside 2\n").unwrap();
    std::fs::write(out.join("sub/deep.txt"), "deeper\n").unwrap();
    assert_eq!(digest(&ws, "//compute/slurm"), before);
    // Its target string is.
    std::fs::remove_file(ws.path(&format!("{files}/etc"))).unwrap();
    symlink(&other, ws.path(&format!("{files}/etc"))).unwrap();
    assert_ne!(digest(&ws, "//compute/slurm"), before);
}

#[test]
fn a_file_the_play_reads_through_a_link_counts_its_target() {
    let ws = TestWs::new("chain");
    ws.write("shared/motd", "welcome\n");
    let files = "slurm-config/roles/slurm/files";
    std::fs::create_dir_all(ws.path(files)).unwrap();
    symlink("../../../../shared/motd", ws.path(&format!("{files}/motd"))).unwrap();
    ws.append(
        "slurm-config/roles/slurm/tasks/main.yml",
        "- copy: {src: motd, dest: /etc/motd}\n",
    );
    // A role directory linked from elsewhere in the workspace.
    ws.write("shared/roles/munge/tasks/main.yml", "- raw: echo 1\n");
    symlink(
        "../../shared/roles/munge",
        ws.path("slurm-config/roles/munge"),
    )
    .unwrap();
    ws.append(
        "slurm-config/roles/slurm/tasks/main.yml",
        "- import_role: {name: munge}\n",
    );

    let m = manifest_files(&ws, "//compute/slurm");
    assert_eq!(m[&format!("{files}/motd")]["mode"], "120000");
    assert_eq!(m["shared/motd"]["mode"], "100644", "{m:?}");
    assert_eq!(m["slurm-config/roles/munge"]["mode"], "120000");
    assert_eq!(
        m["shared/roles/munge/tasks/main.yml"]["origin"],
        "role:munge"
    );

    let a = digest(&ws, "//compute/slurm");
    ws.write("shared/motd", "welcome back\n");
    let b = digest(&ws, "//compute/slurm");
    assert_ne!(a, b, "the content behind the link counts");
    ws.write("shared/roles/munge/tasks/main.yml", "- raw: echo 2\n");
    assert_ne!(
        digest(&ws, "//compute/slurm"),
        b,
        "a linked role's files count"
    );
}

#[test]
fn a_file_the_play_reads_through_a_link_out_of_the_workspace_is_rejected_unless_allowed() {
    let ws = TestWs::new("chain");
    let out = outside_dir(&ws, "site");
    let files = "slurm-config/roles/slurm/files";
    std::fs::create_dir_all(ws.path(files)).unwrap();
    symlink(out.join("data.txt"), ws.path(&format!("{files}/motd"))).unwrap();
    ws.append(
        "slurm-config/roles/slurm/tasks/main.yml",
        "- copy: {src: motd, dest: /etc/motd}\n",
    );
    let r = ws.lb(&["hash", "//compute/slurm"]);
    assert_eq!(r.code, 2, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr
            .contains(&format!("{files}/motd leads out of the workspace"))
            && r.stderr
                .contains("slurm-config/roles/slurm/tasks/main.yml:5: ")
            && r.stderr.contains("the play reads it")
            && r.stderr.contains("allow_outside"),
        "{}",
        r.stderr
    );
    // A role's task file linked out: Ansible loads it without naming it.
    let ws2 = TestWs::new("chain");
    let out2 = outside_dir(&ws2, "tasks");
    std::fs::write(out2.join("main.yml"), "- raw: echo 1\n").unwrap();
    let main = ws2.path("slurm-config/roles/slurm/tasks/main.yml");
    std::fs::remove_file(&main).unwrap();
    symlink(out2.join("main.yml"), &main).unwrap();
    let r = ws2.lb(&["hash", "//compute/slurm"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("leads out of the workspace"),
        "{}",
        r.stderr
    );

    // Allowed: followed, and the content counts under the link's path.
    allow_outside(&ws, &out);
    let a = digest(&ws, "//compute/slurm");
    let m = manifest_files(&ws, "//compute/slurm");
    assert_eq!(m[&format!("{files}/motd")]["mode"], "100644", "{m:?}");
    std::fs::write(out.join("data.txt"), "outside 2\n").unwrap();
    assert_ne!(digest(&ws, "//compute/slurm"), a);
}

fn vault(args: &[&str], dir: &Path) -> String {
    let out = std::process::Command::new("ansible-vault")
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

/// Every file below `dir`, as bytes (logs, the cache database...).
fn all_files(dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if e.file_type().unwrap().is_dir() {
            all_files(&p, out);
        } else if e.file_type().unwrap().is_file() {
            out.push((p.clone(), std::fs::read(&p).unwrap()));
        }
    }
}

#[test]
fn secrets_never_appear_in_any_output_log_or_record() {
    common::require_buildah();
    let mut ws = TestWs::new("chain");
    const MUNGE: &str = "planted-munge-key-4711";
    const ROOTPW: &str = "planted-root-pw-0815";
    const VAULT_INLINE: &str = "planted-vault-inline-9999";
    const VAULT_FILE: &str = "planted-vault-file-5555";
    // A secret on the line of a variables file Ansible cannot parse.
    const BROKEN: &str = "planted-broken-7777";
    let secrets = [MUNGE, ROOTPW, VAULT_INLINE, VAULT_FILE, BROKEN];
    // A value Ansible prints escaped (JSON): never shown in either form.
    const QUOTED: &str = r#"planted-"q\oted-3141"#;
    const QUOTED_JSON: &str = r#"planted-\"q\\oted-3141"#;

    // A system var and an inventory var marked secret, an inline !vault
    // value and a vault-encrypted file.
    let lf = ws.read("Layerfile.toml").edit(
        "vars = { cluster_name = \"testcluster\" }",
        &format!(
            "vars = {{ cluster_name = \"testcluster\", munge_key = \"{MUNGE}\", quoted_key = '{QUOTED}' }}\nsecret_vars = [\"munge_key\", \"root_password\", \"quoted_key\", \"api_secret\"]"
        ),
    );
    ws.write("Layerfile.toml", &lf);
    let pw = ws.path("../vault-pass");
    std::fs::write(&pw, "correct horse\n").unwrap();
    let pwf = pw.display().to_string();
    ws.env
        .push(("ANSIBLE_VAULT_PASSWORD_FILE".into(), pwf.clone()));
    let gv = ws.path("inventory/test/group_vars");
    ws.write(
        "inventory/test/group_vars/Compute/vault.yml",
        &format!("vault_token: {VAULT_FILE}\n"),
    );
    vault(
        &[
            "encrypt",
            "--vault-password-file",
            &pwf,
            "Compute/vault.yml",
        ],
        &gv,
    );
    let inline = vault(
        &[
            "encrypt_string",
            "--vault-password-file",
            &pwf,
            "--name",
            "db_password",
            VAULT_INLINE,
        ],
        &gv,
    );
    ws.write(
        "inventory/test/group_vars/Compute/main.yml",
        &format!("root_password: \"{ROOTPW}\"\n{inline}"),
    );
    // The play writes every secret into the image.
    ws.append(
        "slurm-config/roles/slurm/tasks/main.yml",
        "- name: install the keys\n  raw: printf '%s\\n' '{{ munge_key }}' '{{ root_password }}' '{{ db_password }}' '{{ vault_token }}' > /etc/keys\n  args: {executable: /bin/sh}\n",
    );

    let mut shown = String::new();
    let mut record = |what: &str, r: common::Run| {
        shown.push_str(&format!("== {what}\n{}\n{}\n", r.stdout, r.stderr));
        r
    };
    let built = record("build", ws.lb(&["build", "//compute/slurm", "--json"])).ok();
    let report = built.json();
    let slurm = report["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["label"] == "//compute/slurm")
        .unwrap();
    let image = slurm["image_name"].as_str().unwrap().to_string();
    // The secrets did reach the image: the test can see them when they leak.
    let keys = common::TestWs::run_in_image(&image, "cat /etc/keys");
    for s in &secrets[..4] {
        assert!(keys.contains(s), "{s} not in the image: {keys}");
    }
    let d1 = digest(&ws, "//compute/slurm");

    // Change the secrets: the digest changes, `why` says so without values.
    let lf = ws.read("Layerfile.toml").edit(MUNGE, &format!("{MUNGE}-2"));
    ws.write("Layerfile.toml", &lf);
    ws.write(
        "inventory/test/group_vars/Compute/main.yml",
        &format!("root_password: \"{ROOTPW}-2\"\n{inline}"),
    );
    assert_ne!(digest(&ws, "//compute/slurm"), d1);
    let why = record("why", ws.lb(&["why", "--show-values", "//compute/slurm"])).ok();
    assert!(
        why.stdout.contains("munge_key changed") && why.stdout.contains("root_password changed"),
        "{}",
        why.stdout
    );
    record(
        "why --json",
        ws.lb(&["why", "--show-values", "--json", "//compute/slurm"]),
    )
    .ok();
    record("hash --json", ws.lb(&["hash", "--json", "//compute/slurm"])).ok();
    record("ls --json", ws.lb(&["ls", "--json"])).ok();
    record(
        "dry-run",
        ws.lb(&["build", "-n", "--json", "//compute/slurm"]),
    )
    .ok();
    record("log", ws.lb(&["log", "//compute/slurm"])).ok();
    record("why", ws.lb(&["why", "//compute/slurm"])).ok();
    record("hash", ws.lb(&["hash", "//compute/slurm"])).ok();
    record("lint", ws.lb(&["lint", "//compute/slurm"]));
    record("lint --json", ws.lb(&["lint", "--json", "//compute/slurm"]));
    // The built image's labels and configuration.
    let inspect = std::process::Command::new("buildah")
        .args(["inspect", "--type", "image", &image])
        .output()
        .unwrap();
    assert!(inspect.status.success());
    let inspected = String::from_utf8_lossy(&inspect.stdout).into_owned();
    assert!(inspected.contains("layerbuild.digest"), "{inspected}");

    // A TOML error on the line that holds the secrets: the excerpt shown
    // masks them.
    let good = ws.read("Layerfile.toml");
    ws.write(
        "Layerfile.toml",
        &good.edit("vars = { cluster_name", "vars = { = cluster_name"),
    );
    for args in [
        &["lint"][..],
        &["build", "//compute/slurm"],
        &["hash", "--json", "//compute/slurm"],
    ] {
        let r = record("a TOML error", ws.lb(args));
        assert_ne!(r.code, 0, "{}", r.stderr);
        let out = format!("{}{}", r.stdout, r.stderr);
        assert!(out.contains("Layerfile.toml:12"), "{out}");
    }
    ws.write("Layerfile.toml", &good);

    // A failing play that prints the secrets it knows in its message.
    ws.append(
        "slurm-config/roles/slurm/tasks/main.yml",
        "- name: \"check {{ munge_key }}\"\n  fail: {msg: \"bad key {{ munge_key }} for {{ root_password }} ({{ quoted_key }}) {{ db_password }} {{ vault_token }}\"}\n",
    );
    let failed = record("failing build", ws.lb(&["build", "//compute/slurm"]));
    assert_eq!(failed.code, 1, "{}", failed.stderr);
    let log = record("log of the failure", ws.lb(&["log", "//compute/slurm"])).ok();
    // Vault values too: Ansible decrypted them, layerbuild redacted them.
    assert!(
        log.stdout
            .contains("bad key [secret] for [secret] ([secret]) [secret] [secret]"),
        "{}",
        log.stdout
    );
    // A variables file Ansible cannot parse: it prints the offending
    // lines, which layerbuild could not parse either.
    ws.write(
        "inventory/test/group_vars/Compute/broken.yml",
        &format!("a: 1\napi_secret: \"{BROKEN}\nb: 2\n"),
    );
    let broken = record("a broken secret file", ws.lb(&["build", "//compute/slurm"]));
    assert_ne!(broken.code, 0, "{}", broken.stderr);
    // The first layer to run a play on the Compute hosts fails on it.
    let log = record(
        "log of the broken file",
        ws.lb(&["log", "//compute/compute"]),
    )
    .ok();
    assert!(
        log.stdout.contains("offending line") && log.stdout.contains("[secret]"),
        "{}\n{}",
        broken.stderr,
        log.stdout
    );
    record(
        "lint with a broken secret file",
        ws.lb(&["lint", "//compute/slurm"]),
    );
    record(
        "a broken secret file, --json",
        ws.lb(&["build", "--json", "//compute/slurm"]),
    );
    record(
        "why after failure",
        ws.lb(&["why", "--show-values", "--json", "//compute/slurm"]),
    );
    record("ls --failed", ws.lb(&["ls", "--failed", "--json"]));
    let _ = ws.lb(&["clean", "--failed"]);

    let mut files = vec![];
    all_files(&ws.path("cache"), &mut files);
    assert!(files.iter().any(|(p, _)| p.ends_with("layerbuild.db")));
    assert!(
        files
            .iter()
            .filter(|(p, _)| p.extension().is_some_and(|e| e == "log"))
            .count()
            >= 4
    );
    for s in secrets.into_iter().chain([QUOTED, QUOTED_JSON]) {
        assert!(!shown.contains(s), "{s} shown:\n{shown}");
        assert!(!inspected.contains(s), "{s} in the image's configuration");
        for (p, bytes) in &files {
            let text = String::from_utf8_lossy(bytes);
            assert!(!text.contains(s), "{s} in {}", p.display());
        }
    }
}

#[test]
fn vars_left_by_a_killed_build_are_removed_by_the_next_command() {
    let ws = TestWs::new("chain");
    let tmp = ws.path("cache/tmp");
    // A build killed mid-play (its process gone), one that never recorded
    // its process, and one still running (this test's own process).
    let dead = std::process::Command::new("true").spawn().unwrap();
    let dead_pid = dead.id();
    let mut dead = dead;
    dead.wait().unwrap();
    for (dir, owner) in [
        ("layerbuild-x-base-os-000000000001", Some(dead_pid)),
        ("layerbuild-x-base-os-000000000002", None),
        (
            "layerbuild-x-base-os-000000000003",
            Some(std::process::id()),
        ),
    ] {
        std::fs::create_dir_all(tmp.join(dir)).unwrap();
        if let Some(pid) = owner {
            std::fs::write(tmp.join(dir).join("owner.pid"), format!("{pid}\n")).unwrap();
        }
        std::fs::write(
            tmp.join(dir).join("vars.json"),
            "{\"k\": \"planted-secret\"}",
        )
        .unwrap();
    }
    let run = ws.lb(&["ls"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        !tmp.join("layerbuild-x-base-os-000000000001/vars.json")
            .exists()
    );
    assert!(
        !tmp.join("layerbuild-x-base-os-000000000002/vars.json")
            .exists()
    );
    assert!(
        tmp.join("layerbuild-x-base-os-000000000003/vars.json")
            .exists(),
        "a running build's vars were removed"
    );
}

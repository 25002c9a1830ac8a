//! Regression tests for false cache hits found in review: each case applies a
//! change that Ansible or buildah would see (`NAME.b`) on top of a set-up
//! workspace (`NAME.a`, both bash scripts run in a copy of the chain
//! fixture), and the affected layer's digest must change.

mod common;

use common::{TestWs, require_buildah};

fn digest(ws: &TestWs, label: &str) -> String {
    let out = ws.lb(&["hash", label]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    out.stdout.lines().next().unwrap().to_string()
}

fn run_script(ws: &TestWs, path: &std::path::Path) {
    let out = std::process::Command::new("bash")
        .arg("-e")
        .arg(path)
        .current_dir(&ws.root)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The fixture directory and the names of its change pairs, sorted.
fn reviewed_changes() -> (std::path::PathBuf, Vec<String>) {
    let dir = common::fixture_dir("holes");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_suffix(".a")
                .map(str::to_string)
        })
        .collect();
    names.sort();
    assert!(names.len() > 40, "{names:?}");
    (dir, names)
}

#[test]
fn every_reviewed_change_changes_the_digest() {
    let (dir, names) = reviewed_changes();
    let mut holes = vec![];
    for name in &names {
        let label = match name.as_str() {
            "p15" | "p15b" | "p40" | "p42" => "//base/os",
            _ => "//compute/slurm",
        };
        let ws = TestWs::new("chain");
        run_script(&ws, &dir.join(format!("{name}.a")));
        let a = digest(&ws, label);
        run_script(&ws, &dir.join(format!("{name}.b")));
        let b = digest(&ws, label);
        if a == b {
            holes.push(name.clone());
        }
    }
    assert!(
        holes.is_empty(),
        "changes that did not change the digest: {holes:?}"
    );
}

/// Every reviewed change again, against the memo: after a command that
/// writes the memo (`ls`, files older than the racy margin), the change
/// must not be answered from it with the old digests. The memo serves only
/// commands that need digests alone, so this is what `ls` and a no-op
/// `build` would show. Fixtures run in parallel (each waits out the racy
/// margin once).
#[test]
fn every_reviewed_change_is_seen_through_the_memo() {
    let (dir, names) = reviewed_changes();
    let digests = |ws: &TestWs, memo: &str| -> Vec<(String, String)> {
        let r = common::lb_in(&ws.root, &["ls", "--json"], &[("LAYERBUILD_MEMO", memo)]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        r.json()["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| (x["label"].to_string(), x["digest"].to_string()))
            .collect()
    };
    let next = std::sync::atomic::AtomicUsize::new(0);
    let stale = std::sync::Mutex::new(Vec::<String>::new());
    let served = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(name) = names.get(i) else { break };
                    let ws = TestWs::new("chain");
                    run_script(&ws, &dir.join(format!("{name}.a")));
                    // Older than the racy margin: the memo can be written.
                    std::thread::sleep(std::time::Duration::from_millis(2500));
                    digests(&ws, "1");
                    let again =
                        common::lb_in(&ws.root, &["ls", "--json"], &[("LAYERBUILD_STATS", "1")]);
                    if again.stderr.contains("from the memo") {
                        served.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    run_script(&ws, &dir.join(format!("{name}.b")));
                    if digests(&ws, "1") != digests(&ws, "0") {
                        stale.lock().unwrap().push(name.clone());
                    }
                }
            });
        }
    });
    let stale = stale.into_inner().unwrap();
    // Most fixtures leave the memo in use (the others give it up, as a
    // whole-workspace read or an environment variable does): this test
    // checks something.
    let served = served.into_inner();
    assert!(
        served * 2 > names.len(),
        "{served} of {} served by the memo",
        names.len()
    );
    assert!(
        stale.is_empty(),
        "changes the memo answered with the old digests: {stale:?}"
    );
}

/// A change that must either change the digest or be rejected (a read
/// from outside the workspace): `tests/fixtures/holes/rejected/NAME.{a,b}`.
/// New holes found in review are fixed with their pair in `holes/` (the
/// sweeps above).
fn closed_or_rejected(name: &str) {
    let dir = common::fixture_dir("holes").join("rejected");
    let ws = TestWs::new("chain");
    run_script(&ws, &dir.join(format!("{name}.a")));
    let a = ws.lb(&["hash", "//compute/slurm"]);
    if a.code != 0 {
        return;
    }
    run_script(&ws, &dir.join(format!("{name}.b")));
    let b = ws.lb(&["hash", "//compute/slurm"]);
    if b.code != 0 {
        return;
    }
    assert_ne!(
        a.stdout.lines().next(),
        b.stdout.lines().next(),
        "{name}: the change did not change the digest, and nothing was rejected"
    );
}

/// A directory outside the workspace that `ansible.cfg` points Ansible at
/// is rejected, naming the line, like any other read from outside.
#[test]
fn ansible_cfg_pointing_outside_the_workspace_is_rejected_with_its_line() {
    closed_or_rejected("ansible_cfg_absolute_outside");
    let ws = TestWs::new("chain");
    run_script(
        &ws,
        &common::fixture_dir("holes")
            .join("rejected")
            .join("ansible_cfg_absolute_outside.a"),
    );
    let r = ws.lb(&["hash", "//compute/slurm"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("slurm-config/ansible.cfg:2"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("allow_outside"), "{}", r.stderr);
}

/// `ansible.cfg` naming a module directory through an environment
/// variable: where it points is not in the workspace's files, so a digest
/// served from the memo (`ls`) must not outlive a change of the variable.
#[test]
fn ansible_cfg_environment_variable_is_not_served_from_the_memo() {
    let ws = TestWs::new("chain");
    ws.write("l1/sitemod.py", "# one\n");
    ws.write("l2/sitemod.py", "# two\n");
    ws.write(
        "slurm-config/ansible.cfg",
        "[defaults]\nlibrary = $LB_HOLES_LIB\n",
    );
    ws.write("slurm-config/roles/slurm/tasks/main.yml", "- sitemod:\n");
    // Older than the racy margin, so a memo can be written.
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let slurm = |lib: &str, memo: &str| {
        let r = common::lb_in(
            &ws.root,
            &["ls", "--json"],
            &[("LB_HOLES_LIB", lib), ("LAYERBUILD_MEMO", memo)],
        );
        assert_eq!(r.code, 0, "{}", r.stderr);
        r.json()["layers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["label"] == "//compute/slurm")
            .unwrap()["digest"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let one = slurm("../l1", "1");
    assert_eq!(slurm("../l1", "1"), one);
    let two = slurm("../l2", "1");
    assert_eq!(two, slurm("../l2", "0"));
    assert_ne!(one, two);
}

/// A template of `//compute/slurm` that reads the inventory's `name`
/// where the template seems to bind it: changing the value must change the
/// layer's digest.
fn template_read_changes_the_digest(name: &str, template: &str) {
    let ws = TestWs::new("chain");
    let vars = "inventory/test/group_vars/all.yml";
    let defined = ws.read(vars);
    ws.write(vars, &format!("{defined}{name}: v1\n"));
    ws.write("slurm-config/roles/slurm/templates/x.j2", template);
    ws.append(
        "slurm-config/roles/slurm/tasks/main.yml",
        "- name: write x.conf\n  template:\n    src: x.j2\n    dest: /etc/x.conf\n",
    );
    let a = ws.digests()["//compute/slurm"].clone();
    ws.write(vars, &format!("{defined}{name}: v2\n"));
    let b = ws.digests()["//compute/slurm"].clone();
    assert_ne!(
        a, b,
        "{template}: changing {name} did not change the digest"
    );
}

/// Jinja renders a block from the context: a loop's, `with`'s or macro's
/// names around it are not seen there.
#[test]
fn jinja_block_reads_the_context_not_the_names_around_it() {
    template_read_changes_the_digest(
        "myv",
        "{% for myv in [1, 2] %}{% block b %}{{ myv }}{% endblock %}{% endfor %}\n",
    );
    template_read_changes_the_digest(
        "myv",
        "{% with myv = 1 %}{% block b %}{{ myv }}{% endblock %}{% endwith %}\n",
    );
    template_read_changes_the_digest(
        "myv",
        "{% block a %}{% set myv = 1 %}{% block b %}{{ myv }}{% endblock %}{% endblock %}\n",
    );
}

/// A loop's filter does not see the loop's own `loop`.
#[test]
fn jinja_loop_filter_reads_the_context_loop() {
    template_read_changes_the_digest("loop", "{% for x in [1, 2] if loop %}{{ x }}{% endfor %}\n");
}

/// Operator words where an operand is expected are variables.
#[test]
fn jinja_operator_words_as_operands_are_read() {
    template_read_changes_the_digest("if", "{{ if }}\n");
    template_read_changes_the_digest("else", "{{ [1, else] | join }}\n");
    template_read_changes_the_digest("not", "{{ 1 ~ not }}\n");
}

/// `self`, `super`, `caller` and `loop` are Jinja's only where read before
/// the template assigns them; a macro's defaults see no `caller`.
#[test]
fn jinja_assigned_special_names_are_read() {
    template_read_changes_the_digest("self", "{% set self = self %}{{ self }}\n");
    template_read_changes_the_digest(
        "caller",
        "{% macro m(c=caller) %}{{ c }}{% endmacro %}{{ m() }}\n",
    );
    template_read_changes_the_digest(
        "loop",
        "{% for x in [1] %}{% macro m(loop) %}{% endmacro %}{{ loop }}{% endfor %}\n",
    );
}

/// Two links to one `[workspace] allow_outside` directory, each read by
/// another layer (a second layer's playbook directory `library/`, the
/// slurm playbook's): each layer counts what its own link leads to, when
/// both are fingerprinted in one run (`ls`, a build of `//...`) as when
/// one is (`hash //compute/slurm`).
#[test]
fn allowed_directory_linked_twice_counts_for_each_link() {
    let ws = TestWs::new("chain");
    let site = ws.root.parent().unwrap().join("site");
    std::fs::create_dir_all(site.join("lib")).unwrap();
    std::fs::write(site.join("lib/sitemod.py"), "# one\n").unwrap();
    let lf = ws.read("Layerfile.toml");
    ws.write(
        "Layerfile.toml",
        &format!(
            "{}\n[layers.\"x/y\"]\nparent = \"//base/hsn\"\nsource = \"other-config\"\nplaybook = \"p.yml\"\ngroups = [\"Compute\"]\n",
            lf.replacen(
                "[workspace]\n",
                &format!("[workspace]\nallow_outside = [\"{}\"]\n", site.display()),
                1
            )
        ),
    );
    ws.write(
        "other-config/p.yml",
        "- hosts: Compute\n  gather_facts: false\n  tasks:\n    - sitemod:\n",
    );
    std::os::unix::fs::symlink(site.join("lib"), ws.path("other-config/library")).unwrap();
    std::os::unix::fs::symlink(site.join("lib"), ws.path("slurm-config/library")).unwrap();
    ws.write("slurm-config/roles/slurm/tasks/main.yml", "- sitemod:\n");
    let a = ws.digests()["//compute/slurm"].clone();
    assert_eq!(a, digest(&ws, "//compute/slurm"), "ls and hash disagree");
    std::fs::write(site.join("lib/sitemod.py"), "# two\n").unwrap();
    std::fs::remove_dir_all(ws.path("cache")).ok();
    let b = ws.digests()["//compute/slurm"].clone();
    assert_ne!(a, b, "the module behind slurm-config/library changed");
}

/// An `ANSIBLE_*` variable of the user's environment (here
/// `ANSIBLE_CONFIG`, which replaces the source's `ansible.cfg`) could
/// change what a play makes while no digest sees it: plays run without
/// such variables, and the build says which it left out. Run-only ones
/// (the vault password file) still reach the play.
#[test]
fn ansible_settings_of_the_environment_do_not_reach_the_play() {
    require_buildah();
    let mut ws = TestWs::new("chain");
    ws.write(
        "slurm-config/roles/slurm/tasks/main.yml",
        "- name: what the play's environment holds\n  raw: printf 'config=%s vault=%s\\n' '{{ lookup(\"env\", \"ANSIBLE_CONFIG\") }}' '{{ lookup(\"env\", \"ANSIBLE_VAULT_PASSWORD_FILE\") }}' > /etc/ansible-env\n  args:\n    executable: /bin/sh\n",
    );
    let cfg = ws.path("../elsewhere.cfg");
    std::fs::write(&cfg, "[defaults]\nhash_behaviour = merge\n").unwrap();
    let vault = ws.path("../vault-pass");
    std::fs::write(&vault, "not used\n").unwrap();
    ws.env
        .push(("ANSIBLE_CONFIG".into(), cfg.display().to_string()));
    ws.env.push((
        "ANSIBLE_VAULT_PASSWORD_FILE".into(),
        vault.display().to_string(),
    ));
    let run = ws.lb(&["build", "--json", "//compute/slurm"]).ok();
    let report = run.json();
    let warnings = report["warnings"].to_string();
    assert!(
        warnings.contains("not passed to ansible-playbook: ANSIBLE_CONFIG"),
        "{warnings}"
    );
    assert!(
        run.stderr
            .contains("warning: not passed to ansible-playbook: ANSIBLE_CONFIG"),
        "{}",
        run.stderr
    );
    let image = common::layer(&report, "//compute/slurm")["image_name"]
        .as_str()
        .unwrap()
        .to_string();
    let seen = TestWs::run_in_image(&image, "cat /etc/ansible-env");
    // The source has no ansible.cfg: the play reads layerbuild's empty one.
    let (config, vault_seen) = seen.trim().split_once(' ').unwrap();
    assert!(
        config.starts_with("config=") && config.ends_with("/empty-ansible.cfg"),
        "{seen}"
    );
    assert_eq!(vault_seen, format!("vault={}", vault.display()), "{seen}");
}

/// A netboot export holds the kernel a layer names and its command line
/// (`boot.json`, `boot.ipxe`). Without boot tests neither is in the
/// layer's digest, so an export already holding the digest (a declared
/// output, the one `boot` boots) is written again when either changed.
#[test]
fn netboot_export_follows_the_boot_settings_of_a_layer_without_boot_tests() {
    require_buildah();
    let ws = TestWs::new("chain");
    let lf = ws.read("Layerfile.toml").replacen(
        "scripts = [\"scripts/uan.sh\"]",
        "scripts = [\"scripts/uan.sh\"]\nrun = [\"mkdir -p /boot && for v in 1 2; do echo k$v > /boot/vmlinuz-$v; echo i$v > /boot/initrd.img-$v; done\"]\noutputs = [{ format = \"netboot\", path = \"out/uan\" }]",
        1,
    );
    ws.write("Layerfile.toml", &lf);
    let digest = ws.digests()["//uan/uan"].clone();
    ws.lb(&["build", "//uan/uan"]).ok();
    let boot_json =
        || -> serde_json::Value { serde_json::from_str(&ws.read("out/uan/boot.json")).unwrap() };
    assert_eq!(boot_json()["kernel_version"], "2");

    ws.write(
        "Layerfile.toml",
        &lf.replacen(
            "outputs = [",
            "boot = { kernel = \"1\", cmdline = \"quiet\" }\noutputs = [",
            1,
        ),
    );
    assert_eq!(ws.digests()["//uan/uan"], digest, "not an input here");
    ws.lb(&["build", "//uan/uan"]).ok();
    let json = boot_json();
    assert_eq!(json["kernel_version"], "1", "{json}");
    assert_eq!(json["own_cmdline"], "quiet", "{json}");
    assert_eq!(ws.read("out/uan/vmlinuz"), "k1\n");
    let ipxe = ws.read("out/uan/boot.ipxe");
    assert!(ipxe.contains(" quiet\n"), "{ipxe}");
    // Unchanged since: not written again.
    let again = ws.lb(&["build", "//uan/uan"]).ok();
    assert!(again.stderr.contains("already holds"), "{}", again.stderr);
}

/// `//uan/uan` made bootable (a stand-in kernel and initramfs in its
/// `/boot`, whose kernel file holds `who=KERNEL`), with `extra` lines in its
/// table.
fn bootable_uan(ws: &TestWs, kernel: &str, extra: &str) {
    let lf = ws.read("Layerfile.toml").replacen(
        "scripts = [\"scripts/uan.sh\"]",
        &format!(
            "scripts = [\"scripts/uan.sh\"]\nrun = [\"mkdir -p /boot && echo who={kernel} > /boot/vmlinuz-1 && echo i > /boot/initrd.img-1\"]\n{extra}"
        ),
        1,
    );
    ws.write("Layerfile.toml", &lf);
}

/// Puts a stand-in `qemu-system-x86_64` first in the PATH of later runs:
/// `guest` runs with `$kernel`, `$append` (the kernel command line) and
/// `$results` (the file of the second serial port) set, and `report RC`
/// writes a guest's report of the one boot test ending with RC.
fn fake_qemu(ws: &mut TestWs, guest: &str) {
    let dir = ws.root.parent().unwrap().join("fake-bin");
    std::fs::create_dir_all(&dir).unwrap();
    let qemu = dir.join("qemu-system-x86_64");
    std::fs::write(
        &qemu,
        format!(
            r#"#!/bin/sh
[ "$1" = --version ] && exit 0
kernel= append= results=
while [ $# -gt 0 ]; do
  case "$1" in
    -kernel) kernel=$2; shift ;;
    -append) append=$2; shift ;;
    -serial) case "$2" in file:*) results=${{2#file:}} ;; esac; shift ;;
  esac
  shift
done
report() {{
  printf '@@lb started\n@@lb state running\n@@lb begin 001\n@@lb end 001 %s\n@@lb done\n' "$1" >> "$results"
}}
{guest}
"#
        ),
    )
    .unwrap();
    let exec = <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o755);
    std::fs::set_permissions(&qemu, exec).unwrap();
    ws.env.retain(|(k, _)| k != "PATH");
    ws.env.push((
        "PATH".into(),
        format!("{}:{}", dir.display(), std::env::var("PATH").unwrap()),
    ));
}

/// A build killed while its layer's boot tests run leaves no image under
/// the layer's name, which says the image passed its tests: the next build
/// boots it again rather than adopt it, and `cache rebuild-index` does not
/// record it. Once they passed the image has its name (and only that).
#[test]
fn an_image_whose_boot_tests_did_not_end_is_never_adopted() {
    require_buildah();
    let mut ws = TestWs::new("chain");
    bootable_uan(&ws, "uan", "boot_tests = [\"true\"]");
    let uan = ws.digests()["//uan/uan"].clone();
    let name = format!("localhost/layerbuild/{}/uan/uan:{}", ws.name, &uan[..12]);

    // layerbuild dies as the machine starts.
    fake_qemu(&mut ws, "kill -9 $PPID\nexit 1");
    let killed = ws.lb(&["build", "//uan/uan"]);
    assert_ne!(killed.code, 0, "{}", killed.stderr);
    assert!(!ws.cached_digests().contains(&uan));
    let index = ws.lb(&["cache", "rebuild-index", "--json"]).ok();
    assert!(!ws.cached_digests().contains(&uan), "{}", index.stdout);

    // The boot fails this time: the layer fails.
    fake_qemu(&mut ws, "report 1");
    let r = ws.lb(&["build", "--json", "//uan/uan"]);
    assert!(!r.stderr.contains("adopted"), "{}", r.stderr);
    assert_eq!(
        common::layer(&r.json(), "//uan/uan")["status"],
        "failed",
        "{}",
        r.stderr
    );
    assert!(!ws.cached_digests().contains(&uan));

    // It passes: built, under its name.
    fake_qemu(&mut ws, "report 0");
    let r = ws.lb(&["build", "--json", "//uan/uan"]).ok();
    assert_eq!(common::layer(&r.json(), "//uan/uan")["status"], "built");
    assert!(ws.cached_digests().contains(&uan));
    let names = common::tool_in(
        "buildah",
        &ws.root,
        &["images", "--format", "{{.Name}}:{{.Tag}}"],
    );
    assert!(names.lines().any(|n| n == name), "{names}");
    assert!(
        !names
            .lines()
            .any(|n| n.starts_with(&name) && n != name && !n.ends_with("-failed")),
        "{names}"
    );
}

/// A layer boots from `cache/boot/SLUG` with its scratch files in
/// `cache/tmp/boot-SLUG`: two boots of one slug at once (another system's
/// build, another process, `boot`, or here two layers whose slugs are the
/// same, `//a-b/c` and `//a/b-c`) must each boot their own image and read
/// their own guest's report. The guest passes its test when the kernel it
/// booted is the layer's (`who=` on the kernel command line).
#[test]
fn boots_sharing_a_directory_each_boot_their_own_image() {
    require_buildah();
    let mut ws = TestWs::new("chain");
    for label in ["a-b/c", "a/b-c"] {
        ws.append(
            "Layerfile.toml",
            &format!(
                "\n[layers.\"{label}\"]\nparent = \"//base/hsn\"\nrun = [\"mkdir -p /boot && echo who={label} > /boot/vmlinuz-1 && echo i > /boot/initrd.img-1\"]\nboot_tests = [\"true\"]\nboot = {{ cmdline = \"who={label}\" }}\n"
            ),
        );
    }
    fake_qemu(
        &mut ws,
        r#"sleep 2
case " $append " in *" $(cat "$kernel") "*) report 0 ;; *) report 1 ;; esac"#,
    );
    let r = ws.lb(&["build", "--json", "//a-b/c", "//a/b-c"]);
    let report = r.json();
    for label in ["//a-b/c", "//a/b-c"] {
        assert_eq!(
            common::layer(&report, label)["status"],
            "built",
            "{label}: {}",
            r.stderr
        );
    }
}

/// What a passing boot means (the runner's checks, the kernel arguments it
/// sets) is an input of a layer with boot tests: a stricter runner must not
/// reuse the passes of a laxer one. Only such layers carry it.
#[test]
fn the_boot_runner_is_an_input_of_layers_with_boot_tests() {
    let ws = TestWs::new("chain");
    let before = ws.digests();
    bootable_uan(&ws, "k", "boot_tests = [\"true\"]");
    let out = ws.lb(&["hash", "//uan/uan", "--json"]).ok().json();
    let boot = out["inputs"]["definition"]["boot"].as_str().unwrap();
    assert!(
        boot.starts_with(&format!("runner={} ", layerbuild::fingerprint::BOOT_RUNNER)),
        "{boot}"
    );
    let other = ws.lb(&["hash", "//compute/slurm", "--json"]).ok().json();
    assert!(
        other["inputs"]["definition"].get("boot").is_none(),
        "{other}"
    );
    assert_eq!(before["//compute/slurm"], ws.digests()["//compute/slurm"]);
}

/// A local image `localhost/holesarch-…:1` holding a static busybox for
/// `oci_arch` (`amd64`, `arm64`): an external parent of that architecture.
/// Removed on drop.
struct LocalImage {
    name: String,
    /// `NAME@sha256:…`, as a Layerfile pins it.
    pinned: String,
}

impl LocalImage {
    fn busybox(oci_arch: &str) -> LocalImage {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let repo = format!("localhost/holesarch-{}-{n}-{oci_arch}", std::process::id());
        let name = format!("{repo}:1");
        let ctr = format!("holesarch-{}-{n}-ctr", std::process::id());
        let buildah = |args: &[&str]| {
            let out = std::process::Command::new("buildah")
                .args(args)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "buildah {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        };
        buildah(&["from", "--arch", oci_arch, "--name", &ctr, "scratch"]);
        let mnt = std::path::PathBuf::from(buildah(&["mount", &ctr]));
        let busybox = match oci_arch {
            "amd64" => "/usr/bin/busybox",
            _ => "/usr/local/lib/layerbuild/busybox/busybox-aarch64",
        };
        std::fs::create_dir_all(mnt.join("bin")).unwrap();
        std::fs::create_dir_all(mnt.join("etc")).unwrap();
        std::fs::copy(busybox, mnt.join("bin/busybox")).unwrap();
        for applet in ["sh", "uname", "cat", "echo", "test", "grep"] {
            std::os::unix::fs::symlink("busybox", mnt.join("bin").join(applet)).unwrap();
        }
        buildah(&["umount", &ctr]);
        buildah(&["commit", "--rm", "--quiet", &ctr, &name]);
        let digest = buildah(&[
            "inspect",
            "--type",
            "image",
            "--format",
            "{{.FromImageDigest}}",
            &name,
        ]);
        LocalImage {
            pinned: format!("{repo}@{digest}"),
            name,
        }
    }
}

impl Drop for LocalImage {
    fn drop(&mut self) {
        let _ = std::process::Command::new("buildah")
            .args(["rmi", "-f", &self.name])
            .output();
    }
}

/// An external parent is pinned by digest, and buildah takes the local
/// image a digest names whatever its architecture (`--arch` or not, a
/// warning only); the instances of a manifest list pulled for several
/// architectures all carry the list's digest. A layer must never start
/// from another architecture's parent: an arm64 image would be cached,
/// pushed and reused under the layer's x86_64 digest.
#[test]
fn a_layer_never_starts_from_a_parent_of_another_architecture() {
    require_buildah();
    let parent = LocalImage::busybox("arm64");
    let ws = TestWs::new("multiarch");
    ws.write(
        "Layerfile.toml",
        &format!(
            "[workspace]\nname = \"{}\"\n\n[build]\nisolation = \"chroot\"\n\
             architectures = [\"x86_64\", \"aarch64\"]\n\n\
             [layers.\"base/os\"]\nparent = \"{}\"\nrun = [\"uname -m > /etc/built-on\"]\n",
            ws.name, parent.pinned
        ),
    );
    let built_on = |arch: &str| {
        let out = ws.lb(&["build", "//base/os", "--arch", arch, "--json"]);
        if out.code != 0 {
            return None;
        }
        let report = out.json();
        let image = common::layer(&report, "//base/os")["image_id"]
            .as_str()
            .unwrap()
            .to_string();
        Some(TestWs::run_in_image(&image, "cat /etc/built-on"))
    };
    assert_eq!(built_on("aarch64").as_deref(), Some("aarch64\n"));
    assert_eq!(
        built_on("x86_64"),
        None,
        "the x86_64 layer was built on the arm64 parent"
    );
    assert_eq!(
        ws.cached_digests().len(),
        1,
        "only the aarch64 build is cached"
    );
}

/// `{arch}` in a setup command names a workspace path per architecture
/// (`cp -a overlay-{arch}/. {root}/`): the fingerprint must read the path
/// the command copies for the architecture built, or an edit of it is
/// served the old image.
#[test]
fn setup_paths_naming_the_architecture_are_inputs() {
    let ws = TestWs::new("multiarch");
    ws.write("overlay-x86_64/etc/motd", "x86_64\n");
    ws.write("overlay-aarch64/etc/motd", "aarch64\n");
    let lf = ws.read("Layerfile.toml");
    let edited = lf.replacen(
        "setup = [\"sh scripts/busybox-root.sh {root} {arch}\"]",
        "setup = [\"sh scripts/busybox-root.sh {root} {arch}\", \"cp -a overlay-{arch}/. {root}/\"]",
        1,
    );
    assert_ne!(edited, lf);
    ws.write("Layerfile.toml", &edited);
    let hash = |arch: &str| {
        let out = ws.lb(&["hash", "//base/os", "--arch", arch]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        out.stdout.lines().next().unwrap().to_string()
    };
    for arch in ["x86_64", "aarch64"] {
        let before = hash(arch);
        ws.append(&format!("overlay-{arch}/etc/motd"), "edited\n");
        assert_ne!(
            before,
            hash(arch),
            "{arch}: an edit of overlay-{arch} left the digest as it was"
        );
    }
}

/// The same through a build: the edited overlay is built again, not
/// served from the cache.
#[test]
fn an_edited_setup_path_naming_the_architecture_is_built_again() {
    require_buildah();
    let ws = TestWs::new("multiarch");
    ws.write("overlay-x86_64/etc/motd", "one\n");
    let lf = ws.read("Layerfile.toml");
    let edited = lf.replacen(
        "setup = [\"sh scripts/busybox-root.sh {root} {arch}\"]",
        "setup = [\"sh scripts/busybox-root.sh {root} {arch}\", \"cp -a overlay-{arch}/. {root}/\"]",
        1,
    );
    assert_ne!(edited, lf);
    ws.write("Layerfile.toml", &edited);
    let motd = || {
        let report = ws
            .lb(&["build", "//base/os", "--arch", "x86_64", "--json"])
            .ok()
            .json();
        let image = common::layer(&report, "//base/os")["image_id"]
            .as_str()
            .unwrap()
            .to_string();
        TestWs::run_in_image(&image, "cat /etc/motd")
    };
    assert_eq!(motd(), "one\n");
    ws.write("overlay-x86_64/etc/motd", "two\n");
    assert_eq!(motd(), "two\n");
}

/// What an aarch64 machine pushed to the shared registry for `//base/os`
/// at `digest` before layerbuild knew architectures: an arm64 image
/// labelled with that digest, at `reference`.
fn push_arm64_build(reference: &str, digest: &str) {
    let arm = LocalImage::busybox("arm64");
    let buildah = |args: &[&str]| {
        let out = std::process::Command::new("buildah")
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "buildah {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    // One per image: tests run in parallel.
    let ctr = arm.name.replace(['/', ':', '.'], "-") + "-legacy";
    buildah(&["from", "--name", &ctr, &arm.name]);
    buildah(&[
        "config",
        "--label",
        &format!("layerbuild.digest={digest}"),
        "--label",
        "layerbuild.label=//base/os",
        &ctr,
    ]);
    buildah(&[
        "run",
        "--isolation",
        "chroot",
        &ctr,
        "--",
        "sh",
        "-c",
        "uname -m > /etc/built-on",
    ]);
    let legacy = format!("{}:legacy", arm.name.trim_end_matches(":1"));
    buildah(&["commit", "--rm", "--quiet", &ctr, &legacy]);
    buildah(&[
        "push",
        "--quiet",
        "--tls-verify=false",
        &legacy,
        &format!("docker://{reference}"),
    ]);
    buildah(&["rmi", &legacy]);
}

/// Before layerbuild knew architectures, a layer built on an aarch64
/// machine got the digest an x86_64 build of it has now (x86_64 digests
/// did not change), and was pushed under it to the shared registry. An
/// x86_64 build must not pull that arm64 image as its own.
#[test]
fn a_registry_image_of_another_architecture_is_not_pulled_as_the_layers() {
    require_buildah();
    let reg = common::registry::Registry::start();
    let ws = TestWs::new("multiarch");
    ws.write(
        "Layerfile.toml",
        &format!(
            "[workspace]\nname = \"{}\"\n\n[build]\nisolation = \"chroot\"\n\n\
             [layers.\"base/os\"]\nparent = \"scratch\"\n\
             setup = [\"sh scripts/busybox-root.sh {{root}} {{arch}}\"]\n\
             run = [\"uname -m > /etc/built-on\"]\n\n\
             [cache]\nregistry = \"{}\"\ntls_verify = false\n",
            ws.name,
            reg.url()
        ),
    );
    let digest = digest(&ws, "//base/os");
    // What an aarch64 machine pushed for that digest.
    let reference = format!("{}/base/os:{digest}", reg.url());
    push_arm64_build(&reference, &digest);

    // A pulled image keeps the reference as its name.
    let _pulled = LocalImage {
        name: reference.clone(),
        pinned: String::new(),
    };
    let out = ws.lb(&["build", "//base/os", "--json"]);
    let report = out.ok().json();
    let image = common::layer(&report, "//base/os")["image_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        TestWs::run_in_image(&image, "cat /etc/built-on"),
        "x86_64\n",
        "the arm64 image was pulled for the x86_64 layer: {report}"
    );
    assert_eq!(report["pulled"], 0, "{report}");
    assert!(
        report["warnings"]
            .to_string()
            .contains("its architecture is arm64, not amd64"),
        "{report}"
    );
}

/// The same through the variables setup commands get:
/// `cp -a overlay-$LAYERBUILD_ARCH/. {root}/` copies overlay-aarch64 in an
/// aarch64 build.
#[test]
fn setup_paths_naming_the_architecture_variables_are_inputs() {
    let ws = TestWs::new("multiarch");
    ws.write("overlay-x86_64/etc/motd", "x86_64\n");
    ws.write("overlay-aarch64/etc/motd", "aarch64\n");
    ws.write("debs/tool_amd64.deb", "amd64\n");
    ws.write("debs/tool_arm64.deb", "arm64\n");
    let lf = ws.read("Layerfile.toml");
    let edited = lf.replacen(
        "setup = [\"sh scripts/busybox-root.sh {root} {arch}\"]",
        "setup = [\"sh scripts/busybox-root.sh {root} {arch}\", \
         \"cp -a overlay-$LAYERBUILD_ARCH/. {root}/\", \
         \"cp debs/tool_${LAYERBUILD_DEBIAN_ARCH}.deb {root}/tmp/\"]",
        1,
    );
    assert_ne!(edited, lf);
    ws.write("Layerfile.toml", &edited);
    let hash = |arch: &str| {
        let out = ws.lb(&["hash", "//base/os", "--arch", arch]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        out.stdout.lines().next().unwrap().to_string()
    };
    for (arch, file) in [
        ("x86_64", "overlay-x86_64/etc/motd"),
        ("aarch64", "overlay-aarch64/etc/motd"),
        ("x86_64", "debs/tool_amd64.deb"),
        ("aarch64", "debs/tool_arm64.deb"),
    ] {
        let before = hash(arch);
        ws.append(file, "edited\n");
        assert_ne!(
            before,
            hash(arch),
            "{arch}: an edit of {file} left the digest as it was"
        );
    }
}

/// What an aarch64 machine's cache held before layerbuild knew
/// architectures, for `//base/os` of `ws` at `digest`: its arm64 image under
/// the layer's local name (the x86_64 image it replaces removed); the
/// image's id.
fn plant_arm64_build(ws: &TestWs, arm: &LocalImage, name: &str, digest: &str) -> String {
    let buildah = |args: &[&str]| {
        let out = std::process::Command::new("buildah")
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "buildah {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let _ = buildah(&["rmi", "-f", name]);
    let ctr = format!("layerbuild-{}-holesarch-legacy", ws.name);
    buildah(&["from", "--name", &ctr, &arm.name]);
    buildah(&[
        "config",
        "--label",
        &format!("layerbuild.digest={digest}"),
        "--label",
        "layerbuild.label=//base/os",
        &ctr,
    ]);
    buildah(&[
        "run",
        "--isolation",
        "chroot",
        &ctr,
        "--",
        "sh",
        "-c",
        "uname -m > /etc/built-on",
    ]);
    buildah(&["commit", "--rm", "--quiet", &ctr, name]);
    buildah(&[
        "inspect",
        "--type",
        "image",
        "--format",
        "{{.FromImageID}}",
        name,
    ])
}

/// Before layerbuild knew architectures, an aarch64 machine's build of a
/// layer had the digest an x86_64 build of it has now (x86_64 digests did
/// not change): after the upgrade, such a machine builds for x86_64 by
/// default, and its cache row, or its image left without one, must not be
/// reused as the x86_64 build.
#[test]
fn an_image_of_another_architecture_from_before_architectures_is_not_reused() {
    require_buildah();
    let ws = TestWs::new("multiarch");
    ws.write(
        "Layerfile.toml",
        &format!(
            "[workspace]\nname = \"{}\"\n\n[build]\nisolation = \"chroot\"\n\n\
             [layers.\"base/os\"]\nparent = \"scratch\"\n\
             setup = [\"sh scripts/busybox-root.sh {{root}} {{arch}}\"]\n\
             run = [\"uname -m > /etc/built-on\"]\n",
            ws.name
        ),
    );
    let build = || {
        let report = ws.lb(&["build", "//base/os", "--json"]).ok().json();
        let layer = common::layer(&report, "//base/os").clone();
        let image = layer["image_id"].as_str().unwrap().to_string();
        (layer, TestWs::run_in_image(&image, "cat /etc/built-on"))
    };
    let (first, built_on) = build();
    assert_eq!(built_on, "x86_64\n");
    let name = first["image_name"].as_str().unwrap().to_string();
    let digest = first["digest"].as_str().unwrap().to_string();
    let arm = LocalImage::busybox("arm64");
    let sql = |q: &str| {
        let db = rusqlite::Connection::open(ws.db()).unwrap();
        db.execute(q, rusqlite::params![digest]).unwrap();
    };

    // Its cache row, recorded before the rows said an architecture.
    let id = plant_arm64_build(&ws, &arm, &name, &digest);
    let db = rusqlite::Connection::open(ws.db()).unwrap();
    db.execute(
        "UPDATE layers SET image_id = ?2, arch = NULL WHERE digest = ?1",
        rusqlite::params![digest, id],
    )
    .unwrap();
    drop(db);
    let (layer, built_on) = build();
    assert_eq!(built_on, "x86_64\n", "the arm64 row was reused: {layer}");
    assert_eq!(layer["status"], "built", "{layer}");

    // Its image, left without a row (a killed build, a removed cache).
    plant_arm64_build(&ws, &arm, &name, &digest);
    sql("DELETE FROM layers WHERE digest = ?1");
    let (layer, built_on) = build();
    assert_eq!(built_on, "x86_64\n", "the arm64 image was adopted: {layer}");
    assert_eq!(layer["status"], "built", "{layer}");
}

/// `affected` compares every architecture the workspace builds for, each
/// with itself: a change only an aarch64 build sees (a layer only it
/// builds) is affected (it said nothing was, and CI skipped it), and
/// naming an architecture does not make every layer affected (it compared
/// the old revision's default architecture with the one named).
#[test]
fn affected_compares_each_architecture_with_itself() {
    let ws = TestWs::new("multiarch");
    ws.append(
        "Layerfile.toml",
        "\n[layers.\"compute/armonly\"]\nparent = \"//compute/compute\"\n\
         architectures = [\"aarch64\"]\nrun = [\"echo one > /etc/armonly\"]\n",
    );
    ws.write(".gitignore", "cache/\n");
    common::git(&ws.root, &["init", "-q", "."]);
    common::git(&ws.root, &["add", "-A"]);
    common::git(&ws.root, &["commit", "-q", "-m", "one"]);
    ws.write(
        "Layerfile.toml",
        &ws.read("Layerfile.toml")
            .replace("echo one > /etc/armonly", "echo two > /etc/armonly"),
    );
    for args in [&[][..], &["--arch", "aarch64"][..]] {
        let mut all = vec!["affected", "--since", "HEAD", "--json"];
        all.extend_from_slice(args);
        let report = ws.lb(&all).ok().json();
        let affected: Vec<(String, String)> = report["affected"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                (
                    a["label"].as_str().unwrap().to_string(),
                    a["arch"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect();
        assert_eq!(
            affected,
            [("//compute/armonly".to_string(), "aarch64".to_string())],
            "{args:?}: {report}"
        );
    }
}

/// The same arm64 image at the layer's content tag, left there by a build
/// in read-only cache mode (it built the layer without pushing): promoting
/// the x86_64 layer must not point the release at it.
#[test]
fn a_content_tag_of_another_architecture_is_not_promoted() {
    require_buildah();
    let reg = common::registry::Registry::start();
    let ws = TestWs::new("multiarch");
    ws.write(
        "Layerfile.toml",
        &format!(
            "[workspace]\nname = \"{}\"\n\n[build]\nisolation = \"chroot\"\n\n\
             [layers.\"base/os\"]\nparent = \"scratch\"\n\
             setup = [\"sh scripts/busybox-root.sh {{root}} {{arch}}\"]\n\
             run = [\"uname -m > /etc/built-on\"]\n\n\
             [cache]\nregistry = \"{}\"\ntls_verify = false\n",
            ws.name,
            reg.url()
        ),
    );
    let digest = digest(&ws, "//base/os");
    let reference = format!("{}/base/os:{digest}", reg.url());
    push_arm64_build(&reference, &digest);
    let _pulled = LocalImage {
        name: reference.clone(),
        pinned: String::new(),
    };
    let built = ws
        .lb(&["build", "//base/os", "--cache-mode", "read-only", "--json"])
        .ok()
        .json();
    assert_eq!(built["built"], 1, "{built}");
    let out = ws.lb(&["promote", "//base/os", "--to", "stable"]);
    assert_ne!(
        out.code, 0,
        "the arm64 content tag was promoted as the x86_64 layer's release:\n{}",
        out.stdout
    );
    assert!(
        out.stderr.contains("architecture is arm64"),
        "{}",
        out.stderr
    );
}

/// `ci gitlab` plans every architecture the workspace builds for, a job
/// per layer and architecture: a layer only aarch64 builds got no job (it
/// was never built, tested or pushed by CI), and a job built every
/// architecture of its layer while the plan had looked at x86_64's alone.
#[test]
fn ci_plans_a_job_per_architecture() {
    let ws = TestWs::new("multiarch");
    ws.append(
        "Layerfile.toml",
        "\n[layers.\"compute/armonly\"]\nparent = \"//compute/compute\"\n\
         architectures = [\"aarch64\"]\nrun = [\"echo one > /etc/armonly\"]\n",
    );
    let yaml = ws.lb(&["ci", "gitlab"]).ok().stdout;
    for (job, arch) in [
        ("build:base/os@x86_64", "x86_64"),
        ("build:base/os@aarch64", "aarch64"),
        ("build:compute/x86only@x86_64", "x86_64"),
        ("build:compute/armonly@aarch64", "aarch64"),
    ] {
        let at = yaml
            .find(&format!("\"{job}\":\n"))
            .unwrap_or_else(|| panic!("no job {job}:\n{yaml}"));
        let script = yaml[at..].lines().nth(2).unwrap();
        assert!(
            script.contains(&format!("--arch {arch}")),
            "{job}: {script}"
        );
    }
    assert!(!yaml.contains("compute/x86only@aarch64"), "{yaml}");
    // The aarch64 child needs the aarch64 parent.
    let at = yaml.find("\"build:compute/armonly@aarch64\":\n").unwrap();
    assert!(
        yaml[at..].contains("job: \"build:compute/compute@aarch64\""),
        "{yaml}"
    );
}

/// Mitogen reads `mitogen_*` variables of the layer's host itself, whether
/// the play names them or not: `mitogen_task_isolation: fork` runs each
/// module in a fresh fork, so what a module leaves in the persistent
/// interpreter's process no longer reaches the tasks after it (found with
/// the umask a `git` task with `umask:` set: a directory made after it had
/// other permissions). Set in the inventory, it must build the layer again.
#[test]
fn a_mitogen_variable_of_the_inventory_builds_the_layer_again() {
    require_buildah();
    let ws = TestWs::new("chain");
    let build = || {
        let report = ws.lb(&["build", "//compute/slurm", "--json"]).ok().json();
        common::layer(&report, "//compute/slurm").clone()
    };
    let before = build();
    ws.append(
        "inventory/test/group_vars/all.yml",
        "mitogen_task_isolation: fork\n",
    );
    let after = build();
    assert_eq!(after["status"], "built", "{after}");
    assert_ne!(before["digest"], after["digest"]);
}

/// A play (and a setup command) creates files with the umask it runs
/// under, which is not an input: run under the caller's, the same digest
/// would hold group-writable files on a machine with umask 002 and not on
/// one with 022 (a CI runner and a developer sharing a cache). Builds run
/// their commands under umask 022, whatever the caller's.
#[test]
fn the_callers_umask_does_not_reach_the_image() {
    require_buildah();
    let ws = TestWs::new("chain");
    let lf = ws.read("Layerfile.toml");
    ws.write(
        "Layerfile.toml",
        &common::Edit::edit(
            lf.as_str(),
            "setup = [\"sh scripts/busybox-root.sh {root}\"]",
            "setup = [\"sh scripts/busybox-root.sh {root}\", \"echo s > {root}/etc/from-setup\"]",
        ),
    );
    let out = std::process::Command::new("sh")
        .args(["-c", "umask 0002; exec \"$0\" \"$@\""])
        .arg(env!("CARGO_BIN_EXE_layerbuild"))
        .arg("-C")
        .arg(&ws.root)
        .args(["build", "//compute/slurm", "--json"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    let image = common::layer(&report, "//compute/slurm")["image_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        TestWs::run_in_image(&image, "stat -c '%a %n' /etc/slurm.conf /etc/from-setup"),
        "644 /etc/slurm.conf\n644 /etc/from-setup\n"
    );
}

/// Without an `ansible.cfg` in the source (or with one Ansible ignores, in
/// a world-writable directory), Ansible reads the builder's
/// `~/.ansible.cfg` (or `/etc/ansible/ansible.cfg`), which no digest sees:
/// here its `ansible_managed` would reach the image. Plays read an empty
/// configuration instead, as they never read `ANSIBLE_CONFIG`.
#[test]
fn the_builders_own_ansible_cfg_does_not_reach_the_play() {
    require_buildah();
    let mut ws = TestWs::new("chain");
    ws.write(
        "slurm-config/roles/slurm/templates/managed.j2",
        "managed={{ ansible_managed }}\n",
    );
    ws.append(
        "slurm-config/roles/slurm/tasks/main.yml",
        "- raw: echo \"{{ lookup('template', 'managed.j2') }}\" > /etc/managed\n",
    );
    let home = tempfile::tempdir().unwrap();
    std::fs::write(
        home.path().join(".ansible.cfg"),
        "[defaults]\nansible_managed = the builder's own\n",
    )
    .unwrap();
    ws.env
        .push(("HOME".into(), home.path().to_string_lossy().into_owned()));
    let report = ws.lb(&["build", "//compute/slurm", "--json"]).ok().json();
    let image = common::layer(&report, "//compute/slurm")["image_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        TestWs::run_in_image(&image, "cat /etc/managed").trim(),
        "managed=Ansible managed"
    );
}

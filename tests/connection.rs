//! How plays reach the working container: the default chroot connection on
//! the mounted root (in a private mount namespace with /proc, /sys and a
//! minimal /dev) and the buildah connection, per layer. Real buildah and
//! ansible-playbook on the busybox chain.

mod common;

use common::{TestWs, buildah, require_buildah};

const PLAY: &str = r#"- hosts: Compute
  gather_facts: false
  tasks:
    - name: what modules expect is there
      raw: test -f /proc/self/status && test -c /dev/null && test -d /sys/kernel && echo ok > /etc/from-play
      args:
        executable: /bin/sh
    - name: devices work
      raw: head -c 16 /dev/urandom > /tmp/random && test -s /tmp/random && rm /tmp/random
      args:
        executable: /bin/sh
"#;

fn workspace(connection: Option<&str>) -> TestWs {
    let ws = TestWs::new("chain");
    let mut lf = ws.read("Layerfile.toml").replacen(
        "setup = [\"sh scripts/busybox-root.sh {root}\"]",
        "setup = [\"sh scripts/busybox-root.sh {root} && mkdir -p {root}/proc {root}/sys {root}/dev\"]",
        1,
    );
    if let Some(c) = connection {
        lf = lf.replacen(
            "playbook = \"compute.yml\"\n",
            &format!("playbook = \"compute.yml\"\nansible_connection = \"{c}\"\n"),
            1,
        );
    }
    ws.write("Layerfile.toml", &lf);
    ws.write("compute-config/compute.yml", PLAY);
    ws
}

/// Files under /dev and /proc of an image (through a mounted container).
fn special_dirs_of(image: &str) -> String {
    let ctr = buildah(&["from", "--pull-never", image]);
    let root = buildah(&["mount", &ctr]);
    let mut found = String::new();
    for d in ["dev", "proc", "sys"] {
        for e in std::fs::read_dir(std::path::Path::new(&root).join(d)).unwrap() {
            found.push_str(&format!(
                "{d}/{} ",
                e.unwrap().file_name().to_string_lossy()
            ));
        }
    }
    let etc = std::fs::read_to_string(std::path::Path::new(&root).join("etc/from-play"));
    buildah(&["umount", &ctr]);
    buildah(&["rm", &ctr]);
    assert_eq!(
        etc.unwrap_or_default(),
        "ok\n",
        "the play's file is in the image"
    );
    found
}

fn mounts_under_containers() -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| {
            m.ends_with("/merged/proc") || m.ends_with("/merged/dev") || m.ends_with("/merged/sys")
        })
        .map(str::to_string)
        .collect()
}

#[test]
fn the_chroot_connection_gives_modules_proc_sys_and_dev_and_leaks_nothing() {
    require_buildah();
    let ws = workspace(None);
    let r = ws.lb(&["build", "--json", "//compute/compute"]).ok().json();
    assert_eq!(r["built"], 3, "{r}");
    let log = std::fs::read_to_string(ws.path(r["layers"][2]["log"].as_str().unwrap())).unwrap();
    assert!(
        log.contains("ansible_connection=community.general.chroot")
            || log.contains("unshare --mount"),
        "{log}"
    );
    // One line per command in the log: each `$ ` line is whole shell words.
    for line in log.lines().filter_map(|l| l.strip_prefix("$ ")) {
        assert!(
            shell_words::split(line).is_ok(),
            "not one shell line: {line}"
        );
    }
    // Nothing of the private mounts reached the image or the host.
    let image = r["layers"][2]["image_name"].as_str().unwrap();
    assert_eq!(
        special_dirs_of(image),
        "",
        "the image's /dev, /proc, /sys stay empty"
    );
    assert!(
        mounts_under_containers().is_empty(),
        "{:?}",
        mounts_under_containers()
    );
    // The connection is an input: switching it rebuilds the play layer only.
    let before = ws.digests();
    let lf = ws.read("Layerfile.toml").replacen(
        "playbook = \"compute.yml\"\n",
        "playbook = \"compute.yml\"\nansible_connection = \"buildah\"\n",
        1,
    );
    ws.write("Layerfile.toml", &lf);
    let after = ws.digests();
    assert_eq!(before["//base/hsn"], after["//base/hsn"]);
    assert_ne!(before["//compute/compute"], after["//compute/compute"]);
    let why = ws.lb(&["why", "//compute/compute"]).ok().stdout;
    assert!(why.contains("ansible_connection"), "{why}");
}

#[test]
fn the_buildah_connection_is_selectable_per_layer() {
    require_buildah();
    let ws = workspace(Some("buildah"));
    let r = ws.lb(&["build", "--json", "//compute/compute"]).ok().json();
    assert_eq!(r["built"], 3, "{r}");
    let log = std::fs::read_to_string(ws.path(r["layers"][2]["log"].as_str().unwrap())).unwrap();
    assert!(!log.contains("unshare --mount"), "{log}");
    let image = r["layers"][2]["image_name"].as_str().unwrap();
    special_dirs_of(image);

    let bad = TestWs::new("chain");
    let lf = bad.read("Layerfile.toml").replacen(
        "playbook = \"compute.yml\"\n",
        "playbook = \"compute.yml\"\nansible_connection = \"ssh\"\n",
        1,
    );
    bad.write("Layerfile.toml", &lf);
    let run = bad.lb(&["build", "//compute/compute"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("unknown ansible_connection 'ssh'"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("Layerfile.toml:"), "{}", run.stderr);
}

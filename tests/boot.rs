//! Booting images: the netboot export checked by the tools that consume
//! it, and `boot` in QEMU (boot tests, a kernel panic, a timeout).
//! One Debian node image (systemd, kernel, dracut) is built per test
//! binary run and shared by the checks, which run in one test in order:
//! the image takes minutes to build.

mod common;

use std::process::Command;

use common::{TestWs, require_buildah};

fn sh(cmd: &str) -> String {
    let out = Command::new("sh").arg("-c").arg(cmd).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn sha256(path: &std::path::Path) -> String {
    sh(&format!("sha256sum {}", path.display()))
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

fn check_netboot_export(ws: &TestWs) {
    let out = ws.path("out/node");
    let out_s = out.display().to_string();
    let export = [
        "export",
        "//base/node",
        "--format",
        "netboot",
        "--compression",
        "lz4",
        "-o",
        &out_s,
        "--json",
    ];
    let run = ws.lb(&export);
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    let mut names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "boot.ipxe",
            "boot.json",
            "initramfs.img",
            "rootfs.squashfs",
            "vmlinuz"
        ]
    );
    // Nothing left beside it from the atomic write.
    let left: Vec<_> = std::fs::read_dir(ws.path("out"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left.len(), 1, "{left:?}");

    // The consumers: file, unsquashfs, and dracut's own lister (run in
    // the image's root, as the initramfs is the image's).
    let file = sh(&format!("file -b {}", out.join("vmlinuz").display()));
    assert!(file.contains("Linux kernel x86 boot executable"), "{file}");
    let list = sh(&format!(
        "unsquashfs -l {} | grep -E '^squashfs-root/(sbin/init|usr/lib/systemd/systemd|boot/vmlinuz-.*)$'",
        out.join("rootfs.squashfs").display()
    ));
    assert!(
        list.contains("squashfs-root/usr/lib/systemd/systemd"),
        "{list}"
    );
    assert!(list.contains("squashfs-root/boot/vmlinuz-"), "{list}");
    let root = tempfile::tempdir().unwrap();
    sh(&format!(
        "unsquashfs -q -n -f -d {} {} >/dev/null",
        root.path().join("r").display(),
        out.join("rootfs.squashfs").display()
    ));
    let r = root.path().join("r");
    std::fs::copy(out.join("initramfs.img"), r.join("tmp/initramfs.img")).unwrap();
    let listed = sh(&format!(
        "chroot {} lsinitrd /tmp/initramfs.img",
        r.display()
    ));
    for want in [
        "pre-pivot/10-overlay-mount.sh",
        "squashfs.ko",
        "virtio_blk.ko",
    ] {
        assert!(listed.contains(want), "initramfs lacks {want}:\n{listed}");
    }

    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("boot.json")).unwrap()).unwrap();
    assert_eq!(json["label"], "//base/node");
    assert_eq!(json["digest"], ws.digests()["//base/node"].as_str());
    let kv = json["kernel_version"].as_str().unwrap();
    assert!(kv.ends_with("-amd64"), "{json}");
    assert!(r.join(format!("boot/vmlinuz-{kv}")).is_file());
    for f in ["vmlinuz", "initramfs.img", "rootfs.squashfs"] {
        assert_eq!(
            json["files"][f]["sha256"].as_str().unwrap(),
            sha256(&out.join(f)),
            "{f}"
        );
    }
    assert!(
        json["cmdline"].as_str().unwrap().contains("rootovl"),
        "{json}"
    );
    let ipxe = std::fs::read_to_string(out.join("boot.ipxe")).unwrap();
    assert!(
        ipxe.starts_with("#!ipxe\n") && ipxe.contains("kernel vmlinuz initrd=initramfs.img"),
        "{ipxe}"
    );

    // The same digest again: nothing is written.
    let again = ws.lb(&export).ok().json();
    assert_eq!(again["status"], "up_to_date");
}

#[test]
fn an_image_without_a_kernel_is_a_clear_error() {
    require_buildah();
    let ws = TestWs::new("boot");
    ws.lb(&["build", "//base/nokernel"]).ok();
    let out = ws.path("out/n").display().to_string();
    let run = ws.lb(&[
        "export",
        "//base/nokernel",
        "--format",
        "netboot",
        "-o",
        &out,
    ]);
    assert_ne!(run.code, 0);
    assert!(
        run.stderr
            .contains("//base/nokernel has no kernel: its /boot holds no vmlinuz-VERSION"),
        "{}",
        run.stderr
    );
    assert!(!ws.path("out/n").exists());
    assert_eq!(
        std::fs::read_dir(ws.path("out"))
            .map(|d| d.count())
            .unwrap_or(0),
        0
    );
}

#[test]
fn a_debian_node_exports_for_netboot() {
    require_buildah();
    let ws = TestWs::new("boot");
    // The build runs the boot tests after the image tests.
    let run = ws.lb(&["build", "--json", "//base/node"]);
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    let node = &run.json()["layers"][0];
    assert_eq!(node["status"], "built", "{node}");
    let ran: Vec<&str> = node["tests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["command"].as_str().unwrap())
        .collect();
    assert!(ran.contains(&"uname -r"), "{node}");
    check_netboot_export(&ws);
    check_boots(&ws);
    check_test_boot(&ws);
    check_interactive(&ws);
    check_a_failing_boot_test_fails_the_build(&ws);
}

/// `test --boot` runs the image tests and then the boot tests, into one
/// log; without `--boot` no boot.
fn check_test_boot(ws: &TestWs) {
    let r = ws.lb(&["test", "//base/node", "--json"]).ok().json();
    assert_eq!(r["passed"], 0, "{r}");
    let r = ws.lb(&["test", "//base/node", "--boot", "--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let j = r.json();
    let commands: Vec<&str> = j["layers"][0]["tests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["command"].as_str().unwrap())
        .collect();
    assert_eq!(commands.len(), 5, "{j}");
    assert!(
        commands[0].starts_with("boot: reach the default target (")
            && commands.contains(&"uname -r"),
        "{commands:?}"
    );
    assert_eq!(j["failed"], 0, "{j}");
    let log = std::fs::read_to_string(ws.path(j["layers"][0]["log"].as_str().unwrap())).unwrap();
    assert!(log.contains("==> boot tests\nok      boot: reach"), "{log}");
}

/// `boot --interactive`: the serial console on the terminal; a person
/// sees the login prompt and leaves with Ctrl-A X; no QEMU is left.
fn check_interactive(ws: &TestWs) {
    use std::io::{Read, Write};
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_layerbuild"))
        .current_dir(&ws.root)
        .args(["boot", "//base/node", "--interactive"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
            if String::from_utf8_lossy(&seen).contains("login:") {
                let _ = tx.send(String::from_utf8_lossy(&seen).into_owned());
                seen.clear();
            }
        }
    });
    let console = rx
        .recv_timeout(std::time::Duration::from_secs(400))
        .expect("no login prompt on the serial console");
    assert!(console.contains("login:"), "{console}");
    child.stdin.as_mut().unwrap().write_all(b"\x01x").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!qemu_left(ws), "a QEMU process is left");
}

/// The demo's compute node, as a site boots it: `build` boots it after
/// its image tests, and its boot tests pass (munge and the slurm config
/// there, no failed unit, the hostname from the kernel command line, the
/// kernel modules it loads, the blacklisted ones refused).
#[test]
fn the_demo_compute_node_boots_and_passes_its_boot_tests() {
    require_buildah();
    let ws = TestWs::demo();
    let run = ws.lb(&["build", "--json", "//compute/netboot"]);
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    let r = run.json();
    let node = common::layer(&r, "//compute/netboot");
    assert_eq!(node["status"], "built", "{node}");
    let tests = node["tests"].as_array().unwrap();
    let declared = ws.read("Layerfile.toml");
    for t in tests {
        assert_eq!(t["passed"], true, "{t}");
    }
    // The boot's own two checks, then each declared boot test.
    assert_eq!(tests.len(), 2 + 6, "{node}");
    assert!(declared.contains("systemd.hostname=nid000001"));
    for t in &tests[2..] {
        let cmd = t["command"].as_str().unwrap();
        assert!(
            declared.contains(&format!("{:?}", cmd)) || declared.contains(&format!("\"{cmd}\"")),
            "{cmd}"
        );
    }
    let log = std::fs::read_to_string(ws.path(node["log"].as_str().unwrap())).unwrap();
    assert!(log.contains("==> boot tests"), "{log}");
    assert!(!qemu_left(&ws), "a QEMU process is left");
}

/// A layer whose boot test fails is not built: not cached, its image kept
/// as `NAME-failed`, nothing below it built, the failure with the test's
/// output, and its log with the console and the test's output.
fn check_a_failing_boot_test_fails_the_build(ws: &TestWs) {
    let run = ws.lb(&["build", "--json", "//base/belowbroken"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let r = run.json();
    let broken = common::layer(&r, "//base/broken");
    assert_eq!(broken["status"], "failed", "{r}");
    let below = common::layer(&r, "//base/belowbroken");
    assert_eq!(below["status"], "skipped", "{r}");
    // The error first: when the boot did not happen, it says why.
    let error = broken["error"].as_str().unwrap();
    assert!(
        error.contains("boot tests failed") && error.contains("exit status 3"),
        "{error}"
    );
    let log = std::fs::read_to_string(ws.path(broken["log"].as_str().unwrap())).unwrap();
    assert_console_in(&log);
    assert!(
        log.contains("FAILED  echo broken; exit 3: exit status 3") && log.contains("| broken"),
        "the test and its output are in the log:\n{log}"
    );
    let digest = broken["digest"].as_str().unwrap();
    assert!(!ws.cached_digests().contains(&digest.to_string()));
    let failed = broken["tests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["passed"] == false)
        .unwrap();
    assert!(
        failed["output"].as_str().unwrap().contains("broken"),
        "{failed}"
    );
    let names = sh("buildah images --format '{{.Name}}:{{.Tag}}'");
    let name = format!(
        "localhost/layerbuild/{}/base/broken:{}",
        ws.name,
        &digest[..12]
    );
    assert!(names.contains(&format!("{name}-failed")), "{names}");
    assert!(!names.lines().any(|n| n == name), "{names}");
    // Boot tests are inputs: changing them changes the digest.
    let before = ws.digests()["//base/broken"].clone();
    let lf = ws.read("Layerfile.toml");
    ws.write(
        "Layerfile.toml",
        &lf.replace("echo broken; exit 3", "echo fixed"),
    );
    assert_ne!(ws.digests()["//base/broken"], before);
}

/// Whether a QEMU booting from `ws` runs (other tests boot at the same
/// time, from their own workspaces).
/// The boot's console is in `log`: the kernel's and systemd's lines
/// between the two headers (which kernel lines the serial console replays
/// from its buffer may vary; a few of them are always there).
fn assert_console_in(log: &str) {
    let console = log
        .split_once("==> console\n")
        .and_then(|(_, rest)| rest.split_once("==> guest report"))
        .map(|(c, _)| c)
        .unwrap_or_default();
    assert!(
        console.lines().count() >= 20
            && ["Linux version", "Kernel command line", "systemd"]
                .iter()
                .filter(|k| console.contains(*k))
                .count()
                >= 2,
        "the console is in the log:\n{log}"
    );
}

fn qemu_left(ws: &TestWs) -> bool {
    let root = ws.root.to_string_lossy().into_owned();
    std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
        std::fs::read(e.path().join("cmdline")).is_ok_and(|c| {
            let c = String::from_utf8_lossy(&c);
            c.contains("layerbuild-boot") && c.contains(&root)
        })
    })
}

/// Boots it: its boot tests pass; a failing command fails with its
/// output; a bad rdinit is a kernel panic, not a timeout; a hang stops
/// at the timeout with no QEMU left.
fn check_boots(ws: &TestWs) {
    let r = ws.lb(&["boot", "//base/node", "--json"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let j = r.json();
    assert_eq!(j["failed"], 0, "{j}");
    assert_eq!(j["passed"], 5, "{j}");
    let log = std::fs::read_to_string(ws.path(j["layers"][0]["log"].as_str().unwrap())).unwrap();
    assert_console_in(&log);

    let r = ws.lb(&[
        "boot",
        "//base/node",
        "--json",
        "--",
        "sh",
        "-c",
        "echo broken; exit 3",
    ]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let t = &r.json()["layers"][0]["tests"][2];
    assert_eq!(t["error"], "exit status 3", "{t}");
    assert!(t["output"].as_str().unwrap().contains("broken"), "{t}");

    // A bad rdinit (a child of the node that boots with one).
    ws.lb(&["build", "//base/panics", "//base/hangs"]).ok();
    let r = ws.lb(&["boot", "//base/panics", "--json", "--", "true"]);
    let t = &r.json()["layers"][0]["tests"][0];
    assert_eq!(t["error"], "kernel panic", "{t}");
    assert!(
        t["output"].as_str().unwrap().contains("Kernel panic"),
        "{t}"
    );

    // A wrong fstab: emergency mode, said as such with the console.
    ws.lb(&["build", "//base/emergency"]).ok();
    let r = ws.lb(&["boot", "//base/emergency", "--json", "--", "true"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let t = &r.json()["layers"][0]["tests"][0];
    assert_eq!(t["error"], "emergency mode", "{t}");
    assert!(
        t["output"].as_str().unwrap().contains("emergency mode"),
        "{t}"
    );
    assert!(!qemu_left(ws), "a QEMU process is left");

    let r = ws.lb(&["boot", "//base/hangs", "--json", "--", "true"]);
    let t = &r.json()["layers"][0]["tests"][0];
    assert!(
        t["error"].as_str().unwrap().starts_with("timed out after"),
        "{t}"
    );
    assert!(!qemu_left(ws), "a QEMU process is left");
}

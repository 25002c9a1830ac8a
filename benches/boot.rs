//! Benchmark: booting the demo's compute node image as a diskless node.
//!
//! Builds the demo's `//compute/netboot` (a copy of the repository's demo
//! workspace under a name of its own; the build boots it once, untimed),
//! then runs `layerbuild boot //compute/netboot` (its six boot tests)
//! several times with KVM and with TCG, and prints, for each:
//!
//! - QEMU's start to the last boot test's end (what `boot` reports as the
//!   first check's duration: kernel, initramfs, the squashfs root, systemd
//!   to the image's default target, then the tests);
//! - the guest's uptime when the default target was reached;
//! - the whole `layerbuild boot` command (the export is already made).
//!
//! KVM is measured only where it can boot the image's kernel: on a host
//! whose KVM is PVM (`/sys/module/kvm_pvm`), only kernels built for PVM
//! boot, so the row says so instead of a figure.
//!
//! Needs root, buildah, ansible-core, mmdebstrap and qemu-system-x86 (the
//! first build downloads Debian packages). Run with `scripts/bench boot`.

mod common;
use common::bin;

use std::path::Path;
use std::process::Command;
use std::time::Instant;

const RUNS: usize = 3;

fn copy_dir(from: &Path, to: &Path) {
    let ok = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap()
        .success();
    assert!(ok, "cp -a {} {}", from.display(), to.display());
}

/// A copy of the repository's demo workspace named `name`.
fn demo(root: &Path, name: &str) {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::create_dir_all(root).unwrap();
    copy_dir(&repo.join("demo"), &root.join("demo"));
    let lf = std::fs::read_to_string(repo.join("Layerfile.toml")).unwrap();
    std::fs::write(
        root.join("Layerfile.toml"),
        lf.replacen("name = \"demo\"", &format!("name = \"{name}\""), 1),
    )
    .unwrap();
}

fn lb(root: &Path, args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let out = Command::new(bin())
        .arg("-C")
        .arg(root)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// One timed boot: (QEMU start to tests done, guest uptime at the default
/// target, the whole command), in seconds.
fn boot_once(root: &Path, accel: &str) -> Result<(f64, f64, f64), String> {
    let t = Instant::now();
    let (ok, out, err) = lb(
        root,
        &["boot", "//compute/netboot", "--json"],
        &[("LAYERBUILD_BOOT_ACCEL", accel)],
    );
    let whole = t.elapsed().as_secs_f64();
    let j: serde_json::Value =
        serde_json::from_str(&out).map_err(|e| format!("{e}: {out}\n{err}"))?;
    let tests = j["layers"][0]["tests"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if !ok || tests.iter().any(|t| t["passed"] != true) {
        return Err(format!("the boot failed:\n{j:#}\n{err}"));
    }
    let first = &tests[0];
    let to_done = first["duration_ms"].as_f64().unwrap_or(0.0) / 1000.0;
    // "up 28.4s after the kernel started"
    let uptime = first["output"]
        .as_str()
        .and_then(|o| o.strip_prefix("up "))
        .and_then(|o| o.split('s').next())
        .and_then(|o| o.parse().ok())
        .unwrap_or(f64::NAN);
    Ok((to_done, uptime, whole))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Removes the images and containers of workspace `name`.
fn clean(name: &str) {
    let out = Command::new("buildah")
        .args(["images", "--format", "{{.Name}}:{{.Tag}}"])
        .output()
        .unwrap();
    let repo = format!("localhost/layerbuild/{name}/");
    for image in String::from_utf8_lossy(&out.stdout).lines() {
        if image.starts_with(&repo) {
            let _ = Command::new("buildah").args(["rmi", "-f", image]).output();
        }
    }
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("ws");
    let name = format!("bench-boot-{}", std::process::id());
    demo(&root, &name);
    let t = Instant::now();
    let (ok, _, err) = lb(&root, &["build", "//compute/netboot"], &[]);
    assert!(ok, "layerbuild build //compute/netboot failed:\n{err}");
    println!(
        "built //compute/netboot (the demo to its netboot layer, with one boot) in {:.0} s",
        t.elapsed().as_secs_f64()
    );
    let kvm_usable = Path::new("/dev/kvm").exists();
    let pvm = Path::new("/sys/module/kvm_pvm").exists();
    println!(
        "\n| accel | QEMU start -> boot tests done (median of {RUNS}; min-max) | guest uptime at its default target | `layerbuild boot` whole |"
    );
    println!("|---|---|---|---|");
    for accel in ["kvm", "tcg"] {
        if accel == "kvm" && !kvm_usable {
            println!("| kvm | not measurable here: no /dev/kvm | | |");
            continue;
        }
        if accel == "kvm" && pvm {
            println!(
                "| kvm | not measurable here: this host's KVM is PVM, which boots only kernels built for it (a Debian kernel hangs) | | |"
            );
            continue;
        }
        let mut runs = vec![];
        for _ in 0..RUNS {
            match boot_once(&root, accel) {
                Ok(r) => runs.push(r),
                Err(e) => {
                    println!(
                        "| {accel} | failed: {} | | |",
                        e.lines().next().unwrap_or("")
                    );
                    eprintln!("{e}");
                    break;
                }
            }
        }
        if runs.len() < RUNS {
            continue;
        }
        let done: Vec<f64> = runs.iter().map(|r| r.0).collect();
        let (lo, hi) = (
            done.iter().cloned().fold(f64::INFINITY, f64::min),
            done.iter().cloned().fold(0.0, f64::max),
        );
        println!(
            "| {accel} | {:.1} s ({lo:.1}-{hi:.1}) | {:.1} s | {:.1} s |",
            median(done),
            median(runs.iter().map(|r| r.1).collect()),
            median(runs.iter().map(|r| r.2).collect()),
        );
    }
    clean(&name);
}

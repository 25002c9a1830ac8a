//! Several architectures from one DAG (`[build] architectures`): a busybox
//! chain with an Ansible play is built for x86_64 and for aarch64 (under
//! qemu-user-static through binfmt_misc) with real buildah; each
//! architecture has its own digests and images, its image tests run under
//! emulation, a layer restricted to x86_64 is left out of aarch64, and a
//! release promoted to Debian's docker-registry on 127.0.0.1 is a manifest
//! list of both content tags.
//!
//! Needs root, buildah, ansible, skopeo, docker-registry, qemu-user-static
//! registered in binfmt_misc and Debian's aarch64 busybox-static unpacked
//! by `scripts/install-deps.sh`: a missing one fails the test, never skips it.

mod common;

use std::process::Command;

use common::registry::{Registry, skopeo_digest};
use common::{Edit, TestWs, require_buildah};

/// Fails (never skips) when aarch64 programs cannot run here.
fn require_emulation() {
    let entry =
        std::fs::read_to_string("/proc/sys/fs/binfmt_misc/qemu-aarch64").unwrap_or_default();
    assert!(
        entry.starts_with("enabled"),
        "this test needs qemu-user-static registered in binfmt_misc for aarch64: run scripts/install-deps.sh"
    );
    assert!(
        std::path::Path::new("/usr/local/lib/layerbuild/busybox/busybox-aarch64").exists(),
        "this test needs Debian's aarch64 busybox-static unpacked by scripts/install-deps.sh"
    );
}

fn image_arch(image: &str) -> String {
    let out = Command::new("buildah")
        .args([
            "inspect",
            "--type",
            "image",
            "--format",
            "{{.OCIv1.Architecture}}",
            image,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn skopeo_raw(reference: &str) -> serde_json::Value {
    let out = Command::new("skopeo")
        .args([
            "inspect",
            "--tls-verify=false",
            "--raw",
            &format!("docker://{reference}"),
        ])
        .output()
        .expect("this test needs skopeo");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The label → (digest, image name) of one architecture's build report.
fn layers(report: &serde_json::Value) -> std::collections::BTreeMap<String, (String, String)> {
    report["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["label"].as_str().unwrap().to_string(),
                (
                    l["digest"].as_str().unwrap().to_string(),
                    l["image_name"].as_str().unwrap_or_default().to_string(),
                ),
            )
        })
        .collect()
}

#[test]
fn a_chain_is_built_for_two_architectures_and_released_as_a_manifest_list() {
    require_buildah();
    require_emulation();
    let registry = Registry::start();
    let ws = TestWs::new("multiarch");
    ws.append(
        "Layerfile.toml",
        &format!(
            "\n[cache]\nregistry = \"{}\"\ntls_verify = false\n",
            registry.url()
        ),
    );

    // One build covers both architectures, each in its own report.
    let r = ws.lb(&["build", "--json", "//..."]).ok().json();
    let builds = r["builds"].as_array().expect("one report per architecture");
    assert_eq!(builds.len(), 2, "{r}");
    assert_eq!(builds[0]["arch"], "x86_64");
    assert_eq!(builds[1]["arch"], "aarch64");
    let x86 = layers(&builds[0]);
    let arm = layers(&builds[1]);
    assert_eq!(
        x86.keys().collect::<Vec<_>>(),
        ["//base/os", "//compute/compute", "//compute/x86only"]
    );
    // The x86_64-only layer is left out of aarch64.
    assert_eq!(
        arm.keys().collect::<Vec<_>>(),
        ["//base/os", "//compute/compute"]
    );
    assert_eq!(builds[1]["built"], 2);
    assert_eq!(builds[1]["pushed"], 2);
    // The architecture is an input: every digest differs.
    for label in arm.keys() {
        assert_ne!(x86[label].0, arm[label].0, "{label}");
    }
    // Each image has its architecture, and what ran in it (the run
    // command, the play, the image tests in the report) ran under it.
    for (label, arch) in [("//base/os", "amd64"), ("//compute/compute", "amd64")] {
        assert_eq!(image_arch(&x86[label].1), arch);
    }
    for label in arm.keys() {
        assert_eq!(image_arch(&arm[label].1), "arm64", "{label}");
    }
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "c=$(buildah from --arch arm64 {}) && buildah run --isolation chroot $c cat /etc/built-on /etc/compute; buildah rm $c >/dev/null",
            arm["//compute/compute"].1
        ))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "aarch64\narch=aarch64\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tests = &builds[1]["layers"][1]["tests"];
    assert_eq!(tests[0]["passed"], true, "{tests}");

    // Nothing to do the second time, for either architecture.
    let again = ws.lb(&["build", "--json", "//..."]).ok().json();
    for b in again["builds"].as_array().unwrap() {
        assert_eq!(b["built"], 0, "{b}");
    }
    // --arch narrows commands to one architecture; a layer not built for
    // it is named as such.
    let one = ws
        .lb(&["--arch", "aarch64", "hash", "--json", "//compute/compute"])
        .ok()
        .json();
    assert_eq!(one["digest"], arm["//compute/compute"].0.as_str());
    let refused = ws.lb(&["--arch", "aarch64", "build", "//compute/x86only"]);
    assert_eq!(refused.code, 2, "{}", refused.stderr);
    assert!(
        refused
            .stderr
            .contains("//compute/x86only is not built for aarch64"),
        "{}",
        refused.stderr
    );

    // The release: a manifest list of the two content tags.
    let url = registry.url();
    let dry = ws
        .lb(&[
            "promote",
            "//compute/compute",
            "--to",
            "2026.12",
            "--dry-run",
            "--json",
        ])
        .ok()
        .json();
    assert_eq!(dry["status"], "would_promote", "{dry}");
    let p = ws
        .lb(&["promote", "//compute/compute", "--to", "2026.12", "--json"])
        .ok()
        .json();
    assert_eq!(p["status"], "promoted", "{p}");
    let release = format!("{url}/compute/compute:2026.12");
    let list = skopeo_raw(&release);
    let entries: Vec<(String, String)> = list["manifests"]
        .as_array()
        .expect("the release is a manifest list")
        .iter()
        .map(|e| {
            (
                e["platform"]["architecture"].as_str().unwrap().to_string(),
                e["digest"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let x86_content = format!("{url}/compute/compute:{}", x86["//compute/compute"].0);
    let arm_content = format!("{url}/compute/compute:{}", arm["//compute/compute"].0);
    assert_eq!(
        entries,
        [
            ("amd64".to_string(), skopeo_digest(&x86_content)),
            ("arm64".to_string(), skopeo_digest(&arm_content)),
        ]
    );
    assert_eq!(p["manifest_digest"], skopeo_digest(&release).as_str());
    // Recorded per architecture.
    let rel = ws.lb(&["releases", "--json"]).ok().json();
    let archs: Vec<&str> = rel["releases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["arch"].as_str().unwrap())
        .collect();
    assert_eq!(archs.len(), 2, "{rel}");
    assert!(
        archs.contains(&"x86_64") && archs.contains(&"aarch64"),
        "{rel}"
    );
    // Again: nothing to do.
    let same = ws
        .lb(&["promote", "//compute/compute", "--to", "2026.12", "--json"])
        .ok()
        .json();
    assert_eq!(same["status"], "up_to_date", "{same}");

    // A change to the play: the release holds other images of both
    // architectures and moves only with --force, naming each.
    ws.write(
        "config/site.yml",
        &ws.read("config/site.yml").edit("arch=", "arch-"),
    );
    ws.write(
        "Layerfile.toml",
        &ws.read("Layerfile.toml").edit(
            "grep -qx \\\"arch=$(uname -m)\\\"",
            "grep -qx \\\"arch-$(uname -m)\\\"",
        ),
    );
    ws.lb(&["build", "//compute/compute"]).ok();
    let held = ws.lb(&["promote", "//compute/compute", "--to", "2026.12"]);
    assert_eq!(held.code, 1, "{}", held.stderr);
    assert!(
        held.stderr.contains("holds other images"),
        "{}",
        held.stderr
    );
    assert!(held.stderr.contains("aarch64: "), "{}", held.stderr);
    let moved = ws
        .lb(&[
            "promote",
            "//compute/compute",
            "--to",
            "2026.12",
            "--force",
            "--json",
        ])
        .ok()
        .json();
    assert_eq!(moved["status"], "promoted", "{moved}");
    assert_eq!(
        moved["architectures"][1]["previous"],
        arm["//compute/compute"].0.as_str(),
        "{moved}"
    );
}

#[test]
fn bad_architecture_declarations_name_the_line() {
    // Validation only: no build.
    for (edit_from, edit_to, message) in [
        (
            "architectures = [\"x86_64\", \"aarch64\"]",
            "architectures = [\"x86_64\", \"sparc\"]",
            "unknown architecture 'sparc'",
        ),
        (
            "architectures = [\"x86_64\"]\nrun = [\"echo x86",
            "architectures = [\"x86_64\"]\noutputs = [{ format = \"squashfs\", path = \"out/x.squashfs\" }]\nrun = [\"echo x86",
            "",
        ),
    ] {
        let ws = TestWs::new("multiarch");
        ws.write(
            "Layerfile.toml",
            &ws.read("Layerfile.toml").edit(edit_from, edit_to),
        );
        let r = ws.lb(&["ls"]);
        if message.is_empty() {
            // One architecture: an output without {arch} is fine.
            assert_eq!(r.code, 0, "{}", r.stderr);
        } else {
            assert_eq!(r.code, 2, "{}", r.stderr);
            assert!(r.stderr.contains(message), "{}", r.stderr);
            assert!(r.stderr.contains("Layerfile.toml:"), "{}", r.stderr);
        }
    }
    // A child built for an architecture its parent is not.
    let ws = TestWs::new("multiarch");
    ws.append(
        "Layerfile.toml",
        "\n[layers.\"compute/armchild\"]\nparent = \"//compute/x86only\"\narchitectures = [\"aarch64\"]\nrun = [\"true\"]\n",
    );
    let r = ws.lb(&["ls"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains(
            "//compute/armchild is built for aarch64, but its parent //compute/x86only is not"
        ),
        "{}",
        r.stderr
    );
    // Outputs of a layer built for both must name {arch}.
    let ws = TestWs::new("multiarch");
    ws.write(
        "Layerfile.toml",
        &ws.read("Layerfile.toml").edit(
            "tests = [\"grep -qx",
            "outputs = [{ format = \"squashfs\", path = \"out/compute.squashfs\" }]\ntests = [\"grep -qx",
        ),
    );
    let r = ws.lb(&["ls"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("without {arch}"), "{}", r.stderr);
    // Boot tests run on x86_64 only.
    let ws = TestWs::new("multiarch");
    ws.write(
        "Layerfile.toml",
        &ws.read("Layerfile.toml").edit(
            "tests = [\"grep -qx",
            "boot_tests = [\"true\"]\ntests = [\"grep -qx",
        ),
    );
    let r = ws.lb(&["ls"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("x86_64 virtual machine only"),
        "{}",
        r.stderr
    );
}

#[test]
fn a_layer_of_two_architectures_is_published_once_per_architecture() {
    require_buildah();
    require_emulation();
    let moto = common::moto::Moto::start();
    let mut ws = TestWs::new("multiarch");
    // A stand-in kernel and initramfs, naming the architecture they were
    // made under.
    ws.write(
        "Layerfile.toml",
        &ws.read("Layerfile.toml").edit(
            "run = [\"uname -m > /etc/built-on\"]",
            "run = [\"uname -m > /etc/built-on\", \"mkdir -p /boot && uname -m > /boot/vmlinuz-1 && echo i > /boot/initrd.img-1\"]",
        ),
    );
    ws.append(
        "Layerfile.toml",
        &format!(
            "\n[publish.s3]\nendpoint = \"{}\"\nbucket = \"nodes\"\nprefix = \"site\"\nregion = \"us-east-1\"\n",
            moto.endpoint()
        ),
    );
    let tools = common::moto::tools();
    ws.env.push((
        "PATH".into(),
        format!("{}:{}", tools.display(), std::env::var("PATH").unwrap()),
    ));
    for (k, v) in [
        ("AWS_ACCESS_KEY_ID", "AKIAMULTIARCH0001"),
        ("AWS_SECRET_ACCESS_KEY", "mUlTiArChSeCrEt"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
        ("AWS_CONFIG_FILE", "/nonexistent/aws-config"),
        (
            "AWS_SHARED_CREDENTIALS_FILE",
            "/nonexistent/aws-credentials",
        ),
    ] {
        ws.env.push((k.into(), v.into()));
    }
    let aws = |args: &[&str]| -> String {
        let mut c = Command::new(tools.join("aws"));
        c.args(["--endpoint-url", &moto.endpoint()]).args(args);
        for (k, v) in &ws.env {
            c.env(k, v);
        }
        let out = c.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    aws(&["s3api", "create-bucket", "--bucket", "nodes"]);
    let b = ws.lb(&["build", "--json", "//base/os"]).ok().json();
    let digests: Vec<String> = b["builds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["layers"][0]["digest"].as_str().unwrap().to_string())
        .collect();

    let p = ws
        .lb(&["publish", "//base/os", "--release", "stable", "--json"])
        .ok()
        .json();
    let pubs = p["publications"].as_array().expect("one per architecture");
    assert_eq!(pubs.len(), 2, "{p}");
    for (pub_, (arch, digest)) in pubs
        .iter()
        .zip([("x86_64", &digests[0]), ("aarch64", &digests[1])])
    {
        assert_eq!(pub_["arch"], arch, "{p}");
        assert_eq!(pub_["status"], "published", "{p}");
        // Each architecture's pointer names its own by-digest kernel,
        // made under that architecture.
        let release = aws(&[
            "s3",
            "cp",
            &format!("s3://nodes/site/stable/{arch}/release.json"),
            "-",
        ]);
        let release: serde_json::Value = serde_json::from_str(&release).unwrap();
        assert_eq!(release["digest"], digest.as_str(), "{release}");
        let kernel = aws(&[
            "s3",
            "cp",
            &format!("s3://nodes/site/by-digest/{digest}/{arch}/vmlinuz"),
            "-",
        ]);
        assert_eq!(kernel.trim(), arch);
    }
    // Both recorded, each with its architecture.
    let rel = ws.lb(&["releases", "stable", "--json"]).ok().json();
    let mut archs: Vec<&str> = rel["releases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["arch"].as_str().unwrap())
        .collect();
    archs.sort();
    assert_eq!(archs, ["aarch64", "x86_64"], "{rel}");
    // Again: nothing to do for either.
    let again = ws
        .lb(&["publish", "//base/os", "--release", "stable", "--json"])
        .ok()
        .json();
    for p in again["publications"].as_array().unwrap() {
        assert_eq!(p["status"], "up_to_date", "{p}");
    }
}

//! `publish`: a built layer's netboot export in an S3 bucket, against
//! moto's S3 server on 127.0.0.1 and the real `aws` command line (both
//! pinned in `target/tools/moto`, from scripts/install-deps.sh), with a
//! layer built by buildah: a busybox layer with a stand-in kernel and
//! initramfs in its `/boot`.
//!
//! Every `aws` the binary runs goes through a wrapper that logs its
//! arguments (so a test can say nothing was uploaded) and can kill
//! layerbuild as a given upload starts (a publish interrupted there).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::moto::{Moto, tools};
use common::{Edit, TestWs, require_buildah};
use sha2::Digest as _;

const BUCKET: &str = "node-images";
const PREFIX: &str = "site/nodes";
const KEY_ID: &str = "AKIAPUBLISHTEST0001";
/// Never to appear in any output, log or cache file.
const SECRET: &str = "pUbLiShSeCrEt/9f3a7c1e5b2d4086aa";

/// A workspace whose `//uan/uan` is bootable and publishes to `moto`,
/// with the AWS credentials in its environment, and `aws` wrapped.
struct Site {
    ws: TestWs,
    moto: Moto,
    /// The wrapper's log: one line of arguments per `aws` run.
    log: PathBuf,
    /// Where the wrapper reads the text that, found in its arguments,
    /// makes it kill layerbuild.
    kill_on: PathBuf,
    /// Everything every run printed.
    said: String,
}

impl Site {
    fn new() -> Site {
        require_buildah();
        let moto = Moto::start();
        let mut ws = TestWs::new("chain");
        let lf = ws.read("Layerfile.toml").edit(
            "scripts = [\"scripts/uan.sh\"]",
            "scripts = [\"scripts/uan.sh\"]\nrun = [\"mkdir -p /boot && echo who=uan > /boot/vmlinuz-1 && echo i > /boot/initrd.img-1\"]\nboot = { cmdline = \"console=ttyS0\" }",
        );
        ws.write("Layerfile.toml", &lf);
        ws.append(
            "Layerfile.toml",
            &format!(
                "\n[publish.s3]\nendpoint = \"{}\"\nbucket = \"{BUCKET}\"\nprefix = \"{PREFIX}\"\nregion = \"us-east-1\"\n",
                moto.endpoint()
            ),
        );
        let bin = ws.root.parent().unwrap().join("fake-bin");
        std::fs::create_dir_all(&bin).unwrap();
        let log = bin.join("aws.log");
        let kill_on = bin.join("kill-on");
        std::fs::write(
            bin.join("aws"),
            format!(
                "#!/bin/sh\necho \"$*\" >> {log}\nif [ -s {kill} ] && case \"$*\" in *\"$(cat {kill})\"*) true ;; *) false ;; esac; then kill -9 $PPID; exit 1; fi\nexec {aws} \"$@\"\n",
                log = log.display(),
                kill = kill_on.display(),
                aws = tools().join("aws").display()
            ),
        )
        .unwrap();
        let exec = <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o755);
        std::fs::set_permissions(bin.join("aws"), exec).unwrap();
        ws.env.push((
            "PATH".into(),
            format!("{}:{}", bin.display(), std::env::var("PATH").unwrap()),
        ));
        for (k, v) in aws_env() {
            ws.env.push((k.into(), v.into()));
        }
        let site = Site {
            ws,
            moto,
            log,
            kill_on,
            said: String::new(),
        };
        site.aws(&["s3api", "create-bucket", "--bucket", BUCKET]);
        site
    }

    /// Runs the real binary, keeping what it said.
    fn lb(&mut self, args: &[&str]) -> common::Run {
        let r = self.ws.lb(args);
        self.said.push_str(&r.stdout);
        self.said.push_str(&r.stderr);
        r
    }

    /// `aws ARGS` on the server (not through the wrapper); stdout.
    fn aws(&self, args: &[&str]) -> Vec<u8> {
        let out = Command::new(tools().join("aws"))
            .args(args)
            .args(["--endpoint-url", &self.moto.endpoint()])
            .envs(aws_env())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "aws {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    fn keys(&self) -> Vec<String> {
        let out = self.aws(&[
            "s3api",
            "list-objects-v2",
            "--bucket",
            BUCKET,
            "--output",
            "json",
        ]);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let mut keys: Vec<String> = v["Contents"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|o| o["Key"].as_str().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default();
        keys.sort();
        keys
    }

    fn get(&self, key: &str) -> Vec<u8> {
        self.aws(&["s3", "cp", &format!("s3://{BUCKET}/{key}"), "-"])
    }

    fn pointer(&self, release: &str) -> serde_json::Value {
        serde_json::from_slice(&self.get(&format!("{PREFIX}/{release}/x86_64/release.json")))
            .unwrap()
    }

    /// The uploads of local files `aws` was asked for since the last call.
    fn uploads(&self) -> Vec<String> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let _ = std::fs::remove_file(&self.log);
        text.lines()
            .filter(|l| l.starts_with("s3 cp /"))
            .map(str::to_string)
            .collect()
    }

    /// Asserts the release's pointer and script name only present objects
    /// holding the bytes they say.
    fn assert_whole(&self, release: &str, digest: &str) {
        self.assert_pointer(release, digest);
        let ipxe =
            String::from_utf8(self.get(&format!("{PREFIX}/{release}/x86_64/boot.ipxe"))).unwrap();
        assert!(
            ipxe.contains(&format!("kernel ../../by-digest/{digest}/x86_64/vmlinuz")),
            "{ipxe}"
        );
    }

    /// Asserts the release's pointer names `digest`'s objects, present and
    /// holding the bytes it says.
    fn assert_pointer(&self, release: &str, digest: &str) {
        let p = self.pointer(release);
        assert_eq!(p["digest"], digest, "{p}");
        let files = p["files"].as_object().unwrap();
        let names: Vec<&str> = files.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            ["boot.json", "initramfs.img", "rootfs.squashfs", "vmlinuz"]
        );
        for (name, f) in files {
            let key = f["key"].as_str().unwrap();
            assert_eq!(
                key,
                format!("{PREFIX}/by-digest/{digest}/x86_64/{name}"),
                "{p}"
            );
            let bytes = self.get(key);
            assert_eq!(bytes.len() as u64, f["bytes"].as_u64().unwrap(), "{key}");
            assert_eq!(sha256(&bytes), f["sha256"].as_str().unwrap(), "{key}");
        }
        // boot.json, as published, names the same kernel bytes.
        let boot: serde_json::Value = serde_json::from_slice(
            &self.get(&format!("{PREFIX}/by-digest/{digest}/x86_64/boot.json")),
        )
        .unwrap();
        assert_eq!(boot["digest"], digest);
        assert_eq!(
            boot["files"]["vmlinuz"]["sha256"],
            files["vmlinuz"]["sha256"]
        );
        assert_eq!(
            boot["files"]["rootfs.squashfs"]["sha256"],
            files["rootfs.squashfs"]["sha256"]
        );
    }
}

fn aws_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("AWS_ACCESS_KEY_ID", KEY_ID),
        ("AWS_SECRET_ACCESS_KEY", SECRET),
        ("AWS_DEFAULT_REGION", "us-east-1"),
        ("AWS_CONFIG_FILE", "/nonexistent/aws-config"),
        (
            "AWS_SHARED_CREDENTIALS_FILE",
            "/nonexistent/aws-credentials",
        ),
    ]
}

fn sha256(b: &[u8]) -> String {
    sha2::Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

fn statuses(r: &serde_json::Value) -> Vec<String> {
    r["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            format!(
                "{}={}",
                o["name"].as_str().unwrap(),
                o["status"].as_str().unwrap()
            )
        })
        .collect()
}

/// Files under `dir`, recursively, as bytes (the cache, its logs).
fn every_file(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(|e| (e.path().to_path_buf(), std::fs::read(e.path()).unwrap()))
        .collect()
}

/// One layer built once, published through every case the issue names:
/// the objects listed and their checksums checked; a re-publish uploads
/// nothing; a second release shares the by-digest objects; a publish
/// killed mid-upload leaves the old release whole and a re-run finishes
/// it; credentials appear in no output, log or cache file.
#[test]
fn publish_uploads_once_points_last_and_survives_a_kill() {
    let mut site = Site::new();
    site.lb(&["build", "//uan/uan"]).ok();
    let old = site.ws.digests()["//uan/uan"].clone();

    // Published: four by-digest objects, then the two pointers.
    let r = site
        .lb(&["publish", "//uan/uan", "--release", "stable", "--json"])
        .ok()
        .json();
    assert_eq!(r["status"], "published", "{r}");
    assert_eq!(r["digest"], old.as_str());
    assert_eq!(
        statuses(&r),
        [
            "vmlinuz=uploaded",
            "initramfs.img=uploaded",
            "rootfs.squashfs=uploaded",
            "boot.json=uploaded"
        ]
    );
    let by = |d: &str, n: &str| format!("{PREFIX}/by-digest/{d}/x86_64/{n}");
    let rel = |r: &str, n: &str| format!("{PREFIX}/{r}/x86_64/{n}");
    let mut want = vec![
        by(&old, "boot.json"),
        by(&old, "initramfs.img"),
        by(&old, "rootfs.squashfs"),
        by(&old, "vmlinuz"),
        rel("stable", "boot.ipxe"),
        rel("stable", "release.json"),
    ];
    want.sort();
    assert_eq!(site.keys(), want);
    site.assert_whole("stable", &old);
    assert_eq!(site.get(&by(&old, "vmlinuz")), b"who=uan\n");
    // The pointer went last.
    let uploads = site.uploads();
    assert!(
        uploads.last().unwrap().contains("release.json"),
        "{uploads:#?}"
    );
    assert_eq!(uploads.len(), 6, "{uploads:#?}");

    // Again: nothing uploaded, nothing recorded.
    let again = site
        .lb(&["publish", "//uan/uan", "--release", "stable", "--json"])
        .ok()
        .json();
    assert_eq!(again["status"], "up_to_date", "{again}");
    assert!(statuses(&again).iter().all(|s| s.ends_with("=present")));
    assert_eq!(site.uploads(), Vec::<String>::new());

    // A second release shares the by-digest objects: only its pointers are written.
    let next = site
        .lb(&["publish", "//uan/uan", "--release", "next", "--json"])
        .ok()
        .json();
    assert_eq!(next["status"], "published", "{next}");
    assert!(statuses(&next).iter().all(|s| s.ends_with("=present")));
    let uploads = site.uploads();
    assert_eq!(uploads.len(), 2, "{uploads:#?}");
    assert!(uploads.iter().all(|u| u.contains("/next/x86_64/")));
    site.assert_whole("next", &old);
    assert_eq!(site.keys().len(), 8);

    // A new digest, its publish killed while the root file system uploads:
    // the release still points, whole, at the old digest.
    let lf = site
        .ws
        .read("Layerfile.toml")
        .edit("echo who=uan >", "echo who=uan2 >");
    site.ws.write("Layerfile.toml", &lf);
    site.lb(&["build", "//uan/uan"]).ok();
    let new = site.ws.digests()["//uan/uan"].clone();
    assert_ne!(new, old);
    let stable_ipxe = site.get(&rel("stable", "boot.ipxe"));
    std::fs::write(&site.kill_on, "rootfs.squashfs s3://").unwrap();
    let killed = site.lb(&["publish", "//uan/uan", "--release", "stable"]);
    assert_ne!(killed.code, 0, "{}", killed.stderr);
    site.assert_whole("stable", &old);
    assert_eq!(site.get(&rel("stable", "boot.ipxe")), stable_ipxe);
    assert!(!site.keys().contains(&by(&new, "rootfs.squashfs")));

    // Killed between the script and the pointer: release.json still names
    // the old digest, whole; boot.ipxe the new one, whose objects are all
    // in place and checked before it was written.
    std::fs::write(&site.kill_on, "release.json s3://").unwrap();
    let killed = site.lb(&["publish", "//uan/uan", "--release", "stable"]);
    assert_ne!(killed.code, 0, "{}", killed.stderr);
    site.assert_pointer("stable", &old);
    let ipxe = String::from_utf8(site.get(&rel("stable", "boot.ipxe"))).unwrap();
    assert!(
        ipxe.contains(&by(&new, "vmlinuz")[PREFIX.len() + 1..]),
        "{ipxe}"
    );
    for n in ["vmlinuz", "initramfs.img", "rootfs.squashfs", "boot.json"] {
        assert!(site.keys().contains(&by(&new, n)), "{n}");
    }

    // Run again: it finishes, uploading only what is missing.
    std::fs::remove_file(&site.kill_on).unwrap();
    site.uploads();
    let done = site
        .lb(&["publish", "//uan/uan", "--release", "stable", "--json"])
        .ok()
        .json();
    assert_eq!(done["status"], "published", "{done}");
    assert_eq!(done["previous"], old.as_str());
    assert!(
        statuses(&done).iter().all(|s| s.ends_with("=present")),
        "{done}"
    );
    site.assert_whole("stable", &new);
    site.assert_whole("next", &old);
    let uploads = site.uploads();
    assert!(
        uploads.iter().all(|u| !u.contains("by-digest")),
        "{uploads:#?}"
    );

    // Recorded beside promotions.
    let rels = site.lb(&["releases", "--json"]).ok().json();
    let rows = rels["releases"].as_array().unwrap();
    assert_eq!(rows.len(), 3, "{rels}");
    assert_eq!(rows[0]["digest"], new.as_str());
    assert_eq!(
        rows[0]["reference"],
        format!("s3://{BUCKET}/{PREFIX}/stable/x86_64/release.json")
    );

    // A failure says what went wrong, not the credentials.
    let lf = site.ws.read("Layerfile.toml").edit(
        &format!("bucket = \"{BUCKET}\""),
        "bucket = \"no-such-bucket\"",
    );
    site.ws.write("Layerfile.toml", &lf);
    let failed = site.lb(&["publish", "//uan/uan", "--release", "stable"]);
    assert_ne!(failed.code, 0, "{}\n{}", failed.stdout, failed.stderr);
    assert!(failed.stderr.contains("NoSuchBucket"), "{}", failed.stderr);

    assert!(!site.said.contains(SECRET));
    assert!(!site.said.contains(KEY_ID));
    for (path, bytes) in every_file(site.ws.root.parent().unwrap()) {
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains(SECRET), "{}", path.display());
    }
}

/// The refusals come before any S3 request (the recording backend, no
/// buildah, no server): no `[publish.s3]`, a bad release name, a layer
/// not built; and the Layerfile has no room for credentials.
#[test]
fn publish_needs_a_bucket_a_release_name_and_a_built_layer() {
    let ws = TestWs::recorded("chain");
    let r = ws.lb(&["publish", "//base/os", "--release", "stable", "--json"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    let e = &r.json()["error"];
    assert!(
        e["message"].as_str().unwrap().contains("[publish.s3]"),
        "{e}"
    );

    let with = |extra: &str| {
        let ws = TestWs::recorded("chain");
        ws.append(
            "Layerfile.toml",
            &format!("\n[publish.s3]\nbucket = \"node-images\"\n{extra}"),
        );
        ws
    };
    let ws = with("");
    for (release, says) in [
        ("a/b", "not a valid release name"),
        ("by-digest", "content-addressed"),
        ("stable", "is not built"),
    ] {
        let r = ws.lb(&["publish", "//base/os", "--release", release]);
        assert_eq!(r.code, 2, "{release}: {}", r.stderr);
        assert!(r.stderr.contains(says), "{release}: {}", r.stderr);
    }
    let r = with("secret_access_key = \"x\"\n").lb(&["ls"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("secret_access_key"), "{}", r.stderr);
}

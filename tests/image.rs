//! The image lifecycle on the busybox chain, with real buildah, tar,
//! mksquashfs and skopeo: tests inside built images, exports and declared
//! outputs (written atomically, skipped when up to date), and reproducible
//! commits across storage roots.

mod common;

use std::path::Path;
use std::process::Command;

use common::{Edit, TestWs, require_buildah};

fn hsn_with(ws: &TestWs, extra: &str) {
    let lf = ws.read("Layerfile.toml").replacen(
        "run = [\"echo hsn > /etc/layer-hsn\"]\n",
        &format!("run = [\"echo hsn > /etc/layer-hsn\"]\n{extra}\n"),
        1,
    );
    ws.write("Layerfile.toml", &lf);
}

fn tool(program: &str, args: &[&str]) -> String {
    let mut out = Command::new(program).args(args).output().unwrap();
    // A buildah listing fails when a parallel test removes an entry meanwhile.
    for _ in 0..10 {
        if out.status.success() || program != "buildah" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
        out = Command::new(program).args(args).output().unwrap();
    }
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn image_names() -> String {
    tool("buildah", &["images", "--format", "{{.Name}}:{{.Tag}}"])
}

#[test]
fn a_failing_image_test_fails_the_layer_and_nothing_below_it_builds() {
    require_buildah();
    let ws = TestWs::new("chain");
    hsn_with(
        &ws,
        "tests = [\"test -f /etc/layer-hsn\", \"echo checking-hsn; grep -q nope /etc/layer-hsn\"]",
    );
    let junit = ws.path("reports/junit.xml");
    let run = ws.lb(&[
        "build",
        "--json",
        "--junit",
        junit.to_str().unwrap(),
        "//uan/uan",
    ]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let r = run.json();
    // The tests the build ran, for a CI test tab: one suite for the layer
    // that ran tests, the failure with its output.
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert_eq!(xml.matches("<testsuite ").count(), 1, "{xml}");
    assert!(
        xml.contains("<testsuite name=\"//base/hsn@test\" tests=\"2\" failures=\"1\""),
        "{xml}"
    );
    assert!(
        xml.contains("name=\"echo checking-hsn; grep -q nope /etc/layer-hsn\""),
        "{xml}"
    );
    assert!(xml.contains("(exit status: 1)\">checking-hsn\n"), "{xml}");
    assert_eq!(r["layers"][1]["tests"][0]["passed"], true);
    assert_eq!(r["layers"][1]["tests"][1]["passed"], false);
    assert_eq!(TestWs::labels_with(&r, "failed"), vec!["//base/hsn"]);
    assert_eq!(TestWs::labels_with(&r, "skipped"), vec!["//uan/uan"]);
    let hsn = &r["layers"][1];
    let err = hsn["error"].as_str().unwrap();
    assert!(
        err.contains("1 of 2 image tests failed") && err.contains("grep -q nope"),
        "{err}"
    );
    // Not cached; the image is kept under a -failed name, the normal name is gone.
    let digest = hsn["digest"].as_str().unwrap();
    assert!(!ws.cached_digests().contains(&digest.to_string()));
    let names = image_names();
    let base = format!(
        "localhost/layerbuild/{}/base/hsn:{}",
        ws.name,
        &digest[..12]
    );
    assert!(names.contains(&format!("{base}-failed")), "{names}");
    assert!(!names.lines().any(|n| n == base), "{names}");
    // What failed can be looked at: `ls --failed` lists the kept image and
    // `debug` opens a container from it (not from an older good image).
    let failed = ws.lb(&["ls", "--failed", "--json"]).ok().json();
    let kept = failed.to_string();
    assert!(kept.contains(&format!("{base}-failed")), "{failed}");
    let d = ws.lb(&["debug", "//base/hsn", "--", "cat", "/etc/layer-hsn"]);
    assert_eq!(d.code, 0, "{}", d.stderr);
    assert_eq!(d.stdout.trim(), "hsn");
    assert!(d.stderr.contains("failed its image tests"), "{}", d.stderr);
    // The log says which test failed, with its output.
    let log = std::fs::read_to_string(ws.path(hsn["log"].as_str().unwrap())).unwrap();
    assert!(log.contains("## test 2/2 FAILED"), "{log}");
    assert!(log.contains("checking-hsn"), "{log}");
    assert!(log.contains("## test 1/2 passed"), "{log}");

    // Fixing the test changes the digest (tests are inputs) and builds the chain.
    hsn_with(&ws, "");
    let lf = ws
        .read("Layerfile.toml")
        .edit("grep -q nope", "grep -q hsn");
    ws.write("Layerfile.toml", &lf);
    let r = ws.lb(&["build", "--json", "//uan/uan"]).ok().json();
    assert_eq!(
        TestWs::labels_with(&r, "built"),
        vec!["//base/hsn", "//uan/uan"]
    );

    // `test` re-runs them; --all includes the ancestors.
    let t = ws.lb(&["test", "--all", "--json", "//uan/uan"]).ok().json();
    let labels: Vec<&str> = t["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["label"].as_str().unwrap())
        .collect();
    assert_eq!(labels, vec!["//base/os", "//base/hsn", "//uan/uan"]);
    assert_eq!(t["passed"], 2);
    assert_eq!(t["failed"], 0);
    ws.lb(&["test", "//base/hsn", "--junit", junit.to_str().unwrap()])
        .ok();
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(
        xml.contains("tests=\"2\" failures=\"0\"") && !xml.contains("<failure"),
        "{xml}"
    );
    let text = ws.lb(&["test", "//base/hsn"]).ok().stdout;
    assert!(
        text.contains("ok    echo checking-hsn; grep -q hsn /etc/layer-hsn"),
        "{text}"
    );

    // Tests are inputs: changing them is a reason to rebuild, and `why` says so.
    let lf = ws.read("Layerfile.toml").edit(
        "grep -q hsn /etc/layer-hsn\"]",
        "grep -q hsn /etc/layer-hsn\", \"true\"]",
    );
    ws.write("Layerfile.toml", &lf);
    let why = ws.lb(&["why", "//base/hsn"]).ok().stdout;
    assert!(
        why.contains("tests commands changed") && why.contains("+ true"),
        "{why}"
    );

    // A layer not built at its current digest cannot be tested.
    ws.append("scripts/uan.sh", "echo changed\n");
    let t = ws.lb(&["test", "//uan/uan"]);
    assert_eq!(t.code, 2, "{}", t.stderr);
    assert!(
        t.stderr.contains("is not built at its current digest"),
        "{}",
        t.stderr
    );
}

#[test]
fn declared_outputs_are_written_then_skipped_while_they_hold_the_digest() {
    require_buildah();
    let ws = TestWs::new("chain");
    hsn_with(
        &ws,
        r#"[[layers."base/hsn".outputs]]
format = "squashfs"
path = "out/hsn.squashfs"
compression = "zstd"

[[layers."base/hsn".outputs]]
format = "rootfs-tar"
path = "out/hsn.tar"

[[layers."base/hsn".outputs]]
format = "oci-archive"
path = "out/hsn-oci.tar"
"#,
    );
    let r = ws.lb(&["build", "--json", "//base/hsn"]).ok().json();
    let statuses: Vec<&str> = r["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, vec!["written"; 3], "{r}");
    let sq = ws.path("out/hsn.squashfs");
    let listing = tool("unsquashfs", &["-l", sq.to_str().unwrap()]);
    assert!(listing.contains("squashfs-root/etc/layer-hsn"), "{listing}");
    let tar = tool("tar", &["-tf", ws.path("out/hsn.tar").to_str().unwrap()]);
    assert!(tar.lines().any(|l| l == "./etc/layer-hsn"), "{tar}");
    let inspect = tool(
        "skopeo",
        &[
            "inspect",
            &format!("oci-archive:{}", ws.path("out/hsn-oci.tar").display()),
        ],
    );
    let digest = r["layers"][1]["digest"].as_str().unwrap();
    assert!(inspect.contains(digest), "{inspect}");

    // A no-op build leaves them alone.
    let r = ws.lb(&["build", "--json", "//base/hsn"]).ok().json();
    assert!(
        r["outputs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|o| o["status"] == "up_to_date"),
        "{r}"
    );
    // A file changed behind our back is written again.
    std::fs::write(ws.path("out/hsn.tar"), "not a tar").unwrap();
    let r = ws.lb(&["build", "--json", "//base/hsn"]).ok().json();
    assert_eq!(r["outputs"][1]["status"], "written", "{r}");
    assert!(
        tool("tar", &["-tf", ws.path("out/hsn.tar").to_str().unwrap()]).contains("./etc/layer-hsn")
    );
    // --no-outputs skips them.
    let r = ws
        .lb(&["build", "--json", "--no-outputs", "//base/hsn"])
        .ok()
        .json();
    assert!(r["outputs"].as_array().unwrap().is_empty(), "{r}");
}

/// A workspace copied to another path with its cache (a CI checkout, a
/// moved directory) reuses its outputs and finds its logs: nothing stored
/// in the cache names the old path.
#[test]
fn a_copied_workspace_reuses_its_outputs_and_finds_its_logs() {
    require_buildah();
    let ws = TestWs::new("chain");
    hsn_with(
        &ws,
        "[[layers.\"base/hsn\".outputs]]\nformat = \"squashfs\"\npath = \"out/hsn.squashfs\"\n",
    );
    let r = ws.lb(&["build", "--json", "//base/hsn"]).ok().json();
    assert_eq!(r["outputs"][0]["status"], "written", "{r}");
    let elsewhere = tempfile::tempdir().unwrap();
    let copy = elsewhere.path().join("checkout");
    let cp = Command::new("cp")
        .arg("-a")
        .arg(&ws.root)
        .arg(&copy)
        .status()
        .unwrap();
    assert!(cp.success());
    // The original goes away: nothing may still point into it.
    std::fs::rename(&ws.root, ws.root.with_extension("moved")).unwrap();
    let run = common::lb_in(&copy, &["build", "--json", "//base/hsn"], &[]);
    let r = run.ok().json();
    assert_eq!(r["built"], 0, "{r}");
    assert_eq!(r["outputs"][0]["status"], "up_to_date", "{r}");
    let log = common::lb_in(&copy, &["log", "//base/hsn"], &[])
        .ok()
        .stdout;
    assert!(log.contains("echo hsn > /etc/layer-hsn"), "{log}");
    std::fs::rename(ws.root.with_extension("moved"), &ws.root).unwrap();
}

#[test]
fn an_interrupted_export_leaves_the_previous_file_whole() {
    require_buildah();
    let mut ws = TestWs::new("chain");
    ws.lb(&["build", "//base/hsn"]).ok();
    let dest = ws.path("out/node.squashfs");
    std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
    std::fs::write(&dest, "the previous image").unwrap();
    // mksquashfs writes part of the image, then dies by SIGKILL.
    let bin = ws.root.join("../fault-bin");
    std::fs::create_dir_all(&bin).unwrap();
    let fake = bin.join("mksquashfs");
    std::fs::write(
        &fake,
        "#!/bin/sh\nprintf 'hsqs-partial' > \"$2\"\nkill -9 $$\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    ws.env.push(("PATH".into(), path));
    let run = ws.lb(&[
        "export",
        "//base/hsn",
        "--format",
        "squashfs",
        "-o",
        dest.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    // Said once, as the error.
    assert!(run.stderr.contains("//base/hsn -> "), "{}", run.stderr);
    assert!(run.stdout.is_empty(), "{}", run.stdout);
    assert_eq!(
        std::fs::read_to_string(&dest).unwrap(),
        "the previous image"
    );
    let left: Vec<_> = std::fs::read_dir(dest.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, vec!["node.squashfs"], "temporary files left behind");
    // The export's mount container is gone too.
    let ctrs = tool("buildah", &["containers", "--format", "{{.ContainerName}}"]);
    assert!(
        !ctrs.contains(&format!("layerbuild-{}-", ws.name)),
        "{ctrs}"
    );

    // With the real mksquashfs it replaces the file.
    ws.env.clear();
    ws.lb(&[
        "export",
        "//base/hsn",
        "--format",
        "squashfs",
        "-o",
        dest.to_str().unwrap(),
    ])
    .ok();
    let listing = tool("unsquashfs", &["-l", dest.to_str().unwrap()]);
    assert!(
        listing.contains("squashfs-root/etc/layer-base"),
        "{listing}"
    );
}

#[test]
fn export_and_push_refuse_bad_input_and_unbuilt_layers() {
    let ws = TestWs::new("chain");
    let run = ws.lb(&["export", "//base/hsn", "-f", "squashfs", "-o", "x.sqfs"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("not built"), "{}", run.stderr);
    assert!(
        run.stderr.contains("layerbuild build //base/hsn"),
        "{}",
        run.stderr
    );
    let run = ws.lb(&["export", "//base/hsn", "-f", "tarball", "-o", "x"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    let run = ws.lb(&[
        "export",
        "//base/hsn",
        "-f",
        "oci-archive",
        "-o",
        "x",
        "--compression",
        "xz",
    ]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("--compression"), "{}", run.stderr);
    let run = ws.lb(&["push", "//no/such", "localhost:1/x"]);
    assert_eq!(run.code, 2, "{}", run.stderr);

    // Bad outputs in the Layerfile: file:line and a hint.
    for (extra, msg) in [
        (
            "[[layers.\"base/hsn\".outputs]]\nformat = \"zip\"\npath = \"o\"",
            "unknown output format 'zip'",
        ),
        (
            "[[layers.\"base/hsn\".outputs]]\nformat = \"squashfs\"",
            "has no path",
        ),
        (
            "[[layers.\"base/hsn\".outputs]]\nformat = \"squashfs\"\npath = \"o\"\ncompression = \"rar\"",
            "unknown squashfs compression",
        ),
        (
            "[[layers.\"base/hsn\".outputs]]\nformat = \"rootfs-tar\"\npath = \"compute-config/x.tar\"",
            "an input of //compute/compute",
        ),
        (
            "[[layers.\"base/hsn\".outputs]]\npush = \"r/x\"\nformat = \"squashfs\"",
            "either format",
        ),
        ("tests = [\" \"]", "empty test command"),
    ] {
        let ws = TestWs::new("chain");
        hsn_with(&ws, extra);
        let run = ws.lb(&["build", "//base/hsn"]);
        assert_eq!(run.code, 2, "{extra}: {}", run.stderr);
        assert!(run.stderr.contains(msg), "{extra}: {}", run.stderr);
        assert!(run.stderr.contains("Layerfile.toml:"), "{}", run.stderr);
        assert!(!ws.db().exists(), "nothing written for bad input");
    }
}

fn image_id(storage: &Path, name: &str) -> String {
    tool(
        "buildah",
        &[
            "--root",
            storage.to_str().unwrap(),
            "--runroot",
            storage.join("run").to_str().unwrap(),
            "images",
            "--no-trunc",
            "--format",
            "{{.Name}}:{{.Tag}} {{.ID}}",
        ],
    )
    .lines()
    .find(|l| l.starts_with(name))
    .unwrap_or_else(|| panic!("no image {name}"))
    .split_whitespace()
    .nth(1)
    .unwrap()
    .to_string()
}

fn drop_storage(storage: &Path) {
    let _ = Command::new("buildah")
        .arg("--root")
        .arg(storage)
        .arg("--runroot")
        .arg(storage.join("run"))
        .args(["rmi", "--all", "--force"])
        .output();
}

/// A failed layer's hint to enter its kept container works with the
/// storage root the build used (plain `buildah run` would look in the
/// default store: "container not known").
#[test]
fn the_kept_container_hint_works_with_another_storage_root() {
    require_buildah();
    let ws = TestWs::new("chain");
    ws.write(
        "Layerfile.toml",
        &ws.read("Layerfile.toml").edit(
            "echo hsn > /etc/layer-hsn",
            "echo hsn > /etc/layer-hsn && false",
        ),
    );
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().join("storage");
    let out = Command::new(env!("CARGO_BIN_EXE_layerbuild"))
        .arg("-C")
        .arg(&ws.root)
        .arg("--storage-root")
        .arg(&storage)
        .args(["build", "//base/hsn"])
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "{said}");
    let line = |after: &str| -> String {
        let at = said
            .find(after)
            .unwrap_or_else(|| panic!("no {after:?} in:\n{said}"));
        said[at + after.len()..]
            .trim_start()
            .lines()
            .next()
            .unwrap()
            .to_string()
    };
    assert!(
        said.contains("enter the kept working container: layerbuild debug //base/hsn\n"),
        "{said}"
    );
    assert!(
        said.contains("the whole log: layerbuild log //base/hsn"),
        "{said}"
    );
    // `debug` finds the kept container in this storage.
    let debug = Command::new(env!("CARGO_BIN_EXE_layerbuild"))
        .arg("-C")
        .arg(&ws.root)
        .arg("--storage-root")
        .arg(&storage)
        .args(["debug", "//base/hsn", "--", "cat", "/etc/layer-hsn"])
        .output()
        .unwrap();
    assert!(
        debug.status.success() && String::from_utf8_lossy(&debug.stdout).contains("hsn"),
        "{}",
        String::from_utf8_lossy(&debug.stderr)
    );
    let enter = line("    or:");
    assert!(enter.contains("CONTAINERS_STORAGE_CONF="), "{enter}");
    // The command as printed, with `true` for the shell: the container is known.
    let run = Command::new("sh")
        .arg("-c")
        .arg(enter.strip_suffix(" sh").unwrap().to_string() + " true")
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{enter}: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let rm = line("remove it:");
    let removed = Command::new("sh").arg("-c").arg(&rm).output().unwrap();
    assert!(
        removed.status.success(),
        "{rm}: {}",
        String::from_utf8_lossy(&removed.stderr)
    );
    drop_storage(&storage);
}

#[test]
fn reproducible_builds_give_the_same_image_on_two_storage_roots() {
    require_buildah();
    let ws = TestWs::new("chain");
    let dir = tempfile::tempdir().unwrap();
    let mut ids = vec![];
    for (i, epoch) in ["1700000000", "1700000000"].iter().enumerate() {
        let storage = dir.path().join(format!("storage{i}"));
        let out = Command::new(env!("CARGO_BIN_EXE_layerbuild"))
            .arg("-C")
            .arg(&ws.root)
            .arg("--storage-root")
            .arg(&storage)
            .args(["build", "--json", "--no-outputs", "//base/hsn"])
            .env("SOURCE_DATE_EPOCH", epoch)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let _ = std::fs::remove_dir_all(ws.path("cache"));
        let name = format!("localhost/layerbuild/{}/base/hsn", ws.name);
        ids.push(image_id(&storage, &name));
        // Files are written at different times in the two builds.
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    for i in 0..2 {
        drop_storage(&dir.path().join(format!("storage{i}")));
    }
    assert_eq!(ids[0], ids[1], "same inputs, same image");

    // `[build] reproducible` is an input: turning it on rebuilds.
    let plain = ws.digests()["//base/hsn"].clone();
    ws.write(
        "Layerfile.toml",
        &ws.read("Layerfile.toml")
            .replacen("[build]\n", "[build]\nreproducible = true\n", 1),
    );
    assert_ne!(ws.digests()["//base/hsn"], plain);
}

/// One workspace built on two storage roots in turn: back on the first, the
/// layer is taken from it with one line saying why, never announced as
/// gone and rebuilt.
#[test]
fn switching_storage_roots_takes_what_each_storage_holds() {
    require_buildah();
    let ws = TestWs::new("chain");
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let on = |storage: &Path| {
        let out = Command::new(env!("CARGO_BIN_EXE_layerbuild"))
            .arg("-C")
            .arg(&ws.root)
            .arg("--storage-root")
            .arg(storage)
            .args(["build", "--json", "//base/hsn"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{stderr}");
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        (json, stderr)
    };
    assert_eq!(on(&a).0["built"], 2);
    assert_eq!(on(&b).0["built"], 2);
    let (again, said) = on(&a);
    assert_eq!(again["built"], 0, "{said}");
    assert_eq!(again["cached"], 2, "{said}");
    assert!(!said.contains("is gone"), "{said}");
    assert!(
        said.contains("adopted") && said.contains("another storage root"),
        "{said}"
    );
    drop_storage(&a);
    drop_storage(&b);
}

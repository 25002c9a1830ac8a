//! `promote` and `releases`: a release tag pointed at the exact image a
//! layer's content tag names in the shared registry, refused for a layer
//! not built, pushed and tested at that digest, and for a release tag
//! holding another digest unless `--force`; every promotion recorded.
//!
//! The refusals and the bookkeeping are logic over the registry interface:
//! they run in this process against the recording backend
//! ([`TestWs::recorded`]: no buildah, no root). One test promotes for real,
//! with buildah and Debian's docker-registry on 127.0.0.1: the release
//! tag's manifest digest is the content tag's, as skopeo sees them, and no
//! blob was uploaded for it.

mod common;

use common::registry::{Registry, skopeo_digest};
use common::{Edit, TestWs, require_buildah};
use layerbuild::executor::Registry as _;
use layerbuild::executor::recording::{Call, Recording};

/// The registry the recorded tests name (the recording backend holds it).
const REG: &str = "registry.example.org:5000/hpc/layers";

fn with_registry(ws: &TestWs, url: &str) {
    ws.append(
        "Layerfile.toml",
        &format!("\n[cache]\nregistry = \"{url}\"\ntls_verify = false\n"),
    );
}

/// The manifest digest `reference` names in the recording's registry.
fn manifest(rec: &Recording, reference: &str) -> Option<String> {
    rec.manifest_digest(reference, false).unwrap()
}

fn copies(rec: &Recording) -> usize {
    rec.calls()
        .iter()
        .filter(|c| matches!(c, Call::CopyTag { .. }))
        .count()
}

/// Gives //base/hsn another digest.
fn change_hsn(ws: &TestWs) {
    ws.write(
        "Layerfile.toml",
        &ws.read("Layerfile.toml")
            .edit("echo hsn > /etc/layer-hsn", "echo hsn2 > /etc/layer-hsn"),
    );
}

#[test]
fn a_release_names_the_tested_image_and_is_recorded() {
    let ws = TestWs::recorded("chain");
    let rec = ws.rec();
    with_registry(&ws, REG);
    let b = ws.lb(&["build", "--json", "//base/hsn"]).ok().json();
    let digest = b["layers"][1]["digest"].as_str().unwrap().to_string();
    let content = format!("{REG}/base/hsn:{digest}");
    let release = format!("{REG}/base/hsn:stable");

    let r = ws
        .lb(&["promote", "//base/hsn", "--to", "stable", "--json"])
        .ok()
        .json();
    assert_eq!(
        (&r["version"], &r["status"]),
        (&1.into(), &"promoted".into()),
        "{r}"
    );
    assert_eq!(r["digest"], digest.as_str());
    assert_eq!(r["reference"], release.as_str());
    assert_eq!(r["source"], content.as_str());
    assert_eq!(r["previous"], serde_json::Value::Null);
    assert!(r["promoted_at"].as_i64().unwrap() > 0);
    // The release tag is a copy of the content tag's manifest, made in
    // the registry: nothing pushed from local storage.
    assert_eq!(manifest(rec, &release), manifest(rec, &content));
    assert_eq!(
        r["manifest_digest"],
        manifest(rec, &content).unwrap().as_str()
    );
    let calls = rec.calls();
    assert!(
        calls.contains(&Call::CopyTag {
            from: content.clone(),
            to: release.clone()
        }),
        "{calls:?}"
    );
    assert!(
        !calls
            .iter()
            .any(|c| matches!(c, Call::Push { reference, .. } if reference == &release)),
        "{calls:?}"
    );

    // Again: nothing to do, nothing recorded.
    let again = ws.lb(&["promote", "//base/hsn", "--to", "stable"]).ok();
    assert!(again.stdout.contains("already is"), "{}", again.stdout);
    assert_eq!(copies(rec), 1);

    // The record, in text and JSON, filtered by layer and by release.
    let l = ws.lb(&["releases", "--json"]).ok().json();
    let rows = l["releases"].as_array().unwrap();
    assert_eq!(l["version"], 1);
    assert_eq!(rows.len(), 1, "{l}");
    assert_eq!(rows[0]["release"], "stable");
    assert_eq!(rows[0]["label"], "//base/hsn");
    assert_eq!(rows[0]["system"], "test");
    assert_eq!(rows[0]["digest"], digest.as_str());
    assert_eq!(rows[0]["reference"], release.as_str());
    assert!(!rows[0]["promoted_by"].as_str().unwrap().is_empty());
    let text = ws.lb(&["releases"]).ok().stdout;
    assert!(text.starts_with("PROMOTED"), "{text}");
    assert!(
        text.contains(&digest[..12]) && !text.contains(&digest),
        "{text}"
    );
    for (filter, n) in [
        ("//base/hsn", 1),
        ("//base/os", 0),
        ("stable", 1),
        ("2026.12", 0),
    ] {
        let l = ws.lb(&["releases", "--json", filter]).ok().json();
        assert_eq!(l["releases"].as_array().unwrap().len(), n, "{filter}: {l}");
    }
    assert!(
        ws.lb(&["releases", "//base/os"])
            .ok()
            .stdout
            .contains("no promotion recorded")
    );
}

#[test]
fn a_release_holding_another_digest_moves_only_with_force() {
    let ws = TestWs::recorded("chain");
    let rec = ws.rec();
    with_registry(&ws, REG);
    let b = ws.lb(&["build", "--json", "//base/hsn"]).ok().json();
    let old = b["layers"][1]["digest"].as_str().unwrap().to_string();
    ws.lb(&["promote", "//base/hsn", "--to", "2026.12"]).ok();
    let release = format!("{REG}/base/hsn:2026.12");
    let held = manifest(rec, &release);
    change_hsn(&ws);
    let b = ws.lb(&["build", "--json", "//base/hsn"]).ok().json();
    let new = b["layers"][1]["digest"].as_str().unwrap().to_string();
    assert_ne!(old, new);

    // Refused, naming the digest it holds, and who put it there.
    let refused = ws.lb(&["promote", "//base/hsn", "--to", "2026.12"]);
    assert_eq!(refused.code, 1, "{}", refused.stderr);
    assert!(
        refused.stderr.contains(&format!("holds digest {old}")),
        "{}",
        refused.stderr
    );
    assert!(
        refused.stderr.contains("(promoted by "),
        "{}",
        refused.stderr
    );
    assert!(
        refused.stderr.contains("hint: --force"),
        "{}",
        refused.stderr
    );
    let j = ws
        .lb(&["promote", "//base/hsn", "--to", "2026.12", "--json"])
        .json();
    assert_eq!(j["error"]["kind"], "refused", "{j}");
    assert_eq!(j["error"]["exit_code"], 1, "{j}");
    assert_eq!(manifest(rec, &release), held);

    // A dry run changes nothing: not the registry, not the record.
    let dry = ws
        .lb(&[
            "promote",
            "//base/hsn",
            "--to",
            "2026.12",
            "--force",
            "--dry-run",
            "--json",
        ])
        .ok()
        .json();
    assert_eq!(dry["status"], "would_promote", "{dry}");
    assert_eq!(dry["previous"], old.as_str());
    assert_eq!(dry["promoted_at"], serde_json::Value::Null);
    assert_eq!(manifest(rec, &release), held);
    assert_eq!(copies(rec), 1);
    let rows = |ws: &TestWs| ws.lb(&["releases", "--json"]).ok().json()["releases"].clone();
    assert_eq!(rows(&ws).as_array().unwrap().len(), 1);
    // A dry run says a refusal as the real one would.
    let dry_refused = ws.lb(&["promote", "//base/hsn", "--to", "2026.12", "-n"]);
    assert_eq!(dry_refused.code, 1, "{}", dry_refused.stderr);

    // --force moves it, and the record says from where.
    let r = ws
        .lb(&[
            "promote",
            "//base/hsn",
            "--to",
            "2026.12",
            "--force",
            "--json",
        ])
        .ok()
        .json();
    assert_eq!(
        (&r["status"], &r["previous"]),
        (&"promoted".into(), &old.as_str().into())
    );
    assert_eq!(
        manifest(rec, &release),
        manifest(rec, &format!("{REG}/base/hsn:{new}"))
    );
    let l = rows(&ws);
    assert_eq!(l.as_array().unwrap().len(), 2);
    assert_eq!(
        (&l[0]["digest"], &l[0]["previous"]),
        (&new.as_str().into(), &old.as_str().into())
    );
    assert!(
        ws.lb(&["releases"])
            .ok()
            .stdout
            .contains(&format!("(was {})", &old[..12])),
    );

    // --digest promotes an older build (a prefix is enough).
    let back = ws
        .lb(&[
            "promote",
            "//base/hsn",
            "--to",
            "2026.12",
            "--digest",
            &old[..10],
            "--force",
            "--json",
        ])
        .ok()
        .json();
    assert_eq!(back["digest"], old.as_str(), "{back}");
    assert_eq!(manifest(rec, &release), held);
}

#[test]
fn an_unbuilt_failed_or_unpushed_layer_is_refused() {
    let ws = TestWs::recorded("chain");
    let rec = ws.rec();
    with_registry(&ws, REG);
    let stable = |label: &str| format!("{REG}/{label}:stable");
    let refusal = |label: &str, said: &str| {
        let run = ws.lb(&["promote", label, "--to", "stable"]);
        assert_eq!(run.code, 1, "{label}: {}", run.stderr);
        assert!(run.stderr.contains(said), "{label}: {}", run.stderr);
        assert!(run.stderr.contains("hint:"), "{label}: {}", run.stderr);
        run
    };
    // Never built.
    refusal("//base/os", "is not built and tested at its current digest");
    // Its build failed (a failure is never cached: steps, image tests or
    // boot tests alike).
    ws.lb(&["build", "//base/hsn"]).ok();
    rec.fail_label("//uan/uan");
    assert_eq!(ws.lb(&["build", "//uan/uan"]).code, 1);
    refusal("//uan/uan", "its last build there failed");
    // Built and tested here, not pushed.
    let run = ws.lb(&[
        "build",
        "--cache-mode",
        "off",
        "--json",
        "//compute/compute",
    ]);
    let digest = run.ok().json()["layers"][2]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    refusal(
        "//compute/compute",
        &format!("is not in the registry: {REG}/compute/compute:{digest} does not exist"),
    );
    // A content tag labelled with another digest is not this layer's image.
    let os = ws.digests()["//base/os"].clone();
    let hsn_content = format!("{REG}/base/hsn:{}", ws.digests()["//base/hsn"]);
    let os_image = rec
        .images_stored()
        .into_iter()
        .find(|i| i.digest.as_ref().map(|d| d.as_str()) == Some(os.as_str()))
        .unwrap();
    rec.push(&os_image.id, &hsn_content, false).unwrap();
    refusal(
        "//base/hsn",
        &format!("its image is labelled with digest {}", &os[..12]),
    );
    for label in ["base/os", "base/hsn", "uan/uan", "compute/compute"] {
        assert_eq!(manifest(rec, &stable(label)), None, "{label}");
    }
    assert_eq!(copies(rec), 0);
    assert!(
        ws.lb(&["releases", "--json"]).ok().json()["releases"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}

#[test]
fn bad_input_exits_2_and_an_unreachable_registry_3() {
    let ws = TestWs::recorded("chain");
    let rec = ws.rec();
    // No registry.
    let run = ws.lb(&["promote", "//base/os", "--to", "stable"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("--registry"), "{}", run.stderr);
    with_registry(&ws, REG);
    ws.lb(&["build", "//base/os"]).ok();
    for bad in ["a/b", ".hidden", "a:b", &"x".repeat(129), &"ab".repeat(32)] {
        let run = ws.lb(&["promote", "//base/os", "--to", bad]);
        assert_eq!(run.code, 2, "{bad}: {}", run.stderr);
        assert!(run.stderr.contains("hint:"), "{bad}: {}", run.stderr);
    }
    let run = ws.lb(&["promote", "//base/os", "--to", "stable", "--digest", "xyz"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    let run = ws.lb(&["promote", "//base/...", "--to", "stable"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    let run = ws.lb(&["promote", "//base/os"]);
    assert_eq!(run.code, 2, "--to is required: {}", run.stderr);
    rec.set_registry_unreachable(true);
    let run = ws.lb(&["promote", "//base/os", "--to", "stable"]);
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert_eq!(copies(rec), 0);
}

/// Files under the registry's blob store (layers, configs and manifests).
fn blobs(reg: &Registry) -> usize {
    let root = reg.dir.path().join("data/docker/registry/v2/blobs");
    walk(&root)
}

fn walk(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| {
                let e = e.unwrap();
                if e.file_type().unwrap().is_dir() {
                    walk(&e.path())
                } else {
                    1
                }
            })
            .sum()
        })
        .unwrap_or(0)
}

#[test]
fn promote_copies_the_manifest_in_a_real_registry() {
    require_buildah();
    let reg = Registry::start();
    let mut ws = TestWs::new("chain");
    with_registry(&ws, &reg.url());
    ws.env
        .push(("CI_JOB_URL".into(), "https://ci.example.org/jobs/7".into()));
    let b = ws.lb(&["build", "--json", "//base/hsn"]).ok().json();
    let old = b["layers"][1]["digest"].as_str().unwrap().to_string();
    let content = format!("{}/base/hsn:{old}", reg.url());
    let release = format!("{}/base/hsn:stable", reg.url());
    let stored = blobs(&reg);
    assert!(stored > 0);

    let r = ws
        .lb(&["promote", "//base/hsn", "--to", "stable", "--json"])
        .ok()
        .json();
    assert_eq!(r["status"], "promoted", "{r}");
    assert_eq!(r["promoted_by"], "https://ci.example.org/jobs/7");
    let want = skopeo_digest(&content);
    assert!(want.starts_with("sha256:"), "{want}");
    assert_eq!(skopeo_digest(&release), want);
    assert_eq!(r["manifest_digest"], want.as_str());
    assert_eq!(blobs(&reg), stored, "a manifest copy uploads no blob");

    // Another digest: refused without --force, naming the one it holds;
    // a dry run changes nothing; --force moves it.
    change_hsn(&ws);
    let b = ws.lb(&["build", "--json", "//base/hsn"]).ok().json();
    let new = b["layers"][1]["digest"].as_str().unwrap().to_string();
    let refused = ws.lb(&["promote", "//base/hsn", "--to", "stable"]);
    assert_eq!(refused.code, 1, "{}", refused.stderr);
    assert!(refused.stderr.contains(&old), "{}", refused.stderr);
    let dry = ws
        .lb(&["promote", "//base/hsn", "--to", "stable", "--force", "-n"])
        .ok();
    assert!(dry.stdout.contains("dry run"), "{}", dry.stdout);
    assert_eq!(skopeo_digest(&release), want);
    ws.lb(&["promote", "//base/hsn", "--to", "stable", "--force"])
        .ok();
    let moved = skopeo_digest(&format!("{}/base/hsn:{new}", reg.url()));
    assert_ne!(moved, want);
    assert_eq!(skopeo_digest(&release), moved);
    let l = ws.lb(&["releases", "--json", "//base/hsn"]).ok().json();
    assert_eq!(l["releases"].as_array().unwrap().len(), 2, "{l}");
    assert_eq!(l["releases"][0]["previous"], old.as_str());
}

#[test]
fn why_on_releases_diffs_their_manifests() {
    let ws = TestWs::recorded("chain");
    with_registry(&ws, REG);
    let old = ws.lb(&["build", "--json", "//base/hsn"]).ok().json()["layers"][1]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    ws.lb(&["promote", "//base/hsn", "--to", "2026.11"]).ok();
    change_hsn(&ws);
    let new = ws.lb(&["build", "--json", "//base/hsn"]).ok().json()["layers"][1]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    ws.lb(&["promote", "//base/hsn", "--to", "2026.12"]).ok();

    // Two releases: what changed from the first to the second.
    let run = ws
        .lb(&["why", "--release", "2026.11", "--release", "2026.12"])
        .ok();
    assert!(
        run.stdout.starts_with(&format!(
            "//base/hsn changed from release 2026.11 to release 2026.12 (digest {}… -> {}…):\n",
            &old[..12],
            &new[..12]
        )),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("+ echo hsn2 > /etc/layer-hsn"),
        "{}",
        run.stdout
    );
    let j = ws
        .lb(&[
            "why",
            "--json",
            "--release",
            "2026.11",
            "--release",
            "2026.12",
        ])
        .ok()
        .json();
    assert_eq!(
        (&j["version"], &j["status"]),
        (&1.into(), &"changed_since".into()),
        "{j}"
    );
    assert_eq!(
        (&j["release"], &j["digest"]),
        (&"2026.12".into(), &new.as_str().into())
    );
    assert_eq!(j["compared_to"]["release"], "2026.11");
    assert_eq!(j["compared_to"]["digest"], old.as_str());
    // The same diff as hash-diff of their digests.
    let h = ws.lb(&["hash-diff", "--json", &old, &new]).ok().json();
    assert_eq!(j["changes"], h["changes"]);
    assert_eq!(j["changes"][0]["kind"], "command_changed", "{j}");

    // One release: from it to the current inputs.
    let run = ws.lb(&["why", "//base/hsn", "--release", "2026.12"]).ok();
    assert_eq!(
        run.stdout,
        format!(
            "//base/hsn is unchanged since release 2026.12 (digest {}…)\n",
            &new[..12]
        )
    );
    let run = ws.lb(&["why", "--release", "2026.11"]).ok();
    assert!(
        run.stdout
            .starts_with("//base/hsn changed since release 2026.11"),
        "{}",
        run.stdout
    );

    // A release name several layers carry needs the layer.
    ws.lb(&["promote", "//base/os", "--to", "2026.11"]).ok();
    let run = ws.lb(&["why", "--release", "2026.11", "--release", "2026.12"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("names several layers"),
        "{}",
        run.stderr
    );
    ws.lb(&[
        "why",
        "//base/hsn",
        "--release",
        "2026.11",
        "--release",
        "2026.12",
    ])
    .ok();
    // Bad input.
    for args in [
        &["why", "--release", "nope"][..],
        &["why", "//base/os", "--release", "2026.12"],
        &["why", "--release", "a", "--release", "b", "--release", "c"],
        &["why", "--release", "2026.11", "--since", "HEAD"],
        &["why", "//base/...", "--release", "2026.11"],
    ] {
        let run = ws.lb(args);
        assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
    }
}

/// gc keeps the manifests of released digests (their history rows), so
/// that `why --release` still explains a release whose image gc removed.
#[test]
fn gc_keeps_what_why_needs_of_a_release() {
    let ws = TestWs::recorded("chain");
    with_registry(&ws, REG);
    ws.lb(&["build", "//base/hsn"]).ok();
    ws.lb(&["promote", "//base/hsn", "--to", "2026.11"]).ok();
    change_hsn(&ws);
    ws.lb(&["build", "//base/hsn"]).ok();
    ws.lb(&["promote", "//base/hsn", "--to", "2026.12"]).ok();
    ws.write(
        "Layerfile.toml",
        &ws.read("Layerfile.toml")
            .edit("echo hsn2 > /etc/layer-hsn", "echo hsn3 > /etc/layer-hsn"),
    );
    ws.lb(&["build", "//base/hsn"]).ok();
    let gc = ws.lb(&["gc", "--keep", "0", "--json"]).ok().json();
    assert_eq!(gc["cache_rows"].as_array().unwrap().len(), 2, "{gc}");
    let run = ws
        .lb(&["why", "--release", "2026.11", "--release", "2026.12"])
        .ok();
    assert!(
        run.stdout.contains("+ echo hsn2 > /etc/layer-hsn"),
        "{}",
        run.stdout
    );
    let run = ws.lb(&["why", "--release", "2026.11"]).ok();
    assert!(
        run.stdout.contains("+ echo hsn3 > /etc/layer-hsn"),
        "{}",
        run.stdout
    );
}

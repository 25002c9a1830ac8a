//! The logic above the executor, driven through the library API against the
//! in-memory [`Recording`] backend: no buildah, no root. Adoption of an
//! image committed without a cache row, `cache verify` (and `--repair`),
//! gc's choices and removals, and the shared registry's fallback. The real
//! builds stay proven by the buildah tests (`tests/build.rs`, `tests/crash.rs`...).

mod common;

use std::collections::BTreeMap;

use common::{Edit, TestWs};
use layerbuild::digest::Digest;
use layerbuild::executor::recording::{Call, Recording, StoredImage};
use layerbuild::label::{Label, Pattern};
use layerbuild::ops::{self, Context};
use layerbuild::workspace::CacheMode;

const REGISTRY: &str = "registry.example.org/layers";

fn options(registry: Option<&str>) -> ops::build::BuildOptions {
    ops::build::BuildOptions {
        patterns: vec![Pattern::All],
        system: None,
        jobs: Some(2),
        keep_going: true,
        isolation: None,
        registry: registry.map(str::to_string),
        cache_mode: registry.map(|_| CacheMode::ReadWrite),
        no_outputs: true,
    }
}

fn build(ws: &TestWs, rec: &Recording, registry: Option<&str>) -> ops::build::BuildReport {
    let ctx = Context::load(&ws.root).unwrap();
    let quiet = |n| {
        Box::new(layerbuild::progress::PlainReporter::new(n))
            as Box<dyn layerbuild::progress::Reporter>
    };
    ops::build::build(&ctx, &options(registry), rec, Some(rec), Some(rec), &quiet).unwrap()
}

/// label -> digest of every layer, from `ls`.
fn digests(ws: &TestWs, rec: &Recording) -> BTreeMap<String, Digest> {
    let ctx = Context::load(&ws.root).unwrap();
    let systems = ops::systems(&ctx.ws, &[]).unwrap();
    let (entries, _) = ops::ls::ls(&ctx, &[], &systems, rec).unwrap();
    entries.into_iter().map(|e| (e.label, e.digest)).collect()
}

fn status<'a>(report: &'a ops::build::BuildReport, label: &str) -> &'a str {
    report
        .layers
        .iter()
        .find(|l| l.label == label)
        .unwrap_or_else(|| panic!("{label} not in the report"))
        .status
        .as_str()
}

fn image_name(ws: &TestWs, label: &str, digest: &Digest) -> String {
    let ctx = Context::load(&ws.root).unwrap();
    ops::image_name(&ctx.ws, &Label::parse(label).unwrap(), digest)
}

/// `builds.source` of a digest's history rows.
fn sources(ws: &TestWs, digest: &Digest) -> Vec<String> {
    let conn = rusqlite::Connection::open(ws.db()).unwrap();
    let mut st = conn
        .prepare("SELECT source FROM builds WHERE digest = ?1 ORDER BY id")
        .unwrap();
    st.query_map([digest.as_str()], |r| r.get(0))
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
}

#[test]
fn builds_every_layer_once_parents_first_and_then_reuses_them() {
    let ws = TestWs::new("chain");
    let rec = Recording::new();
    let r = build(&ws, &rec, None);
    assert_eq!((r.built, r.failed), (5, 0));
    let built = rec.built();
    let at = |l: &str| built.iter().position(|b| b == l).unwrap();
    assert!(at("//base/os") < at("//base/hsn") && at("//base/hsn") < at("//uan/uan"));
    // Each build starts from its parent's committed image.
    let d = digests(&ws, &rec);
    let hsn_from = rec.calls().into_iter().find_map(|c| match c {
        Call::Build { label, from, .. } if label == "//base/hsn" => from,
        _ => None,
    });
    assert_eq!(
        hsn_from,
        Some(Recording::image_id("//base/os", &d["//base/os"]))
    );

    let again = build(&ws, &rec, None);
    assert_eq!((again.built, again.cached), (0, 5));
    assert_eq!(rec.built().len(), 5);
}

#[test]
fn an_image_committed_without_a_cache_row_is_adopted_not_rebuilt() {
    let ws = TestWs::new("chain");
    let rec = Recording::new();
    let d = digests(&ws, &rec);
    // What a build killed between commit and record leaves behind.
    for label in ["//base/os", "//base/hsn"] {
        let name = image_name(&ws, label, &d[label]);
        rec.add_image(StoredImage::built(label, &d[label], &name));
    }
    // An image of the right name but another layer's labels is not adopted.
    let uan_name = image_name(&ws, "//uan/uan", &d["//uan/uan"]);
    rec.add_image(StoredImage::built(
        "//uan/other",
        &d["//uan/uan"],
        &uan_name,
    ));

    let r = build(&ws, &rec, None);
    assert_eq!(status(&r, "//base/os"), "up_to_date");
    assert_eq!(status(&r, "//base/hsn"), "up_to_date");
    assert_eq!(status(&r, "//uan/uan"), "built");
    assert!(!rec.built().contains(&"//base/os".to_string()));
    assert_eq!(sources(&ws, &d["//base/os"]), ["adopted"]);
    assert_eq!(sources(&ws, &d["//uan/uan"]), ["built"]);
}

#[test]
fn cache_verify_finds_missing_and_mislabelled_images_and_repair_deletes_their_rows() {
    let ws = TestWs::new("chain");
    let rec = Recording::new();
    build(&ws, &rec, None);
    let d = digests(&ws, &rec);
    let ctx = Context::load(&ws.root).unwrap();
    let clean = ops::cache::verify(&ctx, &rec, false).unwrap();
    assert_eq!((clean.rows, clean.problems.len()), (5, 0));

    rec.delete_image(&Recording::image_id("//uan/uan", &d["//uan/uan"]));
    rec.relabel(
        &Recording::image_id("//base/hsn", &d["//base/hsn"]),
        "0123456789abcdef",
    );
    let r = ops::cache::verify(&ctx, &rec, false).unwrap();
    let found: BTreeMap<&str, &str> = r
        .problems
        .iter()
        .map(|p| (p.label.as_str(), p.problem))
        .collect();
    assert_eq!(
        found,
        BTreeMap::from([("//base/hsn", "mismatched"), ("//uan/uan", "missing")])
    );
    assert_eq!(r.unresolved(), 2);
    let text = ops::cache::render_verify(&r);
    assert!(
        text.contains("is labelled with digest '0123456789ab'"),
        "{text}"
    );
    assert!(
        text.contains(
            "5 cache rows checked, 2 bad; delete them with: layerbuild cache verify --repair"
        ),
        "{text}"
    );

    let repaired = ops::cache::verify(&ctx, &rec, true).unwrap();
    assert_eq!((repaired.repaired, repaired.unresolved()), (2, 0));
    let after = ops::cache::verify(&ctx, &rec, false).unwrap();
    assert_eq!((after.rows, after.problems.len()), (3, 0));
    // The next build rebuilds exactly those two layers (and what is built on them).
    let before = rec.built().len();
    let r = build(&ws, &rec, None);
    assert_eq!(status(&r, "//uan/uan"), "built");
    assert_eq!(status(&r, "//base/hsn"), "built");
    assert_eq!(status(&r, "//base/os"), "up_to_date");
    assert_eq!(rec.built().len(), before + 2);
}

#[test]
fn gc_removes_old_digests_and_dead_containers_and_keeps_current_images() {
    let ws = TestWs::new("chain");
    let rec = Recording::new();
    build(&ws, &rec, None);
    let old = digests(&ws, &rec);
    let script = ws.read("scripts/uan.sh");
    ws.write("scripts/uan.sh", &script.edit("\n", "\n# changed\n"));
    build(&ws, &rec, None);
    let new = digests(&ws, &rec);
    assert_ne!(old["//uan/uan"], new["//uan/uan"]);
    assert_eq!(old["//base/hsn"], new["//base/hsn"]);
    // A working container of a build whose process is gone.
    let ctx = Context::load(&ws.root).unwrap();
    let dead = ops::container_name(
        &ctx.ws,
        &Label::parse("//uan/uan").unwrap(),
        &old["//uan/uan"],
    );
    rec.add_container(&dead);

    let opts = ops::gc::GcOptions {
        keep: 1,
        dry_run: true,
    };
    let plan = ops::gc::gc(&ctx, &opts, &rec).unwrap();
    let old_name = image_name(&ws, "//uan/uan", &old["//uan/uan"]);
    let planned: Vec<(&str, &str)> = plan
        .images
        .iter()
        .map(|i| (i.image_name.as_str(), i.status.as_str()))
        .collect();
    assert_eq!(planned, [(old_name.as_str(), "would_remove")]);
    assert_eq!(plan.containers.len(), 1);
    assert_eq!(plan.containers[0].name, dead);
    assert!(
        !rec.calls()
            .iter()
            .any(|c| matches!(c, Call::RemoveImage(_) | Call::RemoveContainer(_))),
        "a dry run removes nothing"
    );

    let done = ops::gc::gc(
        &ctx,
        &ops::gc::GcOptions {
            keep: 1,
            dry_run: false,
        },
        &rec,
    )
    .unwrap();
    assert_eq!(done.images[0].status.as_str(), "removed");
    assert_eq!(done.failures(), 0);
    let calls = rec.calls();
    let rm_ctr = calls
        .iter()
        .position(|c| *c == Call::RemoveContainer(dead.clone()));
    let rmi = calls
        .iter()
        .position(|c| *c == Call::RemoveImage(old_name.clone()));
    assert!(
        rm_ctr.unwrap() < rmi.unwrap(),
        "containers go before images"
    );
    let stored: Vec<String> = rec.images_stored().into_iter().map(|i| i.id).collect();
    assert_eq!(stored.len(), 5);
    assert!(!stored.contains(&Recording::image_id("//uan/uan", &old["//uan/uan"])));
    assert_eq!(build(&ws, &rec, None).cached, 5);
}

#[test]
fn an_unreachable_registry_is_one_warning_and_every_layer_is_built_here() {
    let ws = TestWs::new("chain");
    let rec = Recording::new();
    rec.set_registry_unreachable(true);
    let r = build(&ws, &rec, Some(REGISTRY));
    assert_eq!((r.built, r.pulled, r.failed), (5, 0, 0));
    let unreachable: Vec<&String> = r
        .warnings
        .iter()
        .filter(|w| w.contains("is unreachable"))
        .collect();
    assert_eq!(unreachable.len(), 1, "{:?}", r.warnings);
    assert_eq!(
        unreachable[0].as_str(),
        format!(
            "registry {REGISTRY} is unreachable (pinging container registry: dial tcp: connect: connection refused); building from the local cache and local builds only"
        )
    );
    assert!(
        !rec.calls()
            .iter()
            .any(|c| matches!(c, Call::Pull(_) | Call::Push { .. })),
        "nothing is pulled or pushed once the registry is found unreachable"
    );
}

#[test]
fn a_registry_entry_with_the_digest_is_pulled_and_what_is_built_is_pushed() {
    let ws = TestWs::new("chain");
    let rec = Recording::new();
    let d = digests(&ws, &rec);
    let reg = ops::build::RegistryUse::new(&rec, REGISTRY.into(), true, CacheMode::ReadWrite);
    let os = Label::parse("//base/os").unwrap();
    let reference = reg.reference(&os, &d["//base/os"]);
    rec.put_in_registry(
        &reference,
        StoredImage::built("//base/os", &d["//base/os"], &reference),
    );
    // An entry labelled with another digest is never used.
    let hsn = Label::parse("//base/hsn").unwrap();
    rec.put_in_registry(
        &reg.reference(&hsn, &d["//base/hsn"]),
        StoredImage::built("//base/hsn", &Digest::from("another-digest"), "x"),
    );

    let r = build(&ws, &rec, Some(REGISTRY));
    assert_eq!(status(&r, "//base/os"), "pulled");
    assert_eq!(status(&r, "//base/hsn"), "built");
    assert_eq!((r.pulled, r.built), (1, 4));
    assert!(!rec.built().contains(&"//base/os".to_string()));
    assert!(rec.calls().contains(&Call::Pull(reference)));
    assert!(
        r.warnings
            .iter()
            .any(|w| w.contains("//base/hsn: rejected")),
        "{:?}",
        r.warnings
    );
    // Built layers are pushed (read-write mode), the rejected entry replaced.
    let hsn_ref = reg.reference(&hsn, &d["//base/hsn"]);
    assert!(
        rec.calls()
            .iter()
            .any(|c| matches!(c, Call::Push { reference, .. } if *reference == hsn_ref))
    );
    assert_eq!(rec.registry_references().len(), 5);
}

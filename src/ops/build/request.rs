//! The plain-data [`BuildRequest`] for one attempt at a layer, from the
//! workspace model and its fingerprint; where its log goes; the cache
//! record an attempt leaves. Pure, except that a log name is chosen
//! against the files already there.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cache::BuildRecord;
use crate::digest::Digest;
use crate::executor::{BaseImage, BuildRequest, PlayRequest};
use crate::fingerprint::Fingerprint;
use crate::label::Label;
use crate::ops::{container_name, image_name};
use crate::status::RecordSource;
use crate::workspace::{Parent, System, Workspace};

/// What the cache records of an attempt at `fp`.
pub(super) fn record<'a>(
    label: &'a str,
    system: Option<&'a System>,
    fp: &'a Fingerprint,
    started_at: i64,
    duration: Duration,
    log_path: Option<&'a Path>,
    source: RecordSource,
) -> BuildRecord<'a> {
    BuildRecord {
        label,
        system: system.map(|s| s.name.as_str()),
        digest: &fp.digest,
        manifest: &fp.manifest,
        started_at,
        duration,
        log_path,
        vars: &fp.vars,
        inventory: fp.inventory.as_deref(),
        source,
    }
}

/// The request for building `label` at `digest`, with the fields that
/// depend on the attempt (names, paths, parent image) left empty.
pub(super) fn request(
    ws: &Workspace,
    system: Option<&System>,
    label: &Label,
    digest: &Digest,
    isolation: &str,
) -> BuildRequest {
    let layer = &ws.layers[label];
    BuildRequest {
        label: label.to_string(),
        digest: digest.clone(),
        image_name: String::new(),
        container_name: String::new(),
        from: crate::executor::BaseImage::Scratch,
        workspace_root: ws.root.clone(),
        isolation: isolation.to_string(),
        setup: layer.setup.clone(),
        packages: layer.packages.clone(),
        package_command: layer
            .package_command
            .clone()
            .unwrap_or_else(|| ws.build.package_command.clone()),
        scripts: layer.scripts.iter().map(|s| ws.root.join(s)).collect(),
        run: layer.run.clone(),
        play: play_request(ws, system, label),
        tests: layer.tests.clone(),
        boot_tests_follow: !layer.boot_tests.is_empty(),
        timestamp: ws.build.reproducible.then_some(ws.build.source_date_epoch),
        log_path: PathBuf::new(),
        work_dir: PathBuf::new(),
        reuse_container: false,
        secrets: Default::default(),
        arch: ws.arch,
    }
}

/// The request for an attempt at `fp` in a clean container made from
/// `from`, logging to `log_path` (a real build, or a plan's).
pub(super) fn attempt_request(
    ws: &Workspace,
    system: Option<&System>,
    fp: &Fingerprint,
    isolation: &str,
    from: BaseImage,
    log_path: PathBuf,
) -> BuildRequest {
    let label = &fp.label;
    let container = container_name(ws, label, &fp.digest);
    BuildRequest {
        image_name: image_name(ws, label, &fp.digest),
        work_dir: ws.cache_dir.join("tmp").join(&container),
        container_name: container,
        from,
        log_path,
        reuse_container: false,
        secrets: fp.secrets.clone(),
        play: with_vault_files(ws, play_request(ws, system, label), fp),
        ..request(ws, system, label, &fp.digest, isolation)
    }
}

/// The image `label` starts from; `image_of` gives a parent layer's
/// image, `None` when it is not built yet.
pub(super) fn base_image(
    ws: &Workspace,
    label: &Label,
    image_of: impl Fn(&Label) -> Option<String>,
) -> BaseImage {
    match &ws.layers[label].parent {
        Parent::Scratch => BaseImage::Scratch,
        Parent::Image(r) => BaseImage::Image(r.clone()),
        Parent::Layer(p) => match image_of(p) {
            Some(id) => BaseImage::Image(id),
            None => BaseImage::Unbuilt(p.to_string()),
        },
    }
}

/// `play` with the fingerprint's files of vault data.
pub(super) fn with_vault_files(
    ws: &Workspace,
    play: Option<PlayRequest>,
    fp: &Fingerprint,
) -> Option<PlayRequest> {
    play.map(|p| PlayRequest {
        vault_files: fp.vault_files.iter().map(|f| ws.root.join(f)).collect(),
        ..p
    })
}

pub(crate) fn play_request(
    ws: &Workspace,
    system: Option<&System>,
    label: &Label,
) -> Option<PlayRequest> {
    let layer = &ws.layers[label];
    layer.playbook.as_ref().map(|pb| {
        let source = layer.source.as_deref().unwrap_or(".");
        PlayRequest {
            source_dir: ws.root.join(source),
            playbook: pb.clone(),
            host_name: label.slug(),
            groups: layer.groups.clone(),
            inventory: system
                .and_then(|s| s.inventory.as_ref())
                .map(|i| ws.root.join(i)),
            vars: system
                .map(|s| s.vars.clone().into_iter().collect())
                .unwrap_or_default(),
            roles_path: layer.roles_path.iter().map(|r| ws.root.join(r)).collect(),
            connection: crate::executor::Connection::parse(
                layer
                    .ansible_connection
                    .as_deref()
                    .unwrap_or(&ws.build.ansible_connection),
            ),
            vault_files: vec![],
            mitogen: crate::executor::ansible::mitogen_dir(),
        }
    })
}

/// A fresh log file name per build attempt: logs are kept, never overwritten.
pub(crate) fn new_log_path(
    ws: &Workspace,
    label: &Label,
    started_at: i64,
    digest: &Digest,
    suffix: &str,
) -> PathBuf {
    let dir = ws
        .cache_dir
        .join("logs")
        .join(label.image_type())
        .join(label.layer());
    let stamp = crate::ops::format_time(started_at)
        .replace([' ', ':'], "")
        .replace('-', "");
    let mut n = 1;
    loop {
        let extra = if n == 1 {
            String::new()
        } else {
            format!("-{n}")
        };
        let p = dir.join(format!("{stamp}-{}{suffix}{extra}.log", digest.short()));
        if !p.exists() {
            return p;
        }
        n += 1;
    }
}

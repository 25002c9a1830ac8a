//! The real backend: buildah for containers and images, skopeo for
//! registry lookups, ansible-playbook against the working container.
//! This file holds the configuration ([`Buildah`], [`Storage`]) and the
//! backend traits' implementations; [`parse`] reads what the tools print,
//! [`steps`] says a build's steps as data, [`session`] runs them,
//! [`export`] writes images out.
//!
//! I/O: writes the storage.conf of a chosen storage root; every process is
//! started through [`crate::executor::cli`].

mod export;
mod parse;
mod session;
pub mod steps;

use std::collections::HashSet;
use std::path::Path;
use std::process::{Command, Stdio};

use super::inspect::ImageMeta;
use super::{
    AttachedRun, BuildRequest, BuildResult, Executor, ImageInfo, ImageNames, ImageStore, Registry,
    RegistryEntry, RmiOutcome, StepSink, TestOutcome, TestRequest, ToolError, ToolErrorKind,
    ToolResult, cli,
};
use crate::digest::Digest;
use crate::error::{Error, Result};
use parse::normalize_id;

pub struct Buildah {
    pub buildah: String,
    pub ansible_playbook: String,
    pub skopeo: String,
    /// A containers storage.conf selecting another storage root; handed to
    /// every buildah, skopeo and ansible-playbook process (Ansible's buildah
    /// connection runs buildah itself) through `CONTAINERS_STORAGE_CONF`.
    pub storage_conf: Option<std::path::PathBuf>,
    /// The storage root that storage.conf names (`None`: buildah's default).
    pub storage_root: Option<std::path::PathBuf>,
}

impl Default for Buildah {
    fn default() -> Self {
        Buildah {
            buildah: std::env::var("LAYERBUILD_BUILDAH").unwrap_or_else(|_| "buildah".into()),
            ansible_playbook: std::env::var("LAYERBUILD_ANSIBLE_PLAYBOOK")
                .unwrap_or_else(|_| "ansible-playbook".into()),
            skopeo: std::env::var("LAYERBUILD_SKOPEO").unwrap_or_else(|_| "skopeo".into()),
            storage_conf: None,
            storage_root: None,
        }
    }
}

/// Where containers storage lives, when not buildah's default.
#[derive(Debug, Clone)]
pub struct Storage {
    pub root: std::path::PathBuf,
    pub runroot: std::path::PathBuf,
    pub driver: String,
}

impl Buildah {
    /// Uses `storage` instead of the default containers storage, writing its
    /// storage.conf under `dir`.
    pub fn with_storage(mut self, storage: &Storage, dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let conf = dir.join("storage.conf");
        let text = format!(
            "[storage]\ndriver = {}\ngraphroot = {}\nrunroot = {}\n",
            toml_string(&storage.driver),
            toml_string(&storage.root.display().to_string()),
            toml_string(&storage.runroot.display().to_string()),
        );
        std::fs::write(&conf, text).map_err(|e| Error::io(&conf, e))?;
        self.storage_conf = Some(conf);
        self.storage_root = Some(storage.root.clone());
        Ok(self)
    }

    /// A command for `program` with the storage configuration applied.
    pub fn command(&self, program: &str) -> Command {
        cli::command(program, self.storage_conf.as_deref())
    }

    /// Runs `buildah ARGS` to completion; `cannot run buildah` (with a hint
    /// to install it) when it cannot be started.
    fn buildah_output(&self, args: &[&str]) -> ToolResult<std::process::Output> {
        cli::output(self.command(&self.buildah).args(args))
            .map_err(|e| ToolError::missing(&self.buildah, args[0], "buildah", &e))
    }

    /// Runs `buildah ARGS`; a failure is `buildah WHAT failed: STDERR`.
    fn buildah_ok(&self, args: &[&str], what: &str) -> ToolResult<std::process::Output> {
        let out = self.buildah_output(args)?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            return Err(ToolError::failed(
                &self.buildah,
                args[0],
                &stderr,
                format!("buildah {what} failed: {}", stderr.trim()),
            ));
        }
        Ok(out)
    }

    /// Runs a buildah listing (`images`, `containers`), again when it failed
    /// because another process removed an entry while it was listed.
    fn list(&self, args: &[&str]) -> ToolResult<std::process::Output> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let out = self.buildah_ok(args, args[0]);
            let raced = out.as_ref().err().is_some_and(|e| {
                e.stderr_tail().contains("image not known")
                    || e.stderr_tail().contains("container not known")
            });
            if !raced || attempt == 5 {
                return out;
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }

    /// Runs `program ARGS`; its trimmed stdout, or its trimmed stderr as the error.
    pub(crate) fn run_tool(&self, program: &str, args: &[&str]) -> ToolResult<String> {
        let operation = args.first().copied().unwrap_or("");
        let out = cli::output(self.command(program).args(args)).map_err(|e| {
            ToolError::new(
                ToolErrorKind::NotStarted,
                program,
                operation,
                format!("cannot run {program}: {e}"),
            )
        })?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            return Err(ToolError::failed(
                program,
                operation,
                &stderr,
                stderr.trim(),
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// The image named (or with id) `reference`, `None` when storage has none.
    pub fn image_meta(&self, reference: &str) -> ToolResult<Option<ImageMeta>> {
        let out = self
            .buildah_output(&["inspect", "--type", "image", reference])
            .map_err(|e| e.with_hint("install buildah or put it on PATH"))?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            if parse::is_unknown_image(&stderr) {
                return Ok(None);
            }
            return Err(ToolError::failed(
                &self.buildah,
                "inspect",
                &stderr,
                format!("buildah inspect {reference} failed: {}", stderr.trim()),
            ));
        }
        super::inspect::parse_inspect(&String::from_utf8_lossy(&out.stdout))
            .map(Some)
            .map_err(|m| ToolError::new(ToolErrorKind::BadOutput, &self.buildah, "inspect", m))
    }

    /// Looks `reference` (`host/repo:tag`) up in its registry without pulling.
    /// `Err` means the registry could not be asked (down, refused, auth).
    /// `skopeo inspect --format FORMAT docker://REFERENCE`, asked once.
    fn skopeo_inspect(
        &self,
        reference: &str,
        tls_verify: bool,
        format: &str,
    ) -> ToolResult<String> {
        let tls = format!("--tls-verify={tls_verify}");
        let docker = format!("docker://{reference}");
        let args = [
            "inspect",
            "--retry-times",
            "0",
            &tls,
            "--format",
            format,
            &docker,
        ];
        self.run_tool(&self.skopeo, &args)
    }

    pub fn registry_lookup(&self, reference: &str, tls_verify: bool) -> ToolResult<RegistryEntry> {
        let tls = format!("--tls-verify={tls_verify}");
        let docker = format!("docker://{reference}");
        let args = ["inspect", "--retry-times", "0", &tls, &docker];
        match self.run_tool(&self.skopeo, &args) {
            Ok(json) => parse::skopeo_entry(&json)
                .map_err(|m| ToolError::new(ToolErrorKind::BadOutput, &self.skopeo, "inspect", m)),
            Err(e) if parse::is_absent_in_registry(e.message()) => Ok(RegistryEntry::Absent),
            Err(e) => Err(e),
        }
    }
}

fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// Whether `program` names an executable file, directly (with a `/`) or
/// in a directory of `PATH`, as `Command` would find it.
fn on_path(program: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        return executable(Path::new(program));
    }
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|d| executable(&d.join(program))))
}

impl Executor for Buildah {
    fn tool_command(&self, args: &str) -> String {
        match &self.storage_conf {
            // The storage root chosen with --storage-root: without it,
            // buildah looks in the default store ("container not known").
            Some(conf) => format!(
                "CONTAINERS_STORAGE_CONF={} {} {args}",
                crate::executor::shell_quote(&conf.to_string_lossy()),
                self.buildah
            ),
            None => format!("{} {args}", self.buildah),
        }
    }

    fn preflight(&self, needs_play: bool) -> ToolResult<()> {
        // buildah itself is checked by `images`, which every build runs first.
        // ansible-playbook is looked up, not started: starting it costs
        // about half a second of Python on every build.
        if needs_play && !on_path(&self.ansible_playbook) {
            return Err(ToolError::missing(
                &self.ansible_playbook,
                "preflight",
                "ansible",
                &std::io::Error::from(std::io::ErrorKind::NotFound),
            ));
        }
        Ok(())
    }

    fn emulation(&self, arch: crate::arch::Arch) -> ToolResult<()> {
        // qemu-user-static registers the interpreter with the F flag, so
        // it is found inside a chroot too.
        let entry = format!("/proc/sys/fs/binfmt_misc/qemu-{}", arch.name());
        match std::fs::read_to_string(&entry) {
            Ok(text) if text.lines().next() == Some("enabled") => Ok(()),
            Ok(_) => Err(ToolError::new(
                ToolErrorKind::Failed,
                "binfmt_misc",
                "emulation",
                format!("{arch} programs cannot run here: {entry} is disabled"),
            )
            .with_hint(format!("enable it: update-binfmts --enable qemu-{}", arch.name()))),
            Err(e) => Err(ToolError::new(
                ToolErrorKind::NotStarted,
                "binfmt_misc",
                "emulation",
                format!("{arch} programs cannot run here: {entry}: {e}"),
            )
            .with_hint(format!(
                "install qemu-user-static and binfmt-support (apt-get install -y qemu-user-static binfmt-support), and mount binfmt_misc if it is not (mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc; update-binfmts --enable qemu-{})",
                arch.name()
            ))),
        }
    }

    fn build(&self, req: &BuildRequest, sink: &dyn StepSink) -> BuildResult {
        session::build(self, req, sink)
    }

    fn run_tests(&self, req: &TestRequest) -> ToolResult<Vec<TestOutcome>> {
        session::run_tests(self, req)
    }

    fn boot(
        &self,
        req: &crate::executor::qemu::BootRequest,
    ) -> ToolResult<(Vec<TestOutcome>, Option<String>)> {
        crate::executor::qemu::boot(req)
    }

    fn planned_steps(&self, req: &BuildRequest) -> Vec<String> {
        session::planned(self, req)
    }
}

impl ImageStore for Buildah {
    fn images(&self) -> ToolResult<HashSet<String>> {
        self.images_named().map(|(ids, _)| ids)
    }

    fn images_named(&self) -> ToolResult<(HashSet<String>, Option<ImageNames>)> {
        let format = "{{.ID}} {{.Name}}:{{.Tag}}";
        let out = self
            .list(&["images", "--all", "--no-trunc", "--format", format])
            .map_err(|e| match e.kind() {
                ToolErrorKind::Failed => {
                    e.with_hint("check that container storage is usable: buildah info")
                }
                _ => e,
            })?;
        let (ids, names) = parse::images_named(&String::from_utf8_lossy(&out.stdout));
        Ok((ids, Some(names)))
    }

    fn image_list(&self) -> ToolResult<Vec<ImageInfo>> {
        let out = self.list(&["images", "--json", "--no-trunc"])?;
        parse::image_list(&String::from_utf8_lossy(&out.stdout))
            .map_err(|m| ToolError::new(ToolErrorKind::BadOutput, &self.buildah, "images", m))
    }

    fn committed_image(&self, name: &str) -> ToolResult<Option<ImageMeta>> {
        self.image_meta(name)
    }

    fn tag_image(&self, image: &str, name: &str) -> ToolResult<()> {
        let out = self.buildah_output(&["tag", image, name])?;
        if out.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        Err(ToolError::failed(
            &self.buildah,
            "tag",
            &stderr,
            format!("buildah tag {image} {name} failed: {}", stderr.trim()),
        ))
    }

    fn remove_image(&self, name: &str) -> ToolResult<RmiOutcome> {
        let out = self.buildah_output(&["rmi", name])?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        parse::rmi_outcome(
            out.status.success(),
            &String::from_utf8_lossy(&out.stdout),
            &stderr,
        )
        .ok_or_else(|| {
            ToolError::failed(
                &self.buildah,
                "rmi",
                &stderr,
                format!("buildah rmi {name} failed: {}", stderr.trim()),
            )
        })
    }

    fn storage_root(&self) -> ToolResult<Option<std::path::PathBuf>> {
        if let Some(root) = &self.storage_root {
            return Ok(Some(root.clone()));
        }
        // buildah's default store, as its configuration (storage.conf,
        // rootless or not) says.
        let out = self.buildah_ok(&["info", "--format", "{{.store.GraphRoot}}"], "info")?;
        let root = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if root.is_empty() {
            return Err(ToolError::new(
                ToolErrorKind::BadOutput,
                &self.buildah,
                "info",
                "buildah info names no storage root (store.GraphRoot)",
            ));
        }
        Ok(Some(root.into()))
    }

    fn containers(&self) -> ToolResult<HashSet<String>> {
        let out = self.list(&["containers", "--format", "{{.ContainerName}}"])?;
        Ok(parse::lines(&String::from_utf8_lossy(&out.stdout)))
    }

    fn create_container(&self, name: &str, image: &str) -> ToolResult<()> {
        self.buildah_ok(&["from", "--name", name, image], &format!("from {image}"))
            .map(|_| ())
    }

    fn remove_container(&self, name: &str) -> ToolResult<()> {
        self.buildah_ok(&["rm", name], &format!("rm {name}"))
            .map(|_| ())
    }

    fn attached_command_line(&self, run: &AttachedRun) -> String {
        session::render(&self.attached_command(run))
    }

    fn run_attached(&self, run: &AttachedRun) -> ToolResult<i32> {
        let status = cli::status(&mut self.attached_command(run)).map_err(|e| {
            ToolError::new(
                ToolErrorKind::NotStarted,
                &self.buildah,
                "run",
                format!("cannot run buildah: {e}"),
            )
        })?;
        Ok(status.code().unwrap_or(1))
    }
}

impl Buildah {
    /// `buildah run` of `run.argv` (or a shell) in `run.container`, on this terminal.
    fn attached_command(&self, run: &AttachedRun) -> Command {
        let mut c = self.command(&self.buildah);
        c.stdin(Stdio::inherit());
        c.args(["run", "--isolation", &run.isolation]);
        if run.tty {
            c.arg("--tty");
        }
        c.arg(&run.container).arg("--");
        if run.argv.is_empty() {
            c.arg("sh");
        } else {
            c.args(&run.argv);
        }
        c
    }
}

impl Registry for Buildah {
    fn lookup(&self, reference: &str, tls_verify: bool) -> ToolResult<RegistryEntry> {
        self.registry_lookup(reference, tls_verify)
    }

    fn pull(&self, reference: &str, tls_verify: bool) -> ToolResult<String> {
        let tls = format!("--tls-verify={tls_verify}");
        let id = self.run_tool(
            &self.buildah,
            &["pull", "--quiet", &tls, &format!("docker://{reference}")],
        )?;
        Ok(normalize_id(id.lines().last().unwrap_or("").trim()))
    }

    fn push(&self, image_id: &str, reference: &str, tls_verify: bool) -> ToolResult<()> {
        let tls = format!("--tls-verify={tls_verify}");
        let docker = format!("docker://{reference}");
        self.run_tool(&self.buildah, &["push", "--quiet", &tls, image_id, &docker])
            .map(|_| ())
    }

    fn digest_label(&self, image_id: &str) -> ToolResult<Digest> {
        let format = "{{index .OCIv1.Config.Labels \"layerbuild.digest\"}}";
        self.run_tool(
            &self.buildah,
            &["inspect", "--type", "image", "--format", format, image_id],
        )
        .map(Digest::from)
    }

    fn image_arch(&self, image_id: &str) -> ToolResult<Option<String>> {
        let format = "{{.OCIv1.Architecture}}";
        let arch = self.run_tool(
            &self.buildah,
            &["inspect", "--type", "image", "--format", format, image_id],
        )?;
        let arch = arch.trim();
        Ok((!arch.is_empty()).then(|| arch.to_string()))
    }

    fn remote_arch(&self, reference: &str, tls_verify: bool) -> ToolResult<Option<String>> {
        let arch = self.skopeo_inspect(reference, tls_verify, "{{.Architecture}}")?;
        let arch = arch.trim();
        Ok((!arch.is_empty()).then(|| arch.to_string()))
    }

    fn manifest_digest(&self, reference: &str, tls_verify: bool) -> ToolResult<Option<String>> {
        match self.skopeo_inspect(reference, tls_verify, "{{.Digest}}") {
            Ok(d) if d.starts_with("sha256:") => Ok(Some(d)),
            Ok(d) => Err(ToolError::new(
                ToolErrorKind::BadOutput,
                &self.skopeo,
                "inspect",
                format!("skopeo inspect {reference}: not a manifest digest: {d:?}"),
            )),
            Err(e) if parse::is_absent_in_registry(e.message()) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn manifest_list(
        &self,
        reference: &str,
        tls_verify: bool,
    ) -> ToolResult<Option<Vec<(String, String)>>> {
        let tls = format!("--tls-verify={tls_verify}");
        let docker = format!("docker://{reference}");
        let args = ["inspect", "--raw", "--retry-times", "0", &tls, &docker];
        match self.run_tool(&self.skopeo, &args) {
            Ok(raw) => parse::manifest_list(&raw)
                .map(Some)
                .map_err(|m| ToolError::new(ToolErrorKind::BadOutput, &self.skopeo, "inspect", m)),
            Err(e) if parse::is_absent_in_registry(e.message()) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn put_manifest_list(&self, to: &str, sources: &[String], tls_verify: bool) -> ToolResult<()> {
        let tls = format!("--tls-verify={tls_verify}");
        // A local list of this process's own, removed whatever happens.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let list = format!("localhost/layerbuild-list-{}-{nanos}", std::process::id());
        let result = (|| {
            self.buildah_ok(&["manifest", "create", &list], "manifest create")?;
            for s in sources {
                let src = format!("docker://{s}");
                self.buildah_ok(
                    &["manifest", "add", &tls, &list, &src],
                    &format!("manifest add {s}"),
                )?;
            }
            // Without --all: the list alone is written; the images it
            // names are in the repository already.
            let dest = format!("docker://{to}");
            self.buildah_ok(
                &["manifest", "push", "--quiet", &tls, &list, &dest],
                &format!("manifest push {to}"),
            )
            .map(|_| ())
        })();
        let _ = self.buildah_output(&["manifest", "rm", &list]);
        result
    }

    fn copy_tag(&self, from: &str, to: &str, tls_verify: bool) -> ToolResult<()> {
        let src_tls = format!("--src-tls-verify={tls_verify}");
        let dest_tls = format!("--dest-tls-verify={tls_verify}");
        let (src, dest) = (format!("docker://{from}"), format!("docker://{to}"));
        // No format conversion and --preserve-digests: the manifest's
        // bytes, hence its digest, are the content tag's; the registry
        // has every blob already, so none is uploaded. --all keeps an
        // image index whole instead of picking this machine's platform.
        let args = [
            "copy",
            "--quiet",
            "--all",
            "--preserve-digests",
            &src_tls,
            &dest_tls,
            &src,
            &dest,
        ];
        self.run_tool(&self.skopeo, &args).map(|_| ())
    }
}

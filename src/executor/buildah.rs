//! The real executor: buildah for containers and images, ansible-playbook
//! against the working container through the `containers.podman.buildah`
//! connection. Every command and its whole output go to the layer's log.
//!
//! I/O: spawns buildah, sh and ansible-playbook; writes the log and the
//! generated inventory under the request's work directory.

use std::collections::{HashMap, HashSet};

use super::ImageNames;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;

use super::{BuildFailure, BuildOutput, BuildRequest, Connection, Executor, PlayRequest, StepSink};
use crate::error::{Error, Result};

pub struct Buildah {
    pub buildah: String,
    pub ansible_playbook: String,
    pub skopeo: String,
    /// A containers storage.conf selecting another storage root; handed to
    /// every buildah, skopeo and ansible-playbook process (Ansible's buildah
    /// connection runs buildah itself) through `CONTAINERS_STORAGE_CONF`.
    pub storage_conf: Option<std::path::PathBuf>,
}

impl Default for Buildah {
    fn default() -> Self {
        Buildah {
            buildah: std::env::var("LAYERBUILD_BUILDAH").unwrap_or_else(|_| "buildah".into()),
            ansible_playbook: std::env::var("LAYERBUILD_ANSIBLE_PLAYBOOK")
                .unwrap_or_else(|_| "ansible-playbook".into()),
            skopeo: std::env::var("LAYERBUILD_SKOPEO").unwrap_or_else(|_| "skopeo".into()),
            storage_conf: None,
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

/// How a registry lookup went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryEntry {
    /// The tag exists and its image carries this `layerbuild.digest` label.
    Present {
        label: String,
    },
    Absent,
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
        Ok(self)
    }

    /// A command for `program` with the storage configuration applied.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        if let Some(conf) = &self.storage_conf {
            c.env("CONTAINERS_STORAGE_CONF", conf);
        }
        c.stdin(Stdio::null());
        c
    }

    /// Runs a buildah listing (`images`, `containers`), again when it failed
    /// because another process removed an entry while it was listed.
    fn list(&self, args: &[&str]) -> Result<std::process::Output> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let out = self
                .command(&self.buildah)
                .args(args)
                .stdin(Stdio::null())
                .output()
                .map_err(|e| tool_missing(&self.buildah, "buildah", e))?;
            let stderr = String::from_utf8_lossy(&out.stderr);
            let raced =
                stderr.contains("image not known") || stderr.contains("container not known");
            if out.status.success() || !raced || attempt == 5 {
                return Ok(out);
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }

    pub(crate) fn run_tool(
        &self,
        program: &str,
        args: &[&str],
    ) -> std::result::Result<String, String> {
        let out = self
            .command(program)
            .args(args)
            .output()
            .map_err(|e| format!("cannot run {program}: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Looks `reference` (`host/repo:tag`) up in its registry without pulling.
    /// `Err` means the registry could not be asked (down, refused, auth).
    pub fn registry_lookup(
        &self,
        reference: &str,
        tls_verify: bool,
    ) -> std::result::Result<RegistryEntry, String> {
        let tls = format!("--tls-verify={tls_verify}");
        match self.run_tool(
            &self.skopeo,
            &[
                "inspect",
                "--retry-times",
                "0",
                &tls,
                &format!("docker://{reference}"),
            ],
        ) {
            Ok(json) => {
                let v: serde_json::Value =
                    serde_json::from_str(&json).map_err(|e| format!("skopeo inspect: {e}"))?;
                Ok(RegistryEntry::Present {
                    label: v["Labels"]["layerbuild.digest"]
                        .as_str()
                        .unwrap_or("")
                        .to_string(),
                })
            }
            Err(e)
                if e.contains("manifest unknown")
                    || e.contains("name unknown")
                    || e.contains("not found") =>
            {
                Ok(RegistryEntry::Absent)
            }
            Err(e) => Err(e),
        }
    }

    /// Pulls `reference`; returns the local image id.
    pub fn pull(&self, reference: &str, tls_verify: bool) -> std::result::Result<String, String> {
        let tls = format!("--tls-verify={tls_verify}");
        let id = self.run_tool(
            &self.buildah,
            &["pull", "--quiet", &tls, &format!("docker://{reference}")],
        )?;
        Ok(normalize_id(id.lines().last().unwrap_or("").trim()))
    }

    /// Pushes a local image to `reference`.
    pub fn push(
        &self,
        image_id: &str,
        reference: &str,
        tls_verify: bool,
    ) -> std::result::Result<(), String> {
        let tls = format!("--tls-verify={tls_verify}");
        self.run_tool(
            &self.buildah,
            &[
                "push",
                "--quiet",
                &tls,
                image_id,
                &format!("docker://{reference}"),
            ],
        )
        .map(|_| ())
    }

    /// The `layerbuild.digest` label of a local image.
    pub fn digest_label(&self, image_id: &str) -> std::result::Result<String, String> {
        self.run_tool(
            &self.buildah,
            &[
                "inspect",
                "--type",
                "image",
                "--format",
                "{{index .OCIv1.Config.Labels \"layerbuild.digest\"}}",
                image_id,
            ],
        )
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

fn tool_missing(tool: &str, package: &str, err: std::io::Error) -> Error {
    Error::env(format!("cannot run {tool}: {err}")).with_hint(format!(
        "install it (Debian/Ubuntu: apt-get install -y {package}) or put it on PATH"
    ))
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

    fn preflight(&self, needs_play: bool) -> Result<()> {
        // buildah itself is checked by `images`, which every build runs first.
        // ansible-playbook is looked up, not started: starting it costs
        // about half a second of Python on every build.
        if needs_play && !on_path(&self.ansible_playbook) {
            return Err(tool_missing(
                &self.ansible_playbook,
                "ansible",
                std::io::Error::from(std::io::ErrorKind::NotFound),
            ));
        }
        Ok(())
    }

    fn committed_image(&self, name: &str) -> Result<Option<super::inspect::ImageMeta>> {
        self.image_meta(name)
    }

    fn images(&self) -> Result<HashSet<String>> {
        self.images_named().map(|(ids, _)| ids)
    }

    fn images_named(&self) -> Result<(HashSet<String>, Option<ImageNames>)> {
        let out = self.list(&[
            "images",
            "--all",
            "--no-trunc",
            "--format",
            "{{.ID}} {{.Name}}:{{.Tag}}",
        ])?;
        if !out.status.success() {
            return Err(Error::env(format!(
                "buildah images failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ))
            .with_hint("check that container storage is usable: buildah info"));
        }
        let (mut ids, mut names) = (HashSet::new(), HashMap::new());
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let mut words = line.split_whitespace();
            let Some(id) = words.next() else { continue };
            let id = normalize_id(id);
            if let Some(name) = words.next().filter(|n| *n != "<none>:<none>") {
                names.insert(name.to_string(), id.clone());
            }
            ids.insert(id);
        }
        Ok((ids, Some(names)))
    }

    fn build(
        &self,
        req: &BuildRequest,
        sink: &dyn StepSink,
    ) -> std::result::Result<BuildOutput, BuildFailure> {
        let fail = |message: String| BuildFailure {
            message,
            container: None,
        };
        std::fs::create_dir_all(&req.work_dir)
            .map_err(|e| fail(format!("cannot create {}: {e}", req.work_dir.display())))?;
        // What Ansible decrypts from vault data is redacted as the
        // `secret_vars` are.
        let mut secrets = req.secrets.clone();
        let mut vault_note = None;
        if let Some(play) = &req.play {
            let (values, why) =
                super::ansible::vault_values(&self.ansible_playbook, play, &req.work_dir);
            for v in values {
                secrets.add(&serde_json::Value::String(v));
            }
            vault_note = why;
        }
        let session = Session::new(self, &req.label, &req.isolation, sink, &req.log_path)
            .map_err(fail)?
            .with_secrets(secrets.clone());
        let b = Build { session, req };
        b.note(&format!(
            "# layerbuild: {} digest {}",
            req.label, req.digest
        ));
        if let Some(why) = vault_note {
            b.note(&format!("# layerbuild: {why}"));
        }
        b.run_all().map_err(|f| BuildFailure {
            message: secrets.redact(&f.message).into_owned(),
            ..f
        })
    }
}

/// The name a layer's image carries until its tests pass.
fn untested_name(image_name: &str) -> String {
    format!("{image_name}-untested")
}

fn normalize_id(id: &str) -> String {
    id.strip_prefix("sha256:").unwrap_or(id).to_string()
}

/// One logged sequence of buildah commands for one layer: a build, or a run
/// of its tests. Every command line and its whole output go to the log.
pub struct Session<'a> {
    tool: &'a Buildah,
    label: String,
    isolation: String,
    sink: &'a dyn StepSink,
    log: Mutex<File>,
    /// Redacted from every log line and step.
    secrets: crate::secrets::Secrets,
}

struct Build<'a> {
    session: Session<'a>,
    req: &'a BuildRequest,
}

impl<'a> std::ops::Deref for Build<'a> {
    type Target = Session<'a>;
    fn deref(&self) -> &Session<'a> {
        &self.session
    }
}

/// How one image test went.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TestOutcome {
    pub command: String,
    pub passed: bool,
    /// The failure (exit status), when it failed.
    pub error: Option<String>,
    /// The last lines of its output.
    pub output: String,
}

impl<'a> Session<'a> {
    /// A session logging to a new file at `log_path`.
    pub fn new(
        tool: &'a Buildah,
        label: &str,
        isolation: &str,
        sink: &'a dyn StepSink,
        log_path: &Path,
    ) -> std::result::Result<Session<'a>, String> {
        if let Some(dir) = log_path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        let log = File::create(log_path)
            .map_err(|e| format!("cannot create log {}: {e}", log_path.display()))?;
        Ok(Session {
            tool,
            label: label.to_string(),
            isolation: isolation.to_string(),
            sink,
            log: Mutex::new(log),
            secrets: Default::default(),
        })
    }

    /// Redacts these values from the log and the progress lines.
    pub fn with_secrets(mut self, secrets: crate::secrets::Secrets) -> Self {
        self.secrets = secrets;
        self
    }

    /// Runs `tests` in one fresh container `ctr` made from `image`, each
    /// with `sh -c`, all of them even after a failure; removes the container.
    pub fn run_tests(
        &self,
        image: &str,
        ctr: &str,
        tests: &[String],
    ) -> std::result::Result<Vec<TestOutcome>, String> {
        self.step("tests: buildah from");
        self.create_container(&["--pull-never"], ctr, image, "buildah from (tests)")?;
        let mut outcomes = vec![];
        for (i, t) in tests.iter().enumerate() {
            self.step(&format!("test {}/{}: {t}", i + 1, tests.len()));
            let tail = Mutex::new(std::collections::VecDeque::new());
            let r = self.stream(
                self.in_container(ctr, &["sh", "-c", t]),
                &format!("test `{t}`"),
                &|line| {
                    let mut q = tail.lock().unwrap_or_else(|e| e.into_inner());
                    if q.len() == 20 {
                        q.pop_front();
                    }
                    q.push_back(line.to_string());
                },
            );
            let output = tail
                .into_inner()
                .unwrap_or_else(|e| e.into_inner())
                .into_iter()
                .collect::<Vec<_>>()
                .join("\n");
            self.note(&format!(
                "## test {}/{} {}: {t}",
                i + 1,
                tests.len(),
                if r.is_ok() { "passed" } else { "FAILED" }
            ));
            outcomes.push(TestOutcome {
                command: t.clone(),
                passed: r.is_ok(),
                error: r.err(),
                output,
            });
        }
        let mut rm = self.buildah();
        rm.args(["rm", ctr]);
        self.capture(rm, "buildah rm (tests)")?;
        Ok(outcomes)
    }

    /// `buildah from --name ctr image`. A container of that name is a
    /// leftover of an earlier attempt at this very digest (killed, or
    /// failed and kept): it is removed and `from` tried again. Trying first
    /// spares a `buildah rm` on every build.
    fn create_container(
        &self,
        flags: &[&str],
        ctr: &str,
        image: &str,
        what: &str,
    ) -> std::result::Result<String, String> {
        let from = || {
            let mut c = self.buildah();
            c.arg("from").args(flags).args(["--name", ctr, image]);
            c
        };
        match self.capture(from(), what) {
            Err(m) if m.contains("already in use") => {
                self.remove_stale(ctr);
                self.capture(from(), what)
            }
            r => r,
        }
    }

    /// Removes a container of this name left by an earlier attempt.
    fn remove_stale(&self, ctr: &str) {
        let mut rm = self.buildah();
        rm.args(["rm", ctr])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if rm.status().is_ok_and(|s| s.success()) {
            self.note(&format!(
                "# removed the stale container {ctr} of an earlier attempt"
            ));
        }
    }

    fn note(&self, line: &str) {
        if let Ok(mut f) = self.log.lock() {
            let _ = writeln!(f, "{}", self.secrets.redact(line));
        }
    }

    fn step(&self, step: &str) {
        self.note(&format!("## {step}"));
        self.sink.step(&self.label, &self.secrets.redact(step));
    }

    fn buildah(&self) -> Command {
        let mut c = self.tool.command(&self.tool.buildah);
        c.stdin(Stdio::null());
        c
    }

    /// Runs a command whose stdout we need (a container name, a mount point).
    fn capture(&self, mut cmd: Command, what: &str) -> std::result::Result<String, String> {
        self.note(&format!("$ {}", render_with_context(&cmd)));
        let out = cmd
            .output()
            .map_err(|e| format!("{what}: cannot run: {e}"))?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !stderr.trim().is_empty() {
            self.note(stderr.trim_end());
        }
        if !out.status.success() {
            return Err(format!("{what} failed ({}): {}", out.status, stderr.trim()));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Runs a command with stdout and stderr merged into the log, line by
    /// line; `on_line` sees every line (for Ansible task names).
    fn stream(
        &self,
        mut cmd: Command,
        what: &str,
        on_line: &dyn Fn(&str),
    ) -> std::result::Result<(), String> {
        self.note(&format!("$ {}", render_with_context(&cmd)));
        let (reader, writer) = std::io::pipe().map_err(|e| format!("{what}: pipe: {e}"))?;
        let writer2 = writer
            .try_clone()
            .map_err(|e| format!("{what}: pipe: {e}"))?;
        cmd.stdout(writer).stderr(writer2);
        if crate::interrupt::requested() {
            return Err(format!("{what}: not started: the build was interrupted"));
        }
        // Its own process group, which an interrupt is passed to (so the
        // processes it starts, Ansible's workers, get it too).
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("{what}: cannot run {}: {e}", render_program(&cmd)))?;
        let _step = crate::interrupt::track(&child);
        // Drop our copies of the write end so reading ends when the child exits.
        drop(cmd);
        let mut reader = BufReader::new(reader);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf);
                    let line = line.trim_end_matches(['\n', '\r']);
                    self.note(line);
                    on_line(&self.secrets.redact(line));
                }
                Err(e) => return Err(format!("{what}: reading output: {e}")),
            }
        }
        let status = child.wait().map_err(|e| format!("{what}: {e}"))?;
        if !status.success() {
            if crate::interrupt::requested() {
                return Err(format!("{what}: interrupted ({status})"));
            }
            return Err(format!("{what} failed ({status})"));
        }
        Ok(())
    }

    fn in_container(&self, ctr: &str, argv: &[&str]) -> Command {
        let mut c = self.buildah();
        c.args(["run", "--isolation", &self.isolation, ctr, "--"])
            .args(argv);
        c
    }
}

impl Build<'_> {
    fn run_all(&self) -> std::result::Result<BuildOutput, BuildFailure> {
        let req = self.req;
        let ctr = req.container_name.as_str();
        if req.reuse_container {
            self.note(&format!(
                "# re-running the steps in the kept container {ctr}; nothing will be committed"
            ));
        } else {
            self.step("buildah from");
            let image = req.from.as_deref().unwrap_or("scratch");
            self.create_container(&[], ctr, image, "buildah from")
                .map_err(|m| BuildFailure {
                    message: m,
                    container: None,
                })?;
        }

        match self.steps(ctr) {
            Ok(id) if req.reuse_container || req.tests.is_empty() => {
                Ok(BuildOutput { image_id: id })
            }
            Ok(id) => self.test_image(id),
            Err(message) => {
                let mut um = self.buildah();
                um.args(["umount", ctr]);
                let _ = self.capture(um, "buildah umount");
                self.note(&format!("## failed: {message}"));
                Err(BuildFailure {
                    message,
                    container: Some(ctr.to_string()),
                })
            }
        }
    }

    /// Runs the layer's tests on its image, committed as `NAME-untested`.
    /// It gets its name only once they pass (so an interrupted build never
    /// leaves a named, untested image to adopt); on a failure it is kept as
    /// `NAME-failed` for inspection.
    fn test_image(&self, id: String) -> std::result::Result<BuildOutput, BuildFailure> {
        let req = self.req;
        let ctr = format!("{}-test", req.container_name);
        let failure = |message: String| BuildFailure {
            message,
            container: None,
        };
        let outcomes = self.run_tests(&id, &ctr, &req.tests).map_err(|m| {
            self.note(&format!("## failed: {m}"));
            failure(m)
        })?;
        let failed: Vec<&TestOutcome> = outcomes.iter().filter(|o| !o.passed).collect();
        let untested = untested_name(&req.image_name);
        let rename = |to: &str| {
            let mut tag = self.buildah();
            tag.args(["tag", &id, to]);
            let mut untag = self.buildah();
            untag.args(["rmi", &untested]);
            self.capture(tag, "buildah tag")
                .and_then(|_| self.capture(untag, "buildah rmi"))
        };
        let Some(first) = failed.first() else {
            rename(&req.image_name).map_err(|m| {
                self.note(&format!("## failed: {m}"));
                failure(m)
            })?;
            return Ok(BuildOutput { image_id: id });
        };
        let kept = format!("{}-failed", req.image_name);
        let renamed = rename(&kept);
        let mut message = format!(
            "{} of {} image tests failed; first: {}",
            failed.len(),
            outcomes.len(),
            first
                .error
                .clone()
                .unwrap_or_else(|| format!("test `{}` failed", first.command))
        );
        match renamed {
            Ok(_) => message.push_str(&format!("; the image is kept as {kept}")),
            Err(e) => message.push_str(&format!("; could not rename the image: {e}")),
        }
        self.note(&format!("## failed: {message}"));
        Err(failure(message))
    }

    fn steps(&self, ctr: &str) -> std::result::Result<String, String> {
        let req = self.req;
        let quiet = |_: &str| {};
        let mut mount = self.buildah();
        mount.args(["mount", ctr]);
        let root = self.capture(mount, "buildah mount")?;

        for cmd in &req.setup {
            self.step(&format!("setup: {cmd}"));
            let expanded = cmd.replace("{root}", &shell_words::quote(&root));
            let mut c = self.tool.command("sh");
            c.args(["-c", &expanded])
                .current_dir(&req.workspace_root)
                .env("LAYERBUILD_ROOT", &root)
                .stdin(Stdio::null());
            self.stream(c, &format!("setup command `{cmd}`"), &quiet)?;
        }

        if !req.packages.is_empty() {
            self.step(&format!("packages: {}", req.packages.join(" ")));
            let quoted: Vec<String> = req
                .packages
                .iter()
                .map(|p| shell_words::quote(p).into_owned())
                .collect();
            let cmd = req.package_command.replace("{packages}", &quoted.join(" "));
            self.stream(
                self.in_container(ctr, &["sh", "-c", &cmd]),
                "package installation",
                &quiet,
            )?;
        }

        if !req.scripts.is_empty() {
            let dir = Path::new(&root).join("tmp/.layerbuild");
            std::fs::create_dir_all(&dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            for (i, script) in req.scripts.iter().enumerate() {
                let name = script
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                self.step(&format!("script: {name}"));
                let dest_name = format!("{i}-{name}");
                let dest = dir.join(&dest_name);
                std::fs::copy(script, &dest)
                    .map_err(|e| format!("cannot copy {}: {e}", script.display()))?;
                set_executable(&dest)
                    .map_err(|e| format!("cannot chmod {}: {e}", dest.display()))?;
                let inside = format!("/tmp/.layerbuild/{dest_name}");
                self.stream(
                    self.in_container(ctr, &[&inside]),
                    &format!("script {name}"),
                    &quiet,
                )?;
            }
            std::fs::remove_dir_all(&dir)
                .map_err(|e| format!("cannot remove {}: {e}", dir.display()))?;
        }

        for cmd in &req.run {
            self.step(&format!("run: {cmd}"));
            self.stream(
                self.in_container(ctr, &["sh", "-c", cmd]),
                &format!("run command `{cmd}`"),
                &quiet,
            )?;
        }

        if let Some(play) = &req.play {
            self.play(ctr, &root, play)?;
        }

        if req.reuse_container {
            let mut um = self.buildah();
            um.args(["umount", ctr]);
            let _ = self.capture(um, "buildah umount");
            return Ok(String::new());
        }

        self.step("buildah commit");
        // buildah 1.28's commit has no --label: set them on the container.
        let mut config = self.buildah();
        config
            .args([
                "config",
                "--label",
                &format!("layerbuild.digest={}", req.digest),
            ])
            .args(["--label", &format!("layerbuild.label={}", req.label)])
            .arg(ctr);
        self.capture(config, "buildah config")?;
        let iid = req.work_dir.join("iid");
        let mut commit = self.buildah();
        commit.args(["commit", "--rm", "--quiet"]);
        if let Some(t) = req.timestamp {
            commit.args(["--timestamp", &t.to_string()]);
        }
        commit.arg("--iidfile").arg(&iid).arg(ctr).arg(
            if req.tests.is_empty() || req.reuse_container {
                req.image_name.clone()
            } else {
                untested_name(&req.image_name)
            },
        );
        self.capture(commit, "buildah commit")?;
        let id = std::fs::read_to_string(&iid).map_err(|e| format!("reading image id: {e}"))?;
        Ok(normalize_id(id.trim()))
    }

    fn play(&self, ctr: &str, root: &str, play: &PlayRequest) -> std::result::Result<(), String> {
        let req = self.req;
        let mut c = self.tool.command(&self.tool.ansible_playbook);
        let host = match play.connection {
            Connection::Chroot => root,
            Connection::Buildah => ctr,
        };
        super::ansible::playbook_command(&mut c, play, &req.work_dir, host, &[])?;
        c.env("BUILDAH_ISOLATION", &req.isolation);
        if play.connection == Connection::Buildah
            && std::env::var_os("ANSIBLE_PIPELINING").is_none()
        {
            // One `buildah run` per module instead of three.
            c.env("ANSIBLE_PIPELINING", "True");
        }
        let c = match play.connection {
            Connection::Chroot => in_private_mounts(c, root),
            Connection::Buildah => c,
        };
        self.step(&format!("ansible-playbook {}", play.playbook));
        let label = req.label.clone();
        let sink = self.sink;
        let r = self.stream(c, &format!("ansible-playbook {}", play.playbook), &|line| {
            if let Some(task) = line.strip_prefix("TASK [") {
                let task = task.split(']').next().unwrap_or(task);
                sink.step(&label, &format!("ansible: {task}"));
            }
        });
        // It may hold secret values; written again by each run.
        let _ = std::fs::remove_file(req.work_dir.join(crate::ops::gc::VARS_FILE));
        r
    }
}

/// Mounts, in a private mount namespace that dies with the command, what
/// modules expect under the root a chroot connection enters: a fresh
/// /proc, a read-only /sys and a minimal /dev (the device nodes buildah's
/// chroot isolation gives too). Nothing leaks to the host or into the
/// image, even when the command is killed; directories the image lacks are
/// left alone.
const PRIVATE_MOUNTS: &str = concat!(
    // One line, so the build log keeps one line per command.
    "set -e; r=\"$1\"; shift; ",
    "if [ -d \"$r/proc\" ]; then mount -t proc proc \"$r/proc\"; fi; ",
    "if [ -d \"$r/sys\" ]; then mount -t sysfs -o ro,nosuid,nodev,noexec sysfs \"$r/sys\"; fi; ",
    "if [ -d \"$r/dev\" ]; then ",
    "mount -t tmpfs -o nosuid,mode=0755 dev \"$r/dev\"; ",
    "for d in null zero full random urandom tty; do : > \"$r/dev/$d\"; mount --bind \"/dev/$d\" \"$r/dev/$d\"; done; ",
    "mkdir -p \"$r/dev/pts\" \"$r/dev/shm\"; ",
    "mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts \"$r/dev/pts\"; ",
    "ln -s pts/ptmx \"$r/dev/ptmx\"; ",
    "mount -t tmpfs -o nosuid,nodev shm \"$r/dev/shm\"; ",
    "ln -s /proc/self/fd \"$r/dev/fd\"; ",
    "ln -s /proc/self/fd/0 \"$r/dev/stdin\"; ",
    "ln -s /proc/self/fd/1 \"$r/dev/stdout\"; ",
    "ln -s /proc/self/fd/2 \"$r/dev/stderr\"; ",
    "fi; ",
    "exec \"$@\""
);

/// `cmd` run by `unshare --mount` after [`PRIVATE_MOUNTS`]; same
/// environment, working directory and I/O.
fn in_private_mounts(cmd: Command, root: &str) -> Command {
    let mut w = Command::new("unshare");
    w.args([
        "--mount",
        "--propagation",
        "private",
        "--",
        "sh",
        "-c",
        PRIVATE_MOUNTS,
        "sh",
        root,
    ]);
    w.arg(cmd.get_program()).args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => w.env(k, v),
            None => w.env_remove(k),
        };
    }
    if let Some(d) = cmd.get_current_dir() {
        w.current_dir(d);
    }
    w.stdin(Stdio::null());
    w
}

#[cfg(unix)]
fn set_executable(p: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755))
}

#[cfg(not(unix))]
fn set_executable(_p: &Path) -> std::io::Result<()> {
    Ok(())
}

fn render_program(cmd: &Command) -> String {
    cmd.get_program().to_string_lossy().into_owned()
}

/// A command as a shell line, for logs and for users to copy.
fn render(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| shell_words::quote(&a.to_string_lossy()).into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// [`render`] with the directory and the environment the command is given
/// (`cd DIR && K=V ... PROGRAM ARGS`): a log line that reruns exactly what
/// ran, which is what the overhead benchmark replays.
fn render_with_context(cmd: &Command) -> String {
    let mut s = String::new();
    if let Some(dir) = cmd.get_current_dir() {
        s.push_str(&format!(
            "cd {} && ",
            shell_words::quote(&dir.to_string_lossy())
        ));
    }
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            s.push_str(&format!(
                "{}={} ",
                k.to_string_lossy(),
                shell_words::quote(&v.to_string_lossy())
            ));
        }
    }
    s + &render(cmd)
}

/// Direct container operations for `debug`, `ls --failed` and `clean --failed`.
impl Buildah {
    /// Names of all working containers.
    pub fn containers(&self) -> Result<HashSet<String>> {
        let out = self.list(&["containers", "--format", "{{.ContainerName}}"])?;
        if !out.status.success() {
            return Err(Error::env(format!(
                "buildah containers failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.trim().to_string())
            .collect())
    }

    /// Creates a container named `name` from `image`.
    pub fn from_image(&self, name: &str, image: &str) -> Result<()> {
        let out = self
            .command(&self.buildah)
            .args(["from", "--name", name, image])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| tool_missing(&self.buildah, "buildah", e))?;
        if !out.status.success() {
            return Err(Error::env(format!(
                "buildah from {image} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(())
    }

    pub fn remove_container(&self, name: &str) -> Result<()> {
        let out = self
            .command(&self.buildah)
            .args(["rm", name])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| tool_missing(&self.buildah, "buildah", e))?;
        if !out.status.success() {
            return Err(Error::env(format!(
                "buildah rm {name} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(())
    }

    /// Every image with its names and size (for `gc`).
    pub fn image_list(&self) -> Result<Vec<ImageInfo>> {
        let out = self.list(&["images", "--json", "--no-trunc"])?;
        if !out.status.success() {
            return Err(Error::env(format!(
                "buildah images failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        // An empty store prints nothing rather than `[]`.
        if text.trim().is_empty() {
            return Ok(vec![]);
        }
        let v: Vec<serde_json::Value> = serde_json::from_str(&text)
            .map_err(|e| Error::env(format!("buildah images --json: unexpected output: {e}")))?;
        Ok(v.iter()
            .map(|i| ImageInfo {
                id: normalize_id(i["id"].as_str().unwrap_or("")),
                names: i["names"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|n| n.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default(),
                size: parse_size(&i["size"]),
            })
            .collect())
    }

    /// `buildah rmi NAME`: removes the name, and the image if it was its last
    /// name and no other image is built on it.
    pub fn remove_image(&self, name: &str) -> Result<RmiOutcome> {
        let out = self
            .command(&self.buildah)
            .args(["rmi", name])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| tool_missing(&self.buildah, "buildah", e))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.success() {
            // Only "untagged: NAME" when the image stays (other names, or
            // images built on it); its id as well when it was deleted.
            let deleted = stdout.lines().any(|l| !l.starts_with("untagged:"));
            return Ok(if deleted {
                RmiOutcome::Removed
            } else {
                RmiOutcome::Untagged
            });
        }
        if stderr.contains("image not known") {
            return Ok(RmiOutcome::NotKnown);
        }
        if stderr.contains("in use by a container") {
            return Ok(RmiOutcome::InUse);
        }
        Err(Error::env(format!(
            "buildah rmi {name} failed: {}",
            stderr.trim()
        )))
    }

    /// The command line that runs `argv` (or a shell) in container `name`.
    pub fn run_command(&self, name: &str, isolation: &str, tty: bool, argv: &[String]) -> Command {
        let mut c = self.command(&self.buildah);
        c.stdin(Stdio::inherit());
        c.args(["run", "--isolation", isolation]);
        if tty {
            c.arg("--tty");
        }
        c.arg(name).arg("--");
        if argv.is_empty() {
            c.arg("sh");
        } else {
            c.args(argv);
        }
        c
    }

    pub fn render(cmd: &Command) -> String {
        render(cmd)
    }
}

/// One image of the local store.
#[derive(Debug, Clone)]
pub struct ImageInfo {
    pub id: String,
    pub names: Vec<String>,
    /// Bytes, as buildah reports them (the whole image, shared layers included).
    pub size: u64,
}

/// How `buildah rmi NAME` went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RmiOutcome {
    /// The image is gone.
    Removed,
    /// The name is gone; the image stays (another name, or images built on it).
    Untagged,
    /// There was no such image.
    NotKnown,
    /// A container uses the image.
    InUse,
}

/// buildah's image size: bytes, or (buildah 1.28) a decimal human string such
/// as `"2.13 MB"`. Unreadable sizes count as 0.
fn parse_size(v: &serde_json::Value) -> u64 {
    if let Some(n) = v.as_u64() {
        return n;
    }
    let Some(s) = v.as_str() else { return 0 };
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let Ok(n) = s[..split].parse::<f64>() else {
        return 0;
    };
    let mult: f64 = match s[split..].trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "tb" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        _ => return 0,
    };
    (n * mult).round() as u64
}

impl super::Registry for Buildah {
    fn lookup(
        &self,
        reference: &str,
        tls_verify: bool,
    ) -> std::result::Result<RegistryEntry, String> {
        self.registry_lookup(reference, tls_verify)
    }
    fn pull(&self, reference: &str, tls_verify: bool) -> std::result::Result<String, String> {
        Buildah::pull(self, reference, tls_verify)
    }
    fn push(
        &self,
        image_id: &str,
        reference: &str,
        tls_verify: bool,
    ) -> std::result::Result<(), String> {
        Buildah::push(self, image_id, reference, tls_verify)
    }
    fn digest_label(&self, image_id: &str) -> std::result::Result<String, String> {
        Buildah::digest_label(self, image_id)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn reads_image_sizes_as_bytes_or_human_strings() {
        assert_eq!(super::parse_size(&json!(2130000)), 2_130_000);
        assert_eq!(super::parse_size(&json!("2.13 MB")), 2_130_000);
        assert_eq!(super::parse_size(&json!("512 B")), 512);
        assert_eq!(super::parse_size(&json!("1.5 kB")), 1500);
        assert_eq!(super::parse_size(&json!("1 GB")), 1_000_000_000);
        assert_eq!(super::parse_size(&json!("huge")), 0);
        assert_eq!(super::parse_size(&json!(null)), 0);
    }
}

//! One logged sequence of buildah commands for one layer: a build (from,
//! setup, packages, scripts, run, play, commit, tests) or a run of its
//! tests. Every command line and its whole output go to the layer's log.
//!
//! I/O: writes the log, copies scripts into the mounted root, writes the
//! generated inventory under the request's work directory; processes are
//! started through [`crate::executor::cli`].

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;

use super::Buildah;
use super::parse::normalize_id;
use crate::executor::{
    BuildFailure, BuildOutput, BuildRequest, Connection, PlayRequest, StepSink, TestOutcome,
    TestRequest, ToolError, ToolErrorKind, ToolResult, cli,
};

/// The name a layer's image carries until its tests pass.
fn untested_name(image_name: &str) -> String {
    format!("{image_name}-untested")
}

/// Builds `req` (the real [`crate::executor::Executor::build`]).
pub(super) fn build(
    tool: &Buildah,
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
            crate::executor::ansible::vault_values(&tool.ansible_playbook, play, &req.work_dir);
        for v in values {
            secrets.add(&serde_json::Value::String(v));
        }
        vault_note = why;
    }
    let session = Session::new(tool, &req.label, &req.isolation, sink, &req.log_path)
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

/// Runs a built image's tests in their own log (`layerbuild test`).
pub(super) fn run_tests(tool: &Buildah, req: &TestRequest) -> ToolResult<Vec<TestOutcome>> {
    struct Quiet;
    impl StepSink for Quiet {
        fn step(&self, _label: &str, _step: &str) {}
    }
    let failed = |m: String| ToolError::new(ToolErrorKind::Failed, &tool.buildah, "test", m);
    let session = Session::new(tool, &req.label, &req.isolation, &Quiet, &req.log_path)
        .map_err(|m| ToolError::new(ToolErrorKind::Local, &tool.buildah, "test", m))?;
    session
        .run_tests(&req.image, &req.container, &req.tests)
        .map_err(failed)
}

/// One logged sequence of buildah commands for one layer: a build, or a run
/// of its tests. Every command line and its whole output go to the log.
pub(super) struct Session<'a> {
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
        if cli::status(&mut rm).is_ok_and(|s| s.success()) {
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
        let out = cli::output(&mut cmd).map_err(|e| format!("{what}: cannot run: {e}"))?;
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
        cmd: Command,
        what: &str,
        on_line: &dyn Fn(&str),
    ) -> std::result::Result<(), String> {
        self.note(&format!("$ {}", render_with_context(&cmd)));
        cli::stream(cmd, what, &mut |line| {
            self.note(line);
            on_line(&self.secrets.redact(line));
        })
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

        self.commit(ctr)
    }

    /// Labels the container with the digest and label, commits it (as
    /// `NAME-untested` while tests are to run) and returns the image id.
    fn commit(&self, ctr: &str) -> std::result::Result<String, String> {
        let req = self.req;
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
        crate::executor::ansible::playbook_command(&mut c, play, &req.work_dir, host, &[])?;
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
    let mut w = cli::command("unshare", None);
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

/// A command as a shell line, for logs and for users to copy.
pub(super) fn render(cmd: &Command) -> String {
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

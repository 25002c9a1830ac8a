//! Runs the [`Step`]s of one layer ([`super::steps`]) as one logged
//! sequence: a build, or a run of its tests. The interpreter fills in the
//! values the steps leave open (the mount point, the image id), says each
//! step as progress, and decides what a failure means (the working
//! container kept, a test failed, the image kept as `NAME-failed`). Every
//! command line and its whole output go to the layer's log, secret values
//! redacted.
//!
//! I/O: writes the log, copies scripts into the mounted root, writes the
//! generated inventory under the request's work directory; processes are
//! started through [`crate::executor::cli`].

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

use super::Buildah;
use super::parse::normalize_id;
use super::steps::{Action, Arg, Known, Line, Mode, Phase, Step, steps, test_steps, umount};
use crate::executor::ansible;
use crate::executor::{
    BuildFailure, BuildOutput, BuildRequest, BuildResult, StepSink, TaskEvent, TestOutcome,
    TestRequest, ToolError, ToolErrorKind, ToolResult, cli,
};

/// Builds `req` (the real [`crate::executor::Executor::build`]).
pub(super) fn build(tool: &Buildah, req: &BuildRequest, sink: &dyn StepSink) -> BuildResult {
    let fail = |message: String| BuildFailure {
        message,
        container: None,
        tests: vec![],
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
    let session = Session::new(tool, &req.label, sink, &req.log_path)
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

/// What [`Buildah::build`] would run for `req` (`build --dry-run -v`).
pub(super) fn planned(tool: &Buildah, req: &BuildRequest) -> Vec<String> {
    let conf = tool.storage_conf.as_ref().map(|c| c.to_string_lossy());
    let known = Known {
        buildah: &tool.buildah,
        ansible_playbook: &tool.ansible_playbook,
        storage_conf: conf.as_deref(),
        mount: None,
        image_id: None,
        tests_failed: false,
        env_set: &env_set,
        ansible_left_out: &ansible::left_out_of_env(),
    };
    steps(req)
        .iter()
        .filter_map(|s| known.render(s))
        .map(|line| req.secrets.redact(&line).into_owned())
        .collect()
}

fn env_set(key: &str) -> bool {
    std::env::var_os(key).is_some()
}

/// Runs a built image's tests in their own log (`layerbuild test`).
pub(super) fn run_tests(tool: &Buildah, req: &TestRequest) -> ToolResult<Vec<TestOutcome>> {
    struct Quiet;
    impl StepSink for Quiet {
        fn step(&self, _label: &str, _step: &str) {}
    }
    let failed = |m: String| ToolError::new(ToolErrorKind::Failed, &tool.buildah, "test", m);
    let session = Session::new(tool, &req.label, &Quiet, &req.log_path)
        .map_err(|m| ToolError::new(ToolErrorKind::Local, &tool.buildah, "test", m))?;
    let mut st = State::default();
    let image = Arg::Text(req.image.clone());
    for step in test_steps(image, &req.container, &req.isolation, &req.tests) {
        session.exec(&step, &mut st).map_err(failed)?;
    }
    Ok(st.outcomes)
}

/// One logged sequence of buildah commands for one layer: a build, or a run
/// of its tests. Every command line and its whole output go to the log.
pub(super) struct Session<'a> {
    tool: &'a Buildah,
    label: String,
    sink: &'a dyn StepSink,
    log: Mutex<File>,
    /// Redacted from every log line and step.
    secrets: crate::secrets::Secrets,
    /// Inherited `ANSIBLE_*` variables a play runs without.
    ansible_left_out: Vec<String>,
}

/// What the steps have learnt so far.
#[derive(Default)]
struct State {
    mount: Option<String>,
    image_id: Option<String>,
    outcomes: Vec<TestOutcome>,
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
            sink,
            log: Mutex::new(log),
            secrets: Default::default(),
            ansible_left_out: ansible::left_out_of_env(),
        })
    }

    /// Redacts these values from the log and the progress lines.
    pub fn with_secrets(mut self, secrets: crate::secrets::Secrets) -> Self {
        self.secrets = secrets;
        self
    }

    /// What is known after the steps so far.
    fn known<'s>(&'s self, st: &'s State, conf: Option<&'s str>) -> Known<'s> {
        Known {
            buildah: &self.tool.buildah,
            ansible_playbook: &self.tool.ansible_playbook,
            storage_conf: conf,
            mount: st.mount.as_deref(),
            image_id: st.image_id.as_deref(),
            tests_failed: st.outcomes.iter().any(|o| !o.passed),
            env_set: &env_set,
            ansible_left_out: &self.ansible_left_out,
        }
    }

    /// Says `step` and does it.
    fn exec(&self, step: &Step, st: &mut State) -> std::result::Result<(), String> {
        if let Some(name) = &step.name {
            self.step(name);
        }
        let conf = self.tool.storage_conf.as_ref().map(|c| c.to_string_lossy());
        let known = self.known(st, conf.as_deref());
        match &step.action {
            Action::Run { cmd, mode, what } => {
                let line = known.line(cmd);
                self.run(&line, mode, what, st)
            }
            Action::Note(line) => {
                self.note(line);
                Ok(())
            }
            Action::MakeDir(d) => {
                let dir = known.in_root(d);
                std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {dir}: {e}"))
            }
            Action::CopyIn { from, to } => {
                let dest = known.in_root(to);
                std::fs::copy(from, &dest)
                    .map_err(|e| format!("cannot copy {}: {e}", from.display()))?;
                set_executable(Path::new(&dest)).map_err(|e| format!("cannot chmod {dest}: {e}"))
            }
            Action::RemoveDir(d) => {
                let dir = known.in_root(d);
                std::fs::remove_dir_all(&dir).map_err(|e| format!("cannot remove {dir}: {e}"))
            }
            Action::PlayFiles {
                play,
                work_dir,
                host,
            } => {
                let host = known.line(&super::steps::Cmd {
                    argv: vec![host.clone()],
                    ..Default::default()
                });
                let host = host.known()?;
                let notes =
                    crate::executor::ansible::write_play_files(play, work_dir, host.argv[0])?;
                for n in notes {
                    self.note(&n);
                }
                Ok(())
            }
            Action::ReadImageId(iid) => {
                let id =
                    std::fs::read_to_string(iid).map_err(|e| format!("reading image id: {e}"))?;
                st.image_id = Some(normalize_id(id.trim()));
                Ok(())
            }
        }
    }

    /// Runs one command as `mode` says.
    fn run(
        &self,
        line: &Line,
        mode: &Mode,
        what: &str,
        st: &mut State,
    ) -> std::result::Result<(), String> {
        let quiet = |_: &str| {};
        match mode {
            Mode::Capture => self.capture(line, what).map(drop),
            Mode::Ignore => {
                let _ = self.capture(line, what);
                Ok(())
            }
            Mode::Mount => {
                st.mount = Some(self.capture(line, what)?);
                Ok(())
            }
            Mode::From { container } => match self.capture(line, what) {
                // A leftover of an earlier attempt at this very digest
                // (killed, or failed and kept): trying first spares a
                // `buildah rm` on every build.
                Err(m) if m.contains("already in use") => {
                    self.remove_stale(container);
                    self.capture(line, what).map(drop)
                }
                r => r.map(drop),
            },
            Mode::Arch {
                expected,
                container,
                parent,
            } => {
                let found = self.capture(line, what)?;
                // An image that does not say (`""`) is taken as it is; one
                // that does is compared in any vocabulary (`x86_64`, `amd64`).
                let same =
                    crate::arch::Arch::parse(&found).is_some_and(|a| a.oci() == expected.as_str());
                if found.is_empty() || same {
                    return Ok(());
                }
                let mut rm = self.tool.command(&self.tool.buildah);
                rm.args(["rm", container])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null());
                let _ = cli::status(&mut rm);
                Err(format!(
                    "its parent {parent} is a {found} image, not {expected}: building on it would make a {found} image; put the {expected} one in container storage (buildah pull --arch {expected} {parent}), or name an image of {expected}"
                ))
            }
            Mode::Stream => self.stream(line, what, &quiet),
            Mode::Play {
                remove_after,
                events,
                source,
            } => {
                let tail = EventTail::new(events, source);
                let done = std::sync::atomic::AtomicBool::new(false);
                let r = std::thread::scope(|scope| {
                    // Task events as they come, while the play runs.
                    scope.spawn(|| {
                        // The running task: when it started, and whether it
                        // was said to be still running.
                        let mut running: Option<(TaskEvent, std::time::Instant, bool)> = None;
                        while !done.load(std::sync::atomic::Ordering::Relaxed) {
                            if let Some(ev) = self.task_events(&tail) {
                                running = (ev.event == "task")
                                    .then(|| (ev, std::time::Instant::now(), false));
                            }
                            if let Some((ev, since, said)) = &mut running
                                && !*said
                                && since.elapsed() >= STILL_RUNNING
                            {
                                // A long task shows in a plain log before it ends.
                                *said = true;
                                let still = TaskEvent {
                                    event: "running".into(),
                                    duration: Some(since.elapsed().as_secs_f64()),
                                    ..ev.clone()
                                };
                                self.sink.task(&self.label, &still);
                            }
                            std::thread::sleep(std::time::Duration::from_millis(100));
                        }
                    });
                    let r = self.stream(line, what, &|_| {});
                    done.store(true, std::sync::atomic::Ordering::Relaxed);
                    r
                });
                let _ = self.task_events(&tail);
                // They may hold secret values (the events quote what tasks
                // said); written again by each run.
                let _ = std::fs::remove_file(remove_after);
                let _ = std::fs::remove_file(events);
                r.map_err(|m| match tail.failed() {
                    Some(f) => format!(
                        "task `{}`{} failed: {}",
                        f.title(),
                        f.path
                            .as_deref()
                            .map(|p| format!(" ({p})"))
                            .unwrap_or_default(),
                        self.secrets.redact(&f.message())
                    ),
                    None => m,
                })
            }
            Mode::Test { n, of, command } => {
                let outcome = self.test(line, what, command);
                self.note(&format!(
                    "## test {n}/{of} {}: {command}",
                    if outcome.passed { "passed" } else { "FAILED" }
                ));
                st.outcomes.push(outcome);
                Ok(())
            }
        }
    }

    /// Passes on the task events the play appended since the last call:
    /// redacted, and each task start as the layer's current step. The last
    /// of them, if any.
    fn task_events(&self, tail: &EventTail) -> Option<TaskEvent> {
        let mut last = None;
        for mut ev in tail.read_new() {
            let redact = |s: &mut String| *s = self.secrets.redact(s).into_owned();
            redact(&mut ev.name);
            for s in [&mut ev.stderr, &mut ev.stdout, &mut ev.module_stderr]
                .into_iter()
                .flatten()
            {
                redact(s);
            }
            if let Some(m) = &ev.msg {
                let text = match m {
                    serde_json::Value::String(s) => s.clone(),
                    v => v.to_string(),
                };
                ev.msg = Some(serde_json::Value::String(
                    self.secrets.redact(&text).into_owned(),
                ));
            }
            if ev.event == "task" {
                self.sink
                    .step(&self.label, &format!("ansible: {}", ev.title()));
            }
            self.sink.task(&self.label, &ev);
            last = Some(ev);
        }
        last
    }

    /// Runs an image test, keeping the last lines of its output.
    fn test(&self, line: &Line, what: &str, command: &str) -> TestOutcome {
        let t0 = std::time::Instant::now();
        let tail = Mutex::new(std::collections::VecDeque::new());
        let r = self.stream(line, what, &|line| {
            let mut q = tail.lock().unwrap_or_else(|e| e.into_inner());
            if q.len() == 20 {
                q.pop_front();
            }
            q.push_back(line.to_string());
        });
        let output = tail
            .into_inner()
            .unwrap_or_else(|e| e.into_inner())
            .into_iter()
            .collect::<Vec<_>>()
            .join("\n");
        TestOutcome {
            command: command.to_string(),
            passed: r.is_ok(),
            error: r.err(),
            output,
            duration_ms: u64::try_from(t0.elapsed().as_millis()).unwrap_or(u64::MAX),
        }
    }

    /// Removes a container of this name left by an earlier attempt.
    fn remove_stale(&self, ctr: &str) {
        let mut rm = self.tool.command(&self.tool.buildah);
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

    /// `line` as a process to start, logged.
    fn command(&self, line: &Line, what: &str) -> std::result::Result<Command, String> {
        self.note(&format!("$ {}", line.render()));
        let ready = line
            .known()
            .map_err(|p| format!("{what}: internal: {p} is not known yet"))?;
        let mut c = cli::command(ready.argv[0], None);
        for name in &ready.unset {
            c.env_remove(name);
        }
        c.args(&ready.argv[1..])
            .envs(ready.env)
            .stdin(Stdio::null());
        if let Some(d) = &line.dir {
            c.current_dir(d);
        }
        // Files a setup command or a play creates get their modes from the
        // umask, which is no input: every build runs under 022, whatever
        // the caller's (a machine with 002 would otherwise cache
        // group-writable files under the digest another builds with 644).
        {
            use std::os::unix::process::CommandExt;
            // SAFETY: umask is async-signal-safe and allocates nothing.
            unsafe {
                c.pre_exec(|| {
                    libc::umask(0o022);
                    Ok(())
                });
            }
        }
        Ok(c)
    }

    /// Runs a command whose stdout we need (a container name, a mount point).
    fn capture(&self, line: &Line, what: &str) -> std::result::Result<String, String> {
        let mut cmd = self.command(line, what)?;
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
        line: &Line,
        what: &str,
        on_line: &dyn Fn(&str),
    ) -> std::result::Result<(), String> {
        let cmd = self.command(line, what)?;
        cli::stream(cmd, what, &mut |line| {
            self.note(line);
            on_line(&self.secrets.redact(line));
        })
    }
}

impl Build<'_> {
    /// Runs the steps in order; a failure ends the build as its phase says.
    fn run_all(&self) -> BuildResult {
        let ctr = &self.req.container_name;
        let mut st = State::default();
        let mut renamed = Ok(());
        for step in steps(self.req) {
            let Err(message) = self.exec(&step, &mut st) else {
                continue;
            };
            let container = match step.phase {
                Phase::Create => None,
                Phase::Body => {
                    let _ = self.exec(&umount_step(ctr), &mut st);
                    Some(ctr.clone())
                }
                Phase::Tests => None,
                Phase::Rename => {
                    renamed = Err(message);
                    break;
                }
            };
            if step.phase != Phase::Create {
                self.note(&format!("## failed: {message}"));
            }
            return Err(BuildFailure {
                message,
                container,
                tests: st.outcomes,
            });
        }
        self.verdict(st, renamed)
    }

    /// The build's end once its steps ran: the image, or which image tests
    /// failed (the image kept as `NAME-failed`) or why the tested image
    /// could not be named.
    fn verdict(&self, st: State, renamed: std::result::Result<(), String>) -> BuildResult {
        let failure = |message: String| {
            self.note(&format!("## failed: {message}"));
            BuildFailure {
                message,
                container: None,
                tests: st.outcomes.clone(),
            }
        };
        let failed: Vec<&TestOutcome> = st.outcomes.iter().filter(|o| !o.passed).collect();
        let Some(first) = failed.first() else {
            renamed.map_err(failure)?;
            return Ok(BuildOutput {
                image_id: st.image_id.clone().unwrap_or_default(),
                tests: st.outcomes.clone(),
            });
        };
        let kept = format!("{}-failed", self.req.image_name);
        let mut message = format!(
            "{} of {} image tests failed; first: {}",
            failed.len(),
            st.outcomes.len(),
            first
                .error
                .clone()
                .unwrap_or_else(|| format!("test `{}` failed", first.command))
        );
        match renamed {
            Ok(()) => message.push_str(&format!("; the image is kept as {kept}")),
            Err(e) => message.push_str(&format!("; could not rename the image: {e}")),
        }
        Err(failure(message))
    }
}

/// How long a task runs before a plain log says it is still running.
const STILL_RUNNING: std::time::Duration = std::time::Duration::from_secs(10);

/// The events callback's file, read as the play appends to it.
struct EventTail {
    path: PathBuf,
    source: PathBuf,
    state: Mutex<TailState>,
}

#[derive(Default)]
struct TailState {
    offset: u64,
    /// The start of a line not yet complete.
    partial: Vec<u8>,
    /// The last failure that fails the play.
    failed: Option<TaskEvent>,
}

impl EventTail {
    fn new(path: &Path, source: &Path) -> EventTail {
        EventTail {
            path: path.to_path_buf(),
            source: source.to_path_buf(),
            state: Mutex::default(),
        }
    }

    /// The events of the complete lines appended since the last call, task
    /// paths relative to the workspace.
    fn read_new(&self) -> Vec<TaskEvent> {
        use std::io::{Read, Seek, SeekFrom};
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let Ok(mut f) = File::open(&self.path) else {
            return vec![];
        };
        let mut buf = vec![];
        if f.seek(SeekFrom::Start(st.offset)).is_err() || f.read_to_end(&mut buf).is_err() {
            return vec![];
        }
        st.offset += buf.len() as u64;
        st.partial.extend_from_slice(&buf);
        let mut out = vec![];
        while let Some(i) = st.partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = st.partial.drain(..=i).collect();
            let Ok(mut ev) = serde_json::from_slice::<TaskEvent>(&line) else {
                continue;
            };
            if let Some(p) = &ev.path
                && let Ok(rel) = Path::new(p).strip_prefix(&self.source)
            {
                ev.path = Some(rel.display().to_string());
            }
            if ev.is_failure() {
                st.failed = Some(ev.clone());
            }
            out.push(ev);
        }
        out
    }

    fn failed(&self) -> Option<TaskEvent> {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .failed
            .clone()
    }
}

/// Unmounts the working container after a failed step.
fn umount_step(ctr: &str) -> Step {
    Step {
        name: None,
        phase: Phase::Body,
        action: umount(ctr),
    }
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

/// A command as a shell line, for users to copy.
pub(super) fn render(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| shell_words::quote(&a.to_string_lossy()).into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

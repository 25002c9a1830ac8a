//! A layer's build as data: [`steps`] turns a [`BuildRequest`] into the
//! ordered [`Step`]s a build takes (from, mount, setup, packages, scripts,
//! run, play, commit, tests, tag), each command with its argv, environment
//! and directory. Values only a running build knows (the mount point, the
//! committed image's id, a parent's image not built yet) are placeholders
//! ([`Arg`]) that [`super::session`] fills in as it runs the steps, and that
//! `build --dry-run -v` shows as `$MOUNT`, `$IMAGE_ID`, `$IMAGE_ID(LABEL)`.
//! Rendering a step gives the very line the build log shows for it.
//!
//! Pure: no I/O.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::executor::{BaseImage, BuildRequest, Connection, PlayRequest, ansible};

/// The name a layer's image carries until its tests pass.
pub(super) fn untested_name(image_name: &str) -> String {
    format!("{image_name}-untested")
}

/// A word of a command line: literal, or known only to the running build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arg {
    Text(String),
    /// The buildah program configured.
    Buildah,
    /// The ansible-playbook program configured.
    AnsiblePlaybook,
    /// The mount point of the working container, known once mounted.
    Mount,
    /// This text with every `{root}` replaced by the shell-quoted mount point.
    WithMount(String),
    /// The id of the image the build committed.
    ImageId,
    /// The image of this parent layer, not built yet (plans only).
    ImageOf(String),
    /// The image's name once its tests ran: `passed` when all passed, else
    /// `failed`.
    AfterTests {
        passed: String,
        failed: String,
    },
}

fn text(s: impl Into<String>) -> Arg {
    Arg::Text(s.into())
}

/// An environment variable a command gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Env {
    pub key: String,
    pub value: Arg,
    /// Set only when the environment layerbuild runs in lacks it.
    pub unless_set: bool,
}

/// A command: program and arguments, environment, working directory.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Cmd {
    pub argv: Vec<Arg>,
    pub env: Vec<Env>,
    pub dir: Option<PathBuf>,
    /// Runs without the inherited `ANSIBLE_*` variables that could change
    /// what a play makes ([`ansible::left_out`]).
    pub without_ansible_env: bool,
}

impl Cmd {
    fn new(argv: Vec<Arg>) -> Cmd {
        Cmd {
            argv,
            ..Cmd::default()
        }
    }

    fn env(mut self, key: &str, value: Arg) -> Cmd {
        self.env.push(Env {
            key: key.into(),
            value,
            unless_set: false,
        });
        self
    }
}

/// How a command runs and what its end means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Output captured (stderr to the log); a failure fails the step.
    Capture,
    /// [`Mode::Capture`]; a failure is ignored.
    Ignore,
    /// [`Mode::Capture`]; stdout is the mount point ([`Arg::Mount`]).
    Mount,
    /// [`Mode::Capture`] of `buildah from`: when `container` is in use (a
    /// leftover of an earlier attempt at this digest) it is removed and the
    /// command run again.
    From { container: String },
    /// [`Mode::Capture`] of the working container's architecture (OCI's
    /// name): another than `expected` fails the build and removes
    /// `container`, started from `parent`.
    Arch {
        expected: String,
        container: String,
        parent: String,
    },
    /// Output streamed into the log line by line.
    Stream,
    /// [`Mode::Stream`] of ansible-playbook: task names are progress; the
    /// vars file `remove_after` (it may hold secrets) is removed after it,
    /// however it ended.
    Play {
        remove_after: PathBuf,
        /// The events callback's file ([`ansible::EVENTS_FILE`]).
        events: PathBuf,
        /// The workspace, which task paths are shown relative to.
        source: PathBuf,
    },
    /// [`Mode::Stream`] of image test `n` of `of`: a failure is the test's
    /// outcome, and the next steps run.
    Test {
        n: usize,
        of: usize,
        command: String,
    },
}

/// What a step does.
#[derive(Debug, Clone)]
pub enum Action {
    /// Runs a command; `what` names it in errors.
    Run { cmd: Cmd, mode: Mode, what: String },
    /// A line for the log.
    Note(String),
    /// Creates this directory under the mount point.
    MakeDir(String),
    /// Copies a file to this path under the mount point, executable.
    CopyIn { from: PathBuf, to: String },
    /// Removes this directory under the mount point.
    RemoveDir(String),
    /// Writes the play's generated inventory (reaching the container at
    /// `host`) and vars into `work_dir`.
    PlayFiles {
        play: Box<PlayRequest>,
        work_dir: PathBuf,
        host: Arg,
    },
    /// Reads the committed image's id from the `--iidfile` written.
    ReadImageId(PathBuf),
}

/// Which part of the build a step is in: what its failure means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Creating the working container: nothing to keep.
    Create,
    /// In the working container: it is unmounted and kept.
    Body,
    /// The image's tests: the build fails, nothing is kept.
    Tests,
    /// Naming the tested image: the build fails (or says why the image
    /// could not be kept).
    Rename,
}

/// One step of a build.
#[derive(Debug, Clone)]
pub struct Step {
    /// The progress line said before it (`## NAME` in the log).
    pub name: Option<String>,
    pub phase: Phase,
    pub action: Action,
}

fn step(name: Option<String>, phase: Phase, action: Action) -> Step {
    Step {
        name,
        phase,
        action,
    }
}

fn run(cmd: Cmd, mode: Mode, what: &str) -> Action {
    Action::Run {
        cmd,
        mode,
        what: what.to_string(),
    }
}

/// A step running `argv` with its output captured.
fn captured(name: Option<&str>, phase: Phase, argv: Vec<Arg>, what: &str) -> Step {
    let action = run(Cmd::new(argv), Mode::Capture, what);
    step(name.map(str::to_string), phase, action)
}

fn buildah(args: &[&str]) -> Vec<Arg> {
    std::iter::once(Arg::Buildah)
        .chain(args.iter().map(|a| text(*a)))
        .collect()
}

/// `buildah run` of `argv` in `ctr`.
fn in_container(isolation: &str, ctr: &str, argv: Vec<Arg>) -> Cmd {
    let mut a = buildah(&["run", "--isolation", isolation, ctr, "--"]);
    a.extend(argv);
    Cmd::new(a)
}

fn sh_c(cmd: &str) -> Vec<Arg> {
    vec![text("sh"), text("-c"), text(cmd)]
}

/// `buildah umount CTR`, its failure ignored (after a failed step, and at
/// the end of a re-run in a kept container).
pub(super) fn umount(ctr: &str) -> Action {
    run(
        Cmd::new(buildah(&["umount", ctr])),
        Mode::Ignore,
        "buildah umount",
    )
}

/// Every step of building `req`, in order.
pub fn steps(req: &BuildRequest) -> Vec<Step> {
    let ctr = req.container_name.as_str();
    let mut s = vec![];
    if req.reuse_container {
        s.push(step(
            None,
            Phase::Create,
            Action::Note(format!(
                "# re-running the steps in the kept container {ctr}; nothing will be committed"
            )),
        ));
    } else {
        let image = match &req.from {
            BaseImage::Scratch => text("scratch"),
            BaseImage::Image(i) => text(i),
            BaseImage::Unbuilt(label) => Arg::ImageOf(label.clone()),
        };
        let mut argv = buildah(&["from", "--name", ctr]);
        if req.arch.is_foreign() {
            argv.extend([text("--arch"), text(req.arch.oci())]);
        }
        argv.push(image);
        let from = Mode::From {
            container: ctr.into(),
        };
        let action = run(Cmd::new(argv), from, "buildah from");
        s.push(step(Some("buildah from".into()), Phase::Create, action));
        // buildah takes the local image a digest names whatever its
        // architecture (`--arch` or not: a warning only), and the instances
        // of one manifest list pulled for several architectures all carry
        // the list's digest: the parent could be another architecture's,
        // an image of it cached under this architecture's digest.
        let format = "{{.OCIv1.Architecture}}";
        let inspect = buildah(&["inspect", "--type", "container", "--format", format, ctr]);
        let mode = Mode::Arch {
            expected: req.arch.oci().into(),
            container: ctr.into(),
            parent: match &req.from {
                BaseImage::Scratch => "scratch".into(),
                BaseImage::Image(i) => i.clone(),
                BaseImage::Unbuilt(label) => label.clone(),
            },
        };
        let action = run(Cmd::new(inspect), mode, "the parent's architecture");
        s.push(step(None, Phase::Create, action));
    }
    let mount = run(
        Cmd::new(buildah(&["mount", ctr])),
        Mode::Mount,
        "buildah mount",
    );
    s.push(step(None, Phase::Body, mount));
    s.extend(body_steps(req));
    if req.reuse_container {
        s.push(step(None, Phase::Body, umount(ctr)));
        return s;
    }
    s.extend(commit_steps(req));
    if !req.tests.is_empty() {
        let test_ctr = format!("{ctr}-test");
        s.extend(test_steps(
            Arg::ImageId,
            &test_ctr,
            &req.isolation,
            &req.tests,
        ));
        s.extend(rename_steps(&req.image_name, &req.built_name()));
    }
    s
}

/// Setup, packages, scripts, run commands and the play.
fn body_steps(req: &BuildRequest) -> Vec<Step> {
    let ctr = req.container_name.as_str();
    let iso = req.isolation.as_str();
    let body = |name: String, action: Action| step(Some(name), Phase::Body, action);
    let mut s = vec![];
    for cmd in &req.setup {
        let arch = req.arch.expand(cmd);
        let mut c = Cmd::new(vec![text("sh"), text("-c"), Arg::WithMount(arch)])
            .env("LAYERBUILD_ROOT", Arg::Mount)
            .env("LAYERBUILD_ARCH", text(req.arch.name()))
            .env("LAYERBUILD_DEBIAN_ARCH", text(req.arch.debian()));
        c.dir = Some(req.workspace_root.clone());
        let action = run(c, Mode::Stream, &format!("setup command `{cmd}`"));
        s.push(body(format!("setup: {cmd}"), action));
    }
    if !req.packages.is_empty() {
        let quoted: Vec<String> = req
            .packages
            .iter()
            .map(|p| shell_words::quote(p).into_owned())
            .collect();
        let cmd = req.package_command.replace("{packages}", &quoted.join(" "));
        let c = in_container(iso, ctr, sh_c(&cmd));
        let action = run(c, Mode::Stream, "package installation");
        s.push(body(
            format!("packages: {}", req.packages.join(" ")),
            action,
        ));
    }
    s.extend(script_steps(req));
    for cmd in &req.run {
        let c = in_container(iso, ctr, sh_c(cmd));
        let action = run(c, Mode::Stream, &format!("run command `{cmd}`"));
        s.push(body(format!("run: {cmd}"), action));
    }
    if let Some(play) = &req.play {
        s.extend(play_steps(req, play));
    }
    s
}

/// Each script copied under /tmp/.layerbuild in the root and run there.
fn script_steps(req: &BuildRequest) -> Vec<Step> {
    const DIR: &str = "tmp/.layerbuild";
    if req.scripts.is_empty() {
        return vec![];
    }
    let mut s = vec![step(None, Phase::Body, Action::MakeDir(DIR.into()))];
    for (i, script) in req.scripts.iter().enumerate() {
        let name = script
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let to = format!("{DIR}/{i}-{name}");
        let copy = Action::CopyIn {
            from: script.clone(),
            to: to.clone(),
        };
        s.push(step(Some(format!("script: {name}")), Phase::Body, copy));
        let c = in_container(
            &req.isolation,
            &req.container_name,
            vec![text(format!("/{to}"))],
        );
        let action = run(c, Mode::Stream, &format!("script {name}"));
        s.push(step(None, Phase::Body, action));
    }
    s.push(step(None, Phase::Body, Action::RemoveDir(DIR.into())));
    s
}

/// Mounts, in a private mount namespace that dies with the command (and a
/// PID namespace: no process of the play outlives it), what modules
/// expect under the root a chroot connection enters: a fresh
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
    // Not `exec`: this shell stays the namespace's first process, whose
    // end ends every process of the play (a Mitogen child ignoring
    // SIGINT, a task's `sleep` on the controller).
    "\"$@\""
);

/// The generated inventory and vars, then ansible-playbook against the
/// working container: over chroot on the mount point (run by `unshare
/// --mount` after [`PRIVATE_MOUNTS`]), or over `buildah run`.
fn play_steps(req: &BuildRequest, play: &PlayRequest) -> Vec<Step> {
    let (host, mut argv) = match play.connection {
        Connection::Chroot | Connection::Mitogen => {
            let unshare = [
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "--pid",
                "--fork",
                "--kill-child",
                "--",
            ];
            let mut w: Vec<Arg> = unshare
                .into_iter()
                .chain(["sh", "-c", PRIVATE_MOUNTS, "sh"])
                .map(text)
                .collect();
            w.push(Arg::Mount);
            (Arg::Mount, w)
        }
        Connection::Buildah => (text(&req.container_name), vec![]),
    };
    argv.push(Arg::AnsiblePlaybook);
    argv.extend(
        ansible::playbook_args(play, &req.work_dir, &[])
            .into_iter()
            .map(Arg::Text),
    );
    let mut c = Cmd::new(argv);
    for (k, v) in ansible::env_vars(play, &req.work_dir) {
        c = c.env(k, Arg::Text(v));
    }
    c = c.env("BUILDAH_ISOLATION", text(&req.isolation));
    if play.connection == Connection::Buildah {
        // One `buildah run` per module instead of three.
        c.env.push(Env {
            key: "ANSIBLE_PIPELINING".into(),
            value: text("True"),
            unless_set: true,
        });
    }
    c.dir = Some(play.source_dir.clone());
    c.without_ansible_env = true;
    let files = Action::PlayFiles {
        play: Box::new(play.clone()),
        work_dir: req.work_dir.clone(),
        host,
    };
    let mode = Mode::Play {
        remove_after: req.work_dir.join(crate::ops::gc::VARS_FILE),
        events: req.work_dir.join(ansible::EVENTS_FILE),
        source: req.workspace_root.clone(),
    };
    let what = format!("ansible-playbook {}", play.playbook);
    vec![
        step(None, Phase::Body, files),
        step(Some(what.clone()), Phase::Body, run(c, mode, &what)),
    ]
}

/// What `buildah from` records of the parent's name and origin, which a
/// reproducible commit leaves out: the base image's name (the name it was
/// pulled or committed under) and manifest digest (the registry's
/// compressed manifest differs from the one committed here).
const BASE_ANNOTATIONS: [&str; 2] = [
    "org.opencontainers.image.base.name",
    "org.opencontainers.image.base.digest",
];

/// What a reproducible commit adds to `buildah commit`: no history (its
/// entry's comment is `FROM <the parent's name>`, the name it was pulled or
/// committed under), no `io.buildah.version` label (runners may differ).
const REPRODUCIBLE_COMMIT: [&str; 2] = ["--omit-history", "--identity-label=false"];

/// Labels the container with the digest and label and commits it (as
/// `NAME-untested` while tests are to run, `NAME-unbooted` while only boot
/// tests are); reads the image id. A
/// reproducible commit (`req.timestamp` set) depends on nothing but the
/// container: fixed times, and nothing of where the parent came from.
fn commit_steps(req: &BuildRequest) -> Vec<Step> {
    let ctr = req.container_name.as_str();
    // buildah 1.28's commit has no --label: set them on the container.
    let digest = format!("layerbuild.digest={}", req.digest);
    let label = format!("layerbuild.label={}", req.label);
    let mut config = buildah(&["config", "--label", &digest, "--label", &label]);
    if req.timestamp.is_some() {
        for a in BASE_ANNOTATIONS {
            // `KEY-` removes the annotation.
            config.extend([text("--annotation"), text(format!("{a}-"))]);
        }
    }
    config.push(text(ctr));
    let iid = req.work_dir.join("iid");
    let mut commit = buildah(&["commit", "--rm", "--quiet"]);
    if let Some(t) = req.timestamp {
        commit.extend([text("--timestamp"), text(t.to_string())]);
        commit.extend(REPRODUCIBLE_COMMIT.map(text));
    }
    let name = if req.tests.is_empty() {
        req.built_name()
    } else {
        untested_name(&req.image_name)
    };
    commit.extend([
        text("--iidfile"),
        text(iid.to_string_lossy()),
        text(ctr),
        text(name),
    ]);
    vec![
        captured(
            Some("buildah commit"),
            Phase::Body,
            config,
            "buildah config",
        ),
        captured(None, Phase::Body, commit, "buildah commit"),
        step(None, Phase::Body, Action::ReadImageId(iid)),
    ]
}

/// `tests` run in one fresh container `ctr` made from `image`, each with
/// `sh -c`, all of them even after a failure; the container removed.
pub(super) fn test_steps(image: Arg, ctr: &str, isolation: &str, tests: &[String]) -> Vec<Step> {
    let tests_step = |name: Option<String>, action| step(name, Phase::Tests, action);
    let mut from = buildah(&["from", "--pull-never", "--name", ctr]);
    from.push(image);
    let mode = Mode::From {
        container: ctr.into(),
    };
    let mut s = vec![tests_step(
        Some("tests: buildah from".into()),
        run(Cmd::new(from), mode, "buildah from (tests)"),
    )];
    for (i, t) in tests.iter().enumerate() {
        let mode = Mode::Test {
            n: i + 1,
            of: tests.len(),
            command: t.clone(),
        };
        let c = in_container(isolation, ctr, sh_c(t));
        s.push(tests_step(
            Some(format!("test {}/{}: {t}", i + 1, tests.len())),
            run(c, mode, &format!("test `{t}`")),
        ));
    }
    let rm = Cmd::new(buildah(&["rm", ctr]));
    s.push(tests_step(
        None,
        run(rm, Mode::Capture, "buildah rm (tests)"),
    ));
    s
}

/// The tested image gets its name, `passed` (`NAME`, or `NAME-unbooted`
/// while boot tests follow), or `NAME-failed` when a test failed;
/// `NAME-untested` goes.
fn rename_steps(image_name: &str, passed: &str) -> Vec<Step> {
    let mut tag = buildah(&["tag"]);
    tag.extend([
        Arg::ImageId,
        Arg::AfterTests {
            passed: passed.into(),
            failed: format!("{image_name}-failed"),
        },
    ]);
    let rmi = buildah(&["rmi", &untested_name(image_name)]);
    vec![
        captured(None, Phase::Rename, tag, "buildah tag"),
        captured(None, Phase::Rename, rmi, "buildah rmi"),
    ]
}

/// What is known of a build at some point: the tools, and the values it
/// has learnt so far (`None`: shown as a placeholder).
pub struct Known<'a> {
    pub buildah: &'a str,
    pub ansible_playbook: &'a str,
    /// Given to every command as `CONTAINERS_STORAGE_CONF`.
    pub storage_conf: Option<&'a str>,
    pub mount: Option<&'a str>,
    pub image_id: Option<&'a str>,
    pub tests_failed: bool,
    /// Whether layerbuild's own environment sets a variable.
    pub env_set: &'a dyn Fn(&str) -> bool,
    /// The inherited `ANSIBLE_*` variables a play runs without.
    pub ansible_left_out: &'a [String],
}

/// A word of a resolved command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Word {
    Known(String),
    /// Not known yet: its rendering, as it is shown.
    Unknown(String),
}

impl Word {
    fn render(&self) -> String {
        match self {
            Word::Known(s) => shell_words::quote(s).into_owned(),
            Word::Unknown(s) => s.clone(),
        }
    }
}

/// A command with what is known filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub dir: Option<PathBuf>,
    /// Inherited variables the process runs without (`env -u NAME`).
    pub unset: Vec<String>,
    /// Sorted by name, as a process's environment is rendered.
    pub env: BTreeMap<String, Word>,
    pub argv: Vec<Word>,
}

impl Known<'_> {
    fn word(&self, a: &Arg) -> Word {
        let known = |v: Option<&str>, placeholder: &str| match v {
            Some(v) => Word::Known(v.to_string()),
            None => Word::Unknown(placeholder.to_string()),
        };
        match a {
            Arg::Text(s) => Word::Known(s.clone()),
            Arg::Buildah => Word::Known(self.buildah.to_string()),
            Arg::AnsiblePlaybook => Word::Known(self.ansible_playbook.to_string()),
            Arg::Mount => known(self.mount, "$MOUNT"),
            Arg::WithMount(s) => match self.mount {
                Some(m) => Word::Known(s.replace("{root}", &shell_words::quote(m))),
                None => Word::Unknown(shell_words::quote(&s.replace("{root}", "$MOUNT")).into()),
            },
            Arg::ImageId => known(self.image_id, "$IMAGE_ID"),
            Arg::ImageOf(label) => Word::Unknown(format!("$IMAGE_ID({label})")),
            Arg::AfterTests { passed, failed } => {
                Word::Known(if self.tests_failed { failed } else { passed }.clone())
            }
        }
    }

    /// `cmd` with what is known filled in.
    pub fn line(&self, cmd: &Cmd) -> Line {
        let mut env = BTreeMap::new();
        if let Some(conf) = self.storage_conf {
            env.insert("CONTAINERS_STORAGE_CONF".into(), Word::Known(conf.into()));
        }
        for e in &cmd.env {
            if !(e.unless_set && (self.env_set)(&e.key)) {
                env.insert(e.key.clone(), self.word(&e.value));
            }
        }
        Line {
            dir: cmd.dir.clone(),
            unset: if cmd.without_ansible_env {
                self.ansible_left_out.to_vec()
            } else {
                vec![]
            },
            env,
            argv: cmd.argv.iter().map(|a| self.word(a)).collect(),
        }
    }

    /// `rel` under the mount point.
    pub fn in_root(&self, rel: &str) -> String {
        match self.mount {
            Some(m) => Path::new(m).join(rel).display().to_string(),
            None => format!("$MOUNT/{rel}"),
        }
    }

    /// The line a step shows in a plan (a comment for what is not a
    /// command); `None` for what shows nothing.
    pub fn render(&self, step: &Step) -> Option<String> {
        Some(match &step.action {
            Action::Run { cmd, .. } => self.line(cmd).render(),
            Action::Note(line) => line.clone(),
            Action::MakeDir(d) => format!("# create {}", self.in_root(d)),
            Action::CopyIn { from, to } => format!(
                "# copy {} to {}, executable",
                from.display(),
                self.in_root(to)
            ),
            Action::RemoveDir(d) => format!("# remove {}", self.in_root(d)),
            Action::PlayFiles { work_dir, host, .. } => format!(
                "# write {} (host {}) and {}",
                work_dir.join("inventory.ini").display(),
                self.word(host).render(),
                work_dir.join(crate::ops::gc::VARS_FILE).display()
            ),
            Action::ReadImageId(_) => return None,
        })
    }
}

impl Line {
    /// As a shell line (`cd DIR && K=V ... PROGRAM ARGS`): what the build
    /// log shows, and reruns exactly what ran.
    pub fn render(&self) -> String {
        let mut s = String::new();
        if let Some(dir) = &self.dir {
            s.push_str(&format!(
                "cd {} && ",
                shell_words::quote(&dir.to_string_lossy())
            ));
        }
        if !self.unset.is_empty() {
            s.push_str("env");
            for k in &self.unset {
                s.push_str(&format!(" -u {k}"));
            }
            s.push(' ');
        }
        for (k, v) in &self.env {
            s.push_str(&format!("{k}={} ", v.render()));
        }
        let argv: Vec<String> = self.argv.iter().map(Word::render).collect();
        s + &argv.join(" ")
    }

    /// Its argv and environment, or the first value not known yet.
    pub fn known(&self) -> Result<Ready<'_>, String> {
        let word = |w: &'_ Word| -> Result<(), String> {
            match w {
                Word::Known(_) => Ok(()),
                Word::Unknown(p) => Err(p.clone()),
            }
        };
        self.argv
            .iter()
            .chain(self.env.values())
            .try_for_each(word)?;
        fn text(w: &Word) -> &str {
            match w {
                Word::Known(s) | Word::Unknown(s) => s,
            }
        }
        Ok(Ready {
            unset: self.unset.iter().map(String::as_str).collect(),
            argv: self.argv.iter().map(text).collect(),
            env: self
                .env
                .iter()
                .map(|(k, v)| (k.as_str(), text(v)))
                .collect(),
        })
    }
}

/// A [`Line`] whose every value is known: what a process is started with.
#[derive(Debug, PartialEq, Eq)]
pub struct Ready<'a> {
    pub unset: Vec<&'a str>,
    pub argv: Vec<&'a str>,
    pub env: Vec<(&'a str, &'a str)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> BuildRequest {
        BuildRequest {
            label: "//compute/slurm".into(),
            digest: "d1g3st".into(),
            image_name: "localhost/layerbuild/ws/compute/slurm:d1g3st".into(),
            container_name: "ctr".into(),
            from: BaseImage::Unbuilt("//compute/compute".into()),
            workspace_root: "/ws".into(),
            isolation: "chroot".into(),
            setup: vec!["cp motd {root}/etc/motd".into()],
            packages: vec!["munge".into(), "slurm".into()],
            package_command: "dnf install -y {packages}".into(),
            scripts: vec!["/ws/scripts/a.sh".into()],
            run: vec!["echo hi > /etc/hi".into()],
            play: Some(PlayRequest {
                source_dir: "/ws/site".into(),
                playbook: "site.yml".into(),
                host_name: "compute-slurm".into(),
                groups: vec![],
                inventory: None,
                vars: Default::default(),
                roles_path: vec![],
                connection: Connection::Buildah,
                vault_files: vec![],
                mitogen: "/mitogen".into(),
            }),
            tests: vec!["true".into()],
            boot_tests_follow: false,
            timestamp: None,
            log_path: "/log".into(),
            work_dir: "/work".into(),
            reuse_container: false,
            secrets: Default::default(),
            arch: crate::arch::Arch::X86_64,
        }
    }

    fn known(mount: Option<&str>) -> Known<'_> {
        Known {
            buildah: "buildah",
            ansible_playbook: "ansible-playbook",
            storage_conf: None,
            mount,
            image_id: None,
            tests_failed: false,
            env_set: &|_| false,
            ansible_left_out: &[],
        }
    }

    #[test]
    fn a_build_is_its_steps_in_order() {
        let steps = steps(&request());
        let names: Vec<&str> = steps.iter().filter_map(|s| s.name.as_deref()).collect();
        assert_eq!(
            names,
            [
                "buildah from",
                "setup: cp motd {root}/etc/motd",
                "packages: munge slurm",
                "script: a.sh",
                "run: echo hi > /etc/hi",
                "ansible-playbook site.yml",
                "buildah commit",
                "tests: buildah from",
                "test 1/1: true",
            ]
        );
        let k = known(None);
        let lines: Vec<String> = steps.iter().filter_map(|s| k.render(s)).collect();
        let ansible = "cd /ws/site && ANSIBLE_CALLBACK_PLUGINS='/work/callback_plugins:~/.ansible/plugins/callback:/usr/share/ansible/plugins/callback' ANSIBLE_CONFIG=/work/empty-ansible.cfg ANSIBLE_DISPLAY_ARGS_TO_STDOUT=0 ANSIBLE_FORCE_COLOR=0 \
            ANSIBLE_HOST_KEY_CHECKING=0 ANSIBLE_LOCAL_TEMP=/work/ansible-tmp ANSIBLE_NOCOLOR=1 \
            ANSIBLE_PIPELINING=True ANSIBLE_PYTHON_INTERPRETER=auto_silent \
            ANSIBLE_RETRY_FILES_ENABLED=0 ANSIBLE_ROLES_PATH='' BUILDAH_ISOLATION=chroot \
            LAYERBUILD_EVENTS=/work/ansible-events.jsonl PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 ansible-playbook -i /work/inventory.ini -e @/work/vars.json site.yml";
        let run = "buildah run --isolation chroot ctr --";
        let expected = [
            "buildah from --name ctr $IMAGE_ID(//compute/compute)".to_string(),
            "buildah inspect --type container --format {{.OCIv1.Architecture}} ctr".into(),
            "buildah mount ctr".into(),
            "cd /ws && LAYERBUILD_ARCH=x86_64 LAYERBUILD_DEBIAN_ARCH=amd64 LAYERBUILD_ROOT=$MOUNT sh -c 'cp motd $MOUNT/etc/motd'".into(),
            format!("{run} sh -c 'dnf install -y munge slurm'"),
            "# create $MOUNT/tmp/.layerbuild".into(),
            "# copy /ws/scripts/a.sh to $MOUNT/tmp/.layerbuild/0-a.sh, executable".into(),
            format!("{run} /tmp/.layerbuild/0-a.sh"),
            "# remove $MOUNT/tmp/.layerbuild".into(),
            format!("{run} sh -c 'echo hi > /etc/hi'"),
            "# write /work/inventory.ini (host ctr) and /work/vars.json".into(),
            ansible.into(),
            "buildah config --label 'layerbuild.digest=d1g3st' --label 'layerbuild.label=//compute/slurm' ctr".into(),
            "buildah commit --rm --quiet --iidfile /work/iid ctr localhost/layerbuild/ws/compute/slurm:d1g3st-untested".into(),
            "buildah from --pull-never --name ctr-test $IMAGE_ID".into(),
            "buildah run --isolation chroot ctr-test -- sh -c true".into(),
            "buildah rm ctr-test".into(),
            "buildah tag $IMAGE_ID localhost/layerbuild/ws/compute/slurm:d1g3st".into(),
            "buildah rmi localhost/layerbuild/ws/compute/slurm:d1g3st-untested".into(),
        ];
        assert_eq!(lines, expected);
    }

    #[test]
    fn a_reproducible_commit_names_nothing_of_the_parent() {
        let mut req = request();
        req.timestamp = Some(0);
        let steps = steps(&req);
        let k = known(None);
        let lines: Vec<String> = steps.iter().filter_map(|s| k.render(s)).collect();
        let config = "buildah config --label 'layerbuild.digest=d1g3st' \
            --label 'layerbuild.label=//compute/slurm' \
            --annotation org.opencontainers.image.base.name- \
            --annotation org.opencontainers.image.base.digest- ctr";
        let commit = "buildah commit --rm --quiet --timestamp 0 --omit-history \
            '--identity-label=false' --iidfile /work/iid ctr \
            localhost/layerbuild/ws/compute/slurm:d1g3st-untested";
        assert!(lines.contains(&config.to_string()), "{lines:#?}");
        assert!(lines.contains(&commit.to_string()), "{lines:#?}");
    }

    #[test]
    fn known_values_fill_the_placeholders() {
        let mut req = request();
        req.play.as_mut().unwrap().connection = Connection::Chroot;
        let steps = steps(&req);
        let k = known(Some("/var/mnt/a b"));
        let named = |prefix: &str| {
            steps
                .iter()
                .find(|s| s.name.as_deref().is_some_and(|n| n.starts_with(prefix)))
                .unwrap()
        };
        let setup = k.render(named("setup:")).unwrap();
        assert_eq!(
            setup,
            "cd /ws && LAYERBUILD_ARCH=x86_64 LAYERBUILD_DEBIAN_ARCH=amd64 LAYERBUILD_ROOT='/var/mnt/a b' sh -c 'cp motd '\\''/var/mnt/a b'\\''/etc/motd'"
        );
        let play = named("ansible-playbook");
        let Action::Run { cmd, .. } = &play.action else {
            panic!("{play:?}");
        };
        let line = k.line(cmd);
        let ready = line.known().unwrap();
        assert_eq!(ready.argv[..2], ["unshare", "--mount"]);
        assert_eq!(ready.argv[12..14], ["/var/mnt/a b", "ansible-playbook"]);
        assert!(!ready.env.iter().any(|(k, _)| *k == "ANSIBLE_PIPELINING"));
        // Nothing may run while a value is unknown.
        assert_eq!(known(None).line(cmd).known(), Err("$MOUNT".to_string()));
    }
}

//! Test harness: copies a fixture workspace into a temporary directory, runs
//! the real `layerbuild` binary on it, and cleans up the images and
//! containers it made. Tests that build need buildah and fail loudly without it.

#![allow(dead_code)]

pub mod moto;
pub mod registry;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

/// `s.replace(from, to)` for tests that edit a file to see an effect:
/// fails when `from` is not there (an edit that changes nothing would let a
/// "nothing changed" or "the digest changed" test pass or fail vacuously).
pub trait Edit {
    fn edit(&self, from: &str, to: &str) -> String;
}

impl Edit for str {
    #[track_caller]
    fn edit(&self, from: &str, to: &str) -> String {
        assert!(
            self.contains(from),
            "the text to edit has no {from:?}:\n{self}"
        );
        self.replace(from, to)
    }
}

impl Edit for String {
    #[track_caller]
    fn edit(&self, from: &str, to: &str) -> String {
        self.as_str().edit(from, to)
    }
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from(out: Output) -> Run {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }

    #[track_caller]
    pub fn ok(self) -> Run {
        assert_eq!(
            self.code, 0,
            "expected success\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

/// Panics (never skips) when buildah is not usable.
pub fn require_buildah() {
    let ok = Command::new("buildah")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "this test needs buildah (and root): install it with `apt-get install -y buildah ansible busybox-static`; see README"
    );
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

pub struct TestWs {
    _dir: tempfile::TempDir,
    pub root: PathBuf,
    /// Unique workspace name, so image names of parallel tests never collide.
    pub name: String,
    /// Extra environment for every run.
    pub env: Vec<(String, String)>,
    /// Set by [`TestWs::recorded`]: commands run in this process against
    /// this in-memory backend instead of the binary with buildah.
    pub recording: Option<layerbuild::executor::recording::Recording>,
}

/// Runs a command line in this process, as `main` would, against the
/// recording backend `rec` (no buildah, no root): stdout and stderr are
/// what the command says through its `Output`, the error line included.
pub fn lb_recorded(
    dir: &Path,
    args: &[&str],
    rec: &layerbuild::executor::recording::Recording,
) -> Run {
    use clap::Parser;
    use layerbuild::commands::{Backends, Output, run_with};

    /// stderr collects progress lines as they come, then the notes.
    #[derive(Default)]
    struct Capture {
        stdout: String,
        stderr: std::sync::Arc<std::sync::Mutex<String>>,
    }
    impl Output for Capture {
        fn stdout(&mut self, text: &str) {
            self.stdout.push_str(text);
        }
        fn stderr(&mut self, line: &str) {
            let mut s = self.stderr.lock().unwrap();
            s.push_str(line);
            s.push('\n');
        }
        fn progress(&self) -> layerbuild::progress::Progress {
            layerbuild::progress::Progress::Into(self.stderr.clone())
        }
    }

    let mut argv = vec![
        "layerbuild".to_string(),
        "-C".into(),
        dir.display().to_string(),
    ];
    argv.extend(args.iter().map(|a| a.to_string()));
    let cli = match layerbuild::cli::Cli::try_parse_from(&argv) {
        Ok(cli) => cli,
        Err(e) => {
            let text = e.to_string();
            let (stdout, stderr) = if e.use_stderr() {
                (String::new(), text)
            } else {
                (text, String::new())
            };
            return Run {
                code: e.exit_code(),
                stdout,
                stderr,
            };
        }
    };
    let mut cap = Capture::default();
    let code = match run_with(cli, Backends::Given(rec.backend()), &mut cap) {
        Ok(()) => 0,
        Err(layerbuild::error::Error::Exit(c)) => i32::from(c),
        Err(e) => {
            cap.stderr(&format!("error: {e}"));
            i32::from(e.exit_code())
        }
    };
    let stderr = cap.stderr.lock().unwrap().clone();
    Run {
        code,
        stdout: cap.stdout,
        stderr,
    }
}

/// Runs the real binary in the workspace at `dir` (`-C dir`), with `env`.
pub fn lb_in(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut c = Command::new(env!("CARGO_BIN_EXE_layerbuild"));
    c.arg("-C").arg(dir).args(args).stdin(Stdio::null());
    c.envs(env.iter().copied());
    Run::from(c.output().unwrap())
}

pub fn fixture_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        let ft = entry.file_type().unwrap();
        if ft.is_dir() {
            copy_dir(&entry.path(), &target);
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(entry.path()).unwrap(), &target).unwrap();
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

impl TestWs {
    /// A copy of `tests/fixtures/<fixture>` at a fresh temporary path.
    pub fn new(fixture: &str) -> TestWs {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("ws");
        copy_dir(&fixture_dir(fixture), &root);
        let name = format!(
            "t{}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst),
            fixture
        );
        let lf = root.join("Layerfile.toml");
        if let Ok(text) = std::fs::read_to_string(&lf) {
            std::fs::write(
                &lf,
                text.replacen("name = \"fixture\"", &format!("name = \"{name}\""), 1),
            )
            .unwrap();
        }
        TestWs {
            _dir: dir,
            root,
            name,
            env: vec![],
            recording: None,
        }
    }

    /// A copy of the repository's demo workspace (its `Layerfile.toml` and
    /// `demo/`) at a fresh temporary path, under a workspace name of its own.
    pub fn demo() -> TestWs {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("ws");
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        copy_dir(&repo.join("demo"), &root.join("demo"));
        let name = format!(
            "t{}-{}-demo",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let lf = std::fs::read_to_string(repo.join("Layerfile.toml")).unwrap();
        let renamed = lf.replacen("name = \"demo\"", &format!("name = \"{name}\""), 1);
        assert_ne!(renamed, lf, "the demo's workspace name");
        std::fs::write(root.join("Layerfile.toml"), renamed).unwrap();
        TestWs::adopt(dir, root, &name)
    }

    /// The workspace a test made at `root` (inside `dir`) under the
    /// workspace name `name`: removed, with its images, when dropped.
    pub fn adopt(dir: tempfile::TempDir, root: PathBuf, name: &str) -> TestWs {
        TestWs {
            _dir: dir,
            root,
            name: name.to_string(),
            env: vec![],
            recording: None,
        }
    }

    /// [`TestWs::new`] whose commands run in this process against an
    /// in-memory recording backend: for the logic above the executor
    /// (explanations, plans, cache bookkeeping), without buildah.
    pub fn recorded(fixture: &str) -> TestWs {
        let mut ws = TestWs::new(fixture);
        ws.recording = Some(layerbuild::executor::recording::Recording::new());
        ws
    }

    /// The in-memory backend of a [`TestWs::recorded`] workspace, for a
    /// test to set up or read what storage and the registry hold.
    #[track_caller]
    pub fn rec(&self) -> &layerbuild::executor::recording::Recording {
        self.recording
            .as_ref()
            .expect("not a recorded workspace: use TestWs::recorded")
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    pub fn write(&self, rel: &str, content: &str) {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }

    pub fn append(&self, rel: &str, content: &str) {
        let old = std::fs::read_to_string(self.path(rel)).unwrap_or_default();
        self.write(rel, &(old + content));
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path(rel)).unwrap()
    }

    pub fn lb(&self, args: &[&str]) -> Run {
        if let Some(rec) = &self.recording {
            return lb_recorded(&self.root, args, rec);
        }
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        lb_in(&self.root, args, &env)
    }

    /// Sets the racy margin of later runs (`LAYERBUILD_RACY_MARGIN_MS`, a
    /// test setting; 2 s when unset). With 0, files a test just wrote count
    /// as old at once, so it need not wait before caches trust them.
    pub fn racy_margin_ms(&mut self, ms: u64) {
        const VAR: &str = "LAYERBUILD_RACY_MARGIN_MS";
        self.env.retain(|(k, _)| k != VAR);
        self.env.push((VAR.into(), ms.to_string()));
    }

    /// Wraps buildah so every invocation is logged to the returned file.
    pub fn log_buildah(&mut self) -> PathBuf {
        let log = self.root.join("../buildah-calls.log");
        let wrapper = self.root.join("../buildah-wrapper.sh");
        std::fs::write(
            &wrapper,
            format!(
                "#!/bin/sh\necho \"$*\" >> '{}'\nexec buildah \"$@\"\n",
                log.display()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
        let _ = std::fs::remove_file(&log);
        self.env
            .push(("LAYERBUILD_BUILDAH".into(), wrapper.display().to_string()));
        log
    }

    /// label -> digest, from `ls --json`.
    pub fn digests(&self) -> BTreeMap<String, String> {
        digests_of(&self.lb(&["ls", "--json"]).ok().json())
    }

    pub fn db(&self) -> PathBuf {
        self.root.join("cache/layerbuild.db")
    }

    /// The pure caches (stat cache and memo), which read-only commands write too.
    pub fn fingerprint_db(&self) -> PathBuf {
        self.root.join("cache/fingerprint.db")
    }

    /// Digests with a cache row.
    pub fn cached_digests(&self) -> Vec<String> {
        if !self.db().exists() {
            return vec![];
        }
        let conn = rusqlite::Connection::open(self.db()).unwrap();
        let mut st = conn
            .prepare("SELECT digest FROM layers ORDER BY digest")
            .unwrap();
        st.query_map([], |r| r.get(0))
            .unwrap()
            .map(|r| r.unwrap())
            .collect()
    }

    /// Labels whose status in a `build --json` report is `status`.
    pub fn labels_with(report: &serde_json::Value, status: &str) -> Vec<String> {
        report["layers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|l| l["status"] == status)
            .map(|l| l["label"].as_str().unwrap().to_string())
            .collect()
    }

    pub fn container_exists(name: &str) -> bool {
        Command::new("buildah")
            .args(["inspect", "--type", "container", name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Runs a command inside a fresh container of `image` and returns its stdout.
    pub fn run_in_image(image: &str, cmd: &str) -> String {
        let out = Command::new("buildah")
            .args(["from", image])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "buildah from {image}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let ctr = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let run = Command::new("buildah")
            .args(["run", "--isolation", "chroot", &ctr, "--", "sh", "-c", cmd])
            .output()
            .unwrap();
        let _ = Command::new("buildah").args(["rm", &ctr]).output();
        assert!(
            run.status.success(),
            "{cmd}: {}",
            String::from_utf8_lossy(&run.stderr)
        );
        String::from_utf8_lossy(&run.stdout).into_owned()
    }
}

impl Drop for TestWs {
    fn drop(&mut self) {
        if self.recording.is_some() {
            return;
        }
        // Remove what this workspace made: containers and images named after it.
        let prefix = format!("layerbuild-{}-", self.name);
        if let Ok(out) = Command::new("buildah")
            .args(["containers", "--format", "{{.ContainerName}}"])
            .output()
        {
            for name in String::from_utf8_lossy(&out.stdout).lines() {
                if name.starts_with(&prefix) {
                    let _ = Command::new("buildah").args(["rm", name]).output();
                }
            }
        }
        let repo = format!("localhost/layerbuild/{}/", self.name);
        if let Ok(out) = Command::new("buildah")
            .args(["images", "--format", "{{.Name}}:{{.Tag}}"])
            .output()
        {
            let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|n| n.starts_with(&repo))
                .map(str::to_string)
                .collect();
            // Children first, so parents are not held.
            names.reverse();
            for n in names {
                let _ = Command::new("buildah").args(["rmi", "-f", &n]).output();
            }
        }
    }
}

/// The entry of `label` in a `build --json` report.
/// A test as one expression, after just's `tests/test.rs`: a fixture, the
/// edits made to it, one command, and what it must show.
///
/// ```ignore
/// Test::new("chain")
///     .edit("Layerfile.toml", "parent = \"scratch\"", "parent = \"//x/y\"")
///     .args(&["build", "//..."])
///     .status(2)
///     .stderr("unknown parent //x/y")
///     .run();
/// ```
///
/// Every edit fails when its `from` text is absent, so a test cannot pass
/// because its edit changed nothing.
pub struct Test {
    ws: TestWs,
    args: Vec<String>,
    status: i32,
    stdout: Vec<String>,
    stderr: Vec<String>,
}

impl Test {
    /// A copy of the fixture whose command runs the real binary.
    pub fn new(fixture: &str) -> Test {
        Test::on(TestWs::new(fixture))
    }

    /// A copy of the fixture whose command runs in this process against
    /// the recording backend (no buildah).
    pub fn recorded(fixture: &str) -> Test {
        Test::on(TestWs::recorded(fixture))
    }

    fn on(ws: TestWs) -> Test {
        Test {
            ws,
            args: vec![],
            status: 0,
            stdout: vec![],
            stderr: vec![],
        }
    }

    /// Replaces `from` by `to` in `file`; fails when `from` is not there.
    #[track_caller]
    pub fn edit(self, file: &str, from: &str, to: &str) -> Test {
        let text = self.ws.read(file).edit(from, to);
        self.ws.write(file, &text);
        self
    }

    /// Writes `file` whole (creating its directory).
    pub fn write(self, file: &str, content: &str) -> Test {
        self.ws.write(file, content);
        self
    }

    /// Appends `content` to `file`.
    pub fn append(self, file: &str, content: &str) -> Test {
        self.ws.append(file, content);
        self
    }

    /// Removes `file`; fails when it does not exist.
    #[track_caller]
    pub fn remove(self, file: &str) -> Test {
        std::fs::remove_file(self.ws.path(file)).unwrap_or_else(|e| panic!("removing {file}: {e}"));
        self
    }

    /// The command's arguments (after `layerbuild`).
    pub fn args(mut self, args: &[&str]) -> Test {
        self.args = args.iter().map(|a| a.to_string()).collect();
        self
    }

    /// The exit code it must end with (0 unless said).
    pub fn status(mut self, code: i32) -> Test {
        self.status = code;
        self
    }

    /// Text its stdout must hold.
    pub fn stdout(mut self, text: &str) -> Test {
        self.stdout.push(text.to_string());
        self
    }

    /// Text its stderr must hold.
    pub fn stderr(mut self, text: &str) -> Test {
        self.stderr.push(text.to_string());
        self
    }

    /// Runs the command and checks the exit code, that nothing panicked,
    /// and the expected texts; returns the workspace and the run for any
    /// further assertion.
    #[track_caller]
    pub fn run(self) -> (TestWs, Run) {
        assert!(!self.args.is_empty(), "Test::run without args");
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let run = self.ws.lb(&args);
        let shown = || {
            format!(
                "layerbuild {}\nstdout:\n{}\nstderr:\n{}",
                self.args.join(" "),
                run.stdout,
                run.stderr
            )
        };
        assert_eq!(run.code, self.status, "exit code of {}", shown());
        assert!(!run.stderr.contains("panicked"), "{}", shown());
        for t in &self.stdout {
            assert!(
                run.stdout.contains(t.as_str()),
                "no {t:?} in stdout of {}",
                shown()
            );
        }
        for t in &self.stderr {
            assert!(
                run.stderr.contains(t.as_str()),
                "no {t:?} in stderr of {}",
                shown()
            );
        }
        (self.ws, run)
    }
}

pub fn layer<'a>(report: &'a serde_json::Value, label: &str) -> &'a serde_json::Value {
    report["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["label"] == label)
        .unwrap_or_else(|| panic!("{label} not in {report}"))
}

/// label -> digest, from the output of `ls --json`.
pub fn digests_of(ls: &serde_json::Value) -> BTreeMap<String, String> {
    ls["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["label"].as_str().unwrap().to_string(),
                e["digest"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// `program args` run in `dir`; fails the test when it fails. Its stdout.
#[track_caller]
pub fn tool_in(program: &str, dir: &Path, args: &[&str]) -> String {
    let out = listing_retried(program, || {
        Command::new(program)
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("{program}: {e}"))
    });
    assert!(
        out.status.success(),
        "{program} {args:?} in {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `run` again (up to 5 times) while it is a buildah listing that
/// failed because another test removed an image or a container while it
/// was listed (tests run in parallel on one storage), as layerbuild's own
/// listings do.
fn listing_retried(program: &str, run: impl Fn() -> std::process::Output) -> std::process::Output {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let out = run();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let raced = program == "buildah"
            && !out.status.success()
            && (stderr.contains("image not known") || stderr.contains("container not known"));
        if !raced || attempt == 5 {
            return out;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// git in `dir` with a test identity, `main` as a new repository's branch
/// and local submodules allowed; its stdout, trimmed.
#[track_caller]
pub fn git(dir: &Path, args: &[&str]) -> String {
    let mut all = vec![
        "-c",
        "user.name=t",
        "-c",
        "user.email=t@example.org",
        "-c",
        "protocol.file.allow=always",
        "-c",
        "init.defaultBranch=main",
    ];
    all.extend_from_slice(args);
    tool_in("git", dir, &all).trim().to_string()
}

/// `buildah` on the storage at `root` (its run root below it).
pub fn buildah_on(root: &Path, args: &[&str]) -> Run {
    let out = Command::new("buildah")
        .arg("--root")
        .arg(root)
        .arg("--runroot")
        .arg(root.join("run"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    Run::from(out)
}

/// A YAML document as JSON (for the schema check).
pub fn yaml_to_json(y: &yaml_rust2::Yaml) -> serde_json::Value {
    use yaml_rust2::Yaml;
    match y {
        Yaml::String(s) => serde_json::Value::String(s.clone()),
        Yaml::Integer(i) => serde_json::Value::from(*i),
        Yaml::Boolean(b) => serde_json::Value::Bool(*b),
        Yaml::Array(a) => serde_json::Value::Array(a.iter().map(yaml_to_json).collect()),
        Yaml::Hash(h) => serde_json::Value::Object(
            h.iter()
                .map(|(k, v)| (k.as_str().unwrap().to_string(), yaml_to_json(v)))
                .collect(),
        ),
        Yaml::Null => serde_json::Value::Null,
        other => panic!("unexpected YAML {other:?}"),
    }
}

/// Parses a generated pipeline and validates it against GitLab's published
/// CI schema (vendored in tests/fixtures); the pipeline as JSON.
#[track_caller]
pub fn validated(yaml: &str) -> serde_json::Value {
    let docs =
        yaml_rust2::YamlLoader::load_from_str(yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    let v = yaml_to_json(&docs[0]);
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture_dir("gitlab-ci-schema.json")).unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&v)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "schema errors: {errors:?}\n{yaml}");
    v
}

impl TestWs {
    /// The chain fixture on the recording backend with a layer in each
    /// state: //base/os and //base/hsn up to date; //compute/compute needs
    /// build (an input changed since it was built); //uan/uan failed (at
    /// its current digest); //compute/slurm never built.
    pub fn every_status() -> TestWs {
        let ws = TestWs::recorded("chain");
        ws.lb(&["build", "//compute/compute"]).ok();
        ws.rec().fail_label("//uan/uan");
        let r = ws.lb(&["build", "//uan/uan"]);
        assert_eq!(r.code, 1, "{}", r.stderr);
        let tasks = "compute-config/roles/common/tasks/main.yml";
        let text = ws.read(tasks).edit(
            "> /etc/cluster-name",
            "> /etc/cluster-name; echo changed > /etc/changed",
        );
        ws.write(tasks, &text);
        ws
    }
}

/// `buildah ARGS`'s trimmed stdout; panics with its stderr when it fails.
pub fn buildah(args: &[&str]) -> String {
    let out = listing_retried("buildah", || {
        Command::new("buildah").args(args).output().unwrap()
    });
    assert!(
        out.status.success(),
        "buildah {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

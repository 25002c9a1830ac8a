//! The pipelines `layerbuild ci gitlab` generates, run by a real GitLab
//! client: gitlab-ci-local 4.75.1 (`scripts/gitlab-ci-local`, installed by
//! `scripts/install-deps.sh`), shell executor with `--shell-isolation`
//! (each job in its own copy of the checkout, so with its own `cache/`),
//! and one containers storage per job (`[ci.gitlab] variables` point
//! LAYERBUILD_STORAGE_ROOT at a directory named after `$CI_JOB_NAME_SLUG`):
//! separate runners, whose only link is a docker-registry on 127.0.0.1.
//! The parent pipeline is the README's, verbatim.
//!
//! gitlab-ci-local ignores `strategy: depend` (its exit code does not say
//! whether a child job failed): the jobs' results are read from the summary
//! it prints at the end, their output from its job-prefixed lines.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Edit, buildah_on, copy_dir, fixture_dir, git, require_buildah, validated};

const INSTALL: &str = "run scripts/install-deps.sh (as root)";
const GCL_VERSION: &str = "4.75.1";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Panics, never skips, when a tool the pipelines need is missing.
fn require_tools() {
    require_buildah();
    let pkg = repo().join("target/tools/gitlab-ci-local/node_modules/gitlab-ci-local/package.json");
    let text = std::fs::read_to_string(&pkg).unwrap_or_else(|_| {
        panic!(
            "this test needs gitlab-ci-local {GCL_VERSION} ({} is missing): {INSTALL}",
            pkg.display()
        )
    });
    assert!(
        text.contains(&format!("\"version\": \"{GCL_VERSION}\"")),
        "this test needs gitlab-ci-local {GCL_VERSION}, {} is another: {INSTALL}",
        pkg.display()
    );
    for tool in ["node", "rsync", "docker-registry", "skopeo", "git"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(found, "this test needs {tool}: {INSTALL}");
    }
}

/// A docker-registry on a free 127.0.0.1 port with temporary storage;
/// stopped on drop. It can be restarted read-only on the same data.
struct Registry {
    child: Option<Child>,
    dir: tempfile::TempDir,
    port: u16,
}

impl Registry {
    fn start() -> Registry {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut r = Registry {
            child: None,
            dir: tempfile::tempdir().unwrap(),
            port,
        };
        r.serve(false);
        r
    }

    /// (Re)starts it on its port and data; `readonly` refuses every push.
    fn serve(&mut self, readonly: bool) {
        self.stop();
        let conf = self.dir.path().join("config.yml");
        let maintenance = if readonly {
            "  maintenance:\n    readonly:\n      enabled: true\n"
        } else {
            ""
        };
        std::fs::write(
            &conf,
            format!(
                "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\n{maintenance}http:\n  addr: 127.0.0.1:{}\n",
                self.dir.path().join("data").display(),
                self.port
            ),
        )
        .unwrap();
        let log = std::fs::File::create(self.dir.path().join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("docker-registry: {e}: {INSTALL}"));
        self.child = Some(child);
        let t = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "docker-registry did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn url(&self) -> String {
        format!("127.0.0.1:{}/hpc/layers", self.port)
    }

    /// The tags of a label's repository (`//base/os`: `URL/base/os`).
    fn tags(&self, label: &str) -> BTreeSet<String> {
        let out = Command::new("skopeo")
            .args(["list-tags", "--tls-verify=false"])
            .arg(format!(
                "docker://{}/{}",
                self.url(),
                label.trim_start_matches("//")
            ))
            .output()
            .unwrap();
        if !out.status.success() {
            return BTreeSet::new();
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["Tags"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|t| t.as_str().unwrap().to_string())
            .collect()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Empties and removes the storage at `root`: its containers, its images,
/// any overlay mount left below it.
fn remove_storage(root: &Path) {
    if !root.exists() {
        return;
    }
    buildah_on(root, &["rm", "--all"]);
    buildah_on(root, &["rmi", "--all", "--force"]);
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let mut below: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(1))
        .filter(|m| Path::new(m).starts_with(root))
        .collect();
    below.sort();
    for m in below.iter().rev() {
        let _ = Command::new("umount").arg("-l").arg(m).output();
    }
    let _ = std::fs::remove_dir_all(root);
}

/// Image IDs in the storage at `root`, by label and 12-digit digest (the
/// local tag of a layer built there, or the registry tag of one pulled).
fn image_ids(root: &Path) -> BTreeMap<(String, String), String> {
    buildah_on(
        root,
        &[
            "images",
            "--no-trunc",
            "--format",
            "{{.Name}}:{{.Tag}} {{.ID}}",
        ],
    )
    .stdout
    .lines()
    .filter_map(|l| {
        let mut fields = l.split_whitespace();
        let (name, id) = (fields.next()?, fields.next()?);
        let (repo, tag) = name.rsplit_once(':')?;
        let mut parts = repo.rsplit('/');
        let layer = parts.next()?;
        let ty = parts.next()?;
        Some((
            (format!("//{ty}/{layer}"), tag.chars().take(12).collect()),
            id.trim_start_matches("sha256:").to_string(),
        ))
    })
    .collect()
}

/// GitLab's `$CI_JOB_NAME_SLUG`: lowercase, anything else than a letter or
/// a digit a dash, at most 63 characters, no dash at either end.
fn slug(job: &str) -> String {
    let s: String = job
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    s.chars()
        .take(63)
        .collect::<String>()
        .trim_matches('-')
        .to_string()
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// The chain fixture as the README's project: system `clusterA`, the
/// shared registry, one storage per job, the README's parent pipeline as
/// `.gitlab-ci.yml`; a git repository on `main` once [`Project::commit`]
/// was called.
struct Project {
    dir: tempfile::TempDir,
    root: PathBuf,
    name: String,
}

/// The README's parent pipeline, verbatim.
fn readme_parent_pipeline() -> String {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    readme
        .split("```yaml\n")
        .skip(1)
        .map(|b| b.split("```").next().unwrap())
        .find(|b| b.contains("generate-layers:") && b.contains("trigger:"))
        .expect("README.md shows the parent pipeline")
        .to_string()
}

impl Project {
    fn new(reg: &Registry) -> Project {
        Project::with(Some(reg))
    }

    /// [`Project::new`] with `registry` as `[cache] registry`, or none.
    fn with(reg: Option<&Registry>) -> Project {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("proj");
        copy_dir(&fixture_dir("chain"), &root);
        let name = format!(
            "gcl{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let p = Project { dir, root, name };
        let lf = p
            .read("Layerfile.toml")
            .edit("name = \"fixture\"", &format!("name = \"{}\"", p.name))
            .edit("[systems.test]", "[systems.clusterA]")
            .edit(
                "scripts = [\"scripts/uan.sh\"]",
                "scripts = [\"scripts/uan.sh\"]\ntests = [\"test -f /etc/layer-hsn\"]",
            );
        let cache = reg
            .map(|r| {
                format!(
                    "\n[cache]\nregistry = \"{}\"\ntls_verify = false\n",
                    r.url()
                )
            })
            .unwrap_or_default();
        p.write(
            "Layerfile.toml",
            &format!(
                "{lf}\n[ci.gitlab]\nvariables = {{ LAYERBUILD_STORAGE_ROOT = \"{}/$CI_JOB_NAME_SLUG\" }}\n{cache}",
                p.runners().display(),
            ),
        );
        p.write(".gitignore", "/cache/\n/layers.yml\n/.gitlab-ci-local/\n");
        p.write(".gitlab-ci.yml", &readme_parent_pipeline());
        p
    }

    fn storages(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    /// Where each job's storage is, by its slug.
    fn runners(&self) -> PathBuf {
        self.storages().join("runners")
    }

    /// The storage of commands run here, outside any job.
    fn host_storage(&self) -> PathBuf {
        self.storages().join("host")
    }

    fn runner(&self, job: &str) -> PathBuf {
        self.runners().join(slug(job))
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path(rel)).unwrap()
    }

    fn write(&self, rel: &str, text: &str) {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    fn append(&self, rel: &str, text: &str) {
        self.write(rel, &(self.read(rel) + text));
    }

    fn git(&self, args: &[&str]) -> String {
        git(&self.root, args)
    }

    /// Commits everything (the first time: a repository on `main`);
    /// returns the commit.
    fn commit(&self, msg: &str) -> String {
        if !self.path(".git").exists() {
            self.git(&["init", "-q", "-b", "main"]);
        }
        self.git(&["add", "-A"]);
        self.git(&["commit", "-qm", msg]);
        self.git(&["rev-parse", "HEAD"])
    }

    /// From now on, the project is a clone of this one with only its last
    /// commit (GitLab's `GIT_DEPTH: 1`).
    fn shallow_clone(&mut self) {
        let shallow = self.dir.path().join("shallow");
        git(
            self.dir.path(),
            &[
                "clone",
                "-q",
                "--depth",
                "1",
                &format!("file://{}", self.root.display()),
                shallow.to_str().unwrap(),
            ],
        );
        self.root = shallow;
    }

    /// `layerbuild` here, outside any job, on the host storage of this test.
    fn lb(&self, args: &[&str]) -> common::Run {
        let storage = self.host_storage().display().to_string();
        common::lb_in(
            &self.root,
            args,
            &[("LAYERBUILD_STORAGE_ROOT", storage.as_str())],
        )
    }

    /// label -> digest for a system.
    fn digests(&self, system: &str) -> BTreeMap<String, String> {
        common::digests_of(&self.lb(&["ls", "--json", "--system", system]).ok().json())
    }

    /// Runs the pipeline in gitlab-ci-local with `vars`, on fresh runners:
    /// each job's storage and checkout are new.
    fn pipeline(&self, vars: &[(&str, &str)]) -> Pipeline {
        for e in std::fs::read_dir(self.runners()).into_iter().flatten() {
            remove_storage(&e.unwrap().path());
        }
        for gone in [".gitlab-ci-local", "cache"] {
            let _ = std::fs::remove_dir_all(self.path(gone));
        }
        let _ = std::fs::remove_file(self.path("layers.yml"));

        let bin_dir = Path::new(env!("CARGO_BIN_EXE_layerbuild"))
            .parent()
            .unwrap();
        let mut c = Command::new(repo().join("scripts/gitlab-ci-local"));
        c.args(["--force-shell-executor", "--shell-isolation"]);
        for (k, v) in vars {
            c.arg("--variable").arg(format!("{k}={v}"));
        }
        // The host's environment reaches shell jobs: none of an outer CI's
        // variables, nor layerbuild's, but the host storage for the
        // parent's job (the child's come from the pipeline's variables).
        for (k, _) in std::env::vars() {
            if k.starts_with("CI_") || k.starts_with("GITLAB_") || k.starts_with("LAYERBUILD_") {
                c.env_remove(k);
            }
        }
        c.env(
            "PATH",
            format!(
                "{}:{}",
                bin_dir.display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .env("LAYERBUILD_STORAGE_ROOT", self.host_storage())
        .env("FORCE_COLOR", "0")
        // gitlab-ci-local reads GCL_* as options: scripts/gitlab-ci-local
        // unsets them (this one would fail every run).
        .env("GCL_CWD", "/nonexistent")
        .current_dir(&self.root)
        .stdin(Stdio::null());
        let t = Instant::now();
        let out = c.output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let p = Pipeline::parse(
            out.status.code().unwrap_or(-1),
            format!("{stdout}\n{stderr}"),
            std::fs::read_to_string(self.path("layers.yml")).ok(),
        );
        eprintln!("pipeline {vars:?}: {:.1}s", t.elapsed().as_secs_f64());
        assert!(
            p.results
                .get("generate-layers")
                .is_some_and(|r| r == "PASS"),
            "the generate job failed (exit {}):\n{}",
            p.code,
            p.out
        );
        self.assert_host_storage_untouched();
        p
    }

    /// Nothing of this workspace is in the host's default storage.
    fn assert_host_storage_untouched(&self) {
        let out = Command::new("buildah")
            .args(["images", "--format", "{{.Name}}"])
            .output()
            .unwrap();
        let prefix = format!("localhost/layerbuild/{}/", self.name);
        let names = String::from_utf8_lossy(&out.stdout);
        let ours: Vec<&str> = names.lines().filter(|n| n.starts_with(&prefix)).collect();
        assert!(ours.is_empty(), "images in the default storage: {ours:?}");
    }

    /// Asserts that each job built its own layer after pulling every
    /// ancestor from the registry, in its own storage, and that no other
    /// job built that layer (with several systems, a layer they do not
    /// share has a job per system); returns label -> the jobs that built it.
    fn assert_each_layer_built_once(&self, p: &Pipeline) -> BTreeMap<String, Vec<String>> {
        let built = p.built();
        let jobs = p.build_jobs();
        for (job, label) in &jobs {
            let (job, label) = (job.clone(), label.clone());
            let its_jobs: Vec<String> = jobs
                .iter()
                .filter(|(_, l)| *l == label)
                .map(|(j, _)| j.clone())
                .collect();
            assert_eq!(
                built.get(&label),
                Some(&its_jobs),
                "{label} is built by its job {job} alone:\n{}",
                p.out
            );
            let log = p.log(&job);
            // Its ancestors: pulled, not adopted from a shared storage or
            // built again.
            let mut pulled = p.pulled_by(&job);
            pulled.sort();
            let mut expected: Vec<String> =
                ancestors(&label).iter().map(|a| a.to_string()).collect();
            expected.sort();
            assert_eq!(pulled, expected, "{job} pulls its ancestors:\n{log}");
            assert!(!log.contains("adopted"), "{job} shares a storage:\n{log}");
            // In a storage of its own, which holds what it built.
            let ids = image_ids(&self.runner(&job));
            assert!(
                ids.keys().any(|(l, _)| *l == label),
                "no {label} in {job}'s storage {}: {ids:?}",
                self.runner(&job).display()
            );
        }
        built
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        let s = self.storages();
        for e in std::fs::read_dir(s.join("runners")).into_iter().flatten() {
            remove_storage(&e.unwrap().path());
        }
        // The host storage and those of local builds.
        for e in std::fs::read_dir(&s).into_iter().flatten() {
            let e = e.unwrap();
            if e.file_name() != "runners" {
                remove_storage(&e.path());
            }
        }
    }
}

/// A layer's ancestors in the chain fixture, root first.
fn ancestors(label: &str) -> Vec<&'static str> {
    match label {
        "//base/os" => vec![],
        "//base/hsn" => vec!["//base/os"],
        "//compute/compute" | "//uan/uan" => vec!["//base/os", "//base/hsn"],
        "//compute/slurm" => vec!["//base/os", "//base/hsn", "//compute/compute"],
        other => panic!("{other} is not in the chain fixture"),
    }
}

const CHAIN: [&str; 5] = [
    "//base/os",
    "//base/hsn",
    "//compute/compute",
    "//compute/slurm",
    "//uan/uan",
];

/// What gitlab-ci-local printed: every job's output and result.
struct Pipeline {
    code: i32,
    out: String,
    /// Job -> the lines it printed (gitlab-ci-local's `job > line`).
    logs: BTreeMap<String, Vec<String>>,
    /// Job -> PASS, FAIL or WARN, from the summary (child jobs too).
    results: BTreeMap<String, String>,
    /// The child pipeline the generate job wrote, validated.
    layers: serde_json::Value,
}

impl Pipeline {
    fn parse(code: i32, out: String, layers_yml: Option<String>) -> Pipeline {
        let mut logs: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut results = BTreeMap::new();
        for line in out.lines() {
            let l = line.trim_start_matches('\t');
            let l = l.strip_prefix("[build-layers] -> ").unwrap_or(l);
            if let Some((job, rest)) = l.split_once(' ')
                && !job.is_empty()
                && let Some(text) = rest.trim_start().strip_prefix("> ")
            {
                logs.entry(job.to_string())
                    .or_default()
                    .push(text.to_string());
                continue;
            }
            // The summary: ` PASS  [build-layers] -> build:base/os`.
            let words: Vec<&str> = line.split_whitespace().collect();
            let job = match words.as_slice() {
                [r, job] => Some((r, job)),
                [r, "[build-layers]", "->", job] => Some((r, job)),
                _ => None,
            };
            if let Some((r, job)) = job
                && ["PASS", "FAIL", "WARN"].contains(r)
            {
                results.insert(job.to_string(), r.to_string());
            }
        }
        let layers = match layers_yml {
            Some(y) => validated(&y),
            None => serde_json::Value::Null,
        };
        Pipeline {
            code,
            out,
            logs,
            results,
            layers,
        }
    }

    /// The child pipeline's jobs (`build:*` and `layerbuild:*`), sorted.
    fn planned(&self) -> Vec<String> {
        self.layers
            .as_object()
            .unwrap_or_else(|| panic!("no layers.yml:\n{}", self.out))
            .keys()
            .filter(|k| k.starts_with("build:") || k.starts_with("layerbuild:"))
            .cloned()
            .collect()
    }

    /// Child jobs that ran, with their result.
    fn children(&self) -> BTreeMap<String, String> {
        self.results
            .iter()
            .filter(|(j, _)| j.starts_with("build:") || j.starts_with("layerbuild:"))
            .map(|(j, r)| (j.clone(), r.clone()))
            .collect()
    }

    /// (job, label) of the build jobs planned.
    fn build_jobs(&self) -> Vec<(String, String)> {
        self.planned()
            .into_iter()
            .filter_map(|j| {
                let label = j.strip_prefix("build:")?;
                let label = label.split('@').next().unwrap();
                Some((j.clone(), format!("//{label}")))
            })
            .collect()
    }

    #[track_caller]
    fn assert_all_passed(&self, jobs: &[String]) {
        let want: BTreeMap<String, String> = jobs
            .iter()
            .map(|j| (j.clone(), "PASS".to_string()))
            .collect();
        assert_eq!(self.children(), want, "{}", self.out);
    }

    fn log(&self, job: &str) -> String {
        self.logs.get(job).map(|l| l.join("\n")).unwrap_or_default()
    }

    /// Label -> the jobs that built it (`[2/2] //base/hsn built in 0.4s`).
    fn built(&self) -> BTreeMap<String, Vec<String>> {
        let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (job, lines) in &self.logs {
            for l in lines {
                if let Some(label) = progress_label(l, " built in ") {
                    m.entry(label).or_default().push(job.clone());
                }
            }
        }
        m
    }

    /// The labels a job pulled, in order.
    fn pulled_by(&self, job: &str) -> Vec<String> {
        self.logs
            .get(job)
            .into_iter()
            .flatten()
            .filter_map(|l| progress_label(l, " pulled from "))
            .collect()
    }
}

/// The label of a progress line `[i/n] //LABEL<what>...`.
fn progress_label(line: &str, what: &str) -> Option<String> {
    let rest = line.strip_prefix('[')?.split_once("] ")?.1;
    let (label, _) = rest.split_once(what)?;
    (label.starts_with("//") && !label.contains(' ')).then(|| label.to_string())
}

/// The jobs of `labels`, sorted.
fn jobs_of(labels: &[&str]) -> Vec<String> {
    let mut jobs: Vec<String> = labels
        .iter()
        .map(|l| format!("build:{}", l.trim_start_matches("//")))
        .collect();
    jobs.sort();
    jobs
}

/// A branch pipeline on an empty registry builds each layer in one job,
/// each job pulling its ancestors; a re-run builds nothing; a merge request
/// changing one role builds one layer; and a registry refusing its push
/// fails that job instead of leaving it green.
#[test]
fn branch_rerun_mr_and_a_refusing_registry() {
    require_tools();
    let mut reg = Registry::start();
    let p = Project::new(&reg);
    let first = p.commit("the workspace");
    let digests = p.digests("clusterA");

    // 1. A branch pipeline on an empty registry: a job per layer.
    let run = p.pipeline(&[
        ("CI_COMMIT_BRANCH", "main"),
        ("CI_COMMIT_BEFORE_SHA", &first),
    ]);
    let all = jobs_of(&CHAIN);
    assert_eq!(run.planned(), all);
    run.assert_all_passed(&all);
    let built = p.assert_each_layer_built_once(&run);
    assert_eq!(
        built.keys().collect::<Vec<_>>(),
        {
            let mut c = CHAIN.to_vec();
            c.sort();
            c
        },
        "{}",
        run.out
    );
    for job in &all {
        assert!(
            run.log(job).contains(&format!(
                "1 built, {} pulled",
                ancestors(&job.replacen("build:", "//", 1)).len()
            )),
            "{}",
            run.log(job)
        );
        assert!(
            run.log(job).contains(&format!("1 pushed to {}", reg.url())),
            "{}",
            run.log(job)
        );
    }
    // The image tests of //uan/uan reach GitLab's test tab: its job (and
    // only it, the one layer with tests) wrote the JUnit report its
    // `artifacts:reports:junit` names, with the layer's suite.
    let reports: Vec<(String, String)> = std::fs::read_dir(p.path(".gitlab-ci-local/builds"))
        .unwrap()
        .filter_map(|e| {
            let e = e.unwrap();
            let xml = std::fs::read_to_string(e.path().join("cache/junit.xml")).ok()?;
            Some((e.file_name().to_string_lossy().into_owned(), xml))
        })
        .collect();
    assert_eq!(reports.len(), 1, "{reports:?}");
    let (job_dir, xml) = &reports[0];
    assert!(job_dir.contains("uan"), "{job_dir}");
    assert!(
        xml.contains("<testsuite name=\"//uan/uan@clusterA\" tests=\"1\" failures=\"0\""),
        "{xml}"
    );
    let plan = validated(&p.read("layers.yml"));
    assert_eq!(
        plan["build:uan/uan"]["artifacts"]["reports"]["junit"],
        "cache/junit.xml"
    );
    // Each job its own storage: one per job, none shared.
    let runners: BTreeSet<String> = std::fs::read_dir(p.runners())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        runners,
        all.iter().map(|j| slug(j)).collect::<BTreeSet<_>>()
    );
    // Every layer is in the registry, tagged with its digest.
    for (label, digest) in &digests {
        assert!(
            reg.tags(label).contains(digest),
            "{label}:{digest} not in the registry: {:?}",
            reg.tags(label)
        );
    }

    // 2. The same pipeline again: only the no-op job.
    let again = p.pipeline(&[
        ("CI_COMMIT_BRANCH", "main"),
        ("CI_COMMIT_BEFORE_SHA", &first),
    ]);
    let noop = vec!["layerbuild:nothing-to-build".to_string()];
    assert_eq!(again.planned(), noop);
    again.assert_all_passed(&noop);
    assert!(again.built().is_empty(), "{}", again.out);

    // 3. A merge request changing one role: one job, which pulls the
    // layer's parents and builds it.
    p.git(&["checkout", "-q", "-b", "tune-slurm"]);
    p.append("slurm-config/roles/slurm/tasks/main.yml", "\n# tuned\n");
    p.commit("slurm: tune");
    // GitLab sets no CI_COMMIT_BRANCH in a merge-request pipeline (and
    // gitlab-ci-local would): the README's merge-request rules must do.
    let mr_vars = [
        ("CI_COMMIT_BRANCH", ""),
        ("CI_PIPELINE_SOURCE", "merge_request_event"),
        ("CI_MERGE_REQUEST_DIFF_BASE_SHA", first.as_str()),
    ];
    let mr = p.pipeline(&mr_vars);
    let slurm = jobs_of(&["//compute/slurm"]);
    assert_eq!(mr.planned(), slurm);
    mr.assert_all_passed(&slurm);
    p.assert_each_layer_built_once(&mr);
    assert!(
        mr.log(&slurm[0]).contains(&format!(
            "1 built, 3 pulled, 0 up to date, 0 failed, 0 skipped, 1 pushed to {}",
            reg.url()
        )),
        "{}",
        mr.log(&slurm[0])
    );
    let new_slurm = &p.digests("clusterA")["//compute/slurm"];
    assert_ne!(new_slurm, &digests["//compute/slurm"]);
    assert!(reg.tags("//compute/slurm").contains(new_slurm));

    // 4. The registry refuses pushes (read-only), holding the parents:
    // the job builds its layer, and fails with the hint, not green.
    reg.serve(true);
    p.append("slurm-config/roles/slurm/tasks/main.yml", "# again\n");
    p.commit("slurm: tune again");
    let refused_digest = p.digests("clusterA")["//compute/slurm"].clone();
    let refused = p.pipeline(&mr_vars);
    assert_eq!(refused.planned(), slurm);
    assert_eq!(
        refused.children(),
        BTreeMap::from([(slurm[0].clone(), "FAIL".to_string())]),
        "{}",
        refused.out
    );
    let log = refused.log(&slurm[0]);
    let mut pulled = refused.pulled_by(&slurm[0]);
    pulled.sort();
    assert_eq!(pulled, ["//base/hsn", "//base/os", "//compute/compute"]);
    assert_eq!(
        refused.built().keys().collect::<Vec<_>>(),
        ["//compute/slurm"]
    );
    assert!(
        log.contains(&format!("1 layer(s) built but not pushed to {}", reg.url())),
        "{log}"
    );
    assert!(
        log.contains("hint:") && log.contains("--cache-mode read-only"),
        "{log}"
    );
    assert!(!reg.tags("//compute/slurm").contains(&refused_digest));
}

/// A shallow clone (GIT_DEPTH 1) whose branch pipeline names, as the commit
/// before the push, a commit not in the clone: the generate job passes
/// (with a registry, the registry is the plan, and a note says --since
/// changes nothing), and the pipeline builds what the registry lacks.
#[test]
fn a_shallow_clone_builds_what_the_registry_lacks() {
    require_tools();
    let reg = Registry::start();
    let mut p = Project::new(&reg);
    let before = p.commit("the workspace");
    p.append("slurm-config/roles/slurm/tasks/main.yml", "\n# tuned\n");
    p.commit("slurm: tune");
    // Another machine pushed the base layers.
    let pushed = p
        .lb(&["build", "--json", "--system", "clusterA", "//base/hsn"])
        .ok()
        .json();
    assert_eq!(pushed["pushed"], 2, "{pushed}");
    p.shallow_clone();
    let run = std::process::Command::new("git")
        .args(["cat-file", "-e", &before])
        .current_dir(&p.root)
        .output()
        .unwrap();
    assert!(!run.status.success(), "{before} is in the shallow clone");

    let run = p.pipeline(&[
        ("CI_COMMIT_BRANCH", "main"),
        ("CI_COMMIT_BEFORE_SHA", &before),
    ]);
    // The generate job ran in a shallow checkout, and said no error.
    assert!(
        p.path(".gitlab-ci-local/builds/generate-layers/.git/shallow")
            .exists(),
        "the generate job's checkout is not shallow"
    );
    let gen_log = run.log("generate-layers");
    assert!(!gen_log.contains("error"), "{gen_log}");
    assert!(gen_log.contains("--since changes nothing"), "{gen_log}");
    let lacking = jobs_of(&["//compute/compute", "//compute/slurm", "//uan/uan"]);
    assert_eq!(run.planned(), lacking);
    run.assert_all_passed(&lacking);
    p.assert_each_layer_built_once(&run);
    for (label, digest) in p.digests("clusterA") {
        assert!(reg.tags(&label).contains(&digest), "{label}:{digest}");
    }
}

/// The merge request that adds `Layerfile.toml`, in a project without a
/// registry (so `--since auto` is what decides): the base revision has no
/// workspace, the generate job says so in a note, not an error, and every
/// layer gets a job, which passes.
#[test]
fn the_merge_request_adding_the_layerfile_builds_every_layer() {
    require_tools();
    let p = Project::with(None);
    p.git(&["init", "-q", "-b", "main"]);
    p.git(&["add", "-A", "--", ".", ":!Layerfile.toml"]);
    p.git(&["commit", "-qm", "before the workspace"]);
    let base = p.git(&["rev-parse", "HEAD"]);
    p.git(&["checkout", "-q", "-b", "add-workspace"]);
    p.commit("the workspace");

    let run = p.pipeline(&[
        ("CI_COMMIT_BRANCH", ""),
        ("CI_PIPELINE_SOURCE", "merge_request_event"),
        ("CI_MERGE_REQUEST_DIFF_BASE_SHA", &base),
    ]);
    let note = format!("there is no Layerfile.toml at {base}");
    let gen_log = run.log("generate-layers");
    assert!(
        gen_log.contains(&note) && gen_log.contains("every layer counts"),
        "{gen_log}"
    );
    assert!(!gen_log.contains("error"), "{gen_log}");
    assert!(
        p.read("layers.yml").contains(&format!("# {note}")),
        "the pipeline says why"
    );
    let all = jobs_of(&CHAIN);
    assert_eq!(run.planned(), all);
    run.assert_all_passed(&all);
    // With no registry to link them, each job builds its layer's chain in
    // its own storage.
    for (job, label) in run.build_jobs() {
        let mut chain: Vec<String> = ancestors(&label).iter().map(|a| a.to_string()).collect();
        chain.push(label.clone());
        let built: Vec<String> = run
            .built()
            .into_iter()
            .filter(|(_, jobs)| jobs.contains(&job))
            .map(|(l, _)| l)
            .collect();
        chain.sort();
        assert_eq!(built, chain, "{}", run.log(&job));
    }
}

/// `--system all` with two systems whose compute play reads a system
/// variable: the layers they share (same digest) are built by one job,
/// the others by a job per system, named with it, in a resource group of
/// its system; every job passes, each pulling its system's ancestors.
#[test]
fn two_systems_share_the_layers_they_have_in_common() {
    require_tools();
    let reg = Registry::start();
    let p = Project::new(&reg);
    p.append(
        "Layerfile.toml",
        "\n[systems.clusterB]\ninventory = \"inventory/test\"\nvars = { cluster_name = \"clusterb\" }\n",
    );
    p.write(
        ".gitlab-ci.yml",
        &readme_parent_pipeline().edit("--system clusterA", "--system all"),
    );
    let first = p.commit("two systems");
    let (a, b) = (p.digests("clusterA"), p.digests("clusterB"));
    for label in ["//base/os", "//base/hsn", "//uan/uan"] {
        assert_eq!(a[label], b[label], "{label}");
    }
    for label in ["//compute/compute", "//compute/slurm"] {
        assert_ne!(a[label], b[label], "{label} reads cluster_name");
    }

    let run = p.pipeline(&[
        ("CI_COMMIT_BRANCH", "main"),
        ("CI_COMMIT_BEFORE_SHA", &first),
    ]);
    let mut jobs: Vec<String> = [
        "base/os@clusterA",
        "base/hsn@clusterA",
        "compute/compute@clusterA",
        "compute/compute@clusterB",
        "compute/slurm@clusterA",
        "compute/slurm@clusterB",
        "uan/uan@clusterA",
    ]
    .iter()
    .map(|j| format!("build:{j}"))
    .collect();
    jobs.sort();
    assert_eq!(run.planned(), jobs);
    run.assert_all_passed(&jobs);
    let built = p.assert_each_layer_built_once(&run);
    assert_eq!(
        built["//compute/slurm"],
        [
            "build:compute/slurm@clusterA",
            "build:compute/slurm@clusterB"
        ]
    );
    for sys in ["clusterA", "clusterB"] {
        let job = &run.layers[format!("build:compute/slurm@{sys}")];
        assert_eq!(
            job["resource_group"],
            format!("layerbuild/{sys}/compute/slurm").as_str()
        );
        assert!(
            job["script"][0]
                .as_str()
                .unwrap()
                .contains(&format!("--system {sys}")),
            "{job}"
        );
        // It pulled its own system's compute layer.
        let compute = &[a.clone(), b.clone()][usize::from(sys == "clusterB")]["//compute/compute"];
        assert!(
            run.log(&format!("build:compute/slurm@{sys}"))
                .contains(&format!("compute/compute:{compute}")),
            "{}",
            run.log(&format!("build:compute/slurm@{sys}"))
        );
    }
    for (label, digest) in a.iter().chain(b.iter()) {
        assert!(reg.tags(label).contains(digest), "{label}:{digest}");
    }
}

/// With `reproducible = true`, a layer's image ID is the same in the
/// storage of the job that built it, in the storages of the later jobs that
/// pulled it, and in a fresh storage where `layerbuild build` built the
/// whole chain locally, with no registry.
#[test]
fn reproducible_layers_have_one_image_id_on_every_runner() {
    require_tools();
    let reg = Registry::start();
    let p = Project::new(&reg);
    p.write(
        "Layerfile.toml",
        &p.read("Layerfile.toml")
            .edit("[build]\n", "[build]\nreproducible = true\n"),
    );
    let first = p.commit("reproducible");
    let run = p.pipeline(&[
        ("CI_COMMIT_BRANCH", "main"),
        ("CI_COMMIT_BEFORE_SHA", &first),
    ]);
    let all = jobs_of(&CHAIN);
    run.assert_all_passed(&all);
    p.assert_each_layer_built_once(&run);

    // A local build of every layer in a fresh storage, registry off.
    let local_ws = p.dir.path().join("local/ws");
    copy_dir(&p.root, &local_ws);
    for gone in [".gitlab-ci-local", "cache"] {
        let _ = std::fs::remove_dir_all(local_ws.join(gone));
    }
    let local_storage = p.storages().join("local");
    let report = common::lb_in(
        &local_ws,
        &[
            "build",
            "--json",
            "--system",
            "clusterA",
            "--cache-mode",
            "off",
            "--storage-root",
            local_storage.to_str().unwrap(),
            "//...",
        ],
        &[],
    )
    .ok()
    .json();
    assert_eq!(report["built"], 5, "{report}");
    let local = image_ids(&local_storage);

    let digests = p.digests("clusterA");
    for (job, label) in run.build_jobs() {
        let key = (label.clone(), digests[&label][..12].to_string());
        let built = image_ids(&p.runner(&job))
            .get(&key)
            .cloned()
            .unwrap_or_else(|| panic!("{job} has no image of {label}"));
        assert_eq!(local.get(&key), Some(&built), "{label}: local build");
        // Every job that pulled it has the very image.
        let mut pulled = 0;
        for (other, _) in run.build_jobs() {
            if other != job
                && let Some(id) = image_ids(&p.runner(&other)).get(&key)
            {
                assert_eq!(id, &built, "{label} in {other}'s storage");
                pulled += 1;
            }
        }
        let descendants = CHAIN
            .iter()
            .filter(|l| ancestors(l).contains(&label.as_str()))
            .count();
        assert_eq!(pulled, descendants, "{label}");
    }
}

/// A read-only registry holding nothing: the first job builds its layer
/// and fails on the refused push; no later job passes on a layer the
/// registry does not have.
#[test]
fn an_empty_read_only_registry_fails_the_pipeline() {
    require_tools();
    let mut reg = Registry::start();
    reg.serve(true);
    let p = Project::new(&reg);
    let first = p.commit("the workspace");
    let run = p.pipeline(&[
        ("CI_COMMIT_BRANCH", "main"),
        ("CI_COMMIT_BEFORE_SHA", &first),
    ]);
    assert_eq!(run.planned(), jobs_of(&CHAIN));
    let children = run.children();
    assert_eq!(
        children.get("build:base/os").map(String::as_str),
        Some("FAIL"),
        "{}",
        run.out
    );
    assert!(
        !children.values().any(|r| r == "PASS"),
        "{children:?}\n{}",
        run.out
    );
    let log = run.log("build:base/os");
    assert!(log.contains("1 layer(s) built but not pushed"), "{log}");
    assert!(reg.tags("//base/os").is_empty());
}

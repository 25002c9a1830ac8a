//! The command layer: one file per subcommand. Each `exec` turns its clap
//! arguments into an op's options, runs the op (with the backend when it
//! needs one) and returns a [`Report`]: serialisable for `--json`,
//! rendered for people, and saying how the command ends (its exit code).
//! [`run`] is the dispatch.
//!
//! I/O: writes to the [`Output`] it is given; the ops do the rest.

mod affected;
mod boot;
mod build;
mod cache;
mod ci;
mod clean;
mod debug;
mod export;
mod gc;
mod graph;
mod hash;
mod hash_diff;
mod history;
mod init;
mod lint;
mod log;
mod ls;
mod promote;
mod publish;
mod push;
mod test;
mod why;

use std::path::PathBuf;

use serde::Serialize;

use crate::cli::{self, Cli, Command};
use crate::error::{Error, Result};
use crate::executor::Backend;
use crate::executor::buildah::Buildah;
use crate::ops::Context;

/// What a command found, for people and for scripts.
pub trait Report: Serialize {
    /// The text for people, on stdout.
    fn render(&self) -> String;
    /// Lines for stderr, said before the report (`warning: …`, `note: …`).
    fn notes(&self) -> Vec<String> {
        vec![]
    }
    /// How the command ends: `Ok` exits 0, an error its exit code.
    fn outcome(&self) -> Result<()> {
        Ok(())
    }
}

/// Where a command's report goes.
pub trait Output {
    /// Text for stdout, as it is.
    fn stdout(&mut self, text: &str);
    /// One line for stderr.
    fn stderr(&mut self, line: &str);
    /// Where progress of long work goes.
    fn progress(&self) -> crate::progress::Progress {
        crate::progress::Progress::default()
    }
}

/// Says `report`: its notes (under `-q` only its warnings), then JSON or
/// text, then its outcome.
pub fn finish(out: &mut dyn Output, quiet: bool, json: bool, report: &impl Report) -> Result<()> {
    for n in report.notes() {
        if !quiet || n.starts_with("warning:") {
            out.stderr(&n);
        }
    }
    if json {
        let text = serde_json::to_string_pretty(report).expect("reports serialise");
        out.stdout(&format!("{text}\n"));
    } else {
        out.stdout(&report.render());
    }
    report.outcome()
}

/// Reports about one or several layers (`why`, `hash`): one layer named
/// exactly, for at most one system, is the report itself (as it always
/// was); a pattern, several labels or several systems give
/// `{version, layers: [...]}`, so that the shape follows from the command
/// line, never from what the workspace holds.
#[derive(Serialize)]
#[serde(untagged)]
pub enum Layers<T> {
    One(T),
    Many { version: u32, layers: Vec<T> },
}

impl<T> Layers<T> {
    /// `reports` as the arguments `labels` and `systems` ask.
    pub fn new(labels: &[String], systems: &[String], mut reports: Vec<T>) -> Layers<T> {
        let exact = matches!(labels, [l] if crate::label::Label::parse(l).is_ok());
        if exact && !several(systems) && reports.len() == 1 {
            return Layers::One(reports.remove(0));
        }
        Layers::Many {
            version: 1,
            layers: reports,
        }
    }

    fn all(&self) -> &[T] {
        match self {
            Layers::One(r) => std::slice::from_ref(r),
            Layers::Many { layers, .. } => layers,
        }
    }
}

impl<T: Report> Report for Layers<T> {
    /// Each report's text, a blank line between two.
    fn render(&self) -> String {
        let texts: Vec<String> = self.all().iter().map(Report::render).collect();
        texts.join("\n")
    }

    fn notes(&self) -> Vec<String> {
        self.all().iter().flat_map(Report::notes).collect()
    }

    fn outcome(&self) -> Result<()> {
        self.all().iter().try_for_each(Report::outcome)
    }
}

/// `--system` names several systems (or `all`).
fn several(systems: &[String]) -> bool {
    systems.len() > 1 || systems.iter().any(|s| s == "all")
}

/// Which backend the commands use.
#[derive(Clone, Copy)]
pub enum Backends<'a> {
    /// buildah and ansible-playbook, on the storage `--storage-root` or
    /// `[build] storage_root` names: what the command line uses.
    Buildah,
    /// This one (tests, with [`crate::executor::recording::Recording`]).
    Given(&'a dyn Backend),
}

/// A backend owned by the command, or borrowed from the caller.
pub enum BackendRef<'a> {
    Owned(Box<dyn Backend>),
    Borrowed(&'a dyn Backend),
}

impl<'a> std::ops::Deref for BackendRef<'a> {
    type Target = dyn Backend + 'a;

    fn deref(&self) -> &Self::Target {
        match self {
            BackendRef::Owned(b) => b.as_ref(),
            BackendRef::Borrowed(b) => *b,
        }
    }
}

/// What every command of a loaded workspace gets.
pub struct Env<'a> {
    /// For the first architecture `--arch` names, else the default one.
    pub ctx: Context,
    /// The architectures `--arch` names (`all`: every declared one); empty
    /// when it is not given.
    pub arches: Vec<crate::arch::Arch>,
    storage: &'a cli::StorageArgs,
    backends: Backends<'a>,
    pub progress: crate::progress::Progress,
    /// `-v`: more detail where there is more to say.
    pub verbose: bool,
}

impl Env<'_> {
    /// One context per architecture to cover: those `--arch` names, else
    /// every one the workspace builds for (the default first).
    pub fn arch_contexts(&self) -> Result<Vec<Context>> {
        let mut arches = self.arches.clone();
        if arches.is_empty() {
            arches.push(self.ctx.ws.arch);
            for a in &self.ctx.ws.build.architectures {
                if !arches.contains(a) {
                    arches.push(*a);
                }
            }
        }
        arches.iter().map(|a| self.ctx.for_arch(*a)).collect()
    }

    /// The backend (the composition root: the only place the buildah
    /// backend is chosen).
    pub fn backend(&self) -> Result<BackendRef<'_>> {
        match self.backends {
            Backends::Given(b) => Ok(BackendRef::Borrowed(b)),
            Backends::Buildah => Ok(BackendRef::Owned(Box::new(self.buildah()?))),
        }
    }

    /// buildah on the storage `--storage-root` or `[build] storage_root` names.
    fn buildah(&self) -> Result<Buildah> {
        let ctx = &self.ctx;
        let b = Buildah::default();
        let root = self
            .storage
            .storage_root
            .clone()
            .or_else(|| ctx.ws.build.storage_root.clone());
        let Some(root) = root else { return Ok(b) };
        let runroot = self
            .storage
            .storage_runroot
            .clone()
            .or_else(|| ctx.ws.build.storage_runroot.clone())
            .unwrap_or_else(|| root.join("run"));
        let s = crate::executor::buildah::Storage {
            root,
            runroot,
            driver: ctx.ws.build.storage_driver.clone(),
        };
        b.with_storage(&s, &ctx.ws.cache_dir.join("storage"))
    }
}

/// Runs one command line with buildah, saying its report to `out`.
pub fn run(cli: Cli, out: &mut dyn Output) -> Result<()> {
    run_with(cli, Backends::Buildah, out)
}

/// Runs one command line with `backends`, saying its report to `out`.
/// A command run with `--json` that fails before saying its report says
/// the error as JSON on stdout ([`ErrorReport`]); the exit code and the
/// message on stderr are the same as without `--json`.
pub fn run_with(cli: Cli, backends: Backends<'_>, out: &mut dyn Output) -> Result<()> {
    let json = wants_json(&cli.command);
    let mut out = Watched { out, said: false };
    let result = dispatch(cli, backends, &mut out);
    if let Err(e) = &result
        && json
        && !out.said
        && !matches!(e, Error::Exit(_))
    {
        let text = serde_json::to_string_pretty(&ErrorReport::new(e)).expect("errors serialise");
        out.out.stdout(&format!("{text}\n"));
    }
    result
}

/// Whether the command line asks for JSON.
fn wants_json(command: &Command) -> bool {
    match command {
        Command::Build(a) => a.json,
        Command::Hash(a) => a.json,
        Command::Graph(a) => a.json || a.format == crate::ops::graph::GraphFormat::Json,
        Command::Ls(a) => a.json,
        Command::Why(a) => a.json,
        Command::HashDiff(a) => a.json,
        Command::History(a) => a.json,
        Command::Affected(a) => a.json,
        Command::Test(a) => a.json,
        Command::Boot(a) => a.json,
        Command::Export(a) => a.json,
        Command::Push(a) => a.json,
        Command::Promote(a) => a.json,
        Command::Publish(a) => a.json,
        Command::Releases(a) => a.json,
        Command::Lint(a) => a.json,
        Command::Gc(a) => a.json,
        Command::Cache(cli::CacheCommand::Verify(a)) => a.json,
        Command::Cache(cli::CacheCommand::RebuildIndex(a)) => a.json,
        Command::Log(_)
        | Command::Debug(_)
        | Command::Clean(_)
        | Command::Ci(_)
        | Command::Init(_)
        | Command::Completions(_)
        | Command::Man(_) => false,
    }
}

/// `--json`'s error: `{version, error: {kind, message, file, line, column,
/// hint, exit_code, ...}}`.
#[derive(Serialize)]
pub struct ErrorReport {
    version: u32,
    error: crate::error::ErrorJson,
}

impl ErrorReport {
    pub fn new(e: &Error) -> ErrorReport {
        ErrorReport {
            version: 1,
            error: e.to_json(),
        }
    }
}

/// An [`Output`] that remembers whether anything went to stdout.
struct Watched<'a> {
    out: &'a mut dyn Output,
    said: bool,
}

impl Output for Watched<'_> {
    fn stdout(&mut self, text: &str) {
        self.said = true;
        self.out.stdout(text);
    }
    fn stderr(&mut self, line: &str) {
        self.out.stderr(line);
    }
    fn progress(&self) -> crate::progress::Progress {
        self.out.progress()
    }
}

fn dispatch(cli: Cli, backends: Backends<'_>, out: &mut dyn Output) -> Result<()> {
    let quiet = cli.ui.quiet;
    // Commands that need no workspace.
    let command = match cli.command {
        Command::Completions(a) => {
            return finish(out, quiet, false, &Text(init::completions(a.shell)));
        }
        Command::Man(a) => return finish(out, quiet, false, &init::man(a.dir.as_deref())?),
        command => command,
    };
    let dir = match &cli.directory {
        Some(d) => d.clone(),
        None => {
            std::env::current_dir().map_err(|e| Error::env(format!("current directory: {e}")))?
        }
    };
    // lint reports an invalid Layerfile rather than stopping at its first
    // error; init makes one.
    let command = match command {
        Command::Lint(args) => return finish(out, quiet, args.json, &lint::exec(&dir, &args)?),
        Command::Init(args) => return finish(out, quiet, false, &init::exec(&dir, &args)?),
        command => command,
    };
    let progress = match out.progress() {
        _ if cli.ui.quiet => crate::progress::Progress::Quiet,
        crate::progress::Progress::Stderr(_) => crate::progress::Progress::Stderr(cli.ui.progress),
        p => p,
    };
    let arches = parse_arches(&cli.arch)?;
    let mut env = load(&dir, &cli.storage, backends, progress, arches)?;
    env.verbose = cli.ui.verbose;
    let several = matches!(
        command,
        Command::Build(_)
            | Command::Promote(_)
            | Command::Publish(_)
            | Command::Affected(_)
            | Command::Ci(_)
    );
    if !several && env.arches.len() > 1 {
        let names: Vec<&str> = env.arches.iter().map(|a| a.name()).collect();
        return Err(Error::input(format!(
            "this command works on one architecture at a time; --arch names {}",
            names.join(", ")
        ))
        .with_hint(format!(
            "run it once per architecture, e.g. --arch {}",
            names[0]
        )));
    }
    match command {
        Command::Build(a) => finish(out, quiet, a.json, &build::exec(&env, a)?),
        Command::Hash(a) => finish(out, quiet, a.json, &hash::exec(&env, &a)?),
        Command::Graph(a) => {
            let json = a.json || a.format == crate::ops::graph::GraphFormat::Json;
            finish(out, quiet, json, &graph::exec(&env, &a)?)
        }
        Command::Ls(a) => finish(out, quiet, a.json, &ls::exec(&env, &a)?),
        Command::Why(a) => finish(out, quiet, a.json, &why::exec(&env, a)?),
        Command::HashDiff(a) => finish(out, quiet, a.json, &hash_diff::exec(&env, &a)?),
        Command::Log(a) => finish(out, quiet, false, &log::exec(&env, &a)?),
        Command::History(a) => finish(out, quiet, a.json, &history::exec(&env, &a)?),
        Command::Affected(a) => finish(out, quiet, a.json, &affected::exec(&env, &a)?),
        Command::Debug(a) => finish(out, quiet, false, &debug::exec(&env, a)?),
        Command::Test(a) => finish(out, quiet, a.json, &test::exec(&env, a)?),
        Command::Boot(a) => {
            let json = a.json;
            finish(out, quiet, json, &boot::exec(&env, a)?)
        }
        Command::Export(a) => {
            let json = a.json;
            finish(out, quiet, json, &export::exec(&env, a)?)
        }
        Command::Push(a) => {
            let json = a.json;
            finish(out, quiet, json, &push::exec(&env, a)?)
        }
        Command::Promote(a) => {
            let json = a.json;
            finish(out, quiet, json, &promote::exec(&env, a)?)
        }
        Command::Publish(a) => {
            let json = a.json;
            finish(out, quiet, json, &publish::exec(&env, a)?)
        }
        Command::Releases(a) => finish(out, quiet, a.json, &promote::exec_releases(&env, &a)?),
        Command::Ci(cli::CiCommand::Gitlab(a)) => finish(out, quiet, false, &ci::gitlab(&env, &a)?),
        Command::Gc(a) => finish(out, quiet, a.json, &gc::exec(&env, &a)?),
        Command::Cache(c) => {
            let json = match &c {
                cli::CacheCommand::Verify(a) => a.json,
                cli::CacheCommand::RebuildIndex(a) => a.json,
            };
            finish(out, quiet, json, &cache::exec(&env, c)?)
        }
        Command::Clean(_) => finish(out, quiet, false, &clean::exec(&env)?),
        Command::Lint(_) | Command::Init(_) | Command::Completions(_) | Command::Man(_) => Err(
            Error::env("internal: this command is run before loading the workspace"),
        ),
    }
}

/// The workspace found from `dir`, after removing what a killed build
/// left (the system's vars, secret values among them, go before anything
/// else happens).
fn load<'a>(
    dir: &std::path::Path,
    storage: &'a cli::StorageArgs,
    backends: Backends<'a>,
    progress: crate::progress::Progress,
    given: Option<Vec<crate::arch::Arch>>,
) -> Result<Env<'a>> {
    let ctx = Context::load_for(dir, given.as_ref().and_then(|g| g.first().copied()))?;
    crate::ops::gc::remove_leftover_vars(&ctx.ws.cache_dir);
    // `--arch all`: every architecture the workspace builds for.
    let arches = given.unwrap_or_else(|| ctx.ws.build.architectures.clone());
    Ok(Env {
        arches,
        ctx,
        storage,
        backends,
        progress,
        verbose: false,
    })
}

/// `--arch`: `None` for `all`, else the named architectures, each once,
/// in order (empty when it is not given).
fn parse_arches(given: &[String]) -> Result<Option<Vec<crate::arch::Arch>>> {
    if given.iter().any(|g| g == "all") {
        if given.len() > 1 {
            return Err(Error::input(
                "--arch all names every architecture; give it alone",
            ));
        }
        return Ok(None);
    }
    let mut out = vec![];
    for g in given {
        let a = crate::arch::Arch::parse(g).ok_or_else(|| {
            Error::input(format!("unknown architecture '{g}'")).with_hint(format!(
                "use one of: {}, or all",
                crate::arch::KNOWN.join(", ")
            ))
        })?;
        if !out.contains(&a) {
            out.push(a);
        }
    }
    Ok(Some(out))
}

/// `--json` off: a report that is only text.
#[derive(Serialize)]
#[serde(transparent)]
pub struct Text(pub String);

impl Report for Text {
    fn render(&self) -> String {
        self.0.clone()
    }
}

/// The labels given, or every layer.
fn labels_or_all(labels: &[String]) -> Vec<String> {
    if labels.is_empty() {
        vec!["//...".to_string()]
    } else {
        labels.to_vec()
    }
}

/// `--junit FILE`: the image tests of `layers` (label, tests), those that
/// ran any, as JUnit XML.
fn write_junit<'a>(
    path: &PathBuf,
    system: Option<&str>,
    layers: impl Iterator<Item = (&'a str, &'a [crate::executor::TestOutcome])>,
) -> Result<()> {
    let suites: Vec<crate::junit::Suite<'_>> = layers
        .filter(|(_, tests)| !tests.is_empty())
        .map(|(label, tests)| crate::junit::Suite {
            label,
            system,
            tests,
        })
        .collect();
    write_atomically(path, &crate::junit::render(&suites))
}

/// A file written whole or not at all.
fn write_atomically(path: &PathBuf, text: &str) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

//! layerbuild: declarative, content-addressed builds of layered node images.
//!
//! Data flows one way, one module per arrow:
//! `Layerfile.toml` → [`workspace`] (validated model) → [`graph`] (DAG,
//! selection) → [`fingerprint`] (manifest + blake3 digest per layer) →
//! [`ops::build`] (plan against the [`cache`]) → [`scheduler`] (ready queue,
//! bounded parallelism) → [`executor`] (buildah + ansible-playbook) → cache
//! record. Only the last three touch processes or SQLite; everything before
//! reads files and is unit-tested without buildah. [`cli`] holds the clap
//! types; [`ops`] one function per subcommand.

pub mod cache;
pub mod cli;
pub mod digest;
pub mod error;
pub mod executor;
pub mod explain;
pub mod fingerprint;
pub mod graph;
pub mod interrupt;
pub mod label;
pub mod memory;
pub mod ops;
pub mod plan;
pub mod progress;
pub mod scheduler;
pub mod secrets;
pub mod timings;
pub mod workspace;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command};
use error::{Error, Result};
use ops::Context;

/// Writes to stdout; a closed pipe (`layerbuild ls | head`) ends the
/// process quietly instead of panicking as `print!` would.
fn emit(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: writing to stdout: {e}");
        std::process::exit(3);
    }
}

macro_rules! out {
    ($($arg:tt)*) => { emit(&format!($($arg)*)) };
}

macro_rules! outln {
    ($($arg:tt)*) => { emit(&format!("{}\n", format!($($arg)*))) };
}

/// Entry point: parse arguments, run, print errors, map them to exit codes.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Error::Exit(code)) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// Prints `v` as JSON with `--json`, else its text rendering.
fn show<T: serde::Serialize>(json: bool, v: &T, text: impl FnOnce() -> String) {
    if json {
        print_json(v);
    } else {
        emit(&text());
    }
}

fn print_json<T: serde::Serialize>(v: &T) {
    outln!(
        "{}",
        serde_json::to_string_pretty(v).expect("output serialises")
    );
}

/// The buildah executor, with the storage root from `--storage-root` or `[build] storage_root`.
fn make_executor(ctx: &Context, storage: &cli::StorageArgs) -> Result<executor::buildah::Buildah> {
    let b = executor::buildah::Buildah::default();
    let root = storage
        .storage_root
        .clone()
        .or_else(|| ctx.ws.build.storage_root.clone());
    let Some(root) = root else { return Ok(b) };
    let runroot = storage
        .storage_runroot
        .clone()
        .or_else(|| ctx.ws.build.storage_runroot.clone())
        .unwrap_or_else(|| root.join("run"));
    let s = executor::buildah::Storage {
        root,
        runroot,
        driver: ctx.ws.build.storage_driver.clone(),
    };
    b.with_storage(&s, &ctx.ws.cache_dir.join("storage"))
}

/// `export` and `push`: one output of a layer built at its current digest.
fn run_output(
    ctx: &Context,
    label: &label::Label,
    system: Option<&str>,
    output: &workspace::Output,
    force: bool,
    executor: &executor::buildah::Buildah,
) -> Result<ops::export::OutputResult> {
    let (digest, image_id) = ops::export::built_image(ctx, label, system, executor)?;
    let cache = std::sync::Mutex::new(cache::Cache::open(&ctx.ws.db_path())?);
    Ok(ops::export::perform(
        &ctx.ws, &cache, executor, label, &digest, &image_id, output, force,
    ))
}

fn finish_output(r: ops::export::OutputResult, json: bool) -> Result<()> {
    let Some(e) = &r.error else {
        show(json, &r, || ops::export::render(std::slice::from_ref(&r)));
        return Ok(());
    };
    // A failure is said once, as the error (and in the JSON object).
    if json {
        print_json(&r);
    }
    let hint = if e.contains("server gave HTTP response to HTTPS client") {
        "\n  hint: the registry speaks plain HTTP: add --tls-verify=false (or serve it over HTTPS)"
    } else {
        ""
    };
    Err(Error::BuildFailed(format!(
        "{} -> {}: {e}{hint}",
        r.label, r.target
    )))
}

fn lint(dir: &std::path::Path, args: &cli::LintArgs) -> Result<()> {
    let labels = if args.labels.is_empty() {
        vec!["//...".to_string()]
    } else {
        args.labels.clone()
    };
    let opts = ops::lint::LintOptions {
        patterns: ops::parse_patterns(&labels)?,
        system: args.system.system.clone(),
    };
    let root = workspace::find_root(dir)?;
    let report = ops::lint::lint(&root, &opts, &ops::lint::LintTools::default())?;
    for n in &report.notes {
        eprintln!("note: {n}");
    }
    show(args.json, &report, || report.render());
    if report.errors() > 0 {
        return Err(Error::Exit(1));
    }
    Ok(())
}

/// `cache verify` and `cache rebuild-index`.
fn cache_command(
    ctx: &Context,
    cmd: cli::CacheCommand,
    executor: &executor::buildah::Buildah,
) -> Result<()> {
    match cmd {
        cli::CacheCommand::Verify(args) => {
            let r = ops::cache::verify(ctx, executor, args.repair)?;
            show(args.json, &r, || ops::cache::render_verify(&r));
            if r.unresolved() > 0 {
                return Err(Error::Exit(1));
            }
        }
        cli::CacheCommand::RebuildIndex(args) => {
            let r = ops::cache::rebuild_index(ctx, executor)?;
            for n in &r.notes {
                eprintln!("note: {n}");
            }
            show(args.json, &r, || ops::cache::render_rebuild(&r));
        }
    }
    Ok(())
}

pub fn run(cli: Cli) -> Result<()> {
    let dir = match &cli.directory {
        Some(d) => d.clone(),
        None => {
            std::env::current_dir().map_err(|e| Error::env(format!("current directory: {e}")))?
        }
    };
    // lint reports an invalid Layerfile rather than stopping at its first error.
    let command = match cli.command {
        Command::Lint(args) => return lint(&dir, &args),
        command => command,
    };
    let ctx = Context::load(&dir)?;
    // The system's vars (secret values among them) a build killed mid-play
    // left on disk go before anything else happens.
    ops::gc::remove_leftover_vars(&ctx.ws.cache_dir);
    match command {
        Command::Build(args) => {
            let patterns = ops::parse_patterns(&args.labels)?;
            let opts = ops::build::BuildOptions {
                patterns: patterns.clone(),
                system: args.system.system,
                jobs: args.jobs,
                keep_going: args.keep_going,
                isolation: args.isolation,
                registry: args.registry,
                cache_mode: args.cache_mode,
                no_outputs: args.no_outputs,
            };
            let executor = make_executor(&ctx, &cli.storage)?;
            if args.dry_run {
                let plan = ops::build::plan(&ctx, &opts, &executor)?;
                show(args.json, &plan, || ops::build::render_plan(&plan));
                return Ok(());
            }
            if args.from_failed {
                let [label::Pattern::Exact(l)] = patterns.as_slice() else {
                    return Err(Error::input("--from-failed takes exactly one layer label")
                        .with_hint("e.g. layerbuild build --from-failed //compute/slurm"));
                };
                let reporter: Box<dyn progress::Reporter> = if args.json {
                    Box::new(progress::PlainReporter::new(1))
                } else {
                    progress::reporter(1)
                };
                let r = ops::build::from_failed(&ctx, l, &opts, &executor, reporter.as_ref())?;
                if args.json {
                    print_json(&r);
                } else if r.status == "succeeded" {
                    outln!(
                        "{} succeeded in its kept container {}; not cached: only builds from a clean container are cached.\nBuild and cache it with: layerbuild build {}",
                        r.label,
                        r.container,
                        r.label
                    );
                } else {
                    outln!(
                        "{} failed again in its kept container {} (log: {})",
                        r.label,
                        r.container,
                        r.log
                    );
                }
                if r.status == "failed" {
                    return Err(Error::BuildFailed(format!("build failed: {}", r.label)));
                }
                return Ok(());
            }
            // Ctrl-C and SIGTERM stop the running steps, not the process.
            interrupt::set_mode(interrupt::Mode::Build);
            let report = ops::build::build(
                &ctx,
                &opts,
                &executor,
                Some(&executor),
                Some(&executor),
                &|n| {
                    if args.json {
                        Box::new(progress::PlainReporter::new(n))
                    } else {
                        progress::reporter(n)
                    }
                },
            )?;
            for w in &report.warnings {
                eprintln!("warning: {w}");
            }
            if args.json {
                print_json(&report);
            } else {
                let targets: Vec<String> = patterns
                    .iter()
                    .filter(|p| matches!(p, label::Pattern::Exact(_)))
                    .map(|p| p.to_string())
                    .collect();
                out!("{}", ops::build::render_summary(&report, &targets));
            }
            if interrupt::requested() {
                let stopped: Vec<&str> = report
                    .layers
                    .iter()
                    .filter(|l| l.status == "failed")
                    .map(|l| l.label.as_str())
                    .collect();
                eprintln!(
                    "error: interrupted: {} not built{}",
                    if stopped.is_empty() {
                        "nothing".to_string()
                    } else {
                        stopped.join(", ")
                    },
                    if report.layers.iter().any(|l| l.container.is_some()) {
                        "; the working containers of the stopped steps are kept: layerbuild ls --failed"
                    } else {
                        ""
                    }
                );
                return Err(Error::Exit(interrupt::EXIT_CODE));
            }
            if report.failed == 0 && report.outputs_failed > 0 {
                return Err(Error::BuildFailed(format!(
                    "{} output(s) failed; the layers themselves are built and cached",
                    report.outputs_failed
                )));
            }
            // The machine failing is not the layer failing: its cause,
            // exit 3 (the layer's steps may not even have run).
            if let Some(l) = report
                .layers
                .iter()
                .find(|l| l.status == "failed" && l.environment)
            {
                return Err(Error::env(format!(
                    "build failed: {}: {}",
                    l.label,
                    l.error.as_deref().unwrap_or("unknown error")
                ))
                .with_hint(l.hint.clone().unwrap_or_else(|| {
                    "fix the cause and run the build again; the layers built are cached".into()
                })));
            }
            if report.failed > 0 {
                let failed: Vec<&str> = report
                    .layers
                    .iter()
                    .filter(|l| l.status == "failed")
                    .map(|l| l.label.as_str())
                    .collect();
                return Err(Error::BuildFailed(format!(
                    "build failed: {}",
                    failed.join(", ")
                )));
            }
            Ok(())
        }
        Command::Hash(args) => {
            let label = ops::parse_label(&args.label)?;
            let report = ops::hash::hash(&ctx, &label, args.system.system.as_deref())?;
            show(args.json, &report, || ops::hash::render(&report));
            Ok(())
        }
        Command::Graph(args) => {
            out!("{}", ops::graph::graph(&ctx, args.format));
            Ok(())
        }
        Command::Ls(args) => {
            let executor = make_executor(&ctx, &cli.storage)?;
            if args.failed {
                let kept = ops::debug::kept(&ctx, &executor)?;
                show(args.json, &kept, || ops::debug::render_kept(&kept));
                return Ok(());
            }
            let (entries, warning) = ops::ls::ls(&ctx, args.system.system.as_deref(), &executor)?;
            if let Some(w) = warning {
                eprintln!("warning: {w}");
            }
            show(args.json, &entries, || ops::ls::render(&entries));
            Ok(())
        }
        Command::Why(args) => {
            let opts = ops::why::WhyOptions {
                label: ops::parse_label(&args.label)?,
                system: args.system.system,
                since: args.since,
                show_values: args.show_values,
            };
            let executor = make_executor(&ctx, &cli.storage)?;
            let report = ops::why::why(&ctx, &opts, &executor)?;
            show(args.json, &report, || report.text().to_string());
            Ok(())
        }
        Command::HashDiff(args) => {
            let report = ops::why::hash_diff(&ctx, &args.a, &args.b, args.show_values)?;
            show(args.json, &report, || report.text().to_string());
            Ok(())
        }
        Command::Log(args) => {
            let label = ops::parse_label(&args.label)?;
            let (row, text) = ops::log::log(
                &ctx,
                &label,
                args.system.system.as_deref(),
                args.digest.as_deref(),
            )?;
            eprintln!(
                "# {} {} at {} (digest {}, {})",
                row.label,
                row.status,
                ops::format_time(row.started_at),
                crate::fingerprint::short(&row.digest),
                row.log_path.as_deref().unwrap_or("")
            );
            out!("{text}");
            Ok(())
        }
        Command::Debug(args) => {
            let opts = ops::debug::DebugOptions {
                label: ops::parse_label(&args.label)?,
                system: args.system.system,
                fresh: args.fresh,
                isolation: args.isolation,
                command: args.command,
            };
            let executor = make_executor(&ctx, &cli.storage)?;
            // Ctrl-C belongs to the shell in the container.
            interrupt::set_mode(interrupt::Mode::Interactive);
            let code = ops::debug::debug(&ctx, &opts, &executor)?;
            if code == 0 {
                Ok(())
            } else {
                Err(Error::Exit(code.clamp(1, 255) as u8))
            }
        }
        Command::Affected(args) => {
            let r = ops::affected::affected(
                &ctx,
                &args.since,
                args.until.as_deref(),
                args.system.system.as_deref(),
            )?;
            show(args.json, &r, || ops::affected::render(&r));
            Ok(())
        }
        Command::Test(args) => {
            let opts = ops::test::TestOptions {
                label: ops::parse_label(&args.label)?,
                system: args.system.system,
                all: args.all,
                isolation: args.isolation,
            };
            let executor = make_executor(&ctx, &cli.storage)?;
            let r = ops::test::test(&ctx, &opts, &executor)?;
            show(args.json, &r, || ops::test::render(&r));
            if r.failed > 0 {
                return Err(Error::BuildFailed(format!(
                    "{} image test(s) failed",
                    r.failed
                )));
            }
            Ok(())
        }
        Command::Export(args) => {
            let label = ops::parse_label(&args.label)?;
            if let Some(c) = &args.compression
                && (args.format != workspace::ExportFormat::Squashfs
                    || !workspace::SQUASHFS_COMPRESSORS.contains(&c.as_str()))
            {
                return Err(Error::input(format!(
                    "--compression {c} does not apply to {}",
                    args.format.name()
                ))
                .with_hint(format!(
                    "--compression is for squashfs: {}",
                    workspace::SQUASHFS_COMPRESSORS.join(", ")
                )));
            }
            let path = std::path::absolute(&args.output).map_err(|e| Error::io(&args.output, e))?;
            let output = workspace::Output::File {
                format: args.format,
                path,
                compression: args.compression,
            };
            let executor = make_executor(&ctx, &cli.storage)?;
            let r = run_output(
                &ctx,
                &label,
                args.system.system.as_deref(),
                &output,
                args.force,
                &executor,
            )?;
            finish_output(r, args.json)
        }
        Command::Push(args) => {
            let label = ops::parse_label(&args.label)?;
            let output = workspace::Output::Push {
                destination: args.destination,
                tls_verify: args.tls_verify,
            };
            let executor = make_executor(&ctx, &cli.storage)?;
            let r = run_output(
                &ctx,
                &label,
                args.system.system.as_deref(),
                &output,
                args.force,
                &executor,
            )?;
            finish_output(r, args.json)
        }
        Command::Ci(cli::CiCommand::Gitlab(args)) => {
            let executor = make_executor(&ctx, &cli.storage)?;
            let labels = if args.labels.is_empty() {
                vec!["//...".to_string()]
            } else {
                args.labels.clone()
            };
            let opts = ops::ci::GitlabOptions {
                patterns: ops::parse_patterns(&labels)?,
                system: args.system.system,
                since: args.since,
                registry: args.registry,
            };
            let text = ops::ci::gitlab(&ctx, &opts, &executor)?;
            match &args.output {
                Some(path) => {
                    let tmp = path.with_extension("tmp");
                    std::fs::write(&tmp, &text).map_err(|e| Error::io(&tmp, e))?;
                    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
                }
                None => out!("{text}"),
            }
            Ok(())
        }
        Command::Lint(_) => Err(Error::env(
            "internal: lint is run before loading the workspace",
        )),
        Command::Gc(args) => {
            let opts = ops::gc::GcOptions {
                keep: ops::gc::check_keep(args.keep)?,
                dry_run: args.dry_run,
            };
            let executor = make_executor(&ctx, &cli.storage)?;
            let report = ops::gc::gc(&ctx, &opts, &executor)?;
            show(args.json, &report, || ops::gc::render(&report));
            match report.failures() {
                0 => Ok(()),
                n => Err(Error::env(format!(
                    "gc could not remove {n} item(s); see above"
                ))),
            }
        }
        Command::Cache(cmd) => {
            let executor = make_executor(&ctx, &cli.storage)?;
            cache_command(&ctx, cmd, &executor)
        }
        Command::Clean(_) => {
            let executor = make_executor(&ctx, &cli.storage)?;
            let removed = ops::debug::clean_failed(&ctx, &executor)?;
            if removed.is_empty() {
                outln!("no kept containers to remove");
            }
            for c in removed {
                outln!("removed {c}");
            }
            Ok(())
        }
    }
}

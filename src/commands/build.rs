//! `layerbuild build LABEL...`: builds the layers (and their parents) the
//! cache does not hold; `--dry-run` says what it would do; `--from-failed`
//! re-runs a failed layer's steps in its kept container.

use serde::Serialize;

use super::{Env, Report};
use crate::cli::BuildArgs;
use crate::error::{Error, Result};
use crate::label::Pattern;
use crate::ops::build::{
    BuildOptions, BuildReport, FromFailedReport, PlanReport, build, from_failed, plan, render_plan,
    render_summary,
};
use crate::progress::Reporter;
use crate::status::RunStatus;

#[derive(Serialize)]
#[serde(untagged)]
pub enum BuildCommandReport {
    Plan(PlanReport),
    /// `--dry-run` for several systems (`--system A --system B`, `all`).
    Plans {
        version: u32,
        plans: Vec<PlanReport>,
    },
    FromFailed(FromFailedReport),
    Build(Built),
    /// A build for several architectures: one report each, in order.
    Builds {
        version: u32,
        builds: Vec<Built>,
    },
}

/// A build's report, with what its summary and exit need beside it.
#[derive(Serialize)]
#[serde(transparent)]
pub struct Built {
    report: BuildReport,
    /// The labels named exactly: their image names close the summary.
    #[serde(skip)]
    targets: Vec<String>,
    #[serde(skip)]
    interrupted: bool,
}

pub fn exec(env: &Env, args: BuildArgs) -> Result<BuildCommandReport> {
    let patterns = crate::ops::parse_patterns(&args.labels)?;
    let backend = env.backend()?;
    let contexts = env.arch_contexts()?;
    if args.dry_run && (super::several(&args.system.system) || contexts.len() > 1) {
        let mut plans = vec![];
        for (ctx, system) in contexts.iter().flat_map(|c| {
            let systems = crate::ops::systems(&c.ws, &args.system.system);
            match systems {
                Ok(s) => s.into_iter().map(|s| (c, Ok(s))).collect::<Vec<_>>(),
                Err(e) => vec![(c, Err(e))],
            }
        }) {
            let system = system?;
            let opts = BuildOptions {
                patterns: patterns.clone(),
                system: system.map(|s| s.name.clone()),
                jobs: args.jobs,
                keep_going: args.keep_going,
                isolation: args.isolation.clone(),
                registry: args.registry.clone(),
                cache_mode: args.cache_mode,
                no_outputs: args.no_outputs,
            };
            plans.push(plan(ctx, &opts, &*backend, env.verbose)?);
        }
        return Ok(BuildCommandReport::Plans {
            version: crate::ops::build::PLAN_VERSION,
            plans,
        });
    }
    let opts = BuildOptions {
        patterns: patterns.clone(),
        system: crate::ops::one_system(&env.ctx.ws, &args.system.system, "build")?,
        jobs: args.jobs,
        keep_going: args.keep_going,
        isolation: args.isolation,
        registry: args.registry,
        cache_mode: args.cache_mode,
        no_outputs: args.no_outputs,
    };
    if args.dry_run {
        let report = plan(&env.ctx, &opts, &*backend, env.verbose)?;
        return Ok(BuildCommandReport::Plan(report));
    }
    // Progress goes to stderr; with --json, as plain lines.
    let json = args.json;
    let profile = std::sync::Arc::new(std::sync::Mutex::new(crate::profile::Profile::default()));
    let profiling = args.profile.is_some();
    let reporter_for = |n: usize| -> Box<dyn Reporter> {
        let inner = env.progress.reporter(n, json);
        match profiling {
            true => Box::new(crate::profile::Profiler {
                inner,
                profile: profile.clone(),
            }),
            false => inner,
        }
    };
    if args.from_failed {
        let [Pattern::Exact(l)] = patterns.as_slice() else {
            return Err(Error::input("--from-failed takes exactly one layer label")
                .with_hint("e.g. layerbuild build --from-failed //compute/slurm"));
        };
        let reporter = reporter_for(1);
        let r = from_failed(&env.ctx, l, &opts, &*backend, reporter.as_ref())?;
        return Ok(BuildCommandReport::FromFailed(r));
    }
    // Ctrl-C and SIGTERM stop the running steps, not the process.
    crate::interrupt::set_mode(crate::interrupt::Mode::Build);
    let targets: Vec<String> = patterns
        .iter()
        .filter(|p| matches!(p, Pattern::Exact(_)))
        .map(|p| p.to_string())
        .collect();
    let mut builds = vec![];
    for ctx in &contexts {
        // Labels named here but not built for this architecture are
        // left out of its build (an error only when none is built for it).
        let Some(patterns) = patterns_for(ctx, &patterns, contexts.len())? else {
            continue;
        };
        let opts = BuildOptions {
            patterns,
            ..opts.clone()
        };
        let report = build(
            ctx,
            &opts,
            &*backend,
            Some(&*backend),
            Some(&*backend),
            &reporter_for,
        )?;
        let interrupted = crate::interrupt::requested();
        let failed = report.failed > 0;
        builds.push(Built {
            report,
            targets: targets.clone(),
            interrupted,
        });
        if interrupted || (failed && !args.keep_going) {
            break;
        }
    }
    if let Some(path) = &args.profile {
        let trace = profile.lock().unwrap_or_else(|e| e.into_inner()).json();
        super::write_atomically(path, &format!("{trace}\n"))?;
    }
    if let Some(path) = &args.junit {
        let several = builds.len() > 1;
        let names: Vec<(String, &[crate::executor::TestOutcome])> = builds
            .iter()
            .flat_map(|b| {
                b.report.layers.iter().map(move |l| {
                    let name = match several {
                        true => format!("{} ({})", l.label, b.report.arch),
                        false => l.label.clone(),
                    };
                    (name, l.tests.as_slice())
                })
            })
            .collect();
        super::write_junit(
            path,
            builds.first().and_then(|b| b.report.system.as_deref()),
            names.iter().map(|(n, t)| (n.as_str(), *t)),
        )?;
    }
    match builds.len() {
        1 => Ok(BuildCommandReport::Build(builds.remove(0))),
        _ => Ok(BuildCommandReport::Builds {
            version: crate::ops::build::REPORT_VERSION,
            builds,
        }),
    }
}

/// `patterns` as they apply to `ctx`'s architecture, when several are
/// built: a label named exactly that is not built for it is left out
/// (`None`: nothing is left to build for it). With one architecture,
/// as given (the build says what is wrong with them).
fn patterns_for(
    ctx: &crate::ops::Context,
    patterns: &[Pattern],
    arches: usize,
) -> Result<Option<Vec<Pattern>>> {
    if arches == 1 {
        return Ok(Some(patterns.to_vec()));
    }
    let kept: Vec<Pattern> = patterns
        .iter()
        .filter(|p| match p {
            Pattern::Exact(l) => ctx.ws.layers.contains_key(l),
            _ => true,
        })
        .cloned()
        .collect();
    if kept.is_empty() || ctx.graph.matching(&kept).is_err() {
        return Ok(None);
    }
    Ok(Some(kept))
}

impl Report for BuildCommandReport {
    fn render(&self) -> String {
        match self {
            BuildCommandReport::Plan(p) => render_plan(p),
            BuildCommandReport::Plans { plans, .. } => plans
                .iter()
                .map(|p| {
                    let name = p.system.as_deref().unwrap_or("(none)");
                    match plans.iter().any(|o| o.arch != p.arch) {
                        true => format!("system {name}, {}:\n{}", p.arch, render_plan(p)),
                        false => format!("system {name}:\n{}", render_plan(p)),
                    }
                })
                .collect::<Vec<_>>()
                .join("\n"),
            BuildCommandReport::FromFailed(r) => render_from_failed(r),
            BuildCommandReport::Build(b) => render_summary(&b.report, &b.targets),
            BuildCommandReport::Builds { builds, .. } => builds
                .iter()
                .map(|b| {
                    format!(
                        "{}:\n{}",
                        b.report.arch,
                        render_summary(&b.report, &b.targets)
                    )
                })
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }

    fn notes(&self) -> Vec<String> {
        match self {
            BuildCommandReport::Build(b) => b
                .report
                .warnings
                .iter()
                .map(|w| format!("warning: {w}"))
                .collect(),
            BuildCommandReport::Builds { builds, .. } => builds
                .iter()
                .flat_map(|b| {
                    b.report
                        .warnings
                        .iter()
                        .map(|w| format!("warning: {} ({w})", b.report.arch))
                })
                .collect(),
            _ => vec![],
        }
    }

    fn outcome(&self) -> Result<()> {
        match self {
            BuildCommandReport::Plan(_) | BuildCommandReport::Plans { .. } => Ok(()),
            BuildCommandReport::FromFailed(r) if r.status == RunStatus::Failed => {
                Err(Error::BuildFailed(format!("build failed: {}", r.label)))
            }
            BuildCommandReport::FromFailed(_) => Ok(()),
            BuildCommandReport::Build(b) => b.outcome(),
            BuildCommandReport::Builds { builds, .. } => builds.iter().try_for_each(Built::outcome),
        }
    }
}

fn render_from_failed(r: &FromFailedReport) -> String {
    match r.status {
        RunStatus::Succeeded => format!(
            "{} succeeded in its kept container {}; not cached: only builds from a clean container are cached.\nBuild and cache it with: layerbuild build {}\n",
            r.label, r.container, r.label
        ),
        RunStatus::Failed => format!(
            "{} failed again in its kept container {} (log: {})\n",
            r.label, r.container, r.log
        ),
    }
}

impl Built {
    /// Interrupted (exit 130), outputs failed, the machine failed (exit 3),
    /// layers failed (exit 1), layers not pushed in read-write mode (exit
    /// 3), or success.
    fn outcome(&self) -> Result<()> {
        let report = &self.report;
        if self.interrupted {
            let stopped: Vec<&str> = report.failed_layers().map(|l| l.label.as_str()).collect();
            return Err(Error::Interrupted(format!(
                "interrupted: {} not built{}",
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
            )));
        }
        if report.failed == 0 && report.outputs_failed > 0 {
            return Err(Error::BuildFailed(format!(
                "{} output(s) failed; the layers themselves are built and cached",
                report.outputs_failed
            )));
        }
        // The machine failing is not the layer failing: its cause, exit 3
        // (the layer's steps may not even have run).
        if let Some(l) = report.failed_layers().find(|l| l.environment) {
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
            let failed: Vec<&str> = report.failed_layers().map(|l| l.label.as_str()).collect();
            return Err(Error::BuildFailed(format!(
                "build failed: {}",
                failed.join(", ")
            )));
        }
        // Read-write mode promises the next machine finds what was built
        // here: a layer that did not reach the registry is never silent.
        if let Some(first) = report.not_pushed.first() {
            let labels: Vec<&str> = report.not_pushed.iter().map(|n| n.label.as_str()).collect();
            return Err(Error::env(format!(
                "{} layer(s) built but not pushed to {}: {} ({})",
                labels.len(),
                report.registry.as_deref().unwrap_or("the registry"),
                labels.join(", "),
                first.reason
            ))
            .with_hint(
                "the layers are built and cached here; give this job write access to the registry (REGISTRY_AUTH_FILE, buildah login), or build with --cache-mode read-only (untrusted merge requests, a read-only mirror) or off",
            ));
        }
        Ok(())
    }
}

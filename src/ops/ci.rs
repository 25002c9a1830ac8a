//! `layerbuild ci gitlab`: a GitLab CI child pipeline with one job per layer
//! that needs building (not in the shared registry, or affected since a git
//! revision). Each job runs `layerbuild build //label` against the shared
//! registry, so it pulls its ancestors and builds one layer; `needs:` follows
//! the layer DAG restricted to the jobs present.

use std::collections::BTreeSet;

use super::Context;
use super::build::RegistryUse;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::executor::{Backend, RegistryEntry};
use crate::label::{Label, Pattern};
use crate::workspace::{CacheMode, Parent, System, Workspace};

pub struct GitlabOptions {
    pub patterns: Vec<Pattern>,
    /// `--system`: none, names, or `all` ([`crate::ops::systems`]).
    pub system: Vec<String>,
    pub since: Option<String>,
    pub registry: Option<String>,
}

/// A stable, readable, unique GitLab job name for a label.
pub fn job_name(label: &Label) -> String {
    format!("build:{}/{}", label.image_type(), label.layer())
}

fn q(s: &str) -> String {
    // A JSON string is a valid YAML double-quoted scalar.
    serde_json::Value::String(s.to_string()).to_string()
}

/// The pipeline, and the registry trouble met while deciding what it builds.
pub struct Pipeline {
    pub yaml: String,
    pub warnings: Vec<String>,
    /// How the jobs were chosen (also comments at the pipeline's top).
    pub notes: Vec<String>,
}

/// `--since auto`: the merge request's base in a merge-request pipeline
/// (`CI_MERGE_REQUEST_DIFF_BASE_SHA`), else the commit before the push
/// (`CI_COMMIT_BEFORE_SHA`); empty when the environment (`var`) has
/// neither (then every layer counts). Any other value is the revision.
pub fn resolve_since(given: &str, var: &dyn Fn(&str) -> Option<String>) -> String {
    if given != "auto" {
        return given.to_string();
    }
    ["CI_MERGE_REQUEST_DIFF_BASE_SHA", "CI_COMMIT_BEFORE_SHA"]
        .into_iter()
        .filter_map(|v| var(v).filter(|s| !s.trim().is_empty()))
        .next()
        .unwrap_or_default()
}

/// One layer to build for one system, with its digest and its parent's.
struct Planned<'a> {
    system: Option<&'a System>,
    label: Label,
    digest: Digest,
    parent: Option<(Label, Digest)>,
    /// The architecture its job builds, when the workspace builds for
    /// several (a job each).
    arch: Option<crate::arch::Arch>,
    /// Has it image tests (for the junit report)?
    tests: bool,
}

pub fn gitlab(ctx: &Context, opts: &GitlabOptions, backend: &dyn Backend) -> Result<Pipeline> {
    let ws = &ctx.ws;
    let systems = crate::ops::systems(ws, &opts.system)?;
    let registry_url = registry_url(opts.registry.as_deref(), ws)?;
    // Every architecture the workspace builds for, a job per layer each:
    // a layer only aarch64 builds, or a change only its build sees, gets
    // its job too.
    let mut arches = vec![ws.arch];
    arches.extend(ws.build.architectures.iter().filter(|a| **a != ws.arch));
    let several_arches = arches.len() > 1;
    let mut contexts = vec![];
    for arch in arches {
        let c = ctx.for_arch(arch)?;
        // Labels named exactly that this architecture does not build are
        // left out of its jobs (an error only when no architecture has any).
        let patterns: Vec<Pattern> = opts
            .patterns
            .iter()
            .filter(|p| match p {
                Pattern::Exact(l) => !several_arches || c.ws.layers.contains_key(l),
                _ => true,
            })
            .cloned()
            .collect();
        match c.graph.select(&patterns) {
            Ok(labels) if !patterns.is_empty() => contexts.push((c, labels)),
            Err(e) if !several_arches => return Err(e),
            _ => {}
        }
    }
    if contexts.is_empty() {
        ctx.graph.select(&opts.patterns)?;
    }
    let mut warnings = vec![];
    let mut notes: Vec<String> = vec![];
    let mut plan = vec![];
    for system in &systems {
        for (c, labels) in &contexts {
            // Fingerprinted whatever decides the jobs: a layer whose inputs
            // cannot be read fails here, not in its job.
            let prints = crate::ops::manifests(&c.ws, *system, labels)?;
            let mut said = vec![];
            let needed = needed(
                c,
                opts,
                backend,
                (registry_url.as_deref(), *system),
                labels,
                &prints,
                (&mut warnings, &mut said),
            )?;
            for n in said {
                if !notes.contains(&n) {
                    notes.push(n);
                }
            }
            for label in needed {
                let layer = &c.ws.layers[&label];
                let parent = match &layer.parent {
                    Parent::Layer(p) => prints.get(p).map(|f| (p.clone(), f.digest.clone())),
                    _ => None,
                };
                plan.push(Planned {
                    system: *system,
                    digest: prints[&label].digest.clone(),
                    tests: !layer.tests.is_empty(),
                    label,
                    parent,
                    arch: several_arches.then_some(c.ws.arch),
                });
            }
        }
    }
    let mut yaml = header(ws, &notes);
    jobs(
        &mut yaml,
        ws,
        registry_url.as_deref(),
        &plan,
        systems.len() > 1,
    );
    Ok(Pipeline {
        yaml,
        warnings,
        notes,
    })
}

/// The layers of one system that get a job, saying in `said` how they
/// were chosen when that needs saying.
fn needed(
    ctx: &Context,
    opts: &GitlabOptions,
    backend: &dyn Backend,
    (registry_url, system): (Option<&str>, Option<&System>),
    labels: &[Label],
    prints: &std::collections::BTreeMap<Label, crate::fingerprint::Fingerprint>,
    (warnings, said): (&mut Vec<String>, &mut Vec<String>),
) -> Result<Vec<Label>> {
    let ws = &ctx.ws;
    Ok(match (registry_url, &opts.since) {
        // The registry is the plan: a layer gets a job when its digest is
        // not there (affected or not: a missing ancestor gets its own job,
        // so no layer is built by two), and a re-run after everything was
        // pushed has none.
        (Some(url), _) => {
            let reg = RegistryUse::new(
                backend,
                url.to_string(),
                ws.cache.tls_verify,
                CacheMode::ReadOnly,
            );
            let wanted: Vec<(Label, Digest)> = labels
                .iter()
                .map(|l| (l.clone(), prints[l].digest.clone()))
                .collect();
            let entries = reg.lookup_all(&wanted);
            warnings.extend(reg.take_warnings());
            if opts.since.is_some() {
                said.push(format!(
                    "jobs for the layers {url} lacks (with a registry, --since changes nothing)"
                ));
            }
            wanted
                .into_iter()
                .filter(|(_, d)| {
                    !matches!(entries.get(d), Some(RegistryEntry::Present { label }) if label == d)
                })
                .map(|(l, _)| l)
                .collect()
        }
        (None, Some(since)) => match super::git::uncomparable(&ws.root, since) {
            Some(why) => {
                said.push(format!("{why}: every layer counts"));
                labels.to_vec()
            }
            None => {
                let affected =
                    super::affected::affected(ctx, since, None, system.map(|s| s.name.as_str()))?;
                let set: BTreeSet<String> =
                    affected.affected.into_iter().map(|a| a.label).collect();
                labels
                    .iter()
                    .filter(|l| set.contains(&l.to_string()))
                    .cloned()
                    .collect()
            }
        },
        (None, None) => labels.to_vec(),
    })
}

/// A path in the cache directory as a job's artifact path (relative to
/// the checkout's top, where GitLab runs jobs), or `None` when the cache
/// is outside the workspace.
fn cache_artifact(ws: &Workspace, name: &str) -> Option<String> {
    let rel = ws.cache_dir.join(name);
    let rel = rel.strip_prefix(&ws.root).ok()?;
    let prefix = super::git::checkout_prefix(&ws.root).unwrap_or_default();
    Some(format!("{prefix}{}", rel.display()))
}

/// `--registry` or `[cache] registry`, checked.
pub(crate) fn registry_url(given: Option<&str>, ws: &Workspace) -> Result<Option<String>> {
    let Some(r) = given
        .map(str::to_string)
        .or_else(|| ws.cache.registry.clone())
    else {
        return Ok(None);
    };
    crate::workspace::parse_registry(&r).map(Some).map_err(|e| {
        Error::input(e).with_hint("write host[:port]/path, e.g. registry.example.org/hpc/layers")
    })
}

/// The pipeline's comments (`notes`: how its jobs were chosen), its
/// `workflow:`, and `default:` and `variables:` from `[gitlab]`.
fn header(ws: &Workspace, notes: &[String]) -> String {
    let g = &ws.gitlab;
    let mut y = String::from("# Generated by `layerbuild ci gitlab`; do not edit.\n");
    for n in notes {
        y.push_str(&format!("# {}\n", n.replace('\n', " ")));
    }
    // Created under any parent: a merge-request parent's child has
    // CI_PIPELINE_SOURCE parent_pipeline, and without a rule for it GitLab
    // creates it with no jobs (gitlab#322012); run on its own, always.
    y.push_str(
        "workflow:\n  rules:\n    - if: '$CI_PIPELINE_SOURCE == \"parent_pipeline\"'\n    - when: always\n",
    );
    let mut default = String::new();
    if let Some(image) = &g.image {
        default.push_str(&format!("  image: {}\n", q(image)));
    }
    for (key, list) in [("tags", &g.tags), ("before_script", &g.before_script)] {
        if !list.is_empty() {
            default.push_str(&format!("  {key}:\n"));
            for t in list {
                default.push_str(&format!("    - {}\n", q(t)));
            }
        }
    }
    if !default.is_empty() {
        y.push_str("default:\n");
        y.push_str(&default);
    }
    if !g.variables.is_empty() {
        y.push_str("variables:\n");
        for (k, v) in &g.variables {
            y.push_str(&format!("  {}: {}\n", q(k), q(v)));
        }
    }
    y
}

/// One job per layer and digest to build (a layer several systems share
/// is built once, for the first of them), `needs:` following the DAG among
/// them; with `several` systems, job names carry the system.
fn jobs(
    y: &mut String,
    ws: &Workspace,
    registry_url: Option<&str>,
    plan: &[Planned],
    several: bool,
) {
    let g = &ws.gitlab;
    if plan.is_empty() {
        y.push_str(&format!(
            "{}:\n  script:\n    - {}\n",
            q("layerbuild:nothing-to-build"),
            q("echo 'layerbuild: every layer is already in the shared cache; nothing to build'")
        ));
        return;
    }
    let mut names: std::collections::BTreeMap<(&Label, &Digest), String> = Default::default();
    let mut first = vec![];
    for p in plan {
        if let std::collections::btree_map::Entry::Vacant(e) = names.entry((&p.label, &p.digest)) {
            let name = match (several, p.system) {
                (true, Some(s)) => format!("{}@{}", job_name(&p.label), s.name),
                _ => job_name(&p.label),
            };
            e.insert(match p.arch {
                Some(a) => format!("{name}@{a}"),
                None => name,
            });
            first.push(p);
        }
    }
    let logs = cache_artifact(ws, "logs").map(|l| l + "/");
    let junit = cache_artifact(ws, "junit.xml");
    for p in first {
        let label = &p.label;
        let mut cmd = format!("{} build {label}", g.command);
        if let Some(s) = p.system {
            cmd.push_str(&format!(" --system {}", shell_words::quote(&s.name)));
        }
        if let Some(a) = p.arch {
            cmd.push_str(&format!(" --arch {a}"));
        }
        if let Some(url) = registry_url {
            cmd.push_str(&format!(" --registry {}", shell_words::quote(url)));
        }
        // The image tests in GitLab's test tab.
        let junit = junit.as_ref().filter(|_| p.tests);
        if let Some(j) = junit {
            cmd.push_str(&format!(" --junit {}", shell_words::quote(j)));
        }
        y.push_str(&format!("{}:\n", q(&names[&(label, &p.digest)])));
        y.push_str(&format!("  script:\n    - {}\n", q(&cmd)));
        match p.parent.as_ref().and_then(|(l, d)| names.get(&(l, d))) {
            // Not its artifacts: each job's are its own layer logs.
            Some(parent) => y.push_str(&format!(
                "  needs:\n    - job: {}\n      artifacts: false\n",
                q(parent)
            )),
            None => y.push_str("  needs: []\n"),
        }
        y.push_str("  interruptible: true\n");
        if let Some(logs) = &logs {
            // A failed job's layer logs outlive its runner.
            y.push_str(&format!(
                "  artifacts:\n    when: always\n    expire_in: \"1 week\"\n    paths:\n      - {}\n",
                q(logs)
            ));
            if let Some(j) = junit {
                y.push_str(&format!("    reports:\n      junit: {}\n", q(j)));
            }
        }
        // Per system: pipelines of two systems never queue on each other.
        let group = match p.system {
            Some(s) => format!(
                "layerbuild/{}/{}/{}",
                s.name,
                label.image_type(),
                label.layer()
            ),
            None => format!("layerbuild/{}/{}", label.image_type(), label.layer()),
        };
        let group = match p.arch {
            Some(a) => format!("{group}/{a}"),
            None => group,
        };
        y.push_str(&format!("  resource_group: {}\n", q(&group)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_auto_takes_the_merge_request_base_then_the_push_before() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let mr = env(&[
            ("CI_MERGE_REQUEST_DIFF_BASE_SHA", "abc"),
            ("CI_COMMIT_BEFORE_SHA", "def"),
        ]);
        assert_eq!(resolve_since("auto", &mr), "abc");
        // A branch pipeline: the MR variable is absent or empty.
        let branch = env(&[
            ("CI_MERGE_REQUEST_DIFF_BASE_SHA", ""),
            ("CI_COMMIT_BEFORE_SHA", "def"),
        ]);
        assert_eq!(resolve_since("auto", &branch), "def");
        assert_eq!(resolve_since("auto", &env(&[])), "");
        assert_eq!(resolve_since("HEAD~1", &mr), "HEAD~1");
    }
}

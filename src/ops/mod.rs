//! One module per subcommand; each takes the loaded workspace and plain
//! options and returns data (or prints it). Shared loading lives here.

pub mod affected;
pub mod boot;
pub mod build;
pub mod cache;
pub mod ci;
pub mod debug;
pub mod export;
pub mod gc;
mod git;
pub mod graph;
pub mod graphviz;
pub mod hash;
pub mod history;
pub mod init;
pub mod lint;
pub mod log;
pub mod ls;
pub mod promote;
pub mod publish;
pub mod test;
pub mod why;

use std::path::Path;

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::graph::LayerGraph;
use crate::label::{Label, Pattern};
use crate::workspace::{self, Workspace};

/// The fingerprints of `labels` through the workspace's fingerprint
/// database (stat cache and memo), which every command keeps warm, read-only
/// ones included; the build cache is not touched.
pub(crate) fn fingerprints(
    ws: &Workspace,
    system: Option<&workspace::System>,
    labels: &[Label],
    want: crate::fingerprint::session::Want,
) -> Result<crate::fingerprint::session::Prints> {
    let db = crate::cache::fingerprint_db::LazyFingerprintDb::new(&ws.cache_dir);
    crate::fingerprint::session::Session::new(ws, system)
        .with_stats(&db)
        .with_memos(&db)
        .fingerprint(labels, want)
}

/// [`fingerprints`] with whole manifests.
pub(crate) fn manifests(
    ws: &Workspace,
    system: Option<&workspace::System>,
    labels: &[Label],
) -> Result<std::collections::BTreeMap<Label, crate::fingerprint::Fingerprint>> {
    Ok(fingerprints(
        ws,
        system,
        labels,
        crate::fingerprint::session::Want::Manifests,
    )?
    .prints)
}

/// A loaded, validated workspace and its DAG.
pub struct Context {
    pub ws: Workspace,
    pub graph: LayerGraph,
}

impl Context {
    /// Finds the workspace from `dir` (or its parents) and validates it.
    /// Its layers are those built for the host's architecture when the
    /// workspace builds for it, else for the first it names.
    pub fn load(dir: &Path) -> Result<Context> {
        Context::load_for(dir, None)
    }

    /// [`Context::load`] for `arch` (`None`: the default one).
    pub fn load_for(dir: &Path, arch: Option<crate::arch::Arch>) -> Result<Context> {
        let t = std::time::Instant::now();
        let root = workspace::find_root(dir)?;
        let ws = Workspace::load(&root)?;
        let ws = ws.for_arch(arch.unwrap_or(ws.arch))?;
        let t = crate::timings::phase("load the Layerfile", t);
        let graph = LayerGraph::new(&ws)?;
        crate::timings::phase("build the graph", t);
        Ok(Context { ws, graph })
    }

    /// The same workspace for another architecture.
    pub fn for_arch(&self, arch: crate::arch::Arch) -> Result<Context> {
        if arch == self.ws.arch {
            return Ok(Context {
                ws: self.ws.clone(),
                graph: LayerGraph::new(&self.ws)?,
            });
        }
        let ws = self.ws.for_arch(arch)?;
        let graph = LayerGraph::new(&ws)?;
        Ok(Context { ws, graph })
    }
}

pub fn parse_patterns(args: &[String]) -> Result<Vec<Pattern>> {
    if args.is_empty() {
        return Err(Error::input("no label given")
            .with_hint("name a layer like //compute/slurm, an image type like //compute/..., or everything: //..."));
    }
    args.iter()
        .map(|a| {
            Pattern::parse(a).map_err(|e| {
                Error::input(e).with_hint("labels look like //TYPE/LAYER, //TYPE/... or //...")
            })
        })
        .collect()
}

/// The labels the patterns match, in topological order, as strings, to
/// filter cache rows by (`None` when no pattern is given: every row). The
/// selection is the matches alone, not their ancestors; a pattern that
/// matches nothing is an error naming it.
pub(crate) fn matched_labels(
    graph: &LayerGraph,
    patterns: &[Pattern],
) -> Result<Option<Vec<String>>> {
    if patterns.is_empty() {
        return Ok(None);
    }
    graph.select(patterns)?;
    Ok(Some(
        graph
            .order()
            .iter()
            .filter(|l| patterns.iter().any(|p| p.matches(l)))
            .map(|l| l.to_string())
            .collect(),
    ))
}

pub fn parse_label(arg: &str) -> Result<Label> {
    Label::parse(arg)
        .map_err(|e| Error::input(e).with_hint("name exactly one layer, e.g. //compute/slurm"))
}

/// The one layer `arg` names: a label, or a pattern that matches exactly
/// one layer (for commands about one image: `log`, `export`, `push`, `debug`).
pub fn one_layer(graph: &LayerGraph, arg: &str) -> Result<Label> {
    let pattern = parse_patterns(std::slice::from_ref(&arg.to_string()))?;
    let mut matched = graph.matching(&pattern)?;
    if matched.len() > 1 {
        let names: Vec<String> = matched.iter().map(|l| l.to_string()).collect();
        return Err(Error::input(format!(
            "{arg} matches {} layers ({}); this command works on one",
            matched.len(),
            names.join(", ")
        ))
        .with_hint(format!("name one of them, e.g. {}", names[0])));
    }
    Ok(matched.remove(0))
}

/// The systems `--system` names, for a command that takes several: none
/// given, the only one (or none when the workspace declares none; an
/// error when it declares several); `all` (unless a system is named
/// `all`), every declared one; otherwise each named one, in the order given.
pub fn systems<'w>(
    ws: &'w Workspace,
    given: &[String],
) -> Result<Vec<Option<&'w workspace::System>>> {
    if given.iter().any(|g| g == "all") && !ws.systems.contains_key("all") {
        if given.len() > 1 {
            return Err(Error::input(
                "--system all names every system; give it alone",
            ));
        }
        return Ok(if ws.systems.is_empty() {
            vec![None]
        } else {
            ws.systems.values().map(Some).collect()
        });
    }
    if given.is_empty() {
        return match ws.system(None) {
            Ok(s) => Ok(vec![s]),
            Err(e) if ws.systems.len() > 1 => Err(e.with_hint(format!(
                "declared systems: {}; or every one of them: --system all",
                ws.systems.keys().cloned().collect::<Vec<_>>().join(", ")
            ))),
            Err(e) => Err(e),
        };
    }
    let mut out: Vec<Option<&workspace::System>> = vec![];
    for g in given {
        let s = ws.system(Some(g))?;
        if !out.iter().any(|o| o.map(|o| &o.name) == s.map(|s| &s.name)) {
            out.push(s);
        }
    }
    Ok(out)
}

/// The one system `--system` names, for a command that works on one
/// (`command` names it in the error when several are given).
pub fn one_system(ws: &Workspace, given: &[String], command: &str) -> Result<Option<String>> {
    match given {
        [] => Ok(None),
        [one] if one != "all" || ws.systems.contains_key("all") => Ok(Some(one.clone())),
        _ => Err(Error::input(format!(
            "`{command}` works on one system at a time; --system {} names several",
            given.join(" --system ")
        ))
        .with_hint(format!(
            "run it once per system, e.g. --system {}",
            ws.systems
                .keys()
                .next()
                .map(String::as_str)
                .unwrap_or("NAME")
        ))),
    }
}

/// The committed image's name: findable by a person, unique per digest.
pub fn image_name(ws: &Workspace, label: &Label, digest: &Digest) -> String {
    format!(
        "localhost/layerbuild/{}/{}/{}:{}",
        ws.name,
        label.image_type().to_lowercase(),
        label.layer().to_lowercase(),
        digest.short()
    )
}

/// The working container's name while a layer builds (and after it fails).
pub fn container_name(ws: &Workspace, label: &Label, digest: &Digest) -> String {
    format!("layerbuild-{}-{}-{}", ws.name, label.slug(), digest.short())
}

/// `YYYY-MM-DD HH:MM:SS` (UTC) for a Unix time in seconds.
pub fn format_time(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_utc_times() {
        assert_eq!(super::format_time(0), "1970-01-01 00:00:00");
        assert_eq!(super::format_time(1_795_000_000), "2026-11-18 11:06:40");
    }
}

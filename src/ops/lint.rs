//! `lint`: everything `build` would reject, all at once, without building.
//!
//! Findings come from four places: the Layerfile ([`Workspace::check`], every
//! problem rather than the first, and cycles), the analysis of each
//! playbook's inputs (YAML errors, unknown roles), `ansible-playbook
//! --syntax-check` run with the inventory, vars and roles path the build
//! would use, and `ansible-lint` when it is installed (warnings only).
//!
//! I/O: reads the workspace; writes generated inventories under
//! `<cache>/tmp/lint-PID/` (removed afterwards); runs ansible-playbook and
//! ansible-lint through [`crate::executor::ansible`]. No container is made and
//! buildah is never run.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::executor::PlayRequest;
use crate::executor::ansible;
use crate::graph::LayerGraph;
use crate::label::{Label, Pattern};
use crate::workspace::{Parent, Workspace};

pub const LINT_NOT_FOUND: &str =
    "ansible-lint not found; install it (pip install ansible-lint) for style checks";

#[derive(Debug, Clone)]
pub struct LintOptions {
    pub patterns: Vec<Pattern>,
    pub system: Option<String>,
}

/// The programs lint runs; `LAYERBUILD_ANSIBLE_PLAYBOOK` and
/// `LAYERBUILD_ANSIBLE_LINT` override them.
#[derive(Debug, Clone)]
pub struct LintTools {
    pub ansible_playbook: String,
    pub ansible_lint: String,
}

impl Default for LintTools {
    fn default() -> Self {
        LintTools {
            ansible_playbook: std::env::var("LAYERBUILD_ANSIBLE_PLAYBOOK")
                .unwrap_or_else(|_| "ansible-playbook".into()),
            ansible_lint: std::env::var("LAYERBUILD_ANSIBLE_LINT")
                .unwrap_or_else(|_| "ansible-lint".into()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Error,
    Warning,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FindingSource {
    Layerfile,
    Analysis,
    SyntaxCheck,
    AnsibleLint,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Finding {
    /// Workspace-relative.
    pub file: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub severity: Severity,
    pub source: FindingSource,
    /// The layer the finding was made for (none for Layerfile findings).
    pub label: Option<String>,
    pub message: String,
    pub hint: Option<String>,
}

impl Finding {
    /// `file:line[:col]: error|warning: message[ (//label)]`.
    pub fn text(&self) -> String {
        let mut s = self.file.clone();
        if let Some(l) = self.line {
            s.push_str(&format!(":{l}"));
            if let Some(c) = self.column {
                s.push_str(&format!(":{c}"));
            }
        }
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        s.push_str(&format!(": {sev}: {}", self.message));
        if let Some(l) = &self.label {
            s.push_str(&format!(" ({l})"));
        }
        s
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct LintReport {
    pub version: u32,
    /// Sorted by file, line and column.
    pub findings: Vec<Finding>,
    /// What was not checked, and why.
    pub notes: Vec<String>,
}

impl LintReport {
    pub fn errors(&self) -> usize {
        self.count(Severity::Error)
    }

    pub fn warnings(&self) -> usize {
        self.count(Severity::Warning)
    }

    fn count(&self, s: Severity) -> usize {
        self.findings.iter().filter(|f| f.severity == s).count()
    }

    /// One line per finding, then the totals.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for f in &self.findings {
            out.push_str(&f.text());
            out.push('\n');
        }
        let plural = |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
        out.push_str(&format!(
            "{}, {}\n",
            plural(self.errors(), "error"),
            plural(self.warnings(), "warning")
        ));
        out
    }
}

/// Lints the workspace rooted at `root` (which holds `Layerfile.toml`).
/// `Err` only for bad command-line input (an unknown system, a pattern that
/// matches no layer of a valid Layerfile) or an unusable environment.
pub fn lint(root: &Path, opts: &LintOptions, tools: &LintTools) -> Result<LintReport> {
    let mut findings = vec![];
    let mut notes = vec![];

    let (ws, errors) = Workspace::check(root);
    let layerfile_ok = errors.is_empty();
    for e in errors {
        findings.push(finding_from_error(e, FindingSource::Layerfile, None)?);
    }
    let Some(ws) = ws else {
        notes.push("the Layerfile could not be read, so no playbook was checked".into());
        return Ok(finish(findings, notes));
    };
    if let Err(e) = LayerGraph::new(&without_orphans(&ws)) {
        findings.push(finding_from_error(e, FindingSource::Layerfile, None)?);
    }

    let mut selected: BTreeSet<&Label> = BTreeSet::new();
    for pat in &opts.patterns {
        let matched: Vec<&Label> = ws.layers.keys().filter(|l| pat.matches(l)).collect();
        if matched.is_empty() {
            if layerfile_ok {
                return Err(Error::input(format!("{pat} matches no layer"))
                    .with_hint("list the layers with: layerbuild ls"));
            }
            notes.push(format!("{pat} matches no layer that passed the checks"));
        }
        selected.extend(matched);
    }

    let system = match ws.system(opts.system.as_deref()) {
        Ok(s) => s,
        Err(e) if !layerfile_ok => {
            notes.push(format!("playbooks not checked: {e}"));
            return Ok(finish(findings, notes));
        }
        Err(e) => return Err(e),
    };
    let plays: Vec<(&Label, PlayRequest)> = selected
        .into_iter()
        .filter_map(|l| super::build::play_request(&ws, system, l).map(|p| (l, p)))
        .collect();
    if plays.is_empty() {
        return Ok(finish(findings, notes));
    }

    let with_lint = ansible::available(&tools.ansible_lint);
    if !with_lint {
        notes.push(LINT_NOT_FOUND.into());
    }
    let work = WorkDir::create(
        &ws.cache_dir
            .join("tmp")
            .join(format!("lint-{}", std::process::id())),
    )?;
    let per_layer: Vec<(Vec<Finding>, Vec<String>)> = plays
        .par_iter()
        .map(|(label, play)| check_play(&ws, label, play, &work.path, tools, with_lint))
        .collect();
    drop(work);
    for (f, n) in per_layer {
        findings.extend(f);
        notes.extend(n);
    }
    // Keep the pure caches warm, as every read-only command does (the
    // build cache is not touched).
    if layerfile_ok
        && !findings.iter().any(|f| f.severity == Severity::Error)
        && let Ok(graph) = LayerGraph::new(&ws)
        && let Ok(labels) = graph.select(&opts.patterns)
    {
        let _ = super::fingerprints(
            &ws,
            system,
            &labels,
            crate::fingerprint::session::Want::DigestsOnly,
        );
    }
    Ok(finish(findings, notes))
}

/// Sorts and removes repeats (two layers sharing a playbook or a role).
fn finish(mut findings: Vec<Finding>, notes: Vec<String>) -> LintReport {
    findings.sort();
    let mut seen = BTreeSet::new();
    findings.retain(|f| {
        seen.insert((
            f.file.clone(),
            f.line,
            f.column,
            f.severity,
            f.message.clone(),
        ))
    });
    let mut seen = BTreeSet::new();
    let notes = notes
        .into_iter()
        .filter(|n| seen.insert(n.clone()))
        .collect();
    LintReport {
        version: super::build::REPORT_VERSION,
        findings,
        notes,
    }
}

/// A directory removed when dropped, with the parents it had to create.
struct WorkDir {
    path: PathBuf,
    /// The outermost directory that did not exist before.
    created_from: PathBuf,
}

impl WorkDir {
    fn create(path: &Path) -> Result<WorkDir> {
        let created_from = path
            .ancestors()
            .take_while(|a| !a.exists())
            .last()
            .unwrap_or(path)
            .to_path_buf();
        std::fs::create_dir_all(path).map_err(|e| Error::io(path, e))?;
        Ok(WorkDir {
            path: path.to_path_buf(),
            created_from,
        })
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
        // Empty parents we made go too; one in use by others stays.
        for dir in self.path.ancestors().skip(1) {
            if !dir.starts_with(&self.created_from) || std::fs::remove_dir(dir).is_err() {
                break;
            }
        }
    }
}

/// The layers whose ancestors all validated, so a graph can be built from
/// a partial workspace to look for cycles.
fn without_orphans(ws: &Workspace) -> Workspace {
    let mut ws = ws.clone();
    loop {
        let orphans: Vec<Label> = ws
            .layers
            .iter()
            .filter(|(_, l)| matches!(&l.parent, Parent::Layer(p) if !ws.layers.contains_key(p)))
            .map(|(label, _)| label.clone())
            .collect();
        if orphans.is_empty() {
            return ws;
        }
        for o in orphans {
            ws.layers.remove(&o);
        }
    }
}

/// A user error as a finding; anything else (the environment) stays an error.
fn finding_from_error(e: Error, source: FindingSource, label: Option<&Label>) -> Result<Finding> {
    let Error::Input(e) = e else { return Err(e) };
    let loc = e.location.unwrap_or_default();
    Ok(Finding {
        file: loc
            .file
            .map(|f| f.display().to_string())
            .unwrap_or_else(|| crate::workspace::LAYERFILE.into()),
        line: loc.line,
        column: loc.column,
        severity: Severity::Error,
        source,
        label: label.map(|l| l.to_string()),
        message: e.message,
        hint: e.hint,
    })
}

/// Analysis, syntax check and (when installed and the syntax is good)
/// ansible-lint for one layer's playbook.
fn check_play(
    ws: &Workspace,
    label: &Label,
    play: &PlayRequest,
    work: &Path,
    tools: &LintTools,
    with_lint: bool,
) -> (Vec<Finding>, Vec<String>) {
    let layer = &ws.layers[label];
    let mut notes = vec![];
    let playbook_rel = ws.display_path(&play.source_dir.join(&play.playbook));
    let mut analysis = vec![];
    if let (Some(source), Some(pb)) = (&layer.source, &layer.playbook)
        && let Err(e) = crate::fingerprint::ansible::discover(
            &crate::fingerprint::observe::Observer::new(),
            &ws.root,
            source,
            pb,
            &layer.roles_path,
            &ws.allow_outside,
        )
    {
        match finding_from_error(e, FindingSource::Analysis, Some(label)) {
            Ok(f) => analysis.push(f),
            Err(e) => notes.push(format!("{label}: analysis failed: {e}")),
        }
    }

    let dir = work.join(label.slug());
    let out = std::fs::create_dir_all(&dir)
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))
        .and_then(|()| ansible::syntax_check(&tools.ansible_playbook, play, &dir));
    let mut findings = match out {
        Err(e) => {
            notes.push(format!("{label}: playbook not checked: {e}"));
            vec![]
        }
        Ok(out) => {
            let text = format!("{}\n{}", out.stderr, out.stdout);
            let mut found = syntax_findings(&ws.root, &playbook_rel, label, &text);
            if !out.success && !found.iter().any(|f| f.severity == Severity::Error) {
                let last = text.lines().rev().find(|l| !l.trim().is_empty());
                found.push(Finding {
                    file: playbook_rel.clone(),
                    line: None,
                    column: None,
                    severity: Severity::Error,
                    source: FindingSource::SyntaxCheck,
                    label: Some(label.to_string()),
                    message: format!(
                        "ansible-playbook --syntax-check failed (exit {}){}",
                        out.code.map_or("signal".into(), |c| c.to_string()),
                        last.map(|l| format!(": {}", l.trim())).unwrap_or_default()
                    ),
                    hint: None,
                });
            }
            found
        }
    };
    // Ansible's own message wins over the analysis of the same file.
    let ansible_files: BTreeSet<String> = findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .map(|f| f.file.clone())
        .collect();
    findings.extend(
        analysis
            .into_iter()
            .filter(|f| !ansible_files.contains(&f.file)),
    );

    let clean = !findings.iter().any(|f| f.severity == Severity::Error);
    if with_lint && clean {
        match ansible::ansible_lint(&tools.ansible_lint, play, &dir) {
            Err(e) => notes.push(format!("{label}: {e}")),
            Ok(out) => {
                let found = lint_findings(&ws.root, &play.source_dir, label, &out.stdout);
                if !out.success && found.is_empty() {
                    let why = out
                        .stderr
                        .lines()
                        .rev()
                        .find(|l| !l.trim().is_empty())
                        .unwrap_or("no output");
                    notes.push(format!(
                        "{label}: ansible-lint failed without findings: {}",
                        why.trim()
                    ));
                }
                findings.extend(found);
            }
        }
    }
    (findings, notes)
}

/// One message of ansible-playbook's output.
#[derive(Debug, Clone, PartialEq, Eq)]
struct AnsibleMessage {
    severity: Severity,
    message: String,
    /// From "The error appears to be in '<path>': line N, column M".
    path: Option<String>,
    line: Option<usize>,
    column: Option<usize>,
}

/// Parses ansible-playbook's errors (`ERROR! ...`, usually followed by
/// where it appears to be) and warnings (`[WARNING]: ...`).
fn parse_ansible_output(text: &str) -> Vec<AnsibleMessage> {
    let where_re = regex::Regex::new(
        r"The error appears to be in '(?P<path>[^']+)': line (?P<line>\d+), column (?P<col>\d+)",
    )
    .expect("valid regex");
    let mut out = vec![];
    let lines: Vec<&str> = text.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        if let Some(first) = line.strip_prefix("ERROR! ") {
            let mut body = vec![first.trim().to_string()];
            let mut m = AnsibleMessage {
                severity: Severity::Error,
                message: String::new(),
                path: None,
                line: None,
                column: None,
            };
            i += 1;
            while i < lines.len() {
                let l = lines[i];
                if let Some(c) = where_re.captures(l) {
                    m.path = Some(c["path"].to_string());
                    m.line = c["line"].parse().ok();
                    m.column = c["col"].parse().ok();
                    i += 1;
                    break;
                }
                if l.starts_with("ERROR! ") || l.starts_with("[WARNING]") {
                    break;
                }
                if !l.trim().is_empty() {
                    body.push(l.trim().to_string());
                }
                i += 1;
            }
            // The offending-line excerpt that follows is for people; skip to
            // the next message.
            while i < lines.len()
                && !lines[i].starts_with("ERROR! ")
                && !lines[i].starts_with("[WARNING]")
                && !lines[i].starts_with("[DEPRECATION WARNING]")
            {
                i += 1;
            }
            m.message = condense(&body);
            out.push(m);
            continue;
        }
        let warning = line
            .strip_prefix("[WARNING]:")
            .or_else(|| line.strip_prefix("[DEPRECATION WARNING]:"));
        if let Some(first) = warning {
            let mut body = vec![first.trim().to_string()];
            i += 1;
            while i < lines.len() {
                let l = lines[i];
                if l.trim().is_empty()
                    || l.starts_with('[')
                    || l.starts_with("ERROR! ")
                    || l.starts_with("playbook: ")
                {
                    break;
                }
                body.push(l.trim().to_string());
                i += 1;
            }
            out.push(AnsibleMessage {
                severity: Severity::Warning,
                message: body.join(" "),
                path: None,
                line: None,
                column: None,
            });
            continue;
        }
        i += 1;
    }
    out
}

/// One line from an error's paragraph; a YAML error keeps only what YAML said.
fn condense(body: &[String]) -> String {
    if let Some(i) = body
        .iter()
        .position(|l| l.starts_with("Syntax Error while loading YAML"))
    {
        let rest: Vec<&str> = body[i + 1..].iter().map(String::as_str).collect();
        if !rest.is_empty() {
            return format!("YAML syntax error: {}", rest.join(" "));
        }
    }
    body.join(" ")
}

/// Workspace-relative form of a path a tool printed (absolute, or relative
/// to `base`); other paths are kept as printed.
fn relative_to_root(root: &Path, base: &Path, printed: &str) -> String {
    let p = Path::new(printed);
    let full = if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    };
    match full.strip_prefix(root) {
        Ok(rel) => rel.display().to_string(),
        Err(_) => printed.to_string(),
    }
}

fn syntax_findings(root: &Path, playbook_rel: &str, label: &Label, text: &str) -> Vec<Finding> {
    let prefix = format!("{}/", root.display());
    parse_ansible_output(text)
        .into_iter()
        .map(|m| {
            let file = match &m.path {
                Some(p) => relative_to_root(root, root, p),
                None => playbook_rel.to_string(),
            };
            Finding {
                file,
                line: m.line,
                column: m.column,
                severity: m.severity,
                source: FindingSource::SyntaxCheck,
                label: Some(label.to_string()),
                // Paths inside the message (searched role directories) too.
                message: m.message.replace(&prefix, ""),
                hint: None,
            }
        })
        .collect()
}

/// ansible-lint's parseable lines, `path:line[:column]: message`, as warnings.
fn lint_findings(root: &Path, source_dir: &Path, label: &Label, stdout: &str) -> Vec<Finding> {
    let re = regex::Regex::new(
        r"^(?P<path>[^:\s][^:]*):(?P<line>\d+)(?::(?P<col>\d+))?:\s*(?P<msg>.+)$",
    )
    .expect("valid regex");
    stdout
        .lines()
        .filter_map(|l| re.captures(l.trim_end()))
        .map(|c| Finding {
            file: relative_to_root(root, source_dir, &c["path"]),
            line: c["line"].parse().ok(),
            column: c.name("col").and_then(|m| m.as_str().parse().ok()),
            severity: Severity::Warning,
            source: FindingSource::AnsibleLint,
            label: Some(label.to_string()),
            message: c["msg"].trim().to_string(),
            hint: None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_role_points_at_the_playbook_line() {
        let out = "ERROR! the role 'munge' was not found in /ws/slurm-config/roles:/ws/slurm-config\n\
                   \n\
                   The error appears to be in '/ws/slurm-config/slurm.yml': line 5, column 7, but may\n\
                   be elsewhere in the file depending on the exact syntax problem.\n\
                   \n\
                   The offending line appears to be:\n\
                   \n\
                   \x20   - munge\n\
                   \x20     ^ here\n";
        let f = syntax_findings(
            Path::new("/ws"),
            "slurm-config/slurm.yml",
            &Label::parse("//compute/slurm").unwrap(),
            out,
        );
        assert_eq!(f.len(), 1);
        assert_eq!(
            f[0].text(),
            "slurm-config/slurm.yml:5:7: error: the role 'munge' was not found in \
             slurm-config/roles:slurm-config (//compute/slurm)"
        );
    }

    #[test]
    fn a_yaml_error_keeps_what_yaml_said() {
        let out = "ERROR! We were unable to read either as JSON nor YAML, these are the errors we got from each:\n\
                   JSON: Expecting value: line 1 column 1 (char 0)\n\
                   \n\
                   Syntax Error while loading YAML.\n\
                   \x20 did not find expected ',' or ']'\n\
                   \n\
                   The error appears to be in '/ws/a/b.yml': line 3, column 1, but may\n\
                   be elsewhere in the file depending on the exact syntax problem.\n";
        let m = parse_ansible_output(out);
        assert_eq!(
            m,
            vec![AnsibleMessage {
                severity: Severity::Error,
                message: "YAML syntax error: did not find expected ',' or ']'".into(),
                path: Some("/ws/a/b.yml".into()),
                line: Some(3),
                column: Some(1),
            }]
        );
    }

    #[test]
    fn errors_without_a_place_and_warnings() {
        let out = "[WARNING]: Could not match supplied host pattern, ignoring:\nUAN\n\nERROR! something broke\n";
        let m = parse_ansible_output(out);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].severity, Severity::Warning);
        assert_eq!(
            m[0].message,
            "Could not match supplied host pattern, ignoring: UAN"
        );
        assert_eq!(m[1].message, "something broke");
        assert_eq!(m[1].path, None);
    }

    #[test]
    fn ansible_lint_lines_become_warnings() {
        let out = "compute.yml:3:7: name[missing]: All tasks should be named.\n\
                   roles/common/tasks/main.yml:1: yaml[truthy]: Truthy value\n\
                   Some summary line\n";
        let f = lint_findings(
            Path::new("/ws"),
            Path::new("/ws/compute-config"),
            &Label::parse("//compute/compute").unwrap(),
            out,
        );
        let texts: Vec<String> = f.iter().map(Finding::text).collect();
        assert_eq!(
            texts,
            vec![
                "compute-config/compute.yml:3:7: warning: name[missing]: All tasks should be named. (//compute/compute)",
                "compute-config/roles/common/tasks/main.yml:1: warning: yaml[truthy]: Truthy value (//compute/compute)",
            ]
        );
    }
}

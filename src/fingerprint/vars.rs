//! Which variables a play references, found statically.
//!
//! Every string of the play's YAML files (playbooks, task files, handlers,
//! role defaults/vars/meta, vars files) that holds Jinja is parsed with
//! minijinja and its undeclared variables collected; so are the bare
//! expressions of `when:`, `changed_when:`, `failed_when:`, `until:`,
//! `that:`, `with_*:` and `debug: var:`, and every template file. Names the
//! analysis cannot follow — `hostvars`, `vars`, `lookup('vars', ...)`, a
//! templated variable name, Jinja it cannot parse, a variable-reading plugin
//! — make it give up, with the file and line, so every inventory variable
//! counts (over-approximate, never under).
//!
//! Pure apart from reading the files it is given.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::LazyLock;

use regex::Regex;

use crate::error::{Error, Location, Result};
use yaml_rust2::Yaml;

/// What one file (or a set of files) references.
#[derive(Debug, Clone, Default)]
pub struct VarUse {
    pub names: BTreeSet<String>,
    /// Why every variable must count, with the file and line.
    pub fallback: Option<String>,
    /// Controller files read by name (lookups, `{% include %}`, `with_file`...),
    /// as written: the caller resolves them with Ansible's search path.
    pub reads: BTreeSet<String>,
    /// The first read whose name is known only at run time, with the file
    /// and line: the whole source then counts.
    pub read_unresolved: Option<String>,
}

/// One file's [`VarUse`] as the analysis keeps it until layers ask: the
/// names in one sorted slice, a third of a set's memory for the tens of
/// thousands of templates of a large workspace.
#[derive(Debug, Clone, Default)]
pub struct FileUse {
    /// Shared by every file whose names are the same (see [`interned`]).
    pub names: std::sync::Arc<[Box<str>]>,
    pub fallback: Option<String>,
    pub reads: BTreeSet<String>,
    pub read_unresolved: Option<String>,
}

impl From<VarUse> for FileUse {
    fn from(u: VarUse) -> FileUse {
        FileUse {
            names: interned(u.names),
            fallback: u.fallback,
            reads: u.reads,
            read_unresolved: u.read_unresolved,
        }
    }
}

/// `names` as one shared list: the templates of a role mostly use the
/// same names, and a list (and each name) per file was a sixth of a large
/// run's peak memory. Lists are kept for the process's life; a process
/// that met a million of them starts over.
fn interned(names: BTreeSet<String>) -> std::sync::Arc<[Box<str>]> {
    type Lists = std::collections::HashSet<std::sync::Arc<[Box<str>]>>;
    static LISTS: std::sync::OnceLock<std::sync::Mutex<Lists>> = std::sync::OnceLock::new();
    let names: Vec<Box<str>> = names.into_iter().map(String::into_boxed_str).collect();
    let mut lists = lock(LISTS.get_or_init(Default::default));
    if let Some(shared) = lists.get(&names[..]) {
        return shared.clone();
    }
    if lists.len() >= 1_000_000 {
        lists.clear();
    }
    let shared: std::sync::Arc<[Box<str>]> = names.into();
    lists.insert(shared.clone());
    shared
}

impl VarUse {
    /// Adds what one file uses.
    pub fn merge_file(&mut self, other: &FileUse) {
        self.names.extend(other.names.iter().map(|n| n.to_string()));
        if self.fallback.is_none() {
            self.fallback.clone_from(&other.fallback);
        }
        self.reads.extend(other.reads.iter().cloned());
        if self.read_unresolved.is_none() {
            self.read_unresolved.clone_from(&other.read_unresolved);
        }
    }

    pub fn merge(&mut self, other: &VarUse) {
        self.names.extend(other.names.iter().cloned());
        if self.fallback.is_none() {
            self.fallback.clone_from(&other.fallback);
        }
        self.reads.extend(other.reads.iter().cloned());
        if self.read_unresolved.is_none() {
            self.read_unresolved.clone_from(&other.read_unresolved);
        }
    }

    fn unresolved_read(&mut self, reason: String) {
        if self.read_unresolved.is_none() {
            self.read_unresolved = Some(reason);
        }
    }

    fn give_up(&mut self, reason: String) {
        if self.fallback.is_none() {
            self.fallback = Some(reason);
        }
    }
}

/// Keys whose string values are bare Jinja expressions.
const EXPRESSION_KEYS: &[&str] = &[
    "when",
    "changed_when",
    "failed_when",
    "until",
    "that",
    "var",
];
/// Names that give access to every variable, or to other hosts, groups and
/// files of the inventory: the analysis cannot follow them.
const ALL_VARS_NAMES: &[&str] = &[
    "hostvars",
    "vars",
    "groups",
    "play_hosts",
    "ansible_play_hosts",
    "ansible_play_hosts_all",
    "ansible_play_batch",
    "inventory_dir",
    "inventory_file",
    "ansible_inventory_sources",
];

static VARS_LOOKUP: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"\b(lookup|query|q)\s*\(\s*['"](ansible\.(?:builtin|legacy)\.)?(vars|varnames|inventory_hostnames)['"]"#)
        .expect("valid regex")
});
/// Template syntax overrides (`#jinja2:` headers, `variable_start_string`...)
/// that change what Jinja reads.
static SYNTAX_OVERRIDE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?m)^#jinja2:|\b(variable|block|comment)_(start|end)_string\b")
        .expect("valid regex")
});

/// The lookup a `with_X` key loops over (`with_ansible.builtin.fileglob`
/// is `with_fileglob`).
fn loop_lookup(key: &str) -> Option<&str> {
    key.strip_prefix("with_").map(super::reads::lookup_name)
}

/// The items of a `with_file`-style loop: literal names are reads, a
/// templated one without a literal directory is unresolved.
fn loop_reads(v: &Yaml, file: &str, text: &str, u: &mut VarUse) {
    match v {
        Yaml::String(s) if is_template(s) => {
            let prefix = &s[..s.find("{{").or_else(|| s.find("{%")).unwrap_or(0)];
            match prefix.rsplit_once('/') {
                Some((d, _)) if !d.is_empty() => {
                    u.reads.insert(format!("{d}/"));
                }
                _ => u.unresolved_read(format!(
                    "{file}:{}: loops over files named at run time ('{s}')",
                    line_of(text, s)
                )),
            }
        }
        Yaml::String(s) => {
            u.reads.insert(s.clone());
        }
        Yaml::Array(a) => a.iter().for_each(|x| loop_reads(x, file, text, u)),
        Yaml::Hash(h) => h.values().for_each(|x| loop_reads(x, file, text, u)),
        _ => {}
    }
}

fn is_template(s: &str) -> bool {
    s.contains("{{") || s.contains("{%")
}

/// 1-based line of the first line of `text` containing `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    let needle = needle.lines().next().unwrap_or(needle).trim();
    if needle.is_empty() {
        return 1;
    }
    text.lines()
        .position(|l| l.contains(needle))
        .map_or(1, |i| i + 1)
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Analyses files once each, however many layers share them.
#[derive(Default)]
pub struct Analyzer {
    /// One copy of each analysis, shared by every layer that asks (layers
    /// ask from several threads).
    memo: std::sync::Mutex<HashMap<String, std::sync::Arc<FileUse>>>,
    /// Analyses the file index did that failed (see [`Analyzer::seed`]):
    /// the error is given when a layer asks.
    failed: std::sync::Mutex<HashMap<String, Error>>,
    /// Inside a looping task (nested loops bind their own variables; the
    /// outer one is then conservatively kept).
    in_loop: bool,
}

/// How the analysis reads a play's file: by its path, or as a template
/// wherever it lies when its content holds Jinja markers.
fn file_kind(rel: &str, jinja: bool) -> FileKind {
    match kind_of(rel) {
        FileKind::Other if jinja => FileKind::Template,
        k => k,
    }
}

/// How a file is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Yaml,
    Template,
    /// Code that may read any variable (filter, lookup, vars plugins...).
    Plugin,
    Other,
}

/// How a play's file is read, from its workspace-relative path.
pub fn kind_of(rel: &str) -> FileKind {
    let (dirs, name) = match rel.rsplit_once('/') {
        Some((d, n)) => (d, n),
        None => ("", rel),
    };
    // `d` is one of the directories of the path.
    let in_dir = |d: &str| dirs.split('/').any(|c| c == d);
    if dirs.split('/').any(|d| d.ends_with("_plugins")) {
        return FileKind::Plugin;
    }
    if in_dir("files") {
        // Copied verbatim, never templated.
        return FileKind::Other;
    }
    if name.ends_with(".j2") || in_dir("templates") {
        return FileKind::Template;
    }
    if name.ends_with(".yml") || name.ends_with(".yaml") || name.ends_with(".json") {
        return FileKind::Yaml;
    }
    FileKind::Other
}

impl Analyzer {
    /// The variables referenced by one workspace file (memoised). Invalid
    /// YAML is an error: Ansible rejects it too. `jinja`: the content holds
    /// Jinja markers, so even a file outside `templates/` (which `template:`
    /// may render from anywhere) is read as a template.
    pub fn file(
        &self,
        obs: &super::observe::Observer,
        root: &Path,
        rel: &str,
        jinja: bool,
    ) -> Result<std::sync::Arc<FileUse>> {
        if let Some(u) = lock(&self.memo).get(rel) {
            return Ok(u.clone());
        }
        if let Some(e) = lock(&self.failed).remove(rel) {
            return Err(e);
        }
        // The analysis itself runs outside the lock, with its own state.
        let mut pass = Analyzer::default();
        let u = match file_kind(rel, jinja) {
            // Nothing to read: not worth remembering either.
            FileKind::Other => return Ok(Default::default()),
            FileKind::Plugin => pass.bytes(rel, jinja, &[])?,
            _ => match obs.read(&root.join(rel)) {
                Err(e) => {
                    let mut u = VarUse::default();
                    u.give_up(format!("{rel}: cannot be read as text ({e})"));
                    u
                }
                Ok(bytes) => pass.bytes(rel, jinja, &bytes)?,
            },
        };
        Ok(lock(&self.memo)
            .entry(rel.to_string())
            .or_insert_with(|| std::sync::Arc::new(u.into()))
            .clone())
    }

    /// The analysis of a file from its content, as [`Analyzer::file`] does
    /// it; `None` for a file with nothing to read. The file index calls this
    /// with the bytes it hashed, so a file is read once.
    pub fn analyse_bytes(
        &mut self,
        rel: &str,
        jinja: bool,
        bytes: &[u8],
    ) -> Option<Result<FileUse>> {
        match file_kind(rel, jinja) {
            FileKind::Other => None,
            _ => Some(self.bytes(rel, jinja, bytes).map(FileUse::from)),
        }
    }

    /// Results computed by [`Analyzer::analyse_bytes`] elsewhere (the file
    /// index), used instead of reading the files again.
    pub fn seed(&self, done: impl IntoIterator<Item = (String, Result<FileUse>)>) {
        let (mut memo, mut failed) = (lock(&self.memo), lock(&self.failed));
        for (rel, u) in done {
            if let std::collections::hash_map::Entry::Vacant(v) = memo.entry(rel) {
                match u {
                    Ok(u) => {
                        v.insert(std::sync::Arc::new(u));
                    }
                    Err(e) => {
                        failed.insert(v.into_key(), e);
                    }
                }
            }
        }
    }

    fn bytes(&mut self, rel: &str, jinja: bool, bytes: &[u8]) -> Result<VarUse> {
        let mut u = VarUse::default();
        match file_kind(rel, jinja) {
            FileKind::Other => {}
            FileKind::Plugin => {
                u.give_up(format!("{rel} is a plugin, which can read any variable"))
            }
            kind => match std::str::from_utf8(bytes) {
                Err(_) => u.give_up(format!(
                    "{rel}: cannot be read as text (stream did not contain valid UTF-8)"
                )),
                Ok(text) => u = self.text(text, rel, kind == FileKind::Template)?,
            },
        }
        Ok(u)
    }

    /// The variables referenced by `text`, the content of the play's file
    /// `rel`: a Jinja template, or YAML. Pure; the entry point of the
    /// variable-analysis fuzz target.
    pub fn text(&mut self, text: &str, rel: &str, template: bool) -> Result<VarUse> {
        let mut u = VarUse::default();
        if SYNTAX_OVERRIDE.is_match(text) {
            u.give_up(format!(
                "{rel}:{}: changes the Jinja syntax",
                line_of(text, SYNTAX_OVERRIDE.find(text).map_or("", |m| m.as_str()))
            ));
        } else if template {
            self.template(text, rel, text, &mut u);
        } else {
            match super::yaml::load(text) {
                Ok(docs) => {
                    for d in &docs {
                        self.yaml(d, None, rel, text, &mut u);
                    }
                }
                Err(e) => {
                    let mut loc = Location::at_line(rel, text, e.marker().line());
                    loc.column = Some(e.marker().col() + 1);
                    return Err(
                        Error::input_at(loc, format!("YAML syntax error: {}", e.info()))
                            .with_hint("ansible-playbook would reject this file too; fix the YAML"),
                    );
                }
            }
        }
        Ok(u)
    }

    /// The variables referenced by a variable's value (for the closure over definitions).
    pub fn value(&self, v: &serde_json::Value, file: &str) -> VarUse {
        let mut u = VarUse::default();
        Analyzer::default().json(v, file, &mut u);
        u
    }

    fn json(&mut self, v: &serde_json::Value, file: &str, u: &mut VarUse) {
        match v {
            serde_json::Value::String(s) if is_template(s) => self.template(s, file, s, u),
            serde_json::Value::Array(a) => a.iter().for_each(|x| self.json(x, file, u)),
            serde_json::Value::Object(o) => {
                for (k, x) in o {
                    if is_template(k) {
                        u.give_up(format!("{file}: the variable name '{k}' is templated"));
                    }
                    self.json(x, file, u);
                }
            }
            _ => {}
        }
    }

    fn yaml(&mut self, y: &Yaml, key: Option<&str>, file: &str, text: &str, u: &mut VarUse) {
        match y {
            Yaml::String(s) => {
                // `with_fileglob: files/*` names files, not an expression.
                // (the terms of a lookup that reads files, `with_lines:
                // cat x`, are not expressions either).
                let bare = key.is_some_and(|k| {
                    EXPRESSION_KEYS.contains(&k)
                        || loop_lookup(k).is_some_and(super::reads::is_pure_lookup)
                });
                if is_template(s) {
                    self.template(s, file, text, u);
                } else if bare && !s.trim().is_empty() {
                    self.template(&format!("{{{{ {s} }}}}"), file, text, u);
                }
            }
            Yaml::Array(a) => {
                for x in a {
                    self.yaml(x, key, file, text, u);
                }
            }
            Yaml::Hash(h) => {
                // A task with a loop binds its loop variable (`item`, or
                // loop_control.loop_var) for its own strings only.
                let loops = h.keys().any(|k| {
                    k.as_str()
                        .is_some_and(|k| k == "loop" || k.starts_with("with_"))
                });
                if loops && !self.in_loop {
                    let loop_var = y["loop_control"]["loop_var"]
                        .as_str()
                        .unwrap_or("item")
                        .to_string();
                    let mut inner = VarUse::default();
                    self.in_loop = true;
                    for (k, v) in h {
                        self.pair(k, v, file, text, &mut inner);
                    }
                    self.in_loop = false;
                    inner.names.remove(&loop_var);
                    u.merge(&inner);
                    return;
                }
                // `include_vars:` with its arguments under `args:`.
                let args = &y["args"];
                if h.keys().any(|k| {
                    matches!(
                        k.as_str(),
                        Some(
                            "include_vars"
                                | "ansible.builtin.include_vars"
                                | "ansible.legacy.include_vars"
                        )
                    )
                }) && (args["dir"].as_str().is_some()
                    || [&args["file"], &args["_raw_params"]]
                        .iter()
                        .any(|a| a.as_str().is_some_and(is_template)))
                {
                    u.give_up(format!(
                        "{file}:{}: include_vars with a name known only at run time",
                        line_of(text, "include_vars")
                    ));
                }
                for (k, v) in h {
                    self.pair(k, v, file, text, u);
                }
            }
            _ => {}
        }
    }

    fn pair(&mut self, k: &Yaml, v: &Yaml, file: &str, text: &str, u: &mut VarUse) {
        let ks = k.as_str();
        if let Some(ks) = ks
            && is_template(ks)
        {
            u.give_up(format!(
                "{file}:{}: the name '{ks}' is templated",
                line_of(text, ks)
            ));
        }
        // Mitogen then reaches the host through another inventory host,
        // reading that host's variables (its connection, address, user).
        if ks == Some("mitogen_via") {
            u.give_up(format!(
                "{file}:{}: sets mitogen_via (Mitogen reaches the host through another inventory host)",
                line_of(text, "mitogen_via")
            ));
        }
        // `action: include_vars NAME` is `include_vars: NAME`.
        let action = matches!(ks, Some("action" | "local_action"))
            .then(|| v.as_str())
            .flatten()
            .and_then(|a| a.trim_start().split_once(char::is_whitespace))
            .filter(|(m, _)| {
                matches!(
                    *m,
                    "include_vars" | "ansible.builtin.include_vars" | "ansible.legacy.include_vars"
                )
            })
            .map(|(_, rest)| Yaml::String(rest.to_string()));
        if let Some(v) = action.as_ref().or_else(|| {
            matches!(
                ks,
                Some(
                    "include_vars" | "ansible.builtin.include_vars" | "ansible.legacy.include_vars"
                )
            )
            .then_some(v)
        }) {
            let target = v
                .as_str()
                .or_else(|| v["file"].as_str())
                .or_else(|| v["_raw_params"].as_str())
                .or_else(|| v["dir"].as_str());
            // Free form: `include_vars: dir=vars/` names a directory too.
            let dir = v["dir"].as_str().is_some()
                || v.as_str()
                    .is_some_and(|s| s.split_whitespace().any(|w| w.starts_with("dir=")));
            if dir || target.is_some_and(is_template) {
                u.give_up(format!(
                    "{file}:{}: include_vars with a name known only at run time",
                    line_of(text, target.unwrap_or("include_vars"))
                ));
            }
        }
        if let Some(l) = ks.and_then(loop_lookup) {
            if super::reads::is_file_lookup(l) && l != "password" {
                loop_reads(v, file, text, u);
            } else if !super::reads::is_pure_lookup(l) {
                let k = ks.unwrap_or_default();
                u.unresolved_read(format!(
                    "{file}:{}: {k} runs a lookup that may read any controller file",
                    line_of(text, k)
                ));
            }
        }
        self.yaml(v, ks, file, text, u);
    }

    fn template(&mut self, src: &str, file: &str, text: &str, u: &mut VarUse) {
        let reads = super::reads::jinja_reads(src);
        u.reads.extend(reads.names);
        if let Some(r) = reads.unresolved {
            u.unresolved_read(format!(
                "{file}:{}: reads a file named at run time ({r})",
                line_of(text, &r)
            ));
        }
        if let Some(m) = VARS_LOOKUP.find(src) {
            u.give_up(format!(
                "{file}:{}: uses {}",
                line_of(text, m.as_str()),
                m.as_str()
            ));
        }
        match super::jinja::names(src) {
            Ok(names) => {
                for name in names {
                    if ALL_VARS_NAMES.contains(&name.as_str()) {
                        let needle = if text.contains(&format!("{name}[")) {
                            format!("{name}[")
                        } else {
                            name.clone()
                        };
                        u.give_up(format!("{file}:{}: uses {name}", line_of(text, &needle)));
                    }
                    u.names.insert(name);
                }
            }
            Err(super::jinja::Declined::TooNested(at)) => {
                let line = if src.len() == text.len() {
                    src[..at].matches('\n').count() + 1
                } else {
                    line_of(text, src)
                };
                u.give_up(format!(
                    "{file}:{line}: a Jinja expression nested too deeply for the analysis"
                ));
            }
            Err(super::jinja::Declined::Parse(e)) => {
                // Jinja that Ansible may accept but minijinja cannot parse:
                // every variable counts.
                let line = if src.len() == text.len() {
                    e.line().unwrap_or(1)
                } else {
                    line_of(text, src)
                };
                u.give_up(format!(
                    "{file}:{line}: Jinja the analysis cannot parse ({})",
                    e.kind()
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(src: &str) -> (Vec<String>, Option<String>) {
        let mut a = Analyzer::default();
        let mut u = VarUse::default();
        let docs = yaml_rust2::YamlLoader::load_from_str(src).unwrap();
        for d in &docs {
            a.yaml(d, None, "t.yml", src, &mut u);
        }
        (u.names.into_iter().collect(), u.fallback)
    }

    #[test]
    fn finds_names_in_strings_expressions_and_filters() {
        let (n, f) = names(
            "- name: \"configure {{ svc_name }}\"\n  template: {src: a.j2, dest: \"/etc/{{ conf_dir | default('x') }}\"}\n  when: enable_svc and (ver is version('1', '>'))\n  loop: \"{{ pkgs + extra_pkgs }}\"\n- debug: {var: dbg_var}\n  with_items: old_style\n",
        );
        assert_eq!(
            n,
            vec![
                "conf_dir",
                "dbg_var",
                "enable_svc",
                "extra_pkgs",
                "old_style",
                "pkgs",
                "svc_name",
                "ver"
            ]
        );
        assert!(f.is_none());
    }

    #[test]
    fn loop_and_set_variables_are_local_in_templates() {
        let mut a = Analyzer::default();
        let mut u = VarUse::default();
        let t = "{%- for s in ntp_servers %}server {{ s }}\n{% endfor -%}{% set x = base %}{{ x }}{% raw %}{{ not_a_var }}{% endraw %}";
        a.template(t, "c.j2", t, &mut u);
        assert_eq!(
            u.names.into_iter().collect::<Vec<_>>(),
            vec!["base", "ntp_servers"]
        );
    }

    #[test]
    fn gives_up_on_hostvars_vars_lookup_and_templated_names() {
        let (_, f) = names("- debug:\n    msg: \"{{ hostvars[inventory_hostname]['x'] }}\"\n");
        assert!(f.unwrap().starts_with("t.yml:2: uses hostvars"));
        let (_, f) = names("- debug: {msg: \"{{ lookup('vars', 'a_' + b) }}\"}\n");
        assert!(f.unwrap().contains("lookup('vars'"));
        let (_, f) = names("- set_fact:\n    \"{{ n }}\": 1\n");
        assert!(f.unwrap().contains("templated"));
        let (_, f) = names("- include_vars: \"{{ os }}.yml\"\n");
        assert!(f.unwrap().contains("include_vars"));
        let (_, f) = names("- debug: {msg: \"{{ x ) }}\"}\n");
        assert!(f.unwrap().contains("cannot parse"));
    }

    /// `mitogen_via` set by a play (its vars, a role's, `set_fact`): the
    /// host Mitogen goes through is read with its own variables.
    #[test]
    fn gives_up_on_mitogen_via() {
        let (_, f) = names("- hosts: all\n  vars:\n    mitogen_via: gate\n  tasks: []\n");
        assert!(f.unwrap().starts_with("t.yml:3: sets mitogen_via"));
        let (_, f) = names("- set_fact: {mitogen_task_isolation: fork}\n");
        assert!(f.is_none());
    }

    #[test]
    fn loops_over_lookups_that_may_read_anything_are_unresolved_reads() {
        let run = |src: &str| {
            let mut a = Analyzer::default();
            let mut u = VarUse::default();
            for d in &yaml_rust2::YamlLoader::load_from_str(src).unwrap() {
                a.yaml(d, None, "t.yml", src, &mut u);
            }
            u
        };
        let u = run("- debug: {msg: \"{{ item }}\"}\n  with_lines: cat files/motd\n");
        assert!(u.read_unresolved.unwrap().contains("with_lines"));
        let u = run("- debug: {msg: \"{{ item }}\"}\n  with_community.general.filetree: ../o/\n");
        assert!(u.read_unresolved.is_none());
        assert!(u.reads.contains("../o/"));
        let u = run("- debug: {msg: \"{{ item }}\"}\n  with_ansible.builtin.fileglob: c/*.conf\n");
        assert!(u.reads.contains("c/*.conf"));
        for pure in [
            "with_items: [a]",
            "with_dict: {a: 1}",
            "with_sequence: count=3",
        ] {
            let u = run(&format!("- debug: {{msg: x}}\n  {pure}\n"));
            assert!(u.read_unresolved.is_none(), "{pure}");
        }
        let u = run("- action: include_vars {{ os }}.yml\n");
        assert!(u.fallback.unwrap().contains("include_vars"));
        let u = run("- include_vars:\n  args: {file: \"{{ os }}.yml\"}\n");
        assert!(u.fallback.unwrap().contains("include_vars"));
    }

    #[test]
    fn file_kinds() {
        assert_eq!(kind_of("r/templates/a.conf"), FileKind::Template);
        assert_eq!(kind_of("r/files/a.j2"), FileKind::Other);
        assert_eq!(kind_of("r/tasks/main.yml"), FileKind::Yaml);
        assert_eq!(kind_of("src/filter_plugins/f.py"), FileKind::Plugin);
    }
}

//! Variables defined by a system's inventory, file by file, for explaining
//! rebuilds at the level of variables ("slurm_partitions changed in
//! group_vars/Compute.yml") rather than files.
//!
//! The snapshot is not part of the digest (the inventory files are, whole)
//! and is kept beside the manifest. Values of ansible-vault encrypted files,
//! and `!vault` values, are never recorded: only that they changed.
//!
//! I/O: reads inventory files.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::observe::Observer;
use yaml_rust2::Yaml;

/// File -> what it defines.
pub type VarSnapshot = BTreeMap<String, FileVars>;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FileVars {
    /// A YAML (or INI section) mapping of variables.
    Vars { vars: BTreeMap<String, VarValue> },
    /// An ansible-vault encrypted file: its variable names are unknown.
    Encrypted,
    /// Not a variables file we could read (hosts file, script, bad YAML).
    Opaque,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VarValue {
    /// blake3 of the value's canonical JSON.
    pub hash: String,
    /// The value, unless it is a secret from ansible-vault.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub value: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub vault: bool,
}

const VAULT_HEADER: &str = "$ANSIBLE_VAULT;";

/// Reads the variables of every file under `files` (workspace-relative
/// paths of inventory files).
pub fn snapshot<'a>(
    obs: &Observer,
    root: &Path,
    files: impl Iterator<Item = &'a String>,
) -> VarSnapshot {
    let mut out = BTreeMap::new();
    for rel in files {
        let Ok(text) = obs.read_to_string(&root.join(rel)) else {
            out.insert(rel.clone(), FileVars::Opaque);
            continue;
        };
        out.insert(rel.clone(), file_vars(rel, &text));
    }
    out
}

fn file_vars(rel: &str, text: &str) -> FileVars {
    if text.trim_start().starts_with(VAULT_HEADER) {
        return FileVars::Encrypted;
    }
    let in_vars_dir = rel
        .split('/')
        .any(|c| c == "group_vars" || c == "host_vars");
    let is_yaml = rel.ends_with(".yml")
        || rel.ends_with(".yaml")
        || rel.ends_with(".json")
        || !rel.contains('.');
    if in_vars_dir && is_yaml {
        return match super::yaml::load(text) {
            Ok(docs) => match docs.first() {
                Some(Yaml::Hash(h)) => FileVars::Vars {
                    vars: h
                        .iter()
                        .filter_map(|(k, v)| k.as_str().map(|k| (k.to_string(), var_value(v))))
                        .collect(),
                },
                None => FileVars::Vars {
                    vars: BTreeMap::new(),
                },
                _ => FileVars::Opaque,
            },
            Err(_) => FileVars::Opaque,
        };
    }
    FileVars::Opaque
}

fn var_value(v: &Yaml) -> VarValue {
    let json = to_json(v);
    let vault = contains_vault(&json);
    VarValue {
        hash: blake3::hash(json.to_string().as_bytes())
            .to_hex()
            .to_string(),
        value: if vault { None } else { Some(json) },
        vault,
    }
}

fn contains_vault(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::String(s) => s.trim_start().starts_with(VAULT_HEADER),
        serde_json::Value::Array(a) => a.iter().any(contains_vault),
        serde_json::Value::Object(o) => o.values().any(contains_vault),
        _ => false,
    }
}

fn to_json(y: &Yaml) -> serde_json::Value {
    use serde_json::Value;
    match y {
        Yaml::Real(s) => s
            .parse::<f64>()
            .ok()
            .and_then(|f| serde_json::Number::from_f64(f).map(Value::Number))
            .unwrap_or_else(|| Value::String(s.clone())),
        Yaml::Integer(i) => Value::from(*i),
        Yaml::String(s) => Value::String(s.clone()),
        Yaml::Boolean(b) => Value::Bool(*b),
        Yaml::Array(a) => Value::Array(a.iter().map(to_json).collect()),
        Yaml::Hash(h) => Value::Object(
            h.iter()
                .map(|(k, v)| {
                    let key = match k {
                        Yaml::String(s) => s.clone(),
                        other => to_json(other).to_string(),
                    };
                    (key, to_json(v))
                })
                .collect(),
        ),
        Yaml::Null | Yaml::BadValue => Value::Null,
        Yaml::Alias(_) => Value::Null,
    }
}

/// What an INI inventory file declares.
#[derive(Default)]
struct IniFile {
    defs: Vec<VarDef>,
    /// (child group, parent group)
    parents: Vec<(String, String)>,
    /// (host, group)
    hosts: Vec<(String, String)>,
}

/// An INI line without a trailing comment, trimmed.
fn ini_strip(l: &str) -> String {
    let mut out = l;
    for marker in [" #", "\t#", " ;", "\t;"] {
        if let Some(i) = out.find(marker) {
            out = &out[..i];
        }
    }
    out.trim().to_string()
}

impl IniFile {
    /// The file `rel` (relative to the inventory's base); `Err`: why it
    /// cannot be read.
    fn parse(rel: &str, text: &str) -> Result<IniFile, String> {
        let mut f = IniFile::default();
        let mut section = ("ungrouped".to_string(), "hosts");
        for raw in text.lines() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            if line.starts_with('[') {
                section = ini_section(line)?;
                continue;
            }
            match section.1 {
                "vars" => {
                    let Some((k, v)) = line.split_once('=') else {
                        return Err(format!("cannot read the line '{line}'"));
                    };
                    f.defs.push(VarDef {
                        name: k.trim().to_string(),
                        file: format!("{rel} [{}:vars]", section.0),
                        scope: Scope::Group(section.0.clone()),
                        value: serde_json::Value::String(v.trim().to_string()),
                        hash: text_hash(line),
                    });
                }
                "children" => f.parents.push((ini_strip(line), section.0.clone())),
                _ => f.host_line(rel, line, &section.0)?,
            }
        }
        Ok(f)
    }

    /// A host line: `name [key=value ...]`. It matters only if the name
    /// coincides with a working container's host name.
    fn host_line(&mut self, rel: &str, line: &str, group: &str) -> Result<(), String> {
        let Ok(words) = shell_words::split(&ini_strip(line)) else {
            return Err(format!("cannot read the line '{line}'"));
        };
        let Some((host, vars)) = words.split_first() else {
            return Ok(());
        };
        self.hosts.push((host.clone(), group.to_string()));
        for kv in vars {
            if let Some((k, v)) = kv.split_once('=') {
                self.defs.push(VarDef {
                    name: k.to_string(),
                    file: format!("{rel} [host {host}]"),
                    scope: Scope::Host(host.clone()),
                    value: serde_json::Value::String(v.to_string()),
                    hash: text_hash(line),
                });
            }
        }
        Ok(())
    }
}

/// A section header: its group and kind (`hosts`, `vars`, `children`).
fn ini_section(line: &str) -> Result<(String, &'static str), String> {
    let header = ini_strip(line);
    let Some(h) = header.strip_prefix('[').and_then(|l| l.strip_suffix(']')) else {
        return Err(format!("cannot read the line '{line}'"));
    };
    match h.split_once(':') {
        Some((g, "vars")) => Ok((g.to_string(), "vars")),
        Some((g, "children")) => Ok((g.to_string(), "children")),
        Some(_) => Err(format!("unknown section [{h}]")),
        None => Ok((h.to_string(), "hosts")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_vars_and_hides_vault_values() {
        let f = file_vars(
            "inv/group_vars/all.yml",
            "ntp: [a, b]\npassword: !vault |\n  $ANSIBLE_VAULT;1.1;AES256\n  6162\n",
        );
        let FileVars::Vars { vars } = f else {
            panic!("{f:?}")
        };
        assert_eq!(vars["ntp"].value, Some(serde_json::json!(["a", "b"])));
        assert!(vars["password"].vault && vars["password"].value.is_none());
        assert_eq!(
            file_vars(
                "inv/group_vars/all/vault.yml",
                "$ANSIBLE_VAULT;1.1;AES256\n3132\n"
            ),
            FileVars::Encrypted
        );
        assert_eq!(file_vars("inv/hosts", "[Compute]\n"), FileVars::Opaque);
    }
}

/// Whose variables a definition is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Group(String),
    Host(String),
    /// Applies whatever the groups (a file the analysis cannot read).
    Everyone,
}

/// One definition of a variable in the inventory.
#[derive(Debug, Clone)]
pub struct VarDef {
    pub name: String,
    /// Relative to the inventory's base directory, so two systems with the
    /// same values get the same digests.
    pub file: String,
    pub scope: Scope,
    pub value: serde_json::Value,
    /// What the digest counts: blake3 of the definition's source text (so
    /// YAML 1.1-only readings such as `0700` vs `700` cannot hide a change).
    pub hash: String,
}

fn text_hash(s: &str) -> String {
    blake3::hash(s.as_bytes()).to_hex().to_string()
}

/// The source text of each top-level key of a block-style YAML mapping, or
/// `None` when the file's shape is not that simple (flow style, anchors,
/// aliases, merge keys): then it is counted whole.
fn top_level_blocks(text: &str) -> Option<std::collections::BTreeMap<String, String>> {
    static KEY: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(
            r#"^("(?:[^"\\]|\\.)*"|'[^']*'|[^\s#'"\-\[\]{}&*!|>%@`][^:#]*?)\s*:(?:\s|$)"#,
        )
        .expect("valid regex")
    });
    static ANCHOR: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r"(^|[\s\[{,:])[&*][A-Za-z0-9_-]|<<\s*:").expect("valid regex")
    });
    if ANCHOR.is_match(text) {
        return None;
    }
    let mut out = std::collections::BTreeMap::new();
    let mut current: Option<(String, String)> = None;
    for line in text.lines() {
        let starts_block =
            !line.starts_with([' ', '\t']) && !line.trim().is_empty() && !line.starts_with('#');
        if starts_block {
            if line.starts_with("---") || line.starts_with("...") || line.starts_with('%') {
                if let Some((k, v)) = current.take() {
                    out.insert(k, v);
                }
                continue;
            }
            let caps = KEY.captures(line)?;
            if let Some((k, v)) = current.take() {
                out.insert(k, v);
            }
            let key = caps[1].trim_matches(|c| c == '"' || c == '\'').to_string();
            current = Some((key, format!("{line}\n")));
        } else if let Some((_, v)) = current.as_mut() {
            v.push_str(line);
            v.push('\n');
        }
    }
    if let Some((k, v)) = current.take() {
        out.insert(k, v);
    }
    Some(out)
}

/// A system's inventory as the variable analysis sees it.
#[derive(Debug, Clone, Default)]
pub struct InventoryModel {
    /// Workspace-relative directory the inventory files are relative to.
    pub base: String,
    pub defs: Vec<VarDef>,
    /// group -> its parent groups (`[parent:children]`).
    pub parents: std::collections::BTreeMap<String, BTreeSet<String>>,
    /// host -> groups the system inventory itself puts it in (Ansible
    /// merges these with the generated inventory when names coincide).
    pub host_groups: std::collections::BTreeMap<String, BTreeSet<String>>,
    /// Files whose variables cannot be read (vault-encrypted, scripts,
    /// plugins): they count whole, with the reason.
    pub opaque: Vec<(String, Scope, String)>,
}

use std::collections::BTreeSet;

/// Extensions Ansible's inventory loader ignores.
const IGNORED_EXTS: &[&str] = &[
    ".pyc", ".pyo", ".swp", ".bak", "~", ".rpm", ".md", ".txt", ".rst", ".orig", ".cfg", ".retry",
];

fn strip_ext(name: &str) -> &str {
    for ext in [".yml", ".yaml", ".json"] {
        if let Some(s) = name.strip_suffix(ext) {
            return s;
        }
    }
    name
}

impl InventoryModel {
    /// Reads the inventory `inv` (workspace-relative file or directory);
    /// `files` are the workspace-relative files at or below its base.
    pub fn load<'a>(
        obs: &Observer,
        root: &Path,
        inv: &str,
        is_dir: bool,
        files: impl Iterator<Item = &'a String>,
    ) -> InventoryModel {
        let base = if is_dir {
            inv.to_string()
        } else {
            Path::new(inv)
                .parent()
                .map(|p| p.to_string_lossy().into_owned())
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| ".".into())
        };
        let mut m = InventoryModel {
            base: base.clone(),
            ..Default::default()
        };
        for ws_rel in files {
            let rel = if base == "." {
                ws_rel.as_str()
            } else {
                ws_rel.strip_prefix(&format!("{base}/")).unwrap_or(ws_rel)
            };
            if IGNORED_EXTS.iter().any(|e| rel.ends_with(e)) {
                continue;
            }
            let parts: Vec<&str> = rel.split('/').collect();
            let scope = match parts.as_slice() {
                ["group_vars", f] | ["group_vars", f, ..] => {
                    Some(Scope::Group(strip_ext(f).to_string()))
                }
                ["host_vars", f] | ["host_vars", f, ..] => {
                    Some(Scope::Host(strip_ext(f).to_string()))
                }
                _ => None,
            };
            let Ok(text) = obs.read_to_string(&root.join(ws_rel)) else {
                m.opaque.push((
                    ws_rel.clone(),
                    scope.unwrap_or(Scope::Everyone),
                    "unreadable".into(),
                ));
                continue;
            };
            match scope {
                Some(scope) => m.vars_file(ws_rel, rel, &text, scope),
                None => {
                    // Only the inventory file itself (or files of an inventory directory) are sources.
                    if !is_dir && ws_rel != inv {
                        continue;
                    }
                    let executable = is_executable(obs, &root.join(ws_rel));
                    m.source_file(executable, ws_rel, rel, &text);
                }
            }
        }
        m
    }

    /// Reads inventory text without touching the file system: `rel` is an
    /// inventory source (INI, or YAML when it ends in `.yml`) or, under
    /// `group_vars/` or `host_vars/`, a variables file. The entry point of the
    /// inventory fuzz target; `snapshot` reads vars files the same way.
    pub fn read_text(&mut self, rel: &str, text: &str) -> FileVars {
        let parts: Vec<&str> = rel.split('/').collect();
        match parts.as_slice() {
            ["group_vars", f, ..] => {
                self.vars_file(rel, rel, text, Scope::Group(strip_ext(f).to_string()))
            }
            ["host_vars", f, ..] => {
                self.vars_file(rel, rel, text, Scope::Host(strip_ext(f).to_string()))
            }
            _ if rel.ends_with(".yml") || rel.ends_with(".yaml") || rel.ends_with(".json") => {
                self.source_file(false, rel, rel, text)
            }
            _ => self.ini(rel, rel, text),
        }
        file_vars(rel, text)
    }

    fn vars_file(&mut self, ws_rel: &str, rel: &str, text: &str, scope: Scope) {
        if text.trim_start().starts_with(VAULT_HEADER) {
            self.opaque
                .push((ws_rel.to_string(), scope, "ansible-vault encrypted".into()));
            return;
        }
        let is_json = rel.ends_with(".json");
        match super::yaml::load(text) {
            Ok(docs) => match docs.first() {
                Some(Yaml::Hash(h)) if docs.len() == 1 => {
                    let blocks = if is_json {
                        None
                    } else {
                        top_level_blocks(text)
                    };
                    let keys: BTreeSet<&str> = h.keys().filter_map(|k| k.as_str()).collect();
                    if !is_json
                        && blocks.as_ref().is_none_or(|b| {
                            b.keys().map(String::as_str).collect::<BTreeSet<_>>() != keys
                                || b.len() != h.len()
                        })
                    {
                        self.opaque.push((ws_rel.to_string(), scope, "a YAML shape the analysis does not slice by variable (anchors, flow style, non-string keys)".into()));
                        return;
                    }
                    for (k, v) in h {
                        let Some(k) = k.as_str() else { continue };
                        let value = to_json(v);
                        let hash = match &blocks {
                            Some(b) => text_hash(&b[k]),
                            None => text_hash(&value.to_string()),
                        };
                        self.defs.push(VarDef {
                            name: k.to_string(),
                            file: rel.to_string(),
                            scope: scope.clone(),
                            value,
                            hash,
                        });
                    }
                }
                None | Some(Yaml::Null) if docs.len() <= 1 => {}
                _ => self.opaque.push((
                    ws_rel.to_string(),
                    scope,
                    "not a single mapping of variables".into(),
                )),
            },
            Err(_) => self.opaque.push((
                ws_rel.to_string(),
                scope,
                "not YAML the analysis can read".into(),
            )),
        }
    }

    /// An inventory source: INI or YAML hosts file; anything else (a script,
    /// an inventory plugin's configuration) is opaque.
    fn source_file(&mut self, executable: bool, ws_rel: &str, rel: &str, text: &str) {
        if executable {
            self.opaque.push((
                ws_rel.to_string(),
                Scope::Everyone,
                "a dynamic inventory script".into(),
            ));
            return;
        }
        if rel.ends_with(".yml") || rel.ends_with(".yaml") || rel.ends_with(".json") {
            match super::yaml::load(text) {
                Ok(docs) => match docs.first() {
                    Some(Yaml::Hash(h)) if !h.contains_key(&Yaml::String("plugin".into())) => {
                        for (g, body) in h {
                            if let Some(g) = g.as_str() {
                                self.yaml_group(g, body, rel, &text_hash(text));
                            }
                        }
                    }
                    None => {}
                    _ => self.opaque.push((
                        ws_rel.to_string(),
                        Scope::Everyone,
                        "an inventory plugin configuration".into(),
                    )),
                },
                Err(_) => self.opaque.push((
                    ws_rel.to_string(),
                    Scope::Everyone,
                    "not YAML the analysis can read".into(),
                )),
            }
            return;
        }
        self.ini(ws_rel, rel, text);
    }

    /// A YAML inventory source: its values are hashed with the whole file's
    /// text (nested values cannot be sliced reliably), so any edit of the
    /// file changes every used variable it defines (over-approximate).
    fn yaml_group(&mut self, group: &str, body: &Yaml, rel: &str, file_hash: &str) {
        if let Some(hosts) = body["hosts"].as_hash() {
            for (h, hvars) in hosts {
                let Some(h) = h.as_str() else { continue };
                self.host_groups
                    .entry(h.to_string())
                    .or_default()
                    .insert(group.to_string());
                if let Some(vars) = hvars.as_hash() {
                    for (k, v) in vars {
                        if let Some(k) = k.as_str() {
                            self.defs.push(VarDef {
                                name: k.to_string(),
                                file: format!("{rel} [host {h}]"),
                                scope: Scope::Host(h.to_string()),
                                value: to_json(v),
                                hash: file_hash.to_string(),
                            });
                        }
                    }
                }
            }
        }
        if let Some(vars) = body["vars"].as_hash() {
            for (k, v) in vars {
                if let Some(k) = k.as_str() {
                    self.defs.push(VarDef {
                        name: k.to_string(),
                        file: format!("{rel} [{group}]"),
                        scope: Scope::Group(group.to_string()),
                        value: to_json(v),
                        hash: file_hash.to_string(),
                    });
                }
            }
        }
        if let Some(children) = body["children"].as_hash() {
            for (c, cbody) in children {
                if let Some(c) = c.as_str() {
                    self.parents
                        .entry(c.to_string())
                        .or_default()
                        .insert(group.to_string());
                    self.yaml_group(c, cbody, rel, file_hash);
                }
            }
        }
    }

    /// An INI inventory: `[group]` host lines, `[group:vars]`,
    /// `[group:children]`. Comments (`#`, `;`) may follow a section header or
    /// a group name. Any line it cannot read makes the file opaque (counted
    /// whole) rather than half-understood.
    fn ini(&mut self, ws_rel: &str, rel: &str, text: &str) {
        match IniFile::parse(rel, text) {
            Ok(f) => {
                self.defs.extend(f.defs);
                for (child, parent) in f.parents {
                    self.parents.entry(child).or_default().insert(parent);
                }
                for (host, group) in f.hosts {
                    self.host_groups.entry(host).or_default().insert(group);
                }
            }
            Err(why) => self.opaque.push((ws_rel.to_string(), Scope::Everyone, why)),
        }
    }

    /// The groups a container named `host` in `groups` belongs to, with
    /// those the system inventory gives that host name, ancestors and `all`.
    pub fn effective_groups(&self, groups: &[String], host: &str) -> BTreeSet<String> {
        let mut out: BTreeSet<String> = groups.iter().cloned().collect();
        if let Some(extra) = self.host_groups.get(host) {
            out.extend(extra.iter().cloned());
        }
        if out.is_empty() {
            out.insert("ungrouped".into());
        }
        out.insert("all".into());
        let mut stack: Vec<String> = out.iter().cloned().collect();
        while let Some(g) = stack.pop() {
            if let Some(ps) = self.parents.get(&g) {
                for p in ps {
                    if out.insert(p.clone()) {
                        stack.push(p.clone());
                    }
                }
            }
        }
        out
    }

    pub fn visible(scope: &Scope, groups: &BTreeSet<String>, host: &str) -> bool {
        match scope {
            Scope::Group(g) => groups.contains(g),
            Scope::Host(h) => h == host,
            Scope::Everyone => true,
        }
    }
}

#[cfg(unix)]
fn is_executable(obs: &Observer, p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    obs.metadata(p)
        .is_ok_and(|m| m.permissions().mode() & 0o111 != 0)
}

#[cfg(not(unix))]
fn is_executable(_obs: &Observer, _p: &Path) -> bool {
    false
}

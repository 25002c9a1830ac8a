//! Why a layer's digest differs: a diff of two manifests (and their
//! inventory-variable snapshots) into typed, serialisable [`Change`]s,
//! walking up through parents to the root cause, and the one place they are
//! rendered as text.
//!
//! Values of variables are left out unless asked for, and never included
//! when they come from ansible-vault. Pure: manifests of parents are found
//! through a caller-supplied lookup.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::digest::Digest;
use crate::fingerprint::inventory::{FileVars, VarSnapshot};
use crate::fingerprint::{Manifest, ParentInput};

/// Where system vars are defined, as named in changes.
const SYSTEM_VARS: &str = "Layerfile.toml";

/// A manifest with the variables recorded beside it.
#[derive(Debug, Clone)]
pub struct Side {
    pub manifest: Manifest,
    pub vars: VarSnapshot,
    /// Workspace-relative inventory directory, to name defining files.
    pub inventory: Option<String>,
    /// The names of the system's vars, used or not, when known (a current
    /// fingerprint; not a recorded build).
    pub system_vars: Option<std::sync::Arc<BTreeSet<String>>>,
}

impl From<&crate::fingerprint::Fingerprint> for Side {
    fn from(f: &crate::fingerprint::Fingerprint) -> Side {
        Side {
            manifest: f.manifest.clone(),
            vars: (*f.vars).clone(),
            inventory: f.inventory.clone(),
            system_vars: Some(f.system_vars.clone()),
        }
    }
}

/// Finds the recorded inputs of a digest (for walking up through parents).
pub trait Lookup {
    fn side(&self, digest: &Digest) -> Option<Side>;
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Change {
    FormatChanged {
        old: u32,
        new: u32,
    },
    LabelChanged {
        old: String,
        new: String,
    },
    /// The parent layer's digest changed; `causes` explains it (None when the
    /// old parent's inputs were never recorded).
    ParentChanged {
        label: String,
        old_digest: Digest,
        new_digest: Digest,
        causes: Option<Vec<Change>>,
    },
    /// The parent became another layer, scratch, or another external image.
    ParentImageChanged {
        old: String,
        new: String,
    },
    FileAdded {
        path: String,
        origin: String,
    },
    FileRemoved {
        path: String,
        origin: String,
    },
    FileModified {
        path: String,
        origin: String,
    },
    FileModeChanged {
        path: String,
        origin: String,
        old: String,
        new: String,
    },
    PackageAdded {
        name: String,
    },
    PackageRemoved {
        name: String,
    },
    PackagesReordered,
    VarAdded {
        name: String,
        file: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        value: Option<serde_json::Value>,
        vault: bool,
    },
    /// A variable that no longer counts: removed from `file`, or, when
    /// `still_defined`, still there but no longer used by the play.
    VarRemoved {
        name: String,
        file: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        value: Option<serde_json::Value>,
        vault: bool,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        still_defined: bool,
    },
    VarChanged {
        name: String,
        file: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        old: Option<serde_json::Value>,
        #[serde(skip_serializing_if = "Option::is_none")]
        new: Option<serde_json::Value>,
        vault: bool,
    },
    /// An ansible-vault encrypted file changed: its variables cannot be named.
    EncryptedFileModified {
        path: String,
    },
    CommandChanged {
        step: String,
        old: Vec<String>,
        new: Vec<String>,
    },
    DefinitionChanged {
        key: String,
        old: serde_json::Value,
        new: serde_json::Value,
    },
    /// The variable analysis started or stopped counting every inventory
    /// variable (the reason, if it now does).
    VariableAnalysisChanged {
        old: Option<String>,
        new: Option<String>,
    },
    /// Same inputs, but the image of the last build is gone from storage.
    ImageMissing {
        image: String,
    },
}

fn parent_name(p: &ParentInput) -> String {
    match p {
        ParentInput::Scratch => "scratch".into(),
        ParentInput::Layer { label, .. } => label.clone(),
        ParentInput::Image { reference } => reference.clone(),
    }
}

/// The changes from `old` to `new`, parents first.
pub fn diff(old: &Side, new: &Side, lookup: &dyn Lookup, show_values: bool) -> Vec<Change> {
    diff_depth(old, new, lookup, show_values, 0)
}

fn diff_depth(
    old: &Side,
    new: &Side,
    lookup: &dyn Lookup,
    show_values: bool,
    depth: usize,
) -> Vec<Change> {
    let (o, n) = (&old.manifest, &new.manifest);
    let mut out = vec![];
    if o.format != n.format {
        out.push(Change::FormatChanged {
            old: o.format,
            new: n.format,
        });
    }
    if o.label != n.label {
        out.push(Change::LabelChanged {
            old: o.label.clone(),
            new: n.label.clone(),
        });
    }
    match (&o.parent, &n.parent) {
        (
            ParentInput::Layer {
                label: ol,
                digest: od,
            },
            ParentInput::Layer {
                label: nl,
                digest: nd,
            },
        ) if ol == nl && od != nd => {
            let causes = if depth > 64 {
                None
            } else {
                match (lookup.side(od), lookup.side(nd)) {
                    (Some(a), Some(b)) => Some(diff_depth(&a, &b, lookup, show_values, depth + 1)),
                    _ => None,
                }
            };
            out.push(Change::ParentChanged {
                label: nl.clone(),
                old_digest: od.clone(),
                new_digest: nd.clone(),
                causes,
            });
        }
        (a, b) if a != b => out.push(Change::ParentImageChanged {
            old: parent_name(a),
            new: parent_name(b),
        }),
        _ => {}
    }

    diff_definition(o, n, &mut out);

    let old_pk: BTreeSet<&String> = o.packages.iter().collect();
    let new_pk: BTreeSet<&String> = n.packages.iter().collect();
    for p in new_pk.difference(&old_pk) {
        out.push(Change::PackageAdded { name: (*p).clone() });
    }
    for p in old_pk.difference(&new_pk) {
        out.push(Change::PackageRemoved { name: (*p).clone() });
    }
    if old_pk == new_pk && o.packages != n.packages {
        out.push(Change::PackagesReordered);
    }

    diff_files(old, new, &mut out);
    diff_inventory_vars(old, new, show_values, &mut out);

    // Extra vars of the system (from the Layerfile).
    diff_values(
        &o.vars,
        &n.vars,
        new.system_vars.as_deref(),
        show_values,
        &mut out,
    );
    out
}

fn diff_definition(o: &Manifest, n: &Manifest, out: &mut Vec<Change>) {
    let (od, nd) = (&o.definition, &n.definition);
    for (step, a, b) in [
        ("setup", &od.setup, &nd.setup),
        ("run", &od.run, &nd.run),
        ("scripts", &od.scripts, &nd.scripts),
        ("tests", &od.tests, &nd.tests),
        ("boot_tests", &od.boot_tests, &nd.boot_tests),
    ] {
        if a != b {
            out.push(Change::CommandChanged {
                step: step.into(),
                old: a.clone(),
                new: b.clone(),
            });
        }
    }
    let a = serde_json::to_value(od).expect("definition serialises");
    let b = serde_json::to_value(nd).expect("definition serialises");
    if let (Some(a), Some(b)) = (a.as_object(), b.as_object()) {
        // The package command only counts while there are packages: its
        // appearing or vanishing is told by the package changes.
        let packages_emptied = o.packages.is_empty() || n.packages.is_empty();
        // A key either side has (one left out when empty is absent).
        let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
        for key in keys {
            if matches!(
                key.as_str(),
                "setup" | "run" | "scripts" | "tests" | "boot_tests"
            ) || (key == "package_command" && packages_emptied)
            {
                continue;
            }
            let av = a.get(key).cloned().unwrap_or(serde_json::Value::Null);
            let bv = b.get(key).cloned().unwrap_or(serde_json::Value::Null);
            if av != bv {
                out.push(Change::DefinitionChanged {
                    key: key.clone(),
                    old: av,
                    new: bv,
                });
            }
        }
    }
}

fn diff_files(old: &Side, new: &Side, out: &mut Vec<Change>) {
    let (o, n) = (&old.manifest.files, &new.manifest.files);
    let paths: BTreeSet<&String> = o.keys().chain(n.keys()).collect();
    for path in paths {
        match (o.get(path), n.get(path)) {
            (None, Some(f)) => out.push(Change::FileAdded {
                path: path.clone(),
                origin: f.origin.to_string(),
            }),
            (Some(f), None) => out.push(Change::FileRemoved {
                path: path.clone(),
                origin: f.origin.to_string(),
            }),
            (Some(a), Some(b)) => {
                if a.hash != b.hash && !encrypted_file(path, &old.vars, &new.vars, out) {
                    out.push(Change::FileModified {
                        path: path.clone(),
                        origin: b.origin.to_string(),
                    });
                }
                if a.mode != b.mode {
                    out.push(Change::FileModeChanged {
                        path: path.clone(),
                        origin: b.origin.to_string(),
                        old: a.mode.to_string(),
                        new: b.mode.to_string(),
                    });
                }
            }
            (None, None) => {}
        }
    }
}

/// A modified inventory file counted whole because it is ansible-vault
/// encrypted: say so, without naming (or knowing) its variables. Returns
/// false for any other file.
fn encrypted_file(path: &str, old: &VarSnapshot, new: &VarSnapshot, out: &mut Vec<Change>) -> bool {
    let enc = |s: &VarSnapshot| matches!(s.get(path), Some(FileVars::Encrypted));
    if enc(old) || enc(new) {
        out.push(Change::EncryptedFileModified { path: path.into() });
        return true;
    }
    false
}

/// The workspace path of a definition's file: relative to the inventory,
/// or `//PATH` for `group_vars/` and `host_vars/` beside the playbook.
fn inventory_path(side: &Side, file: &str) -> String {
    match file.strip_prefix("//") {
        Some(p) => p.to_string(),
        None => side
            .inventory
            .as_ref()
            .map_or(file.to_string(), |i| format!("{i}/{file}")),
    }
}

/// A variable's recorded value and vault flag, looked up in a side's snapshot.
/// Does `side`'s inventory define `name` in `file`?
fn defines(side: &Side, file: &str, name: &str) -> bool {
    matches!(side.vars.get(&inventory_path(side, file)),
        Some(FileVars::Vars { vars }) if vars.contains_key(name))
}

fn recorded(side: &Side, file: &str, name: &str) -> (Option<serde_json::Value>, bool) {
    let path = inventory_path(side, file);
    match side.vars.get(&path) {
        Some(FileVars::Vars { vars }) => vars
            .get(name)
            .map_or((None, false), |v| (v.value.clone(), v.vault)),
        _ => (None, false),
    }
}

/// The reason every inventory variable counts, from a manifest's notes.
pub fn fallback_reason(m: &Manifest) -> Option<String> {
    m.notes.iter().find_map(|n| {
        n.strip_prefix("all inventory variables count because ")
            .map(str::to_string)
    })
}

fn diff_inventory_vars(old: &Side, new: &Side, show_values: bool, out: &mut Vec<Change>) {
    let (a, b) = (&old.manifest.inventory_vars, &new.manifest.inventory_vars);
    let (fa, fb) = (
        fallback_reason(&old.manifest),
        fallback_reason(&new.manifest),
    );
    // When the analysis starts or stops counting everything, that is the
    // change: not one line per variable that came or went with it.
    let collapse = fa.is_some() != fb.is_some();
    if collapse {
        out.push(Change::VariableAnalysisChanged { old: fa, new: fb });
    }
    let names: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    let empty = BTreeMap::new();
    let display = |side: &Side, file: &str| inventory_path(side, file);
    for name in names {
        let (fa, fb) = (a.get(name).unwrap_or(&empty), b.get(name).unwrap_or(&empty));
        let files: BTreeSet<&String> = fa.keys().chain(fb.keys()).collect();
        for file in files {
            match (fa.get(file), fb.get(file)) {
                (None, Some(_)) | (Some(_), None) if collapse => {}
                (None, Some(_)) | (Some(_), None) => {
                    // Defined on one side only: that side's value.
                    let added = fa.get(file).is_none();
                    let side = if added { new } else { old };
                    let (v, vault) = recorded(side, file, name);
                    let still_defined = !added && defines(new, file, name);
                    let (name, file_shown) = (name.clone(), display(side, file));
                    let value = shown(&v, vault, show_values);
                    out.push(if added {
                        Change::VarAdded {
                            name,
                            file: file_shown,
                            value,
                            vault,
                        }
                    } else {
                        Change::VarRemoved {
                            name,
                            file: file_shown,
                            value,
                            vault,
                            still_defined,
                        }
                    });
                }
                (Some(x), Some(y)) if x != y => {
                    let (ov, ovault) = recorded(old, file, name);
                    let (nv, nvault) = recorded(new, file, name);
                    out.push(Change::VarChanged {
                        name: name.clone(),
                        file: display(new, file),
                        old: shown(&ov, ovault, show_values),
                        new: shown(&nv, nvault, show_values),
                        vault: ovault || nvault,
                    });
                }
                _ => {}
            }
        }
    }
}

fn shown(
    v: &Option<serde_json::Value>,
    vault: bool,
    show_values: bool,
) -> Option<serde_json::Value> {
    if show_values && !vault {
        v.clone()
    } else {
        None
    }
}

/// The system vars of two manifests; `defined`: every system var now,
/// used or not, when known.
fn diff_values(
    a: &BTreeMap<String, serde_json::Value>,
    b: &BTreeMap<String, serde_json::Value>,
    defined: Option<&BTreeSet<String>>,
    show_values: bool,
    out: &mut Vec<Change>,
) {
    let file = SYSTEM_VARS;
    // A secret's manifest value is a hash (`secret_vars`): never shown.
    let secret = crate::secrets::is_marker;
    let pick = |v: &serde_json::Value| (show_values && !secret(v)).then(|| v.clone());
    for (k, v) in b {
        match a.get(k) {
            None => out.push(Change::VarAdded {
                name: k.clone(),
                file: file.into(),
                value: pick(v),
                vault: secret(v),
            }),
            Some(old) if old != v => out.push(Change::VarChanged {
                name: k.clone(),
                file: file.into(),
                old: pick(old),
                new: pick(v),
                vault: secret(old) || secret(v),
            }),
            _ => {}
        }
    }
    for (k, v) in a {
        if !b.contains_key(k) {
            out.push(Change::VarRemoved {
                name: k.clone(),
                file: file.into(),
                value: pick(v),
                vault: secret(v),
                still_defined: defined.is_some_and(|d| d.contains(k)),
            });
        }
    }
}

fn origin_text(origin: &str, used_by: &str) -> String {
    match origin.strip_prefix("role:") {
        Some(role) => format!("role {role}, used by {used_by}"),
        None => format!("{origin} of {used_by}"),
    }
}

fn value_text(v: &Option<serde_json::Value>) -> String {
    v.as_ref().map(|v| v.to_string()).unwrap_or_default()
}

/// One change as one line (without indentation); `None` for a parent change,
/// which renders as a block.
pub fn describe(c: &Change, used_by: &str) -> Option<String> {
    Some(match c {
        Change::FormatChanged { old, new } => {
            format!("format version changed: {old} -> {new} (layerbuild was upgraded)")
        }
        Change::LabelChanged { old, new } => format!("label changed: {old} -> {new}"),
        Change::ParentChanged { .. } => return None,
        Change::ParentImageChanged { old, new } => format!("parent image changed: {old} -> {new}"),
        Change::FileAdded { path, origin } => {
            format!("{path} added ({})", origin_text(origin, used_by))
        }
        Change::FileRemoved { path, origin } => {
            format!("{path} removed ({})", origin_text(origin, used_by))
        }
        Change::FileModified { path, origin } => {
            format!("{path} modified ({})", origin_text(origin, used_by))
        }
        Change::FileModeChanged {
            path,
            origin,
            old,
            new,
        } => {
            format!(
                "{path} mode changed {old} -> {new} ({})",
                origin_text(origin, used_by)
            )
        }
        Change::PackageAdded { name } => format!("package added: {name}"),
        Change::PackageRemoved { name } => format!("package removed: {name}"),
        Change::PackagesReordered => "packages reordered".into(),
        Change::VarAdded { .. } | Change::VarRemoved { .. } | Change::VarChanged { .. } => {
            describe_var(c)?
        }
        Change::EncryptedFileModified { path } => {
            format!("{path} modified (ansible-vault encrypted: variables not shown)")
        }
        Change::CommandChanged { step, old, new } => describe_commands(step, old, new),
        Change::DefinitionChanged { key, old, new } => {
            format!("definition key {key} changed: {old} -> {new}")
        }
        Change::VariableAnalysisChanged {
            new: Some(reason), ..
        } => {
            format!("all inventory variables now count because {reason}")
        }
        Change::VariableAnalysisChanged {
            old: Some(reason),
            new: None,
        } => {
            format!("only the inventory variables the play uses count again (before: {reason})")
        }
        Change::VariableAnalysisChanged { .. } => "variable analysis changed".into(),
        Change::ImageMissing { image } => {
            format!("the image of the last build, {image}, is no longer in container storage")
        }
    })
}

/// A variable's change as one line.
fn describe_var(c: &Change) -> Option<String> {
    let (name, file, what, value, new, vault) = match c {
        Change::VarAdded {
            name,
            file,
            value,
            vault,
        } => (name, file, format!("added in {file}"), value, None, vault),
        Change::VarRemoved {
            name,
            file,
            value,
            vault,
            still_defined,
        } => {
            let what = if *still_defined {
                format!("no longer used by the play (still in {file})")
            } else {
                format!("removed from {file}")
            };
            (name, file, what, value, None, vault)
        }
        Change::VarChanged {
            name,
            file,
            old,
            new,
            vault,
        } => (
            name,
            file,
            format!("changed in {file}"),
            old,
            Some(new),
            vault,
        ),
        _ => return None,
    };
    Some(format!(
        "{} {name} {what}{}",
        var_kind(file),
        var_suffix(value, *vault, new)
    ))
}

/// A step's commands: those removed (`-`) and added (`+`), or reordered.
fn describe_commands(step: &str, old: &[String], new: &[String]) -> String {
    let mut s = format!("{step} commands changed:");
    for c in old.iter().filter(|c| !new.contains(c)) {
        s.push_str(&format!("\n  - {c}"));
    }
    for c in new.iter().filter(|c| !old.contains(c)) {
        s.push_str(&format!("\n  + {c}"));
    }
    if old.iter().all(|c| new.contains(c)) && new.iter().all(|c| old.contains(c)) {
        s.push_str(" (reordered)");
    }
    s
}

fn var_kind(file: &str) -> &'static str {
    if file == SYSTEM_VARS {
        "system var"
    } else {
        "inventory var"
    }
}

fn var_suffix(
    v: &Option<serde_json::Value>,
    vault: bool,
    new: Option<&Option<serde_json::Value>>,
) -> String {
    if vault {
        return " (ansible-vault value: never shown)".into();
    }
    match (v, new) {
        (Some(_), Some(n)) => format!(": {} -> {}", value_text(v), value_text(n)),
        (Some(_), None) => format!(": {}", value_text(v)),
        (None, Some(Some(_))) => format!(": -> {}", value_text(new.unwrap_or(&None))),
        _ => String::new(),
    }
}

/// Renders changes as indented lines, parents first, own inputs after.
pub fn render(changes: &[Change], used_by: &str, indent: usize) -> String {
    let pad = " ".repeat(indent);
    let mut s = String::new();
    let (parents, own): (Vec<&Change>, Vec<&Change>) = changes
        .iter()
        .partition(|c| matches!(c, Change::ParentChanged { .. }));
    for p in &parents {
        if let Change::ParentChanged {
            label,
            old_digest,
            new_digest,
            causes,
        } = p
        {
            match causes {
                Some(c) if !c.is_empty() => {
                    s.push_str(&format!("{pad}parent {label} changed:\n"));
                    s.push_str(&render(c, label, indent + 2));
                }
                _ => s.push_str(&format!(
                    "{pad}parent {label} changed: digest {} -> {} (the old parent's inputs were not recorded)\n",
                    old_digest.short(),
                    new_digest.short()
                )),
            }
        }
    }
    if !own.is_empty() {
        let inner = if parents.is_empty() {
            indent
        } else {
            s.push_str(&format!("{pad}own inputs:\n"));
            indent + 2
        };
        let ipad = " ".repeat(inner);
        for c in own {
            if let Some(line) = describe(c, used_by) {
                for (i, l) in line.lines().enumerate() {
                    let extra = if i == 0 { "" } else { "  " };
                    s.push_str(&format!("{ipad}{extra}{l}\n"));
                }
            }
        }
    }
    s
}

/// The first root cause as one line, with a count of the others.
pub fn one_line(changes: &[Change], used_by: &str) -> String {
    let mut leaves: Vec<String> = vec![];
    collect_leaves(changes, used_by, None, &mut leaves);
    match leaves.len() {
        0 => "inputs changed".into(),
        1 => leaves.remove(0),
        n => format!("{} (and {} more)", leaves[0], n - 1),
    }
}

/// Leaf changes as single lines; a leaf found in an ancestor says where.
fn collect_leaves(changes: &[Change], used_by: &str, via: Option<&str>, out: &mut Vec<String>) {
    for c in changes {
        match c {
            Change::ParentChanged { label, causes, .. } => match causes {
                Some(cs) if !cs.is_empty() => collect_leaves(cs, label, Some(label), out),
                _ => out.push(format!("parent {label} changed")),
            },
            other => {
                if let Some(d) = describe(other, used_by) {
                    let mut line = d
                        .lines()
                        .map(str::trim)
                        .collect::<Vec<_>>()
                        .join(" ")
                        .replace(": - ", ": -")
                        .replace(" + ", " +");
                    if let Some(v) = via
                        && !line.contains("used by")
                        && !line.contains(" of //")
                    {
                        line.push_str(&format!(" (in {v})"));
                    }
                    out.push(line);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_names_the_root_cause() {
        let c = vec![Change::ParentChanged {
            label: "//compute/compute".into(),
            old_digest: "a".repeat(64).into(),
            new_digest: "b".repeat(64).into(),
            causes: Some(vec![Change::FileModified {
                path: "roles/chrony/templates/chrony.conf.j2".into(),
                origin: "role:chrony".into(),
            }]),
        }];
        assert_eq!(
            one_line(&c, "//compute/slurm"),
            "roles/chrony/templates/chrony.conf.j2 modified (role chrony, used by //compute/compute)"
        );
    }

    /// A definition key serialised on one side only (left out when empty,
    /// as `boot` is for a layer without boot tests) is a change from or to
    /// null, not a key the diff passes over.
    #[test]
    fn a_definition_key_on_one_side_is_a_change() {
        let manifest = |boot: Option<&str>| Manifest {
            format: crate::fingerprint::FORMAT_VERSION,
            label: "//base/node".into(),
            parent: crate::fingerprint::ParentInput::Scratch,
            definition: crate::fingerprint::Definition {
                boot: boot.map(str::to_string),
                ..Default::default()
            },
            packages: vec![],
            files: Default::default(),
            vars: Default::default(),
            inventory_vars: Default::default(),
            inventory_groups: vec![],
            notes: vec![],
        };
        let (without, with) = (manifest(None), manifest(Some("runner=2 memory_mib=512")));
        let mut out = vec![];
        diff_definition(&without, &with, &mut out);
        assert_eq!(
            out,
            vec![Change::DefinitionChanged {
                key: "boot".into(),
                old: serde_json::Value::Null,
                new: "runner=2 memory_mib=512".into(),
            }]
        );
        let mut back = vec![];
        diff_definition(&with, &without, &mut back);
        assert_eq!(back.len(), 1, "{back:?}");
    }
}

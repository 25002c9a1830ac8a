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
use yaml_rust2::{Yaml, YamlLoader};

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
pub fn snapshot<'a>(root: &Path, files: impl Iterator<Item = &'a String>) -> VarSnapshot {
    let mut out = BTreeMap::new();
    for rel in files {
        let Ok(text) = std::fs::read_to_string(root.join(rel)) else {
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
        return match YamlLoader::load_from_str(text) {
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

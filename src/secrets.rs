//! Secret values: what must never be shown, logged or recorded.
//!
//! A system's `secret_vars` names variables (system vars or inventory
//! variables) whose values are secret, like ansible-vault values. Manifests
//! hold only a hash of a secret value (so changing it still rebuilds),
//! snapshots kept for `why --show-values` drop it, and the build log, the
//! progress lines and error messages have every known secret value replaced
//! by [`REDACTED`]. Values Ansible decrypts from vault files are not known to
//! layerbuild and cannot be redacted from Ansible's own output: keep them out
//! of task names and messages (`no_log: true`).
//!
//! Pure: no I/O.

use std::borrow::Cow;
use std::collections::BTreeSet;

use crate::fingerprint::inventory::{FileVars, VarSnapshot};

/// What a secret value is replaced with in logs and messages.
pub const REDACTED: &str = "[secret]";
/// The prefix of the manifest's stand-in for a secret value.
pub const MARKER: &str = "secret:blake3:";

/// Values shorter than this are not redacted from logs: replacing every
/// `1` or `on` would make logs unreadable without hiding anything.
const MIN_LEN: usize = 4;

/// Known secret values, longest first.
#[derive(Debug, Clone, Default)]
pub struct Secrets {
    values: Vec<String>,
}

impl Secrets {
    /// Collects the text of every leaf of `v` (strings, numbers).
    pub fn add(&mut self, v: &serde_json::Value) {
        match v {
            serde_json::Value::String(s) => self.push(s),
            serde_json::Value::Number(n) => self.push(&n.to_string()),
            serde_json::Value::Array(a) => a.iter().for_each(|x| self.add(x)),
            serde_json::Value::Object(o) => o.values().for_each(|x| self.add(x)),
            _ => {}
        }
        if !v.is_string() && !v.is_null() {
            self.push(&v.to_string());
        }
    }

    fn push(&mut self, s: &str) {
        for s in std::iter::once(s).chain(s.lines()) {
            let s = s.trim();
            if s.len() >= MIN_LEN && !self.values.iter().any(|v| v == s) {
                self.values.push(s.to_string());
            }
        }
        self.values
            .sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// `text` with every known secret value replaced by [`REDACTED`].
    pub fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        if !self.values.iter().any(|v| text.contains(v.as_str())) {
            return Cow::Borrowed(text);
        }
        let mut out = text.to_string();
        for v in &self.values {
            if out.contains(v.as_str()) {
                out = out.replace(v.as_str(), REDACTED);
            }
        }
        Cow::Owned(out)
    }
}

/// The manifest's stand-in for a secret value: a hash, so a change still
/// changes the digest, never the value.
pub fn marker(v: &serde_json::Value) -> serde_json::Value {
    let bytes = serde_json::to_vec(v).unwrap_or_default();
    serde_json::Value::String(format!("{MARKER}{}", blake3::hash(&bytes).to_hex()))
}

/// Is `v` a stand-in made by [`marker`]?
pub fn is_marker(v: &serde_json::Value) -> bool {
    v.as_str().is_some_and(|s| s.starts_with(MARKER))
}

/// Drops the values of the `names` from an inventory snapshot (they are
/// flagged as vault values are: never shown), collecting them into
/// `secrets` for redaction.
pub fn strip_snapshot(snapshot: &mut VarSnapshot, names: &BTreeSet<String>, secrets: &mut Secrets) {
    for file in snapshot.values_mut() {
        if let FileVars::Vars { vars } = file {
            for (name, v) in vars.iter_mut() {
                if names.contains(name) {
                    if let Some(value) = v.value.take() {
                        secrets.add(&value);
                    }
                    v.vault = true;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_every_leaf_longest_first() {
        let mut s = Secrets::default();
        s.add(&serde_json::json!({"k": "hunter22", "n": 123456, "l": ["hunter22xyz", "ab"]}));
        assert_eq!(
            s.redact("a hunter22xyz b hunter22 c 123456 ab"),
            "a [secret] b [secret] c [secret] ab"
        );
        assert!(matches!(s.redact("nothing here"), Cow::Borrowed(_)));
        let m = marker(&serde_json::json!("hunter22"));
        assert!(is_marker(&m) && !m.as_str().unwrap().contains("hunter22"));
        assert_ne!(m, marker(&serde_json::json!("hunter23")));
    }
}

//! Secret values: what must never be shown, logged or recorded.
//!
//! A system's `secret_vars` names variables (system vars or inventory
//! variables) whose values are secret, like ansible-vault values. Manifests
//! hold only a hash of a secret value (so changing it still rebuilds),
//! snapshots kept for `why --show-values` drop it, and the build log, the
//! progress lines and error messages have every known secret value replaced
//! by [`REDACTED`]. So is every line of a variables file that holds a
//! secret or that could not be parsed and names one (Ansible prints the
//! lines of a file it cannot parse). Values Ansible decrypts from vault
//! data are added by the executor before a play runs, which opens the
//! vault as Ansible does ([`crate::executor::vault`]).
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
        self.insert(s);
        self.sort();
    }

    /// `s` (and each of its lines) in every encoding output gives it,
    /// unsorted.
    fn insert(&mut self, s: &str) {
        for s in std::iter::once(s).chain(s.lines()) {
            let s = s.trim();
            if s.len() < MIN_LEN {
                continue;
            }
            // The value as output may carry it: Ansible prints results as
            // JSON, Python reprs and YAML; commands quote it for a shell;
            // URLs percent-encode it.
            for v in encodings(s) {
                if !self.values.contains(&v) {
                    self.values.push(v);
                }
            }
        }
    }

    /// Longest first, so a value is replaced before any part of it.
    fn sort(&mut self) {
        self.values
            .sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
    }

    /// Every line of a file that holds a secret, and each line's value
    /// (after `key:` or `key=`, unquoted). What Ansible prints of a file it
    /// cannot parse is its lines ("The offending line appears to be"), and
    /// a file layerbuild could not parse either cannot be searched for the
    /// secret's value alone.
    pub fn add_lines(&mut self, text: &str) {
        for line in text.lines() {
            let line = line.trim();
            // A whole line is kept only when it cannot be a common one.
            if line.len() >= 2 * MIN_LEN {
                self.insert(line);
            }
            if let Some((_, value)) = line.split_once(':').or_else(|| line.split_once('=')) {
                let value = value.trim();
                self.insert(value);
                self.insert(value.trim_matches(|c| c == '"' || c == '\''));
            }
        }
        self.sort();
    }

    /// Adds the values of `other`.
    pub fn extend(&mut self, other: &Secrets) {
        for v in &other.values {
            if !self.values.contains(v) {
                self.values.push(v.clone());
            }
        }
        self.sort();
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

/// `s` and every form it takes in output it is escaped for: inside a JSON
/// string (and YAML's double quotes), a Python repr, YAML's single quotes,
/// a shell word and a URL (percent-encoded, `+` or `%20` for a space).
fn encodings(s: &str) -> Vec<String> {
    let json = serde_json::to_string(s).unwrap_or_default();
    let json_inner = json
        .strip_prefix('"')
        .and_then(|j| j.strip_suffix('"'))
        .unwrap_or(&json)
        .to_string();
    // JSON with non-ASCII characters escaped too (Python's json.dumps).
    let json_ascii: String = json_inner
        .chars()
        .map(|c| {
            if c.is_ascii() {
                c.to_string()
            } else {
                let mut buf = [0u16; 2];
                c.encode_utf16(&mut buf)
                    .iter()
                    .map(|u| format!("\\u{u:04x}"))
                    .collect()
            }
        })
        .collect();
    let python = s.replace('\\', "\\\\").replace('\'', "\\'");
    let yaml_single = s.replace('\'', "''");
    let shell = shell_words::quote(s).into_owned();
    let url_upper = percent(s, "%20", false);
    let mut out = vec![
        s.to_string(),
        json_inner,
        json_ascii,
        python,
        yaml_single,
        shell,
        url_upper.clone(),
        percent(s, "+", false),
        percent(s, "%20", true),
    ];
    out.sort();
    out.dedup();
    out
}

/// `s` percent-encoded (everything but RFC 3986's unreserved characters),
/// a space as `space`, hex digits in lower case if `lower`.
fn percent(s: &str, space: &str, lower: bool) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push_str(space),
            _ if lower => out.push_str(&format!("%{b:02x}")),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
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

    #[test]
    fn a_file_holding_a_secret_is_redacted_line_by_line() {
        let mut s = Secrets::default();
        s.add_lines("a: 1\napi_secret: \"planted-broken-7777\nport=planted-ini-42\n");
        assert_eq!(
            s.redact("api_secret: \"planted-broken-7777\n^ here"),
            "[secret]\n^ here"
        );
        assert_eq!(s.redact("value planted-broken-7777."), "value [secret].");
        assert_eq!(s.redact("x planted-ini-42"), "x [secret]");
        // Short lines are left alone (`a: 1` would hide every `1`).
        assert_eq!(s.redact("a: 1"), "a: 1");
    }

    #[test]
    fn redacts_the_value_in_every_encoding_output_gives_it() {
        let secret = r#"pa"ss\wo'rd é&x y"#;
        let mut s = Secrets::default();
        s.add(&serde_json::json!(secret));
        let json = serde_json::to_string(secret).unwrap();
        let forms = [
            secret.to_string(),
            json[1..json.len() - 1].to_string(),
            r#"pa\"ss\\wo'rd \u00e9&x y"#.to_string(),
            r#"pa"ss\\wo\'rd é&x y"#.to_string(),
            r#"pa"ss\wo''rd é&x y"#.to_string(),
            shell_words::quote(secret).into_owned(),
            "pa%22ss%5Cwo%27rd%20%C3%A9%26x%20y".to_string(),
            "pa%22ss%5Cwo%27rd+%C3%A9%26x+y".to_string(),
            "pa%22ss%5cwo%27rd%20%c3%a9%26x%20y".to_string(),
        ];
        for f in forms {
            let text = format!("msg: <{f}>");
            assert_eq!(s.redact(&text), "msg: <[secret]>", "{f}");
        }
    }
}

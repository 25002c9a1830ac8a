//! Which controller files a piece of Jinja reads: file-reading lookups
//! (`lookup('file', ...)`, `template`, `fileglob`, `first_found`, `csvfile`,
//! `ini`, `unvault`, with `query`/`q` too) and template statements
//! (`{% include %}`, `{% import %}`, `{% extends %}`, `{% from %}`).
//!
//! Literal arguments are returned as names for the caller to resolve with
//! Ansible's search path; an argument the analysis cannot read (a variable,
//! a concatenation) is reported so the caller can count the whole source
//! (over-approximate, never under).
//!
//! Pure: no I/O.

use std::sync::LazyLock;

use regex::Regex;

/// Lookups that read files on the machine running the play.
const FILE_LOOKUPS: &str = "file|template|fileglob|first_found|csvfile|ini|unvault|tomlfile";

static LOOKUP: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(&format!(
        r#"\b(?:lookup|query|q)\s*\(\s*['"](?:ansible\.builtin\.|ansible\.legacy\.)?({FILE_LOOKUPS})['"]\s*(?:,([^)]*))?\)"#
    ))
    .expect("valid regex")
});
/// A lookup call of a file lookup the regex above could not delimit.
static LOOKUP_START: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(&format!(
        r#"\b(?:lookup|query|q)\s*\(\s*['"](?:ansible\.builtin\.|ansible\.legacy\.)?({FILE_LOOKUPS})['"]"#
    ))
    .expect("valid regex")
});
static STATEMENT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\{%[-+]?\s*(include|import|extends|from)\s+(.*?)\s*[-+]?%\}").expect("valid regex")
});
static QUOTED: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r#"'([^']*)'|"([^"]*)""#).expect("valid regex"));
static KEYWORD: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\b[A-Za-z_][A-Za-z0-9_]*\s*=").expect("valid regex"));
/// Words allowed after a template statement's name (`import 'x' as y`,
/// `from 'x' import a, b`, `include 'x' ignore missing with context`).
static STATEMENT_WORDS: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\b(as|import|ignore|missing|with|without|context|[A-Za-z_][A-Za-z0-9_]*)\b")
        .expect("valid regex")
});

/// What a piece of Jinja reads.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reads {
    /// Literal names (files, directories or globs) to resolve.
    pub names: Vec<String>,
    /// The first read whose name the analysis cannot know, as written.
    pub unresolved: Option<String>,
}

static ANCHORED: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"\b(playbook_dir|role_path)\s*[+~]\s*(?:'([^']*)'|"([^"]*)")"#)
        .expect("valid regex")
});

/// The literals of `args` and whether anything else is left in it.
/// `playbook_dir + '/x'` and `role_path ~ '/x'` give `@playbook_dir/x`
/// and `@role_path/x`.
fn literals(args: &str) -> (Vec<String>, bool) {
    let mut names = vec![];
    for c in ANCHORED.captures_iter(args) {
        let lit = c.get(2).or_else(|| c.get(3)).map_or("", |m| m.as_str());
        names.push(format!("@{}/{}", &c[1], lit.trim_start_matches('/')));
    }
    let args = ANCHORED.replace_all(args, "");
    let args = args.as_ref();
    for c in QUOTED.captures_iter(args) {
        let lit = c.get(1).or_else(|| c.get(2)).map_or("", |m| m.as_str());
        names.push(lit.to_string());
    }
    let rest = QUOTED.replace_all(args, "");
    let rest = KEYWORD.replace_all(&rest, "");
    let left = rest
        .chars()
        .any(|c| !(c.is_whitespace() || matches!(c, ',' | '[' | ']')));
    (names, left)
}

/// The files `src` (Jinja source: a template or one YAML string) reads.
pub fn jinja_reads(src: &str) -> Reads {
    let mut out = Reads::default();
    if !(src.contains("lookup")
        || src.contains("query")
        || src.contains("q(")
        || src.contains("{%"))
    {
        return out;
    }
    let mut delimited = 0;
    for c in LOOKUP.captures_iter(src) {
        delimited += 1;
        let args = c.get(2).map_or("", |m| m.as_str());
        let (names, left) = literals(args);
        if (left || names.is_empty()) && out.unresolved.is_none() {
            out.unresolved = Some(c[0].to_string());
        }
        out.names.extend(names);
    }
    if LOOKUP_START.find_iter(src).count() > delimited && out.unresolved.is_none() {
        out.unresolved = LOOKUP_START.find(src).map(|m| m.as_str().to_string());
    }
    for c in STATEMENT.captures_iter(src) {
        let arg = &c[2];
        let (names, _) = literals(arg);
        let rest = QUOTED.replace_all(arg, "");
        let rest = STATEMENT_WORDS.replace_all(&rest, "");
        let left = rest
            .chars()
            .any(|c| !(c.is_whitespace() || matches!(c, ',' | '[' | ']')));
        // `{% import 'x' as y %}` leaves words: only a leading literal is a name.
        let leading = arg.trim_start().starts_with(['\'', '"', '[']);
        if (!leading || names.is_empty() || left) && out.unresolved.is_none() {
            out.unresolved = Some(c[0].to_string());
        }
        out.names.extend(names);
    }
    out
}

/// The part of a path before its first glob character, cut at the last `/`
/// (`files/*.conf` -> `files`); `None` for a name without glob characters.
pub fn glob_dir(name: &str) -> Option<String> {
    let i = name.find(['*', '?', '['])?;
    Some(
        name[..i]
            .rsplit_once('/')
            .map_or(String::new(), |(d, _)| d.to_string()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_lookups_are_names() {
        let r = jinja_reads(
            "{{ lookup('file', 'motd') }} {{ q('ansible.builtin.fileglob', 'conf/*.j2') }}",
        );
        assert_eq!(r.names, vec!["motd", "conf/*.j2"]);
        assert!(r.unresolved.is_none());
        let r =
            jinja_reads("{{ lookup('first_found', files=['a.yml', 'b.yml'], paths=['vars']) }}");
        assert_eq!(r.names, vec!["a.yml", "b.yml", "vars"]);
        assert!(r.unresolved.is_none());
    }

    #[test]
    fn variable_arguments_are_unresolved() {
        for s in [
            "{{ lookup('file', motd_path) }}",
            "{{ lookup('template', 'x/' ~ name) }}",
            "{{ lookup('file', 'a' + (b)) }}",
            "{% include tpl %}",
            "{% extends base ~ '.j2' %}",
        ] {
            assert!(jinja_reads(s).unresolved.is_some(), "{s}");
        }
        // Lookups that read no controller file are not reads.
        assert_eq!(jinja_reads("{{ lookup('env', 'HOME') }}"), Reads::default());
    }

    #[test]
    fn template_statements_with_literals_are_names() {
        let r = jinja_reads(
            "{% include 'header.j2' %}{% import \"m.j2\" as m %}{% from 'f.j2' import a, b %}",
        );
        assert_eq!(r.names, vec!["header.j2", "m.j2", "f.j2"]);
        assert!(r.unresolved.is_none(), "{r:?}");
    }

    #[test]
    fn paths_from_the_playbook_or_role_directory() {
        let r = jinja_reads(
            "{{ lookup('file', playbook_dir + '/../keys/a.pub') }}{{ lookup('file', role_path ~ '/files/b') }}",
        );
        assert_eq!(
            r.names,
            vec!["@playbook_dir/../keys/a.pub", "@role_path/files/b"]
        );
        assert!(r.unresolved.is_none(), "{r:?}");
    }

    #[test]
    fn glob_dirs() {
        assert_eq!(glob_dir("files/*.conf").as_deref(), Some("files"));
        assert_eq!(glob_dir("*.conf").as_deref(), Some(""));
        assert_eq!(glob_dir("files/a.conf"), None);
    }
}

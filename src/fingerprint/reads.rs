//! Which controller files a piece of Jinja reads: file-reading lookups
//! (`lookup('file', ...)`, `template`, `fileglob`, `first_found`, `csvfile`,
//! `ini`, `unvault`, `tomlfile`, `filetree`, `password`, with `query`/`q`
//! too) and template statements (`{% include %}`, `{% import %}`,
//! `{% extends %}`, `{% from %}`). Any other lookup not known to be pure
//! (`pipe`, `lines`, a collection's plugin, a plugin named by a variable)
//! may read anything: an unresolved read.
//!
//! Literal arguments are returned as names for the caller to resolve with
//! Ansible's search path; an argument the analysis cannot read (a variable,
//! a concatenation) is reported so the caller can count the whole source
//! (over-approximate, never under).
//!
//! Pure: no I/O.

use std::sync::LazyLock;

use regex::Regex;

/// Lookups that read files on the machine running the play, by the names
/// their arguments give.
const FILE_LOOKUPS: &[&str] = &[
    "file",
    "template",
    "fileglob",
    "first_found",
    "csvfile",
    "ini",
    "unvault",
    "tomlfile",
    "filetree",
    "password",
];
/// Lookups known to read no controller file (their values come from the
/// play's own variables or arguments; `env` reads the environment, not a
/// file). Every other lookup may read anything (`pipe`, `lines`, a
/// collection's plugin...): an unresolved read.
const PURE_LOOKUPS: &[&str] = &[
    "env",
    "vars",
    "varnames",
    "items",
    "list",
    "dict",
    "indexed_items",
    "nested",
    "sequence",
    "subelements",
    "together",
    "random_choice",
    "flattened",
    "inventory_hostnames",
    "config",
    "cartesian",
];

/// A lookup's name without `ansible.builtin.`, `ansible.legacy.` and (for
/// the plugins that moved there) `community.general.`.
pub fn lookup_name(name: &str) -> &str {
    let n = name
        .strip_prefix("ansible.builtin.")
        .or_else(|| name.strip_prefix("ansible.legacy."))
        .unwrap_or(name);
    match n.strip_prefix("community.general.") {
        Some(m @ ("filetree" | "cartesian" | "flattened" | "random_choice")) => m,
        _ => n,
    }
}

/// Whether the lookup `name` reads controller files by the names its
/// arguments give (`file`, `fileglob`...).
pub fn is_file_lookup(name: &str) -> bool {
    FILE_LOOKUPS.contains(&lookup_name(name))
}

/// Whether the lookup `name` reads no controller file at all.
pub fn is_pure_lookup(name: &str) -> bool {
    PURE_LOOKUPS.contains(&lookup_name(name))
}

static LOOKUP: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"\b(?:lookup|query|q)\s*\(\s*['"]([A-Za-z0-9_.]+)['"]\s*(?:,([^)]*))?\)"#)
        .expect("valid regex")
});
/// A lookup call, delimited or not.
static LOOKUP_START: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"\b(?:lookup|query|q)\s*\(\s*['"]([A-Za-z0-9_.]+)['"]"#).expect("valid regex")
});
/// A lookup whose plugin is named by an expression (`lookup(kind, ...)`).
static LOOKUP_DYNAMIC: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"(?:^|[^.\w])(?:lookup|query|q)\s*\(\s*[^'"\s)]"#).expect("valid regex")
});
/// Any use of the lookup functions' names in Jinja (a call, or the
/// function taken as a value: `{% set rd = lookup %}`).
/// The lookup functions' names as words: every lookup pattern above
/// matches only where this does.
static LOOKUP_NAME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\b(lookup|query|q)\b").expect("valid regex"));
static LOOKUP_WORD: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?:^|[^.\w])(lookup|query|q)\b").expect("valid regex"));
/// What follows a lookup function's name in a call with a literal plugin name.
static LITERAL_CALL: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r#"^\s*\(\s*['"]"#).expect("valid regex"));
/// Jinja expressions and statements of a template.
static JINJA: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?s)\{\{.*?\}\}|\{%.*?%\}").expect("valid regex"));
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
        // `var ~ '/admin.pub'`: the end of a name, not a name.
        let before = args[..c.get(0).map_or(0, |m| m.start())].trim_end();
        if before.ends_with(['~', '+']) {
            continue;
        }
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
    if LOOKUP_NAME.is_match(src) {
        lookup_reads(src, &mut out);
    }
    if src.contains("{%") {
        statement_reads(src, &mut out);
    }
    out
}

/// What the lookup functions of `src` read.
fn lookup_reads(src: &str, out: &mut Reads) {
    let mut delimited: std::collections::BTreeMap<usize, regex::Captures> = Default::default();
    for c in LOOKUP.captures_iter(src) {
        delimited.insert(c.get(0).map_or(0, |m| m.start()), c);
    }
    for start in LOOKUP_START.captures_iter(src) {
        let whole = start.get(0).map_or("", |m| m.as_str());
        let at = start.get(0).map_or(0, |m| m.start());
        let name = &start[1];
        if is_pure_lookup(name) {
            continue;
        }
        if !is_file_lookup(name) {
            // It may read any file (`pipe`, `lines`, a collection's plugin).
            if out.unresolved.is_none() {
                out.unresolved = Some(whole.to_string());
            }
            continue;
        }
        let Some(c) = delimited.get(&at) else {
            // A file lookup the analysis could not delimit.
            if out.unresolved.is_none() {
                out.unresolved = Some(whole.to_string());
            }
            continue;
        };
        let args = c.get(2).map_or("", |m| m.as_str());
        let (mut names, left) = literals(args);
        if lookup_name(name) == "password" {
            // `password` reads the file its first word names, if it exists.
            names = names
                .iter()
                .filter_map(|n| n.split_whitespace().next().map(str::to_string))
                .filter(|n| n != "/dev/null")
                .collect();
            if names.is_empty() && !left {
                continue;
            }
        }
        if (left || names.is_empty()) && out.unresolved.is_none() {
            out.unresolved = Some(c[0].to_string());
        }
        out.names.extend(names);
    }
    if out.unresolved.is_none() {
        'blocks: for m in JINJA.find_iter(src) {
            if let Some(d) = LOOKUP_DYNAMIC.find(m.as_str()) {
                out.unresolved = Some(d.as_str().trim_start().to_string());
                break;
            }
            // A lookup function used other than as a call with a literal
            // plugin name (`q (...)` is one; `{% set rd = lookup %}` is
            // not): what it reads cannot be known.
            for w in LOOKUP_WORD.captures_iter(m.as_str()) {
                let Some(name) = w.get(1) else { continue };
                if !LITERAL_CALL.is_match(&m.as_str()[name.end()..]) {
                    out.unresolved = Some(name.as_str().to_string());
                    break 'blocks;
                }
            }
        }
    }
}

/// What the `include`, `import`, `extends` and `from` statements of `src` read.
fn statement_reads(src: &str, out: &mut Reads) {
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
        // A list must hold literals only: `['a.j2', part]` also includes
        // the file the variable part names.
        let quoted = QUOTED.replace_all(arg, "");
        let left = left
            || quoted.trim_start().strip_prefix('[').is_some_and(|l| {
                l.split_once(']').is_none_or(|(items, _)| {
                    items.chars().any(|c| !(c.is_whitespace() || c == ','))
                })
            });
        if (!leading || names.is_empty() || left) && out.unresolved.is_none() {
            out.unresolved = Some(c[0].to_string());
        }
        out.names.extend(names);
    }
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
            "{% include ['absent.j2', part] %}",
            "{% from ['a.j2', lib ] import m %}",
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
        let r = jinja_reads("{% include ['a.j2', \"b.j2\"] ignore missing %}");
        assert_eq!(r.names, vec!["a.j2", "b.j2"]);
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
    fn lookups_that_may_read_anything_are_unresolved() {
        for s in [
            "{{ lookup('pipe', 'cat files/motd') }}",
            "{{ query('lines', 'cat x') }}",
            "{{ lookup('community.general.passwordstore', 'a') }}",
            "{{ lookup(kind, 'x') }}",
        ] {
            assert!(jinja_reads(s).unresolved.is_some(), "{s}");
        }
        for s in [
            "{{ lookup('env', 'HOME') }}",
            "{{ query('ansible.builtin.items', [1, 2]) }}",
            "{{ lookup('dict', d) }} {{ q('sequence', 'start=1 end=3') }}",
            "{{ lookup('community.general.cartesian', a, b) }}",
            "dns lookup (x) {{ y }}",
        ] {
            assert_eq!(jinja_reads(s), Reads::default(), "{s}");
        }
    }

    #[test]
    fn password_reads_its_file_and_concatenations_are_not_names() {
        let r = jinja_reads("{{ lookup('password', 'credentials/db length=20') }}");
        assert_eq!(r.names, vec!["credentials/db"]);
        assert!(r.unresolved.is_none());
        assert_eq!(
            jinja_reads("{{ lookup('password', '/dev/null length=15') }}"),
            Reads::default()
        );
        let r = jinja_reads("{{ lookup('file', keys ~ '/admin.pub') }}");
        assert!(r.names.is_empty(), "{r:?}");
        assert!(r.unresolved.is_some());
    }

    #[test]
    fn glob_dirs() {
        assert_eq!(glob_dir("files/*.conf").as_deref(), Some("files"));
        assert_eq!(glob_dir("*.conf").as_deref(), Some(""));
        assert_eq!(glob_dir("files/a.conf"), None);
    }
}

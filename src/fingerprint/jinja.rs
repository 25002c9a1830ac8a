//! The variables a Jinja source reads, from one parse.
//!
//! minijinja's `Template::undeclared_variables` compiles the template and
//! then parses it a second time; a template is analysed once per cold
//! fingerprint, and templates are half the files of a large workspace, so
//! the analysis parses once (`minijinja::machinery::parse`, the parser
//! `template_from_str` runs) and walks the tree here. The walk follows
//! minijinja 3.1's own (`compiler/meta.rs`, non-nested mode): a name is
//! undeclared when it is read before any `set`, loop target, macro
//! argument or import in scope binds it. Where that walk misses a read
//! Jinja makes (a `set`'s or `with`'s value read before its target is
//! bound, a slice's value, the expressions of `filter`, `autoescape`,
//! `include`, `import`, `extends` and `from`) this one counts it: the
//! names found are a superset of minijinja's.
//!
//! Pure: no I/O.

use std::collections::{BTreeSet, HashSet};

use minijinja::machinery::ast;

/// The names `src` may read: [`scan`]'s superset when it can read the
/// source, else [`undeclared`]'s exact set (or why there is none).
pub fn names(src: &str) -> Result<BTreeSet<String>, Declined> {
    match scan(src) {
        Some(names) => Ok(names),
        None => undeclared(src),
    }
}

/// Every name `src` may read, from its tokens alone: each identifier in a
/// `{{ }}` or `{% %}` tag but a statement's keyword, an attribute (after
/// `.`), a filter (after `|`), a test (after `is` or `is not`), a keyword
/// argument or an assignment target (before a lone `=`), and the words
/// Jinja reserves in expressions (`and`, `if`, `true`...). Names the
/// template binds itself (loop targets, `set`, macro arguments) count
/// too: a superset of [`undeclared`]'s, a tenth of its cost (no tree).
/// `None` for anything it does not read plainly (an unterminated tag,
/// comment, string or `raw` block, unbalanced brackets, a non-ASCII
/// character in a tag): the caller then parses.
pub fn scan(src: &str) -> Option<BTreeSet<String>> {
    let b = src.as_bytes();
    let mut out: BTreeSet<String> = BTreeSet::new();
    let mut i = 0;
    while let Some(k) = src[i..].find('{') {
        i += k;
        let Some(&kind) = b.get(i + 1) else { break };
        match kind {
            b'{' | b'%' => {}
            b'#' => {
                i += find(&b[i + 2..], b"#}")? + 4;
                continue;
            }
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
        if matches!(b.get(i), Some(b'-' | b'+')) {
            i += 1;
        }
        let close = if kind == b'{' { b'}' } else { b'%' };
        let (end, raw) = tag(b, i, close, kind == b'%', &mut out)?;
        i = end;
        if raw {
            // To the end of `{% endraw %}`: what lies between is text.
            let rest = &src[i..];
            let at = ENDRAW.find(rest)?;
            i += at.end();
        }
    }
    Some(out)
}

static ENDRAW: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
    regex::Regex::new(r"\{%[-+]?\s*endraw\s*[-+]?%\}").expect("valid regex")
});

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Words Jinja reserves in expressions: never a variable read.
const RESERVED: &[&str] = &[
    "and", "or", "not", "in", "is", "if", "else", "true", "false", "none", "True", "False", "None",
];

/// Scans one tag's inside from `i` to its closer (`}}` or `%}` at
/// bracket depth 0, after an optional `-`/`+`), adding its names to `out`.
/// Returns the offset after the closer and whether the tag opens a `raw`
/// block.
fn tag(
    b: &[u8],
    mut i: usize,
    close: u8,
    statement: bool,
    out: &mut BTreeSet<String>,
) -> Option<(usize, bool)> {
    let mut depth: usize = 0;
    // What the previous token makes of an identifier.
    #[derive(PartialEq)]
    enum Prev {
        Other,
        Dot,
        Pipe,
        Is,
        IsNot,
    }
    let mut prev = Prev::Other;
    let mut first = statement;
    loop {
        let c = *b.get(i)?;
        if !c.is_ascii() {
            return None;
        }
        if depth == 0 {
            let at = if matches!(c, b'-' | b'+') { i + 1 } else { i };
            if b.get(at) == Some(&close) && b.get(at + 1) == Some(&b'}') {
                return Some((at + 2, false));
            }
        }
        match c {
            b' ' | b'\t' | b'\n' | b'\r' => i += 1,
            b'\'' | b'"' => {
                i += 1;
                loop {
                    match *b.get(i)? {
                        b'\\' => i += 2,
                        q if q == c => break,
                        _ => i += 1,
                    }
                }
                i += 1;
                prev = Prev::Other;
                first = false;
            }
            b'0'..=b'9' => {
                while b
                    .get(i)
                    .is_some_and(|d| d.is_ascii_alphanumeric() || *d == b'_' || *d == b'.')
                {
                    i += 1;
                }
                prev = Prev::Other;
                first = false;
            }
            b'a'..=b'z' | b'A'..=b'Z' | b'_' => {
                let start = i;
                while b
                    .get(i)
                    .is_some_and(|d| d.is_ascii_alphanumeric() || *d == b'_')
                {
                    i += 1;
                }
                let word = std::str::from_utf8(&b[start..i]).ok()?;
                let mut j = i;
                while matches!(b.get(j), Some(b' ' | b'\t' | b'\n' | b'\r')) {
                    j += 1;
                }
                let assigned = b.get(j) == Some(&b'=') && b.get(j + 1) != Some(&b'=');
                if first {
                    first = false;
                    if word == "raw" {
                        // `{% raw %}`, `{%- raw -%}`: nothing else in it.
                        let at = j + usize::from(matches!(b.get(j), Some(b'-' | b'+')));
                        return (b.get(at) == Some(&close) && b.get(at + 1) == Some(&b'}'))
                            .then_some((at + 2, true));
                    }
                    prev = Prev::Other;
                    continue;
                }
                let next = match (&prev, word) {
                    (Prev::Is, "not") => Prev::IsNot,
                    (_, "is") if prev != Prev::Dot && prev != Prev::Pipe => Prev::Is,
                    _ => Prev::Other,
                };
                let read = matches!(prev, Prev::Other) && !assigned && !RESERVED.contains(&word);
                if read {
                    out.insert(word.to_string());
                }
                prev = next;
            }
            b'.' => {
                i += 1;
                prev = Prev::Dot;
            }
            b'|' => {
                i += 1;
                prev = Prev::Pipe;
            }
            b'(' | b'[' | b'{' => {
                depth += 1;
                i += 1;
                prev = Prev::Other;
                first = false;
            }
            b')' | b']' | b'}' => {
                depth = depth.checked_sub(1)?;
                i += 1;
                prev = Prev::Other;
            }
            _ => {
                i += 1;
                prev = Prev::Other;
                first = false;
            }
        }
    }
}

/// The names `src` reads that it does not bind itself, or the parse error
/// (Jinja the analysis cannot read: the caller then counts every variable).
pub fn undeclared(src: &str) -> Result<BTreeSet<String>, Declined> {
    if let Some(at) = too_nested(src) {
        return Err(Declined::TooNested(at));
    }
    let tree = minijinja::machinery::parse(src, "<analysis>", Default::default())
        .map_err(Declined::Parse)?;
    let mut t = Tracker {
        out: BTreeSet::new(),
        assigned: vec![HashSet::new()],
    };
    t.stmt(&tree);
    Ok(t.out.into_iter().map(str::to_string).collect())
}

/// Why a source was not analysed: the caller then counts every variable.
#[derive(Debug)]
pub enum Declined {
    /// An expression nested deeper than the analysis follows, at this
    /// byte offset of the source.
    TooNested(usize),
    /// Jinja minijinja cannot parse.
    Parse(minijinja::Error),
}

/// Operators one expression may hold before the analysis declines it:
/// the parser and this walk recurse once per operator (`a.b.c`, `x|f|g`,
/// `- - x`), and a few thousand overflow a thread's stack. Real templates
/// hold a few dozen; the caller counts every variable for such a source.
const MAX_OPERATORS: usize = 1000;

/// The offset of the first `{{ }}` or `{% %}` of `src` that holds more
/// than [`MAX_OPERATORS`] operators outside its string literals.
fn too_nested(src: &str) -> Option<usize> {
    let b = src.as_bytes();
    let mut i = 0;
    while i + 1 < b.len() {
        // The next `{` (a fast search: most of a template is text).
        match src[i..].find('{') {
            Some(k) => i += k,
            None => return None,
        }
        if i + 1 >= b.len() {
            return None;
        }
        let close = match b[i + 1] {
            b'{' => b'}',
            b'%' => b'%',
            _ => {
                i += 1;
                continue;
            }
        };
        let start = i;
        i += 2;
        let mut ops = 0;
        let mut quote = None;
        while i < b.len() {
            let c = b[i];
            match quote {
                Some(q) if c == q => quote = None,
                Some(_) => {}
                None if c == b'\'' || c == b'"' => quote = Some(c),
                None if c == close && b.get(i + 1) == Some(&b'}') => break,
                None if b".|-+~*/%([!<>=".contains(&c) => ops += 1,
                // `not` as a word.
                None if c == b'n'
                    && b[i..].starts_with(b"not")
                    && !b
                        .get(i + 3)
                        .is_some_and(|&d| d.is_ascii_alphanumeric() || d == b'_')
                    && !(i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_')) =>
                {
                    ops += 1
                }
                None => {}
            }
            if ops > MAX_OPERATORS {
                return Some(start);
            }
            i += 1;
        }
    }
    None
}

struct Tracker<'a> {
    out: BTreeSet<&'a str>,
    /// Names bound in each enclosing scope.
    assigned: Vec<HashSet<&'a str>>,
}

impl<'a> Tracker<'a> {
    fn is_assigned(&self, name: &str) -> bool {
        self.assigned.iter().any(|s| s.contains(name))
    }

    fn assign(&mut self, name: &'a str) {
        if let Some(s) = self.assigned.last_mut() {
            s.insert(name);
        }
    }

    fn scoped(&mut self, f: impl FnOnce(&mut Self)) {
        self.assigned.push(HashSet::new());
        f(self);
        self.assigned.pop();
    }

    fn body(&mut self, body: &[ast::Stmt<'a>]) {
        body.iter().for_each(|s| self.stmt(s));
    }

    fn opt(&mut self, e: &Option<ast::Expr<'a>>) {
        if let Some(e) = e {
            self.expr(e);
        }
    }

    fn args(&mut self, args: &[ast::CallArg<'a>]) {
        for a in args {
            match a {
                ast::CallArg::Pos(e)
                | ast::CallArg::Kwarg(_, e)
                | ast::CallArg::PosSplat(e)
                | ast::CallArg::KwargSplat(e) => self.expr(e),
            }
        }
    }

    fn target(&mut self, e: &ast::Expr<'a>) {
        match e {
            ast::Expr::Var(v) => self.assign(v.id),
            ast::Expr::List(l) => l.items.iter().for_each(|x| self.target(x)),
            ast::Expr::Tuple(t) => t.items.iter().for_each(|x| self.target(x)),
            _ => {}
        }
    }

    fn macro_decl(&mut self, m: &ast::Macro<'a>) {
        // `caller` is bound in a macro body (as minijinja assumes).
        self.assign("caller");
        m.args.iter().for_each(|a| self.target(a));
        m.defaults.iter().for_each(|d| self.expr(d));
        self.body(&m.body);
    }

    fn expr(&mut self, e: &ast::Expr<'a>) {
        match e {
            ast::Expr::Var(v) => {
                if !self.is_assigned(v.id) {
                    self.out.insert(v.id);
                    // Found once is enough.
                    self.assign(v.id);
                }
            }
            ast::Expr::Const(_) => {}
            ast::Expr::UnaryOp(x) => self.expr(&x.expr),
            ast::Expr::BinOp(x) => {
                self.expr(&x.left);
                self.expr(&x.right);
            }
            ast::Expr::Compare(x) => {
                self.expr(&x.expr);
                x.ops.iter().for_each(|op| self.expr(&op.expr));
            }
            ast::Expr::IfExpr(x) => {
                self.expr(&x.test_expr);
                self.expr(&x.true_expr);
                self.opt(&x.false_expr);
            }
            ast::Expr::Filter(x) => {
                self.opt(&x.expr);
                self.args(&x.args);
            }
            ast::Expr::Test(x) => {
                self.expr(&x.expr);
                self.args(&x.args);
            }
            ast::Expr::GetAttr(x) => self.expr(&x.expr),
            ast::Expr::GetItem(x) => {
                self.expr(&x.expr);
                self.expr(&x.subscript_expr);
            }
            ast::Expr::Slice(x) => {
                self.expr(&x.expr);
                self.opt(&x.start);
                self.opt(&x.stop);
                self.opt(&x.step);
            }
            ast::Expr::Call(x) => {
                self.expr(&x.expr);
                self.args(&x.args);
            }
            ast::Expr::List(x) => x.items.iter().for_each(|i| self.expr(i)),
            ast::Expr::Tuple(x) => x.items.iter().for_each(|i| self.expr(i)),
            ast::Expr::Map(x) => {
                for (k, v) in x.keys.iter().zip(x.values.iter()) {
                    self.expr(k);
                    self.expr(v);
                }
            }
        }
    }

    fn stmt(&mut self, s: &ast::Stmt<'a>) {
        match s {
            ast::Stmt::Template(t) => {
                self.assign("self");
                self.body(&t.children);
            }
            ast::Stmt::EmitExpr(x) => self.expr(&x.expr),
            ast::Stmt::EmitRaw(_) => {}
            ast::Stmt::ForLoop(x) => {
                self.scoped(|t| {
                    // The iterable is evaluated outside the loop: a `loop`
                    // there is not the loop's own.
                    t.expr(&x.iter);
                    t.assign("loop");
                    t.target(&x.target);
                    t.opt(&x.filter_expr);
                    t.body(&x.body);
                });
                self.scoped(|t| t.body(&x.else_body));
            }
            ast::Stmt::IfCond(x) => {
                self.expr(&x.expr);
                self.scoped(|t| t.body(&x.true_body));
                self.scoped(|t| t.body(&x.false_body));
            }
            // Jinja evaluates a `with`'s values in the enclosing scope, and
            // a `set`'s value before binding its target: `{% set x = x |
            // default(1) %}` and `{% with x = x %}` read the variable x
            // (minijinja's own walk binds first and misses it).
            ast::Stmt::WithBlock(x) => {
                for (_, e) in &x.assignments {
                    self.expr(e);
                }
                self.scoped(|t| {
                    for (target, _) in &x.assignments {
                        t.target(target);
                    }
                    t.body(&x.body);
                });
            }
            ast::Stmt::Set(x) => {
                self.expr(&x.expr);
                self.target(&x.target);
            }
            ast::Stmt::SetBlock(x) => {
                self.scoped(|t| {
                    t.opt(&x.filter);
                    t.body(&x.body);
                });
                self.target(&x.target);
            }
            // The block's expressions are read too (minijinja's walk skips
            // them): `{% autoescape flag %}`, `{% filter replace('a', x) %}`.
            ast::Stmt::AutoEscape(x) => {
                self.expr(&x.enabled);
                self.scoped(|t| t.body(&x.body));
            }
            ast::Stmt::FilterBlock(x) => {
                self.expr(&x.filter);
                self.scoped(|t| t.body(&x.body));
            }
            ast::Stmt::Block(x) => self.scoped(|t| {
                t.assign("super");
                t.body(&x.body);
            }),
            // The template's name is an expression (`{% include ['a.j2',
            // part] %}` reads part).
            ast::Stmt::Extends(x) => self.expr(&x.name),
            ast::Stmt::Include(x) => self.expr(&x.name),
            ast::Stmt::Import(x) => {
                self.expr(&x.expr);
                self.target(&x.name);
            }
            ast::Stmt::FromImport(x) => {
                self.expr(&x.expr);
                for (name, alias) in &x.names {
                    self.target(alias.as_ref().unwrap_or(name));
                }
            }
            ast::Stmt::Macro(x) => {
                self.assign(x.name);
                self.scoped(|t| t.macro_decl(x));
            }
            ast::Stmt::CallBlock(x) => {
                self.expr(&x.call.expr);
                self.args(&x.call.args);
                self.scoped(|t| t.macro_decl(&x.macro_decl));
            }
            ast::Stmt::Do(x) => {
                self.expr(&x.call.expr);
                self.args(&x.call.args);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names minijinja's own analysis finds, for comparison.
    fn minijinja_names(src: &str) -> BTreeSet<String> {
        let env = minijinja::Environment::new();
        env.template_from_str(src)
            .unwrap()
            .undeclared_variables(false)
            .into_iter()
            .collect()
    }

    #[test]
    fn same_names_as_minijinja() {
        for src in [
            "{{ a }} {{ b.c }} {{ d['e'] }} {{ f | default(g) }} {{ h is defined }}",
            "{% for x in xs if x > lim %}{{ x }}{{ loop.index }}{% else %}{{ x }}{% endfor %}{{ x }}",
            "{% set y = z %}{{ y }}{% if c %}{% set w = 1 %}{{ w }}{% endif %}{{ w }}",
            "{% macro m(a, b=dflt) %}{{ a }}{{ b }}{{ caller() }}{{ other }}{% endmacro %}{{ m(1) }}",
            "{% call(u) m(arg) %}{{ u }}{{ v }}{% endcall %}",
            "{% with p = q %}{{ p }}{{ r }}{% endwith %}{{ p }}",
            "{% set blk %}{{ inner }}{% endset %}{{ blk }}",
            "{% import 'x.j2' as lib %}{% from 'y.j2' import k as kk, j %}{{ lib.f() }}{{ kk }}{{ j }}",
            "{% block b %}{{ super() }}{{ s }}{% endblock %}{% filter upper %}{{ t }}{% endfilter %}",
            "{% autoescape true %}{{ ae }}{% endautoescape %}{{ {kk2: vv} }}",
            "{{ -neg }} {{ a1 + a2 }} {{ a3 if a4 else a5 }} {{ [li, (tu, tu2)] }} {{ fn(*ps, **kw, kwa=kv) }}",
            "{% do xs.append(elem) %}{% include 'inc.j2' %}{% extends 'ext.j2' %}",
            "{% for k, v in d | dictsort %}{{ k }}={{ v }}{% endfor %}",
        ] {
            assert_eq!(undeclared(src).unwrap(), minijinja_names(src), "{src}");
        }
    }

    #[test]
    fn a_sliced_variable_is_read() {
        // minijinja 3.1's own walk leaves out the value a slice is taken of.
        let names = undeclared("{{ l[1:n:st] }}").unwrap();
        assert_eq!(names, ["l", "n", "st"].map(String::from).into());
        assert!(names.is_superset(&minijinja_names("{{ l[1:n:st] }}")));
    }

    /// Names Jinja reads that minijinja 3.1's own walk leaves out.
    #[test]
    fn reads_minijinja_misses() {
        for (src, want) in [
            ("{% set x = x | default(1) %}{{ x }}", &["x"][..]),
            (
                "{% for i in l %}{% set x = x ~ i %}{% endfor %}",
                &["l", "x"][..],
            ),
            (
                "{% with x = x, y = x %}{{ x }}{{ y }}{% endwith %}",
                &["x"][..],
            ),
            ("{% filter replace('a', r) %}a{% endfilter %}", &["r"][..]),
            (
                "{% autoescape flag %}{{ v }}{% endautoescape %}",
                &["flag", "v"][..],
            ),
            (
                "{% set b | replace('a', r) %}a{% endset %}{{ b }}",
                &["r"][..],
            ),
            ("{% include ['a.j2', part] %}", &["part"][..]),
            (
                "{% extends base %}{% import lib as l %}{% from f import m %}",
                &["base", "f", "lib"][..],
            ),
            (
                "{% for x in loop %}{{ loop.index }}{% endfor %}",
                &["loop"][..],
            ),
        ] {
            let names = undeclared(src).unwrap();
            assert_eq!(names, want.iter().map(|s| s.to_string()).collect(), "{src}");
            assert!(names.is_superset(&minijinja_names(src)), "{src}");
        }
    }

    #[test]
    fn deep_expressions_are_declined_not_overflowed() {
        for src in [
            format!("{{{{ a{} }}}}", ".a".repeat(100_000)),
            format!("{{{{ a{} }}}}", "|lower".repeat(50_000)),
            format!("{{{{ {}a }}}}", "-".repeat(100_000)),
            format!("{{% if {}a %}}x{{% endif %}}", "not ".repeat(20_000)),
        ] {
            assert!(undeclared(&src).is_err());
        }
        // Many operators inside string literals, or spread over many
        // expressions, are no reason to decline.
        let list = format!("{{% set s = ['{}'] %}}{{{{ s }}}}", "a.b|c-".repeat(2000));
        assert!(undeclared(&list).is_ok());
        let many = "{{ a.b | default(c.d) }}\n".repeat(2000);
        assert_eq!(
            undeclared(&many).unwrap(),
            ["a", "c"].map(String::from).into()
        );
    }

    /// Every source of the tests above, and the shapes of real templates.
    const SOURCES: &[&str] = &[
        "{{ a }} {{ b.c }} {{ d['e'] }} {{ f | default(g) }} {{ h is defined }}",
        "{% for x in xs if x > lim %}{{ x }}{{ loop.index }}{% else %}{{ x }}{% endfor %}{{ x }}",
        "{% set y = z %}{{ y }}{% if c %}{% set w = 1 %}{{ w }}{% endif %}{{ w }}",
        "{% macro m(a, b=dflt) %}{{ a }}{{ b }}{{ caller() }}{{ other }}{% endmacro %}{{ m(1) }}",
        "{% call(u) m(arg) %}{{ u }}{{ v }}{% endcall %}",
        "{% with p = q %}{{ p }}{{ r }}{% endwith %}{{ p }}",
        "{% set blk %}{{ inner }}{% endset %}{{ blk }}",
        "{% import 'x.j2' as lib %}{% from 'y.j2' import k as kk, j %}{{ lib.f() }}{{ kk }}{{ j }}",
        "{% block b %}{{ super() }}{{ s }}{% endblock %}{% filter upper %}{{ t }}{% endfilter %}",
        "{% autoescape true %}{{ ae }}{% endautoescape %}{{ {kk2: vv} }}",
        "{{ -neg }} {{ a1 + a2 }} {{ a3 if a4 else a5 }} {{ [li, (tu, tu2)] }} {{ fn(*ps, **kw, kwa=kv) }}",
        "{% do xs.append(elem) %}{% include 'inc.j2' %}{% extends 'ext.j2' %}",
        "{% for k, v in d | dictsort %}{{ k }}={{ v }}{% endfor %}",
        "{{ l[1:n:st] }}",
        "{% set x = x | default(1) %}{{ x }}",
        "{% for i in l %}{% set x = x ~ i %}{% endfor %}",
        "{% with x = x, y = x %}{{ x }}{{ y }}{% endwith %}",
        "{% filter replace('a', r) %}a{% endfilter %}",
        "{% autoescape flag %}{{ v }}{% endautoescape %}",
        "{% set b | replace('a', r) %}a{% endset %}{{ b }}",
        "{% include ['a.j2', part] %}",
        "{% extends base %}{% import lib as l %}{% from f import m %}",
        "{% for x in loop %}{{ loop.index }}{% endfor %}",
        "{{ x is not sameas y }}{{ z is divisibleby n }}{{ a not in b }}{{ c == d and e != f }}",
        "{{ '}}' ~ q1 }}{{ \"%}\" ~ q2 }}{# {{ commented }} #}{{ {'k': {'n': q3}} }}",
        "{%- if w1 -%}{{- w2 -}}{%+ endif +%}{{ x.y.z | map(attribute='a') | list }}",
        "{% raw %}{{ not_read }}{% endraw %}{{ after_raw }}{%- raw -%}{{ nor }}{%- endraw -%}",
        "# {{ ansible_managed | default('m') }}\nport = {{ p_port | int + 34 }}\n{% for s in ntp %}{{ s }} # {{ loop.index }}\n{% endfor %}",
        "{{ lookup('file', path ~ '.txt') }}{{ hostvars[inventory_hostname].x }}{{ ns.v }}{% set ns.v = 1 %}",
        "{{ 1.5 + 0x1F + 1e3 + 1_000 }}{{ x[0].y }}{{ range(n) }}",
    ];

    #[test]
    fn the_scan_reads_at_least_what_the_parse_does() {
        for src in SOURCES {
            let scanned = scan(src).unwrap_or_else(|| panic!("declined: {src}"));
            let parsed = undeclared(src).unwrap();
            assert!(
                scanned.is_superset(&parsed),
                "{src}: scan {scanned:?} misses {:?}",
                parsed.difference(&scanned).collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn the_scan_leaves_out_attributes_filters_tests_and_keywords() {
        let names = scan(
            "{{ a.b | default(c) }}{{ d is defined }}{{ e is not none }}{{ f(k=g) }}{% set h = i %}{% if j and not l %}{% endif %}{{ true or False }}",
        )
        .unwrap();
        assert_eq!(
            names,
            ["a", "c", "d", "e", "f", "g", "i", "j", "l"]
                .map(String::from)
                .into()
        );
        // Text outside tags, comments and raw blocks are not read.
        assert_eq!(
            scan("x {{ y }} {# z #} {% raw %}{{ w }}{% endraw %} v").unwrap(),
            ["y"].map(String::from).into()
        );
    }

    #[test]
    fn the_scan_declines_what_it_does_not_read_plainly() {
        for src in [
            "{{ a",
            "{{ 'a }}",
            "{# a",
            "{% raw %}{{ a }}",
            "{{ a) }}",
            "{{ größe }}",
            "{% raw x %}{% endraw %}",
        ] {
            assert!(scan(src).is_none(), "{src}");
        }
        // Deep expressions are read without recursion.
        let deep = format!("{{{{ a{} }}}}", ".a".repeat(100_000));
        assert_eq!(scan(&deep).unwrap(), ["a"].map(String::from).into());
        assert!(names(&format!("{{{{ {}a }}}}", "-".repeat(100_000))).is_ok());
    }

    #[test]
    fn parse_errors_are_errors() {
        assert!(undeclared("{{ a").is_err());
        assert!(undeclared("{% for %}").is_err());
    }
}

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

/// The names `src` reads that it does not bind itself, from its tokens
/// alone: the walk of [`undeclared`] (the same statements, scopes and
/// bindings) over each tag's tokens instead of a tree. In an expression,
/// each identifier is read but an attribute (after `.`), a filter (after
/// `|`), a test (after `is` or `is not`), a keyword argument (before a
/// lone `=`), the constants (`true`, `none`...) and the operator words
/// where Jinja's parser reads them as operators (`a and b`, but `{{ if }}`
/// reads a variable: [`classify`]). A block sees only the top level's
/// names, as Jinja renders it from the context. A filter named by
/// `{% filter %}` counts too, so the names are a superset
/// of [`undeclared`]'s, at a tenth of its cost, without recursion. `None`
/// for anything it does not read plainly (an unterminated tag, comment,
/// string or `raw` block, unbalanced brackets or blocks, a statement it
/// does not know, a non-ASCII character in a tag): the caller then parses.
pub fn scan(src: &str) -> Option<BTreeSet<String>> {
    let (out, special) = walk(src, true)?;
    // A template that assigns `self`, `super`, `caller` or `loop` may read
    // it from the context where Jinja would otherwise bind it (`{% set
    // self = self %}`, `{% macro m(loop) %}` in a loop: Jinja binds these
    // only where they are read before any assignment): read again with
    // none of them bound but by the template's own assignments.
    let out = if special { walk(src, false)?.0 } else { out };
    Some(out.into_iter().map(str::to_string).collect())
}

/// The names a scan finds, and whether the template assigns one of the
/// names Jinja binds itself ([`SPECIAL`]). `implicit`: those are bound
/// where Jinja binds them (`loop` in a loop...).
fn walk(src: &str, implicit: bool) -> Option<(BTreeSet<&str>, bool)> {
    let b = src.as_bytes();
    let mut walk = Walk {
        out: BTreeSet::new(),
        scopes: vec![],
        pending: vec![],
        implicit,
        special: false,
    };
    walk.push(Opened::Top, walk.implicit("self"));
    let mut toks: Vec<Tok> = Vec::new();
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
        toks.clear();
        i = tokens(src, i, if kind == b'{' { b'}' } else { b'%' }, &mut toks)?;
        if kind == b'{' {
            walk.expr(&toks);
            continue;
        }
        if let [Tok::Ident("raw")] = toks[..] {
            // To the end of `{% endraw %}`: what lies between is text.
            i += ENDRAW.find(&src[i..])?.end();
            continue;
        }
        walk.stmt(&toks)?;
    }
    (walk.scopes.len() == 1).then_some((walk.out, walk.special))
}

/// The names Jinja binds itself: `self` in a template, `super` in a block,
/// `caller` in a macro or call block, `loop` in a loop.
const SPECIAL: &[&str] = &["self", "super", "caller", "loop"];

static ENDRAW: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
    regex::Regex::new(r"\{%[-+]?\s*endraw\s*[-+]?%\}").expect("valid regex")
});

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Words Jinja reserves in expressions: never bound by an assignment.
const RESERVED: &[&str] = &[
    "and", "or", "not", "in", "is", "if", "else", "true", "false", "none", "True", "False", "None",
];

/// Words Jinja's parser reads as operators where no operand is expected
/// (`a and b`, `a if b else c`, `a not in b`, `a is b`); where one is, a
/// variable (`{{ if }}`, `{{ f(else) }}`), but `not` (`not a`).
const OPERATORS: &[&str] = &["and", "or", "not", "in", "is", "if", "else"];

/// Names Jinja reads as constants.
const CONSTANTS: &[&str] = &["true", "false", "none", "True", "False", "None"];

/// What a token of an expression is to [`classify`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// A variable read.
    Read,
    /// An operator word (`and`, `if`, `not`...).
    Operator,
    /// Anything else: an attribute, filter or test name, a keyword
    /// argument's name, a constant, a literal, punctuation.
    Other,
}

/// Calls `f(index, role, depth, operand)` for each token of an expression
/// as Jinja's parser reads it: `depth`, the brackets open after the token;
/// `operand`, whether an operand was expected where it stands. After `.`,
/// `|`, `is` or `is not` comes a name (dotted for a test); the word after
/// a test's name without brackets is its argument (`x is sameas y`,
/// `x is sameas if`) unless it is `and`, `or` or `else`; a name before a
/// lone `=` is a keyword argument. `named`: the first word names a filter.
// Over 100 lines: one state machine over the tokens, whose eight flags
// every arm reads and sets; split into functions, each would take them all
// and the order of the arms (which decides the roles) would be hidden.
fn classify(toks: &[Tok], named: bool, mut f: impl FnMut(usize, Role, usize, bool)) {
    let mut named = named;
    // The name expected is a test's; a `not` was seen after its `is`.
    let mut testing = false;
    let mut negated = false;
    // The previous token ended a test's name; it was a `not` operator.
    let mut after_test = false;
    let mut after_not = false;
    let mut operand = !named;
    // Where an operand is expected, whether it is a whole expression, where
    // `not` negates (`not a`, `(not a)`, `a and not b`); after `+`, `==`,
    // `in`, unary `-` or a test's name, Jinja reads a primary only: `not`
    // names a variable there (`a + not`).
    let mut full = true;
    let mut depth = 0usize;
    for (i, t) in toks.iter().enumerate() {
        let test_arg = std::mem::take(&mut after_test);
        let not_in = std::mem::take(&mut after_not);
        if test_arg && !matches!(t, Tok::Ident("and" | "or" | "else")) {
            operand = true;
            full = false;
        }
        let at = operand;
        let role = match *t {
            Tok::Ident("not") if named && testing && !negated => {
                negated = true;
                Role::Other
            }
            Tok::Ident(_) if named => {
                named = false;
                after_test = testing;
                testing = false;
                operand = false;
                Role::Other
            }
            Tok::Ident("in") if not_in => {
                operand = true;
                full = false;
                Role::Operator
            }
            Tok::Ident(w) if !operand && OPERATORS.contains(&w) => {
                match w {
                    "is" => {
                        named = true;
                        testing = true;
                        negated = false;
                    }
                    "not" => after_not = true,
                    _ => {}
                }
                operand = true;
                full = w != "in";
                Role::Operator
            }
            // `not x`: still an operand to come.
            Tok::Ident("not") if full => Role::Operator,
            Tok::Ident(w) => {
                operand = false;
                if toks.get(i + 1) == Some(&Tok::Assign) || CONSTANTS.contains(&w) {
                    Role::Other
                } else {
                    Role::Read
                }
            }
            Tok::Dot | Tok::Pipe => {
                named = true;
                // `x is ansible.builtin.match`: still the test's name.
                testing = test_arg && *t == Tok::Dot;
                negated = true;
                Role::Other
            }
            Tok::Lit => {
                operand = false;
                Role::Other
            }
            Tok::Close => {
                depth = depth.saturating_sub(1);
                operand = false;
                Role::Other
            }
            Tok::Open => {
                depth += 1;
                operand = true;
                full = true;
                Role::Other
            }
            Tok::Comma | Tok::Assign => {
                operand = true;
                full = true;
                Role::Other
            }
            Tok::Other(c) => {
                // A dict's or slice's `:`, and the `*` or `**` of a call's
                // argument (`f(*a)`), start whole expressions; the others
                // (`a * b`, `-a`, `a == b`) a primary.
                full = c == b':' || (c == b'*' && operand && full);
                operand = true;
                Role::Other
            }
        };
        f(i, role, depth, at);
    }
}

/// The first word of `words` that Jinja's parser reads as a keyword in
/// `toks` (outside brackets, where no operand is expected): the `in` of
/// `{% for in in xs %}` is the second.
fn keyword_at(toks: &[Tok], words: &[&str]) -> Option<usize> {
    let mut found = None;
    classify(toks, false, |i, role, depth, operand| {
        if found.is_none()
            && depth == 0
            && role != Role::Other
            && !operand
            && matches!(toks[i], Tok::Ident(w) if words.contains(&w))
        {
            found = Some(i);
        }
    });
    found
}

/// A token of a tag: what the walk needs of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok<'a> {
    Ident(&'a str),
    /// A lone `=` (not `==`, `!=`, `<=`, `>=`).
    Assign,
    Dot,
    Pipe,
    Comma,
    Open,
    Close,
    /// A string or number literal.
    Lit,
    /// Any other operator, by its first character.
    Other(u8),
}

/// The tokens of one tag from `i` (after its opener) to its closer (`}}`
/// or `%}` at bracket depth 0, after an optional `-`/`+`); returns the
/// offset after the closer.
fn tokens<'a>(src: &'a str, mut i: usize, close: u8, out: &mut Vec<Tok<'a>>) -> Option<usize> {
    let b = src.as_bytes();
    let mut depth: usize = 0;
    loop {
        let c = *b.get(i)?;
        if !c.is_ascii() {
            return None;
        }
        if depth == 0 {
            let at = if matches!(c, b'-' | b'+') { i + 1 } else { i };
            if b.get(at) == Some(&close) && b.get(at + 1) == Some(&b'}') {
                return Some(at + 2);
            }
        }
        let tok = match c {
            b' ' | b'\t' | b'\n' | b'\r' | b'\x0b' | b'\x0c' => {
                i += 1;
                continue;
            }
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
                Tok::Lit
            }
            b'0'..=b'9' => {
                while b
                    .get(i)
                    .is_some_and(|d| d.is_ascii_alphanumeric() || *d == b'_' || *d == b'.')
                {
                    i += 1;
                }
                Tok::Lit
            }
            b'a'..=b'z' | b'A'..=b'Z' | b'_' => {
                let start = i;
                while b
                    .get(i)
                    .is_some_and(|d| d.is_ascii_alphanumeric() || *d == b'_')
                {
                    i += 1;
                }
                Tok::Ident(&src[start..i])
            }
            b'=' | b'!' | b'<' | b'>' => {
                i += 1;
                if b.get(i) == Some(&b'=') {
                    i += 1;
                    Tok::Other(c)
                } else if c == b'=' {
                    Tok::Assign
                } else {
                    Tok::Other(c)
                }
            }
            b'.' => {
                i += 1;
                Tok::Dot
            }
            b'|' => {
                i += 1;
                Tok::Pipe
            }
            b',' => {
                i += 1;
                Tok::Comma
            }
            b'(' | b'[' | b'{' => {
                depth += 1;
                i += 1;
                Tok::Open
            }
            b')' | b']' | b'}' => {
                depth = depth.checked_sub(1)?;
                i += 1;
                Tok::Close
            }
            _ => {
                i += 1;
                Tok::Other(c)
            }
        };
        out.push(tok);
    }
}

/// The block a scope belongs to (end tags must match).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Opened {
    Top,
    For,
    ForElse,
    If,
    SetBlock,
    With,
    Macro,
    Call,
    /// A block: what it reads comes from the context, where only the
    /// template's top-level names are set.
    Block,
    Filter,
    AutoEscape,
}

/// [`Tracker`] over tokens.
struct Walk<'a> {
    out: BTreeSet<&'a str>,
    /// Open blocks and the names each binds.
    scopes: Vec<(Opened, Vec<&'a str>)>,
    /// The targets of the open `{% set x %}` blocks, bound when each ends.
    pending: Vec<&'a str>,
    /// Whether [`SPECIAL`] names are bound where Jinja binds them.
    implicit: bool,
    /// Whether the template assigns a [`SPECIAL`] name.
    special: bool,
}

/// The first position of `tok` in `toks` outside brackets.
fn at_depth0(toks: &[Tok], pred: impl Fn(&Tok) -> bool) -> Option<usize> {
    let mut depth = 0usize;
    for (i, t) in toks.iter().enumerate() {
        match t {
            Tok::Open => depth += 1,
            Tok::Close => depth = depth.saturating_sub(1),
            t if depth == 0 && pred(t) => return Some(i),
            _ => {}
        }
    }
    None
}

/// The names of an assignment target (`x`, `a, b`, `(a, b)`); `None` for
/// anything else (`ns.attr`: nothing is bound, and the caller reads it).
fn target_names<'a>(toks: &[Tok<'a>]) -> Option<Vec<&'a str>> {
    let mut names = vec![];
    for t in toks {
        match t {
            Tok::Ident(n) if !RESERVED.contains(n) => names.push(*n),
            Tok::Comma | Tok::Open | Tok::Close => {}
            _ => return None,
        }
    }
    Some(names)
}

impl<'a> Walk<'a> {
    fn bound(&self, name: &str) -> bool {
        // Jinja renders a block as a function of the context alone (unless
        // `scoped`): the names bound by the loops, `with`s, macros and
        // blocks around it are not seen there; the top level's are.
        let seen = self
            .scopes
            .iter()
            .rposition(|(b, _)| *b == Opened::Block)
            .unwrap_or(0);
        self.scopes[seen..]
            .iter()
            .chain(&self.scopes[..1])
            .any(|(_, s)| s.contains(&name))
    }

    /// `name` where Jinja binds it itself, if [`Walk::implicit`].
    fn implicit(&self, name: &'a str) -> Vec<&'a str> {
        if self.implicit { vec![name] } else { vec![] }
    }

    /// Names the template assigns (`set`, `with`, a loop's targets...).
    fn assign(&mut self, names: Vec<&'a str>) -> Vec<&'a str> {
        self.special |= names.iter().any(|n| SPECIAL.contains(n));
        names
    }

    fn bind(&mut self, names: impl IntoIterator<Item = &'a str>) {
        if let Some((_, s)) = self.scopes.last_mut() {
            s.extend(names);
        }
    }

    fn push(&mut self, block: Opened, names: Vec<&'a str>) {
        self.scopes.push((block, names));
    }

    /// Closes the innermost block if it is one of `blocks`.
    fn pop(&mut self, blocks: &[Opened]) -> Option<()> {
        match self.scopes.last() {
            Some((b, _)) if self.scopes.len() > 1 && blocks.contains(b) => {
                self.scopes.pop();
                Some(())
            }
            _ => None,
        }
    }

    /// The names an expression reads.
    fn expr(&mut self, toks: &[Tok<'a>]) {
        self.expr_after(toks, false)
    }

    /// [`Walk::expr`]; `named`: the first identifier names a filter.
    fn expr_after(&mut self, toks: &[Tok<'a>], named: bool) {
        classify(toks, named, |i, role, _, _| {
            if let (Role::Read, Tok::Ident(w)) = (role, toks[i])
                && !self.bound(w)
            {
                self.out.insert(w);
                // Found once is enough.
                self.bind([w]);
            }
        });
    }

    /// One `{% %}` statement.
    fn stmt(&mut self, toks: &[Tok<'a>]) -> Option<()> {
        let Some(Tok::Ident(kw)) = toks.first() else {
            return None;
        };
        let rest = &toks[1..];
        match *kw {
            "for" => self.for_loop(rest)?,
            "else" => {
                if self.pop(&[Opened::For]).is_some() {
                    self.push(Opened::ForElse, vec![]);
                } else {
                    self.pop(&[Opened::If])?;
                    self.push(Opened::If, vec![]);
                }
            }
            "endfor" => self.pop(&[Opened::For, Opened::ForElse])?,
            "if" => {
                self.expr(rest);
                self.push(Opened::If, vec![]);
            }
            "elif" => {
                self.pop(&[Opened::If])?;
                self.expr(rest);
                self.push(Opened::If, vec![]);
            }
            "endif" => self.pop(&[Opened::If])?,
            "set" => self.set(rest)?,
            "endset" => {
                self.pop(&[Opened::SetBlock])?;
                let name = self.pending.pop()?;
                let name = self.assign(vec![name]);
                self.bind(name);
            }
            "with" => self.with(rest)?,
            "endwith" => self.pop(&[Opened::With])?,
            "macro" => {
                let [Tok::Ident(name), Tok::Open, args @ .., Tok::Close] = rest else {
                    return None;
                };
                let name = self.assign(vec![*name]);
                self.bind(name);
                self.push(Opened::Macro, vec![]);
                self.macro_args(args)?;
            }
            "endmacro" => self.pop(&[Opened::Macro])?,
            "call" => {
                let (args, call) = match rest {
                    [Tok::Open, ..] => {
                        let close = matching(rest)?;
                        (&rest[1..close], &rest[close + 1..])
                    }
                    _ => (&rest[..0], rest),
                };
                self.expr(call);
                self.push(Opened::Call, vec![]);
                self.macro_args(args)?;
            }
            "endcall" => self.pop(&[Opened::Call])?,
            "block" => {
                // A `scoped` block sees the names around it: taken as not
                // (more names), as the parse does.
                let ([Tok::Ident(_)]
                | [Tok::Ident(_), Tok::Ident("scoped" | "required")]
                | [Tok::Ident(_), Tok::Ident("scoped"), Tok::Ident("required")]) = rest
                else {
                    return None;
                };
                self.push(Opened::Block, self.implicit("super"));
            }
            "endblock" => self.pop(&[Opened::Block])?,
            "filter" => {
                // A filter's name, then its arguments: `replace('a', r)`.
                self.expr_after(rest, true);
                self.push(Opened::Filter, vec![]);
            }
            "endfilter" => self.pop(&[Opened::Filter])?,
            "autoescape" => {
                self.expr(rest);
                self.push(Opened::AutoEscape, vec![]);
            }
            "endautoescape" => self.pop(&[Opened::AutoEscape])?,
            "include" | "extends" | "do" => self.expr(rest),
            "break" | "continue" => {}
            "import" => {
                let as_ = keyword_at(rest, &["as"])?;
                self.expr(&rest[..as_]);
                let Some(Tok::Ident(name)) = rest.get(as_ + 1) else {
                    return None;
                };
                let name = self.assign(vec![*name]);
                self.bind(name);
            }
            "from" => self.import_from(rest)?,
            _ => return None,
        }
        Some(())
    }

    /// `{% for TARGETS in ITERABLE [if FILTER] [recursive] %}`.
    fn for_loop(&mut self, rest: &[Tok<'a>]) -> Option<()> {
        let inn = keyword_at(rest, &["in"])?;
        let targets = target_names(&rest[..inn])?;
        let after = &rest[inn + 1..];
        let stop = keyword_at(after, &["if", "recursive"]).unwrap_or(after.len());
        // The iterable is read outside the loop.
        self.expr(&after[..stop]);
        let targets = self.assign(targets);
        self.push(Opened::For, targets);
        // The filter (`if ...`), read with the targets bound but
        // not `loop`: Jinja reads a `loop` there from the context.
        if let [Tok::Ident("if"), filter @ ..] = &after[stop..] {
            let filter = match keyword_at(filter, &["recursive"]) {
                Some(r) if r + 1 == filter.len() => &filter[..r],
                _ => filter,
            };
            self.expr(filter);
        }
        self.bind(self.implicit("loop"));
        Some(())
    }

    /// `{% set TARGETS = VALUE %}`, or a set block `{% set NAME [| FILTERS] %}`.
    fn set(&mut self, rest: &[Tok<'a>]) -> Option<()> {
        match at_depth0(rest, |t| *t == Tok::Assign) {
            Some(eq) => {
                self.expr(&rest[eq + 1..]);
                match target_names(&rest[..eq]) {
                    Some(names) => {
                        let names = self.assign(names);
                        self.bind(names);
                    }
                    // `ns.attr = v` reads ns, binds nothing.
                    None => self.expr(&rest[..eq]),
                }
            }
            None => {
                // One name (`{% set ns.a %}` binds nothing, reads ns;
                // `{% set a, b %}` binds both): else the parse reads it.
                let ([Tok::Ident(name)] | [Tok::Ident(name), Tok::Pipe, ..]) = rest else {
                    return None;
                };
                let filters = &rest[1..];
                self.push(Opened::SetBlock, vec![]);
                self.expr(filters);
                // Bound when the block ends (a read inside is the
                // outer one's).
                self.pending.push(name);
            }
        }
        Some(())
    }

    /// `{% with NAME = VALUE, ... %}`.
    fn with(&mut self, rest: &[Tok<'a>]) -> Option<()> {
        let mut bound = vec![];
        for part in rest.split(|t| *t == Tok::Comma) {
            match part {
                [Tok::Ident(n), Tok::Assign, value @ ..] => {
                    self.expr(value);
                    bound.push(*n);
                }
                _ => return None,
            }
        }
        let bound = self.assign(bound);
        self.push(Opened::With, bound);
        Some(())
    }

    /// `{% from TEMPLATE import NAME [as ALIAS], ... [with context] %}`.
    fn import_from(&mut self, rest: &[Tok<'a>]) -> Option<()> {
        let imp = keyword_at(rest, &["import"])?;
        self.expr(&rest[..imp]);
        let mut names = &rest[imp + 1..];
        let mut bound = vec![];
        loop {
            match names {
                [Tok::Ident("with" | "without"), Tok::Ident("context")] | [] => break,
                [
                    Tok::Ident(_),
                    Tok::Ident("as"),
                    Tok::Ident(alias),
                    more @ ..,
                ]
                | [Tok::Ident(alias), more @ ..] => {
                    bound.push(*alias);
                    names = match more {
                        [Tok::Comma, more @ ..] => more,
                        more => more,
                    };
                }
                _ => return None,
            }
        }
        let bound = self.assign(bound);
        self.bind(bound);
        Some(())
    }

    /// A macro's or call block's arguments: bound, their defaults read,
    /// then `caller` bound (a default's `caller` is the context's).
    fn macro_args(&mut self, args: &[Tok<'a>]) -> Option<()> {
        let mut names = vec![];
        for part in args.split(|t| *t == Tok::Comma) {
            match part {
                [] => {}
                [Tok::Ident(n)] => names.push(*n),
                [Tok::Ident(n), Tok::Assign, _, ..] => names.push(*n),
                _ => return None,
            }
        }
        let names = self.assign(names);
        self.bind(names);
        for part in args.split(|t| *t == Tok::Comma) {
            if let [Tok::Ident(_), Tok::Assign, default @ ..] = part {
                self.expr(default);
            }
        }
        self.bind(self.implicit("caller"));
        Some(())
    }
}

/// The index of the bracket closing `toks[0]`.
fn matching(toks: &[Tok]) -> Option<usize> {
    let mut depth = 0usize;
    for (i, t) in toks.iter().enumerate() {
        match t {
            Tok::Open => depth += 1,
            Tok::Close => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

/// The names `src` reads that it does not bind itself, or the parse error
/// (Jinja the analysis cannot read: the caller then counts every variable).
pub fn undeclared(src: &str) -> Result<BTreeSet<String>, Declined> {
    if let Some(at) = too_nested(src) {
        return Err(Declined::TooNested(at));
    }
    let tree = minijinja::machinery::parse(src, "<analysis>", Default::default())
        .map_err(Declined::Parse)?;
    let walk = |implicit| {
        let mut t = Tracker {
            out: BTreeSet::new(),
            assigned: vec![HashSet::new()],
            implicit,
            special: false,
        };
        t.stmt(&tree);
        t
    };
    let mut t = walk(true);
    // As in [`scan`]: a template that assigns a name Jinja binds itself
    // may read it from the context.
    if t.special {
        t = walk(false);
    }
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
    /// Whether [`SPECIAL`] names are bound where Jinja binds them.
    implicit: bool,
    /// Whether the template assigns a [`SPECIAL`] name.
    special: bool,
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

    /// `name` bound where Jinja binds it itself, if [`Tracker::implicit`].
    fn implicit(&mut self, name: &'a str) {
        if self.implicit {
            self.assign(name);
        }
    }

    /// A name the template assigns (`set`, `with`, a loop's target...).
    fn assigns(&mut self, name: &'a str) {
        self.special |= SPECIAL.contains(&name);
        self.assign(name);
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
            ast::Expr::Var(v) => self.assigns(v.id),
            ast::Expr::List(l) => l.items.iter().for_each(|x| self.target(x)),
            ast::Expr::Tuple(t) => t.items.iter().for_each(|x| self.target(x)),
            // `{% set ns.a = v %}` reads ns.
            ast::Expr::GetAttr(x) => self.expr(&x.expr),
            _ => {}
        }
    }

    fn macro_decl(&mut self, m: &ast::Macro<'a>) {
        // `caller` is bound in a macro body (as minijinja assumes), not in
        // the defaults (Jinja reads a `caller` there from the context).
        m.args.iter().for_each(|a| self.target(a));
        m.defaults.iter().for_each(|d| self.expr(d));
        self.implicit("caller");
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

    fn for_loop(&mut self, x: &ast::ForLoop<'a>) {
        self.scoped(|t| {
            // The iterable is evaluated outside the loop: a `loop`
            // there is not the loop's own.
            t.expr(&x.iter);
            t.target(&x.target);
            // The filter sees the targets but not the loop's own
            // `loop` (Jinja reads that one from the context).
            t.opt(&x.filter_expr);
            t.implicit("loop");
            t.body(&x.body);
        });
        self.scoped(|t| t.body(&x.else_body));
    }

    fn block(&mut self, x: &ast::Block<'a>) {
        let top = self.assigned.first().cloned().unwrap_or_default();
        let around = std::mem::replace(&mut self.assigned, vec![top, HashSet::new()]);
        self.implicit("super");
        self.body(&x.body);
        self.assigned = around;
    }

    /// One statement: a dispatch over minijinja's statement kinds, each arm
    /// the scoping Jinja gives it (the longer arms are methods above).
    fn stmt(&mut self, s: &ast::Stmt<'a>) {
        match s {
            ast::Stmt::Template(t) => {
                self.implicit("self");
                self.body(&t.children);
            }
            ast::Stmt::EmitExpr(x) => self.expr(&x.expr),
            ast::Stmt::EmitRaw(_) => {}
            ast::Stmt::ForLoop(x) => self.for_loop(x),
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
            // Jinja renders a block as a function of the context alone
            // (minijinja drops `scoped`): the names bound by the loops,
            // `with`s, macros and blocks around it are not seen there, the
            // top level's are.
            ast::Stmt::Block(x) => self.block(x),
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
                self.assigns(x.name);
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
        // The first sources: those minijinja's own walk reads right.
        for src in &SOURCES[..13] {
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
        "{% for item in seq %}{% block b %}{{ item }}{{ loop }}{% endblock %}{% endfor %}",
        "{% with a = 1 %}{% block b %}{{ a }}{% endblock %}{% endwith %}",
        "{% block a %}{% set y = 1 %}{% block b %}{{ y }}{% endblock %}{% endblock %}",
        "{% set t = 1 %}{% block b %}{{ t }}{{ self }}{{ super() }}{% endblock %}",
        "{% for x in xs if loop.index %}{{ x }}{% endfor %}",
        "{{ if }}{{ f(else) }}{{ a + not }}{{ b is sameas not }}{{ c is sameas if }}",
        "{% for x in xs if x is defined recursive %}{% endfor %}{% for x in if %}{% endfor %}",
        "{% block b %}{% set super = super %}{% endblock %}",
        "{% macro m() %}{% set caller = caller %}{% endmacro %}{% call(c=caller) m() %}{% endcall %}",
        "{% set ns.x = 1 %}",
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
    fn the_scan_keeps_the_parse_scopes() {
        let mut differ = vec![];
        for src in SOURCES {
            if scan(src).unwrap() != undeclared(src).unwrap() {
                differ.push(*src);
            }
        }
        // Only where the scan reads a filter's name as a name.
        assert!(
            differ
                .iter()
                .all(|d| d.contains("{% filter upper") || d.contains("ignore")),
            "{differ:#?}"
        );
        for (src, want) in [
            (
                "{% for s in ntp %}{{ s }}{{ loop.index }}{% endfor %}{{ s }}",
                &["ntp", "s"][..],
            ),
            ("{% set x %}{{ x }}{% endset %}{{ x }}", &["x"][..]),
            (
                "{% if c %}{% set w = 1 %}{{ w }}{% endif %}{{ w }}",
                &["c", "w"][..],
            ),
            (
                "{% for x in xs %}{% else %}{{ x }}{% endfor %}",
                &["x", "xs"][..],
            ),
            (
                "{% macro m(a, b=a) %}{{ a }}{{ b }}{% endmacro %}{{ a }}",
                &["a"][..],
            ),
            ("{% set ns.v = 1 %}", &["ns"][..]),
        ] {
            assert_eq!(
                scan(src).unwrap(),
                want.iter().map(|s| s.to_string()).collect(),
                "{src}"
            );
            assert!(
                scan(src).unwrap().is_superset(&undeclared(src).unwrap()),
                "{src}"
            );
        }
    }

    /// Names Jinja reads from the context where the template seems to bind
    /// them: a block sees only the top level's names (it is rendered from
    /// the context), a loop's filter not its `loop`, a default not the
    /// macro's `caller`; `self`, `super`, `caller` and `loop` are bound by
    /// Jinja only where read before the template assigns them; a reserved
    /// word where an operand is expected is a variable.
    #[test]
    fn reads_where_jinja_binds_nothing() {
        for (src, want) in [
            (
                "{% for item in seq %}{% block b %}{{ item }}{% endblock %}{% endfor %}",
                &["item", "seq"][..],
            ),
            (
                "{% for x in xs %}{% block b scoped %}{{ x }}{% endblock %}{% endfor %}",
                &["x", "xs"][..],
            ),
            (
                "{% with a = 1 %}{% block b %}{{ a }}{% endblock %}{% endwith %}",
                &["a"][..],
            ),
            (
                "{% macro m(a) %}{% block b %}{{ a }}{% endblock %}{% endmacro %}",
                &["a"][..],
            ),
            (
                "{% block a %}{% set y = 1 %}{% block b %}{{ y }}{% endblock %}{% endblock %}",
                &["y"][..],
            ),
            // The top level's names are set in the context: seen.
            ("{% set t = 1 %}{% block b %}{{ t }}{% endblock %}", &[][..]),
            (
                "{% for x in xs if loop %}{{ x }}{% endfor %}",
                &["loop", "xs"][..],
            ),
            (
                "{% for a in as_ %}{% for x in xs if loop.index %}{% endfor %}{% endfor %}",
                &["as_", "xs"][..],
            ),
            (
                "{{ if }}{{ f(else) }}{{ a + not }}{{ b is sameas not }}{{ [in, is] }}",
                &["a", "b", "else", "f", "if", "in", "is", "not"][..],
            ),
            (
                "{{ a not in b and c is not none or not d }}{{ e if f else g }}{{ h(*not i) }}",
                &["a", "b", "c", "d", "e", "f", "g", "h", "i"][..],
            ),
            ("{% set self = self %}", &["self"][..]),
            (
                "{% block b %}{% set super = super %}{% endblock %}",
                &["super"][..],
            ),
            ("{% macro m(c=caller) %}{% endmacro %}", &["caller"][..]),
            (
                "{% for x in xs %}{% macro m(loop) %}{% endmacro %}{{ loop.index }}{% endfor %}",
                &["loop", "xs"][..],
            ),
        ] {
            let want: BTreeSet<String> = want.iter().map(|s| s.to_string()).collect();
            assert_eq!(scan(src).unwrap(), want, "{src}");
            if let Ok(parsed) = undeclared(src) {
                assert!(parsed.is_superset(&want), "{src}: {parsed:?}");
            }
        }
        // `{% set ns.a %}` reads ns: the parse's.
        assert!(scan("{% set ns.x %}v{% endset %}").is_none());
        assert!(
            undeclared("{% set ns.x %}v{% endset %}")
                .unwrap()
                .contains("ns")
        );
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
            "{% for x in y %}",
            "{% endif %}",
            "{% if a %}{% endfor %}",
            "{% frobnicate %}",
            "{% with a = f(x, y) %}{% endwith %}",
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

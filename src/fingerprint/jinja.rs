//! The variables a Jinja source reads, from one parse.
//!
//! minijinja's `Template::undeclared_variables` compiles the template and
//! then parses it a second time; a template is analysed once per cold
//! fingerprint, and templates are half the files of a large workspace, so
//! the analysis parses once (`minijinja::machinery::parse`, the parser
//! `template_from_str` runs) and walks the tree here. The walk follows
//! minijinja 3.1's own (`compiler/meta.rs`, non-nested mode), so the names
//! found are the same: a name is undeclared when it is read before any
//! `set`, loop target, macro argument or import in scope binds it.
//!
//! Pure: no I/O.

use std::collections::{BTreeSet, HashSet};

use minijinja::machinery::ast;

/// The names `src` reads that it does not bind itself, or the parse error
/// (Jinja the analysis cannot read: the caller then counts every variable).
pub fn undeclared(src: &str) -> Result<BTreeSet<String>, minijinja::Error> {
    let tree = minijinja::machinery::parse(src, "<analysis>", Default::default())?;
    let mut t = Tracker {
        out: BTreeSet::new(),
        assigned: vec![HashSet::new()],
    };
    t.stmt(&tree);
    Ok(t.out.into_iter().map(str::to_string).collect())
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
                    t.assign("loop");
                    t.expr(&x.iter);
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
            ast::Stmt::WithBlock(x) => self.scoped(|t| {
                for (target, e) in &x.assignments {
                    t.target(target);
                    t.expr(e);
                }
                t.body(&x.body);
            }),
            ast::Stmt::Set(x) => {
                self.target(&x.target);
                self.expr(&x.expr);
            }
            ast::Stmt::SetBlock(x) => {
                self.target(&x.target);
                self.scoped(|t| t.body(&x.body));
            }
            ast::Stmt::AutoEscape(x) => self.scoped(|t| t.body(&x.body)),
            ast::Stmt::FilterBlock(x) => self.scoped(|t| t.body(&x.body)),
            ast::Stmt::Block(x) => self.scoped(|t| {
                t.assign("super");
                t.body(&x.body);
            }),
            ast::Stmt::Extends(_) | ast::Stmt::Include(_) => {}
            ast::Stmt::Import(x) => self.target(&x.name),
            ast::Stmt::FromImport(x) => {
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
            "{% do xs.append(elem) %}{% include inc %}{% extends ext %}",
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

    #[test]
    fn parse_errors_are_errors() {
        assert!(undeclared("{{ a").is_err());
        assert!(undeclared("{% for %}").is_err());
    }
}

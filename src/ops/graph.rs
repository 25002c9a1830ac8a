//! `layerbuild graph`: the layer DAG as text, dot, mermaid, JSON (and, by
//! Graphviz, SVG and HTML), with each layer's status when asked
//! (`--status`).
//!
//! A [`Picture`] is plain data and rendering it is pure. [`statuses`] reads
//! what `ls` reads (fingerprints, the cache database, the image listing),
//! through the same test ([`crate::ops::ls::Statuses`]).

use std::collections::BTreeMap;

use serde::Serialize;

use super::Context;
use crate::digest::Digest;
use crate::error::Result;
use crate::executor::Backend;
use crate::label::{Label, Pattern};
use crate::ops::history::HistoryEntry;
pub use crate::status::LayerState;
use crate::workspace::Parent;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GraphFormat {
    /// An indented tree.
    Text,
    /// Graphviz source.
    Dot,
    /// A Mermaid flowchart.
    Mermaid,
    /// Drawn by Graphviz (`dot -Tsvg`).
    Svg,
    /// One self-contained page: the drawing and a table of the layers.
    Html,
    /// The graph as data (what --json prints).
    Json,
}

/// What `--status` adds to a layer.
#[derive(Debug, Serialize)]
pub struct NodeState {
    pub status: LayerState,
    /// The layer's current digest.
    pub digest: Digest,
    /// The newest recorded attempt of this layer for the system, whatever
    /// its digest; `null` when none is recorded.
    pub last: Option<HistoryEntry>,
}

/// One layer of the picture.
#[derive(Debug, Serialize)]
pub struct Node {
    pub label: Label,
    pub parent: Parent,
    /// Its children among the layers shown.
    pub children: Vec<String>,
    #[serde(flatten)]
    pub state: Option<NodeState>,
}

/// The system and the counts of each status (`--status` only).
#[derive(Debug, Serialize)]
pub struct StatusHeader {
    /// `null` when the workspace declares no system.
    pub system: Option<String>,
    pub counts: BTreeMap<&'static str, usize>,
}

/// The layers to draw, in topological order, with the edges between them.
#[derive(Debug, Serialize)]
pub struct Picture {
    pub version: u32,
    #[serde(skip)]
    pub workspace: String,
    #[serde(flatten)]
    pub header: Option<StatusHeader>,
    pub nodes: Vec<Node>,
    pub edges: Vec<(String, String)>,
}

/// The layers the patterns name, with their ancestors (shown for context:
/// a layer's status depends on theirs); every layer when none is given.
pub fn select(ctx: &Context, patterns: &[Pattern]) -> Result<Vec<Label>> {
    if patterns.is_empty() {
        Ok(ctx.graph.order().to_vec())
    } else {
        ctx.graph.select(patterns)
    }
}

/// The layers' states for one system (`--status`).
pub struct States {
    /// The system's name; `None` when the workspace declares none.
    pub system: Option<String>,
    pub states: BTreeMap<Label, NodeState>,
    /// Set when the images could not be listed (the database is trusted).
    pub warning: Option<String>,
}

/// What `ls` says of each of `labels` for `system`, and `failed` when the
/// last attempt at the current digest failed; with the newest attempt.
pub fn statuses(
    ctx: &Context,
    system: Option<&str>,
    labels: &[Label],
    backend: &dyn Backend,
) -> Result<States> {
    let system = ctx.ws.system(system)?;
    let prints = crate::ops::fingerprints(
        &ctx.ws,
        system,
        labels,
        crate::fingerprint::session::Want::DigestsOnly,
    )?
    .prints;
    let statuses = crate::ops::ls::Statuses::open(ctx, backend)?;
    let sys = system.map(|s| s.name.as_str());
    let mut out = BTreeMap::new();
    for label in labels {
        let digest = &prints[label].digest;
        let name = label.to_string();
        let st = statuses.of(&name, digest, sys)?;
        out.insert(
            label.clone(),
            NodeState {
                status: st.state,
                digest: digest.clone(),
                last: st.last,
            },
        );
    }
    Ok(States {
        system: system.map(|s| s.name.clone()),
        states: out,
        warning: statuses.warning,
    })
}

impl Picture {
    /// `labels` (in topological order) and the edges between them, with
    /// their states when `states` is given (`--status`).
    pub fn new(ctx: &Context, labels: &[Label], states: Option<States>) -> Picture {
        let shown: std::collections::BTreeSet<&Label> = labels.iter().collect();
        let (system, mut states) = match states {
            Some(s) => (Some(s.system), Some(s.states)),
            None => (None, None),
        };
        let nodes: Vec<Node> = labels
            .iter()
            .map(|l| Node {
                label: l.clone(),
                parent: ctx.ws.layers[l].parent.clone(),
                children: ctx
                    .graph
                    .children(l)
                    .iter()
                    .filter(|c| shown.contains(c))
                    .map(|c| c.to_string())
                    .collect(),
                state: states.as_mut().and_then(|s| s.remove(l)),
            })
            .collect();
        let edges = nodes
            .iter()
            .filter_map(|n| match &n.parent {
                Parent::Layer(p) if shown.contains(p) => Some((p.to_string(), n.label.to_string())),
                _ => None,
            })
            .collect();
        let header = system.map(|system| {
            let mut counts: BTreeMap<&'static str, usize> =
                LayerState::ALL.iter().map(|s| (s.as_str(), 0)).collect();
            for n in &nodes {
                if let Some(s) = &n.state {
                    *counts.entry(s.status.as_str()).or_default() += 1;
                }
            }
            StatusHeader { system, counts }
        });
        Picture {
            version: 1,
            workspace: ctx.ws.name.clone(),
            header,
            nodes,
            edges,
        }
    }

    /// The title of a status picture: `WORKSPACE, system NAME`.
    pub fn title(&self) -> String {
        match self.header.as_ref().and_then(|h| h.system.as_deref()) {
            Some(s) => format!("{}, system {s}", self.workspace),
            None => self.workspace.clone(),
        }
    }

    /// The text of `format`; `Svg` and `Html` are drawn from [`Picture::dot`]
    /// by the caller.
    pub fn render(&self, format: GraphFormat) -> String {
        match format {
            GraphFormat::Json => {
                serde_json::to_string_pretty(self).expect("graph serialises") + "\n"
            }
            GraphFormat::Text => self.text(),
            GraphFormat::Mermaid => self.mermaid(),
            GraphFormat::Dot | GraphFormat::Svg | GraphFormat::Html => self.dot(),
        }
    }

    /// Graphviz source: plain ellipses, or with `--status` boxes filled by
    /// status, with a legend and the system in the graph's label.
    pub fn dot(&self) -> String {
        if self.header.is_none() {
            return self.plain_dot();
        }
        let mut s = String::from("digraph layers {\n  rankdir=LR;\n");
        s.push_str(&format!(
            "  graph [label=\"{}\", labelloc=t, fontname=\"Helvetica\"];\n",
            dot_escape(&self.title())
        ));
        s.push_str("  node [shape=box, style=\"rounded,filled\", fontname=\"Helvetica\"];\n");
        for n in &self.nodes {
            let l = n.label.to_string();
            if let Some(st) = &n.state {
                s.push_str(&format!(
                    "  \"{l}\" [fillcolor=\"{}\", label=\"{l}\\n{}\"];\n",
                    colour(st.status),
                    dot_escape(&summary(st))
                ));
            }
            if let Parent::Image(r) = &n.parent {
                let r = dot_escape(r);
                s.push_str(&format!(
                    "  \"{r}\" [shape=box, style=dashed];\n  \"{r}\" -> \"{l}\";\n"
                ));
            }
        }
        for (a, b) in &self.edges {
            s.push_str(&format!("  \"{a}\" -> \"{b}\";\n"));
        }
        s.push_str("  subgraph cluster_legend {\n    label=\"status\";\n    style=dashed;\n");
        for st in LayerState::ALL {
            s.push_str(&format!(
                "    \"legend: {}\" [fillcolor=\"{}\", label=\"{}\"];\n",
                st.as_str(),
                colour(st),
                st.words()
            ));
        }
        s.push_str("  }\n}\n");
        s
    }

    /// Today's `graph` output, unchanged: ellipses, external images as boxes.
    fn plain_dot(&self) -> String {
        let mut s = String::from("digraph layers {\n  rankdir=LR;\n");
        for n in &self.nodes {
            let l = &n.label;
            s.push_str(&format!("  \"{l}\";\n"));
            if let Parent::Image(r) = &n.parent {
                s.push_str(&format!("  \"{r}\" [shape=box];\n  \"{r}\" -> \"{l}\";\n"));
            }
        }
        for (a, b) in &self.edges {
            s.push_str(&format!("  \"{a}\" -> \"{b}\";\n"));
        }
        s.push_str("}\n");
        s
    }

    /// A Mermaid flowchart; with `--status`, a `classDef` per status.
    pub fn mermaid(&self) -> String {
        let id = |l: &str| l.trim_start_matches("//").replace(['/', '.', '-'], "_");
        let mut s = match &self.header {
            None => String::from("graph LR\n"),
            Some(_) => format!("flowchart TD\n  %% {}\n", self.title()),
        };
        for n in &self.nodes {
            let ls = n.label.to_string();
            match &n.state {
                None => s.push_str(&format!("  {}[\"{ls}\"]\n", id(&ls))),
                Some(st) => s.push_str(&format!(
                    "  {}[\"{ls}<br/>{}\"]:::{}\n",
                    id(&ls),
                    summary(st).replace('"', "#quot;"),
                    st.status.as_str()
                )),
            }
        }
        for (a, b) in &self.edges {
            s.push_str(&format!("  {} --> {}\n", id(a), id(b)));
        }
        if self.header.is_some() {
            for st in LayerState::ALL {
                s.push_str(&format!(
                    "  classDef {} fill:{},stroke:{}\n",
                    st.as_str(),
                    colour(st),
                    stroke(st)
                ));
            }
        }
        s
    }

    /// An indented tree; with `--status`, each layer's status, short digest
    /// and last build's duration in columns.
    pub fn text(&self) -> String {
        let mut rows: Vec<(String, &Node)> = vec![];
        let index: BTreeMap<String, &Node> = self
            .nodes
            .iter()
            .map(|n| (n.label.to_string(), n))
            .collect();
        let roots = self.nodes.iter().filter(|n| match &n.parent {
            Parent::Layer(p) => !index.contains_key(&p.to_string()),
            _ => true,
        });
        fn walk<'a>(
            n: &'a Node,
            lead: &str,
            branch: &str,
            index: &BTreeMap<String, &'a Node>,
            rows: &mut Vec<(String, &'a Node)>,
        ) {
            rows.push((format!("{lead}{branch}{}", n.label), n));
            let lead = match branch {
                "" => lead.to_string(),
                "└─ " => format!("{lead}   "),
                _ => format!("{lead}│  "),
            };
            for (i, c) in n.children.iter().enumerate() {
                let last = i + 1 == n.children.len();
                if let Some(c) = index.get(c) {
                    walk(c, &lead, if last { "└─ " } else { "├─ " }, index, rows);
                }
            }
        }
        for r in roots {
            walk(r, "", "", &index, &mut rows);
        }
        let width = rows
            .iter()
            .map(|(t, _)| t.chars().count())
            .max()
            .unwrap_or(0);
        let mut s = String::new();
        for (tree, n) in rows {
            match &n.state {
                None => s.push_str(&format!("{tree}\n")),
                Some(st) => {
                    let pad = width - tree.chars().count();
                    s.push_str(&format!(
                        "{tree}{:pad$}  {:<11}  {:<12}  {}\n",
                        "",
                        st.status.words(),
                        st.digest.short(),
                        last_duration(st)
                    ));
                }
            }
        }
        s
    }
}

impl Picture {
    /// One self-contained page (no script, nothing fetched): the drawing
    /// (`svg`, from Graphviz) or, without it, the Mermaid text; then a
    /// table of the layers.
    pub fn html(&self, svg: Option<&str>) -> String {
        let title = html_escape(&self.title());
        let mut s = format!(
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
             <title>layerbuild: {title}</title>\n<style>\n\
             body {{ font-family: sans-serif; margin: 2em; }}\n\
             table {{ border-collapse: collapse; margin-top: 1em; }}\n\
             th, td {{ border: 1px solid #bbb; padding: .3em .6em; text-align: left; }}\n\
             td.digest, pre {{ font-family: monospace; }}\n"
        );
        for st in LayerState::ALL {
            s.push_str(&format!(
                "tr.{} td.status {{ background: {}; }}\n",
                st.as_str(),
                colour(st)
            ));
        }
        s.push_str(&format!("</style>\n</head>\n<body>\n<h1>{title}</h1>\n"));
        match svg {
            Some(svg) => {
                // The drawing inline: from `<svg`, without the XML prologue.
                let svg = svg.find("<svg").map_or(svg, |at| &svg[at..]);
                s.push_str("<div class=\"graph\">\n");
                s.push_str(svg.trim_end());
                s.push_str("\n</div>\n");
            }
            None => {
                s.push_str(
                    "<p>Graphviz (<code>dot</code>) was not found, so there is no drawing \
                     (<code>apt-get install graphviz</code>); the graph as a Mermaid flowchart:</p>\n<pre class=\"mermaid-source\">",
                );
                s.push_str(&html_escape(&self.mermaid()));
                s.push_str("</pre>\n");
            }
        }
        let status = self.header.is_some();
        s.push_str("<table>\n<thead><tr><th>label</th><th>parent</th>");
        if status {
            s.push_str("<th>status</th><th>digest</th><th>last duration</th><th>last built</th>");
        }
        s.push_str("</tr></thead>\n<tbody>\n");
        for n in &self.nodes {
            let parent = match &n.parent {
                Parent::Scratch => "scratch".to_string(),
                Parent::Layer(l) => l.to_string(),
                Parent::Image(r) => r.clone(),
            };
            match &n.state {
                None => s.push_str("<tr>"),
                Some(st) => s.push_str(&format!("<tr class=\"{}\">", st.status.as_str())),
            }
            s.push_str(&format!(
                "<td>{}</td><td>{}</td>",
                html_escape(&n.label.to_string()),
                html_escape(&parent)
            ));
            if let Some(st) = &n.state {
                let when = st.last.as_ref().map_or("-".to_string(), |l| {
                    let t = crate::ops::format_time(l.started_at);
                    match l.outcome {
                        crate::status::RecordStatus::Failed => format!("{t} UTC (failed)"),
                        crate::status::RecordStatus::Built => format!("{t} UTC"),
                    }
                });
                s.push_str(&format!(
                    "<td class=\"status\">{}</td><td class=\"digest\">{}</td><td>{}</td><td>{}</td>",
                    st.status.words(),
                    st.digest.short(),
                    last_duration(st),
                    when
                ));
            }
            s.push_str("</tr>\n");
        }
        s.push_str("</tbody>\n</table>\n</body>\n</html>\n");
        s
    }
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The fill of a status, in every picture.
pub fn colour(s: LayerState) -> &'static str {
    match s {
        LayerState::UpToDate => "#b7e4b0",
        LayerState::NeedsBuild => "#ffe08a",
        LayerState::Failed => "#f4a3a3",
        LayerState::NeverBuilt => "#e0e0e0",
    }
}

fn stroke(s: LayerState) -> &'static str {
    match s {
        LayerState::UpToDate => "#2e7d32",
        LayerState::NeedsBuild => "#b7791f",
        LayerState::Failed => "#c62828",
        LayerState::NeverBuilt => "#757575",
    }
}

/// `1.2s`, the last attempt's duration, or `-`.
pub fn last_duration(st: &NodeState) -> String {
    st.last.as_ref().map_or("-".into(), |l| {
        crate::progress::format_duration(std::time::Duration::from_millis(
            u64::try_from(l.duration_ms).unwrap_or(0),
        ))
    })
}

/// `up to date · 1a2b3c4d5e6f · 2.1s` (the duration only when a build is recorded).
fn summary(st: &NodeState) -> String {
    let mut s = format!("{} · {}", st.status.words(), st.digest.short());
    if st.last.is_some() {
        s.push_str(&format!(" · {}", last_duration(st)));
    }
    s
}

fn dot_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

//! `layerbuild graph`: the layer DAG as dot, mermaid or JSON.
//!
//! No I/O: the workspace is loaded by the caller; the graph is text.

use serde::Serialize;

use super::Context;
use crate::workspace::Parent;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GraphFormat {
    Dot,
    Mermaid,
    Json,
}

#[derive(Serialize)]
struct JsonGraph {
    version: u32,
    nodes: Vec<JsonNode>,
    edges: Vec<(String, String)>,
}

#[derive(Serialize)]
struct JsonNode {
    label: String,
    parent: Parent,
    children: Vec<String>,
}

pub fn graph(ctx: &Context, format: GraphFormat) -> String {
    let order = ctx.graph.order();
    let edges: Vec<(String, String)> = order
        .iter()
        .filter_map(|l| match &ctx.ws.layers[l].parent {
            Parent::Layer(p) => Some((p.to_string(), l.to_string())),
            _ => None,
        })
        .collect();
    match format {
        GraphFormat::Json => {
            let g = JsonGraph {
                version: 1,
                nodes: order
                    .iter()
                    .map(|l| JsonNode {
                        label: l.to_string(),
                        parent: ctx.ws.layers[l].parent.clone(),
                        children: ctx
                            .graph
                            .children(l)
                            .iter()
                            .map(|c| c.to_string())
                            .collect(),
                    })
                    .collect(),
                edges,
            };
            serde_json::to_string_pretty(&g).expect("graph serialises") + "\n"
        }
        GraphFormat::Dot => {
            let mut s = String::from("digraph layers {\n  rankdir=LR;\n");
            for l in order {
                s.push_str(&format!("  \"{l}\";\n"));
                if let Parent::Image(r) = &ctx.ws.layers[l].parent {
                    s.push_str(&format!("  \"{r}\" [shape=box];\n  \"{r}\" -> \"{l}\";\n"));
                }
            }
            for (a, b) in &edges {
                s.push_str(&format!("  \"{a}\" -> \"{b}\";\n"));
            }
            s.push_str("}\n");
            s
        }
        GraphFormat::Mermaid => {
            let id = |l: &str| l.trim_start_matches("//").replace(['/', '.', '-'], "_");
            let mut s = String::from("graph LR\n");
            for l in order {
                let ls = l.to_string();
                s.push_str(&format!("  {}[\"{ls}\"]\n", id(&ls)));
            }
            for (a, b) in &edges {
                s.push_str(&format!("  {} --> {}\n", id(a), id(b)));
            }
            s
        }
    }
}

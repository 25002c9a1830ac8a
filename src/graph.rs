//! The layer DAG (petgraph): built from the workspace, checked for cycles,
//! and used to select what a set of patterns needs in topological order.
//! Pure: no I/O.

use std::collections::{BTreeMap, BTreeSet};

use petgraph::Direction;
use petgraph::algo::{kosaraju_scc, toposort};
use petgraph::graph::{DiGraph, NodeIndex};

use crate::error::{Error, Result};
use crate::label::{Label, Pattern};
use crate::workspace::{Parent, Workspace};

pub struct LayerGraph {
    graph: DiGraph<Label, ()>,
    index: BTreeMap<Label, NodeIndex>,
    /// All labels, parents before children; ties broken by label for stable output.
    order: Vec<Label>,
    /// The architecture the graph is for, and the layers left out of it
    /// because they are not built for it (with the ones they are), so an
    /// error can say so.
    arch: crate::arch::Arch,
    other_arch: BTreeMap<Label, Vec<crate::arch::Arch>>,
}

impl LayerGraph {
    pub fn new(ws: &Workspace) -> Result<LayerGraph> {
        let mut graph = DiGraph::new();
        let mut index = BTreeMap::new();
        for label in ws.layers.keys() {
            index.insert(label.clone(), graph.add_node(label.clone()));
        }
        for (label, layer) in &ws.layers {
            if let Parent::Layer(p) = &layer.parent {
                graph.add_edge(index[p], index[label], ());
            }
        }
        if toposort(&graph, None).is_err() {
            let cycle = find_cycle(&graph);
            let first = &cycle[0];
            let path: Vec<String> = cycle
                .iter()
                .chain(std::iter::once(first))
                .map(|l| l.to_string())
                .collect();
            return Err(Error::input_at(
                ws.layers[first].defined_at.clone(),
                format!("the layer graph has a cycle: {}", path.join(" -> ")),
            )
            .with_hint("a layer cannot be its own ancestor: change one of these parents"));
        }
        let order = stable_topo_order(&graph);
        Ok(LayerGraph {
            graph,
            index,
            order,
            arch: ws.arch,
            other_arch: ws
                .other_arch_layers
                .iter()
                .map(|(l, layer)| (l.clone(), layer.architectures.clone()))
                .collect(),
        })
    }

    pub fn order(&self) -> &[Label] {
        &self.order
    }

    pub fn children(&self, label: &Label) -> Vec<Label> {
        let mut v: Vec<Label> = self
            .graph
            .neighbors_directed(self.index[label], Direction::Outgoing)
            .map(|n| self.graph[n].clone())
            .collect();
        v.sort();
        v
    }

    /// Ancestors of `label`, nearest first.
    pub fn ancestors(&self, label: &Label) -> Vec<Label> {
        let mut out = vec![];
        let mut cur = self.index[label];
        while let Some(p) = self
            .graph
            .neighbors_directed(cur, Direction::Incoming)
            .next()
        {
            out.push(self.graph[p].clone());
            cur = p;
        }
        out
    }

    /// The labels the patterns name plus all their ancestors, in topological order.
    /// A pattern that matches nothing is an error.
    pub fn select(&self, patterns: &[Pattern]) -> Result<Vec<Label>> {
        let mut wanted = BTreeSet::new();
        for l in self.matching(patterns)? {
            wanted.extend(self.ancestors(&l));
            wanted.insert(l);
        }
        Ok(self.in_order(&wanted))
    }

    /// `wanted` in topological order.
    fn in_order(&self, wanted: &BTreeSet<Label>) -> Vec<Label> {
        self.order
            .iter()
            .filter(|l| wanted.contains(*l))
            .cloned()
            .collect()
    }

    /// The labels the patterns name (without their ancestors), in
    /// topological order. A pattern that matches nothing is an error.
    pub fn matching(&self, patterns: &[Pattern]) -> Result<Vec<Label>> {
        let mut wanted = BTreeSet::new();
        for pat in patterns {
            let matched: Vec<&Label> = self.order.iter().filter(|l| pat.matches(l)).collect();
            if matched.is_empty() {
                if let Pattern::Exact(l) = pat
                    && let Some(arches) = self.other_arch.get(l)
                {
                    let names: Vec<&str> = arches.iter().map(|a| a.name()).collect();
                    return Err(Error::input(format!(
                        "{l} is not built for {}: its architectures are {}",
                        self.arch,
                        names.join(", ")
                    ))
                    .with_hint(format!("name one of them: --arch {}", names[0])));
                }
                let err = Error::input(format!("{pat} matches no layer"));
                return Err(match pat {
                    Pattern::Exact(l) => err.with_hint(self.suggest(l)),
                    _ => err.with_hint("list the layers with: layerbuild ls"),
                });
            }
            wanted.extend(matched.into_iter().cloned());
        }
        Ok(self.in_order(&wanted))
    }

    fn suggest(&self, missing: &Label) -> String {
        let close: Vec<String> = self
            .order
            .iter()
            .filter(|l| l.layer() == missing.layer() || l.image_type() == missing.image_type())
            .map(|l| l.to_string())
            .collect();
        if close.is_empty() {
            "list the layers with: layerbuild ls".into()
        } else {
            format!("did you mean one of: {}", close.join(", "))
        }
    }
}

/// Kahn's algorithm with a sorted ready set, so the order is deterministic.
fn stable_topo_order(graph: &DiGraph<Label, ()>) -> Vec<Label> {
    let mut indegree: BTreeMap<NodeIndex, usize> = graph
        .node_indices()
        .map(|n| (n, graph.neighbors_directed(n, Direction::Incoming).count()))
        .collect();
    let mut ready: BTreeSet<(Label, NodeIndex)> = indegree
        .iter()
        .filter(|(_, d)| **d == 0)
        .map(|(n, _)| (graph[*n].clone(), *n))
        .collect();
    let mut out = vec![];
    while let Some((label, n)) = ready.pop_first() {
        out.push(label);
        for c in graph.neighbors_directed(n, Direction::Outgoing) {
            let d = indegree.get_mut(&c).expect("node in graph");
            *d -= 1;
            if *d == 0 {
                ready.insert((graph[c].clone(), c));
            }
        }
    }
    out
}

/// A cycle's members in parent-to-child order, starting at the smallest label.
fn find_cycle(graph: &DiGraph<Label, ()>) -> Vec<Label> {
    for scc in kosaraju_scc(graph) {
        if scc.len() > 1 || graph.contains_edge(scc[0], scc[0]) {
            let members: BTreeSet<NodeIndex> = scc.iter().copied().collect();
            let start = *scc
                .iter()
                .min_by_key(|n| graph[**n].clone())
                .expect("non-empty scc");
            let mut cycle = vec![graph[start].clone()];
            let mut cur = start;
            loop {
                let next = graph
                    .neighbors_directed(cur, Direction::Outgoing)
                    .find(|n| members.contains(n))
                    .expect("scc member has a successor in the scc");
                if next == start {
                    break;
                }
                cycle.push(graph[next].clone());
                cur = next;
                if cycle.len() > members.len() {
                    break;
                }
            }
            return cycle;
        }
    }
    vec![]
}

//! YAML documents loaded with a bound on what their aliases expand to.
//!
//! yaml-rust2 copies an anchored node wherever an alias names it, so a
//! document of a kilobyte whose aliases nest nine deep (a "billion laughs")
//! takes gigabytes. Before loading, one pass over the parser's events
//! counts the nodes the document expands to; past [`MAX_NODES`] it is bad
//! input, with the line of the alias that crossed the bound (Ansible's
//! loader refuses such documents as well). Pure: no I/O.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, ScanError};
use yaml_rust2::{Yaml, YamlLoader};

/// Nodes a document may expand to (a large inventory holds a few thousand).
pub const MAX_NODES: u64 = 1_000_000;
/// Bytes of scalars a document may expand to: a long value repeated by
/// aliases is as large as many nodes.
pub const MAX_BYTES: u64 = 64 << 20;

/// `YamlLoader::load_from_str`, refusing a document whose aliases expand
/// past [`MAX_NODES`] nodes or [`MAX_BYTES`] bytes of scalars.
pub fn load(text: &str) -> Result<Vec<Yaml>, ScanError> {
    // No alias without a `*`.
    if text.contains('*') {
        let mut count = Count::default();
        let parsed = Parser::new_from_str(text).load(&mut count, true);
        // Checked before the syntax: the loader expands the aliases met
        // before a syntax error further on.
        if let Some(mark) = count.over {
            return Err(ScanError::new_string(
                mark,
                format!(
                    "its aliases expand to more than {MAX_NODES} nodes or {} MiB",
                    MAX_BYTES >> 20
                ),
            ));
        }
        // The error the loader would give, without building anything.
        parsed?;
    }
    YamlLoader::load_from_str(text)
}

/// What a node expands to: nodes, and bytes of scalars.
#[derive(Debug, Clone, Copy, Default)]
struct Size {
    nodes: u64,
    bytes: u64,
}

impl Size {
    fn plus(self, o: Size) -> Size {
        Size {
            nodes: self.nodes.saturating_add(o.nodes),
            bytes: self.bytes.saturating_add(o.bytes),
        }
    }

    fn over(self) -> bool {
        self.nodes > MAX_NODES || self.bytes > MAX_BYTES
    }
}

/// Sizes counted so far, per open collection and per anchor.
#[derive(Default)]
struct Count {
    /// Expanded size of each anchored node, by anchor id.
    sizes: HashMap<usize, Size>,
    /// Open collections: anchor id and size so far.
    open: Vec<(usize, Size)>,
    total: Size,
    /// Where the bound was crossed.
    over: Option<Marker>,
}

impl Count {
    fn add(&mut self, n: Size, mark: Marker) {
        let now = match self.open.last_mut() {
            Some((_, c)) => {
                *c = c.plus(n);
                *c
            }
            None => {
                self.total = self.total.plus(n);
                self.total
            }
        };
        if now.over() && self.over.is_none() {
            self.over = Some(mark);
        }
    }
}

impl MarkedEventReceiver for Count {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        match ev {
            Event::Scalar(value, _, anchor, _) => {
                let size = Size {
                    nodes: 1,
                    bytes: value.len() as u64,
                };
                if anchor > 0 {
                    self.sizes.insert(anchor, size);
                }
                self.add(size, mark);
            }
            Event::Alias(id) => {
                let n = self
                    .sizes
                    .get(&id)
                    .copied()
                    .unwrap_or(Size { nodes: 1, bytes: 0 });
                self.add(n, mark);
            }
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                self.open.push((anchor, Size { nodes: 1, bytes: 0 }));
            }
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some((anchor, n)) = self.open.pop() {
                    if anchor > 0 {
                        self.sizes.insert(anchor, n);
                    }
                    self.add(n, mark);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bomb(levels: usize, width: usize) -> String {
        let mut s = String::from("a0: &a0 [x]\n");
        for l in 1..=levels {
            let refs = vec![format!("*a{}", l - 1); width].join(", ");
            s.push_str(&format!("a{l}: &a{l} [{refs}]\n"));
        }
        s
    }

    #[test]
    fn an_alias_bomb_is_refused_with_its_line() {
        let e = load(&bomb(9, 9)).unwrap_err();
        assert!(e.info().contains("aliases expand to more than"), "{e}");
        assert!(e.marker().line() <= 10, "{e}");
        // Under an unused key too.
        // Followed by a syntax error (the loader expands what comes
        // before it).
        let broken = format!("{}\n bad: [\n", bomb(9, 9));
        assert!(load(&broken).unwrap_err().info().contains("aliases expand"));
        // Few nodes, but a long value repeated (found by the playbook fuzz
        // target: 1.7 GB from 30 KB).
        let long = format!(
            "a0: &a0 {}\n{}",
            "z".repeat(30_000),
            (1..=5)
                .map(|l| format!(
                    "a{l}: &a{l} [{}]\n",
                    vec![format!("*a{}", l - 1); 9].join(", ")
                ))
                .collect::<String>()
        );
        assert!(load(&long).unwrap_err().info().contains("aliases expand"));
        let nested = format!("unused:\n  {}", bomb(9, 9).replace('\n', "\n  "));
        assert!(load(&nested).is_err());
    }

    #[test]
    fn ordinary_aliases_load() {
        let text = "defaults: &d {a: 1, b: 2}\nx:\n  <<: *d\n  c: 3\ny: *d\nz: [*d, *d]\n";
        let docs = load(text).unwrap();
        assert_eq!(docs[0]["y"]["a"].as_i64(), Some(1));
        assert!(load(&bomb(3, 9)).is_ok());
        // Syntax errors are the loader's.
        assert!(
            load("a: *missing\n").is_err() == YamlLoader::load_from_str("a: *missing\n").is_err()
        );
    }
}

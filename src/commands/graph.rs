//! `layerbuild graph`: the layer graph as text, dot, mermaid, SVG, HTML or
//! JSON, with each layer's status under `--status`.
//! No I/O of its own: arguments to options, the op's report to text (SVG
//! is drawn by `ops::graphviz`).

use serde::Serialize;

use super::{Env, Report};
use crate::cli::GraphArgs;
use crate::error::Result;
use crate::executor::ToolErrorKind;
use crate::ops::graph::{GraphFormat, Picture, select, statuses};
use crate::ops::graphviz;

/// `--json`: the picture; otherwise the text of the format asked for.
#[derive(Serialize)]
#[serde(transparent)]
pub struct GraphReport {
    picture: Picture,
    #[serde(skip)]
    text: String,
    #[serde(skip)]
    notes: Vec<String>,
}

pub fn exec(env: &Env, args: &GraphArgs) -> Result<GraphReport> {
    let patterns = if args.labels.is_empty() {
        vec![]
    } else {
        crate::ops::parse_patterns(&args.labels)?
    };
    let labels = select(&env.ctx, &patterns)?;
    let mut notes = vec![];
    let states = if args.status {
        let backend = env.backend()?;
        let mut states = statuses(
            &env.ctx,
            crate::ops::one_system(&env.ctx.ws, &args.system.system, "graph")?.as_deref(),
            &labels,
            &*backend,
        )?;
        notes.extend(states.warning.take().map(|w| format!("warning: {w}")));
        Some(states)
    } else {
        None
    };
    let picture = Picture::new(&env.ctx, &labels, states);
    let text = if args.json {
        String::new()
    } else {
        match args.format {
            GraphFormat::Svg => graphviz::svg(&picture.dot())?,
            GraphFormat::Html => match graphviz::svg(&picture.dot()) {
                Ok(svg) => picture.html(Some(&svg)),
                Err(e) if e.kind() == ToolErrorKind::NotStarted => {
                    notes.push(format!(
                        "note: {e}; the page shows the graph as Mermaid text \
                         (for a drawing: apt-get install graphviz)"
                    ));
                    picture.html(None)
                }
                Err(e) => return Err(e.into()),
            },
            format => picture.render(format),
        }
    };
    Ok(GraphReport {
        picture,
        text,
        notes,
    })
}

impl Report for GraphReport {
    fn render(&self) -> String {
        self.text.clone()
    }

    fn notes(&self) -> Vec<String> {
        self.notes.clone()
    }
}

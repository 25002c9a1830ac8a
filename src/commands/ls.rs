//! `layerbuild ls`: every layer with its status; `--failed`: the working
//! containers kept from failed builds.
//! No I/O of its own: arguments to options, the op's report to text.

use serde::Serialize;

use super::{Env, Report};
use crate::cli::LsArgs;
use crate::error::Result;
use crate::ops::debug::{KeptContainer, kept, render_kept};
use crate::ops::ls::{LsEntry, ls, render};

/// `ls --json` is an array: of layers, or of kept containers.
#[derive(Serialize)]
#[serde(transparent)]
pub struct LsReport {
    listing: Listing,
    #[serde(skip)]
    warning: Option<String>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Listing {
    Layers(Vec<LsEntry>),
    Kept(Vec<KeptContainer>),
}

pub fn exec(env: &Env, args: &LsArgs) -> Result<LsReport> {
    let backend = env.backend()?;
    if args.failed {
        return Ok(LsReport {
            listing: Listing::Kept(kept(&env.ctx, &*backend)?),
            warning: None,
        });
    }
    let (entries, warning) = ls(&env.ctx, args.system.system.as_deref(), &*backend)?;
    Ok(LsReport {
        listing: Listing::Layers(entries),
        warning,
    })
}

impl Report for LsReport {
    fn render(&self) -> String {
        match &self.listing {
            Listing::Layers(entries) => render(entries),
            Listing::Kept(k) => render_kept(k),
        }
    }

    fn notes(&self) -> Vec<String> {
        self.warning
            .iter()
            .map(|w| format!("warning: {w}"))
            .collect()
    }
}

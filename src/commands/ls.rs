//! `layerbuild ls [LABEL...]`: layers with their status, for each system
//! asked for; `--failed`: the working containers kept from failed builds.
//! No I/O of its own: arguments to options, the op's report to text.

use serde::Serialize;

use super::{Env, Report};
use crate::cli::LsArgs;
use crate::error::Result;
use crate::ops::debug::{KeptContainer, kept, render_kept};
use crate::ops::ls::{LsEntry, ls, render};

/// Schema version of `ls --json`.
pub const LS_VERSION: u32 = 1;

/// `ls --json`: `{version, layers}`, or with `--failed` `{version, containers}`.
#[derive(Serialize)]
pub struct LsReport {
    version: u32,
    #[serde(flatten)]
    listing: Listing,
    #[serde(skip)]
    warning: Option<String>,
    #[serde(skip)]
    verbose: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "snake_case")]
enum Listing {
    Layers(Vec<LsEntry>),
    Containers(Vec<KeptContainer>),
}

pub fn exec(env: &Env, args: &LsArgs) -> Result<LsReport> {
    let backend = env.backend()?;
    let report = |listing, warning| LsReport {
        version: LS_VERSION,
        listing,
        warning,
        verbose: env.verbose,
    };
    if args.failed {
        return Ok(report(
            Listing::Containers(kept(&env.ctx, &*backend)?),
            None,
        ));
    }
    let patterns = match args.labels.is_empty() {
        true => vec![],
        false => crate::ops::parse_patterns(&args.labels)?,
    };
    let systems = crate::ops::systems(&env.ctx.ws, &args.system.system)?;
    let (entries, warning) = ls(&env.ctx, &patterns, &systems, &*backend)?;
    Ok(report(Listing::Layers(entries), warning))
}

impl Report for LsReport {
    fn render(&self) -> String {
        match &self.listing {
            Listing::Layers(entries) => render(entries, self.verbose),
            Listing::Containers(k) => render_kept(k),
        }
    }

    fn notes(&self) -> Vec<String> {
        self.warning
            .iter()
            .map(|w| format!("warning: {w}"))
            .collect()
    }
}

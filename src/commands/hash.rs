//! `layerbuild hash LABEL...`: layers' digests and a summary of their inputs.
//! No I/O of its own: arguments to options, the op's reports to text.

use super::{Env, Layers, Report};
use crate::cli::HashArgs;
use crate::error::Result;
use crate::ops::hash::{HashReport, hash, render};

pub fn exec(env: &Env, args: &HashArgs) -> Result<Layers<Hashed>> {
    let patterns = crate::ops::parse_patterns(&args.labels)?;
    let mut out = vec![];
    for system in crate::ops::systems(&env.ctx.ws, &args.system.system)? {
        for report in hash(&env.ctx, &patterns, system)? {
            out.push(Hashed {
                report,
                verbose: env.verbose,
            });
        }
    }
    Ok(Layers::new(&args.labels, &args.system.system, out))
}

/// One layer's hash, with how much of it to show.
#[derive(serde::Serialize)]
#[serde(transparent)]
pub struct Hashed {
    report: HashReport,
    #[serde(skip)]
    verbose: bool,
}

impl Report for Hashed {
    fn render(&self) -> String {
        render(&self.report, self.verbose)
    }
}

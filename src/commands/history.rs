//! `layerbuild history`: the recent builds, newest first.
//! No I/O of its own: arguments to options, the op's report to text.

use serde::Serialize;

use super::{Env, Report};
use crate::cli::HistoryArgs;
use crate::error::Result;
use crate::ops::history::{HistoryEntry, HistoryOptions, history, render};

#[derive(Serialize)]
pub struct HistoryReport {
    version: u32,
    /// The system asked for; `null`: every system's builds.
    system: Option<String>,
    builds: Vec<HistoryEntry>,
}

pub fn exec(env: &Env, args: &HistoryArgs) -> Result<HistoryReport> {
    let patterns = if args.labels.is_empty() {
        vec![]
    } else {
        crate::ops::parse_patterns(&args.labels)?
    };
    let builds = history(
        &env.ctx,
        &HistoryOptions {
            patterns: &patterns,
            system: args.system.as_deref(),
            limit: args.limit,
        },
    )?;
    Ok(HistoryReport {
        version: 1,
        system: args.system.clone(),
        builds,
    })
}

impl Report for HistoryReport {
    fn render(&self) -> String {
        render(&self.builds)
    }
}

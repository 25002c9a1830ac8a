//! `layerbuild log LABEL`: the log of a layer's last build (or of a digest).
//! No I/O of its own: arguments to options, the op's report to text.

use serde::Serialize;

use super::{Env, Report};
use crate::cli::LogArgs;
use crate::error::Result;

/// The log, with a header line (on stderr) saying which build it is.
#[derive(Serialize)]
pub struct LogReport {
    header: String,
    text: String,
}

pub fn exec(env: &Env, args: &LogArgs) -> Result<LogReport> {
    let label = crate::ops::one_layer(&env.ctx.graph, &args.label)?;
    let (row, text) = crate::ops::log::log(
        &env.ctx,
        &label,
        crate::ops::one_system(&env.ctx.ws, &args.system.system, "log")?.as_deref(),
        args.digest.as_deref(),
    )?;
    let header = format!(
        "# {} {} at {} (digest {}, {})",
        row.label,
        row.status,
        crate::ops::format_time(row.started_at),
        row.digest.short(),
        row.log_path.as_deref().unwrap_or("")
    );
    Ok(LogReport { header, text })
}

impl Report for LogReport {
    fn render(&self) -> String {
        self.text.clone()
    }

    fn notes(&self) -> Vec<String> {
        vec![self.header.clone()]
    }
}

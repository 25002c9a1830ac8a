//! `layerbuild affected --since REV`: the layers a change touches.
//! No I/O of its own: arguments to options, the op's report to text.

use super::{Env, Report};
use crate::cli::AffectedArgs;
use crate::error::Result;
use crate::ops::affected::{AffectedReport, affected, render};

pub fn exec(env: &Env, args: &AffectedArgs) -> Result<AffectedReport> {
    affected(
        &env.ctx,
        &args.since,
        args.until.as_deref(),
        crate::ops::one_system(&env.ctx.ws, &args.system.system, "affected")?.as_deref(),
    )
}

impl Report for AffectedReport {
    fn render(&self) -> String {
        render(self)
    }
}

//! `layerbuild gc`: removes old images, kept containers and logs.
//! No I/O of its own: arguments to options, the op's report to text.

use super::{Env, Report};
use crate::cli::GcArgs;
use crate::error::{Error, Result};
use crate::ops::gc::{GcOptions, GcReport, check_keep, gc, render};

pub fn exec(env: &Env, args: &GcArgs) -> Result<GcReport> {
    let opts = GcOptions {
        keep: check_keep(args.keep)?,
        dry_run: args.dry_run,
    };
    gc(&env.ctx, &opts, &*env.backend()?)
}

impl Report for GcReport {
    fn render(&self) -> String {
        render(self)
    }

    fn outcome(&self) -> Result<()> {
        match self.failures() {
            0 => Ok(()),
            n => Err(Error::env(format!(
                "gc could not remove {n} item(s); see above"
            ))),
        }
    }
}

//! `layerbuild hash LABEL`: a layer's digest and a summary of its inputs.
//! No I/O of its own: arguments to options, the op's report to text.

use super::{Env, Report};
use crate::cli::HashArgs;
use crate::error::Result;
use crate::ops::hash::{HashReport, hash, render};

pub fn exec(env: &Env, args: &HashArgs) -> Result<HashReport> {
    let label = crate::ops::parse_label(&args.label)?;
    hash(&env.ctx, &label, args.system.system.as_deref())
}

impl Report for HashReport {
    fn render(&self) -> String {
        render(self)
    }
}

//! `layerbuild why LABEL`: why a layer would be rebuilt (or since when it
//! changed), down to the file, variable or package.

use super::{Env, Report};
use crate::cli::WhyArgs;
use crate::error::Result;
use crate::ops::why::{WhyOptions, WhyReport, why};

pub fn exec(env: &Env, args: WhyArgs) -> Result<WhyReport> {
    let opts = WhyOptions {
        label: crate::ops::parse_label(&args.label)?,
        system: args.system.system,
        since: args.since,
        show_values: args.show_values,
    };
    why(&env.ctx, &opts, &*env.backend()?)
}

impl Report for WhyReport {
    fn render(&self) -> String {
        self.text().to_string()
    }
}

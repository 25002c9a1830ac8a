//! `layerbuild hash-diff A B`: the difference between two recorded digests.
//! No I/O of its own: arguments to options, the op's report to text.

use super::{Env, Report};
use crate::cli::HashDiffArgs;
use crate::error::Result;
use crate::ops::why::{HashDiffReport, hash_diff};

pub fn exec(env: &Env, args: &HashDiffArgs) -> Result<HashDiffReport> {
    hash_diff(&env.ctx, &args.a, &args.b, args.show_values)
}

impl Report for HashDiffReport {
    fn render(&self) -> String {
        self.text().to_string()
    }
}

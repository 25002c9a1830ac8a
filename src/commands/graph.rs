//! `layerbuild graph`: the layer graph as text or dot.
//! No I/O of its own: arguments to options, the op's report to text.

use super::{Env, Text};
use crate::cli::GraphArgs;

pub fn exec(env: &Env, args: &GraphArgs) -> Text {
    Text(crate::ops::graph::graph(&env.ctx, args.format))
}

//! `layerbuild graph`: the layer graph as text or dot.

use super::{Env, Text};
use crate::cli::GraphArgs;

pub fn exec(env: &Env, args: &GraphArgs) -> Text {
    Text(crate::ops::graph::graph(&env.ctx, args.format))
}

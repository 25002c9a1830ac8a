//! `layerbuild push LABEL DESTINATION`: pushes a built layer's image.
//! No I/O of its own: the output is performed by `export`'s `OutputJob`.

use super::Env;
use crate::cli::PushArgs;
use crate::error::Result;
use crate::workspace::Output;

pub fn exec(env: &Env, args: PushArgs) -> Result<super::export::OutputReport> {
    let label = crate::ops::one_layer(&env.ctx.graph, &args.label)?;
    let output = Output::Push {
        destination: args.destination,
        tls_verify: args.tls_verify,
    };
    super::export::run_output(
        env,
        &label,
        crate::ops::one_system(&env.ctx.ws, &args.system.system, "push")?.as_deref(),
        &output,
        args.force,
    )
}

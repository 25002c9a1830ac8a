//! `layerbuild push LABEL DESTINATION`: pushes a built layer's image.
//! No I/O of its own: the output is performed by `export`'s `OutputJob`.

use super::Env;
use crate::cli::PushArgs;
use crate::error::Result;
use crate::ops::export::OutputResult;
use crate::workspace::Output;

pub fn exec(env: &Env, args: PushArgs) -> Result<OutputResult> {
    let label = crate::ops::parse_label(&args.label)?;
    let output = Output::Push {
        destination: args.destination,
        tls_verify: args.tls_verify,
    };
    super::export::run_output(
        env,
        &label,
        args.system.system.as_deref(),
        &output,
        args.force,
    )
}

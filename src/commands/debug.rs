//! `layerbuild debug LABEL`: a shell (or a command) in a container of the
//! layer's image or of its parent; exits with the command's code.
//! No I/O of its own: the op runs the container attached to the terminal.

use serde::Serialize;

use super::{Env, Report};
use crate::cli::DebugArgs;
use crate::error::{Error, Result};
use crate::ops::debug::{DebugOptions, debug};

/// The exit code of the command run in the container.
#[derive(Serialize)]
pub struct DebugReport {
    code: i32,
}

pub fn exec(env: &Env, args: DebugArgs) -> Result<DebugReport> {
    let opts = DebugOptions {
        label: crate::ops::one_layer(&env.ctx.graph, &args.label)?,
        system: crate::ops::one_system(&env.ctx.ws, &args.system.system, "debug")?,
        fresh: args.fresh,
        isolation: args.isolation,
        command: args.command,
    };
    let backend = env.backend()?;
    // Ctrl-C belongs to the shell in the container.
    crate::interrupt::set_mode(crate::interrupt::Mode::Interactive);
    let code = debug(&env.ctx, &opts, &*backend)?;
    Ok(DebugReport { code })
}

impl Report for DebugReport {
    fn render(&self) -> String {
        String::new()
    }

    fn outcome(&self) -> Result<()> {
        match self.code {
            0 => Ok(()),
            c => Err(Error::Exit(c.clamp(1, 255) as u8)),
        }
    }
}

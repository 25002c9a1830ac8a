//! `layerbuild cache verify` and `cache rebuild-index`.
//! No I/O of its own: arguments to options, the op's report to text.

use serde::Serialize;

use super::{Env, Report};
use crate::cli::CacheCommand;
use crate::error::{Error, Result};
use crate::ops::cache::{
    RebuildReport, VerifyReport, rebuild_index, render_rebuild, render_verify, verify,
};

#[derive(Serialize)]
#[serde(untagged)]
pub enum CacheReport {
    Verify(VerifyReport),
    Rebuild(RebuildReport),
}

pub fn exec(env: &Env, cmd: CacheCommand) -> Result<CacheReport> {
    let backend = env.backend()?;
    Ok(match cmd {
        CacheCommand::Verify(args) => {
            CacheReport::Verify(verify(&env.ctx, &*backend, args.repair)?)
        }
        CacheCommand::RebuildIndex(_) => CacheReport::Rebuild(rebuild_index(&env.ctx, &*backend)?),
    })
}

impl Report for CacheReport {
    fn render(&self) -> String {
        match self {
            CacheReport::Verify(r) => render_verify(r),
            CacheReport::Rebuild(r) => render_rebuild(r),
        }
    }

    fn notes(&self) -> Vec<String> {
        match self {
            CacheReport::Rebuild(r) => r.notes.iter().map(|n| format!("note: {n}")).collect(),
            CacheReport::Verify(_) => vec![],
        }
    }

    fn outcome(&self) -> Result<()> {
        match self {
            CacheReport::Verify(r) if r.unresolved() > 0 => Err(Error::Exit(1)),
            _ => Ok(()),
        }
    }
}

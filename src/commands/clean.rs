//! `layerbuild clean`: removes the working containers kept from failed builds.
//! No I/O of its own: arguments to options, the op's report to text.

use serde::Serialize;

use super::{Env, Report};
use crate::error::Result;

/// The containers removed.
#[derive(Serialize)]
#[serde(transparent)]
pub struct CleanReport(Vec<String>);

pub fn exec(env: &Env) -> Result<CleanReport> {
    Ok(CleanReport(crate::ops::debug::clean_failed(
        &env.ctx,
        &*env.backend()?,
    )?))
}

impl Report for CleanReport {
    fn render(&self) -> String {
        if self.0.is_empty() {
            return "no kept containers to remove\n".into();
        }
        self.0.iter().map(|c| format!("removed {c}\n")).collect()
    }
}

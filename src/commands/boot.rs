//! `layerbuild boot LABEL [--interactive] [-- CMD...]`: boots a built
//! layer's image in QEMU and runs its boot tests (or CMD).

use serde::Serialize;

use super::{Env, Report};
use crate::cli::BootArgs;
use crate::error::{Error, Result};
use crate::ops::boot::{BootOptions, boot};
use crate::ops::test::{TestReport, render};

/// `boot --json`: `test --json`'s report of the one layer booted.
#[derive(Serialize)]
pub struct BootReport {
    #[serde(flatten)]
    report: TestReport,
    #[serde(skip)]
    note: Option<String>,
    #[serde(skip)]
    interactive: bool,
}

pub fn exec(env: &Env, args: BootArgs) -> Result<BootReport> {
    let label = crate::ops::one_layer(&env.ctx.graph, &args.label)?;
    let opts = BootOptions {
        label,
        system: crate::ops::one_system(&env.ctx.ws, &args.system.system, "boot")?,
        command: (!args.command.is_empty()).then(|| shell_words::join(&args.command)),
        interactive: args.interactive,
    };
    let (report, note) = boot(&env.ctx, &opts, &*env.backend()?)?;
    Ok(BootReport {
        report,
        note,
        interactive: args.interactive,
    })
}

impl Report for BootReport {
    fn notes(&self) -> Vec<String> {
        self.note.iter().map(|n| format!("note: {n}")).collect()
    }

    fn render(&self) -> String {
        if self.interactive {
            return String::new();
        }
        render(&self.report)
    }

    fn outcome(&self) -> Result<()> {
        if self.report.failed > 0 {
            return Err(Error::BuildFailed(format!(
                "{} boot test(s) failed",
                self.report.failed
            )));
        }
        Ok(())
    }
}

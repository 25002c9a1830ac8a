//! `layerbuild test LABEL...`: runs layers' image tests on their built images.

use super::{Env, Report};
use crate::cli::TestArgs;
use crate::error::{Error, Result};
use crate::ops::test::{TestOptions, TestReport, render, test};

pub fn exec(env: &Env, args: TestArgs) -> Result<TestReport> {
    let opts = TestOptions {
        patterns: crate::ops::parse_patterns(&args.labels)?,
        system: crate::ops::one_system(&env.ctx.ws, &args.system.system, "test")?,
        all: args.all,
        isolation: args.isolation,
        boot: args.boot,
    };
    let system = opts.system.clone();
    let report = test(&env.ctx, &opts, &*env.backend()?)?;
    if let Some(path) = &args.junit {
        let layers = report.layers.iter();
        super::write_junit(
            path,
            system.as_deref(),
            layers.map(|l| (l.label.as_str(), l.tests.as_slice())),
        )?;
    }
    Ok(report)
}

impl Report for TestReport {
    fn notes(&self) -> Vec<String> {
        self.notes.iter().map(|n| format!("note: {n}")).collect()
    }

    fn render(&self) -> String {
        render(self)
    }

    fn outcome(&self) -> Result<()> {
        if self.failed > 0 {
            return Err(Error::BuildFailed(format!(
                "{} test(s) failed",
                self.failed
            )));
        }
        Ok(())
    }
}

//! `layerbuild lint`: checks the Layerfile and the plays without building;
//! reports every problem rather than stopping at the first.

use std::path::Path;

use super::Report;
use crate::cli::LintArgs;
use crate::error::{Error, Result};
use crate::ops::lint::{LintOptions, LintReport, LintTools, lint};

pub fn exec(dir: &Path, args: &LintArgs) -> Result<LintReport> {
    let opts = LintOptions {
        patterns: crate::ops::parse_patterns(&super::labels_or_all(&args.labels))?,
        system: match args.system.system.as_slice() {
            [] => None,
            [one] => Some(one.clone()),
            several => {
                return Err(Error::input(format!(
                    "`lint` works on one system at a time; --system {} names several",
                    several.join(" --system ")
                ))
                .with_hint("run it once per system"));
            }
        },
    };
    let root = crate::workspace::find_root(dir)?;
    lint(&root, &opts, &LintTools::default())
}

impl Report for LintReport {
    fn render(&self) -> String {
        LintReport::render(self)
    }

    fn notes(&self) -> Vec<String> {
        self.notes.iter().map(|n| format!("note: {n}")).collect()
    }

    fn outcome(&self) -> Result<()> {
        if self.errors() > 0 {
            return Err(Error::Exit(1));
        }
        Ok(())
    }
}

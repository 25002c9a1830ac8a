//! `layerbuild why LABEL...`: why layers would be rebuilt (or since when
//! they changed), down to the file, variable or package.

use super::{Env, Layers, Report};
use crate::cli::WhyArgs;
use crate::error::Result;
use crate::ops::why::{WhyOptions, WhyReport, why};

pub fn exec(env: &Env, args: WhyArgs) -> Result<Layers<WhyReport>> {
    let patterns = crate::ops::parse_patterns(&args.labels)?;
    let labels = env.ctx.graph.matching(&patterns)?;
    let systems = crate::ops::systems(&env.ctx.ws, &args.system.system)?;
    let backend = env.backend()?;
    let mut out = vec![];
    for system in systems {
        for label in &labels {
            let opts = WhyOptions {
                label: label.clone(),
                system: system.map(|s| s.name.clone()),
                since: args.since.clone(),
                show_values: args.show_values,
            };
            out.push(why(&env.ctx, &opts, &*backend)?);
        }
    }
    Ok(Layers::new(&args.labels, &args.system.system, out))
}

impl Report for WhyReport {
    fn render(&self) -> String {
        self.text().to_string()
    }
}

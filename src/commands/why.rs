//! `layerbuild why LABEL...`: why layers would be rebuilt (or since when
//! they changed), down to the file, variable or package.

use super::{Env, Layers, Report};
use crate::cli::WhyArgs;
use crate::error::Result;
use crate::ops::why::{ReleaseWhyOptions, WhyOptions, WhyReport, why, why_release};

pub fn exec(env: &Env, args: WhyArgs) -> Result<Layers<WhyReport>> {
    if !args.release.is_empty() {
        return releases(env, args).map(Layers::One);
    }
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

/// `why [LABEL] --release A [--release B]`: one layer, one system.
fn releases(env: &Env, args: WhyArgs) -> Result<WhyReport> {
    let label = match args.labels.as_slice() {
        [] => None,
        [one] => Some(crate::ops::one_layer(&env.ctx.graph, one)?),
        _ => {
            return Err(crate::error::Error::input(
                "why --release compares the releases of one layer",
            )
            .with_hint("name one layer, e.g. layerbuild why //compute/slurm --release stable"));
        }
    };
    let opts = ReleaseWhyOptions {
        label,
        system: crate::ops::one_system(&env.ctx.ws, &args.system.system, "why --release")?,
        releases: args.release,
        show_values: args.show_values,
    };
    why_release(&env.ctx, &opts)
}

impl Report for WhyReport {
    fn render(&self) -> String {
        self.text().to_string()
    }
}

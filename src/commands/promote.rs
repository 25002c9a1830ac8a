//! `layerbuild promote LABEL --to NAME` and `layerbuild releases`: a
//! release tag pointed at a tested layer's image, and the promotions
//! recorded. I/O: reads `CI_JOB_URL` and `USER` (who promotes); the ops
//! do the rest.

use serde::Serialize;

use super::{Env, Report};
use crate::cache::ReleaseRecord;
use crate::cli::{PromoteArgs, ReleasesArgs};
use crate::error::Result;
use crate::ops::promote::{
    PromoteOptions, Promotion, ReleasesOptions, promote, promote_list, promoter, releases,
    render_releases,
};
use crate::status::PromoteStatus;

pub fn exec(env: &Env, args: PromoteArgs) -> Result<Promotion> {
    let label = crate::ops::one_layer(&env.ctx.graph, &args.label)?;
    let system = crate::ops::one_system(&env.ctx.ws, &args.system.system, "promote")?;
    let by = promoter(
        std::env::var("CI_JOB_URL").ok().as_deref(),
        std::env::var("USER").ok().as_deref(),
    );
    let opts = PromoteOptions {
        label,
        system,
        release: args.to,
        digest: args.digest,
        registry: args.registry,
        dry_run: args.dry_run,
        force: args.force,
        by,
    };
    let backend = env.backend()?;
    // Every architecture the layer is built for (or those --arch names).
    let contexts: Vec<_> = env
        .arch_contexts()?
        .into_iter()
        .filter(|c| c.ws.layers.contains_key(&opts.label))
        .collect();
    match contexts.len() {
        0 | 1 => promote(contexts.first().unwrap_or(&env.ctx), &opts, &*backend),
        _ => promote_list(&contexts, &opts, &*backend),
    }
}

impl Report for Promotion {
    fn render(&self) -> String {
        let mut s = self.render_head();
        for a in &self.architectures {
            s.push_str(&format!(
                "  {}: {} ({})\n",
                a.arch, a.source, a.manifest_digest
            ));
        }
        s
    }
}

trait Head {
    fn render_head(&self) -> String;
}

impl Head for Promotion {
    fn render_head(&self) -> String {
        let moved = match &self.previous {
            Some(p) => format!(" (it held {})", p.short()),
            None => String::new(),
        };
        match self.status {
            PromoteStatus::Promoted => format!(
                "promoted {} at {} to {}{moved}\n  {} -> {}\n",
                self.label,
                self.digest.short(),
                self.release,
                self.reference,
                self.manifest_digest
            ),
            PromoteStatus::WouldPromote => format!(
                "would promote {} at {} to {}{moved} (dry run: nothing changed)\n  {} -> {}\n",
                self.label,
                self.digest.short(),
                self.release,
                self.reference,
                self.manifest_digest
            ),
            PromoteStatus::UpToDate => format!(
                "{} of {} already is {}: nothing to do\n  {} -> {}\n",
                self.release,
                self.label,
                self.digest.short(),
                self.reference,
                self.manifest_digest
            ),
        }
    }
}

#[derive(Serialize)]
pub struct ReleasesReport {
    version: u32,
    releases: Vec<ReleaseRecord>,
}

pub fn exec_releases(env: &Env, args: &ReleasesArgs) -> Result<ReleasesReport> {
    let (labels, names): (Vec<String>, Vec<String>) = args
        .filters
        .iter()
        .cloned()
        .partition(|f| f.starts_with("//"));
    let patterns = if labels.is_empty() {
        vec![]
    } else {
        crate::ops::parse_patterns(&labels)?
    };
    let releases = releases(
        &env.ctx,
        &ReleasesOptions {
            patterns: &patterns,
            names: &names,
        },
    )?;
    Ok(ReleasesReport {
        version: 1,
        releases,
    })
}

impl Report for ReleasesReport {
    fn render(&self) -> String {
        render_releases(&self.releases)
    }
}

//! `layerbuild publish LABEL --release NAME`: a tested layer's netboot
//! export published to the `[publish.s3]` bucket. I/O: reads `CI_JOB_URL`
//! and `USER` (who publishes); the op does the rest, through the `aws`
//! command line.

use super::{Env, Report};
use crate::cli::PublishArgs;
use crate::error::Result;
use crate::executor::s3::AwsCli;
use crate::ops::export::human_bytes;
use crate::ops::promote::promoter;
use crate::ops::publish::{Publication, PublishOptions, publish, settings};
use crate::status::{ObjectStatus, PublishStatus};

/// One publication, or one per architecture (each under its own
/// `<release>/<arch>/`), in order.
#[derive(serde::Serialize)]
#[serde(untagged)]
pub enum PublishReport {
    One(Box<Publication>),
    Several {
        version: u32,
        publications: Vec<Publication>,
    },
}

pub fn exec(env: &Env, args: PublishArgs) -> Result<PublishReport> {
    let label = crate::ops::one_layer(&env.ctx.graph, &args.label)?;
    let system = crate::ops::one_system(&env.ctx.ws, &args.system.system, "publish")?;
    let store = AwsCli::new(settings(&env.ctx.ws)?);
    let by = promoter(
        std::env::var("CI_JOB_URL").ok().as_deref(),
        std::env::var("USER").ok().as_deref(),
    );
    let backend = env.backend()?;
    let mut publications = vec![];
    for ctx in env.arch_contexts()? {
        if !ctx.ws.layers.contains_key(&label) {
            continue;
        }
        let opts = PublishOptions {
            label: label.clone(),
            system: system.clone(),
            release: args.release.clone(),
            arch: ctx.ws.arch.name().into(),
            by: by.clone(),
            force: args.force,
        };
        publications.push(publish(&ctx, &opts, &*backend, &store)?);
    }
    Ok(match publications.len() {
        1 => PublishReport::One(Box::new(publications.remove(0))),
        _ => PublishReport::Several {
            version: 1,
            publications,
        },
    })
}

impl Report for PublishReport {
    fn render(&self) -> String {
        match self {
            PublishReport::One(p) => p.render(),
            PublishReport::Several { publications, .. } => {
                publications.iter().map(Report::render).collect()
            }
        }
    }
}

impl Report for Publication {
    fn render(&self) -> String {
        let mut s = match self.status {
            PublishStatus::Published => {
                let moved = match &self.previous {
                    Some(p) => format!(" (it held {})", p.short()),
                    None => String::new(),
                };
                format!(
                    "published {} at {} as {} ({}){moved}\n",
                    self.label,
                    self.digest.short(),
                    self.release,
                    self.arch
                )
            }
            PublishStatus::UpToDate => format!(
                "{} of {} already is {} ({}): nothing to do\n",
                self.release,
                self.label,
                self.digest.short(),
                self.arch
            ),
        };
        for o in &self.objects {
            let what = match o.status {
                ObjectStatus::Uploaded => "uploaded, checked",
                ObjectStatus::Present => "already there",
            };
            s.push_str(&format!("  {} ({}, {what})\n", o.key, human_bytes(o.bytes)));
        }
        s.push_str(&format!("  {}\n  {}\n", self.ipxe, self.pointer));
        s
    }
}

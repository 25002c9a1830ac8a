//! `layerbuild ci gitlab`: writes a GitLab child pipeline for the layers
//! to build (to a file, atomically, or stdout).

use serde::Serialize;

use super::{Env, Report};
use crate::cli::GitlabArgs;
use crate::error::Result;
use crate::ops::ci::{GitlabOptions, gitlab as generate};

/// The pipeline's text (none when it went to a file) and the warnings.
#[derive(Serialize)]
pub struct PipelineReport {
    yaml: String,
    warnings: Vec<String>,
    notes: Vec<String>,
}

impl Report for PipelineReport {
    fn render(&self) -> String {
        self.yaml.clone()
    }

    fn notes(&self) -> Vec<String> {
        let warnings = self.warnings.iter().map(|w| format!("warning: {w}"));
        warnings
            .chain(self.notes.iter().map(|n| format!("note: {n}")))
            .collect()
    }
}

pub fn gitlab(env: &Env, args: &GitlabArgs) -> Result<PipelineReport> {
    let opts = GitlabOptions {
        patterns: crate::ops::parse_patterns(&super::labels_or_all(&args.labels))?,
        // Several systems, or `all`: one pipeline covering them, a layer
        // they share (the same digest) built by one job.
        system: args.system.system.clone(),
        since: args
            .since
            .as_deref()
            .map(|given| crate::ops::ci::resolve_since(given, &|v| std::env::var(v).ok())),
        registry: args.registry.clone(),
    };
    let p = generate(&env.ctx, &opts, &*env.backend()?)?;
    let yaml = match &args.output {
        Some(path) => {
            super::write_atomically(path, &p.yaml)?;
            String::new()
        }
        None => p.yaml,
    };
    Ok(PipelineReport {
        yaml,
        warnings: p.warnings,
        notes: p.notes,
    })
}

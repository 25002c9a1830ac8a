//! `layerbuild ci gitlab`: writes a GitLab child pipeline for the layers
//! to build (to a file, atomically, or stdout).

use super::{Env, Text};
use crate::cli::GitlabArgs;
use crate::error::Result;
use crate::ops::ci::{GitlabOptions, gitlab as generate};

pub fn gitlab(env: &Env, args: &GitlabArgs) -> Result<Text> {
    let opts = GitlabOptions {
        patterns: crate::ops::parse_patterns(&super::labels_or_all(&args.labels))?,
        system: args.system.system.clone(),
        since: args.since.clone(),
        registry: args.registry.clone(),
    };
    let text = generate(&env.ctx, &opts, &*env.backend()?)?;
    match &args.output {
        Some(path) => {
            super::write_atomically(path, &text)?;
            Ok(Text(String::new()))
        }
        None => Ok(Text(text)),
    }
}

//! `layerbuild export LABEL -o FILE`: writes a built layer's image as a
//! file (squashfs, tar, OCI archive). Shares the output report with `push`.

use serde::Serialize;

use super::{Env, Report};
use crate::cli::ExportArgs;
use crate::error::{Error, Result};
use crate::ops::export::{OutputJob, OutputResult, built_image, render};
use crate::workspace::{Output, SQUASHFS_COMPRESSORS};

/// `export --json` and `push --json`: one output, with the schema version.
#[derive(Serialize)]
pub struct OutputReport {
    version: u32,
    #[serde(flatten)]
    result: OutputResult,
}

pub fn exec(env: &Env, args: ExportArgs) -> Result<OutputReport> {
    let label = crate::ops::one_layer(&env.ctx.graph, &args.label)?;
    if let Some(c) = &args.compression
        && (!args.format.has_squashfs() || !SQUASHFS_COMPRESSORS.contains(&c.as_str()))
    {
        return Err(Error::input(format!(
            "--compression {c} does not apply to {}",
            args.format.name()
        ))
        .with_hint(format!(
            "--compression is for squashfs and netboot: {}",
            SQUASHFS_COMPRESSORS.join(", ")
        )));
    }
    let path = std::path::absolute(&args.output).map_err(|e| Error::io(&args.output, e))?;
    let output = Output::File {
        format: args.format,
        path,
        compression: args.compression,
    };
    run_output(
        env,
        &label,
        crate::ops::one_system(&env.ctx.ws, &args.system.system, "export")?.as_deref(),
        &output,
        args.force,
    )
}

/// One output of a layer built at its current digest.
pub(super) fn run_output(
    env: &Env,
    label: &crate::label::Label,
    system: Option<&str>,
    output: &Output,
    force: bool,
) -> Result<OutputReport> {
    let backend = env.backend()?;
    let (digest, image_id) = built_image(&env.ctx, label, system, &*backend)?;
    let cache = std::sync::Mutex::new(crate::cache::Cache::open(&env.ctx.ws.db_path())?);
    let job = OutputJob {
        ws: &env.ctx.ws,
        cache: &cache,
        exporter: &*backend,
        label,
        digest: &digest,
        image_id: &image_id,
        force,
    };
    Ok(OutputReport {
        version: 1,
        result: job.perform(output),
    })
}

impl Report for OutputReport {
    /// A failure is said once, as the error (and in the JSON object).
    fn render(&self) -> String {
        match &self.result.error {
            Some(_) => String::new(),
            None => render(std::slice::from_ref(&self.result)),
        }
    }

    fn outcome(&self) -> Result<()> {
        let r = &self.result;
        let Some(e) = &r.error else {
            return Ok(());
        };
        let hint = if e.contains("server gave HTTP response to HTTPS client") {
            "\n  hint: the registry speaks plain HTTP: add --tls-verify=false (or serve it over HTTPS)"
        } else {
            ""
        };
        Err(Error::BuildFailed(format!(
            "{} -> {}: {e}{hint}",
            r.label, r.target
        )))
    }
}

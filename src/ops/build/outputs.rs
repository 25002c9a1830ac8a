//! The layers' declared outputs (exports, pushes), done after the build
//! for every layer that has an image, each said as it finishes. I/O
//! through the backend's [`Exporter`] and the cache (what was written).

use std::sync::Mutex;

use super::report::BuildReport;
use crate::cache::Cache;
use crate::executor::Exporter;
use crate::label::Label;
use crate::ops::export;
use crate::progress::Reporter;
use crate::workspace::Workspace;

/// Performs the outputs of the layers of `report` (in `labels` order),
/// adding each result to it.
pub(super) fn run(
    ws: &Workspace,
    cache: &Mutex<Cache>,
    exporter: &dyn Exporter,
    labels: &[Label],
    report: &mut BuildReport,
    reporter: &dyn Reporter,
) {
    let mut results = vec![];
    for (label, res) in labels.iter().zip(&report.layers) {
        let Some(image_id) = &res.image_id else {
            continue;
        };
        let job = export::OutputJob {
            ws,
            cache,
            exporter,
            label,
            digest: &res.digest,
            image_id,
            force: false,
        };
        for output in &ws.layers[label].outputs {
            let what = match output {
                crate::workspace::Output::File { format, path, .. } => {
                    format!("export {} to {}", format.name(), ws.display_path(path))
                }
                crate::workspace::Output::Push { destination, .. } => {
                    format!("push to {destination}")
                }
            };
            reporter.step(&label.to_string(), &what);
            let r = job.perform(output);
            reporter.steps_done(&label.to_string());
            reporter.println(export::render(std::slice::from_ref(&r)).trim_end());
            results.push(r);
        }
    }
    report.outputs_failed = results
        .iter()
        .filter(|r| r.status == crate::status::OutputStatus::Failed)
        .count();
    report.outputs = results;
}

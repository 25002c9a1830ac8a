//! `layerbuild history`: the recent build attempts the cache recorded,
//! newest first, built and failed ones alike.
//!
//! I/O: reads the cache database (never creating it).

use serde::Serialize;

use super::Context;
use crate::cache::{BuildSummary, Cache};
use crate::digest::Digest;
use crate::error::Result;
use crate::label::Pattern;
use crate::status::{RecordSource, RecordStatus};

/// How many builds `history` lists unless told (`-n`).
pub const DEFAULT_LIMIT: usize = 20;

pub struct HistoryOptions<'a> {
    /// Layers whose builds to list; empty: every recorded label, layers
    /// since removed from the Layerfile included.
    pub patterns: &'a [Pattern],
    /// Only this system's builds; `None`: every system's.
    pub system: Option<&'a str>,
    pub limit: usize,
}

/// One recorded build attempt.
#[derive(Debug, Serialize)]
pub struct HistoryEntry {
    pub id: i64,
    /// Unix time (seconds) the attempt started.
    pub started_at: i64,
    pub label: String,
    pub system: Option<String>,
    pub outcome: RecordStatus,
    /// Where the image came from when it did not fail: built here,
    /// pulled from the registry, adopted from storage.
    pub source: RecordSource,
    pub duration_ms: i64,
    pub digest: Digest,
    /// The first line of a failure's error.
    pub error: Option<String>,
    pub log_path: Option<String>,
}

/// The newest `opts.limit` builds matching `opts`, newest first.
pub fn history(ctx: &Context, opts: &HistoryOptions<'_>) -> Result<Vec<HistoryEntry>> {
    let system = match opts.system {
        Some(s) => ctx.ws.system(Some(s))?.map(|s| s.name.as_str()),
        None => None,
    };
    let labels = super::matched_labels(&ctx.graph, opts.patterns)?;
    let Some(cache) = Cache::open_existing(&ctx.ws.db_path())? else {
        return Ok(vec![]);
    };
    Ok(cache
        .recent_builds(labels.as_deref(), system, opts.limit)?
        .into_iter()
        .map(entry)
        .collect())
}

pub(crate) fn entry(b: BuildSummary) -> HistoryEntry {
    let BuildSummary { row, source } = b;
    let outcome = if row.is_failed() {
        RecordStatus::Failed
    } else {
        RecordStatus::Built
    };
    let source = [RecordSource::Pulled, RecordSource::Adopted]
        .into_iter()
        .find(|s| s.as_str() == source)
        .unwrap_or(RecordSource::Built);
    HistoryEntry {
        id: row.id,
        started_at: row.started_at,
        error: row
            .error
            .as_deref()
            .and_then(|e| e.lines().map(str::trim).find(|l| !l.is_empty()))
            .map(str::to_string),
        label: row.label,
        system: row.system,
        outcome,
        source,
        duration_ms: row.duration_ms,
        digest: row.digest,
        log_path: row.log_path,
    }
}

/// What a person reads in the OUTCOME column: `failed`, or where the image
/// came from (`built`, `pulled`, `adopted`).
fn outcome_word(e: &HistoryEntry) -> &'static str {
    match e.outcome {
        RecordStatus::Failed => RecordStatus::Failed.as_str(),
        RecordStatus::Built => e.source.as_str(),
    }
}

/// A table, one build a line; a failure's error on the line below it.
pub fn render(entries: &[HistoryEntry]) -> String {
    if entries.is_empty() {
        return "no builds recorded\n".into();
    }
    let rows: Vec<[String; 7]> = entries
        .iter()
        .map(|e| {
            [
                crate::ops::format_time(e.started_at),
                e.label.clone(),
                e.system.clone().unwrap_or_else(|| "-".into()),
                outcome_word(e).into(),
                crate::progress::format_duration(std::time::Duration::from_millis(
                    u64::try_from(e.duration_ms).unwrap_or(0),
                )),
                e.digest.short().to_string(),
                e.log_path.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    let header = [
        "TIME", "LABEL", "SYSTEM", "OUTCOME", "DURATION", "DIGEST", "LOG",
    ];
    let mut widths = header.map(str::len);
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[&str]| {
        let mut s = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:w$}  ", w = widths[i]));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(&header);
    for (r, e) in rows.iter().zip(entries) {
        out.push_str(&line(&r.each_ref().map(String::as_str)));
        if let Some(err) = &e.error {
            out.push_str(&format!("{:w$}  error: {err}\n", "", w = widths[0]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: i64, outcome: RecordStatus, error: Option<&str>) -> HistoryEntry {
        HistoryEntry {
            id,
            started_at: 1_795_000_000 + id,
            label: "//compute/slurm".into(),
            system: Some("test".into()),
            outcome,
            source: RecordSource::Built,
            duration_ms: 2_500,
            digest: Digest::from("ab".repeat(32)),
            error: error.map(str::to_string),
            log_path: Some("cache/logs/x.log".into()),
        }
    }

    #[test]
    fn renders_a_table_with_failures_explained() {
        let out = render(&[
            entry(2, RecordStatus::Failed, Some("TASK [x] failed")),
            entry(1, RecordStatus::Built, None),
        ]);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 4, "{out}");
        assert!(lines[0].starts_with("TIME "), "{out}");
        assert!(
            lines[1].contains("//compute/slurm  test    failed   2.5s      ababababab"),
            "{out}"
        );
        assert!(lines[2].trim_start().starts_with("error: TASK [x] failed"));
        assert!(lines[3].contains(" built "), "{out}");
        assert_eq!(render(&[]), "no builds recorded\n");
    }
}

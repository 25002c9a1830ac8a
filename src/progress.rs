//! Progress reporting for builds: an indicatif display on a terminal (one
//! line per running layer showing its current step, an overall bar), plain
//! lines otherwise (one per layer event, for CI logs). Writes to stderr only;
//! stdout is kept for results (`--json`).

use crate::digest::{Digest, short};
use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::executor::StepSink;

pub trait Reporter: StepSink {
    fn started(&self, label: &str, digest: &Digest);
    fn cached(&self, label: &str, image: &str);
    fn pulled(&self, label: &str, reference: &str);
    fn built(&self, label: &str, elapsed: Duration);
    fn failed(&self, label: &str, message: &str);
    fn skipped(&self, label: &str, reason: &str);
    /// Free-form text shown above the bars (e.g. a failure's log tail).
    fn println(&self, text: &str);
    fn finish(&self);
}

pub fn reporter(total: usize) -> Box<dyn Reporter> {
    if std::io::stderr().is_terminal() {
        Box::new(TtyReporter::new(total))
    } else {
        Box::new(PlainReporter::new(total))
    }
}

/// Where a command's progress goes.
#[derive(Clone, Default)]
pub enum Progress {
    /// stderr: bars on a terminal, plain lines otherwise.
    #[default]
    Stderr,
    /// Plain lines appended to this text (a command run in-process).
    Into(std::sync::Arc<Mutex<String>>),
}

impl Progress {
    /// A reporter for `total` layers; `plain`: lines even on a terminal
    /// (with `--json`).
    pub fn reporter(&self, total: usize, plain: bool) -> Box<dyn Reporter> {
        match self {
            Progress::Stderr if plain => Box::new(PlainReporter::new(total)),
            Progress::Stderr => reporter(total),
            Progress::Into(text) => Box::new(PlainReporter {
                sink: Some(text.clone()),
                ..PlainReporter::new(total)
            }),
        }
    }
}

pub fn format_duration(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 60.0 {
        format!("{s:.1}s")
    } else {
        format!("{}m{:02}s", (s / 60.0) as u64, (s % 60.0) as u64)
    }
}

/// One line per layer event; steps are not shown (they are in the log).
pub struct PlainReporter {
    total: usize,
    done: Mutex<usize>,
    /// Lines go here instead of stderr.
    sink: Option<std::sync::Arc<Mutex<String>>>,
}

impl PlainReporter {
    pub fn new(total: usize) -> Self {
        PlainReporter {
            total,
            done: Mutex::new(0),
            sink: None,
        }
    }

    fn line(&self, finished: bool, text: String) {
        let mut done = self.done.lock().unwrap_or_else(|e| e.into_inner());
        if finished {
            *done += 1;
        }
        self.say(&format!("[{}/{}] {text}", *done, self.total));
    }

    fn say(&self, text: &str) {
        match &self.sink {
            Some(sink) => {
                let mut s = sink.lock().unwrap_or_else(|e| e.into_inner());
                s.push_str(text);
                s.push('\n');
            }
            None => eprintln!("{text}"),
        }
    }
}

impl StepSink for PlainReporter {
    fn step(&self, _label: &str, _step: &str) {}
}

impl Reporter for PlainReporter {
    fn started(&self, label: &str, digest: &Digest) {
        self.line(
            false,
            format!("{label} building (digest {})", digest.short()),
        );
    }
    fn cached(&self, label: &str, image: &str) {
        self.line(true, format!("{label} up to date (image {})", short(image)));
    }
    fn built(&self, label: &str, elapsed: Duration) {
        self.line(
            true,
            format!("{label} built in {}", format_duration(elapsed)),
        );
    }
    fn pulled(&self, label: &str, reference: &str) {
        self.line(true, format!("{label} pulled from {reference}"));
    }
    fn failed(&self, label: &str, message: &str) {
        self.line(true, format!("{label} FAILED: {message}"));
    }
    fn skipped(&self, label: &str, reason: &str) {
        self.line(true, format!("{label} skipped: {reason}"));
    }
    fn println(&self, text: &str) {
        self.say(text);
    }
    fn finish(&self) {}
}

pub struct TtyReporter {
    multi: MultiProgress,
    overall: ProgressBar,
    bars: Mutex<HashMap<String, ProgressBar>>,
}

impl TtyReporter {
    pub fn new(total: usize) -> Self {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let overall = multi.add(ProgressBar::new(total as u64));
        overall.set_style(
            ProgressStyle::with_template("{bar:30.cyan/blue} {pos}/{len} layers  {elapsed}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        TtyReporter {
            multi,
            overall,
            bars: Mutex::new(HashMap::new()),
        }
    }

    fn end(&self, label: &str, text: String) {
        if let Some(bar) = self
            .bars
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(label)
        {
            bar.finish_and_clear();
            self.multi.remove(&bar);
        }
        self.overall.inc(1);
        let _ = self.multi.println(text);
    }
}

impl StepSink for TtyReporter {
    fn step(&self, label: &str, step: &str) {
        if let Some(bar) = self
            .bars
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(label)
        {
            bar.set_message(step.to_string());
        }
    }
}

impl Reporter for TtyReporter {
    fn started(&self, label: &str, _digest: &Digest) {
        let bar = self
            .multi
            .insert_before(&self.overall, ProgressBar::new_spinner());
        bar.set_style(
            ProgressStyle::with_template("{spinner} {prefix:.bold} {elapsed:>4} {wide_msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.set_prefix(label.to_string());
        bar.enable_steady_tick(Duration::from_millis(120));
        self.bars
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(label.to_string(), bar);
    }
    fn cached(&self, label: &str, image: &str) {
        self.end(
            label,
            format!("  up to date  {label} (image {})", short(image)),
        );
    }
    fn built(&self, label: &str, elapsed: Duration) {
        self.end(
            label,
            format!("  built       {label} in {}", format_duration(elapsed)),
        );
    }
    fn pulled(&self, label: &str, reference: &str) {
        self.end(label, format!("  pulled      {label} from {reference}"));
    }
    fn failed(&self, label: &str, message: &str) {
        self.end(label, format!("  FAILED      {label}: {message}"));
    }
    fn skipped(&self, label: &str, reason: &str) {
        self.end(label, format!("  skipped     {label}: {reason}"));
    }
    fn println(&self, text: &str) {
        let _ = self.multi.println(text);
    }
    fn finish(&self) {
        self.overall.finish_and_clear();
    }
}

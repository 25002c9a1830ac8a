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

/// `--progress`: how progress is shown on stderr.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ProgressMode {
    /// `tty` on a terminal, else `plain`.
    #[default]
    Auto,
    /// A live display: a line per running layer with its current step.
    Tty,
    /// Lines for logs: each layer event, and each step and Ansible task
    /// with a timestamp.
    Plain,
}

/// `--color`: whether stderr is coloured.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorMode {
    /// On a terminal, unless `NO_COLOR` is set (and not empty).
    #[default]
    Auto,
    Always,
    Never,
}

/// Turns colour on stderr on or off for the process, as `mode` says.
pub fn set_color(mode: ColorMode) {
    let on = match mode {
        ColorMode::Always => true,
        ColorMode::Never => false,
        ColorMode::Auto => {
            std::io::stderr().is_terminal()
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        }
    };
    console::set_colors_enabled_stderr(on);
}

/// What a word on stderr says, for its colour.
#[derive(Clone, Copy)]
pub enum Tone {
    Bad,
    Warn,
    Good,
}

/// `word` in its tone's colour when stderr is coloured.
pub fn paint(tone: Tone, word: &str) -> String {
    let s = console::style(word).for_stderr();
    match tone {
        Tone::Bad => s.red().bold(),
        Tone::Warn => s.yellow().bold(),
        Tone::Good => s.green(),
    }
    .to_string()
}

/// A stderr line with its leading `error:` / `warning:` coloured.
pub fn painted_line(line: &str) -> String {
    for (prefix, tone) in [("error:", Tone::Bad), ("warning:", Tone::Warn)] {
        if let Some(rest) = line.strip_prefix(prefix) {
            return format!("{}{rest}", paint(tone, prefix));
        }
    }
    line.to_string()
}

pub fn reporter(total: usize, mode: ProgressMode) -> Box<dyn Reporter> {
    let tty = match mode {
        ProgressMode::Auto => std::io::stderr().is_terminal(),
        ProgressMode::Tty => true,
        ProgressMode::Plain => false,
    };
    if tty {
        Box::new(TtyReporter::new(total))
    } else {
        Box::new(PlainReporter::new(total))
    }
}

/// Where a command's progress goes.
#[derive(Clone)]
pub enum Progress {
    /// stderr, as the mode says.
    Stderr(ProgressMode),
    /// Plain lines appended to this text (a command run in-process).
    Into(std::sync::Arc<Mutex<String>>),
    /// Nowhere (`-q`): the report and the errors say how it ended.
    Quiet,
}

impl Default for Progress {
    fn default() -> Self {
        Progress::Stderr(ProgressMode::Auto)
    }
}

impl Progress {
    /// A reporter for `total` layers; `plain`: lines even on a terminal
    /// (with `--json`).
    pub fn reporter(&self, total: usize, plain: bool) -> Box<dyn Reporter> {
        match self {
            Progress::Stderr(_) if plain => Box::new(PlainReporter::new(total)),
            Progress::Stderr(mode) => reporter(total, *mode),
            Progress::Into(text) => Box::new(PlainReporter {
                sink: Some(text.clone()),
                ..PlainReporter::new(total)
            }),
            Progress::Quiet => Box::new(QuietReporter),
        }
    }
}

/// Progress that goes nowhere (`-q`).
pub struct QuietReporter;

impl StepSink for QuietReporter {
    fn step(&self, _: &str, _: &str) {}
}

impl Reporter for QuietReporter {
    fn started(&self, _: &str, _: &Digest) {}
    fn cached(&self, _: &str, _: &str) {}
    fn pulled(&self, _: &str, _: &str) {}
    fn built(&self, _: &str, _: Duration) {}
    fn failed(&self, _: &str, _: &str) {}
    fn skipped(&self, _: &str, _: &str) {}
    fn println(&self, _: &str) {}
    fn finish(&self) {}
}

pub fn format_duration(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 60.0 {
        format!("{s:.1}s")
    } else {
        format!("{}m{:02}s", (s / 60.0) as u64, (s % 60.0) as u64)
    }
}

/// One line per layer event, and a timestamped line per step and per
/// Ansible task result (`12:00:03 //compute/slurm | TASK [slurm : x] changed 0.4s`).
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
    fn step(&self, label: &str, step: &str) {
        // Tasks are said with their result.
        if !step.starts_with("ansible: ") {
            self.say(&format!("{} {label} | {step}", clock()));
        }
    }

    fn task(&self, label: &str, ev: &crate::executor::TaskEvent) {
        if ev.event != "result" {
            return;
        }
        let status = ev.status.as_deref().unwrap_or("done");
        let status = match (status, ev.ignored) {
            ("failed", true) => "failed (ignored)".to_string(),
            (s, _) => s.to_string(),
        };
        let took = ev
            .duration
            .map(|d| format!(" {}", format_duration(Duration::from_secs_f64(d.max(0.0)))))
            .unwrap_or_default();
        let kind = if ev.handler { "HANDLER" } else { "TASK" };
        let mut line = format!(
            "{} {label} | {kind} [{}] {status}{took}",
            clock(),
            ev.title()
        );
        if ev.is_failure() {
            line.push_str(&format!(": {}", ev.message()));
        }
        self.say(&line);
    }
}

/// The time of day (UTC), `HH:MM:SS`, for log lines.
fn clock() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let day = secs % 86_400;
    format!("{:02}:{:02}:{:02}", day / 3600, day % 3600 / 60, day % 60)
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
        let failed = paint(Tone::Bad, "FAILED");
        self.line(true, format!("{label} {failed}: {message}"));
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
    /// Each running layer's line, and when its current step started.
    bars: Mutex<HashMap<String, (ProgressBar, StepStart)>>,
    /// How each layer ended, and the time its line ran: the closing table.
    ended: Mutex<Vec<(String, &'static str, Option<Duration>)>>,
}

type StepStart = std::sync::Arc<Mutex<std::time::Instant>>;

impl TtyReporter {
    pub fn new(total: usize) -> Self {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let overall = multi.add(ProgressBar::new(total as u64));
        overall.set_style(
            ProgressStyle::with_template("{bar:30.cyan/blue} {pos}/{len} layers  {elapsed}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        // The elapsed time keeps ticking while layers build.
        overall.enable_steady_tick(Duration::from_millis(500));
        let m = multi.clone();
        crate::interrupt::say_through(Some(Box::new(move |text: &str| {
            let _ = m.println(text);
        })));
        TtyReporter {
            multi,
            overall,
            bars: Mutex::new(HashMap::new()),
            ended: Mutex::new(vec![]),
        }
    }

    /// A line for `label` above the overall bar: a spinner, the line's
    /// time, the current step's time, the step.
    fn spinner(&self, label: &str) -> (ProgressBar, StepStart) {
        let bar = self
            .multi
            .insert_before(&self.overall, ProgressBar::new_spinner());
        let start: StepStart = std::sync::Arc::new(Mutex::new(std::time::Instant::now()));
        let step_start = start.clone();
        // The layer's time, then its current step's.
        let style = ProgressStyle::with_template(
            "{spinner} {prefix:.bold} {elapsed:>4} {step_elapsed:>6} {wide_msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_spinner())
        .with_key(
            "step_elapsed",
            move |_: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                let since = step_start
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .elapsed();
                let _ = write!(w, "{}", format_duration(since));
            },
        );
        bar.set_style(style);
        bar.set_prefix(label.to_string());
        bar.enable_steady_tick(Duration::from_millis(120));
        (bar, start)
    }

    fn end(&self, label: &str, status: &'static str, text: String) {
        let mut took = None;
        if let Some((bar, _)) = self
            .bars
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(label)
        {
            took = Some(bar.elapsed());
            bar.finish_and_clear();
            self.multi.remove(&bar);
        }
        self.ended.lock().unwrap_or_else(|e| e.into_inner()).push((
            label.to_string(),
            status,
            took,
        ));
        self.overall.inc(1);
        let _ = self.multi.println(text);
    }
}

impl StepSink for TtyReporter {
    fn step(&self, label: &str, step: &str) {
        let mut bars = self.bars.lock().unwrap_or_else(|e| e.into_inner());
        match bars.get(label) {
            Some((bar, start)) => {
                *start.lock().unwrap_or_else(|e| e.into_inner()) = std::time::Instant::now();
                bar.set_message(step.to_string());
            }
            // A step after the layer's build (an export, a push): a line
            // of its own while it runs.
            None => {
                let entry = self.spinner(label);
                entry.0.set_message(step.to_string());
                bars.insert(label.to_string(), entry);
            }
        }
    }

    fn steps_done(&self, label: &str) {
        if let Some((bar, _)) = self
            .bars
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(label)
        {
            bar.finish_and_clear();
            self.multi.remove(&bar);
        }
    }
}

impl Reporter for TtyReporter {
    fn started(&self, label: &str, _digest: &Digest) {
        let entry = self.spinner(label);
        self.bars
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(label.to_string(), entry);
    }
    fn cached(&self, label: &str, image: &str) {
        self.end(
            label,
            "up to date",
            format!("  up to date  {label} (image {})", short(image)),
        );
    }
    fn built(&self, label: &str, elapsed: Duration) {
        let built = paint(Tone::Good, "built     ");
        self.end(
            label,
            "built",
            format!("  {built}  {label} in {}", format_duration(elapsed)),
        );
    }
    fn pulled(&self, label: &str, reference: &str) {
        self.end(
            label,
            "pulled",
            format!("  pulled      {label} from {reference}"),
        );
    }
    fn failed(&self, label: &str, message: &str) {
        let failed = paint(Tone::Bad, "FAILED    ");
        self.end(label, "FAILED", format!("  {failed}  {label}: {message}"));
    }
    fn skipped(&self, label: &str, reason: &str) {
        self.end(label, "skipped", format!("  skipped     {label}: {reason}"));
    }
    fn println(&self, text: &str) {
        let _ = self.multi.println(text);
    }
    fn finish(&self) {
        crate::interrupt::say_through(None);
        self.overall.finish_and_clear();
        let ended = self.ended.lock().unwrap_or_else(|e| e.into_inner());
        if ended.len() > 1 {
            let _ = self.multi.println(summary_table(&ended));
        }
    }
}

/// The closing table of a live display: each layer, how it ended, and
/// the time its line ran (`-` for one found up to date at once).
fn summary_table(ended: &[(String, &'static str, Option<Duration>)]) -> String {
    let width = ended
        .iter()
        .map(|(l, ..)| l.len())
        .max()
        .unwrap_or(5)
        .max(5);
    let mut t = format!("  {:<width$}  {:<10}  time", "layer", "status");
    for (label, status, took) in ended {
        let took = took.map_or_else(|| "-".to_string(), format_duration);
        let word = match *status {
            "FAILED" => paint(Tone::Bad, &format!("{status:<10}")),
            "built" => paint(Tone::Good, &format!("{status:<10}")),
            s => format!("{s:<10}"),
        };
        t.push_str(&format!("\n  {label:<width$}  {word}  {took}"));
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_closing_table_lists_each_layer_its_end_and_time() {
        let t = summary_table(&[
            ("//base/os".into(), "up to date", None),
            (
                "//compute/slurm".into(),
                "FAILED",
                Some(Duration::from_millis(3200)),
            ),
        ]);
        assert_eq!(
            console::strip_ansi_codes(&t),
            "  layer            status      time\n  //base/os        up to date  -\n  //compute/slurm  FAILED      3.2s"
        );
    }
}

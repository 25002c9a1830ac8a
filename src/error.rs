//! The one error type users see, and how each kind maps to an exit code.
//!
//! Bad input (Layerfile, labels, flags, missing files) is a [`Error::Input`]
//! and exits 2; a layer that failed to build exits 1, and so does a
//! request refused for what the cache or registry holds
//! ([`Error::Refused`]: `promote` of an untested layer); the environment
//! (buildah missing, SQLite unusable, I/O) exits 3, and so does a tool we
//! run failing outside a layer's own steps ([`Error::Tool`]).
//!
//! An input error is a diagnostic: the file, line and column, the line
//! itself (shown with a caret by annotate-snippets) and a hint. No I/O
//! here (except [`Error::io`] looking at the path once something failed).

use std::fmt;
use std::path::{Path, PathBuf};

/// Where in a file a problem is, with the offending line for display.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Location {
    pub file: Option<PathBuf>,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub source_line: Option<String>,
}

impl Location {
    pub fn file(path: impl Into<PathBuf>) -> Self {
        Location {
            file: Some(path.into()),
            ..Default::default()
        }
    }

    /// A location from a byte offset into `text` (the whole file).
    pub fn at_offset(path: impl Into<PathBuf>, text: &str, offset: usize) -> Self {
        let mut offset = offset.min(text.len());
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = text[line_start..offset].chars().count() + 1;
        let source_line = text[line_start..].lines().next().map(str::to_string);
        Location {
            file: Some(path.into()),
            line: Some(line),
            column: Some(column),
            source_line,
        }
    }

    /// A location from a 1-based line number in `text`.
    pub fn at_line(path: impl Into<PathBuf>, text: &str, line: usize) -> Self {
        Location {
            file: Some(path.into()),
            line: Some(line),
            column: None,
            source_line: text.lines().nth(line.saturating_sub(1)).map(str::to_string),
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{}", file.display())?;
            if let Some(line) = self.line {
                write!(f, ":{line}")?;
                if let Some(col) = self.column {
                    write!(f, ":{col}")?;
                }
            }
        }
        Ok(())
    }
}

/// A problem with what the user gave us.
#[derive(Debug, Clone)]
pub struct InputError {
    pub location: Option<Location>,
    pub message: String,
    pub hint: Option<String>,
}

/// A tool we run (buildah, ansible-playbook, git...) that failed: which
/// tool, the step it was doing, and the end of what it wrote to stderr.
#[derive(Debug, Clone)]
pub struct ToolFailure {
    /// The program, as the user would type it (`buildah`).
    pub tool: String,
    /// What it was asked to do (`rm layerbuild-uan-1`), empty if nothing to say.
    pub step: String,
    /// The last [`STDERR_TAIL_LINES`] lines of its stderr, trimmed.
    pub stderr_tail: String,
    /// The sentence shown for it, when the tool's owner chose one (else
    /// `TOOL STEP failed: STDERR`).
    pub message: Option<String>,
    pub hint: Option<String>,
}

/// Lines of a failed tool's stderr kept in its error.
pub const STDERR_TAIL_LINES: usize = 20;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input: exit code 2.
    #[error("{}", render_input(.0))]
    Input(Box<InputError>),
    /// One or more layers failed to build: exit code 1.
    #[error("{0}")]
    BuildFailed(String),
    /// A well-formed request refused for what the cache or the registry
    /// holds (a layer not built, pushed and tested; a release tag that
    /// holds another digest): exit code 1.
    #[error("{message}{}", .hint.as_ref().map(|h| format!("\n  hint: {h}")).unwrap_or_default())]
    Refused {
        message: String,
        hint: Option<String>,
    },
    /// Exit with this code, having printed everything already (e.g. the
    /// exit code of a command run by `debug`).
    #[error("")]
    Exit(u8),
    /// The run was stopped by Ctrl-C or SIGTERM: exit code 130.
    #[error("{0}")]
    Interrupted(String),
    /// The environment is not usable (a tool is missing, SQLite, I/O): exit code 3.
    #[error("{message}{}", .hint.as_ref().map(|h| format!("\n  hint: {h}")).unwrap_or_default())]
    Environment {
        message: String,
        hint: Option<String>,
    },
    /// A tool we run failed outside a layer's own steps (listing images,
    /// removing a container, an export): the environment, exit code 3. A
    /// layer whose steps fail is a failed build, [`Error::BuildFailed`].
    #[error("{}", render_tool(.0))]
    Tool(Box<ToolFailure>),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn input(message: impl Into<String>) -> Self {
        Error::Input(Box::new(InputError {
            location: None,
            message: message.into(),
            hint: None,
        }))
    }

    pub fn input_at(location: Location, message: impl Into<String>) -> Self {
        Error::Input(Box::new(InputError {
            location: Some(location),
            message: message.into(),
            hint: None,
        }))
    }

    pub fn env(message: impl Into<String>) -> Self {
        Error::Environment {
            message: message.into(),
            hint: None,
        }
    }

    pub fn refused(message: impl Into<String>) -> Self {
        Error::Refused {
            message: message.into(),
            hint: None,
        }
    }

    /// `tool` failed at `step` having written `stderr` (only its last
    /// [`STDERR_TAIL_LINES`] lines are kept).
    pub fn tool(tool: impl Into<String>, step: impl Into<String>, stderr: &str) -> Self {
        Error::Tool(Box::new(ToolFailure {
            tool: tool.into(),
            step: step.into(),
            stderr_tail: tail(stderr, STDERR_TAIL_LINES),
            message: None,
            hint: None,
        }))
    }

    pub fn io(path: &Path, err: std::io::Error) -> Self {
        let e = Error::env(format!("{}: {err}", path.display()));
        match io_hint(path, &err) {
            Some(h) => e.with_hint(h),
            None => e,
        }
    }

    /// The message and the hint apart (an input error's message with its
    /// location and excerpt).
    pub fn message_and_hint(&self) -> (String, Option<String>) {
        match self {
            Error::Environment { message, hint } | Error::Refused { message, hint } => {
                (message.clone(), hint.clone())
            }
            Error::Input(e) => {
                let mut bare = e.as_ref().clone();
                bare.hint = None;
                (render_input(&bare), e.hint.clone())
            }
            Error::Tool(t) => {
                let mut bare = t.as_ref().clone();
                bare.hint = None;
                (render_tool(&bare), t.hint.clone())
            }
            other => (other.to_string(), None),
        }
    }

    /// Attach a hint telling the user what to do.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        match &mut self {
            Error::Input(e) => e.hint = Some(hint.into()),
            Error::Environment { hint: h, .. } | Error::Refused { hint: h, .. } => {
                *h = Some(hint.into())
            }
            Error::Tool(t) => t.hint = Some(hint.into()),
            Error::BuildFailed(_) | Error::Exit(_) | Error::Interrupted(_) => {}
        }
        self
    }

    pub fn exit_code(&self) -> u8 {
        match self {
            Error::BuildFailed(_) | Error::Refused { .. } => 1,
            Error::Exit(c) => *c,
            Error::Interrupted(_) => crate::interrupt::EXIT_CODE,
            Error::Input(_) => 2,
            Error::Environment { .. } | Error::Tool(_) => 3,
        }
    }
}

/// An error as `--json` says it: what [`Error`] carries, field by field
/// (absent fields are `null`); `message` is the sentence alone (the human
/// rendering adds the location, the excerpt and the hint).
#[derive(Debug, serde::Serialize)]
pub struct ErrorJson {
    /// `input`, `build_failed`, `refused`, `interrupted`, `environment` or `tool`.
    pub kind: &'static str,
    pub message: String,
    pub file: Option<PathBuf>,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub hint: Option<String>,
    /// A tool error's tool, its step and the end of its stderr.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stderr: Option<String>,
    pub exit_code: u8,
}

impl Error {
    /// What `--json` says of this error.
    pub fn to_json(&self) -> ErrorJson {
        let mut j = ErrorJson {
            kind: "",
            message: String::new(),
            file: None,
            line: None,
            column: None,
            hint: None,
            tool: None,
            step: None,
            stderr: None,
            exit_code: self.exit_code(),
        };
        match self {
            Error::Input(e) => {
                j.kind = "input";
                j.message = e.message.clone();
                j.hint = e.hint.clone();
                if let Some(loc) = &e.location {
                    j.file = loc.file.clone();
                    j.line = loc.line;
                    j.column = loc.column;
                }
            }
            Error::Tool(t) => {
                j.kind = "tool";
                j.message = self.message_and_hint().0;
                j.hint = t.hint.clone();
                j.tool = Some(t.tool.clone());
                j.step = Some(t.step.clone());
                j.stderr = Some(t.stderr_tail.clone());
            }
            Error::Environment { message, hint } => {
                j.kind = "environment";
                j.message = message.clone();
                j.hint = hint.clone();
            }
            Error::BuildFailed(m) => {
                j.kind = "build_failed";
                j.message = m.clone();
            }
            Error::Refused { message, hint } => {
                j.kind = "refused";
                j.message = message.clone();
                j.hint = hint.clone();
            }
            Error::Interrupted(m) => {
                j.kind = "interrupted";
                j.message = m.clone();
            }
            Error::Exit(_) => {
                j.kind = "exit";
            }
        }
        j
    }
}

fn render_input(e: &InputError) -> String {
    let mut out = String::new();
    if let Some(loc) = &e.location {
        let shown = loc.to_string();
        if !shown.is_empty() {
            out.push_str(&shown);
            out.push_str(": ");
        }
    }
    out.push_str(&e.message);
    if let Some(excerpt) = e.location.as_ref().and_then(excerpt) {
        out.push('\n');
        out.push_str(&excerpt);
    }
    if let Some(hint) = &e.hint {
        out.push_str(&format!("\n  hint: {hint}"));
    }
    out
}

/// `buildah rm NAME failed: STDERR`, as the environment errors for tools
/// have always read, and the hint on its own line.
fn render_tool(t: &ToolFailure) -> String {
    let mut out = match &t.message {
        Some(m) => m.clone(),
        None => composed(t),
    };
    if let Some(hint) = &t.hint {
        out.push_str(&format!("\n  hint: {hint}"));
    }
    out
}

/// `TOOL STEP failed: STDERR`.
fn composed(t: &ToolFailure) -> String {
    let mut out = t.tool.clone();
    if !t.step.is_empty() {
        out.push(' ');
        out.push_str(&t.step);
    }
    out.push_str(" failed");
    if !t.stderr_tail.is_empty() {
        out.push_str(": ");
        out.push_str(&t.stderr_tail);
    }
    out
}

/// The last `lines` lines of `text`, trimmed.
fn tail(text: &str, lines: usize) -> String {
    let text = text.trim();
    match text.rmatch_indices('\n').nth(lines.saturating_sub(1)) {
        Some((at, _)) => text[at + 1..].trim_start().to_string(),
        None => text.to_string(),
    }
}

/// The offending line under a gutter with its number, and a caret under
/// the column when it is known, as rustc shows them (annotate-snippets: a
/// long line is cut around the column, tabs are expanded under the caret).
/// Never coloured: the text also goes into build records and `--json`.
fn excerpt(loc: &Location) -> Option<String> {
    use annotate_snippets::{AnnotationKind, Group, Level, Renderer, Snippet};
    let (line, src) = (loc.line?, loc.source_line.as_deref()?);
    let mark = match loc.column {
        // The column counts characters from 1; a span counts bytes. A
        // column past the end marks the end of the line.
        Some(col) => {
            let mut chars = src.char_indices().skip(col.saturating_sub(1));
            let span = chars
                .next()
                .map_or(src.len()..src.len(), |(at, c)| at..at + c.len_utf8());
            AnnotationKind::Primary.span(span)
        }
        None => AnnotationKind::Visible.span(0..src.len()),
    };
    let snippet = Snippet::source(src).line_start(line).annotation(mark);
    Some(Renderer::plain().render(&[Group::with_level(Level::ERROR).element(snippet)]))
}

/// What to do about an I/O error at `path` that a user can fix: a path
/// that should be a directory but is a file or a dangling link (what
/// `create_dir_all` reports as "File exists"), a read-only file system,
/// missing permission, a full disk. Looks at the file system only once
/// something failed.
fn io_hint(path: &Path, err: &std::io::Error) -> Option<String> {
    use std::io::ErrorKind;
    match err.raw_os_error() {
        Some(libc::EROFS) => {
            return Some(format!(
                "{} is on a read-only file system: use a writable directory (for the cache: [workspace] cache in Layerfile.toml)",
                path.display()
            ));
        }
        Some(libc::ENOSPC) | Some(libc::EDQUOT) => {
            return Some(format!(
                "the file system holding {} is full: free space (`layerbuild gc` removes old images and logs) and retry",
                path.display()
            ));
        }
        _ => {}
    }
    match err.kind() {
        ErrorKind::PermissionDenied => Some(format!(
            "this user may not access {}: fix its permissions or ownership (for the cache: or set [workspace] cache in Layerfile.toml)",
            path.display()
        )),
        ErrorKind::AlreadyExists | ErrorKind::NotADirectory => {
            // The first of `path` and its ancestors that is not a directory.
            let mut p = Some(path);
            while let Some(at) = p {
                match std::fs::symlink_metadata(at) {
                    Ok(m) if m.file_type().is_symlink() && std::fs::metadata(at).is_err() => {
                        let to = std::fs::read_link(at).unwrap_or_default();
                        return Some(format!(
                            "{} is a symbolic link to {}, which does not exist: create that directory, or remove the link",
                            at.display(),
                            to.display()
                        ));
                    }
                    Ok(m) if !m.is_dir() && std::fs::metadata(at).is_ok_and(|m| !m.is_dir()) => {
                        return Some(format!(
                            "{} is a file where a directory is needed: move it away (for the cache: or set [workspace] cache in Layerfile.toml)",
                            at.display()
                        ));
                    }
                    _ => p = at.parent(),
                }
            }
            None
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rendered(text: &str, offset: usize) -> String {
        render_input(&InputError {
            location: Some(Location::at_offset("Layerfile.toml", text, offset)),
            message: "bad".into(),
            hint: None,
        })
    }

    #[test]
    fn a_column_past_65535_is_shown_around_the_column() {
        let line = format!("x = \"{}\" ?", "a".repeat(70_000));
        let out = rendered(&line, line.len() - 1);
        assert!(out.starts_with("Layerfile.toml:1:70008: bad"), "{out}");
        let lines: Vec<&str> = out.lines().collect();
        let (src, caret) = (lines[2], lines[3]);
        assert!(src.chars().count() < 200 && src.contains("..."), "{src}");
        // The caret stands under the `?`.
        let at = caret.chars().count() - 1;
        assert_eq!(src.chars().nth(at), Some('?'), "{src}\n{caret}");
    }

    #[test]
    fn a_short_line_is_shown_whole_with_its_caret() {
        let out = rendered("a = é ?\n", 7);
        assert!(out.contains("\n1 | a = é ?\n  |       ^"), "{out}");
        // An offset inside a character is moved back to its start.
        assert!(rendered("é", 1).contains("1:1"));
    }

    #[test]
    fn a_tool_failure_names_tool_step_and_the_end_of_stderr_and_exits_3() {
        let stderr: String = (1..=30).map(|n| format!("line {n}\n")).collect();
        let e = Error::tool("buildah", "rm c1", &format!("\n{stderr}\n"))
            .with_hint("look with: buildah containers");
        assert_eq!(e.exit_code(), 3);
        let (message, hint) = e.message_and_hint();
        assert!(
            message.starts_with("buildah rm c1 failed: line 11\nline 12\n"),
            "{message}"
        );
        assert!(message.ends_with("\nline 30"), "{message}");
        assert_eq!(hint.as_deref(), Some("look with: buildah containers"));
        assert_eq!(
            e.to_string(),
            format!("{message}\n  hint: look with: buildah containers")
        );
        // As `Error::env(format!("buildah images failed: {}", stderr.trim()))` read.
        let e = Error::tool("buildah", "images", "  no storage\n");
        assert_eq!(e.to_string(), "buildah images failed: no storage");
        assert_eq!(Error::tool("git", "", "").to_string(), "git failed");
    }

    #[test]
    fn the_caret_stands_under_its_character_after_a_tab_and_past_the_end() {
        let out = rendered("\tb = ?\n", 5);
        let lines: Vec<&str> = out.lines().collect();
        let at = lines[3].chars().count() - 1;
        assert_eq!(lines[2].chars().nth(at), Some('?'), "{out}");
        // The end of the line (where a missing value is reported).
        let out = rendered("a =\n", 3);
        assert!(out.contains("\n1 | a =\n  |    ^"), "{out}");
    }

    #[test]
    fn json_errors_carry_the_location_hint_and_exit_code() {
        let e = Error::input_at(
            Location::at_offset("Layerfile.toml", "a = ?\n", 4),
            "bad value",
        )
        .with_hint("fix it");
        let j = serde_json::to_value(e.to_json()).unwrap();
        assert_eq!(j["kind"], "input");
        assert_eq!(j["message"], "bad value");
        assert_eq!(j["file"], "Layerfile.toml");
        assert_eq!(j["line"], 1);
        assert_eq!(j["column"], 5);
        assert_eq!(j["hint"], "fix it");
        assert_eq!(j["exit_code"], 2);
        let j =
            serde_json::to_value(Error::tool("buildah", "images", "no storage").to_json()).unwrap();
        assert_eq!(
            (&j["kind"], &j["tool"], &j["exit_code"]),
            (&"tool".into(), &"buildah".into(), &3.into())
        );
    }

    #[test]
    fn a_line_without_a_column_is_shown_without_a_caret() {
        let out = render_input(&InputError {
            location: Some(Location::at_line(
                "play.yml",
                "- hosts: all\n  roles: [x]\n",
                2,
            )),
            message: "bad".into(),
            hint: Some("fix it".into()),
        });
        assert_eq!(
            out,
            "play.yml:2: bad\n  |\n2 |   roles: [x]\n  |\n  hint: fix it"
        );
    }
}

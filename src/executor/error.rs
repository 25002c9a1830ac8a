//! [`ToolError`]: how a backend operation failed, typed at the trait
//! boundary instead of a bare string: which tool, which operation, the
//! tail of what the tool said on stderr, and the one-line text users see.
//!
//! No I/O here.

use std::fmt;

/// Lines of a tool's stderr kept in a [`ToolError`].
const STDERR_LINES: usize = 20;

/// How an operation of a backend went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolErrorKind {
    /// The tool could not be started (missing, not executable).
    NotStarted,
    /// The tool ran and failed.
    Failed,
    /// The tool succeeded but printed something unreadable.
    BadOutput,
    /// A file operation around the tool failed (work directory, log, rename).
    Local,
}

/// A failed operation of a backend tool (buildah, skopeo, ansible, tar...).
/// Boxed: it travels in every backend `Result`, which stays one pointer wide.
#[derive(Debug, Clone)]
pub struct ToolError(Box<Details>);

#[derive(Debug, Clone)]
struct Details {
    kind: ToolErrorKind,
    /// The program as configured (`buildah`, a path, `skopeo`, `mksquashfs`).
    tool: String,
    /// What was being done (`images`, `inspect`, `push`, `export`...).
    operation: String,
    /// The last lines of the tool's stderr, when it ran.
    stderr_tail: String,
    /// The text users are shown (the same words the commands always printed).
    message: String,
    hint: Option<String>,
}

impl ToolError {
    pub fn new(
        kind: ToolErrorKind,
        tool: impl Into<String>,
        operation: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        ToolError(Box::new(Details {
            kind,
            tool: tool.into(),
            operation: operation.into(),
            stderr_tail: String::new(),
            message: message.into(),
            hint: None,
        }))
    }

    /// `tool` could not be started: `cannot run TOOL: ERR`, with a hint to
    /// install `package`.
    pub fn missing(tool: &str, operation: &str, package: &str, err: &std::io::Error) -> Self {
        ToolError::new(
            ToolErrorKind::NotStarted,
            tool,
            operation,
            format!("cannot run {tool}: {err}"),
        )
        .with_hint(format!(
            "install it (Debian/Ubuntu: apt-get install -y {package}) or put it on PATH"
        ))
    }

    /// `tool` ran and failed; `message` is what users see.
    pub fn failed(tool: &str, operation: &str, stderr: &str, message: impl Into<String>) -> Self {
        ToolError::new(ToolErrorKind::Failed, tool, operation, message).with_stderr(stderr)
    }

    /// Keeps the last lines of `stderr`.
    pub fn with_stderr(mut self, stderr: &str) -> Self {
        let lines: Vec<&str> = stderr.trim_end().lines().collect();
        self.0.stderr_tail = lines[lines.len().saturating_sub(STDERR_LINES)..].join("\n");
        self
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.0.hint = Some(hint.into());
        self
    }

    pub fn kind(&self) -> ToolErrorKind {
        self.0.kind
    }

    pub fn tool(&self) -> &str {
        &self.0.tool
    }

    pub fn operation(&self) -> &str {
        &self.0.operation
    }

    pub fn stderr_tail(&self) -> &str {
        &self.0.stderr_tail
    }

    pub fn message(&self) -> &str {
        &self.0.message
    }

    pub fn hint(&self) -> Option<&str> {
        self.0.hint.as_deref()
    }
}

impl fmt::Display for ToolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.message)
    }
}

impl std::error::Error for ToolError {}

/// A tool failure reaches the edge as [`crate::error::Error::Tool`] with
/// its tool, operation and stderr tail (exit code 3, the environment's),
/// shown with the same sentence the backend chose.
impl From<ToolError> for crate::error::Error {
    fn from(e: ToolError) -> Self {
        let Details {
            tool,
            operation,
            stderr_tail,
            message,
            hint,
            ..
        } = *e.0;
        crate::error::Error::Tool(Box::new(crate::error::ToolFailure {
            tool,
            step: operation,
            stderr_tail,
            message: Some(message),
            hint,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_message_and_hint_and_the_stderr_tail() {
        let stderr: String = (0..30).map(|i| format!("line {i}\n")).collect();
        let e = ToolError::failed("buildah", "rmi", &stderr, "buildah rmi x failed: line 29")
            .with_hint("check storage");
        assert_eq!(e.to_string(), "buildah rmi x failed: line 29");
        assert_eq!(e.stderr_tail().lines().count(), STDERR_LINES);
        assert!(e.stderr_tail().ends_with("line 29"));
        let err: crate::error::Error = e.into();
        assert_eq!(
            err.to_string(),
            "buildah rmi x failed: line 29\n  hint: check storage"
        );
        assert_eq!(err.exit_code(), 3);
    }
}

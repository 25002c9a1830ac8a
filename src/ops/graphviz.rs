//! Graphviz's `dot`, which draws `graph --format svg|html`. A host tool
//! like buildah, started through [`crate::executor::cli`] (the one place
//! processes start); `LAYERBUILD_DOT` overrides its path.
//!
//! I/O: writes the graph to a temporary file, runs `dot -Tsvg` on it.

use crate::executor::ToolError;
use crate::executor::cli;

/// The program to run: `LAYERBUILD_DOT`, else `dot` on PATH.
pub fn program() -> String {
    std::env::var("LAYERBUILD_DOT").unwrap_or_else(|_| "dot".into())
}

/// `dot_text` drawn as SVG by Graphviz.
pub fn svg(dot_text: &str) -> Result<String, ToolError> {
    let program = program();
    let local = |e: std::io::Error, what: &str| {
        ToolError::new(
            crate::executor::ToolErrorKind::Local,
            &program,
            "svg",
            format!("{what}: {e}"),
        )
    };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let input = std::env::temp_dir().join(format!(
        "layerbuild-graph-{}-{nanos}.dot",
        std::process::id()
    ));
    std::fs::write(&input, dot_text)
        .map_err(|e| local(e, &format!("cannot write {}", input.display())))?;
    let mut cmd = cli::command(&program, None);
    cmd.arg("-Tsvg").arg(&input);
    let out = cli::output(&mut cmd);
    let _ = std::fs::remove_file(&input);
    let out = out.map_err(|e| ToolError::missing(&program, "svg", "graphviz", &e))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(ToolError::failed(
            &program,
            "svg",
            &stderr,
            format!("{program} -Tsvg failed ({}): {}", out.status, stderr.trim()),
        ));
    }
    String::from_utf8(out.stdout).map_err(|e| {
        ToolError::new(
            crate::executor::ToolErrorKind::BadOutput,
            &program,
            "svg",
            format!("{program} -Tsvg printed something that is not UTF-8: {e}"),
        )
    })
}

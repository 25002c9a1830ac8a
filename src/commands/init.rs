//! Commands that need no workspace: `init` (writes one), `completions`
//! and `man` (generated from the clap definition in [`crate::cli`]).
//! I/O: `init` and `man DIR` write files; the others only return text.

use std::path::Path;

use clap::CommandFactory;

use super::{Report, Text};
use crate::cli::{Cli, InitArgs};
use crate::error::{Error, Result};
use crate::ops::init::{InitReport, init};

/// `init [DIR]`: DIR relative to `-C DIR` (or the current directory).
pub fn exec(dir: &Path, args: &InitArgs) -> Result<InitReport> {
    let root = match &args.dir {
        Some(d) => dir.join(d),
        None => dir.to_path_buf(),
    };
    init(&root)
}

impl Report for InitReport {
    fn render(&self) -> String {
        let mut s = format!("wrote a workspace in {}:\n", self.root.display());
        for f in &self.files {
            s.push_str(&format!("  {f}\n"));
        }
        s.push_str(&format!(
            "build it with: layerbuild -C {} build //...\n",
            self.root.display()
        ));
        s
    }
}

/// The completion script for `shell`.
pub fn completions(shell: clap_complete::Shell) -> String {
    let mut cmd = Cli::command();
    let mut out = vec![];
    clap_complete::generate(shell, &mut cmd, "layerbuild", &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// `man`: layerbuild.1 as text; `man DIR`: a page per command written there.
pub fn man(dir: Option<&Path>) -> Result<Text> {
    let cmd = Cli::command();
    match dir {
        None => {
            let mut out = vec![];
            clap_mangen::Man::new(cmd)
                .render(&mut out)
                .map_err(|e| Error::env(format!("rendering the man page: {e}")))?;
            Ok(Text(String::from_utf8_lossy(&out).into_owned()))
        }
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
            clap_mangen::generate_to(cmd, dir).map_err(|e| Error::io(dir, e))?;
            Ok(Text(format!("wrote the man pages to {}\n", dir.display())))
        }
    }
}

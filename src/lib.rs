//! layerbuild: declarative, content-addressed builds of layered node images.
//!
//! Data flows one way, one module per arrow:
//! `Layerfile.toml` → [`workspace`] (validated model) → [`graph`] (DAG,
//! selection) → [`fingerprint`] (manifest + blake3 digest per layer) →
//! [`ops::build`] (plan against the [`cache`]) → [`scheduler`] (ready queue,
//! bounded parallelism) → [`executor`] (buildah + ansible-playbook) → cache
//! record. Only the last three touch processes or SQLite; everything before
//! reads files and is unit-tested without buildah. [`cli`] holds the clap
//! types; [`commands`] turns each subcommand's arguments into a [`ops`]
//! call and its result into a report (text, `--json`, exit code);
//! [`status`] is the one vocabulary of statuses the reports use.

pub mod arch;
pub mod cache;
pub mod cli;
pub mod commands;
pub mod digest;
pub mod error;
pub mod executor;
pub mod explain;
pub mod fingerprint;
pub mod graph;
pub mod interrupt;
pub mod junit;
pub mod label;
pub mod memory;
pub mod ops;
pub mod plan;
pub mod profile;
pub mod progress;
pub mod scheduler;
pub mod secrets;
pub mod status;
pub mod timings;
pub mod workspace;

use std::process::ExitCode;

use clap::Parser;

use cli::Cli;
use error::Error;

/// Entry point: parse arguments, run, print errors, map them to exit codes.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    progress::set_color(cli.ui.color);
    match commands::run(cli, &mut Terminal) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Error::Exit(code)) => ExitCode::from(code),
        Err(e) => {
            eprintln!("{}", progress::painted_line(&format!("error: {e}")));
            ExitCode::from(e.exit_code())
        }
    }
}

/// A command line clap rejects: its message (and help or version, which
/// clap reports the same way) as clap prints it; with `--json` among the
/// arguments, also the error as JSON on stdout, as for every other error.
fn usage_error(e: clap::Error) -> ExitCode {
    let code = e.exit_code();
    let failed = e.use_stderr();
    if failed && std::env::args().any(|a| a == "--json") {
        let said = e.to_string();
        let first = said.lines().next().unwrap_or("");
        let err = Error::input(first.strip_prefix("error: ").unwrap_or(first))
            .with_hint("see layerbuild --help");
        let report = commands::ErrorReport::new(&err);
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("reports serialise")
        );
    }
    let _ = e.print();
    ExitCode::from(u8::try_from(code).unwrap_or(2))
}

/// The process's stdout and stderr.
struct Terminal;

impl commands::Output for Terminal {
    /// A closed pipe (`layerbuild ls | head`) ends the process quietly
    /// instead of panicking as `print!` would.
    fn stdout(&mut self, text: &str) {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        if let Err(e) = out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
            eprintln!("error: writing to stdout: {e}");
            std::process::exit(3);
        }
    }

    fn stderr(&mut self, line: &str) {
        eprintln!("{}", progress::painted_line(line));
    }
}

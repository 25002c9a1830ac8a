//! The one place the executor starts processes: buildah, skopeo, sh,
//! unshare, ansible-playbook, ansible-lint, python, tar, mksquashfs, QEMU and aws are
//! all created by [`command`] and run by [`output`], [`status`],
//! [`stream`] or [`run_until`]. Everything else in `executor/` builds command lines and
//! reads what the tools print, so it can be read (and tested) as data.
//! (Not to be confused with `crate::cli`, the clap types.)
//!
//! I/O: spawns processes, reads their output; nothing else.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, ExitStatus, Output, Stdio};

/// A command for `program`, stdin closed, with the containers storage
/// configuration (`CONTAINERS_STORAGE_CONF`) when one is chosen.
pub fn command(program: impl AsRef<OsStr>, storage_conf: Option<&Path>) -> Command {
    let mut c = Command::new(program);
    if let Some(conf) = storage_conf {
        c.env("CONTAINERS_STORAGE_CONF", conf);
    }
    c.stdin(Stdio::null());
    c
}

/// Runs `cmd` to completion, capturing stdout and stderr.
pub fn output(cmd: &mut Command) -> std::io::Result<Output> {
    cmd.output()
}

/// Runs `cmd` to completion with the I/O it was given (a terminal for
/// `debug`, or discarded).
pub fn status(cmd: &mut Command) -> std::io::Result<ExitStatus> {
    cmd.status()
}

/// Runs `cmd` to completion, handing `on_chunk` its stdout as it comes
/// (an object read back whole, too large to hold); returns its status and
/// stderr.
pub fn read_stdout(
    cmd: &mut Command,
    on_chunk: &mut dyn FnMut(&[u8]),
) -> std::io::Result<(ExitStatus, String)> {
    use std::io::Read;
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn()?;
    let mut stderr = child.stderr.take();
    let errs = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(e) = stderr.as_mut() {
            let _ = e.read_to_string(&mut s);
        }
        s
    });
    let mut buf = vec![0u8; 1 << 20];
    if let Some(out) = child.stdout.as_mut() {
        loop {
            let n = out.read(&mut buf)?;
            if n == 0 {
                break;
            }
            on_chunk(&buf[..n]);
        }
    }
    let status = child.wait()?;
    Ok((status, errs.join().unwrap_or_default()))
}

/// Whether `program` can be run at all (`--version`).
pub fn available(program: &str) -> bool {
    command(program, None)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// Runs `cmd` with stdout and stderr merged, handing `on_line` every line
/// as it comes. The command gets its own process group, which an interrupt
/// is passed to (so the processes it starts, Ansible's workers, get it too).
pub fn stream(
    mut cmd: Command,
    what: &str,
    on_line: &mut dyn FnMut(&str),
) -> std::result::Result<(), String> {
    let (reader, writer) = std::io::pipe().map_err(|e| format!("{what}: pipe: {e}"))?;
    let writer2 = writer
        .try_clone()
        .map_err(|e| format!("{what}: pipe: {e}"))?;
    cmd.stdout(writer).stderr(writer2);
    if crate::interrupt::requested() {
        return Err(format!("{what}: not started: the build was interrupted"));
    }
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = cmd.spawn().map_err(|e| {
        format!(
            "{what}: cannot run {}: {e}",
            cmd.get_program().to_string_lossy()
        )
    })?;
    let _step = crate::interrupt::track(&child);
    // Drop our copies of the write end so reading ends when the child exits.
    drop(cmd);
    let mut reader = BufReader::new(reader);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) => break,
            Ok(_) => {
                let line = String::from_utf8_lossy(&buf);
                on_line(line.trim_end_matches(['\n', '\r']));
            }
            Err(e) => return Err(format!("{what}: reading output: {e}")),
        }
    }
    let status = child.wait().map_err(|e| format!("{what}: {e}"))?;
    if !status.success() {
        if crate::interrupt::requested() {
            return Err(format!("{what}: interrupted ({status})"));
        }
        return Err(format!("{what} failed ({status})"));
    }
    Ok(())
}

/// How [`run_until`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    Exited,
    /// `watch` asked to stop; the process was killed.
    Stopped,
    /// The deadline passed; the process was killed.
    TimedOut,
}

/// Runs `cmd` with stdout and stderr merged, handing `watch` each line
/// (`Some`) and, every 200 ms, a tick (`None`); it returns true to stop.
/// The process is killed when `watch` stops it or at `deadline`, and
/// always waited for: none is left behind.
pub fn run_until(
    mut cmd: Command,
    deadline: std::time::Instant,
    watch: &mut dyn FnMut(Option<&str>) -> bool,
) -> std::result::Result<Ended, String> {
    use std::sync::mpsc;
    let program = cmd.get_program().to_string_lossy().into_owned();
    let (reader, writer) = std::io::pipe().map_err(|e| format!("pipe: {e}"))?;
    let writer2 = writer.try_clone().map_err(|e| format!("pipe: {e}"))?;
    cmd.stdout(writer).stderr(writer2);
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    let _step = crate::interrupt::track(&child);
    drop(cmd);
    let (tx, rx) = mpsc::channel::<String>();
    let lines = std::thread::spawn(move || {
        let mut reader = BufReader::new(reader);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf);
                    if tx
                        .send(line.trim_end_matches(['\n', '\r']).to_string())
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
    });
    let tick = std::time::Duration::from_millis(200);
    let ended = loop {
        let now = std::time::Instant::now();
        if now >= deadline {
            break Ended::TimedOut;
        }
        match rx.recv_timeout(tick.min(deadline - now)) {
            Ok(line) => {
                if watch(Some(&line)) {
                    break Ended::Stopped;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if watch(None) {
                    break Ended::Stopped;
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break Ended::Exited,
        }
    };
    if ended != Ended::Exited {
        let _ = child.kill();
    }
    child.wait().map_err(|e| format!("{program}: {e}"))?;
    let _ = lines.join();
    Ok(ended)
}

#[cfg(test)]
mod tests {
    /// Files that may start processes: this one, and `ops/git.rs` (git and
    /// tar for `affected`, outside the executor on purpose).
    const ALLOWED: [&str; 2] = ["src/executor/cli.rs", "src/ops/git.rs"];

    #[test]
    fn no_other_file_starts_a_process() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let markers = ["Command::new(", ".spawn()", ".output()", ".status()"];
        let mut found = vec![];
        for e in walkdir::WalkDir::new(root.join("src")) {
            let e = e.unwrap();
            let rel = e.path().strip_prefix(root).unwrap().to_string_lossy();
            if !rel.ends_with(".rs") || ALLOWED.contains(&rel.as_ref()) {
                continue;
            }
            let text = std::fs::read_to_string(e.path()).unwrap();
            for (n, line) in text.lines().enumerate() {
                if markers.iter().any(|m| line.contains(m)) {
                    found.push(format!("{rel}:{}: {}", n + 1, line.trim()));
                }
            }
        }
        assert!(
            found.is_empty(),
            "start processes through executor::cli:\n{}",
            found.join("\n")
        );
    }
}

//! Booting a netboot export in QEMU as a diskless node boots: the image's
//! kernel and initramfs, its squashfs root as a read-only virtio disk
//! under a tmpfs overlay, no network. The boot tests travel on a second
//! read-only disk (a squashfs) and are started by systemd's
//! `systemd.run=` kernel argument, so the image is not changed; they
//! report on the second serial port, the console goes to the log.
//!
//! The command line, the scripts and the reading of what the guest says
//! are pure; [`boot`] runs QEMU through [`cli`].
//!
//! I/O: writes the tests disk's files and runs mksquashfs and QEMU
//! through [`cli`]; reads the results file; appends to the log.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::netboot::{INITRD, KERNEL, ROOTFS};
use super::{TestOutcome, ToolError, ToolErrorKind, ToolResult, cli};

pub const QEMU: &str = "qemu-system-x86_64";
/// How the guest's report lines start on the second serial port.
const MARK: &str = "@@lb ";

/// One boot of a netboot export.
#[derive(Debug, Clone)]
pub struct BootRequest {
    pub label: String,
    /// The netboot export (vmlinuz, initramfs.img, rootfs.squashfs).
    pub dir: PathBuf,
    /// The kernel arguments besides `root=` (the export's `cmdline`).
    pub cmdline: String,
    pub memory_mib: u32,
    /// With KVM; tripled with TCG.
    pub timeout: Duration,
    pub tests: Vec<String>,
    pub log_path: PathBuf,
    /// Scratch space (the tests disk).
    pub work_dir: PathBuf,
    /// A serial console on this terminal instead of tests.
    pub interactive: bool,
}

/// How QEMU runs the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Kvm,
    Tcg,
}

/// KVM when `/dev/kvm` opens for reading and writing and the host's KVM
/// runs ordinary kernels (PVM, a nested KVM of some cloud machines, runs
/// only guests built for it); else TCG, with the reason.
/// `LAYERBUILD_BOOT_ACCEL=kvm|tcg` decides instead.
pub fn choose_accel() -> (Accel, Option<String>) {
    match std::env::var("LAYERBUILD_BOOT_ACCEL").as_deref() {
        Ok("kvm") => return (Accel::Kvm, None),
        Ok("tcg") => return (Accel::Tcg, Some("LAYERBUILD_BOOT_ACCEL=tcg".into())),
        _ => {}
    }
    let kvm = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm");
    match kvm {
        Err(e) => (Accel::Tcg, Some(format!("/dev/kvm: {e}"))),
        Ok(_) if Path::new("/sys/module/kvm_pvm").exists() => (
            Accel::Tcg,
            Some("this host's KVM is PVM, which boots only kernels built for it".into()),
        ),
        Ok(_) => (Accel::Kvm, None),
    }
}

/// The guest's kernel command line.
pub fn kernel_cmdline(req: &BootRequest) -> String {
    let mut s = format!(
        "console=ttyS0 root=/dev/vda rootfstype=squashfs {} panic=-1",
        req.cmdline
    );
    if !req.interactive {
        s.push_str(
            " systemd.run=\"/bin/sh -c 'mkdir -p /run/layerbuild && mount -o ro /dev/vdb /run/layerbuild && exec /bin/sh /run/layerbuild/start'\" systemd.run_success_action=none systemd.run_failure_action=none",
        );
    }
    s
}

/// QEMU's arguments. `tests_disk` and `results` are absent for an
/// interactive boot.
pub fn qemu_args(
    req: &BootRequest,
    accel: Accel,
    tests_disk: Option<&Path>,
    results: Option<&Path>,
) -> Vec<String> {
    let d = |f: &str| req.dir.join(f).display().to_string();
    let (machine, cpu) = match accel {
        Accel::Kvm => ("q35,accel=kvm", "host"),
        Accel::Tcg => ("q35,accel=tcg", "max"),
    };
    let mut a: Vec<String> = [
        "-name",
        &format!(
            "layerbuild-boot,process=layerbuild-boot-{}",
            std::process::id()
        ),
        "-machine",
        machine,
        "-cpu",
        cpu,
        "-smp",
        "2",
        "-m",
        &req.memory_mib.to_string(),
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
        "-nic",
        "none",
        "-kernel",
        &d(KERNEL),
        "-initrd",
        &d(INITRD),
        "-drive",
        &format!("file={},if=virtio,format=raw,readonly=on", d(ROOTFS)),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if let Some(t) = tests_disk {
        a.push("-drive".into());
        a.push(format!(
            "file={},if=virtio,format=raw,readonly=on",
            t.display()
        ));
    }
    if req.interactive {
        a.extend(["-serial".into(), "mon:stdio".into()]);
    } else {
        a.extend([
            "-serial".into(),
            "stdio".into(),
            "-monitor".into(),
            "none".into(),
        ]);
    }
    if let Some(r) = results {
        a.extend(["-serial".into(), format!("file:{}", r.display())]);
    }
    a.extend(["-append".into(), kernel_cmdline(req)]);
    a
}

/// The files of the tests disk: `start` (run by `systemd.run=`, inside
/// the boot), which hands over to `tests` in a unit of its own (so that
/// waiting for the boot to end does not wait for itself), and one file
/// per test.
///
/// `systemd.run=` makes `kernel-command-line.target` the target booted
/// into, which pulls in little past `basic.target`: the services a node
/// runs (`multi-user.target`) would never start, and a unit that fails
/// there would go unseen. So `start` first queues the image's own
/// default target (its `default.target` link in `/etc`, else in
/// `/usr/lib` or `/lib`; `multi-user.target` when neither resolves),
/// while the boot's first transaction still runs: the boot is over only
/// when that target is reached or has failed.
pub fn tests_disk_files(tests: &[String]) -> Vec<(String, String)> {
    let start = r#"#!/bin/sh
# Boot on to the image's own default target, then hand over to the tests.
t=
for l in /etc/systemd/system/default.target /usr/lib/systemd/system/default.target /lib/systemd/system/default.target; do
  t=$(readlink "$l" 2>/dev/null) && break
done
t=${t##*/}
[ -n "$t" ] || t=multi-user.target
printf '%s\n' "$t" > /run/layerbuild-target
systemctl start --no-block "$t"
exec systemd-run --no-block --collect --unit=layerbuild-boot-tests /bin/sh /run/layerbuild/tests
"#;
    let runner = r#"#!/bin/sh
# layerbuild's boot tests: report on the second serial port, then power off.
out=/dev/ttyS1
say() { printf '@@lb %s\n' "$*" > "$out"; }
say started
state=$(systemctl is-system-running --wait 2>/dev/null)
t=$(cat /run/layerbuild-target 2>/dev/null)
say target "${t:-?}" "$(systemctl is-active "${t:-default.target}" 2>/dev/null)"
say state "$state"
say uptime "$(cut -d' ' -f1 /proc/uptime)"
systemctl --failed --no-legend --plain 2>/dev/null | while IFS= read -r l; do say failed-unit "$l"; done
for t in /run/layerbuild/t/*; do
  [ -f "$t" ] || continue
  n=${t##*/}
  say begin "$n"
  (cd / && /bin/sh "$t") > /run/layerbuild-out 2>&1 < /dev/null
  rc=$?
  sed 's/^/| /' /run/layerbuild-out > "$out"
  say end "$n" "$rc"
done
say done
systemctl poweroff --force --force
"#;
    let mut files = vec![
        ("start".to_string(), start.to_string()),
        ("tests".to_string(), runner.to_string()),
    ];
    for (i, t) in tests.iter().enumerate() {
        files.push((format!("t/{:03}", i + 1), format!("{t}\n")));
    }
    files
}

/// What the guest reported on the second serial port.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Report {
    pub started: bool,
    /// `systemctl is-system-running --wait`: running, degraded, ...
    pub state: Option<String>,
    /// The image's default target the boot went on to, and what
    /// `systemctl is-active` said of it.
    pub target: Option<(String, String)>,
    /// The guest's uptime (seconds since its kernel started) when the
    /// boot was over.
    pub uptime_s: Option<f64>,
    pub failed_units: Vec<String>,
    /// (test number from 1, exit code, output).
    pub tests: Vec<(usize, Option<i32>, String)>,
    pub done: bool,
}

pub fn parse_report(text: &str) -> Report {
    let mut r = Report::default();
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if let Some(out) = line.strip_prefix("| ") {
            if let Some(t) = r.tests.last_mut() {
                t.2.push_str(out);
                t.2.push('\n');
            }
            continue;
        }
        if line == "|" {
            if let Some(t) = r.tests.last_mut() {
                t.2.push('\n');
            }
            continue;
        }
        let Some(rest) = line.strip_prefix(MARK) else {
            continue;
        };
        let (word, arg) = rest.split_once(' ').unwrap_or((rest, ""));
        match word {
            "started" => r.started = true,
            "state" => r.state = Some(arg.trim().to_string()),
            "target" => {
                let (name, active) = arg.trim().split_once(' ').unwrap_or((arg.trim(), ""));
                r.target = Some((name.to_string(), active.trim().to_string()));
            }
            "failed-unit" => r.failed_units.push(arg.trim().to_string()),
            "begin" => {
                let n = arg.trim().parse().unwrap_or(r.tests.len() + 1);
                r.tests.push((n, None, String::new()));
            }
            "end" => {
                let mut w = arg.split_whitespace();
                let n: Option<usize> = w.next().and_then(|x| x.parse().ok());
                let rc = w.next().and_then(|x| x.parse().ok());
                if let Some(t) = r.tests.last_mut()
                    && Some(t.0) == n
                {
                    t.1 = rc;
                }
            }
            "uptime" => r.uptime_s = arg.trim().parse().ok(),
            "done" => r.done = true,
            _ => {}
        }
    }
    r
}

/// A console line that ends the boot as a failure, and how to say it.
pub fn console_failure(line: &str) -> Option<&'static str> {
    if line.contains("Kernel panic - not syncing") {
        Some("kernel panic")
    } else if line.contains("emergency mode") || line.contains("Emergency shell") {
        Some("emergency mode")
    } else {
        None
    }
}

/// How a boot ended, turned into test outcomes: the boot itself, the
/// failed units, then each test. `failure` is what stopped it early
/// (panic, emergency, timeout); `tail` the console's end.
pub fn outcomes(
    tests: &[String],
    report: &Report,
    failure: Option<String>,
    tail: &str,
    boot_ms: u64,
) -> Vec<TestOutcome> {
    let boot_error = match (&failure, &report.state, &report.target) {
        (Some(f), _, _) => Some(f.clone()),
        (None, None, _) => {
            Some("the machine stopped before reaching its default target".to_string())
        }
        (None, Some(_), Some((name, active))) if active != "active" => {
            Some(format!("{name} is {active} after the boot"))
        }
        (None, Some(_), _) => None,
    };
    let command = match &report.target {
        Some((name, _)) => format!("boot: reach the default target ({name})"),
        None => "boot: reach the default target".into(),
    };
    let mut out = vec![TestOutcome {
        command,
        passed: boot_error.is_none(),
        output: match (&boot_error, report.uptime_s) {
            (Some(_), _) => tail.to_string(),
            (None, Some(up)) => format!("up {up:.1}s after the kernel started"),
            (None, None) => String::new(),
        },
        error: boot_error,
        duration_ms: boot_ms,
    }];
    if report.state.is_none() {
        return out;
    }
    let state = report.state.clone().unwrap_or_default();
    let units_ok = report.failed_units.is_empty() && state == "running";
    out.push(TestOutcome {
        command: "boot: no failed units (systemctl --failed)".into(),
        passed: units_ok,
        error: (!units_ok).then(|| {
            let units: Vec<&str> = report
                .failed_units
                .iter()
                .filter_map(|l| l.split_whitespace().next())
                .collect();
            match units.is_empty() {
                true => format!("system state {state}"),
                false => format!("system state {state}; failed: {}", units.join(", ")),
            }
        }),
        output: report.failed_units.join("\n"),
        duration_ms: 0,
    });
    for (i, cmd) in tests.iter().enumerate() {
        let got = report.tests.iter().find(|t| t.0 == i + 1);
        let (passed, error, output) = match got {
            Some((_, Some(0), o)) => (true, None, o.clone()),
            Some((_, Some(rc), o)) => (false, Some(format!("exit status {rc}")), o.clone()),
            Some((_, None, o)) => (
                false,
                Some(failure.clone().unwrap_or_else(|| "did not finish".into())),
                format!("{o}{tail}"),
            ),
            None => (false, Some("not run".into()), String::new()),
        };
        out.push(TestOutcome {
            command: cmd.clone(),
            passed,
            error,
            output: last_lines(&output, 40),
            duration_ms: 0,
        });
    }
    out
}

pub fn last_lines(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn tool_err(kind: ToolErrorKind, message: String) -> ToolError {
    ToolError::new(kind, QEMU, "boot", message)
}

/// Writes the tests disk (a squashfs) into `req.work_dir`.
fn make_tests_disk(req: &BootRequest) -> ToolResult<PathBuf> {
    let local = |e: std::io::Error| tool_err(ToolErrorKind::Local, format!("tests disk: {e}"));
    let src = req.work_dir.join("tests");
    let _ = std::fs::remove_dir_all(&src);
    std::fs::create_dir_all(src.join("t")).map_err(local)?;
    for (name, text) in tests_disk_files(&req.tests) {
        std::fs::write(src.join(name), text).map_err(local)?;
    }
    let disk = req.work_dir.join("tests.squashfs");
    let mut c = cli::command("mksquashfs", None);
    c.arg(&src)
        .arg(&disk)
        .args(["-noappend", "-no-progress", "-quiet", "-all-root"]);
    let out = cli::output(&mut c).map_err(|e| {
        tool_err(
            ToolErrorKind::NotStarted,
            format!("cannot run mksquashfs: {e}"),
        )
    })?;
    if !out.status.success() {
        return Err(tool_err(
            ToolErrorKind::Failed,
            format!(
                "mksquashfs: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ));
    }
    Ok(disk)
}

/// Boots `req` and runs its tests (or, interactive, attaches the serial
/// console to this terminal: Ctrl-A X quits). Returns the outcomes and
/// a note (TCG and why).
pub fn boot(req: &BootRequest) -> ToolResult<(Vec<TestOutcome>, Option<String>)> {
    if !cli::available(QEMU) {
        return Err(tool_err(
            ToolErrorKind::NotStarted,
            format!(
                "{QEMU} is missing (Debian/Ubuntu: apt-get install -y --no-install-recommends qemu-system-x86)"
            ),
        ));
    }
    let (accel, why) = choose_accel();
    let note =
        why.map(|w| format!("no usable KVM ({w}): booting with TCG, slower, timeout tripled"));
    let local = |e: std::io::Error| tool_err(ToolErrorKind::Local, e.to_string());
    std::fs::create_dir_all(&req.work_dir).map_err(local)?;
    if req.interactive {
        let mut c = cli::command(QEMU, None);
        c.args(qemu_args(req, accel, None, None));
        c.stdin(std::process::Stdio::inherit());
        cli::status(&mut c).map_err(|e| tool_err(ToolErrorKind::NotStarted, e.to_string()))?;
        return Ok((vec![], note));
    }
    let disk = make_tests_disk(req)?;
    let results = req.work_dir.join("results.txt");
    let _ = std::fs::remove_file(&results);
    let timeout = match accel {
        Accel::Kvm => req.timeout,
        Accel::Tcg => req.timeout * 3,
    };
    if let Some(p) = req.log_path.parent() {
        std::fs::create_dir_all(p).map_err(local)?;
    }
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&req.log_path)
        .map_err(local)?;
    let args = qemu_args(req, accel, Some(&disk), Some(&results));
    let _ = writeln!(
        log,
        "==> boot {} ({accel:?}, timeout {}s)\n$ {QEMU} {}\n==> console",
        req.label,
        timeout.as_secs(),
        args.iter()
            .map(|a| super::shell_quote(a))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let mut c = cli::command(QEMU, None);
    c.args(&args);
    let started = Instant::now();
    let mut console: Vec<String> = vec![];
    let mut failure: Option<String> = None;
    let mut done_at: Option<Instant> = None;
    let mut checked = started;
    let ended = cli::run_until(c, started + timeout, &mut |line| {
        if let Some(l) = line {
            let _ = writeln!(log, "{l}");
            console.push(l.to_string());
            if console.len() > 200 {
                console.remove(0);
            }
            if failure.is_none()
                && let Some(f) = console_failure(l)
            {
                failure = Some(f.to_string());
                return true;
            }
        }
        // Has the guest said it is done (looked at every 100 ms)? Give it
        // a moment to power off by itself.
        if done_at.is_none() && checked.elapsed() >= Duration::from_millis(100) {
            checked = Instant::now();
            if std::fs::read_to_string(&results).is_ok_and(|t| parse_report(&t).done) {
                done_at = Some(checked);
            }
        }
        done_at.is_some_and(|t| t.elapsed() > Duration::from_secs(5))
    })
    .map_err(|e| tool_err(ToolErrorKind::NotStarted, e))?;
    // From QEMU's start to the tests' end (the guest's power-off not
    // counted), the figure `boot` and the benchmark report.
    let boot_ms = done_at
        .unwrap_or_else(Instant::now)
        .duration_since(started)
        .as_millis() as u64;
    let text = std::fs::read_to_string(&results).unwrap_or_default();
    let report = parse_report(&text);
    if failure.is_none() && !report.done {
        failure = Some(match ended {
            cli::Ended::TimedOut => format!("timed out after {}s", timeout.as_secs()),
            _ => "the machine stopped before the tests ended".to_string(),
        });
    }
    let _ = writeln!(
        log,
        "==> guest report\n{text}==> {:.1}s",
        boot_ms as f64 / 1000.0
    );
    let tail = last_lines(&console.join("\n"), 30);
    let outcomes = outcomes(&req.tests, &report, failure, &tail, boot_ms);
    let _ = writeln!(log, "==> boot tests");
    for o in &outcomes {
        let _ = match &o.error {
            None => writeln!(log, "ok      {}", o.command),
            Some(e) => writeln!(log, "FAILED  {}: {e}", o.command),
        };
        if !o.passed && !o.output.is_empty() {
            for l in o.output.lines() {
                let _ = writeln!(log, "        | {l}");
            }
        }
    }
    Ok((outcomes, note))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guest_report_is_read() {
        let r = parse_report(
            "@@lb started\n@@lb target graphical.target active\n@@lb state degraded\n@@lb failed-unit x.service loaded failed failed X\n\
             @@lb begin 001\n| hello\n@@lb end 001 0\n@@lb begin 002\n| no\n@@lb end 002 3\n@@lb done\n",
        );
        assert_eq!(r.state.as_deref(), Some("degraded"));
        assert_eq!(
            r.target,
            Some(("graphical.target".to_string(), "active".to_string()))
        );
        assert_eq!(r.failed_units.len(), 1);
        assert_eq!(
            r.tests,
            vec![(1, Some(0), "hello\n".into()), (2, Some(3), "no\n".into())]
        );
        assert!(r.done);
        let o = outcomes(&["true".into(), "false".into()], &r, None, "", 5);
        assert!(o[0].passed && !o[1].passed && o[2].passed && !o[3].passed);
        assert_eq!(o[3].error.as_deref(), Some("exit status 3"));
    }

    #[test]
    fn a_panic_is_not_a_timeout() {
        assert_eq!(
            console_failure("[    1.2] Kernel panic - not syncing: VFS: Unable to mount root fs"),
            Some("kernel panic")
        );
        let o = outcomes(
            &["true".into()],
            &Report::default(),
            Some("kernel panic".into()),
            "tail",
            1,
        );
        assert_eq!(o.len(), 1);
        assert_eq!(o[0].error.as_deref(), Some("kernel panic"));
        assert_eq!(o[0].output, "tail");
    }

    #[test]
    fn a_default_target_not_reached_fails_the_boot() {
        let r = parse_report(
            "@@lb started\n@@lb target multi-user.target inactive\n@@lb state degraded\n@@lb done\n",
        );
        let o = outcomes(&[], &r, None, "tail", 1);
        assert_eq!(
            o[0].command,
            "boot: reach the default target (multi-user.target)"
        );
        assert!(!o[0].passed);
        assert_eq!(
            o[0].error.as_deref(),
            Some("multi-user.target is inactive after the boot")
        );
    }

    #[test]
    fn the_tests_start_after_queueing_the_images_default_target() {
        let files = tests_disk_files(&["true".into()]);
        let start = &files.iter().find(|f| f.0 == "start").unwrap().1;
        let queue = start.find("systemctl start --no-block \"$t\"").unwrap();
        let tests = start.find("--unit=layerbuild-boot-tests").unwrap();
        assert!(queue < tests, "{start}");
        assert!(
            start.contains("/etc/systemd/system/default.target"),
            "{start}"
        );
    }

    /// What a passing boot means is an input of layers with boot tests
    /// ([`crate::fingerprint::BOOT_RUNNER`]): a change to the runner's
    /// scripts, the kernel arguments or the pass rules must raise it. The
    /// hash below is of the runner as of that version; update both.
    #[test]
    fn the_runner_changes_only_with_its_version() {
        let req = BootRequest {
            label: "//a/b".into(),
            dir: "/x".into(),
            cmdline: "ro rootovl".into(),
            memory_mib: 1024,
            timeout: Duration::from_secs(1),
            tests: vec!["true".into()],
            log_path: "/x/log".into(),
            work_dir: "/x/w".into(),
            interactive: false,
        };
        let mut h = blake3::Hasher::new();
        for (name, text) in tests_disk_files(&req.tests) {
            h.update(name.as_bytes());
            h.update(text.as_bytes());
        }
        h.update(kernel_cmdline(&req).as_bytes());
        let args = qemu_args(
            &req,
            Accel::Tcg,
            Some(Path::new("/t")),
            Some(Path::new("/r")),
        );
        // Not the process name (it holds this process's id), nor the
        // export's file names (where the files are, not how the boot goes).
        for a in args.iter().filter(|a| !a.contains("process=")) {
            let a = a
                .replace(&format!("/x/{KERNEL}"), "/x/vmlinuz")
                .replace(&format!("/x/{INITRD}"), "/x/initrd.img")
                .replace(&format!("/x/{ROOTFS}"), "/x/rootfs.squashfs");
            h.update(a.as_bytes());
        }
        let r = parse_report(
            "@@lb started\n@@lb target t.target active\n@@lb state degraded\n@@lb done\n",
        );
        h.update(format!("{:?}", outcomes(&[], &r, None, "", 0)).as_bytes());
        let hash = h.finalize().to_hex().to_string();
        assert_eq!(
            (crate::fingerprint::BOOT_RUNNER, &hash[..16]),
            (2, "bf80fb657abc9dbb"),
            "the boot runner changed: raise fingerprint::BOOT_RUNNER and record the new hash here"
        );
    }
}

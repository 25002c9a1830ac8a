//! `LAYERBUILD_STATS=1`: where a command's time went, phase by phase, on
//! stderr (for the benchmarks and for anyone wondering why a no-op build
//! takes as long as it does).

use std::sync::OnceLock;
use std::time::Instant;

/// Is `LAYERBUILD_STATS=1` set?
pub fn wanted() -> bool {
    static WANTED: OnceLock<bool> = OnceLock::new();
    *WANTED.get_or_init(|| std::env::var_os("LAYERBUILD_STATS").is_some_and(|v| v == "1"))
}

/// Prints how long `phase` took since `since`, and returns now.
pub fn phase(name: &str, since: Instant) -> Instant {
    let now = Instant::now();
    if wanted() {
        eprintln!(
            "layerbuild time: {name}: {:.1} ms{}",
            (now - since).as_secs_f64() * 1000.0,
            memory()
        );
    }
    now
}

/// The resident set now and at its peak so far, from `/proc/self/status`
/// (empty where that file is missing).
fn memory() -> String {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return String::new();
    };
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().strip_suffix("kB"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|kb| kb / 1024)
    };
    match (field("VmRSS:"), field("VmHWM:")) {
        (Some(now), Some(peak)) => format!(
            " (RSS {now} MiB, peak {peak} MiB; anon {} file {})",
            field("RssAnon:").unwrap_or(0),
            field("RssFile:").unwrap_or(0)
        ),
        _ => String::new(),
    }
}

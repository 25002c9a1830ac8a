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
            "layerbuild time: {name}: {:.1} ms",
            (now - since).as_secs_f64() * 1000.0
        );
    }
    now
}

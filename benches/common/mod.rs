//! What the benchmarks share.

use std::path::PathBuf;

/// The release binary the benchmarks time (`scripts/bench` builds it).
pub fn bin() -> PathBuf {
    // benches run from target/release/deps; the binary is one level up.
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let bin = dir.join("layerbuild");
    assert!(
        bin.exists(),
        "build the binary first: cargo build --release ({} missing)",
        bin.display()
    );
    bin
}

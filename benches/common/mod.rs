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

/// Stops the benchmark with a clear message when buildah cannot run.
#[allow(dead_code)] // not every benchmark builds images
pub fn require_buildah() {
    let ok = std::process::Command::new("buildah")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(ok, "this benchmark needs buildah, ansible-core and root");
}

//! Memory handed back to the system where a run frees much at once.
//!
//! The allocator keeps freed pages for a while (re-using them is cheaper
//! than asking the kernel again); at the few points where a run has just
//! freed tens of megabytes it will not need again (a large fingerprint's
//! analyses and index, before the caches are stored), [`release`] gives
//! them back at once. The binary registers how ([`on_release`]: its
//! allocator's collection); elsewhere (tests, the library alone) it does
//! nothing.
//!
//! I/O: none but the allocator's.

use std::sync::OnceLock;

static RELEASE: OnceLock<fn()> = OnceLock::new();

/// Registers how to give freed memory back (once; later calls are ignored).
pub fn on_release(f: fn()) {
    let _ = RELEASE.set(f);
}

/// Gives the memory freed so far back to the system, if the binary said how.
pub fn release() {
    if let Some(f) = RELEASE.get() {
        f();
    }
}

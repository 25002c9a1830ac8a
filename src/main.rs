//! The `layerbuild` binary: the allocator, its tuning and the interrupt
//! handler, set up before anything else runs; then [`layerbuild::main`].
//! No I/O of its own beyond a process attribute (no transparent huge pages).

use std::process::ExitCode;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    tune_allocator();
    // SAFETY: collects the allocator's free pages; no pointers involved.
    layerbuild::memory::on_release(|| unsafe { libmimalloc_sys::mi_collect(true) });
    // Before any other thread starts.
    layerbuild::interrupt::install();
    layerbuild::main()
}

/// Fingerprinting frees what one phase built while the next allocates:
/// free pages go back to the system after 20 ms (mimalloc's default is a
/// second, which keeps a cold dry run's peak about 40 MiB higher; at once,
/// the run spends a sixth of its time faulting pages in again), and arena
/// memory is committed as it is used. `MIMALLOC_*` variables still win.
fn tune_allocator() {
    // No transparent huge pages: a 2 MiB page faulted in for a few small
    // allocations kept a cold dry run's peak about 25 MiB higher, for no
    // measurable speed. (What mimalloc's `allow_thp=0` does; the tools
    // layerbuild runs inherit it, which costs them nothing measurable.)
    // SAFETY: a process attribute; no pointers involved.
    unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    // The option numbers of mimalloc v3's `mi_option_e` (the version
    // `libmimalloc-sys` is pinned to in Cargo.toml).
    const ARENA_EAGER_COMMIT: i32 = 4;
    const PURGE_DELAY: i32 = 15;
    for (option, env, value) in [
        // Pages freed are given back at once: a large cold fingerprint frees
        // its analyses and index just before storing its caches, and with
        // a delay both were resident at once (8 MiB of its peak), for no
        // measurable time.
        (PURGE_DELAY, "MIMALLOC_PURGE_DELAY", 20),
        (ARENA_EAGER_COMMIT, "MIMALLOC_ARENA_EAGER_COMMIT", 0),
    ] {
        if std::env::var_os(env).is_none() {
            // SAFETY: sets a tuning option, before any thread is started.
            unsafe { libmimalloc_sys::mi_option_set(option, value) };
        }
    }
}

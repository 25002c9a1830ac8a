use std::process::ExitCode;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // Freed memory goes back to the system at once, not after a second:
    // fingerprinting frees what one phase built before the next allocates
    // (`mi_option_purge_delay`, 15 in mimalloc v3's `mi_option_e`).
    // SAFETY: sets a tuning option; no allocation is in flight.
    unsafe { libmimalloc_sys::mi_option_set(15, 0) };
    layerbuild::main()
}

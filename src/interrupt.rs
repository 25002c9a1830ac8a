//! Ctrl-C and SIGTERM.
//!
//! [`install`] blocks both signals in every thread (it runs before any
//! thread starts) and waits for them on a thread of its own, so nothing is
//! done inside a signal handler. What a signal does depends on the mode:
//!
//! - [`Mode::Exit`] (every command by default): exit at once with 130, as
//!   the default action would (the caches are written atomically).
//! - [`Mode::Build`] (`build` while layers run): stop cleanly. The signal
//!   is passed to the process group of each running step (its own, so
//!   Ansible's workers get it too), the steps fail, their working
//!   containers are kept and listed by `ls --failed` as any failed build's
//!   are, no further layer starts, and the command exits 130 saying what
//!   was interrupted. A step still running 5 s later gets SIGTERM, and
//!   5 s after that SIGKILL (Ansible waits for the running task, and
//!   what its workers start ignores SIGINT). A second signal exits at once.
//! - [`Mode::Interactive`] (`debug`'s shell): Ctrl-C belongs to the shell
//!   in the container; SIGTERM still exits.
//!
//! Child processes start with an empty signal mask (the standard library
//! resets it), so the tools run as they would without layerbuild.
//!
//! I/O: signals, and `kill` of the registered process groups.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

/// What a signal does now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Exit = 0,
    Build = 1,
    Interactive = 2,
}

static MODE: AtomicU8 = AtomicU8::new(Mode::Exit as u8);
static REQUESTED: AtomicBool = AtomicBool::new(false);
/// Process groups of the running steps.
static GROUPS: Mutex<BTreeSet<i32>> = Mutex::new(BTreeSet::new());
/// Where the interrupt's message goes while a live display owns stderr
/// (above its bars, so the next frame does not draw over it).
static NOTICE: Mutex<Option<Say>> = Mutex::new(None);

/// What says a line of text.
pub type Say = Box<dyn Fn(&str) + Send>;

/// Says an interrupt's message through `say` from now on (`None`: stderr).
pub fn say_through(say: Option<Say>) {
    *NOTICE.lock().unwrap_or_else(|e| e.into_inner()) = say;
}

/// The signal received, to pass on to steps started after it.
static SIGNAL: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

/// The exit code of an interrupted command (128 + SIGINT, as shells use).
pub const EXIT_CODE: u8 = 130;

/// Blocks SIGINT and SIGTERM and starts the thread that takes them. Call
/// first thing in `main`, before any other thread exists.
pub fn install() {
    // SAFETY: sigset operations on a local set; pthread_sigmask on the
    // calling (only) thread.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        if libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
            return;
        }
        set
    };
    let started = std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            loop {
                let mut sig: libc::c_int = 0;
                // SAFETY: waits on a valid set the thread owns a copy of.
                if unsafe { libc::sigwait(&set, &mut sig) } == 0 {
                    on_signal(sig);
                }
            }
        });
    if started.is_err() {
        // Nobody would take them: back to the default actions.
        // SAFETY: as above.
        unsafe { libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut()) };
    }
}

/// Sets what a signal does from now on.
pub fn set_mode(mode: Mode) {
    MODE.store(mode as u8, Ordering::SeqCst);
}

/// Has a build been asked to stop?
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}

fn on_signal(sig: libc::c_int) {
    let mode = MODE.load(Ordering::SeqCst);
    if mode == Mode::Interactive as u8 && sig == libc::SIGINT {
        return;
    }
    if mode != Mode::Build as u8 || REQUESTED.swap(true, Ordering::SeqCst) {
        if mode == Mode::Build as u8 {
            eprintln!("\nlayerbuild: interrupted again: exiting now");
            pass_on(sig);
        }
        std::process::exit(EXIT_CODE.into());
    }
    SIGNAL.store(sig, Ordering::SeqCst);
    let name = if sig == libc::SIGTERM {
        "SIGTERM"
    } else {
        "interrupted"
    };
    let said = format!(
        "layerbuild: {name}: stopping the running steps; their containers are kept (see `layerbuild ls --failed`). Again to exit at once."
    );
    match NOTICE.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
        Some(say) => say(&said),
        None => eprintln!("\n{said}"),
    }
    pass_on(sig);
    // Ansible waits for a running task, and what its workers start ignores
    // SIGINT: a step still running after a grace period gets SIGTERM, then
    // SIGKILL (its whole process group, in its namespaces, goes with it).
    std::thread::spawn(|| {
        for sig in [libc::SIGTERM, libc::SIGKILL] {
            std::thread::sleep(GRACE);
            pass_on(sig);
        }
    });
}

/// How long the running steps get to stop before the next, harder signal.
const GRACE: std::time::Duration = std::time::Duration::from_secs(5);

fn pass_on(sig: libc::c_int) {
    let groups = GROUPS.lock().unwrap_or_else(|e| e.into_inner()).clone();
    for g in groups {
        // SAFETY: kill(2) of a process group we started.
        unsafe { libc::kill(-g, sig) };
    }
}

/// A running step's process group, registered while it lives.
pub struct Step(i32);

/// Registers `child` (started in its own process group) so a signal
/// reaches it; one started after the signal gets it at once.
pub fn track(child: &std::process::Child) -> Step {
    let pgid = child.id() as i32;
    GROUPS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(pgid);
    if requested() {
        let sig = SIGNAL.load(Ordering::SeqCst);
        // SAFETY: as in `pass_on`.
        unsafe { libc::kill(-pgid, if sig == 0 { libc::SIGINT } else { sig }) };
    }
    Step(pgid)
}

impl Drop for Step {
    fn drop(&mut self) {
        GROUPS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.0);
    }
}

//! Starting a task process without copying the runtime.
//!
//! A `fork()` copies the runtime's page tables, and every page the runtime
//! writes afterwards faults and is copied until the child execs. In a
//! fan-out of 1,000 Rust children that was two thirds of the runtime's CPU
//! and most of the wall time (BENCHMARKS.md, "Spawning task processes").
//! `posix_spawn` (vfork semantics, which Rust's `Command` uses when no
//! `pre_exec` is set) costs neither, but runs nothing between fork and exec,
//! while a task process must ask for `PR_SET_PDEATHSIG` and enter its
//! attempt's cgroup before the app's code runs.
//!
//! So on Linux the runtime spawns its own binary as a *launcher*: started
//! as `/proc/self/exe __weft-launch RUNTIME-PID CGROUP-PROCS PROGRAM ARGS...`,
//! it does those two steps (exiting if the runtime is already gone) and
//! execs the start command, in the same process: the pid the runtime holds
//! is the task's. A binary opts in by calling [`run_if_asked`] first thing
//! in `main` (`weft` and `customer-etl` do); anywhere else, on other
//! systems, or with `WEFT_LAUNCHER=off`, the runtime forks and does both
//! steps in a `pre_exec` hook.

use std::ffi::{CString, OsString};
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicBool, Ordering};

/// The launcher's first argument.
pub const ARG: &str = "__weft-launch";

/// Set once this binary has shown it can act as the launcher.
static READY: AtomicBool = AtomicBool::new(false);

/// Acts as the launcher or the spawner (`spawner`) when this process was
/// started as one (and then never returns); otherwise notes that this
/// binary can be one.
pub fn run_if_asked() {
    let mut args = std::env::args_os();
    let code = match args.nth(1) {
        Some(arg) if arg == ARG => launch(args.collect()),
        Some(arg) if arg == crate::process::spawner::ARG => {
            crate::process::spawner::serve(args.collect())
        }
        _ => {
            READY.store(true, Ordering::Relaxed);
            return;
        }
    };
    std::process::exit(code);
}

/// Whether task processes are started through the launcher: on Linux, in
/// a binary that is one, unless `WEFT_LAUNCHER=off` (the fork, for
/// comparison or where `/proc` is not mounted).
pub(crate) fn enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    cfg!(target_os = "linux")
        && READY.load(Ordering::Relaxed)
        && *ON.get_or_init(|| {
            std::env::var_os("WEFT_LAUNCHER").is_none_or(|v| v != "off")
                && std::path::Path::new("/proc/self/exe").exists()
        })
}

/// The launcher's arguments before the start command.
pub(crate) fn prefix(cgroup_procs: Option<&std::ffi::CStr>) -> [OsString; 3] {
    [
        ARG.into(),
        std::process::id().to_string().into(),
        cgroup_procs
            .map(|p| std::ffi::OsStr::from_bytes(p.to_bytes()).to_owned())
            .unwrap_or_else(|| "-".into()),
    ]
}

fn launch(args: Vec<OsString>) -> i32 {
    let [runtime, procs, program, rest @ ..] = args.as_slice() else {
        eprintln!("weft: {ARG} RUNTIME-PID CGROUP-PROCS PROGRAM [ARGS...]");
        return 2;
    };
    let runtime: libc::pid_t = runtime.to_str().and_then(|p| p.parse().ok()).unwrap_or(0);
    #[cfg(target_os = "linux")]
    // SAFETY: plain system calls on this process.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
    }
    // A runtime that died before the request above sends no signal.
    // SAFETY: getppid has no preconditions.
    if unsafe { libc::getppid() } != runtime {
        return 1;
    }
    if procs.as_bytes() != b"-" {
        let path = CString::new(procs.as_bytes()).unwrap_or_default();
        if let Err(e) = crate::process::cgroup::enter(&path) {
            eprintln!(
                "weft: could not enter the attempt's cgroup {}: {e}",
                procs.to_string_lossy()
            );
            return 126;
        }
    }
    use std::os::unix::process::CommandExt;
    let err = std::process::Command::new(program).args(rest).exec();
    eprintln!("weft: could not start {}: {err}", program.to_string_lossy());
    if err.kind() == std::io::ErrorKind::NotFound {
        127
    } else {
        126
    }
}

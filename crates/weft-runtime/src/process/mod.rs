//! Starting task processes, and killing them: most of the runtime's
//! `unsafe` lives here, each use beside the reason for it.
//!
//! A task process is started one of four ways; [`executor::Executor`]
//! picks the first that applies:
//!
//! | way | when | what starts the process | costs |
//! |---|---|---|---|
//! | the pre-fork server (`fork_server`, `prefork.py`) | `--prefork`, a Python start command | a Python process that imported the SDK once forks a child per attempt | a fork, no interpreter start |
//! | the spawner (`spawner`, run by `fork_server`) | Linux, a binary that calls [`launcher::run_if_asked`] (`weft`, `customer-etl`), unless `WEFT_SPAWNER=off` | one small process of the runtime's own binary, `clone(CLONE_VM \| CLONE_VFORK)` then exec | one exec |
//! | the launcher shim (`launcher`) | as above, with `WEFT_SPAWNER=off` | the runtime's binary run as `__weft-launch`, which execs the start command | two execs |
//! | a fork of the runtime | elsewhere, or `WEFT_LAUNCHER=off` | `Command` with a `pre_exec` hook | a copy of the runtime's page tables |
//!
//! A start command of `npx NAME` runs the project's own
//! `node_modules/.bin/NAME` directly (`npx`), as npx would after looking.
//!
//! Every way gives the process its own process group, ties its life to
//! the runtime's (`PR_SET_PDEATHSIG`, or the `lifeline` elsewhere), puts it
//! in its attempt's cgroup where there is one (`cgroup`), and hands it the
//! same environment (weft's own settings left out).

pub(crate) mod cgroup;
pub(crate) mod executor;
pub(crate) mod fork_server;
pub mod launcher;
pub(crate) mod lifeline;
pub(crate) mod npx;
pub(crate) mod spawner;

/// Whether a process of this id exists (one of another user's counts).
pub(crate) fn exists(pid: libc::pid_t) -> bool {
    use nix::sys::signal::kill;
    use nix::unistd::Pid;
    // No signal: only whether it could be sent.
    !matches!(
        kill(Pid::from_raw(pid), None),
        Err(nix::errno::Errno::ESRCH)
    )
}

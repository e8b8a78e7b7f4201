//! Small facts about processes, for the sweeps of what dead runtimes left.

/// Whether a process of this id exists (one of another user's counts).
pub(crate) fn exists(pid: libc::pid_t) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    let alive = unsafe { libc::kill(pid, 0) } == 0;
    alive || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

//! The processes of a group: a child entering it between fork and exec,
//! and killing all of them on cgroup v1 (v2 has `cgroup.kill`), from the
//! runtime or from the spawner, which knows a group by its procs list only.

use std::ffi::CStr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{Group, Version};

/// The pids in a v1 folder (`cgroup.procs`); `None` when it cannot be read.
pub(super) fn members(dir: &Path) -> Option<Vec<libc::pid_t>> {
    let text = std::fs::read_to_string(dir.join("cgroup.procs")).ok()?;
    Some(text.lines().filter_map(|l| l.trim().parse().ok()).collect())
}

/// Kills every process of a v1 group: frozen first where the freezer is
/// there, so none forks a new one between the reading and the killing.
pub(super) fn kill_v1(group: &Group) {
    // Most often the attempt's processes are gone already (this runs at
    // every attempt's end): then nothing to freeze. Every process is in
    // all of the group's folders, so one tells.
    if group
        .folders()
        .first()
        .and_then(|d| members(d))
        .is_some_and(|m| m.is_empty())
    {
        return;
    }
    let state = group.file("freezer", "freezer.state");
    let frozen = state
        .as_ref()
        .is_some_and(|s| std::fs::write(s, "FROZEN").is_ok());
    if frozen && let Some(s) = &state {
        // The kernel freezes asynchronously: wait (briefly) until it has.
        for _ in 0..200 {
            if std::fs::read_to_string(s).is_ok_and(|t| t.trim() == "FROZEN") {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    for _round in 0..if frozen { 1 } else { 20 } {
        let mut killed = 0;
        for dir in group.folders() {
            for pid in members(dir).unwrap_or_default() {
                // SAFETY: sending a signal has no memory effects here.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                killed += 1;
            }
        }
        if killed == 0 {
            break;
        }
    }
    if frozen && let Some(s) = &state {
        // Killed processes die once thawed.
        let _ = std::fs::write(s, "THAWED");
    }
}

/// Moves the calling process into the group whose `cgroup.procs` files
/// are `procs` (newline-separated). For a child between fork and exec:
/// only async-signal-safe calls, and no allocation (each path is copied
/// into a buffer on the stack).
pub(crate) fn enter(procs: &CStr) -> std::io::Result<()> {
    for path in procs.to_bytes().split(|b| *b == b'\n') {
        let mut buf = [0u8; 4096];
        if path.is_empty() || path.len() >= buf.len() {
            return Err(std::io::Error::from_raw_os_error(libc::ENAMETOOLONG));
        }
        buf[..path.len()].copy_from_slice(path);
        // SAFETY: open, write and close are async-signal-safe; `buf` is a
        // NUL-terminated path.
        unsafe {
            let fd = libc::open(buf.as_ptr().cast(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let written = libc::write(fd, b"0".as_ptr().cast(), 1);
            libc::close(fd);
            if written != 1 {
                return Err(std::io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

/// Kills every process in the group whose `cgroup.procs` files are
/// `procs` (the spawner knows a child's group by that list only).
pub(crate) fn kill_by_procs(procs: &CStr) {
    use std::os::unix::ffi::OsStrExt;
    let dirs: Vec<PathBuf> = procs
        .to_bytes()
        .split(|b| *b == b'\n')
        .filter_map(|p| Path::new(std::ffi::OsStr::from_bytes(p)).parent())
        .map(Path::to_path_buf)
        .collect();
    if let [dir] = dirs.as_slice()
        && dir.join("cgroup.kill").exists()
    {
        let _ = std::fs::write(dir.join("cgroup.kill"), "1");
        return;
    }
    let group = Group {
        version: Version::V1,
        applied: None,
        procs: procs.to_owned(),
        dirs: dirs
            .into_iter()
            .map(|d| {
                let controller = if d.join("freezer.state").exists() {
                    "freezer"
                } else {
                    ""
                };
                (controller, d)
            })
            .collect(),
    };
    kill_v1(&group);
}

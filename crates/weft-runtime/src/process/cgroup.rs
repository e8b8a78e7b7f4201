//! A cgroup (v2) per attempt, where Linux lets weft make one: every process
//! an attempt starts stays in its cgroup, even one that leaves the process
//! group with `setsid` (Python's `start_new_session=True`), so a timeout or
//! a cancel kills them all (`cgroup.kill`), not only the process group.
//!
//! The attempts' cgroups live under `weft-<pid>` beside weft's own cgroup.
//! Without a writable cgroup v2 hierarchy (not Linux, no permission, an
//! old kernel) weft kills process groups only, and says so at start.
//!
//! A cgroup whose processes are all gone is kept for the next attempt:
//! making and removing one per attempt (the kernel builds and tears down
//! its files each time) costs a twentieth of the runtime's CPU per child
//! in a wide fan-out (BENCHMARKS.md, "The runtime, per Rust child").

use std::ffi::CString;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The cgroups of one runtime's attempts.
pub struct Cgroups {
    root: PathBuf,
    /// Emptied cgroups, for the next attempts.
    idle: Arc<Mutex<Vec<PathBuf>>>,
    /// Names new cgroups.
    made: AtomicU64,
}

/// Where cgroup v2 is mounted and where this process sits in it.
fn own_cgroup() -> Result<PathBuf, String> {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("cannot read /proc/self/mountinfo: {e}"))?;
    // Fields: id parent major:minor root mount-point options ... - fstype ...
    let mount = mounts
        .lines()
        .find_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            right
                .starts_with("cgroup2 ")
                .then(|| left.split(' ').nth(4).map(PathBuf::from))
                .flatten()
        })
        .ok_or("no cgroup v2 hierarchy is mounted")?;
    let membership = std::fs::read_to_string("/proc/self/cgroup")
        .map_err(|e| format!("cannot read /proc/self/cgroup: {e}"))?;
    let path = membership
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .ok_or("this process is in no cgroup v2 group")?;
    Ok(mount.join(path.trim_start_matches('/')))
}

impl Cgroups {
    /// The cgroups of this runtime, made now; `Err` says why there are none.
    pub fn create() -> Result<Self, String> {
        let own = own_cgroup()?;
        sweep_stale(&own);
        let root = own.join(format!("weft-{}", std::process::id()));
        std::fs::create_dir(&root).map_err(|e| format!("cannot create {}: {e}", root.display()))?;
        // (The root cgroup has no cgroup.kill; the ones below it do.)
        if !root.join("cgroup.kill").exists() {
            let _ = std::fs::remove_dir(&root);
            return Err(format!(
                "{} has no cgroup.kill (Linux 5.14 or later has it)",
                root.display()
            ));
        }
        Ok(Self {
            root,
            idle: Arc::default(),
            made: AtomicU64::new(0),
        })
    }

    /// An empty cgroup for one attempt: an idle one, or a new one.
    pub fn attempt(&self) -> Option<AttemptCgroup> {
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let dir = match idle {
            Some(dir) => dir,
            None => {
                let n = self.made.fetch_add(1, Ordering::Relaxed);
                let dir = self.root.join(format!("attempt-{n}"));
                match std::fs::create_dir(&dir) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                    Err(e) => {
                        tracing::warn!("cannot create the cgroup {}: {e}", dir.display());
                        return None;
                    }
                }
                dir
            }
        };
        let procs = CString::new(
            dir.join("cgroup.procs")
                .into_os_string()
                .into_encoded_bytes(),
        )
        .ok()?;
        Some(AttemptCgroup {
            dir,
            procs,
            idle: self.idle.clone(),
        })
    }
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        for dir in self
            .idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            let _ = std::fs::remove_dir(dir);
        }
        let _ = std::fs::remove_dir(&self.root);
    }
}

/// The cgroup of one attempt's processes.
pub struct AttemptCgroup {
    dir: PathBuf,
    /// `cgroup.procs`, ready for a child about to exec, where nothing may
    /// be allocated.
    procs: CString,
    /// Where it goes once empty again.
    idle: Arc<Mutex<Vec<PathBuf>>>,
}

impl AttemptCgroup {
    /// Its `cgroup.procs`.
    pub fn procs(&self) -> &std::ffi::CStr {
        &self.procs
    }

    /// What a child runs between fork and exec to enter the cgroup.
    pub fn enter_fn(&self) -> impl Fn() -> std::io::Result<()> + Send + Sync + 'static {
        let procs = self.procs.clone();
        move || enter(&procs)
    }

    /// Kills every process in it.
    pub fn kill(&self) {
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .write(true)
            .open(self.dir.join("cgroup.kill"))
        {
            let _ = f.write_all(b"1");
        }
    }

    /// Kills what is left and, once the cgroup is empty (killed processes
    /// take a moment to die), keeps it for the next attempt. One that does
    /// not empty is left out of use.
    pub async fn release(self) {
        for round in 0..100 {
            match self.populated() {
                Some(false) => {
                    self.idle
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(self.dir);
                    return;
                }
                // Gone (removed from outside): nothing to keep.
                None => return,
                Some(true) if round == 0 => self.kill(),
                Some(true) => {}
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tracing::warn!(
            "the cgroup {} is not empty yet; left out of use",
            self.dir.display()
        );
    }

    /// Whether a process is still in it (`cgroup.events`); `None` when it
    /// cannot be read.
    fn populated(&self) -> Option<bool> {
        let events = std::fs::read_to_string(self.dir.join("cgroup.events")).ok()?;
        events
            .lines()
            .find_map(|l| l.strip_prefix("populated "))
            .map(|v| v.trim() != "0")
    }
}

/// Moves the calling process into the cgroup whose `cgroup.procs` is
/// `procs`. For a child between fork and exec: only async-signal-safe calls.
pub(crate) fn enter(procs: &std::ffi::CStr) -> std::io::Result<()> {
    // SAFETY: open, write and close are async-signal-safe; the path is a C
    // string made before the fork.
    unsafe {
        let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let written = libc::write(fd, b"0".as_ptr().cast(), 1);
        libc::close(fd);
        if written != 1 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Kills every process in the cgroup whose `cgroup.procs` is `procs` (the
/// spawner knows a child's cgroup by that path only).
pub(crate) fn kill_by_procs(procs: &std::ffi::CStr) {
    use std::os::unix::ffi::OsStrExt;
    let procs = Path::new(std::ffi::OsStr::from_bytes(procs.to_bytes()));
    if let Some(dir) = procs.parent()
        && let Ok(mut f) = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.join("cgroup.kill"))
    {
        let _ = f.write_all(b"1");
    }
}

/// Kills what runtimes that died left in their cgroups, and removes them:
/// `weft-<pid>` of a pid that no longer exists.
fn sweep_stale(own: &Path) {
    let Ok(entries) = std::fs::read_dir(own) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("weft-"))
            .and_then(|p| p.parse::<libc::pid_t>().ok())
        else {
            continue;
        };
        if crate::process::exists(pid) {
            continue;
        }
        let dir = entry.path();
        if let Ok(children) = std::fs::read_dir(&dir) {
            for child in children.flatten().filter(|c| c.path().is_dir()) {
                let _ = std::fs::write(child.path().join("cgroup.kill"), "1");
                let _ = std::fs::remove_dir(child.path());
            }
        }
        let _ = std::fs::write(dir.join("cgroup.kill"), "1");
        let _ = std::fs::remove_dir(&dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt as _;

    #[tokio::test]
    async fn an_emptied_cgroup_serves_again_once_its_stragglers_are_killed() {
        let cgroups = match Cgroups::create() {
            Ok(c) => c,
            Err(why) => {
                eprintln!("SKIPPED: no cgroup per attempt here ({why})");
                return;
            }
        };
        let first = cgroups.attempt().unwrap();
        let dir = first.dir.clone();
        let enter = first.enter_fn();
        let mut straggler = std::process::Command::new("sleep");
        straggler.arg("600");
        // SAFETY: `enter` makes only async-signal-safe calls.
        unsafe {
            straggler.pre_exec(enter);
        }
        let mut straggler = straggler.spawn().unwrap();
        assert_eq!(first.populated(), Some(true));
        first.release().await;
        let status = straggler.wait().unwrap();
        assert!(!status.success(), "the straggler was killed: {status}");
        let second = cgroups.attempt().unwrap();
        assert_eq!(second.dir, dir, "the emptied cgroup serves again");
        assert_eq!(second.populated(), Some(false));
        let third = cgroups.attempt().unwrap();
        assert_ne!(third.dir, dir, "one in use is not handed out twice");
        second.release().await;
        third.release().await;
        let root = cgroups.root.clone();
        drop(cgroups);
        assert!(
            !root.exists(),
            "idle cgroups are removed with the runtime's"
        );
    }
}

//! A cgroup (v2) per attempt, where Linux lets weft make one: every process
//! an attempt starts stays in its cgroup, even one that leaves the process
//! group with `setsid` (Python's `start_new_session=True`), so a timeout or
//! a cancel kills them all (`cgroup.kill`), not only the process group.
//!
//! The attempts' cgroups live under `weft-<pid>` beside weft's own cgroup.
//! Without a writable cgroup v2 hierarchy (not Linux, no permission, an
//! old kernel) weft kills process groups only, and says so at start.

use std::ffi::CString;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The cgroups of one runtime's attempts.
pub struct Cgroups {
    root: PathBuf,
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
        Ok(Self { root })
    }

    /// A new cgroup for one attempt.
    pub fn attempt(&self, name: &str) -> Option<AttemptCgroup> {
        let dir = self.root.join(name);
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                tracing::warn!("cannot create the cgroup {}: {e}", dir.display());
                return None;
            }
        }
        let procs = CString::new(
            dir.join("cgroup.procs")
                .into_os_string()
                .into_encoded_bytes(),
        )
        .ok()?;
        Some(AttemptCgroup { dir, procs })
    }
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.root);
    }
}

/// The cgroup of one attempt's processes.
pub struct AttemptCgroup {
    dir: PathBuf,
    /// `cgroup.procs`, ready for a child about to exec, where nothing may
    /// be allocated.
    procs: CString,
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

    /// Kills what is left and removes the cgroup once it is empty (its
    /// processes take a moment to die).
    pub async fn remove(self) {
        self.kill();
        for _ in 0..100 {
            if std::fs::remove_dir(&self.dir).is_ok() || !self.dir.exists() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tracing::warn!(
            "the cgroup {} is not empty yet; left in place",
            self.dir.display()
        );
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

//! A cgroup per attempt, where Linux lets weft make one: every process an
//! attempt starts stays in its cgroup, even one that leaves the process
//! group with `setsid` (Python's `start_new_session=True`), so a timeout or
//! a cancel kills them all, not only the process group; and the cgroup
//! holds the attempt to its plan's memory and CPU (`Limits`) and measures
//! what it used (`Usage`).
//!
//! Both kinds of hierarchy are used:
//!
//! | | cgroup v2 (unified) | cgroup v1 (a hierarchy per controller) |
//! |---|---|---|
//! | the group | one folder | one folder in each of `memory`, `cpu`, `cpuacct`, `freezer` that is mounted and writable |
//! | entering it | its `cgroup.procs` | every folder's `cgroup.procs` |
//! | killing all | `cgroup.kill` | freeze (`freezer.state`), SIGKILL each member, thaw |
//! | memory, no swap | `memory.max`, `memory.swap.max`, `memory.oom.group` | `memory.limit_in_bytes`, `memory.memsw.limit_in_bytes` |
//! | CPU quota | `cpu.max` | `cpu.cfs_quota_us` / `cpu.cfs_period_us` |
//! | peak memory, CPU time | `memory.peak`, `cpu.stat` | `memory.max_usage_in_bytes`, `cpuacct.usage` |
//! | killed for memory | `memory.events` `oom_kill` | `memory.oom_control` `oom_kill` |
//!
//! The attempts' groups live under `weft-<pid>` beside weft's own group (in
//! each v1 hierarchy). Without either (not Linux, no permission, an old
//! kernel) weft kills process groups only and enforces no plan, and says
//! so at start.
//!
//! A group whose processes are all gone is kept for the next attempt, its
//! counters reset and its limits set anew: making and removing one per
//! attempt (the kernel builds and tears down its files each time) costs a
//! twentieth of the runtime's CPU per child in a wide fan-out
//! (BENCHMARKS.md, "The runtime, per Rust child").
//!
//! The path list a child enters (`AttemptCgroup::procs`) is the group's
//! `cgroup.procs` files joined by newlines: one on v2, one per controller
//! on v1. The spawner, the launcher and the pre-fork server take it as it
//! is and write `0` into each.
//!
//! Beside this file: `hierarchy` (where the hierarchies are mounted, this
//! process's place in them, what dead runtimes left) and `members` (a
//! child entering its group, and killing a v1 group's processes).

mod hierarchy;
mod members;

pub(crate) use members::{enter, kill_by_procs};

use hierarchy::{Mount, memberships, mounts, own_v1, own_v2, root_name, sweep_stale};
use members::{kill_v1, members};

use std::ffi::{CStr, CString};
use std::io::{Read as _, Seek as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The v1 controllers weft uses, in the order a group's folders are kept:
/// each one more folder to make, enter and read per attempt, so only these.
const V1_CONTROLLERS: [&str; 4] = ["memory", "cpu", "cpuacct", "freezer"];

/// The CPU quota's period: 100 ms, the kernel's default.
const CPU_PERIOD_US: u64 = 100_000;

/// What an attempt may use: its plan's memory (no swap) and CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub memory_bytes: Option<u64>,
    /// Thousandths of a CPU.
    pub cpu_millis: Option<u32>,
}

/// What an attempt's processes used, as far as the hierarchy tells.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// The most memory its processes held at once.
    pub peak_memory_bytes: Option<u64>,
    /// CPU time of all its processes.
    pub cpu_time: Option<Duration>,
    /// The kernel killed one of its processes for going over the memory
    /// limit.
    pub oom_killed: bool,
}

/// Which hierarchy the groups are in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

/// The cgroups of one runtime's attempts.
pub struct Cgroups {
    version: Version,
    /// v2: the one `weft-<pid>` folder; v1: one per controller in use
    /// (`None` where that controller is not mounted or not writable).
    roots: Vec<(&'static str, PathBuf)>,
    /// Emptied groups, for the next attempts.
    idle: Arc<Mutex<Vec<Group>>>,
    /// Names new groups.
    made: AtomicU64,
}

/// One attempt's group: its folder in each hierarchy it is in.
#[derive(Debug, Clone)]
struct Group {
    version: Version,
    /// (controller, folder); v2 has one, named "".
    dirs: Vec<(&'static str, PathBuf)>,
    /// The limits last written (a reused group keeps them): the same plan
    /// again writes nothing.
    applied: Option<Limits>,
    /// Its `cgroup.procs` files, newline-separated (see the module doc),
    /// made once with the group.
    procs: CString,
}

impl Group {
    /// A group of these folders, without limits yet; `None` if a path
    /// holds a NUL.
    fn new(version: Version, dirs: Vec<(&'static str, PathBuf)>) -> Option<Self> {
        let mut group = Self {
            version,
            dirs,
            applied: None,
            procs: CString::default(),
        };
        let procs = group
            .folders()
            .iter()
            .map(|d| d.join("cgroup.procs").to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join("\n");
        group.procs = CString::new(procs).ok()?;
        Some(group)
    }

    /// The folder holding `controller`'s files (v2: the one folder).
    fn dir(&self, controller: &str) -> Option<&Path> {
        match self.version {
            Version::V2 => self.dirs.first().map(|(_, d)| d.as_path()),
            Version::V1 => self
                .dirs
                .iter()
                .find(|(c, _)| *c == controller)
                .map(|(_, d)| d.as_path()),
        }
    }

    fn file(&self, controller: &str, name: &str) -> Option<PathBuf> {
        self.dir(controller).map(|d| d.join(name))
    }

    /// How many of its processes the kernel has killed for memory so far.
    fn oom_kills(&self) -> u64 {
        let file = match self.version {
            Version::V1 => self.file("memory", "memory.oom_control"),
            Version::V2 => self.file("", "memory.events"),
        };
        file.and_then(|f| keyed(&f, "oom_kill")).unwrap_or(0)
    }

    /// Each distinct folder once (v1 hierarchies may be mounted together).
    fn folders(&self) -> Vec<&Path> {
        let mut out: Vec<&Path> = Vec::new();
        for (_, d) in &self.dirs {
            if !out.contains(&d.as_path()) {
                out.push(d);
            }
        }
        out
    }
}

impl Cgroups {
    /// The cgroups of this runtime, made now; `Err` says why there are
    /// none. v2 where it has the memory controller; else v1 where that has
    /// it (a "hybrid" host mounts v2 with no controllers beside v1's); else
    /// whichever can at least hold and kill an attempt's processes.
    pub fn create() -> Result<Self, String> {
        let mounts = mounts()?;
        let memberships = memberships()?;
        let v2 = own_v2(&mounts, &memberships).and_then(|own| Self::create_v2(&own));
        if let Ok(cgroups) = &v2
            && cgroups.limits_memory()
        {
            return v2;
        }
        let v1 = Self::create_v1(&mounts, &memberships);
        match (v2, v1) {
            (_, Ok(v1)) if v1.limits_memory() => Ok(v1),
            (Ok(v2), _) | (Err(_), Ok(v2)) => Ok(v2),
            (Err(v2), Err(v1)) => Err(format!("cgroup v2: {v2}; cgroup v1: {v1}")),
        }
    }

    fn create_v2(own: &Path) -> Result<Self, String> {
        sweep_stale(own);
        let root = own.join(root_name());
        std::fs::create_dir(&root).map_err(|e| format!("cannot create {}: {e}", root.display()))?;
        // (The root cgroup has no cgroup.kill; the ones below it do.)
        if !root.join("cgroup.kill").exists() {
            let _ = std::fs::remove_dir(&root);
            return Err(format!(
                "{} has no cgroup.kill (Linux 5.14 or later has it)",
                root.display()
            ));
        }
        // The controllers the attempts' groups use: weft's own group must
        // pass them down to `root`, and `root` to the attempts. A group
        // that holds processes (weft's own, with whatever shell started it)
        // cannot pass any on (the kernel's "no internal processes" rule):
        // then only a delegated group (`systemd-run --user --scope -p
        // Delegate=yes weft dev ...`, a container's own root) gives limits.
        let _ = std::fs::write(own.join("cgroup.subtree_control"), "+memory +cpu +pids");
        let _ = std::fs::write(root.join("cgroup.subtree_control"), "+memory +cpu +pids");
        Ok(Self {
            version: Version::V2,
            roots: vec![("", root)],
            idle: Arc::default(),
            made: AtomicU64::new(0),
        })
    }

    fn create_v1(mounts: &[Mount], memberships: &[(Vec<String>, String)]) -> Result<Self, String> {
        let mut roots = Vec::new();
        let mut refused = Vec::new();
        for controller in V1_CONTROLLERS {
            let Some(own) = own_v1(controller, mounts, memberships) else {
                continue;
            };
            sweep_stale(&own);
            let root = own.join(root_name());
            match std::fs::create_dir(&root) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    refused.push(format!(
                        "{controller}: cannot create {}: {e}",
                        root.display()
                    ));
                    continue;
                }
            }
            roots.push((controller, root));
        }
        if roots.is_empty() {
            return Err(if refused.is_empty() {
                "no cgroup v1 controller is mounted".into()
            } else {
                refused.join("; ")
            });
        }
        for why in refused {
            tracing::warn!("cgroup v1 {why}");
        }
        Ok(Self {
            version: Version::V1,
            roots,
            idle: Arc::default(),
            made: AtomicU64::new(0),
        })
    }

    /// Which hierarchy, and (v1) which controllers, the groups use.
    pub fn describe(&self) -> String {
        match self.version {
            Version::V2 if self.limits_memory() => "cgroup v2".into(),
            Version::V2 => "cgroup v2, without the memory and cpu controllers (weft's own cgroup does not delegate them)".into(),
            Version::V1 => format!(
                "cgroup v1 ({})",
                self.roots
                    .iter()
                    .map(|(c, _)| *c)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }

    /// Whether attempts can be held to a memory limit (and CPU quota).
    pub fn limits_memory(&self) -> bool {
        match self.version {
            Version::V2 => std::fs::read_to_string(self.roots[0].1.join("cgroup.subtree_control"))
                .is_ok_and(|c| c.split_whitespace().any(|c| c == "memory")),
            Version::V1 => self.roots.iter().any(|(c, _)| *c == "memory"),
        }
    }

    /// An empty group for one attempt: an idle one, or a new one. A reused
    /// group keeps the limits it last had (a process started ahead of its
    /// attempt starts under them) until [`AttemptCgroup::limit`] sets the
    /// attempt's; a new one has none.
    pub fn attempt(&self) -> Option<AttemptCgroup> {
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let group = match idle {
            Some(group) => group,
            None => {
                let n = self.made.fetch_add(1, Ordering::Relaxed);
                let mut dirs = Vec::new();
                for (controller, root) in &self.roots {
                    let dir = root.join(format!("attempt-{n}"));
                    match std::fs::create_dir(&dir) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                        Err(e) => {
                            tracing::warn!("cannot create the cgroup {}: {e}", dir.display());
                            for (_, made) in &dirs {
                                let _ = std::fs::remove_dir(made);
                            }
                            return None;
                        }
                    }
                    dirs.push((*controller, dir));
                }
                Group::new(self.version, dirs)?
            }
        };
        let mut cgroup = AttemptCgroup {
            group,
            idle: self.idle.clone(),
            baseline: Baseline::default(),
            peak: None,
        };
        cgroup.reset();
        Some(cgroup)
    }
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        for group in self
            .idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            for (_, dir) in &group.dirs {
                let _ = std::fs::remove_dir(dir);
            }
        }
        for (_, root) in &self.roots {
            let _ = std::fs::remove_dir(root);
        }
    }
}

/// Counters read when the group was handed out, where the kernel cannot
/// reset them.
#[derive(Debug, Default, Clone, Copy)]
struct Baseline {
    cpu_usec: u64,
    oom_kills: u64,
}

/// The cgroup of one attempt's processes.
pub struct AttemptCgroup {
    group: Group,
    /// Where it goes once empty again.
    idle: Arc<Mutex<Vec<Group>>>,
    baseline: Baseline,
    /// v2: `memory.peak`, reset through this descriptor (the kernel keeps
    /// a reset per open file).
    peak: Option<std::fs::File>,
}

impl AttemptCgroup {
    /// Its `cgroup.procs` files, newline-separated, ready for a child about
    /// to exec, where nothing may be allocated.
    pub fn procs(&self) -> &CStr {
        &self.group.procs
    }

    /// What a child runs between fork and exec to enter the cgroup.
    pub fn enter_fn(&self) -> impl Fn() -> std::io::Result<()> + Send + Sync + 'static {
        let procs = self.group.procs.clone();
        move || enter(&procs)
    }

    /// Starts its counters afresh for a new attempt.
    fn reset(&mut self) {
        let g = &self.group;
        match g.version {
            Version::V1 => {
                for (controller, name) in [
                    ("memory", "memory.max_usage_in_bytes"),
                    ("memory", "memory.memsw.max_usage_in_bytes"),
                    ("cpuacct", "cpuacct.usage"),
                ] {
                    if let Some(f) = g.file(controller, name) {
                        let _ = std::fs::write(f, "0");
                    }
                }
                self.baseline.oom_kills = g.oom_kills();
            }
            Version::V2 => {
                self.baseline.cpu_usec = g
                    .file("", "cpu.stat")
                    .and_then(|f| keyed(&f, "usage_usec"))
                    .unwrap_or(0);
                self.baseline.oom_kills = g.oom_kills();
                self.peak = g.file("", "memory.peak").and_then(|f| {
                    let mut file = std::fs::OpenOptions::new()
                        .read(true)
                        .write(true)
                        .open(f)
                        .ok()?;
                    // Linux 6.12 and later reset the peak for this
                    // descriptor; older ones refuse, and the peak then
                    // spans the group's earlier attempts too.
                    let _ = file.write_all(b"reset\n");
                    Some(file)
                });
            }
        }
    }

    /// Holds its processes to `limits`; `None`s lift a limit.
    pub fn limit(&mut self, limits: Limits) {
        if self.group.applied == Some(limits) {
            return;
        }
        self.group.applied = Some(limits);
        let g = &self.group;
        let write = |controller: &str, name: &str, value: &str| {
            if let Some(f) = g.file(controller, name)
                && let Err(e) = std::fs::write(&f, value)
                && f.exists()
            {
                tracing::warn!("could not write {value} to {}: {e}", f.display());
            }
        };
        match g.version {
            Version::V2 => {
                match limits.memory_bytes {
                    Some(bytes) => {
                        write("", "memory.max", &bytes.to_string());
                        write("", "memory.swap.max", "0");
                    }
                    None => {
                        write("", "memory.max", "max");
                        write("", "memory.swap.max", "max");
                    }
                }
                // Render's instance goes down whole: so does the attempt.
                write("", "memory.oom.group", "1");
                let quota = limits.cpu_millis.map_or("max".to_string(), |m| {
                    (m as u64 * CPU_PERIOD_US / 1000).to_string()
                });
                write("", "cpu.max", &format!("{quota} {CPU_PERIOD_US}"));
            }
            Version::V1 => {
                // memsw (memory + swap) may never be below memory: raise
                // it first, lower it last.
                let value = limits
                    .memory_bytes
                    .map_or("-1".to_string(), |b| b.to_string());
                let memsw = g.file("memory", "memory.memsw.limit_in_bytes");
                let memsw_first =
                    memsw.is_some() && std::fs::write(memsw.as_ref().unwrap(), &value).is_ok();
                write("memory", "memory.limit_in_bytes", &value);
                if memsw.is_some() && !memsw_first {
                    write("memory", "memory.memsw.limit_in_bytes", &value);
                }
                write("cpu", "cpu.cfs_period_us", &CPU_PERIOD_US.to_string());
                let quota = limits.cpu_millis.map_or("-1".to_string(), |m| {
                    (m as u64 * CPU_PERIOD_US / 1000).to_string()
                });
                write("cpu", "cpu.cfs_quota_us", &quota);
            }
        }
    }

    /// What its processes used since it was handed out.
    pub fn usage(&self) -> Usage {
        let g = &self.group;
        match g.version {
            Version::V1 => {
                let read = |c: &str, n: &str| g.file(c, n).and_then(|f| number(&f));
                let peak = read("memory", "memory.memsw.max_usage_in_bytes")
                    .or_else(|| read("memory", "memory.max_usage_in_bytes"));
                Usage {
                    peak_memory_bytes: peak,
                    cpu_time: read("cpuacct", "cpuacct.usage").map(Duration::from_nanos),
                    oom_killed: g.oom_kills() > self.baseline.oom_kills,
                }
            }
            Version::V2 => {
                let peak = self.peak.as_ref().and_then(|f| {
                    let mut f = f;
                    let mut text = String::new();
                    f.rewind().ok()?;
                    f.read_to_string(&mut text).ok()?;
                    text.trim().parse().ok()
                });
                let cpu = g
                    .file("", "cpu.stat")
                    .and_then(|f| keyed(&f, "usage_usec"))
                    .map(|u| Duration::from_micros(u.saturating_sub(self.baseline.cpu_usec)));
                Usage {
                    peak_memory_bytes: peak,
                    cpu_time: cpu,
                    oom_killed: g.oom_kills() > self.baseline.oom_kills,
                }
            }
        }
    }

    /// Kills every process in it.
    pub fn kill(&self) {
        match self.group.version {
            Version::V2 => {
                if let Some(f) = self.group.file("", "cgroup.kill") {
                    let _ = std::fs::write(f, "1");
                }
            }
            Version::V1 => kill_v1(&self.group),
        }
    }

    /// Kills what is left and, once the group is empty (killed processes
    /// take a moment to die), keeps it for the next attempt. One that does
    /// not empty is left out of use.
    pub async fn release(self) {
        for round in 0..100 {
            match self.populated() {
                Some(false) => {
                    self.idle
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(self.group);
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
            self.group.folders()[0].display()
        );
    }

    /// Whether a process is still in it; `None` when that cannot be read.
    fn populated(&self) -> Option<bool> {
        match self.group.version {
            Version::V2 => {
                let events = std::fs::read_to_string(self.group.file("", "cgroup.events")?).ok()?;
                events
                    .lines()
                    .find_map(|l| l.strip_prefix("populated "))
                    .map(|v| v.trim() != "0")
            }
            // Every process enters all of the group's folders at once:
            // one of them tells.
            Version::V1 => Some(!members(self.group.folders().first()?)?.is_empty()),
        }
    }
}

/// A `key value` line's value in a flat-keyed cgroup file.
fn keyed(file: &Path, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// A file holding one number.
fn number(file: &Path) -> Option<u64> {
    std::fs::read_to_string(file).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests;

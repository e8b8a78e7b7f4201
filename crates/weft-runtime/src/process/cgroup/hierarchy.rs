//! Where the hierarchies are mounted and where this process sits in them,
//! the folder of this process's groups, and what runtimes that died left.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::members::members;

/// A mounted hierarchy: its mount point and the controllers (v1) on it.
pub(super) struct Mount {
    pub(super) point: PathBuf,
    pub(super) fstype: String,
    pub(super) options: Vec<String>,
}

pub(super) fn mounts() -> Result<Vec<Mount>, String> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("cannot read /proc/self/mountinfo: {e}"))?;
    // Fields: id parent major:minor root mount-point options ... - fstype source super-options
    Ok(text
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let point = PathBuf::from(left.split(' ').nth(4)?);
            let mut right = right.split(' ');
            let fstype = right.next()?.to_string();
            let options = right
                .nth(1)
                .unwrap_or("")
                .split(',')
                .map(str::to_string)
                .collect();
            Some(Mount {
                point,
                fstype,
                options,
            })
        })
        .collect())
}

/// This process's place in each hierarchy: (controllers, path) from
/// `/proc/self/cgroup` (v2's line has no controllers).
pub(super) fn memberships() -> Result<Vec<(Vec<String>, String)>, String> {
    let text = std::fs::read_to_string("/proc/self/cgroup")
        .map_err(|e| format!("cannot read /proc/self/cgroup: {e}"))?;
    Ok(text
        .lines()
        .filter_map(|l| {
            let mut parts = l.splitn(3, ':');
            let _id = parts.next()?;
            let controllers = parts.next()?;
            let path = parts.next()?;
            let controllers = controllers
                .split(',')
                .filter(|c| !c.is_empty())
                .map(str::to_string)
                .collect();
            Some((controllers, path.to_string()))
        })
        .collect())
}

/// The v2 folder of this process, where v2 is mounted.
pub(super) fn own_v2(
    mounts: &[Mount],
    memberships: &[(Vec<String>, String)],
) -> Result<PathBuf, String> {
    let mount = mounts
        .iter()
        .find(|m| m.fstype == "cgroup2")
        .ok_or("no cgroup v2 hierarchy is mounted")?;
    let path = memberships
        .iter()
        .find(|(c, _)| c.is_empty())
        .map(|(_, p)| p)
        .ok_or("this process is in no cgroup v2 group")?;
    Ok(mount.point.join(path.trim_start_matches('/')))
}

/// The folder of this process's groups: `weft-<pid>`, and `weft-<pid>-<n>`
/// for each further set one process makes (tests make several).
pub(super) fn root_name() -> String {
    static MADE: AtomicU64 = AtomicU64::new(0);
    match MADE.fetch_add(1, Ordering::Relaxed) {
        0 => format!("weft-{}", std::process::id()),
        n => format!("weft-{}-{n}", std::process::id()),
    }
}

/// This process's folder in the v1 hierarchy of `controller`.
pub(super) fn own_v1(
    controller: &str,
    mounts: &[Mount],
    memberships: &[(Vec<String>, String)],
) -> Option<PathBuf> {
    let mount = mounts
        .iter()
        .find(|m| m.fstype == "cgroup" && m.options.iter().any(|o| o == controller))?;
    let path = memberships
        .iter()
        .find(|(c, _)| c.iter().any(|c| c == controller))
        .map(|(_, p)| p)?;
    Some(mount.point.join(path.trim_start_matches('/')))
}

/// Kills what runtimes that died left in their groups, and removes them:
/// `weft-<pid>` of a pid that no longer exists.
pub(super) fn sweep_stale(own: &Path) {
    let Ok(entries) = std::fs::read_dir(own) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("weft-"))
            .and_then(|p| p.split('-').next()?.parse::<libc::pid_t>().ok())
        else {
            continue;
        };
        if crate::process::exists(pid) {
            continue;
        }
        let dir = entry.path();
        let mut groups: Vec<PathBuf> = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|c| c.path())
            .filter(|p| p.is_dir())
            .collect();
        groups.push(dir.clone());
        for group in groups {
            if group.join("cgroup.kill").exists() {
                let _ = std::fs::write(group.join("cgroup.kill"), "1");
            } else {
                for pid in members(&group).unwrap_or_default() {
                    // SAFETY: sending a signal has no memory effects here.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
            if group != dir {
                let _ = std::fs::remove_dir(&group);
            }
        }
        let _ = std::fs::remove_dir(&dir);
    }
}

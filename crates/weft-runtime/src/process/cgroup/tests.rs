//! The cgroups of attempts on this machine's hierarchy (v1 or v2).

use super::*;
use std::os::unix::process::CommandExt as _;

/// Runs on cgroup v1 and v2 alike; a machine with neither (or without
/// the permission to make groups) fails it, as it should: weft would
/// enforce nothing there.
#[tokio::test]
async fn an_emptied_cgroup_serves_again_once_its_stragglers_are_killed() {
    let cgroups = Cgroups::create().expect("a cgroup hierarchy weft can write to");
    let first = cgroups.attempt().unwrap();
    let dirs = first.group.dirs.clone();
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
    assert_eq!(second.group.dirs, dirs, "the emptied cgroup serves again");
    assert_eq!(second.populated(), Some(false));
    let third = cgroups.attempt().unwrap();
    assert_ne!(third.group.dirs, dirs, "one in use is not handed out twice");
    second.release().await;
    third.release().await;
    let roots: Vec<_> = cgroups.roots.iter().map(|(_, r)| r.clone()).collect();
    drop(cgroups);
    for root in roots {
        assert!(
            !root.exists(),
            "idle cgroups are removed with the runtime's"
        );
    }
}

#[tokio::test]
async fn a_group_over_its_memory_is_killed_and_says_so() {
    let cgroups = Cgroups::create().expect("a cgroup hierarchy weft can write to");
    assert!(cgroups.limits_memory(), "{}", cgroups.describe());
    let mut cgroup = cgroups.attempt().unwrap();
    cgroup.limit(Limits {
        memory_bytes: Some(64 << 20),
        cpu_millis: Some(500),
    });
    let enter = cgroup.enter_fn();
    // 200 MB, touched: the kernel must kill it at 64 MB.
    let mut hog = std::process::Command::new("python3");
    hog.args(["-c", "x = b'x' * (200 << 20); print(len(x))"]);
    // SAFETY: `enter` makes only async-signal-safe calls.
    unsafe {
        hog.pre_exec(enter);
    }
    let status = hog.status().unwrap();
    assert!(!status.success(), "{status}");
    let usage = cgroup.usage();
    assert!(usage.oom_killed, "{usage:?}");
    let peak = usage.peak_memory_bytes.unwrap();
    assert!(peak <= 64 << 20 && peak > 32 << 20, "{peak}");
    cgroup.release().await;
    // Handed out again without limits, with its counters reset.
    let mut again = cgroups.attempt().unwrap();
    again.limit(Limits::default());
    let usage = again.usage();
    assert!(!usage.oom_killed, "{usage:?}");
    again.release().await;
}

//! Standbys: while runs wait for a slot, `weft dev` starts task processes
//! ahead of their attempts. Each attempt must still be its own process on
//! its own socket, what a standby printed before it had an attempt is that
//! attempt's output, and an idle runtime keeps no standby. The app is on
//! the official Python SDK.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{Options, Weft, wait_for};
use serde_json::Value;
use weft::client::{Client, LogsQuery, TaskRunDetailsExt};

const CHILDREN: usize = 8;

/// `weft_standby_attempts_total` of the node.
fn standby_attempts(rt: &tokio::runtime::Runtime, url: &str) -> u64 {
    let text = rt
        .block_on(async { reqwest::get(format!("{url}/metrics")).await?.text().await })
        .unwrap();
    text.lines()
        .find(|l| l.starts_with("weft_standby_attempts_total{"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no standby counter in:\n{text}"))
}

/// Runs `whoami_fan_out(CHILDREN)` on one slot, so children wait for it;
/// returns each child's pid and socket.
fn fan_out(weft: &Weft, rt: &tokio::runtime::Runtime) -> (String, Vec<(u64, String)>) {
    let client = Client::new(&weft.url).unwrap();
    let run = rt
        .block_on(client.run_task("whoami_fan_out", [CHILDREN]).send())
        .unwrap();
    let children: Vec<Value> = run.result().unwrap();
    let children = children
        .iter()
        .map(|c| {
            (
                c["pid"].as_u64().unwrap(),
                c["socket"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    (run.run.id, children)
}

#[test]
fn waiting_runs_start_on_standbys_each_its_own_process_and_socket() {
    let weft = Weft::start_with(Options {
        args: &["--quiet", "--max-concurrent", "1"],
        env: &[("WEFT_TEST_SAY_START", "1")],
        ..Default::default()
    });
    let rt = common::runtime();
    let (root, children) = fan_out(&weft, &rt);
    assert_eq!(children.len(), CHILDREN);
    let pids: BTreeSet<_> = children.iter().map(|(pid, _)| *pid).collect();
    let sockets: BTreeSet<_> = children.iter().map(|(_, s)| s.clone()).collect();
    assert_eq!(pids.len(), CHILDREN, "a process per attempt: {children:?}");
    assert_eq!(
        sockets.len(),
        CHILDREN,
        "a socket per attempt: {children:?}"
    );
    let used = standby_attempts(&rt, &weft.url);
    assert!(used > 0, "children waiting for the slot ran on standbys");

    // Each child's stored output holds the line its process printed when it
    // started, before it knew its run: a standby's early output is its
    // attempt's, not lost and not another run's.
    let client = Client::new(&weft.url).unwrap();
    let runs = rt
        .block_on(
            client.list_all_task_runs(&weft::client::ListTaskRunsParams {
                root_task_run_id: Some(root.clone()),
                ..Default::default()
            }),
        )
        .unwrap();
    let mut checked = 0;
    for run in runs.iter().filter(|r| r.id != root) {
        let details = rt.block_on(client.get_task_run(&run.id)).unwrap();
        let me: Value = details.result().unwrap();
        let pid = me["pid"].as_u64().unwrap();
        let logs = rt
            .block_on(client.logs(&LogsQuery {
                task_run_ids: vec![run.id.clone()],
                ..Default::default()
            }))
            .unwrap();
        let lines: Vec<&str> = logs.logs.iter().map(|l| l.message.as_str()).collect();
        assert_eq!(
            lines,
            [format!("process {pid} started")],
            "the output of {} is its own process's",
            run.id
        );
        checked += 1;
    }
    assert_eq!(checked, CHILDREN);

    // Idle, the runtime keeps no standby.
    wait_for(10, "idle standbys to stop", || {
        (weft.task_processes() == 0).then_some(())
    });
}

#[test]
fn no_standby_starts_each_process_when_its_attempt_runs() {
    let weft = Weft::start_with(Options {
        args: &["--quiet", "--max-concurrent", "1", "--no-standby"],
        ..Default::default()
    });
    let rt = common::runtime();
    let (_, children) = fan_out(&weft, &rt);
    assert_eq!(children.len(), CHILDREN);
    assert_eq!(standby_attempts(&rt, &weft.url), 0);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(weft.task_processes(), 0);
}

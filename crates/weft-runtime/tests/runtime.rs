//! The runtime in this process, on a SQLite file of its own, running the
//! Rust SDK's example apps (`crates/weft/examples`, built by `cargo test
//! --workspace`): a fan-out, retries with their backoff, a timeout, a
//! cancel that reaches every descendant, standbys, a drain, and a parent
//! relaunched after a stop that adopts its children. No Python, no
//! PostgreSQL, no `weft` binary: what the runtime does, seen from its API.
//!
//! Task processes are started here by a fork of this test process (the
//! spawner and the launcher need a binary that calls `run_if_asked`; the
//! CLI's tests run those).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use weft_runtime::{Runtime, RuntimeConfig};
use weft_store::{RunFilter, RunRecord, RunState, SqliteStore};

/// An example app of the Rust SDK, built next to this test.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile = exe.parent().and_then(|deps| deps.parent()).unwrap();
    let app = profile.join("examples").join(name);
    assert!(
        app.is_file(),
        "{} is not built: `cargo test --workspace` builds it (or `cargo build -p weft-workflows --examples`)",
        app.display()
    );
    app
}

/// A runtime serving `app` on a loopback port, its runs in `db`.
async fn start(app: &str, db: &std::path::Path, max_concurrent: usize) -> Runtime {
    let mut config = RuntimeConfig::new(vec![example(app).to_string_lossy().into_owned()]);
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.echo_logs = false;
    config.max_concurrent = max_concurrent;
    // A runtime stopped just before lets go of the file once its last
    // task has ended, a moment after `shutdown` returns.
    let mut tries = 0;
    let store = loop {
        match SqliteStore::open(db) {
            Ok(store) => break store,
            Err(weft_store::StoreError::InUse { .. }) if tries < 100 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("{e}"),
        }
    };
    Runtime::start(config, Arc::new(store)).await.unwrap()
}

/// Starts `task` with `input` and waits (at most a minute) for its end.
async fn run(rt: &Runtime, task: &str, input: serde_json::Value) -> RunRecord {
    let c = rt.coordinator();
    let run = c.start_run(task, input.into(), None).await.unwrap();
    ended(rt, &run.id).await
}

/// Waits (at most a minute) for run `id` to end.
async fn ended(rt: &Runtime, id: &str) -> RunRecord {
    let c = rt.coordinator();
    for _ in 0..60 {
        let run = c.wait_for_run(id, Duration::from_secs(1)).await.unwrap();
        if run.status.is_terminal() {
            return run;
        }
    }
    panic!("{id} did not end within a minute");
}

/// Every run of `root`'s tree.
async fn tree(rt: &Runtime, root: &str) -> Vec<RunRecord> {
    rt.coordinator()
        .store()
        .list_runs(&RunFilter {
            root_ids: vec![root.to_string()],
            limit: 10_000,
            ..Default::default()
        })
        .await
        .unwrap()
}

/// A line of `GET /metrics` that starts with `name`: its value.
async fn metric(rt: &Runtime, name: &str) -> f64 {
    let text = reqwest::get(format!("{}/metrics", rt.url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fan_out_runs_each_child_once_and_sums_them() {
    let dir = tempfile::tempdir().unwrap();
    let rt = start("fan_out", &dir.path().join("weft.db"), 2).await;
    let done = run(&rt, "fan_out", json!([30])).await;
    assert_eq!(done.status, RunState::Completed, "{:?}", done.error);
    let sum: u64 = (0..30u64).map(|i| i * i).sum();
    assert_eq!(done.output.unwrap().to_value(), json!([sum]));
    let runs = tree(&rt, &done.id).await;
    assert_eq!(runs.len(), 31, "the parent and one child per input");
    for r in &runs {
        assert_eq!(r.status, RunState::Completed);
        assert_eq!(r.attempts.len(), 1, "{} ran once", r.id);
    }
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_task_is_retried_after_its_backoff_then_succeeds_or_fails() {
    let dir = tempfile::tempdir().unwrap();
    let rt = start("retries", &dir.path().join("weft.db"), 2).await;
    // Fails twice, then succeeds; waits 200 ms, then 400 ms (factor 2).
    let done = run(&rt, "flaky", json!([2])).await;
    assert_eq!(done.status, RunState::Completed, "{:?}", done.error);
    assert_eq!(done.output.unwrap().to_value(), json!(["attempt 3"]));
    assert_eq!(done.attempts.len(), 3);
    for (k, pair) in done.attempts.windows(2).enumerate() {
        let waited = pair[1].started_at - pair[0].completed_at.unwrap();
        let backoff = chrono::Duration::milliseconds(200 << k);
        assert!(
            waited >= backoff,
            "retry {k} waited {waited}, less than {backoff}"
        );
        assert!(
            pair[0]
                .error
                .as_deref()
                .unwrap()
                .contains("planned failures")
        );
    }
    // Panics every time: one retry, then the run fails with the panic's message.
    let failed = run(&rt, "always_panics", json!([])).await;
    assert_eq!(failed.status, RunState::Failed);
    assert_eq!(failed.attempts.len(), 2);
    assert!(
        failed
            .error
            .as_deref()
            .unwrap()
            .contains("RETRIES_EXAMPLE_SETTINGS is never set"),
        "{:?}",
        failed.error
    );
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_past_its_timeout_is_killed_and_retried_then_fails() {
    let dir = tempfile::tempdir().unwrap();
    let rt = start("timeouts", &dir.path().join("weft.db"), 2).await;
    let quick = run(&rt, "bounded_sleep", json!([0.1])).await;
    assert_eq!(quick.status, RunState::Completed, "{:?}", quick.error);
    let slow = run(&rt, "bounded_sleep", json!([30])).await;
    assert_eq!(slow.status, RunState::Failed);
    assert_eq!(slow.attempts.len(), 2, "one retry");
    for a in &slow.attempts {
        assert!(
            a.error.as_deref().unwrap().contains("timed out after 1 s"),
            "{:?}",
            a.error
        );
        let ran = a.completed_at.unwrap() - a.started_at;
        assert!(
            ran < chrono::Duration::seconds(10),
            "killed, not left to sleep: {ran}"
        );
    }
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_reaches_every_descendant_and_stops_their_processes() {
    let dir = tempfile::tempdir().unwrap();
    let rt = start("timeouts", &dir.path().join("weft.db"), 4).await;
    let c = rt.coordinator();
    let root = c
        .start_run("sleepers", json!([3, 60]).into(), None)
        .await
        .unwrap();
    for _ in 0..300 {
        let runs = tree(&rt, &root.id).await;
        if runs
            .iter()
            .filter(|r| r.status == RunState::Running)
            .count()
            == 4
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let canceled = c.cancel(&root.id).await.unwrap();
    assert_eq!(canceled.len(), 4, "the parent and its three children");
    for r in tree(&rt, &root.id).await {
        assert_eq!(r.status, RunState::Canceled, "{}", r.id);
    }
    let mut running = f64::NAN;
    for _ in 0..100 {
        running = metric(&rt, "weft_node_running_attempts").await;
        if running == 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(running, 0.0, "every process of the tree was stopped");
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_runs_wait_for_a_slot_standbys_take_them() {
    let dir = tempfile::tempdir().unwrap();
    let rt = start("fan_out", &dir.path().join("weft.db"), 2).await;
    let done = run(&rt, "fan_out", json!([60])).await;
    assert_eq!(done.status, RunState::Completed, "{:?}", done.error);
    assert!(
        metric(&rt, "weft_standby_attempts_total").await > 0.0,
        "some children ran on processes started ahead of them"
    );
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_lets_the_running_attempt_finish() {
    let dir = tempfile::tempdir().unwrap();
    let rt = start("timeouts", &dir.path().join("weft.db"), 2).await;
    let c = rt.coordinator().clone();
    let run = c
        .start_run("sleep", json!([1.5]).into(), None)
        .await
        .unwrap();
    // Running before the drain starts (a loaded machine may take seconds
    // to start the first process): a drain claims nothing new.
    let mut running = false;
    for _ in 0..600 {
        let now = c.store().get_run(&run.id).await.unwrap().unwrap();
        if now.status == RunState::Running {
            running = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(running, "the run started within 30 s");
    rt.drain(Duration::from_secs(30)).await;
    // Read through the stopped runtime's store, which still has the file.
    let stored = c.store().get_run(&run.id).await.unwrap().unwrap();
    assert_eq!(stored.status, RunState::Completed, "{:?}", stored.error);
    assert_eq!(
        stored.attempts.len(),
        1,
        "it finished; nothing was handed back"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parent_that_runs_again_adopts_the_children_it_had_started() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("weft.db");
    let first = start("timeouts", &db, 4).await;
    let root = first
        .coordinator()
        .start_run("sleepers", json!([4, 1]).into(), None)
        .await
        .unwrap();
    for _ in 0..300 {
        if tree(&first, &root.id).await.len() == 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        tree(&first, &root.id).await.len(),
        5,
        "four children started"
    );
    // Stopped at once: every attempt is handed back, to run again.
    first.shutdown().await;
    let second = start("timeouts", &db, 4).await;
    let done = ended(&second, &root.id).await;
    assert_eq!(done.status, RunState::Completed, "{:?}", done.error);
    assert_eq!(done.output.unwrap().to_value(), json!([4.0]));
    let runs = tree(&second, &root.id).await;
    assert_eq!(
        runs.len(),
        5,
        "the relaunched parent adopted its four children"
    );
    let parent = runs.iter().find(|r| r.id == root.id).unwrap();
    assert!(parent.attempts[0].interrupted, "{:?}", parent.attempts);
    assert_eq!(
        parent.failed_attempts(),
        0,
        "an interruption does not count"
    );
    second.shutdown().await;
}

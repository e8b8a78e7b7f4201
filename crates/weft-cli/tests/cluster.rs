//! Several `weft serve` nodes on one real PostgreSQL (each test in a schema
//! of its own): they share the work, any node answers for every run, a
//! parent hears at once of a child that ended on another node, a drain
//! lets work finish or hands it back, a lost node loses nothing, and old
//! runs are pruned.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{Options, PgSchema, Weft, example, serve_node as node};
use weft::client::{Client, ListTaskRunsParams};
use weft::protocol::api::{TaskRun, TaskRunStatus};

fn all_runs(rt: &tokio::runtime::Runtime, client: &Client, root: &str) -> Vec<TaskRun> {
    rt.block_on(client.list_all_task_runs(&ListTaskRunsParams {
        root_task_run_id: Some(root.to_string()),
        ..Default::default()
    }))
    .unwrap()
}

fn wait_done(
    rt: &tokio::runtime::Runtime,
    client: &Client,
    id: &str,
    secs: u64,
) -> weft::protocol::api::TaskRunDetails {
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(secs), client.wait_for_task_run(id)).await
    })
    .unwrap_or_else(|_| panic!("{id} did not end within {secs} s"))
    .unwrap_or_else(|e| panic!("{id}: {e}"))
}

#[test]
fn three_nodes_share_a_wide_fan_out_and_any_node_answers_for_every_run() {
    let db = PgSchema::new();
    let app = example("fan_out");
    let nodes: Vec<Weft> = ["a", "b", "c"]
        .iter()
        .map(|id| node(&db, id, &["--quiet", "--max-concurrent", "2"], &[&app]))
        .collect();
    let rt = common::runtime();
    let clients: Vec<Client> = nodes.iter().map(|n| Client::new(&n.url).unwrap()).collect();
    let run = rt
        .block_on(clients[0].start_task("fan_out", [1000]).send())
        .unwrap();
    let root = run.id().to_string();
    // Asked on another node than the one it was started on.
    let done = wait_done(&rt, &clients[2], &root, 300);
    assert_eq!(
        done.results,
        serde_json::json!([(0..1000u64).map(|i| i * i).sum::<u64>()])
    );
    let tree = all_runs(&rt, &clients[1], &root);
    assert_eq!(tree.len(), 1001, "the parent and exactly 1,000 children");
    let mut per_node: HashMap<String, usize> = HashMap::new();
    for run in &tree {
        assert_eq!(run.status, TaskRunStatus::Completed);
        assert_eq!(run.attempts.len(), 1, "{} ran once", run.id);
        *per_node
            .entry(run.attempts[0].node_id.clone().unwrap())
            .or_default() += 1;
    }
    eprintln!("attempts per node: {per_node:?}");
    assert!(per_node.len() >= 2, "the work was shared: {per_node:?}");

    // The nodes, as any of them lists them.
    let listed = rt.block_on(clients[1].list_nodes()).unwrap();
    let mut ids: Vec<_> = listed
        .iter()
        .filter(|n| n.gone_at.is_none())
        .map(|n| n.id.as_str())
        .collect();
    ids.sort();
    assert_eq!(ids, ["a", "b", "c"]);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(["nodes", "list", "--url", &nodes[2].url])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && table.contains("alive"), "{table}");
    // The show command names the node of each attempt.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(["runs", "show", &root, "--url", &nodes[1].url])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("NODE"));

    // Metrics in the Prometheus text format.
    let metrics = rt
        .block_on(async {
            reqwest::get(format!("{}/metrics", nodes[0].url))
                .await?
                .text()
                .await
        })
        .unwrap();
    assert!(
        metrics.contains("weft_runs{state=\"completed\"} 1001"),
        "{metrics}"
    );
    assert!(
        metrics.contains("weft_claim_latency_seconds_count{node=\"a\"}"),
        "{metrics}"
    );

    // Two nodes starting 200 runs under 50 keys at once make 50 runs.
    let starts: Vec<_> = (0..200)
        .map(|i| {
            let client = clients[i % 2].clone();
            rt.spawn(async move {
                let run = client
                    .start_task("square", [i % 50])
                    .idempotency_key(format!("k-{}", i % 50))
                    .send()
                    .await
                    .unwrap();
                (i % 50, run.id().to_string())
            })
        })
        .collect();
    let mut by_key = HashMap::new();
    for s in starts {
        let (key, id) = rt.block_on(s).unwrap();
        assert_eq!(
            by_key.entry(key).or_insert_with(|| id.clone()),
            &id,
            "key {key} named two runs"
        );
    }
    assert_eq!(by_key.len(), 50);
}

#[test]
fn a_parent_hears_at_once_of_a_child_on_another_node_and_a_drain_lets_it_finish() {
    let db = PgSchema::new();
    let py = common::python();
    let app = common::app_py();
    let mut a = node(
        &db,
        "a",
        &["--quiet", "--drain-timeout", "60s"],
        &[&py, &app],
    );
    let rt = common::runtime();
    let client_a = Client::new(&a.url).unwrap();
    let parent = rt
        .block_on(client_a.start_task("later_child", (3.0, 1.0)).send())
        .unwrap()
        .id()
        .to_string();
    common::wait_running(&rt, &client_a, &parent);
    // a claims nothing more, but its running parent goes on; the child it
    // starts in 3 s can only run on b.
    a.signal(libc::SIGTERM);
    let b = node(&db, "b", &["--quiet"], &[&py, &app]);
    let client_b = Client::new(&b.url).unwrap();
    let done = wait_done(&rt, &client_b, &parent, 60);
    assert_eq!(done.results, serde_json::json!([1.0]));
    let tree = all_runs(&rt, &client_b, &parent);
    let child = tree.iter().find(|r| r.id != parent).unwrap();
    let parent_run = tree.iter().find(|r| r.id == parent).unwrap();
    assert_eq!(parent_run.attempts[0].node_id.as_deref(), Some("a"));
    assert_eq!(child.attempts[0].node_id.as_deref(), Some("b"));
    // Woken by the child's end, not by the next poll (held for 10 s).
    let heard = parent_run.completed_at.unwrap() - child.completed_at.unwrap();
    eprintln!("the parent on a ended {heard} after its child on b");
    assert!(heard < chrono::Duration::seconds(5), "{heard}");
    // The drained node exits by itself once its attempt is done.
    let status = a.wait_exit(30).expect("the drained node exits");
    assert!(status.success(), "{status}");
    assert!(a.output().contains("draining"), "{}", a.output());
}

#[test]
fn a_drain_hands_back_what_outlives_its_timeout() {
    let db = PgSchema::new();
    let py = common::python();
    let app = common::app_py();
    let mut a = node(
        &db,
        "a",
        &["--quiet", "--drain-timeout", "1s"],
        &[&py, &app],
    );
    let rt = common::runtime();
    let client_a = Client::new(&a.url).unwrap();
    let run = rt
        .block_on(client_a.start_task("sleep_for", [8.0]).send())
        .unwrap()
        .id()
        .to_string();
    common::wait_running(&rt, &client_a, &run);
    let b = node(&db, "b", &["--quiet"], &[&py, &app]);
    let stopped = Instant::now();
    a.signal(libc::SIGTERM);
    let status = a
        .wait_exit(20)
        .expect("the node stops after its drain timeout");
    assert!(status.success(), "{status}");
    assert!(
        stopped.elapsed() < Duration::from_secs(8),
        "it did not wait for the run"
    );
    let client_b = Client::new(&b.url).unwrap();
    let done = wait_done(&rt, &client_b, &run, 60);
    assert_eq!(done.results, serde_json::json!([8.0]));
    let attempts = &done.run.attempts;
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    assert_eq!(attempts[0].node_id.as_deref(), Some("a"));
    assert!(
        attempts[0]
            .error
            .as_deref()
            .unwrap()
            .contains("interrupted"),
        "{attempts:?}"
    );
    assert_eq!(attempts[1].node_id.as_deref(), Some("b"));
    // a left: b says so.
    let nodes = rt.block_on(client_b.list_nodes()).unwrap();
    assert!(
        nodes
            .iter()
            .find(|n| n.id == "a")
            .unwrap()
            .gone_at
            .is_some()
    );
}

#[test]
fn ended_runs_are_pruned_after_the_retention_with_their_subtasks() {
    let db = PgSchema::new();
    let app = example("hello");
    let n = node(&db, "a", &["--quiet", "--retention", "2s"], &[&app]);
    let rt = common::runtime();
    let client = Client::new(&n.url).unwrap();
    let done = rt
        .block_on(client.run_task("add_squares", (3, 4)).send())
        .unwrap();
    let root = done.run.id.clone();
    let kids: Vec<String> = all_runs(&rt, &client, &root)
        .into_iter()
        .map(|r| r.id)
        .filter(|id| *id != root)
        .collect();
    assert_eq!(kids.len(), 2);
    common::wait_for(30, "the ended tree to be pruned", || {
        rt.block_on(client.get_task_run(&root))
            .err()
            .filter(|e| e.is_not_found())
            .map(|_| ())
    });
    for kid in &kids {
        assert!(
            rt.block_on(client.get_task_run(kid))
                .unwrap_err()
                .is_not_found()
        );
    }
    // New work is untouched.
    let fresh = rt.block_on(client.run_task("square", [5]).send()).unwrap();
    assert_eq!(fresh.results, serde_json::json!([25]));
}

#[test]
fn bad_cluster_settings_are_refused_by_name() {
    let weft = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_weft"))
            .args(args)
            .output()
            .unwrap()
    };
    let out = weft(&[
        "serve",
        "--port",
        "0",
        "--database-url",
        "postgres://weft@127.0.0.1:9/nowhere",
        "--",
        "true",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("postgres://weft@127.0.0.1:9/nowhere"),
        "{err}"
    );
    assert!(!err.contains("password"), "{err}");

    // A fence margin that leaves no lease, or one that is none, is refused
    // before anything is written.
    for (margin, timeout) in [("0s", "10s"), ("6s", "10s"), ("1s", "500ms")] {
        let out = weft(&[
            "serve",
            "--port",
            "0",
            "--database-url",
            "postgres://weft@127.0.0.1:9/nowhere",
            "--fence-margin",
            margin,
            "--node-timeout",
            timeout,
            "--",
            "true",
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "--fence-margin {margin} was taken");
        assert!(
            err.contains("--fence-margin") || err.contains("--node-timeout must be at least"),
            "{err}"
        );
        assert!(
            !err.contains("127.0.0.1:9"),
            "refused before connecting: {err}"
        );
    }

    let db = PgSchema::new();
    let app = example("hello");
    let _a = node(&db, "twin", &["--quiet"], &[&app]);
    let out = weft(&[
        "serve",
        "--port",
        "0",
        "--database-url",
        &db.url,
        "--node-id",
        "twin",
        "--",
        app.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a second node twin started");
    assert!(
        err.contains("node twin is already running") && err.contains("--node-id"),
        "{err}"
    );
}

#[test]
fn weft_dev_keeps_its_runs_in_postgres_when_asked() {
    let db = PgSchema::new();
    let app = example("hello");
    let rt = common::runtime();
    let mut weft = Weft::start_with(Options {
        args: &["--quiet", "--database-url", &db.url],
        command: &[&app],
        ..Default::default()
    });
    let client = Client::new(&weft.url).unwrap();
    let done = rt
        .block_on(client.run_task("add_squares", (3, 4)).send())
        .unwrap();
    assert_eq!(done.results, serde_json::json!([25]));
    weft.stop();
    let weft = weft.start_again();
    let client = Client::new(&weft.url).unwrap();
    let again = rt.block_on(client.get_task_run(&done.run.id)).unwrap();
    assert_eq!(
        again.results,
        serde_json::json!([25]),
        "kept across a restart"
    );
}

/// The files of an output folder, by relative path, with their bytes.
fn files_under(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    for sub in ["profiles", "rejects"] {
        let Ok(entries) = std::fs::read_dir(dir.join(sub)) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = format!("{sub}/{}", entry.file_name().to_string_lossy());
            out.insert(name, std::fs::read(entry.path()).unwrap());
        }
    }
    out
}

fn customer_etl_bin() -> std::path::PathBuf {
    common::profile_dir().join("customer-etl")
}

/// The customer ETL, 100,000 customers in 30 shards, on three nodes; the
/// node running the workflow's parent is SIGKILLed mid-run. The run
/// completes, its profiles and rejects are byte-identical to a one-node
/// run's, no two attempts of a run overlap in time, and the killed node's
/// attempts finished elsewhere.
#[test]
fn a_lost_node_loses_nothing_the_etl_on_three_nodes() {
    const SHARDS: u32 = 30;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    customer_etl::generate(&data, 100_000, 17).unwrap();
    let bin = customer_etl_bin();
    let rt = common::runtime();
    let input =
        |out: &Path| serde_json::json!({"data_dir": data, "out_dir": out, "num_shards": SHARDS});

    // One node: the reference.
    let one_out = dir.path().join("one-node");
    {
        let db = PgSchema::new();
        let n = node(&db, "solo", &["--quiet"], &[&bin]);
        let client = Client::new(&n.url).unwrap();
        let run = rt
            .block_on(
                client
                    .start_task("merge_customer_data", input(&one_out))
                    .send(),
            )
            .unwrap();
        let done = wait_done(&rt, &client, run.id(), 600);
        assert_eq!(
            done.run.status,
            TaskRunStatus::Completed,
            "{:?}",
            done.error
        );
    }

    let db = PgSchema::new();
    let args = ["--quiet", "--max-concurrent", "1", "--node-timeout", "3s"];
    let mut nodes: Vec<Option<Weft>> = ["a", "b", "c"]
        .iter()
        .map(|id| Some(node(&db, id, &args, &[&bin])))
        .collect();
    let out = dir.path().join("three-nodes");
    let client = Client::new(&nodes[0].as_ref().unwrap().url).unwrap();
    let root = rt
        .block_on(client.start_task("merge_customer_data", input(&out)).send())
        .unwrap()
        .id()
        .to_string();
    // Kill the parent's node once shards are under way and many remain.
    let victim = common::wait_for(600, "shards under way", || {
        let tree = all_runs(&rt, &client, &root);
        let parent = tree.iter().find(|r| r.id == root)?;
        let node = parent.attempts.last()?.node_id.clone()?;
        let shards: Vec<_> = tree
            .iter()
            .filter(|r| r.task_id == "tsk-process_shard")
            .collect();
        let done = shards
            .iter()
            .filter(|r| r.status == TaskRunStatus::Completed)
            .count();
        let running = shards.iter().any(|r| r.status == TaskRunStatus::Running);
        (running && (1..SHARDS as usize / 2).contains(&done)).then_some(node)
    });
    let index = ["a", "b", "c"].iter().position(|n| *n == victim).unwrap();
    eprintln!("killing node {victim}, which runs the parent");
    nodes[index].take().unwrap().kill9();
    let survivor = nodes.iter().flatten().next().unwrap();
    let client = Client::new(&survivor.url).unwrap();
    let done = wait_done(&rt, &client, &root, 600);
    assert_eq!(
        done.run.status,
        TaskRunStatus::Completed,
        "{:?}",
        done.error
    );
    assert!(
        done.results.to_value()[0]["profiles_generated"]
            .as_u64()
            .unwrap()
            > 90_000,
        "{}",
        done.results
    );

    let (one, three) = (files_under(&one_out), files_under(&out));
    assert_eq!(
        one.keys().collect::<Vec<_>>(),
        three.keys().collect::<Vec<_>>()
    );
    for (name, bytes) in &one {
        assert!(
            three[name] == *bytes,
            "{name} differs from the one-node run"
        );
    }
    assert!(one.len() > SHARDS as usize, "{} files", one.len());

    let tree = all_runs(&rt, &client, &root);
    let shards = tree
        .iter()
        .filter(|r| r.task_id == "tsk-process_shard")
        .count();
    assert_eq!(shards, SHARDS as usize, "exactly one child per shard");
    let mut moved = 0;
    for run in &tree {
        for pair in run.attempts.windows(2) {
            let (before, after) = (&pair[0], &pair[1]);
            assert!(
                before.completed_at.unwrap() <= after.started_at,
                "{}: attempt {} overlaps attempt {}",
                run.id,
                before.attempt,
                after.attempt
            );
        }
        let last = run.attempts.last().unwrap();
        if run.attempts.iter().any(|a| {
            a.node_id.as_deref() == Some(victim.as_str()) && a.status == TaskRunStatus::Failed
        }) {
            assert_ne!(
                last.node_id.as_deref(),
                Some(victim.as_str()),
                "{} finished elsewhere",
                run.id
            );
            assert_eq!(last.status, TaskRunStatus::Completed);
            moved += 1;
        }
    }
    eprintln!("{moved} runs the killed node was running finished on other nodes");
    assert!(moved >= 1, "the parent at least");
}

/// A node paused past the node timeout (SIGSTOP) is taken over; when it
/// wakes (SIGCONT), it fences itself (its task was killed on time by its
/// spawner), takes no late report, rejoins, and the run counts once.
#[test]
fn a_paused_node_is_fenced_off_when_it_wakes() {
    let db = PgSchema::new();
    let py = common::python();
    let app = common::app_py();
    let args = ["--quiet", "--node-timeout", "2s"];
    let a = node(&db, "a", &args, &[&py, &app]);
    let rt = common::runtime();
    let client_a = Client::new(&a.url).unwrap();
    let run = rt
        .block_on(client_a.start_task("sleep_for", [3.0]).send())
        .unwrap()
        .id()
        .to_string();
    common::wait_running(&rt, &client_a, &run);
    let b = node(&db, "b", &args, &[&py, &app]);
    a.signal(libc::SIGSTOP);
    let client_b = Client::new(&b.url).unwrap();
    // b takes the run over once a has been silent for 2 s.
    common::wait_for(30, "b to take the run over", || {
        let r = rt.block_on(client_b.get_task_run(&run)).unwrap();
        (r.run.attempts.len() == 2).then_some(())
    });
    // a wakes with its task's report (the task kept running) in hand.
    a.signal(libc::SIGCONT);
    let done = wait_done(&rt, &client_b, &run, 60);
    assert_eq!(done.results, serde_json::json!([3.0]));
    let attempts = &done.run.attempts;
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    assert!(
        attempts[0]
            .error
            .as_deref()
            .unwrap()
            .contains("interrupted"),
        "{attempts:?}"
    );
    assert_eq!(attempts[1].node_id.as_deref(), Some("b"));
    assert_eq!(attempts[1].status, TaskRunStatus::Completed);
    // a joins again and serves.
    common::wait_for(30, "a to join again", || {
        let nodes = rt.block_on(client_b.list_nodes()).ok()?;
        nodes
            .iter()
            .any(|n| n.id == "a" && n.gone_at.is_none())
            .then_some(())
    });
    let again = rt
        .block_on(client_a.run_task("square", [6]).send())
        .unwrap();
    assert_eq!(again.results, serde_json::json!([36]));
    assert!(
        a.output().contains("fenced itself") && a.output().contains("rejoined"),
        "{}",
        a.output()
    );
}

/// The logs of a run on one node, read and followed live through another.
#[test]
fn any_node_serves_the_logs_of_a_run_on_another() {
    use futures::StreamExt;
    let db = PgSchema::new();
    let py = common::python();
    let app = common::app_py();
    let a = node(&db, "a", &["--quiet"], &[&py, &app]);
    let rt = common::runtime();
    let client_a = Client::new(&a.url).unwrap();
    let run = rt
        .block_on(client_a.start_task("chatty", (40, 0.1)).send())
        .unwrap()
        .id()
        .to_string();
    common::wait_running(&rt, &client_a, &run);
    let b = node(&db, "b", &["--quiet"], &[&py, &app]);
    let url = format!(
        "{}/v1/logs/subscribe?taskRunId={run}",
        b.url.replace("http://", "ws://")
    );
    let (mut socket, _) = rt
        .block_on(tokio_tungstenite::connect_async(url))
        .expect("websocket upgrade");
    let live: Vec<String> = rt.block_on(async {
        let mut lines = Vec::new();
        while lines.len() < 5 {
            let msg = tokio::time::timeout(Duration::from_secs(20), socket.next())
                .await
                .expect("a line within 20 s")
                .expect("the stream is open")
                .unwrap();
            let log: serde_json::Value = serde_json::from_str(msg.to_text().unwrap()).unwrap();
            lines.push(log["message"].as_str().unwrap().to_string());
        }
        lines
    });
    assert!(live.iter().all(|l| l.starts_with("line ")), "{live:?}");
    let client_b = Client::new(&b.url).unwrap();
    wait_done(&rt, &client_b, &run, 60);
    let logs = rt
        .block_on(client_b.logs(&weft::client::LogsQuery {
            task_run_ids: vec![run.clone()],
            limit: Some(100),
            ..Default::default()
        }))
        .unwrap();
    assert_eq!(logs.logs.len(), 40, "every line, read through b");
}

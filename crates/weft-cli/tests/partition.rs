//! Faults between `weft serve` nodes and their database, made for real on
//! loopback: each node reaches PostgreSQL through a proxy of its own that
//! the test freezes or slows; a node is paused with SIGSTOP; a PostgreSQL
//! of the test's own is restarted. Each scenario checks, from the side
//! effects the task processes log themselves (a lock per run that the
//! kernel releases when the process dies, start and end lines with pid and
//! wall time), that no two processes of one run were ever alive at once,
//! that the attempt records tell the truth about when each process ran,
//! that every run ends right and none is left pending, and that a fenced
//! node rejoins.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::proxy::{Fault, FaultProxy};
use common::{Options, PgSchema, Serve, Weft};
use weft::client::{Client, ListTaskRunsParams};
use weft::protocol::api::{TaskRun, TaskRunStatus};

/// One scenario at a time: each runs several nodes and many processes on
/// a small machine, and measures time; two at once would each slow the
/// other's heartbeats down.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner())
}

/// The node timeout of these scenarios (the fence comes a third earlier).
const TIMEOUT: &str = "6s";

fn fence_app() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/fence_app.py")
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// A node and the proxy between it and the database.
struct Node {
    weft: Weft,
    proxy: Option<FaultProxy>,
    client: Client,
}

impl Node {
    /// `weft serve` as `id` on `database_url`, through a proxy when asked.
    fn start(database_url: &str, id: &str, through_proxy: bool, args: &[&str]) -> Node {
        let proxy = through_proxy.then(|| FaultProxy::start(common::test_database_addr()));
        let url = match &proxy {
            Some(p) => p.url_for(database_url),
            None => database_url.to_string(),
        };
        let py = common::python();
        let app = fence_app();
        let mut all = vec!["--max-concurrent", "3"];
        if !args.contains(&"--node-timeout") {
            all.extend(["--node-timeout", TIMEOUT]);
        }
        all.extend_from_slice(args);
        let weft = Weft::start_with(Options {
            args: &all,
            command: &[&py, &app],
            serve: Some(Serve {
                database_url: &url,
                node_id: id,
            }),
            ..Default::default()
        });
        let client = Client::new(&weft.url).unwrap();
        Node {
            weft,
            proxy,
            client,
        }
    }

    fn fault(&self, fault: Fault) {
        self.proxy
            .as_ref()
            .expect("a node behind a proxy")
            .set(fault);
    }

    /// What `GET /healthz` answers: the status code and the body.
    fn health(&self) -> (u16, String) {
        health(&self.weft.url)
    }

    fn metric(&self, name: &str) -> Option<f64> {
        let out = std::process::Command::new("curl")
            .args(["-s", "-m", "15"])
            .arg(format!("{}/metrics", self.weft.url))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find(|l| l.starts_with(name) && !l.starts_with('#'))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
    }
}

/// What `GET /healthz` at `url` answers: the status code and the body.
fn health(url: &str) -> (u16, String) {
    let out = std::process::Command::new("curl")
        .args(["-s", "-m", "5", "-w", "\n%{http_code}"])
        .arg(format!("{url}/healthz"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// What the task processes logged, and when the test saw each of them
/// die (a process killed with SIGKILL writes no `end`).
struct Effects {
    dir: tempfile::TempDir,
    deaths: Arc<Mutex<HashMap<u32, f64>>>,
    stop: Arc<AtomicBool>,
    watcher: Option<std::thread::JoinHandle<()>>,
}

/// One task process, as its lines and the watcher tell it.
#[derive(Debug, Clone)]
struct Life {
    run: String,
    pid: u32,
    start: f64,
    /// Its `end` line, or when it was seen dead.
    end: Option<f64>,
    /// Whether it wrote its `end` line (it finished its work).
    finished: bool,
}

impl Effects {
    fn watch() -> Effects {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("effects.log");
        let deaths: Arc<Mutex<HashMap<u32, f64>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (d, s) = (deaths.clone(), stop.clone());
        let watcher = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                let seen = now();
                let mut deaths = d.lock().unwrap();
                for line in text.lines() {
                    let words: Vec<&str> = line.split(' ').collect();
                    if let ["start", _, pid, _] = words[..]
                        && let Ok(pid) = pid.parse::<u32>()
                        && !deaths.contains_key(&pid)
                        && !common::alive(pid as i32)
                    {
                        deaths.insert(pid, seen);
                    }
                }
                drop(deaths);
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Effects {
            dir,
            deaths,
            stop,
            watcher: Some(watcher),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("effects.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Every process's life, once all of them are gone.
    fn lives(&mut self) -> Vec<Life> {
        common::wait_for(30, "every task process to be gone", || {
            let lines = self.lines();
            let deaths = self.deaths.lock().unwrap();
            lines
                .iter()
                .filter_map(|l| l.split(' ').nth(2)?.parse::<u32>().ok())
                .all(|pid| deaths.contains_key(&pid))
                .then_some(())
        });
        self.stop.store(true, Ordering::Relaxed);
        if let Some(w) = self.watcher.take() {
            w.join().unwrap();
        }
        let deaths = self.deaths.lock().unwrap();
        let mut lives: BTreeMap<u32, Life> = BTreeMap::new();
        for line in self.lines() {
            let words: Vec<&str> = line.split(' ').collect();
            let [kind, run, pid, at] = words[..] else {
                panic!("an odd line: {line}")
            };
            let (pid, at): (u32, f64) = (pid.parse().unwrap(), at.parse().unwrap());
            match kind {
                "start" => {
                    lives.insert(
                        pid,
                        Life {
                            run: run.to_string(),
                            pid,
                            start: at,
                            end: deaths.get(&pid).copied(),
                            finished: false,
                        },
                    );
                }
                "end" => {
                    let life = lives.get_mut(&pid).unwrap();
                    life.end = Some(at);
                    life.finished = true;
                }
                _ => {}
            }
        }
        lives.into_values().collect()
    }
}

/// What a scenario checks at the end, whatever its fault was.
fn check_side_effects_and_records(
    rt: &tokio::runtime::Runtime,
    client: &Client,
    root: &str,
    effects: &mut Effects,
    expected: f64,
) -> Vec<TaskRun> {
    let done = rt
        .block_on(async {
            tokio::time::timeout(Duration::from_secs(240), client.wait_for_task_run(root)).await
        })
        .expect("the root run ends within 240 s")
        .unwrap();
    assert_eq!(
        done.run.status,
        TaskRunStatus::Completed,
        "{:?}",
        done.error
    );
    assert_eq!(done.results, serde_json::json!([expected]));
    let tree = rt
        .block_on(client.list_all_task_runs(&ListTaskRunsParams {
            root_task_run_id: Some(root.to_string()),
            ..Default::default()
        }))
        .unwrap();
    for run in &tree {
        assert_eq!(
            run.status,
            TaskRunStatus::Completed,
            "{} ended right",
            run.id
        );
    }

    // 1. The kernel's word: no process found its run's lock taken.
    let overlaps: Vec<String> = effects
        .lines()
        .into_iter()
        .filter(|l| l.starts_with("overlap"))
        .collect();
    let lives = effects.lives();
    assert!(
        overlaps.is_empty(),
        "two processes of one run were alive at once: {overlaps:?}\n{lives:#?}"
    );
    // 2. The same from the lives: one process of a run at a time.
    let mut by_run: HashMap<&str, Vec<&Life>> = HashMap::new();
    for life in &lives {
        by_run.entry(&life.run).or_default().push(life);
    }
    for (run, lives) in &by_run {
        let mut lives = lives.clone();
        lives.sort_by(|a, b| a.start.total_cmp(&b.start));
        for pair in lives.windows(2) {
            assert!(
                pair[0].end.unwrap() <= pair[1].start,
                "{run}: process {} ran until {:.3}, process {} started at {:.3}",
                pair[0].pid,
                pair[0].end.unwrap(),
                pair[1].pid,
                pair[1].start
            );
        }
        // At least one did its work to the end. (Two may, one after the
        // other: a process that finished as its node was cut off could not
        // report, and its attempt ran again. At least once, never at once.)
        assert!(
            lives.iter().any(|l| l.finished),
            "{run}: no process did its work to the end: {lives:#?}"
        );
    }
    // 3. The records tell the truth: each process ran inside the attempt
    // that was running when it started, and that attempt's record ends
    // only once the process is gone (or, for a process that finished, once
    // it had done its work).
    const SLACK: f64 = 0.25;
    let ts = |t: chrono::DateTime<chrono::Utc>| t.timestamp_micros() as f64 / 1e6;
    for run in &tree {
        for life in by_run.get(run.id.as_str()).into_iter().flatten() {
            let attempt = run
                .attempts
                .iter()
                .filter(|a| ts(a.started_at) <= life.start + SLACK)
                .max_by_key(|a| a.started_at)
                .unwrap_or_else(|| {
                    panic!(
                        "{}: no attempt started before process {}: {:?}",
                        run.id, life.pid, run.attempts
                    )
                });
            let ended = ts(attempt.completed_at.expect("ended"));
            let gone = life.end.unwrap();
            assert!(
                gone <= ended + SLACK,
                "{} attempt {} is recorded as ended at {ended:.3}, but its process {} ran until {gone:.3}",
                run.id,
                attempt.attempt,
                life.pid
            );
        }
    }
    tree
}

/// Waits until `node` runs at least `n` attempts of this tree.
fn wait_running_on(
    rt: &tokio::runtime::Runtime,
    client: &Client,
    root: &str,
    node: &str,
    n: usize,
) {
    common::wait_for(60, &format!("{n} attempts running on {node}"), || {
        let tree = rt
            .block_on(client.list_all_task_runs(&ListTaskRunsParams {
                root_task_run_id: Some(root.to_string()),
                ..Default::default()
            }))
            .ok()?;
        let here = tree
            .iter()
            .filter(|r| {
                r.status == TaskRunStatus::Running
                    && r.attempts.last().and_then(|a| a.node_id.as_deref()) == Some(node)
            })
            .count();
        (here >= n).then_some(())
    });
}

fn interrupted_on(tree: &[TaskRun], node: &str) -> usize {
    tree.iter()
        .flat_map(|r| &r.attempts)
        .filter(|a| a.node_id.as_deref() == Some(node) && a.status == TaskRunStatus::Failed)
        .count()
}

/// Starts the fan-out on `node`: a parent and children of these lengths.
fn start_fan_out(
    rt: &tokio::runtime::Runtime,
    node: &Node,
    effects: &Effects,
    seconds: &[f64],
) -> String {
    rt.block_on(
        node.client
            .start_task("guarded_fan_out", (effects.path(), seconds))
            .send(),
    )
    .unwrap()
    .id()
    .to_string()
}

/// Scenario 1: a node cut off from the database for longer than the node timeout
/// while it runs a parent and children: it fences itself before the
/// others take them over, says so (terminal, `/healthz`, `/metrics`), its
/// API answers meanwhile (reads with a clear 503), and it rejoins.
#[test]
fn a_partitioned_node_fences_itself_before_its_work_is_taken_over() {
    let _one = serial();
    let db = PgSchema::new();
    let rt = common::runtime();
    let mut effects = Effects::watch();
    let n2 = Node::start(&db.url, "n2", true, &[]);
    let seconds = [8.0; 9];
    let root = start_fan_out(&rt, &n2, &effects, &seconds);
    // n2 runs the parent and its first children; the others join after.
    wait_running_on(&rt, &n2.client, &root, "n2", 3);
    let n1 = Node::start(&db.url, "n1", true, &[]);
    let n3 = Node::start(&db.url, "n3", true, &[]);
    wait_running_on(&rt, &n1.client, &root, "n1", 1);

    let cut = Instant::now();
    n2.fault(Fault::Freeze);
    // /healthz, watched all along: when it first says the node is fenced.
    let fenced: Arc<Mutex<Option<(Duration, String)>>> = Arc::default();
    let watching = Arc::new(AtomicBool::new(true));
    let watcher = {
        let (url, fenced, watching) = (n2.weft.url.clone(), fenced.clone(), watching.clone());
        std::thread::spawn(move || {
            while watching.load(Ordering::Relaxed) && fenced.lock().unwrap().is_none() {
                let (code, body) = health(&url);
                if code == 503 {
                    *fenced.lock().unwrap() = Some((cut.elapsed(), body));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    // Its API answers meanwhile: a read fails in time, with a 503 naming
    // the database.
    let asked = Instant::now();
    let read = rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(20), n2.client.get_task_run(&root)).await
    });
    let read_took = asked.elapsed();
    let fenced_gauge = n2.metric("weft_node_fenced{");
    // Taken over by the others, past the node timeout.
    common::wait_for(30, "n1 or n3 to take over n2's attempts", || {
        let tree = rt
            .block_on(n1.client.list_all_task_runs(&ListTaskRunsParams {
                root_task_run_id: Some(root.clone()),
                ..Default::default()
            }))
            .ok()?;
        (interrupted_on(&tree, "n2") >= 2).then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    n2.fault(Fault::None);
    watching.store(false, Ordering::Relaxed);
    watcher.join().unwrap();

    // What matters most first: nothing ran twice at once, the records
    // are true (this is what fails without the fence).
    let tree =
        check_side_effects_and_records(&rt, &n1.client, &root, &mut effects, seconds.iter().sum());
    let (fenced_after, said) = fenced
        .lock()
        .unwrap()
        .clone()
        .expect("n2's /healthz said it was fenced while it was cut off");
    assert!(said.contains("fenced itself"), "{said}");
    let read = read.expect("a read on a cut-off node answers, it does not hang");
    let err = read.expect_err("n2 cannot read its database");
    assert!(err.to_string().contains("127.0.0.1"), "{err}");
    eprintln!(
        "fenced {:.1} s after the cut; a read answered in {:.1} s: {err}",
        fenced_after.as_secs_f64(),
        read_took.as_secs_f64()
    );
    assert_eq!(fenced_gauge, Some(1.0));
    let parent = tree.iter().find(|r| r.id == root).unwrap();
    assert_eq!(parent.attempts[0].node_id.as_deref(), Some("n2"));
    assert!(parent.attempts.len() >= 2, "the parent ran again elsewhere");
    assert!(interrupted_on(&tree, "n2") >= 2, "children and the parent");
    let told = rt.block_on(n1.client.get_task_run(&root)).unwrap();
    let note = told.run.attempts[0].error.clone().unwrap_or_default();
    assert!(
        note.contains("node n2 fenced itself") && note.contains("killed this attempt's processes"),
        "the record says what happened: {note}"
    );
    // n2 rejoined: alive again, healthy, and it says what happened.
    common::wait_for(30, "n2 to rejoin", || {
        let nodes = rt.block_on(n1.client.list_nodes()).ok()?;
        let n2 = nodes.iter().find(|n| n.id == "n2")?;
        n2.gone_at.is_none().then_some(())
    });
    common::wait_for(30, "n2 to be healthy", || {
        (n2.health().0 == 200).then_some(())
    });
    assert_eq!(n2.metric("weft_node_fenced_total"), Some(1.0));
    assert_eq!(n2.metric("weft_node_fenced{"), Some(0.0));
    let said = n2.weft.output();
    assert!(
        said.contains("fenced itself") && said.contains("rejoined"),
        "{said}"
    );
    // And it works again: a run started on it completes.
    let again = rt
        .block_on(n2.client.run_task("guarded", (effects.path(), 0.1)).send())
        .unwrap();
    assert_eq!(again.results, serde_json::json!([0.1]));
    drop(n3);
}

/// Scenario 2: a blip shorter than the fence time re-runs nothing.
#[test]
fn a_blip_shorter_than_the_fence_time_re_runs_nothing() {
    let _one = serial();
    let db = PgSchema::new();
    let rt = common::runtime();
    let mut effects = Effects::watch();
    let n1 = Node::start(&db.url, "n1", true, &[]);
    let n2 = Node::start(&db.url, "n2", true, &[]);
    let seconds = [4.0; 6];
    let root = start_fan_out(&rt, &n1, &effects, &seconds);
    wait_running_on(&rt, &n2.client, &root, "n2", 2);
    n2.fault(Fault::Freeze);
    std::thread::sleep(Duration::from_millis(1500));
    n2.fault(Fault::None);
    let tree =
        check_side_effects_and_records(&rt, &n1.client, &root, &mut effects, seconds.iter().sum());
    assert_nothing_moved(&tree, &[&n1, &n2]);
}

/// Every run ran once, and no node fenced itself or took anything over.
fn assert_nothing_moved(tree: &[TaskRun], nodes: &[&Node]) {
    for run in tree {
        assert_eq!(
            run.attempts.len(),
            1,
            "{} ran once: {:?}",
            run.id,
            run.attempts
        );
    }
    for node in nodes {
        let said = node.weft.output();
        assert_eq!(node.metric("weft_node_fenced_total"), Some(0.0));
        assert!(
            !said.contains("fenced itself") && !said.contains("took over"),
            "{said}"
        );
    }
}

/// Scenario 3: a slow database (every byte towards it 500 ms late, for 30 s) causes
/// no takeover and no fence.
#[test]
fn a_slow_database_causes_no_takeover() {
    let _one = serial();
    let db = PgSchema::new();
    let rt = common::runtime();
    let mut effects = Effects::watch();
    // The default node timeout: what an operator runs with.
    let args = ["--node-timeout", "10s"];
    let n1 = Node::start(&db.url, "n1", true, &args);
    let n2 = Node::start(&db.url, "n2", true, &args);
    let seconds = [3.0; 12];
    let root = start_fan_out(&rt, &n1, &effects, &seconds);
    wait_running_on(&rt, &n2.client, &root, "n2", 1);
    for node in [&n1, &n2] {
        node.fault(Fault::Delay(Duration::from_millis(500)));
    }
    std::thread::sleep(Duration::from_secs(30));
    for node in [&n1, &n2] {
        node.fault(Fault::None);
    }
    let tree =
        check_side_effects_and_records(&rt, &n1.client, &root, &mut effects, seconds.iter().sum());
    assert_nothing_moved(&tree, &[&n1, &n2]);
}

/// Scenario 4: a node paused (SIGSTOP) past the node timeout: its task processes
/// are killed on time by its spawner (the runtime itself cannot act), the
/// others take its work over, and when it resumes it fences itself,
/// takes no report and rejoins.
#[test]
fn a_paused_node_s_processes_die_before_its_work_is_taken_over() {
    paused_node(&[]);
}

/// Scenario 4 with `--prefork`: the Python fork server holds the lease.
#[test]
fn a_paused_prefork_node_s_processes_die_before_its_work_is_taken_over() {
    paused_node(&["--prefork"]);
}

fn paused_node(args: &[&str]) {
    let _one = serial();
    let db = PgSchema::new();
    let rt = common::runtime();
    let mut effects = Effects::watch();
    let n2 = Node::start(&db.url, "n2", false, args);
    // Long enough that a child not killed on time would still be running
    // when the other node starts it again.
    let seconds = [14.0; 6];
    let root = start_fan_out(&rt, &n2, &effects, &seconds);
    wait_running_on(&rt, &n2.client, &root, "n2", 3);
    let n1 = Node::start(&db.url, "n1", false, args);
    n2.weft.signal(libc::SIGSTOP);
    common::wait_for(30, "n1 to take over n2's attempts", || {
        let tree = rt
            .block_on(n1.client.list_all_task_runs(&ListTaskRunsParams {
                root_task_run_id: Some(root.clone()),
                ..Default::default()
            }))
            .ok()?;
        (interrupted_on(&tree, "n2") >= 3).then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    n2.weft.signal(libc::SIGCONT);
    let tree =
        check_side_effects_and_records(&rt, &n1.client, &root, &mut effects, seconds.iter().sum());
    assert!(interrupted_on(&tree, "n2") >= 3);
    common::wait_for(30, "n2 to rejoin", || {
        let nodes = rt.block_on(n1.client.list_nodes()).ok()?;
        nodes
            .iter()
            .any(|n| n.id == "n2" && n.gone_at.is_none())
            .then_some(())
    });
    common::wait_for(30, "n2 to be healthy", || {
        (n2.health().0 == 200).then_some(())
    });
    let said = n2.weft.output();
    assert!(
        said.contains("fenced itself") && said.contains("rejoined"),
        "{said}"
    );
}

/// Scenario 5: the database itself restarted mid fan-out, quickly and for longer
/// than the node timeout (a PostgreSQL of the test's own): the nodes
/// reconnect (fencing themselves if it takes too long), nothing is lost
/// or run twice at once, every run ends right.
#[test]
fn the_database_restarting_mid_fan_out_loses_nothing_and_runs_nothing_twice() {
    let _one = serial();
    let pg = common::OwnPostgres::start();
    let rt = common::runtime();
    for (how, down) in [("quickly", None), ("slowly", Some(Duration::from_secs(10)))] {
        let mut effects = Effects::watch();
        let schema = format!("weft_restart_{how}");
        let url = {
            let base = pg.url();
            rt.block_on(async {
                let mut conn: sqlx::PgConnection = sqlx::Connection::connect(&base).await.unwrap();
                sqlx::query(&format!("CREATE SCHEMA {schema}"))
                    .execute(&mut conn)
                    .await
                    .unwrap();
            });
            format!("{base}?options=-c%20search_path%3D{schema}")
        };
        let n1 = Node::start(&url, "n1", false, &[]);
        let n2 = Node::start(&url, "n2", false, &[]);
        let seconds = [4.0; 9];
        let root = start_fan_out(&rt, &n1, &effects, &seconds);
        wait_running_on(&rt, &n2.client, &root, "n2", 2);
        match down {
            None => {
                pg.stop("fast");
                pg.start_again();
            }
            Some(down) => {
                pg.stop("fast");
                std::thread::sleep(down);
                pg.start_again();
            }
        }
        eprintln!("PostgreSQL restarted {how}");
        check_side_effects_and_records(&rt, &n1.client, &root, &mut effects, seconds.iter().sum());
        if down.is_some() {
            for node in [&n1, &n2] {
                common::wait_for(30, "the node to serve again", || {
                    (node.health().0 == 200).then_some(())
                });
                assert_eq!(
                    node.metric("weft_node_fenced_total"),
                    Some(1.0),
                    "cut off past its lease"
                );
            }
        }
    }
}

/// The same for `weft dev` on PostgreSQL (one node): losing the database
/// fences it instead of running on blind, and it carries on once the
/// database answers again.
#[test]
fn weft_dev_on_postgres_fences_itself_too() {
    let _one = serial();
    let db = PgSchema::new();
    let rt = common::runtime();
    let mut effects = Effects::watch();
    let proxy = FaultProxy::start(common::test_database_addr());
    let url = proxy.url_for(&db.url);
    let py = common::python();
    let app = fence_app();
    let dev = Weft::start_with(Options {
        args: &["--quiet", "--database-url", &url, "--node-timeout", TIMEOUT],
        command: &[&py, &app],
        ..Default::default()
    });
    let client = Client::new(&dev.url).unwrap();
    let run = rt
        .block_on(client.start_task("guarded", (effects.path(), 8.0)).send())
        .unwrap()
        .id()
        .to_string();
    common::wait_running(&rt, &client, &run);
    common::wait_for(30, "the task to start", || {
        effects
            .lines()
            .iter()
            .any(|l| l.starts_with("start"))
            .then_some(())
    });
    proxy.set(Fault::Freeze);
    common::wait_for(20, "weft dev to fence itself", || {
        dev.output().contains("fenced itself").then_some(())
    });
    // Its process is killed although no other node exists to take over.
    common::wait_for(10, "the task process to be killed", || {
        (dev.task_processes() == 0).then_some(())
    });
    proxy.set(Fault::None);
    let done = rt
        .block_on(async {
            tokio::time::timeout(Duration::from_secs(120), client.wait_for_task_run(&run)).await
        })
        .expect("the run ends")
        .unwrap();
    assert_eq!(
        done.run.status,
        TaskRunStatus::Completed,
        "{:?}",
        done.error
    );
    assert_eq!(done.run.attempts.len(), 2, "{:?}", done.run.attempts);
    assert!(
        done.run.attempts[0]
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("fenced itself"),
        "{:?}",
        done.run.attempts[0]
    );
    let lives = effects.lives();
    assert_eq!(lives.len(), 2, "{lives:#?}");
    assert!(lives[0].end.unwrap() <= lives[1].start, "{lives:#?}");
}

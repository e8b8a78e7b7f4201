//! Durability under repeated crashes and faults, against a real `weft dev`
//! on a real SQLite file: SIGKILLed again and again mid fan-out, a disk
//! that fills up, a damaged database, a task that prints without end.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Options, Weft, example};
use weft::client::Client;
use weft::protocol::api::TaskRunStatus;

/// The seed of a randomised test: `WEFT_TEST_SEED` to replay one, else new;
/// printed either way, so a failure can be replayed.
fn seed(test: &str) -> u64 {
    let seed = std::env::var("WEFT_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    eprintln!("{test}: seed {seed} (replay with WEFT_TEST_SEED={seed})");
    seed
}

/// A wide Rust fan-out and a few hundred root runs in flight while `weft
/// dev` is SIGKILLed at random moments and restarted on the same database:
/// every accepted run completes with its own result, the fan-out has
/// exactly its width in children however often its parent was relaunched,
/// and no run has more attempts than crashes, retries and one.
#[test]
fn a_crash_loop_loses_nothing_and_repeats_nothing() {
    const WIDTH: u64 = 1000;
    const ROOTS: i64 = 300;
    const CRASHES: usize = 5;
    let mut rng = fastrand::Rng::with_seed(seed("crash loop"));
    let app = example("fan_out");
    let rt = common::runtime();
    let mut weft = Weft::start_with(Options {
        args: &["--quiet", "--max-concurrent", "2"],
        command: &[&app],
        ..Default::default()
    });
    let url = Arc::new(Mutex::new(weft.url.clone()));

    let fan_out = rt
        .block_on(
            Client::new(&weft.url)
                .unwrap()
                .start_task("fan_out", [WIDTH])
                .idempotency_key("crash-loop-fan-out")
                .send(),
        )
        .unwrap()
        .id()
        .to_string();

    // Root runs started one after another, each retried under its
    // idempotency key until the server (whichever is up) acknowledges it.
    let accepted = Arc::new(Mutex::new(HashMap::<String, i64>::new()));
    let starter = {
        let (url, accepted) = (url.clone(), accepted.clone());
        rt.spawn(async move {
            for x in 0..ROOTS {
                loop {
                    let at = url.lock().unwrap().clone();
                    let start = Client::new(&at)
                        .unwrap()
                        .start_task("square", [x])
                        .idempotency_key(format!("crash-loop-square-{x}"))
                        .send();
                    match tokio::time::timeout(Duration::from_secs(5), start).await {
                        Ok(Ok(run)) => {
                            accepted.lock().unwrap().insert(run.id().to_string(), x);
                            break;
                        }
                        _ => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };

    for crash in 1..=CRASHES {
        std::thread::sleep(Duration::from_millis(rng.u64(300..1000)));
        eprintln!(
            "crash {crash}: {} roots acknowledged",
            accepted.lock().unwrap().len()
        );
        weft = weft.start_again();
        *url.lock().unwrap() = weft.url.clone();
    }
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(60), starter)
            .await
            .expect("every root start acknowledged within 60 s of the last crash")
            .unwrap()
    });

    let client = Client::new(&weft.url).unwrap();
    let mut want: Vec<(String, serde_json::Value)> = accepted
        .lock()
        .unwrap()
        .iter()
        .map(|(id, x)| (id.clone(), serde_json::json!([x * x])))
        .collect();
    want.push((
        fan_out.clone(),
        serde_json::json!([(0..WIDTH).map(|i| i * i).sum::<u64>()]),
    ));
    let deadline = Instant::now() + Duration::from_secs(120);
    for (id, result) in &want {
        let left = deadline.saturating_duration_since(Instant::now());
        let run = rt
            .block_on(async { tokio::time::timeout(left, client.wait_for_task_run(id)).await })
            .unwrap_or_else(|_| panic!("{id} did not end within the test's bound"))
            .unwrap();
        assert_eq!(run.run.status, TaskRunStatus::Completed, "{id}: {run:?}");
        assert_eq!(&run.results, result, "{id}");
    }
    assert_eq!(want.len(), ROOTS as usize + 1);

    weft.stop();
    let runs = common::stored_run_records(&weft.db);
    let children = runs
        .iter()
        .filter(|r| r.parent_id.as_deref() == Some(fan_out.as_str()))
        .count();
    assert_eq!(
        children, WIDTH as usize,
        "the fan-out has exactly its width in children after {CRASHES} crashes"
    );
    let roots = runs.iter().filter(|r| r.parent_id.is_none()).count();
    assert_eq!(roots, ROOTS as usize + 1, "one run per idempotency key");
    let mut interrupted = 0;
    for run in &runs {
        let retries = run
            .attempts
            .iter()
            .filter(|a| a.status == weft_store::RunState::Failed && !a.interrupted)
            .count();
        interrupted += run.attempts.iter().filter(|a| a.interrupted).count();
        assert!(
            run.attempts.len() <= CRASHES + retries + 1,
            "{} ({}) has {} attempts after {CRASHES} crashes and {retries} retries",
            run.id,
            run.task_name,
            run.attempts.len()
        );
        assert_eq!(run.status, weft_store::RunState::Completed, "{}", run.id);
    }
    let parent = runs.iter().find(|r| r.id == fan_out).unwrap();
    let relaunched = parent.attempts.iter().filter(|a| a.interrupted).count();
    eprintln!(
        "{} runs, {interrupted} attempts interrupted by {CRASHES} crashes, the fan-out's parent {relaunched} times",
        runs.len()
    );
    assert!(
        relaunched >= 2,
        "the crashes landed while the fan-out ran, more than once"
    );
}

/// With the disk full, new starts get 507 naming the database and saying
/// the disk is full, reads keep serving, an attempt whose outcome cannot
/// be committed keeps it (the official Python SDK as task code); once space
/// returns, everything goes on without a restart.
#[test]
fn a_full_disk_refuses_new_runs_keeps_outcomes_and_recovers_without_a_restart() {
    let disk = common::SmallDisk::mount(8 * 1024 * 1024);
    let rt = common::runtime();
    let weft = Weft::start_with(Options {
        db: Some(disk.dir.join("weft.db")),
        args: &["--quiet"],
        ..Default::default()
    });
    let client = Client::new(&weft.url).unwrap();
    let sleeper = rt
        .block_on(client.start_task("sleep_for", [2.5]).send())
        .unwrap()
        .id()
        .to_string();
    common::wait_running(&rt, &client, &sleeper);

    let filler = disk.fill();
    // Starts the server had space for are acknowledged; then one is refused.
    let mut accepted = Vec::new();
    let refusal = (0..500)
        .find_map(|i| {
            let start = client.start_task(
                "echo",
                serde_json::json!({"n": i, "pad": "x".repeat(32_000)}),
            );
            match rt.block_on(start.send()) {
                Ok(run) => {
                    accepted.push(run.id().to_string());
                    None
                }
                Err(e) => Some(e),
            }
        })
        .expect("a start is refused once the disk is full");
    assert_eq!(refusal.status(), Some(507), "{refusal}");
    let text = refusal.to_string();
    assert!(
        text.contains(&weft.db.display().to_string()) && text.contains("disk has no space left"),
        "{text}"
    );
    // Reads keep serving.
    let run = rt.block_on(client.get_task_run(&sleeper)).unwrap();
    assert_eq!(run.run.id, sleeper);
    rt.block_on(client.list_tasks()).unwrap();
    // The sleeper reports while the disk is full: weft keeps its outcome.
    common::wait_for(30, "the sleeper's outcome to be held", || {
        weft.output()
            .contains("is kept and committed once the database takes it")
            .then_some(())
    });
    let run = rt.block_on(client.get_task_run(&sleeper)).unwrap();
    assert_eq!(run.run.status, TaskRunStatus::Running, "not committed yet");

    // Space returns: the held outcome is committed, accepted runs run, new
    // starts are taken, all without a restart.
    std::fs::remove_file(filler).unwrap();
    let done = rt
        .block_on(async {
            tokio::time::timeout(Duration::from_secs(30), client.wait_for_task_run(&sleeper)).await
        })
        .expect("the held outcome is committed once space returns")
        .unwrap();
    assert_eq!(done.run.status, TaskRunStatus::Completed);
    assert_eq!(
        done.results,
        serde_json::json!([2.5]),
        "the task's own result"
    );
    assert_eq!(done.run.attempts.len(), 1, "the attempt was not run again");
    for id in &accepted {
        let run = rt
            .block_on(async {
                tokio::time::timeout(Duration::from_secs(60), client.wait_for_task_run(id)).await
            })
            .unwrap_or_else(|_| panic!("accepted run {id} did not end"))
            .unwrap();
        assert_eq!(run.run.status, TaskRunStatus::Completed, "{id}");
    }
    let later = rt.block_on(client.run_task("square", [12]).send()).unwrap();
    assert_eq!(later.results, serde_json::json!([144]));
    eprintln!(
        "{} starts acknowledged after the disk filled, before the first refusal",
        accepted.len()
    );
}

/// A damaged database (cut short, or with a garbled page) is refused at
/// start with a message that names the file and says what to do, and is
/// left exactly as it was.
#[test]
fn a_damaged_database_is_refused_at_start_and_left_untouched() {
    let rt = common::runtime();
    let mut weft = Weft::start_with(Options {
        args: &["--quiet"],
        ..Default::default()
    });
    let client = Client::new(&weft.url).unwrap();
    let chatty = rt
        .block_on(client.run_task("chatty", [4000]).send())
        .unwrap();
    weft.stop();
    let db = weft.db.clone();
    let whole = std::fs::read(&db).unwrap();
    assert!(whole.len() > 100_000, "{} bytes", whole.len());

    let start = |what: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_weft"))
            .args(["dev", "--port", "0", "--db"])
            .arg(&db)
            .args(["--", "true"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "{what}: started on a damaged file");
        for needed in [
            db.display().to_string().as_str(),
            "is damaged",
            "Restore it from a backup",
        ] {
            assert!(err.contains(needed), "{what}: {err}");
        }
        err
    };

    let half = &whole[..whole.len() / 2 / 4096 * 4096];
    std::fs::write(&db, half).unwrap();
    let err = start("cut short");
    assert!(err.contains("cut short"), "{err}");
    assert_eq!(std::fs::read(&db).unwrap(), half, "never written to");

    let mut garbled = whole.clone();
    let page = whole.len() / 4096 / 2;
    garbled[page * 4096..(page + 1) * 4096].fill(0x5A);
    std::fs::write(&db, &garbled).unwrap();
    start("a garbled page");
    assert_eq!(std::fs::read(&db).unwrap(), garbled, "never written to");

    // Put back, it serves what it held.
    std::fs::write(&db, &whole).unwrap();
    let weft = weft.start_again();
    let client = Client::new(&weft.url).unwrap();
    let run = rt
        .block_on(client.get_task_run(chatty.run.id.as_str()))
        .unwrap();
    assert_eq!(run.results, serde_json::json!([4000]));
}

/// Past `--max-log-bytes`, a run's output is echoed but only counted, and
/// one stored line says how much was not kept.
#[test]
fn output_past_the_log_cap_is_counted_not_stored() {
    use weft::client::LogsQuery;
    let rt = common::runtime();
    let weft = Weft::start_with(Options {
        args: &["--max-log-bytes", "2kB"],
        ..Default::default()
    });
    let client = Client::new(&weft.url).unwrap();
    let run = rt
        .block_on(client.run_task("chatty", [1000]).send())
        .unwrap();
    let logs = rt
        .block_on(client.logs(&LogsQuery {
            task_run_ids: vec![run.run.id.clone()],
            limit: Some(1000),
            ..LogsQuery::default()
        }))
        .unwrap();
    let (marker, kept) = logs.logs.split_last().expect("some lines stored");
    let stored: usize = kept.iter().map(|l| l.message.len()).sum();
    assert!(stored <= 2000, "{stored} bytes stored past a 2 kB cap");
    assert!(
        kept.len() > 100,
        "the beginning is kept: {} lines",
        kept.len()
    );
    let dropped = 1000 - kept.len();
    assert!(
        marker
            .message
            .starts_with(&format!("weft: {dropped} lines ("))
            && marker.message.contains("--max-log-bytes (2000 bytes)"),
        "{}",
        marker.message
    );
    assert!(!logs.has_more);
    // The terminal showed every line.
    common::wait_for(10, "the last line echoed", || {
        weft.output().contains("line 999").then_some(())
    });
}

/// The peak resident memory of a process, from `/proc`, in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// CPU time a process has used so far, user and system, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces) in parentheses.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

/// Many clients at once: 500 event-stream subscribers and 512 held
/// `get-subtask-result` requests (two Rust parents of 750 children each,
/// 256 polls apiece) while 2,000 runs go through. Every subscriber gets
/// each of its events once; the server's peak memory is printed (it is a
/// benchmark figure, not an assertion).
#[test]
fn many_subscribers_and_held_requests_all_get_their_events() {
    use futures::StreamExt;
    const SUBSCRIBERS: usize = 500;
    const WIDTH: u64 = 750;
    let app = example("fan_out");
    let rt = common::runtime();
    let weft = Weft::start_with(Options {
        args: &["--quiet"],
        command: &[&app],
        ..Default::default()
    });
    let client = Client::new(&weft.url).unwrap();
    let squares: Vec<String> = rt.block_on(async {
        let mut ids = Vec::new();
        for x in 0..SUBSCRIBERS as u64 {
            ids.push(
                client
                    .start_task("square", [x])
                    .send()
                    .await
                    .unwrap()
                    .id()
                    .to_string(),
            );
        }
        ids
    });
    let parents: Vec<String> = rt.block_on(async {
        let mut ids = Vec::new();
        for _ in 0..2 {
            ids.push(
                client
                    .start_task("fan_out", [WIDTH])
                    .send()
                    .await
                    .unwrap()
                    .id()
                    .to_string(),
            );
        }
        ids
    });
    // Each subscriber waits for one square and both parents.
    let subscribers: Vec<_> = squares
        .iter()
        .enumerate()
        .map(|(x, square)| {
            let client = client.clone();
            let ids = vec![square.clone(), parents[0].clone(), parents[1].clone()];
            rt.spawn(async move {
                let events = client.task_run_events(&ids).take(3);
                let got: Vec<_> =
                    tokio::time::timeout(Duration::from_secs(300), events.collect::<Vec<_>>())
                        .await
                        .unwrap_or_else(|_| panic!("subscriber {x} timed out"));
                let mut seen: Vec<String> = got
                    .into_iter()
                    .map(|e| e.unwrap_or_else(|e| panic!("subscriber {x}: {e}")).run.id)
                    .collect();
                seen.sort();
                let mut want = ids;
                want.sort();
                assert_eq!(seen, want, "subscriber {x} got each of its runs once");
            })
        })
        .collect();
    let pid = weft.pid().unwrap();
    let mut most_fds = 0;
    let watch = Instant::now();
    while subscribers.iter().any(|s| !s.is_finished()) {
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
        most_fds = most_fds.max(fds);
        assert!(
            watch.elapsed() < Duration::from_secs(300),
            "bounded in time"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    for s in subscribers {
        rt.block_on(s).unwrap();
    }
    let want: u64 = (0..WIDTH).map(|i| i * i).sum();
    for parent in &parents {
        let run = rt.block_on(client.get_task_run(parent)).unwrap();
        assert_eq!(run.results, serde_json::json!([want]));
    }
    assert!(
        rt.block_on(client.get_task_run(&squares[SUBSCRIBERS - 1]))
            .unwrap()
            .run
            .status
            == TaskRunStatus::Completed
    );
    eprintln!(
        "weft dev: peak memory {} MiB, {:.1} s of CPU, at most {most_fds} open files, over {} runs with {SUBSCRIBERS} subscribers",
        peak_rss(pid) / (1024 * 1024),
        cpu_seconds(pid),
        SUBSCRIBERS as u64 + 2 + 2 * WIDTH
    );
}

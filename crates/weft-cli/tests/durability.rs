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

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

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
    let rt = runtime();
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
            .filter(|a| a.status == TaskRunStatus::Failed && !a.interrupted)
            .count();
        interrupted += run.attempts.iter().filter(|a| a.interrupted).count();
        assert!(
            run.attempts.len() <= CRASHES + retries + 1,
            "{} ({}) has {} attempts after {CRASHES} crashes and {retries} retries",
            run.id,
            run.task_name,
            run.attempts.len()
        );
        assert_eq!(run.status, TaskRunStatus::Completed, "{}", run.id);
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

//! What durability costs: the store's side of a run's life (create, start
//! an attempt, complete it: three commits) on a real SQLite file, with the
//! default durability and with `--power-loss-safe`, from one caller and from
//! many at once.
//!
//! `cargo bench -p weft-workflows-store --bench run_lifecycle [-- RUNS]` (default 2000)
//! prints a Markdown table; BENCHMARKS.md keeps the numbers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::json;
use weft_store::{AttemptEnd, AttemptOutcome, Durability, NewRun, SqliteStore, Store};

#[tokio::main]
async fn main() {
    let runs: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(2000);
    println!("| durability | callers | runs | runs/s | p50 per run | p99 per run |");
    println!("|---|---:|---:|---:|---:|---:|");
    for durability in [Durability::Process, Durability::PowerLoss] {
        for callers in [1, 16] {
            let dir = tempfile::tempdir().unwrap();
            let store =
                Arc::new(SqliteStore::open_with(&dir.path().join("weft.db"), durability).unwrap());
            let started = Instant::now();
            let workers: Vec<_> = (0..callers)
                .map(|c| {
                    let store = store.clone();
                    tokio::spawn(async move {
                        let mut took = Vec::new();
                        for n in (c..runs).step_by(callers) {
                            let t = Instant::now();
                            one_run(&*store, n).await;
                            took.push(t.elapsed());
                        }
                        took
                    })
                })
                .collect();
            let mut took: Vec<Duration> = Vec::with_capacity(runs);
            for w in workers {
                took.extend(w.await.unwrap());
            }
            let wall = started.elapsed();
            took.sort();
            let pct = |p: f64| took[((took.len() - 1) as f64 * p) as usize];
            println!(
                "| {durability:?} | {callers} | {runs} | {:.0} | {:.2} ms | {:.2} ms |",
                runs as f64 / wall.as_secs_f64(),
                pct(0.5).as_secs_f64() * 1e3,
                pct(0.99).as_secs_f64() * 1e3,
            );
        }
    }
}

async fn one_run(store: &dyn Store, n: usize) {
    let run = store
        .create_run(NewRun {
            task_name: "square".into(),
            input: json!([n]).into(),
            parent: None,
            idempotency_key: None,
            idempotency_created_at: None,
            task_version: None,
            trace_parent: None,
            at: Utc::now(),
        })
        .await
        .unwrap()
        .run;
    store
        .start_attempt(&run.id, Utc::now())
        .await
        .unwrap()
        .unwrap();
    store
        .finish_attempt(AttemptEnd {
            run_id: run.id,
            attempt: 1,
            at: Utc::now(),
            outcome: AttemptOutcome::Completed {
                output: json!([n * n]).into(),
            },
        })
        .await
        .unwrap()
        .unwrap();
}

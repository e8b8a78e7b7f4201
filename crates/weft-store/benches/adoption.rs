//! What a relaunched parent costs the store: attempt 1 of a parent starts
//! N children, the runtime crashes, and attempt 2 asks for the same N
//! children again (same task, same input, in the same order), each of which
//! must be handed back rather than started anew.
//!
//! Each start carries a fresh idempotency key, as every `ctx.run` of the
//! SDKs sends one (a relaunched attempt's calls carry new keys, so they are
//! adopted by task and input).
//!
//! `cargo bench -p weft-workflows-store --bench adoption [-- WIDTH ...]` (default
//! 100 1000 3000) prints a Markdown table; BENCHMARKS.md keeps the numbers.

use std::time::Instant;

use chrono::Utc;
use serde_json::json;
use weft_store::{Creation, NewRun, ParentRef, SqliteStore, Store};

#[tokio::main]
async fn main() {
    let widths: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let widths = if widths.is_empty() {
        vec![100, 1000, 3000]
    } else {
        widths
    };
    println!(
        "| width | starting the children (attempt 1) | adopting them (attempt 2) | per adopted child |"
    );
    println!("|---:|---:|---:|---:|");
    for width in widths {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("weft.db")).unwrap();
        let parent = store
            .create_run(new_run("fan_out", json!([width]), None))
            .await
            .unwrap()
            .run;
        store
            .start_attempt(&parent.id, Utc::now())
            .await
            .unwrap()
            .unwrap();
        let as_parent = |attempt| ParentRef {
            run_id: parent.id.clone(),
            root_id: parent.id.clone(),
            attempt,
        };
        let t = Instant::now();
        for i in 0..width {
            let child = store
                .create_run(new_run("square", input(i), Some(as_parent(1))))
                .await
                .unwrap();
            assert_eq!(child.how, Creation::New);
        }
        let first = t.elapsed();
        // The crash: the running attempt is recorded as interrupted and the
        // parent is pending again; attempt 2 starts.
        store.recover(Utc::now()).await.unwrap();
        store
            .start_attempt(&parent.id, Utc::now())
            .await
            .unwrap()
            .unwrap();
        let t = Instant::now();
        for i in 0..width {
            let child = store
                .create_run(new_run("square", input(i), Some(as_parent(2))))
                .await
                .unwrap();
            assert_eq!(child.how, Creation::Adopted, "child {i}");
        }
        let again = t.elapsed();
        // A second crash: attempt 3 is handed the same children again.
        store.recover(Utc::now()).await.unwrap();
        store
            .start_attempt(&parent.id, Utc::now())
            .await
            .unwrap()
            .unwrap();
        for i in 0..width {
            let child = store
                .create_run(new_run("square", input(i), Some(as_parent(3))))
                .await
                .unwrap();
            assert_eq!(
                child.how,
                Creation::Adopted,
                "child {i} after a second crash"
            );
        }
        println!(
            "| {width} | {:.3} s | {:.3} s | {:.1} µs |",
            first.as_secs_f64(),
            again.as_secs_f64(),
            again.as_secs_f64() * 1e6 / width as f64
        );
    }
}

/// A child's input as the SDKs send it: a small named object.
fn input(i: usize) -> serde_json::Value {
    json!({"shard": i, "num_shards": 1000, "data_dir": "/data/customers", "out_dir": "/data/out"})
}

fn new_run(task: &str, input: serde_json::Value, parent: Option<ParentRef>) -> NewRun {
    NewRun {
        task_name: task.into(),
        input: input.into(),
        parent,
        idempotency_key: Some(uuid::Uuid::new_v4().to_string()),
        idempotency_created_at: Some(Utc::now().to_rfc3339()),
        task_version: None,
        trace_parent: None,
        at: Utc::now(),
    }
}

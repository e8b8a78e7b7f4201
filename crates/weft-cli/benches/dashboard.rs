//! Time to first render of the dashboard in Debian's chromium, with 10,000
//! root runs in the store (`/`) and for a tree of 1,000 children
//! (`/runs/{id}`): the store is filled directly, then `weft dev` serves it
//! and `tests/browser/first-render.mjs` times the pages.
//!
//! ```sh
//! scripts/bench-dashboard.sh
//! ```

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::process::Command;

use chrono::Utc;
use common::{Options, Weft};
use serde_json::json;
use weft_store::{AttemptEnd, AttemptOutcome, NewRun, ParentRef, SqliteStore, Store};

const ROOTS: usize = 10_000;
const CHILDREN: usize = 1_000;

async fn completed(store: &SqliteStore, new: NewRun) -> weft_store::RunRecord {
    let run = store.create_run(new).await.unwrap().run;
    store
        .start_attempt(&run.id, Utc::now())
        .await
        .unwrap()
        .unwrap();
    complete(store, &run.id).await;
    run
}

/// Ends a started run's first attempt with a result.
async fn complete(store: &SqliteStore, id: &str) {
    store
        .finish_attempt(AttemptEnd {
            run_id: id.to_string(),
            attempt: 1,
            at: Utc::now(),
            outcome: AttemptOutcome::Completed {
                output: json!([1]).into(),
            },
        })
        .await
        .unwrap();
}

fn new_run(task: &str, i: usize, parent: Option<&weft_store::RunRecord>) -> NewRun {
    NewRun {
        task_name: task.into(),
        input: json!([i]).into(),
        parent: parent.map(|p| ParentRef {
            run_id: p.id.clone(),
            root_id: p.root_id.clone(),
            attempt: 1,
        }),
        idempotency_key: None,
        idempotency_created_at: None,
        task_version: None,
        trace_parent: None,
        at: Utc::now(),
    }
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("weft.db");
    let rt = common::runtime();
    let tree_root = rt.block_on(async {
        let store = SqliteStore::open(&db).unwrap();
        for i in 0..ROOTS {
            completed(&store, new_run("square", i, None)).await;
        }
        let root = store
            .create_run(new_run("fan_out", CHILDREN, None))
            .await
            .unwrap()
            .run;
        let root = store
            .start_attempt(&root.id, Utc::now())
            .await
            .unwrap()
            .unwrap();
        for i in 0..CHILDREN {
            completed(&store, new_run("square", i, Some(&root))).await;
        }
        complete(&store, &root.id).await;
        root.id
    });
    let weft = Weft::start_with(Options {
        db: Some(db),
        args: &["--quiet"],
        ..Default::default()
    });
    let browser = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    let out = Command::new("node")
        .arg(browser.join("first-render.mjs"))
        .args([&weft.url, &tree_root, "7"])
        .current_dir(&browser)
        .output()
        .expect("node runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let times: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    println!("| page | store | median | min | max |");
    println!("|---|---|---:|---:|---:|");
    for (key, page, what) in [
        ("list", "`/`", format!("{} root runs", ROOTS + 1)),
        (
            "tree",
            "`/runs/{id}`",
            format!("a tree of {CHILDREN} children"),
        ),
    ] {
        let t = &times[key];
        println!(
            "| {page} | {what} | {:.0} ms | {:.0} ms | {:.0} ms |",
            t["median_ms"].as_f64().unwrap(),
            t["min_ms"].as_f64().unwrap(),
            t["max_ms"].as_f64().unwrap()
        );
    }
}

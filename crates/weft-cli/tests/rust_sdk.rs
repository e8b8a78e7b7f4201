//! End to end, the Rust SDK: its example apps under a real `weft dev`,
//! driven by the Rust client and by the official Python client, and a
//! Python app on the official SDK driven by the Rust client.
//!
//! The examples are built by `cargo test --workspace` (or
//! `cargo build -p weft-workflows --examples`) next to the `weft` binary.

mod common;
use std::path::Path;

use common::{Options, Weft, example};

use futures::StreamExt as _;
use weft::client::{Client, Error, ListTaskRunsParams, TaskRunDetailsExt};
use weft::protocol::api::TaskRunStatus;

/// `weft dev` serving an app, with a Rust client pointed at it.
struct Dev {
    client: Client,
    url: String,
    _weft: Weft,
}

impl Dev {
    async fn start(name: &str) -> Dev {
        Self::start_command(&[&example(name)]).await
    }

    async fn start_command(command: &[&Path]) -> Dev {
        let weft = Weft::start_with(Options {
            args: &["--quiet"],
            command,
            ..Default::default()
        });
        Dev {
            client: Client::new(&weft.url).unwrap(),
            url: weft.url.clone(),
            _weft: weft,
        }
    }
}

#[tokio::test]
async fn hello_runs_children_and_reports_them() {
    let dev = Dev::start("hello").await;
    let client = &dev.client;
    let names: Vec<String> = client
        .list_tasks()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.task.name)
        .collect();
    assert!(names.contains(&"square".to_string()), "{names:?}");

    let run = client.run_task("add_squares", (3, 4)).await.unwrap();
    assert_eq!(run.result::<i64>().unwrap(), 25);
    assert_eq!(run.run.status, TaskRunStatus::Completed);

    // Named input, and the details of a finished run.
    let handle = client
        .start_task("square", serde_json::json!({"x": 5}))
        .await
        .unwrap();
    let id = handle.id().to_string();
    assert_eq!(handle.await.unwrap().result::<i64>().unwrap(), 25);
    let details = client.get_task_run(&id).await.unwrap();
    assert_eq!(details.result::<i64>().unwrap(), 25);

    // The children of the first run hang under it.
    let tree = client
        .list_task_runs(&ListTaskRunsParams {
            root_task_run_id: Some(run.run.id.clone()),
            ..ListTaskRunsParams::default()
        })
        .await
        .unwrap();
    let children = tree
        .iter()
        .filter(|r| r.task_run.parent_task_run_id == run.run.id)
        .count();
    assert_eq!(children, 2, "{tree:?}");

    // Runs that ended come at once on the event stream.
    let ended: Vec<_> = client
        .task_run_events([&id])
        .take(1)
        .collect::<Vec<_>>()
        .await;
    assert_eq!(ended[0].as_ref().unwrap().run.id, id);

    let err = client.get_task_run("trn-nope").await.unwrap_err();
    assert!(err.is_not_found(), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fan_out_500_wide_completes() {
    let dev = Dev::start("fan_out").await;
    let run = dev.client.run_task("fan_out", [500]).await.unwrap();
    let want: u64 = (0..500u64).map(|i| i * i).sum();
    assert_eq!(run.result::<u64>().unwrap(), want);
    let children = dev
        .client
        .list_task_runs(&ListTaskRunsParams {
            root_task_run_id: Some(run.run.id.clone()),
            limit: Some(100),
            ..ListTaskRunsParams::default()
        })
        .await
        .unwrap();
    assert_eq!(
        children.len(),
        100,
        "a full page of the 501 runs under the root"
    );
    // Every page, through the cursors: each run once.
    let all = dev
        .client
        .list_all_task_runs(&ListTaskRunsParams {
            root_task_run_id: Some(run.run.id.clone()),
            ..ListTaskRunsParams::default()
        })
        .await
        .unwrap();
    let ids: std::collections::HashSet<_> = all.iter().map(|r| r.id.as_str()).collect();
    assert_eq!((all.len(), ids.len()), (501, 501));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_official_python_client_drives_a_rust_app() {
    let dev = Dev::start("hello").await;
    common::python_script_ok("scenarios.py", &["rust_hello"], &dev.url);
    let dev = Dev::start("retries").await;
    common::python_script_ok("scenarios.py", &["rust_retries"], &dev.url);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_rust_client_drives_a_python_app() {
    let dev = Dev::start_command(&[&common::python(), &common::app_py()]).await;
    let client = &dev.client;
    let run = client.run_task("add_squares", (3, 4)).await.unwrap();
    assert_eq!(run.result::<i64>().unwrap(), 25);
    let run = client
        .run_task("greet", serde_json::json!({"name": "Ada"}))
        .await
        .unwrap();
    assert_eq!(run.result::<String>().unwrap(), "Hello, Ada!");
    let run = client.run_task("fan_out", [20]).await.unwrap();
    assert_eq!(run.result::<i64>().unwrap(), 2470);
    let err = client.run_task("fail", ["it broke"]).await.unwrap_err();
    let Error::TaskRunFailed {
        message, details, ..
    } = err
    else {
        panic!("{err}")
    };
    assert_eq!(message, "it broke");
    assert_eq!(details.run.status, TaskRunStatus::Failed);
    let err = client.run_task("nope", ()).await.unwrap_err();
    assert_eq!(err.status(), Some(404), "{err}");
}

#[tokio::test]
async fn retries_errors_and_panics() {
    let dev = Dev::start("retries").await;
    let client = &dev.client;
    let run = client.run_task("flaky", [2]).await.unwrap();
    assert_eq!(run.result::<String>().unwrap(), "attempt 3");
    assert_eq!(run.run.attempts.len(), 3);

    let err = client.run_task("flaky", [5]).await.unwrap_err();
    let Error::TaskRunFailed {
        message, details, ..
    } = err
    else {
        panic!("{err}")
    };
    assert_eq!(message, "attempt 4 of 5 planned failures");
    assert_eq!(details.run.attempts.len(), 4);

    let err = client.run_task("always_panics", ()).await.unwrap_err();
    assert!(
        err.to_string()
            .ends_with("failed: panicked: RETRIES_EXAMPLE_SETTINGS is never set"),
        "{err}"
    );

    let run = client.run_task("survive", ()).await.unwrap();
    assert_eq!(
        run.result::<String>().unwrap(),
        "the child failed: panicked: RETRIES_EXAMPLE_SETTINGS is never set"
    );
}

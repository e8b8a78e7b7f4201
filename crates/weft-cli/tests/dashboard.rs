//! The dashboard in a real browser: Debian's chromium driven by
//! playwright-core (`tests/browser/dashboard.mjs`), against `weft dev` with
//! the example app on the official Python SDK. The runs it looks at are
//! made here first: a fan-out with a retried child, a failure, a canceled
//! tree; the script makes the live ones itself.
//!
//! `scripts/test.sh` installs what it needs when missing: `chromium` (apt)
//! and playwright-core (npm, into `tests/browser/node_modules`).
//! `WEFT_DASHBOARD_SCREENSHOTS=DIR` also writes the README's screenshots.

mod common;

use std::future::IntoFuture;
use std::path::Path;
use std::process::Command;

use common::{Options, Weft};
use serde_json::json;
use weft::client::Client;

fn browser_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// What the test needs from the machine, or why it cannot run.
fn check_tools() {
    assert!(
        Path::new("/usr/bin/chromium").is_file(),
        "no /usr/bin/chromium: `apt-get install -y chromium` (scripts/test.sh does it)"
    );
    assert!(
        browser_dir().join("node_modules/playwright-core").is_dir(),
        "no playwright-core: `npm ci` in {} (scripts/test.sh does it)",
        browser_dir().display()
    );
}

#[test]
fn a_person_sees_runs_trees_failures_and_live_changes_and_can_cancel_and_rerun() {
    check_tools();
    let weft = Weft::start_with(Options {
        args: &["--trace-url", "http://localhost:16686/trace/{trace_id}"],
        ..Default::default()
    });
    let rt = common::runtime();
    let client = Client::new(&weft.url).unwrap();
    let marker = tempfile::tempdir().unwrap();

    let fan_out = rt
        .block_on(
            client
                .run_task("mixed_fan_out", json!([8, marker.path().join("flaky")]))
                .send(),
        )
        .unwrap();
    let failed = rt
        .block_on(
            client
                .start_task("fail", json!(["the disk is on fire"]))
                .send(),
        )
        .unwrap();
    let failed_id = failed.id().to_string();
    let _ = rt.block_on(failed.into_future());
    let canceled = rt
        .block_on(client.start_task("sleepy_parent", json!([2, 60])).send())
        .unwrap();
    let canceled_id = canceled.id().to_string();
    common::wait_for(30, "the sleepy children", || {
        let tree = rt
            .block_on(client.list_task_runs(&weft::client::ListTaskRunsParams {
                root_task_run_id: Some(canceled_id.clone()),
                ..Default::default()
            }))
            .unwrap();
        (tree.len() == 3).then_some(())
    });
    rt.block_on(client.cancel_task_run(&canceled_id)).unwrap();

    // The same kind of server beyond loopback, where the pages ask for the key.
    let key = format!("dashboard-key-{}", common::uuid());
    let secure = Weft::start_with(Options {
        args: &["--host", "0.0.0.0", "--api-key", &key],
        ..Default::default()
    });
    let port = secure.url.rsplit(':').next().unwrap().to_string();
    let secure_url = format!("http://127.0.0.1:{port}");

    let runs = json!({
        "fanOut": fan_out.run.id,
        "failed": failed_id,
        "canceled": canceled_id,
        "shards": std::env::var("WEFT_DASHBOARD_SHARDS_RUN").ok(),
    });
    let mut script = Command::new("node");
    script
        .arg(browser_dir().join("dashboard.mjs"))
        .current_dir(browser_dir())
        .env("WEFT_URL", &weft.url)
        .env("WEFT_RUNS", runs.to_string())
        .env("WEFT_SECURE", &secure_url)
        .env("WEFT_KEY", &key);
    if let Ok(dir) = std::env::var("WEFT_DASHBOARD_SCREENSHOTS") {
        script.env("WEFT_SCREENSHOTS", dir);
    }
    let out = script.output().expect("node runs");
    common::assert_printed_ok(&out, "dashboard.mjs", &weft.output());
}

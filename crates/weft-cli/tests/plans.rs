//! Render's plans held locally: each attempt's processes get its task's
//! plan's memory (no swap) and CPUs, in a cgroup of the attempt's own, on
//! cgroup v1 (this machine kind) as on v2. Tasks of the official Python SDK
//! (`tests/python/plans_app.py`) take memory and CPU for real.

mod common;

use std::path::{Path, PathBuf};

use common::{Options, Weft};

fn plans_app() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/plans_app.py")
}

fn serve(args: &[&str]) -> Weft {
    Weft::start_with(Options {
        args,
        app: Some(plans_app()),
        ..Default::default()
    })
}

/// Runs `task` with `input` to its end; its result, or its error's text.
fn run(weft: &Weft, task: &str, input: serde_json::Value) -> Result<serde_json::Value, String> {
    let rt = common::runtime();
    let client = weft::client::Client::new(&weft.url).unwrap();
    let input = input.as_array().cloned().unwrap_or_default();
    rt.block_on(client.run_task(task, input).send())
        .map(|run| run.results.to_value())
        .map_err(|e| e.to_string())
}

#[test]
fn a_starter_task_over_its_memory_fails_naming_the_plan_and_a_pro_one_completes() {
    let weft = serve(&["--quiet"]);
    let err = run(&weft, "hog_starter", serde_json::json!([800])).unwrap_err();
    assert!(
        err.contains("exceeded the memory of plan starter (512 MB)"),
        "{err}\n--- weft\n{}",
        weft.output()
    );
    // The same 800 MB on pro (4 GB) is nothing to speak of.
    let done = run(&weft, "hog_pro", serde_json::json!([800])).unwrap();
    assert_eq!(done, serde_json::json!([800]), "{}", weft.output());
    // And a starter task under its 512 MB completes.
    let done = run(&weft, "hog_starter", serde_json::json!([200])).unwrap();
    assert_eq!(done, serde_json::json!([200]));
    // Unknown plans are named at registration.
    assert!(
        weft.output()
            .contains("has plan \"enormous\", which is not one of Render's plans"),
        "{}",
        weft.output()
    );
}

#[test]
fn a_starter_task_gets_half_a_cpu() {
    let weft = serve(&["--quiet"]);
    let share = run(&weft, "spin_starter", serde_json::json!([3.0])).unwrap();
    let share = share[0].as_f64().unwrap();
    assert!(
        share <= 0.65,
        "a starter task spinning got {share:.2} CPU per second"
    );
    assert!(share > 0.2, "{share:.2}: it ran at all");
}

#[test]
fn plans_warn_limits_nothing_and_names_the_attempts_render_would_kill() {
    let weft = serve(&["--plans", "warn"]);
    let done = run(&weft, "hog_starter", serde_json::json!([800])).unwrap();
    assert_eq!(done, serde_json::json!([800]), "{}", weft.output());
    common::wait_for(10, "the warning", || {
        weft.output()
            .lines()
            .find(|l| l.contains("on Render, plan starter (512 MB) would have killed it"))
            .map(str::to_string)
    });
    // Off: plans mean nothing, and nothing is said.
    let off = serve(&["--plans", "off"]);
    let done = run(&off, "hog_starter", serde_json::json!([800])).unwrap();
    assert_eq!(done, serde_json::json!([800]));
    assert!(
        !off.output().contains("would have killed"),
        "{}",
        off.output()
    );
}

/// The most attempts of `task` that ran at once under `root`, from their
/// attempt records (an attempt holds its place from its start to its end).
fn most_at_once(weft: &Weft, root: &str, task: &str) -> usize {
    let rt = common::runtime();
    let client = weft::client::Client::new(&weft.url).unwrap();
    let runs = rt
        .block_on(
            client.list_all_task_runs(&weft::client::ListTaskRunsParams {
                root_task_run_id: Some(root.to_string()),
                ..Default::default()
            }),
        )
        .unwrap();
    let mut edges = Vec::new();
    for run in runs.iter().filter(|r| r.task_id == format!("tsk-{task}")) {
        for a in &run.attempts {
            edges.push((a.started_at, 1));
            edges.push((a.completed_at.expect("ended"), -1));
        }
    }
    // An end and a start at the same moment do not overlap.
    edges.sort();
    let (mut now, mut most) = (0i32, 0i32);
    for (_, step) in edges {
        now += step;
        most = most.max(now);
    }
    most as usize
}

/// `--memory`: a node starts no more attempts than their plans' memory
/// fits in; a plan larger than the whole budget runs alone, with a warning.
#[test]
fn a_memory_budget_bounds_the_attempts_by_their_plans() {
    let weft = serve(&["--quiet", "--memory", "1GiB", "--max-concurrent", "8"]);
    let rt = common::runtime();
    let client = weft::client::Client::new(&weft.url).unwrap();
    let starters = rt
        .block_on(
            client
                .run_task("fan_naps", serde_json::json!(["nap_starter", 6, 0.6]))
                .send(),
        )
        .unwrap();
    assert_eq!(starters.results.to_value(), serde_json::json!([6]));
    assert_eq!(
        most_at_once(&weft, &starters.run.id, "nap_starter"),
        2,
        "1 GiB holds two starter runs (512 MB each), and two ran at once"
    );
    let pros = rt
        .block_on(
            client
                .run_task("fan_naps", serde_json::json!(["nap_pro", 3, 0.3]))
                .send(),
        )
        .unwrap();
    assert_eq!(pros.results.to_value(), serde_json::json!([3]));
    assert_eq!(
        most_at_once(&weft, &pros.run.id, "nap_pro"),
        1,
        "pro (4 GB) runs alone"
    );
    let output = weft.output();
    assert!(
        output.contains("nap_pro") && output.contains("larger than --memory"),
        "{output}"
    );
}

#[test]
fn each_attempt_s_peak_memory_and_cpu_time_are_kept_and_shown() {
    let weft = serve(&["--quiet"]);
    let rt = common::runtime();
    let client = weft::client::Client::new(&weft.url).unwrap();
    let run = rt
        .block_on(client.run_task("hog_pro", [300]).send())
        .unwrap();
    // Recorded once the attempt's processes are gone, a moment after the
    // task reported.
    let attempt = common::wait_for(10, "the attempt's usage", || {
        let details = rt.block_on(client.get_task_run(&run.run.id)).unwrap();
        let a = details.run.attempts.first()?.clone();
        a.peak_memory_bytes.map(|_| a)
    });
    let peak = attempt.peak_memory_bytes.unwrap();
    assert!(
        (300 << 20..1 << 30).contains(&peak),
        "300 MB written, {peak} bytes at the peak"
    );
    assert!(attempt.cpu_time_ms.is_some(), "{attempt:?}");
    let shown = std::process::Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(["runs", "show", &run.run.id, "--url", &weft.url])
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.contains("PEAK MEMORY"), "{shown}");
    let mb = format!("{} MB", (peak as f64 / (1 << 20) as f64).round());
    assert!(shown.contains(&mb), "{mb} in {shown}");
}

//! `customer-etl run`: the workflow end to end on an embedded weft runtime.
//! The runtime keeps its state in SQLite, starts every task attempt as its
//! own process of the app's start command (as `weft dev` does), and serves
//! the REST API on a free loopback port; this module triggers
//! `merge_customer_data` through the SDK client, watches the shards finish,
//! and reports the runs that needed a retry.

use crate::location::Location;
use crate::manifest::RunSummary;
use crate::workflow::{MERGE_CUSTOMER_DATA, MergeRequest, PROCESS_SHARD};
use anyhow::{Context, Result, bail};
use serde::Serialize;
use serde_json::Value;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use weft::client::{Client, ListTaskRunsParams, TaskRunDetailsExt};
use weft::protocol::api::{TaskRun, TaskRunStatus};
use weft_runtime::{Runtime, RuntimeConfig};
use weft_store::SqliteStore;

/// How to run the pipeline on an embedded runtime.
#[derive(Debug, Clone)]
pub struct EmbeddedRun {
    /// The orchestrator's input (its `out_dir` must be set).
    pub request: MergeRequest,
    /// The task app's start command (the `customer-etl` binary itself).
    pub app_command: Vec<String>,
    /// Directory for the runtime's SQLite database and the run report.
    pub state_dir: PathBuf,
    /// Task processes at once.
    pub max_concurrent: usize,
    /// Show a progress bar of shards done on stderr.
    pub progress: bool,
}

/// What a finished run produced.
#[derive(Debug, Clone)]
pub struct EmbeddedOutcome {
    /// The orchestrator's result.
    pub summary: RunSummary,
    /// From starting the run to its result.
    pub elapsed: Duration,
    /// Every run in the tree, for the report.
    pub runs: Vec<RunReport>,
}

/// One task run of the tree, as written to `<state_dir>/runs.json`.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// Run id.
    pub id: String,
    /// Task name.
    pub task: String,
    /// Final status.
    pub status: TaskRunStatus,
    /// Attempts made (1 when nothing failed).
    pub attempts: usize,
    /// The input, for runs that needed a retry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input: Option<Value>,
    /// Why each failed attempt failed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub attempt_errors: Vec<String>,
}

/// The file the run report is written to, under the state directory.
pub const RUN_REPORT_FILE: &str = "runs.json";

/// What a run keeps in its state directory (SQLite's database, its
/// write-ahead log and shared memory, the store's lock file, the report).
const STATE_FILES: [&str; 5] = [
    "weft.db",
    "weft.db-wal",
    "weft.db-shm",
    "weft.db.lock",
    RUN_REPORT_FILE,
];

/// Starts the runtime, runs `merge_customer_data`, waits, shuts down.
pub async fn run(config: EmbeddedRun) -> Result<EmbeddedOutcome> {
    // A fresh database each time: a runtime resumes the unfinished runs it
    // finds, and an interrupted earlier run must not write into this one's
    // output. Only the files a run makes are removed: the folder may be one
    // the user named, holding other things.
    std::fs::create_dir_all(&config.state_dir)
        .with_context(|| format!("creating {}", config.state_dir.display()))?;
    for name in STATE_FILES {
        Location::Local(config.state_dir.join(name)).remove_file()?;
    }
    let db = config.state_dir.join("weft.db");
    let store = SqliteStore::open(&db).with_context(|| format!("opening {}", db.display()))?;

    let mut runtime_config = RuntimeConfig::new(config.app_command.clone());
    runtime_config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    runtime_config.echo_logs = false;
    runtime_config.api_key = None;
    runtime_config.max_concurrent = config.max_concurrent.max(1);
    let runtime = Runtime::start(runtime_config, Arc::new(store))
        .await
        .context("starting the embedded weft runtime")?;
    let outcome = drive(&runtime.url(), &config).await;
    runtime.shutdown().await;
    outcome
}

async fn drive(url: &str, config: &EmbeddedRun) -> Result<EmbeddedOutcome> {
    let client = Client::new(url)?;
    let started = Instant::now();
    let handle = client
        .start_task(MERGE_CUSTOMER_DATA.name(), &config.request)
        .await
        .context("starting merge_customer_data")?;
    let root = handle.id().to_string();
    let progress = config
        .progress
        .then(|| tokio::spawn(show_progress(client.clone(), root.clone())));
    let outcome = handle.await;
    let elapsed = started.elapsed();
    if let Some(progress) = progress {
        progress.abort();
        let _ = progress.await;
    }
    // The report is a by-product: failing to make it only loses the report.
    let runs = match report(&client, &root).await {
        Ok(runs) => {
            let path = config.state_dir.join(RUN_REPORT_FILE);
            let json = serde_json::to_vec_pretty(&runs).expect("the report serialises");
            if let Err(err) = std::fs::write(&path, json) {
                eprintln!(
                    "warning: cannot write the run report {}: {err}",
                    path.display()
                );
            }
            runs
        }
        Err(err) => {
            eprintln!("warning: cannot list the runs of {root}: {err:#}");
            Vec::new()
        }
    };
    let details = match outcome {
        Ok(details) => details,
        Err(weft::client::Error::TaskRunFailed { message, .. }) => {
            bail!("{message}")
        }
        Err(err) => return Err(err).context("waiting for merge_customer_data"),
    };
    let summary: RunSummary = details
        .result()
        .context("reading merge_customer_data's result")?;
    Ok(EmbeddedOutcome {
        summary,
        elapsed,
        runs,
    })
}

/// Every run under `root`, of one task or of all.
async fn runs_under(
    client: &Client,
    root: &str,
    task: Option<&str>,
) -> weft::client::Result<Vec<TaskRun>> {
    client
        .list_all_task_runs(&ListTaskRunsParams {
            task_slug: task.map(str::to_string),
            root_task_run_id: Some(root.to_string()),
            ..ListTaskRunsParams::default()
        })
        .await
}

/// A bar of shards done / total, polled from the run list (stderr only).
async fn show_progress(client: Client, root: String) {
    // Its length is the shard count, known once the shards are started (the
    // run may choose it from the input's size).
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} {msg:12} [{bar:30}] {pos}/{len} shards {elapsed}",
        )
        .expect("a valid template")
        .progress_chars("=> "),
    );
    bar.set_message("partitioning");
    bar.enable_steady_tick(Duration::from_millis(120));
    // Clear the bar however this task ends (it is aborted when the run does).
    struct Clear(indicatif::ProgressBar);
    impl Drop for Clear {
        fn drop(&mut self) {
            self.0.finish_and_clear();
        }
    }
    let bar = Clear(bar);
    loop {
        if let Ok(runs) = runs_under(&client, &root, Some(PROCESS_SHARD.name())).await {
            if !runs.is_empty() {
                bar.0.set_message("shards");
                let shards = (runs.len() as u64).max(bar.0.length().unwrap_or(0));
                bar.0.set_length(shards);
            }
            let done = runs
                .iter()
                .filter(|r| r.status == TaskRunStatus::Completed)
                .count();
            bar.0.set_position(done as u64);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn report(client: &Client, root: &str) -> Result<Vec<RunReport>> {
    let names: HashMap<String, String> = client
        .list_tasks()
        .await?
        .into_iter()
        .map(|t| (t.task.id, t.task.name))
        .collect();
    let mut reports = Vec::new();
    for run in runs_under(client, root, None).await? {
        let mut report = RunReport {
            task: names.get(&run.task_id).cloned().unwrap_or_default(),
            id: run.id.clone(),
            status: run.status,
            attempts: run.attempts.len().max(1),
            input: None,
            attempt_errors: Vec::new(),
        };
        if run.attempts.len() > 1 {
            let details = client.get_task_run(&run.id).await?;
            report.input = Some(details.input.to_value());
            report.attempt_errors = details
                .run
                .attempts
                .iter()
                .filter_map(|a| a.error.clone())
                .collect();
        }
        reports.push(report);
    }
    reports.sort_by(|a, b| (&a.task, &a.id).cmp(&(&b.task, &b.id)));
    Ok(reports)
}

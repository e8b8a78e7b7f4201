//! Commands that talk to a running server (`weft dev`, or Render itself)
//! through the Rust SDK's client.

use std::process::ExitCode;

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use serde_json::Value;
use weft::client::{Client, ListTaskRunsParams, LogsQuery};
use weft_protocol::api::{TaskRun, TaskRunDetails, TaskRunStatus};

use crate::table::{self, shown, shown_err};

/// Where the server is.
#[derive(Args, Clone)]
pub struct ServerArgs {
    /// The server's base URL.
    #[arg(
        long,
        env = "RENDER_LOCAL_DEV_URL",
        default_value = "http://127.0.0.1:8120",
        global = true
    )]
    url: String,
    /// The local server (`render workflows ... --local`, as Render's CLI
    /// spells it): the default `--url` already is.
    #[arg(long, global = true)]
    local: bool,
    /// The local server's port, as Render's CLI takes it with `--local`:
    /// `http://localhost:PORT` instead of `--url`.
    #[arg(long, global = true)]
    port: Option<u16>,
    /// Bearer token, when the server requires one.
    #[arg(long, env = "RENDER_API_KEY", hide_env_values = true, global = true)]
    api_key: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
}

impl ServerArgs {
    fn client(&self) -> anyhow::Result<Client> {
        let url = match self.port {
            Some(port) => format!("http://localhost:{port}"),
            None => self.url.clone(),
        };
        let _ = self.local;
        let mut builder = Client::builder(&url);
        if let Some(key) = &self.api_key {
            builder = builder.token(key);
        }
        Ok(builder.build()?)
    }
}

#[derive(Args)]
pub struct RunArgs {
    /// The task's name (or `workflow/task` slug).
    task: String,
    /// Input as JSON: an array of positional arguments or an object of named
    /// ones; `@FILE` reads it from a file, `-` from standard input.
    #[arg(default_value = "[]")]
    input: String,
    /// Makes retrying this command safe: the same key within 24 h names the same run.
    #[arg(long)]
    idempotency_key: Option<String>,
    /// Print the run's id and return without waiting.
    #[arg(long)]
    no_wait: bool,
    #[command(flatten)]
    server: ServerArgs,
}

/// `weft runs start`, as Render's CLI spells it (`render workflows tasks
/// runs start TASK --input JSON`): starts a run and prints its id.
#[derive(Args)]
pub struct StartArgs {
    /// The task's name or slug (`workflow/task[:version]`), or `--task`.
    #[arg(value_name = "TASK", required_unless_present = "task_option")]
    task: Option<String>,
    /// The task, as Render's CLI also takes it.
    #[arg(long = "task", value_name = "TASK", conflicts_with = "task")]
    task_option: Option<String>,
    /// Input as JSON: an array of positional arguments or an object of
    /// named ones (default `[]`).
    #[arg(long, value_name = "JSON", conflicts_with = "input_file")]
    input: Option<String>,
    /// The input, from a JSON file.
    #[arg(long, value_name = "PATH")]
    input_file: Option<std::path::PathBuf>,
    /// Wait for the run to end and print its result (as `weft run`).
    #[arg(long)]
    wait: bool,
    /// Makes retrying this command safe: the same key within 24 h names the same run.
    #[arg(long)]
    idempotency_key: Option<String>,
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(Subcommand)]
pub enum RunsCommand {
    /// Start a run and print its id (`--wait`: wait, print its result).
    Start(StartArgs),
    /// Task runs, newest first.
    List {
        /// Only runs of this task (Render's CLI: `runs list TASK`).
        #[arg(value_name = "TASK", conflicts_with = "task")]
        task_arg: Option<String>,
        /// Only runs of this task.
        #[arg(long)]
        task: Option<String>,
        /// Only runs under this root run.
        #[arg(long)]
        root: Option<String>,
        /// Only runs in this state: pending, running, completed (or
        /// succeeded), failed, canceled.
        #[arg(long, value_parser = parse_status)]
        status: Option<TaskRunStatus>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Continue after this cursor (printed by --json).
        #[arg(long)]
        cursor: Option<String>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// One run with its attempts, input, results and error.
    Show {
        id: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// What a run's task printed.
    Logs {
        id: String,
        /// Also what its subtasks printed, each line labelled with its task and run.
        #[arg(long)]
        subtasks: bool,
        /// At most this many lines (default: all of them).
        #[arg(long)]
        limit: Option<u64>,
        /// Keep printing new lines until the run ends (with --json, one
        /// JSON object per line).
        #[arg(long, short)]
        follow: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// A run and every subtask under it, as a tree.
    Tree {
        id: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Cancel a run and every subtask under it.
    Cancel {
        id: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Start a run's task again with the same input, as a new root run
    /// (its id is printed; `--json`: the new run).
    Rerun {
        id: String,
        #[command(flatten)]
        server: ServerArgs,
    },
}

#[derive(Subcommand)]
pub enum TasksCommand {
    /// The registered tasks.
    List {
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Task runs, as Render's CLI spells them (`tasks runs start|list|show|cancel`):
    /// the commands of `weft runs`.
    #[command(subcommand)]
    Runs(RunsCommand),
    /// Have the server run the start command again to register its tasks.
    Refresh {
        #[command(flatten)]
        server: ServerArgs,
    },
}

fn block_on<F: std::future::Future>(f: F) -> anyhow::Result<F::Output> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(f))
}

/// Lines a log request asks for at once (the API's most).
const LOG_PAGE: u64 = 1000;
/// How often `runs logs --follow` asks for new lines.
const FOLLOW_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// `weft runs logs`: pages through a run's lines, and with `follow` keeps
/// reading until the run has ended.
struct LogPrinter {
    subtasks: bool,
    json: bool,
    follow: bool,
}

impl LogPrinter {
    async fn print(&self, client: &Client, id: String, mut left: u64) -> anyhow::Result<()> {
        let mut query = LogsQuery {
            task_run_ids: vec![id.clone()],
            include_subtasks: self.subtasks,
            ..LogsQuery::default()
        };
        let mut collected = Vec::new();
        loop {
            // Read the status first (which also names an unknown run): once
            // the run has ended, the pages read after it hold every line it
            // printed.
            let ended = client.get_task_run(&id).await?.run.status.is_terminal() || !self.follow;
            while left > 0 {
                query.limit = Some(left.min(LOG_PAGE) as u32);
                let page = client.logs(&query).await?;
                left = left.saturating_sub(page.logs.len() as u64);
                if !page.logs.is_empty() {
                    // Stored times strictly increase: the next page starts
                    // right after this one's last line.
                    query.start_time = Some(page.next_start_time);
                }
                for line in page.logs {
                    match (self.json, self.follow) {
                        (true, false) => collected.push(line),
                        (true, true) => println!("{}", serde_json::to_string(&line)?),
                        (false, _) => self.print_line(&line),
                    }
                }
                if !page.has_more {
                    break;
                }
            }
            if ended || left == 0 {
                break;
            }
            tokio::time::sleep(FOLLOW_EVERY).await;
        }
        if self.json && !self.follow {
            print_json(&collected)?;
        }
        Ok(())
    }

    fn print_line(&self, line: &weft_protocol::api::Log) {
        let at = line.timestamp.format("%H:%M:%S%.3f");
        if self.subtasks {
            let label = |name: &str| {
                line.labels
                    .iter()
                    .find(|l| l.name == name)
                    .map_or("?", |l| l.value.as_str())
            };
            println!(
                "{at} [{} {}] {}",
                shown(label("task")),
                label("taskRun"),
                shown(&line.message)
            );
        } else {
            println!("{at} {}", shown(&line.message));
        }
    }
}

/// The runs of one root, by parent, oldest child first.
struct RunTree {
    runs: std::collections::HashMap<String, TaskRun>,
    children: std::collections::HashMap<String, Vec<String>>,
}

impl RunTree {
    /// `runs` newest first, as the API lists them.
    fn new(runs: Vec<TaskRun>) -> Self {
        let mut children: std::collections::HashMap<String, Vec<String>> = Default::default();
        for run in runs.iter().rev() {
            children
                .entry(run.parent_task_run_id.clone())
                .or_default()
                .push(run.id.clone());
        }
        let runs = runs.into_iter().map(|r| (r.id.clone(), r)).collect();
        Self { runs, children }
    }

    fn kids(&self, id: &str) -> &[String] {
        self.children.get(id).map_or(&[], Vec::as_slice)
    }

    /// `id` and everything under it, parents before their children.
    fn under(&self, id: &str) -> Vec<&TaskRun> {
        let mut out: Vec<&TaskRun> = self.runs.get(id).into_iter().collect();
        for kid in self.kids(id) {
            out.extend(self.under(kid));
        }
        out
    }

    /// One line a run: `├─ square trn-… completed 0.08s`.
    fn print(&self, id: &str, lead: &str, indent: &str) {
        let Some(run) = self.runs.get(id) else { return };
        let task = task_name(&run.task_id);
        let attempts = match run.attempts.len() {
            0 | 1 => String::new(),
            n => format!(" ({n} attempts)"),
        };
        println!(
            "{lead}{task} {} {} {}{attempts}",
            run.id,
            run.status,
            duration(run)
        );
        let kids = self.kids(id);
        for (i, kid) in kids.iter().enumerate() {
            let last = i + 1 == kids.len();
            let (branch, next) = if last {
                ("└─ ", "   ")
            } else {
                ("├─ ", "│  ")
            };
            self.print(
                kid,
                &format!("{indent}{branch}"),
                &format!("{indent}{next}"),
            );
        }
    }
}

fn parse_status(text: &str) -> Result<TaskRunStatus, String> {
    TaskRunStatus::parse(text).ok_or_else(|| {
        format!(
            "{text:?} is not a status: pending, running, completed, succeeded, failed or canceled"
        )
    })
}

fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

fn time(t: Option<DateTime<Utc>>) -> String {
    t.map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| "-".into())
}

fn duration(run: &TaskRun) -> String {
    match (run.started_at, run.completed_at) {
        (Some(start), Some(end)) => {
            format!("{:.2}s", (end - start).num_milliseconds() as f64 / 1000.0)
        }
        (Some(start), None) => format!("{:.0}s…", (Utc::now() - start).num_seconds()),
        _ => "-".into(),
    }
}

/// A task's name from its id, as the terminal may show it (an app
/// chooses its task names).
fn task_name(task_id: &str) -> std::borrow::Cow<'_, str> {
    shown(task_id.strip_prefix("tsk-").unwrap_or(task_id))
}

/// The input argument's text: itself, a file's (`@FILE`) or standard input's (`-`).
fn read_input(arg: &str) -> anyhow::Result<String> {
    if arg == "-" {
        return std::io::read_to_string(std::io::stdin())
            .context("cannot read the input from standard input");
    }
    match arg.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the input file {path}")),
        None => Ok(arg.to_string()),
    }
}

pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let input = parse_input(&read_input(&args.input)?, &args.input)?;
    start(
        &args.task,
        input,
        args.idempotency_key.as_deref(),
        if args.no_wait {
            Started::PrintId
        } else {
            Started::Wait
        },
        &args.server,
    )
}

/// `weft runs start` (and Render's spellings of it).
pub fn start_run(args: StartArgs) -> anyhow::Result<ExitCode> {
    let task = args
        .task
        .or(args.task_option)
        .expect("clap requires a task");
    let (text, from) = match (&args.input, &args.input_file) {
        (_, Some(path)) => (
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the input file {}", path.display()))?,
            path.display().to_string(),
        ),
        (Some(json), None) => (json.clone(), json.clone()),
        (None, None) => ("[]".to_string(), "[]".to_string()),
    };
    let input = parse_input(&text, &from)?;
    let then = if args.wait {
        Started::Wait
    } else {
        Started::Announce
    };
    start(
        &task,
        input,
        args.idempotency_key.as_deref(),
        then,
        &args.server,
    )
}

/// A run's input: JSON, an array or an object (`from` names where it came from).
fn parse_input(text: &str, from: &str) -> anyhow::Result<Value> {
    let input: Value = serde_json::from_str(text).with_context(|| {
        let shown: String = text.chars().take(200).collect();
        let more = if shown.len() < text.len() { "…" } else { "" };
        format!("input is not JSON: {shown}{more}")
    })?;
    if !(input.is_array() || input.is_object()) {
        bail!(
            "input must be a JSON array (positional arguments) or object (named ones), got {from}"
        );
    }
    Ok(input)
}

/// What `start` does once the run is started.
#[derive(Clone, Copy, PartialEq)]
enum Started {
    /// Print its id only (`weft run --no-wait`).
    PrintId,
    /// Say it was created, as Render's CLI does (`--json`: the run).
    Announce,
    /// Wait for it to end and print its result.
    Wait,
}

fn start(
    task: &str,
    input: Value,
    idempotency_key: Option<&str>,
    then: Started,
    server: &ServerArgs,
) -> anyhow::Result<ExitCode> {
    let client = server.client()?;
    block_on(async move {
        let mut start = client.start_task(task, input);
        if let Some(key) = idempotency_key {
            start = start.idempotency_key(key);
        }
        let handle = start.send().await?;
        match then {
            Started::PrintId => {
                println!("{}", handle.id());
                return Ok(ExitCode::SUCCESS);
            }
            Started::Announce if server.json => {
                print_json(handle.run())?;
                return Ok(ExitCode::SUCCESS);
            }
            Started::Announce => {
                println!("Created task run {} for {}", handle.id(), shown(task));
                return Ok(ExitCode::SUCCESS);
            }
            Started::Wait => eprintln!("Run started: {}", handle.id()),
        }
        let details = match handle.wait().await {
            Ok(details) => details,
            Err(weft::client::Error::TaskRunFailed { details, .. }) => *details,
            Err(e) => return Err(e.into()),
        };
        if server.json {
            print_json(&details)?;
        } else if let Some(error) = &details.error {
            eprintln!(
                "Run {} {}: {}",
                details.run.id,
                details.run.status,
                shown_err(error)
            );
        } else {
            println!(
                "{}",
                serde_json::to_string_pretty(&weft_protocol::payload::results_to_single(
                    details.results.to_value()
                ))?
            );
        }
        Ok(if details.error.is_some() {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        })
    })?
}

fn show(details: &TaskRunDetails) {
    let run = &details.run;
    println!("Run       {}", run.id);
    match &run.task_version {
        Some(version) => println!("Task      {}:{version}", task_name(&run.task_id)),
        None => println!("Task      {}", task_name(&run.task_id)),
    }
    println!("Status    {}", run.status);
    if let Some(trace) = &run.trace_id {
        println!("Trace     {trace}");
    }
    if !run.parent_task_run_id.is_empty() {
        println!("Parent    {}", run.parent_task_run_id);
    }
    if run.root_task_run_id != run.id {
        println!("Root      {}", run.root_task_run_id);
    }
    println!("Started   {}", time(run.started_at));
    println!("Finished  {}", time(run.completed_at));
    println!("Duration  {}", duration(run));
    println!("Input     {}", shown(&details.input.to_string()));
    if run.status.is_terminal() && details.error.is_none() {
        println!("Results   {}", shown(&details.results.to_string()));
    }
    if let Some(error) = &details.error {
        println!("Error     {}", shown(error));
    }
    println!();
    let rows: Vec<_> = run
        .attempts
        .iter()
        .map(|a| {
            vec![
                a.attempt.to_string(),
                a.status.to_string(),
                a.node_id.clone().unwrap_or_else(|| "-".into()),
                time(Some(a.started_at)),
                time(a.completed_at),
                a.peak_memory_bytes
                    .map_or_else(|| "-".into(), weft::protocol::plan::megabytes_text),
                a.cpu_time_ms
                    .map_or_else(|| "-".into(), |ms| format!("{:.2} s", ms as f64 / 1000.0)),
                a.error
                    .clone()
                    .unwrap_or_default()
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_string(),
            ]
        })
        .collect();
    table::print(
        &[
            "ATTEMPT",
            "STATUS",
            "NODE",
            "STARTED",
            "FINISHED",
            "PEAK MEMORY",
            "CPU",
            "ERROR",
        ],
        &rows,
    );
}

pub fn runs(cmd: RunsCommand) -> anyhow::Result<ExitCode> {
    if let RunsCommand::Start(args) = cmd {
        return start_run(args);
    }
    block_on(async move {
        match cmd {
            RunsCommand::Start(_) => unreachable!("started above"),
            RunsCommand::List {
                task_arg,
                task,
                root,
                status,
                limit,
                cursor,
                server,
            } => {
                let params = ListTaskRunsParams {
                    task_slug: task.or(task_arg),
                    root_task_run_id: root,
                    status,
                    limit: Some(limit),
                    cursor,
                };
                let runs = server.client()?.list_task_runs(&params).await?;
                if server.json {
                    return print_json(&runs);
                }
                let rows: Vec<_> = runs
                    .iter()
                    .map(|r| {
                        let run = &r.task_run;
                        vec![
                            run.id.clone(),
                            task_name(&run.task_id).to_string(),
                            run.status.to_string(),
                            run.attempts.len().to_string(),
                            time(run.started_at),
                            duration(run),
                            if run.parent_task_run_id.is_empty() {
                                "-".into()
                            } else {
                                run.parent_task_run_id.clone()
                            },
                        ]
                    })
                    .collect();
                table::print(
                    &[
                        "ID", "TASK", "STATUS", "ATTEMPTS", "STARTED", "DURATION", "PARENT",
                    ],
                    &rows,
                );
                Ok(())
            }
            RunsCommand::Show { id, server } => {
                let details = server.client()?.get_task_run(&id).await?;
                if server.json {
                    return print_json(&details);
                }
                show(&details);
                Ok(())
            }
            RunsCommand::Logs {
                id,
                subtasks,
                limit,
                follow,
                server,
            } => {
                let client = server.client()?;
                let out = LogPrinter {
                    subtasks,
                    json: server.json,
                    follow,
                };
                out.print(&client, id, limit.unwrap_or(u64::MAX)).await
            }
            RunsCommand::Tree { id, server } => {
                let client = server.client()?;
                let top = client.get_task_run(&id).await?.run;
                let tree = client
                    .list_all_task_runs(&ListTaskRunsParams {
                        root_task_run_id: Some(top.root_task_run_id.clone()),
                        ..ListTaskRunsParams::default()
                    })
                    .await?;
                let tree = RunTree::new(tree);
                if server.json {
                    return print_json(&tree.under(&top.id));
                }
                tree.print(&top.id, "", "");
                Ok(())
            }
            RunsCommand::Cancel { id, server } => {
                server.client()?.cancel_task_run(&id).await?;
                eprintln!("Canceled {id} and its subtasks");
                Ok(())
            }
            RunsCommand::Rerun { id, server } => {
                let run = server.client()?.rerun_task_run(&id).await?;
                if server.json {
                    print_json(&run)?;
                } else {
                    println!("{}", run.id);
                    eprintln!("Started {} again as {}", shown_err(&id), run.id);
                }
                Ok(())
            }
        }
    })??;
    Ok(ExitCode::SUCCESS)
}

pub fn tasks(cmd: TasksCommand) -> anyhow::Result<ExitCode> {
    if let TasksCommand::Runs(runs_cmd) = cmd {
        return runs(runs_cmd);
    }
    block_on(async move {
        let (tasks, server) = match cmd {
            TasksCommand::List { server } => (server.client()?.list_tasks().await?, server),
            TasksCommand::Refresh { server } => (server.client()?.refresh_tasks().await?, server),
            TasksCommand::Runs(_) => unreachable!("handled above"),
        };
        if server.json {
            return print_json(&tasks);
        }
        let rows: Vec<_> = tasks
            .iter()
            .map(|t| {
                let options = t.task.options.clone().unwrap_or_default();
                let retries = options.retry.as_ref().map_or(0, |r| r.max_retries());
                vec![
                    t.task.name.clone(),
                    retries.to_string(),
                    options
                        .timeout_seconds
                        .map_or("-".into(), |s| format!("{s}s")),
                    t.task
                        .parameters
                        .as_ref()
                        .map(|ps| {
                            ps.iter()
                                .map(|p| p.name.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        })
                        .unwrap_or_default(),
                ]
            })
            .collect();
        table::print(&["TASK", "RETRIES", "TIMEOUT", "PARAMETERS"], &rows);
        anyhow::Ok(())
    })??;
    Ok(ExitCode::SUCCESS)
}

/// `weft nodes`.
#[derive(Subcommand)]
pub enum NodesCommand {
    /// The nodes of the cluster: id, host, started, last heartbeat,
    /// running attempts.
    List {
        #[command(flatten)]
        server: ServerArgs,
    },
}

pub fn nodes(cmd: NodesCommand) -> anyhow::Result<ExitCode> {
    let NodesCommand::List { server } = cmd;
    block_on(async move {
        let nodes = server.client()?.list_nodes().await?;
        if server.json {
            return print_json(&nodes);
        }
        let now = Utc::now();
        let rows: Vec<_> = nodes
            .iter()
            .map(|n| {
                vec![
                    n.id.clone(),
                    n.host.clone(),
                    if n.gone_at.is_some() { "gone" } else { "alive" }.to_string(),
                    time(Some(n.started_at)),
                    format!(
                        "{:.1}s ago",
                        (now - n.last_heartbeat_at).num_milliseconds().max(0) as f64 / 1000.0
                    ),
                    n.running_attempts.to_string(),
                ]
            })
            .collect();
        table::print(
            &["NODE", "HOST", "STATE", "STARTED", "HEARTBEAT", "RUNNING"],
            &rows,
        );
        anyhow::Ok(())
    })??;
    Ok(ExitCode::SUCCESS)
}

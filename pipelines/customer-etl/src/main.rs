//! `customer-etl`: generate sample data, run the pipeline as a workflow on an
//! embedded weft runtime (`run`), trigger it on a running `weft dev`
//! (`trigger`), or run it in one process (`local`).
//!
//! The binary is also the workflow's task app: started by a runtime (which
//! sets `RENDER_SDK_MODE`), it serves the tasks instead of the CLI, so
//! `weft dev -- customer-etl` works and `run` uses this very executable.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use customer_etl::embedded::{EmbeddedRun, RunReport};
use customer_etl::workflow::{MERGE_CUSTOMER_DATA, MergeRequest};
use customer_etl::{DEFAULT_AS_OF, Date, Format, Location, RunSummary};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;
use weft::client::{Client, ClientConfig, TaskRunDetailsExt};

#[derive(Parser)]
#[command(name = "customer-etl", version, about = "The customer ETL pipeline")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the workflow end to end on an embedded weft runtime (each task in its own process).
    Run(RunArgs),
    /// Run merge_customer_data on a running `weft dev -- customer-etl` (the tutorial's trigger).
    Trigger(TriggerArgs),
    /// Write deterministic sample input files.
    Generate(GenerateArgs),
    /// Run partition, all shards and aggregate in this process (the baseline).
    Local(LocalArgs),
}

/// Where `run` generates its sample when no `--data-dir` is given.
const SAMPLE_DIR: &str = "sample_data";
/// Customers in that sample, and its seed.
const SAMPLE_CUSTOMERS: u64 = 1_000;
const SAMPLE_SEED: u64 = 42;

#[derive(clap::Args)]
struct RunArgs {
    /// Directory or `s3://bucket/prefix` holding the four input files
    /// (default: `sample_data`, generated with 1,000 customers when absent).
    #[arg(long)]
    data_dir: Option<Location>,
    /// Output directory or `s3://bucket/prefix`.
    #[arg(long, default_value = "out")]
    out: Location,
    /// Where the embedded runtime keeps its database and run report
    /// (default: `<out>/.weft`, or `.customer-etl` here when the output is
    /// in a bucket: never `.weft`, which is `weft dev`'s).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    #[command(flatten)]
    output: OutputArgs,
    /// Task processes at once (default: one per CPU).
    #[arg(long)]
    max_concurrent: Option<usize>,
    /// Target size of one partition chunk, in MiB.
    #[arg(long, default_value_t = 32)]
    chunk_mib: u64,
}

/// What `run` and `local` compute: the same defaults for both.
#[derive(clap::Args)]
struct OutputArgs {
    /// Number of shards [default: 10, or one per 96 MiB of input when that
    /// is more, so each shard process stays near 200 MB]
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    shards: Option<u32>,
    /// The as_of date (YYYY-MM-DD).
    #[arg(long, default_value = DEFAULT_AS_OF)]
    as_of: Date,
    /// Profile table format: csv or parquet.
    #[arg(long, default_value = "csv")]
    format: Format,
}

#[derive(clap::Args)]
struct TriggerArgs {
    /// Input directory or `s3://` prefix, as the task processes see it
    /// (default: theirs, `$DATA_DIR` or `sample_data`).
    #[arg(long)]
    data_dir: Option<Location>,
    /// Output directory or `s3://` prefix (default: `$OUT_DIR` or `out` of the task processes).
    #[arg(long)]
    out: Option<Location>,
    /// Number of shards (default: the task's, 10 or one per 96 MiB of input).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    shards: Option<u32>,
    /// The as_of date (YYYY-MM-DD).
    #[arg(long)]
    as_of: Option<Date>,
    /// Profile table format: csv or parquet.
    #[arg(long)]
    format: Option<Format>,
}

#[derive(clap::Args)]
struct GenerateArgs {
    /// Directory to write crm.csv, billing.csv, product.csv and support.csv into.
    #[arg(long)]
    out: PathBuf,
    /// Number of customers.
    #[arg(long)]
    customers: u64,
    /// Random seed (same seed, same bytes).
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

#[derive(clap::Args)]
struct LocalArgs {
    /// Directory or `s3://bucket/prefix` holding the four input files.
    #[arg(long)]
    data_dir: Location,
    /// Output directory or `s3://bucket/prefix`.
    #[arg(long)]
    out: Location,
    #[command(flatten)]
    output: OutputArgs,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// The tutorial's design, for comparison: every shard reads all four files in full.
    #[arg(long)]
    naive: bool,
}

fn main() -> ExitCode {
    // First: when it runs the workflow embedded, this binary also starts
    // the task processes (the runtime's launcher), with ENV_MODE set.
    weft_runtime::run_if_asked();
    if std::env::var_os(weft::protocol::socket::ENV_MODE).is_some() {
        // Started by a runtime: serve the workflow's tasks (exits on failure).
        customer_etl::workflow::app().main();
        return ExitCode::SUCCESS;
    }
    let outcome = match Cli::parse().command {
        Command::Run(args) => run(args),
        Command::Trigger(args) => trigger(args),
        Command::Generate(args) => generate(args),
        Command::Local(args) => local(args),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// The line the tutorial's trigger prints.
fn merged_line(summary: &RunSummary, seconds: f64) -> String {
    format!(
        "Merged {} enriched profiles across {} shards in {seconds:.2}s",
        summary.profiles_generated, summary.shards_processed
    )
}

fn tokio_runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn run(args: RunArgs) -> Result<()> {
    let data_dir = match args.data_dir {
        Some(dir) => {
            // A local directory is checked here, before a runtime starts;
            // a bucket is probed by the workflow itself.
            if dir.as_local().is_some() {
                dir.check_input_dir()?;
            }
            dir
        }
        None => {
            let dir = PathBuf::from(SAMPLE_DIR);
            if !dir.join("crm.csv").exists() {
                customer_etl::generate(&dir, SAMPLE_CUSTOMERS, SAMPLE_SEED)
                    .with_context(|| format!("generating the sample into {}", dir.display()))?;
                eprintln!(
                    "generated a sample of {SAMPLE_CUSTOMERS} customers in {}",
                    dir.display()
                );
            }
            Location::Local(dir)
        }
    };
    let state_dir = match (&args.state_dir, args.out.as_local()) {
        (Some(dir), _) => dir.clone(),
        (None, Some(out)) => out.join(".weft"),
        (None, None) => PathBuf::from(".customer-etl"),
    };
    let exe = std::env::current_exe().context("finding this program's path")?;
    let config = EmbeddedRun {
        request: MergeRequest {
            data_dir: Some(data_dir.absolute().map_err(anyhow::Error::msg)?),
            out_dir: Some(args.out.absolute().map_err(anyhow::Error::msg)?),
            num_shards: args.output.shards,
            as_of: Some(args.output.as_of.to_string()),
            format: Some(args.output.format),
            chunk_bytes: Some(args.chunk_mib.max(1) << 20),
        },
        app_command: vec![exe.to_string_lossy().into_owned()],
        state_dir,
        max_concurrent: args
            .max_concurrent
            .unwrap_or_else(weft_runtime::default_max_concurrent),
        progress: std::io::stderr().is_terminal(),
    };
    let outcome = tokio_runtime()?
        .block_on(customer_etl::embedded::run(config))
        .with_context(|| format!("the pipeline failed on {data_dir}"))?;
    for retried in outcome.runs.iter().filter(|r| r.attempts > 1) {
        eprintln!("{}", retried_note(retried));
    }
    println!(
        "{}",
        merged_line(&outcome.summary, outcome.elapsed.as_secs_f64())
    );
    eprintln!("profiles, rejects and manifest.json in {}", args.out);
    Ok(())
}

fn retried_note(run: &RunReport) -> String {
    let input = run
        .input
        .as_ref()
        .and_then(|i| i.get("shard_id").or_else(|| i.get("chunk")))
        .map(|v| format!(" ({v})"))
        .unwrap_or_default();
    format!(
        "note: {}{input} took {} attempts; first failure: {}",
        run.task,
        run.attempts,
        run.attempt_errors.first().map_or("?", String::as_str)
    )
}

fn trigger(args: TriggerArgs) -> Result<()> {
    let client = match ClientConfig::from_env() {
        Ok(config) => Client::from_config(config),
        Err(_) => Client::new(weft::client::DEFAULT_LOCAL_DEV_URL),
    }?;
    let local = std::env::var("RENDER_USE_LOCAL_DEV").is_ok_and(|v| v == "true")
        || std::env::var_os("RENDER_LOCAL_DEV_URL").is_some();
    let task = match std::env::var("WORKFLOW_SLUG") {
        Ok(slug) if !local && !slug.is_empty() => format!("{slug}/{}", MERGE_CUSTOMER_DATA.name()),
        _ => MERGE_CUSTOMER_DATA.name().to_string(),
    };
    let request = MergeRequest {
        data_dir: args.data_dir.map(|d| absolute_or(&d)),
        out_dir: args.out.map(|d| absolute_or(&d)),
        num_shards: args.shards,
        as_of: args.as_of.map(|d| d.to_string()),
        format: args.format,
        chunk_bytes: None,
    };
    tokio_runtime()?.block_on(async move {
        let started = Instant::now();
        // Like the tutorial's trigger: no arguments at all unless some are given.
        let handle = if request == MergeRequest::default() {
            client.start_task(&task, ()).await
        } else {
            client.start_task(&task, &request).await
        }
        .with_context(|| format!("starting {task} on {}", client.base_url()))?;
        eprintln!("Run started: {}", handle.id());
        let details = handle
            .await
            .with_context(|| format!("running {task} on {}", client.base_url()))?;
        let summary: RunSummary = details.result().context("reading the run's result")?;
        println!("{}", merged_line(&summary, started.elapsed().as_secs_f64()));
        Ok(())
    })
}

/// A local path made absolute against our working directory, which the
/// task processes may not share.
fn absolute_or(location: &Location) -> Location {
    location.absolute().unwrap_or_else(|_| location.clone())
}

fn generate(args: GenerateArgs) -> Result<()> {
    let started = Instant::now();
    let stats = customer_etl::generate(&args.out, args.customers, args.seed)
        .with_context(|| format!("generating sample data into {}", args.out.display()))?;
    eprintln!(
        "wrote {} customers ({} bytes) to {} in {:.2?}",
        stats.customers,
        stats.bytes,
        args.out.display(),
        started.elapsed()
    );
    println!("{}", serde_json::to_string_pretty(&stats)?);
    Ok(())
}

fn local(args: LocalArgs) -> Result<()> {
    let mut options = customer_etl::LocalOptions::default();
    if let Some(threads) = args.threads {
        options.threads = threads;
    }
    options.every_shard_reads_all = args.naive;
    let started = Instant::now();
    let summary = customer_etl::run_local_with(
        &args.data_dir,
        &args.out,
        args.output.shards,
        args.output.as_of,
        args.output.format,
        &options,
    )
    .with_context(|| format!("running the pipeline on {}", args.data_dir))?;
    eprintln!("done in {:.2?}", started.elapsed());
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}

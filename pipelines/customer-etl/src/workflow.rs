//! The pipeline as durable workflow tasks on the weft SDK, each attempt in its
//! own process:
//!
//! ```text
//! merge_customer_data ─┬─ partition_chunk (source × byte range) ... all at once
//!                      │   then writes work/partition.json
//!                      ├─ process_shard (one per shard)          ... all at once
//!                      └─ aggregate: manifest.json, the summary
//! ```
//!
//! Inputs and results are locations (local paths or `s3://` URLs) and
//! counts, never rows or profiles, so they stay small at any scale. Every
//! file or object is written atomically ([`crate::storage::OutputFile`]), so
//! a retried task replaces its failed attempt's output.

use crate::calendar::Date;
use crate::contract::{DEFAULT_AS_OF, Format, Source};
use crate::local::{DEFAULT_CHUNK_BYTES, default_work_dir, plan_inputs, prepare_out_dir};
use crate::location::Location;
use crate::manifest::{RunParams, RunSummary, Timings, aggregate};
use crate::partition::{
    ChunkStats, PartitionSummary, SourcePlan, default_num_shards_for, partition_chunk,
    write_partition_summary,
};
use crate::shard_step::{ShardOptions, ShardStats, process_shard_with};
use futures::future::try_join_all;
use serde::{Deserialize, Serialize};
use std::time::Instant;
use weft::{Retry, Task, TaskContext, TaskOptions, TaskResult, Workflows};

/// The orchestrator: partition, all shards, aggregate.
pub const MERGE_CUSTOMER_DATA: Task<MergeRequest, RunSummary> = Task::named("merge_customer_data");
/// Partitions one byte range of one input file.
pub const PARTITION_CHUNK: Task<PartitionJob, ChunkStats> = Task::named("partition_chunk");
/// Merges one shard's customers and writes its profile and rejects files.
pub const PROCESS_SHARD: Task<ShardJob, ShardStats> = Task::named("process_shard");

pub use crate::shard::DEFAULT_NUM_SHARDS;

/// Fault injection for crash tests: set to a shard id, the first attempt of
/// that shard's `process_shard` aborts its process half-way through writing
/// its profile file. A marker file in the work directory records that the
/// crash happened, so the retry runs normally.
pub const FAULT_CRASH_SHARD_ENV: &str = "CUSTOMER_ETL_FAULT_CRASH_SHARD";

/// With [`FAULT_CRASH_SHARD_ENV`]: how many profiles the crashing attempt
/// writes first (default 10).
pub const FAULT_CRASH_AFTER_ENV: &str = "CUSTOMER_ETL_FAULT_CRASH_AFTER_PROFILES";

/// The input of `merge_customer_data`. Every field is optional, so `[]`
/// (the tutorial's trigger), `{}` and `{"num_shards": 4}` all work; an
/// unknown name (`num_shard`) is refused rather than silently ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MergeRequest {
    /// Directory (or `s3://` prefix) of the four input files (default:
    /// `$DATA_DIR`, else `sample_data`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<Location>,
    /// Output directory or `s3://` prefix (default: `$OUT_DIR`, else `out`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub out_dir: Option<Location>,
    /// Number of shards (default: 10, or one per 96 MiB of input when
    /// that is more; see [`crate::shard::default_num_shards`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub num_shards: Option<u32>,
    /// The `as_of` date, `YYYY-MM-DD` (default: the contract's, 2026-10-01).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub as_of: Option<String>,
    /// Profile table format, `csv` or `parquet` (default csv).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<Format>,
    /// Target size of one partition chunk in bytes (default 32 MiB).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chunk_bytes: Option<u64>,
}

/// A [`MergeRequest`] with every default applied and local paths made
/// absolute (task processes may not share the orchestrator's working
/// directory).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedRequest {
    /// Input directory.
    pub data_dir: Location,
    /// Output directory.
    pub out_dir: Location,
    /// Shards; `None`: chosen from the input's size once it is planned.
    pub num_shards: Option<u32>,
    /// The `as_of` date.
    pub as_of: Date,
    /// Profile format.
    pub format: Format,
    /// Target chunk size.
    pub chunk_bytes: u64,
}

impl MergeRequest {
    /// Applies the defaults (reading `DATA_DIR` and `OUT_DIR`) and checks the values.
    pub fn resolve(&self) -> Result<ResolvedRequest, String> {
        let env_dir = |name: &str, default: &str| {
            let value = std::env::var(name).ok().filter(|v| !v.is_empty());
            Location::parse(value.as_deref().unwrap_or(default)).map_err(|e| format!("{name}: {e}"))
        };
        let data_dir = match &self.data_dir {
            Some(dir) => dir.clone(),
            None => env_dir("DATA_DIR", "sample_data")?,
        };
        let out_dir = match &self.out_dir {
            Some(dir) => dir.clone(),
            None => env_dir("OUT_DIR", "out")?,
        };
        let num_shards = self.num_shards;
        if num_shards == Some(0) {
            return Err("num_shards must be at least 1".into());
        }
        let as_of_text = self.as_of.as_deref().unwrap_or(DEFAULT_AS_OF);
        let as_of = Date::parse(as_of_text)
            .ok_or_else(|| format!("as_of `{as_of_text}` is not a YYYY-MM-DD date"))?;
        Ok(ResolvedRequest {
            data_dir: data_dir.absolute()?,
            out_dir: out_dir.absolute()?,
            num_shards,
            as_of,
            format: self.format.unwrap_or_default(),
            chunk_bytes: self.chunk_bytes.unwrap_or(DEFAULT_CHUNK_BYTES).max(1),
        })
    }
}

/// The input of `partition_chunk`: one byte range of one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionJob {
    /// The file's plan (header positions and its byte ranges).
    pub plan: SourcePlan,
    /// Which of the plan's ranges.
    pub chunk: usize,
    /// Shards to route to.
    pub num_shards: u32,
    /// Where the part file goes.
    pub work_dir: Location,
}

/// The input of `process_shard`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardJob {
    /// The shard.
    pub shard_id: u32,
    /// The work directory the partition step filled.
    pub work_dir: Location,
    /// The output directory.
    pub out_dir: Location,
    /// The `as_of` date, `YYYY-MM-DD`.
    pub as_of: String,
    /// Profile table format.
    pub format: Format,
}

/// The app: the three tasks with their retry policies. The orchestrator is
/// not retried (a bad input directory would fail again, and its children,
/// which do the work, retry on their own); re-running it is safe.
pub fn app() -> Workflows {
    let step = TaskOptions::new().retry(Retry::new(2, 500));
    let mut app = Workflows::new();
    app.register_with(
        MERGE_CUSTOMER_DATA,
        TaskOptions::new().retry(Retry::new(0, 0)),
        merge_customer_data,
    );
    app.register_with(PARTITION_CHUNK, step.clone(), partition_task);
    app.register_with(PROCESS_SHARD, step, shard_task);
    app
}

/// Runs blocking file work off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> crate::Result<T> + Send + 'static,
) -> TaskResult<T> {
    Ok(tokio::task::spawn_blocking(f).await??)
}

async fn merge_customer_data(ctx: TaskContext, request: MergeRequest) -> TaskResult<RunSummary> {
    let started = Instant::now();
    let run = request.resolve()?;
    let work_dir = default_work_dir(&run.out_dir);

    let plans = {
        let (data_dir, out_dir, work_dir) =
            (run.data_dir.clone(), run.out_dir.clone(), work_dir.clone());
        let chunk_bytes = run.chunk_bytes;
        let this_run = ctx.task_run_id().map(str::to_string);
        blocking(move || {
            // Inputs first: a bad input leaves an earlier run's outputs
            // as they were.
            data_dir.check_input_dir()?;
            out_dir.check_output()?;
            let plans = plan_inputs(&data_dir, 4, |len| len.div_ceil(chunk_bytes) as usize)?;
            // This run's attempt after a crash (of the runtime, or of the
            // node that ran it) finds its own work: the children it is
            // handed back wrote there, so nothing is wiped. Any other run
            // starts from clean folders.
            if !is_this_runs_work(&work_dir, this_run.as_deref())? {
                prepare_out_dir(&out_dir)?;
                work_dir.reset_dir()?;
                if let Some(id) = &this_run {
                    work_dir.join(RUN_MARKER).write_atomically(id.as_bytes())?;
                }
            }
            Ok(plans)
        })
        .await?
    };
    let plan_ms = started.elapsed().as_millis() as u64;
    let num_shards = run
        .num_shards
        .unwrap_or_else(|| default_num_shards_for(&plans));

    let partition_started = Instant::now();
    let jobs: Vec<PartitionJob> = plans
        .iter()
        .flat_map(|plan| {
            (0..plan.chunks.len()).map(|chunk| PartitionJob {
                plan: plan.clone(),
                chunk,
                num_shards,
                work_dir: work_dir.clone(),
            })
        })
        .collect();
    let stats = try_join_all(jobs.into_iter().map(|job| ctx.run(&PARTITION_CHUNK, job))).await?;
    let mut chunks = vec![Vec::new(); Source::ALL.len()];
    for stat in stats {
        let source = stat.source.ok_or("a partition result names no source")?;
        chunks[source.index()].push(stat);
    }
    for list in &mut chunks {
        list.sort_by_key(|c| c.chunk);
    }
    let manifest = PartitionSummary {
        num_shards,
        plans,
        chunks,
    };
    {
        let work_dir = work_dir.clone();
        blocking(move || write_partition_summary(&work_dir, &manifest)).await?;
    }
    let partition_ms = partition_started.elapsed().as_millis() as u64;

    let shards_started = Instant::now();
    let shard_jobs = (0..num_shards).map(|shard_id| ShardJob {
        shard_id,
        work_dir: work_dir.clone(),
        out_dir: run.out_dir.clone(),
        as_of: run.as_of.to_string(),
        format: run.format,
    });
    let shards = try_join_all(shard_jobs.map(|job| ctx.run(&PROCESS_SHARD, job))).await?;
    let shards_ms = shards_started.elapsed().as_millis() as u64;

    let params = RunParams::new(
        &run.data_dir,
        &run.out_dir,
        num_shards,
        run.as_of,
        run.format,
    );
    blocking(move || {
        let timings = Timings {
            plan_ms,
            partition_ms,
            shards_ms,
            aggregate_ms: 0,
            total_ms: started.elapsed().as_millis() as u64,
        };
        let summary = aggregate(&params, &work_dir, &shards, timings)?;
        work_dir.remove_tree()?;
        Ok(summary)
    })
    .await
}

/// The file in the work folder naming the run it belongs to.
const RUN_MARKER: &str = "RUN";

/// Whether the work folder was made by this very run (an earlier attempt
/// of it). Outside a runtime (no run id) it never is.
fn is_this_runs_work(work_dir: &Location, run_id: Option<&str>) -> crate::Result<bool> {
    let Some(id) = run_id else { return Ok(false) };
    match work_dir.join(RUN_MARKER).read_all() {
        Ok(marker) => Ok(marker == id.as_bytes()),
        Err(e) if e.is_not_found() => Ok(false),
        Err(e) => Err(e),
    }
}

async fn partition_task(_ctx: TaskContext, job: PartitionJob) -> TaskResult<ChunkStats> {
    blocking(move || partition_chunk(&job.plan, job.chunk, job.num_shards, &job.work_dir)).await
}

async fn shard_task(_ctx: TaskContext, job: ShardJob) -> TaskResult<ShardStats> {
    let as_of = Date::parse(&job.as_of)
        .ok_or_else(|| format!("as_of `{}` is not a YYYY-MM-DD date", job.as_of))?;
    blocking(move || {
        let options = fault_injection(&job)?;
        process_shard_with(
            job.shard_id,
            &job.work_dir,
            &job.out_dir,
            as_of,
            job.format,
            &options,
        )
    })
    .await
}

/// Reads [`FAULT_CRASH_SHARD_ENV`]: on the first attempt of that shard
/// (no marker file yet), leaves the marker and asks for a crash after a few
/// profiles.
fn fault_injection(job: &ShardJob) -> crate::Result<ShardOptions> {
    let wanted = std::env::var(FAULT_CRASH_SHARD_ENV).ok();
    if wanted.as_deref().map(str::trim) != Some(job.shard_id.to_string().as_str()) {
        return Ok(ShardOptions::default());
    }
    let marker = job
        .work_dir
        .join(&format!("fault-crashed-shard-{:05}", job.shard_id));
    if marker.exists()? {
        return Ok(ShardOptions::default());
    }
    marker.write_atomically(b"")?;
    let after = std::env::var(FAULT_CRASH_AFTER_ENV)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(10);
    Ok(ShardOptions {
        crash_after_profiles: Some(after),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use weft::payload::decode_input;

    #[test]
    fn the_orchestrator_takes_no_input_an_empty_object_or_named_fields() {
        for empty in [json!([]), json!({})] {
            assert_eq!(
                decode_input::<MergeRequest>(&empty).unwrap(),
                MergeRequest::default(),
                "{empty}"
            );
        }
        let named = json!({"num_shards": 4, "format": "parquet", "data_dir": "d"});
        let want = MergeRequest {
            num_shards: Some(4),
            format: Some(Format::Parquet),
            data_dir: Some(Location::parse("d").unwrap()),
            ..MergeRequest::default()
        };
        assert_eq!(decode_input::<MergeRequest>(&named).unwrap(), want);
        assert_eq!(decode_input::<MergeRequest>(&json!([named])).unwrap(), want);
    }

    #[test]
    fn a_misspelt_or_mistyped_field_is_named() {
        let err = decode_input::<MergeRequest>(&json!({"num_shard": 4}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `num_shard`"), "{err}");
        let err = decode_input::<MergeRequest>(&json!([{"num_shards": "ten"}]))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("num_shards: invalid type"), "{err}");
    }

    #[test]
    fn defaults_are_the_contracts_and_bad_values_are_named() {
        let run = MergeRequest {
            data_dir: Some(Location::parse("/data").unwrap()),
            out_dir: Some(Location::parse("s3://bucket/out").unwrap()),
            ..MergeRequest::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(run.data_dir, Location::parse("/data").unwrap());
        assert_eq!(run.out_dir.to_string(), "s3://bucket/out");
        assert_eq!(run.num_shards, None, "chosen once the input is planned");
        assert_eq!(run.as_of.to_string(), DEFAULT_AS_OF);
        assert_eq!(run.format, Format::Csv);
        let bad = MergeRequest {
            as_of: Some("2026-13-01".into()),
            ..MergeRequest::default()
        };
        assert!(bad.resolve().unwrap_err().contains("2026-13-01"));
        let zero = MergeRequest {
            num_shards: Some(0),
            ..MergeRequest::default()
        };
        assert!(zero.resolve().unwrap_err().contains("num_shards"));
        let err = decode_input::<MergeRequest>(&json!({"out_dir": "gs://bucket/out"}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("gs://"), "{err}");
    }
}

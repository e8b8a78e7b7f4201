//! The in-process run: partition, every shard and aggregate in one process,
//! on a small thread pool. Used by tests and as the baseline; the real run
//! fans the same library calls out as workflow tasks.

use crate::calendar::Date;
use crate::contract::{Format, Source};
use crate::error::{EtlError, Result};
use crate::location::Location;
use crate::manifest::{MANIFEST_FILE, RunParams, RunSummary, Timings, aggregate};
use crate::parallel::run_parallel;
use crate::partition::{
    PartitionSummary, SourcePlan, default_num_shards_for, partition_chunk, plan_source,
    plan_source_sized, write_partition_summary,
};
use crate::shard::default_num_shards;
use crate::shard_step::process_shard;
use std::time::Instant;

/// Default target size of one partition chunk.
pub const DEFAULT_CHUNK_BYTES: u64 = 32 << 20;

/// Knobs of [`run_local_with`].
#[derive(Debug, Clone)]
pub struct LocalOptions {
    /// Worker threads (default: the machine's parallelism).
    pub threads: usize,
    /// Target bytes per partition chunk, when `chunks_per_file` is not set.
    pub chunk_bytes: u64,
    /// Exact number of chunks to cut each file into (at most; fewer when rows are long).
    pub chunks_per_file: Option<usize>,
    /// The work directory (default: `<out_dir>/.work`).
    pub work_dir: Option<Location>,
    /// Keep the work directory after a successful run.
    pub keep_work_dir: bool,
    /// The tutorial's design, for comparison only: every shard reads,
    /// parses, validates and routes all four files in full and keeps its
    /// own rows, so the work grows with shards x rows. Same output.
    pub every_shard_reads_all: bool,
}

impl Default for LocalOptions {
    fn default() -> Self {
        LocalOptions {
            threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            chunk_bytes: DEFAULT_CHUNK_BYTES,
            chunks_per_file: None,
            work_dir: None,
            keep_work_dir: false,
            every_shard_reads_all: false,
        }
    }
}

/// Runs the whole pipeline in this process with default options.
/// `num_shards`: a count, or `None` to choose one from the input's size
/// ([`default_num_shards`]).
pub fn run_local(
    data_dir: impl Into<Location>,
    out_dir: impl Into<Location>,
    num_shards: impl Into<Option<u32>>,
    as_of: Date,
    format: Format,
) -> Result<RunSummary> {
    run_local_with(
        data_dir,
        out_dir,
        num_shards,
        as_of,
        format,
        &LocalOptions::default(),
    )
}

/// Runs the whole pipeline in this process. The output directory's
/// `profiles/`, `rejects/` and `manifest.json` are replaced, once the inputs
/// are known to be readable (a bad input leaves the outputs untouched).
pub fn run_local_with(
    data_dir: impl Into<Location>,
    out_dir: impl Into<Location>,
    num_shards: impl Into<Option<u32>>,
    as_of: Date,
    format: Format,
    options: &LocalOptions,
) -> Result<RunSummary> {
    let (data_dir, out_dir) = (data_dir.into(), out_dir.into());
    let num_shards = num_shards.into();
    if num_shards == Some(0) {
        return Err(EtlError::InvalidArgument(
            "num_shards must be at least 1".into(),
        ));
    }
    let started = Instant::now();
    let work_dir = options
        .work_dir
        .clone()
        .unwrap_or_else(|| default_work_dir(&out_dir));
    let threads = options.threads.max(1);
    data_dir.check_input_dir()?;
    out_dir.check_output()?;
    if options.every_shard_reads_all {
        let num_shards = match num_shards {
            Some(n) => n,
            None => default_num_shards(input_bytes(&data_dir)?),
        };
        prepare_out_dir(&out_dir)?;
        work_dir.reset_dir()?;
        return run_every_shard_reads_all(
            &data_dir, &out_dir, &work_dir, num_shards, as_of, format, options,
        );
    }

    let plans = plan_inputs(&data_dir, threads, |len| {
        options
            .chunks_per_file
            .unwrap_or_else(|| len.div_ceil(options.chunk_bytes.max(1)) as usize)
    })?;
    let plan_ms = started.elapsed().as_millis() as u64;
    let num_shards = num_shards.unwrap_or_else(|| default_num_shards_for(&plans));
    prepare_out_dir(&out_dir)?;
    work_dir.reset_dir()?;

    let partition_started = Instant::now();
    let tasks: Vec<(usize, usize)> = plans
        .iter()
        .enumerate()
        .flat_map(|(s, plan)| (0..plan.chunks.len()).map(move |c| (s, c)))
        .collect();
    let stats = run_parallel(&tasks, threads, |&(s, c)| {
        partition_chunk(&plans[s], c, num_shards, &work_dir)
    })?;
    let mut chunks = vec![Vec::new(); Source::ALL.len()];
    for ((s, _), stat) in tasks.iter().zip(stats) {
        chunks[*s].push(stat);
    }
    write_partition_summary(
        &work_dir,
        &PartitionSummary {
            num_shards,
            plans,
            chunks,
        },
    )?;
    let partition_ms = partition_started.elapsed().as_millis() as u64;

    let shards_started = Instant::now();
    let shard_ids: Vec<u32> = (0..num_shards).collect();
    let shards = run_parallel(&shard_ids, threads, |&id| {
        process_shard(id, &work_dir, &out_dir, as_of, format)
    })?;
    let shards_ms = shards_started.elapsed().as_millis() as u64;

    let params = RunParams::new(&data_dir, &out_dir, num_shards, as_of, format);
    let timings = Timings {
        plan_ms,
        partition_ms,
        shards_ms,
        ..Timings::default()
    };
    let summary = aggregate(&params, &work_dir, &shards, timings)?;
    if !options.keep_work_dir {
        work_dir.remove_tree()?;
    }
    Ok(summary)
}

/// The default work directory of a run writing to `out_dir`.
pub fn default_work_dir(out_dir: &Location) -> Location {
    out_dir.join(".work")
}

/// Plans the four inputs of `data_dir` (in parallel), each cut into
/// `chunks_for_len(its length)` ranges.
pub fn plan_inputs(
    data_dir: &Location,
    threads: usize,
    chunks_for_len: impl Fn(u64) -> usize + Sync,
) -> Result<Vec<SourcePlan>> {
    run_parallel(&Source::ALL, threads, |&source| {
        plan_source_sized(data_dir, source, |len| chunks_for_len(len).max(1))
    })
}

/// The four inputs' sizes, in bytes.
fn input_bytes(data_dir: &Location) -> Result<u64> {
    Source::ALL
        .iter()
        .map(|source| data_dir.join(source.file_name()).open()?.size())
        .sum()
}

/// The tutorial's design (see [`LocalOptions::every_shard_reads_all`]): each
/// shard, on its own thread, partitions every file in full into a private
/// work directory, then merges only its own shard from it.
fn run_every_shard_reads_all(
    data_dir: &Location,
    out_dir: &Location,
    work_dir: &Location,
    num_shards: u32,
    as_of: Date,
    format: Format,
    options: &LocalOptions,
) -> Result<RunSummary> {
    let started = Instant::now();
    let shard_ids: Vec<u32> = (0..num_shards).collect();
    let shard_work_dir = |id: u32| work_dir.join(&format!("shard-{id:05}"));
    let shards = run_parallel(&shard_ids, options.threads.max(1), |&id| {
        let own = shard_work_dir(id);
        let mut plans = Vec::new();
        let mut chunks = Vec::new();
        for source in Source::ALL {
            let plan = plan_source(data_dir, source, 1)?;
            chunks.push(vec![partition_chunk(&plan, 0, num_shards, &own)?]);
            plans.push(plan);
        }
        let manifest = PartitionSummary {
            num_shards,
            plans,
            chunks,
        };
        write_partition_summary(&own, &manifest)?;
        process_shard(id, &own, out_dir, as_of, format)
    })?;
    let timings = Timings {
        shards_ms: started.elapsed().as_millis() as u64,
        ..Timings::default()
    };
    let params = RunParams::new(data_dir, out_dir, num_shards, as_of, format);
    let summary = aggregate(&params, &shard_work_dir(0), &shards, timings)?;
    if !options.keep_work_dir {
        work_dir.remove_tree()?;
    }
    Ok(summary)
}

/// Removes the outputs of an earlier run from `out_dir` (only what a run writes).
pub(crate) fn prepare_out_dir(out_dir: &Location) -> Result<()> {
    out_dir.create_dir_all()?;
    for dir in ["profiles", "rejects"] {
        out_dir.join(dir).reset_dir()?;
    }
    out_dir.join(MANIFEST_FILE).remove_file()
}

//! The aggregate step: reconcile the counts, write the unroutable rejects and
//! `manifest.json`, and return the run's summary.

use crate::calendar::Date;
use crate::contract::{Format, ReasonCounts, RejectReason, Source};
use crate::error::{EtlError, Result};
use crate::location::Location;
use crate::part::collect_rejects;
use crate::partition::PartitionSummary;
use crate::shard_step::{FileCounts, ShardStats};
use crate::writer::write_rejects;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Instant;

/// The run's manifest, relative to the output directory.
pub const MANIFEST_FILE: &str = "manifest.json";

/// The rejects file of rows that belong to no shard, relative to the output directory.
pub const UNROUTABLE_REJECTS_FILE: &str = "rejects/unroutable.csv";

/// The parameters of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunParams {
    /// The `as_of` date.
    pub as_of: String,
    /// Number of shards.
    pub num_shards: u32,
    /// The input directory.
    pub data_dir: Location,
    /// The output directory.
    pub out_dir: Location,
    /// The profile table's format.
    pub format: Format,
}

impl RunParams {
    /// Parameters for a run.
    pub fn new(
        data_dir: &Location,
        out_dir: &Location,
        num_shards: u32,
        as_of: Date,
        format: Format,
    ) -> Self {
        RunParams {
            as_of: as_of.to_string(),
            num_shards,
            data_dir: data_dir.clone(),
            out_dir: out_dir.clone(),
            format,
        }
    }
}

/// Wall times of a run's steps, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timings {
    /// Planning the chunks (the boundary scan).
    pub plan_ms: u64,
    /// Partitioning all chunks.
    pub partition_ms: u64,
    /// Processing all shards.
    pub shards_ms: u64,
    /// The aggregate step (filled in by [`aggregate`]).
    pub aggregate_ms: u64,
    /// The whole run, when the caller knows it.
    pub total_ms: u64,
}

/// Counts of one input file, as written to the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileSummary {
    /// The input file.
    pub path: Location,
    /// Rows read.
    pub rows_read: u64,
    /// Rows accepted.
    pub rows_accepted: u64,
    /// Rows rejected.
    pub rows_rejected: u64,
    /// Rejects by reason.
    pub rejects_by_reason: ReasonCounts,
}

/// One shard in the manifest and the summary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardSummary {
    /// The shard.
    pub shard_id: u32,
    /// Profiles in its file.
    pub profiles: u64,
    /// Its rejects.
    pub rows_rejected: u64,
    /// Its profile file, relative to the output directory.
    pub profile_file: String,
    /// Its rejects file, relative to the output directory.
    pub rejects_file: String,
    /// Wall time of its step.
    pub elapsed_ms: u64,
}

/// The content of `manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Run parameters.
    pub params: RunParams,
    /// Per input file, keyed by source name.
    pub files: BTreeMap<String, FileSummary>,
    /// Per shard, in shard order.
    pub shards: Vec<ShardSummary>,
    /// Rows with no valid customer id or a wrong field count (in `rejects/unroutable.csv`).
    pub rows_unroutable: u64,
    /// The unroutable rejects file, relative to the output directory.
    pub unroutable_rejects_file: String,
    /// Total profiles.
    pub profiles_generated: u64,
    /// Shards processed.
    pub shards_processed: u32,
    /// Rows read over all files.
    pub rows_read: u64,
    /// Rows accepted over all files.
    pub rows_accepted: u64,
    /// Rows rejected over all files.
    pub rows_rejected: u64,
    /// All rejects by reason.
    pub rejects_by_reason: ReasonCounts,
    /// Step timings.
    pub timings: Timings,
}

/// The orchestrator's return value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSummary {
    /// Total profiles.
    pub profiles_generated: u64,
    /// Shards processed.
    pub shards_processed: u32,
    /// Rows read over all files.
    pub rows_read: u64,
    /// Rows rejected over all files.
    pub rows_rejected: u64,
    /// The output directory.
    pub out_dir: Location,
    /// Profiles per shard.
    pub per_shard: Vec<ShardProfiles>,
}

/// One shard's profile count in a [`RunSummary`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardProfiles {
    /// The shard.
    pub shard_id: u32,
    /// Profiles.
    pub profiles: u64,
}

/// The aggregate step: checks that every shard ran and that the counts
/// reconcile with the partition step's, writes `rejects/unroutable.csv` and
/// `manifest.json` under `params.out_dir`, and returns the summary.
pub fn aggregate(
    params: &RunParams,
    work_dir: &Location,
    shards: &[ShardStats],
    mut timings: Timings,
) -> Result<RunSummary> {
    let started = Instant::now();
    let partition = PartitionSummary::load(work_dir)?;
    let out_dir = &params.out_dir;
    let mut shards: Vec<&ShardStats> = shards.iter().collect();
    shards.sort_by_key(|s| s.shard_id);
    let ids: Vec<u32> = shards.iter().map(|s| s.shard_id).collect();
    if ids != (0..partition.num_shards).collect::<Vec<_>>() {
        return Err(EtlError::InvalidArgument(format!(
            "aggregate needs the stats of shards 0..{} exactly once each, got {ids:?}",
            partition.num_shards
        )));
    }

    let rows_unroutable = write_unroutable(&partition, work_dir, out_dir)?;
    let (files, totals) = reconcile(&partition, work_dir, &shards)?;
    let all_reasons = files.values().fold(ReasonCounts::default(), |mut acc, f| {
        acc.merge(&f.rejects_by_reason);
        acc
    });

    let shard_summaries: Vec<ShardSummary> = shards
        .iter()
        .map(|s| ShardSummary {
            shard_id: s.shard_id,
            profiles: s.profiles,
            rows_rejected: s.files.iter().map(|f| f.rows_rejected).sum(),
            profile_file: s.profile_file.clone(),
            rejects_file: s.rejects_file.clone(),
            elapsed_ms: s.elapsed_ms,
        })
        .collect();
    let profiles_generated = shards.iter().map(|s| s.profiles).sum();
    timings.aggregate_ms = started.elapsed().as_millis() as u64;
    if timings.total_ms == 0 {
        timings.total_ms =
            timings.plan_ms + timings.partition_ms + timings.shards_ms + timings.aggregate_ms;
    }
    let manifest = Manifest {
        params: params.clone(),
        files,
        shards: shard_summaries,
        rows_unroutable,
        unroutable_rejects_file: UNROUTABLE_REJECTS_FILE.to_string(),
        profiles_generated,
        shards_processed: shards.len() as u32,
        rows_read: totals.rows_read,
        rows_accepted: totals.rows_accepted,
        rows_rejected: totals.rows_rejected,
        rejects_by_reason: all_reasons,
        timings,
    };
    let json = serde_json::to_vec_pretty(&manifest).expect("manifest serializes");
    out_dir.join(MANIFEST_FILE).write_atomically(&json)?;
    Ok(manifest.summary())
}

/// Writes the rows no shard could take (`rejects/unroutable.csv`), in
/// source then file order; returns how many.
fn write_unroutable(
    partition: &PartitionSummary,
    work_dir: &Location,
    out_dir: &Location,
) -> Result<u64> {
    let mut unroutable_bytes: Vec<(Source, Vec<u8>)> = Vec::new();
    for source in Source::ALL {
        let mut bytes = Vec::new();
        partition.for_each_part(work_dir, source, |part| {
            part.read_segment(part.unroutable_index(), &mut bytes)
        })?;
        unroutable_bytes.push((source, bytes));
    }
    let mut unroutable = Vec::new();
    for (source, bytes) in &unroutable_bytes {
        collect_rejects(*source, bytes, work_dir, &mut unroutable)?;
    }
    out_dir.join("rejects").create_dir_all()?;
    write_rejects(&out_dir.join(UNROUTABLE_REJECTS_FILE), &unroutable)?;
    Ok(unroutable.len() as u64)
}

/// Each input file's counts, from the shards' and the partition step's,
/// checked to agree (every row read once, accepted or rejected), with the
/// duplicates the shards found; and the totals.
fn reconcile(
    partition: &PartitionSummary,
    work_dir: &Location,
    shards: &[&ShardStats],
) -> Result<(BTreeMap<String, FileSummary>, FileCounts)> {
    let mut files = BTreeMap::new();
    let mut totals = FileCounts::default();
    for source in Source::ALL {
        let mut counts = FileCounts::default();
        for shard in shards {
            counts.merge(&shard.files[source.index()]);
        }
        let mut reasons = ReasonCounts::default();
        let mut partition_read = 0;
        for chunk in &partition.chunks[source.index()] {
            partition_read += chunk.rows_read;
            counts.rows_read += chunk.rows_unroutable;
            counts.rows_rejected += chunk.rows_unroutable;
            reasons.merge(&chunk.rejects_by_reason);
        }
        if counts.rows_read != partition_read
            || counts.rows_read != counts.rows_accepted + counts.rows_rejected
        {
            return Err(EtlError::bad_work_file(
                work_dir,
                format!(
                    "{}: the shards account for {} rows read ({} accepted + {} rejected) but the partition step read {partition_read}",
                    source.file_name(),
                    counts.rows_read,
                    counts.rows_accepted,
                    counts.rows_rejected
                ),
            ));
        }
        // Duplicates are found by the shards: a source's shard rejects
        // beyond those the partition step routed to shards.
        let routed: u64 = partition.chunks[source.index()]
            .iter()
            .map(|c| c.rows_rejected - c.rows_unroutable)
            .sum();
        let shard_rejected: u64 = shards
            .iter()
            .map(|s| s.files[source.index()].rows_rejected)
            .sum();
        reasons.0[RejectReason::Duplicate.index()] = shard_rejected - routed;
        totals.merge(&counts);
        files.insert(
            source.name().to_string(),
            FileSummary {
                path: partition.plan(source).path.clone(),
                rows_read: counts.rows_read,
                rows_accepted: counts.rows_accepted,
                rows_rejected: counts.rows_rejected,
                rejects_by_reason: reasons,
            },
        );
    }
    Ok((files, totals))
}

impl Manifest {
    /// The orchestrator's summary of this run.
    pub fn summary(&self) -> RunSummary {
        RunSummary {
            profiles_generated: self.profiles_generated,
            shards_processed: self.shards_processed,
            rows_read: self.rows_read,
            rows_rejected: self.rows_rejected,
            out_dir: self.params.out_dir.clone(),
            per_shard: self
                .shards
                .iter()
                .map(|s| ShardProfiles {
                    shard_id: s.shard_id,
                    profiles: s.profiles,
                })
                .collect(),
        }
    }

    /// Reads `out_dir/manifest.json`.
    pub fn load(out_dir: impl Into<Location>) -> Result<Self> {
        let path = out_dir.into().join(MANIFEST_FILE);
        let bytes = path.read_all()?;
        serde_json::from_slice(&bytes).map_err(|e| EtlError::bad_work_file(&path, e.to_string()))
    }
}

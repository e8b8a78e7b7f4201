//! The customer ETL pipeline: read four CSV exports (crm, billing, product,
//! support), validate every row against the data contract
//! (`shared/spec/customer-etl.md`), route customers to shards, merge each
//! shard's rows into enriched profiles, and write profiles, rejects and a
//! manifest.
//!
//! A run has three steps, each a plain function so the workflow tasks can call
//! them from separate processes:
//! 1. partition: [`plan_source`] cuts each file into byte ranges at record
//!    boundaries, then [`partition_chunk`] (one call per range, in parallel)
//!    validates its rows and writes one part file with a segment per shard;
//!    [`write_partition_summary`] records the plans and counts;
//! 2. [`process_shard`] (one call per shard) reads only its own segments and
//!    writes `profiles/shard-NNNNN.*` and `rejects/shard-NNNNN.csv`;
//! 3. [`aggregate`] reconciles counts and writes `manifest.json`.
//!
//! Inputs, work files and outputs are [`Location`]s: local paths or
//! `s3://` objects, so the steps can run on different machines.
//!
//! [`run_local`] runs all three in one process; [`workflow`] runs them as
//! durable weft tasks, each in its own process, and [`embedded`] runs that
//! workflow on an embedded runtime (`customer-etl run`).

pub mod calendar;
pub mod contract;
pub mod csv_scan;
pub mod embedded;
pub mod error;
pub mod generate;
pub mod local;
pub mod location;
pub mod manifest;
pub mod parallel;
pub mod part;
pub mod partition;
pub mod profile;
pub mod shard;
pub mod shard_step;
pub mod storage;
pub mod validate;
pub mod workflow;
pub mod writer;

pub use calendar::Date;
pub use contract::{DEFAULT_AS_OF, Format, RejectReason, RejectRecord, Source};
pub use error::{EtlError, Result};
pub use generate::{GenerateStats, generate};
pub use local::{LocalOptions, run_local, run_local_with};
pub use location::Location;
pub use manifest::{Manifest, RunParams, RunSummary, Timings, aggregate};
pub use partition::{
    ByteRange, ChunkStats, PartitionSummary, SourcePlan, partition_chunk, plan_chunks, plan_source,
    write_partition_summary,
};
pub use shard::{ShardRouter, shard_of};
pub use shard_step::{ShardOptions, ShardStats, process_shard, process_shard_with};

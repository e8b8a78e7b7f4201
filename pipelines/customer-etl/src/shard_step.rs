//! The shard step: read one shard's rows from every part file, drop
//! duplicates, merge the four sources by customer, compute each profile
//! ([`crate::profile::build_profile`]) and write the shard's profiles and
//! rejects.

use crate::calendar::Date;
use crate::contract::{Format, ReasonCounts, RejectReason, RejectRecord, Source, Window};
use crate::error::{EtlError, Result};
use crate::location::Location;
use crate::parallel::run_parallel;
use crate::part::{
    AcceptedRow, Origin, PartReader, collect_rejects, decode_accepted, part_path, parts_dir,
};
use crate::partition::{PartitionSummary, SourcePlan};
use crate::profile::build_profile;
use crate::storage::OutputFile;
use crate::validate::{BillingRow, CrmRow, CustomerId, ProductRow, SupportRow};
use crate::writer::{ProfileSink, profile_sink, write_rejects};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::time::Instant;

/// Row counts of one input file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileCounts {
    /// Rows read.
    pub rows_read: u64,
    /// Rows accepted (merged into profiles).
    pub rows_accepted: u64,
    /// Rows rejected.
    pub rows_rejected: u64,
}

impl FileCounts {
    /// Adds `other`'s counts.
    pub fn merge(&mut self, other: &FileCounts) {
        self.rows_read += other.rows_read;
        self.rows_accepted += other.rows_accepted;
        self.rows_rejected += other.rows_rejected;
    }
}

/// What one shard step did (counts only, never the profiles).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardStats {
    /// The shard.
    pub shard_id: u32,
    /// Profiles written.
    pub profiles: u64,
    /// Counts of this shard's rows per input file, in [`Source::ALL`] order.
    pub files: Vec<FileCounts>,
    /// This shard's rejects by reason.
    pub rejects_by_reason: ReasonCounts,
    /// The profile file, relative to the output directory.
    pub profile_file: String,
    /// The rejects file, relative to the output directory.
    pub rejects_file: String,
    /// Wall time of the step in milliseconds.
    pub elapsed_ms: u64,
}

/// The path of shard `shard_id`'s profile file, relative to the output directory.
pub fn profile_file_name(shard_id: u32, format: Format) -> String {
    format!("profiles/shard-{shard_id:05}.{}", format.extension())
}

/// The path of shard `shard_id`'s rejects file, relative to the output directory.
pub fn rejects_file_name(shard_id: u32) -> String {
    format!("rejects/shard-{shard_id:05}.csv")
}

/// An accepted row with where it came from.
struct Located<T> {
    origin: Origin,
    row: T,
}

/// Knobs of [`process_shard_with`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShardOptions {
    /// Fault injection, for crash tests only: after writing this many
    /// profiles (or, with fewer, just before the commit), push the
    /// half-written file to disk (or wait for the upload's parts in flight)
    /// and abort the process without any clean-up.
    pub crash_after_profiles: Option<u64>,
}

/// Runs the shard step for `shard_id`: reads the shard's segments of every part
/// file in `work_dir`, and writes `profiles/shard-NNNNN.<csv|parquet>` and
/// `rejects/shard-NNNNN.csv` under `out_dir`.
///
/// Each file is written atomically ([`OutputFile`]), so a retried shard
/// replaces whatever its failed attempt left: its output is whole and never
/// holds a customer twice.
pub fn process_shard(
    shard_id: u32,
    work_dir: &Location,
    out_dir: &Location,
    as_of: Date,
    format: Format,
) -> Result<ShardStats> {
    process_shard_with(
        shard_id,
        work_dir,
        out_dir,
        as_of,
        format,
        &ShardOptions::default(),
    )
}

/// [`process_shard`] with options.
pub fn process_shard_with(
    shard_id: u32,
    work_dir: &Location,
    out_dir: &Location,
    as_of: Date,
    format: Format,
    options: &ShardOptions,
) -> Result<ShardStats> {
    let started = Instant::now();
    let manifest = PartitionSummary::load(work_dir)?;
    if shard_id >= manifest.num_shards {
        return Err(EtlError::InvalidArgument(format!(
            "shard {shard_id} is out of range: the work directory {work_dir} has {} shards",
            manifest.num_shards
        )));
    }
    let mut stats = ShardStats {
        shard_id,
        files: vec![FileCounts::default(); 4],
        profile_file: profile_file_name(shard_id, format),
        rejects_file: rejects_file_name(shard_id),
        ..ShardStats::default()
    };
    let segments = read_segments(&manifest, work_dir, shard_id, &mut stats.files)?;
    let mut rejects: Vec<RejectRecord<'_>> = Vec::new();
    for source in Source::ALL {
        for part in &segments.rejected[source.index()] {
            collect_rejects(source, part, work_dir, &mut rejects)?;
        }
    }
    let mut rows = ShardRows::decode(&segments.accepted, work_dir)?;
    rows.reject_duplicates(
        &manifest,
        shard_id,
        &segments.parts,
        &mut rejects,
        &mut stats.files,
    )?;
    for counts in &mut stats.files {
        counts.rows_accepted = counts.rows_read - counts.rows_rejected;
    }
    for r in &rejects {
        stats.rejects_by_reason.add(r.reason);
    }
    for dir in ["profiles", "rejects"] {
        out_dir.join(dir).create_dir_all()?;
    }
    stats.profiles = rows.write_profiles(
        &out_dir.join(&stats.profile_file),
        Window::for_as_of(as_of),
        format,
        options,
    )?;
    rejects.sort_unstable_by_key(|r| (r.source, r.line));
    write_rejects(&out_dir.join(&stats.rejects_file), &rejects)?;
    stats.elapsed_ms = started.elapsed().as_millis() as u64;
    Ok(stats)
}

/// One shard's segments of every part file: its accepted rows and its
/// partition-time rejects, per source, one buffer per part in chunk order.
struct Segments {
    accepted: [Vec<Vec<u8>>; 4],
    rejected: [Vec<Vec<u8>>; 4],
    /// Per source, in chunk order, the parts that keep this shard's raw
    /// text (the others are closed: a local run keeps no file open).
    parts: [Vec<Option<PartReader>>; 4],
}

/// Parts a shard reads at once from a bucket (each is two or three
/// requests; on a local disk they are read one after another).
const PARTS_AT_ONCE: usize = 8;

/// Reads shard `shard_id`'s segments, counting their rows in `files`.
fn read_segments(
    manifest: &PartitionSummary,
    work_dir: &Location,
    shard_id: u32,
    files: &mut [FileCounts],
) -> Result<Segments> {
    let mut segments = Segments {
        accepted: Default::default(),
        rejected: Default::default(),
        parts: Default::default(),
    };
    let at_once = if work_dir.is_object() {
        PARTS_AT_ONCE
    } else {
        1
    };
    for source in Source::ALL {
        let i = source.index();
        let chunks: Vec<usize> = (0..manifest.plan(source).chunks.len()).collect();
        let parts = run_parallel(&chunks, at_once, |&chunk| {
            let part = PartReader::open(
                &part_path(work_dir, source, chunk),
                source,
                manifest.num_shards,
            )?;
            let (mut accepted, mut rejected) = (Vec::new(), Vec::new());
            part.read_shard(shard_id, &mut accepted, &mut rejected)?;
            Ok((part, accepted, rejected))
        })?;
        for (part, accepted, rejected) in parts {
            let (accepted_rows, rejected_rows) = (
                part.accepted_index(shard_id).rows,
                part.rejected_index(shard_id).rows,
            );
            files[i].rows_read += accepted_rows + rejected_rows;
            files[i].rows_rejected += rejected_rows;
            segments.accepted[i].push(accepted);
            segments.rejected[i].push(rejected);
            segments.parts[i].push(part.raw_index(shard_id).is_some().then_some(part));
        }
    }
    Ok(segments)
}

/// A shard's accepted rows, per source, each with where it came from.
struct ShardRows<'a> {
    crm: Vec<Located<CrmRow<'a>>>,
    billing: Vec<Located<BillingRow<'a>>>,
    product: Vec<Located<ProductRow<'a>>>,
    support: Vec<Located<SupportRow<'a>>>,
}

impl<'a> ShardRows<'a> {
    fn decode(accepted: &'a [Vec<Vec<u8>>; 4], work_dir: &Location) -> Result<Self> {
        let mut rows = ShardRows {
            crm: Vec::new(),
            billing: Vec::new(),
            product: Vec::new(),
            support: Vec::new(),
        };
        for source in Source::ALL {
            for part in &accepted[source.index()] {
                decode_accepted(source, part, |origin, row| match row {
                    AcceptedRow::Crm(row) => rows.crm.push(Located { origin, row }),
                    AcceptedRow::Billing(row) => rows.billing.push(Located { origin, row }),
                    AcceptedRow::Product(row) => rows.product.push(Located { origin, row }),
                    AcceptedRow::Support(row) => rows.support.push(Located { origin, row }),
                })
                .map_err(|detail| EtlError::bad_work_file(parts_dir(work_dir, source), detail))?;
            }
        }
        Ok(rows)
    }

    /// Duplicates: sorted by (customer, record key, line), the first of each
    /// run is the earliest accepted row in file order and wins; the others
    /// become `duplicate` rejects, read back from the input for their text.
    fn reject_duplicates(
        &mut self,
        manifest: &PartitionSummary,
        shard_id: u32,
        parts: &[Vec<Option<PartReader>>; 4],
        rejects: &mut Vec<RejectRecord<'_>>,
        files: &mut [FileCounts],
    ) -> Result<()> {
        let mut duplicates: Vec<(Source, Origin)> = Vec::new();
        drop_duplicates(
            Source::Crm,
            &mut self.crm,
            |r| (r.customer, ""),
            &mut duplicates,
        );
        drop_duplicates(
            Source::Billing,
            &mut self.billing,
            |r| (r.customer, r.invoice_id),
            &mut duplicates,
        );
        drop_duplicates(
            Source::Product,
            &mut self.product,
            |r| (r.customer, r.event_id),
            &mut duplicates,
        );
        drop_duplicates(
            Source::Support,
            &mut self.support,
            |r| (r.customer, r.ticket_id),
            &mut duplicates,
        );
        for source in Source::ALL {
            let origins: Vec<Origin> = duplicates
                .iter()
                .filter(|(s, _)| *s == source)
                .map(|(_, origin)| *origin)
                .collect();
            let raws = read_raw(
                manifest.plan(source),
                &parts[source.index()],
                shard_id,
                &origins,
            )?;
            files[source.index()].rows_rejected += origins.len() as u64;
            for (origin, raw) in origins.iter().zip(raws) {
                rejects.push(RejectRecord {
                    source,
                    line: origin.line,
                    reason: RejectReason::Duplicate,
                    raw: Cow::Owned(raw),
                });
            }
        }
        Ok(())
    }

    /// Merges the four customer-sorted lists and writes one profile per
    /// customer, in customer order, to `path` (atomically: see
    /// [`OutputFile`]). Returns how many.
    fn write_profiles(
        &self,
        path: &Location,
        window: Window,
        format: Format,
        options: &ShardOptions,
    ) -> Result<u64> {
        let mut sink = profile_sink(OutputFile::create(path)?, format)?;
        let (mut c, mut b, mut p, mut s) = (0, 0, 0, 0);
        let mut features: Vec<&str> = Vec::new();
        let mut written = 0;
        loop {
            let next = [
                self.crm.get(c).map(|r| r.row.customer),
                self.billing.get(b).map(|r| r.row.customer),
                self.product.get(p).map(|r| r.row.customer),
                self.support.get(s).map(|r| r.row.customer),
            ];
            let Some(customer) = next.iter().flatten().min().copied() else {
                break;
            };
            let (c0, c1) = take_group(&self.crm, &mut c, customer, |r| r.customer);
            let (b0, b1) = take_group(&self.billing, &mut b, customer, |r| r.customer);
            let (p0, p1) = take_group(&self.product, &mut p, customer, |r| r.customer);
            let (s0, s1) = take_group(&self.support, &mut s, customer, |r| r.customer);
            let profile = build_profile(
                customer,
                self.crm[c0..c1].first().map(|r| r.row.clone()),
                self.billing[b0..b1].iter().map(|r| &r.row),
                self.product[p0..p1].iter().map(|r| &r.row),
                self.support[s0..s1].iter().map(|r| &r.row),
                &window,
                &mut features,
            );
            sink.write(&profile)?;
            written += 1;
            if options.crash_after_profiles == Some(written) {
                crash_mid_write(sink.as_mut(), path);
            }
        }
        if options.crash_after_profiles.is_some() {
            crash_mid_write(sink.as_mut(), path);
        }
        sink.finish()?;
        Ok(written)
    }
}

/// The fault-injection crash: leaves a half-written file and dies at once,
/// as a killed process would (no destructors, no error reported).
fn crash_mid_write(sink: &mut dyn ProfileSink, path: &Location) -> ! {
    let _ = sink.flush();
    eprintln!("fault injection: aborting the process while writing {path}");
    std::process::abort()
}

/// Advances `at` past the rows of `customer` and returns their index range.
fn take_group<T>(
    rows: &[Located<T>],
    at: &mut usize,
    customer: CustomerId,
    id: impl Fn(&T) -> CustomerId,
) -> (usize, usize) {
    let start = *at;
    while *at < rows.len() && id(&rows[*at].row) == customer {
        *at += 1;
    }
    (start, *at)
}

/// Sorts `rows` by (customer, key, line), removes every row that repeats the
/// (customer, key) of an earlier one, and records the removed rows' origins.
fn drop_duplicates<T>(
    source: Source,
    rows: &mut Vec<Located<T>>,
    key: impl Fn(&T) -> (CustomerId, &str),
    duplicates: &mut Vec<(Source, Origin)>,
) {
    rows.sort_unstable_by(|x, y| {
        key(&x.row)
            .cmp(&key(&y.row))
            .then(x.origin.line.cmp(&y.origin.line))
    });
    let mut keep = vec![true; rows.len()];
    for i in 1..rows.len() {
        if key(&rows[i].row) == key(&rows[i - 1].row) {
            keep[i] = false;
            duplicates.push((source, rows[i].origin));
        }
    }
    if keep.iter().all(|k| *k) {
        return;
    }
    let mut flags = keep.into_iter();
    rows.retain(|_| flags.next().unwrap_or(true));
}

/// The raw text of the rows at `origins` of one source, in order: from the
/// input file (one `pread` each), or from shard `shard_id`'s raw segments of
/// the parts that keep them ([`PartReader::read_raw`]).
fn read_raw(
    plan: &SourcePlan,
    parts: &[Option<PartReader>],
    shard_id: u32,
    origins: &[Origin],
) -> Result<Vec<String>> {
    let mut texts = vec![String::new(); origins.len()];
    // Which part each row is in: its chunk, found by its line.
    let mut by_part: Vec<Vec<usize>> = vec![Vec::new(); parts.len()];
    let mut from_input = Vec::new();
    for (i, origin) in origins.iter().enumerate() {
        let chunk = plan
            .chunks
            .partition_point(|c| c.first_line <= origin.line)
            .saturating_sub(1);
        match parts.get(chunk).and_then(Option::as_ref) {
            Some(_) => by_part[chunk].push(i),
            None => from_input.push(i),
        }
    }
    let ranges = |rows: &[usize]| -> Vec<_> {
        rows.iter()
            .map(|&i| origins[i].offset..origins[i].offset + origins[i].raw_len as u64)
            .collect()
    };
    let mut keep = |location: &Location, rows: &[usize], got: Vec<bytes::Bytes>| -> Result<()> {
        for (&i, bytes) in rows.iter().zip(got) {
            texts[i] = String::from_utf8(bytes.to_vec()).map_err(|_| EtlError::InvalidUtf8 {
                path: location.clone(),
                offset: origins[i].offset,
            })?;
        }
        Ok(())
    };
    if !from_input.is_empty() {
        let got = plan.path.open()?.read_ranges(&ranges(&from_input))?;
        keep(&plan.path, &from_input, got)?;
    }
    for (part, rows) in parts.iter().zip(&by_part) {
        let Some(part) = part.as_ref().filter(|_| !rows.is_empty()) else {
            continue;
        };
        if let Some(segment) = part.raw_index(shard_id) {
            keep(
                part.location(),
                rows,
                part.read_raw(segment, &ranges(rows))?,
            )?;
        }
    }
    Ok(texts)
}

//! The partition step: cut each input file into byte ranges at record
//! boundaries, then, for each range independently (in parallel, in any
//! process), parse and validate its rows and route them to per-shard segments
//! of one part file (see [`crate::part`]).
//!
//! Boundaries are found by [`plan_chunks`] with one sequential scan that stops
//! only at `"` and `\n` bytes (`memchr2`), running the same quoting rules as
//! [`crate::csv_scan`]: a quote opens a quoted field only at a field's first
//! byte, so stray quotes in unquoted fields cannot flip the state the way a
//! plain quote-parity count would. The scan also counts newlines, so every
//! range knows the physical line it starts on and rows keep their exact line
//! numbers however the file is cut. It reads the file once at memory speed;
//! the heavy work (UTF-8 check, parsing, validation, MD5 routing, encoding)
//! is in [`partition_chunk`], which runs on all ranges at once.

use crate::contract::{ReasonCounts, RejectReason, Source};
use crate::csv_scan::{RecordScanner, trim};
use crate::error::{EtlError, Result};
use crate::location::Location;
use crate::part::{AcceptedRow, Origin, PartBuilder, PartReader, encode_rejected, part_path};
use crate::shard::ShardRouter;
use crate::storage::InputFile;
use crate::validate;
use serde::{Deserialize, Serialize};
use std::io::Read;

/// A byte range of an input file that starts and ends at record boundaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ByteRange {
    /// First byte (inclusive).
    pub start: u64,
    /// End (exclusive).
    pub end: u64,
    /// Physical line number (1-based) of the range's first byte.
    pub first_line: u64,
}

/// How one input file is read: its header's column positions and its ranges.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourcePlan {
    /// Which input this is.
    pub source: Source,
    /// The input file.
    pub path: Location,
    /// Number of fields in the header (a row with another count is a `column_count` reject).
    pub header_fields: usize,
    /// For each of [`Source::columns`], its field position in a row.
    pub column_positions: Vec<usize>,
    /// The data (everything after the header) cut into ranges, in file order.
    pub chunks: Vec<ByteRange>,
}

impl SourcePlan {
    /// Bytes of data (after the header) in the input.
    pub fn data_bytes(&self) -> u64 {
        self.chunks.iter().map(|c| c.end - c.start).sum()
    }
}

/// The shard count for a run that names none, from its planned inputs'
/// size (see [`crate::shard::default_num_shards`]).
pub fn default_num_shards_for(plans: &[SourcePlan]) -> u32 {
    crate::shard::default_num_shards(plans.iter().map(SourcePlan::data_bytes).sum())
}

/// What partitioning one chunk found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkStats {
    /// The source.
    pub source: Option<Source>,
    /// Index of the chunk in its [`SourcePlan::chunks`].
    pub chunk: usize,
    /// Rows (non-blank records after the header) in the chunk.
    pub rows_read: u64,
    /// Rows that passed validation (duplicates are found later, in the shard step).
    pub rows_valid: u64,
    /// Rows rejected here, routable or not.
    pub rows_rejected: u64,
    /// Of those, rows with no valid customer id (or a wrong field count), which no shard owns.
    pub rows_unroutable: u64,
    /// Rejects by reason.
    pub rejects_by_reason: ReasonCounts,
}

/// What the partition step produced: the plans and every chunk's stats.
/// Written to `work/partition.json` by [`write_partition_summary`]; the shard
/// and aggregate steps read it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionSummary {
    /// Number of shards the parts were routed to.
    pub num_shards: u32,
    /// One plan per source, in [`Source::ALL`] order.
    pub plans: Vec<SourcePlan>,
    /// Stats of every chunk, per source in [`Source::ALL`] order.
    pub chunks: Vec<Vec<ChunkStats>>,
}

const MANIFEST_FILE: &str = "partition.json";
const SCAN_BLOCK: usize = 1 << 20;

/// Plans one source of `data_dir`: reads its header and cuts its data into at
/// most `max_chunks` ranges of about equal size.
pub fn plan_source(data_dir: &Location, source: Source, max_chunks: usize) -> Result<SourcePlan> {
    plan_source_sized(data_dir, source, |_| max_chunks)
}

/// [`plan_source`] with the number of chunks chosen from the file's length.
pub fn plan_source_sized(
    data_dir: &Location,
    source: Source,
    chunks_for_len: impl Fn(u64) -> usize,
) -> Result<SourcePlan> {
    let path = data_dir.join(source.file_name());
    let (input, len) = open_input(&path)?;
    let scan = scan_boundaries(&input, len, chunks_for_len(len))?;
    let header_fields;
    let mut column_positions = Vec::new();
    {
        let bytes = input.read_range(scan.header.0..scan.header.1)?;
        let text = std::str::from_utf8(&bytes).map_err(|e| EtlError::InvalidUtf8 {
            path: path.clone(),
            offset: scan.header.0 + e.valid_up_to() as u64,
        })?;
        let mut scanner = RecordScanner::new(text, 1);
        scanner
            .next_record()
            .ok_or_else(|| EtlError::MissingHeader { path: path.clone() })?;
        header_fields = scanner.field_count();
        let names: Vec<&str> = (0..header_fields).map(|i| trim(scanner.field(i))).collect();
        for column in source.columns() {
            // The first column of a name wins when a header repeats it.
            let position = names
                .iter()
                .position(|name| name == column)
                .ok_or_else(|| EtlError::MissingColumn {
                    path: path.clone(),
                    column,
                })?;
            column_positions.push(position);
        }
    }
    Ok(SourcePlan {
        source,
        path,
        header_fields,
        column_positions,
        chunks: scan.chunks,
    })
}

/// Cuts the data of a CSV file (everything after its header) into at most `n`
/// ranges of about equal size at record boundaries, quote-aware.
pub fn plan_chunks(path: impl Into<Location>, n: usize) -> Result<Vec<ByteRange>> {
    let (input, len) = open_input(&path.into())?;
    Ok(scan_boundaries(&input, len, n)?.chunks)
}

struct BoundaryScan {
    /// Byte range of the header record's text.
    header: (u64, u64),
    chunks: Vec<ByteRange>,
}

/// Names a file or object that is not there as the missing input it is.
fn missing_input(path: &Location) -> impl Fn(EtlError) -> EtlError + '_ {
    move |err| {
        if err.is_not_found() {
            EtlError::MissingFile { path: path.clone() }
        } else {
            err
        }
    }
}

/// Opens an input and learns its length (where a missing object shows).
fn open_input(path: &Location) -> Result<(InputFile, u64)> {
    let missing = missing_input(path);
    let input = path.open().map_err(&missing)?;
    let len = input.size().map_err(&missing)?;
    Ok((input, len))
}

/// The sequential boundary scan; see the module docs.
fn scan_boundaries(input: &InputFile, len: u64, n: usize) -> Result<BoundaryScan> {
    let path = input.location();
    let mut file = input.sequential(0)?;
    let n = n.max(1) as u64;
    let mut buf = vec![0u8; SCAN_BLOCK];
    let mut base = 0u64; // absolute offset of buf[0]
    let mut lines = 0u64; // newlines seen so far
    let mut in_quotes = false;
    let mut pending_quote = false; // a `"` inside quotes ended the previous block
    let mut prev_last = b'\n';
    let mut record_start = 0u64;
    let mut header: Option<(u64, u64)> = None;
    let mut data_first_line = 0u64;
    let mut cuts: Vec<ByteRange> = Vec::new();
    let mut next_target = u64::MAX;
    let mut data_start = len;
    loop {
        let got = read_block(&mut *file, path, &mut buf)?;
        if got == 0 {
            break;
        }
        let block = &buf[..got];
        let mut i = 0;
        if base == 0 && block.starts_with(b"\xEF\xBB\xBF") {
            i = 3;
            record_start = 3;
        }
        if pending_quote {
            pending_quote = false;
            if block[0] == b'"' {
                i = 1;
            } else {
                in_quotes = false;
            }
        }
        while let Some(k) = memchr::memchr2(b'"', b'\n', &block[i..]) {
            let j = i + k;
            let abs = base + j as u64;
            i = j + 1;
            if block[j] == b'\n' {
                lines += 1;
                if in_quotes {
                    continue;
                }
                let prev = if j > 0 { block[j - 1] } else { prev_last };
                let blank = abs == record_start || (abs == record_start + 1 && prev == b'\r');
                if header.is_none() {
                    if !blank {
                        header = Some((record_start, abs));
                        data_start = abs + 1;
                        data_first_line = lines + 1;
                        next_target = target_after(data_start, data_start, len, n);
                    }
                } else if abs + 1 >= next_target && abs + 1 < len {
                    cuts.push(ByteRange {
                        start: abs + 1,
                        end: 0,
                        first_line: lines + 1,
                    });
                    next_target = target_after(abs + 1, data_start, len, n);
                }
                record_start = abs + 1;
            } else if in_quotes {
                match block.get(j + 1) {
                    Some(b'"') => i = j + 2,
                    Some(_) => in_quotes = false,
                    None => pending_quote = true,
                }
            } else {
                let prev = if j > 0 { block[j - 1] } else { prev_last };
                if abs == record_start || prev == b',' {
                    in_quotes = true;
                }
            }
        }
        prev_last = block[got - 1];
        base += got as u64;
    }
    let header = match header {
        Some(h) => h,
        None => {
            // A header without a final newline, or none at all.
            let tail_blank = record_start >= len || (record_start + 1 == len && prev_last == b'\r');
            if tail_blank {
                return Err(EtlError::MissingHeader { path: path.clone() });
            }
            data_first_line = lines + 2;
            (record_start, len)
        }
    };
    let mut chunks = vec![ByteRange {
        start: data_start,
        end: len,
        first_line: data_first_line,
    }];
    chunks.extend(cuts);
    for k in 0..chunks.len() {
        chunks[k].end = chunks.get(k + 1).map_or(len, |next| next.start);
    }
    Ok(BoundaryScan { header, chunks })
}

/// The first of the ideal cut points `data_start + k * (len - data_start) / n`
/// (0 < k < n) that lies after `pos`, or `u64::MAX`.
fn target_after(pos: u64, data_start: u64, len: u64, n: u64) -> u64 {
    (1..n)
        .map(|k| data_start + (len - data_start) * k / n)
        .find(|&t| t > pos)
        .unwrap_or(u64::MAX)
}

fn read_block(file: &mut dyn Read, path: &Location, buf: &mut [u8]) -> Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(got) => filled += got,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(EtlError::io("reading", path, e)),
        }
    }
    Ok(filled)
}

/// Partitions chunk `chunk` of `plan`: reads only its byte range, validates each
/// row, routes accepted and rejected rows to their shard's segments, and writes
/// the chunk's part file under `work_dir` (replacing any earlier attempt's).
///
/// Rows whose field count differs from the header's, or whose customer id is
/// empty or malformed, belong to no shard: they go to the part's unroutable
/// segment, which the aggregate step writes to `rejects/unroutable.csv`.
pub fn partition_chunk(
    plan: &SourcePlan,
    chunk: usize,
    num_shards: u32,
    work_dir: &Location,
) -> Result<ChunkStats> {
    let range = *plan
        .chunks
        .get(chunk)
        .ok_or_else(|| EtlError::InvalidArgument(format!("{} has no chunk {chunk}", plan.path)))?;
    let path = &plan.path;
    let bytes = path
        .open()
        .and_then(|input| input.read_range(range.start..range.end))
        .map_err(missing_input(path))?;
    let text = std::str::from_utf8(&bytes).map_err(|e| EtlError::InvalidUtf8 {
        path: path.clone(),
        offset: range.start + e.valid_up_to() as u64,
    })?;

    let source = plan.source;
    let mut router = ShardRouter::new(num_shards);
    // See `crate::part`: from a bucket, each shard's accepted rows keep
    // their text, so that no shard reads scattered rows of a large object;
    // to a bucket, the segments are compressed.
    let mut part = PartBuilder::new(num_shards, path.is_object(), work_dir.is_object());
    let mut stats = ChunkStats {
        source: Some(source),
        chunk,
        ..ChunkStats::default()
    };
    let customer_column = source
        .columns()
        .iter()
        .position(|c| *c == "customer_id")
        .expect("every source has a customer_id");
    let mut scanner = RecordScanner::new(text, range.first_line);
    while let Some(record) = scanner.next_record() {
        stats.rows_read += 1;
        let (shard, outcome) = if scanner.field_count() != plan.header_fields {
            (None, Err(RejectReason::ColumnCount))
        } else {
            let mut fields = [""; 8];
            for (field, &position) in fields.iter_mut().zip(&plan.column_positions) {
                *field = trim(scanner.field(position));
            }
            let fields = &fields[..plan.column_positions.len()];
            let shard = validate::routing_id(fields[customer_column])
                .map(|id| router.route(fields[customer_column], id.0));
            let outcome = match source {
                Source::Crm => validate::crm(fields).map(AcceptedRow::Crm),
                Source::Billing => validate::billing(fields).map(AcceptedRow::Billing),
                Source::Product => validate::product(fields).map(AcceptedRow::Product),
                Source::Support => validate::support(fields).map(AcceptedRow::Support),
            };
            (shard, outcome)
        };
        match (shard, outcome) {
            (Some(shard), Ok(row)) => {
                stats.rows_valid += 1;
                let origin = Origin {
                    line: record.line,
                    offset: range.start + record.offset as u64,
                    raw_len: record.raw.len() as u32,
                };
                part.push_accepted(shard, origin, record.raw, &row);
            }
            (shard, outcome) => {
                // A valid row always has a routable id, so `outcome` is an error here.
                let reason = outcome.err().unwrap_or(RejectReason::BadCustomerId);
                stats.rows_rejected += 1;
                stats.rejects_by_reason.add(reason);
                let (segment, rows) = match shard {
                    Some(shard) => &mut part.rejected[shard as usize],
                    None => {
                        stats.rows_unroutable += 1;
                        &mut part.unroutable
                    }
                };
                encode_rejected(segment, record.line, reason, record.raw);
                *rows += 1;
            }
        }
    }
    part.write(&part_path(work_dir, source, chunk), source, chunk)?;
    Ok(stats)
}

/// Writes the partition summary to `work_dir/partition.json`.
pub fn write_partition_summary(work_dir: &Location, manifest: &PartitionSummary) -> Result<()> {
    let json = serde_json::to_vec_pretty(manifest).expect("manifest serializes");
    work_dir.join(MANIFEST_FILE).write_atomically(&json)
}

impl PartitionSummary {
    /// Opens every part file of `source` in `work_dir`, in chunk order, and
    /// hands each to `f`: how the shard and aggregate steps read their
    /// segments.
    pub fn for_each_part(
        &self,
        work_dir: &Location,
        source: Source,
        mut f: impl FnMut(&PartReader) -> Result<()>,
    ) -> Result<()> {
        for chunk in 0..self.plan(source).chunks.len() {
            let part =
                PartReader::open(&part_path(work_dir, source, chunk), source, self.num_shards)?;
            f(&part)?;
        }
        Ok(())
    }

    /// Reads `work_dir/partition.json`.
    pub fn load(work_dir: &Location) -> Result<Self> {
        let path = work_dir.join(MANIFEST_FILE);
        let bytes = path.read_all()?;
        serde_json::from_slice(&bytes).map_err(|e| EtlError::bad_work_file(&path, e.to_string()))
    }

    /// The plan of `source`.
    pub fn plan(&self, source: Source) -> &SourcePlan {
        &self.plans[source.index()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Every range must start where the record scanner would start a record, on the right line.
    #[test]
    fn chunks_cut_at_record_boundaries_with_exact_lines() {
        let dir = tempfile::tempdir().unwrap();
        let mut text = String::from("\u{feff}a,b\n");
        for i in 0..200 {
            match i % 5 {
                0 => text.push_str(&format!("\"q{i}\nstill, quoted\",x\n")),
                1 => text.push_str(&format!("v{i},\"\"\"\n\"\"\"\r\n\n")),
                2 => text.push_str(&format!("x\"{i},y\"\n")),
                3 => text.push_str(&format!("\"a\"\"{i}\",\"b\"tail\n")),
                _ => text.push_str(&format!("p{i},q\r\n")),
            }
        }
        let path = write(dir.path(), "f.csv", &text);
        let body = &text[3..];
        let mut expected = Vec::new();
        let mut scanner = RecordScanner::new(body, 1);
        while let Some(r) = scanner.next_record() {
            expected.push((r.line, r.raw.to_string()));
        }
        for n in [1, 2, 3, 7, 50, 1000] {
            let chunks = plan_chunks(&path, n).unwrap();
            assert!(chunks.len() <= n && !chunks.is_empty());
            let mut got = vec![(1, "a,b".to_string())];
            for c in &chunks {
                let part = &text[c.start as usize..c.end as usize];
                let mut scanner = RecordScanner::new(part, c.first_line);
                while let Some(r) = scanner.next_record() {
                    got.push((r.line, r.raw.to_string()));
                }
            }
            assert_eq!(got, expected, "n = {n}");
        }
    }

    #[test]
    fn header_only_and_empty_files() {
        let dir = tempfile::tempdir().unwrap();
        let only = write(dir.path(), "only.csv", "a,b");
        assert_eq!(
            plan_chunks(&only, 4).unwrap(),
            vec![ByteRange {
                start: 3,
                end: 3,
                first_line: 2
            }]
        );
        let empty = write(dir.path(), "empty.csv", "\n\r\n");
        assert!(matches!(
            plan_chunks(&empty, 4),
            Err(EtlError::MissingHeader { .. })
        ));
        let missing = dir.path().join("missing.csv");
        assert!(matches!(
            plan_chunks(&missing, 4),
            Err(EtlError::MissingFile { .. })
        ));
    }
}

//! The part file: what the partition step hands to the shard step.
//!
//! One file per (source, chunk): `work/parts/<source>/chunk-NNNNN.part`. It
//! holds, for every shard, a segment of accepted rows (already validated and
//! typed, so the shard step never re-parses CSV) and a segment of rejected
//! rows, followed by one segment of unroutable rejects, and a footer indexing
//! the segments. A shard reads only its own two segments from each part.
//!
//! Layout (little endian): header `WEFTPART`, version u32, source u32,
//! num_shards u32, chunk u32, flags u32; the segments; the footer: per shard
//! `(offset, len, rows)` of the accepted, the rejected and the raw segment,
//! then `(offset, len, rows)` of the unroutable segment, then the footer's
//! offset (u64) and `WEFTEND\0`.
//!
//! Accepted rows carry their line and where their raw text is, so that a row
//! found to be a duplicate later can be written to the rejects table with
//! its raw text. On a local disk that is the byte offset in the input file
//! (read back with one `pread`), and the raw segments are empty: the raw
//! text of the 99 % of rows that are accepted never travels through the
//! work directory. When the inputs are in a bucket ([`KEEP_RAW`]), reading
//! scattered rows back from a large input object would cost a request each
//! (or, coalesced, the whole object), so each shard's raw
//! segment holds its accepted rows' text and the offset points into it: a
//! shard then reads only its own raw segments, and only for its duplicates.
//! When the work directory is in a bucket, every segment is
//! Snappy-compressed ([`COMPRESSED`]): the parts
//! are most of the bytes a run moves, and a store charges for each of them
//! in time; a local disk's page cache does not, so local parts stay plain.

use crate::calendar::Date;
use crate::contract::{RejectReason, RejectRecord, Segment, Source, Status};
use crate::error::{EtlError, Result};
use crate::location::Location;
use crate::storage::{InputFile, OutputFile};
use crate::validate::{BillingRow, CrmRow, CustomerId, ProductRow, SupportRow};
use bytes::Bytes;
use std::borrow::Cow;
use std::io::Write;
use std::ops::Range;

const MAGIC: &[u8; 8] = b"WEFTPART";
const END_MAGIC: &[u8; 8] = b"WEFTEND\0";
const VERSION: u32 = 2;
const HEADER_LEN: u64 = 28;
/// Header flag: the part's raw segments hold the accepted rows' text.
pub const KEEP_RAW: u32 = 1;
/// Header flag: every non-empty segment is compressed (Snappy's raw format).
pub const COMPRESSED: u32 = 2;
/// Footer entries per shard: accepted, rejected, raw.
const SHARD_SEGMENTS: usize = 3;

/// The footer's length for `num_shards` shards.
fn footer_len(num_shards: u32) -> u64 {
    (num_shards as u64 * SHARD_SEGMENTS as u64 + 1) * 24
}

/// Where an accepted row came from in its input file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    /// 1-based physical line of the row's first line.
    pub line: u64,
    /// Where the row's raw text is: its byte offset in the input file, or,
    /// in a part written with [`KEEP_RAW`], in its shard's raw segment.
    pub offset: u64,
    /// Length in bytes of the row's raw text (without line terminator).
    pub raw_len: u32,
}

/// A typed, accepted row of any source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AcceptedRow<'a> {
    /// crm.csv
    Crm(CrmRow<'a>),
    /// billing.csv
    Billing(BillingRow<'a>),
    /// product.csv
    Product(ProductRow<'a>),
    /// support.csv
    Support(SupportRow<'a>),
}

/// A rejected row as the partition step found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedRow<'a> {
    /// 1-based physical line of the row's first line.
    pub line: u64,
    /// Why it was rejected.
    pub reason: RejectReason,
    /// Raw row text without line terminator.
    pub raw: Cow<'a, str>,
}

/// Appends the encoding of an accepted row to `out`.
pub fn encode_accepted(out: &mut Vec<u8>, origin: Origin, row: &AcceptedRow<'_>) {
    put_u64(out, origin.line);
    put_u64(out, origin.offset);
    put_u32(out, origin.raw_len);
    match row {
        AcceptedRow::Crm(r) => {
            put_u32(out, r.customer.0);
            out.push(r.segment as u8);
            put_i32(out, r.signup_date.0);
            for s in [r.name, &r.email, r.company, r.country] {
                put_str(out, s);
            }
        }
        AcceptedRow::Billing(r) => {
            put_u32(out, r.customer.0);
            out.push(r.status as u8);
            put_i32(out, r.issued_at.0);
            put_i32(out, r.paid_at.map_or(i32::MIN, |d| d.0));
            put_u64(out, r.amount_cents as u64);
            put_str(out, r.invoice_id);
        }
        AcceptedRow::Product(r) => {
            put_u32(out, r.customer.0);
            put_u64(out, r.occurred_at as u64);
            put_str(out, r.event_id);
            put_str(out, r.feature);
        }
        AcceptedRow::Support(r) => {
            put_u32(out, r.customer.0);
            out.push(r.csat.unwrap_or(0));
            put_u64(out, r.opened_at as u64);
            put_u64(out, r.closed_at.map_or(i64::MIN, |t| t) as u64);
            put_str(out, r.ticket_id);
        }
    }
}

/// Appends the encoding of a rejected row to `out`.
pub fn encode_rejected(out: &mut Vec<u8>, line: u64, reason: RejectReason, raw: &str) {
    put_u64(out, line);
    out.push(reason.index() as u8);
    put_str(out, raw);
}

/// Decodes a segment of accepted rows of `source`.
pub fn decode_accepted<'a>(
    source: Source,
    mut bytes: &'a [u8],
    mut each: impl FnMut(Origin, AcceptedRow<'a>),
) -> Result<(), String> {
    let r = &mut bytes;
    while !r.is_empty() {
        let origin = Origin {
            line: get_u64(r)?,
            offset: get_u64(r)?,
            raw_len: get_u32(r)?,
        };
        let customer = CustomerId(get_u32(r)?);
        let row = match source {
            Source::Crm => {
                let segment = Segment::from_u8(get_u8(r)?).ok_or("bad segment")?;
                let signup_date = Date(get_i32(r)?);
                AcceptedRow::Crm(CrmRow {
                    customer,
                    segment,
                    signup_date,
                    name: get_str(r)?,
                    email: Cow::Borrowed(get_str(r)?),
                    company: get_str(r)?,
                    country: get_str(r)?,
                })
            }
            Source::Billing => {
                let status = Status::from_u8(get_u8(r)?).ok_or("bad status")?;
                let issued_at = Date(get_i32(r)?);
                let paid = get_i32(r)?;
                let amount_cents = get_u64(r)? as i64;
                AcceptedRow::Billing(BillingRow {
                    customer,
                    status,
                    issued_at,
                    paid_at: (paid != i32::MIN).then_some(Date(paid)),
                    amount_cents,
                    invoice_id: get_str(r)?,
                })
            }
            Source::Product => AcceptedRow::Product(ProductRow {
                customer,
                occurred_at: get_u64(r)? as i64,
                event_id: get_str(r)?,
                feature: get_str(r)?,
            }),
            Source::Support => {
                let csat = get_u8(r)?;
                let opened_at = get_u64(r)? as i64;
                let closed = get_u64(r)? as i64;
                AcceptedRow::Support(SupportRow {
                    customer,
                    csat: (csat != 0).then_some(csat),
                    opened_at,
                    closed_at: (closed != i64::MIN).then_some(closed),
                    ticket_id: get_str(r)?,
                })
            }
        };
        each(origin, row);
    }
    Ok(())
}

/// Decodes a segment of rejected rows.
pub fn decode_rejected<'a>(
    mut bytes: &'a [u8],
    mut each: impl FnMut(RejectedRow<'a>),
) -> Result<(), String> {
    let r = &mut bytes;
    while !r.is_empty() {
        let line = get_u64(r)?;
        let reason = RejectReason::from_index(get_u8(r)? as usize).ok_or("bad reason")?;
        let raw = Cow::Borrowed(get_str(r)?);
        each(RejectedRow { line, reason, raw });
    }
    Ok(())
}

/// Appends `source`'s rejected rows, a segment of `bytes`, to `out` as rows
/// of the rejects table; a malformed segment names the source's part folder.
pub fn collect_rejects<'a>(
    source: Source,
    bytes: &'a [u8],
    work_dir: &Location,
    out: &mut Vec<RejectRecord<'a>>,
) -> Result<()> {
    decode_rejected(bytes, |r| {
        out.push(RejectRecord {
            source,
            line: r.line,
            reason: r.reason,
            raw: r.raw,
        })
    })
    .map_err(|detail| EtlError::bad_work_file(parts_dir(work_dir, source), detail))
}

/// One segment's place in a part file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SegmentIndex {
    /// Byte offset in the part file.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
    /// Number of rows.
    pub rows: u64,
}

/// The location of the part file of `source`'s chunk `chunk` in `work_dir`.
pub fn part_path(work_dir: &Location, source: Source, chunk: usize) -> Location {
    parts_dir(work_dir, source).join(&format!("chunk-{chunk:05}.part"))
}

/// The folder (or prefix) of `source`'s part files in `work_dir`.
pub fn parts_dir(work_dir: &Location, source: Source) -> Location {
    work_dir.join(&format!("parts/{}", source.name()))
}

/// The rows a partition step routes, buffered per shard before the part file is written.
pub struct PartBuilder {
    /// Accepted rows per shard.
    pub accepted: Vec<(Vec<u8>, u64)>,
    /// Rejected (routable) rows per shard.
    pub rejected: Vec<(Vec<u8>, u64)>,
    /// The accepted rows' raw text per shard, when kept ([`KEEP_RAW`]).
    pub raw: Vec<(Vec<u8>, u64)>,
    /// Rejected rows without a valid customer id.
    pub unroutable: (Vec<u8>, u64),
    /// The header's flags.
    pub flags: u32,
}

impl PartBuilder {
    /// An empty builder for `num_shards` shards; `keep_raw` sets
    /// [`KEEP_RAW`], `compress` [`COMPRESSED`].
    pub fn new(num_shards: u32, keep_raw: bool, compress: bool) -> Self {
        let empty = || (0..num_shards).map(|_| (Vec::new(), 0)).collect();
        PartBuilder {
            accepted: empty(),
            rejected: empty(),
            raw: empty(),
            unroutable: (Vec::new(), 0),
            flags: if keep_raw { KEEP_RAW } else { 0 } | if compress { COMPRESSED } else { 0 },
        }
    }

    /// Adds an accepted row of `shard` (its raw text kept when asked).
    pub fn push_accepted(&mut self, shard: u32, mut origin: Origin, raw: &str, row: &AcceptedRow) {
        let shard = shard as usize;
        if self.flags & KEEP_RAW != 0 {
            let (text, rows) = &mut self.raw[shard];
            origin.offset = text.len() as u64;
            text.extend_from_slice(raw.as_bytes());
            *rows += 1;
        }
        let (segment, rows) = &mut self.accepted[shard];
        encode_accepted(segment, origin, row);
        *rows += 1;
    }

    /// Writes the part file atomically (see [`OutputFile`]: a retried
    /// partition step never leaves a half-written part behind).
    pub fn write(&self, path: &Location, source: Source, chunk: usize) -> Result<()> {
        let file = OutputFile::create_scratch(path)?;
        let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
        let mut header = Vec::with_capacity(HEADER_LEN as usize);
        header.extend_from_slice(MAGIC);
        put_u32(&mut header, VERSION);
        put_u32(&mut header, source.index() as u32);
        put_u32(&mut header, self.accepted.len() as u32);
        put_u32(&mut header, chunk as u32);
        put_u32(&mut header, self.flags);
        let mut footer = Vec::new();
        let mut offset = HEADER_LEN;
        let write_err = |e| EtlError::io("writing", path, e);
        out.write_all(&header).map_err(write_err)?;
        let segments = self
            .accepted
            .iter()
            .zip(&self.rejected)
            .zip(&self.raw)
            .flat_map(|((a, r), raw)| [a, r, raw])
            .chain(std::iter::once(&self.unroutable));
        let mut encoder = snap::raw::Encoder::new();
        for (bytes, rows) in segments {
            let compressed;
            let bytes = if self.flags & COMPRESSED != 0 && !bytes.is_empty() {
                compressed = encoder.compress_vec(bytes).map_err(|e| {
                    EtlError::bad_work_file(path, format!("compressing a segment: {e}"))
                })?;
                &compressed
            } else {
                bytes
            };
            out.write_all(bytes).map_err(write_err)?;
            put_u64(&mut footer, offset);
            put_u64(&mut footer, bytes.len() as u64);
            put_u64(&mut footer, *rows);
            offset += bytes.len() as u64;
        }
        put_u64(&mut footer, offset);
        footer.extend_from_slice(END_MAGIC);
        out.write_all(&footer).map_err(write_err)?;
        out.into_inner()
            .map_err(|e| write_err(e.into_error()))?
            .commit()
    }
}

/// An open part file with its footer read.
pub struct PartReader {
    input: InputFile,
    num_shards: u32,
    flags: u32,
    index: Vec<SegmentIndex>,
}

impl PartReader {
    /// Opens a part file written for `source` and `num_shards` shards: reads
    /// its header and its footer (two requests on an object store).
    pub fn open(path: &Location, source: Source, num_shards: u32) -> Result<Self> {
        let input = path.open()?;
        let bad = |detail: String| EtlError::bad_work_file(path, detail);
        // The footer's length follows from the shard count, so one read
        // fetches it with the file's tail (and, on a store, the length).
        let footer_len = footer_len(num_shards);
        let (tail, len) = input.read_tail(footer_len + 16)?;
        if len < HEADER_LEN + 16 {
            return Err(bad(format!("{len} bytes is too short")));
        }
        let header = input.read_range(0..HEADER_LEN)?;
        let end = &tail[tail.len() - 16..];
        let h = &mut &header[8..];
        let fields = (get_u32(h), get_u32(h), get_u32(h));
        let flags = get_u32(&mut &header[24..]).unwrap_or(0);
        if &header[..8] != MAGIC || &end[8..] != END_MAGIC {
            return Err(bad("not a part file".into()));
        }
        if fields != (Ok(VERSION), Ok(source.index() as u32), Ok(num_shards)) {
            return Err(bad(format!(
                "written as (version, source, shards) = {fields:?}, expected ({VERSION}, {}, {num_shards})",
                source.index()
            )));
        }
        let footer_offset = u64::from_le_bytes(end[..8].try_into().expect("8 bytes"));
        if footer_offset + footer_len + 16 != len || (tail.len() as u64) < footer_len + 16 {
            return Err(bad("footer does not match the file length".into()));
        }
        let footer = &tail[tail.len() - 16 - footer_len as usize..tail.len() - 16];
        let index = footer
            .chunks_exact(24)
            .map(|c| SegmentIndex {
                offset: u64::from_le_bytes(c[0..8].try_into().expect("8 bytes")),
                len: u64::from_le_bytes(c[8..16].try_into().expect("8 bytes")),
                rows: u64::from_le_bytes(c[16..24].try_into().expect("8 bytes")),
            })
            .collect();
        Ok(PartReader {
            input,
            num_shards,
            flags,
            index,
        })
    }

    /// The index of shard `shard`'s accepted rows.
    pub fn accepted_index(&self, shard: u32) -> SegmentIndex {
        self.index[shard as usize * SHARD_SEGMENTS]
    }

    /// The index of shard `shard`'s rejected rows.
    pub fn rejected_index(&self, shard: u32) -> SegmentIndex {
        self.index[shard as usize * SHARD_SEGMENTS + 1]
    }

    /// The index of shard `shard`'s raw text, when the part keeps it.
    pub fn raw_index(&self, shard: u32) -> Option<SegmentIndex> {
        (self.flags & KEEP_RAW != 0).then(|| self.index[shard as usize * SHARD_SEGMENTS + 2])
    }

    /// The index of the unroutable rejects.
    pub fn unroutable_index(&self) -> SegmentIndex {
        self.index[self.num_shards as usize * SHARD_SEGMENTS]
    }

    /// Appends a segment's bytes (decompressed) to `out`.
    pub fn read_segment(&self, segment: SegmentIndex, out: &mut Vec<u8>) -> Result<()> {
        let bytes = self
            .input
            .read_range(segment.offset..segment.offset + segment.len)?;
        self.unpack(&bytes, out)
    }

    /// Whether the segments are compressed ([`COMPRESSED`]).
    pub fn is_compressed(&self) -> bool {
        self.flags & COMPRESSED != 0
    }

    /// The bytes at `ranges` (offsets within `segment`, a raw-text segment):
    /// one read of the whole segment when it is compressed, else ranged
    /// reads (on a store, rows close together in one request).
    pub fn read_raw(&self, segment: SegmentIndex, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        if !self.is_compressed() {
            let absolute: Vec<_> = ranges
                .iter()
                .map(|r| segment.offset + r.start..segment.offset + r.end)
                .collect();
            return self.input.read_ranges(&absolute);
        }
        let mut raw = Vec::new();
        self.read_segment(segment, &mut raw)?;
        let raw = Bytes::from(raw);
        ranges
            .iter()
            .map(|r| {
                let (start, end) = (r.start as usize, r.end as usize);
                (start <= end && end <= raw.len())
                    .then(|| raw.slice(start..end))
                    .ok_or_else(|| {
                        EtlError::bad_work_file(
                            self.location(),
                            "a raw text lies outside its segment",
                        )
                    })
            })
            .collect()
    }

    /// Appends a segment's stored bytes to `out`, decompressed if need be.
    pub fn unpack(&self, stored: &[u8], out: &mut Vec<u8>) -> Result<()> {
        if !self.is_compressed() || stored.is_empty() {
            out.extend_from_slice(stored);
            return Ok(());
        }
        unpack_into(stored, out).map_err(|e| EtlError::bad_work_file(self.location(), e))
    }

    /// Appends shard `shard`'s accepted and rejected segments to `accepted`
    /// and `rejected`: one read, as the two are adjacent in the file.
    pub fn read_shard(
        &self,
        shard: u32,
        accepted: &mut Vec<u8>,
        rejected: &mut Vec<u8>,
    ) -> Result<()> {
        let (a, r) = (self.accepted_index(shard), self.rejected_index(shard));
        if a.offset + a.len != r.offset {
            return Err(EtlError::bad_work_file(
                self.location(),
                format!("shard {shard}'s segments are not adjacent"),
            ));
        }
        let bytes = self.input.read_range(a.offset..r.offset + r.len)?;
        let (head, tail) = bytes.split_at(a.len as usize);
        self.unpack(head, accepted)?;
        self.unpack(tail, rejected)
    }

    /// Where the part file is.
    pub fn location(&self) -> &Location {
        self.input.location()
    }
}

/// Appends the Snappy-compressed (raw format) `stored` to `out`, decompressed.
fn unpack_into(stored: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
    let len =
        snap::raw::decompress_len(stored).map_err(|e| format!("bad compressed segment: {e}"))?;
    let start = out.len();
    out.resize(start + len, 0);
    snap::raw::Decoder::new()
        .decompress(stored, &mut out[start..])
        .map_err(|e| format!("bad compressed segment: {e}"))?;
    Ok(())
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_i32(out: &mut Vec<u8>, v: i32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_u32(out, s.len() as u32);
    out.extend_from_slice(s.as_bytes());
}

fn take<'a>(r: &mut &'a [u8], n: usize) -> Result<&'a [u8], String> {
    if r.len() < n {
        return Err(format!(
            "truncated record: wanted {n} bytes, {} left",
            r.len()
        ));
    }
    let (head, rest) = r.split_at(n);
    *r = rest;
    Ok(head)
}

fn get_u8(r: &mut &[u8]) -> Result<u8, String> {
    Ok(take(r, 1)?[0])
}

fn get_u32(r: &mut &[u8]) -> Result<u32, String> {
    Ok(u32::from_le_bytes(take(r, 4)?.try_into().expect("4 bytes")))
}

fn get_i32(r: &mut &[u8]) -> Result<i32, String> {
    Ok(i32::from_le_bytes(take(r, 4)?.try_into().expect("4 bytes")))
}

fn get_u64(r: &mut &[u8]) -> Result<u64, String> {
    Ok(u64::from_le_bytes(take(r, 8)?.try_into().expect("8 bytes")))
}

fn get_str<'a>(r: &mut &'a [u8]) -> Result<&'a str, String> {
    let len = get_u32(r)? as usize;
    std::str::from_utf8(take(r, len)?).map_err(|e| format!("string is not UTF-8: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A part written with each combination of flags reads back the same
    /// segments, rows and raw text.
    #[test]
    fn parts_round_trip_plain_compressed_and_with_raw_text() {
        let dir = tempfile::tempdir().unwrap();
        for (keep_raw, compress) in [(false, false), (true, false), (false, true), (true, true)] {
            let mut part = PartBuilder::new(3, keep_raw, compress);
            let crm = |id: u32, name: &'static str| {
                AcceptedRow::Crm(CrmRow {
                    customer: CustomerId(id),
                    segment: Segment::from_u8(0).unwrap(),
                    signup_date: Date(20_000),
                    name,
                    email: Cow::Borrowed("a@b.example"),
                    company: "Acme",
                    country: "DE",
                })
            };
            for (shard, id, raw) in [(0, 7, "7,first"), (2, 9, "9,second"), (2, 11, "11,third")] {
                let origin = Origin {
                    line: id as u64,
                    offset: 1_000 + id as u64,
                    raw_len: raw.len() as u32,
                };
                part.push_accepted(shard, origin, raw, &crm(id, "Ada"));
            }
            encode_rejected(&mut part.rejected[2].0, 4, RejectReason::BadDate, "x,y");
            part.rejected[2].1 += 1;
            encode_rejected(&mut part.unroutable.0, 5, RejectReason::BadCustomerId, ",z");
            part.unroutable.1 += 1;
            let path = Location::Local(dir.path().join(format!("p-{keep_raw}-{compress}.part")));
            part.write(&path, Source::Crm, 0).unwrap();

            let reader = PartReader::open(&path, Source::Crm, 3).unwrap();
            assert_eq!(reader.is_compressed(), compress);
            let (mut accepted, mut rejected) = (Vec::new(), Vec::new());
            reader.read_shard(2, &mut accepted, &mut rejected).unwrap();
            let mut rows = Vec::new();
            decode_accepted(Source::Crm, &accepted, |origin, row| {
                rows.push((origin, row))
            })
            .unwrap();
            assert_eq!(rows.len(), 2);
            assert_eq!(rows[1].1, crm(11, "Ada"));
            let mut reasons = Vec::new();
            decode_rejected(&rejected, |r| reasons.push((r.line, r.reason))).unwrap();
            assert_eq!(reasons, vec![(4, RejectReason::BadDate)]);
            let mut unroutable = Vec::new();
            reader
                .read_segment(reader.unroutable_index(), &mut unroutable)
                .unwrap();
            decode_rejected(&unroutable, |r| assert_eq!(r.raw, ",z")).unwrap();
            match reader.raw_index(2) {
                Some(segment) => {
                    assert!(keep_raw);
                    let mut raw = Vec::new();
                    reader.read_segment(segment, &mut raw).unwrap();
                    let texts: Vec<&str> = rows
                        .iter()
                        .map(|(o, _)| {
                            std::str::from_utf8(
                                &raw[o.offset as usize..o.offset as usize + o.raw_len as usize],
                            )
                            .unwrap()
                        })
                        .collect();
                    assert_eq!(texts, ["9,second", "11,third"]);
                }
                None => {
                    assert!(!keep_raw);
                    assert_eq!(rows[0].0.offset, 1_009, "the input offset is kept");
                }
            }
        }
    }
}

//! Writing the output tables: profiles as CSV or Parquet, rejects as CSV.

use crate::calendar::{push_date, push_timestamp};
use crate::contract::{Format, RejectRecord, Source};
use crate::error::{EtlError, Result};
use crate::location::Location;
use crate::profile::Profile;
use crate::storage::OutputFile;
use arrow_array::builder::{
    BooleanBuilder, Date32Builder, Decimal128Builder, Int64Builder, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use std::io::{BufWriter, Write};
use std::sync::Arc;

/// The profile table's columns, in the contract's order.
pub const PROFILE_COLUMNS: [&str; 26] = [
    "customer_id",
    "name",
    "email",
    "company",
    "country",
    "segment",
    "signup_date",
    "in_crm",
    "invoice_count",
    "paid_invoice_count",
    "lifetime_value",
    "outstanding_balance",
    "overdue_invoice_count",
    "last_payment_at",
    "event_count",
    "events_30d",
    "active_days_30d",
    "top_feature",
    "last_seen_at",
    "ticket_count",
    "open_ticket_count",
    "avg_csat",
    "avg_resolution_hours",
    "health_score",
    "tier",
    "sources",
];

/// The rejects table's header.
pub const REJECTS_HEADER: &str = "source,line,reason,raw\n";

/// Appends `field` to `out` as a CSV field, quoted when it holds a comma, quote, CR or LF.
pub fn push_csv_field(out: &mut Vec<u8>, field: &str) {
    if field
        .bytes()
        .any(|b| matches!(b, b',' | b'"' | b'\r' | b'\n'))
    {
        out.push(b'"');
        for part in field.split_inclusive('"') {
            out.extend_from_slice(part.as_bytes());
            if part.ends_with('"') {
                out.push(b'"');
            }
        }
        out.push(b'"');
    } else {
        out.extend_from_slice(field.as_bytes());
    }
}

/// Formats an amount in hundredths as `12.50`.
pub fn format_hundredths(value: i128) -> String {
    format!("{}.{:02}", value / 100, value % 100)
}

/// Formats a value in tenths as `3.0`.
pub fn format_tenths(value: i128) -> String {
    format!("{}.{}", value / 10, value % 10)
}

/// Where profiles go, one at a time, in customer_id order.
pub trait ProfileSink {
    /// Writes one profile.
    fn write(&mut self, profile: &Profile<'_>) -> Result<()>;
    /// Pushes what is buffered through to the disk or the store (the
    /// fault-injection hook uses it to leave a real half-written file or
    /// upload behind).
    fn flush(&mut self) -> Result<()>;
    /// Writes what is buffered and commits the output under its name.
    fn finish(self: Box<Self>) -> Result<()>;
}

/// A profile sink of `format` writing to `out`.
pub fn profile_sink(out: OutputFile, format: Format) -> Result<Box<dyn ProfileSink>> {
    Ok(match format {
        Format::Csv => Box::new(CsvProfileSink::create(out)?),
        Format::Parquet => Box::new(ParquetProfileSink::create(out)?),
    })
}

/// Writes profiles as CSV.
pub struct CsvProfileSink {
    out: BufWriter<OutputFile>,
    path: Location,
    line: Vec<u8>,
}

impl CsvProfileSink {
    /// Writes the header to `out`.
    pub fn create(out: OutputFile) -> Result<Self> {
        let path = out.location().clone();
        let mut out = BufWriter::with_capacity(1 << 20, out);
        let header = PROFILE_COLUMNS.join(",") + "\n";
        out.write_all(header.as_bytes())
            .map_err(|e| EtlError::io("writing", &path, e))?;
        Ok(CsvProfileSink {
            out,
            path,
            line: Vec::with_capacity(512),
        })
    }
}

/// Appends `v` in decimal.
fn push_uint(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

/// Appends `v` in decimal, zero-padded to `width` digits (`{v:0width$}`).
fn push_zero_padded(out: &mut Vec<u8>, v: u64, width: usize) {
    let mut buffer = itoa::Buffer::new();
    let digits = buffer.format(v);
    out.resize(out.len() + width.saturating_sub(digits.len()), b'0');
    out.extend_from_slice(digits.as_bytes());
}

/// Appends what [`format_hundredths`] returns, without a `String` for the
/// common, non-negative case.
fn push_hundredths(out: &mut Vec<u8>, value: i128) {
    match u64::try_from(value) {
        Ok(v) => {
            push_uint(out, v / 100);
            out.push(b'.');
            push_zero_padded(out, v % 100, 2);
        }
        Err(_) => out.extend_from_slice(format_hundredths(value).as_bytes()),
    }
}

/// Appends what [`format_tenths`] returns (see [`push_hundredths`]).
fn push_tenths(out: &mut Vec<u8>, value: i128) {
    match u64::try_from(value) {
        Ok(v) => {
            push_uint(out, v / 10);
            out.push(b'.');
            push_uint(out, v % 10);
        }
        Err(_) => out.extend_from_slice(format_tenths(value).as_bytes()),
    }
}

impl ProfileSink for CsvProfileSink {
    fn write(&mut self, p: &Profile<'_>) -> Result<()> {
        // Each field is written straight into the line (the line is the
        // writer's hottest loop: a `String` per field cost a tenth of it).
        // The field order is PROFILE_COLUMNS'.
        let line = &mut self.line;
        line.clear();
        let crm = p.crm.as_ref();
        line.extend_from_slice(b"cust_");
        push_zero_padded(line, p.customer.0 as u64, 8);
        for text in [
            crm.map(|c| c.name),
            crm.map(|c| &*c.email),
            crm.map(|c| c.company),
            crm.map(|c| c.country),
            crm.map(|c| c.segment.as_str()),
        ] {
            line.push(b',');
            push_csv_field(line, text.unwrap_or_default());
        }
        line.push(b',');
        if let Some(c) = crm {
            push_date(line, c.signup_date);
        }
        line.extend_from_slice(if crm.is_some() { b",true" } else { b",false" });
        for v in [p.invoice_count, p.paid_invoice_count] {
            line.push(b',');
            push_uint(line, v);
        }
        for v in [p.lifetime_value_cents, p.outstanding_balance_cents] {
            line.push(b',');
            push_hundredths(line, v);
        }
        line.push(b',');
        push_uint(line, p.overdue_invoice_count);
        line.push(b',');
        if let Some(d) = p.last_payment_at {
            push_date(line, d);
        }
        for v in [p.event_count, p.events_30d, p.active_days_30d as u64] {
            line.push(b',');
            push_uint(line, v);
        }
        line.push(b',');
        push_csv_field(line, p.top_feature.unwrap_or_default());
        line.push(b',');
        if let Some(t) = p.last_seen_at {
            push_timestamp(line, t);
        }
        for v in [p.ticket_count, p.open_ticket_count] {
            line.push(b',');
            push_uint(line, v);
        }
        line.push(b',');
        if let Some(v) = p.avg_csat_hundredths {
            push_hundredths(line, v as i128);
        }
        line.push(b',');
        if let Some(v) = p.avg_resolution_tenths {
            push_tenths(line, v);
        }
        line.push(b',');
        push_uint(line, p.health_score as u64);
        line.push(b',');
        line.extend_from_slice(p.tier.as_str().as_bytes());
        line.push(b',');
        let mut first = true;
        for source in Source::ALL {
            if p.sources[source.index()] {
                if !first {
                    line.push(b'|');
                }
                line.extend_from_slice(source.name().as_bytes());
                first = false;
            }
        }
        line.push(b'\n');
        self.out
            .write_all(line)
            .map_err(|e| EtlError::io("writing", &self.path, e))
    }

    fn flush(&mut self) -> Result<()> {
        self.out
            .flush()
            .map_err(|e| EtlError::io("writing", &self.path, e))?;
        self.out.get_mut().flush_through()
    }

    fn finish(self: Box<Self>) -> Result<()> {
        let path = self.path;
        self.out
            .into_inner()
            .map_err(|e| EtlError::io("writing", &path, e.into_error()))?
            .commit()
    }
}

/// The Arrow schema of the Parquet profile table (documented in the README).
pub fn profile_schema() -> SchemaRef {
    let utc_micros = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let mut fields = Vec::with_capacity(26);
    for (i, name) in PROFILE_COLUMNS.iter().enumerate() {
        let (data_type, nullable) = match *name {
            "customer_id" | "tier" | "sources" => (DataType::Utf8, false),
            "name" | "email" | "company" | "country" | "segment" | "top_feature" => {
                (DataType::Utf8, true)
            }
            "signup_date" | "last_payment_at" => (DataType::Date32, true),
            "in_crm" => (DataType::Boolean, false),
            "lifetime_value" | "outstanding_balance" => (DataType::Decimal128(38, 2), false),
            "avg_csat" => (DataType::Decimal128(3, 2), true),
            "avg_resolution_hours" => (DataType::Decimal128(18, 1), true),
            "last_seen_at" => (utc_micros.clone(), true),
            _ => (DataType::Int64, false),
        };
        debug_assert_eq!(PROFILE_COLUMNS[i], *name);
        fields.push(Field::new(*name, data_type, nullable));
    }
    Arc::new(Schema::new(fields))
}

const PARQUET_BATCH_ROWS: usize = 64 * 1024;

/// Column builders for one record batch.
struct ProfileColumns {
    text: [StringBuilder; 6], // customer_id, name, email, company, country, segment
    signup_date: Date32Builder,
    in_crm: BooleanBuilder,
    ints: [Int64Builder; 9],
    lifetime_value: Decimal128Builder,
    outstanding_balance: Decimal128Builder,
    last_payment_at: Date32Builder,
    top_feature: StringBuilder,
    last_seen_at: TimestampMicrosecondBuilder,
    avg_csat: Decimal128Builder,
    avg_resolution_hours: Decimal128Builder,
    tier: StringBuilder,
    sources: StringBuilder,
    rows: usize,
}

impl ProfileColumns {
    fn new() -> Self {
        let decimal = |p, s| {
            Decimal128Builder::new()
                .with_precision_and_scale(p, s)
                .expect("valid decimal type")
        };
        ProfileColumns {
            text: std::array::from_fn(|_| StringBuilder::new()),
            signup_date: Date32Builder::new(),
            in_crm: BooleanBuilder::new(),
            ints: std::array::from_fn(|_| Int64Builder::new()),
            lifetime_value: decimal(38, 2),
            outstanding_balance: decimal(38, 2),
            last_payment_at: Date32Builder::new(),
            top_feature: StringBuilder::new(),
            last_seen_at: TimestampMicrosecondBuilder::new().with_timezone("UTC"),
            avg_csat: decimal(3, 2),
            avg_resolution_hours: decimal(18, 1),
            tier: StringBuilder::new(),
            sources: StringBuilder::new(),
            rows: 0,
        }
    }

    fn push(&mut self, p: &Profile<'_>) {
        let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_string());
        let crm = p.crm.as_ref();
        self.text[0].append_value(p.customer.to_string());
        self.text[1].append_option(crm.and_then(|c| non_empty(c.name)));
        self.text[2].append_option(crm.and_then(|c| non_empty(&c.email)));
        self.text[3].append_option(crm.and_then(|c| non_empty(c.company)));
        self.text[4].append_option(crm.and_then(|c| non_empty(c.country)));
        self.text[5].append_option(crm.map(|c| c.segment.as_str()));
        self.signup_date.append_option(crm.map(|c| c.signup_date.0));
        self.in_crm.append_value(crm.is_some());
        // The Int64 columns, in table order.
        let ints = [
            p.invoice_count,
            p.paid_invoice_count,
            p.overdue_invoice_count,
            p.event_count,
            p.events_30d,
            p.active_days_30d as u64,
            p.ticket_count,
            p.open_ticket_count,
            p.health_score as u64,
        ];
        for (builder, value) in self.ints.iter_mut().zip(ints) {
            builder.append_value(value as i64);
        }
        self.lifetime_value.append_value(p.lifetime_value_cents);
        self.outstanding_balance
            .append_value(p.outstanding_balance_cents);
        self.last_payment_at
            .append_option(p.last_payment_at.map(|d| d.0));
        self.top_feature.append_option(p.top_feature);
        self.last_seen_at
            .append_option(p.last_seen_at.map(|t| t * 1_000_000));
        self.avg_csat
            .append_option(p.avg_csat_hundredths.map(i128::from));
        self.avg_resolution_hours
            .append_option(p.avg_resolution_tenths);
        self.tier.append_value(p.tier.as_str());
        self.sources.append_value(p.sources_text());
        self.rows += 1;
    }

    fn finish(&mut self, schema: &SchemaRef) -> RecordBatch {
        let [customer_id, name, email, company, country, segment] = &mut self.text;
        let [
            invoice_count,
            paid_invoice_count,
            overdue_invoice_count,
            event_count,
            events_30d,
            active_days_30d,
            ticket_count,
            open_ticket_count,
            health_score,
        ] = &mut self.ints;
        let columns: Vec<ArrayRef> = vec![
            Arc::new(customer_id.finish()),
            Arc::new(name.finish()),
            Arc::new(email.finish()),
            Arc::new(company.finish()),
            Arc::new(country.finish()),
            Arc::new(segment.finish()),
            Arc::new(self.signup_date.finish()),
            Arc::new(self.in_crm.finish()),
            Arc::new(invoice_count.finish()),
            Arc::new(paid_invoice_count.finish()),
            Arc::new(self.lifetime_value.finish()),
            Arc::new(self.outstanding_balance.finish()),
            Arc::new(overdue_invoice_count.finish()),
            Arc::new(self.last_payment_at.finish()),
            Arc::new(event_count.finish()),
            Arc::new(events_30d.finish()),
            Arc::new(active_days_30d.finish()),
            Arc::new(self.top_feature.finish()),
            Arc::new(self.last_seen_at.finish()),
            Arc::new(ticket_count.finish()),
            Arc::new(open_ticket_count.finish()),
            Arc::new(self.avg_csat.finish()),
            Arc::new(self.avg_resolution_hours.finish()),
            Arc::new(health_score.finish()),
            Arc::new(self.tier.finish()),
            Arc::new(self.sources.finish()),
        ];
        self.rows = 0;
        RecordBatch::try_new(schema.clone(), columns).expect("columns match the profile schema")
    }
}

/// Writes profiles as Parquet (Snappy-compressed, in record batches of 64Ki rows).
pub struct ParquetProfileSink {
    writer: ArrowWriter<OutputFile>,
    schema: SchemaRef,
    columns: ProfileColumns,
    path: Location,
}

impl ParquetProfileSink {
    /// Starts a Parquet file in `out`.
    pub fn create(out: OutputFile) -> Result<Self> {
        let path = out.location().clone();
        let schema = profile_schema();
        let props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .build();
        let writer = ArrowWriter::try_new(out, schema.clone(), Some(props)).map_err(|source| {
            EtlError::Parquet {
                path: path.clone(),
                source,
            }
        })?;
        Ok(ParquetProfileSink {
            writer,
            schema,
            columns: ProfileColumns::new(),
            path,
        })
    }

    fn flush_batch(&mut self) -> Result<()> {
        if self.columns.rows == 0 {
            return Ok(());
        }
        let batch = self.columns.finish(&self.schema);
        self.writer
            .write(&batch)
            .map_err(|source| EtlError::Parquet {
                path: self.path.clone(),
                source,
            })
    }
}

impl ProfileSink for ParquetProfileSink {
    fn write(&mut self, profile: &Profile<'_>) -> Result<()> {
        self.columns.push(profile);
        if self.columns.rows >= PARQUET_BATCH_ROWS {
            self.flush_batch()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        self.flush_batch()?;
        self.writer.flush().map_err(|source| EtlError::Parquet {
            path: self.path.clone(),
            source,
        })?;
        self.writer.inner_mut().flush_through()
    }

    fn finish(mut self: Box<Self>) -> Result<()> {
        self.flush_batch()?;
        let path = self.path.clone();
        self.writer
            .into_inner()
            .map_err(|source| EtlError::Parquet { path, source })?
            .commit()
    }
}

/// Writes a rejects table (header `source,line,reason,raw`) in the given
/// order, atomically (see [`OutputFile`]).
pub fn write_rejects(path: &Location, rejects: &[RejectRecord<'_>]) -> Result<()> {
    let mut out = BufWriter::with_capacity(1 << 16, OutputFile::create(path)?);
    let mut line = Vec::with_capacity(256);
    line.extend_from_slice(REJECTS_HEADER.as_bytes());
    for r in rejects {
        line.extend_from_slice(r.source.name().as_bytes());
        line.push(b',');
        push_uint(&mut line, r.line);
        line.push(b',');
        line.extend_from_slice(r.reason.code().as_bytes());
        line.push(b',');
        push_csv_field(&mut line, &r.raw);
        line.push(b'\n');
        out.write_all(&line)
            .map_err(|e| EtlError::io("writing", path, e))?;
        line.clear();
    }
    out.write_all(&line)
        .map_err(|e| EtlError::io("writing", path, e))?;
    out.into_inner()
        .map_err(|e| EtlError::io("writing", path, e.into_error()))?
        .commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_only_when_needed() {
        let mut out = Vec::new();
        for f in ["plain", "a,b", "say \"hi\"", "two\nlines", " padded ", ""] {
            push_csv_field(&mut out, f);
            out.push(b'|');
        }
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "plain|\"a,b\"|\"say \"\"hi\"\"\"|\"two\nlines\"| padded ||"
        );
    }

    /// The writer's byte pushers write what `core::fmt` would, at the edges too.
    #[test]
    fn pushed_numbers_dates_and_times_are_the_formatted_ones() {
        let text = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut out = Vec::new();
            f(&mut out);
            String::from_utf8(out).unwrap()
        };
        for v in [0i128, 5, 99, 100, 1250, 7, 123_456_789, -1, -1250, -5] {
            assert_eq!(
                text(&|o| push_hundredths(o, v)),
                format_hundredths(v),
                "{v}"
            );
            assert_eq!(text(&|o| push_tenths(o, v)), format_tenths(v), "{v}");
        }
        for (v, width) in [
            (0u64, 8),
            (42, 8),
            (12_345_678, 8),
            (123_456_789, 8),
            (7, 2),
        ] {
            assert_eq!(
                text(&|o| push_zero_padded(o, v, width)),
                format!("{v:0width$}")
            );
        }
        for seconds in [
            0i64,
            1,
            86_399,
            1_790_000_000,
            -1,
            -86_401,
            253_402_300_800, // year 10000
            -62_167_219_201, // year -1
        ] {
            let day = crate::calendar::Date(seconds.div_euclid(86_400) as i32);
            assert_eq!(text(&|o| push_date(o, day)), day.to_string(), "{seconds}");
            let (y, m, d) = day.ymd();
            let secs = seconds.rem_euclid(86_400);
            let want = format!(
                "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
                secs / 3600,
                secs / 60 % 60,
                secs % 60
            );
            assert_eq!(text(&|o| push_timestamp(o, seconds)), want, "{seconds}");
        }
    }

    #[test]
    fn decimals_have_fixed_fraction_digits() {
        assert_eq!(format_hundredths(0), "0.00");
        assert_eq!(format_hundredths(1250), "12.50");
        assert_eq!(format_hundredths(7), "0.07");
        assert_eq!(format_tenths(30), "3.0");
        assert_eq!(format_tenths(5), "0.5");
    }
}

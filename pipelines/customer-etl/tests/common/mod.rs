//! Shared helpers of the integration tests.
#![allow(dead_code)]

use customer_etl::{Date, Format, LocalOptions, RunSummary, run_local_with};
use std::path::{Path, PathBuf};

pub const HEADERS: [(&str, &str); 4] = [
    (
        "crm.csv",
        "customer_id,name,email,company,country,segment,signup_date",
    ),
    (
        "billing.csv",
        "invoice_id,customer_id,issued_at,amount,status,paid_at",
    ),
    (
        "product.csv",
        "event_id,customer_id,occurred_at,feature,duration_s",
    ),
    (
        "support.csv",
        "ticket_id,customer_id,opened_at,closed_at,priority,csat",
    ),
];

/// Writes a data dir; files not given get only the contract's header.
pub fn data_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, header) in HEADERS {
        let text = files
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, t)| t.to_string())
            .unwrap_or_else(|| format!("{header}\n"));
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    dir
}

pub fn as_of() -> Date {
    Date::parse("2026-10-01").unwrap()
}

pub fn run(
    data: &Path,
    shards: u32,
    chunks: usize,
    format: Format,
) -> (tempfile::TempDir, RunSummary) {
    let out = tempfile::tempdir().unwrap();
    let options = LocalOptions {
        chunks_per_file: Some(chunks),
        ..LocalOptions::default()
    };
    let summary = run_local_with(data, out.path(), shards, as_of(), format, &options).unwrap();
    (out, summary)
}

/// All profile rows (without headers) of a CSV run, in shard then file order.
pub fn profile_rows(out: &Path) -> Vec<String> {
    let mut rows = Vec::new();
    for path in sorted_files(&out.join("profiles")) {
        let text = std::fs::read_to_string(path).unwrap();
        rows.extend(split_records(&text).into_iter().skip(1));
    }
    rows
}

/// All reject rows (without headers) of a run, sorted.
pub fn reject_rows(out: &Path) -> Vec<String> {
    let mut rows = Vec::new();
    for path in sorted_files(&out.join("rejects")) {
        let text = std::fs::read_to_string(path).unwrap();
        rows.extend(split_records(&text).into_iter().skip(1));
    }
    rows.sort();
    rows
}

pub fn sorted_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

/// Splits CSV text into records (a newline inside quotes does not split).
pub fn split_records(text: &str) -> Vec<String> {
    let mut records = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for c in text.chars() {
        if c == '"' {
            quoted = !quoted;
        }
        if c == '\n' && !quoted {
            records.push(std::mem::take(&mut current));
        } else {
            current.push(c);
        }
    }
    if !current.is_empty() {
        records.push(current);
    }
    records
}

/// The profile row of `customer` as a map column -> value.
pub fn profile(out: &Path, customer: &str) -> std::collections::BTreeMap<String, String> {
    let header: Vec<String> = customer_etl::writer::PROFILE_COLUMNS
        .iter()
        .map(|s| s.to_string())
        .collect();
    for row in profile_rows(out) {
        let fields = parse_csv_row(&row);
        if fields[0] == customer {
            return header.iter().cloned().zip(fields).collect();
        }
    }
    panic!("no profile for {customer}");
}

/// Parses one CSV record into fields.
pub fn parse_csv_row(row: &str) -> Vec<String> {
    let mut scanner = customer_etl::csv_scan::RecordScanner::new(row, 1);
    scanner.next_record().unwrap();
    (0..scanner.field_count())
        .map(|i| scanner.field(i).to_string())
        .collect()
}

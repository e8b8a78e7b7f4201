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

/// The in-process local run of `data` with `shards` shards and default options.
pub fn local_reference(data: &Path, shards: u32, format: Format) -> tempfile::TempDir {
    let out = tempfile::tempdir().unwrap();
    run_local_with(
        data,
        out.path(),
        shards,
        as_of(),
        format,
        &LocalOptions::default(),
    )
    .unwrap();
    out
}

/// Every output file but the manifest (which names its own locations), by
/// path relative to the output directory.
pub fn output_files(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut files = std::collections::BTreeMap::new();
    for sub in ["profiles", "rejects"] {
        for path in sorted_files(&dir.join(sub)) {
            let name = path.file_name().unwrap().to_string_lossy();
            files.insert(format!("{sub}/{name}"), std::fs::read(&path).unwrap());
        }
    }
    files
}

/// The same profile and rejects files, byte for byte, as the reference run's.
pub fn assert_same_outputs(got: &Path, want: &Path) {
    let (got, want) = (output_files(got), output_files(want));
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "file names"
    );
    for (name, bytes) in &want {
        assert!(got[name] == *bytes, "{name} differs from the local run's");
    }
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

/// The test venv's Python (with pyarrow and duckdb): `$WEFT_PYTHON`, else
/// the repository's `.venv` (`scripts/test.sh` makes it).
pub fn venv_python() -> PathBuf {
    if let Some(p) = std::env::var_os("WEFT_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    assert!(
        venv.exists(),
        "no Python with pyarrow and duckdb at {}: run scripts/test.sh (it makes the venv) or set WEFT_PYTHON",
        venv.display()
    );
    venv
}

/// Files that exercise the contract's edges: a BOM, padded and reordered
/// headers, CRLF, blank lines, quoted commas, quotes and newlines, offsets
/// and fractions, window edges, duplicates and every kind of bad row.
pub const EDGE_CASE_FILES: [(&str, &str); 4] = [
    (
        "crm.csv",
        "\u{feff} segment ,customer_id,name,email,company,country,signup_date,extra\r\n\r\n\
         smb,cust_00000001,\"Lovelace, Ada\",ADA@Example.COM,\"The \"\"Best\"\" Co\",UK,2025-01-01,x\r\n\
         enterprise,cust_00000002,\"Two\nLines\",b@x.io,,,2025-02-30,y\r\n\
         smb,cust_00000001,dup,,,,2025-01-01,z\r\n\
         smb,  cust_00000003  ,  padded  ,,,,2024-12-31,\r\n",
    ),
    (
        "billing.csv",
        "invoice_id,customer_id,issued_at,amount,status,paid_at\n\
         i1,cust_00000004,2026-01-01,10.5,paid,2026-01-02\n\
         i1,cust_00000004,2026-01-01,10.5,paid,\n\
         i1,cust_00000004,2026-01-01,10.5,paid,2026-01-03\n\
         i2,cust_00000004,2026-01-01,0.07,open,\n\
         i3,cust_00000004,2026-01-01,3,overdue,2025-12-31\n\
         ,bad,2026-01-01,3,overdue,\n",
    ),
    (
        "product.csv",
        "event_id,customer_id,occurred_at,feature,duration_s\n\
         e1,cust_00000001,2026-09-02T00:00:00Z,b,1\n\n\n\
         e2,cust_00000001,2026-10-02T01:59:59.999+02:00,a,1\n\
         e3,cust_00000001,2026-09-01T23:59:59Z,a,2\n\
         e4,cust_00000001,2026-10-02T00:00:00Z,b,3\n\
         e5,cust_00000005,2026-09-15T12:00:00-11:00,\"x,y\",4\n",
    ),
    (
        "support.csv",
        "ticket_id,customer_id,opened_at,closed_at,priority,csat\n\
         t1,cust_00000001,2026-09-01T00:00:00Z,2026-09-01T00:03:00Z,low,1\n\
         t2,cust_00000001,2026-09-01T00:00:00Z,,high,2\n\
         t3,cust_00000001,2026-09-01T00:00:00Z,2026-08-31T00:00:00Z,high,9\n",
    ),
];

/// Panics, naming the first different line, when two outputs differ.
pub fn assert_same_text(what: &str, ours: &str, theirs: &str) {
    if ours != theirs {
        let first = ours.lines().zip(theirs.lines()).find(|(a, b)| a != b);
        panic!(
            "{what} differ ({} vs {} lines); first different line:\n  ours:   {:?}\n  theirs: {:?}",
            ours.lines().count(),
            theirs.lines().count(),
            first.map(|f| f.0),
            first.map(|f| f.1)
        );
    }
}

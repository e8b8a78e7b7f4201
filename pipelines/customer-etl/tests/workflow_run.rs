//! End to end, `customer-etl run`: the real binary starts an embedded weft
//! runtime (SQLite state), which starts every task attempt as a process of
//! the same binary. Outputs are compared with the in-process `run_local` on
//! the same data, byte for byte.

mod common;

use customer_etl::embedded::RUN_REPORT_FILE;
use customer_etl::{Format, LocalOptions, Manifest, run_local_with};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_customer-etl");

fn generated(customers: u64) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    customer_etl::generate(dir.path(), customers, 7).unwrap();
    dir
}

/// `customer-etl run` in `cwd` with `args`; panics with its output unless it succeeds.
fn run_cli(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let out = Command::new(BIN)
        .current_dir(cwd)
        .arg("run")
        .args(args)
        .env_remove(customer_etl::workflow::FAULT_CRASH_SHARD_ENV)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "customer-etl run {args:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn merged_line(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_string()
}

/// Every file under `dir/sub`, by name, with its bytes.
fn files(dir: &Path, sub: &str) -> Vec<(String, Vec<u8>)> {
    common::sorted_files(&dir.join(sub))
        .into_iter()
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect()
}

/// The manifest's counts reconcile: per file read = accepted + rejected,
/// shard profiles sum to the total, and the profile files hold that many rows.
fn assert_manifest_reconciles(out: &Path, shards: u32) -> Manifest {
    let manifest = Manifest::load(out).unwrap();
    assert_eq!(manifest.shards_processed, shards);
    assert_eq!(manifest.files.len(), 4);
    let mut read = 0;
    for (name, file) in &manifest.files {
        assert_eq!(
            file.rows_read,
            file.rows_accepted + file.rows_rejected,
            "{name}"
        );
        assert_eq!(file.rejects_by_reason.total(), file.rows_rejected, "{name}");
        read += file.rows_read;
    }
    assert_eq!(manifest.rows_read, read);
    assert_eq!(
        manifest.rows_read,
        manifest.rows_accepted + manifest.rows_rejected
    );
    let per_shard: u64 = manifest.shards.iter().map(|s| s.profiles).sum();
    assert_eq!(per_shard, manifest.profiles_generated);
    // Rejects files hold every rejected row.
    assert_eq!(
        common::reject_rows(out).len() as u64,
        manifest.rows_rejected
    );
    manifest
}

/// Customer ids of a CSV run, each shard's file in order.
fn customer_ids(out: &Path) -> Vec<String> {
    common::profile_rows(out)
        .iter()
        .map(|row| row.split(',').next().unwrap().to_string())
        .collect()
}

/// `customer-etl run` on `data` into `work/out` with `shards`; checks that
/// the output is byte for byte `run_local`'s, that the manifest reconciles
/// and that every customer is in exactly one profile row.
fn run_and_check(
    data: &Path,
    work: &Path,
    shards: u32,
    env: &[(&str, &str)],
) -> (PathBuf, Output, Manifest) {
    let out = work.join("out");
    let shards_text = shards.to_string();
    let args = [
        "--data-dir",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--shards",
        &shards_text,
    ];
    let run = run_cli(work, &args, env);
    let want = common::local_reference(data, shards, Format::Csv);
    common::assert_same_outputs(&out, want.path());
    let manifest = assert_manifest_reconciles(&out, shards);
    let ids = customer_ids(&out);
    assert_eq!(ids.len() as u64, manifest.profiles_generated);
    assert_eq!(ids.iter().collect::<BTreeSet<_>>().len(), ids.len());
    (out, run, manifest)
}

#[test]
fn run_writes_what_run_local_writes_and_the_manifest_reconciles() {
    let data = generated(2_000);
    let work = tempfile::tempdir().unwrap();
    let (out, run, manifest) = run_and_check(data.path(), work.path(), 6, &[]);
    let line = merged_line(&run);
    let prefix = format!(
        "Merged {} enriched profiles across 6 shards in ",
        manifest.profiles_generated
    );
    assert!(
        line.starts_with(&prefix) && line.ends_with('s'),
        "unexpected line: {line}"
    );
    // The work directory is gone; the runtime's state and run report stay.
    assert!(!out.join(".work").exists());
    let report: Vec<Value> =
        serde_json::from_slice(&std::fs::read(out.join(".weft").join(RUN_REPORT_FILE)).unwrap())
            .unwrap();
    let count = |task: &str| report.iter().filter(|r| r["task"] == task).count();
    assert_eq!(count("merge_customer_data"), 1);
    assert_eq!(count("process_shard"), 6);
    assert!(count("partition_chunk") >= 4);
    assert!(
        report
            .iter()
            .all(|r| r["attempts"] == 1 && r["status"] == "completed")
    );
}

/// With no `--shards`, a run takes the tutorial's ten for a small input
/// and one shard per slice of input for a larger one (here the slice is
/// made small through its variable, so a small input is "larger"), in
/// `run` and `local` alike, with the output of that many shards.
#[test]
fn without_a_shard_count_a_large_input_gets_a_shard_per_slice() {
    let data = generated(2_000);
    let work = tempfile::tempdir().unwrap();
    let location = customer_etl::Location::Local(data.path().to_path_buf());
    let input: u64 = customer_etl::Source::ALL
        .iter()
        .map(|&s| {
            customer_etl::plan_source(&location, s, 1)
                .unwrap()
                .data_bytes()
        })
        .sum();
    let slice = 100_000;
    let want = customer_etl::shard::shards_for(input, slice);
    assert!(want > 10, "{input} bytes make {want} shards");
    let slice_env = [(customer_etl::shard::SHARD_INPUT_BYTES_ENV, "100000")];

    let out = work.path().join("out");
    let dirs = [
        "--data-dir",
        data.path().to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    run_cli(work.path(), &dirs, &slice_env);
    let reference = common::local_reference(data.path(), want, Format::Csv);
    common::assert_same_outputs(&out, reference.path());
    assert_manifest_reconciles(&out, want);

    let local_out = work.path().join("local");
    let local = Command::new(BIN)
        .args([
            "local",
            "--data-dir",
            data.path().to_str().unwrap(),
            "--out",
        ])
        .arg(&local_out)
        .envs(slice_env)
        .output()
        .unwrap();
    assert!(
        local.status.success(),
        "{}",
        String::from_utf8_lossy(&local.stderr)
    );
    assert_eq!(Manifest::load(&local_out).unwrap().shards_processed, want);

    // Without the variable, the same input keeps the default ten.
    let small = work.path().join("small");
    let dirs = [
        "--data-dir",
        data.path().to_str().unwrap(),
        "--out",
        small.to_str().unwrap(),
    ];
    run_cli(work.path(), &dirs, &[]);
    assert_eq!(Manifest::load(&small).unwrap().shards_processed, 10);
}

#[test]
fn a_shard_whose_process_crashes_mid_write_is_retried_with_no_duplicate_or_missing_customer() {
    let data = generated(1_500);
    let work = tempfile::tempdir().unwrap();
    let crash = [(customer_etl::workflow::FAULT_CRASH_SHARD_ENV, "2")];
    // Checks the output is the uninterrupted run's: every customer once.
    let (out, run, _) = run_and_check(data.path(), work.path(), 4, &crash);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains("process_shard (2) took 2 attempts"),
        "{stderr}"
    );
    let report: Vec<Value> =
        serde_json::from_slice(&std::fs::read(out.join(".weft").join(RUN_REPORT_FILE)).unwrap())
            .unwrap();
    let retried: Vec<&Value> = report.iter().filter(|r| r["attempts"] != 1).collect();
    assert_eq!(retried.len(), 1, "{report:#?}");
    let shard = retried[0];
    assert_eq!(shard["task"], "process_shard");
    assert_eq!(shard["attempts"], 2);
    assert_eq!(shard["status"], "completed");
    assert_eq!(shard["input"]["shard_id"], 2);
    assert!(
        shard["attempt_errors"][0]
            .as_str()
            .unwrap()
            .contains("SIGABRT"),
        "{shard}"
    );
    // No temporary file of the crashed attempt is left.
    let leftovers: Vec<PathBuf> = common::sorted_files(&out.join("profiles"))
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

const READ_PARQUET: &str = r#"
import json, sys
import pyarrow.parquet as pq
out = {"files": {}, "schema": None}
for path in sys.argv[1:]:
    table = pq.read_table(path)
    out["files"][path.rsplit("/", 1)[-1]] = table.num_rows
    out["schema"] = {f.name: str(f.type) for f in table.schema}
    if table.num_rows:
        row = table.slice(0, 1).to_pylist()[0]
        out["first"] = {k: type(v).__name__ for k, v in row.items()}
print(json.dumps(out))
"#;

#[test]
fn parquet_output_reads_back_in_pyarrow_with_typed_columns_and_the_csv_counts() {
    let data = generated(1_000);
    let work = tempfile::tempdir().unwrap();
    let (csv_out, pq_out) = (work.path().join("csv"), work.path().join("parquet"));
    let dir = data.path().to_str().unwrap();
    for (out, format) in [(&csv_out, "csv"), (&pq_out, "parquet")] {
        let out = out.to_str().unwrap();
        let args = [
            "--data-dir",
            dir,
            "--out",
            out,
            "--shards",
            "3",
            "--format",
            format,
        ];
        run_cli(work.path(), &args, &[]);
    }
    let parquet_files = common::sorted_files(&pq_out.join("profiles"));
    assert_eq!(parquet_files.len(), 3);
    let out = Command::new(common::venv_python())
        .arg("-c")
        .arg(READ_PARQUET)
        .args(&parquet_files)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pyarrow failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let read: Value = serde_json::from_slice(&out.stdout).unwrap();
    let schema = &read["schema"];
    for (column, ty) in [
        ("customer_id", "string"),
        ("in_crm", "bool"),
        ("signup_date", "date32[day]"),
        ("invoice_count", "int64"),
        ("lifetime_value", "decimal128(38, 2)"),
        ("avg_csat", "decimal128(3, 2)"),
        ("avg_resolution_hours", "decimal128(18, 1)"),
        ("last_seen_at", "timestamp[us, tz=UTC]"),
        ("health_score", "int64"),
        ("tier", "string"),
    ] {
        assert_eq!(schema[column], ty, "column {column}: {schema}");
    }
    assert_eq!(schema.as_object().unwrap().len(), 26);
    assert_eq!(read["first"]["lifetime_value"], "Decimal");
    assert_eq!(read["first"]["in_crm"], "bool");
    // Row counts per shard are the CSV run's.
    let csv_manifest = assert_manifest_reconciles(&csv_out, 3);
    let pq_manifest = assert_manifest_reconciles(&pq_out, 3);
    for shard in &csv_manifest.shards {
        let name = format!("shard-{:05}.parquet", shard.shard_id);
        assert_eq!(read["files"][&name], shard.profiles, "{name}");
    }
    assert_eq!(
        pq_manifest.profiles_generated,
        csv_manifest.profiles_generated
    );
    assert_eq!(files(&pq_out, "rejects"), files(&csv_out, "rejects"));
}

#[test]
fn a_bad_data_dir_is_a_clear_error_and_a_failing_exit() {
    let data = generated(50);
    let work = tempfile::tempdir().unwrap();
    let fail = |dir: &Path| {
        let out = Command::new(BIN)
            .current_dir(work.path())
            .args(["run", "--shards", "2", "--out", "out", "--data-dir"])
            .arg(dir)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{dir:?} did not fail");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = fail(&work.path().join("nowhere"));
    assert!(
        err.contains("nowhere") && err.contains("does not exist"),
        "{err}"
    );

    std::fs::remove_file(data.path().join("support.csv")).unwrap();
    let err = fail(data.path());
    assert!(
        err.contains("support.csv") && err.contains("is missing"),
        "{err}"
    );

    std::fs::write(
        data.path().join("support.csv"),
        "ticket_id,customer_id,opened_at,closed_at,priority\n",
    )
    .unwrap();
    let err = fail(data.path());
    assert!(
        err.contains("support.csv") && err.contains("no column `csat`"),
        "{err}"
    );
}

#[test]
fn run_without_a_data_dir_generates_the_sample_and_merges_1000_customers() {
    let work = tempfile::tempdir().unwrap();
    let run = run_cli(work.path(), &[], &[]);
    assert!(work.path().join("sample_data/crm.csv").is_file());
    let line = merged_line(&run);
    assert!(
        line.starts_with("Merged ") && line.contains(" enriched profiles across 10 shards in "),
        "{line}"
    );
    let manifest = assert_manifest_reconciles(&work.path().join("out"), 10);
    // The fixed-seed sample: 1,000 customers, each with a profile.
    assert_eq!(manifest.profiles_generated, 1_000);
    // A second run reuses the sample and replaces the output.
    run_cli(work.path(), &["--shards", "5"], &[]);
    let again = assert_manifest_reconciles(&work.path().join("out"), 5);
    assert_eq!(again.profiles_generated, manifest.profiles_generated);
    assert_eq!(
        common::sorted_files(&work.path().join("out/profiles")).len(),
        5
    );
}

#[test]
fn the_tutorials_every_shard_reads_all_design_gives_the_same_output() {
    let data = generated(800);
    let want = common::local_reference(data.path(), 5, Format::Csv);
    let naive = tempfile::tempdir().unwrap();
    let options = LocalOptions {
        every_shard_reads_all: true,
        ..LocalOptions::default()
    };
    run_local_with(
        data.path(),
        naive.path(),
        5,
        common::as_of(),
        Format::Csv,
        &options,
    )
    .unwrap();
    common::assert_same_outputs(naive.path(), want.path());
    let (got, want) = (
        Manifest::load(naive.path()).unwrap().summary(),
        Manifest::load(want.path()).unwrap().summary(),
    );
    assert_eq!(got.per_shard, want.per_shard);
    assert_eq!(
        (got.rows_read, got.rows_rejected),
        (want.rows_read, want.rows_rejected)
    );
}

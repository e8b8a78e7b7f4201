//! The benchmark's peer, the contract in DuckDB SQL (`bench/customer_etl.sql`,
//! run by `bench/duckdb_etl.py`), writes the pipeline's profile table byte
//! for byte, so the race in `scripts/bench.sh` is over the same work.

mod common;

use customer_etl::{Format, generate};
use std::path::Path;
use std::process::Command;

fn run_peer(data: &Path, out: &Path) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench/duckdb_etl.py");
    let output = Command::new(common::venv_python())
        .arg(&script)
        .arg(data)
        .arg(out)
        .arg("2026-10-01")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{} failed: {}\n{}",
        script.display(),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

fn assert_peer_matches(data: &Path) {
    let (ours, _) = common::run(data, 1, 3, Format::Csv);
    let peer = tempfile::tempdir().unwrap();
    let peer_csv = peer.path().join("profiles.csv");
    run_peer(data, &peer_csv);
    let ours = std::fs::read_to_string(ours.path().join("profiles/shard-00000.csv")).unwrap();
    let theirs = std::fs::read_to_string(&peer_csv).unwrap();
    assert!(ours.lines().count() > 1, "no profiles to compare");
    common::assert_same_text("DuckDB's profiles and the pipeline's", &ours, &theirs);
}

#[test]
fn duckdb_peer_writes_the_same_profiles_on_generated_data() {
    let data = tempfile::tempdir().unwrap();
    generate(data.path(), 3000, 2026).unwrap();
    assert_peer_matches(data.path());
}

#[test]
fn duckdb_peer_writes_the_same_profiles_on_the_edge_cases() {
    assert_peer_matches(common::data_dir(&common::EDGE_CASE_FILES).path());
}

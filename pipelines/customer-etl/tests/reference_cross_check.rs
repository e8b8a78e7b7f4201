//! The Rust pipeline and the independent Python reference
//! (`tests/reference/reference_etl.py`) must write byte-identical profiles and rejects.

mod common;

use customer_etl::{Format, generate};
use std::path::Path;
use std::process::Command;

fn run_reference(data: &Path, out: &Path, shards: u32) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference/reference_etl.py");
    let status = Command::new("python3")
        .arg(&script)
        .arg(data)
        .arg(out)
        .arg(shards.to_string())
        .arg("2026-10-01")
        .status()
        .unwrap_or_else(|e| {
            panic!(
                "this test needs python3 on PATH to run {}: {e}",
                script.display()
            )
        });
    assert!(status.success(), "the reference script failed: {status}");
}

fn assert_same_tree(rust: &Path, reference: &Path) {
    for dir in ["profiles", "rejects"] {
        let ours = common::sorted_files(&rust.join(dir));
        let theirs = common::sorted_files(&reference.join(dir));
        let names = |files: &[std::path::PathBuf]| -> Vec<_> {
            files
                .iter()
                .map(|f| f.file_name().unwrap().to_owned())
                .collect()
        };
        assert_eq!(names(&ours), names(&theirs), "{dir}: different files");
        for (a, b) in ours.iter().zip(&theirs) {
            let (a_text, b_text) = (
                std::fs::read_to_string(a).unwrap(),
                std::fs::read_to_string(b).unwrap(),
            );
            common::assert_same_text(
                &format!("{} and the reference's", a.display()),
                &a_text,
                &b_text,
            );
        }
    }
}

#[test]
fn generated_data_matches_the_reference() {
    let data = tempfile::tempdir().unwrap();
    generate(data.path(), 3000, 2026).unwrap();
    let (out, summary) = common::run(data.path(), 7, 3, Format::Csv);
    assert!(
        summary.rows_rejected > 50,
        "the generated data must hold bad rows"
    );
    let reference = tempfile::tempdir().unwrap();
    run_reference(data.path(), reference.path(), 7);
    assert_same_tree(out.path(), reference.path());
}

#[test]
fn edge_case_files_match_the_reference() {
    let data = common::data_dir(&common::EDGE_CASE_FILES);
    for (shards, chunks) in [(1, 1), (3, 4)] {
        let (out, _) = common::run(data.path(), shards, chunks, Format::Csv);
        let reference = tempfile::tempdir().unwrap();
        run_reference(data.path(), reference.path(), shards);
        assert_same_tree(out.path(), reference.path());
    }
}

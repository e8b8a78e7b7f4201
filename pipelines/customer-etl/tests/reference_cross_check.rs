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
            if a_text != b_text {
                let first = a_text.lines().zip(b_text.lines()).find(|(x, y)| x != y);
                panic!(
                    "{} differs from the reference; first different line:\n rust: {:?}\n  ref: {:?}",
                    a.display(),
                    first.map(|f| f.0),
                    first.map(|f| f.1)
                );
            }
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
    let data = common::data_dir(&[
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
    ]);
    for (shards, chunks) in [(1, 1), (3, 4)] {
        let (out, _) = common::run(data.path(), shards, chunks, Format::Csv);
        let reference = tempfile::tempdir().unwrap();
        run_reference(data.path(), reference.path(), shards);
        assert_same_tree(out.path(), reference.path());
    }
}

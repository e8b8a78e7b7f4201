//! End-to-end checks of the contract's rules on small hand-written files.

mod common;

use common::{data_dir, profile, reject_rows, run};
use customer_etl::{EtlError, Format, run_local};

const C: &str = "customer_id,name,email,company,country,segment,signup_date\n";
const B: &str = "invoice_id,customer_id,issued_at,amount,status,paid_at\n";
const P: &str = "event_id,customer_id,occurred_at,feature,duration_s\n";
const S: &str = "ticket_id,customer_id,opened_at,closed_at,priority,csat\n";

#[test]
fn every_reason_code_with_line_numbers() {
    let crm = format!(
        "{C}cust_00000001,a,,,,smb\n\
         cust_0000001,a,,,,smb,2025-01-01\n\
         ,a,,,,smb,2025-01-01\n\
         cust_00000001,a,,,,SMB,2025-01-01\n\
         cust_00000001,a,,,,smb,2025-1-01\n\
         cust_00000001,first,,,,smb,2025-01-01\n\
         cust_00000001,second,,,,smb,2025-01-01\n"
    );
    let billing = format!(
        "{B}i1,cust_00000002,2026-01-01,1.234,paid,2026-01-01\n\
         i2,cust_00000002,2026-01-01,1,paid,2025-12-31\n\
         i3,cust_00000002,2026-01-01,1,paid,\n"
    );
    let product = format!(
        "{P}e1,cust_00000003,2026-09-01 00:00:00Z,f,1\n\
         e2,cust_00000003,2026-09-01T00:00:00Z,f,1.0\n"
    );
    let support = format!(
        "{S}t1,cust_00000004,2026-09-01T00:00:00Z,,low,6\n\
         t2,cust_00000004,2026-09-02T00:00:00Z,2026-09-01T00:00:00Z,low,\n"
    );
    let data = data_dir(&[
        ("crm.csv", &crm),
        ("billing.csv", &billing),
        ("product.csv", &product),
        ("support.csv", &support),
    ]);
    let (out, summary) = run(data.path(), 3, 2, Format::Csv);
    let want = [
        "billing,2,bad_amount,\"i1,cust_00000002,2026-01-01,1.234,paid,2026-01-01\"",
        "billing,3,paid_before_issued,\"i2,cust_00000002,2026-01-01,1,paid,2025-12-31\"",
        "billing,4,missing_field,\"i3,cust_00000002,2026-01-01,1,paid,\"",
        "crm,2,column_count,\"cust_00000001,a,,,,smb\"",
        "crm,3,bad_customer_id,\"cust_0000001,a,,,,smb,2025-01-01\"",
        "crm,4,missing_field,\",a,,,,smb,2025-01-01\"",
        "crm,5,bad_enum,\"cust_00000001,a,,,,SMB,2025-01-01\"",
        "crm,6,bad_date,\"cust_00000001,a,,,,smb,2025-1-01\"",
        "crm,8,duplicate,\"cust_00000001,second,,,,smb,2025-01-01\"",
        "product,2,bad_timestamp,\"e1,cust_00000003,2026-09-01 00:00:00Z,f,1\"",
        "product,3,bad_integer,\"e2,cust_00000003,2026-09-01T00:00:00Z,f,1.0\"",
        "support,2,bad_csat,\"t1,cust_00000004,2026-09-01T00:00:00Z,,low,6\"",
        "support,3,closed_before_opened,\"t2,cust_00000004,2026-09-02T00:00:00Z,2026-09-01T00:00:00Z,low,\"",
    ];
    assert_eq!(reject_rows(out.path()), want);
    assert_eq!(summary.rows_rejected, 13);
    assert_eq!(
        summary.profiles_generated, 1,
        "only cust_00000001 has an accepted row"
    );
    assert_eq!(profile(out.path(), "cust_00000001")["name"], "first");
    let manifest = customer_etl::Manifest::load(out.path()).unwrap();
    for file in manifest.files.values() {
        assert_eq!(file.rows_read, file.rows_accepted + file.rows_rejected);
    }
    assert_eq!(manifest.files["crm"].rows_read, 7);
    assert_eq!(manifest.files["crm"].rows_accepted, 1);
    // Routable rejects live in their customer's shard file, unroutable ones in unroutable.csv.
    let unroutable = std::fs::read_to_string(out.path().join("rejects/unroutable.csv")).unwrap();
    assert_eq!(unroutable.lines().count(), 4, "{unroutable}");
}

#[test]
fn reason_precedence_is_column_order_then_cross_field_then_duplicate() {
    let billing = format!(
        "{B},cust_bad,2026-13-01,x,nope,\n\
         i1,cust_bad,2026-13-01,x,nope,\n\
         i1,cust_00000001,2026-13-01,x,nope,\n\
         i1,cust_00000001,2026-01-01,x,nope,\n\
         i1,cust_00000001,2026-01-01,1,nope,bad\n\
         i1,cust_00000001,2026-01-01,1,open,bad\n\
         i1,cust_00000001,2026-01-02,1,open,2026-01-01\n\
         i1,cust_00000001,2026-01-02,1,open,2026-01-02\n\
         i1,cust_00000001,2026-01-02,1,open,2026-01-01\n\
         i1,cust_00000001,2026-01-02,1,paid,2026-01-03\n"
    );
    let data = data_dir(&[("billing.csv", &billing)]);
    let (out, _) = run(data.path(), 1, 1, Format::Csv);
    let reasons: Vec<String> = reject_rows(out.path())
        .iter()
        .map(|r| {
            let f = common::parse_csv_row(r);
            format!("{}:{}", f[1], f[2])
        })
        .collect();
    let mut reasons = reasons;
    reasons.sort_by_key(|r| r.split(':').next().unwrap().parse::<u32>().unwrap());
    assert_eq!(
        reasons,
        [
            "2:missing_field",
            "3:bad_customer_id",
            "4:bad_date",
            "5:bad_amount",
            "6:bad_enum",
            "7:bad_date",
            "8:paid_before_issued",
            // line 9 is accepted
            "10:paid_before_issued",
            "11:duplicate",
        ]
    );
}

#[test]
fn a_rejected_earlier_row_does_not_make_a_duplicate() {
    let product = format!(
        "{P}e1,cust_00000001,2026-09-01T00:00:00Z,f,bad\n\
         e1,cust_00000001,2026-09-01T00:00:00Z,f,1\n\
         e1,cust_00000001,2026-09-01T00:00:00Z,g,2\n\
         e1,cust_00000002,2026-09-01T00:00:00Z,f,1\n"
    );
    let data = data_dir(&[("product.csv", &product)]);
    let (out, _) = run(data.path(), 2, 3, Format::Csv);
    let rejects = reject_rows(out.path());
    assert_eq!(rejects.len(), 2, "{rejects:?}");
    assert!(rejects[0].starts_with("product,2,bad_integer"));
    assert!(rejects[1].starts_with("product,4,duplicate"));
    assert_eq!(profile(out.path(), "cust_00000001")["top_feature"], "f");
    assert_eq!(profile(out.path(), "cust_00000002")["event_count"], "1");
}

#[test]
fn orphans_get_profiles_without_master_data() {
    let billing = format!(
        "{B}i1,cust_00000009,2026-01-01,12.5,paid,2026-01-05\ni2,cust_00000009,2026-01-01,12,refunded,\n"
    );
    let data = data_dir(&[("billing.csv", &billing)]);
    let (out, _) = run(data.path(), 4, 1, Format::Csv);
    let p = profile(out.path(), "cust_00000009");
    assert_eq!(p["in_crm"], "false");
    assert_eq!(p["name"], "");
    assert_eq!(p["segment"], "");
    assert_eq!(p["lifetime_value"], "12.50");
    assert_eq!(p["outstanding_balance"], "0.00");
    assert_eq!(p["last_payment_at"], "2026-01-05");
    assert_eq!(p["sources"], "billing");
    assert_eq!(p["avg_csat"], "");
    assert_eq!(p["last_seen_at"], "");
    // usage 0 + billing 30 + support 20 + satisfaction 5
    assert_eq!(
        (p["health_score"].as_str(), p["tier"].as_str()),
        ("55", "at_risk")
    );
}

#[test]
fn bom_crlf_blank_lines_quoted_newlines_reordered_and_extra_columns() {
    let crm = "\u{feff}signup_date, segment ,extra,customer_id,name,email,company,country\r\n\
               \r\n\
               2025-01-01,smb,x,cust_00000001,\"Ada\r\nLovelace\",A@B.COM,\"Acme, Inc.\",UK\r\n\
               \r\n\
               2025-01-01,smb,x,cust_00000001,dup,,,\r\n\
               2025-01-01,smb,x\r\n";
    let data = data_dir(&[("crm.csv", crm)]);
    let (out, _) = run(data.path(), 2, 3, Format::Csv);
    let p = profile(out.path(), "cust_00000001");
    assert_eq!(p["name"], "Ada\r\nLovelace");
    assert_eq!(p["email"], "a@b.com");
    assert_eq!(p["company"], "Acme, Inc.");
    assert_eq!(p["sources"], "crm");
    let rejects = reject_rows(out.path());
    assert_eq!(
        rejects,
        [
            "crm,6,duplicate,\"2025-01-01,smb,x,cust_00000001,dup,,,\"",
            "crm,7,column_count,\"2025-01-01,smb,x\""
        ]
    );
}

#[test]
fn header_only_files_give_no_rows() {
    let data = data_dir(&[(
        "crm.csv",
        "customer_id,name,email,company,country,segment,signup_date",
    )]);
    let (out, summary) = run(data.path(), 3, 2, Format::Csv);
    assert_eq!(
        (
            summary.profiles_generated,
            summary.rows_read,
            summary.shards_processed
        ),
        (0, 0, 3)
    );
    let header = std::fs::read_to_string(out.path().join("profiles/shard-00002.csv")).unwrap();
    assert!(header.starts_with("customer_id,name,") && header.lines().count() == 1);
}

#[test]
fn a_missing_file_or_column_fails_the_run_naming_it() {
    let data = data_dir(&[]);
    std::fs::remove_file(data.path().join("support.csv")).unwrap();
    let out = tempfile::tempdir().unwrap();
    let err = run_local(data.path(), out.path(), 2, common::as_of(), Format::Csv).unwrap_err();
    assert!(matches!(err, EtlError::MissingFile { .. }), "{err}");
    assert!(err.to_string().contains("support.csv"), "{err}");

    let data = data_dir(&[(
        "billing.csv",
        "invoice_id,customer,issued_at,amount,status,paid_at\n",
    )]);
    let err = run_local(data.path(), out.path(), 2, common::as_of(), Format::Csv).unwrap_err();
    assert!(
        err.to_string().contains("billing.csv") && err.to_string().contains("`customer_id`"),
        "{err}"
    );

    let data = data_dir(&[("product.csv", "\n\n")]);
    let err = run_local(data.path(), out.path(), 2, common::as_of(), Format::Csv).unwrap_err();
    assert!(
        matches!(err, EtlError::MissingHeader { .. }) && err.to_string().contains("product.csv"),
        "{err}"
    );
}

#[test]
fn window_time_zones_rounding_and_health() {
    let product = format!(
        "{P}e1,cust_00000001,2026-09-02T00:00:00Z,sso,1\n\
         e2,cust_00000001,2026-09-01T23:59:59.999Z,sso,1\n\
         e3,cust_00000001,2026-10-01T23:59:59Z,api,1\n\
         e4,cust_00000001,2026-10-02T00:00:00Z,api,1\n\
         e5,cust_00000001,2026-10-01T20:00:00-04:00,api,1\n"
    );
    let support = format!(
        "{S}t1,cust_00000001,2026-09-01T00:00:00Z,2026-09-01T00:15:00Z,low,4\n\
         t2,cust_00000001,2026-09-01T00:00:00+01:00,2026-09-01T00:00:00+01:00,low,5\n\
         t3,cust_00000001,2026-09-01T00:00:00Z,,low,5\n"
    );
    let data = data_dir(&[("product.csv", &product), ("support.csv", &support)]);
    let (out, _) = run(data.path(), 1, 1, Format::Csv);
    let p = profile(out.path(), "cust_00000001");
    assert_eq!(p["event_count"], "5");
    assert_eq!(
        p["events_30d"], "2",
        "window_start is in, window_end and 20:00-04:00 on 10-01 are out"
    );
    assert_eq!(p["active_days_30d"], "2");
    assert_eq!(p["top_feature"], "api");
    assert_eq!(p["last_seen_at"], "2026-10-02T00:00:00Z");
    assert_eq!(p["avg_csat"], "4.67", "14/3 = 4.666.. rounds half up");
    assert_eq!(p["avg_resolution_hours"], "0.1", "0.125 h -> 0.1");
    assert_eq!(p["open_ticket_count"], "1");
    // usage 4 + billing 30 + support 15 + satisfaction floor(10*11/12)=9
    assert_eq!(p["health_score"], "58");
    assert_eq!(p["tier"], "at_risk");
    assert_eq!(p["sources"], "product|support");
}

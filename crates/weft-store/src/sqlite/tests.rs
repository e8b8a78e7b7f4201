//! The SQLite store's own checks (the conformance suite is in tests/).

use super::runs::SUBTASK_BY_KEY;
use super::*;

/// The query plan SQLite chooses for `sql` on a fresh store's schema.
fn plan(sql: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("weft.db")).unwrap();
    let conn = store.readers.get();
    let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
    let n = stmt.parameter_count();
    let nulls = vec![rusqlite::types::Null; n];
    stmt.query_map(rusqlite::params_from_iter(nulls), |r| r.get::<_, String>(3))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap()
}

#[test]
fn a_subtask_is_found_by_its_key_without_reading_its_siblings() {
    // Searching the parent's children by parent alone made a fan-out of
    // N children read N^2/2 rows (1,000 children: half a million).
    let plan = plan(SUBTASK_BY_KEY);
    assert!(
        plan.iter().any(|step| step.contains("idempotency_key=?")),
        "the lookup must use an index on (parent_id, idempotency_key): {plan:?}"
    );
}

#[test]
fn the_next_due_run_is_read_off_an_index() {
    // Reading every pending row per claim made a fan-out of N children
    // read N^2/2 rows.
    let plan = plan(NEXT_DUE);
    assert!(
        plan.iter()
            .any(|step| step.contains("USING INDEX runs_pending_due")
                || step.contains("USING COVERING INDEX runs_pending_due")),
        "{plan:?}"
    );
    assert!(
        !plan.iter().any(|step| step.contains("TEMP B-TREE")),
        "no sort: {plan:?}"
    );
}

/// A fan-out's burst: every start is durable before its caller hears of
/// it, starts that queued together shared commits, and two starts with
/// one idempotency key in one commit are still one run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_starts_shares_commits_and_keeps_every_run() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weft.db");
    let store = SqliteStore::open(&path).unwrap();
    let new = |i: usize| NewRun {
        task_name: "square".into(),
        input: serde_json::json!([i]).into(),
        parent: None,
        idempotency_key: i.is_multiple_of(100).then(|| "once".to_string()),
        idempotency_created_at: None,
        task_version: None,
        trace_parent: None,
        at: Utc::now(),
    };
    let before = store.commits();
    let created = futures::future::join_all((0..500).map(|i| {
        let store = store.clone();
        async move { store.create_run(new(i)).await.unwrap() }
    }))
    .await;
    let commits = store.commits() - before;
    let ids: std::collections::BTreeSet<_> = created.iter().map(|c| c.run.id.clone()).collect();
    assert_eq!(ids.len(), 496, "500 starts, five of them with one key");
    assert!(
        commits < 500,
        "{commits} commits for 500 starts queued together"
    );
    drop(store);
    let store = SqliteStore::open(&path).unwrap();
    for id in &ids {
        assert!(
            store.get_run(id).await.unwrap().is_some(),
            "{id} was acknowledged"
        );
    }
}

#[test]
fn a_transaction_that_fails_or_panics_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let conn = Connection::open(dir.path().join("t.db")).unwrap();
    conn.execute_batch("CREATE TABLE t (x INTEGER)").unwrap();
    let insert = |conn: &Connection| conn.execute("INSERT INTO t VALUES (1)", []);
    let failed = in_transaction(&conn, "BEGIN IMMEDIATE", |c| -> TxResult<()> {
        insert(c)?;
        Err(StoreError::Corrupt("on purpose".into()).into())
    });
    assert!(failed.is_err());
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        in_transaction(&conn, "BEGIN IMMEDIATE", |c| -> TxResult<()> {
            insert(c)?;
            panic!("on purpose")
        })
    }));
    assert!(panicked.is_err());
    assert!(conn.is_autocommit(), "no transaction is left open");
    in_transaction(&conn, "BEGIN IMMEDIATE", |c| Ok(insert(c)?))
        .ok()
        .expect("commits");
    let n: i64 = conn
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 1, "only the committed row is there");
}

fn failure(code: i32, message: &str) -> rusqlite::Error {
    rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), Some(message.into()))
}

#[test]
fn errors_name_the_file_and_say_what_kind_of_fault() {
    let at = "/data/.weft/weft.db";
    let read_only = classify(
        failure(
            rusqlite::ffi::SQLITE_READONLY,
            "attempt to write a readonly database",
        ),
        at,
    );
    assert!(matches!(read_only, StoreError::ReadOnly { .. }));
    assert!(read_only.is_transient());
    let text = read_only.to_string();
    assert!(text.contains(at) && text.contains("read-only"), "{text}");
    let full = classify(
        failure(rusqlite::ffi::SQLITE_FULL, "database or disk is full"),
        at,
    );
    assert!(matches!(full, StoreError::Full { .. }) && full.to_string().contains(at));
    let busy = classify(
        failure(rusqlite::ffi::SQLITE_BUSY, "database is locked"),
        at,
    );
    assert!(matches!(busy, StoreError::Unavailable { .. }));
    let corrupt = classify(
        failure(
            rusqlite::ffi::SQLITE_CORRUPT,
            "database disk image is malformed",
        ),
        at,
    );
    assert!(matches!(corrupt, StoreError::Damaged { .. }));
    assert!(!corrupt.is_transient());
}

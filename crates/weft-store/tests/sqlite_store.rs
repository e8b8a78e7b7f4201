//! The SQLite store against a real database file: every conformance check,
//! and what only SQLite has.

mod conformance;

use std::sync::Arc;

use conformance::Backend;
use weft_store::{SqliteStore, Store, StoreError};

/// A database file in a temporary folder of its own.
struct Sqlite {
    dir: tempfile::TempDir,
}

impl Backend for Sqlite {
    async fn fresh() -> Self {
        Sqlite {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    async fn open(&self) -> Arc<dyn Store> {
        // A missing parent folder is created.
        Arc::new(SqliteStore::open(&self.dir.path().join("nested/weft.db")).unwrap())
    }
}

conformance_tests!(Sqlite);

#[tokio::test]
async fn a_database_from_a_newer_weft_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weft.db");
    drop(SqliteStore::open(&path).unwrap());
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch("PRAGMA user_version = 99")
        .unwrap();
    let err = SqliteStore::open(&path).err().unwrap();
    assert!(err.to_string().contains("newer weft"), "{err}");
}

#[test]
fn one_process_at_a_time_owns_a_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weft.db");
    let first = SqliteStore::open(&path).unwrap();
    let err = SqliteStore::open(&path).err().unwrap();
    assert!(
        matches!(err, StoreError::InUse { holder: Some(pid), .. } if pid == std::process::id()),
        "{err:?}"
    );
    assert!(err.to_string().contains("in use by another weft"), "{err}");
    // A clone holds the lock too; the last one to go releases it.
    let clone = first.clone();
    drop(first);
    assert!(SqliteStore::open(&path).is_err());
    drop(clone);
    SqliteStore::open(&path).unwrap();
}

#[tokio::test]
async fn a_database_of_the_first_schema_is_migrated_and_its_children_adopted() {
    use chrono::Utc;
    use weft_store::{Creation, NewRun, ParentRef};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weft.db");
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch(include_str!("fixtures/schema-v1.sql"))
        .unwrap();
    let store = SqliteStore::open(&path).unwrap();
    store.recover(Utc::now()).await.unwrap();
    let parent = store
        .start_attempt("trn-parent", Utc::now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(parent.current_attempt().unwrap().number, 2);
    for (x, label, id) in [(0, "zero", "trn-child-0"), (1, "one", "trn-child-1")] {
        let made = store
            .create_run(NewRun {
                task_name: "square".into(),
                input: serde_json::json!({"label": label, "x": x}).into(),
                parent: Some(ParentRef {
                    run_id: parent.id.clone(),
                    root_id: parent.id.clone(),
                    attempt: 2,
                }),
                idempotency_key: None,
                idempotency_created_at: None,
                task_version: None,
                trace_parent: None,
                at: Utc::now(),
            })
            .await
            .unwrap();
        assert_eq!((made.how, made.run.id.as_str()), (Creation::Adopted, id));
    }
    assert_eq!(
        store.get_run("trn-child-0").await.unwrap().unwrap().output,
        Some(serde_json::json!([0]).into())
    );
}

/// A database with some runs in it, closed cleanly (no WAL left).
async fn database_with_runs(path: &std::path::Path, runs: usize) {
    use chrono::Utc;
    use weft_store::NewRun;
    let store = SqliteStore::open(path).unwrap();
    for i in 0..runs {
        store
            .create_run(NewRun {
                task_name: "t".into(),
                input: serde_json::json!([i, "x".repeat(1000)]).into(),
                parent: None,
                idempotency_key: None,
                idempotency_created_at: None,
                task_version: None,
                trace_parent: None,
                at: Utc::now(),
            })
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn a_damaged_database_is_refused_by_name_and_never_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weft.db");
    database_with_runs(&path, 300).await;
    let whole = std::fs::read(&path).unwrap();
    assert!(whole.len() > 200_000, "{}", whole.len());

    let refused = |what: &str| {
        let before = std::fs::read(&path).unwrap();
        let err = SqliteStore::open(&path)
            .err()
            .unwrap_or_else(|| panic!("{what}: opened"));
        let text = err.to_string();
        assert!(matches!(err, StoreError::Damaged { .. }), "{what}: {err:?}");
        assert!(text.contains(&path.display().to_string()), "{what}: {text}");
        assert!(text.contains("Restore it from a backup"), "{what}: {text}");
        assert_eq!(
            std::fs::read(&path).unwrap(),
            before,
            "{what}: the file was changed"
        );
        text
    };

    // Cut short at a page boundary, as a copy that stopped half way.
    std::fs::write(&path, &whole[..whole.len() / 2 / 4096 * 4096]).unwrap();
    let text = refused("truncated");
    assert!(text.contains("cut short"), "{text}");

    // A page in the middle overwritten.
    let mut garbled = whole.clone();
    for b in &mut garbled[20 * 4096..21 * 4096] {
        *b = 0xA5;
    }
    std::fs::write(&path, &garbled).unwrap();
    let text = refused("garbled page");
    assert!(
        text.contains("quick_check") || text.contains("malformed"),
        "{text}"
    );

    // Not SQLite at all.
    std::fs::write(&path, b"my notes, not a database\n").unwrap();
    let text = refused("not a database");
    assert!(text.contains("not a SQLite database"), "{text}");

    // The intact file opens, with everything in it.
    std::fs::write(&path, &whole).unwrap();
    let store = SqliteStore::open(&path).unwrap();
    let runs = store
        .list_runs(&weft_store::RunFilter {
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(runs.len(), 300);
}

#[tokio::test]
async fn a_full_database_refuses_writes_by_name_keeps_reads_and_recovers() {
    use chrono::Utc;
    use weft_store::NewRun;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weft.db");
    let store = SqliteStore::open(&path).unwrap();
    let new = |i: usize| NewRun {
        task_name: "t".into(),
        input: serde_json::json!([i, "x".repeat(50_000)]).into(),
        parent: None,
        idempotency_key: None,
        idempotency_created_at: None,
        task_version: None,
        trace_parent: None,
        at: Utc::now(),
    };
    let kept = store.create_run(new(0)).await.unwrap().run;
    // As full as it is now: the next write that needs a page fails.
    store.set_size_limit(Some(0)).await.unwrap();
    let err = store.create_run(new(1)).await.unwrap_err();
    assert!(matches!(err, StoreError::Full { .. }), "{err:?}");
    assert!(err.is_transient());
    let text = err.to_string();
    assert!(
        text.contains(&path.display().to_string()) && text.contains("full"),
        "{text}"
    );
    // Reads carry on, and what was committed is intact.
    assert_eq!(store.get_run(&kept.id).await.unwrap().unwrap(), kept);
    // Space returns: writes succeed again, with no reopening.
    store.set_size_limit(None).await.unwrap();
    let later = store.create_run(new(2)).await.unwrap().run;
    assert_eq!(store.get_run(&later.id).await.unwrap().unwrap(), later);
}

#[test]
fn a_new_database_is_private_to_its_user() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join(".weft");
    let path = folder.join("weft.db");
    let store = SqliteStore::open(&path).unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&folder), 0o700);
    assert_eq!(mode(&path), 0o600);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    // A write, so that SQLite makes its other files.
    rt.block_on(store.create_session("s", "k", chrono::Utc::now()))
        .unwrap();
    for suffix in ["-wal", "-shm", ".lock"] {
        let file = folder.join(format!("weft.db{suffix}"));
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }
}

#[test]
fn a_planted_lock_symlink_is_not_followed_and_its_target_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weft.db");
    let target = dir.path().join("precious.txt");
    std::fs::write(&target, "keep me").unwrap();
    std::os::unix::fs::symlink(&target, dir.path().join("weft.db.lock")).unwrap();
    let err = SqliteStore::open(&path).err().unwrap();
    assert!(matches!(err, StoreError::Lock { .. }), "{err:?}");
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep me");
}

#[test]
fn two_paths_to_one_database_are_one_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weft.db");
    let first = SqliteStore::open(&path).unwrap();
    let link = dir.path().join("alias.db");
    std::os::unix::fs::symlink(&path, &link).unwrap();
    let err = SqliteStore::open(&link).err().unwrap();
    assert!(matches!(err, StoreError::InUse { .. }), "{err:?}");
    drop(first);
    SqliteStore::open(&link).unwrap();
}

/// A hard link is the same file under another name, maybe in another
/// folder: while one weft has it open, every other name is refused, and
/// the runs the first one holds are never shared with a second writer.
#[test]
fn a_hard_link_to_a_database_is_the_same_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("real").join("h1.db");
    let first = SqliteStore::open(&path).unwrap();
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let link = elsewhere.join("h2.db");
    std::fs::hard_link(&path, &link).unwrap();
    let err = SqliteStore::open(&link)
        .err()
        .expect("a second name of an open database is refused");
    assert!(
        matches!(err, StoreError::InUse { holder: Some(pid), .. } if pid == std::process::id()),
        "{err:?}"
    );
    assert!(err.to_string().contains("in use by another weft"), "{err}");
    drop(first);
    SqliteStore::open(&link).unwrap();
}

#[test]
fn a_device_is_not_a_database() {
    let err = SqliteStore::open(std::path::Path::new("/dev/null"))
        .err()
        .unwrap();
    assert!(err.to_string().contains("not a regular file"), "{err}");
    assert!(!std::path::Path::new("/dev/null-journal").exists());
}

/// A slow read (a text search over many log lines) does not hold up a
/// write: reads have connections of their own.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_long_log_search_does_not_hold_up_a_start() {
    use chrono::Utc;
    use weft_store::{LogQuery, NewLogLine, NewRun};
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(&dir.path().join("weft.db")).unwrap());
    for batch in 0..25 {
        let lines = (0..10_000)
            .map(|i| NewLogLine {
                run_id: format!("trn-{}", i % 97),
                task_name: "t".into(),
                attempt: 1,
                stream: "stdout",
                at: Utc::now(),
                message: format!(
                    "line {batch}-{i} of some ordinary task output that goes on for a while"
                ),
            })
            .collect();
        store.append_logs(lines).await.unwrap();
    }
    let searches: Vec<_> = (0..4)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .query_logs(&LogQuery {
                        text: vec!["no line says this".into()],
                        limit: 10,
                        ..Default::default()
                    })
                    .await
            })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    let started = store
        .create_run(NewRun {
            task_name: "t".into(),
            input: serde_json::json!([1]).into(),
            parent: None,
            idempotency_key: None,
            idempotency_created_at: None,
            task_version: None,
            trace_parent: None,
            at: Utc::now(),
        })
        .await
        .unwrap();
    let still_searching = searches.iter().filter(|s| !s.is_finished()).count();
    assert_eq!(
        still_searching, 4,
        "the start waited for a search to finish"
    );
    for s in searches {
        let found = s.await.unwrap();
        assert!(
            matches!(&found, Ok(lines) if lines.is_empty())
                || matches!(found, Err(StoreError::TooBroad(_))),
            "{found:?}"
        );
    }
    assert!(store.get_run(&started.run.id).await.unwrap().is_some());
}

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

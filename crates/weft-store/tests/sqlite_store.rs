//! The SQLite store against a real database file: every conformance check,
//! and what only SQLite has.

mod conformance;

use std::sync::Arc;

use conformance::Backend;
use weft_store::{SqliteStore, Store};

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

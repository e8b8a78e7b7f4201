//! The SQLite schema: the first version and every migration since, applied
//! in order, each in its own transaction (`PRAGMA user_version` counts
//! them).

use super::*;

/// Schema migrations, applied in order, each in its own transaction;
/// `PRAGMA user_version` counts them.
pub(super) const MIGRATIONS: &[Migration] = &[
    Migration::Sql(V1_SCHEMA),
    // Adoption that survives repeated crashes (see `crate::adoption`): who
    // last took each child, and an index on its input's fingerprint.
    Migration::Sql(
        "ALTER TABLE runs ADD COLUMN input_hash INTEGER;
         ALTER TABLE runs ADD COLUMN taken_by_attempt INTEGER;
         UPDATE runs SET taken_by_attempt = created_by_attempt WHERE parent_id IS NOT NULL;
         ALTER TABLE runs DROP COLUMN adopted;
         CREATE INDEX runs_adoption ON runs (parent_id, task_name, input_hash, seq)
             WHERE parent_id IS NOT NULL;",
    ),
    Migration::Code(fingerprint_existing_children),
    // The node that runs each attempt; claims take the oldest pending run.
    Migration::Sql(
        "ALTER TABLE attempts ADD COLUMN node_id TEXT;
         CREATE INDEX runs_pending ON runs (seq) WHERE status = 'pending';",
    ),
    // Root runs newest first, for the dashboard's list.
    Migration::Sql("CREATE INDEX runs_roots ON runs (seq) WHERE parent_id IS NULL;"),
    // A parent's child by its idempotency key (`SUBTASK_BY_KEY`), as the
    // PostgreSQL store's unique `runs_subtask_key` finds it.
    Migration::Sql(
        "CREATE INDEX runs_subtask_key ON runs (parent_id, idempotency_key)
             WHERE parent_id IS NOT NULL AND idempotency_key IS NOT NULL;",
    ),
    // When the next pending run is due (`NEXT_DUE`), without reading them all.
    Migration::Sql("CREATE INDEX runs_pending_due ON runs (not_before) WHERE status = 'pending';"),
    // The dashboard's sessions (see `Store::create_session`).
    Migration::Sql(
        "CREATE TABLE sessions (id TEXT PRIMARY KEY, key_tag TEXT NOT NULL,
                                created_at TEXT NOT NULL, expires_at TEXT NOT NULL);",
    ),
    // What each attempt's processes used (see `Store::record_usage`).
    Migration::Sql(
        "ALTER TABLE attempts ADD COLUMN peak_memory_bytes INTEGER;
         ALTER TABLE attempts ADD COLUMN cpu_time_ms INTEGER;",
    ),
    // The version a root run was pinned to (`workflow/task:version`),
    // which its subtasks inherit.
    Migration::Sql("ALTER TABLE runs ADD COLUMN task_version TEXT;"),
    // The `traceparent` a root run was started with, which its subtasks
    // inherit (their trace continues the client's).
    Migration::Sql("ALTER TABLE runs ADD COLUMN trace_parent TEXT;"),
];

/// One step of the schema's history.
pub(super) enum Migration {
    Sql(&'static str),
    /// A step SQL cannot express (hashing stored inputs).
    Code(fn(&Transaction<'_>) -> Result<(), TxError>),
}

pub(super) const V1_SCHEMA: &str = r#"
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE tasks (
    name TEXT PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    options TEXT NOT NULL,
    parameters TEXT,
    registered INTEGER NOT NULL DEFAULT 1,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE runs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    task_name TEXT NOT NULL,
    status TEXT NOT NULL,
    input TEXT NOT NULL,
    output TEXT,
    error TEXT,
    parent_id TEXT,
    root_id TEXT NOT NULL,
    created_by_attempt INTEGER,
    adopted INTEGER NOT NULL DEFAULT 0,
    idempotency_key TEXT,
    idempotency_created_at TEXT,
    created_at TEXT NOT NULL,
    started_at TEXT,
    completed_at TEXT,
    not_before TEXT
);
CREATE INDEX runs_parent ON runs (parent_id, seq);
CREATE INDEX runs_root ON runs (root_id, seq);
CREATE INDEX runs_task ON runs (task_name, seq);
CREATE INDEX runs_open ON runs (status) WHERE status IN ('pending', 'running');
CREATE INDEX runs_idempotency ON runs (idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE TABLE attempts (
    run_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    status TEXT NOT NULL,
    started_at TEXT NOT NULL,
    completed_at TEXT,
    error TEXT,
    output TEXT,
    interrupted INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (run_id, attempt)
);
CREATE TABLE logs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL,
    task_name TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    stream TEXT NOT NULL,
    at TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX logs_run ON logs (run_id, id);
"#;

/// Fills in the input fingerprint of children made before it was kept.
pub(super) fn fingerprint_existing_children(tx: &Transaction<'_>) -> Result<(), TxError> {
    let rows = tx
        .prepare("SELECT seq, input FROM runs WHERE parent_id IS NOT NULL AND input_hash IS NULL")?
        .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut update = tx.prepare("UPDATE runs SET input_hash = ?2 WHERE seq = ?1")?;
    for (seq, input) in rows {
        update.execute(params![
            seq,
            input_fingerprint(&parse_json(&input)?.to_value())
        ])?;
    }
    Ok(())
}

pub(super) fn migrate(conn: &Connection, location: &str) -> Result<()> {
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| classify(e, location))?;
    let known = MIGRATIONS.len() as i64;
    if version > known {
        return Err(StoreError::SchemaTooNew {
            location: location.to_string(),
            found: version,
            known,
        });
    }
    for (i, step) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let apply = || -> TxResult<()> {
            let tx = rusqlite::Transaction::new_unchecked(
                conn,
                rusqlite::TransactionBehavior::Immediate,
            )?;
            match step {
                Migration::Sql(sql) => tx.execute_batch(sql)?,
                Migration::Code(f) => f(&tx)?,
            }
            tx.pragma_update(None, "user_version", i as i64 + 1)?;
            tx.commit()?;
            Ok(())
        };
        apply().map_err(|e| e.into_store(location))?;
    }
    Ok(())
}

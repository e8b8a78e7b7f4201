//! Durable state of weft: registered tasks, task runs, their attempts and
//! their log lines, behind the [`Store`] trait.
//!
//! The runtime decides *what* happens to a run (the state machine lives in
//! `weft-runtime`); a store applies each transition atomically and durably
//! before the runtime acknowledges it to anyone. [`SqliteStore`] is the
//! embedded default; a PostgreSQL store for several nodes implements the
//! same trait.

mod model;
mod sqlite;

pub use model::*;
pub use sqlite::{Durability, SqliteStore};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use weft_protocol::socket::TaskDefinition;

/// What can go wrong in a store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("could not open the database at {path}")]
    Open {
        path: String,
        source: rusqlite::Error,
    },
    #[error(
        "the database at {path} was written by a newer weft (schema {found}, this build knows {known})"
    )]
    SchemaTooNew {
        path: String,
        found: i64,
        known: i64,
    },
    /// Another process has the database open: two runtimes on one file
    /// would both run its pending runs.
    #[error("the database at {path} is in use by another weft{}", holder.map(|pid| format!(" (pid {pid})")).unwrap_or_default())]
    InUse { path: String, holder: Option<u32> },
    #[error("could not lock the database at {path} ({lock_file})")]
    Lock {
        path: String,
        lock_file: String,
        source: std::io::Error,
    },
    #[error("store task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// Result of store operations.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The durable state behind a weft runtime.
///
/// Every method is one atomic transaction. Methods that move a run between
/// states are compare-and-set: they apply only when the run (or attempt) is
/// still in the state the caller expects, and report whether they did, so
/// two racing events (a callback and a timeout, say) cannot both win.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Replaces the registered task set; tasks no longer listed are kept
    /// (old runs refer to them) but marked unregistered.
    async fn register_tasks(
        &self,
        tasks: &[TaskDefinition],
        at: DateTime<Utc>,
    ) -> Result<Vec<TaskRecord>>;

    /// All tasks, registered first, by name.
    async fn list_tasks(&self) -> Result<Vec<TaskRecord>>;

    /// Creates a run, or returns the existing one its idempotency key names
    /// (or, for a relaunched parent, the child it adopts).
    async fn create_run(&self, new: NewRun) -> Result<CreatedRun>;

    /// One run with its attempts.
    async fn get_run(&self, id: &str) -> Result<Option<RunRecord>>;

    /// Runs, newest first.
    async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<RunRecord>>;

    /// Moves a pending run to running and opens its next attempt. `None`
    /// when the run is no longer pending (canceled meanwhile).
    async fn start_attempt(&self, run_id: &str, at: DateTime<Utc>) -> Result<Option<RunRecord>>;

    /// Closes a running attempt and moves its run on. `None` when the attempt
    /// had already ended (another event won).
    async fn finish_attempt(&self, end: AttemptEnd) -> Result<Option<RunRecord>>;

    /// Cancels a run and every descendant that has not ended.
    async fn cancel_run(&self, id: &str, at: DateTime<Utc>) -> Result<CancelOutcome>;

    /// After a crash or restart: closes attempts that were running as
    /// interrupted (they do not count against retries) and puts their runs
    /// back to pending. Returns every pending run, oldest first.
    async fn recover(&self, at: DateTime<Utc>) -> Result<Vec<RunRecord>>;

    /// For each run with children that have not ended, how many.
    async fn open_children(&self) -> Result<Vec<(String, u32)>>;

    /// Appends log lines.
    async fn append_logs(&self, lines: Vec<NewLogLine>) -> Result<()>;

    /// Log lines matching a query, oldest first.
    async fn query_logs(&self, query: &LogQuery) -> Result<Vec<LogLine>>;

    /// A small setting kept with the data (the start command, say).
    async fn get_meta(&self, key: &str) -> Result<Option<String>>;

    /// Sets a setting.
    async fn set_meta(&self, key: &str, value: &str) -> Result<()>;
}

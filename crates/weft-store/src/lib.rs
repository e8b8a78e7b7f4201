//! Durable state of weft: registered tasks, task runs, their attempts and
//! their log lines, behind the [`Store`] trait.
//!
//! The runtime decides *what* happens to a run (the state machine lives in
//! `weft-runtime`); a store applies each transition atomically and durably
//! before the runtime acknowledges it to anyone. [`SqliteStore`] is the
//! embedded default; a PostgreSQL store for several nodes implements the
//! same trait.

pub mod adoption;
mod error;
mod model;
mod sqlite;
mod state;

pub use error::StoreError;
pub use model::*;
pub use sqlite::{Durability, SqliteStore};
pub use state::{RunEvent, RunState, TRANSITIONS};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use weft_protocol::socket::TaskDefinition;

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

    /// Creates a run, or returns the existing one its idempotency key names,
    /// or, for a parent's attempt that runs again after a crash or a
    /// failure, the child an earlier attempt started with the same task and
    /// input: the rule is in [`adoption`], and every store applies it the
    /// same way, in the same transaction as the insert it replaces.
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

    /// Bytes of output stored for a run (its messages), over all attempts.
    async fn log_bytes(&self, run_id: &str) -> Result<u64>;

    /// A small setting kept with the data (the start command, say).
    async fn get_meta(&self, key: &str) -> Result<Option<String>>;

    /// Sets a setting.
    async fn set_meta(&self, key: &str, value: &str) -> Result<()>;
}

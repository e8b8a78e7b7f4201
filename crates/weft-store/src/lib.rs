//! Durable state of weft: registered tasks, task runs, their attempts and
//! their log lines, behind the [`Store`] trait.
//!
//! The runtime decides *what* happens to a run (the state machine lives in
//! `weft-runtime`); a store applies each transition atomically and durably
//! before the runtime acknowledges it to anyone. [`SqliteStore`] is the
//! embedded default; [`PgStore`] lets several nodes share PostgreSQL. Both
//! pass one conformance suite (`tests/conformance`).

pub mod adoption;
mod error;
mod model;
mod postgres;
mod rows;
mod sqlite;
mod state;

pub use error::StoreError;
pub use model::*;
pub use postgres::PgStore;
pub use postgres::redacted_url;
pub use sqlite::{Durability, SqliteStore};
pub use state::RunState;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use weft_protocol::socket::TaskDefinition;

/// Result of store operations.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The durable state behind a weft runtime, shared by every node of a
/// cluster that uses the same database.
///
/// Every method is one atomic transaction. Methods that move a run between
/// states are compare-and-set on the state the move starts from (see
/// [`RunState`]):
/// they apply only when the run (or attempt) is still where the caller
/// expects, and report whether they did, so two racing events (a callback
/// and a timeout, two nodes claiming one run) cannot both win.
///
/// A store handle acts for one node ([`Store::node`]): the attempts it
/// starts are that node's, and only that node's reports end them (a node
/// presumed dead that comes back is refused: fencing).
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The node this handle acts for, in its current incarnation (a node
    /// that fenced itself rejoins with a new one: [`Store::rejoin`]).
    fn node(&self) -> NodeId;

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
    /// same way, in the same transaction as the insert it replaces. A
    /// child asked for by a parent attempt that is no longer running is
    /// refused ([`StoreError::AttemptEnded`]).
    async fn create_run(&self, new: NewRun) -> Result<CreatedRun>;

    /// One run with its attempts.
    async fn get_run(&self, id: &str) -> Result<Option<RunRecord>>;

    /// Runs, newest first.
    async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<RunRecord>>;

    /// The pending runs claims will take next, oldest first, at most
    /// `limit` (read off the pending runs' index, whatever the store holds).
    async fn next_pending(&self, limit: u32) -> Result<Vec<PendingRun>>;

    /// How many runs were created, or ended, in each bucket of a time
    /// window, by task and state; buckets with none are left out.
    async fn count_runs(&self, query: &RunCountQuery) -> Result<Vec<RunCount>>;

    /// Moves this pending run to running with a new attempt of this node.
    /// `None` when the run is no longer pending (canceled, or claimed by
    /// another node). The runtime claims ([`Store::claim`]); this starts
    /// one named run, for the conformance checks and the store's benches.
    async fn start_attempt(&self, run_id: &str, at: DateTime<Utc>) -> Result<Option<RunRecord>>;

    /// Claims up to `limit` pending runs that are due, oldest first, each
    /// with a new attempt of this node; nodes claiming at once never get
    /// the same run and never wait on each other. Says, too, when the
    /// earliest pending run left is due.
    async fn claim(&self, limit: u32, at: DateTime<Utc>) -> Result<Claimed> {
        self.claim_within(limit, None, at).await
    }

    /// [`Store::claim`], the runs claimed also fitting in `memory` (each
    /// its task's memory, oldest first, stopping at the first that does
    /// not fit).
    async fn claim_within(
        &self,
        limit: u32,
        memory: Option<&MemoryLimit>,
        at: DateTime<Utc>,
    ) -> Result<Claimed>;

    /// Closes a running attempt of this node and moves its run on. `None`
    /// when the attempt had already ended (another event won, or another
    /// node took the run over).
    async fn finish_attempt(&self, end: AttemptEnd) -> Result<Option<RunRecord>>;

    /// Cancels a run and every descendant that has not ended.
    async fn cancel_run(&self, id: &str, at: DateTime<Utc>) -> Result<CancelOutcome>;

    /// After this node crashed or stopped: closes the attempts it was
    /// running as interrupted (they do not count against retries) and puts
    /// their runs back to pending. Returns those runs.
    async fn recover(&self, at: DateTime<Utc>) -> Result<Vec<RunRecord>>;

    /// For each of these runs that has children not yet ended, how many.
    async fn open_children(&self, parents: &[String]) -> Result<Vec<(String, u32)>>;

    /// Appends log lines.
    async fn append_logs(&self, lines: Vec<NewLogLine>) -> Result<()>;

    /// Log lines matching a query, oldest first.
    async fn query_logs(&self, query: &LogQuery) -> Result<Vec<LogLine>>;

    /// Bytes of output stored for a run (its messages), over all attempts.
    async fn log_bytes(&self, run_id: &str) -> Result<u64>;

    /// Keeps a dashboard session: `id` (a digest of the cookie, never the
    /// cookie), made for the API key tagged `key_tag`, until `expires_at`.
    /// Sessions that expired are forgotten on the way.
    async fn create_session(
        &self,
        id: &str,
        key_tag: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<()>;

    /// Whether session `id` exists, was made for the key tagged `key_tag`,
    /// and has not expired at `now`.
    async fn session_alive(&self, id: &str, key_tag: &str, now: DateTime<Utc>) -> Result<bool>;

    /// Ends session `id` (a sign-out); nothing if there is none.
    async fn end_session(&self, id: &str) -> Result<()>;

    /// Records what attempts used, once their processes are gone (after
    /// their outcomes, which a task reports before it exits), in one
    /// transaction: the runtime batches them. An attempt that is not there
    /// is skipped.
    async fn record_usage(&self, used: Vec<UsageRecord>) -> Result<()>;

    /// Joins the cluster as this node: refused ([`StoreError::NodeAlive`])
    /// while another process with the same node id is alive.
    async fn join(&self) -> Result<()>;

    /// Says this node is alive (by the database's clock), within `within`
    /// or not at all: the caller's lease on its work is measured from
    /// before the call, so a heartbeat that cannot get through must fail
    /// in time rather than hang. `false` when the cluster has declared the
    /// node dead meanwhile: its attempts were taken over, and it must
    /// stop them and rejoin.
    async fn heartbeat(&self, within: std::time::Duration) -> Result<bool>;

    /// Takes over the attempts of nodes silent for longer than their own
    /// timeout ([`NodeId::timeout`], kept with each node): they are closed
    /// as interrupted, their runs pending again, and the nodes declared
    /// dead. Returns the runs put back.
    async fn rescue(&self) -> Result<Vec<String>>;

    /// After this node fenced itself (it could not renew its lease and
    /// killed every process it ran): closes the attempts its incarnation
    /// still holds as interrupted, writes `note` (what happened, for
    /// people) on each of them and on those the cluster took over
    /// meanwhile, and joins again under a new incarnation, so that no
    /// late report of the old one is taken. Returns the runs it put back.
    async fn rejoin(&self, note: &str) -> Result<Vec<String>>;

    /// This node leaves the cluster (a clean stop).
    async fn leave(&self) -> Result<()>;

    /// The nodes the cluster knows, alive first.
    async fn nodes(&self) -> Result<Vec<NodeRecord>>;

    /// Deletes root runs that ended before `before`, with their subtree and
    /// their logs, at most `batch` roots per call. Returns how many roots.
    async fn prune(&self, before: DateTime<Utc>, batch: u32) -> Result<u64>;

    /// How many runs are in each state.
    async fn count_by_state(&self) -> Result<Vec<(RunState, u64)>>;

    /// How many bytes the data takes where it is kept (the database file
    /// and its write-ahead log; on PostgreSQL, weft's tables with their
    /// indexes). Every input, result and log line is in it until
    /// retention prunes its root run.
    async fn stored_bytes(&self) -> Result<u64>;

    /// How many subtasks (every run under the root but the root itself)
    /// each of these roots has in each state: `(root id, state, count)`,
    /// nothing for a root without subtasks.
    async fn subtask_counts(&self, roots: &[String]) -> Result<Vec<(String, RunState, u64)>>;

    /// What other nodes did that this one should hear of, for stores that
    /// several nodes share; `None` for a store only one node uses.
    fn events(&self) -> Option<tokio::sync::broadcast::Receiver<StoreEvent>>;
}

//! The records a store keeps, in the runtime's terms.

use chrono::{DateTime, Utc};
use weft_protocol::payload::Json;

use crate::RunState;
use weft_protocol::socket::{TaskOptions, TaskParameter};

/// A registered task.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskRecord {
    /// Stable id, `tsk-<name>`.
    pub id: String,
    pub name: String,
    pub options: TaskOptions,
    pub parameters: Option<Vec<TaskParameter>>,
    /// Whether the latest registration listed it.
    pub registered: bool,
    pub created_at: DateTime<Utc>,
}

impl TaskRecord {
    /// The id weft gives a task of this name.
    pub fn id_for(name: &str) -> String {
        format!("tsk-{name}")
    }
}

/// A request to create a run.
#[derive(Debug, Clone)]
pub struct NewRun {
    pub task_name: String,
    /// A JSON array or object, as the client (or parent) wrote it.
    pub input: Json,
    pub parent: Option<ParentRef>,
    /// Root runs: `idempotencyKey`, honoured for 24 hours.
    /// Subtasks: the SDK's key, paired with `idempotency_created_at`.
    pub idempotency_key: Option<String>,
    pub idempotency_created_at: Option<String>,
    /// Root runs: the version a client pinned (`workflow/task:version`).
    /// A subtask takes its parent's, whatever is given here.
    pub task_version: Option<String>,
    /// Root runs: the W3C `traceparent` a client started it with (its
    /// trace is continued). A subtask takes its parent's.
    pub trace_parent: Option<String>,
    pub at: DateTime<Utc>,
}

/// The run (and attempt) that starts a subtask.
#[derive(Debug, Clone)]
pub struct ParentRef {
    pub run_id: String,
    pub root_id: String,
    pub attempt: u32,
}

/// What [`crate::Store::create_run`] did.
#[derive(Debug, Clone)]
pub struct CreatedRun {
    pub run: RunRecord,
    pub how: Creation,
}

/// Whether a run was made anew.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Creation {
    /// A new run.
    New,
    /// An earlier run with the same idempotency key.
    Deduplicated,
    /// A child an earlier attempt of the same parent started (or took
    /// over), with the same task and input, handed to this attempt instead
    /// of a new run (see [`crate::adoption`]).
    Adopted,
}

/// A task run with its attempts.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRecord {
    pub id: String,
    /// Creation order; the list cursor.
    pub seq: i64,
    pub task_name: String,
    /// The version its root run was pinned to (`workflow/task:version`).
    pub task_version: Option<String>,
    /// The `traceparent` its root run was started with, if any.
    pub trace_parent: Option<String>,
    pub status: RunState,
    /// As the client (or parent) wrote it.
    pub input: Json,
    /// The JSON array of results, once completed, as the task wrote it.
    pub output: Option<Json>,
    pub error: Option<String>,
    pub parent_id: Option<String>,
    /// The parent's attempt that started this run (a subtask).
    pub parent_attempt: Option<u32>,
    pub root_id: String,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    /// A pending run waiting out a retry backoff starts no earlier.
    pub not_before: Option<DateTime<Utc>>,
    pub attempts: Vec<AttemptRecord>,
}

impl RunRecord {
    /// A root run as a store creates it: pending, with no attempts yet.
    pub fn new(
        id: impl Into<String>,
        task_name: impl Into<String>,
        input: impl Into<Json>,
        at: DateTime<Utc>,
    ) -> Self {
        let id = id.into();
        Self {
            root_id: id.clone(),
            id,
            seq: 0,
            task_name: task_name.into(),
            task_version: None,
            trace_parent: None,
            status: RunState::Pending,
            input: input.into(),
            output: None,
            error: None,
            parent_id: None,
            parent_attempt: None,
            created_at: at,
            started_at: None,
            completed_at: None,
            not_before: None,
            attempts: Vec::new(),
        }
    }

    /// Attempts that failed on their own (interrupted ones do not count).
    pub fn failed_attempts(&self) -> u32 {
        self.attempts
            .iter()
            .filter(|a| a.status == RunState::Failed && !a.interrupted)
            .count() as u32
    }

    /// The attempt now running, if any.
    pub fn current_attempt(&self) -> Option<&AttemptRecord> {
        self.attempts
            .last()
            .filter(|a| a.status == RunState::Running)
    }
}

/// One attempt of a run: one process.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptRecord {
    /// The node that ran it.
    pub node_id: Option<String>,
    /// 1-based.
    pub number: u32,
    pub status: RunState,
    pub started_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
    pub error: Option<String>,
    pub output: Option<Json>,
    /// Ended by a runtime crash or restart, not by the task.
    pub interrupted: bool,
    /// What its processes used, where the runtime could measure it.
    pub usage: AttemptUsage,
}

/// What one attempt used, for [`crate::Store::record_usage`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRecord {
    pub run_id: String,
    pub attempt: u32,
    pub usage: AttemptUsage,
}

/// What an attempt's processes used (its cgroup's counters).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AttemptUsage {
    /// The most memory they held at once, in bytes.
    pub peak_memory_bytes: Option<u64>,
    /// Their CPU time, in milliseconds.
    pub cpu_time_ms: Option<u64>,
}

/// How an attempt ended and where its run goes next.
#[derive(Debug, Clone)]
pub struct AttemptEnd {
    pub run_id: String,
    pub attempt: u32,
    pub at: DateTime<Utc>,
    pub outcome: AttemptOutcome,
}

/// The end of an attempt, with the run's next state decided by the caller.
#[derive(Debug, Clone)]
pub enum AttemptOutcome {
    /// The task returned; the run completes with this JSON array.
    Completed { output: Json },
    /// The task failed and will be tried again no earlier than `retry_at`.
    Retry {
        error: String,
        retry_at: DateTime<Utc>,
    },
    /// The task failed for good.
    Failed { error: String },
}

/// What canceling did.
#[derive(Debug, Clone, PartialEq)]
pub enum CancelOutcome {
    NotFound,
    /// The run had already ended in this state.
    AlreadyEnded(RunState),
    /// These runs (the one named and its descendants) were canceled.
    Canceled(Vec<String>),
}

/// Filter for [`crate::Store::list_runs`].
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    /// Runs of any of these tasks, or of any of `pinned`; both empty: of
    /// every task.
    pub task_names: Vec<String>,
    /// Runs of any of these (task, version) pairs (`task:version` slugs).
    pub pinned: Vec<(String, String)>,
    /// Runs pinned to any of these versions; empty: to any or none.
    pub versions: Vec<String>,
    /// Runs under any of these roots; empty: under every root.
    pub root_ids: Vec<String>,
    pub status: Option<RunState>,
    /// Only runs older than this cursor (a run's `seq`).
    pub before_seq: Option<i64>,
    /// Root runs only (no subtasks).
    pub roots_only: bool,
    pub limit: u32,
}

/// Runs counted over time, for the metrics endpoints: those created, or
/// those that ended, in `[from, to)`, in buckets of `resolution` seconds.
#[derive(Debug, Clone)]
pub struct RunCountQuery {
    pub counted: Counted,
    /// Runs of any of these tasks; empty: of every task.
    pub task_names: Vec<String>,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// Bucket width in seconds, at least 1.
    pub resolution: i64,
}

/// Which moment of a run [`RunCountQuery`] counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counted {
    /// When it was created (queued).
    Created,
    /// When it ended (completed, failed or canceled).
    Ended,
}

impl Counted {
    /// The column of the moment counted, and the condition it adds (both
    /// stores' SQL).
    pub(crate) fn sql(self) -> (&'static str, &'static str) {
        match self {
            Counted::Created => ("created_at", ""),
            Counted::Ended => (
                "completed_at",
                "AND status IN ('completed', 'failed', 'canceled')",
            ),
        }
    }
}

/// How many runs of a task, in one state, fell in one bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunCount {
    pub task_name: String,
    /// Its state now (for [`Counted::Ended`]: how it ended).
    pub status: RunState,
    /// The bucket: `from + bucket * resolution` seconds.
    pub bucket: i64,
    pub count: u64,
}

/// A line a task wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct NewLogLine {
    pub run_id: String,
    pub task_name: String,
    pub attempt: u32,
    /// `stdout` or `stderr`.
    pub stream: &'static str,
    pub at: DateTime<Utc>,
    pub message: String,
}

/// A stored log line.
#[derive(Debug, Clone, PartialEq)]
pub struct LogLine {
    pub id: i64,
    pub run_id: String,
    pub task_name: String,
    pub attempt: u32,
    pub stream: String,
    pub at: DateTime<Utc>,
    pub message: String,
}

/// Filter for [`crate::Store::query_logs`].
#[derive(Debug, Clone, Default)]
pub struct LogQuery {
    /// Runs whose lines to return (and, with `include_descendants`, their
    /// subtasks'); empty means all.
    pub run_ids: Vec<String>,
    pub include_descendants: bool,
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
    /// Lines containing any of these.
    pub text: Vec<String>,
    /// Lines of these tasks only; empty: of every task.
    pub task_names: Vec<String>,
    /// Lines of these streams only (`stdout`, `stderr`); empty: both.
    pub streams: Vec<String>,
    /// Lines after this id.
    pub after_id: Option<i64>,
    /// Newest first (the last `limit` lines of the range), instead of
    /// oldest first.
    pub newest_first: bool,
    pub limit: u32,
}

/// A node: one runtime process of a cluster (or the one process of a
/// single-node store).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeId {
    /// Stable across restarts (`--node-id`; the host name by default).
    pub id: String,
    /// New at every start: tells this run of the node from an earlier one.
    pub incarnation: String,
    /// Where it runs, for people.
    pub host: String,
    /// How long it may be silent before other nodes take its attempts
    /// over. Kept with the node in the store, so every node judges it by
    /// the timeout it runs with itself (and fences itself by).
    pub timeout: std::time::Duration,
}

impl NodeId {
    /// How long a node may be silent by default.
    pub const DEFAULT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

    /// A node of this id, started now, on this host, with the default timeout.
    pub fn new(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            incarnation: Self::new_incarnation(),
            host: local_host_name(),
            timeout: Self::DEFAULT_TIMEOUT,
        }
    }

    /// The same node with this timeout.
    pub fn with_timeout(self, timeout: std::time::Duration) -> Self {
        Self { timeout, ..self }
    }

    /// A fresh incarnation: this run of the node, told from every other.
    pub fn new_incarnation() -> String {
        uuid::Uuid::new_v4().simple().to_string()
    }
}

/// This machine's name.
pub fn local_host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `len` bytes into the buffer.
    let named = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    Some(String::from_utf8_lossy(&buf[..end]).trim().to_string())
        .filter(|h| named && !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// A node as the cluster knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeRecord {
    pub id: String,
    pub host: String,
    pub incarnation: String,
    pub started_at: DateTime<Utc>,
    pub heartbeat_at: DateTime<Utc>,
    /// Declared dead (or left); its attempts were taken over.
    pub gone_at: Option<DateTime<Utc>>,
    /// Attempts it is running now.
    pub running: u32,
}

/// The memory a claim may fill ([`crate::Store::claim_within`]): each run
/// takes its task's plan's memory, and the runs claimed, oldest first,
/// stop where the next one would not fit (a large run waits at the head
/// rather than be passed by smaller ones for ever).
#[derive(Debug, Clone, Default)]
pub struct MemoryLimit {
    /// The memory free on the node.
    pub free_bytes: u64,
    /// Each task's memory, by name.
    pub task_bytes: Vec<(String, u64)>,
    /// The memory of a task not listed.
    pub default_bytes: u64,
}

/// A pending run, as [`crate::Store::next_pending`] lists it: what a
/// runtime needs to start a process ahead of its next attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingRun {
    pub id: String,
    pub task_name: String,
    pub root_id: String,
    pub trace_parent: Option<String>,
    /// Its attempts so far: the next is this plus one.
    pub attempts: u32,
}

/// What [`crate::Store::claim`] got.
#[derive(Debug, Clone, Default)]
pub struct Claimed {
    /// The runs claimed, each with its new attempt running.
    pub runs: Vec<RunRecord>,
    /// When the earliest pending run still waiting is due (now or earlier
    /// for a run that is due but was not claimed); `None` when none waits.
    pub next_due: Option<DateTime<Utc>>,
}

/// Something another node did, as the store tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreEvent {
    /// Work became pending (a run created, retried or taken over).
    Pending,
    /// A run ended.
    Ended {
        run_id: String,
        parent_id: Option<String>,
    },
    /// Runs were canceled: attempts here may have to be killed.
    Canceled,
    /// Events may have been missed (the connection that hears them was
    /// lost): read the state again.
    Resync,
}

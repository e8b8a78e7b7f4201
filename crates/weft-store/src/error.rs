//! What can go wrong in a store, in terms that do not depend on which
//! database holds the data: the runtime decides what to do (answer 507,
//! retry a commit later, refuse to start) from the kind, and every message
//! names the database it is about.

/// What can go wrong in a store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Nothing more can be written: the disk (or the database's size
    /// limit) is full. Reads still work, and writes succeed again once
    /// space is freed; nothing already committed is affected.
    #[error(
        "the database at {location} is full: the disk has no space left for it ({detail}); free some space and weft carries on"
    )]
    Full { location: String, detail: String },
    /// The database could not do this now but may later: busy, an I/O
    /// error, a lost connection.
    #[error("the database at {location} is unavailable: {detail}")]
    Unavailable { location: String, detail: String },
    /// The database refuses writes (a read-only file or mount); writes
    /// succeed again once it is writable.
    #[error("the database at {location} is read-only: {detail}")]
    ReadOnly { location: String, detail: String },
    /// The database is damaged; weft will not write to it.
    #[error(
        "the database at {location} is damaged ({detail}). weft has not written to it. Restore it from a backup, or move it aside to start with an empty one (`sqlite3 {location} .recover` may save what it holds)"
    )]
    Damaged { location: String, detail: String },
    /// A query failed for another reason (a bug, most likely).
    #[error("database error at {location}: {detail}")]
    Query { location: String, detail: String },
    /// A query asked for too much at once (a text search over every log
    /// line, say); the message says how to narrow it.
    #[error("{0}")]
    TooBroad(String),
    /// A stored value could not be read back.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// The database could not be opened at all.
    #[error("could not open the database at {location}: {detail}")]
    Open { location: String, detail: String },
    #[error(
        "the database at {location} was written by a newer weft (schema {found}, this build knows {known})"
    )]
    SchemaTooNew {
        location: String,
        found: i64,
        known: i64,
    },
    /// Another process has the database open: two runtimes on one file
    /// would both run its pending runs.
    #[error("the database at {location} is in use by another weft{}", holder.map(|pid| format!(" (pid {pid})")).unwrap_or_default())]
    InUse {
        location: String,
        holder: Option<u32>,
    },
    #[error("could not lock the database at {location} ({lock_file})")]
    Lock {
        location: String,
        lock_file: String,
        source: std::io::Error,
    },
    /// A parent attempt that is no longer running asked for a child.
    #[error("attempt {attempt} of {run_id} is no longer running")]
    AttemptEnded { run_id: String, attempt: u32 },
    /// Another process runs as this node.
    #[error(
        "node {node} is already running (on {host}, last heard from {seconds_ago} s ago); give this one another --node-id, or stop that one"
    )]
    NodeAlive {
        node: String,
        host: String,
        seconds_ago: i64,
    },
    #[error("store task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

impl StoreError {
    /// Whether the same write may succeed later without anyone changing
    /// weft: the disk filling up is a fault to wait out, not a crash.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Full { .. } | Self::Unavailable { .. } | Self::ReadOnly { .. }
        )
    }
}

//! The embedded store: one SQLite file in WAL mode.
//!
//! One connection writes, on a thread of its own (`writer`): SQLite
//! serialises writers anyway, and a single connection makes every method a
//! plain transaction with no busy-retry logic; calls that queue up together
//! share a commit. Reads run on their own connections, on tokio's blocking
//! pool. Commits are durable against a
//! crash of the process (WAL, `synchronous = NORMAL`); `synchronous = FULL`
//! (see [`SqliteStore::open_with`]) also survives power loss.

use std::path::Path;
use std::sync::{Arc, Mutex};

mod writer;

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use rusqlite::{Connection, OptionalExtension, Row, Transaction, params};
use weft_protocol::socket::{TaskDefinition, TaskOptions};

use crate::adoption::input_fingerprint;
use crate::rows::{
    CANCELED, INTERRUPTED, new_run_id, outcome_columns, parse_json, parse_state, process_exists,
};
use crate::{
    AttemptEnd, AttemptOutcome, AttemptRecord, CancelOutcome, Claimed, CreatedRun, Creation,
    LogLine, LogQuery, NewLogLine, NewRun, NodeId, NodeRecord, Result, RunFilter, RunRecord,
    RunState, Store, StoreError, StoreEvent, TaskRecord,
};

/// How long a root run's `idempotencyKey` names it.
const ROOT_IDEMPOTENCY_WINDOW: Duration = Duration::hours(24);

/// Schema migrations, applied in order, each in its own transaction;
/// `PRAGMA user_version` counts them.
const MIGRATIONS: &[Migration] = &[
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
];

/// The earliest pending run's `not_before` (NULL first: due now), read
/// off `runs_pending_due` in one step. (`min(coalesce(not_before, now))`
/// read every pending row, once per claim: a fan-out of N children read
/// N^2/2 rows.)
const NEXT_DUE: &str =
    "SELECT not_before FROM runs WHERE status = 'pending' ORDER BY not_before LIMIT 1";

/// One step of the schema's history.
enum Migration {
    Sql(&'static str),
    /// A step SQL cannot express (hashing stored inputs).
    Code(fn(&Transaction<'_>) -> Result<(), TxError>),
}

const V1_SCHEMA: &str = r#"
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
fn fingerprint_existing_children(tx: &Transaction<'_>) -> Result<(), TxError> {
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

/// Durability of commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Survives a crash of the process (WAL, `synchronous = NORMAL`).
    #[default]
    Process,
    /// Also survives power loss (`synchronous = FULL`): an fsync per commit.
    PowerLoss,
}

/// The embedded SQLite store. Cheap to clone.
#[derive(Clone)]
pub struct SqliteStore {
    /// Connections that only read (WAL lets them run beside the writer),
    /// so a slow read (a log search over millions of lines) never holds
    /// up a start or a report. Declared before the writer so that they
    /// close first: the last connection to close folds the WAL back into
    /// the file, and only the writer may.
    readers: Arc<Readers>,
    /// The one connection that writes, on its thread: SQLite has one
    /// writer at a time anyway, and one connection makes every write a
    /// plain transaction. Dropped before the lock below is released: the
    /// writer closes the database before another process may open it.
    writer: Arc<writer::Writer>,
    /// The database file, as messages name it.
    location: Arc<str>,
    /// The write-ahead log beside the database file (its real path).
    wal: Arc<Path>,
    /// The one node a SQLite database serves.
    node: NodeId,
    /// Held while any clone lives: one process owns a database at a time.
    _lock: Arc<(std::fs::File, std::fs::File)>,
}

/// An error inside a transaction: SQLite's own, or the store's. SQLite's
/// are turned into a backend-neutral [`StoreError`] naming the file when
/// the transaction ends.
enum TxError {
    Sqlite(rusqlite::Error),
    Store(StoreError),
}

impl From<rusqlite::Error> for TxError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Sqlite(e)
    }
}

impl From<StoreError> for TxError {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

impl TxError {
    fn into_store(self, location: &str) -> StoreError {
        match self {
            Self::Store(e) => e,
            Self::Sqlite(e) => classify(e, location),
        }
    }
}

/// What a SQLite error means for the runtime.
fn classify(e: rusqlite::Error, location: &str) -> StoreError {
    use rusqlite::ErrorCode::*;
    let location = location.to_string();
    let detail = e.to_string();
    match e.sqlite_error_code() {
        Some(DiskFull) => StoreError::Full { location, detail },
        Some(DatabaseBusy | DatabaseLocked | SystemIoFailure | CannotOpen | OutOfMemory) => {
            StoreError::Unavailable { location, detail }
        }
        Some(ReadOnly) => StoreError::ReadOnly { location, detail },
        Some(DatabaseCorrupt | NotADatabase) => StoreError::Damaged { location, detail },
        _ => StoreError::Query { location, detail },
    }
}

type TxResult<T> = std::result::Result<T, TxError>;

/// How many prepared statements each connection keeps: every statement of
/// the store fits, so none is parsed twice.
const STATEMENT_CACHE: usize = 64;

/// `execute` and `query_row` through the connection's statement cache.
/// rusqlite's own prepare each statement anew, and parsing SQL was a
/// quarter of the store's CPU in a wide fan-out (BENCHMARKS.md, "The
/// runtime, per Rust child").
trait CachedStatements {
    fn execute_cached<P: rusqlite::Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize>;
    fn query_row_cached<T, P, F>(&self, sql: &str, params: P, f: F) -> rusqlite::Result<T>
    where
        P: rusqlite::Params,
        F: FnOnce(&Row<'_>) -> rusqlite::Result<T>;
}

impl CachedStatements for Connection {
    fn execute_cached<P: rusqlite::Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize> {
        self.prepare_cached(sql)?.execute(params)
    }

    fn query_row_cached<T, P, F>(&self, sql: &str, params: P, f: F) -> rusqlite::Result<T>
    where
        P: rusqlite::Params,
        F: FnOnce(&Row<'_>) -> rusqlite::Result<T>,
    {
        self.prepare_cached(sql)?.query_row(params, f)
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`, with its parent
    /// directory, and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_with(path, Durability::default())
    }

    /// [`SqliteStore::open`] with a chosen durability.
    ///
    /// An existing database is checked first (`PRAGMA quick_check`): a
    /// damaged or truncated file is refused with [`StoreError::Damaged`]
    /// before anything is written to it.
    pub fn open_with(path: &Path, durability: Durability) -> Result<Self> {
        let location = path.display().to_string();
        let open_err = |detail: String| StoreError::Open {
            location: location.clone(),
            detail,
        };
        let real = prepare_file(path).map_err(open_err)?;
        // Locked by its real path, so two paths (symlinks) to one file are
        // one database, refused while in use...
        let lock = lock_exclusively(&real, &location)?;
        // ...and by the file itself, so that every other name of it (a hard
        // link, in any folder) is refused too.
        let inode = lock_inode(&real, &location)?;
        let conn = Connection::open(&real).map_err(|e| open_err(e.to_string()))?;
        check_integrity(&conn, &real, &location)?;
        let sync = match durability {
            Durability::Process => "NORMAL",
            Durability::PowerLoss => "FULL",
        };
        conn.execute_batch(&format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = {sync}; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;"
        ))
        .map_err(|e| classify(e, &location))?;
        migrate(&conn, &location)?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        let readers = Readers::open(&real, READERS).map_err(|e| classify(e, &location))?;
        let location: Arc<str> = location.into();
        let writer =
            writer::Writer::start(conn, location.clone()).map_err(|e| StoreError::Open {
                location: location.to_string(),
                detail: format!("cannot start the writer thread: {e}"),
            })?;
        Ok(Self {
            readers: Arc::new(readers),
            writer: Arc::new(writer),
            location,
            wal: {
                let mut wal = real.clone().into_os_string();
                wal.push("-wal");
                Path::new(&wal).into()
            },
            node: NodeId::new(crate::local_host_name()),
            _lock: Arc::new((lock, inode)),
        })
    }

    /// Caps the database's size at about `bytes` (SQLite's
    /// `max_page_count`; never below its size now), or lifts the cap with
    /// `None`. Writes that would grow it further fail with
    /// [`StoreError::Full`], as on a full disk, until the cap is raised.
    pub async fn set_size_limit(&self, bytes: Option<u64>) -> Result<()> {
        let location = self.location.clone();
        let (reply, answer) = tokio::sync::oneshot::channel();
        let sent = self.writer.alone(Box::new(move |conn: &Connection| {
            let set = || -> rusqlite::Result<()> {
                let pages = match bytes {
                    Some(bytes) => {
                        let page_size: u64 =
                            conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
                        (bytes / page_size).max(1)
                    }
                    // SQLite's own default and largest value.
                    None => 4_294_967_294,
                };
                conn.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |_| Ok(()))
            };
            let _ = reply.send(set().map_err(|e| classify(e, &location)));
        }));
        if !sent {
            return Err(self.writer_stopped());
        }
        answer.await.unwrap_or_else(|_| Err(self.writer_stopped()))
    }

    /// Commits made since the store opened: fewer than its write calls
    /// when calls that queued up together shared a commit.
    pub fn commits(&self) -> u64 {
        self.writer.commits()
    }

    /// The error of a call the writer dropped unanswered: the store is
    /// closing.
    fn writer_stopped(&self) -> StoreError {
        StoreError::Unavailable {
            location: self.location.to_string(),
            detail: "the store's writer dropped the call".into(),
        }
    }

    /// Runs `f` in one read transaction (a consistent snapshot) on a
    /// reader connection, on the blocking pool.
    async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> TxResult<T> + Send + 'static,
    {
        let readers = self.readers.clone();
        let location = self.location.clone();
        tokio::task::spawn_blocking(move || {
            let conn = readers.get();
            in_transaction(&conn, "BEGIN DEFERRED", f).map_err(|e| e.into_store(&location))
        })
        .await?
    }

    /// Runs `f` in a transaction on the writer, perhaps beside other
    /// calls in one commit (see `writer`); its result once that commit is
    /// durable.
    async fn tx<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> TxResult<T> + Send + 'static,
    {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let call = TxCall {
            f: Some(f),
            out: None,
            reply,
            location: self.location.clone(),
        };
        if !self.writer.transaction(Box::new(call)) {
            return Err(self.writer_stopped());
        }
        answer.await.unwrap_or_else(|_| Err(self.writer_stopped()))
    }
}

/// One caller's transaction on the writer.
struct TxCall<T, F> {
    f: Option<F>,
    out: Option<Result<T>>,
    reply: tokio::sync::oneshot::Sender<Result<T>>,
    location: Arc<str>,
}

impl<T, F> writer::Call for TxCall<T, F>
where
    T: Send + 'static,
    F: FnOnce(&Connection) -> TxResult<T> + Send + 'static,
{
    fn run(&mut self, conn: &Connection) -> bool {
        let Some(f) = self.f.take() else { return false };
        let out = f(conn).map_err(|e| e.into_store(&self.location));
        let ok = out.is_ok();
        self.out = Some(out);
        ok
    }

    fn deliver(self: Box<Self>, lost: Option<StoreError>) {
        let result = match (lost, self.out) {
            (Some(e), _) => Err(e),
            (None, Some(out)) => out,
            (None, None) => Err(StoreError::Unavailable {
                location: self.location.to_string(),
                detail: "the store call did not run".into(),
            }),
        };
        // A caller that stopped waiting has nobody to tell.
        let _ = self.reply.send(result);
    }
}

/// Runs `f` between `begin` and `COMMIT`, rolling back if it fails or
/// panics; both statements through the statement cache (see
/// `writer::run`: rusqlite's `Transaction` parses them anew each time).
fn in_transaction<T>(
    conn: &Connection,
    begin: &'static str,
    f: impl FnOnce(&Connection) -> TxResult<T>,
) -> TxResult<T> {
    /// Rolls back unless disarmed: on an error, a failed commit or a panic.
    struct Open<'c>(Option<&'c Connection>);
    impl Drop for Open<'_> {
        fn drop(&mut self) {
            if let Some(conn) = self.0
                && !conn.is_autocommit()
            {
                let _ = conn.execute_batch("ROLLBACK");
            }
        }
    }
    writer::run(conn, begin)?;
    let mut open = Open(Some(conn));
    let out = f(conn)?;
    writer::run(conn, "COMMIT")?;
    open.0 = None;
    Ok(out)
}

/// Reader connections a store keeps.
const READERS: usize = 4;

/// How long a log search may scan before it is stopped.
const SEARCH_LIMIT: std::time::Duration = std::time::Duration::from_secs(2);

/// The reader connections, taken by whoever finds one free.
struct Readers {
    conns: Vec<Mutex<Connection>>,
    next: std::sync::atomic::AtomicUsize,
}

impl Readers {
    fn open(path: &Path, n: usize) -> rusqlite::Result<Self> {
        use rusqlite::OpenFlags;
        let conns = (0..n)
            .map(|_| {
                let conn = Connection::open_with_flags(
                    path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )?;
                conn.execute_batch("PRAGMA busy_timeout = 5000;")?;
                conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
                Ok(Mutex::new(conn))
            })
            .collect::<rusqlite::Result<_>>()?;
        Ok(Self {
            conns,
            next: Default::default(),
        })
    }

    /// A free reader, or (all busy) the next one in turn, waited for.
    fn get(&self) -> std::sync::MutexGuard<'_, Connection> {
        let start = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        for i in 0..self.conns.len() {
            if let Ok(conn) = self.conns[(start + i) % self.conns.len()].try_lock() {
                return conn;
            }
        }
        self.conns[start % self.conns.len()]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }
}

/// Refuses a damaged database before anything writes to it: a file that
/// is not SQLite, one cut short (a copy that stopped half way, a full disk
/// at the wrong moment), or one whose pages fail `PRAGMA quick_check`.
/// A new, empty file passes. The check reads the whole file once, which is
/// quick next to what a runtime on a damaged database would cost.
fn check_integrity(conn: &Connection, path: &Path, location: &str) -> Result<()> {
    let damaged = |detail: String| StoreError::Damaged {
        location: location.to_string(),
        detail,
    };
    if let Some(cut) = cut_short(path) {
        return Err(damaged(cut));
    }
    let header: Result<i64, rusqlite::Error> =
        conn.query_row("PRAGMA schema_version", [], |r| r.get(0));
    if let Err(e) = header {
        return Err(match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::NotADatabase) => damaged(format!(
                "the file is not a SQLite database: {e}; is --db pointing at the right file?"
            )),
            _ => classify(e, location),
        });
    }
    let mut stmt = conn
        .prepare("PRAGMA quick_check(5)")
        .map_err(|e| classify(e, location))?;
    let problems = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>());
    match problems {
        Ok(rows) if rows == ["ok"] => Ok(()),
        Ok(rows) => Err(damaged(format!("quick_check: {}", rows.join("; ")))),
        Err(e) => Err(damaged(format!("quick_check: {e}"))),
    }
}

/// Whether the file is shorter than its header says: it was cut short (a
/// copy that stopped half way, a full disk at the wrong moment). Read from
/// the header itself (the file format's "in-header database size"), since
/// SQLite trusts the file's length and `quick_check` misses a cut at a page
/// boundary when the lost pages held nothing it walks. With a WAL beside
/// it the file may lag its pages until a checkpoint, so then this says
/// nothing and `quick_check` decides.
fn cut_short(path: &Path) -> Option<String> {
    use std::io::Read;
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    if std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0) {
        return None;
    }
    let mut file = std::fs::File::open(path).ok()?;
    let on_disk = file.metadata().ok()?.len();
    let mut header = [0u8; 100];
    file.read_exact(&mut header).ok()?;
    if &header[..16] != b"SQLite format 3\0" {
        return None;
    }
    let be32 = |at: usize| u32::from_be_bytes(header[at..at + 4].try_into().expect("4 bytes"));
    let page_size = match u16::from_be_bytes([header[16], header[17]]) {
        1 => 65536,
        n => u64::from(n),
    };
    let pages = u64::from(be32(28));
    // The size is valid only when the change counter matches the
    // version-valid-for number (SQLite 3.7.0 and later write both).
    if pages == 0 || be32(24) != be32(92) {
        return None;
    }
    (on_disk < pages * page_size).then(|| {
        format!(
            "the file is {on_disk} bytes but its header counts {pages} pages of {page_size} bytes: it was cut short"
        )
    })
}

/// Makes the database's folder and file private before SQLite touches them
/// (task output and inputs are in it): a folder weft creates is 0700, a new
/// file 0600, and SQLite gives its `-wal` and `-shm` files the file's mode.
/// An existing database readable by others is kept as it is, with a
/// warning. Returns the file's real path (symlinks resolved). Refuses what
/// is not a regular file (`--db /dev/null`).
fn prepare_file(path: &Path) -> std::result::Result<std::path::PathBuf, String> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    if let Some(dir) = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty() && !d.exists())
    {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("cannot create it: {e}")),
    }
    let real = path
        .canonicalize()
        .map_err(|e| format!("cannot resolve its path: {e}"))?;
    let meta = std::fs::metadata(&real).map_err(|e| format!("cannot read it: {e}"))?;
    if !meta.is_file() {
        return Err(format!(
            "{} is not a regular file (a database needs one, with its -wal and -shm files beside it)",
            real.display()
        ));
    }
    if meta.permissions().mode() & 0o077 != 0 {
        tracing::warn!(
            "the database {} can be read by other users of this machine (mode {:o}); `chmod 600 {}` keeps task inputs and output private",
            real.display(),
            meta.permissions().mode() & 0o777,
            real.display()
        );
    }
    Ok(real)
}

/// Takes an exclusive lock on `<db>.lock` beside the database, and writes
/// this process's id in it for the message another process gets. SQLite's
/// own locks allow several writers in turn, but the runtime recovers and
/// schedules the runs it finds as their only owner; the lock file (closed
/// on exec, so task processes do not inherit it) makes that so. It is
/// opened without following a symlink, and written only when it is ours: a
/// link planted by another user cannot make weft overwrite its target.
fn lock_exclusively(path: &Path, location: &str) -> Result<std::fs::File> {
    use std::io::{Read, Seek, Write};
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let mut lock_path = path.as_os_str().to_owned();
    lock_path.push(".lock");
    let lock_err = |source| StoreError::Lock {
        location: location.to_string(),
        lock_file: Path::new(&lock_path).display().to_string(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&lock_path)
        .map_err(lock_err)?;
    let meta = file.metadata().map_err(lock_err)?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if !meta.is_file() || meta.uid() != me {
        return Err(lock_err(std::io::Error::other(format!(
            "it is not a regular file of this user (owner uid {}); remove it if no weft uses this database",
            meta.uid()
        ))));
    }
    // A runtime killed while it was starting a task process leaves, for a
    // moment, a child between fork and exec that still holds the lock (it
    // goes at exec, or when the child dies of its parent's death). So a
    // lock held in the name of a process that is gone is waited for,
    // briefly; one held by a live process is refused at once.
    lock_or_wait_for_the_gone(&file, location, false, &lock_err, |file| {
        let mut holder = String::new();
        let mut reader: &std::fs::File = file;
        reader.rewind().ok()?;
        reader.read_to_string(&mut holder).ok()?;
        holder.trim().parse().ok()
    })?;
    file.set_len(0).map_err(lock_err)?;
    file.rewind().map_err(lock_err)?;
    write!(file, "{}", std::process::id()).map_err(lock_err)?;
    Ok(file)
}

/// Takes `file`'s `flock`. When another holds it, `holder` says who (as
/// it can): a holder that is gone, or (with `wait_for_unknown`) one that
/// cannot be told, is waited for up to [`LOCK_WAIT`]; a live one is
/// refused at once with [`StoreError::InUse`]; an I/O error is named by
/// `lock_err`.
fn lock_or_wait_for_the_gone(
    file: &std::fs::File,
    location: &str,
    wait_for_unknown: bool,
    lock_err: &dyn Fn(std::io::Error) -> StoreError,
    holder: impl Fn(&std::fs::File) -> Option<u32>,
) -> Result<()> {
    let mut waited = std::time::Duration::ZERO;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(()),
            Err(std::fs::TryLockError::WouldBlock) => {
                let holder = holder(file);
                let gone = holder.is_some_and(|pid| !process_exists(pid as libc::pid_t));
                if (gone || (wait_for_unknown && holder.is_none())) && waited < LOCK_WAIT {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                    waited += std::time::Duration::from_millis(50);
                    continue;
                }
                return Err(StoreError::InUse {
                    location: location.to_string(),
                    holder,
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(lock_err(e)),
        }
    }
}

/// Takes an exclusive lock on the database file itself: a `flock`, which
/// belongs to the file (its inode), not to a name, so a hard link to it
/// under another name or in another folder finds it taken. (SQLite's own
/// locks are `fcntl` byte ranges, which on Linux are independent of a
/// `flock`, so the two never meet.) The holder's pid comes from
/// `/proc/locks` where there is one; a holder that is gone (a child of a
/// killed runtime between fork and exec) is waited for briefly, as for the
/// lock file.
fn lock_inode(path: &Path, location: &str) -> Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let lock_err = |source| StoreError::Lock {
        location: location.to_string(),
        lock_file: path.display().to_string(),
        source,
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(lock_err)?;
    lock_or_wait_for_the_gone(&file, location, true, &lock_err, flock_holder)?;
    Ok(file)
}

/// Who holds a `flock` on this file, from `/proc/locks` (Linux); `None`
/// where it cannot be told.
fn flock_holder(file: &std::fs::File) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    let meta = file.metadata().ok()?;
    let dev = meta.dev();
    // As the kernel prints it: major and minor in hex, the inode in decimal.
    let id = format!(
        "{:02x}:{:02x}:{}",
        libc::major(dev),
        libc::minor(dev),
        meta.ino()
    );
    std::fs::read_to_string("/proc/locks")
        .ok()?
        .lines()
        .filter(|l| l.contains("FLOCK") && !l.contains("->"))
        .find_map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            let at = fields.iter().position(|f| *f == id)?;
            fields.get(at.checked_sub(1)?)?.parse().ok()
        })
}

/// How long a lock left by a process that is gone is waited for.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

fn migrate(conn: &Connection, location: &str) -> Result<()> {
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

/// Timestamps are stored as fixed-width RFC 3339 text, so text order is time order.
fn ts(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

fn parse_ts(s: &str) -> Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .map(|d| d.to_utc())
        .map_err(|e| StoreError::Corrupt(format!("bad timestamp {s:?}: {e}")))
}

fn parse_opt_ts(s: Option<String>) -> Result<Option<DateTime<Utc>>> {
    s.as_deref().map(parse_ts).transpose()
}

const RUN_COLUMNS: &str = "seq, id, task_name, status, input, output, error, parent_id, root_id, \
                           created_at, started_at, completed_at, not_before, created_by_attempt";

/// A runs row before its attempts are attached.
struct RunRow {
    seq: i64,
    id: String,
    task_name: String,
    status: String,
    input: String,
    output: Option<String>,
    error: Option<String>,
    parent_id: Option<String>,
    root_id: String,
    created_at: String,
    started_at: Option<String>,
    completed_at: Option<String>,
    not_before: Option<String>,
    created_by_attempt: Option<u32>,
}

impl RunRow {
    fn from_row(r: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            seq: r.get(0)?,
            id: r.get(1)?,
            task_name: r.get(2)?,
            status: r.get(3)?,
            input: r.get(4)?,
            output: r.get(5)?,
            error: r.get(6)?,
            parent_id: r.get(7)?,
            root_id: r.get(8)?,
            created_at: r.get(9)?,
            started_at: r.get(10)?,
            completed_at: r.get(11)?,
            not_before: r.get(12)?,
            created_by_attempt: r.get(13)?,
        })
    }

    fn into_record(self, attempts: Vec<AttemptRecord>) -> Result<RunRecord> {
        Ok(RunRecord {
            id: self.id,
            seq: self.seq,
            task_name: self.task_name,
            status: parse_state(&self.status)?,
            input: parse_json(&self.input)?,
            output: self.output.as_deref().map(parse_json).transpose()?,
            error: self.error,
            parent_id: self.parent_id,
            root_id: self.root_id,
            created_at: parse_ts(&self.created_at)?,
            started_at: parse_opt_ts(self.started_at)?,
            completed_at: parse_opt_ts(self.completed_at)?,
            not_before: parse_opt_ts(self.not_before)?,
            parent_attempt: self.created_by_attempt,
            attempts,
        })
    }
}

fn load_attempts(tx: &Connection, run_id: &str) -> TxResult<Vec<AttemptRecord>> {
    let mut stmt = tx.prepare_cached(
        "SELECT attempt, status, started_at, completed_at, error, output, interrupted, node_id
         FROM attempts WHERE run_id = ?1 ORDER BY attempt",
    )?;
    let rows = stmt.query_map([run_id], |r| {
        Ok((
            r.get::<_, u32>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, Option<String>>(3)?,
            r.get::<_, Option<String>>(4)?,
            r.get::<_, Option<String>>(5)?,
            r.get::<_, bool>(6)?,
            r.get::<_, Option<String>>(7)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (number, status, started, completed, error, output, interrupted, node_id) = row?;
        out.push(AttemptRecord {
            node_id,
            number,
            status: parse_state(&status)?,
            started_at: parse_ts(&started)?,
            completed_at: parse_opt_ts(completed)?,
            error,
            output: output.as_deref().map(parse_json).transpose()?,
            interrupted,
        });
    }
    Ok(out)
}

/// One run by id (built once, so the statement cache knows it).
static RUN_BY_ID: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?1"));

fn load_run(tx: &Connection, id: &str) -> TxResult<Option<RunRecord>> {
    let row = tx
        .query_row_cached(&RUN_BY_ID, [id], RunRow::from_row)
        .optional()?;
    match row {
        Some(row) => {
            let attempts = load_attempts(tx, &row.id)?;
            Ok(Some(row.into_record(attempts)?))
        }
        None => Ok(None),
    }
}

fn load_runs(
    tx: &Connection,
    sql: &str,
    params: &[&dyn rusqlite::ToSql],
) -> TxResult<Vec<RunRecord>> {
    let mut stmt = tx.prepare_cached(sql)?;
    let rows = stmt
        .query_map(params, RunRow::from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    rows.into_iter()
        .map(|row| {
            let attempts = load_attempts(tx, &row.id)?;
            Ok(row.into_record(attempts)?)
        })
        .collect()
}

/// A parent's child started under an idempotency key: every `ctx.run` of
/// the SDKs sends one, so this runs once per subtask started.
const SUBTASK_BY_KEY: &str = "SELECT id FROM runs WHERE parent_id = ?1 AND idempotency_key = ?2
     AND coalesce(idempotency_created_at, '') = coalesce(?3, '') LIMIT 1";

fn find_existing(tx: &Connection, new: &NewRun) -> TxResult<Option<(String, Creation)>> {
    let Some(key) = new.idempotency_key.as_deref() else {
        return adoptable_child(tx, new);
    };
    let found: Option<String> = match &new.parent {
        None => tx
            .query_row_cached(
                "SELECT id FROM runs WHERE parent_id IS NULL AND idempotency_key = ?1 AND created_at >= ?2
                 ORDER BY seq DESC LIMIT 1",
                params![key, ts(new.at - ROOT_IDEMPOTENCY_WINDOW)],
                |r| r.get(0),
            )
            .optional()?,
        Some(parent) => {
            let found = tx
                .query_row_cached(
                    SUBTASK_BY_KEY,
                    params![parent.run_id, key, new.idempotency_created_at],
                    |r| r.get::<_, String>(0),
                )
                .optional()?;
            if let Some(id) = &found {
                // The same start asked again by a later attempt: it is that
                // attempt's now, and not for another of its calls to adopt.
                take_child(tx, id, parent.attempt)?;
            }
            found
        }
    };
    match found {
        Some(id) => Ok(Some((id, Creation::Deduplicated))),
        None => adoptable_child(tx, new),
    }
}

/// The adoption rule of [`crate::adoption`]: the earliest child of this
/// parent with the same task and input that an earlier attempt started or
/// took, that this attempt has not taken, and that did not fail or get
/// canceled, is taken by this attempt and handed back.
fn adoptable_child(tx: &Connection, new: &NewRun) -> TxResult<Option<(String, Creation)>> {
    let Some(parent) = &new.parent else {
        return Ok(None);
    };
    if parent.attempt <= 1 {
        return Ok(None);
    }
    let mut stmt = tx.prepare_cached(
        "SELECT id, input FROM runs INDEXED BY runs_adoption
         WHERE parent_id = ?1 AND task_name = ?2 AND input_hash = ?3 AND taken_by_attempt < ?4
           AND status NOT IN ('failed', 'canceled')
         ORDER BY seq",
    )?;
    let mut rows = stmt.query(params![
        parent.run_id,
        new.task_name,
        input_fingerprint(&new.input.to_value()),
        parent.attempt
    ])?;
    while let Some(row) = rows.next()? {
        let (id, input): (String, String) = (row.get(0)?, row.get(1)?);
        // Equal fingerprints are confirmed on the values themselves.
        if parse_json(&input)? == new.input {
            drop(rows);
            take_child(tx, &id, parent.attempt)?;
            return Ok(Some((id, Creation::Adopted)));
        }
    }
    Ok(None)
}

/// Records that `attempt` of the parent has the child now.
fn take_child(tx: &Connection, id: &str, attempt: u32) -> TxResult<()> {
    tx.execute_cached(
        "UPDATE runs SET taken_by_attempt = max(coalesce(taken_by_attempt, 0), ?2) WHERE id = ?1",
        params![id, attempt],
    )?;
    Ok(())
}

/// Opens the next attempt of a run that was just moved to running.
fn open_attempt(tx: &Connection, run_id: &str, at: DateTime<Utc>, node: &str) -> TxResult<()> {
    tx.execute_cached(
        "INSERT INTO attempts (run_id, attempt, status, started_at, node_id)
         VALUES (?1, (SELECT coalesce(max(attempt), 0) + 1 FROM attempts WHERE run_id = ?1), 'running', ?2, ?3)",
        params![run_id, ts(at), node],
    )?;
    Ok(())
}

#[async_trait]
impl Store for SqliteStore {
    async fn register_tasks(
        &self,
        tasks: &[TaskDefinition],
        at: DateTime<Utc>,
    ) -> Result<Vec<TaskRecord>> {
        let tasks = tasks.to_vec();
        self.tx(move |tx| {
            tx.execute_cached("UPDATE tasks SET registered = 0", [])?;
            for task in &tasks {
                let options = serde_json::to_string(&task.options.clone().unwrap_or_default())
                    .expect("options serialise");
                let parameters =
                    task.parameters.as_ref().map(|p| serde_json::to_string(p).expect("parameters serialise"));
                tx.execute_cached(
                    "INSERT INTO tasks (name, id, options, parameters, registered, created_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, 1, ?5, ?5)
                     ON CONFLICT (name) DO UPDATE SET options = ?3, parameters = ?4, registered = 1, updated_at = ?5",
                    params![task.name, TaskRecord::id_for(&task.name), options, parameters, ts(at)],
                )?;
            }
            Ok(())
        })
        .await?;
        self.list_tasks().await
    }

    async fn list_tasks(&self) -> Result<Vec<TaskRecord>> {
        self.read(|tx| {
            let mut stmt = tx.prepare_cached(
                "SELECT id, name, options, parameters, registered, created_at FROM tasks
                 ORDER BY registered DESC, name",
            )?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, Option<String>>(3)?,
                        r.get::<_, bool>(4)?,
                        r.get::<_, String>(5)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            rows.into_iter()
                .map(|(id, name, options, parameters, registered, created_at)| {
                    Ok(TaskRecord {
                        id,
                        name,
                        options: serde_json::from_str::<TaskOptions>(&options)
                            .map_err(|e| StoreError::Corrupt(format!("task options: {e}")))?,
                        parameters: parameters
                            .map(|p| serde_json::from_str(&p))
                            .transpose()
                            .map_err(|e| StoreError::Corrupt(format!("task parameters: {e}")))?,
                        registered,
                        created_at: parse_ts(&created_at)?,
                    })
                })
                .collect()
        })
        .await
    }

    async fn create_run(&self, new: NewRun) -> Result<CreatedRun> {
        self.tx(move |tx| {
            if let Some(parent) = &new.parent {
                let running: bool = tx.query_row_cached(
                    "SELECT EXISTS (SELECT 1 FROM attempts WHERE run_id = ?1 AND attempt = ?2 AND status = 'running')",
                    params![parent.run_id, parent.attempt],
                    |r| r.get(0),
                )?;
                if !running {
                    return Err(StoreError::AttemptEnded {
                        run_id: parent.run_id.clone(),
                        attempt: parent.attempt,
                    }
                    .into());
                }
            }
            if let Some((id, how)) = find_existing(tx, &new)? {
                let run = load_run(tx, &id)?.ok_or_else(|| StoreError::Corrupt(format!("run {id} vanished")))?;
                return Ok(CreatedRun { run, how });
            }
            let id = new_run_id();
            let root_id = new.parent.as_ref().map_or(id.clone(), |p| p.root_id.clone());
            tx.execute_cached(
                "INSERT INTO runs (id, task_name, status, input, parent_id, root_id, created_by_attempt,
                                   taken_by_attempt, input_hash, idempotency_key, idempotency_created_at,
                                   created_at)
                 VALUES (?1, ?2, 'pending', ?3, ?4, ?5, ?6, ?6, ?7, ?8, ?9, ?10)",
                params![
                    id,
                    new.task_name,
                    new.input.as_str().to_string(),
                    new.parent.as_ref().map(|p| p.run_id.clone()),
                    root_id,
                    new.parent.as_ref().map(|p| p.attempt),
                    new.parent.as_ref().map(|_| input_fingerprint(&new.input.to_value())),
                    new.idempotency_key,
                    new.idempotency_created_at,
                    ts(new.at),
                ],
            )?;
            let run = load_run(tx, &id)?.expect("just inserted");
            Ok(CreatedRun { run, how: Creation::New })
        })
        .await
    }

    async fn get_run(&self, id: &str) -> Result<Option<RunRecord>> {
        let id = id.to_string();
        self.read(move |tx| load_run(tx, &id)).await
    }

    async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<RunRecord>> {
        let filter = filter.clone();
        self.read(move |tx| {
            let sql = format!(
                "SELECT {RUN_COLUMNS} FROM runs
                 WHERE (?1 = '[]' OR task_name IN (SELECT value FROM json_each(?1)))
                   AND (?2 = '[]' OR root_id IN (SELECT value FROM json_each(?2)))
                   AND (?3 IS NULL OR status = ?3) AND (?4 IS NULL OR seq < ?4)
                   AND (?6 = 0 OR parent_id IS NULL)
                 ORDER BY seq DESC LIMIT ?5"
            );
            load_runs(
                tx,
                &sql,
                &[
                    &serde_json::to_string(&filter.task_names).expect("strings serialise"),
                    &serde_json::to_string(&filter.root_ids).expect("strings serialise"),
                    &filter.status.map(|s| s.as_str()),
                    &filter.before_seq,
                    &filter.limit,
                    &filter.roots_only,
                ],
            )
        })
        .await
    }

    async fn start_attempt(&self, run_id: &str, at: DateTime<Utc>) -> Result<Option<RunRecord>> {
        let run_id = run_id.to_string();
        let node = self.node.id.clone();
        self.tx(move |tx| {
            let changed = tx.execute_cached(
                "UPDATE runs SET status = 'running', started_at = coalesce(started_at, ?2), not_before = NULL
                 WHERE id = ?1 AND status = 'pending'",
                params![run_id, ts(at)],
            )?;
            if changed == 0 {
                return Ok(None);
            }
            open_attempt(tx, &run_id, at, &node)?;
            load_run(tx, &run_id)
        })
        .await
    }

    async fn claim(&self, limit: u32, at: DateTime<Utc>) -> Result<Claimed> {
        let node = self.node.id.clone();
        self.tx(move |tx| {
            let now = ts(at);
            let ids = tx
                .prepare_cached(
                    "UPDATE runs SET status = 'running', started_at = coalesce(started_at, ?1), not_before = NULL
                     WHERE seq IN (SELECT seq FROM runs WHERE status = 'pending'
                                     AND (not_before IS NULL OR not_before <= ?1)
                                   ORDER BY seq LIMIT ?2)
                     RETURNING id, seq",
                )?
                .query_map(params![now, limit], |r| Ok((r.get::<_, i64>(1)?, r.get::<_, String>(0)?)))?
                .collect::<rusqlite::Result<std::collections::BTreeMap<_, _>>>()?;
            let mut runs = Vec::with_capacity(ids.len());
            for id in ids.values() {
                open_attempt(tx, id, at, &node)?;
                runs.push(load_run(tx, id)?.ok_or_else(|| StoreError::Corrupt(format!("run {id} vanished")))?);
            }
            // The earliest pending run: one with no `not_before` is due now.
            let earliest: Option<Option<String>> =
                tx.query_row_cached(NEXT_DUE, [], |r| r.get(0)).optional()?;
            let next_due = match earliest {
                None => None,
                Some(None) => Some(at),
                Some(Some(due)) => Some(parse_ts(&due)?),
            };
            Ok(Claimed { runs, next_due })
        })
        .await
    }

    async fn finish_attempt(&self, end: AttemptEnd) -> Result<Option<RunRecord>> {
        let node = self.node.id.clone();
        self.tx(move |tx| {
            let at = ts(end.at);
            let (attempt_status, attempt_error, attempt_output) = outcome_columns(&end.outcome);
            let changed = tx.execute_cached(
                "UPDATE attempts SET status = ?3, completed_at = ?4, error = ?5, output = ?6
                 WHERE run_id = ?1 AND attempt = ?2 AND status = 'running' AND node_id IS ?7
                   AND EXISTS (SELECT 1 FROM runs WHERE id = ?1 AND status = 'running')",
                params![end.run_id, end.attempt, attempt_status, at, attempt_error, attempt_output, node],
            )?;
            if changed == 0 {
                return Ok(None);
            }
            match &end.outcome {
                AttemptOutcome::Completed { .. } => tx.execute_cached(
                    "UPDATE runs SET status = 'completed', output = ?2, error = NULL, completed_at = ?3 WHERE id = ?1",
                    params![end.run_id, attempt_output, at],
                )?,
                AttemptOutcome::Retry { error, retry_at } => tx.execute_cached(
                    "UPDATE runs SET status = 'pending', error = ?2, not_before = ?3 WHERE id = ?1",
                    params![end.run_id, error, ts(*retry_at)],
                )?,
                AttemptOutcome::Failed { error } => tx.execute_cached(
                    "UPDATE runs SET status = 'failed', error = ?2, completed_at = ?3 WHERE id = ?1",
                    params![end.run_id, error, at],
                )?,
            };
            load_run(tx, &end.run_id)
        })
        .await
    }

    async fn cancel_run(&self, id: &str, at: DateTime<Utc>) -> Result<CancelOutcome> {
        let id = id.to_string();
        self.tx(move |tx| {
            let status: Option<String> =
                tx.query_row_cached("SELECT status FROM runs WHERE id = ?1", [&id], |r| r.get(0)).optional()?;
            let Some(status) = status else { return Ok(CancelOutcome::NotFound) };
            let status = parse_state(&status)?;
            if status.is_terminal() {
                return Ok(CancelOutcome::AlreadyEnded(status));
            }
            let mut stmt = tx.prepare_cached(
                "WITH RECURSIVE tree(id) AS (
                     SELECT ?1 UNION ALL SELECT r.id FROM runs r JOIN tree t ON r.parent_id = t.id)
                 SELECT runs.id FROM runs JOIN tree ON runs.id = tree.id
                 WHERE runs.status IN ('pending', 'running') ORDER BY runs.seq",
            )?;
            let ids = stmt.query_map([&id], |r| r.get::<_, String>(0))?.collect::<rusqlite::Result<Vec<_>>>()?;
            let at = ts(at);
            for run_id in &ids {
                tx.execute_cached(
                    "UPDATE runs SET status = 'canceled', error = ?3, completed_at = ?2, not_before = NULL
                     WHERE id = ?1",
                    params![run_id, at, CANCELED],
                )?;
                tx.execute_cached(
                    "UPDATE attempts SET status = 'canceled', completed_at = ?2, error = ?3
                     WHERE run_id = ?1 AND status = 'running'",
                    params![run_id, at, CANCELED],
                )?;
            }
            Ok(CancelOutcome::Canceled(ids))
        })
        .await
    }

    async fn recover(&self, at: DateTime<Utc>) -> Result<Vec<RunRecord>> {
        // One process owns a SQLite database (the lock file), so every
        // running attempt in it was this node's.
        self.tx(move |tx| {
            let ids = tx
                .prepare(
                    "UPDATE attempts SET status = 'failed', interrupted = 1, completed_at = ?1, error = ?2
                     WHERE status = 'running' RETURNING run_id",
                )?
                .query_map(params![ts(at), INTERRUPTED], |r| r.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let mut runs = Vec::new();
            for id in &ids {
                tx.execute_cached("UPDATE runs SET status = 'pending' WHERE id = ?1 AND status = 'running'", [id])?;
                runs.extend(load_run(tx, id)?);
            }
            Ok(runs)
        })
        .await
    }

    async fn open_children(&self, parents: &[String]) -> Result<Vec<(String, u32)>> {
        let parents = serde_json::to_string(parents).expect("strings serialise");
        self.read(move |tx| {
            let mut stmt = tx.prepare_cached(
                "SELECT parent_id, count(*) FROM runs
                 WHERE parent_id IN (SELECT value FROM json_each(?1)) AND status IN ('pending', 'running')
                 GROUP BY parent_id",
            )?;
            let rows = stmt
                .query_map([parents], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    async fn append_logs(&self, lines: Vec<NewLogLine>) -> Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        self.tx(move |tx| {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO logs (run_id, task_name, attempt, stream, at, message) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            for l in &lines {
                stmt.execute(params![l.run_id, l.task_name, l.attempt, l.stream, ts(l.at), l.message])?;
            }
            Ok(())
        })
        .await
    }

    async fn query_logs(&self, query: &LogQuery) -> Result<Vec<LogLine>> {
        let query = query.clone();
        self.read(move |tx| {
            let mut run_ids = query.run_ids.clone();
            if query.include_descendants && !run_ids.is_empty() {
                let mut stmt = tx.prepare_cached(
                    "WITH RECURSIVE tree(id) AS (
                         SELECT ?1 UNION ALL SELECT r.id FROM runs r JOIN tree t ON r.parent_id = t.id)
                     SELECT id FROM tree",
                )?;
                let mut all = Vec::new();
                for id in &query.run_ids {
                    all.extend(stmt.query_map([id], |r| r.get::<_, String>(0))?.collect::<rusqlite::Result<Vec<_>>>()?);
                }
                run_ids = all;
            }
            let runs_json = serde_json::to_string(&run_ids).expect("strings serialise");
            let text_json = serde_json::to_string(&query.text).expect("strings serialise");
            let order = if query.newest_first { "DESC" } else { "ASC" };
            let mut stmt = tx.prepare_cached(&format!(
                "SELECT id, run_id, task_name, attempt, stream, at, message FROM logs
                 WHERE (?1 = '[]' OR run_id IN (SELECT value FROM json_each(?1)))
                   AND (?2 IS NULL OR at >= ?2) AND (?3 IS NULL OR at < ?3)
                   AND (?4 = '[]' OR EXISTS (SELECT 1 FROM json_each(?4) t WHERE instr(message, t.value) > 0))
                   AND (?5 IS NULL OR id > ?5)
                   AND (?7 = '[]' OR task_name IN (SELECT value FROM json_each(?7)))
                   AND (?8 = '[]' OR stream IN (SELECT value FROM json_each(?8)))
                 ORDER BY id {order} LIMIT ?6"
            ))?;
            // A text search scans lines one by one: stopped once it has
            // run SEARCH_LIMIT, rather than holding a connection for long.
            let deadline = std::time::Instant::now() + SEARCH_LIMIT;
            tx.progress_handler(20_000, Some(move || std::time::Instant::now() > deadline));
            let rows = stmt
                .query_map(
                    params![
                        runs_json,
                        query.start.map(ts),
                        query.end.map(ts),
                        text_json,
                        query.after_id,
                        query.limit,
                        serde_json::to_string(&query.task_names).expect("strings serialise"),
                        serde_json::to_string(&query.streams).expect("strings serialise"),
                    ],
                    |r| {
                        Ok((
                            r.get::<_, i64>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, String>(2)?,
                            r.get::<_, u32>(3)?,
                            r.get::<_, String>(4)?,
                            r.get::<_, String>(5)?,
                            r.get::<_, String>(6)?,
                        ))
                    },
                )?
                .collect::<rusqlite::Result<Vec<_>>>();
            tx.progress_handler(0, None::<fn() -> bool>);
            let rows = match rows {
                Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::OperationInterrupted) => {
                    return Err(StoreError::TooBroad(format!(
                        "the log search was stopped after {} s; narrow it to some runs (taskRunId) or a time range (startTime, endTime)",
                        SEARCH_LIMIT.as_secs()
                    ))
                    .into());
                }
                rows => rows?,
            };
            rows.into_iter()
                .map(|(id, run_id, task_name, attempt, stream, at, message)| {
                    Ok(LogLine { id, run_id, task_name, attempt, stream, at: parse_ts(&at)?, message })
                })
                .collect()
        })
        .await
    }

    async fn log_bytes(&self, run_id: &str) -> Result<u64> {
        let run_id = run_id.to_string();
        self.read(move |tx| {
            Ok(tx.query_row_cached(
                "SELECT coalesce(sum(length(CAST(message AS BLOB))), 0) FROM logs WHERE run_id = ?1",
                [&run_id],
                |r| r.get::<_, i64>(0),
            )? as u64)
        })
        .await
    }

    async fn create_session(
        &self,
        id: &str,
        key_tag: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<()> {
        let (id, key_tag) = (id.to_string(), key_tag.to_string());
        self.tx(move |tx| {
            let now = ts(Utc::now());
            tx.execute_cached("DELETE FROM sessions WHERE expires_at <= ?1", [&now])?;
            tx.execute_cached(
                "INSERT INTO sessions (id, key_tag, created_at, expires_at) VALUES (?1, ?2, ?3, ?4)",
                params![id, key_tag, now, ts(expires_at)],
            )?;
            Ok(())
        })
        .await
    }

    async fn session_alive(&self, id: &str, key_tag: &str, now: DateTime<Utc>) -> Result<bool> {
        let (id, key_tag) = (id.to_string(), key_tag.to_string());
        self.read(move |tx| {
            Ok(tx
                .query_row(
                    "SELECT 1 FROM sessions WHERE id = ?1 AND key_tag = ?2 AND expires_at > ?3",
                    params![id, key_tag, ts(now)],
                    |_| Ok(()),
                )
                .optional()?
                .is_some())
        })
        .await
    }

    async fn end_session(&self, id: &str) -> Result<()> {
        let id = id.to_string();
        self.tx(move |tx| {
            tx.execute_cached("DELETE FROM sessions WHERE id = ?1", [&id])?;
            Ok(())
        })
        .await
    }

    async fn stored_bytes(&self) -> Result<u64> {
        let wal = std::fs::metadata(&self.wal).map_or(0, |m| m.len());
        let pages = self
            .read(|tx| {
                Ok(tx.query_row(
                    "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()",
                    [],
                    |r| r.get::<_, i64>(0),
                )?)
            })
            .await?;
        Ok(pages.max(0) as u64 + wal)
    }

    fn node(&self) -> NodeId {
        self.node.clone()
    }

    async fn join(&self) -> Result<()> {
        Ok(())
    }

    async fn heartbeat(&self, _within: std::time::Duration) -> Result<bool> {
        Ok(true)
    }

    async fn rescue(&self) -> Result<Vec<String>> {
        // No other node can have died holding attempts of this file.
        Ok(Vec::new())
    }

    async fn rejoin(&self, _note: &str) -> Result<Vec<String>> {
        // One process holds the file (its lock): never fenced, but
        // rejoining is recovering.
        let runs = self.recover(Utc::now()).await?;
        Ok(runs.into_iter().map(|r| r.id).collect())
    }

    async fn leave(&self) -> Result<()> {
        Ok(())
    }

    async fn nodes(&self) -> Result<Vec<NodeRecord>> {
        let running: u32 = self
            .read(|tx| {
                Ok(tx.query_row_cached(
                    "SELECT count(*) FROM attempts WHERE status = 'running'",
                    [],
                    |r| r.get(0),
                )?)
            })
            .await?;
        let now = Utc::now();
        Ok(vec![NodeRecord {
            id: self.node.id.clone(),
            host: self.node.host.clone(),
            incarnation: self.node.incarnation.clone(),
            started_at: now,
            heartbeat_at: now,
            gone_at: None,
            running,
        }])
    }

    async fn prune(&self, before: DateTime<Utc>, batch: u32) -> Result<u64> {
        self.tx(move |tx| {
            let roots = tx
                .prepare_cached(
                    "SELECT id FROM runs r WHERE parent_id IS NULL
                       AND status IN ('completed', 'failed', 'canceled') AND completed_at < ?1
                       AND NOT EXISTS (SELECT 1 FROM runs c WHERE c.root_id = r.id
                                       AND c.status IN ('pending', 'running'))
                     ORDER BY seq LIMIT ?2",
                )?
                .query_map(params![ts(before), batch], |r| r.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            for root in &roots {
                tx.execute_cached(
                    "DELETE FROM logs WHERE run_id IN (SELECT id FROM runs WHERE root_id = ?1)",
                    [root],
                )?;
                tx.execute_cached(
                    "DELETE FROM attempts WHERE run_id IN (SELECT id FROM runs WHERE root_id = ?1)",
                    [root],
                )?;
                tx.execute_cached("DELETE FROM runs WHERE root_id = ?1", [root])?;
            }
            Ok(roots.len() as u64)
        })
        .await
    }

    async fn count_by_state(&self) -> Result<Vec<(RunState, u64)>> {
        self.read(|tx| {
            let rows = tx
                .prepare_cached(
                    "SELECT status, count(*) FROM runs GROUP BY status ORDER BY status",
                )?
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, u64>(1)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            rows.into_iter()
                .map(|(status, n)| Ok((parse_state(&status)?, n)))
                .collect()
        })
        .await
    }

    async fn subtask_counts(&self, roots: &[String]) -> Result<Vec<(String, RunState, u64)>> {
        let roots = serde_json::to_string(roots).expect("strings serialise");
        self.read(move |tx| {
            let rows = tx
                .prepare_cached(
                    "SELECT root_id, status, count(*) FROM runs
                     WHERE root_id IN (SELECT value FROM json_each(?1)) AND id != root_id
                     GROUP BY root_id, status",
                )?
                .query_map([&roots], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, u64>(2)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            rows.into_iter()
                .map(|(root, status, n)| Ok((root, parse_state(&status)?, n)))
                .collect()
        })
        .await
    }

    fn events(&self) -> Option<tokio::sync::broadcast::Receiver<StoreEvent>> {
        None
    }
}

#[cfg(test)]
mod tests {
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
}

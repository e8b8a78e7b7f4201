//! The connections and transactions: what a transaction's error means,
//! the cached statements, a call run on the writer thread in a
//! transaction of its own, and the connections that only read.

use super::*;

/// An error inside a transaction: SQLite's own, or the store's. SQLite's
/// are turned into a backend-neutral [`StoreError`] naming the file when
/// the transaction ends.
pub(super) enum TxError {
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
    pub(super) fn into_store(self, location: &str) -> StoreError {
        match self {
            Self::Store(e) => e,
            Self::Sqlite(e) => classify(e, location),
        }
    }
}

/// What a SQLite error means for the runtime.
pub(super) fn classify(e: rusqlite::Error, location: &str) -> StoreError {
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

pub(super) type TxResult<T> = std::result::Result<T, TxError>;

/// How many prepared statements each connection keeps: every statement of
/// the store fits, so none is parsed twice.
pub(super) const STATEMENT_CACHE: usize = 64;

/// `execute` and `query_row` through the connection's statement cache.
/// rusqlite's own prepare each statement anew, and parsing SQL was a
/// quarter of the store's CPU in a wide fan-out (BENCHMARKS.md, "The
/// runtime, per Rust child").
pub(super) trait CachedStatements {
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

/// One caller's transaction on the writer.
pub(super) struct TxCall<T, F> {
    pub(super) f: Option<F>,
    pub(super) out: Option<Result<T>>,
    pub(super) reply: tokio::sync::oneshot::Sender<Result<T>>,
    pub(super) location: Arc<str>,
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
pub(super) fn in_transaction<T>(
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
pub(super) const READERS: usize = 4;

/// How long a log search may scan before it is stopped.
pub(super) const SEARCH_LIMIT: std::time::Duration = std::time::Duration::from_secs(2);

/// The reader connections, taken by whoever finds one free.
pub(super) struct Readers {
    conns: Vec<Mutex<Connection>>,
    next: std::sync::atomic::AtomicUsize,
}

impl Readers {
    pub(super) fn open(path: &Path, n: usize) -> rusqlite::Result<Self> {
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
    pub(super) fn get(&self) -> std::sync::MutexGuard<'_, Connection> {
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
    pub(super) fn writer_stopped(&self) -> StoreError {
        StoreError::Unavailable {
            location: self.location.to_string(),
            detail: "the store's writer dropped the call".into(),
        }
    }

    /// Runs `f` in one read transaction (a consistent snapshot) on a
    /// reader connection, on the blocking pool.
    pub(super) async fn read<T, F>(&self, f: F) -> Result<T>
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
    pub(super) async fn tx<T, F>(&self, f: F) -> Result<T>
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

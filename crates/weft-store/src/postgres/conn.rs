//! Connecting, and every transaction: each within a deadline, a late
//! connection closed, a driver error told as what it means for the runtime
//! (and every URL shown without its password).

use super::listen::listen;
use super::schema::migrate;
use super::*;

pub(super) struct AbortOnDrop(pub(super) tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// An error inside a transaction: the driver's, or the store's.
pub(super) enum TxError {
    Sql(sqlx::Error),
    Store(StoreError),
}

impl From<sqlx::Error> for TxError {
    fn from(e: sqlx::Error) -> Self {
        Self::Sql(e)
    }
}

impl From<StoreError> for TxError {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

pub(super) type TxResult<T> = std::result::Result<T, TxError>;

/// What a driver error means for the runtime.
pub(super) fn classify(e: sqlx::Error, location: &str) -> StoreError {
    let location = location.to_string();
    let detail = e.to_string();
    match &e {
        sqlx::Error::Database(db) => match db.code().as_deref() {
            Some("53100") => StoreError::Full { location, detail },
            Some("25006") => StoreError::ReadOnly { location, detail },
            Some("XX001" | "XX002") => StoreError::Damaged { location, detail },
            Some(code)
                if code.starts_with("08")
                    || code.starts_with("53")
                    || code.starts_with("57P")
                    || code == "40001"
                    || code == "40P01" =>
            {
                StoreError::Unavailable { location, detail }
            }
            _ => StoreError::Query { location, detail },
        },
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => StoreError::Unavailable { location, detail },
        _ => StoreError::Query { location, detail },
    }
}

impl TxError {
    pub(super) fn into_store(self, location: &str) -> StoreError {
        match self {
            Self::Store(e) => e,
            Self::Sql(e) => classify(e, location),
        }
    }
}

/// A database URL as messages and logs may show it: the password left out
/// wherever it is (`user:password@`, a `password=` parameter), even in a
/// URL that does not parse.
pub fn redacted_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((user, host)) => {
            let user = user.split_once(':').map_or(user, |(user, _)| user);
            format!("{user}@{host}")
        }
        None => authority.to_string(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=***"),
                    _ => pair.to_string(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => tail.to_string(),
    };
    let scheme = if scheme.is_empty() {
        String::new()
    } else {
        format!("{scheme}://")
    };
    format!("{scheme}{authority}{tail}")
}

/// `postgres://user@host:port/db`, for messages: never the password.
pub(super) fn describe(options: &PgConnectOptions) -> String {
    format!(
        "postgres://{}@{}:{}/{}",
        options.get_username(),
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap_or(options.get_username())
    )
}

impl PgStore {
    /// Connects to the database at `url` as `node`, and brings its schema
    /// up to date. Fails with a message naming the database when it does
    /// not answer (within 10 s) or was written by a newer weft.
    pub async fn connect(url: &str, node: NodeId) -> Result<Self> {
        let refuse = |detail: String| StoreError::Open {
            location: redacted_url(url),
            detail,
        };
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(refuse(
                "not a PostgreSQL URL: expected postgres://user@host:port/database".into(),
            ));
        }
        let options: PgConnectOptions = url
            .parse()
            .map_err(|e| refuse(format!("not a PostgreSQL URL: {e}")))?;
        Self::connect_with(options, node, 16).await
    }

    /// [`PgStore::connect`] with parsed options and a pool size.
    pub async fn connect_with(
        options: PgConnectOptions,
        node: NodeId,
        pool_size: u32,
    ) -> Result<Self> {
        let location = describe(&options);
        let open_err = |e: sqlx::Error| StoreError::Open {
            location: location.clone(),
            detail: e.to_string(),
        };
        // One connection first, so a database that refuses (or a wrong
        // password) is said at once, not after the pool's timeout.
        let first = tokio::time::timeout(
            Duration::from_secs(10),
            <PgConnection as sqlx::Connection>::connect_with(&options),
        )
        .await
        .map_err(|_| StoreError::Open {
            location: location.clone(),
            detail: "no answer within 10 s".into(),
        })?
        .map_err(open_err)?;
        drop(first);
        let pool = PgPoolOptions::new()
            .max_connections(pool_size)
            .min_connections(1)
            .acquire_timeout(TX_DEADLINE)
            .connect_with(options.clone())
            .await
            .map_err(open_err)?;
        migrate(&pool, &location).await?;
        let schema: String = sqlx::query_scalar("SELECT current_schema()")
            .fetch_one(&pool)
            .await
            .map_err(|e| classify(e, &location))?;
        let channel: String = format!("weft_{schema}")
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .take(63)
            .collect();
        let (events, _) = broadcast::channel(1024);
        let node = Arc::new(RwLock::new(node));
        let listener = tokio::spawn(listen(
            pool.clone(),
            channel.clone(),
            node.clone(),
            events.clone(),
        ));
        let heartbeat_options = options.clone().application_name("weft heartbeat");
        Ok(Self {
            pool,
            node,
            location: location.into(),
            channel: channel.into(),
            events,
            heartbeat: Arc::default(),
            heartbeat_options,
            listener: Arc::new(std::sync::Mutex::new(AbortOnDrop(listener.abort_handle()))),
        })
    }

    /// Runs `f` in one transaction (READ COMMITTED), once more if the
    /// database broke a deadlock by aborting it; each try within
    /// [`TX_DEADLINE`].
    pub(super) async fn tx<T, F>(&self, f: F) -> Result<T>
    where
        T: Send,
        F: for<'c> Fn(&'c mut PgConnection) -> BoxFuture<'c, TxResult<T>> + Send + Sync,
    {
        let mut tries = 0;
        loop {
            tries += 1;
            let outcome = self.tx_once(&f).await;
            match outcome {
                Err(TxError::Sql(sqlx::Error::Database(db)))
                    if tries < 3 && matches!(db.code().as_deref(), Some("40P01" | "40001")) =>
                {
                    continue;
                }
                other => return other.map_err(|e| e.into_store(&self.location)),
            }
        }
    }

    /// One try of [`PgStore::tx`].
    pub(super) async fn tx_once<T, F>(&self, f: &F) -> TxResult<T>
    where
        T: Send,
        F: for<'c> Fn(&'c mut PgConnection) -> BoxFuture<'c, TxResult<T>> + Send + Sync,
    {
        let deadline = tokio::time::Instant::now() + TX_DEADLINE;
        let no_answer = || {
            TxError::Store(StoreError::Unavailable {
                location: self.location.to_string(),
                detail: format!("no answer within {} s", TX_DEADLINE.as_secs()),
            })
        };
        let mut conn = tokio::time::timeout_at(deadline, self.pool.acquire())
            .await
            .map_err(|_| no_answer())??;
        let work = async {
            let mut tx = sqlx::Connection::begin(&mut *conn).await?;
            match f(&mut tx).await {
                Ok(out) => {
                    tx.commit().await?;
                    Ok(out)
                }
                // Rolled back here, not left to the pool: the connection
                // must not sit idle in a transaction, holding locks.
                Err(e) => {
                    let _ = tx.rollback().await;
                    Err(e)
                }
            }
        };
        match tokio::time::timeout_at(deadline, work).await {
            Ok(outcome) => outcome,
            Err(_) => {
                // Taken out of the pool and closed: it may never answer.
                drop(conn.detach());
                Err(no_answer())
            }
        }
    }

    /// This node as it is now.
    pub(super) fn current(&self) -> NodeId {
        self.node.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(super) fn me(&self) -> String {
        let node = self.current();
        format!("{} {}", node.id, node.incarnation)
    }
}

//! The shared store: PostgreSQL, for several `weft serve` nodes (and
//! `weft dev --database-url`).
//!
//! PostgreSQL is the cluster's only coordinator, as in River, Oban or
//! Hatchet: nodes claim pending runs with `FOR UPDATE SKIP LOCKED`, say
//! they are alive with a heartbeat row (by the database's clock), take over
//! the attempts of nodes that fell silent, and hear of each other's work
//! through `LISTEN/NOTIFY` sent inside the transactions that make it. No
//! node talks to another.
//!
//! Every uniqueness (root idempotency keys, subtask keys) is a unique index
//! with `INSERT ... ON CONFLICT`, never a lookup followed by an insert, so
//! it holds under concurrent starts from many nodes.

use std::borrow::Cow;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions, PgRow};
use sqlx::{PgConnection, Row};
use tokio::sync::broadcast;
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
const ROOT_IDEMPOTENCY_WINDOW: chrono::Duration = chrono::Duration::hours(24);

/// How long one transaction may take, the wait for a connection included,
/// before the database is called unavailable. A connection can hang
/// without end when the network drops it silently (nothing in the driver
/// bounds a statement's wait, and it sets no TCP keepalive): with this,
/// a request fails with a message naming the database instead of
/// hanging, and a connection that took too long is closed, never reused.
const TX_DEADLINE: Duration = Duration::from_secs(10);

/// The schema's history, applied by sqlx's migrator (which records each
/// version in `_sqlx_migrations` and refuses a database with versions it
/// does not know).
fn migrator() -> sqlx::migrate::Migrator {
    use sqlx::migrate::{Migration, MigrationType, Migrator};
    let steps = [
        (
            1,
            "schema",
            include_str!("../migrations/postgres/0001_schema.sql"),
        ),
        (
            2,
            "roots",
            include_str!("../migrations/postgres/0002_roots.sql"),
        ),
        (
            3,
            "pending_due",
            include_str!("../migrations/postgres/0003_pending_due.sql"),
        ),
        (
            4,
            "node_timeout",
            include_str!("../migrations/postgres/0004_node_timeout.sql"),
        ),
        (
            5,
            "sessions",
            include_str!("../migrations/postgres/0005_sessions.sql"),
        ),
    ];
    Migrator {
        migrations: Cow::Owned(
            steps
                .into_iter()
                .map(|(version, name, sql)| {
                    Migration::new(
                        version,
                        name.into(),
                        MigrationType::Simple,
                        sql.into(),
                        false,
                    )
                })
                .collect(),
        ),
        ignore_missing: false,
        locking: true,
        no_tx: false,
    }
}

/// The PostgreSQL store. Cheap to clone.
#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
    /// This node; its incarnation changes when it rejoins.
    node: Arc<RwLock<NodeId>>,
    /// The database, as messages name it (no password).
    location: Arc<str>,
    /// The `NOTIFY` channel of this schema.
    channel: Arc<str>,
    events: broadcast::Sender<StoreEvent>,
    /// The heartbeat's own connection (see [`Store::heartbeat`]), made
    /// with these options: never one of the pool's, so a pool busy with
    /// claims or stuck on a dead connection cannot hold a heartbeat up.
    heartbeat: Arc<tokio::sync::Mutex<Option<PgConnection>>>,
    heartbeat_options: PgConnectOptions,
    /// The listener; stopped when the last clone goes, started anew when
    /// the node rejoins.
    listener: Arc<std::sync::Mutex<AbortOnDrop>>,
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// An error inside a transaction: the driver's, or the store's.
enum PgErr {
    Sql(sqlx::Error),
    Store(StoreError),
}

impl From<sqlx::Error> for PgErr {
    fn from(e: sqlx::Error) -> Self {
        Self::Sql(e)
    }
}

impl From<StoreError> for PgErr {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

type PgResult<T> = std::result::Result<T, PgErr>;

/// What a driver error means for the runtime.
fn classify(e: sqlx::Error, location: &str) -> StoreError {
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

impl PgErr {
    fn into_store(self, location: &str) -> StoreError {
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
fn describe(options: &PgConnectOptions) -> String {
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
    async fn tx<T, F>(&self, f: F) -> Result<T>
    where
        T: Send,
        F: for<'c> Fn(&'c mut PgConnection) -> BoxFuture<'c, PgResult<T>> + Send + Sync,
    {
        let mut tries = 0;
        loop {
            tries += 1;
            let outcome = self.tx_once(&f).await;
            match outcome {
                Err(PgErr::Sql(sqlx::Error::Database(db)))
                    if tries < 3 && matches!(db.code().as_deref(), Some("40P01" | "40001")) =>
                {
                    continue;
                }
                other => return other.map_err(|e| e.into_store(&self.location)),
            }
        }
    }

    /// One try of [`PgStore::tx`].
    async fn tx_once<T, F>(&self, f: &F) -> PgResult<T>
    where
        T: Send,
        F: for<'c> Fn(&'c mut PgConnection) -> BoxFuture<'c, PgResult<T>> + Send + Sync,
    {
        let deadline = tokio::time::Instant::now() + TX_DEADLINE;
        let no_answer = || {
            PgErr::Store(StoreError::Unavailable {
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
    fn current(&self) -> NodeId {
        self.node.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn me(&self) -> String {
        let node = self.current();
        format!("{} {}", node.id, node.incarnation)
    }
}

async fn migrate(pool: &PgPool, location: &str) -> Result<()> {
    let migrator = migrator();
    match migrator.run(pool).await {
        Ok(()) => Ok(()),
        Err(sqlx::migrate::MigrateError::VersionMissing(found)) => Err(StoreError::SchemaTooNew {
            location: location.to_string(),
            found,
            known: migrator.migrations.len() as i64,
        }),
        Err(sqlx::migrate::MigrateError::Execute(e)) => Err(classify(e, location)),
        Err(e) => Err(StoreError::Open {
            location: location.to_string(),
            detail: format!("could not bring the schema up to date: {e}"),
        }),
    }
}

/// Hears the other nodes: one connection that `LISTEN`s, reconnecting when
/// it drops. Notifications sent while it was down are lost, so a
/// reconnect is told as [`StoreEvent::Resync`].
async fn listen(
    pool: PgPool,
    channel: String,
    node: Arc<RwLock<NodeId>>,
    events: broadcast::Sender<StoreEvent>,
) {
    let me = || {
        let node = node.read().unwrap_or_else(|p| p.into_inner());
        format!("{} {}", node.id, node.incarnation)
    };
    loop {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!("cannot listen for other nodes' work: {e}; trying again");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if let Err(e) = listener.listen(&channel).await {
            tracing::warn!("cannot LISTEN {channel}: {e}; trying again");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        let _ = events.send(StoreEvent::Resync);
        loop {
            match listener.try_recv().await {
                Ok(Some(n)) => {
                    if let Some(event) = parse_event(n.payload(), &me()) {
                        let _ = events.send(event);
                    }
                }
                // The connection was lost; the next call reconnects.
                Ok(None) => {
                    let _ = events.send(StoreEvent::Resync);
                }
                Err(e) => {
                    tracing::warn!("lost the connection that hears other nodes: {e}");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    break;
                }
            }
        }
    }
}

/// Payloads: `p` (work pending), `e <node> <incarnation> <run> <parent|->`
/// (a run ended), `c <node> <incarnation>` (runs canceled). A node's own
/// notifications are skipped: it knew first.
fn parse_event(payload: &str, me: &str) -> Option<StoreEvent> {
    let mut words = payload.split(' ');
    match words.next()? {
        "p" => Some(StoreEvent::Pending),
        "e" => {
            let from = format!("{} {}", words.next()?, words.next()?);
            let run_id = words.next()?.to_string();
            let parent_id = words.next().filter(|p| *p != "-").map(str::to_string);
            (from != me).then_some(StoreEvent::Ended { run_id, parent_id })
        }
        "c" => {
            let from = format!("{} {}", words.next()?, words.next()?);
            (from != me).then_some(StoreEvent::Canceled)
        }
        _ => None,
    }
}

async fn notify(conn: &mut PgConnection, channel: &str, payload: &str) -> PgResult<()> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(channel)
        .bind(payload)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// PostgreSQL text cannot hold NUL; a task may print one.
fn without_nul(s: &str) -> Cow<'_, str> {
    if s.contains('\0') {
        Cow::Owned(s.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(s)
    }
}

const RUN_COLUMNS: &str = "seq, id, task_name, status, input, output, error, parent_id, root_id, \
                           created_at, started_at, completed_at, not_before, created_by_attempt";

fn attempt_from_row(r: &PgRow) -> PgResult<(String, AttemptRecord)> {
    let output: Option<String> = r.try_get("output")?;
    Ok((
        r.try_get("run_id")?,
        AttemptRecord {
            node_id: r.try_get("node_id")?,
            number: r.try_get::<i32, _>("attempt")? as u32,
            status: parse_state(r.try_get("status")?)?,
            started_at: r.try_get("started_at")?,
            completed_at: r.try_get("completed_at")?,
            error: r.try_get("error")?,
            output: output.as_deref().map(parse_json).transpose()?,
            interrupted: r.try_get("interrupted")?,
        },
    ))
}

fn run_from_row(r: &PgRow) -> PgResult<RunRecord> {
    let input: String = r.try_get("input")?;
    let output: Option<String> = r.try_get("output")?;
    Ok(RunRecord {
        seq: r.try_get("seq")?,
        id: r.try_get("id")?,
        task_name: r.try_get("task_name")?,
        status: parse_state(r.try_get("status")?)?,
        input: parse_json(&input)?,
        output: output.as_deref().map(parse_json).transpose()?,
        error: r.try_get("error")?,
        parent_id: r.try_get("parent_id")?,
        root_id: r.try_get("root_id")?,
        created_at: r.try_get("created_at")?,
        started_at: r.try_get("started_at")?,
        completed_at: r.try_get("completed_at")?,
        not_before: r.try_get("not_before")?,
        parent_attempt: r
            .try_get::<Option<i32>, _>("created_by_attempt")?
            .map(|n| n as u32),
        attempts: Vec::new(),
    })
}

/// Runs with their attempts, in the order of `rows`.
async fn with_attempts(conn: &mut PgConnection, rows: Vec<PgRow>) -> PgResult<Vec<RunRecord>> {
    let mut runs = rows
        .iter()
        .map(run_from_row)
        .collect::<PgResult<Vec<_>>>()?;
    if runs.is_empty() {
        return Ok(runs);
    }
    let ids: Vec<&str> = runs.iter().map(|r| r.id.as_str()).collect();
    let attempts = sqlx::query(
        "SELECT run_id, attempt, status, started_at, completed_at, error, output, interrupted, node_id
         FROM attempts WHERE run_id = ANY($1) ORDER BY run_id, attempt",
    )
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await?;
    let mut by_run: std::collections::HashMap<String, Vec<AttemptRecord>> = Default::default();
    for row in &attempts {
        let (run_id, attempt) = attempt_from_row(row)?;
        by_run.entry(run_id).or_default().push(attempt);
    }
    for run in &mut runs {
        run.attempts = by_run.remove(&run.id).unwrap_or_default();
    }
    Ok(runs)
}

async fn load_run(conn: &mut PgConnection, id: &str) -> PgResult<Option<RunRecord>> {
    let rows = sqlx::query(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = $1"))
        .bind(id)
        .fetch_all(&mut *conn)
        .await?;
    Ok(with_attempts(conn, rows).await?.pop())
}

async fn load_runs_by_ids(conn: &mut PgConnection, ids: &[String]) -> PgResult<Vec<RunRecord>> {
    let rows = sqlx::query(&format!(
        "SELECT {RUN_COLUMNS} FROM runs WHERE id = ANY($1) ORDER BY seq"
    ))
    .bind(ids)
    .fetch_all(&mut *conn)
    .await?;
    with_attempts(conn, rows).await
}

/// The child an earlier attempt of the parent started (see
/// [`crate::adoption`]), taken by this attempt: locked, so two identical
/// calls of one attempt racing each other get two different children.
async fn adopt(
    conn: &mut PgConnection,
    new: &NewRun,
    input_text: &str,
) -> PgResult<Option<String>> {
    let Some(parent) = &new.parent else {
        return Ok(None);
    };
    if parent.attempt <= 1 {
        return Ok(None);
    }
    let found: Option<String> = sqlx::query_scalar(
        "UPDATE runs SET taken_by_attempt = $4 WHERE seq = (
             SELECT seq FROM runs
             WHERE parent_id = $1 AND task_name = $2 AND input_hash = $3 AND taken_by_attempt < $4
               AND status NOT IN ('failed', 'canceled') AND input::jsonb = $5::jsonb
             ORDER BY seq LIMIT 1 FOR UPDATE)
         RETURNING id",
    )
    .bind(&parent.run_id)
    .bind(&new.task_name)
    .bind(input_fingerprint(&new.input.to_value()))
    .bind(parent.attempt as i32)
    .bind(input_text)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(found)
}

async fn create_run_in(
    conn: &mut PgConnection,
    new: &NewRun,
    channel: &str,
) -> PgResult<CreatedRun> {
    let input_text = new.input.as_str().to_string();
    if let Some(parent) = &new.parent {
        let running: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM attempts WHERE run_id = $1 AND attempt = $2 AND status = 'running')",
        )
        .bind(&parent.run_id)
        .bind(parent.attempt as i32)
        .fetch_one(&mut *conn)
        .await?;
        if !running {
            return Err(StoreError::AttemptEnded {
                run_id: parent.run_id.clone(),
                attempt: parent.attempt,
            }
            .into());
        }
    }
    let id = new_run_id();
    // Root runs: the key is taken (new, or expired and taken again) by one
    // start only; the others find the run it names.
    if let (None, Some(key)) = (&new.parent, &new.idempotency_key) {
        let taken: Option<String> = sqlx::query_scalar(
            "INSERT INTO root_keys (key, run_id, created_at) VALUES ($1, $2, $3)
             ON CONFLICT (key) DO UPDATE SET run_id = EXCLUDED.run_id, created_at = EXCLUDED.created_at
                 WHERE root_keys.created_at < $4
             RETURNING run_id",
        )
        .bind(key)
        .bind(&id)
        .bind(new.at)
        .bind(new.at - ROOT_IDEMPOTENCY_WINDOW)
        .fetch_optional(&mut *conn)
        .await?;
        if taken.is_none() {
            let existing: String =
                sqlx::query_scalar("SELECT run_id FROM root_keys WHERE key = $1")
                    .bind(key)
                    .fetch_one(&mut *conn)
                    .await?;
            let run = load_run(conn, &existing).await?.ok_or_else(|| {
                StoreError::Corrupt(format!("idempotency key {key:?} names a missing run"))
            })?;
            return Ok(CreatedRun {
                run,
                how: Creation::Deduplicated,
            });
        }
    }
    if let (Some(parent), Some(key)) = (&new.parent, &new.idempotency_key) {
        let found: Option<String> = sqlx::query_scalar(
            "UPDATE runs SET taken_by_attempt = greatest(coalesce(taken_by_attempt, 0), $4)
             WHERE parent_id = $1 AND idempotency_key = $2 AND coalesce(idempotency_created_at, '') = coalesce($3, '')
             RETURNING id",
        )
        .bind(&parent.run_id)
        .bind(key)
        .bind(&new.idempotency_created_at)
        .bind(parent.attempt as i32)
        .fetch_optional(&mut *conn)
        .await?;
        if let Some(found) = found {
            let run = load_run(conn, &found).await?.expect("just found");
            return Ok(CreatedRun {
                run,
                how: Creation::Deduplicated,
            });
        }
    }
    if let Some(adopted) = adopt(conn, new, &input_text).await? {
        let run = load_run(conn, &adopted).await?.expect("just adopted");
        return Ok(CreatedRun {
            run,
            how: Creation::Adopted,
        });
    }
    let root_id = new
        .parent
        .as_ref()
        .map_or(id.clone(), |p| p.root_id.clone());
    let inserted: Option<String> = sqlx::query_scalar(
        "INSERT INTO runs (id, task_name, status, input, parent_id, root_id, created_by_attempt, taken_by_attempt,
                           input_hash, idempotency_key, idempotency_created_at, created_at)
         VALUES ($1, $2, 'pending', $3, $4, $5, $6, $6, $7, $8, $9, $10)
         ON CONFLICT (parent_id, idempotency_key, coalesce(idempotency_created_at, ''))
             WHERE parent_id IS NOT NULL AND idempotency_key IS NOT NULL
         DO NOTHING
         RETURNING id",
    )
    .bind(&id)
    .bind(&new.task_name)
    .bind(&input_text)
    .bind(new.parent.as_ref().map(|p| p.run_id.clone()))
    .bind(&root_id)
    .bind(new.parent.as_ref().map(|p| p.attempt as i32))
    .bind(new.parent.as_ref().map(|_| input_fingerprint(&new.input.to_value())))
    .bind(&new.idempotency_key)
    .bind(&new.idempotency_created_at)
    .bind(new.at)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(id) = inserted else {
        // The same subtask start committed by a concurrent request.
        let (parent, key) = (
            new.parent.as_ref().expect("keyed"),
            new.idempotency_key.as_ref().expect("keyed"),
        );
        let existing: String = sqlx::query_scalar(
            "SELECT id FROM runs WHERE parent_id = $1 AND idempotency_key = $2
             AND coalesce(idempotency_created_at, '') = coalesce($3, '')",
        )
        .bind(&parent.run_id)
        .bind(key)
        .bind(&new.idempotency_created_at)
        .fetch_one(&mut *conn)
        .await?;
        let run = load_run(conn, &existing).await?.expect("just found");
        return Ok(CreatedRun {
            run,
            how: Creation::Deduplicated,
        });
    };
    notify(conn, channel, "p").await?;
    let run = load_run(conn, &id).await?.expect("just inserted");
    Ok(CreatedRun {
        run,
        how: Creation::New,
    })
}

/// Opens the next attempt of runs just moved to running, for this node.
async fn open_attempts(
    conn: &mut PgConnection,
    ids: &[String],
    at: DateTime<Utc>,
    node: &NodeId,
) -> PgResult<()> {
    sqlx::query(
        "INSERT INTO attempts (run_id, attempt, status, started_at, node_id, node_incarnation)
         SELECT id, coalesce((SELECT max(a.attempt) FROM attempts a WHERE a.run_id = id), 0) + 1,
                'running', $2, $3, $4
         FROM unnest($1::text[]) AS id",
    )
    .bind(ids)
    .bind(at)
    .bind(&node.id)
    .bind(&node.incarnation)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Whose running attempts [`interrupt`] closes.
enum Holders<'a> {
    /// This node's, whatever its incarnation (it is starting again).
    Node(&'a str),
    /// Those of this incarnation of this node (it fenced itself).
    Incarnation(&'a str, &'a str),
    /// Those of nodes that are gone, or of an incarnation that is no
    /// longer its node's (rescue).
    Orphaned,
}

/// Closes running attempts as interrupted and puts their runs back to
/// pending; returns the runs.
async fn interrupt(
    conn: &mut PgConnection,
    holders: Holders<'_>,
    channel: &str,
) -> PgResult<Vec<String>> {
    const CLOSE: &str = "UPDATE attempts SET status = 'failed', interrupted = true, completed_at = now(), error = $1
                         WHERE status = 'running' AND ";
    let ids: Vec<String> = match holders {
        Holders::Node(node) => {
            sqlx::query_scalar(&format!("{CLOSE} node_id = $2 RETURNING run_id"))
                .bind(INTERRUPTED)
                .bind(node)
                .fetch_all(&mut *conn)
                .await?
        }
        Holders::Incarnation(node, incarnation) => {
            sqlx::query_scalar(&format!(
                "{CLOSE} node_id = $2 AND node_incarnation = $3 RETURNING run_id"
            ))
            .bind(INTERRUPTED)
            .bind(node)
            .bind(incarnation)
            .fetch_all(&mut *conn)
            .await?
        }
        Holders::Orphaned => {
            sqlx::query_scalar(&format!(
                "{CLOSE} NOT EXISTS (SELECT 1 FROM nodes n WHERE n.id = attempts.node_id
                                     AND n.incarnation = attempts.node_incarnation AND n.gone_at IS NULL)
                 RETURNING run_id"
            ))
            .bind(INTERRUPTED)
            .fetch_all(&mut *conn)
            .await?
        }
    };
    if !ids.is_empty() {
        sqlx::query("UPDATE runs SET status = 'pending' WHERE id = ANY($1) AND status = 'running'")
            .bind(&ids)
            .execute(&mut *conn)
            .await?;
        notify(conn, channel, "p").await?;
    }
    Ok(ids)
}

#[async_trait]
impl Store for PgStore {
    fn node(&self) -> NodeId {
        self.current()
    }

    async fn register_tasks(
        &self,
        tasks: &[TaskDefinition],
        at: DateTime<Utc>,
    ) -> Result<Vec<TaskRecord>> {
        let tasks = tasks.to_vec();
        self.tx(move |conn| {
            let tasks = tasks.clone();
            Box::pin(async move {
                sqlx::query("UPDATE tasks SET registered = false").execute(&mut *conn).await?;
                for task in &tasks {
                    let options =
                        serde_json::to_string(&task.options.clone().unwrap_or_default()).expect("options serialise");
                    let parameters =
                        task.parameters.as_ref().map(|p| serde_json::to_string(p).expect("parameters serialise"));
                    sqlx::query(
                        "INSERT INTO tasks (name, id, options, parameters, registered, created_at, updated_at)
                         VALUES ($1, $2, $3, $4, true, $5, $5)
                         ON CONFLICT (name) DO UPDATE SET options = $3, parameters = $4, registered = true, updated_at = $5",
                    )
                    .bind(&task.name)
                    .bind(TaskRecord::id_for(&task.name))
                    .bind(options)
                    .bind(parameters)
                    .bind(at)
                    .execute(&mut *conn)
                    .await?;
                }
                Ok(())
            })
        })
        .await?;
        self.list_tasks().await
    }

    async fn list_tasks(&self) -> Result<Vec<TaskRecord>> {
        self.tx(|conn| {
            Box::pin(async move {
                let rows = sqlx::query(
                    "SELECT id, name, options, parameters, registered, created_at FROM tasks
                     ORDER BY registered DESC, name",
                )
                .fetch_all(&mut *conn)
                .await?;
                rows.iter()
                    .map(|r| {
                        let options: String = r.try_get("options")?;
                        let parameters: Option<String> = r.try_get("parameters")?;
                        Ok(TaskRecord {
                            id: r.try_get("id")?,
                            name: r.try_get("name")?,
                            options: serde_json::from_str::<TaskOptions>(&options)
                                .map_err(|e| StoreError::Corrupt(format!("task options: {e}")))?,
                            parameters: parameters
                                .map(|p| serde_json::from_str(&p))
                                .transpose()
                                .map_err(|e| {
                                    StoreError::Corrupt(format!("task parameters: {e}"))
                                })?,
                            registered: r.try_get("registered")?,
                            created_at: r.try_get("created_at")?,
                        })
                    })
                    .collect()
            })
        })
        .await
    }

    async fn create_run(&self, new: NewRun) -> Result<CreatedRun> {
        let channel = self.channel.clone();
        self.tx(move |conn| {
            let (new, channel) = (new.clone(), channel.clone());
            Box::pin(async move { create_run_in(conn, &new, &channel).await })
        })
        .await
    }

    async fn get_run(&self, id: &str) -> Result<Option<RunRecord>> {
        let id = id.to_string();
        self.tx(move |conn| {
            let id = id.clone();
            Box::pin(async move { load_run(conn, &id).await })
        })
        .await
    }

    async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<RunRecord>> {
        let filter = filter.clone();
        self.tx(move |conn| {
            let filter = filter.clone();
            Box::pin(async move {
                let rows = sqlx::query(&format!(
                    "SELECT {RUN_COLUMNS} FROM runs
                     WHERE (cardinality($1::text[]) = 0 OR task_name = ANY($1))
                       AND (cardinality($2::text[]) = 0 OR root_id = ANY($2))
                       AND ($3::text IS NULL OR status = $3) AND ($4::bigint IS NULL OR seq < $4)
                       AND (NOT $6 OR parent_id IS NULL)
                     ORDER BY seq DESC LIMIT $5"
                ))
                .bind(&filter.task_names)
                .bind(&filter.root_ids)
                .bind(filter.status.map(|s| s.as_str()))
                .bind(filter.before_seq)
                .bind(i64::from(filter.limit))
                .bind(filter.roots_only)
                .fetch_all(&mut *conn)
                .await?;
                with_attempts(conn, rows).await
            })
        })
        .await
    }

    async fn start_attempt(&self, run_id: &str, at: DateTime<Utc>) -> Result<Option<RunRecord>> {
        let run_id = run_id.to_string();
        let node = self.current();
        self.tx(move |conn| {
            let (run_id, node) = (run_id.clone(), node.clone());
            Box::pin(async move {
                let changed = sqlx::query(
                    "UPDATE runs SET status = 'running', started_at = coalesce(started_at, $2), not_before = NULL
                     WHERE id = $1 AND status = 'pending'",
                )
                .bind(&run_id)
                .bind(at)
                .execute(&mut *conn)
                .await?
                .rows_affected();
                if changed == 0 {
                    return Ok(None);
                }
                open_attempts(conn, std::slice::from_ref(&run_id), at, &node).await?;
                load_run(conn, &run_id).await
            })
        })
        .await
    }

    async fn claim(&self, limit: u32, at: DateTime<Utc>) -> Result<Claimed> {
        let node = self.current();
        self.tx(move |conn| {
            let node = node.clone();
            Box::pin(async move {
                // Not by an incarnation declared dead or replaced: its
                // attempts would be taken over at once, while it started
                // them.
                let ids: Vec<String> = sqlx::query_scalar(
                    "WITH due AS (
                         SELECT seq FROM runs
                         WHERE status = 'pending' AND (not_before IS NULL OR not_before <= $1)
                           AND NOT EXISTS (SELECT 1 FROM nodes WHERE id = $3 AND (incarnation <> $4 OR gone_at IS NOT NULL))
                         ORDER BY seq LIMIT $2 FOR UPDATE SKIP LOCKED)
                     UPDATE runs r SET status = 'running', started_at = coalesce(r.started_at, $1), not_before = NULL
                     FROM due WHERE r.seq = due.seq
                     RETURNING r.id",
                )
                .bind(at)
                .bind(i64::from(limit))
                .bind(&node.id)
                .bind(&node.incarnation)
                .fetch_all(&mut *conn)
                .await?;
                if !ids.is_empty() {
                    open_attempts(conn, &ids, at, &node).await?;
                }
                let runs = load_runs_by_ids(conn, &ids).await?;
                // The earliest pending run, off `runs_pending_due`; one with
                // no `not_before` is due now.
                let earliest: Option<Option<DateTime<Utc>>> = sqlx::query_scalar(
                    "SELECT not_before FROM runs WHERE status = 'pending'
                     ORDER BY not_before NULLS FIRST LIMIT 1",
                )
                .fetch_optional(&mut *conn)
                .await?;
                let next_due = earliest.map(|due| due.unwrap_or(at));
                Ok(Claimed { runs, next_due })
            })
        })
        .await
    }

    async fn finish_attempt(&self, end: AttemptEnd) -> Result<Option<RunRecord>> {
        let node = self.current();
        let channel = self.channel.clone();
        let me = self.me();
        self.tx(move |conn| {
            let (end, node, channel, me) = (end.clone(), node.clone(), channel.clone(), me.clone());
            Box::pin(async move {
                let (attempt_status, attempt_error, attempt_output) = outcome_columns(&end.outcome);
                // Fenced: only this node's incarnation ends its attempt, and
                // only while the attempt and its run are still running.
                let changed = sqlx::query(
                    "UPDATE attempts SET status = $3, completed_at = $4, error = $5, output = $6
                     WHERE run_id = $1 AND attempt = $2 AND status = 'running'
                       AND node_id = $7 AND node_incarnation = $8
                       AND EXISTS (SELECT 1 FROM runs WHERE id = $1 AND status = 'running')",
                )
                .bind(&end.run_id)
                .bind(end.attempt as i32)
                .bind(attempt_status)
                .bind(end.at)
                .bind(&attempt_error)
                .bind(&attempt_output)
                .bind(&node.id)
                .bind(&node.incarnation)
                .execute(&mut *conn)
                .await?
                .rows_affected();
                if changed == 0 {
                    return Ok(None);
                }
                match &end.outcome {
                    AttemptOutcome::Completed { .. } => {
                        sqlx::query(
                            "UPDATE runs SET status = 'completed', output = $2, error = NULL, completed_at = $3 WHERE id = $1",
                        )
                        .bind(&end.run_id)
                        .bind(&attempt_output)
                        .bind(end.at)
                        .execute(&mut *conn)
                        .await?;
                    }
                    AttemptOutcome::Retry { error, retry_at } => {
                        sqlx::query("UPDATE runs SET status = 'pending', error = $2, not_before = $3 WHERE id = $1")
                            .bind(&end.run_id)
                            .bind(error)
                            .bind(retry_at)
                            .execute(&mut *conn)
                            .await?;
                        notify(conn, &channel, "p").await?;
                    }
                    AttemptOutcome::Failed { error } => {
                        sqlx::query("UPDATE runs SET status = 'failed', error = $2, completed_at = $3 WHERE id = $1")
                            .bind(&end.run_id)
                            .bind(error)
                            .bind(end.at)
                            .execute(&mut *conn)
                            .await?;
                    }
                }
                let run = load_run(conn, &end.run_id).await?;
                if let Some(run) = run.as_ref().filter(|r| r.status.is_terminal()) {
                    let parent = run.parent_id.as_deref().unwrap_or("-");
                    notify(conn, &channel, &format!("e {me} {} {parent}", run.id)).await?;
                }
                Ok(run)
            })
        })
        .await
    }

    async fn cancel_run(&self, id: &str, at: DateTime<Utc>) -> Result<CancelOutcome> {
        let id = id.to_string();
        let channel = self.channel.clone();
        let me = self.me();
        self.tx(move |conn| {
            let (id, channel, me) = (id.clone(), channel.clone(), me.clone());
            Box::pin(async move {
                let status: Option<String> = sqlx::query_scalar("SELECT status FROM runs WHERE id = $1 FOR UPDATE")
                    .bind(&id)
                    .fetch_optional(&mut *conn)
                    .await?;
                let Some(status) = status else { return Ok(CancelOutcome::NotFound) };
                let status = parse_state(&status)?;
                if status.is_terminal() {
                    return Ok(CancelOutcome::AlreadyEnded(status));
                }
                let ids: Vec<String> = sqlx::query_scalar(
                    "WITH RECURSIVE tree(id) AS (
                         SELECT $1::text UNION ALL SELECT r.id FROM runs r JOIN tree t ON r.parent_id = t.id)
                     UPDATE runs SET status = 'canceled', error = $3, completed_at = $2, not_before = NULL
                     WHERE id IN (SELECT id FROM tree) AND status IN ('pending', 'running')
                     RETURNING id",
                )
                .bind(&id)
                .bind(at)
                .bind(CANCELED)
                .fetch_all(&mut *conn)
                .await?;
                sqlx::query(
                    "UPDATE attempts SET status = 'canceled', completed_at = $2, error = $3
                     WHERE run_id = ANY($1) AND status = 'running'",
                )
                .bind(&ids)
                .bind(at)
                .bind(CANCELED)
                .execute(&mut *conn)
                .await?;
                notify(conn, &channel, &format!("c {me}")).await?;
                // In creation order, as the SQLite store answers.
                let ordered: Vec<String> = sqlx::query_scalar("SELECT id FROM runs WHERE id = ANY($1) ORDER BY seq")
                    .bind(&ids)
                    .fetch_all(&mut *conn)
                    .await?;
                Ok(CancelOutcome::Canceled(ordered))
            })
        })
        .await
    }

    async fn recover(&self, _at: DateTime<Utc>) -> Result<Vec<RunRecord>> {
        let (node, channel) = (self.current().id, self.channel.clone());
        self.tx(move |conn| {
            let (node, channel) = (node.clone(), channel.clone());
            Box::pin(async move {
                let ids = interrupt(conn, Holders::Node(&node), &channel).await?;
                load_runs_by_ids(conn, &ids).await
            })
        })
        .await
    }

    async fn open_children(&self, parents: &[String]) -> Result<Vec<(String, u32)>> {
        let parents = parents.to_vec();
        self.tx(move |conn| {
            let parents = parents.clone();
            Box::pin(async move {
                let rows: Vec<(String, i64)> = sqlx::query_as(
                    "SELECT parent_id, count(*) FROM runs
                     WHERE parent_id = ANY($1) AND status IN ('pending', 'running') GROUP BY parent_id ORDER BY parent_id",
                )
                .bind(&parents)
                .fetch_all(&mut *conn)
                .await?;
                Ok(rows.into_iter().map(|(p, n)| (p, n as u32)).collect())
            })
        })
        .await
    }

    async fn append_logs(&self, lines: Vec<NewLogLine>) -> Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        let mut cols: (
            Vec<String>,
            Vec<String>,
            Vec<i32>,
            Vec<String>,
            Vec<DateTime<Utc>>,
            Vec<String>,
        ) = Default::default();
        for l in &lines {
            cols.0.push(l.run_id.clone());
            cols.1.push(l.task_name.clone());
            cols.2.push(l.attempt as i32);
            cols.3.push(l.stream.to_string());
            cols.4.push(l.at);
            cols.5.push(without_nul(&l.message).into_owned());
        }
        self.tx(move |conn| {
            let cols = cols.clone();
            Box::pin(async move {
                sqlx::query(
                    "INSERT INTO logs (run_id, task_name, attempt, stream, at, message)
                     SELECT * FROM unnest($1::text[], $2::text[], $3::int[], $4::text[], $5::timestamptz[], $6::text[])",
                )
                .bind(&cols.0)
                .bind(&cols.1)
                .bind(&cols.2)
                .bind(&cols.3)
                .bind(&cols.4)
                .bind(&cols.5)
                .execute(&mut *conn)
                .await?;
                Ok(())
            })
        })
        .await
    }

    async fn query_logs(&self, query: &LogQuery) -> Result<Vec<LogLine>> {
        let query = query.clone();
        self.tx(move |conn| {
            let query = query.clone();
            Box::pin(async move {
                let mut run_ids = query.run_ids.clone();
                if query.include_descendants && !run_ids.is_empty() {
                    run_ids = sqlx::query_scalar(
                        "WITH RECURSIVE tree(id) AS (
                             SELECT unnest($1::text[]) UNION ALL SELECT r.id FROM runs r JOIN tree t ON r.parent_id = t.id)
                         SELECT id FROM tree",
                    )
                    .bind(&query.run_ids)
                    .fetch_all(&mut *conn)
                    .await?;
                }
                // A text search scans lines one by one: bounded in time.
                if !query.text.is_empty() {
                    sqlx::query("SET LOCAL statement_timeout = '2s'").execute(&mut *conn).await?;
                }
                let order = if query.newest_first { "DESC" } else { "ASC" };
                let rows = sqlx::query(&format!(
                    "SELECT id, run_id, task_name, attempt, stream, at, message FROM logs
                     WHERE (cardinality($1::text[]) = 0 OR run_id = ANY($1))
                       AND ($2::timestamptz IS NULL OR at >= $2) AND ($3::timestamptz IS NULL OR at < $3)
                       AND (cardinality($4::text[]) = 0 OR EXISTS (SELECT 1 FROM unnest($4::text[]) t WHERE strpos(message, t) > 0))
                       AND ($5::bigint IS NULL OR id > $5)
                       AND (cardinality($7::text[]) = 0 OR task_name = ANY($7))
                       AND (cardinality($8::text[]) = 0 OR stream = ANY($8))
                     ORDER BY id {order} LIMIT $6"
                ))
                .bind(&run_ids)
                .bind(query.start)
                .bind(query.end)
                .bind(&query.text)
                .bind(query.after_id)
                .bind(i64::from(query.limit))
                .bind(&query.task_names)
                .bind(&query.streams)
                .fetch_all(&mut *conn)
                .await;
                let rows = match rows {
                    Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("57014") => {
                        return Err(StoreError::TooBroad(
                            "the log search was stopped after 2 s; narrow it to some runs (taskRunId) or a time range (startTime, endTime)".into(),
                        )
                        .into());
                    }
                    rows => rows?,
                };
                rows.iter()
                    .map(|r| {
                        Ok(LogLine {
                            id: r.try_get("id")?,
                            run_id: r.try_get("run_id")?,
                            task_name: r.try_get("task_name")?,
                            attempt: r.try_get::<i32, _>("attempt")? as u32,
                            stream: r.try_get("stream")?,
                            at: r.try_get("at")?,
                            message: r.try_get("message")?,
                        })
                    })
                    .collect()
            })
        })
        .await
    }

    async fn log_bytes(&self, run_id: &str) -> Result<u64> {
        let run_id = run_id.to_string();
        self.tx(move |conn| {
            let run_id = run_id.clone();
            Box::pin(async move {
                let n: i64 = sqlx::query_scalar(
                    "SELECT coalesce(sum(octet_length(message)), 0)::bigint FROM logs WHERE run_id = $1",
                )
                .bind(&run_id)
                .fetch_one(&mut *conn)
                .await?;
                Ok(n as u64)
            })
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
        self.tx(move |conn| {
            let (id, key_tag) = (id.clone(), key_tag.clone());
            Box::pin(async move {
                sqlx::query("DELETE FROM sessions WHERE expires_at <= now()")
                    .execute(&mut *conn)
                    .await?;
                sqlx::query(
                    "INSERT INTO sessions (id, key_tag, created_at, expires_at) VALUES ($1, $2, now(), $3)",
                )
                .bind(&id)
                .bind(&key_tag)
                .bind(expires_at)
                .execute(&mut *conn)
                .await?;
                Ok(())
            })
        })
        .await
    }

    async fn session_alive(&self, id: &str, key_tag: &str, now: DateTime<Utc>) -> Result<bool> {
        let (id, key_tag) = (id.to_string(), key_tag.to_string());
        self.tx(move |conn| {
            let (id, key_tag) = (id.clone(), key_tag.clone());
            Box::pin(async move {
                let found: Option<i32> = sqlx::query_scalar(
                    "SELECT 1 FROM sessions WHERE id = $1 AND key_tag = $2 AND expires_at > $3",
                )
                .bind(&id)
                .bind(&key_tag)
                .bind(now)
                .fetch_optional(&mut *conn)
                .await?;
                Ok(found.is_some())
            })
        })
        .await
    }

    async fn end_session(&self, id: &str) -> Result<()> {
        let id = id.to_string();
        self.tx(move |conn| {
            let id = id.clone();
            Box::pin(async move {
                sqlx::query("DELETE FROM sessions WHERE id = $1")
                    .bind(&id)
                    .execute(&mut *conn)
                    .await?;
                Ok(())
            })
        })
        .await
    }

    async fn stored_bytes(&self) -> Result<u64> {
        self.tx(|conn| {
            Box::pin(async move {
                let bytes: Option<i64> = sqlx::query_scalar(
                    "SELECT sum(pg_total_relation_size(c.oid))::bigint FROM pg_class c
                     JOIN pg_namespace n ON n.oid = c.relnamespace
                     WHERE n.nspname = current_schema() AND c.relkind = 'r'",
                )
                .fetch_one(&mut *conn)
                .await?;
                Ok(bytes.unwrap_or(0).max(0) as u64)
            })
        })
        .await
    }

    async fn join(&self) -> Result<()> {
        let node = self.current();
        let pid = std::process::id() as i32;
        self.tx(move |conn| {
            let node = node.clone();
            Box::pin(async move {
                // Taken when free: never seen, gone, silent past its own
                // timeout, or this very incarnation.
                let joined = sqlx::query(
                    "INSERT INTO nodes (id, incarnation, host, pid, started_at, heartbeat_at, gone_at, timeout_ms)
                     VALUES ($1, $2, $3, $4, now(), now(), NULL, $5)
                     ON CONFLICT (id) DO UPDATE SET incarnation = EXCLUDED.incarnation, host = EXCLUDED.host,
                         pid = EXCLUDED.pid, started_at = now(), heartbeat_at = now(), gone_at = NULL,
                         timeout_ms = EXCLUDED.timeout_ms
                     WHERE nodes.gone_at IS NOT NULL OR nodes.heartbeat_at < now() - {SILENT}
                        OR nodes.incarnation = EXCLUDED.incarnation"
                        .replace("{SILENT}", &silence("nodes"))
                        .as_str(),
                )
                .bind(&node.id)
                .bind(&node.incarnation)
                .bind(&node.host)
                .bind(pid)
                .bind(timeout_ms(&node))
                .execute(&mut *conn)
                .await?
                .rows_affected();
                if joined == 1 {
                    return Ok(());
                }
                let row = sqlx::query(
                    "SELECT host, pid, extract(epoch FROM now() - heartbeat_at)::bigint AS ago FROM nodes WHERE id = $1",
                )
                .bind(&node.id)
                .fetch_one(&mut *conn)
                .await?;
                let (host, holder, ago): (String, i32, i64) =
                    (row.try_get("host")?, row.try_get("pid")?, row.try_get("ago")?);
                // The same id on this machine, by a process that is gone (a
                // crash just now): this is its restart.
                if host == node.host && !process_exists(holder) {
                    sqlx::query(
                        "UPDATE nodes SET incarnation = $2, pid = $3, started_at = now(), heartbeat_at = now(), gone_at = NULL,
                             timeout_ms = $4
                         WHERE id = $1",
                    )
                    .bind(&node.id)
                    .bind(&node.incarnation)
                    .bind(pid)
                    .bind(timeout_ms(&node))
                    .execute(&mut *conn)
                    .await?;
                    return Ok(());
                }
                Err(StoreError::NodeAlive { node: node.id.clone(), host, seconds_ago: ago }.into())
            })
        })
        .await
    }

    /// One statement on the heartbeat's own connection (made anew when
    /// there is none), all within `within`: a connection that took too
    /// long is closed with the call, never used again.
    async fn heartbeat(&self, within: Duration) -> Result<bool> {
        let deadline = tokio::time::Instant::now() + within;
        let node = self.current();
        let unavailable = |detail: String| StoreError::Unavailable {
            location: self.location.to_string(),
            detail,
        };
        let Ok(mut slot) = tokio::time::timeout_at(deadline, self.heartbeat.lock()).await else {
            return Err(unavailable(format!(
                "the last heartbeat is still waiting for an answer after {within:?}"
            )));
        };
        // Taken out: if this call ends before the answer, the connection
        // goes with it.
        let held = slot.take();
        let options = &self.heartbeat_options;
        let beat = async move {
            let mut conn = match held {
                Some(conn) => conn,
                None => <PgConnection as sqlx::Connection>::connect_with(options).await?,
            };
            let n = sqlx::query(
                "UPDATE nodes SET heartbeat_at = now() WHERE id = $1 AND incarnation = $2 AND gone_at IS NULL",
            )
            .bind(&node.id)
            .bind(&node.incarnation)
            .execute(&mut conn)
            .await?
            .rows_affected();
            Ok::<_, sqlx::Error>((conn, n == 1))
        };
        match tokio::time::timeout_at(deadline, beat).await {
            Ok(Ok((conn, alive))) => {
                *slot = Some(conn);
                Ok(alive)
            }
            Ok(Err(e)) => Err(classify(e, &self.location)),
            Err(_) => Err(unavailable(format!(
                "the heartbeat had no answer within {within:?}"
            ))),
        }
    }

    async fn rescue(&self) -> Result<Vec<String>> {
        let channel = self.channel.clone();
        self.tx(move |conn| {
            let channel = channel.clone();
            Box::pin(async move {
                sqlx::query(&format!(
                    "UPDATE nodes SET gone_at = now() WHERE gone_at IS NULL AND heartbeat_at < now() - {}",
                    silence("nodes")
                ))
                .execute(&mut *conn)
                .await?;
                interrupt(conn, Holders::Orphaned, &channel).await
            })
        })
        .await
    }

    async fn rejoin(&self, note: &str) -> Result<Vec<String>> {
        let old = self.current();
        let fresh = NodeId {
            incarnation: NodeId::new_incarnation(),
            ..old.clone()
        };
        let pid = std::process::id() as i32;
        let (channel, note) = (self.channel.clone(), note.to_string());
        let (o, f) = (old.clone(), fresh.clone());
        let runs = self
            .tx(move |conn| {
                let (old, fresh, channel, note) = (o.clone(), f.clone(), channel.clone(), note.clone());
                Box::pin(async move {
                    // The id is still this node's: its old incarnation's,
                    // declared dead, or silent past its timeout (not taken
                    // by another process meanwhile).
                    let taken = sqlx::query(&format!(
                        "UPDATE nodes SET incarnation = $2, pid = $3, heartbeat_at = now(), gone_at = NULL, timeout_ms = $4
                         WHERE id = $1 AND (incarnation = $5 OR gone_at IS NOT NULL OR heartbeat_at < now() - {})",
                        silence("nodes")
                    ))
                    .bind(&fresh.id)
                    .bind(&fresh.incarnation)
                    .bind(pid)
                    .bind(timeout_ms(&fresh))
                    .bind(&old.incarnation)
                    .execute(&mut *conn)
                    .await?
                    .rows_affected();
                    if taken == 0 {
                        let row = sqlx::query(
                            "SELECT host, extract(epoch FROM now() - heartbeat_at)::bigint AS ago FROM nodes WHERE id = $1",
                        )
                        .bind(&old.id)
                        .fetch_one(&mut *conn)
                        .await?;
                        return Err(StoreError::NodeAlive {
                            node: old.id.clone(),
                            host: row.try_get("host")?,
                            seconds_ago: row.try_get("ago")?,
                        }
                        .into());
                    }
                    let ids =
                        interrupt(conn, Holders::Incarnation(&old.id, &old.incarnation), &channel).await?;
                    // What happened, on every attempt the old incarnation
                    // lost: those closed just now and those the cluster
                    // took over while it was fenced.
                    sqlx::query(
                        "UPDATE attempts SET error = $3
                         WHERE node_id = $1 AND node_incarnation = $2 AND interrupted",
                    )
                    .bind(&old.id)
                    .bind(&old.incarnation)
                    .bind(&note)
                    .execute(&mut *conn)
                    .await?;
                    Ok(ids)
                })
            })
            .await?;
        *self.node.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        // The connection that hears other nodes may be one the outage left
        // hanging: a new one, which starts with a resync.
        let listener = tokio::spawn(listen(
            self.pool.clone(),
            self.channel.to_string(),
            self.node.clone(),
            self.events.clone(),
        ));
        *self.listener.lock().unwrap_or_else(|p| p.into_inner()) =
            AbortOnDrop(listener.abort_handle());
        Ok(runs)
    }

    async fn leave(&self) -> Result<()> {
        let node = self.current();
        self.tx(move |conn| {
            let node = node.clone();
            Box::pin(async move {
                sqlx::query("UPDATE nodes SET gone_at = now() WHERE id = $1 AND incarnation = $2")
                    .bind(&node.id)
                    .bind(&node.incarnation)
                    .execute(&mut *conn)
                    .await?;
                Ok(())
            })
        })
        .await
    }

    async fn nodes(&self) -> Result<Vec<NodeRecord>> {
        self.tx(|conn| {
            Box::pin(async move {
                let rows = sqlx::query(
                    "SELECT n.id, n.host, n.incarnation, n.started_at, n.heartbeat_at, n.gone_at,
                            (SELECT count(*) FROM attempts a WHERE a.node_id = n.id AND a.node_incarnation = n.incarnation
                               AND a.status = 'running') AS running
                     FROM nodes n ORDER BY n.gone_at IS NOT NULL, n.id",
                )
                .fetch_all(&mut *conn)
                .await?;
                rows.iter()
                    .map(|r| {
                        Ok(NodeRecord {
                            id: r.try_get("id")?,
                            host: r.try_get("host")?,
                            incarnation: r.try_get("incarnation")?,
                            started_at: r.try_get("started_at")?,
                            heartbeat_at: r.try_get("heartbeat_at")?,
                            gone_at: r.try_get("gone_at")?,
                            running: r.try_get::<i64, _>("running")? as u32,
                        })
                    })
                    .collect()
            })
        })
        .await
    }

    async fn prune(&self, before: DateTime<Utc>, batch: u32) -> Result<u64> {
        self.tx(move |conn| {
            Box::pin(async move {
                let roots: Vec<String> = sqlx::query_scalar(
                    "SELECT id FROM runs r WHERE parent_id IS NULL
                       AND status IN ('completed', 'failed', 'canceled') AND completed_at < $1
                       AND NOT EXISTS (SELECT 1 FROM runs c WHERE c.root_id = r.id AND c.status IN ('pending', 'running'))
                     ORDER BY seq LIMIT $2 FOR UPDATE SKIP LOCKED",
                )
                .bind(before)
                .bind(i64::from(batch))
                .fetch_all(&mut *conn)
                .await?;
                if roots.is_empty() {
                    return Ok(0);
                }
                for sql in [
                    "DELETE FROM logs WHERE run_id IN (SELECT id FROM runs WHERE root_id = ANY($1))",
                    "DELETE FROM attempts WHERE run_id IN (SELECT id FROM runs WHERE root_id = ANY($1))",
                    "DELETE FROM root_keys WHERE run_id = ANY($1)",
                    "DELETE FROM runs WHERE root_id = ANY($1)",
                ] {
                    sqlx::query(sql).bind(&roots).execute(&mut *conn).await?;
                }
                Ok(roots.len() as u64)
            })
        })
        .await
    }

    async fn count_by_state(&self) -> Result<Vec<(RunState, u64)>> {
        self.tx(|conn| {
            Box::pin(async move {
                let rows: Vec<(String, i64)> = sqlx::query_as(
                    "SELECT status, count(*) FROM runs GROUP BY status ORDER BY status",
                )
                .fetch_all(&mut *conn)
                .await?;
                rows.into_iter()
                    .map(|(s, n)| Ok((parse_state(&s)?, n as u64)))
                    .collect()
            })
        })
        .await
    }

    async fn subtask_counts(&self, roots: &[String]) -> Result<Vec<(String, RunState, u64)>> {
        let roots = roots.to_vec();
        self.tx(move |conn| {
            let roots = roots.clone();
            Box::pin(async move {
                let rows: Vec<(String, String, i64)> = sqlx::query_as(
                    "SELECT root_id, status, count(*) FROM runs
                     WHERE root_id = ANY($1) AND id != root_id
                     GROUP BY root_id, status",
                )
                .bind(&roots)
                .fetch_all(&mut *conn)
                .await?;
                rows.into_iter()
                    .map(|(root, s, n)| Ok((root, parse_state(&s)?, n as u64)))
                    .collect()
            })
        })
        .await
    }

    fn events(&self) -> Option<broadcast::Receiver<StoreEvent>> {
        Some(self.events.subscribe())
    }
}

/// The interval after which the node of this row (`table` names it) is
/// silent: its own timeout, or the default for a node of an older weft.
fn silence(table: &str) -> String {
    format!(
        "make_interval(secs => coalesce({table}.timeout_ms, {}) / 1000.0)",
        NodeId::DEFAULT_TIMEOUT.as_millis()
    )
}

/// A node's timeout as stored.
fn timeout_ms(node: &NodeId) -> i32 {
    node.timeout.as_millis().min(i32::MAX as u128) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_password_survives_wherever_it_is() {
        for (url, shown) in [
            (
                "postgres://weft:s3cret@db.internal:5432/weft",
                "postgres://weft@db.internal:5432/weft",
            ),
            (
                "postgres://127.0.0.1:99999/db?user=u&password=SECRET&sslmode=require",
                "postgres://127.0.0.1:99999/db?user=u&password=***&sslmode=require",
            ),
            (
                "postgresql://u:p@h?PASSWORD=x",
                "postgresql://u@h?PASSWORD=***",
            ),
            ("postgres://weft@h/db", "postgres://weft@h/db"),
            ("not a url:secret@x", "not a url@x"),
        ] {
            assert_eq!(redacted_url(url), shown);
        }
    }

    #[test]
    fn events_from_other_nodes_are_heard_and_our_own_skipped() {
        let me = "a 1";
        assert_eq!(parse_event("p", me), Some(StoreEvent::Pending));
        assert_eq!(
            parse_event("e b 2 trn-1 trn-0", me),
            Some(StoreEvent::Ended {
                run_id: "trn-1".into(),
                parent_id: Some("trn-0".into())
            })
        );
        assert_eq!(
            parse_event("e b 2 trn-1 -", me),
            Some(StoreEvent::Ended {
                run_id: "trn-1".into(),
                parent_id: None
            })
        );
        assert_eq!(parse_event("e a 1 trn-1 -", me), None);
        assert_eq!(parse_event("c b 2", me), Some(StoreEvent::Canceled));
        assert_eq!(parse_event("c a 1", me), None);
        assert_eq!(parse_event("x", me), None);
    }
}

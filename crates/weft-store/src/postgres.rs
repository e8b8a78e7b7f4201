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
//!
//! Here: the [`Store`] methods. Beside them: `conn` (connecting, every
//! transaction within a deadline), `schema` (the migrations), `listen`
//! (hearing the other nodes), `runs` (runs as rows, created, adopted,
//! interrupted), `nodes` (joining, heartbeats, rescue, rejoin), `logs`
//! (task output stored and searched).

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

mod conn;
mod listen;
mod logs;
mod nodes;
mod runs;
mod schema;

use crate::adoption::{input_fingerprint, same_input};
use crate::rows::{
    CANCELED, INTERRUPTED, new_run_id, outcome_columns, parse_json, parse_state, process_exists,
};
pub use conn::redacted_url;
use conn::{AbortOnDrop, TxResult, classify};
use listen::notify;
use runs::{
    Holders, create_run_in, interrupt, load_run, load_runs_by_ids, open_attempts, without_nul,
};

use crate::{
    AttemptEnd, AttemptOutcome, AttemptRecord, AttemptUsage, CancelOutcome, Claimed, CreatedRun,
    Creation, LogLine, LogQuery, MemoryLimit, NewLogLine, NewRun, NodeId, NodeRecord, PendingRun,
    Result, RunCount, RunCountQuery, RunFilter, RunRecord, RunState, Store, StoreError, StoreEvent,
    TaskRecord, UsageRecord,
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
            Box::pin(async move { runs::list_runs(conn, &filter).await })
        })
        .await
    }

    async fn next_pending(&self, limit: u32) -> Result<Vec<PendingRun>> {
        self.tx(move |conn| {
            Box::pin(async move {
                let rows = sqlx::query(
                    "SELECT id, task_name, root_id, trace_parent,
                            (SELECT count(*) FROM attempts WHERE run_id = runs.id) AS attempts
                     FROM runs WHERE status = 'pending' ORDER BY seq LIMIT $1",
                )
                .bind(i64::from(limit))
                .fetch_all(&mut *conn)
                .await?;
                rows.iter()
                    .map(|r| {
                        Ok(PendingRun {
                            id: r.try_get("id")?,
                            task_name: r.try_get("task_name")?,
                            root_id: r.try_get("root_id")?,
                            trace_parent: r.try_get("trace_parent")?,
                            attempts: r.try_get::<i64, _>("attempts")? as u32,
                        })
                    })
                    .collect()
            })
        })
        .await
    }

    async fn count_runs(&self, query: &RunCountQuery) -> Result<Vec<RunCount>> {
        let query = query.clone();
        self.tx(move |conn| {
            let query = query.clone();
            Box::pin(async move { runs::count_runs(conn, &query).await })
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

    async fn claim_within(
        &self,
        limit: u32,
        memory: Option<&MemoryLimit>,
        at: DateTime<Utc>,
    ) -> Result<Claimed> {
        let node = self.current();
        let memory = memory.cloned();
        self.tx(move |conn| {
            let (node, memory) = (node.clone(), memory.clone());
            Box::pin(async move {
                // Not by an incarnation declared dead or replaced: its
                // attempts would be taken over at once, while it started
                // them. Within a memory budget, the runs locked are
                // summed in order (a window cannot share a SELECT with
                // FOR UPDATE) and those past the budget stay pending.
                let query = match &memory {
                    None => sqlx::query_scalar(
                        "WITH due AS (
                             SELECT seq FROM runs
                             WHERE status = 'pending' AND (not_before IS NULL OR not_before <= $1)
                               AND NOT EXISTS (SELECT 1 FROM nodes WHERE id = $3 AND (incarnation <> $4 OR gone_at IS NOT NULL))
                             ORDER BY seq LIMIT $2 FOR UPDATE SKIP LOCKED)
                         UPDATE runs r SET status = 'running', started_at = coalesce(r.started_at, $1), not_before = NULL
                         FROM due WHERE r.seq = due.seq
                         RETURNING r.id",
                    ),
                    Some(_) => sqlx::query_scalar(
                        "WITH due AS (
                             SELECT seq, task_name FROM runs
                             WHERE status = 'pending' AND (not_before IS NULL OR not_before <= $1)
                               AND NOT EXISTS (SELECT 1 FROM nodes WHERE id = $3 AND (incarnation <> $4 OR gone_at IS NOT NULL))
                             ORDER BY seq LIMIT $2 FOR UPDATE SKIP LOCKED),
                         fits AS (
                             SELECT due.seq,
                                    sum(coalesce(m.bytes, $7)) OVER (ORDER BY due.seq) AS needed
                             FROM due LEFT JOIN unnest($5::text[], $6::bigint[]) AS m(name, bytes)
                                  ON m.name = due.task_name)
                         UPDATE runs r SET status = 'running', started_at = coalesce(r.started_at, $1), not_before = NULL
                         FROM fits WHERE r.seq = fits.seq AND fits.needed <= $8
                         RETURNING r.id",
                    ),
                }
                .bind(at)
                .bind(i64::from(limit))
                .bind(&node.id)
                .bind(&node.incarnation);
                let query = match &memory {
                    None => query,
                    Some(m) => {
                        let (names, bytes): (Vec<String>, Vec<i64>) = m
                            .task_bytes
                            .iter()
                            .map(|(name, b)| (name.clone(), *b as i64))
                            .unzip();
                        query
                            .bind(names)
                            .bind(bytes)
                            .bind(m.default_bytes as i64)
                            .bind(m.free_bytes.min(i64::MAX as u64) as i64)
                    }
                };
                let ids: Vec<String> = query.fetch_all(&mut *conn).await?;
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
        self.insert_logs(lines).await
    }

    async fn query_logs(&self, query: &LogQuery) -> Result<Vec<LogLine>> {
        self.select_logs(query).await
    }

    async fn log_bytes(&self, run_id: &str) -> Result<u64> {
        self.logged_bytes(run_id).await
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

    async fn record_usage(&self, used: Vec<UsageRecord>) -> Result<()> {
        self.tx(move |conn| {
            let used = used.clone();
            Box::pin(async move {
                for u in &used {
                    sqlx::query(
                        "UPDATE attempts SET peak_memory_bytes = $3, cpu_time_ms = $4
                         WHERE run_id = $1 AND attempt = $2",
                    )
                    .bind(&u.run_id)
                    .bind(u.attempt as i32)
                    .bind(u.usage.peak_memory_bytes.map(|b| b as i64))
                    .bind(u.usage.cpu_time_ms.map(|m| m as i64))
                    .execute(&mut *conn)
                    .await?;
                }
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
        self.node_join().await
    }

    async fn heartbeat(&self, within: Duration) -> Result<bool> {
        self.node_heartbeat(within).await
    }

    async fn rescue(&self) -> Result<Vec<String>> {
        self.node_rescue().await
    }

    async fn rejoin(&self, note: &str) -> Result<Vec<String>> {
        self.node_rejoin(note).await
    }

    async fn leave(&self) -> Result<()> {
        self.node_leave().await
    }

    async fn nodes(&self) -> Result<Vec<NodeRecord>> {
        self.list_nodes().await
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

#[cfg(test)]
mod tests;

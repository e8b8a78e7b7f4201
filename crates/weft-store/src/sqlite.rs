//! The embedded store: one SQLite file in WAL mode.
//!
//! One connection writes, on a thread of its own (`writer`): SQLite
//! serialises writers anyway, and a single connection makes every method a
//! plain transaction with no busy-retry logic; calls that queue up together
//! share a commit. Reads run on their own connections, on tokio's blocking
//! pool. Commits are durable against a
//! crash of the process (WAL, `synchronous = NORMAL`); `synchronous = FULL`
//! (see [`SqliteStore::open_with`]) also survives power loss.
//!
//! Here: the [`Store`] methods, each one SQL transaction. Beside them:
//! `file` (the file before SQLite opens it: folder, mode, locks, checks),
//! `schema` (the schema and its migrations), `conn` (opening, the
//! transactions and the reading connections), `writer` (the writing
//! thread and its group commit), `runs` (runs as rows: read back, found by
//! key or adoption, their attempts opened).

use std::path::Path;
use std::sync::{Arc, Mutex};

mod conn;
mod file;
mod runs;
mod schema;
mod writer;

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use rusqlite::{Connection, OptionalExtension, Row, Transaction, params};
use weft_protocol::socket::{TaskDefinition, TaskOptions};

use crate::adoption::{input_fingerprint, same_input};
use crate::rows::{
    CANCELED, INTERRUPTED, new_run_id, outcome_columns, parse_json, parse_state, process_exists,
};
use crate::{
    AttemptEnd, AttemptOutcome, AttemptRecord, AttemptUsage, CancelOutcome, Claimed, CreatedRun,
    Creation, LogLine, LogQuery, MemoryLimit, NewLogLine, NewRun, NodeId, NodeRecord, PendingRun,
    Result, RunCount, RunCountQuery, RunFilter, RunRecord, RunState, Store, StoreError, StoreEvent,
    TaskRecord, UsageRecord,
};
use conn::*;
use file::{check_integrity, lock_exclusively, lock_inode, prepare_file};
use runs::{find_existing, load_run, open_attempt, parse_ts, ts};
use schema::migrate;

/// How long a root run's `idempotencyKey` names it.
const ROOT_IDEMPOTENCY_WINDOW: Duration = Duration::hours(24);

/// The earliest pending run's `not_before` (NULL first: due now), read
/// off `runs_pending_due` in one step. (`min(coalesce(not_before, now))`
/// read every pending row, once per claim: a fan-out of N children read
/// N^2/2 rows.)
const NEXT_DUE: &str =
    "SELECT not_before FROM runs WHERE status = 'pending' ORDER BY not_before LIMIT 1";

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
                                   created_at, task_version, trace_parent)
                 SELECT ?1, ?2, 'pending', ?3, ?4, ?5, ?6, ?6, ?7, ?8, ?9, ?10,
                        CASE WHEN ?4 IS NULL THEN ?11 ELSE parent.task_version END,
                        CASE WHEN ?4 IS NULL THEN ?12 ELSE parent.trace_parent END
                 FROM (SELECT 1) LEFT JOIN runs AS parent ON parent.id = ?4",
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
                    new.task_version,
                    new.trace_parent,
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
        self.read(move |tx| runs::list_runs(tx, &filter)).await
    }

    async fn next_pending(&self, limit: u32) -> Result<Vec<PendingRun>> {
        self.read(move |tx| {
            let mut stmt = tx.prepare_cached(
                "SELECT id, task_name, root_id, trace_parent,
                        (SELECT count(*) FROM attempts WHERE run_id = runs.id)
                 FROM runs INDEXED BY runs_pending WHERE status = 'pending' ORDER BY seq LIMIT ?1",
            )?;
            let rows = stmt
                .query_map([limit], |r| {
                    Ok(PendingRun {
                        id: r.get(0)?,
                        task_name: r.get(1)?,
                        root_id: r.get(2)?,
                        trace_parent: r.get(3)?,
                        attempts: r.get(4)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    async fn count_runs(&self, query: &RunCountQuery) -> Result<Vec<RunCount>> {
        let query = query.clone();
        self.read(move |tx| runs::count_runs(tx, &query)).await
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

    async fn claim_within(
        &self,
        limit: u32,
        memory: Option<&MemoryLimit>,
        at: DateTime<Utc>,
    ) -> Result<Claimed> {
        let node = self.node.id.clone();
        let memory = memory.cloned();
        self.tx(move |tx| {
            let now = ts(at);
            let read = |r: &rusqlite::Row<'_>| Ok((r.get::<_, i64>(1)?, r.get::<_, String>(0)?));
            let ids = match &memory {
                None => tx
                    .prepare_cached(
                        "UPDATE runs SET status = 'running', started_at = coalesce(started_at, ?1), not_before = NULL
                         WHERE seq IN (SELECT seq FROM runs WHERE status = 'pending'
                                         AND (not_before IS NULL OR not_before <= ?1)
                                       ORDER BY seq LIMIT ?2)
                         RETURNING id, seq",
                    )?
                    .query_map(params![now, limit], read)?
                    .collect::<rusqlite::Result<std::collections::BTreeMap<_, _>>>()?,
                Some(memory) => tx
                    .prepare_cached(runs::CLAIM_WITHIN_MEMORY)?
                    .query_map(
                        params![
                            now,
                            limit,
                            serde_json::json!(memory.task_bytes).to_string(),
                            memory.default_bytes as i64,
                            memory.free_bytes.min(i64::MAX as u64) as i64,
                        ],
                        read,
                    )?
                    .collect::<rusqlite::Result<std::collections::BTreeMap<_, _>>>()?,
            };
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

    async fn record_usage(&self, used: Vec<UsageRecord>) -> Result<()> {
        self.tx(move |tx| {
            for u in &used {
                tx.execute_cached(
                    "UPDATE attempts SET peak_memory_bytes = ?3, cpu_time_ms = ?4
                     WHERE run_id = ?1 AND attempt = ?2",
                    params![
                        u.run_id,
                        u.attempt,
                        u.usage.peak_memory_bytes.map(|b| b as i64),
                        u.usage.cpu_time_ms.map(|m| m as i64)
                    ],
                )?;
            }
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
mod tests;

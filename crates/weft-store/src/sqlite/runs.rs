//! Runs as rows: read back with their attempts, found again by their
//! idempotency key or by the adoption rule, and their next attempt opened.

use super::*;

/// Timestamps are stored as fixed-width RFC 3339 text, so text order is time order.
pub(super) fn ts(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

pub(super) fn parse_ts(s: &str) -> Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .map(|d| d.to_utc())
        .map_err(|e| StoreError::Corrupt(format!("bad timestamp {s:?}: {e}")))
}

pub(super) fn parse_opt_ts(s: Option<String>) -> Result<Option<DateTime<Utc>>> {
    s.as_deref().map(parse_ts).transpose()
}

pub(super) const RUN_COLUMNS: &str = "seq, id, task_name, status, input, output, error, parent_id, root_id, \
                           created_at, started_at, completed_at, not_before, created_by_attempt, task_version, trace_parent";

/// A runs row before its attempts are attached.
pub(super) struct RunRow {
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
    task_version: Option<String>,
    trace_parent: Option<String>,
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
            task_version: r.get(14)?,
            trace_parent: r.get(15)?,
        })
    }

    fn into_record(self, attempts: Vec<AttemptRecord>) -> Result<RunRecord> {
        Ok(RunRecord {
            id: self.id,
            seq: self.seq,
            task_name: self.task_name,
            task_version: self.task_version,
            trace_parent: self.trace_parent,
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

pub(super) fn load_attempts(tx: &Connection, run_id: &str) -> TxResult<Vec<AttemptRecord>> {
    let mut stmt = tx.prepare_cached(
        "SELECT attempt, status, started_at, completed_at, error, output, interrupted, node_id,
                peak_memory_bytes, cpu_time_ms
         FROM attempts WHERE run_id = ?1 ORDER BY attempt",
    )?;
    let rows = stmt.query_map([run_id], |r| {
        Ok((
            (
                r.get::<_, u32>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Option<String>>(3)?,
                r.get::<_, Option<String>>(4)?,
                r.get::<_, Option<String>>(5)?,
                r.get::<_, bool>(6)?,
                r.get::<_, Option<String>>(7)?,
            ),
            AttemptUsage {
                peak_memory_bytes: r.get::<_, Option<i64>>(8)?.map(|b| b as u64),
                cpu_time_ms: r.get::<_, Option<i64>>(9)?.map(|m| m as u64),
            },
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let ((number, status, started, completed, error, output, interrupted, node_id), usage) =
            row?;
        out.push(AttemptRecord {
            node_id,
            number,
            status: parse_state(&status)?,
            started_at: parse_ts(&started)?,
            completed_at: parse_opt_ts(completed)?,
            error,
            output: output.as_deref().map(parse_json).transpose()?,
            interrupted,
            usage,
        });
    }
    Ok(out)
}

/// One run by id (built once, so the statement cache knows it).
pub(super) static RUN_BY_ID: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?1"));

pub(super) fn load_run(tx: &Connection, id: &str) -> TxResult<Option<RunRecord>> {
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

pub(super) fn load_runs(
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

/// A claim within a memory budget: the due pending runs, oldest first, as
/// many as fit, each taking its task's memory (`?3`, a JSON array of
/// `[name, bytes]`; `?4` for a task not in it), stopping at the first that
/// does not fit in `?5`.
pub(super) const CLAIM_WITHIN_MEMORY: &str = "
    UPDATE runs SET status = 'running', started_at = coalesce(started_at, ?1), not_before = NULL
    WHERE seq IN (
        SELECT seq FROM (
            SELECT due.seq,
                   sum(coalesce((SELECT json_extract(m.value, '$[1]') FROM json_each(?3) m
                                 WHERE json_extract(m.value, '$[0]') = due.task_name), ?4))
                       OVER (ORDER BY due.seq) AS needed
            FROM (SELECT seq, task_name FROM runs WHERE status = 'pending'
                    AND (not_before IS NULL OR not_before <= ?1)
                  ORDER BY seq LIMIT ?2) AS due)
        WHERE needed <= ?5)
    RETURNING id, seq";

/// Runs matching a filter, newest first. Each filter list is a JSON
/// array bound as one parameter (empty: no filter).
pub(super) fn list_runs(tx: &Connection, filter: &RunFilter) -> TxResult<Vec<RunRecord>> {
    static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "SELECT {RUN_COLUMNS} FROM runs
             WHERE ((?1 = '[]' AND ?7 = '[]')
                    OR task_name IN (SELECT value FROM json_each(?1))
                    OR EXISTS (SELECT 1 FROM json_each(?7) p
                               WHERE json_extract(p.value, '$[0]') = task_name
                                 AND json_extract(p.value, '$[1]') = task_version))
               AND (?8 = '[]' OR task_version IN (SELECT value FROM json_each(?8)))
               AND (?2 = '[]' OR root_id IN (SELECT value FROM json_each(?2)))
               AND (?3 IS NULL OR status = ?3) AND (?4 IS NULL OR seq < ?4)
               AND (?6 = 0 OR parent_id IS NULL)
             ORDER BY seq DESC LIMIT ?5"
        )
    });
    load_runs(
        tx,
        &SQL,
        &[
            &serde_json::json!(filter.task_names).to_string(),
            &serde_json::json!(filter.root_ids).to_string(),
            &filter.status.map(|s| s.as_str()),
            &filter.before_seq,
            &filter.limit,
            &filter.roots_only,
            &serde_json::json!(filter.pinned).to_string(),
            &serde_json::json!(filter.versions).to_string(),
        ],
    )
}

/// The runs created, or ended, in each bucket of a window, by task and
/// state. Bounds compare as text (timestamps are fixed-width); a bucket is
/// counted in whole microseconds from the stored text (`julianday` is a
/// float, and put a run at the very start of a bucket into the one before).
pub(super) fn count_runs(tx: &Connection, query: &RunCountQuery) -> TxResult<Vec<RunCount>> {
    let (at, ended) = query.counted.sql();
    let sql = format!(
        "SELECT task_name, status,
                (strftime('%s', {at}) * 1000000 + CAST(substr({at}, 21, 6) AS INTEGER) - ?5) / ?3 AS bucket,
                count(*)
         FROM runs
         WHERE {at} >= ?1 AND {at} < ?2 {ended}
           AND (?4 = '[]' OR task_name IN (SELECT value FROM json_each(?4)))
         GROUP BY task_name, status, bucket"
    );
    let mut stmt = tx.prepare_cached(&sql)?;
    let rows = stmt
        .query_map(
            params![
                ts(query.from),
                ts(query.to),
                query.resolution * 1_000_000,
                serde_json::json!(query.task_names).to_string(),
                query.from.timestamp_micros(),
            ],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            },
        )?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    rows.into_iter()
        .map(|(task_name, status, bucket, count)| {
            Ok(RunCount {
                task_name,
                status: parse_state(&status)?,
                bucket,
                count: count as u64,
            })
        })
        .collect()
}

/// A parent's child started under an idempotency key: every `ctx.run` of
/// the SDKs sends one, so this runs once per subtask started.
pub(super) const SUBTASK_BY_KEY: &str =
    "SELECT id FROM runs WHERE parent_id = ?1 AND idempotency_key = ?2
     AND coalesce(idempotency_created_at, '') = coalesce(?3, '') LIMIT 1";

pub(super) fn find_existing(tx: &Connection, new: &NewRun) -> TxResult<Option<(String, Creation)>> {
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
pub(super) fn adoptable_child(
    tx: &Connection,
    new: &NewRun,
) -> TxResult<Option<(String, Creation)>> {
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
        if same_input(&input, &new.input) {
            drop(rows);
            take_child(tx, &id, parent.attempt)?;
            return Ok(Some((id, Creation::Adopted)));
        }
    }
    Ok(None)
}

/// Records that `attempt` of the parent has the child now.
pub(super) fn take_child(tx: &Connection, id: &str, attempt: u32) -> TxResult<()> {
    tx.execute_cached(
        "UPDATE runs SET taken_by_attempt = max(coalesce(taken_by_attempt, 0), ?2) WHERE id = ?1",
        params![id, attempt],
    )?;
    Ok(())
}

/// Opens the next attempt of a run that was just moved to running.
pub(super) fn open_attempt(
    tx: &Connection,
    run_id: &str,
    at: DateTime<Utc>,
    node: &str,
) -> TxResult<()> {
    tx.execute_cached(
        "INSERT INTO attempts (run_id, attempt, status, started_at, node_id)
         VALUES (?1, (SELECT coalesce(max(attempt), 0) + 1 FROM attempts WHERE run_id = ?1), 'running', ?2, ?3)",
        params![run_id, ts(at), node],
    )?;
    Ok(())
}

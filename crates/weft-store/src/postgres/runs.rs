//! Runs as rows: read back with their attempts, created (or found again by
//! key or adoption), their attempts opened, and the interrupted ones
//! closed and put back.

use super::*;

/// PostgreSQL text cannot hold NUL; a task may print one.
pub(super) fn without_nul(s: &str) -> Cow<'_, str> {
    if s.contains('\0') {
        Cow::Owned(s.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(s)
    }
}

pub(super) const RUN_COLUMNS: &str = "seq, id, task_name, status, input, output, error, parent_id, root_id, \
                           created_at, started_at, completed_at, not_before, created_by_attempt, task_version, trace_parent";

pub(super) fn attempt_from_row(r: &PgRow) -> TxResult<(String, AttemptRecord)> {
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
            usage: AttemptUsage {
                peak_memory_bytes: r
                    .try_get::<Option<i64>, _>("peak_memory_bytes")?
                    .map(|b| b as u64),
                cpu_time_ms: r
                    .try_get::<Option<i64>, _>("cpu_time_ms")?
                    .map(|m| m as u64),
            },
        },
    ))
}

pub(super) fn run_from_row(r: &PgRow) -> TxResult<RunRecord> {
    let input: String = r.try_get("input")?;
    let output: Option<String> = r.try_get("output")?;
    Ok(RunRecord {
        seq: r.try_get("seq")?,
        id: r.try_get("id")?,
        task_name: r.try_get("task_name")?,
        task_version: r.try_get("task_version")?,
        trace_parent: r.try_get("trace_parent")?,
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
pub(super) async fn with_attempts(
    conn: &mut PgConnection,
    rows: Vec<PgRow>,
) -> TxResult<Vec<RunRecord>> {
    let mut runs = rows
        .iter()
        .map(run_from_row)
        .collect::<TxResult<Vec<_>>>()?;
    if runs.is_empty() {
        return Ok(runs);
    }
    let ids: Vec<&str> = runs.iter().map(|r| r.id.as_str()).collect();
    let attempts = sqlx::query(
        "SELECT run_id, attempt, status, started_at, completed_at, error, output, interrupted, node_id,
                peak_memory_bytes, cpu_time_ms
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

pub(super) async fn load_run(conn: &mut PgConnection, id: &str) -> TxResult<Option<RunRecord>> {
    let rows = sqlx::query(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = $1"))
        .bind(id)
        .fetch_all(&mut *conn)
        .await?;
    Ok(with_attempts(conn, rows).await?.pop())
}

pub(super) async fn load_runs_by_ids(
    conn: &mut PgConnection,
    ids: &[String],
) -> TxResult<Vec<RunRecord>> {
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
pub(super) async fn adopt(conn: &mut PgConnection, new: &NewRun) -> TxResult<Option<String>> {
    let Some(parent) = &new.parent else {
        return Ok(None);
    };
    if parent.attempt <= 1 {
        return Ok(None);
    }
    // Candidates by fingerprint, locked; a row another call of this attempt
    // took while we waited for its lock is left out when the lock is granted
    // (PostgreSQL checks the WHERE again), so each call gets its own child.
    let candidates: Vec<(i64, String)> = sqlx::query_as(
        "SELECT seq, input FROM runs
         WHERE parent_id = $1 AND task_name = $2 AND input_hash = $3 AND taken_by_attempt < $4
           AND status NOT IN ('failed', 'canceled')
         ORDER BY seq FOR UPDATE",
    )
    .bind(&parent.run_id)
    .bind(&new.task_name)
    .bind(input_fingerprint(&new.input.to_value()))
    .bind(parent.attempt as i32)
    .fetch_all(&mut *conn)
    .await?;
    let Some((seq, _)) = candidates
        .into_iter()
        .find(|(_, input)| same_input(input, &new.input))
    else {
        return Ok(None);
    };
    let id =
        sqlx::query_scalar("UPDATE runs SET taken_by_attempt = $2 WHERE seq = $1 RETURNING id")
            .bind(seq)
            .bind(parent.attempt as i32)
            .fetch_one(&mut *conn)
            .await?;
    Ok(Some(id))
}

pub(super) async fn create_run_in(
    conn: &mut PgConnection,
    new: &NewRun,
    channel: &str,
) -> TxResult<CreatedRun> {
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
    if let Some(adopted) = adopt(conn, new).await? {
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
                           input_hash, idempotency_key, idempotency_created_at, created_at, task_version,
                           trace_parent)
         SELECT $1, $2, 'pending', $3, $4, $5, $6, $6, $7, $8, $9, $10,
                CASE WHEN $4::text IS NULL THEN $11 ELSE parent.task_version END,
                CASE WHEN $4::text IS NULL THEN $12 ELSE parent.trace_parent END
         FROM (SELECT 1) AS one LEFT JOIN runs AS parent ON parent.id = $4
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
    .bind(&new.task_version)
    .bind(&new.trace_parent)
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
pub(super) async fn open_attempts(
    conn: &mut PgConnection,
    ids: &[String],
    at: DateTime<Utc>,
    node: &NodeId,
) -> TxResult<()> {
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
pub(super) enum Holders<'a> {
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
pub(super) async fn interrupt(
    conn: &mut PgConnection,
    holders: Holders<'_>,
    channel: &str,
) -> TxResult<Vec<String>> {
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

/// Runs matching a filter, newest first (an empty list: no filter).
pub(super) async fn list_runs(
    conn: &mut PgConnection,
    filter: &RunFilter,
) -> TxResult<Vec<RunRecord>> {
    let (pinned_tasks, pinned_versions): (Vec<&str>, Vec<&str>) = filter
        .pinned
        .iter()
        .map(|(task, version)| (task.as_str(), version.as_str()))
        .unzip();
    let rows = sqlx::query(&format!(
        "SELECT {RUN_COLUMNS} FROM runs
         WHERE ((cardinality($1::text[]) = 0 AND cardinality($7::text[]) = 0)
                OR task_name = ANY($1)
                OR (task_name, task_version) IN (SELECT * FROM unnest($7::text[], $8::text[])))
           AND (cardinality($9::text[]) = 0 OR task_version = ANY($9))
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
    .bind(&pinned_tasks)
    .bind(&pinned_versions)
    .bind(&filter.versions)
    .fetch_all(&mut *conn)
    .await?;
    with_attempts(conn, rows).await
}

/// The runs created, or ended, in each bucket of a window, by task and
/// state (an interval's epoch is an exact numeric: no float rounding).
pub(super) async fn count_runs(
    conn: &mut PgConnection,
    query: &RunCountQuery,
) -> TxResult<Vec<RunCount>> {
    let (at, ended) = query.counted.sql();
    let sql = format!(
        "SELECT task_name, status,
                floor(extract(epoch FROM {at} - $1) / $3::bigint)::bigint AS bucket,
                count(*) AS n
         FROM runs
         WHERE {at} >= $1 AND {at} < $2 {ended}
           AND (cardinality($4::text[]) = 0 OR task_name = ANY($4))
         GROUP BY task_name, status, bucket"
    );
    let rows = sqlx::query(&sql)
        .bind(query.from)
        .bind(query.to)
        .bind(query.resolution)
        .bind(&query.task_names)
        .fetch_all(&mut *conn)
        .await?;
    rows.iter()
        .map(|r| {
            Ok(RunCount {
                task_name: r.try_get("task_name")?,
                status: parse_state(r.try_get("status")?)?,
                bucket: r.try_get("bucket")?,
                count: r.try_get::<i64, _>("n")? as u64,
            })
        })
        .collect()
}

//! Task output: lines stored in batches, searched (by run tree, time,
//! stream and text), and counted per run.

use super::*;

/// A batch of lines as columns, for one `INSERT ... SELECT FROM unnest`:
/// run, task, attempt, stream, time, message.
type LogColumns = (
    Vec<String>,
    Vec<String>,
    Vec<i32>,
    Vec<String>,
    Vec<DateTime<Utc>>,
    Vec<String>,
);

impl PgStore {
    pub(super) async fn insert_logs(&self, lines: Vec<NewLogLine>) -> Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        let mut cols = LogColumns::default();
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

    pub(super) async fn select_logs(&self, query: &LogQuery) -> Result<Vec<LogLine>> {
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

    pub(super) async fn logged_bytes(&self, run_id: &str) -> Result<u64> {
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
}

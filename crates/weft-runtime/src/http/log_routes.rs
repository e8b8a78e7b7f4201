//! `GET /v1/logs` and `GET /v1/logs/subscribe` (a WebSocket): task output
//! as Render's API serves it, read from the store or followed live.

use std::sync::Arc;

use axum::Json;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{RawQuery, State};
use axum::response::Response;
use chrono::{DateTime, Utc};
use tokio::sync::broadcast;
use weft_protocol::api::{Log, LogLabel, LogsResponse};
use weft_store::{LogLine, LogQuery, NewLogLine};

use crate::coordinator::Coordinator;
use crate::http::json::ApiError;
use crate::http::params::Params;

type Shared = Arc<Coordinator>;

fn log_entry(
    id: String,
    run_id: &str,
    task_name: &str,
    stream: &str,
    at: DateTime<Utc>,
    message: String,
) -> Log {
    let label = |name: &str, value: &str| LogLabel {
        name: name.into(),
        value: value.into(),
    };
    Log {
        id,
        message,
        timestamp: at,
        labels: vec![
            label("taskRun", run_id),
            label("task", task_name),
            label("type", stream),
            label("level", if stream == "stderr" { "error" } else { "info" }),
        ],
    }
}

fn stored_log(l: LogLine) -> Log {
    log_entry(
        l.id.to_string(),
        &l.run_id,
        &l.task_name,
        &l.stream,
        l.at,
        l.message,
    )
}

/// The lines a logs request asks for. `level` and `type` both name the
/// stream, as the labels of each line say (`type` is the stream, `level`
/// `error` for stderr and `info` for stdout).
fn log_query(params: &Params) -> Result<LogQuery, ApiError> {
    let mut streams = Vec::new();
    for kind in params.list(&["type"]) {
        match kind.as_str() {
            "stdout" | "stderr" => streams.push(kind),
            other => {
                return Err(ApiError::bad_request(format!(
                    "type must be stdout or stderr, got {other:?}"
                )));
            }
        }
    }
    for level in params.list(&["level"]) {
        match level.as_str() {
            "info" => streams.push("stdout".into()),
            "error" => streams.push("stderr".into()),
            other => {
                return Err(ApiError::bad_request(format!(
                    "level must be info (stdout) or error (stderr), got {other:?}"
                )));
            }
        }
    }
    let newest_first = match params.one("direction") {
        None | Some("forward") => false,
        Some("backward") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "direction must be forward or backward, got {other:?}"
            )));
        }
    };
    Ok(LogQuery {
        run_ids: params.list(&["taskRunID", "taskRunId", "taskRun"]),
        include_descendants: params.one("includeSubtasks").is_some_and(|v| v == "true"),
        start: params.time("startTime")?,
        end: params.time("endTime")?,
        text: params.list(&["text"]),
        task_names: params
            .list(&["task"])
            .iter()
            .map(|t| weft_protocol::api::task_name_from_slug(t).to_string())
            .collect(),
        streams,
        after_id: None,
        newest_first,
        limit: params.number("limit", 100, 1000)?,
    })
}

/// Runs the query asks about that have ended while their output streams
/// are still open. Few streams are open at once (two per running process),
/// so this looks at those rather than at the query's whole run tree.
async fn ended_runs_still_writing(c: &Shared, query: &LogQuery) -> Result<Vec<String>, ApiError> {
    let mut ended = Vec::new();
    for id in c.logs().open_runs() {
        let Some(run) = c.store().get_run(&id).await? else {
            continue;
        };
        if !run.status.is_terminal() {
            continue;
        }
        let mut asked = query.run_ids.is_empty() || query.run_ids.contains(&run.id);
        // A subtask of an asked-for run: walk up its parents.
        let mut parent = run.parent_id.clone();
        while !asked && query.include_descendants {
            let Some(id) = parent else { break };
            asked = query.run_ids.contains(&id);
            parent = c.store().get_run(&id).await?.and_then(|r| r.parent_id);
        }
        if asked {
            ended.push(run.id);
        }
    }
    Ok(ended)
}

/// How long `GET /v1/logs` waits for the output of a run that has ended.
const SETTLE_ENDED_OUTPUT: std::time::Duration = std::time::Duration::from_secs(2);

pub(crate) async fn list_logs(
    State(c): State<Shared>,
    RawQuery(q): RawQuery,
) -> Result<Json<LogsResponse>, ApiError> {
    let params = Params::parse(q)?;
    let mut query = log_query(&params)?;
    let limit = query.limit;
    query.limit += 1;
    // A run that has ended may still have its last lines in a pipe (a
    // process flushes at exit, after reporting); wait briefly for them, so
    // that reading a finished run's logs gives all of them.
    let ended = ended_runs_still_writing(&c, &query).await?;
    c.logs().settled(&ended, SETTLE_ENDED_OUTPUT).await;
    c.logs().flush().await;
    let mut lines = c.store().query_logs(&query).await?;
    let has_more = lines.len() > limit as usize;
    lines.truncate(limit as usize);
    // The next page: forward, from just after the last line; backward,
    // up to (not including) the oldest line of this one.
    let (next_start_time, next_end_time) = if query.newest_first {
        (
            query
                .start
                .unwrap_or_else(|| lines.last().map_or_else(Utc::now, |l| l.at)),
            lines
                .last()
                .map(|l| l.at)
                .or(query.end)
                .unwrap_or_else(Utc::now),
        )
    } else {
        (
            lines
                .last()
                .map(|l| l.at + chrono::Duration::microseconds(1))
                .or(query.start)
                .unwrap_or_else(Utc::now),
            query.end.unwrap_or_else(Utc::now),
        )
    };
    Ok(Json(LogsResponse {
        logs: lines.into_iter().map(stored_log).collect(),
        has_more,
        next_start_time,
        next_end_time,
    }))
}

pub(crate) async fn subscribe_logs(
    State(c): State<Shared>,
    RawQuery(q): RawQuery,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let query = log_query(&Params::parse(q)?)?;
    // Lines are followed in the store (read every quarter second) when the
    // store is shared (other nodes' lines are only there), when the stream
    // starts in the past (`startTime`: those lines first, then the new
    // ones), or with `includeSubtasks` (the store knows the tree). Else
    // they are pushed as they are written.
    if c.store().events().is_some() || query.start.is_some() || query.include_descendants {
        return Ok(ws.on_upgrade(move |socket| follow_stored_logs(socket, c, query)));
    }
    let live = c.logs().subscribe();
    Ok(ws.on_upgrade(move |socket| stream_logs(socket, live, query)))
}

/// How often a log stream on a shared store reads new lines.
const FOLLOW_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// Streams the lines stored from now on that match, wherever they were
/// written, reading the store every [`FOLLOW_EVERY`].
async fn follow_stored_logs(mut socket: WebSocket, c: Shared, mut query: LogQuery) {
    // From the start asked for, else from a moment ago (node clocks differ
    // by a little).
    query.start = query
        .start
        .or_else(|| Some(Utc::now() - chrono::Duration::seconds(1)));
    query.newest_first = false;
    query.limit = 500;
    let mut tick = tokio::time::interval(FOLLOW_EVERY);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                c.logs().flush().await;
                let Ok(lines) = c.store().query_logs(&query).await else { continue };
                if let Some(last) = lines.last() {
                    query.after_id = Some(last.id);
                    query.start = None;
                }
                for line in lines {
                    let text = serde_json::to_string(&stored_log(line)).expect("log serialises");
                    if socket.send(Message::Text(text.into())).await.is_err() {
                        return;
                    }
                }
            }
            msg = socket.recv() => match msg {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                _ => {}
            },
        }
    }
}

async fn stream_logs(
    mut socket: WebSocket,
    mut live: broadcast::Receiver<Arc<NewLogLine>>,
    query: LogQuery,
) {
    let matches = |l: &NewLogLine| {
        (query.run_ids.is_empty() || query.run_ids.contains(&l.run_id))
            && (query.text.is_empty() || query.text.iter().any(|t| l.message.contains(t.as_str())))
            && (query.task_names.is_empty() || query.task_names.contains(&l.task_name))
            && (query.streams.is_empty() || query.streams.iter().any(|s| s == l.stream))
    };
    let mut seq = 0u64;
    loop {
        tokio::select! {
            line = live.recv() => match line {
                Ok(l) if matches(&l) => {
                    seq += 1;
                    let entry = log_entry(format!("live-{seq}"), &l.run_id, &l.task_name, l.stream, l.at, l.message.clone());
                    let text = serde_json::to_string(&entry).expect("log serialises");
                    if socket.send(Message::Text(text.into())).await.is_err() {
                        return;
                    }
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return,
            },
            msg = socket.recv() => match msg {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                _ => {}
            },
        }
    }
}

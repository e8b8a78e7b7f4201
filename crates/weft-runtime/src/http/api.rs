//! The REST API under `/v1`, with Server-Sent Events for runs that end, in
//! the shapes of Render's API (task output: `log_routes`).
//!
//! Weft's own additions live under `/weft/v1` (`POST /weft/v1/tasks/refresh`).

use std::collections::{HashSet, VecDeque};
use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::Stream;
use weft_protocol::api::{
    EVENT_TASK_COMPLETED, Node, RunTaskRequest, Task, TaskAttempt, TaskRun, TaskRunDetails,
    TaskRunWithCursor, TaskWithCursor,
};
use weft_store::{RunFilter, RunRecord, TaskRecord};

use crate::coordinator::Coordinator;
use crate::ends::EndWatch;
use crate::http::json::{ApiError, JsonBody, PathId};
use crate::http::log_routes::{list_logs, subscribe_logs};
use crate::http::params::Params;

type Shared = Arc<Coordinator>;

/// Render's API and weft's own routes beside it (the router puts them
/// behind the guard, with the dashboard).
pub(crate) fn routes() -> Router<Shared> {
    Router::new()
        .route("/v1/task-runs", post(start_run).get(list_runs))
        .route("/v1/task-runs/events", get(run_events))
        .route("/v1/task-runs/{id}", get(get_run).delete(cancel_run))
        .route("/v1/tasks", get(list_tasks))
        .route("/v1/tasks/{id}", get(get_task))
        .route("/v1/logs", get(list_logs))
        .route("/v1/logs/subscribe", get(subscribe_logs))
        .route("/weft/v1/tasks/refresh", post(refresh_tasks))
        .route("/weft/v1/nodes", get(list_nodes))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
}

/// `GET /healthz`: 200 while the node serves; 503, saying why, while it
/// is fenced (it runs nothing until it has rejoined), so that a load
/// balancer or an orchestrator's readiness check can see it.
async fn healthz(State(c): State<Shared>) -> Response {
    match c.fenced() {
        None => Json(serde_json::json!({"status": "ok"})).into_response(),
        Some(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"status": "fenced", "message": why})),
        )
            .into_response(),
    }
}

/// A run as lists show it.
pub fn task_run(run: &RunRecord) -> TaskRun {
    TaskRun {
        id: run.id.clone(),
        task_id: TaskRecord::id_for(&run.task_name),
        status: run.status.into(),
        parent_task_run_id: run.parent_id.clone().unwrap_or_default(),
        parent_task_attempt: run.parent_attempt,
        root_task_run_id: run.root_id.clone(),
        task_version: run.task_version.clone(),
        trace_id: Some(crate::traces::trace_id_hex(run)),
        retries: (run.attempts.len() as u32).saturating_sub(1),
        attempts: run
            .attempts
            .iter()
            .map(|a| attempt(run, a, false))
            .collect(),
        started_at: run.started_at,
        completed_at: run.completed_at,
    }
}

fn attempt(run: &RunRecord, a: &weft_store::AttemptRecord, details: bool) -> TaskAttempt {
    let enqueued_at = match a.number {
        1 => Some(run.created_at),
        n => run
            .attempts
            .iter()
            .find(|b| b.number == n - 1)
            .and_then(|b| b.completed_at),
    };
    TaskAttempt {
        attempt: a.number,
        status: a.status.into(),
        enqueued_at,
        started_at: a.started_at,
        task_run_id: Some(run.id.clone()),
        completed_at: a.completed_at,
        error: if details { a.error.clone() } else { None },
        results: if details { a.output.clone() } else { None },
        node_id: a.node_id.clone(),
        peak_memory_bytes: a.usage.peak_memory_bytes,
        cpu_time_ms: a.usage.cpu_time_ms,
    }
}

/// A run with its input, results and error.
pub fn task_run_details(run: &RunRecord) -> TaskRunDetails {
    let mut summary = task_run(run);
    summary.attempts = run.attempts.iter().map(|a| attempt(run, a, true)).collect();
    TaskRunDetails {
        run: summary,
        results: run
            .output
            .clone()
            .unwrap_or_else(weft_protocol::payload::Json::empty_array),
        input: run.input.clone(),
        error: if run.status.is_terminal() {
            run.error.clone()
        } else {
            None
        },
    }
}

fn task(t: &TaskRecord) -> Task {
    Task {
        id: t.id.clone(),
        name: t.name.clone(),
        created_at: t.created_at,
        options: Some(t.options.clone()),
        parameters: t.parameters.clone(),
    }
}

/// `POST /v1/task-runs`. A W3C `traceparent` header makes the run tree's
/// trace part of the caller's.
async fn start_run(
    State(c): State<Shared>,
    headers: axum::http::HeaderMap,
    JsonBody(req): JsonBody<RunTaskRequest>,
) -> Result<impl IntoResponse, ApiError> {
    if req.task.trim().is_empty() {
        return Err(ApiError::bad_request("task is required"));
    }
    let traceparent = headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let run = c
        .start_run_in_trace(&req.task, req.input, req.idempotency_key, traceparent)
        .await?;
    Ok((StatusCode::ACCEPTED, Json(task_run(&run))))
}

async fn get_run(
    State(c): State<Shared>,
    PathId(id): PathId,
) -> Result<Json<TaskRunDetails>, ApiError> {
    let run = c
        .store()
        .get_run(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("task run not found: {id}")))?;
    Ok(Json(task_run_details(&run)))
}

async fn cancel_run(State(c): State<Shared>, PathId(id): PathId) -> Result<StatusCode, ApiError> {
    c.cancel(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_runs(
    State(c): State<Shared>,
    RawQuery(q): RawQuery,
) -> Result<Json<Vec<TaskRunWithCursor>>, ApiError> {
    let params = Params::parse(q)?;
    let limit = params.number("limit", 20, 100)?;
    let before_seq = params.cursor()?;
    let status = params.status()?;
    // `taskSlug` (or weft's `taskId`) names tasks, with a version or
    // without (any version); `workflowVersionId` keeps runs pinned to one
    // of these versions. `workflowId` and `ownerId` are accepted and do
    // not narrow the list: a weft server runs one workflow for one owner.
    let (mut task_names, mut pinned) = (Vec::new(), Vec::new());
    for slug in params.list(&["taskSlug", "taskId"]) {
        let (name, version) = weft_protocol::api::task_slug_parts(&slug);
        let name = name.strip_prefix("tsk-").unwrap_or(name).to_string();
        match version {
            Some(version) => pinned.push((name, version.to_string())),
            None => task_names.push(name),
        }
    }
    let filter = RunFilter {
        task_names,
        pinned,
        versions: params.list(&["workflowVersionId"]),
        root_ids: params.list(&["rootTaskRunId"]),
        status,
        before_seq,
        roots_only: false,
        limit,
    };
    let runs = c.store().list_runs(&filter).await?;
    Ok(Json(
        runs.iter()
            .map(|r| TaskRunWithCursor {
                task_run: task_run(r),
                cursor: r.seq.to_string(),
            })
            .collect(),
    ))
}

/// State of one events stream.
struct Events {
    ends: EndWatch,
    waiting: HashSet<String>,
    ready: VecDeque<RunRecord>,
    /// The `retry:` advice is sent first.
    advised: bool,
}

/// How long a client should wait before reconnecting (`retry:`), as
/// Render's local server advises.
const SSE_RETRY: std::time::Duration = std::time::Duration::from_millis(2000);
/// A comment line this often keeps proxies from closing an idle stream.
const SSE_HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(25);

/// An end's place in a stream, its SSE `id`: when the run ended, then its
/// creation order. A client that reconnects with `Last-Event-ID` is sent
/// only the ends after it, so it never sees one twice.
fn end_position(run: &RunRecord) -> (i64, i64) {
    (
        run.completed_at.map_or(0, |t| t.timestamp_micros()),
        run.seq,
    )
}

fn parse_event_id(id: &str) -> Option<(i64, i64)> {
    let (at, seq) = id.split_once('-')?;
    Some((at.parse().ok()?, seq.parse().ok()?))
}

/// `GET /v1/task-runs/events`: each asked-for run once, when it ends (at
/// once for one that has). As Render's servers do, the stream stays open
/// until the client leaves, with a `retry:` advice, an `id:` per event and
/// a heartbeat; run ids it does not know are skipped.
async fn run_events(
    State(c): State<Shared>,
    headers: axum::http::HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let ids = Params::parse(q)?.list(&["taskRunIds", "taskRunId"]);
    if ids.is_empty() {
        return Err(ApiError::bad_request(
            "taskRunIds is required: the runs whose end to stream",
        ));
    }
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_event_id);
    // Watch first, so a run that ends while we read is not missed.
    let ends = c.watch_ends(ids.iter().cloned());
    let mut waiting = HashSet::new();
    let mut ended = Vec::new();
    for id in ids {
        match c.store().get_run(&id).await? {
            Some(run) if run.status.is_terminal() => ended.push(run),
            Some(_) => {
                waiting.insert(id);
            }
            None => tracing::debug!("event stream: skipping unknown run {id}"),
        }
    }
    ended.sort_by_key(end_position);
    ended.retain(|run| resume.is_none_or(|after| end_position(run) > after));
    let state = Events {
        ends,
        waiting,
        ready: ended.into(),
        advised: false,
    };
    let stream = futures::stream::unfold(state, |mut s| async move {
        if !s.advised {
            s.advised = true;
            return Some((Ok(Event::default().retry(SSE_RETRY)), s));
        }
        loop {
            if let Some(run) = s.ready.pop_front() {
                let data =
                    serde_json::to_string(&task_run_details(&run)).expect("details serialise");
                let (at, seq) = end_position(&run);
                let event = Event::default()
                    .id(format!("{at}-{seq}"))
                    .event(EVENT_TASK_COMPLETED)
                    .data(data);
                return Some((Ok(event), s));
            }
            if s.waiting.is_empty() {
                // Every run has been told: open until the client leaves.
                std::future::pending::<()>().await;
            }
            let Some(run) = s.ends.next().await else {
                std::future::pending::<()>().await;
                unreachable!("pending never resolves");
            };
            // A run read as ended above may be announced too: once only.
            if s.waiting.remove(&run.id) {
                s.ready.push_back((*run).clone());
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(SSE_HEARTBEAT).text("ping")))
}

async fn list_nodes(State(c): State<Shared>) -> Result<Json<Vec<Node>>, ApiError> {
    let nodes = c.store().nodes().await?;
    Ok(Json(
        nodes
            .into_iter()
            .map(|n| Node {
                id: n.id,
                host: n.host,
                started_at: n.started_at,
                last_heartbeat_at: n.heartbeat_at,
                gone_at: n.gone_at,
                running_attempts: n.running,
            })
            .collect(),
    ))
}

/// `GET /metrics`: the Prometheus text format. The node's own metrics
/// are served even when the database cannot say how many runs it holds
/// (a fenced node is exactly when they matter).
async fn metrics(State(c): State<Shared>) -> Result<Response, ApiError> {
    // What the database says, asked at once and waited for briefly: a
    // scrape must answer in time, the node's own metrics most of all when
    // the database does not (a fenced node).
    const STORE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);
    let (runs, stored_bytes) = match tokio::time::timeout(
        STORE_WAIT,
        futures::future::join(c.store().count_by_state(), c.store().stored_bytes()),
    )
    .await
    {
        Ok((runs, bytes)) => (runs.map_err(|e| e.to_string()), bytes.ok()),
        Err(_) => (
            Err(format!(
                "the database did not answer within {} s",
                STORE_WAIT.as_secs()
            )),
            None,
        ),
    };
    let (running_here, holding_slots) = c.load();
    let text = c.metrics().render(&crate::metrics::Snapshot {
        node: &c.store().node().id,
        runs: runs.as_deref().map_err(Clone::clone),
        running_here,
        holding_slots,
        max_concurrent: c.config().max_concurrent,
        standby_attempts: c.standby_attempts(),
        fenced: c.fenced().is_some(),
        stored_bytes,
    });
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

async fn list_tasks(State(c): State<Shared>) -> Json<Vec<TaskWithCursor>> {
    Json(
        c.tasks()
            .iter()
            .map(|t| TaskWithCursor {
                task: task(t),
                cursor: t.id.clone(),
            })
            .collect(),
    )
}

async fn get_task(State(c): State<Shared>, PathId(id): PathId) -> Result<Json<Task>, ApiError> {
    c.task(&id)
        .map(|t| Json(task(&t)))
        .ok_or_else(|| ApiError::not_found(format!("task not found: {id}")))
}

async fn refresh_tasks(State(c): State<Shared>) -> Result<Json<Vec<TaskWithCursor>>, ApiError> {
    c.register_tasks()
        .await
        .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, e.to_string()))?;
    Ok(list_tasks(State(c)).await)
}

//! What the dashboard (`weft-dashboard`'s pages) reads and does beyond
//! Render's API, under `/weft/v1`:
//!
//! - `GET /weft/v1/runs`: root runs, newest first, each with its subtasks
//!   counted by state (filters `task`, `status`; `cursor`, `limit`);
//! - `GET /weft/v1/runs/{id}/tree`: every run of the tree `id` is in,
//!   oldest first, in a compact shape;
//! - `POST /weft/v1/runs/{id}/rerun`: a new root run of the same task with
//!   the same input;
//! - `GET /weft/v1/changes`: Server-Sent Events saying that runs changed
//!   (coalesced), so a page can read again what it shows;
//! - `POST`/`DELETE /weft/v1/session`: sign in with the API key (a cookie
//!   for the pages, see [`crate::http::guard`]) and out.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use futures::Stream;
use serde::{Deserialize, Serialize};
use weft_store::{RunFilter, RunRecord, RunState};

use crate::coordinator::Coordinator;
use crate::http::api::task_run;
use crate::http::guard::Guard;
use crate::http::json::{ApiError, JsonBody, PathId};
use crate::http::params::Params;

type Shared = Arc<Coordinator>;

/// The most runs a tree answer holds; a larger tree says it was cut.
const TREE_LIMIT: usize = 20_000;
/// Changes are told at most this often: a fan-out of thousands is a few
/// reads a second for a page, not one per run.
const CHANGES_EVERY: Duration = Duration::from_millis(300);

pub(crate) fn routes(guard: Guard) -> Router<Shared> {
    Router::new()
        .route("/weft/v1/runs", get(list_roots))
        .route("/weft/v1/runs/{id}", get(details))
        .route("/weft/v1/runs/{id}/tree", get(tree))
        .route("/weft/v1/runs/{id}/rerun", post(rerun))
        .route("/weft/v1/changes", get(changes))
        .route(
            "/weft/v1/session",
            post(sign_in).delete(sign_out).with_state(guard),
        )
}

/// Subtask counts of a root run.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
struct Subtasks {
    total: u64,
    failed: u64,
    by_status: HashMap<&'static str, u64>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RootRun {
    id: String,
    task: String,
    status: &'static str,
    created_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
    completed_at: Option<DateTime<Utc>>,
    attempts: usize,
    error: Option<String>,
    subtasks: Subtasks,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RootPage {
    runs: Vec<RootRun>,
    /// Pass as `cursor` for the next (older) page; absent on the last.
    next_cursor: Option<String>,
    /// What the store takes (inputs, results and output of every run
    /// kept), when it could say.
    stored_bytes: Option<u64>,
}

/// A state as the API spells it.
fn wire(state: RunState) -> &'static str {
    weft_protocol::api::TaskRunStatus::from(state).as_str()
}

/// The first line of an error, at most 300 characters: lists show this much.
fn headline(error: &Option<String>) -> Option<String> {
    error.as_ref().map(|e| {
        let line = e.lines().next().unwrap_or_default();
        match line.char_indices().nth(300) {
            Some((cut, _)) => format!("{}…", &line[..cut]),
            None => line.to_string(),
        }
    })
}

async fn list_roots(
    State(c): State<Shared>,
    RawQuery(q): RawQuery,
) -> Result<Json<RootPage>, ApiError> {
    let params = Params::parse(q)?;
    let limit = params.number("limit", 50, 500)?;
    let before_seq = params.cursor()?;
    let status = params.status()?;
    let filter = RunFilter {
        pinned: Vec::new(),
        versions: Vec::new(),
        task_names: params.list(&["task"]),
        root_ids: Vec::new(),
        status,
        before_seq,
        roots_only: true,
        // One more than asked, to know whether there is a next page.
        limit: limit + 1,
    };
    let mut runs = c.store().list_runs(&filter).await?;
    let more = runs.len() > limit as usize;
    runs.truncate(limit as usize);
    let ids: Vec<String> = runs.iter().map(|r| r.id.clone()).collect();
    let mut counts: HashMap<String, Subtasks> = HashMap::new();
    for (root, state, n) in c.store().subtask_counts(&ids).await? {
        let entry = counts.entry(root).or_default();
        entry.total += n;
        if state == RunState::Failed {
            entry.failed += n;
        }
        *entry.by_status.entry(wire(state)).or_default() += n;
    }
    let next_cursor = more
        .then(|| runs.last().map(|r| r.seq.to_string()))
        .flatten();
    Ok(Json(RootPage {
        runs: runs
            .into_iter()
            .map(|r| RootRun {
                subtasks: counts.remove(&r.id).unwrap_or_default(),
                status: wire(r.status),
                attempts: r.attempts.len(),
                error: headline(&r.error),
                id: r.id,
                task: r.task_name,
                created_at: r.created_at,
                started_at: r.started_at,
                completed_at: r.completed_at,
            })
            .collect(),
        next_cursor,
        stored_bytes: c.store().stored_bytes().await.ok(),
    }))
}

/// One run of a tree, as the tree view draws it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TreeRun {
    id: String,
    parent_id: Option<String>,
    task: String,
    status: &'static str,
    created_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
    completed_at: Option<DateTime<Utc>>,
    attempts: usize,
    /// Attempts that ended in an error and were tried again.
    retried: usize,
    /// Attempts cut short by a crash or restart of the runtime.
    interrupted: usize,
    error: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Tree {
    root_id: String,
    runs: Vec<TreeRun>,
    /// More than [`TREE_LIMIT`] runs: the oldest ones are here.
    truncated: bool,
}

fn tree_run(r: &RunRecord) -> TreeRun {
    let interrupted = r.attempts.iter().filter(|a| a.interrupted).count();
    let failed = r
        .attempts
        .iter()
        .filter(|a| !a.interrupted && a.status == RunState::Failed)
        .count();
    // The last failed attempt of a failed run was not retried.
    let retried = if r.status == RunState::Failed {
        failed.saturating_sub(1)
    } else {
        failed
    };
    TreeRun {
        id: r.id.clone(),
        parent_id: r.parent_id.clone(),
        task: r.task_name.clone(),
        status: wire(r.status),
        created_at: r.created_at,
        started_at: r.started_at,
        completed_at: r.completed_at,
        attempts: r.attempts.len(),
        retried,
        interrupted,
        error: headline(&r.error),
    }
}

async fn tree(State(c): State<Shared>, PathId(id): PathId) -> Result<Json<Tree>, ApiError> {
    let run = c
        .store()
        .get_run(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("task run not found: {id}")))?;
    let root_id = run.root_id.clone();
    let mut runs = Vec::new();
    let mut before_seq = None;
    let truncated = loop {
        let page = c
            .store()
            .list_runs(&RunFilter {
                root_ids: vec![root_id.clone()],
                before_seq,
                limit: 1000,
                ..Default::default()
            })
            .await?;
        let last = page.last().map(|r| r.seq);
        let done = page.len() < 1000;
        runs.extend(page);
        if runs.len() >= TREE_LIMIT {
            break !done;
        }
        if done {
            break false;
        }
        before_seq = last;
    };
    // Pages come newest first; the tree reads oldest first.
    runs.reverse();
    Ok(Json(Tree {
        root_id,
        runs: runs.iter().map(tree_run).collect(),
        truncated,
    }))
}

/// One attempt, with what Render's shape leaves out.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AttemptView {
    attempt: u32,
    status: &'static str,
    started_at: DateTime<Utc>,
    completed_at: Option<DateTime<Utc>>,
    error: Option<String>,
    interrupted: bool,
    node_id: Option<String>,
    peak_memory_bytes: Option<u64>,
    cpu_time_ms: Option<u64>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RunView {
    id: String,
    task: String,
    /// The version its root run was pinned to, if any.
    task_version: Option<String>,
    /// The trace its tree is, and where to see it (`--trace-url`).
    trace_id: String,
    trace_url: Option<String>,
    status: &'static str,
    parent_id: Option<String>,
    root_id: String,
    created_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
    completed_at: Option<DateTime<Utc>>,
    input: weft_protocol::payload::Json,
    results: Option<weft_protocol::payload::Json>,
    error: Option<String>,
    attempts: Vec<AttemptView>,
}

async fn details(State(c): State<Shared>, PathId(id): PathId) -> Result<Json<RunView>, ApiError> {
    let r = c
        .store()
        .get_run(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("task run not found: {id}")))?;
    let trace_id = crate::traces::trace_id_hex(&r);
    let trace_url = c
        .config()
        .trace_url
        .as_ref()
        .map(|t| t.replace("{trace_id}", &trace_id));
    Ok(Json(RunView {
        trace_id,
        trace_url,
        status: wire(r.status),
        attempts: r
            .attempts
            .iter()
            .map(|a| AttemptView {
                attempt: a.number,
                status: wire(a.status),
                started_at: a.started_at,
                completed_at: a.completed_at,
                error: a.error.clone(),
                interrupted: a.interrupted,
                node_id: a.node_id.clone(),
                peak_memory_bytes: a.usage.peak_memory_bytes,
                cpu_time_ms: a.usage.cpu_time_ms,
            })
            .collect(),
        id: r.id,
        task: r.task_name,
        task_version: r.task_version,
        parent_id: r.parent_id,
        root_id: r.root_id,
        created_at: r.created_at,
        started_at: r.started_at,
        completed_at: r.completed_at,
        input: r.input,
        results: r.output,
        error: r.error,
    }))
}

async fn rerun(State(c): State<Shared>, PathId(id): PathId) -> Result<Response, ApiError> {
    let run = c.rerun(&id).await?;
    Ok((StatusCode::ACCEPTED, Json(task_run(&run))).into_response())
}

async fn changes(State(c): State<Shared>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let watch = c.watch_changes();
    let stopping = c.shutdown_token();
    let stream = futures::stream::unfold(
        (watch, stopping, true),
        |(mut watch, stopping, first)| async move {
            if !first {
                tokio::select! {
                    changed = watch.changed() => changed.ok()?,
                    _ = stopping.cancelled() => return None,
                }
                // Coalesce a burst into one event.
                tokio::time::sleep(CHANGES_EVERY).await;
            }
            let n = *watch.borrow_and_update();
            let event = Event::default().event("changed").data(n.to_string());
            let event = if first {
                event.retry(Duration::from_secs(2))
            } else {
                event
            };
            Some((Ok(event), (watch, stopping, false)))
        },
    );
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(25)))
}

#[derive(Deserialize)]
struct SignIn {
    token: String,
}

async fn sign_in(
    State(guard): State<Guard>,
    peer: Option<Extension<ConnectInfo<std::net::SocketAddr>>>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<SignIn>,
) -> Response {
    let peer = peer.map_or(std::net::SocketAddr::from(([0, 0, 0, 0], 0)), |p| (p.0).0);
    let try_number = match guard.admit(peer.ip()) {
        Ok(n) => n,
        Err(locked) => return locked.into_response(),
    };
    if !guard.key_ok(body.token.trim()) {
        tracing::warn!(
            "refused a sign-in to the dashboard from {peer}: wrong API key (try {try_number} in a row from this address)"
        );
        tokio::time::sleep(crate::http::guard::REFUSAL_PAUSE).await;
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "that is not this server's API key (RENDER_API_KEY, --api-key or --api-key-file)",
        )
        .into_response();
    }
    guard.right(peer.ip());
    let cookie = match guard.start_session().await {
        Ok(cookie) => cookie,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let secure = headers
        .get("x-forwarded-proto")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));
    let mut value = format!(
        "{}={cookie}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}",
        crate::http::guard::SESSION_COOKIE,
        crate::http::guard::SESSION_TTL.as_secs()
    );
    if secure {
        value.push_str("; Secure");
    }
    let mut answer = StatusCode::NO_CONTENT.into_response();
    answer.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&value).expect("a cookie of hex digits"),
    );
    answer
}

/// Ends the session (it is refused from now on, on every node) and
/// clears the cookie.
async fn sign_out(State(guard): State<Guard>, headers: HeaderMap) -> Response {
    if let Err(e) = guard.end_session(&headers).await {
        return ApiError::from(e).into_response();
    }
    let mut answer = StatusCode::NO_CONTENT.into_response();
    answer.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&format!(
            "{}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0",
            crate::http::guard::SESSION_COOKIE
        ))
        .expect("a plain cookie"),
    );
    answer
}

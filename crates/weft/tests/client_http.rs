//! The REST client against a fake API server on a local TCP port: request
//! shapes (paths, queries, headers, bodies), the event stream, and error
//! mapping.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures::StreamExt as _;
use serde_json::{Value, json};
use weft::client::{Client, Error, ListTaskRunsParams, LogsQuery, TaskRunDetailsExt};
use weft::protocol::api::TaskRunStatus;

#[derive(Debug, Clone)]
struct Recorded {
    method: String,
    uri: String,
    authorization: Option<String>,
    accept: Option<String>,
    body: Value,
}

type Script = dyn Fn(&Recorded, usize) -> (u16, String, &'static str) + Send + Sync;

struct Fake {
    log: Mutex<Vec<Recorded>>,
    script: Box<Script>,
}

/// Serves `script`'s answers (status, body, content type) on a local port.
async fn serve(
    script: impl Fn(&Recorded, usize) -> (u16, String, &'static str) + Send + Sync + 'static,
) -> (String, Arc<Fake>) {
    let fake = Arc::new(Fake {
        log: Mutex::new(Vec::new()),
        script: Box::new(script),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = Router::new().fallback(answer).with_state(fake.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, fake)
}

async fn answer(State(fake): State<Arc<Fake>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    };
    let mut recorded = Recorded {
        method: parts.method.to_string(),
        uri: parts.uri.to_string(),
        authorization: header("authorization"),
        accept: header("accept"),
        body: Value::Null,
    };
    let bytes = to_bytes(body, usize::MAX).await.unwrap();
    if !bytes.is_empty() {
        recorded.body = serde_json::from_slice(&bytes).unwrap();
    }
    let (status, body, content_type) = {
        let mut log = fake.log.lock().unwrap();
        let n = log.iter().filter(|r| r.uri == recorded.uri).count();
        let reply = (fake.script)(&recorded, n);
        log.push(recorded);
        reply
    };
    (
        StatusCode::from_u16(status).unwrap(),
        [("content-type", content_type)],
        Body::from(body),
    )
        .into_response()
}

fn run(id: &str, status: &str) -> Value {
    json!({
        "id": id, "taskId": "tsk-square", "status": status, "parentTaskRunId": "",
        "rootTaskRunId": id, "retries": 0, "attempts": [],
    })
}

fn details(id: &str, status: &str, results: Value, error: Option<&str>) -> Value {
    let mut v = run(id, status);
    v["results"] = results;
    v["input"] = json!([3]);
    if let Some(e) = error {
        v["error"] = json!(e);
    }
    v
}

const JSON: &str = "application/json";
const SSE: &str = "text/event-stream";

#[tokio::test]
async fn run_task_starts_then_waits_on_the_event_stream() {
    let (url, fake) = serve(|req, _| match (req.method.as_str(), req.uri.as_str()) {
        ("POST", "/v1/task-runs") => (202, run("trn-1", "pending").to_string(), JSON),
        ("GET", "/v1/task-runs/events?taskRunIds=trn-1") => {
            let data = details("trn-1", "completed", json!([9]), None);
            // Another run's event first, split over lines as servers send them.
            let other = details("trn-0", "completed", json!([1]), None);
            let body = format!(
                ": ping\n\nevent: task.completed\ndata: {other}\n\nevent: task.completed\ndata: {data}\n\n"
            );
            (200, body, SSE)
        }
        _ => (404, json!({"message": "no route"}).to_string(), JSON),
    })
    .await;
    let client = Client::builder(&url).token("secret").build().unwrap();
    let finished = client
        .run_task("my-workflow/square", 3)
        .idempotency_key("k-1")
        .await
        .unwrap();
    assert_eq!(finished.run.id, "trn-1");
    assert_eq!(finished.result::<i64>().unwrap(), 9);
    let log = fake.log.lock().unwrap().clone();
    assert_eq!(log.len(), 2);
    assert_eq!(
        log[0].body,
        json!({"task": "my-workflow/square", "input": [3], "idempotencyKey": "k-1"})
    );
    assert_eq!(log[0].authorization.as_deref(), Some("Bearer secret"));
    assert_eq!(log[1].accept.as_deref(), Some("text/event-stream"));
}

#[tokio::test]
async fn a_failed_run_is_task_run_failed() {
    let (url, _) = serve(|req, _| match req.uri.as_str() {
        "/v1/task-runs" => (202, run("trn-2", "running").to_string(), JSON),
        _ => {
            let data = details("trn-2", "failed", json!([]), Some("boom"));
            (200, format!("event: task.completed\ndata: {data}\n\n"), SSE)
        }
    })
    .await;
    let client = Client::new(&url).unwrap();
    let handle = client.start_task("square", (3,)).await.unwrap();
    assert_eq!(handle.id(), "trn-2");
    let err = handle.wait().await.unwrap_err();
    assert_eq!(err.to_string(), "task run trn-2 failed: boom");
    assert!(matches!(err, Error::TaskRunFailed { .. }));
}

#[tokio::test]
async fn a_broken_event_stream_is_reopened() {
    let (url, fake) = serve(|req, n| match req.uri.as_str() {
        "/v1/task-runs" => (202, run("trn-3", "pending").to_string(), JSON),
        // First the stream ends without the event, then the server fails,
        // then it answers.
        _ if n == 0 => (200, String::new(), SSE),
        _ if n == 1 => (503, json!({"message": "restarting"}).to_string(), JSON),
        _ => {
            let data = details("trn-3", "completed", json!([[1, 2]]), None);
            (200, format!("event: task.completed\ndata: {data}\n\n"), SSE)
        }
    })
    .await;
    let client = Client::new(&url).unwrap();
    let started = std::time::Instant::now();
    let finished = client.run_task("pair", ()).await.unwrap();
    assert_eq!(finished.result::<Vec<i64>>().unwrap(), [1, 2]);
    // Waits of 1 s then 2 s between the tries.
    assert!(started.elapsed() >= Duration::from_secs(3));
    assert_eq!(fake.log.lock().unwrap()[0].body["input"], json!([]));
}

#[tokio::test]
async fn an_ended_run_is_fetched_not_streamed() {
    let (url, fake) = serve(|req, _| match req.uri.as_str() {
        "/v1/task-runs" => (202, run("trn-4", "completed").to_string(), JSON),
        "/v1/task-runs/trn-4" => (
            200,
            details("trn-4", "completed", json!([4]), None).to_string(),
            JSON,
        ),
        _ => (500, String::new(), JSON),
    })
    .await;
    let client = Client::new(&url).unwrap();
    let finished = client.run_task("square", [2]).await.unwrap();
    assert_eq!(finished.result::<i64>().unwrap(), 4);
    assert_eq!(fake.log.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn queries_and_paths() {
    let (url, fake) = serve(|req, _| {
        let body = match req.uri.split('?').next().unwrap() {
            "/v1/task-runs" => json!([{"taskRun": run("trn-1", "running"), "cursor": "c1"}]),
            "/v1/logs" => json!({"logs": [], "hasMore": false,
                                 "nextStartTime": "2026-01-01T00:00:00Z",
                                 "nextEndTime": "2026-01-01T00:00:00Z"}),
            "/v1/tasks" | "/weft/v1/tasks/refresh" => json!([{
                "task": {"id": "tsk-1", "name": "square", "createdAt": "2026-01-01T00:00:00Z"},
                "cursor": "tsk-1"}]),
            "/v1/tasks/wf%2Fsquare" => {
                json!({"id": "tsk-1", "name": "square", "createdAt": "2026-01-01T00:00:00Z"})
            }
            _ => return (204, String::new(), JSON),
        };
        (200, body.to_string(), JSON)
    })
    .await;
    let client = Client::new(&url).unwrap();
    let runs = client
        .list_task_runs(&ListTaskRunsParams {
            task_slug: Some("wf/square".into()),
            root_task_run_id: Some("trn-0".into()),
            status: Some(TaskRunStatus::Failed),
            limit: Some(20),
            cursor: Some("c0".into()),
        })
        .await
        .unwrap();
    assert_eq!(runs[0].cursor, "c1");
    client
        .list_task_runs(&ListTaskRunsParams::default())
        .await
        .unwrap();
    let start = chrono::DateTime::parse_from_rfc3339("2026-01-02T03:04:05Z")
        .unwrap()
        .to_utc();
    client
        .logs(&LogsQuery {
            task_run_ids: vec!["trn-1".into(), "trn-2".into()],
            start_time: Some(start),
            end_time: None,
            text: vec!["error".into()],
            ..LogsQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(client.list_tasks().await.unwrap()[0].task.name, "square");
    assert_eq!(client.get_task("wf/square").await.unwrap().id, "tsk-1");
    assert_eq!(client.refresh_tasks().await.unwrap().len(), 1);
    client.cancel_task_run("trn-1").await.unwrap();
    let log: Vec<String> = fake
        .log
        .lock()
        .unwrap()
        .iter()
        .map(|r| format!("{} {}", r.method, r.uri))
        .collect();
    assert_eq!(
        log,
        [
            "GET /v1/task-runs?taskSlug=wf%2Fsquare&rootTaskRunId=trn-0&status=failed&limit=20&cursor=c0",
            "GET /v1/task-runs",
            "GET /v1/logs?taskRunID=trn-1%2Ctrn-2&startTime=2026-01-02T03%3A04%3A05Z&text=error",
            "GET /v1/tasks",
            "GET /v1/tasks/wf%2Fsquare",
            "POST /weft/v1/tasks/refresh",
            "DELETE /v1/task-runs/trn-1",
        ]
    );
}

#[tokio::test]
async fn errors_carry_the_server_message() {
    let (url, _) = serve(|req, _| match req.uri.as_str() {
        "/v1/task-runs/nope" => (
            404,
            json!({"message": "task run nope not found"}).to_string(),
            JSON,
        ),
        "/v1/tasks" => (500, "database on fire".into(), "text/plain"),
        _ => (200, "not json".into(), JSON),
    })
    .await;
    let client = Client::new(&url).unwrap();
    let err = client.get_task_run("nope").await.unwrap_err();
    assert!(err.is_not_found());
    assert_eq!(
        err.to_string(),
        "get task run failed with status 404: task run nope not found"
    );
    let err = client.list_tasks().await.unwrap_err();
    assert!(matches!(
        err,
        Error::Server {
            status: Some(500),
            ..
        }
    ));
    assert_eq!(
        err.to_string(),
        "list tasks failed with status 500: database on fire"
    );
    let err = client.get_task("x").await.unwrap_err();
    assert!(matches!(err, Error::Decode { .. }), "{err}");
}

#[tokio::test]
async fn the_event_stream_yields_each_ended_run() {
    let (url, _) = serve(|_, _| {
        let a = details("trn-a", "completed", json!([1]), None);
        let b = details("trn-b", "canceled", json!([]), None);
        (
            200,
            format!("event: task.completed\ndata: {a}\n\nevent: task.canceled\ndata: {b}\n\n"),
            SSE,
        )
    })
    .await;
    let client = Client::new(&url).unwrap();
    let ids: Vec<String> = client
        .task_run_events(["trn-a", "trn-b"])
        .map(|r| r.unwrap().run.id)
        .collect()
        .await;
    assert_eq!(ids, ["trn-a", "trn-b"]);
}

//! The worker against a fake runtime: the test serves a real Unix socket,
//! records every request, answers from a script, and checks the worker's
//! exact request sequence and bodies in register and run mode.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::serve::ListenerExt as _;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use futures::future::try_join_all;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use weft::{
    Mode, Retry, SubtaskError, Task, TaskContext, TaskOptions, TaskResult, WorkerError, Workflows,
};

/// One request the worker sent.
#[derive(Debug, Clone)]
struct Recorded {
    method: String,
    /// Path and query.
    uri: String,
    connection: Option<String>,
    content_type: Option<String>,
    user_agent: Option<String>,
    body: Value,
    arrived: Instant,
}

impl Recorded {
    fn path(&self) -> &str {
        self.uri.split('?').next().unwrap()
    }
}

/// An answer: status, JSON body, and how long to hold it.
struct Reply {
    status: StatusCode,
    body: Value,
    hold: Duration,
}

impl Reply {
    fn ok(body: Value) -> Self {
        Self {
            status: StatusCode::OK,
            body,
            hold: Duration::ZERO,
        }
    }

    fn status(status: u16, message: &str) -> Self {
        Self {
            status: StatusCode::from_u16(status).unwrap(),
            body: json!({ "message": message }),
            hold: Duration::ZERO,
        }
    }

    fn held(mut self, hold: Duration) -> Self {
        self.hold = hold;
        self
    }
}

type Script = dyn Fn(&Recorded, &[Recorded]) -> Reply + Send + Sync;

struct Fake {
    log: Mutex<Vec<Recorded>>,
    script: Box<Script>,
    /// Connections accepted.
    connections: std::sync::atomic::AtomicUsize,
}

/// A fake runtime serving the task socket in a temporary directory.
struct FakeRuntime {
    fake: Arc<Fake>,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl FakeRuntime {
    fn start(script: impl Fn(&Recorded, &[Recorded]) -> Reply + Send + Sync + 'static) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("task.sock");
        let fake = Arc::new(Fake {
            log: Mutex::new(Vec::new()),
            script: Box::new(script),
            connections: Default::default(),
        });
        let counted = fake.clone();
        let listener = tokio::net::UnixListener::bind(&socket)
            .unwrap()
            .tap_io(move |_| {
                counted.connections.fetch_add(1, Ordering::SeqCst);
            });
        let app = Router::new().fallback(answer).with_state(fake.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            fake,
            socket,
            _dir: dir,
        }
    }

    fn connections(&self) -> usize {
        self.fake.connections.load(Ordering::SeqCst)
    }

    fn requests(&self) -> Vec<Recorded> {
        self.fake.log.lock().unwrap().clone()
    }

    fn paths(&self) -> Vec<String> {
        self.requests()
            .iter()
            .map(|r| format!("{} {}", r.method, r.path()))
            .collect()
    }

    fn callback(&self) -> Value {
        let requests = self.requests();
        let callbacks: Vec<_> = requests
            .iter()
            .filter(|r| r.path() == "/callback")
            .collect();
        assert_eq!(callbacks.len(), 1, "one callback: {:?}", self.paths());
        callbacks[0].body.clone()
    }
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
        connection: header("connection"),
        content_type: header("content-type"),
        user_agent: header("user-agent"),
        body: Value::Null,
        arrived: Instant::now(),
    };
    let bytes = to_bytes(body, usize::MAX).await.unwrap();
    if !bytes.is_empty() {
        recorded.body = serde_json::from_slice(&bytes).unwrap();
    }
    let reply = {
        let mut log = fake.log.lock().unwrap();
        let reply = (fake.script)(&recorded, &log);
        log.push(recorded);
        reply
    };
    tokio::time::sleep(reply.hold).await;
    (
        reply.status,
        [("content-type", "application/json")],
        Body::from(reply.body.to_string()),
    )
        .into_response()
}

/// How many requests on `path` the log holds.
fn count(log: &[Recorded], path: &str) -> usize {
    log.iter().filter(|r| r.path() == path).count()
}

fn b64(value: &Value) -> String {
    STANDARD.encode(value.to_string())
}

fn unb64(encoded: &Value) -> Value {
    serde_json::from_slice(&STANDARD.decode(encoded.as_str().unwrap()).unwrap()).unwrap()
}

fn input(task: &str, args: Value) -> Value {
    json!({
        "task_name": task,
        "input": b64(&args),
        "task_run_id": "trn-parent",
        "root_task_run_id": "trn-root",
        "parent_task_run_id": "",
    })
}

#[derive(Serialize, Deserialize)]
struct Greeting {
    name: String,
    punctuation: String,
}

const SQUARE: Task<i64, i64> = Task::named("square");

async fn square(_ctx: TaskContext, x: i64) -> TaskResult<i64> {
    Ok(x * x)
}

fn app() -> Workflows {
    let mut app = Workflows::new().default_timeout_seconds(120);
    app.register(SQUARE, square);
    app.task(
        "add_squares",
        |ctx: TaskContext, (a, b): (i64, i64)| async move {
            let (x, y) = futures::try_join!(ctx.run(&SQUARE, a), ctx.run(&SQUARE, b))?;
            Ok(x + y)
        },
    );
    app.task("fan_out", |ctx: TaskContext, n: i64| async move {
        let squares = try_join_all((0..n).map(|i| ctx.run(&SQUARE, i))).await?;
        Ok(squares.iter().sum::<i64>())
    });
    app.task_with(
        "greet",
        TaskOptions::new()
            .retry(Retry::new(3, 100).factor(2.0))
            .plan("starter"),
        |ctx: TaskContext, g: Greeting| async move {
            Ok(json!({
                "text": format!("hello {}{}", g.name, g.punctuation),
                "run": ctx.task_run_id(),
                "root": ctx.root_task_run_id(),
                "parent": ctx.parent_task_run_id(),
            }))
        },
    );
    app.task("list", |_ctx, n: usize| async move { Ok(vec![7; n]) });
    app.task("fail", |_ctx, ()| async move {
        Err::<(), _>("it went wrong".into())
    });
    app.task("panic", |_ctx, ()| async move {
        let v: Vec<i64> = Vec::new();
        Ok(v[3])
    });
    app
}

#[tokio::test]
async fn register_lists_every_task_once() {
    let runtime = FakeRuntime::start(|_, _| Reply::ok(json!({})));
    app()
        .start_with(Mode::Register, &runtime.socket)
        .await
        .unwrap();
    let requests = runtime.requests();
    assert_eq!(runtime.paths(), ["POST /register-tasks"]);
    let register = &requests[0];
    assert_eq!(register.connection, None, "kept alive, HTTP/1.1's default");
    assert_eq!(register.content_type.as_deref(), Some("application/json"));
    assert!(
        register
            .user_agent
            .as_deref()
            .unwrap()
            .starts_with("weft-rust/")
    );
    let timeout = json!({"timeout_seconds": 120});
    assert_eq!(
        register.body,
        json!({"tasks": [
            {"name": "square", "options": timeout},
            {"name": "add_squares", "options": timeout},
            {"name": "fan_out", "options": timeout},
            {"name": "greet",
             "options": {"retry": {"max_retries": 3, "wait_duration_ms": 100, "factor": 2.0},
                         "timeout_seconds": 120, "plan": "starter"},
             "parameters": [{"name": "name", "has_default": false},
                            {"name": "punctuation", "has_default": false}]},
            {"name": "list", "options": timeout},
            {"name": "fail", "options": timeout},
            {"name": "panic", "options": timeout},
        ]})
    );
}

#[tokio::test]
async fn run_fetches_input_runs_and_calls_back() {
    let runtime = FakeRuntime::start(|req, _| match req.path() {
        "/input" => Reply::ok(input("square", json!([12]))),
        _ => Reply::ok(json!({})),
    });
    app().start_with(Mode::Run, &runtime.socket).await.unwrap();
    assert_eq!(runtime.paths(), ["GET /input", "POST /callback"]);
    let requests = runtime.requests();
    let query = requests[0].uri.split_once('?').unwrap().1;
    let ns: i64 = query
        .strip_prefix("sdk_started_at=")
        .unwrap()
        .parse()
        .unwrap();
    assert!(ns > 1_600_000_000_000_000_000, "{query}");
    assert_eq!(requests[0].body, Value::Null);
    assert!(requests.iter().all(|r| r.connection.is_none()));
    assert_eq!(runtime.connections(), 1, "both calls on one connection");
    assert_eq!(
        requests[1].body,
        json!({"complete": {"output": b64(&json!([144]))}})
    );
}

#[tokio::test]
async fn named_inputs_metadata_and_result_wrapping() {
    let runtime = FakeRuntime::start(|req, _| match req.path() {
        "/input" => Reply::ok(input("greet", json!({"name": "ada", "punctuation": "!"}))),
        _ => Reply::ok(json!({})),
    });
    app().start_with(Mode::Run, &runtime.socket).await.unwrap();
    let output = unb64(&runtime.callback()["complete"]["output"]);
    assert_eq!(
        output,
        json!([{"text": "hello ada!", "run": "trn-parent", "root": "trn-root", "parent": null}])
    );

    // A list result is the results array itself.
    let runtime = FakeRuntime::start(|req, _| match req.path() {
        "/input" => Reply::ok(input("list", json!([3]))),
        _ => Reply::ok(json!({})),
    });
    app().start_with(Mode::Run, &runtime.socket).await.unwrap();
    assert_eq!(
        unb64(&runtime.callback()["complete"]["output"]),
        json!([7, 7, 7])
    );
}

/// Answers `run-subtask` with an id naming the input, and
/// `get-subtask-result` with the square of that input.
fn children(req: &Recorded) -> Option<Reply> {
    match req.path() {
        "/run-subtask" => {
            let x = unb64(&req.body["input"])[0].as_i64().unwrap();
            Some(Reply::ok(json!({"task_run_id": format!("trn-sq-{x}")})))
        }
        "/get-subtask-result" => {
            let id = req.body["task_run_id"].as_str().unwrap();
            let x: i64 = id.strip_prefix("trn-sq-").unwrap().parse().unwrap();
            Some(Reply::ok(
                json!({"still_running": false, "complete": {"output": b64(&json!([x * x]))}}),
            ))
        }
        _ => None,
    }
}

#[tokio::test]
async fn subtasks_start_poll_and_unwrap_results() {
    let runtime = FakeRuntime::start(|req, log| {
        let polls = count(log, "/get-subtask-result");
        match req.path() {
            "/input" => Reply::ok(input("add_squares", json!([3, 4]))),
            // The first question is answered "still running" at once.
            "/get-subtask-result" if polls == 0 => Reply::ok(json!({"still_running": true})),
            _ => children(req).unwrap_or_else(|| Reply::ok(json!({}))),
        }
    });
    app().start_with(Mode::Run, &runtime.socket).await.unwrap();
    let requests = runtime.requests();
    let starts: Vec<_> = requests
        .iter()
        .filter(|r| r.path() == "/run-subtask")
        .collect();
    assert_eq!(starts.len(), 2);
    let mut inputs = HashSet::new();
    for start in &starts {
        let body = start.body.as_object().unwrap();
        let mut keys: Vec<_> = body.keys().collect();
        keys.sort();
        assert_eq!(
            keys,
            ["created_at", "idempotency_key", "input", "task_name"]
        );
        assert_eq!(body["task_name"], "square");
        inputs.insert(unb64(&body["input"]).to_string());
        uuid_v4(&body["idempotency_key"]);
        chrono::DateTime::parse_from_rfc3339(body["created_at"].as_str().unwrap()).unwrap();
    }
    assert_eq!(
        inputs,
        HashSet::from(["[3]".to_string(), "[4]".to_string()])
    );
    assert_ne!(
        starts[0].body["idempotency_key"],
        starts[1].body["idempotency_key"]
    );
    let polls: Vec<_> = requests
        .iter()
        .filter(|r| r.path() == "/get-subtask-result")
        .collect();
    assert_eq!(
        polls.len(),
        3,
        "one child polled twice: {:?}",
        runtime.paths()
    );
    assert_eq!(runtime.paths().first().unwrap(), "GET /input");
    assert_eq!(runtime.paths().last().unwrap(), "POST /callback");
    assert_eq!(
        runtime.callback(),
        json!({"complete": {"output": b64(&json!([25]))}})
    );
}

fn uuid_v4(value: &Value) {
    let key = value.as_str().unwrap();
    assert_eq!(key.len(), 36, "{key}");
    assert_eq!(&key[14..15], "4", "{key}");
}

#[tokio::test]
async fn transient_errors_are_retried_with_the_same_key() {
    let runtime = FakeRuntime::start(|req, log| {
        let seen = |path: &str| count(log, path);
        match req.path() {
            "/input" if seen("/input") == 0 => Reply::status(503, "starting up"),
            "/input" => Reply::ok(input("add_squares", json!([1, 2]))),
            "/run-subtask" if seen("/run-subtask") < 2 => Reply::status(500, "database is locked"),
            "/callback" if seen("/callback") == 0 => Reply::status(429, "slow down"),
            _ => children(req).unwrap_or_else(|| Reply::ok(json!({}))),
        }
    });
    app().start_with(Mode::Run, &runtime.socket).await.unwrap();
    let requests = runtime.requests();
    assert_eq!(requests.iter().filter(|r| r.path() == "/input").count(), 2);
    assert_eq!(
        requests.iter().filter(|r| r.path() == "/callback").count(),
        2
    );
    let starts: Vec<_> = requests
        .iter()
        .filter(|r| r.path() == "/run-subtask")
        .collect();
    assert_eq!(
        starts.len(),
        4,
        "two failures, then each child started once"
    );
    // Every retry of a start resends that call's key and creation time.
    let mut per_key: std::collections::HashMap<String, HashSet<String>> = Default::default();
    for start in &starts {
        per_key
            .entry(start.body["idempotency_key"].as_str().unwrap().to_string())
            .or_default()
            .insert(start.body["created_at"].to_string() + &start.body["input"].to_string());
    }
    assert_eq!(per_key.len(), 2, "two logical calls");
    assert!(per_key.values().all(|bodies| bodies.len() == 1));
    let last = requests.last().unwrap();
    assert_eq!(last.body, json!({"complete": {"output": b64(&json!([5]))}}));
}

#[tokio::test]
async fn client_errors_are_not_retried() {
    let runtime = FakeRuntime::start(|_, _| Reply::status(400, "no run for this socket"));
    let err = app()
        .start_with(Mode::Run, &runtime.socket)
        .await
        .unwrap_err();
    assert_eq!(runtime.paths(), ["GET /input"]);
    assert_eq!(
        err.to_string(),
        "get input failed with status 400: no run for this socket"
    );
}

#[tokio::test]
async fn errors_and_panics_become_error_callbacks() {
    for (task, details) in [
        ("fail", "it went wrong"),
        (
            "panic",
            "panicked: index out of bounds: the len is 0 but the index is 3",
        ),
        ("nope", "Task 'nope' not found"),
        (
            "square",
            "invalid input for task 'square': invalid type: sequence, expected i64 \
             (read as a single argument: invalid type: string \"x\", expected i64)",
        ),
    ] {
        let runtime = FakeRuntime::start(move |req, _| match req.path() {
            "/input" if task == "square" => Reply::ok(input(task, json!(["x"]))),
            "/input" => Reply::ok(input(task, json!([]))),
            _ => Reply::ok(json!({})),
        });
        let err = app()
            .start_with(Mode::Run, &runtime.socket)
            .await
            .unwrap_err();
        assert!(matches!(err, WorkerError::TaskFailed { .. }), "{err}");
        assert_eq!(runtime.paths(), ["GET /input", "POST /callback"], "{task}");
        let error = &runtime.callback()["error"];
        assert!(
            error["details"].as_str().unwrap().starts_with(details),
            "{task}: {error}"
        );
        if task == "panic" {
            let trace = error["stack_trace"].as_str().unwrap();
            assert!(
                trace.starts_with("panicked at crates/weft/tests/worker_socket.rs:"),
                "{trace}"
            );
        } else {
            assert!(error.get("stack_trace").is_none(), "{task}: {error}");
        }
    }
}

#[tokio::test]
async fn a_failed_child_fails_its_parent_with_its_message() {
    let runtime = FakeRuntime::start(|req, _| match req.path() {
        "/input" => Reply::ok(input("add_squares", json!([2, 5]))),
        "/get-subtask-result" if req.body["task_run_id"] == "trn-sq-5" => Reply::ok(json!({
            "still_running": false,
            "error": {"details": "five is right out", "stack_trace": "at square"}
        })),
        _ => children(req).unwrap_or_else(|| Reply::ok(json!({}))),
    });
    app()
        .start_with(Mode::Run, &runtime.socket)
        .await
        .unwrap_err();
    assert_eq!(
        runtime.callback(),
        json!({"error": {"details": "subtask 'square' (trn-sq-5) failed: five is right out"}})
    );
}

#[tokio::test]
async fn a_held_poll_is_repeated_at_once_and_a_quick_one_after_a_pause() {
    let runtime = FakeRuntime::start(|req, log| {
        let polls = count(log, "/get-subtask-result");
        match req.path() {
            "/input" => Reply::ok(input("fan_out", json!([1]))),
            // Held like weft's long poll, then answered at once like
            // Render's server, then the result.
            "/get-subtask-result" if polls == 0 => {
                Reply::ok(json!({"still_running": true})).held(Duration::from_millis(1200))
            }
            "/get-subtask-result" if polls == 1 => Reply::ok(json!({"still_running": true})),
            _ => children(req).unwrap_or_else(|| Reply::ok(json!({}))),
        }
    });
    app().start_with(Mode::Run, &runtime.socket).await.unwrap();
    let polls: Vec<_> = runtime
        .requests()
        .into_iter()
        .filter(|r| r.path() == "/get-subtask-result")
        .collect();
    assert_eq!(polls.len(), 3);
    // Held for 1.2 s and repeated at once: well under the 2.2 s a pause of
    // a second after it would take.
    let after_held = polls[1].arrived - polls[0].arrived;
    assert!(after_held < Duration::from_millis(2000), "{after_held:?}");
    let after_quick = polls[2].arrived - polls[1].arrived;
    assert!(after_quick >= Duration::from_millis(950), "{after_quick:?}");
    assert_eq!(
        runtime.callback(),
        json!({"complete": {"output": b64(&json!([0]))}})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wide_fan_out_completes() {
    const WIDTH: i64 = 500;
    let runtime = FakeRuntime::start(|req, _| match req.path() {
        "/input" => Reply::ok(input("fan_out", json!([WIDTH]))),
        // Each child takes a while, so many polls are in flight at once.
        "/get-subtask-result" => children(req).unwrap().held(Duration::from_millis(50)),
        _ => children(req).unwrap_or_else(|| Reply::ok(json!({}))),
    });
    app().start_with(Mode::Run, &runtime.socket).await.unwrap();
    let requests = runtime.requests();
    let keys: HashSet<_> = requests
        .iter()
        .filter(|r| r.path() == "/run-subtask")
        .map(|r| r.body["idempotency_key"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(keys.len(), WIDTH as usize);
    // Connections are reused: far fewer than one per call (a call in
    // flight holds one; the pool may open another rather than wait).
    assert!(
        runtime.connections() * 2 < requests.len(),
        "{} connections for {} requests",
        runtime.connections(),
        requests.len()
    );
    let sum: i64 = (0..WIDTH).map(|i| i * i).sum();
    assert_eq!(
        runtime.callback(),
        json!({"complete": {"output": b64(&json!([sum]))}})
    );
}

#[test]
fn subtask_errors_name_the_child() {
    let err = SubtaskError::Failed {
        task: "square".into(),
        task_run_id: "trn-1".into(),
        message: "boom".into(),
        stack_trace: None,
    };
    assert_eq!(err.to_string(), "subtask 'square' (trn-1) failed: boom");
}

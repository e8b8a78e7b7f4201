//! The task socket: the HTTP API one task process calls over its own Unix
//! socket (see `weft_protocol::socket`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, response::IntoResponse};
use tokio::net::UnixListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use weft_protocol::payload::{Json as Payload, decode_base64, decode_input, encode_base64_text};
use weft_protocol::socket::{
    CallbackRequest, InputResponse, RegisterTasksRequest, RunSubtaskRequest, RunSubtaskResponse,
    SubtaskResultRequest, SubtaskResultResponse, TaskComplete, TaskDefinition, TaskError, paths,
};

use weft_store::RunState;

use crate::attempt::{Attempt, AttemptHost, ReportOutcome, Reporter, SubtaskStart};
use crate::error::RunError;
use crate::http::json::{ApiError, JsonBody, method_not_allowed, not_found};

/// Base64 grows a payload by a third. The socket takes bodies well over
/// the payload limit, so an oversized result reaches `callback_result` and
/// fails its attempt with a message giving both sizes.
fn body_limit(max_payload: usize) -> usize {
    max_payload.saturating_mul(4).saturating_add(64 * 1024)
}

fn bind(path: &Path) -> std::io::Result<UnixListener> {
    let _ = std::fs::remove_file(path);
    UnixListener::bind(path)
}

/// A socket being served. Dropping it stops the server and removes the
/// socket file, whichever way its attempt (or registration) ended.
pub struct ServedSocket {
    path: PathBuf,
    server: JoinHandle<()>,
}

impl ServedSocket {
    /// Where the socket is.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ServedSocket {
    fn drop(&mut self) {
        // Aborted, not shut down gracefully: a held get-subtask-result
        // request must not keep a dead attempt's socket open.
        self.server.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

fn serve(path: &Path, listener: UnixListener, app: Router) -> ServedSocket {
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    ServedSocket {
        path: path.to_path_buf(),
        server,
    }
}

#[derive(Clone)]
struct AttemptState {
    host: Arc<dyn AttemptHost>,
    binding: Arc<SocketAttempt>,
}

impl AttemptState {
    /// The attempt this socket serves, for calls that only a process
    /// running one may make.
    fn attempt(&self) -> Result<Arc<Attempt>, ApiError> {
        self.binding.get().ok_or_else(|| {
            ApiError::new(
                StatusCode::CONFLICT,
                "this process has no attempt yet: ask for its input first (GET /input)",
            )
        })
    }
}

/// The attempt a socket serves: known when the socket opens, or, for a
/// process started ahead of its attempt (a standby, see `runner`),
/// bound later; its `GET /input` waits until then.
#[derive(Default)]
pub struct SocketAttempt {
    attempt: std::sync::OnceLock<Arc<Attempt>>,
    bound: tokio::sync::Notify,
}

impl SocketAttempt {
    /// Serving `attempt` from the start.
    pub fn bound(attempt: Arc<Attempt>) -> Arc<Self> {
        let binding = Self::default();
        binding.bind(attempt);
        Arc::new(binding)
    }

    /// Serves `attempt` from now on. A socket serves one attempt: a standby
    /// leaves the queue when it is bound, so it is bound once.
    pub fn bind(&self, attempt: Arc<Attempt>) {
        let first = self.attempt.set(attempt).is_ok();
        debug_assert!(first, "a task socket is bound to one attempt");
        self.bound.notify_waiters();
    }

    /// The attempt, once bound.
    pub fn get(&self) -> Option<Arc<Attempt>> {
        self.attempt.get().cloned()
    }

    /// Waits until an attempt is bound.
    async fn wait(&self) -> Arc<Attempt> {
        loop {
            // Registered before the check, so a bind in between wakes it.
            let bound = self.bound.notified();
            tokio::pin!(bound);
            bound.as_mut().enable();
            if let Some(attempt) = self.get() {
                return attempt;
            }
            bound.await;
        }
    }
}

/// The routes of an attempt's socket, made once per runtime: building a
/// router per attempt costs a few percent of the runtime's CPU per attempt.
#[derive(Clone)]
pub struct AttemptRoutes(Router<AttemptState>);

impl AttemptRoutes {
    /// The routes, taking bodies for payloads of up to `max_payload` bytes.
    pub fn new(max_payload: usize) -> Self {
        Self(
            Router::new()
                .route(paths::INPUT, get(input))
                .route(paths::CALLBACK, post(callback))
                .route(paths::RUN_SUBTASK, post(run_subtask))
                .route(paths::GET_SUBTASK_RESULT, post(subtask_result))
                .route(
                    paths::REGISTER_TASKS,
                    post(|| async { Json(serde_json::json!({})) }),
                )
                .fallback(not_found)
                .method_not_allowed_fallback(method_not_allowed)
                .layer(DefaultBodyLimit::max(body_limit(max_payload))),
        )
    }

    /// Serves one attempt's socket until the returned handle is aborted.
    pub fn serve(
        &self,
        path: &Path,
        host: Arc<dyn AttemptHost>,
        binding: Arc<SocketAttempt>,
    ) -> std::io::Result<ServedSocket> {
        let listener = bind(path)?;
        let app = self.0.clone().with_state(AttemptState { host, binding });
        Ok(serve(path, listener, app))
    }
}

/// Serves a registration socket: the first `/register-tasks` is sent on `tx`.
pub fn serve_register(
    path: &Path,
    tx: oneshot::Sender<Vec<TaskDefinition>>,
    max_payload: usize,
) -> std::io::Result<ServedSocket> {
    let listener = bind(path)?;
    let tx = Arc::new(Mutex::new(Some(tx)));
    let app = Router::new()
        .route(
            paths::REGISTER_TASKS,
            post(
                move |JsonBody(req): JsonBody<RegisterTasksRequest>| async move {
                    if let Some(tx) = tx.lock().unwrap_or_else(|p| p.into_inner()).take() {
                        let _ = tx.send(req.tasks);
                    }
                    Json(serde_json::json!({}))
                },
            ),
        )
        .fallback(|| async {
            ApiError::new(
                StatusCode::CONFLICT,
                "this process was started to register tasks (RENDER_SDK_MODE=register)",
            )
        })
        .layer(DefaultBodyLimit::max(body_limit(max_payload)));
    Ok(serve(path, listener, app))
}

/// The query of `GET /input` carries the SDK's start-up timings; ignored.
/// A process started ahead of its attempt waits here for it.
async fn input(State(s): State<AttemptState>) -> Json<InputResponse> {
    let attempt = s.binding.wait().await;
    let run = &attempt.run;
    let input = &run.input;
    Json(InputResponse {
        task_name: run.task_name.clone(),
        input: encode_base64_text(input),
        task_run_id: Some(run.id.clone()),
        root_task_run_id: Some(run.root_id.clone()),
        parent_task_run_id: run.parent_id.clone(),
    })
}

/// Why a callback gives no result.
#[derive(Debug, PartialEq)]
enum NoResult {
    /// The task failed: its message.
    Failed(String),
    /// The callback itself is wrong (not base64, not JSON, too large,
    /// empty): the attempt fails with this, and the process hears it too.
    Refused(StatusCode, String),
}

impl NoResult {
    fn message(&self) -> &str {
        match self {
            Self::Failed(m) | Self::Refused(_, m) => m,
        }
    }
}

/// Turns a callback into the attempt's result: the JSON array of results,
/// or why there is none.
fn callback_result(req: CallbackRequest, max_payload: usize) -> Result<Payload, NoResult> {
    let refused = |status, message: String| NoResult::Refused(status, message);
    match (req.complete, req.error) {
        (Some(complete), _) => {
            let bytes = decode_base64(&complete.output).map_err(|e| {
                refused(
                    StatusCode::BAD_REQUEST,
                    format!("the task's result could not be decoded: {e}"),
                )
            })?;
            if bytes.len() > max_payload {
                return Err(refused(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!(
                        "the task's result is {} bytes, over the limit of {max_payload} bytes",
                        bytes.len()
                    ),
                ));
            }
            if bytes.is_empty() {
                return Ok(Payload::empty_array());
            }
            // Kept as the task wrote it; a single value becomes a
            // one-element array, as the SDKs read results.
            match Payload::parse_bytes(&bytes) {
                Ok(json) => Ok(json.into_results()),
                Err(e) => Err(refused(
                    StatusCode::BAD_REQUEST,
                    format!("the task's result is not valid JSON: {e}"),
                )),
            }
        }
        // The run's error is the task's message, as clients show it; a stack
        // trace, when sent, was already printed to the attempt's output.
        (None, Some(error)) => Err(NoResult::Failed(bounded(error.details, max_payload))),
        (None, None) => Err(refused(
            StatusCode::BAD_REQUEST,
            "the callback has neither a result (`complete`) nor an error (`error`)".into(),
        )),
    }
}

/// An error message cut to `max` bytes (at a character boundary), saying
/// how much was cut: a task's error is stored and sent like its result,
/// and bounded like it.
fn bounded(mut text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let total = text.len();
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push_str(&format!(
        " … [error cut: {total} bytes, over the limit of {max} bytes]"
    ));
    text
}

async fn callback(
    State(s): State<AttemptState>,
    JsonBody(req): JsonBody<CallbackRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let result = callback_result(req, s.host.config().max_payload_bytes);
    let refusal = match &result {
        Err(NoResult::Refused(status, message)) => Some(ApiError::new(*status, message.clone())),
        _ => None,
    };
    let result = result.map_err(|e| e.message().to_string());
    match s
        .host
        .report(&s.attempt()?, result, Reporter::Callback)
        .await?
    {
        // The attempt failed with the reason; the process hears it too.
        ReportOutcome::Committed | ReportOutcome::Held if refusal.is_some() => {
            Err(refusal.expect("checked"))
        }
        // Held: the store cannot take it yet (a full disk); weft keeps it
        // and commits it once it can, so the task is done either way.
        ReportOutcome::Committed | ReportOutcome::Held => Ok(Json(serde_json::json!({}))),
        // The same callback again (a retry after a lost answer).
        ReportOutcome::Late(Some(Reporter::Callback)) => Ok(Json(serde_json::json!({}))),
        ReportOutcome::Late(_) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "this attempt has already ended (timed out, canceled or reported)",
        )),
        ReportOutcome::Fenced => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            RunError::Fenced.to_string(),
        )),
    }
}

async fn run_subtask(
    State(s): State<AttemptState>,
    JsonBody(req): JsonBody<RunSubtaskRequest>,
) -> Result<Json<RunSubtaskResponse>, ApiError> {
    let input = decode_input(req.input.as_deref().unwrap_or_default())
        .map_err(|e| ApiError::bad_request(format!("subtask input for {}: {e}", req.task_name)))?;
    let start = SubtaskStart {
        task: req.task_name,
        input,
        idempotency_key: req.idempotency_key,
        created_at: req.created_at,
    };
    let run = s.host.start_subtask(&*s.attempt()?, start).await?;
    Ok(Json(RunSubtaskResponse {
        task_run_id: run.id,
    }))
}

async fn subtask_result(
    State(s): State<AttemptState>,
    JsonBody(req): JsonBody<SubtaskResultRequest>,
) -> Result<Json<SubtaskResultResponse>, ApiError> {
    let hold = s.host.config().subtask_result_hold;
    let run = s
        .host
        .wait_for_child(&*s.attempt()?, &req.task_run_id, hold)
        .await?;
    let response = match run.status {
        RunState::Completed => SubtaskResultResponse {
            still_running: false,
            complete: Some(TaskComplete {
                output: encode_base64_text(&run.output.unwrap_or_else(Payload::empty_array)),
            }),
            error: None,
        },
        RunState::Failed | RunState::Canceled => SubtaskResultResponse {
            still_running: false,
            complete: None,
            error: Some(TaskError {
                details: run
                    .error
                    .unwrap_or_else(|| format!("task run {}", run.status)),
                stack_trace: None,
            }),
        },
        _ => SubtaskResultResponse {
            still_running: true,
            complete: None,
            error: None,
        },
    };
    Ok(Json(response))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn complete(value: &serde_json::Value) -> CallbackRequest {
        CallbackRequest {
            complete: Some(TaskComplete {
                output: weft_protocol::payload::encode_base64_json(value),
            }),
            error: None,
        }
    }

    #[test]
    fn callback_results_are_arrays() {
        assert_eq!(
            callback_result(complete(&json!([1, 2])), 1000),
            Ok(Payload::from_value(&json!([1, 2])))
        );
        assert_eq!(
            callback_result(complete(&json!({"a": 1})), 1000),
            Ok(Payload::from_value(&json!([{"a": 1}])))
        );
    }

    #[test]
    fn oversized_and_garbled_results_fail_the_attempt_with_a_reason() {
        let err = callback_result(complete(&json!(["x".repeat(100)])), 50).unwrap_err();
        assert!(matches!(
            err,
            NoResult::Refused(StatusCode::PAYLOAD_TOO_LARGE, _)
        ));
        assert!(
            err.message().contains("over the limit of 50 bytes"),
            "{err:?}"
        );
        let garbled = CallbackRequest {
            complete: Some(TaskComplete {
                output: "%%%".into(),
            }),
            error: None,
        };
        let err = callback_result(garbled, 1000).unwrap_err();
        assert!(matches!(err, NoResult::Refused(StatusCode::BAD_REQUEST, _)));
        assert!(err.message().contains("could not be decoded"));
        let not_json = CallbackRequest {
            complete: Some(TaskComplete {
                output: "bm90IGpzb24=".into(),
            }),
            error: None,
        };
        assert!(
            callback_result(not_json, 1000)
                .unwrap_err()
                .message()
                .contains("not valid JSON")
        );
    }

    #[test]
    fn errors_are_bounded_like_results() {
        let req = CallbackRequest {
            complete: None,
            error: Some(TaskError {
                details: "é".repeat(1000),
                stack_trace: None,
            }),
        };
        let err = callback_result(req, 101).unwrap_err();
        let err = err.message();
        assert!(err.starts_with(&"é".repeat(50)), "{err}");
        assert!(
            err.ends_with("[error cut: 2000 bytes, over the limit of 101 bytes]"),
            "{err}"
        );
    }

    #[test]
    fn errors_keep_their_details() {
        let req = CallbackRequest {
            complete: None,
            error: Some(TaskError {
                details: "boom".into(),
                stack_trace: Some("at line 3".into()),
            }),
        };
        assert_eq!(
            callback_result(req, 10),
            Err(NoResult::Failed("boom".into()))
        );
        assert!(callback_result(CallbackRequest::default(), 10).is_err());
    }
}

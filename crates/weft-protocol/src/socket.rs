//! The task socket: HTTP/1.1 with JSON bodies over a Unix socket, served by
//! the runtime to one task process (`RENDER_SDK_SOCKET_PATH`).
//!
//! | call | body → answer |
//! |---|---|
//! | `POST /register-tasks` | [`RegisterTasksRequest`] |
//! | `GET /input` | → [`InputResponse`] |
//! | `POST /callback` | [`CallbackRequest`] |
//! | `POST /run-subtask` | [`RunSubtaskRequest`] → [`RunSubtaskResponse`] |
//! | `POST /get-subtask-result` | [`SubtaskResultRequest`] → [`SubtaskResultResponse`] |

use serde::{Deserialize, Serialize};

/// Environment variable naming the mode (`register` or `run`).
pub const ENV_MODE: &str = "RENDER_SDK_MODE";
/// Environment variable naming the task socket's path.
pub const ENV_SOCKET_PATH: &str = "RENDER_SDK_SOCKET_PATH";

/// Paths of the five calls.
pub mod paths {
    pub const REGISTER_TASKS: &str = "/register-tasks";
    pub const INPUT: &str = "/input";
    pub const CALLBACK: &str = "/callback";
    pub const RUN_SUBTASK: &str = "/run-subtask";
    pub const GET_SUBTASK_RESULT: &str = "/get-subtask-result";
}

/// What the start command is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// List the tasks on `/register-tasks`, then exit.
    Register,
    /// Run one attempt of one task run, then exit.
    Run,
}

impl Mode {
    /// The value of `RENDER_SDK_MODE`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Register => "register",
            Mode::Run => "run",
        }
    }
}

/// `POST /register-tasks`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegisterTasksRequest {
    pub tasks: Vec<TaskDefinition>,
}

/// One task as an app registers it. The TypeScript SDK sends the name only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskDefinition {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<TaskOptions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Vec<TaskParameter>>,
}

/// A task's options. Numbers are signed, as an SDK may send anything;
/// what Render's cloud would refuse is warned about at registration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
}

/// Retry policy: `1 + max_retries` attempts; the wait before retry `k`
/// (from 0) is `wait_duration_ms * factor^k`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Signed on the wire: an SDK may send a negative count (it means
    /// none, with a warning at registration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_duration_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub factor: Option<f64>,
}

impl TaskOptions {
    /// The timeout, when one is set and positive.
    pub fn timeout(&self) -> Option<std::time::Duration> {
        self.timeout_seconds
            .filter(|t| *t > 0)
            .map(|t| std::time::Duration::from_secs(t as u64))
    }
}

impl RetryPolicy {
    /// Backoff factor when none is given (Render's local server uses 2).
    pub const DEFAULT_FACTOR: f64 = 2.0;

    /// Retries allowed after the first attempt.
    pub fn max_retries(&self) -> u32 {
        self.max_retries.unwrap_or(0).clamp(0, i64::from(u32::MAX)) as u32
    }

    /// The wait before retry `k` (0 for the first retry), in milliseconds.
    pub fn wait_before_retry_ms(&self, k: u32) -> u64 {
        let base = self.wait_duration_ms.unwrap_or(0) as f64;
        let factor = self.factor.unwrap_or(Self::DEFAULT_FACTOR);
        let wait = base * factor.powi(k as i32);
        if wait.is_finite() && wait > 0.0 {
            wait.min(u64::MAX as f64) as u64
        } else {
            0
        }
    }
}

/// A task parameter as the Python SDK describes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskParameter {
    pub name: String,
    #[serde(default)]
    pub has_default: bool,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// The default, JSON-encoded as a string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_value: Option<String>,
}

/// `GET /input`: which task to run, and with what.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputResponse {
    pub task_name: String,
    /// Base64 of a JSON array (positional) or object (named); absent or
    /// empty means no arguments, as the official SDKs read it.
    #[serde(default)]
    pub input: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_run_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_task_run_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_task_run_id: Option<String>,
}

/// `POST /callback`: the attempt's outcome, one of the two.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CallbackRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub complete: Option<TaskComplete>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<TaskError>,
}

/// A successful outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskComplete {
    /// Base64 of the JSON array of results.
    pub output: String,
}

/// A failed outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskError {
    pub details: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack_trace: Option<String>,
}

/// `POST /run-subtask`. The same `(idempotency_key, created_at)` names the
/// same child: the SDKs resend both when they retry the call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSubtaskRequest {
    pub task_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
}

/// Answer to `POST /run-subtask`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSubtaskResponse {
    pub task_run_id: String,
}

/// `POST /get-subtask-result`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubtaskResultRequest {
    pub task_run_id: String,
}

/// Answer to `POST /get-subtask-result`: still running, or one outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubtaskResultResponse {
    pub still_running: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub complete: Option<TaskComplete>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<TaskError>,
}

/// Body of an error answer on the socket (and on the REST API), as
/// Render's API shapes it: an id for this one error (to find it in the
/// server's log), a stable code for its kind, and a message for people.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    #[serde(default)]
    pub id: String,
    /// `not_found`, `invalid_input`, `conflict`, `payload_too_large`,
    /// `unauthorized`, ... (see [`error_code`]).
    #[serde(default)]
    pub code: String,
    pub message: String,
}

/// The stable code of an error answer's kind, by its HTTP status.
pub fn error_code(status: u16) -> &'static str {
    match status {
        400 | 422 => "invalid_input",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        405 => "method_not_allowed",
        408 => "request_timeout",
        409 => "conflict",
        413 => "payload_too_large",
        415 => "unsupported_media_type",
        421 => "misdirected_request",
        429 => "rate_limited",
        502 => "bad_gateway",
        503 => "unavailable",
        507 => "insufficient_storage",
        s if s >= 500 => "internal",
        _ => "error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn registration_as_the_typescript_sdk_sends_it() {
        let req: RegisterTasksRequest =
            serde_json::from_value(json!({"tasks": [{"name": "square"}]})).unwrap();
        assert_eq!(req.tasks[0].name, "square");
        assert!(req.tasks[0].options.is_none());
    }

    #[test]
    fn registration_as_the_python_sdk_sends_it() {
        let req: RegisterTasksRequest = serde_json::from_value(json!({"tasks": [{
            "name": "flaky",
            "options": {"retry": {"max_retries": 3, "wait_duration_ms": 100, "factor": 1.5},
                        "timeout_seconds": 30},
            "parameters": [{"name": "x", "has_default": true, "type": "int", "default_value": "3"}]
        }]}))
        .unwrap();
        let options = req.tasks[0].options.as_ref().unwrap();
        let retry = options.retry.as_ref().unwrap();
        assert_eq!(retry.max_retries(), 3);
        assert_eq!(retry.wait_before_retry_ms(0), 100);
        assert_eq!(retry.wait_before_retry_ms(2), 225);
        assert_eq!(options.timeout_seconds, Some(30));
        assert_eq!(
            req.tasks[0].parameters.as_ref().unwrap()[0]
                .type_
                .as_deref(),
            Some("int")
        );
    }

    #[test]
    fn input_without_input_is_no_arguments() {
        let input: InputResponse = serde_json::from_value(json!({"task_name": "t"})).unwrap();
        assert_eq!(
            crate::TaskInput::from_base64(&input.input).unwrap(),
            crate::TaskInput::empty()
        );
    }

    #[test]
    fn retry_defaults() {
        let retry = RetryPolicy {
            max_retries: Some(2),
            wait_duration_ms: Some(10),
            factor: None,
        };
        assert_eq!(retry.wait_before_retry_ms(1), 20);
        assert_eq!(RetryPolicy::default().wait_before_retry_ms(5), 0);
    }

    #[test]
    fn subtask_result_omits_absent_outcomes() {
        let running = SubtaskResultResponse {
            still_running: true,
            complete: None,
            error: None,
        };
        assert_eq!(
            serde_json::to_value(running).unwrap(),
            json!({"still_running": true})
        );
    }
}

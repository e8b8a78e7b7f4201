//! What a running task sees: its run's identifiers, and a way to run other
//! tasks as its children.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{SecondsFormat, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use weft_protocol::payload::{decode_base64_json, encode_base64_json};
use weft_protocol::socket::{InputResponse, RunSubtaskRequest};

use crate::Task;
use crate::payload::{decode_output, encode_input};
use crate::socket::{SocketClient, SocketError};

/// How long to wait before asking again about a child that is still
/// running, counted from when the last question was sent. Render's own
/// server answers at once (so this paces the polling to one a second, as
/// the Python SDK does); weft's runtime holds the question open until the
/// child ends or ~10 s pass, and then the next question goes out at once.
const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// The identifiers of the run an attempt belongs to. Each is `None` when
/// the runtime did not send it (or sent an empty string); a root run has no
/// parent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TaskRunMetadata {
    /// The task being run.
    pub task_name: String,
    /// This run.
    pub task_run_id: Option<String>,
    /// The run at the root of this run's tree (this run, for a root run).
    pub root_task_run_id: Option<String>,
    /// The run that started this one.
    pub parent_task_run_id: Option<String>,
}

impl TaskRunMetadata {
    pub(crate) fn from_input(input: &InputResponse) -> Self {
        let id = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
        Self {
            task_name: input.task_name.clone(),
            task_run_id: id(&input.task_run_id),
            root_task_run_id: id(&input.root_task_run_id),
            parent_task_run_id: id(&input.parent_task_run_id),
        }
    }
}

/// Why a child run, started with [`TaskContext::run`], gave no result.
#[derive(Debug, thiserror::Error)]
pub enum SubtaskError {
    /// The child ran and failed (after its retries).
    #[error("subtask '{task}' ({task_run_id}) failed: {message}")]
    Failed {
        /// The child's task name.
        task: String,
        /// The child's run.
        task_run_id: String,
        /// The child's error, as it reported it.
        message: String,
        /// The child's stack trace, when it sent one.
        stack_trace: Option<String>,
    },
    /// The input did not serialise to JSON.
    #[error("subtask '{task}': input does not serialise to JSON: {source}")]
    Input {
        task: String,
        #[source]
        source: serde_json::Error,
    },
    /// The child succeeded, but its result is not the type expected.
    #[error("subtask '{task}' ({task_run_id}): unexpected result {results}: {message}")]
    Output {
        task: String,
        task_run_id: String,
        /// The results as the child sent them.
        results: String,
        message: String,
    },
    /// The task socket failed, after its retries.
    #[error("subtask '{task}': {source}")]
    Socket {
        task: String,
        #[source]
        source: SocketError,
    },
    /// The task is running outside a worker (in a unit test, say), with no
    /// runtime to start children.
    #[error("subtask '{task}': this context has no task socket to start children on")]
    Detached { task: String },
}

/// The context every task receives: its run's identifiers, and
/// [`run`](TaskContext::run) to run other tasks as its children.
///
/// It is a cheap handle (an `Arc`): clone it into spawned futures freely.
#[derive(Debug, Clone)]
pub struct TaskContext {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    metadata: TaskRunMetadata,
    socket: Option<SocketClient>,
}

impl TaskContext {
    pub(crate) fn new(metadata: TaskRunMetadata, socket: SocketClient) -> Self {
        Self {
            inner: Arc::new(Inner {
                metadata,
                socket: Some(socket),
            }),
        }
    }

    /// A context with no runtime behind it, for calling a task's function
    /// directly in a unit test. Its [`run`](TaskContext::run) fails with
    /// [`SubtaskError::Detached`].
    ///
    /// ```
    /// # use weft::{TaskContext, TaskResult};
    /// async fn square(_ctx: TaskContext, x: i64) -> TaskResult<i64> {
    ///     Ok(x * x)
    /// }
    /// # futures::executor::block_on(async {
    /// let ctx = TaskContext::detached("square");
    /// assert_eq!(square(ctx, 3).await.unwrap(), 9);
    /// # });
    /// ```
    pub fn detached(task_name: impl Into<String>) -> Self {
        Self {
            inner: Arc::new(Inner {
                metadata: TaskRunMetadata {
                    task_name: task_name.into(),
                    ..TaskRunMetadata::default()
                },
                socket: None,
            }),
        }
    }

    /// The run's identifiers.
    pub fn metadata(&self) -> &TaskRunMetadata {
        &self.inner.metadata
    }

    /// The name of the task being run.
    pub fn task_name(&self) -> &str {
        &self.inner.metadata.task_name
    }

    /// The W3C trace context of this attempt (`TRACEPARENT`, which weft
    /// gives each task process while it exports traces), for the task's
    /// own spans; `None` without one. With the `otel` feature the SDK runs
    /// the task in it already.
    pub fn traceparent(&self) -> Option<String> {
        std::env::var("TRACEPARENT").ok().filter(|t| !t.is_empty())
    }

    /// This run's id.
    pub fn task_run_id(&self) -> Option<&str> {
        self.inner.metadata.task_run_id.as_deref()
    }

    /// The id of the run at the root of this run's tree.
    pub fn root_task_run_id(&self) -> Option<&str> {
        self.inner.metadata.root_task_run_id.as_deref()
    }

    /// The id of the run that started this one; `None` for a root run.
    pub fn parent_task_run_id(&self) -> Option<&str> {
        self.inner.metadata.parent_task_run_id.as_deref()
    }

    /// Runs `task` as a child of this run, on its own compute, and waits for
    /// its result.
    ///
    /// The input travels as the task expects it: a tuple or `Vec` as
    /// positional arguments, a struct as named ones, a single value as one
    /// positional argument. A failed child (after its retries) is
    /// [`SubtaskError::Failed`], carrying the child's message.
    ///
    /// Children run concurrently when their futures are awaited together,
    /// with [`futures::future::try_join_all`] for instance:
    ///
    /// ```
    /// use futures::future::try_join_all;
    /// use weft::{Task, TaskContext, TaskResult};
    ///
    /// const SQUARE: Task<i64, i64> = Task::named("square");
    ///
    /// async fn sum_of_squares(ctx: TaskContext, n: i64) -> TaskResult<i64> {
    ///     let squares = try_join_all((1..=n).map(|i| ctx.run(&SQUARE, i))).await?;
    ///     Ok(squares.into_iter().sum())
    /// }
    /// ```
    ///
    /// A start request that fails in transit is retried with the same
    /// idempotency key and creation time, so it starts one child, never two.
    pub async fn run<I: Serialize, O: DeserializeOwned>(
        &self,
        task: &Task<I, O>,
        input: I,
    ) -> Result<O, SubtaskError> {
        let name = task.name();
        let Some(socket) = &self.inner.socket else {
            return Err(SubtaskError::Detached { task: name.into() });
        };
        let input = encode_input(&input).map_err(|source| SubtaskError::Input {
            task: name.into(),
            source,
        })?;
        let request = subtask_request(name, &input);
        let socket_err = |source| SubtaskError::Socket {
            task: name.into(),
            source,
        };
        let task_run_id = socket
            .run_subtask(&request)
            .await
            .map_err(socket_err)?
            .task_run_id;
        let results = wait_for_child(socket, &task_run_id)
            .await
            .map_err(|err| err.for_task(name, &task_run_id))?;
        decode_output(&results).map_err(|err| SubtaskError::Output {
            task: name.into(),
            task_run_id,
            results: results.to_string(),
            message: err.to_string(),
        })
    }
}

/// The start request of one logical child call: its idempotency key and
/// creation time are fixed here, once, and resent on every retry.
pub(crate) fn subtask_request(task_name: &str, input: &Value) -> RunSubtaskRequest {
    RunSubtaskRequest {
        task_name: task_name.to_string(),
        input: Some(encode_base64_json(input)),
        idempotency_key: Some(uuid::Uuid::new_v4().to_string()),
        created_at: Some(Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true)),
    }
}

/// How waiting for a child ended, before the task's name is attached.
enum WaitError {
    Failed {
        message: String,
        stack_trace: Option<String>,
    },
    Undecodable(String),
    Socket(SocketError),
}

impl WaitError {
    fn for_task(self, task: &str, task_run_id: &str) -> SubtaskError {
        match self {
            Self::Failed {
                message,
                stack_trace,
            } => SubtaskError::Failed {
                task: task.into(),
                task_run_id: task_run_id.into(),
                message,
                stack_trace,
            },
            Self::Undecodable(message) => SubtaskError::Output {
                task: task.into(),
                task_run_id: task_run_id.into(),
                results: String::new(),
                message,
            },
            Self::Socket(source) => SubtaskError::Socket {
                task: task.into(),
                source,
            },
        }
    }
}

/// Polls until the child ends; returns its JSON array of results.
async fn wait_for_child(socket: &SocketClient, task_run_id: &str) -> Result<Value, WaitError> {
    loop {
        let asked_at = Instant::now();
        let answer = socket
            .get_subtask_result(task_run_id)
            .await
            .map_err(WaitError::Socket)?;
        if answer.still_running {
            // A long-polling runtime held the question: ask again at once.
            // One that answered at once: wait out the poll interval.
            if let Some(rest) = POLL_INTERVAL.checked_sub(asked_at.elapsed()) {
                tokio::time::sleep(rest).await;
            }
            continue;
        }
        if let Some(error) = answer.error {
            return Err(WaitError::Failed {
                message: error.details,
                stack_trace: error.stack_trace,
            });
        }
        let Some(complete) = answer.complete else {
            return Err(WaitError::Socket(SocketError::Decode {
                operation: "get subtask result",
                message: "the run is not running, yet has neither a result nor an error".into(),
            }));
        };
        // An empty output is no result, as in the Python SDK.
        if complete.output.is_empty() {
            return Ok(Value::Null);
        }
        return decode_base64_json(&complete.output)
            .map_err(|err| WaitError::Undecodable(format!("output is not base64 JSON: {err}")));
    }
}

/// The OpenTelemetry context of this process's attempt: its span (from
/// `TRACEPARENT`) as a remote parent, or an empty context without one.
#[cfg(feature = "otel")]
pub(crate) fn attempt_trace() -> opentelemetry::Context {
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
    };
    let Some(parent) = std::env::var("TRACEPARENT")
        .ok()
        .as_deref()
        .and_then(weft_protocol::trace::SpanRef::parse)
    else {
        return opentelemetry::Context::new();
    };
    let flags = if parent.sampled {
        TraceFlags::SAMPLED
    } else {
        TraceFlags::default()
    };
    opentelemetry::Context::new().with_remote_span_context(SpanContext::new(
        TraceId::from_bytes(parent.trace_id),
        SpanId::from_bytes(parent.span_id),
        flags,
        true,
        TraceState::default(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn subtask_requests_carry_a_fresh_key_and_time() {
        let a = subtask_request("square", &json!([3]));
        let b = subtask_request("square", &json!([3]));
        assert_eq!(a.task_name, "square");
        assert_eq!(a.input.as_deref(), Some("WzNd")); // base64 of `[3]`
        let key = a.idempotency_key.as_deref().unwrap();
        assert_eq!(uuid::Uuid::parse_str(key).unwrap().get_version_num(), 4);
        assert_ne!(a.idempotency_key, b.idempotency_key);
        let created_at = a.created_at.as_deref().unwrap();
        assert!(
            chrono::DateTime::parse_from_rfc3339(created_at).is_ok(),
            "{created_at}"
        );
        assert!(created_at.ends_with('Z'));
        let wire = serde_json::to_value(&a).unwrap();
        let mut keys: Vec<_> = wire.as_object().unwrap().keys().collect();
        keys.sort();
        assert_eq!(
            keys,
            ["created_at", "idempotency_key", "input", "task_name"]
        );
    }

    #[test]
    fn metadata_treats_empty_ids_as_absent() {
        let input = InputResponse {
            task_name: "square".into(),
            input: String::new(),
            task_run_id: Some("trn-2".into()),
            root_task_run_id: Some("trn-1".into()),
            parent_task_run_id: Some(String::new()),
        };
        let metadata = TaskRunMetadata::from_input(&input);
        assert_eq!(metadata.task_run_id.as_deref(), Some("trn-2"));
        assert_eq!(metadata.root_task_run_id.as_deref(), Some("trn-1"));
        assert_eq!(metadata.parent_task_run_id, None);
    }

    #[tokio::test]
    async fn a_detached_context_cannot_start_children() {
        const SQUARE: Task<i64, i64> = Task::named("square");
        let ctx = TaskContext::detached("parent");
        let err = ctx.run(&SQUARE, 3).await.unwrap_err();
        assert!(matches!(err, SubtaskError::Detached { .. }), "{err}");
        assert_eq!(ctx.task_name(), "parent");
        assert_eq!(ctx.task_run_id(), None);
    }
}

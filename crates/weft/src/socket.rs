//! The worker's side of the task socket: HTTP/1.1 with JSON bodies over the
//! Unix socket named by `RENDER_SDK_SOCKET_PATH`.
//!
//! Connections are kept alive and reused (HTTP/1.1's default), each
//! carrying one request at a time: the runtime may hold a
//! `get-subtask-result` request open, and a held request keeps only its
//! own connection busy; the next call takes an idle one or opens another.
//! (The Python SDK opens a connection per call; on a fan-out of a thousand
//! children, connecting and accepting that way costs a tenth of the
//! runtime's work per child: BENCHMARKS.md, "The runtime, per Rust child".) Transient
//! failures (connect errors, timeouts, 5xx, 429) are retried with
//! exponential backoff; 4xx answers are not.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::header::{ACCEPT, CONTENT_TYPE, USER_AGENT};
use hyper::{Method, Request, Uri};
use hyper_util::client::legacy::Client as PooledClient;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::UnixStream;
use tokio::sync::Semaphore;
use weft_protocol::socket::{
    CallbackRequest, InputResponse, RegisterTasksRequest, RunSubtaskRequest, RunSubtaskResponse,
    SubtaskResultRequest, SubtaskResultResponse, paths,
};

/// The `User-Agent` this SDK sends.
pub(crate) const USER_AGENT_VALUE: &str = concat!("weft-rust/", env!("CARGO_PKG_VERSION"));

/// Timeout of an ordinary socket request (the Python SDK's).
const QUERY_TIMEOUT: Duration = Duration::from_secs(15);
/// Timeout of `get-subtask-result`, which weft's runtime holds open for up
/// to ~10 s while the child runs.
const LONG_POLL_TIMEOUT: Duration = Duration::from_secs(30);

/// Requests starting children, sending callbacks and the like that may be in
/// flight at once. Each holds a socket (a file descriptor) for its duration.
const MAX_SHORT_REQUESTS: usize = 64;
/// `get-subtask-result` requests that may be in flight at once. Kept apart
/// from the short requests so children held in long polls never keep new
/// children from starting.
const MAX_POLLS: usize = 256;

/// Why a call on the task socket failed.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    /// The socket could not be reached.
    #[error("{operation} failed to connect to {path}: {source}")]
    Connect {
        operation: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The connection broke or the HTTP exchange was malformed.
    #[error("{operation} failed: {message}")]
    Transport {
        operation: &'static str,
        message: String,
    },
    /// No answer within the request timeout.
    #[error("{operation} timed out after {after:?}")]
    Timeout {
        operation: &'static str,
        after: Duration,
    },
    /// The runtime answered with an error status.
    #[error("{operation} failed with status {status}: {message}")]
    Status {
        operation: &'static str,
        status: u16,
        message: String,
    },
    /// The runtime's answer was not the JSON expected.
    #[error("{operation} failed: unexpected response: {message}")]
    Decode {
        operation: &'static str,
        message: String,
    },
}

impl SocketError {
    /// Whether retrying the same request may succeed: connect errors,
    /// broken connections, timeouts, 5xx and 429 (never other 4xx).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Connect { .. } | Self::Transport { .. } | Self::Timeout { .. } => true,
            Self::Status { status, .. } => *status >= 500 || *status == 429,
            Self::Decode { .. } => false,
        }
    }
}

/// How transient failures are retried: the Python SDK's schedule, 25 tries
/// with waits from 0.25 s doubling to a 16 s cap (about five minutes).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Backoff {
    pub tries: u32,
    pub initial: Duration,
    pub cap: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            tries: 25,
            initial: Duration::from_millis(250),
            cap: Duration::from_secs(16),
        }
    }
}

impl Backoff {
    /// The wait after failed try `k` (from 0).
    pub fn delay(&self, k: u32) -> Duration {
        let factor = 2u32.saturating_pow(k.min(31));
        self.initial.saturating_mul(factor).min(self.cap)
    }
}

/// A cheap-to-clone client of the task socket.
#[derive(Debug, Clone)]
pub(crate) struct SocketClient {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    /// Connections to the socket, kept alive and reused.
    http: PooledClient<Connector, Full<Bytes>>,
    backoff: Backoff,
    short_requests: Semaphore,
    polls: Semaphore,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocketClient")
            .field("path", &self.path)
            .field("backoff", &self.backoff)
            .finish_non_exhaustive()
    }
}

/// How long an idle connection is kept for the next call.
const IDLE_CONNECTION: Duration = Duration::from_secs(30);

/// Opens connections to the task socket for the pool (whatever the URI
/// names: every request goes to the one socket).
#[derive(Clone)]
struct Connector(Arc<PathBuf>);

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<UnixStream>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        let path = self.0.clone();
        Box::pin(async move { UnixStream::connect(&*path).await.map(TokioIo::new) })
    }
}

/// Which concurrency bound and timeout a call falls under.
#[derive(Clone, Copy)]
enum Kind {
    Short,
    LongPoll,
}

impl SocketClient {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self::with_backoff(path, Backoff::default())
    }

    pub fn with_backoff(path: impl Into<PathBuf>, backoff: Backoff) -> Self {
        let path = path.into();
        let http = PooledClient::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(IDLE_CONNECTION)
            .build(Connector(Arc::new(path.clone())));
        Self {
            inner: Arc::new(Inner {
                path,
                http,
                backoff,
                short_requests: Semaphore::new(MAX_SHORT_REQUESTS),
                polls: Semaphore::new(MAX_POLLS),
            }),
        }
    }

    /// `GET /input`, reporting when the SDK started (ns since the epoch).
    pub async fn get_input(
        &self,
        sdk_started_at_ns: Option<i64>,
    ) -> Result<InputResponse, SocketError> {
        let path = match sdk_started_at_ns {
            Some(ns) => format!("{}?sdk_started_at={ns}", paths::INPUT),
            None => paths::INPUT.to_string(),
        };
        self.call_json("get input", Method::GET, &path, None::<&()>, Kind::Short)
            .await
    }

    /// `POST /register-tasks`.
    pub async fn register_tasks(&self, body: &RegisterTasksRequest) -> Result<(), SocketError> {
        self.call_ignoring_body("register tasks", paths::REGISTER_TASKS, body)
            .await
    }

    /// `POST /callback`.
    pub async fn post_callback(&self, body: &CallbackRequest) -> Result<(), SocketError> {
        self.call_ignoring_body("post callback", paths::CALLBACK, body)
            .await
    }

    /// `POST /run-subtask`. Retries resend the same body, so the same
    /// idempotency key and creation time.
    pub async fn run_subtask(
        &self,
        body: &RunSubtaskRequest,
    ) -> Result<RunSubtaskResponse, SocketError> {
        self.call_json(
            "run subtask",
            Method::POST,
            paths::RUN_SUBTASK,
            Some(body),
            Kind::Short,
        )
        .await
    }

    /// `POST /get-subtask-result`.
    pub async fn get_subtask_result(
        &self,
        task_run_id: &str,
    ) -> Result<SubtaskResultResponse, SocketError> {
        let body = SubtaskResultRequest {
            task_run_id: task_run_id.to_string(),
        };
        self.call_json(
            "get subtask result",
            Method::POST,
            paths::GET_SUBTASK_RESULT,
            Some(&body),
            Kind::LongPoll,
        )
        .await
    }

    async fn call_ignoring_body<B: Serialize>(
        &self,
        operation: &'static str,
        path: &str,
        body: &B,
    ) -> Result<(), SocketError> {
        let body = encode_body(operation, Some(body))?;
        self.call_with_retries(operation, Method::POST, path, body, Kind::Short)
            .await
            .map(drop)
    }

    async fn call_json<B: Serialize, T: DeserializeOwned>(
        &self,
        operation: &'static str,
        method: Method,
        path: &str,
        body: Option<&B>,
        kind: Kind,
    ) -> Result<T, SocketError> {
        let body = encode_body(operation, body)?;
        let answer = self
            .call_with_retries(operation, method, path, body, kind)
            .await?;
        serde_json::from_slice(&answer).map_err(|err| SocketError::Decode {
            operation,
            message: format!("{err}: {}", String::from_utf8_lossy(&answer)),
        })
    }

    async fn call_with_retries(
        &self,
        operation: &'static str,
        method: Method,
        path: &str,
        body: Option<Bytes>,
        kind: Kind,
    ) -> Result<Bytes, SocketError> {
        let backoff = self.inner.backoff;
        let mut k = 0;
        loop {
            match self
                .call_once(operation, method.clone(), path, body.clone(), kind)
                .await
            {
                Ok(answer) => return Ok(answer),
                Err(err) if err.is_transient() && k + 1 < backoff.tries => {
                    let delay = backoff.delay(k);
                    tracing::warn!(
                        "task socket request failed ({}/{}), retry in {:.2}s: {err}",
                        k + 1,
                        backoff.tries,
                        delay.as_secs_f64()
                    );
                    tokio::time::sleep(delay).await;
                    k += 1;
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// One request on a fresh connection, bounded by the concurrency limit
    /// of its kind (the permit is held only while the request is in flight,
    /// never across a retry's sleep).
    async fn call_once(
        &self,
        operation: &'static str,
        method: Method,
        path: &str,
        body: Option<Bytes>,
        kind: Kind,
    ) -> Result<Bytes, SocketError> {
        let (semaphore, timeout) = match kind {
            Kind::Short => (&self.inner.short_requests, QUERY_TIMEOUT),
            Kind::LongPoll => (&self.inner.polls, LONG_POLL_TIMEOUT),
        };
        let _permit = semaphore
            .acquire()
            .await
            .expect("the semaphore is never closed");
        let exchange = self.request(operation, method, path, body);
        match tokio::time::timeout(timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(SocketError::Timeout {
                operation,
                after: timeout,
            }),
        }
    }
}

fn encode_body<B: Serialize>(
    operation: &'static str,
    body: Option<&B>,
) -> Result<Option<Bytes>, SocketError> {
    body.map(|b| serde_json::to_vec(b).map(Bytes::from))
        .transpose()
        .map_err(|err| SocketError::Decode {
            operation,
            message: format!("request body does not serialise: {err}"),
        })
}

impl SocketClient {
    /// One exchange on a pooled connection.
    async fn request(
        &self,
        operation: &'static str,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<Bytes, SocketError> {
        let transport = |message: String| SocketError::Transport { operation, message };
        // The pool wants an absolute URI; the host is a placeholder, and
        // the path is the protocol's.
        let builder = Request::builder()
            .method(method)
            .uri(format!("http://localhost{path}"))
            .header(USER_AGENT, USER_AGENT_VALUE)
            .header(ACCEPT, "application/json");
        let request = match body {
            Some(bytes) => builder
                .header(CONTENT_TYPE, "application/json")
                .body(Full::new(bytes)),
            None => builder.body(Full::new(Bytes::new())),
        }
        .map_err(|err| transport(err.to_string()))?;

        let response = self.inner.http.request(request).await.map_err(|err| {
            if err.is_connect() {
                SocketError::Connect {
                    operation,
                    path: self.inner.path.clone(),
                    source: io_cause(&err),
                }
            } else {
                transport(error_chain(&err))
            }
        })?;
        let status = response.status();
        let answer = response
            .into_body()
            .collect()
            .await
            .map_err(|err| transport(err.to_string()))?
            .to_bytes();
        if status.is_client_error() || status.is_server_error() {
            return Err(SocketError::Status {
                operation,
                status: status.as_u16(),
                message: error_message(&answer, status.canonical_reason().unwrap_or("no message")),
            });
        }
        Ok(answer)
    }
}

/// The I/O error under a failed connect (the pool wraps it).
fn io_cause(err: &(dyn std::error::Error + 'static)) -> std::io::Error {
    let mut cause = err.source();
    while let Some(e) = cause {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return std::io::Error::new(io.kind(), io.to_string());
        }
        cause = e.source();
    }
    std::io::Error::other(error_chain(err))
}

/// An error with its causes, `outer: inner: ...`.
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(e) = cause {
        text.push_str(": ");
        text.push_str(&e.to_string());
        cause = e.source();
    }
    text
}

/// The message of an error answer: JSON `{"message"}` or `{"error"}`, else
/// the body as text, else `fallback` (the status's reason).
pub(crate) fn error_message(body: &[u8], fallback: &str) -> String {
    if let Ok(serde_json::Value::Object(map)) = serde_json::from_slice(body) {
        for key in ["message", "error"] {
            if let Some(serde_json::Value::String(message)) = map.get(key) {
                return message.clone();
            }
        }
    }
    let text = String::from_utf8_lossy(body).trim().to_string();
    if text.is_empty() {
        fallback.to_string()
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_cap() {
        let backoff = Backoff::default();
        let delays: Vec<f64> = (0..9).map(|k| backoff.delay(k).as_secs_f64()).collect();
        assert_eq!(delays, [0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 16.0, 16.0]);
        assert_eq!(backoff.delay(40), Duration::from_secs(16));
        // The whole schedule is about five minutes, as in the Python SDK.
        let total: Duration = (0..backoff.tries - 1).map(|k| backoff.delay(k)).sum();
        assert_eq!(total, Duration::from_millis(303_750));
    }

    #[test]
    fn transient_errors() {
        let status = |status| SocketError::Status {
            operation: "x",
            status,
            message: String::new(),
        };
        assert!(status(500).is_transient());
        assert!(status(503).is_transient());
        assert!(status(429).is_transient());
        assert!(!status(400).is_transient());
        assert!(!status(404).is_transient());
        assert!(
            SocketError::Timeout {
                operation: "x",
                after: Duration::ZERO
            }
            .is_transient()
        );
        assert!(
            !SocketError::Decode {
                operation: "x",
                message: String::new()
            }
            .is_transient()
        );
    }

    #[test]
    fn error_messages_come_from_the_body() {
        assert_eq!(
            error_message(br#"{"message":"no such run"}"#, "Not Found"),
            "no such run"
        );
        assert_eq!(error_message(br#"{"error":"bad"}"#, "Bad Request"), "bad");
        assert_eq!(
            error_message(b" upstream down \n", "Bad Gateway"),
            "upstream down"
        );
        assert_eq!(
            error_message(b"", "Service Unavailable"),
            "Service Unavailable"
        );
    }

    #[tokio::test]
    async fn a_missing_socket_is_a_connect_error_after_the_retries() {
        let dir = tempfile::tempdir().unwrap();
        let client = SocketClient::with_backoff(
            dir.path().join("absent.sock"),
            Backoff {
                tries: 3,
                initial: Duration::from_millis(1),
                cap: Duration::from_millis(2),
            },
        );
        let err = client.get_input(None).await.unwrap_err();
        assert!(matches!(err, SocketError::Connect { .. }), "{err}");
        assert!(
            err.to_string()
                .starts_with("get input failed to connect to "),
            "{err}"
        );
    }
}

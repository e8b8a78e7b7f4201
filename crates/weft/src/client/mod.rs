//! A client of the REST API: start runs and wait for them, inspect and
//! cancel them, list tasks, read logs.
//!
//! It speaks to weft's runtime (`weft dev`, `weft serve`) and to Render's
//! API alike, with the wire types of [`weft_protocol::api`].
//!
//! ```no_run
//! use weft::client::{Client, TaskRunDetailsExt};
//!
//! # async fn demo() -> Result<(), weft::client::Error> {
//! let client = Client::from_env()?; // RENDER_USE_LOCAL_DEV=true → http://localhost:8120
//! let run = client.run_task("add_squares", (3, 4)).await?;
//! let sum: i64 = run.result().expect("an integer");
//! assert_eq!(sum, 25);
//! # Ok(())
//! # }
//! ```

mod error;
mod sse;

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use futures::{Stream, StreamExt as _, stream};
use hyper::body::Bytes;
use reqwest::header::{ACCEPT, CACHE_CONTROL, USER_AGENT};
use reqwest::{Method, RequestBuilder, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use weft_protocol::api::{
    LogsResponse, RunTaskRequest, Task, TaskRun, TaskRunDetails, TaskRunStatus, TaskRunWithCursor,
    TaskWithCursor,
};

pub use error::Error;

use crate::payload::{decode_output, encode_input};
use crate::socket::{USER_AGENT_VALUE, error_message};

/// The client's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Render's API, used unless local development is asked for.
pub const DEFAULT_BASE_URL: &str = "https://api.render.com";
/// The local development server's address (`weft dev`, `render workflows dev`).
pub const DEFAULT_LOCAL_DEV_URL: &str = "http://localhost:8120";

/// Timeout of an ordinary request (the event stream has none).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Waiting for a run: tries of its event stream, and the wait after the
/// first failed one (doubling after each), as the Python client does.
const WAIT_TRIES: u32 = 5;
const WAIT_FIRST_BACKOFF: Duration = Duration::from_secs(1);

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Where a client points and how it authenticates, as the environment
/// sets it. See [`ClientConfig::from_lookup`].
#[derive(Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// The API's root, without `/v1`.
    pub base_url: String,
    /// The API key, sent as a bearer token.
    pub token: Option<String>,
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("base_url", &self.base_url)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl ClientConfig {
    /// The configuration the environment gives, read through `lookup`, by
    /// the Python client's rules:
    ///
    /// - local development is on when `RENDER_LOCAL_DEV_URL` is set, or
    ///   `RENDER_USE_LOCAL_DEV` is `1`, `t`, `T`, `true`, `TRUE` or `True`;
    /// - the URL is `RENDER_LOCAL_DEV_URL` if set, else
    ///   [`DEFAULT_LOCAL_DEV_URL`] for local development, else
    ///   [`DEFAULT_BASE_URL`]; one without a scheme gets `https://`;
    /// - the token is `RENDER_API_KEY`, required unless developing locally.
    ///
    /// ```
    /// use weft::client::ClientConfig;
    ///
    /// let env = |name: &str| (name == "RENDER_USE_LOCAL_DEV").then(|| "true".to_string());
    /// let config = ClientConfig::from_lookup(env).unwrap();
    /// assert_eq!(config.base_url, "http://localhost:8120");
    /// assert_eq!(config.token, None);
    /// ```
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let var = |name: &str| lookup(name).unwrap_or_default();
        let local_dev_url = var("RENDER_LOCAL_DEV_URL");
        let use_local_dev = var("RENDER_USE_LOCAL_DEV");
        let is_local_dev = !local_dev_url.is_empty()
            || matches!(
                use_local_dev.as_str(),
                "1" | "t" | "T" | "true" | "TRUE" | "True"
            );
        let token = var("RENDER_API_KEY");
        if token.is_empty() && !is_local_dev {
            return Err(Error::Config(
                "set RENDER_API_KEY, or RENDER_USE_LOCAL_DEV=true to use a local development server".into(),
            ));
        }
        let base_url = if !local_dev_url.is_empty() {
            local_dev_url
        } else if is_local_dev {
            DEFAULT_LOCAL_DEV_URL.to_string()
        } else {
            DEFAULT_BASE_URL.to_string()
        };
        Ok(Self {
            base_url: with_scheme(&base_url),
            token: (!token.is_empty()).then_some(token),
        })
    }

    /// [`from_lookup`](ClientConfig::from_lookup) on the process's
    /// environment.
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }
}

fn with_scheme(url: &str) -> String {
    if url.starts_with("http://") || url.starts_with("https://") {
        url.to_string()
    } else {
        format!("https://{url}")
    }
}

/// Builds a [`Client`] with a token or a request timeout.
///
/// ```
/// let client = weft::client::Client::builder("http://localhost:8120")
///     .token("rnd_...")
///     .timeout(std::time::Duration::from_secs(10))
///     .build()
///     .unwrap();
/// assert_eq!(client.base_url(), "http://localhost:8120");
/// ```
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    config: ClientConfig,
    timeout: Duration,
}

impl ClientBuilder {
    /// Sends `token` as the bearer token (an empty one sends none).
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.config.token = Some(token.into()).filter(|t| !t.is_empty());
        self
    }

    /// The timeout of each request other than the event stream (30 s
    /// unless set).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The client.
    pub fn build(self) -> Result<Client> {
        let root = self.config.base_url.trim_end_matches('/');
        let api = Url::parse(&format!("{root}/"))
            .map_err(|err| Error::Config(format!("invalid API URL '{root}': {err}")))?;
        if api.cannot_be_a_base() {
            return Err(Error::Config(format!(
                "invalid API URL '{root}': not a base URL"
            )));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .map_err(|err| Error::Config(format!("cannot build an HTTP client: {err}")))?;
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                root: api,
                token: self.config.token,
                timeout: self.timeout,
            }),
        })
    }
}

/// A client of the REST API. Cheap to clone (an `Arc`).
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    /// The root, ending in `/`; paths go under `v1/` (and `weft/v1/`).
    root: Url,
    token: Option<String>,
    timeout: Duration,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base_url", &self.base_url())
            .field("authenticated", &self.inner.token.is_some())
            .finish()
    }
}

/// Filters of [`Client::list_task_runs`]; unset fields filter nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListTaskRunsParams {
    /// Runs of this task (`workflow-slug/task-name`, or the bare name locally).
    pub task_slug: Option<String>,
    /// Runs in this run's tree.
    pub root_task_run_id: Option<String>,
    /// Runs in this state (weft; `succeeded` and `completed` are one).
    pub status: Option<TaskRunStatus>,
    /// At most this many runs.
    pub limit: Option<u32>,
    /// Runs after the one whose cursor this is.
    pub cursor: Option<String>,
}

/// What [`Client::logs`] asks for; unset fields filter nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogsQuery {
    /// Lines of these runs.
    pub task_run_ids: Vec<String>,
    /// Lines at or after this time.
    pub start_time: Option<DateTime<Utc>>,
    /// Lines before this time.
    pub end_time: Option<DateTime<Utc>>,
    /// Lines containing any of these strings.
    pub text: Vec<String>,
    /// Weft only: also the lines of every subtask under the runs.
    pub include_subtasks: bool,
    /// At most this many lines (the server's default when unset).
    pub limit: Option<u32>,
}

/// Reads a run's results as a typed value.
pub trait TaskRunDetailsExt {
    /// The run's result as `T`: a one-element results array is read as its
    /// element (the Python SDK's rule), else the whole array.
    ///
    /// ```
    /// # fn demo(details: weft_protocol::api::TaskRunDetails) {
    /// use weft::client::TaskRunDetailsExt;
    /// let n: i64 = details.result().unwrap();
    /// # }
    /// ```
    fn result<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error>;
}

impl TaskRunDetailsExt for TaskRunDetails {
    fn result<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        decode_output(&self.results.to_value())
    }
}

impl Client {
    /// A client of the API at `base_url` (its root, without `/v1`), with no
    /// token.
    pub fn new(base_url: impl Into<String>) -> Result<Self> {
        Self::builder(base_url).build()
    }

    /// A builder for a client of the API at `base_url`.
    pub fn builder(base_url: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            config: ClientConfig {
                base_url: with_scheme(&base_url.into()),
                token: None,
            },
            timeout: REQUEST_TIMEOUT,
        }
    }

    /// A client configured from the environment as the official clients
    /// are: `RENDER_USE_LOCAL_DEV`, `RENDER_LOCAL_DEV_URL`, `RENDER_API_KEY`
    /// (see [`ClientConfig::from_lookup`]).
    pub fn from_env() -> Result<Self> {
        Self::from_config(ClientConfig::from_env()?)
    }

    /// A client with this configuration.
    pub fn from_config(config: ClientConfig) -> Result<Self> {
        ClientBuilder {
            config,
            timeout: REQUEST_TIMEOUT,
        }
        .build()
    }

    /// The API's root, without `/v1` or a trailing `/`.
    pub fn base_url(&self) -> &str {
        self.inner.root.as_str().trim_end_matches('/')
    }

    /// Starts a run of the task `slug` with `input`, and returns its handle
    /// at once; await the handle (or its [`wait`](TaskRunHandle::wait)) for
    /// the outcome. Set an idempotency key on the returned request to make
    /// the call safe to repeat.
    ///
    /// `input` is a tuple or `Vec` (positional arguments), a struct or map
    /// (named ones), `()` for none, or a single value (one positional
    /// argument).
    ///
    /// ```no_run
    /// # async fn demo(client: weft::client::Client) -> weft::client::Result<()> {
    /// let handle = client.start_task("square", (3,)).idempotency_key("square-3").await?;
    /// println!("started {}", handle.id());
    /// let details = handle.await?;
    /// # Ok(()) }
    /// ```
    pub fn start_task(&self, slug: impl Into<String>, input: impl Serialize) -> StartTask {
        StartTask {
            client: self.clone(),
            task: slug.into(),
            input: encode_input(&input),
            idempotency_key: None,
        }
    }

    /// Starts a run and waits for it to end. A run that ends with an error
    /// is [`Error::TaskRunFailed`].
    ///
    /// ```no_run
    /// # async fn demo(client: weft::client::Client) -> weft::client::Result<()> {
    /// use weft::client::TaskRunDetailsExt;
    /// let details = client.run_task("square", 3).await?;
    /// assert_eq!(details.result::<i64>().unwrap(), 9);
    /// # Ok(()) }
    /// ```
    pub fn run_task(&self, slug: impl Into<String>, input: impl Serialize) -> RunTask {
        RunTask {
            start: self.start_task(slug, input),
        }
    }

    /// One run, with its input, results and error.
    pub async fn get_task_run(&self, task_run_id: &str) -> Result<TaskRunDetails> {
        let url = self.v1(&["task-runs", task_run_id]);
        self.send_json("get task run", self.request(Method::GET, url))
            .await
    }

    /// Cancels a run and every run under it.
    pub async fn cancel_task_run(&self, task_run_id: &str) -> Result<()> {
        let url = self.v1(&["task-runs", task_run_id]);
        self.send("cancel task run", self.request(Method::DELETE, url))
            .await
            .map(drop)
    }

    /// Lists runs, newest first, with cursors to page on.
    pub async fn list_task_runs(
        &self,
        params: &ListTaskRunsParams,
    ) -> Result<Vec<TaskRunWithCursor>> {
        let mut query: Vec<(&str, String)> = Vec::new();
        if let Some(slug) = &params.task_slug {
            query.push(("taskSlug", slug.clone()));
        }
        if let Some(root) = &params.root_task_run_id {
            query.push(("rootTaskRunId", root.clone()));
        }
        if let Some(status) = params.status {
            query.push(("status", status.as_str().to_string()));
        }
        if let Some(limit) = params.limit {
            query.push(("limit", limit.to_string()));
        }
        if let Some(cursor) = &params.cursor {
            query.push(("cursor", cursor.clone()));
        }
        let url = self.v1(&["task-runs"]);
        self.send_json(
            "list task runs",
            self.request(Method::GET, url).query(&query),
        )
        .await
    }

    /// Every run `params` selects, newest first, following the cursors
    /// page by page (the API's pages hold 100 at most); `params.limit` and
    /// `params.cursor` are ignored.
    pub async fn list_all_task_runs(&self, params: &ListTaskRunsParams) -> Result<Vec<TaskRun>> {
        const PAGE: u32 = 100;
        let mut params = ListTaskRunsParams {
            limit: Some(PAGE),
            cursor: None,
            ..params.clone()
        };
        let mut all = Vec::new();
        loop {
            let page = self.list_task_runs(&params).await?;
            let full = page.len() == PAGE as usize;
            params.cursor = page.last().map(|r| r.cursor.clone());
            all.extend(page.into_iter().map(|r| r.task_run));
            if !full {
                return Ok(all);
            }
        }
    }

    /// Waits for a run to end, on the event stream (which sends a run that
    /// already ended at once); a broken stream is reopened up to five times,
    /// waiting 1 s, 2 s, 4 s, … between. A run that ends with an error is
    /// [`Error::TaskRunFailed`].
    pub async fn wait_for_task_run(&self, task_run_id: &str) -> Result<TaskRunDetails> {
        let mut backoff = WAIT_FIRST_BACKOFF;
        let mut tries = 1;
        loop {
            match self.next_end_of(task_run_id).await.and_then(finished) {
                Err(err @ Error::TaskRunFailed { .. }) => return Err(err),
                Err(err) if tries < WAIT_TRIES => {
                    tracing::debug!(
                        "waiting for task run {task_run_id} failed, retry in {backoff:?}: {err}"
                    );
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                    tries += 1;
                }
                other => return other,
            }
        }
    }

    async fn next_end_of(&self, task_run_id: &str) -> Result<TaskRunDetails> {
        let events = self.task_run_events([task_run_id]);
        futures::pin_mut!(events);
        while let Some(event) = events.next().await {
            let details = event?;
            if details.run.id == task_run_id {
                return Ok(details);
            }
        }
        Err(Error::Server {
            operation: "task run events",
            status: None,
            message: format!("the stream ended before task run {task_run_id} did"),
        })
    }

    /// The runs of `task_run_ids` as each ends (Server-Sent Events). Runs
    /// that already ended come at once. The stream lasts until the server
    /// closes it or it is dropped.
    ///
    /// ```no_run
    /// # async fn demo(client: weft::client::Client) {
    /// use futures::StreamExt;
    /// let events = client.task_run_events(["trn-1", "trn-2"]);
    /// futures::pin_mut!(events);
    /// while let Some(run) = events.next().await {
    ///     let run = run.unwrap();
    ///     println!("{} {}", run.run.id, run.run.status);
    /// }
    /// # }
    /// ```
    pub fn task_run_events<S: AsRef<str>>(
        &self,
        task_run_ids: impl IntoIterator<Item = S>,
    ) -> impl Stream<Item = Result<TaskRunDetails>> + Send + 'static {
        let ids = task_run_ids
            .into_iter()
            .map(|id| id.as_ref().to_string())
            .collect::<Vec<_>>()
            .join(",");
        let client = self.clone();
        stream::once(async move { client.open_events(ids).await })
            .map(|opened| match opened {
                Ok(body) => events_of(body).left_stream(),
                Err(err) => stream::iter([Err(err)]).right_stream(),
            })
            .flatten()
    }

    async fn open_events(
        &self,
        ids: String,
    ) -> Result<impl Stream<Item = reqwest::Result<Bytes>> + use<>> {
        const OPERATION: &str = "task run events";
        let url = self.v1(&["task-runs", "events"]);
        // No timeout: the stream lives as long as the runs it waits for.
        let request = self
            .authorised(self.inner.http.request(Method::GET, url))
            .query(&[("taskRunIds", ids)])
            .header(ACCEPT, "text/event-stream")
            .header(CACHE_CONTROL, "no-cache");
        let response = self.send(OPERATION, request).await?;
        Ok(response.bytes_stream())
    }

    /// The registered tasks.
    pub async fn list_tasks(&self) -> Result<Vec<TaskWithCursor>> {
        let url = self.v1(&["tasks"]);
        self.send_json("list tasks", self.request(Method::GET, url))
            .await
    }

    /// One task, by id (or, locally, by slug or name).
    pub async fn get_task(&self, task_id: &str) -> Result<Task> {
        let url = self.v1(&["tasks", task_id]);
        self.send_json("get task", self.request(Method::GET, url))
            .await
    }

    /// Log lines of task runs.
    ///
    /// ```no_run
    /// # async fn demo(client: weft::client::Client) -> weft::client::Result<()> {
    /// use weft::client::LogsQuery;
    /// let query = LogsQuery { task_run_ids: vec!["trn-1".into()], ..LogsQuery::default() };
    /// for line in client.logs(&query).await?.logs {
    ///     println!("{} {}", line.timestamp, line.message);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn logs(&self, query: &LogsQuery) -> Result<LogsResponse> {
        let time = |t: &DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::AutoSi, true);
        let mut params: Vec<(&str, String)> = Vec::new();
        if !query.task_run_ids.is_empty() {
            params.push(("taskRunID", query.task_run_ids.join(",")));
        }
        if let Some(start) = &query.start_time {
            params.push(("startTime", time(start)));
        }
        if let Some(end) = &query.end_time {
            params.push(("endTime", time(end)));
        }
        if !query.text.is_empty() {
            params.push(("text", query.text.join(",")));
        }
        if query.include_subtasks {
            params.push(("includeSubtasks", "true".into()));
        }
        if let Some(limit) = query.limit {
            params.push(("limit", limit.to_string()));
        }
        let url = self.v1(&["logs"]);
        self.send_json("list logs", self.request(Method::GET, url).query(&params))
            .await
    }

    /// Weft only: has the runtime register the app's tasks again (after a
    /// rebuild, say), and returns the tasks it now knows.
    pub async fn refresh_tasks(&self) -> Result<Vec<TaskWithCursor>> {
        let url = self.path(&["weft", "v1", "tasks", "refresh"]);
        self.send_json("refresh tasks", self.request(Method::POST, url))
            .await
    }

    /// Weft only: starts a new root run of `task_run_id`'s task with its
    /// input, and returns it.
    pub async fn rerun_task_run(&self, task_run_id: &str) -> Result<TaskRun> {
        let url = self.path(&["weft", "v1", "runs", task_run_id, "rerun"]);
        self.send_json("rerun task run", self.request(Method::POST, url))
            .await
    }

    /// Weft only: the nodes of the cluster serving this API (one for
    /// `weft dev` on SQLite).
    pub async fn list_nodes(&self) -> Result<Vec<weft_protocol::api::Node>> {
        let url = self.path(&["weft", "v1", "nodes"]);
        self.send_json("list nodes", self.request(Method::GET, url))
            .await
    }

    async fn create_task_run(&self, body: &RunTaskRequest) -> Result<TaskRun> {
        let url = self.v1(&["task-runs"]);
        self.send_json("start task", self.request(Method::POST, url).json(body))
            .await
    }

    /// `{root}/v1/{segments…}`, each segment percent-encoded.
    fn v1(&self, segments: &[&str]) -> Url {
        let mut all = Vec::with_capacity(segments.len() + 1);
        all.push("v1");
        all.extend_from_slice(segments);
        self.path(&all)
    }

    fn path(&self, segments: &[&str]) -> Url {
        let mut url = self.inner.root.clone();
        url.path_segments_mut()
            .expect("checked to be a base URL when built")
            .pop_if_empty()
            .extend(segments);
        url
    }

    fn request(&self, method: Method, url: Url) -> RequestBuilder {
        self.authorised(self.inner.http.request(method, url))
            .timeout(self.inner.timeout)
            .header(ACCEPT, "application/json")
    }

    fn authorised(&self, request: RequestBuilder) -> RequestBuilder {
        let request = request.header(USER_AGENT, USER_AGENT_VALUE);
        match &self.inner.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// Sends; an error status becomes [`Error::Client`] or
    /// [`Error::Server`] with the server's message.
    async fn send(
        &self,
        operation: &'static str,
        request: RequestBuilder,
    ) -> Result<reqwest::Response> {
        let response = request
            .send()
            .await
            .map_err(|err| Error::from_reqwest(operation, err))?;
        let status = response.status();
        if status.is_client_error() || status.is_server_error() {
            let body = response.bytes().await.unwrap_or_default();
            let fallback = status.canonical_reason().unwrap_or("no message");
            return Err(Error::from_status(
                operation,
                status.as_u16(),
                error_message(&body, fallback),
            ));
        }
        Ok(response)
    }

    async fn send_json<T: DeserializeOwned>(
        &self,
        operation: &'static str,
        request: RequestBuilder,
    ) -> Result<T> {
        let body = self
            .send(operation, request)
            .await?
            .bytes()
            .await
            .map_err(|err| Error::from_reqwest(operation, err))?;
        serde_json::from_slice(&body).map_err(|err| Error::Decode {
            operation,
            message: format!("{err}: {}", String::from_utf8_lossy(&body)),
        })
    }
}

/// The runs that ended, parsed from an event stream's bytes.
fn events_of(
    body: impl Stream<Item = reqwest::Result<Bytes>> + Send + 'static,
) -> impl Stream<Item = Result<TaskRunDetails>> + Send + 'static {
    let mut parser = sse::SseParser::default();
    body.flat_map(move |chunk| {
        let items: Vec<Result<TaskRunDetails>> = match chunk {
            Ok(bytes) => parser
                .feed(&bytes)
                .iter()
                .filter_map(sse::run_ended)
                .collect(),
            Err(err) => vec![Err(Error::from_reqwest("task run events", err))],
        };
        stream::iter(items)
    })
}

/// A finished run, or [`Error::TaskRunFailed`] when it has an error.
fn finished(details: TaskRunDetails) -> Result<TaskRunDetails> {
    match &details.error {
        Some(message) => Err(Error::TaskRunFailed {
            task_run_id: details.run.id.clone(),
            message: message.clone(),
            details: Box::new(details),
        }),
        None => Ok(details),
    }
}

/// A run being started: set an idempotency key, then await it for the
/// [`TaskRunHandle`]. See [`Client::start_task`].
#[must_use = "a run starts only when this is awaited"]
pub struct StartTask {
    client: Client,
    task: String,
    input: Result<Value, serde_json::Error>,
    idempotency_key: Option<String>,
}

impl StartTask {
    /// Makes the call safe to repeat: within 24 hours, a start with the
    /// same key returns the run the first one started.
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    /// Starts the run.
    pub async fn send(self) -> Result<TaskRunHandle> {
        let body = RunTaskRequest {
            task: self.task,
            input: self.input.map_err(Error::InvalidInput)?.into(),
            idempotency_key: self.idempotency_key,
        };
        let run = self.client.create_task_run(&body).await?;
        Ok(TaskRunHandle {
            client: self.client,
            run,
        })
    }
}

impl IntoFuture for StartTask {
    type Output = Result<TaskRunHandle>;
    type IntoFuture = BoxFuture<Self::Output>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.send())
    }
}

/// A run being started and waited for: set an idempotency key, then await
/// it for the finished run. See [`Client::run_task`].
#[must_use = "a run starts only when this is awaited"]
pub struct RunTask {
    start: StartTask,
}

impl RunTask {
    /// Makes the call safe to repeat; see [`StartTask::idempotency_key`].
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.start = self.start.idempotency_key(key);
        self
    }

    /// Starts the run and waits for it to end.
    pub async fn send(self) -> Result<TaskRunDetails> {
        self.start.send().await?.wait().await
    }
}

impl IntoFuture for RunTask {
    type Output = Result<TaskRunDetails>;
    type IntoFuture = BoxFuture<Self::Output>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.send())
    }
}

/// A started run: its id at once, its outcome when awaited.
#[derive(Debug, Clone)]
pub struct TaskRunHandle {
    client: Client,
    run: TaskRun,
}

impl TaskRunHandle {
    /// The run's id.
    pub fn id(&self) -> &str {
        &self.run.id
    }

    /// The run as the start call returned it.
    pub fn run(&self) -> &TaskRun {
        &self.run
    }

    /// The run's status when it was started.
    pub fn status(&self) -> TaskRunStatus {
        self.run.status
    }

    /// Waits for the run to end; see [`Client::wait_for_task_run`].
    pub async fn wait(&self) -> Result<TaskRunDetails> {
        if self.run.status.is_terminal() {
            return finished(self.client.get_task_run(&self.run.id).await?);
        }
        self.client.wait_for_task_run(&self.run.id).await
    }
}

impl IntoFuture for TaskRunHandle {
    type Output = Result<TaskRunDetails>;
    type IntoFuture = BoxFuture<Self::Output>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move { self.wait().await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(vars: &[(&str, &str)]) -> Result<ClientConfig> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ClientConfig::from_lookup(move |name| {
            vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
        })
    }

    #[test]
    fn env_selects_local_dev_as_the_python_client_does() {
        for value in ["1", "t", "T", "true", "TRUE", "True"] {
            let c = config(&[("RENDER_USE_LOCAL_DEV", value)]).unwrap();
            assert_eq!(c.base_url, "http://localhost:8120", "{value}");
            assert_eq!(c.token, None);
        }
        for value in ["0", "false", "yes", ""] {
            let err = config(&[("RENDER_USE_LOCAL_DEV", value)]).unwrap_err();
            assert!(matches!(err, Error::Config(_)), "{value}");
        }
        let c = config(&[("RENDER_LOCAL_DEV_URL", "http://127.0.0.1:9000/")]).unwrap();
        assert_eq!(c.base_url, "http://127.0.0.1:9000/");
        let c = config(&[
            ("RENDER_LOCAL_DEV_URL", "devbox:8120"),
            ("RENDER_API_KEY", "k"),
        ])
        .unwrap();
        assert_eq!(c.base_url, "https://devbox:8120");
        assert_eq!(c.token.as_deref(), Some("k"));
        let c = config(&[("RENDER_API_KEY", "rnd_x")]).unwrap();
        assert_eq!(c.base_url, "https://api.render.com");
        assert_eq!(c.token.as_deref(), Some("rnd_x"));
        assert!(!format!("{c:?}").contains("rnd_x"), "the token is redacted");
    }

    #[test]
    fn urls_go_under_v1_with_encoded_segments() {
        let client = Client::new("http://localhost:8120/").unwrap();
        assert_eq!(client.base_url(), "http://localhost:8120");
        assert_eq!(
            client.v1(&["tasks", "my-workflow/square"]).as_str(),
            "http://localhost:8120/v1/tasks/my-workflow%2Fsquare"
        );
        assert_eq!(
            client.path(&["weft", "v1", "tasks", "refresh"]).as_str(),
            "http://localhost:8120/weft/v1/tasks/refresh"
        );
        let prefixed = Client::new("https://example.com/render").unwrap();
        assert_eq!(
            prefixed.v1(&["task-runs", "trn-1"]).as_str(),
            "https://example.com/render/v1/task-runs/trn-1"
        );
        assert!(matches!(Client::new("http://"), Err(Error::Config(_))));
    }

    fn details(error: Option<&str>) -> TaskRunDetails {
        serde_json::from_value(json!({
            "id": "trn-1", "taskId": "tsk-1", "status": if error.is_some() { "failed" } else { "completed" },
            "parentTaskRunId": "", "rootTaskRunId": "trn-1", "retries": 0, "attempts": [],
            "results": [25], "input": [3, 4], "error": error,
        }))
        .unwrap()
    }

    #[test]
    fn a_run_with_an_error_is_task_run_failed() {
        assert!(finished(details(None)).is_ok());
        let err = finished(details(Some("boom"))).unwrap_err();
        assert_eq!(err.to_string(), "task run trn-1 failed: boom");
        let Error::TaskRunFailed { details, .. } = err else {
            panic!()
        };
        assert_eq!(details.input, json!([3, 4]));
    }

    #[test]
    fn results_read_as_typed_values() {
        assert_eq!(details(None).result::<i64>().unwrap(), 25);
    }
}

//! The weft runtime: runs tasks of a Render Workflows app, each attempt in
//! its own process, and serves the REST API that clients use.
//!
//! - [`coordinator`]: the heart. Creates runs, schedules pending ones under
//!   a concurrency limit, applies retries, timeouts and cancellation, and
//!   announces runs that end.
//! - [`lifecycle`]: the run state machine's decisions (retry or fail).
//! - [`ends`]: who waits for which run to end.
//! - [`attempt`]: one attempt's life (running, reported, closed), and what
//!   its task process may ask of the runtime.
//! - [`supervisor`]: runs one attempt: its task socket and its process.
//! - [`executor`]: starts the app's start command per attempt (and once to
//!   register tasks), captures its output, kills its process tree.
//! - [`task_socket`]: the Unix-socket API one task process calls.
//! - [`api`]: the REST API and its Server-Sent Events.
//! - [`logs`]: task output, stored and echoed.
//!
//! [`Runtime::start`] wires them together; `weft dev` and the customer-ETL
//! pipeline's embedded mode both use it.

pub mod api;
pub mod attempt;
mod cgroup;
mod cluster;
pub mod coordinator;
mod dashboard;
pub mod ends;
pub mod executor;
pub mod lifecycle;
pub mod logs;
pub mod metrics;
pub mod prefork;
mod slots;
mod spawner;
pub mod supervisor;
pub mod task_socket;
pub mod terminal;

mod error;
pub mod guard;
mod http;
pub mod launcher;
mod lease;
mod lifeline;
pub mod listener;
mod peer;
mod process;
pub mod router;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use coordinator::Coordinator;
pub use error::{RunError, RuntimeError};
use tokio_util::sync::CancellationToken;
use weft_store::Store;

/// How a runtime is set up.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Address of the REST API; port 0 picks a free one.
    pub listen: SocketAddr,
    /// The app's start command: program and arguments.
    pub start_command: Vec<String>,
    /// Extra environment for task processes (from `.env`, say).
    pub env: Vec<(String, String)>,
    /// Task processes running at once (parents waiting on subtasks do not count).
    pub max_concurrent: usize,
    /// Bearer token the REST API requires; required when listening beyond loopback.
    pub api_key: Option<String>,
    /// Largest task input or result, in bytes.
    pub max_payload_bytes: usize,
    /// How long `get-subtask-result` holds a request for a child that has not ended.
    pub subtask_result_hold: Duration,
    /// Echo task output on the terminal, prefixed with task name and run id.
    pub echo_logs: bool,
    /// Directory for task sockets; a fresh private one when `None`.
    pub socket_dir: Option<PathBuf>,
    /// How long a process may take to exit after its callback before it is killed.
    pub exit_grace: Duration,
    /// How long registration may take.
    pub register_timeout: Duration,
    /// Task output stored per run at most; later lines are echoed and
    /// counted, not stored.
    pub max_log_bytes: u64,
    /// On a shared store: how long a node may be silent before the others
    /// take over its attempts.
    pub node_timeout: Duration,
    /// On a shared store: how long before the others may take its work
    /// over the node fences itself when it cannot renew its lease (the
    /// README's "Run on several machines"); `None`, a third of the node
    /// timeout.
    pub fence_margin: Option<Duration>,
    /// Ended root runs older than this are pruned, with their subtree and
    /// logs; `None` keeps everything.
    pub retention: Option<Duration>,
    /// How often the retention sweep runs.
    pub retention_sweep: Duration,
    /// How long a client may take to send a request's headers.
    pub header_read_timeout: Duration,
    /// How deep subtasks may nest (a root run is depth 1).
    pub max_depth: usize,
    /// Python start commands: fork each task process from one launcher
    /// that imported these modules once (empty: the SDKs); `None` starts
    /// each one afresh. See [`prefork`].
    pub prefork: Option<Vec<String>>,
    /// While runs wait for a slot, start task processes ahead of their
    /// attempts (see [`supervisor`]).
    pub standby: bool,
}

impl RuntimeConfig {
    /// Defaults for a start command: loopback port 8120, one task process
    /// per CPU, 4 MiB payloads, 10 s result holds.
    pub fn new(start_command: Vec<String>) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8120)),
            start_command,
            env: Vec::new(),
            max_concurrent: default_max_concurrent(),
            api_key: None,
            max_payload_bytes: 4 * 1024 * 1024,
            subtask_result_hold: Duration::from_secs(10),
            echo_logs: true,
            socket_dir: None,
            exit_grace: Duration::from_secs(5),
            register_timeout: Duration::from_secs(120),
            max_log_bytes: 64 * 1024 * 1024,
            node_timeout: weft_store::NodeId::DEFAULT_TIMEOUT,
            fence_margin: None,
            retention: None,
            retention_sweep: Duration::from_secs(60),
            header_read_timeout: Duration::from_secs(30),
            max_depth: 64,
            prefork: None,
            standby: true,
        }
    }
}

impl RuntimeConfig {
    /// The fence margin in force: as set, or a third of the node timeout.
    pub fn fence_margin(&self) -> Duration {
        self.fence_margin.unwrap_or(self.node_timeout / 3)
    }

    /// How long a renewal of the node's lease holds.
    pub fn lease_hold(&self) -> Duration {
        self.node_timeout.saturating_sub(self.fence_margin())
    }

    /// How often the node heartbeats: five times per node timeout, so a
    /// lease outlives a lost heartbeat or two.
    pub fn heartbeat_every(&self) -> Duration {
        self.node_timeout / 5
    }

    /// How long one heartbeat may take before it is given up (and its
    /// connection closed): a third of the lease, so that two more tries
    /// fit before it runs out.
    pub fn heartbeat_within(&self) -> Duration {
        self.lease_hold() / 3
    }

    /// Checks the node timeout and the fence margin together.
    pub fn check_lease(&self) -> Result<(), String> {
        if self.node_timeout < Duration::from_secs(1) {
            return Err(format!(
                "--node-timeout must be at least 1s ({:?} given)",
                self.node_timeout
            ));
        }
        let margin = self.fence_margin();
        if margin.is_zero() || margin > self.node_timeout / 2 {
            return Err(format!(
                "--fence-margin must be positive and at most half of --node-timeout ({:?}): {margin:?} given",
                self.node_timeout
            ));
        }
        Ok(())
    }
}

/// One task process per CPU: tasks that compute keep every core busy, and
/// parents waiting on subtasks are not counted.
pub fn default_max_concurrent() -> usize {
    std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .max(2)
}

/// A running runtime: the coordinator and the REST API.
pub struct Runtime {
    coordinator: Arc<Coordinator>,
    addr: SocketAddr,
    shutdown: CancellationToken,
    server: tokio::task::JoinHandle<()>,
}

impl Runtime {
    /// Opens the runtime over a store: recovers runs a previous runtime left
    /// unfinished, registers the app's tasks, starts scheduling and serves
    /// the API.
    pub async fn start(config: RuntimeConfig, store: Arc<dyn Store>) -> Result<Self, RuntimeError> {
        config.check_lease().map_err(RuntimeError::Config)?;
        if !config.listen.ip().is_loopback() && config.api_key.is_none() {
            return Err(RuntimeError::Config(format!(
                "refusing to listen on {} without a bearer token: set RENDER_API_KEY (or --api-key), or listen on 127.0.0.1",
                config.listen
            )));
        }
        let shutdown = CancellationToken::new();
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|e| {
                RuntimeError::Config(format!("cannot listen on {}: {e}", config.listen))
            })?;
        let addr = listener.local_addr().map_err(RuntimeError::Io)?;
        let coordinator = Coordinator::open(config, store, shutdown.clone()).await?;
        coordinator.register_tasks().await?;
        coordinator.clone().start_scheduler();

        let app = router::router(coordinator.clone(), addr);
        let header_timeout = coordinator.config().header_read_timeout;
        let server = tokio::spawn(listener::serve(
            listener,
            app,
            header_timeout,
            shutdown.clone(),
        ));
        Ok(Self {
            coordinator,
            addr,
            shutdown,
            server,
        })
    }

    /// The address the API listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The API's base URL, e.g. `http://127.0.0.1:8120`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The coordinator, to start and watch runs in-process.
    pub fn coordinator(&self) -> &Arc<Coordinator> {
        &self.coordinator
    }

    /// Stops at once: kills running task processes and hands their runs
    /// back, to run again (uncounted) when a runtime opens the same store
    /// again, or at once on another node of a shared store.
    pub async fn shutdown(self) {
        self.coordinator.stop().await;
        self.shutdown.cancel();
        let _ = self.server.await;
    }

    /// Stops gracefully: claims nothing more, lets running attempts finish
    /// for up to `grace` (the API keeps serving meanwhile), then hands back
    /// what still runs and stops.
    pub async fn drain(self, grace: Duration) {
        self.coordinator.drain(grace).await;
        self.shutdown.cancel();
        let _ = self.server.await;
    }
}

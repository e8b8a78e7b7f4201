//! How a runtime is set up: [`RuntimeConfig`], and the settings derived
//! from it (the node's lease on a shared store).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

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
    /// The memory this node gives attempts, in bytes: it starts no more
    /// than their plans' memory fits in (parents waiting on subtasks do
    /// not count, as for `max_concurrent`). `None`: no such bound.
    pub memory: Option<u64>,
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
    /// Python start commands: fork each task process from one server
    /// that imported these modules once (empty: the SDKs); `None` starts
    /// each one afresh (the README's "Pre-forked Python").
    pub prefork: Option<Vec<String>>,
    /// While runs wait for a slot, start task processes ahead of their
    /// attempts (the README's "Standbys").
    pub standby: bool,
    /// What an attempt's Render plan means here (docs/plans.md).
    pub plans: Plans,
    /// Where the dashboard links a run's trace: a URL with `{trace_id}`
    /// (`http://jaeger:16686/trace/{trace_id}`).
    pub trace_url: Option<String>,
    /// Run spans carry the run's input and results, each cut to this many
    /// bytes (0: never, the default: they may be large or private).
    pub trace_payload_bytes: usize,
}

/// What a task's Render plan (its `plan` option; `standard` by default)
/// does to its attempts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Plans {
    /// Each attempt's processes get the plan's memory (no swap) and CPUs,
    /// as on Render: one that needs more memory is killed, and its attempt
    /// fails with a message naming the plan.
    #[default]
    Enforce,
    /// No limit; an attempt whose processes went over the plan's memory
    /// is reported as one Render would have killed.
    Warn,
    /// Plans mean nothing.
    Off,
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
            memory: None,
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
            plans: Plans::Enforce,
            trace_url: None,
            trace_payload_bytes: 0,
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

//! The coordinator: creates runs, claims pending ones for this node's
//! free slots, supervises each attempt's process, applies retries,
//! timeouts and cancellation, and announces runs that end.
//!
//! Every state change is written to the store before anyone hears of it.
//! Pending work lives in the store, not here: the coordinator claims it
//! when a slot is free (woken when work appears, here or on another node
//! of a shared store), so nodes sharing one database share the work. What
//! it keeps in memory (its attempts, who waits for what) it can rebuild.
//!
//! Here: the coordinator itself, and runs (created, canceled, waited on,
//! ended). Beside it, one job each: `registration` (the app's tasks),
//! `scheduling` (claims, standbys, each attempt run to its end),
//! `outcomes` (what an attempt's end means, committed; what a task process
//! may ask), `nodes` (the lease, the fence, the rejoin, other nodes' news).

mod nodes;
mod outcomes;
mod registration;
mod scheduling;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use chrono::Utc;
use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use weft_protocol::payload::{Json, check_input_shape};
use weft_store::{
    CancelOutcome, Creation, NewRun, ParentRef, RunRecord, RunState, Store, TaskRecord,
};

use crate::attempt::runner::Runner;
use crate::attempt::slots::Slots;
pub use crate::ends::EndedRun;
use crate::ends::{EndWaiters, EndWatch};
pub use crate::error::RunError;
use crate::lease::Lease;
use crate::logs::LogSink;
use crate::metrics::Metrics;
use crate::{RuntimeConfig, RuntimeError};

/// The coordinator. Shared as `Arc<Coordinator>`.
///
/// Its public methods are the runtime's in-process API (reached through
/// [`crate::Runtime::coordinator`]): start, wait for, cancel and rerun
/// runs, follow their ends and changes, read the registered tasks, and
/// stop or drain; everything else is the runtime's own.
pub struct Coordinator {
    /// This coordinator, for the tasks it spawns (commits that outlive a
    /// request).
    me: Weak<Coordinator>,
    config: RuntimeConfig,
    store: Arc<dyn Store>,
    runner: Runner,
    logs: LogSink,
    tasks: RwLock<HashMap<String, TaskRecord>>,
    /// One registration at a time; holds when the last one finished.
    registering: tokio::sync::Mutex<Option<tokio::time::Instant>>,
    slots: Mutex<Slots>,
    kick: Notify,
    /// Told whenever an attempt of this node is over (a drain waits on it).
    finished: Notify,
    metrics: Metrics,
    /// The node's lease on its work, on a shared store (see `lease`).
    lease: Lease,
    /// Every run that ends, for whoever follows them all.
    ended: broadcast::Sender<EndedRun>,
    /// Who waits for which run to end.
    ends: Arc<EndWaiters>,
    /// Counts changes of any run (created, started, retried, ended) this
    /// node made or heard of, for views that follow every run.
    changes: tokio::sync::watch::Sender<u64>,
    shutdown: CancellationToken,
    /// Attempts and the commits of their outcomes.
    background: TaskTracker,
    /// What ended attempts used, waiting to be written together.
    used: Mutex<Vec<weft_store::UsageRecord>>,
    /// Run trees exported as traces, when the environment asks for it.
    traces: Option<Arc<crate::traces::Traces>>,
}

impl Coordinator {
    /// Opens the coordinator over a store as its node: joins the cluster
    /// (refused while another process runs as this node) and recovers what
    /// this node left when it last stopped: its attempts are closed as
    /// interrupted and their runs pending again, to be claimed anew.
    pub(crate) async fn open(
        config: RuntimeConfig,
        store: Arc<dyn Store>,
        shutdown: CancellationToken,
    ) -> Result<Arc<Self>, RuntimeError> {
        let traces = crate::traces::Traces::from_env(config.trace_payload_bytes)
            .map_err(RuntimeError::Config)?
            .map(Arc::new);
        if traces.is_some() {
            tracing::info!(
                "exporting each run tree as a trace over OTLP; task processes start with their attempt's TRACEPARENT"
            );
        }
        let lease = Lease::new(config.lease_hold());
        let joined = tokio::time::Instant::now();
        store.join().await?;
        if store.events().is_some() {
            // Joining stamped the node alive: its first lease.
            lease.renewed(joined, Utc::now());
        }
        let logs = LogSink::start(store.clone(), config.echo_logs);
        let mut runner = Runner::new(&config, logs.clone())?;
        if traces.is_some() {
            runner = runner.with_traced_standbys();
        }
        let interrupted = store.recover(Utc::now()).await?;
        let metrics = Metrics::default();
        if !interrupted.is_empty() {
            metrics.attempts_interrupted(interrupted.len());
            tracing::info!(
                "{} attempts were running when this node last stopped; they run again",
                interrupted.len()
            );
        }
        let tasks = store
            .list_tasks()
            .await?
            .into_iter()
            .map(|t| (t.name.clone(), t))
            .collect();
        let (ended, _) = broadcast::channel(4096);
        Ok(Arc::new_cyclic(|me| Self {
            me: me.clone(),
            config,
            store,
            runner,
            logs,
            tasks: RwLock::new(tasks),
            registering: tokio::sync::Mutex::new(None),
            slots: Mutex::new(Slots::default()),
            kick: Notify::new(),
            finished: Notify::new(),
            metrics,
            lease,
            ended,
            ends: Arc::default(),
            changes: tokio::sync::watch::Sender::new(0),
            shutdown,
            background: TaskTracker::new(),
            used: Mutex::default(),
            traces,
        }))
    }

    /// The configuration.
    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Canceled when the runtime stops.
    pub(crate) fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// The task output sink.
    pub(crate) fn logs(&self) -> &LogSink {
        &self.logs
    }

    /// Subscribes to every run that ends (completed, failed or canceled).
    pub fn subscribe_ended(&self) -> broadcast::Receiver<EndedRun> {
        self.ended.subscribe()
    }

    /// Follows changes of any run: the value counts them; a receiver
    /// hears that something changed since it last looked, not what.
    pub fn watch_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Something about the runs changed.
    pub(crate) fn changed(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Waits for the ends of these runs only. Register before reading
    /// their state, so an end in between is not missed.
    pub(crate) fn watch_ends(&self, runs: impl IntoIterator<Item = String>) -> EndWatch {
        self.ends.watch(runs)
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, Slots> {
        // The slots' invariants hold between statements; a panic while
        // holding the lock cannot leave them half-changed in a way that matters.
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// This node's counters, for `GET /metrics`.
    pub(crate) fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The node's lease on its work.
    pub(crate) fn lease(&self) -> &Lease {
        &self.lease
    }

    /// Why this node is fenced (it killed its task processes and claims
    /// nothing until it has rejoined), or `None` while it serves.
    pub fn fenced(&self) -> Option<String> {
        self.lease
            .fenced()
            .map(|f| f.describe(&self.store.node().id))
    }

    /// Attempts running on this node, and how many hold a slot.
    pub(crate) fn load(&self) -> (usize, usize) {
        let slots = self.slots();
        (slots.len(), slots.counted())
    }

    /// Attempts this node ran on a standby process: one started ahead,
    /// while runs waited for a slot.
    pub(crate) fn standby_attempts(&self) -> u64 {
        self.runner.standby_attempts()
    }

    /// Wakes the scheduler: there may be work to claim or a slot free.
    pub(crate) fn kick(&self) {
        self.kick.notify_one();
    }

    fn check_input(&self, input: &Json) -> Result<(), RunError> {
        check_input_shape(input).map_err(|e| RunError::BadInput(e.to_string()))?;
        let size = input.as_str().len();
        if size > self.config.max_payload_bytes {
            return Err(RunError::TooLarge {
                what: "task input",
                size,
                limit: self.config.max_payload_bytes,
            });
        }
        Ok(())
    }

    /// Starts a root run (or finds the one its idempotency key names).
    /// `task` is a name or a slug, `workflow/task:version`: a version is
    /// recorded on the run and its subtasks (weft runs the app it has: one
    /// version; the pin says which one a client asked for).
    pub async fn start_run(
        &self,
        task: &str,
        input: Json,
        idempotency_key: Option<String>,
    ) -> Result<RunRecord, RunError> {
        self.start_run_in_trace(task, input, idempotency_key, None)
            .await
    }

    /// [`start_run`](Self::start_run), the run tree's trace continuing the
    /// client's (`traceparent`: the W3C header it sent; ignored unless
    /// well formed).
    pub async fn start_run_in_trace(
        &self,
        task: &str,
        input: Json,
        idempotency_key: Option<String>,
        traceparent: Option<String>,
    ) -> Result<RunRecord, RunError> {
        let trace_parent =
            traceparent.filter(|t| weft_protocol::trace::SpanRef::parse(t).is_some());
        self.create_run(task, input, None, idempotency_key, None, trace_parent)
            .await
    }

    async fn create_run(
        &self,
        task: &str,
        input: Json,
        parent: Option<ParentRef>,
        idempotency_key: Option<String>,
        idempotency_created_at: Option<String>,
        trace_parent: Option<String>,
    ) -> Result<RunRecord, RunError> {
        for (field, value) in [
            ("task", Some(task)),
            ("idempotencyKey", idempotency_key.as_deref()),
            ("idempotency created_at", idempotency_created_at.as_deref()),
        ] {
            if value.is_some_and(|v| v.contains('\0')) {
                return Err(RunError::BadInput(format!(
                    "{field} holds a NUL byte, which it may not"
                )));
            }
        }
        let task_version = match &parent {
            None => weft_protocol::api::task_slug_parts(task)
                .1
                .map(str::to_string),
            // A subtask runs in its root's version (the store copies it).
            Some(_) => None,
        };
        let task = self.find_or_register(task).await?;
        self.check_input(&input)?;
        let parent_id = parent.as_ref().map(|p| p.run_id.clone());
        let created = self
            .store
            .create_run(NewRun {
                task_name: task.name,
                input,
                parent,
                idempotency_key,
                idempotency_created_at,
                task_version,
                trace_parent,
                at: Utc::now(),
            })
            .await?;
        if created.how == Creation::New {
            if let Some(parent_id) = &parent_id {
                self.slots().child_changed(parent_id, 1);
            }
            self.changed();
            self.kick.notify_one();
        }
        Ok(created.run)
    }

    /// Starts a new root run of `id`'s task with `id`'s input (a root run
    /// or a subtask alike).
    pub async fn rerun(&self, id: &str) -> Result<RunRecord, RunError> {
        let run = self
            .store
            .get_run(id)
            .await?
            .ok_or_else(|| RunError::UnknownRun(id.to_string()))?;
        let slug = match &run.task_version {
            Some(version) => format!("{}:{version}", run.task_name),
            None => run.task_name.clone(),
        };
        self.start_run(&slug, run.input, None).await
    }

    /// Cancels a run and every descendant that has not ended, killing their processes.
    pub async fn cancel(&self, id: &str) -> Result<Vec<String>, RunError> {
        match self.store.cancel_run(id, Utc::now()).await? {
            CancelOutcome::NotFound => Err(RunError::UnknownRun(id.to_string())),
            CancelOutcome::AlreadyEnded(status) => Err(RunError::AlreadyEnded {
                id: id.to_string(),
                status,
            }),
            CancelOutcome::Canceled(ids) => {
                for run_id in &ids {
                    if let Some(attempt) = self.slots().get(run_id) {
                        attempt.cancel();
                    }
                    if let Some(run) = self.store.get_run(run_id).await? {
                        self.run_ended(run);
                    }
                }
                Ok(ids)
            }
        }
    }

    /// Waits until the run ends or `hold` passes; returns the run as it is then.
    pub async fn wait_for_run(&self, id: &str, hold: Duration) -> Result<RunRecord, RunError> {
        self.wait_for_end(id, hold, |_| true).await
    }

    /// [`wait_for_run`](Self::wait_for_run) of a run that `visible` lets
    /// the caller see (one read of the store for both).
    async fn wait_for_end(
        &self,
        id: &str,
        hold: Duration,
        visible: impl FnOnce(&RunRecord) -> bool,
    ) -> Result<RunRecord, RunError> {
        // Registered before reading, so an end between the two is not missed.
        let mut watch = self.watch_ends([id.to_string()]);
        let run = self
            .store
            .get_run(id)
            .await?
            .filter(visible)
            .ok_or_else(|| RunError::UnknownRun(id.to_string()))?;
        if run.status.is_terminal() {
            return Ok(run);
        }
        match tokio::time::timeout(hold, watch.next()).await {
            Ok(Some(ended)) => Ok((*ended).clone()),
            Ok(None) | Err(_) => Ok(run),
        }
    }

    fn run_ended(&self, run: RunRecord) {
        if let Some(parent) = &run.parent_id {
            self.slots().child_changed(parent, -1);
        }
        self.logs
            .announce(&run.task_name, &run.id, &ended_summary(&run));
        // Two digests per run: only when the line is written.
        if tracing::enabled!(tracing::Level::DEBUG) {
            let (trace_id, span_id) = crate::traces::log_ids(&run, None);
            tracing::debug!(
                run = %run.id,
                task = %run.task_name,
                status = %run.status,
                trace_id,
                span_id,
                "task run ended"
            );
        }
        if let Some(traces) = &self.traces {
            traces.run_ended(&run);
        }
        let run = Arc::new(run);
        self.ends.ended(&run);
        let _ = self.ended.send(run);
        self.changed();
        self.kick.notify_one();
    }

    /// Stops at once: claims nothing more, kills the running task
    /// processes, and hands their runs back (pending again, the attempts
    /// recorded as interrupted) for this node's next start or another node.
    pub async fn stop(&self) {
        self.slots().close();
        self.shutdown.cancel();
        self.runner.stop_standbys().await;
        self.background.close();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.background.wait()).await;
        self.logs.flush().await;
        if let Some(traces) = self.traces.clone() {
            // The batch processor's thread sends; this waits for it.
            let _ = tokio::task::spawn_blocking(move || traces.flush()).await;
        }
        match self.store.recover(Utc::now()).await {
            Ok(handed_back) if !handed_back.is_empty() => {
                self.metrics.attempts_interrupted(handed_back.len());
                tracing::info!("handed back {} unfinished attempts", handed_back.len());
            }
            Ok(_) => {}
            // Not lost: they are handed back when this node starts again,
            // or taken over when it is found silent.
            Err(e) => tracing::warn!("could not hand back the unfinished attempts: {e}"),
        }
        if let Err(e) = self.store.leave().await {
            tracing::warn!("could not leave the cluster: {e}");
        }
    }

    /// Drains, then stops: claims nothing more and lets the running
    /// attempts finish for up to `grace`; whatever still runs then is
    /// handed back ([`Coordinator::stop`]).
    pub async fn drain(&self, grace: Duration) {
        self.slots().close();
        let deadline = tokio::time::Instant::now() + grace;
        let running = self.slots().len();
        if running > 0 {
            tracing::info!("draining: waiting up to {grace:?} for {running} running attempts");
        }
        loop {
            let finished = self.finished.notified();
            if self.slots().is_empty() {
                break;
            }
            if tokio::time::timeout_at(deadline, finished).await.is_err() {
                break;
            }
        }
        self.stop().await;
    }
}

/// One line on how a run ended, for the terminal.
fn ended_summary(run: &RunRecord) -> String {
    let took = match (run.started_at, run.completed_at) {
        (Some(start), Some(end)) => {
            format!(
                " in {:.2}s",
                (end - start).num_milliseconds() as f64 / 1000.0
            )
        }
        _ => String::new(),
    };
    let attempts = match run.attempts.iter().filter(|a| !a.interrupted).count() {
        0 | 1 => String::new(),
        n => format!(" after {n} attempts"),
    };
    match run.status {
        RunState::Failed => format!(
            "failed{took}{attempts}: {}",
            first_line(run.error.as_deref().unwrap_or("no error given"))
        ),
        status => format!("{status}{took}{attempts}"),
    }
}

/// The first line of a message (a traceback's is the summary).
fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or_default()
}

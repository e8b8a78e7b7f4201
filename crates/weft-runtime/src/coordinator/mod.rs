//! The coordinator: creates runs, claims pending ones for this node's
//! free slots, supervises each attempt's process, applies retries,
//! timeouts and cancellation, and announces runs that end.
//!
//! Every state change is written to the store before anyone hears of it.
//! Pending work lives in the store, not here: the coordinator claims it
//! when a slot is free (woken when work appears, here or on another node
//! of a shared store), so nodes sharing one database share the work. What
//! it keeps in memory (its attempts, who waits for what) it can rebuild.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use weft_protocol::payload::{Json, check_input_shape};
use weft_protocol::socket::TaskDefinition;
use weft_store::{
    AttemptEnd, CancelOutcome, Creation, NewRun, ParentRef, RunRecord, RunState, Store, StoreError,
    TaskRecord,
};

use crate::attempt::slots::Slots;
use crate::attempt::supervisor::{AttemptExit, Supervisor};
use crate::attempt::{Attempt, AttemptHost, ReportOutcome, Reporter, SubtaskStart};
pub use crate::error::RunError;
use crate::lease::{FenceCause, Lease};
use crate::logs::LogSink;
use crate::metrics::Metrics;
use crate::{RuntimeConfig, RuntimeError, lifecycle};

/// How long a callback waits for its outcome to be committed before it is
/// answered anyway (the outcome is then held and committed later: a full
/// disk).
const COMMIT_HOLD: Duration = Duration::from_secs(5);
/// How long the scheduler waits before claiming again when the store could
/// not be asked (a full disk, a lost connection).
const CLAIM_RETRY: Duration = Duration::from_secs(1);
/// How often a node sharing its store claims even when nothing woke it
/// (a notification lost with a connection): a safety net, not the mechanism.
const FALLBACK_POLL: Duration = Duration::from_secs(5);
/// A registration this recent is not repeated for a task it did not list.
const REREGISTER_AFTER: Duration = Duration::from_secs(2);
/// The longest wait between tries of a commit the store refused for now.
const COMMIT_RETRY_CAP: Duration = Duration::from_secs(2);

pub use crate::ends::EndedRun;
use crate::ends::{EndWaiters, EndWatch};

/// The coordinator. Shared as `Arc<Coordinator>`.
pub struct Coordinator {
    /// This coordinator, for the tasks it spawns (commits that outlive a
    /// request).
    me: Weak<Coordinator>,
    config: RuntimeConfig,
    store: Arc<dyn Store>,
    supervisor: Supervisor,
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
}

impl Coordinator {
    /// Opens the coordinator over a store as its node: joins the cluster
    /// (refused while another process runs as this node) and recovers what
    /// this node left when it last stopped: its attempts are closed as
    /// interrupted and their runs pending again, to be claimed anew.
    pub async fn open(
        config: RuntimeConfig,
        store: Arc<dyn Store>,
        shutdown: CancellationToken,
    ) -> Result<Arc<Self>, RuntimeError> {
        let lease = Lease::new(config.lease_hold());
        let joined = tokio::time::Instant::now();
        store.join().await?;
        if store.events().is_some() {
            // Joining stamped the node alive: its first lease.
            lease.renewed(joined, Utc::now());
        }
        let logs = LogSink::start(store.clone(), config.echo_logs);
        let supervisor = Supervisor::new(&config, logs.clone())?;
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
            supervisor,
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
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// The task output sink.
    pub fn logs(&self) -> &LogSink {
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
    pub fn watch_ends(&self, runs: impl IntoIterator<Item = String>) -> EndWatch {
        self.ends.watch(runs)
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, Slots> {
        // The slots' invariants hold between statements; a panic while
        // holding the lock cannot leave them half-changed in a way that matters.
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// This node's counters, for `GET /metrics`.
    pub fn metrics(&self) -> &Metrics {
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
    pub fn load(&self) -> (usize, usize) {
        let slots = self.slots();
        (slots.len(), slots.counted())
    }

    /// Attempts this node ran on a standby process: one started ahead,
    /// while runs waited for a slot.
    pub fn standby_attempts(&self) -> u64 {
        self.supervisor.standby_attempts()
    }

    /// Wakes the scheduler: there may be work to claim or a slot free.
    pub(crate) fn kick(&self) {
        self.kick.notify_one();
    }

    /// Runs the start command in register mode and records its tasks.
    pub async fn register_tasks(&self) -> Result<Vec<TaskRecord>, RuntimeError> {
        let mut last = self.registering.lock().await;
        let tasks = self.register_tasks_now().await;
        *last = Some(tokio::time::Instant::now());
        tasks
    }

    /// A task the registry does not know was asked for: the app may have
    /// new tasks since its last registration (its code changed), so it is
    /// registered again, once, before the answer is "not found". Chosen
    /// over watching the start command's files: it costs nothing until a
    /// task is missing, sees every way an app can change (a rebuild, an
    /// edit, a new version installed), and a typo still answers 404 at
    /// once, since a registration finished in the last few seconds is not
    /// repeated.
    async fn find_or_register(&self, name: &str) -> Result<TaskRecord, RunError> {
        if let Some(task) = self.task(name) {
            return Ok(task);
        }
        {
            let mut last = self.registering.lock().await;
            let recent = last.is_some_and(|t| t.elapsed() < REREGISTER_AFTER);
            if !recent && self.task(name).is_none() {
                tracing::info!(
                    "task {name:?} is not registered: registering the app's tasks again"
                );
                if let Err(e) = self.register_tasks_now().await {
                    tracing::warn!("could not register the tasks again: {e}");
                }
                *last = Some(tokio::time::Instant::now());
            }
        }
        self.task(name)
            .ok_or_else(|| RunError::UnknownTask(name.to_string()))
    }

    /// Registers, the caller holding the registration lock.
    async fn register_tasks_now(&self) -> Result<Vec<TaskRecord>, RuntimeError> {
        let defs = self
            .supervisor
            .executor()
            .register(&self.config, &self.logs)
            .await?;
        validate_definitions(&defs)?;
        for warning in cloud_warnings(&defs) {
            tracing::warn!("{warning}");
        }
        let tasks = self.store.register_tasks(&defs, Utc::now()).await?;
        self.store
            .set_meta(
                "start_command",
                &serde_json::to_string(&self.config.start_command).unwrap(),
            )
            .await?;
        let names: Vec<_> = tasks
            .iter()
            .filter(|t| t.registered)
            .map(|t| t.name.as_str())
            .collect();
        tracing::info!("registered {} tasks: {}", names.len(), names.join(", "));
        *self.tasks.write().unwrap_or_else(|p| p.into_inner()) =
            tasks.iter().map(|t| (t.name.clone(), t.clone())).collect();
        Ok(tasks)
    }

    /// The registered task of this name or slug.
    pub fn task(&self, name_or_slug: &str) -> Option<TaskRecord> {
        let tasks = self.tasks.read().unwrap_or_else(|p| p.into_inner());
        let name = weft_protocol::api::task_name_from_slug(name_or_slug);
        tasks
            .get(name)
            .or_else(|| tasks.values().find(|t| t.id == name_or_slug))
            .filter(|t| t.registered)
            .cloned()
    }

    /// Registered tasks, by name.
    pub fn tasks(&self) -> Vec<TaskRecord> {
        let tasks = self.tasks.read().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<_> = tasks.values().filter(|t| t.registered).cloned().collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
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
    pub async fn start_run(
        &self,
        task: &str,
        input: Json,
        idempotency_key: Option<String>,
    ) -> Result<RunRecord, RunError> {
        self.create_run(task, input, None, idempotency_key, None)
            .await
    }

    async fn create_run(
        &self,
        task: &str,
        input: Json,
        parent: Option<ParentRef>,
        idempotency_key: Option<String>,
        idempotency_created_at: Option<String>,
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
        self.start_run(&run.task_name, run.input, None).await
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
        tracing::debug!(run = %run.id, status = %run.status, "task run ended");
        let run = Arc::new(run);
        self.ends.ended(&run);
        let _ = self.ended.send(run);
        self.changed();
        self.kick.notify_one();
    }

    /// Starts the scheduling loop.
    pub(crate) fn start_scheduler(self: Arc<Self>) {
        tokio::spawn(async move { self.schedule_loop().await });
    }

    /// Claims pending runs for the free slots, whenever something may have
    /// changed: a run created or ended, a slot freed, another node's news,
    /// or a retry's backoff running out.
    async fn schedule_loop(self: Arc<Self>) {
        let shared = self.store.events().is_some();
        loop {
            let free = self.slots().free(self.config.max_concurrent);
            let mut wait = if shared {
                FALLBACK_POLL
            } else {
                Duration::from_secs(3600)
            };
            if free > 0 {
                match self.store.claim(free as u32, Utc::now()).await {
                    Ok(claimed) => {
                        let filled = claimed.runs.len() == free;
                        // Runs wait for a slot: start their processes ahead.
                        if claimed.next_due.is_some_and(|due| due <= Utc::now()) {
                            self.prewarm();
                        }
                        for run in claimed.runs {
                            self.launch(run);
                        }
                        // More is due than there were slots: a slot freeing
                        // up wakes us. Otherwise sleep until the next due.
                        if let Some(due) = claimed.next_due.filter(|_| !filled) {
                            let until = (due - Utc::now()).to_std().unwrap_or(Duration::ZERO);
                            wait = wait.min(until.max(Duration::from_millis(1)));
                        }
                    }
                    Err(e) => {
                        // A full disk is a fault to wait out, not a crash.
                        tracing::warn!(
                            "could not claim pending runs, trying again in {CLAIM_RETRY:?}: {e}"
                        );
                        wait = CLAIM_RETRY;
                    }
                }
            }
            tokio::select! {
                _ = self.kick.notified() => {}
                _ = tokio::time::sleep(wait) => {}
                _ = self.shutdown.cancelled() => return,
            }
        }
    }

    /// Starts task processes ahead of the attempts waiting for a slot, one
    /// per slot at most, and stops them once idle (see [`supervisor`]).
    fn prewarm(self: &Arc<Self>) {
        if !self.config.standby {
            return;
        }
        let this = self.clone();
        self.background.spawn(async move {
            let host: Arc<dyn AttemptHost> = this.clone();
            let waiting = this
                .supervisor
                .prewarm(this.config.max_concurrent, &host)
                .await;
            if !waiting || !this.supervisor.claim_keeper() {
                return;
            }
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(crate::attempt::supervisor::STANDBY_IDLE / 4) => {}
                    _ = this.shutdown.cancelled() => break,
                }
                if !this.supervisor.stop_idle().await {
                    return;
                }
            }
            this.supervisor.stop_standbys().await;
        });
    }

    /// Runs a claimed run's new attempt.
    fn launch(self: &Arc<Self>, run: RunRecord) {
        let waited = run
            .attempts
            .iter()
            .rev()
            .nth(1)
            .and_then(|previous| previous.completed_at)
            .unwrap_or(run.created_at);
        let attempt = Arc::new(Attempt::new(run, self.shutdown.child_token()));
        let alive = {
            let mut slots = self.slots();
            // Claimed as the node fenced itself: left to the rejoin (or
            // the cluster's rescue) to close as interrupted.
            if !slots.start(attempt.clone()) {
                return;
            }
            (slots.len(), slots.len() - slots.counted())
        };
        self.changed();
        let started = attempt.run.current_attempt().map(|a| a.started_at);
        self.metrics.attempt_started(
            started
                .and_then(|s| (s - waited).to_std().ok())
                .unwrap_or_default(),
        );
        // Parents waiting on children hold no slot, so processes can pile
        // up under deep or wide nesting: say so as they do.
        if alive.0 >= 32 && alive.0.is_power_of_two() {
            self.logs.announce(
                "weft",
                &self.store.node().id,
                &format!(
                    "{} task processes are alive ({} of them waiting on subtasks)",
                    alive.0, alive.1
                ),
            );
        }
        let this = self.clone();
        self.background.spawn(async move {
            let id = attempt.run.id.clone();
            // A run that ran before may have children still open.
            if attempt.number > 1
                && let Ok(open) = this.store.open_children(std::slice::from_ref(&id)).await
            {
                for (parent, n) in open {
                    this.slots().set_open_children(&parent, n);
                }
            }
            let number = attempt.number;
            // Its slot is free once it reports; its process exits meanwhile.
            let release = async {
                attempt.reported().await;
                this.slots().reported(&id, number);
                this.kick.notify_one();
                std::future::pending::<()>().await
            };
            tokio::select! {
                () = this.run_attempt(&attempt) => {}
                () = release => {}
            }
            this.slots().finish(&id, number);
            this.finished.notify_waiters();
            this.kick.notify_one();
        });
    }

    /// Runs one attempt's process to its end and decides what its end
    /// means when the task did not say.
    async fn run_attempt(self: &Arc<Self>, attempt: &Arc<Attempt>) {
        let run = &attempt.run;
        let Some(task) = self.task(&run.task_name) else {
            attempt.close();
            let error = format!(
                "task {} is no longer registered by the start command",
                run.task_name
            );
            self.report_or_log(attempt, error).await;
            return;
        };
        let timeout = task.options.timeout();
        let stored_log_bytes = if attempt.number > 1 {
            self.store.log_bytes(&run.id).await.unwrap_or(0)
        } else {
            0
        };
        let host: Arc<dyn AttemptHost> = self.clone();
        match self
            .supervisor
            .run(attempt, host, timeout, stored_log_bytes)
            .await
        {
            // Killed by a cancel (already recorded) or by the runtime
            // stopping (recovery relaunches it).
            AttemptExit::Reported | AttemptExit::Canceled => {}
            AttemptExit::Failed(error) => self.report_or_log(attempt, error).await,
        }
    }

    async fn report_or_log(&self, attempt: &Arc<Attempt>, error: String) {
        if let Err(e) = self.report(attempt, Err(error), Reporter::Runtime).await {
            tracing::error!(
                "could not record the end of {} attempt {}: {e}",
                attempt.run.id,
                attempt.number
            );
        }
    }

    /// Commits an attempt's end, trying again for as long as the store
    /// refuses it for now (a full disk) and the runtime lives. `false` when
    /// the attempt had already ended (a cancel won).
    async fn commit(&self, end: AttemptEnd) -> Result<bool, StoreError> {
        let mut wait = Duration::from_millis(50);
        let mut held = false;
        loop {
            if self.lease.fenced().is_some() {
                // The fenced incarnation's reports are never taken: the
                // attempt is closed as interrupted and runs again.
                tracing::warn!(
                    "the end of {} attempt {} is dropped: this node fenced itself, and the attempt runs again",
                    end.run_id,
                    end.attempt
                );
                return Ok(false);
            }
            match self.store.finish_attempt(end.clone()).await {
                Ok(Some(run)) => {
                    if held {
                        tracing::info!(
                            "the end of {} attempt {} is committed now",
                            end.run_id,
                            end.attempt
                        );
                    }
                    if !matches!(end.outcome, weft_store::AttemptOutcome::Completed { .. }) {
                        self.metrics.attempt_failed();
                    }
                    self.moved_on(run, end.attempt);
                    return Ok(true);
                }
                Ok(None) => return Ok(false),
                Err(e) if e.is_transient() && !self.shutdown.is_cancelled() => {
                    if !held {
                        tracing::warn!(
                            "{e}; the end of {} attempt {} is kept and committed once the database takes it",
                            end.run_id,
                            end.attempt
                        );
                        held = true;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = self.shutdown.cancelled() => return Err(e),
                    }
                    wait = (wait * 2).min(COMMIT_RETRY_CAP);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// What follows a committed attempt end: the run ended, or waits for
    /// its retry.
    fn moved_on(&self, run: RunRecord, attempt: u32) {
        if run.status.is_terminal() {
            self.run_ended(run);
            return;
        }
        if let Some(error) = &run.error {
            let wait = run
                .not_before
                .map(|at| (at - Utc::now()).num_milliseconds().max(0) as f64 / 1000.0)
                .unwrap_or_default();
            let what = format!(
                "attempt {attempt} failed, retrying in {wait:.1}s: {}",
                first_line(error)
            );
            self.logs.announce(&run.task_name, &run.id, &what);
        }
        // Pending again in the store: claimed once its backoff is over.
        self.changed();
        self.kick.notify_one();
    }

    /// Stops at once: claims nothing more, kills the running task
    /// processes, and hands their runs back (pending again, the attempts
    /// recorded as interrupted) for this node's next start or another node.
    pub async fn stop(&self) {
        self.slots().close();
        self.shutdown.cancel();
        self.supervisor.stop_standbys().await;
        self.background.close();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.background.wait()).await;
        self.logs.flush().await;
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

    /// Another node ended a run: wake who waits for it here, and count a
    /// child of a parent running here as ended.
    pub(crate) async fn remote_end(&self, run_id: &str, parent_id: Option<&str>) {
        if let Some(parent) = parent_id {
            let here = self.slots().get(parent).is_some();
            if here {
                self.slots().child_changed(parent, -1);
                self.kick.notify_one();
            }
        }
        if self.ends.is_watched(run_id) || self.ended.receiver_count() > 0 {
            match self.store.get_run(run_id).await {
                Ok(Some(run)) if run.status.is_terminal() => {
                    let run = Arc::new(run);
                    self.ends.ended(&run);
                    let _ = self.ended.send(run);
                }
                Ok(_) => {}
                Err(e) => tracing::warn!("could not read {run_id}, which another node ended: {e}"),
            }
        }
    }

    /// Another node canceled runs: kill the attempts here whose runs are
    /// now canceled, then read the rest again.
    pub(crate) async fn remote_cancel(&self) {
        let here = self.slots().attempts();
        for attempt in here {
            if let Ok(Some(run)) = self.store.get_run(&attempt.run.id).await
                && run.status == RunState::Canceled
            {
                attempt.cancel();
            }
        }
        self.resync().await;
    }

    /// Reads again what other nodes may have changed unheard (after the
    /// connection that hears them was lost): open children of the parents
    /// here, and the runs someone here waits for.
    pub(crate) async fn resync(&self) {
        let here = self.slots().run_ids();
        if !here.is_empty()
            && let Ok(open) = self.store.open_children(&here).await
        {
            let mut slots = self.slots();
            for id in &here {
                let n = open.iter().find(|(p, _)| p == id).map_or(0, |(_, n)| *n);
                slots.set_open_children(id, n);
            }
        }
        for id in self.ends.watched_ids() {
            if let Ok(Some(run)) = self.store.get_run(&id).await
                && run.status.is_terminal()
            {
                self.ends.ended(&Arc::new(run));
            }
        }
        self.kick.notify_one();
    }

    /// A heartbeat sent at `sent` got through: the lease holds longer,
    /// here and in the spawner.
    pub(crate) async fn renewed(&self, sent: tokio::time::Instant) {
        let wall = Utc::now() - (tokio::time::Instant::now() - sent);
        match self.lease.renewed(sent, wall) {
            Some(until) => self.supervisor.renew_lease(until).await,
            // Too late: the lease ran out before this heartbeat came back.
            None if self.lease.expired() => self.fence(FenceCause::Expired).await,
            None => {}
        }
    }

    /// Fences this node: it may no longer act on its attempts (its lease
    /// ran out, or the cluster declared it dead). Every task process and
    /// standby it runs is killed, it claims nothing, and it takes no
    /// report until it has rejoined (see `lease`).
    pub(crate) async fn fence(&self, cause: FenceCause) {
        let Some(fence) = self.lease.fence(cause) else {
            return;
        };
        let attempts = {
            let mut slots = self.slots();
            slots.fence();
            slots.attempts()
        };
        for attempt in &attempts {
            attempt.cancel();
        }
        let standbys = self.supervisor.fence().await;
        self.metrics.node_fenced();
        let node = self.store.node().id;
        tracing::error!(
            "{}. It killed its {} task processes{}, claims nothing and takes no report until the database answers; then it rejoins as a new incarnation and its attempts run again",
            fence.describe(&node),
            attempts.len(),
            match standbys {
                0 => String::new(),
                n => format!(" and {n} standbys"),
            }
        );
    }

    /// Rejoins the cluster after a fence, once every process the node ran
    /// is gone: the store closes the attempts of the fenced incarnation as
    /// interrupted (saying what happened on each) and the node serves again
    /// under a new incarnation. `false` while it cannot yet.
    pub(crate) async fn rejoin(&self) -> bool {
        let Some(fence) = self.lease.fenced() else {
            return true;
        };
        let running = self.slots().len();
        if running > 0 {
            tracing::debug!(
                "fenced: waiting for {running} killed attempts to be gone before rejoining"
            );
            return false;
        }
        let node = self.store.node().id;
        let note = format!(
            "interrupted: {}; it killed this attempt's processes, and the attempt runs again without counting against retries",
            fence.describe(&node)
        );
        let runs = match self.store.rejoin(&note).await {
            Ok(runs) => runs,
            // Another process took this node's id meanwhile: say so, it
            // will not pass by itself.
            Err(e @ StoreError::NodeAlive { .. }) => {
                tracing::error!("fenced, and cannot rejoin: {e}");
                return false;
            }
            Err(e) => {
                tracing::debug!("fenced: cannot rejoin yet: {e}");
                return false;
            }
        };
        if !runs.is_empty() {
            self.metrics.attempts_interrupted(runs.len());
        }
        // The new lease comes from a heartbeat sent now, not from the
        // rejoin, which may have waited long for the database: a lease
        // counted from its start could have run out already.
        let sent = tokio::time::Instant::now();
        match self.store.heartbeat(self.config.heartbeat_within()).await {
            Ok(true) => {}
            other => {
                tracing::debug!(
                    "fenced: rejoined, but no heartbeat got through in time ({other:?}); trying again"
                );
                return false;
            }
        }
        let wall = Utc::now() - (tokio::time::Instant::now() - sent);
        let (_, until) = self.lease.unfence(sent, wall);
        self.supervisor.renew_lease(until).await;
        self.supervisor.unfence();
        self.slots().unfence();
        tracing::warn!(
            "node {node} rejoined the cluster as a new incarnation after {:.1} s fenced; {} of its attempts were still its own and run again",
            fence.since.elapsed().as_secs_f64(),
            runs.len()
        );
        self.changed();
        self.resync().await;
        true
    }

    /// The task names from the root down to `run`, read up its parents.
    async fn lineage(&self, run: &RunRecord) -> Result<Vec<String>, RunError> {
        let mut names = vec![run.task_name.clone()];
        let mut parent = run.parent_id.clone();
        // Bounded by the depth limit itself, so a loop of parents (a
        // damaged store) cannot spin here.
        while let Some(id) = parent {
            if names.len() > self.config.max_depth {
                break;
            }
            let Some(up) = self.store.get_run(&id).await? else {
                break;
            };
            names.push(up.task_name);
            parent = up.parent_id;
        }
        names.reverse();
        Ok(names)
    }

    /// Attempts closed as interrupted by this node's rescue of others.
    pub(crate) fn rescued(&self, runs: usize) {
        self.metrics.attempts_interrupted(runs);
        self.kick.notify_one();
    }
}

#[async_trait]
impl AttemptHost for Coordinator {
    fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    async fn start_subtask(
        &self,
        parent: &Attempt,
        start: SubtaskStart,
    ) -> Result<RunRecord, RunError> {
        if !parent.is_running() {
            return Err(RunError::AttemptEnded);
        }
        if !self.lease.holds() {
            return Err(RunError::Fenced);
        }
        let lineage = parent
            .lineage
            .get_or_try_init(|| self.lineage(&parent.run))
            .await?;
        let limit = self.config.max_depth;
        if lineage.len() >= limit {
            let mut chain: Vec<&str> = lineage.iter().map(String::as_str).collect();
            chain.push(&start.task);
            return Err(RunError::TooDeep {
                task: start.task.clone(),
                depth: chain.len(),
                limit,
                chain: abbreviated_chain(&chain),
            });
        }
        let parent = ParentRef {
            run_id: parent.run.id.clone(),
            root_id: parent.run.root_id.clone(),
            attempt: parent.number,
        };
        self.create_run(
            &start.task,
            start.input,
            Some(parent),
            start.idempotency_key,
            start.created_at,
        )
        .await
    }

    async fn wait_for_child(
        &self,
        parent: &Attempt,
        id: &str,
        hold: Duration,
    ) -> Result<RunRecord, RunError> {
        // A task reads its own children's results, not any run's.
        let parent_id = parent.run.id.as_str();
        self.wait_for_end(id, hold, |r| r.parent_id.as_deref() == Some(parent_id))
            .await
            .map_err(|e| match e {
                RunError::UnknownRun(_) => {
                    RunError::UnknownRun(format!("{id} (not a subtask of {parent_id})"))
                }
                other => other,
            })
    }

    /// The first report of an attempt decides its end (see
    /// [`lifecycle::next_state`]); the commit runs on its own task, so a
    /// caller that goes away (a task process timing out its callback) does
    /// not lose it, and it is retried while the store refuses it for now.
    async fn report(
        &self,
        attempt: &Arc<Attempt>,
        result: Result<Json, String>,
        by: Reporter,
    ) -> Result<ReportOutcome, RunError> {
        // Only while the node holds its work: past its lease, another
        // node may have taken the attempt over.
        if !self.lease.holds() {
            self.fence(FenceCause::Expired).await;
            return Ok(ReportOutcome::Fenced);
        }
        if let Err(first) = attempt.claim_report(by) {
            return Ok(ReportOutcome::Late(first));
        }
        let options = self
            .task(&attempt.run.task_name)
            .map(|t| t.options)
            .unwrap_or_default();
        let now = Utc::now();
        let end = AttemptEnd {
            run_id: attempt.run.id.clone(),
            attempt: attempt.number,
            at: now,
            outcome: lifecycle::next_state(&attempt.run, &options, result, now),
        };
        let me = self
            .me
            .upgrade()
            .expect("the coordinator is alive while it reports");
        let commit = self.background.spawn(async move { me.commit(end).await });
        match tokio::time::timeout(COMMIT_HOLD, commit).await {
            Ok(Ok(Ok(true))) => Ok(ReportOutcome::Committed),
            // Canceled while the outcome was on its way: the cancel stands.
            Ok(Ok(Ok(false))) => Ok(ReportOutcome::Late(None)),
            Ok(Ok(Err(e))) if e.is_transient() => Ok(ReportOutcome::Held),
            Ok(Ok(Err(e))) => Err(e.into()),
            Ok(Err(join)) => Err(StoreError::Join(join).into()),
            Err(_) => Ok(ReportOutcome::Held),
        }
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

/// A chain of task names, its middle left out when long.
fn abbreviated_chain(names: &[&str]) -> String {
    if names.len() <= 8 {
        return names.join(" → ");
    }
    format!(
        "{} → … ({} more) … → {}",
        names[..3].join(" → "),
        names.len() - 6,
        names[names.len() - 3..].join(" → ")
    )
}

/// The first line of a message (a traceback's is the summary).
fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or_default()
}

/// Task options Render's cloud refuses: weft runs them (local dev may want
/// a short timeout), but says so, naming the task and the range.
fn cloud_warnings(defs: &[TaskDefinition]) -> Vec<String> {
    const TIMEOUT: std::ops::RangeInclusive<i64> = 30..=86_400;
    let mut warnings = Vec::new();
    for def in defs {
        let Some(options) = &def.options else {
            continue;
        };
        if let Some(t) = options.timeout_seconds
            && !TIMEOUT.contains(&t)
        {
            warnings.push(format!(
                "task {:?} has timeout_seconds {t}: Render's cloud takes {} to {} seconds{}",
                def.name,
                TIMEOUT.start(),
                TIMEOUT.end(),
                if t <= 0 {
                    " (weft runs it with no timeout)"
                } else {
                    " (weft enforces it as given)"
                }
            ));
        }
        if let Some(n) = options.retry.as_ref().and_then(|r| r.max_retries)
            && n < 0
        {
            warnings.push(format!(
                "task {:?} has max_retries {n}: retries cannot be negative (weft runs it with none)",
                def.name
            ));
        }
    }
    warnings
}

fn validate_definitions(defs: &[TaskDefinition]) -> Result<(), RuntimeError> {
    let mut seen = HashSet::new();
    for def in defs {
        if def.name.trim().is_empty() {
            return Err(RuntimeError::Registration(
                "a task was registered with an empty name".into(),
            ));
        }
        if def.name.contains('/') {
            return Err(RuntimeError::Registration(format!(
                "task name {:?} may not contain '/'",
                def.name
            )));
        }
        if !seen.insert(def.name.as_str()) {
            return Err(RuntimeError::Registration(format!(
                "task {:?} was registered twice",
                def.name
            )));
        }
    }
    Ok(())
}

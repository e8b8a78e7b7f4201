//! The coordinator: creates runs, schedules pending ones, supervises each
//! attempt's process, applies retries, timeouts and cancellation, and
//! announces runs that end.
//!
//! Every state change is written to the store before anyone hears of it;
//! the in-memory scheduler only holds what can be rebuilt from the store
//! (`Coordinator::open` does so after a crash).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use weft_protocol::TaskInput;
use weft_protocol::socket::TaskDefinition;
use weft_store::{
    AttemptEnd, CancelOutcome, Creation, NewRun, ParentRef, RunRecord, RunState, Store, StoreError,
    TaskRecord,
};

use crate::attempt::{Attempt, AttemptHost, ReportOutcome, Reporter, SubtaskStart};
pub use crate::error::RunError;
use crate::logs::LogSink;
use crate::supervisor::{AttemptExit, Supervisor};
use crate::{RuntimeConfig, RuntimeError, lifecycle};

/// How long a callback waits for its outcome to be committed before it is
/// answered anyway (the outcome is then held and committed later: a full
/// disk).
const COMMIT_HOLD: Duration = Duration::from_secs(5);
/// How long a pending run waits before another try when the store could
/// not start its attempt.
const START_RETRY: Duration = Duration::from_secs(1);
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
    registering: tokio::sync::Mutex<()>,
    sched: Mutex<Scheduler>,
    kick: Notify,
    /// Every run that ends, for whoever follows them all.
    ended: broadcast::Sender<EndedRun>,
    /// Who waits for which run to end.
    ends: Arc<EndWaiters>,
    shutdown: CancellationToken,
    /// Attempts and the commits of their outcomes.
    background: TaskTracker,
}

/// In-memory scheduling state; rebuilt from the store at start.
#[derive(Default)]
struct Scheduler {
    /// Runs ready to launch, oldest first.
    ready: BTreeSet<(i64, String)>,
    /// Runs waiting out a retry backoff.
    delayed: BTreeSet<(DateTime<Utc>, i64, String)>,
    queued: HashSet<String>,
    /// Attempts being started (slots reserved).
    launching: usize,
    active: HashMap<String, Active>,
    /// Children not yet ended, per parent run.
    open_children: HashMap<String, u32>,
    /// Active attempts that count against the limit: those not waiting on children.
    counted: usize,
}

struct Active {
    attempt: Arc<Attempt>,
    counted: bool,
}

impl Scheduler {
    fn enqueue(&mut self, run: &RunRecord) {
        if !self.queued.insert(run.id.clone()) {
            return;
        }
        match run.not_before {
            Some(at) if at > Utc::now() => {
                self.delayed.insert((at, run.seq, run.id.clone()));
            }
            _ => {
                self.ready.insert((run.seq, run.id.clone()));
            }
        }
    }

    /// A parent waiting on children does not count against the limit:
    /// otherwise parents holding every slot would wait forever on children
    /// that cannot start.
    fn add_open_children(&mut self, parent: &str, delta: i64) {
        let open = self.open_children.get(parent).copied().unwrap_or(0) as i64 + delta;
        if open > 0 {
            self.open_children.insert(parent.to_string(), open as u32);
        } else {
            self.open_children.remove(parent);
        }
        if let Some(active) = self.active.get_mut(parent) {
            let should_count = open <= 0;
            if active.counted != should_count {
                active.counted = should_count;
                if should_count {
                    self.counted += 1;
                } else {
                    self.counted -= 1;
                }
            }
        }
    }
}

impl Coordinator {
    /// Opens the coordinator over a store, recovering what a previous
    /// runtime left: attempts it was running are closed as interrupted and
    /// their runs, with every other pending run, are queued again.
    pub async fn open(
        config: RuntimeConfig,
        store: Arc<dyn Store>,
        shutdown: CancellationToken,
    ) -> Result<Arc<Self>, RuntimeError> {
        let logs = LogSink::start(store.clone(), config.echo_logs);
        let supervisor = Supervisor::new(&config, logs.clone())?;
        let pending = store.recover(Utc::now()).await?;
        let mut sched = Scheduler::default();
        for (parent, open) in store.open_children().await? {
            sched.open_children.insert(parent, open);
        }
        for run in &pending {
            sched.enqueue(run);
        }
        if !pending.is_empty() {
            tracing::info!("recovered {} unfinished task runs", pending.len());
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
            registering: tokio::sync::Mutex::new(()),
            sched: Mutex::new(sched),
            kick: Notify::new(),
            ended,
            ends: Arc::default(),
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

    /// The task output sink.
    pub fn logs(&self) -> &LogSink {
        &self.logs
    }

    /// Subscribes to every run that ends (completed, failed or canceled).
    pub fn subscribe_ended(&self) -> broadcast::Receiver<EndedRun> {
        self.ended.subscribe()
    }

    /// Waits for the ends of these runs only. Register before reading
    /// their state, so an end in between is not missed.
    pub fn watch_ends(&self, runs: impl IntoIterator<Item = String>) -> EndWatch {
        self.ends.watch(runs)
    }

    fn sched(&self) -> std::sync::MutexGuard<'_, Scheduler> {
        // The scheduler's invariants hold between statements; a panic while
        // holding the lock cannot leave it half-changed in a way that matters.
        self.sched.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs the start command in register mode and records its tasks.
    pub async fn register_tasks(&self) -> Result<Vec<TaskRecord>, RuntimeError> {
        let _one_at_a_time = self.registering.lock().await;
        let defs = self
            .supervisor
            .executor()
            .register(&self.config, &self.logs)
            .await?;
        validate_definitions(&defs)?;
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

    fn check_input(&self, input: &Value) -> Result<(), RunError> {
        TaskInput::new(input.clone()).map_err(|e| RunError::BadInput(e.to_string()))?;
        let size = serde_json::to_vec(input).map(|v| v.len()).unwrap_or(0);
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
        input: Value,
        idempotency_key: Option<String>,
    ) -> Result<RunRecord, RunError> {
        self.create_run(task, input, None, idempotency_key, None)
            .await
    }

    async fn create_run(
        &self,
        task: &str,
        input: Value,
        parent: Option<ParentRef>,
        idempotency_key: Option<String>,
        idempotency_created_at: Option<String>,
    ) -> Result<RunRecord, RunError> {
        let task = self
            .task(task)
            .ok_or_else(|| RunError::UnknownTask(task.to_string()))?;
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
            let mut sched = self.sched();
            if let Some(parent_id) = &parent_id {
                sched.add_open_children(parent_id, 1);
            }
            sched.enqueue(&created.run);
            drop(sched);
            self.kick.notify_one();
        }
        Ok(created.run)
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
                    if let Some(active) = self.sched().active.get(run_id) {
                        active.attempt.cancel();
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
        // Registered before reading, so an end between the two is not missed.
        let mut watch = self.watch_ends([id.to_string()]);
        let run = self
            .store
            .get_run(id)
            .await?
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
            self.sched().add_open_children(parent, -1);
        }
        self.logs
            .announce(&run.task_name, &run.id, &ended_summary(&run));
        tracing::debug!(run = %run.id, status = %run.status, "task run ended");
        let run = Arc::new(run);
        self.ends.ended(&run);
        let _ = self.ended.send(run);
        self.kick.notify_one();
    }

    /// Starts the scheduling loop.
    pub fn start_scheduler(self: Arc<Self>) {
        tokio::spawn(async move { self.schedule_loop().await });
    }

    async fn schedule_loop(self: Arc<Self>) {
        loop {
            let (launch, next_wake) = {
                let mut s = self.sched();
                let now = Utc::now();
                while s.delayed.first().is_some_and(|(at, _, _)| *at <= now) {
                    let (_, seq, id) = s.delayed.pop_first().expect("checked");
                    s.ready.insert((seq, id));
                }
                let mut launch = Vec::new();
                while s.counted + s.launching < self.config.max_concurrent {
                    let Some((seq, id)) = s.ready.pop_first() else {
                        break;
                    };
                    s.queued.remove(&id);
                    s.launching += 1;
                    launch.push((seq, id));
                }
                (launch, s.delayed.first().map(|(at, _, _)| *at))
            };
            for (seq, id) in launch {
                let this = self.clone();
                self.background
                    .spawn(async move { this.launch(seq, id).await });
            }
            let wait = next_wake
                .map(|at| (at - Utc::now()).to_std().unwrap_or(Duration::ZERO))
                .unwrap_or(Duration::from_secs(3600));
            tokio::select! {
                _ = self.kick.notified() => {}
                _ = tokio::time::sleep(wait) => {}
                _ = self.shutdown.cancelled() => return,
            }
        }
    }

    async fn launch(self: Arc<Self>, seq: i64, id: String) {
        let started = self.store.start_attempt(&id, Utc::now()).await;
        let attempt = {
            let mut s = self.sched();
            s.launching -= 1;
            match started {
                Ok(Some(run)) => {
                    let attempt = Arc::new(Attempt::new(run, self.shutdown.child_token()));
                    let counted = !s.open_children.contains_key(&id);
                    s.counted += usize::from(counted);
                    s.active.insert(
                        id.clone(),
                        Active {
                            attempt: attempt.clone(),
                            counted,
                        },
                    );
                    Some(attempt)
                }
                Ok(None) => None,
                Err(e) => {
                    // The run stays pending in the store; try again soon
                    // (a full disk is a fault to wait out, not a crash).
                    tracing::warn!(
                        "could not start an attempt of {id}, trying again in {START_RETRY:?}: {e}"
                    );
                    if s.queued.insert(id.clone()) {
                        let at = Utc::now() + START_RETRY;
                        s.delayed.insert((at, seq, id.clone()));
                    }
                    None
                }
            }
        };
        let Some(attempt) = attempt else {
            self.kick.notify_one();
            return;
        };
        self.run_attempt(&attempt).await;
        {
            let mut s = self.sched();
            if let Some(active) = s.active.remove(&id)
                && active.counted
            {
                s.counted -= 1;
            }
        }
        self.kick.notify_one();
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
        let timeout = task
            .options
            .timeout_seconds
            .filter(|t| *t > 0)
            .map(Duration::from_secs);
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
            match self.store.finish_attempt(end.clone()).await {
                Ok(Some(run)) => {
                    if held {
                        tracing::info!(
                            "the end of {} attempt {} is committed now",
                            end.run_id,
                            end.attempt
                        );
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
        self.sched().enqueue(&run);
        self.kick.notify_one();
    }

    /// Stops: kills running task processes and waits for their supervisors.
    pub async fn stop(&self) {
        self.shutdown.cancel();
        self.background.close();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.background.wait()).await;
        self.logs.flush().await;
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

    async fn wait_for_end(&self, id: &str, hold: Duration) -> Result<RunRecord, RunError> {
        self.wait_for_run(id, hold).await
    }

    /// The first report of an attempt decides its end (see
    /// [`lifecycle::next_state`]); the commit runs on its own task, so a
    /// caller that goes away (a task process timing out its callback) does
    /// not lose it, and it is retried while the store refuses it for now.
    async fn report(
        &self,
        attempt: &Arc<Attempt>,
        result: Result<Value, String>,
        by: Reporter,
    ) -> Result<ReportOutcome, RunError> {
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

/// The first line of a message (a traceback's is the summary).
fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or_default()
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

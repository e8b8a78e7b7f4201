//! The coordinator: creates runs, schedules pending ones, supervises each
//! attempt's process, applies retries, timeouts and cancellation, and
//! announces runs that end.
//!
//! Every state change is written to the store before anyone hears of it;
//! the in-memory scheduler only holds what can be rebuilt from the store
//! (`Coordinator::open` does so after a crash).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use weft_protocol::TaskInput;
use weft_protocol::api::TaskRunStatus;
use weft_protocol::socket::{Mode, TaskDefinition};
use weft_store::{
    AttemptEnd, CancelOutcome, Creation, NewRun, ParentRef, RunRecord, Store, StoreError,
    TaskRecord,
};

use crate::executor::{Executor, ExitReason};
use crate::logs::LogSink;
use crate::{RuntimeConfig, RuntimeError, lifecycle, task_socket};

/// Why a request to start or change a run was refused.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("task not found: {0}")]
    UnknownTask(String),
    #[error("task run not found: {0}")]
    UnknownRun(String),
    #[error("task run {id} has already ended ({status})")]
    AlreadyEnded { id: String, status: TaskRunStatus },
    #[error("{0}")]
    BadInput(String),
    #[error("{what} is {size} bytes, over the limit of {limit} bytes")]
    TooLarge {
        what: &'static str,
        size: usize,
        limit: usize,
    },
    #[error("the attempt that asked has already ended")]
    AttemptEnded,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A run that just ended, as announced to waiters.
pub type EndedRun = Arc<RunRecord>;

/// The coordinator. Shared as `Arc<Coordinator>`.
pub struct Coordinator {
    config: RuntimeConfig,
    store: Arc<dyn Store>,
    executor: Executor,
    logs: LogSink,
    tasks: RwLock<HashMap<String, TaskRecord>>,
    registering: tokio::sync::Mutex<()>,
    sched: Mutex<Scheduler>,
    kick: Notify,
    ended: broadcast::Sender<EndedRun>,
    shutdown: CancellationToken,
    supervisors: TaskTracker,
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
    cancel: CancellationToken,
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

/// One attempt as its task socket sees it.
pub struct AttemptContext {
    /// The run as it was when the attempt started.
    pub run: RunRecord,
    pub attempt: u32,
    /// Cleared when the attempt ends; a dead attempt starts no subtasks.
    live: AtomicBool,
    reported: Notify,
    reported_flag: AtomicBool,
}

impl AttemptContext {
    /// Whether the attempt is still running.
    pub fn is_live(&self) -> bool {
        self.live.load(Ordering::SeqCst)
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
        let executor = Executor::new(&config)?;
        let logs = LogSink::start(store.clone(), config.echo_logs);
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
        Ok(Arc::new(Self {
            config,
            store,
            executor,
            logs,
            tasks: RwLock::new(tasks),
            registering: tokio::sync::Mutex::new(()),
            sched: Mutex::new(sched),
            kick: Notify::new(),
            ended,
            shutdown,
            supervisors: TaskTracker::new(),
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

    /// Subscribes to runs that end (completed, failed or canceled).
    pub fn subscribe_ended(&self) -> broadcast::Receiver<EndedRun> {
        self.ended.subscribe()
    }

    fn sched(&self) -> std::sync::MutexGuard<'_, Scheduler> {
        // The scheduler's invariants hold between statements; a panic while
        // holding the lock cannot leave it half-changed in a way that matters.
        self.sched.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs the start command in register mode and records its tasks.
    pub async fn register_tasks(&self) -> Result<Vec<TaskRecord>, RuntimeError> {
        let _one_at_a_time = self.registering.lock().await;
        let defs = self.executor.register(&self.config, &self.logs).await?;
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

    /// Starts a subtask of a running attempt (or finds the one its
    /// idempotency key names, or the one an interrupted attempt started).
    pub async fn start_subtask(
        &self,
        parent: &AttemptContext,
        task: &str,
        input: Value,
        idempotency_key: Option<String>,
        created_at: Option<String>,
    ) -> Result<RunRecord, RunError> {
        if !parent.is_live() {
            return Err(RunError::AttemptEnded);
        }
        let parent = ParentRef {
            run_id: parent.run.id.clone(),
            root_id: parent.run.root_id.clone(),
            attempt: parent.attempt,
        };
        self.create_run(task, input, Some(parent), idempotency_key, created_at)
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
                        active.cancel.cancel();
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
    pub async fn wait_for_end(&self, id: &str, hold: Duration) -> Result<RunRecord, RunError> {
        // Subscribe before reading, so an end between the two is not missed.
        let mut ended = self.subscribe_ended();
        let deadline = tokio::time::Instant::now() + hold;
        loop {
            let run = self
                .store
                .get_run(id)
                .await?
                .ok_or_else(|| RunError::UnknownRun(id.to_string()))?;
            if run.status.is_terminal() {
                return Ok(run);
            }
            loop {
                tokio::select! {
                    msg = ended.recv() => match msg {
                        Ok(run) if run.id == id => return Ok((*run).clone()),
                        Ok(_) => continue,
                        // Missed announcements: read the store again.
                        Err(broadcast::error::RecvError::Lagged(_)) => break,
                        Err(broadcast::error::RecvError::Closed) => return Ok(run),
                    },
                    _ = tokio::time::sleep_until(deadline) => return Ok(run),
                }
            }
        }
    }

    fn run_ended(&self, run: RunRecord) {
        if let Some(parent) = &run.parent_id {
            self.sched().add_open_children(parent, -1);
        }
        self.logs
            .announce(&run.task_name, &run.id, &ended_summary(&run));
        tracing::debug!(run = %run.id, status = %run.status, "task run ended");
        let _ = self.ended.send(Arc::new(run));
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
                    let Some((_, id)) = s.ready.pop_first() else {
                        break;
                    };
                    s.queued.remove(&id);
                    s.launching += 1;
                    launch.push(id);
                }
                (launch, s.delayed.first().map(|(at, _, _)| *at))
            };
            for id in launch {
                let this = self.clone();
                self.supervisors.spawn(async move { this.launch(id).await });
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

    async fn launch(self: Arc<Self>, id: String) {
        let started = self.store.start_attempt(&id, Utc::now()).await;
        let cancel = self.shutdown.child_token();
        let run = {
            let mut s = self.sched();
            s.launching -= 1;
            match started {
                Ok(Some(run)) => {
                    let counted = !s.open_children.contains_key(&id);
                    s.counted += usize::from(counted);
                    s.active.insert(
                        id.clone(),
                        Active {
                            cancel: cancel.clone(),
                            counted,
                        },
                    );
                    Some(run)
                }
                Ok(None) => None,
                Err(e) => {
                    tracing::error!("could not start an attempt of {id}: {e}");
                    None
                }
            }
        };
        let Some(run) = run else {
            self.kick.notify_one();
            return;
        };
        self.supervise(run, cancel).await;
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

    /// Runs one attempt's process to its end.
    async fn supervise(self: &Arc<Self>, run: RunRecord, cancel: CancellationToken) {
        let attempt = run.current_attempt().map_or(1, |a| a.number);
        let ctx = Arc::new(AttemptContext {
            run,
            attempt,
            live: AtomicBool::new(true),
            reported: Notify::new(),
            reported_flag: AtomicBool::new(false),
        });
        let run = &ctx.run;
        let Some(task) = self.task(&run.task_name) else {
            let error = format!(
                "task {} is no longer registered by the start command",
                run.task_name
            );
            self.report(&ctx, Err(error)).await.ok();
            return;
        };
        let socket_path = self.executor.socket_path(&format!("{}-{attempt}", run.id));
        let server = match task_socket::serve_attempt(&socket_path, self.clone(), ctx.clone()) {
            Ok(server) => server,
            Err(e) => {
                self.report(
                    &ctx,
                    Err(format!(
                        "could not open the task socket {}: {e}",
                        socket_path.display()
                    )),
                )
                .await
                .ok();
                return;
            }
        };
        let label = crate::logs::Source {
            run_id: run.id.clone(),
            task_name: run.task_name.clone(),
            attempt,
        };
        let timeout = task
            .options
            .timeout_seconds
            .filter(|t| *t > 0)
            .map(Duration::from_secs);
        let exit = self
            .executor
            .run_process(
                Mode::Run,
                &socket_path,
                &self.logs,
                label,
                timeout,
                &cancel,
                &ctx.reported,
                self.config.exit_grace,
            )
            .await;
        ctx.live.store(false, Ordering::SeqCst);
        server.abort();
        let _ = std::fs::remove_file(&socket_path);
        if ctx.reported_flag.load(Ordering::SeqCst) {
            return;
        }
        let error = match exit {
            ExitReason::Reported | ExitReason::Canceled => return,
            ExitReason::Shutdown => return, // recovery relaunches it
            ExitReason::SpawnFailed(e) => format!(
                "could not start the start command {:?}: {e}",
                self.config.start_command
            ),
            ExitReason::TimedOut(t) => format!(
                "timed out after {} s (timeout_seconds); the task's processes were killed",
                t.as_secs()
            ),
            ExitReason::Exited(status) => {
                format!("the task process exited ({status}) before reporting a result")
            }
        };
        if let Err(e) = self.report(&ctx, Err(error)).await {
            tracing::error!(
                "could not record the end of {} attempt {attempt}: {e}",
                ctx.run.id
            );
        }
    }

    /// Records an attempt's outcome and moves its run on. Returns `false`
    /// when the attempt had already ended (a race lost to a timeout or a
    /// cancel, or a second callback).
    pub(crate) async fn report(
        &self,
        ctx: &AttemptContext,
        result: Result<Value, String>,
    ) -> Result<bool, StoreError> {
        let options = self
            .task(&ctx.run.task_name)
            .map(|t| t.options)
            .unwrap_or_default();
        let now = Utc::now();
        let outcome = lifecycle::next_state(&ctx.run, &options, result, now);
        let updated = self
            .store
            .finish_attempt(AttemptEnd {
                run_id: ctx.run.id.clone(),
                attempt: ctx.attempt,
                at: now,
                outcome,
            })
            .await?;
        let Some(run) = updated else { return Ok(false) };
        ctx.reported_flag.store(true, Ordering::SeqCst);
        ctx.reported.notify_one();
        if run.status.is_terminal() {
            self.run_ended(run);
        } else {
            if let Some(error) = &run.error {
                let wait = run
                    .not_before
                    .map(|at| (at - now).num_milliseconds().max(0) as f64 / 1000.0)
                    .unwrap_or_default();
                let what = format!(
                    "attempt {} failed, retrying in {wait:.1}s: {}",
                    ctx.attempt,
                    first_line(error)
                );
                self.logs.announce(&run.task_name, &run.id, &what);
            }
            self.sched().enqueue(&run);
            self.kick.notify_one();
        }
        Ok(true)
    }

    /// Stops: kills running task processes and waits for their supervisors.
    pub async fn stop(&self) {
        self.shutdown.cancel();
        self.supervisors.close();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.supervisors.wait()).await;
        self.logs.flush().await;
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
        TaskRunStatus::Failed => format!(
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

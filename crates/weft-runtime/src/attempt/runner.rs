//! The runner: the mechanics of one attempt. It opens the attempt's
//! task socket, starts its process with the executor, and waits for the
//! process to report, exit, time out or be killed; it decides nothing about
//! the run, which is the coordinator's part.
//!
//! **Standbys.** While runs wait for a slot (a fan-out wider than
//! `--max-concurrent`), the runner starts task processes ahead of
//! their attempts, up to one per slot: each on its own socket, in its own
//! cgroup, with its own environment, exactly as an attempt's process is
//! started, and its `GET /input` waits until an attempt is bound to it.
//! When a slot frees, the next attempt takes a standby instead of waiting
//! for a process to start: starting one (fork, exec, the program's own
//! start-up) is then done while other attempts run, on CPU that was idle
//! between them. Each standby runs one attempt, as any task process does,
//! and a standby that nothing took within [`STANDBY_IDLE`] is stopped, so
//! an idle runtime keeps none and a program rebuilt or edited between runs
//! is started afresh. A standby holds no slot until it has an attempt.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::attempt::task_socket;
use crate::attempt::task_socket::{ServedSocket, SocketAttempt};
use crate::attempt::{Attempt, AttemptHost};
use crate::logs::{LogBudget, LogSink, Source};
use crate::process::cgroup::{Limits, Usage};
use crate::process::executor::{Bounds, Executor, ProcessEnd, TaskProcess};
use crate::{Plans, RuntimeConfig, RuntimeError};
use weft_protocol::plan::{Plan, megabytes_text};

/// How long an attempt waits for the standby started for it (traces) to
/// be ready, at most.
const STANDBY_WAIT: Duration = Duration::from_secs(2);

/// How long a standby waits for an attempt before it is stopped.
pub const STANDBY_IDLE: Duration = Duration::from_secs(1);

/// How long no standby is started after one exited before it had an
/// attempt (an app that fails at start would otherwise be started over
/// and over for nothing; its attempts start as usual and say why).
const STANDBY_PAUSE: Duration = Duration::from_secs(10);

/// Runs attempts' processes. One per runtime.
pub struct Runner {
    executor: Executor,
    logs: LogSink,
    exit_grace: Duration,
    max_log_bytes: u64,
    routes: task_socket::AttemptRoutes,
    /// Task processes started ahead of their attempts, oldest first.
    standbys: Mutex<VecDeque<Standby>>,
    /// Standbys being started.
    starting: AtomicUsize,
    /// Traces: the attempts whose standbys are starting, and a bell rung
    /// as each is ready, so an attempt claimed meanwhile waits for its own.
    starting_for: Mutex<std::collections::HashSet<(String, u32)>>,
    ready: tokio::sync::Notify,
    /// Names standby sockets.
    next_standby: AtomicU64,
    /// No standby is started before this (see [`STANDBY_PAUSE`]).
    paused_until: Mutex<Option<Instant>>,
    /// A task stops idle standbys.
    keeper: AtomicBool,
    /// Attempts that ran on a standby.
    standby_attempts: AtomicU64,
    /// The node fenced itself: no standby is started until it rejoins.
    fenced: AtomicBool,
    /// What plans do to attempts.
    plans: Plans,
    /// Traces are exported: a standby is started for a named run's next
    /// attempt, with its `TRACEPARENT`, and runs only that attempt.
    traced: bool,
}

/// The attempt a standby is started for, when traces are exported: its
/// process's environment holds the attempt's span (see `traces`).
pub(crate) struct Prepared {
    pub run_id: String,
    pub attempt: u32,
    pub traceparent: String,
}

/// A task process started ahead of its attempt, waiting on its socket.
struct Standby {
    socket: ServedSocket,
    binding: Arc<SocketAttempt>,
    process: TaskProcess,
    started: Instant,
    /// The run and attempt it was started for (traces only).
    prepared_for: Option<(String, u32)>,
}

impl Standby {
    /// Stops its process and closes its socket.
    async fn stop(self) {
        drop(self.socket);
        self.process.discard().await;
    }
}

/// How an attempt ended, for the coordinator: reported, canceled, or
/// failed with the message the run records (made from the executor's
/// [`ProcessEnd`]).
#[derive(Debug)]
pub enum AttemptEnd {
    /// It reported (or another report came first, a timeout's say).
    Reported,
    /// It was killed because its run was canceled or the runtime stops.
    Canceled,
    /// It failed without reporting: this is why.
    Failed(String),
}

impl Runner {
    /// Prepares the private socket directory and the executor.
    pub fn new(config: &RuntimeConfig, logs: LogSink) -> Result<Self, RuntimeError> {
        Ok(Self {
            executor: Executor::new(config)?,
            logs,
            exit_grace: config.exit_grace,
            max_log_bytes: config.max_log_bytes,
            routes: task_socket::AttemptRoutes::new(config.max_payload_bytes),
            standbys: Mutex::default(),
            starting: AtomicUsize::new(0),
            starting_for: Mutex::default(),
            ready: tokio::sync::Notify::new(),
            next_standby: AtomicU64::new(1),
            paused_until: Mutex::default(),
            keeper: AtomicBool::new(false),
            standby_attempts: AtomicU64::new(0),
            fenced: AtomicBool::new(false),
            plans: config.plans,
            traced: false,
        })
    }

    /// Standbys for named attempts only (see [`Prepared`]).
    pub(crate) fn with_traced_standbys(mut self) -> Self {
        self.traced = true;
        self
    }

    /// Runs the start command in register mode and returns the tasks it
    /// lists.
    pub async fn register(
        &self,
        config: &RuntimeConfig,
    ) -> Result<Vec<weft_protocol::socket::TaskDefinition>, RuntimeError> {
        self.executor.register(config, &self.logs).await
    }

    fn standbys(&self) -> std::sync::MutexGuard<'_, VecDeque<Standby>> {
        self.standbys.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// No standby is started for the next [`STANDBY_PAUSE`].
    fn pause(&self) {
        *self.paused_until.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(Instant::now() + STANDBY_PAUSE);
    }

    fn paused(&self) -> bool {
        self.paused_until
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|until| Instant::now() < until)
    }

    /// Attempts that ran on a standby so far.
    pub fn standby_attempts(&self) -> u64 {
        self.standby_attempts.load(Ordering::Relaxed)
    }

    /// The node's lease holds until `until`: so does the spawner's (or the
    /// pre-fork server's), which kills every task process it started
    /// if the lease runs out unrenewed.
    pub async fn renew_lease(&self, until: tokio::time::Instant) {
        self.executor.renew_lease(until).await;
    }

    /// The node fenced itself: stops every standby and starts none until
    /// [`Runner::unfence`]. Returns how many were stopped.
    pub async fn fence(&self) -> usize {
        self.fenced.store(true, Ordering::Release);
        self.stop_standbys().await
    }

    /// The node rejoined: standbys may start again.
    pub fn unfence(&self) {
        self.fenced.store(false, Ordering::Release);
    }

    /// Runs `attempt` until its process is gone. `stored_log_bytes` is what
    /// earlier attempts of the run have stored already.
    pub async fn run(
        &self,
        attempt: &Arc<Attempt>,
        host: Arc<dyn AttemptHost>,
        timeout: Option<Duration>,
        plan: Plan,
        stored_log_bytes: u64,
    ) -> (AttemptEnd, Option<Usage>) {
        let bounds = Bounds {
            timeout,
            exit_grace: self.exit_grace,
            limits: (self.plans == Plans::Enforce).then_some(Limits {
                memory_bytes: Some(plan.memory_bytes),
                cpu_millis: Some(plan.cpu_millis),
            }),
        };
        // Canceled before it started (the node fenced itself, the run was
        // canceled): no process at all.
        if attempt.cancellation().is_cancelled() {
            attempt.close();
            return (AttemptEnd::Canceled, None);
        }
        let source = Source {
            run_id: attempt.run.id.clone(),
            task_name: attempt.run.task_name.clone(),
            attempt: attempt.number,
            budget: LogBudget::new(self.max_log_bytes, stored_log_bytes),
        };
        if let Some(mut standby) = self.take_standby(attempt).await {
            standby.binding.bind(attempt.clone());
            self.standby_attempts.fetch_add(1, Ordering::Relaxed);
            // What it wrote while it waited is this attempt's too.
            standby.process.capture(&self.logs, Some(source));
            let started = tokio::time::Instant::now();
            let (exit, usage) =
                Executor::supervise(attempt, standby.process, started, bounds).await;
            attempt.close();
            drop(standby.socket);
            return (self.end(attempt, exit, usage, plan), usage);
        }
        let socket_path = self.executor.socket_path(&attempt.socket_name());
        let binding = SocketAttempt::bound(attempt.clone());
        let socket = match self.routes.serve(&socket_path, host, binding) {
            Ok(socket) => socket,
            Err(e) => {
                attempt.close();
                let error = format!(
                    "could not open the task socket {}: {e}",
                    socket_path.display()
                );
                return (AttemptEnd::Failed(error), None);
            }
        };
        let (exit, usage) = self
            .executor
            .run_attempt(attempt, &socket_path, &self.logs, source, bounds)
            .await;
        attempt.close();
        drop(socket);
        (self.end(attempt, exit, usage, plan), usage)
    }

    fn end(
        &self,
        attempt: &Attempt,
        exit: ProcessEnd,
        usage: Option<Usage>,
        plan: Plan,
    ) -> AttemptEnd {
        let peak = usage.and_then(|u| u.peak_memory_bytes);
        if self.plans == Plans::Warn
            && let Some(peak) = peak.filter(|p| *p > plan.memory_bytes)
        {
            let (trace_id, span_id) = crate::traces::log_ids(&attempt.run, Some(attempt.number));
            tracing::warn!(
                run = %attempt.run.id,
                trace_id,
                span_id,
                "run {} ({}, attempt {}) reached {} of memory: on Render, plan {} ({}) would have killed it",
                attempt.run.id,
                attempt.run.task_name,
                attempt.number,
                megabytes_text(peak),
                plan.name,
                plan.memory_text(),
            );
        }
        if attempt.was_reported() {
            return AttemptEnd::Reported;
        }
        let killed_for_memory = self.plans == Plans::Enforce && usage.is_some_and(|u| u.oom_killed);
        match exit {
            ProcessEnd::Exited(status) if killed_for_memory => AttemptEnd::Failed(format!(
                "exceeded the memory of plan {} ({}): the kernel killed the task's process ({status}) when its processes reached {}; give the task a larger plan, or run weft with --plans warn to measure it without limits",
                plan.name,
                plan.memory_text(),
                peak.map_or_else(|| plan.memory_text(), megabytes_text),
            )),
            ProcessEnd::Reported => AttemptEnd::Reported,
            ProcessEnd::Canceled => AttemptEnd::Canceled,
            ProcessEnd::Lost(e) => AttemptEnd::Failed(format!(
                "the task process ended before reporting a result: {e}"
            )),
            ProcessEnd::SpawnFailed(e) => AttemptEnd::Failed(format!(
                "could not start the start command {}: {e}",
                shell_words::join(self.executor.start_command())
            )),
            ProcessEnd::TimedOut(t) => AttemptEnd::Failed(format!(
                "timed out after {} s (timeout_seconds); the task's processes were killed",
                t.as_secs()
            )),
            ProcessEnd::Exited(status) => AttemptEnd::Failed(format!(
                "the task process exited ({status}) before reporting a result"
            )),
        }
    }

    /// The oldest standby still alive. One that exited while it waited is
    /// stopped, and standbys pause (see [`STANDBY_PAUSE`]).
    async fn take_standby(&self, attempt: &Attempt) -> Option<Standby> {
        loop {
            let mut standby = if self.traced {
                self.take_prepared(attempt).await?
            } else {
                self.standbys().pop_front()?
            };
            if !standby.process.has_exited() {
                return Some(standby);
            }
            tracing::info!(
                "a task process started ahead of its attempt exited before it had one; \
                 attempts start their processes when they run for the next {} s",
                STANDBY_PAUSE.as_secs()
            );
            self.pause();
            standby.stop().await;
        }
    }

    /// Starts standbys until `target` are ready or starting (none while
    /// paused), then keeps them until none is left: those idle past
    /// [`STANDBY_IDLE`] are stopped, and all of them once `shutdown` fires.
    pub async fn keep_standbys(
        &self,
        target: usize,
        host: &Arc<dyn AttemptHost>,
        shutdown: &CancellationToken,
        prepared: Vec<Prepared>,
    ) {
        // One caller at a time keeps them; others only start more.
        if !self.start_standbys(target, host, prepared).await || !self.claim_keeper() {
            return;
        }
        loop {
            tokio::select! {
                _ = tokio::time::sleep(STANDBY_IDLE / 4) => {}
                _ = shutdown.cancelled() => break,
            }
            if !self.stop_idle().await {
                return;
            }
        }
        self.stop_standbys().await;
    }

    /// The standby started for this very attempt (its process's
    /// TRACEPARENT is this attempt's span), waiting for it while it is
    /// still starting: claimed the moment it was prepared, the attempt
    /// would otherwise start a process of its own and leave it idle.
    async fn take_prepared(&self, attempt: &Attempt) -> Option<Standby> {
        let key = (attempt.run.id.clone(), attempt.number);
        let deadline = tokio::time::Instant::now() + STANDBY_WAIT;
        loop {
            let ready = self.ready.notified();
            {
                let mut standbys = self.standbys();
                if let Some(at) = standbys
                    .iter()
                    .position(|s| s.prepared_for.as_ref() == Some(&key))
                {
                    return standbys.remove(at);
                }
            }
            let starting = self
                .starting_for
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(&key);
            if !starting || tokio::time::timeout_at(deadline, ready).await.is_err() {
                return None;
            }
        }
    }

    /// The first of `prepared` with no standby ready or starting, marked
    /// as starting (checked and marked under one lock: callers that read
    /// the same pending runs at once start one standby for each, not two).
    fn next_unprepared(&self, prepared: &mut VecDeque<Prepared>) -> Option<Prepared> {
        let mut starting = self.starting_for.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(p) = prepared.pop_front() {
            let key = (p.run_id.clone(), p.attempt);
            let ready = self
                .standbys()
                .iter()
                .any(|s| s.prepared_for.as_ref() == Some(&key));
            if !ready && starting.insert(key) {
                return Some(p);
            }
        }
        None
    }

    /// How many more standbys `target` has room for now.
    pub(crate) fn standby_room(&self, target: usize) -> usize {
        if self.paused() || self.fenced.load(Ordering::Acquire) {
            return 0;
        }
        target.saturating_sub(self.standbys().len() + self.starting.load(Ordering::Relaxed))
    }

    /// Starts standbys up to `target`; returns whether any is waiting.
    async fn start_standbys(
        &self,
        target: usize,
        host: &Arc<dyn AttemptHost>,
        prepared: Vec<Prepared>,
    ) -> bool {
        // Traced: one for each named attempt that has none yet, in order.
        let mut prepared: VecDeque<Prepared> = prepared.into();
        loop {
            let next = if self.traced {
                match self.next_unprepared(&mut prepared) {
                    Some(p) => Some(p),
                    None => return !self.standbys().is_empty(),
                }
            } else {
                None
            };
            {
                let standbys = self.standbys();
                if self.paused()
                    || self.fenced.load(Ordering::Acquire)
                    || standbys.len() + self.starting.load(Ordering::Relaxed) >= target
                {
                    let any = !standbys.is_empty();
                    drop(standbys);
                    // Not started after all: nobody should wait for it.
                    if let Some(p) = &next {
                        self.starting_for
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .remove(&(p.run_id.clone(), p.attempt));
                        self.ready.notify_waiters();
                    }
                    return any;
                }
                // Counted under the lock, so two callers do not both start
                // the last one.
                self.starting.fetch_add(1, Ordering::Relaxed);
            }
            let key = next.as_ref().map(|p| (p.run_id.clone(), p.attempt));
            let started = self.start_standby(host.clone(), next).await;
            self.starting.fetch_sub(1, Ordering::Relaxed);
            let done = || {
                if let Some(key) = &key {
                    self.starting_for
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(key);
                    self.ready.notify_waiters();
                }
            };
            match started {
                Ok(standby) => {
                    self.standbys().push_back(standby);
                    done();
                }
                Err(e) => {
                    done();
                    tracing::debug!("no standby: {e}");
                    self.pause();
                    return !self.standbys().is_empty();
                }
            }
        }
    }

    async fn start_standby(
        &self,
        host: Arc<dyn AttemptHost>,
        prepared: Option<Prepared>,
    ) -> std::io::Result<Standby> {
        let n = self.next_standby.fetch_add(1, Ordering::Relaxed);
        let path = self.executor.socket_path(&format!("standby-{n}"));
        let binding = Arc::new(SocketAttempt::default());
        let socket = self.routes.serve(&path, host, binding.clone())?;
        let trace = prepared.as_ref().map(|p| p.traceparent.as_str());
        match self
            .executor
            .start_process(socket.path(), trace, &self.logs)
            .await
        {
            // Fenced while it started: stopped at once.
            Ok(process) if self.fenced.load(Ordering::Acquire) => {
                drop(socket);
                process.discard().await;
                Err(std::io::Error::other("the node fenced itself"))
            }
            Ok(process) => Ok(Standby {
                socket,
                binding,
                process,
                started: Instant::now(),
                prepared_for: prepared.map(|p| (p.run_id, p.attempt)),
            }),
            Err(e) => Err(e),
        }
    }

    /// Claims the job of stopping idle standbys; `false` if a task has it.
    fn claim_keeper(&self) -> bool {
        !self.keeper.swap(true, Ordering::AcqRel)
    }

    /// Stops the standbys that waited [`STANDBY_IDLE`] for an attempt;
    /// returns whether any is left to watch (else the keeper's job ends).
    async fn stop_idle(&self) -> bool {
        let idle: VecDeque<Standby> = {
            let mut standbys = self.standbys();
            let (idle, fresh) = std::mem::take(&mut *standbys)
                .into_iter()
                .partition(|s| s.started.elapsed() >= STANDBY_IDLE);
            *standbys = fresh;
            idle
        };
        for standby in idle {
            standby.stop().await;
        }
        let more = !self.standbys().is_empty() || self.starting.load(Ordering::Relaxed) > 0;
        if !more {
            self.keeper.store(false, Ordering::Release);
            // A standby added just now would find no keeper: take the job back.
            if !self.standbys().is_empty() && self.claim_keeper() {
                return true;
            }
        }
        more
    }

    /// Stops every standby (the runtime stops, or the node fenced
    /// itself); returns how many.
    pub async fn stop_standbys(&self) -> usize {
        let all = std::mem::take(&mut *self.standbys());
        let n = all.len();
        for standby in all {
            standby.stop().await;
        }
        n
    }
}

//! Scheduling: claiming pending runs for this node's free slots,
//! starting task processes ahead of them (standbys), and running each
//! claimed run's attempt to its end.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use weft_protocol::plan::Plan;
use weft_store::{MemoryLimit, RunRecord};

use super::Coordinator;
use crate::attempt::runner::{AttemptEnd, Prepared};
use crate::attempt::{Attempt, AttemptHost, Reporter};

/// How long the scheduler waits before claiming again when the store could
/// not be asked (a full disk, a lost connection).
const CLAIM_RETRY: Duration = Duration::from_secs(1);
/// How often a node sharing its store claims even when nothing woke it
/// (a notification lost with a connection): a safety net, not the mechanism.
const FALLBACK_POLL: Duration = Duration::from_secs(5);
/// How often what ended attempts used is written.
const USAGE_EVERY: Duration = Duration::from_millis(500);

impl Coordinator {
    /// Starts the scheduling loop.
    pub(crate) fn start_scheduler(self: Arc<Self>) {
        let this = self.clone();
        tokio::spawn(async move { this.usage_loop().await });
        tokio::spawn(async move { self.schedule_loop().await });
    }

    /// Writes what ended attempts used, in batches: figures to show, not
    /// state to keep, so one transaction every [`USAGE_EVERY`] instead of
    /// one per attempt (a wide fan-out starts hundreds a second).
    async fn usage_loop(self: Arc<Self>) {
        loop {
            let stop = tokio::select! {
                _ = tokio::time::sleep(USAGE_EVERY) => false,
                _ = self.shutdown.cancelled() => true,
            };
            let used = std::mem::take(&mut *self.used.lock().unwrap_or_else(|p| p.into_inner()));
            if !used.is_empty()
                && let Err(e) = self.store.record_usage(used).await
            {
                // A store that cannot take them now loses only the figures.
                tracing::debug!("could not record what attempts used: {e}");
            }
            if stop {
                return;
            }
        }
    }

    /// Claims pending runs for the free slots, whenever something may have
    /// changed: a run created or ended, a slot freed, another node's news,
    /// or a retry's backoff running out.
    pub(super) async fn schedule_loop(self: Arc<Self>) {
        let shared = self.store.events().is_some();
        loop {
            let free = self.slots().free(self.config.max_concurrent);
            let mut wait = if shared {
                FALLBACK_POLL
            } else {
                Duration::from_secs(3600)
            };
            if free > 0 {
                let memory = self.memory_limit();
                match self
                    .store
                    .claim_within(free as u32, memory.as_ref(), Utc::now())
                    .await
                {
                    Ok(claimed) => {
                        // Memory full: a due run waits for an attempt to
                        // end, which wakes us, as a slot freeing does.
                        let filled = claimed.runs.len() == free
                            || (memory.is_some()
                                && claimed.next_due.is_some_and(|due| due <= Utc::now()));
                        // Runs wait for a slot: start their processes ahead.
                        if claimed.next_due.is_some_and(|due| due <= Utc::now()) {
                            self.start_standbys();
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
    /// per slot at most, and stops them once idle (see [`runner`]).
    pub(super) fn start_standbys(self: &Arc<Self>) {
        if !self.config.standby {
            return;
        }
        let this = self.clone();
        self.background.spawn(async move {
            let host: Arc<dyn AttemptHost> = this.clone();
            let target = this.config.max_concurrent;
            let prepared = this.prepared_standbys(target).await;
            this.runner
                .keep_standbys(target, &host, &this.shutdown, prepared)
                .await;
        });
    }

    /// With traces, the attempts standbys are started for: the next
    /// attempts of the runs that will be claimed next (the oldest pending),
    /// each process with its attempt's `TRACEPARENT`. A run another node
    /// takes leaves its standby idle, to be stopped.
    async fn prepared_standbys(&self, target: usize) -> Vec<Prepared> {
        let Some(traces) = &self.traces else {
            return Vec::new();
        };
        // Only when a standby is wanted: this runs as runs wait, once a claim.
        if self.runner.standby_room(target) == 0 {
            return Vec::new();
        }
        let next = self
            .store
            .next_pending(target as u32)
            .await
            .unwrap_or_default();
        next.into_iter()
            .map(|run| Prepared {
                traceparent: traces.pending_traceparent(&run),
                attempt: run.attempts + 1,
                run_id: run.id,
            })
            .collect()
    }

    /// With `--memory`: what is free of it, and each task's plan's memory
    /// (a plan larger than the whole budget counts as the budget: such a
    /// run starts alone rather than never).
    fn memory_limit(&self) -> Option<MemoryLimit> {
        let budget = self.config.memory?;
        let held = self.slots().memory_held();
        Some(MemoryLimit {
            free_bytes: budget.saturating_sub(held),
            task_bytes: self
                .tasks()
                .into_iter()
                .map(|t| {
                    let plan = Plan::of(t.options.plan.as_deref()).unwrap_or_default();
                    (t.name, plan.memory_bytes.min(budget))
                })
                .collect(),
            default_bytes: Plan::default().memory_bytes.min(budget),
        })
    }

    /// The memory an attempt of this task holds against `--memory`.
    fn plan_memory(&self, task_name: &str) -> u64 {
        let Some(budget) = self.config.memory else {
            return 0;
        };
        let plan = self
            .task(task_name)
            .and_then(|t| Plan::of(t.options.plan.as_deref()).ok())
            .unwrap_or_default();
        plan.memory_bytes.min(budget)
    }

    /// Runs a claimed run's new attempt.
    pub(super) fn launch(self: &Arc<Self>, run: RunRecord) {
        let waited = run
            .attempts
            .iter()
            .rev()
            .nth(1)
            .and_then(|previous| previous.completed_at)
            .unwrap_or(run.created_at);
        let memory = self.plan_memory(&run.task_name);
        let mut attempt = Attempt::new(run, self.shutdown.child_token());
        attempt.traceparent = self
            .traces
            .as_ref()
            .map(|t| t.attempt_traceparent(&attempt.run, attempt.number));
        let attempt = Arc::new(attempt);
        let alive = {
            let mut slots = self.slots();
            // Claimed as the node fenced itself: left to the rejoin (or
            // the cluster's rescue) to close as interrupted.
            if !slots.start(attempt.clone(), memory) {
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
    pub(super) async fn run_attempt(self: &Arc<Self>, attempt: &Arc<Attempt>) {
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
        // An unknown plan was warned about at registration: standard's.
        let plan = Plan::of(task.options.plan.as_deref()).unwrap_or_default();
        let stored_log_bytes = if attempt.number > 1 {
            self.store.log_bytes(&run.id).await.unwrap_or(0)
        } else {
            0
        };
        let host: Arc<dyn AttemptHost> = self.clone();
        let (end, usage) = self
            .runner
            .run(attempt, host, timeout, plan, stored_log_bytes)
            .await;
        if let Some(usage) = usage {
            self.used
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(weft_store::UsageRecord {
                    run_id: run.id.clone(),
                    attempt: attempt.number,
                    usage: weft_store::AttemptUsage {
                        peak_memory_bytes: usage.peak_memory_bytes,
                        cpu_time_ms: usage.cpu_time.map(|t| t.as_millis() as u64),
                    },
                });
        }
        match end {
            // Killed by a cancel (already recorded) or by the runtime
            // stopping (recovery relaunches it).
            AttemptEnd::Reported | AttemptEnd::Canceled => {}
            AttemptEnd::Failed(error) => self.report_or_log(attempt, error).await,
        }
    }

    pub(super) async fn report_or_log(&self, attempt: &Arc<Attempt>, error: String) {
        if let Err(e) = self.report(attempt, Err(error), Reporter::Runtime).await {
            let (trace_id, span_id) = crate::traces::log_ids(&attempt.run, Some(attempt.number));
            tracing::error!(
                run = %attempt.run.id,
                trace_id,
                span_id,
                "could not record the end of {} attempt {}: {e}",
                attempt.run.id,
                attempt.number
            );
        }
    }
}

//! One attempt of a run: one process, from its launch until its outcome is
//! handed to the coordinator.
//!
//! An [`Attempt`] owns its life, so the coordinator, the runner and the
//! task socket agree on it without flags of their own:
//!
//! ```text
//! running ──callback────────────────▶ reported (process then exits)
//!    │ ──process gone (exit, timeout, kill)──▶ closed ──runtime reports──▶ reported
//! ```
//!
//! The first report wins (a callback racing the timeout, say); later ones
//! learn who won. A closed attempt starts no subtasks. What the outcome
//! does to the run is the coordinator's decision; committing it to the
//! store may take a while when the disk is full, and does not hold the
//! attempt's process or its concurrency slot.
//!
//! Beside it: `task_socket`, the Unix-socket API its process calls;
//! `runner`, which starts its process (or takes one started ahead) and
//! waits for its end; `slots`, which attempts hold a slot of
//! `--max-concurrent`.

pub(crate) mod runner;
pub(crate) mod slots;
pub(crate) mod task_socket;

use std::sync::Mutex;

use async_trait::async_trait;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use weft_protocol::payload::Json;
use weft_store::RunRecord;

use crate::RuntimeConfig;
use crate::error::RunError;

/// Who reported an attempt's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reporter {
    /// The task, on its socket.
    Callback,
    /// The runtime: a timeout, an exit without a callback, a task no
    /// longer registered.
    Runtime,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Life {
    Running,
    Reported(Reporter),
    Closed,
}

/// One attempt of a run.
pub struct Attempt {
    /// The run as it was when the attempt started.
    pub run: RunRecord,
    /// 1-based.
    pub number: u32,
    life: Mutex<Life>,
    reported: Notify,
    /// Canceled when the run is canceled or the runtime stops: the
    /// attempt's processes are killed.
    cancel: CancellationToken,
    /// The task names from the root run down to this one, read once when
    /// the attempt first starts a subtask (it bounds nesting).
    pub lineage: tokio::sync::OnceCell<Vec<String>>,
    /// Its span's `traceparent`, when traces are exported: its processes
    /// get it as `TRACEPARENT`.
    pub traceparent: Option<String>,
}

impl Attempt {
    /// A running attempt of `run` (its current attempt).
    pub fn new(run: RunRecord, cancel: CancellationToken) -> Self {
        let number = run.current_attempt().map_or(1, |a| a.number);
        Self {
            run,
            number,
            life: Mutex::new(Life::Running),
            reported: Notify::new(),
            cancel,
            lineage: tokio::sync::OnceCell::new(),
            traceparent: None,
        }
    }

    fn life(&self) -> std::sync::MutexGuard<'_, Life> {
        self.life.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the attempt is still running: it may start subtasks.
    pub fn is_running(&self) -> bool {
        *self.life() == Life::Running
    }

    /// Claims the right to report the outcome. `Err` names who reported
    /// first, or is `None` for a callback that comes after the process is
    /// gone (the runtime reports for a process that left without a word).
    pub fn claim_report(&self, by: Reporter) -> Result<(), Option<Reporter>> {
        let mut life = self.life();
        match *life {
            Life::Running => {}
            Life::Closed if by == Reporter::Runtime => {}
            Life::Closed => return Err(None),
            Life::Reported(first) => return Err(Some(first)),
        }
        *life = Life::Reported(by);
        drop(life);
        // Everyone waiting: the runner (the process may exit now) and
        // the coordinator (the attempt's slot is free).
        self.reported.notify_waiters();
        Ok(())
    }

    /// Whether an outcome was reported.
    pub fn was_reported(&self) -> bool {
        matches!(*self.life(), Life::Reported(_))
    }

    /// Resolves once the outcome is reported (at once if it was).
    pub async fn reported(&self) {
        loop {
            // Registered before the check, so a report in between wakes it.
            let notified = self.reported.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.was_reported() {
                return;
            }
            notified.await;
        }
    }

    /// The attempt's process is gone: nothing more comes from it. Keeps
    /// "reported" if it was.
    pub fn close(&self) {
        let mut life = self.life();
        if *life == Life::Running {
            *life = Life::Closed;
        }
    }

    /// Kills the attempt's processes (cancel, shutdown).
    pub fn cancel(&self) {
        self.cancel.cancel();
    }

    /// The token that, once canceled, kills the attempt's processes.
    pub fn cancellation(&self) -> &CancellationToken {
        &self.cancel
    }

    /// The socket's file name for this attempt.
    pub fn socket_name(&self) -> String {
        format!("{}-{}", self.run.id, self.number)
    }
}

/// A subtask as a task asks for it on its socket.
#[derive(Debug, Clone)]
pub struct SubtaskStart {
    pub task: String,
    pub input: Json,
    pub idempotency_key: Option<String>,
    pub created_at: Option<String>,
}

/// What became of a report.
#[derive(Debug)]
pub enum ReportOutcome {
    /// Committed: the run has moved on.
    Committed,
    /// Accepted, and being committed (the store cannot take it yet: a full
    /// disk). It is not lost while the runtime lives; if the runtime dies
    /// first, the attempt runs again.
    Held,
    /// Another report came first (see [`Attempt::claim_report`]).
    Late(Option<Reporter>),
    /// Not taken: this node fenced itself (it could not renew its lease
    /// on the database) and is killing the attempt's processes; the
    /// attempt runs again.
    Fenced,
}

/// What a task process may ask of the runtime through its socket; the
/// coordinator answers. The task socket depends on this, not on the
/// coordinator, so the two do not import each other.
#[async_trait]
pub trait AttemptHost: Send + Sync + 'static {
    /// The runtime's settings.
    fn config(&self) -> &RuntimeConfig;

    /// Starts a child of `parent` (or finds the one it names, or the one
    /// an earlier attempt started).
    async fn start_subtask(
        &self,
        parent: &Attempt,
        start: SubtaskStart,
    ) -> Result<RunRecord, RunError>;

    /// Waits until `id`, a child of `parent`'s run, ends or `hold` passes;
    /// the run as it is then. A run that is not its child is unknown to it.
    async fn wait_for_child(
        &self,
        parent: &Attempt,
        id: &str,
        hold: std::time::Duration,
    ) -> Result<RunRecord, RunError>;

    /// Reports an attempt's outcome: the JSON array of results, or the
    /// error that failed it.
    async fn report(
        &self,
        attempt: &std::sync::Arc<Attempt>,
        result: Result<Json, String>,
        by: Reporter,
    ) -> Result<ReportOutcome, RunError>;
}

/// Attempt `number` of a running run `id`, for tests.
#[cfg(test)]
pub(crate) fn running(id: &str, number: u32) -> Attempt {
    use weft_store::RunState;
    let now = chrono::Utc::now();
    let run = RunRecord {
        status: RunState::Running,
        started_at: Some(now),
        attempts: vec![weft_store::AttemptRecord {
            node_id: None,
            number,
            status: RunState::Running,
            started_at: now,
            completed_at: None,
            error: None,
            output: None,
            interrupted: false,
            usage: Default::default(),
        }],
        ..RunRecord::new(id, "t", serde_json::json!([]), now)
    };
    Attempt::new(run, CancellationToken::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt() -> Attempt {
        running("trn-1", 3)
    }

    #[test]
    fn the_first_report_wins_and_later_ones_learn_who_won() {
        let a = attempt();
        assert_eq!(a.number, 3);
        assert!(a.is_running());
        assert_eq!(a.claim_report(Reporter::Callback), Ok(()));
        assert!(!a.is_running(), "a reported attempt starts no subtasks");
        assert_eq!(
            a.claim_report(Reporter::Runtime),
            Err(Some(Reporter::Callback))
        );
        a.close();
        assert!(a.was_reported(), "closing keeps the report");
    }

    #[test]
    fn a_closed_attempt_takes_the_runtimes_report_only() {
        let a = attempt();
        a.close();
        assert!(!a.is_running());
        assert_eq!(a.claim_report(Reporter::Callback), Err(None));
        assert_eq!(a.claim_report(Reporter::Runtime), Ok(()));
        assert_eq!(
            a.claim_report(Reporter::Runtime),
            Err(Some(Reporter::Runtime))
        );
    }

    #[tokio::test]
    async fn every_waiter_sees_the_report() {
        let a = std::sync::Arc::new(attempt());
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let a = a.clone();
                tokio::spawn(async move { a.reported().await })
            })
            .collect();
        tokio::task::yield_now().await;
        a.claim_report(Reporter::Callback).unwrap();
        for w in waiters {
            tokio::time::timeout(std::time::Duration::from_secs(1), w)
                .await
                .expect("each waiter sees the report")
                .unwrap();
        }
    }

    #[tokio::test]
    async fn a_report_before_anyone_waits_is_not_missed() {
        let a = attempt();
        a.claim_report(Reporter::Callback).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(1), a.reported())
            .await
            .expect("the report is seen");
    }
}

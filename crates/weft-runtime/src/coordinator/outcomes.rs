//! What an attempt's end means: the report of its outcome (the first one
//! wins), committed to the store and retried while the store refuses it
//! for now, then the run moved on; and what a task process may ask of the
//! runtime on its socket (`AttemptHost`).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use weft_protocol::payload::Json;
use weft_store::{AttemptEnd, ParentRef, RunRecord, StoreError};

use super::{Coordinator, first_line};
use crate::attempt::{Attempt, AttemptHost, ReportOutcome, Reporter, SubtaskStart};
use crate::lease::FenceCause;
use crate::{RunError, RuntimeConfig, lifecycle};

/// How long a callback waits for its outcome to be committed before it is
/// answered anyway (the outcome is then held and committed later: a full
/// disk).
const COMMIT_HOLD: Duration = Duration::from_secs(5);
/// The longest wait between tries of a commit the store refused for now.
const COMMIT_RETRY_CAP: Duration = Duration::from_secs(2);

impl Coordinator {
    /// Commits an attempt's end, trying again for as long as the store
    /// refuses it for now (a full disk) and the runtime lives. `false` when
    /// the attempt had already ended (a cancel won).
    pub(super) async fn commit(&self, end: AttemptEnd) -> Result<bool, StoreError> {
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
    pub(super) fn moved_on(&self, run: RunRecord, attempt: u32) {
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

    /// The task names from the root down to `run`, read up its parents.
    pub(super) async fn lineage(&self, run: &RunRecord) -> Result<Vec<String>, RunError> {
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
            // A subtask is in its root's trace (the store copies it).
            None,
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

/// A chain of task names, its middle left out when long.
pub(super) fn abbreviated_chain(names: &[&str]) -> String {
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

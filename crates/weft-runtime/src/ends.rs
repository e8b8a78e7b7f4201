//! Who waits for which run to end: the held `get-subtask-result` requests
//! of parents and the clients' event streams.
//!
//! Waiters register by run id, so a run that ends wakes only those waiting
//! for it: with hundreds of held requests and streams, a broadcast to all
//! of them would wake every one for every run that ends (quadratic work).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use weft_store::RunRecord;

/// A run that just ended, as announced to waiters.
pub type EndedRun = Arc<RunRecord>;

/// The waiters of each run: a watch's id and where to tell it.
type ByRun = HashMap<String, Vec<(u64, mpsc::UnboundedSender<EndedRun>)>>;

/// The registry. Shared as `Arc<EndWaiters>`.
#[derive(Default)]
pub struct EndWaiters {
    by_run: Mutex<ByRun>,
    next_id: AtomicU64,
}

impl EndWaiters {
    fn by_run(&self) -> std::sync::MutexGuard<'_, ByRun> {
        self.by_run.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for the ends of `runs`. Register before reading a run's state
    /// from the store, so an end in between is not missed (it may then be
    /// seen twice: once read, once announced).
    pub fn watch(self: &Arc<Self>, runs: impl IntoIterator<Item = String>) -> EndWatch {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        let runs: Vec<String> = runs.into_iter().collect();
        let mut by_run = self.by_run();
        for run in &runs {
            by_run
                .entry(run.clone())
                .or_default()
                .push((id, tx.clone()));
        }
        drop(by_run);
        EndWatch {
            waiters: self.clone(),
            id,
            runs,
            rx,
        }
    }

    /// Tells whoever waits for this run that it ended.
    pub fn ended(&self, run: &EndedRun) {
        let waiting = self.by_run().remove(&run.id);
        for (_, tx) in waiting.into_iter().flatten() {
            let _ = tx.send(run.clone());
        }
    }

    /// Runs someone waits for (the tests check that none is left behind).
    #[cfg(test)]
    pub fn watched_runs(&self) -> usize {
        self.by_run().len()
    }

    /// Whether someone waits for this run.
    pub fn is_watched(&self, run_id: &str) -> bool {
        self.by_run().contains_key(run_id)
    }

    /// The runs someone waits for.
    pub fn watched_ids(&self) -> Vec<String> {
        self.by_run().keys().cloned().collect()
    }
}

/// A registration for the ends of some runs; dropping it unregisters.
pub struct EndWatch {
    waiters: Arc<EndWaiters>,
    id: u64,
    runs: Vec<String>,
    rx: mpsc::UnboundedReceiver<EndedRun>,
}

impl EndWatch {
    /// The next of the watched runs to end.
    pub async fn next(&mut self) -> Option<EndedRun> {
        self.rx.recv().await
    }
}

impl Drop for EndWatch {
    fn drop(&mut self) {
        let mut by_run = self.waiters.by_run();
        for run in &self.runs {
            if let Some(list) = by_run.get_mut(run) {
                list.retain(|(id, _)| *id != self.id);
                if list.is_empty() {
                    by_run.remove(run);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use weft_store::RunState;

    fn run(id: &str) -> EndedRun {
        let now = Utc::now();
        Arc::new(RunRecord {
            status: RunState::Completed,
            ..RunRecord::new(id, "t", serde_json::json!([]), now)
        })
    }

    #[tokio::test]
    async fn only_the_waiters_of_a_run_hear_of_its_end_and_dropped_ones_leave_nothing() {
        let waiters = Arc::new(EndWaiters::default());
        let mut a = waiters.watch(["trn-a".to_string(), "trn-b".to_string()]);
        let mut b = waiters.watch(["trn-b".to_string()]);
        let c = waiters.watch(["trn-c".to_string()]);
        waiters.ended(&run("trn-b"));
        assert_eq!(a.next().await.unwrap().id, "trn-b");
        assert_eq!(b.next().await.unwrap().id, "trn-b");
        waiters.ended(&run("trn-a"));
        assert_eq!(a.next().await.unwrap().id, "trn-a");
        assert!(b.rx.try_recv().is_err(), "b does not wait for a");
        assert_eq!(waiters.watched_runs(), 1, "only trn-c is still watched");
        drop(c);
        assert_eq!(waiters.watched_runs(), 0);
    }
}

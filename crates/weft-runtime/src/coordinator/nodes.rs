//! What the coordinator does for the cluster (see `cluster`): the lease
//! renewed, the fence and the rejoin, and what other nodes did.

use std::sync::Arc;

use chrono::Utc;
use weft_store::{RunState, StoreError};

use super::Coordinator;
use crate::lease::FenceCause;

impl Coordinator {
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
            Some(until) => self.runner.renew_lease(until).await,
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
        let standbys = self.runner.fence().await;
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
        self.runner.renew_lease(until).await;
        self.runner.unfence();
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

    /// Attempts closed as interrupted by this node's rescue of others.
    pub(crate) fn rescued(&self, runs: usize) {
        self.metrics.attempts_interrupted(runs);
        self.kick.notify_one();
    }
}

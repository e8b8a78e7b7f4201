//! What a node does for the cluster when its store is shared: renews its
//! lease on its work and fences itself when it cannot (see `lease`),
//! takes over the attempts of nodes that fell silent, and acts on what
//! other nodes did (work pending, runs ended or canceled). Also the
//! retention sweep, which any node may run.
//!
//! Every step is a statement on the shared database; nodes never talk to
//! each other, and no node is special.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;
use weft_store::StoreEvent;

use crate::Coordinator;
use crate::lease::FenceCause;

/// Starts the heartbeat, the lease's watch, the rescue of silent nodes and
/// the listener of a node on a shared store.
pub(crate) fn start(coordinator: &Arc<Coordinator>) {
    let c = coordinator.clone();
    tokio::spawn(async move { keep_lease(c).await });
    let c = coordinator.clone();
    tokio::spawn(async move { watch_lease(c).await });
    let c = coordinator.clone();
    tokio::spawn(async move { rescue(c).await });
    let c = coordinator.clone();
    tokio::spawn(async move { hear(c).await });
}

/// Renews the node's lease with a heartbeat several times per node
/// timeout, each within a deadline (on a connection of its own: a hung
/// pool cannot hold it up); while the node is fenced, tries to rejoin
/// instead. A heartbeat that fails is only said once per outage: the
/// fence, if it comes, says the rest.
async fn keep_lease(c: Arc<Coordinator>) {
    let config = c.config();
    let (every, within) = (config.heartbeat_every(), config.heartbeat_within());
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stopping = c.shutdown_token();
    let mut failing_since: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stopping.cancelled() => return,
        }
        if c.lease().fenced().is_some() {
            c.rejoin().await;
            continue;
        }
        let sent = Instant::now();
        match c.store().heartbeat(within).await {
            Ok(true) => {
                if let Some(since) = failing_since.take() {
                    tracing::info!(
                        "the database answers this node's heartbeats again, after {:.1} s",
                        since.elapsed().as_secs_f64()
                    );
                }
                c.renewed(sent).await;
            }
            Ok(false) => c.fence(FenceCause::DeclaredDead).await,
            Err(e) => {
                if failing_since.is_none() {
                    let left = c
                        .lease()
                        .until()
                        .map(|u| u.saturating_duration_since(Instant::now()));
                    tracing::warn!(
                        "could not renew this node's lease: {e}; {}",
                        match left {
                            Some(left) => format!(
                                "it fences itself in {:.1} s (kills its task processes) unless a heartbeat gets through",
                                left.as_secs_f64()
                            ),
                            None => "trying again".to_string(),
                        }
                    );
                    failing_since = Some(sent);
                }
                c.lease().failed(e.to_string());
            }
        }
    }
}

/// Fences the node the moment its lease runs out: on this machine's
/// monotonic clock, whatever the heartbeat is waiting for.
async fn watch_lease(c: Arc<Coordinator>) {
    let stopping = c.shutdown_token();
    let idle = c.config().heartbeat_every();
    loop {
        let wake = c.lease().until().unwrap_or_else(|| Instant::now() + idle);
        tokio::select! {
            _ = tokio::time::sleep_until(wake) => {}
            _ = stopping.cancelled() => return,
        }
        if c.lease().expired() {
            c.fence(FenceCause::Expired).await;
        }
        // Fenced: nothing to watch until the node has rejoined.
        while c.lease().fenced().is_some() {
            tokio::select! {
                _ = tokio::time::sleep(idle) => {}
                _ = stopping.cancelled() => return,
            }
        }
    }
}

/// Every heartbeat period: the rescue of nodes silent for longer than
/// their own timeout (any node may do it; it is one compare-and-set
/// statement, so two doing it at once do no harm). On a task of its own,
/// so that a slow rescue never delays a heartbeat.
async fn rescue(c: Arc<Coordinator>) {
    let mut tick = tokio::time::interval(c.config().heartbeat_every());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stopping = c.shutdown_token();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stopping.cancelled() => return,
        }
        if c.lease().fenced().is_some() {
            continue;
        }
        match c.store().rescue().await {
            Ok(runs) if !runs.is_empty() => {
                tracing::info!(
                    "took over {} attempts of nodes silent past their timeout: they run again",
                    runs.len()
                );
                c.rescued(runs.len());
            }
            Ok(_) => {}
            Err(e) => tracing::debug!("could not check for silent nodes: {e}"),
        }
    }
}

/// Acts on what the other nodes did.
async fn hear(c: Arc<Coordinator>) {
    let Some(mut events) = c.store().events() else {
        return;
    };
    let stopping = c.shutdown_token();
    loop {
        let event = tokio::select! {
            e = events.recv() => e,
            _ = stopping.cancelled() => return,
        };
        // Another node created, started or ended something.
        c.changed();
        match event {
            Ok(StoreEvent::Pending) => c.kick(),
            Ok(StoreEvent::Ended { run_id, parent_id }) => {
                c.remote_end(&run_id, parent_id.as_deref()).await
            }
            Ok(StoreEvent::Canceled) => c.remote_cancel().await,
            Ok(StoreEvent::Resync) | Err(RecvError::Lagged(_)) => c.resync().await,
            Err(RecvError::Closed) => return,
        }
    }
}

/// Root runs kept at most this long after they end, with their subtree and
/// logs; pruned in batches so that no statement holds many rows.
pub(crate) fn start_retention(coordinator: &Arc<Coordinator>, keep: Duration) {
    const BATCH: u32 = 200;
    let c = coordinator.clone();
    tokio::spawn(async move {
        let stopping = c.shutdown_token();
        loop {
            let before =
                Utc::now() - chrono::Duration::from_std(keep).unwrap_or(chrono::Duration::MAX);
            let mut pruned = 0;
            loop {
                match c.store().prune(before, BATCH).await {
                    Ok(n) => {
                        pruned += n;
                        if n < u64::from(BATCH) {
                            break;
                        }
                        // Let other work through between batches.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Err(e) => {
                        tracing::warn!("could not prune old runs: {e}");
                        break;
                    }
                }
            }
            if pruned > 0 {
                tracing::info!(
                    "pruned {pruned} root runs that ended over {keep:?} ago, with their subtasks and logs"
                );
            }
            tokio::select! {
                _ = tokio::time::sleep(c.config().retention_sweep) => {}
                _ = stopping.cancelled() => return,
            }
        }
    });
}

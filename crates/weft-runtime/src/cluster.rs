//! What a node does for the cluster when its store is shared: says it is
//! alive, takes over the attempts of nodes that fell silent, and acts on
//! what other nodes did (work pending, runs ended or canceled). Also the
//! retention sweep, which any node may run.
//!
//! Every step is a statement on the shared database; nodes never talk to
//! each other, and no node is special.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::broadcast::error::RecvError;
use weft_store::StoreEvent;

use crate::Coordinator;

/// How often a node says it is alive.
pub const HEARTBEAT: Duration = Duration::from_secs(2);

/// Starts the heartbeat and the listener of a node on a shared store.
pub(crate) fn start(coordinator: &Arc<Coordinator>) {
    let c = coordinator.clone();
    tokio::spawn(async move { heartbeat(c).await });
    let c = coordinator.clone();
    tokio::spawn(async move { hear(c).await });
}

/// Every [`HEARTBEAT`]: the heartbeat, and the rescue of nodes silent for
/// longer than the node timeout (any node may do it; it is one
/// compare-and-set statement, so two doing it at once do no harm).
async fn heartbeat(c: Arc<Coordinator>) {
    let silence = c.config().node_timeout;
    let mut tick = tokio::time::interval(HEARTBEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stopping = c.shutdown_token();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stopping.cancelled() => return,
        }
        match c.store().heartbeat().await {
            Ok(true) => {}
            Ok(false) => c.declared_dead().await,
            Err(e) => tracing::warn!("could not say this node is alive: {e}"),
        }
        match c.store().rescue(silence).await {
            Ok(runs) if !runs.is_empty() => {
                tracing::info!(
                    "took over {} attempts of nodes silent for over {silence:?}: they run again",
                    runs.len()
                );
                c.rescued(runs.len());
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("could not check for silent nodes: {e}"),
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

//! The node's lease on its work, on a store that several nodes share, and
//! the fence that ends it.
//!
//! Other nodes take this node's attempts over once its last heartbeat is
//! older than its timeout, by the database's clock (`cluster`). So the
//! node may run its attempts only while it knows that moment is still
//! ahead: each heartbeat the database took renews a *lease*, measured on
//! this machine's monotonic clock from the moment the heartbeat was sent
//! (the database stamped it later than that), lasting the node timeout
//! less the fence margin. When the lease runs out (the database cannot be
//! reached, or answers too late), the node *fences itself* before anyone
//! may take its work: it kills every task process it runs, claims nothing,
//! and takes no report, until it has rejoined the cluster under a new
//! incarnation. The spawner holds the same deadline (`spawner`), so the
//! task processes are killed on time even when the runtime itself is
//! paused.
//!
//! At every moment at most one process runs an attempt, as long as this
//! machine's monotonic clock does not run slower than the database's by
//! more than the margin over the whole lease (a third of the timeout by
//! default: a clock a third slow), and killing the processes takes less
//! than the margin. The same hazard, and the same answer, as a lock
//! service's lease (Jepsen on etcd's locks) or Temporal's activity
//! heartbeats: the worker fences itself.

use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

/// Why a node fenced itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FenceCause {
    /// Its lease ran out: no heartbeat got through in time.
    Expired,
    /// The database says the cluster declared it dead (it was paused, or
    /// cut off, past its timeout).
    DeclaredDead,
}

/// A fence in force: what happened, for people.
#[derive(Debug, Clone)]
pub struct Fence {
    pub cause: FenceCause,
    /// When the node fenced itself, by its wall clock.
    pub at: DateTime<Utc>,
    /// When its last heartbeat that the database took was sent, by the
    /// monotonic clock and by the wall clock.
    pub renewed: Option<(Instant, DateTime<Utc>)>,
    /// When it fenced itself, by its monotonic clock.
    pub since: Instant,
    /// What the last heartbeat that failed said (names the database).
    pub last_error: Option<String>,
}

impl Fence {
    /// One line on what happened, for the terminal, `/healthz` and the
    /// attempts it interrupted.
    pub fn describe(&self, node: &str) -> String {
        let at = self.at.format("%H:%M:%S%.3f UTC");
        let why = match self.cause {
            FenceCause::Expired => match self.renewed {
                Some((sent, wall)) => format!(
                    "it could not renew its lease on the database after {} ({:.1} s earlier)",
                    wall.format("%H:%M:%S%.3f UTC"),
                    (self.since - sent).as_secs_f64()
                ),
                None => "it could not renew its lease on the database".to_string(),
            },
            FenceCause::DeclaredDead => {
                "the cluster had declared it dead (it was paused or cut off past its --node-timeout)"
                    .to_string()
            }
        };
        let error = self
            .last_error
            .as_deref()
            .map(|e| format!(" ({e})"))
            .unwrap_or_default();
        format!("node {node} fenced itself at {at}: {why}{error}")
    }
}

#[derive(Default)]
struct State {
    /// When the lease runs out; `None` before it is first taken (a store
    /// only this node uses never takes one).
    until: Option<Instant>,
    /// When the last renewal was sent.
    renewed: Option<(Instant, DateTime<Utc>)>,
    fence: Option<Fence>,
    /// The last failed heartbeat's error, kept for the fence's message.
    last_error: Option<String>,
}

/// The node's lease on its work.
pub struct Lease {
    /// How long one renewal holds: the node timeout less the fence margin.
    hold: Duration,
    state: Mutex<State>,
}

impl Lease {
    /// A lease that each renewal extends by `hold`.
    pub fn new(hold: Duration) -> Self {
        Self {
            hold,
            state: Mutex::default(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A heartbeat sent at `sent` got through: the lease holds until
    /// `sent + hold` (never shortened). Returns that deadline; `None`
    /// while fenced (only [`Lease::unfence`] ends a fence), and `None`
    /// too once the lease has run out, even unfenced yet: the spawner may
    /// have killed the task processes at that moment already, so the node
    /// must fence itself, not carry on as if nothing happened.
    pub fn renewed(&self, sent: Instant, sent_wall: DateTime<Utc>) -> Option<Instant> {
        let mut state = self.state();
        if state.fence.is_some() || state.until.is_some_and(|u| Instant::now() >= u) {
            return None;
        }
        let until = sent + self.hold;
        if state.until.is_none_or(|u| u < until) {
            state.until = Some(until);
            state.renewed = Some((sent, sent_wall));
        }
        state.last_error = None;
        state.until
    }

    /// A heartbeat failed with this error.
    pub fn failed(&self, error: String) {
        self.state().last_error = Some(error);
    }

    /// When the lease runs out, if it was taken.
    pub fn until(&self) -> Option<Instant> {
        self.state().until
    }

    /// Whether the node may act on its attempts now: not fenced, and the
    /// lease (if any was taken) not run out.
    pub fn holds(&self) -> bool {
        let state = self.state();
        state.fence.is_none() && state.until.is_none_or(|u| Instant::now() < u)
    }

    /// Whether the lease was taken and has run out, unfenced yet.
    pub fn expired(&self) -> bool {
        let state = self.state();
        state.fence.is_none() && state.until.is_some_and(|u| Instant::now() >= u)
    }

    /// Fences the node; the fence, or `None` if it was fenced already.
    pub fn fence(&self, cause: FenceCause) -> Option<Fence> {
        let mut state = self.state();
        if state.fence.is_some() {
            return None;
        }
        let fence = Fence {
            cause,
            at: Utc::now(),
            renewed: state.renewed,
            since: Instant::now(),
            last_error: state.last_error.clone(),
        };
        state.fence = Some(fence.clone());
        Some(fence)
    }

    /// The fence in force, if any.
    pub fn fenced(&self) -> Option<Fence> {
        self.state().fence.clone()
    }

    /// The node rejoined with a heartbeat sent at `sent`: the fence ends
    /// and the lease holds again. Returns the fence that ended and the
    /// new deadline.
    pub fn unfence(&self, sent: Instant, sent_wall: DateTime<Utc>) -> (Option<Fence>, Instant) {
        let mut state = self.state();
        let fence = state.fence.take();
        let until = sent + self.hold;
        state.until = Some(until);
        state.renewed = Some((sent, sent_wall));
        state.last_error = None;
        (fence, until)
    }
}

/// `CLOCK_MONOTONIC` now, in nanoseconds: a clock every process of this
/// machine reads alike (the spawner's deadline is given on it).
pub fn monotonic_ns() -> u64 {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .expect("CLOCK_MONOTONIC is always there");
    (now.tv_sec() as u64) * 1_000_000_000 + now.tv_nsec() as u64
}

/// A deadline of this process's clock as `CLOCK_MONOTONIC` nanoseconds,
/// for another process.
pub fn monotonic_deadline(until: Instant) -> u64 {
    let left = until.saturating_duration_since(Instant::now());
    monotonic_ns().saturating_add(left.as_nanos().min(u128::from(u64::MAX)) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_lease_holds_for_its_time_after_each_renewal_sent() {
        let lease = Lease::new(Duration::from_secs(6));
        assert!(lease.holds(), "no lease taken: a store of one node");
        assert!(!lease.expired());
        let sent = Instant::now();
        assert_eq!(
            lease.renewed(sent, Utc::now()),
            Some(sent + Duration::from_secs(6))
        );
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(lease.holds());
        // A renewal sent earlier than the last one does not shorten it.
        lease.renewed(sent - Duration::from_secs(1), Utc::now());
        assert_eq!(lease.until(), Some(sent + Duration::from_secs(6)));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(!lease.holds() && lease.expired(), "run out at sent + hold");
        // A heartbeat that got through late does not revive it.
        assert_eq!(lease.renewed(Instant::now(), Utc::now()), None);
        assert!(lease.expired());
    }

    #[tokio::test(start_paused = true)]
    async fn a_fence_holds_until_the_node_rejoins() {
        let lease = Lease::new(Duration::from_secs(6));
        lease.renewed(Instant::now(), Utc::now());
        lease.failed("no answer within 2 s".into());
        tokio::time::advance(Duration::from_secs(7)).await;
        let fence = lease.fence(FenceCause::Expired).expect("fenced once");
        assert!(lease.fence(FenceCause::DeclaredDead).is_none(), "not twice");
        assert!(!lease.holds() && !lease.expired());
        let told = fence.describe("n2");
        assert!(told.starts_with("node n2 fenced itself at "), "{told}");
        assert!(
            told.contains("7.0 s earlier") && told.contains("no answer within 2 s"),
            "{told}"
        );
        // Renewals of the old incarnation change nothing while fenced.
        assert_eq!(lease.renewed(Instant::now(), Utc::now()), None);
        assert!(!lease.holds());
        let (ended, until) = lease.unfence(Instant::now(), Utc::now());
        assert_eq!(ended.map(|f| f.cause), Some(FenceCause::Expired));
        assert!(lease.holds() && until > Instant::now());
    }
}

//! The states of a run and of an attempt, and how a run moves between
//! them:
//!
//! ```text
//! pending ──start──▶ running ──complete──▶ completed
//!    ▲                  │ ──fail, retries left──▶ pending (after backoff)
//!    │                  │ ──fail, none left────▶ failed
//!    └───interrupt──────┘ (a runtime or node died: not counted)
//! pending | running ──cancel──▶ canceled (with every descendant)
//! ```
//!
//! The runtime decides which move happens (its `lifecycle` module); each
//! store method that makes one is a compare-and-set on the state the move
//! starts from, in its own SQL (`claim` from pending, `finish_attempt` and
//! the interruptions from running, `cancel_run` from either): what the
//! drawing does not show cannot happen. The wire has more spellings
//! ([`TaskRunStatus`]: `succeeded` for newer clients, `paused`), which map
//! onto these.

use weft_protocol::api::TaskRunStatus;

/// Where a run (or one of its attempts) is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RunState {
    /// Waiting for a slot (or out a retry's backoff). Runs only.
    Pending,
    Running,
    /// Ended with a result.
    Completed,
    Failed,
    Canceled,
}

impl RunState {
    /// Every state.
    pub const ALL: [RunState; 5] = [
        Self::Pending,
        Self::Running,
        Self::Completed,
        Self::Failed,
        Self::Canceled,
    ];

    /// Whether the run has ended and will not change again.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Canceled)
    }

    /// The spelling stores keep, the same as the wire's.
    pub fn as_str(self) -> &'static str {
        self.to_wire().as_str()
    }

    /// Reads a stored spelling.
    pub fn parse(s: &str) -> Option<Self> {
        TaskRunStatus::parse(s).and_then(Self::from_wire)
    }

    /// As the API reports it: a finished run is `completed`, the value
    /// every SDK release knows (`succeeded` is newer).
    pub fn to_wire(self) -> TaskRunStatus {
        match self {
            Self::Pending => TaskRunStatus::Pending,
            Self::Running => TaskRunStatus::Running,
            Self::Completed => TaskRunStatus::Completed,
            Self::Failed => TaskRunStatus::Failed,
            Self::Canceled => TaskRunStatus::Canceled,
        }
    }

    /// What a client's status means here (`succeeded` is `completed`);
    /// `None` for one weft never has (`paused`).
    pub fn from_wire(status: TaskRunStatus) -> Option<Self> {
        Some(match status {
            TaskRunStatus::Pending => Self::Pending,
            TaskRunStatus::Running => Self::Running,
            TaskRunStatus::Completed | TaskRunStatus::Succeeded => Self::Completed,
            TaskRunStatus::Failed => Self::Failed,
            TaskRunStatus::Canceled => Self::Canceled,
            TaskRunStatus::Paused => return None,
        })
    }
}

impl std::fmt::Display for RunState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<RunState> for TaskRunStatus {
    fn from(state: RunState) -> Self {
        state.to_wire()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use RunState::*;

    #[test]
    fn wire_spellings_round_trip_and_succeeded_is_completed() {
        for state in RunState::ALL {
            assert_eq!(RunState::parse(state.as_str()), Some(state));
            assert_eq!(RunState::from_wire(state.to_wire()), Some(state));
        }
        assert_eq!(RunState::parse("succeeded"), Some(Completed));
        assert_eq!(RunState::from_wire(TaskRunStatus::Paused), None);
        assert_eq!(RunState::parse("nope"), None);
    }

    #[test]
    fn only_completed_failed_and_canceled_are_ended() {
        let ended: Vec<_> = RunState::ALL
            .into_iter()
            .filter(|s| s.is_terminal())
            .collect();
        assert_eq!(ended, [Completed, Failed, Canceled]);
    }
}

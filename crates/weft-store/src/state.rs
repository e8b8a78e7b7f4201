//! The states of a run and of an attempt, and every transition between
//! them, in one table.
//!
//! ```text
//! pending ──start──▶ running ──complete──▶ completed
//!    ▲                  │ ──fail, retries left──▶ pending (after backoff)
//!    │                  │ ──fail, none left────▶ failed
//!    └───interrupt──────┘ (a runtime or node died: not counted)
//! pending | running ──cancel──▶ canceled (with every descendant)
//! ```
//!
//! The runtime decides which event happens (`weft_runtime::lifecycle`);
//! a store applies it atomically, as a compare-and-set on the state the
//! table starts from. The wire has more spellings ([`TaskRunStatus`]:
//! `succeeded` for newer clients, `paused`), which map onto these.

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

/// What happens to a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RunEvent {
    /// An attempt starts.
    Start,
    /// The attempt returned a result.
    Complete,
    /// The attempt failed and the policy allows another.
    Retry,
    /// The attempt failed for good.
    Fail,
    /// The run (or an ancestor) was canceled.
    Cancel,
    /// The runtime (or node) running the attempt died; it runs again and
    /// the interruption does not count against retries.
    Interrupt,
}

/// Every transition: (from, event, to). What is not here cannot happen.
pub const TRANSITIONS: &[(RunState, RunEvent, RunState)] = {
    use RunEvent::*;
    use RunState::*;
    &[
        (Pending, Start, Running),
        (Pending, Cancel, Canceled),
        (Running, Complete, Completed),
        (Running, Retry, Pending),
        (Running, Fail, Failed),
        (Running, Cancel, Canceled),
        (Running, Interrupt, Pending),
    ]
};

impl RunState {
    /// Every state.
    pub const ALL: [RunState; 5] = [
        Self::Pending,
        Self::Running,
        Self::Completed,
        Self::Failed,
        Self::Canceled,
    ];

    /// The state `event` moves a run in this state to, if it may happen.
    pub fn after(self, event: RunEvent) -> Option<RunState> {
        TRANSITIONS
            .iter()
            .find(|(from, on, _)| *from == self && *on == event)
            .map(|(_, _, to)| *to)
    }

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
    use RunEvent::*;
    use RunState::*;

    const EVENTS: [RunEvent; 6] = [Start, Complete, Retry, Fail, Cancel, Interrupt];

    /// Every (state, event) pair, spelled out: the table above must say
    /// exactly this.
    #[test]
    fn every_state_and_event() {
        for state in RunState::ALL {
            for event in EVENTS {
                let want = match (state, event) {
                    (Pending, Start) => Some(Running),
                    (Pending, Cancel) => Some(Canceled),
                    (Running, Complete) => Some(Completed),
                    (Running, Retry) => Some(Pending),
                    (Running, Fail) => Some(Failed),
                    (Running, Cancel) => Some(Canceled),
                    (Running, Interrupt) => Some(Pending),
                    _ => None,
                };
                assert_eq!(state.after(event), want, "{state:?} on {event:?}");
            }
        }
    }

    #[test]
    fn ended_states_never_change_and_every_other_state_can_end() {
        for state in RunState::ALL {
            let moves = EVENTS.iter().filter(|e| state.after(**e).is_some()).count();
            assert_eq!(state.is_terminal(), moves == 0, "{state:?}");
            if !state.is_terminal() {
                assert_eq!(state.after(Cancel), Some(Canceled), "{state:?}");
            }
        }
        assert_eq!(
            TRANSITIONS.len(),
            7,
            "one row per transition, none repeated"
        );
    }

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
}

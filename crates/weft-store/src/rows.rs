//! What both stores write and read the same way, written once: new run
//! ids, the texts they keep for an interruption and a cancel, an attempt's
//! outcome as the columns it is kept in, and stored text read back. Each
//! store keeps only its SQL.

use weft_protocol::payload::Json;

use crate::{AttemptOutcome, Result, RunState, StoreError};

/// A new run's id. UUIDv7 keeps ids in creation order, which reads well in
/// listings.
pub(crate) fn new_run_id() -> String {
    format!("trn-{}", uuid::Uuid::now_v7().simple())
}

/// The error an interrupted attempt is closed with (its runtime stopped, or
/// its node fell silent and was taken over).
pub(crate) const INTERRUPTED: &str = "interrupted: the weft runtime running this attempt stopped or fell silent; relaunched without counting against retries";

/// The error a canceled run and its attempts are closed with.
pub(crate) const CANCELED: &str = "task run canceled";

/// An attempt's outcome as its row keeps it: (status, error, output).
pub(crate) fn outcome_columns(
    outcome: &AttemptOutcome,
) -> (&'static str, Option<String>, Option<String>) {
    match outcome {
        AttemptOutcome::Completed { output } => {
            ("completed", None, Some(output.as_str().to_string()))
        }
        AttemptOutcome::Retry { error, .. } | AttemptOutcome::Failed { error } => {
            ("failed", Some(error.clone()), None)
        }
    }
}

/// A stored payload, kept as written.
pub(crate) fn parse_json(s: &str) -> Result<Json> {
    Json::parse(s).map_err(|e| StoreError::Corrupt(format!("bad JSON in store: {e}")))
}

/// A stored state.
pub(crate) fn parse_state(s: &str) -> Result<RunState> {
    RunState::parse(s).ok_or_else(|| StoreError::Corrupt(format!("unknown status {s:?}")))
}

/// Whether a process of this id exists (one of another user's counts).
pub(crate) fn process_exists(pid: libc::pid_t) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    let alive = unsafe { libc::kill(pid, 0) } == 0;
    alive || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

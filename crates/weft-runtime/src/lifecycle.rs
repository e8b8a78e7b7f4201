//! The run state machine's decisions: which event an attempt's end is.
//!
//! The states and the moves between them are drawn in
//! [`weft_store::RunState`]'s module; the store applies each move
//! atomically. This module decides whether a failure is a retry
//! (`Running → Pending`, after the policy's backoff) or the end
//! (`Running → Failed`).

use chrono::{DateTime, Duration, Utc};
use weft_protocol::payload::Json;
use weft_protocol::socket::TaskOptions;
use weft_store::{AttemptOutcome, RunRecord};

/// Decides where a run goes when its current attempt ends with `result`.
///
/// `run` is the run as it was when the attempt started, so its failed
/// attempts are the ones before this one.
pub fn next_state(
    run: &RunRecord,
    options: &TaskOptions,
    result: Result<Json, String>,
    now: DateTime<Utc>,
) -> AttemptOutcome {
    match result {
        Ok(output) => AttemptOutcome::Completed { output },
        Err(error) => {
            let retry = options.retry.clone().unwrap_or_default();
            let failed_before = run.failed_attempts();
            if failed_before < retry.max_retries() {
                let wait = retry.wait_before_retry_ms(failed_before);
                let wait = Duration::milliseconds(
                    i64::try_from(wait)
                        .unwrap_or(i64::MAX)
                        .min(Duration::days(365).num_milliseconds()),
                );
                AttemptOutcome::Retry {
                    error,
                    retry_at: now + wait,
                }
            } else {
                AttemptOutcome::Failed { error }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use weft_protocol::socket::RetryPolicy;
    use weft_store::AttemptRecord;
    use weft_store::RunState;

    fn run_with(attempts: &[(RunState, bool)]) -> RunRecord {
        let now = Utc::now();
        RunRecord {
            status: RunState::Running,
            started_at: Some(now),
            attempts: attempts
                .iter()
                .enumerate()
                .map(|(i, (status, interrupted))| AttemptRecord {
                    node_id: None,
                    number: i as u32 + 1,
                    status: *status,
                    started_at: now,
                    completed_at: None,
                    error: None,
                    output: None,
                    interrupted: *interrupted,
                    usage: Default::default(),
                })
                .collect(),
            ..RunRecord::new("trn-1", "t", json!([]), now)
        }
    }

    fn options(max_retries: u32, wait: u64, factor: f64) -> TaskOptions {
        TaskOptions {
            retry: Some(RetryPolicy {
                max_retries: Some(i64::from(max_retries)),
                wait_duration_ms: Some(wait),
                factor: Some(factor),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn success_completes() {
        let out = next_state(
            &run_with(&[(RunState::Running, false)]),
            &options(0, 0, 1.0),
            Ok(json!([1]).into()),
            Utc::now(),
        );
        assert!(matches!(out, AttemptOutcome::Completed { output } if output == json!([1])));
    }

    #[test]
    fn failures_retry_with_exponential_backoff_then_fail() {
        use RunState::*;
        let now = Utc::now();
        let opts = options(2, 100, 3.0);
        let first = next_state(&run_with(&[(Running, false)]), &opts, Err("e".into()), now);
        assert!(
            matches!(first, AttemptOutcome::Retry { retry_at, .. } if retry_at == now + Duration::milliseconds(100))
        );
        let second = next_state(
            &run_with(&[(Failed, false), (Running, false)]),
            &opts,
            Err("e".into()),
            now,
        );
        assert!(
            matches!(second, AttemptOutcome::Retry { retry_at, .. } if retry_at == now + Duration::milliseconds(300))
        );
        let third = next_state(
            &run_with(&[(Failed, false), (Failed, false), (Running, false)]),
            &opts,
            Err("e".into()),
            now,
        );
        assert!(matches!(third, AttemptOutcome::Failed { error } if error == "e"));
    }

    #[test]
    fn interrupted_attempts_do_not_use_up_retries() {
        use RunState::*;
        let out = next_state(
            &run_with(&[(Failed, true), (Failed, true), (Running, false)]),
            &options(1, 0, 2.0),
            Err("e".into()),
            Utc::now(),
        );
        assert!(matches!(out, AttemptOutcome::Retry { .. }));
    }

    #[test]
    fn no_retry_policy_fails_at_once() {
        let out = next_state(
            &run_with(&[(RunState::Running, false)]),
            &TaskOptions::default(),
            Err("e".into()),
            Utc::now(),
        );
        assert!(matches!(out, AttemptOutcome::Failed { .. }));
    }
}

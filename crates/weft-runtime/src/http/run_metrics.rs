//! Render's task-run metrics: `GET /v1/metrics/task-runs-queued` (runs
//! created) and `GET /v1/metrics/task-runs-completed` (runs that ended),
//! counted per bucket of `resolutionSeconds` between `startTime` and
//! `endTime` (the last hour by default), one series per task, in the
//! time-series shape of Render's metrics API.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{Duration, Utc};
use weft_protocol::api::{MetricLabel, TimeSeries, TimeSeriesValue};
use weft_store::{Counted, RunCount, RunCountQuery, RunState, TaskRecord};

use crate::coordinator::Coordinator;
use crate::http::json::ApiError;
use crate::http::params::Params;

type Shared = Arc<Coordinator>;

/// At most this many buckets in one answer (a week at one a minute).
const MAX_BUCKETS: i64 = 10_080;

pub(crate) fn routes() -> Router<Shared> {
    Router::new()
        .route("/v1/metrics/task-runs-queued", get(queued))
        .route("/v1/metrics/task-runs-completed", get(completed))
}

async fn queued(
    State(c): State<Shared>,
    RawQuery(q): RawQuery,
) -> Result<Json<Vec<TimeSeries>>, ApiError> {
    let params = Params::parse(q)?;
    series(&c, &params, Counted::Created).await.map(Json)
}

async fn completed(
    State(c): State<Shared>,
    RawQuery(q): RawQuery,
) -> Result<Json<Vec<TimeSeries>>, ApiError> {
    let params = Params::parse(q)?;
    series(&c, &params, Counted::Ended).await.map(Json)
}

/// How an ended run is named in `state` and its label: Render's words.
fn ended_state(state: RunState) -> &'static str {
    match state {
        RunState::Completed => "succeeded",
        RunState::Failed => "failed",
        _ => "canceled",
    }
}

async fn series(
    c: &Coordinator,
    params: &Params,
    counted: Counted,
) -> Result<Vec<TimeSeries>, ApiError> {
    let to = params.time("endTime")?.unwrap_or_else(Utc::now);
    let from = params.time("startTime")?.unwrap_or(to - Duration::hours(1));
    if from >= to {
        return Err(ApiError::bad_request(format!(
            "startTime ({from}) must be before endTime ({to})"
        )));
    }
    let resolution = params.seconds("resolutionSeconds", 60.0, 86_400.0)?.ceil() as i64;
    let width_ms = resolution * 1000;
    let buckets = ((to - from).num_milliseconds() + width_ms - 1) / width_ms;
    if buckets > MAX_BUCKETS {
        return Err(ApiError::bad_request(format!(
            "{buckets} buckets of {resolution} s between startTime and endTime: at most {MAX_BUCKETS}; \
             ask for a larger resolutionSeconds or a shorter window"
        )));
    }
    // `resource`: task ids (`tsk-name`), names or slugs, ORed.
    let tasks: Vec<String> = params
        .list(&["resource"])
        .iter()
        .map(|r| {
            let name = weft_protocol::api::task_name_from_slug(r);
            name.strip_prefix("tsk-").unwrap_or(name).to_string()
        })
        .collect();
    let (states, by_state) = match counted {
        Counted::Created => {
            refuse(params, "state", "task-runs-completed")?;
            refuse(params, "aggregateBy", "task-runs-completed")?;
            (Vec::new(), false)
        }
        Counted::Ended => (ended_states(params)?, aggregate_by_state(params)?),
    };
    let counts = c
        .store()
        .count_runs(&RunCountQuery {
            counted,
            task_names: tasks.clone(),
            from,
            to,
            resolution,
        })
        .await?;
    // Every task asked for (or, when none was, every registered task and
    // every task counted) has a series, zeros and all: a chart of a quiet
    // task shows a line at zero, not nothing.
    let mut names: BTreeSet<String> = tasks.into_iter().collect();
    if names.is_empty() {
        names.extend(c.tasks().into_iter().map(|t| t.name));
        names.extend(counts.iter().map(|n| n.task_name.clone()));
    }
    let mut totals: BTreeMap<(String, Option<&'static str>), Vec<u64>> = BTreeMap::new();
    for name in &names {
        let keys: Vec<Option<&'static str>> = if by_state {
            let shown = if states.is_empty() {
                vec!["succeeded", "failed"]
            } else {
                states.clone()
            };
            shown.into_iter().map(Some).collect()
        } else {
            vec![None]
        };
        for key in keys {
            totals.insert((name.clone(), key), vec![0; buckets as usize]);
        }
    }
    for RunCount {
        task_name,
        status,
        bucket,
        count,
    } in counts
    {
        let state = (counted == Counted::Ended).then(|| ended_state(status));
        if let Some(state) = state
            && !states.is_empty()
            && !states.contains(&state)
        {
            continue;
        }
        let key = (task_name, if by_state { state } else { None });
        let values = totals
            .entry(key)
            .or_insert_with(|| vec![0; buckets as usize]);
        if let Some(slot) = usize::try_from(bucket).ok().and_then(|b| values.get_mut(b)) {
            *slot += count;
        }
    }
    Ok(totals
        .into_iter()
        .map(|((task, state), values)| {
            let mut labels = vec![MetricLabel {
                field: "resource".into(),
                value: TaskRecord::id_for(&task),
            }];
            if let Some(state) = state {
                labels.push(MetricLabel {
                    field: "state".into(),
                    value: state.into(),
                });
            }
            TimeSeries {
                labels,
                values: values
                    .into_iter()
                    .enumerate()
                    .map(|(i, value)| TimeSeriesValue {
                        timestamp: from + Duration::seconds(i as i64 * resolution),
                        value,
                    })
                    .collect(),
                unit: "count".into(),
            }
        })
        .collect())
}

/// `state`: `succeeded`, `failed` (Render's two) or `canceled`, ORed.
fn ended_states(params: &Params) -> Result<Vec<&'static str>, ApiError> {
    params
        .list(&["state"])
        .iter()
        .map(|s| match s.as_str() {
            "succeeded" | "completed" => Ok("succeeded"),
            "failed" => Ok("failed"),
            "canceled" => Ok("canceled"),
            other => Err(ApiError::bad_request(format!(
                "unknown state {other:?} (succeeded, failed or canceled)"
            ))),
        })
        .collect()
}

/// `aggregateBy`: `state`, a series per state, is the one Render has.
fn aggregate_by_state(params: &Params) -> Result<bool, ApiError> {
    match params.one("aggregateBy") {
        None => Ok(false),
        Some("state") => Ok(true),
        Some(other) => Err(ApiError::bad_request(format!(
            "unknown aggregateBy {other:?}: task runs aggregate by state"
        ))),
    }
}

/// A parameter only the other endpoint reads is refused, not ignored.
fn refuse(params: &Params, key: &str, other: &str) -> Result<(), ApiError> {
    match params.one(key) {
        None => Ok(()),
        Some(_) => Err(ApiError::bad_request(format!(
            "{key} is a parameter of /v1/metrics/{other}, not of this endpoint"
        ))),
    }
}

//! The REST API under `/v1`, in the shapes the official clients parse.
//!
//! | call | answer |
//! |---|---|
//! | `POST /v1/task-runs` [`RunTaskRequest`] | 202 [`TaskRun`] |
//! | `GET /v1/task-runs/{id}` | [`TaskRunDetails`] |
//! | `DELETE /v1/task-runs/{id}` | 204 |
//! | `GET /v1/task-runs?taskSlug=&rootTaskRunId=&limit=&cursor=` | `[`[`TaskRunWithCursor`]`]` |
//! | `GET /v1/task-runs/events?taskRunIds=a,b` | SSE, `event: task.completed`, `data:` [`TaskRunDetails`] |
//! | `GET /v1/tasks`, `GET /v1/tasks/{id}` | [`TaskWithCursor`], [`Task`] |
//! | `GET /v1/logs?taskRunID=&startTime=&endTime=&text=` | [`LogsResponse`] |
//!
//! Errors are [`ErrorBody`] (`{"id", "code", "message"}`) with a 4xx or 5xx status.

use crate::payload::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use crate::socket::{ErrorBody, error_code};
use crate::socket::{TaskOptions, TaskParameter};

/// The SSE event name for a run that ended, whatever its outcome (Render
/// sends `task.completed` for failed and canceled runs too).
pub const EVENT_TASK_COMPLETED: &str = "task.completed";

/// The state of a task run (and of one attempt).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskRunStatus {
    Pending,
    Running,
    /// Ended with a result. Weft reports this value: every SDK release knows
    /// it, while `succeeded` is newer.
    Completed,
    Succeeded,
    Failed,
    Canceled,
    Paused,
}

impl TaskRunStatus {
    /// Whether the run has ended and will not change again.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Completed | Self::Succeeded | Self::Failed | Self::Canceled
        )
    }

    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Canceled => "canceled",
            Self::Paused => "paused",
        }
    }

    /// Parses the wire spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => Self::Pending,
            "running" => Self::Running,
            "completed" => Self::Completed,
            "succeeded" => Self::Succeeded,
            "failed" => Self::Failed,
            "canceled" => Self::Canceled,
            "paused" => Self::Paused,
            _ => return None,
        })
    }
}

impl std::fmt::Display for TaskRunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `POST /v1/task-runs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunTaskRequest {
    /// `workflow-slug/task-name`, or the bare task name.
    pub task: String,
    /// A JSON array (positional inputs) or object (named inputs), kept as
    /// the client wrote it.
    #[serde(default = "Json::empty_array")]
    pub input: Json,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

/// One attempt of a task run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskAttempt {
    /// 1-based attempt number.
    pub attempt: u32,
    pub status: TaskRunStatus,
    /// When the attempt was queued: the run's creation for the first, the
    /// end of the one before for the others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enqueued_at: Option<DateTime<Utc>>,
    pub started_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_run_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<DateTime<Utc>>,
    /// Why the attempt failed (details only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The attempt's results (details only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub results: Option<Json>,
    /// Weft's extension: the node that ran the attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    /// Weft's extension: the most memory the attempt's processes held at
    /// once, in bytes (measured in its cgroup, on Linux).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_memory_bytes: Option<u64>,
    /// Weft's extension: the CPU time of the attempt's processes, in
    /// milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_time_ms: Option<u64>,
}

/// A task run as lists and `POST /v1/task-runs` return it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskRun {
    pub id: String,
    pub task_id: String,
    pub status: TaskRunStatus,
    /// Empty for a root run.
    #[serde(default)]
    pub parent_task_run_id: String,
    /// The parent's attempt that started this run (as `attempts[].attempt`
    /// numbers them); absent for a root run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_task_attempt: Option<u32>,
    pub root_task_run_id: String,
    /// weft's: the version a client pinned its root run to
    /// (`workflow/task:version`); absent when none was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_version: Option<String>,
    /// weft's: the id of the trace the run's tree is (OpenTelemetry;
    /// `weft runs show` prints it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// Attempts after the first.
    pub retries: u32,
    pub attempts: Vec<TaskAttempt>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<DateTime<Utc>>,
}

/// One run with its input, results and error. On the wire its run's
/// fields sit beside `results`, `input` and `error` (serialised by hand
/// rather than with `#[serde(flatten)]`, which would read the payloads
/// through serde's buffer and lose their text).
#[derive(Debug, Clone, PartialEq)]
pub struct TaskRunDetails {
    pub run: TaskRun,
    /// The JSON array of results, as the task wrote it; empty until the
    /// run completes.
    pub results: Json,
    /// As the client wrote it.
    pub input: Json,
    pub error: Option<String>,
}

/// [`TaskRunDetails`] as it travels: every field at one level.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct FlatDetails {
    id: String,
    task_id: String,
    status: TaskRunStatus,
    #[serde(default)]
    parent_task_run_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    parent_task_attempt: Option<u32>,
    root_task_run_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    task_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    trace_id: Option<String>,
    #[serde(default)]
    retries: u32,
    #[serde(default)]
    attempts: Vec<TaskAttempt>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    started_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    completed_at: Option<DateTime<Utc>>,
    #[serde(default = "Json::empty_array")]
    results: Json,
    #[serde(default = "Json::empty_array")]
    input: Json,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

impl Serialize for TaskRunDetails {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let r = &self.run;
        FlatDetails {
            id: r.id.clone(),
            task_id: r.task_id.clone(),
            status: r.status,
            parent_task_run_id: r.parent_task_run_id.clone(),
            parent_task_attempt: r.parent_task_attempt,
            root_task_run_id: r.root_task_run_id.clone(),
            task_version: r.task_version.clone(),
            trace_id: r.trace_id.clone(),
            retries: r.retries,
            attempts: r.attempts.clone(),
            started_at: r.started_at,
            completed_at: r.completed_at,
            results: self.results.clone(),
            input: self.input.clone(),
            error: self.error.clone(),
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for TaskRunDetails {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let f = FlatDetails::deserialize(deserializer)?;
        Ok(Self {
            run: TaskRun {
                id: f.id,
                task_id: f.task_id,
                status: f.status,
                parent_task_run_id: f.parent_task_run_id,
                parent_task_attempt: f.parent_task_attempt,
                root_task_run_id: f.root_task_run_id,
                task_version: f.task_version,
                trace_id: f.trace_id,
                retries: f.retries,
                attempts: f.attempts,
                started_at: f.started_at,
                completed_at: f.completed_at,
            },
            results: f.results,
            input: f.input,
            error: f.error,
        })
    }
}

/// An element of `GET /v1/task-runs`.
/// One series of `GET /v1/metrics/task-runs-queued` or `-completed`, in
/// the shape of Render's metrics API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimeSeries {
    /// What the series counts: `resource` (the task's id) and, aggregated
    /// by state, `state`.
    pub labels: Vec<MetricLabel>,
    /// One value per bucket, oldest first, buckets with none included.
    pub values: Vec<TimeSeriesValue>,
    pub unit: String,
}

/// A label of a [`TimeSeries`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricLabel {
    pub field: String,
    pub value: String,
}

/// One bucket of a [`TimeSeries`]: when it starts and what it counted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimeSeriesValue {
    pub timestamp: DateTime<Utc>,
    pub value: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskRunWithCursor {
    pub task_run: TaskRun,
    /// Pass as `cursor` to list the runs after this one.
    pub cursor: String,
}

/// A registered task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Task {
    pub id: String,
    pub name: String,
    pub created_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<TaskOptions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Vec<TaskParameter>>,
}

/// An element of `GET /v1/tasks`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskWithCursor {
    pub task: Task,
    pub cursor: String,
}

/// One line a task wrote, in the shape of Render's logs API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Log {
    pub id: String,
    pub message: String,
    pub timestamp: DateTime<Utc>,
    pub labels: Vec<LogLabel>,
}

/// A log label (`taskRun`, `task`, `type` = `stdout`/`stderr`, `level`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogLabel {
    pub name: String,
    pub value: String,
}

/// `GET /v1/logs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogsResponse {
    pub logs: Vec<Log>,
    pub has_more: bool,
    pub next_start_time: DateTime<Utc>,
    pub next_end_time: DateTime<Utc>,
}

/// Splits `workflow-slug/task-name[:version]` to the task name; a bare
/// name is kept. A local server runs the one version it has registered.
pub fn task_name_from_slug(slug: &str) -> &str {
    task_slug_parts(slug).0
}

/// `workflow-slug/task-name:version` as (task name, version): the version
/// a client asked for, when it names one.
pub fn task_slug_parts(slug: &str) -> (&str, Option<&str>) {
    let name = slug.rsplit_once('/').map_or(slug, |(_, name)| name);
    match name.split_once(':') {
        Some((name, version)) if !version.is_empty() => (name, Some(version)),
        _ => (name.trim_end_matches(':'), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn slugs_name_tasks_with_or_without_a_workflow_and_a_version() {
        assert_eq!(task_slug_parts("square"), ("square", None));
        assert_eq!(task_slug_parts("my-workflow/square"), ("square", None));
        assert_eq!(
            task_slug_parts("my-workflow/square:v3"),
            ("square", Some("v3"))
        );
        assert_eq!(task_slug_parts("square:12"), ("square", Some("12")));
        assert_eq!(task_name_from_slug("wf/square:"), "square");
    }

    #[test]
    fn details_flatten_the_run() {
        let at = DateTime::parse_from_rfc3339("2026-01-02T03:04:05.123Z")
            .unwrap()
            .to_utc();
        let details = TaskRunDetails {
            run: TaskRun {
                id: "trn-1".into(),
                task_id: "tsk-square".into(),
                status: TaskRunStatus::Completed,
                parent_task_run_id: String::new(),
                parent_task_attempt: None,
                root_task_run_id: "trn-1".into(),
                task_version: None,
                trace_id: None,
                retries: 0,
                attempts: vec![TaskAttempt {
                    attempt: 1,
                    status: TaskRunStatus::Completed,
                    enqueued_at: None,
                    started_at: at,
                    task_run_id: None,
                    completed_at: Some(at),
                    error: None,
                    results: Some(json!([4]).into()),
                    node_id: None,
                    peak_memory_bytes: None,
                    cpu_time_ms: None,
                }],
                started_at: Some(at),
                completed_at: Some(at),
            },
            results: json!([4]).into(),
            input: json!([2]).into(),
            error: None,
        };
        let v = serde_json::to_value(&details).unwrap();
        assert_eq!(v["taskId"], "tsk-square");
        assert_eq!(v["parentTaskRunId"], "");
        assert_eq!(v["results"], json!([4]));
        assert_eq!(v["attempts"][0]["startedAt"], "2026-01-02T03:04:05.123Z");
        assert!(v.get("error").is_none());
        let back: TaskRunDetails = serde_json::from_value(v).unwrap();
        assert_eq!(back, details);
    }

    #[test]
    fn slugs() {
        assert_eq!(task_name_from_slug("my-workflow/square"), "square");
        assert_eq!(task_name_from_slug("square"), "square");
    }

    #[test]
    fn statuses() {
        for s in [
            "pending",
            "running",
            "completed",
            "succeeded",
            "failed",
            "canceled",
            "paused",
        ] {
            assert_eq!(TaskRunStatus::parse(s).unwrap().as_str(), s);
        }
        assert!(TaskRunStatus::Canceled.is_terminal());
        assert!(!TaskRunStatus::Pending.is_terminal());
    }
}

/// Weft's extension, `GET /weft/v1/nodes`: a node of the cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Node {
    pub id: String,
    pub host: String,
    pub started_at: DateTime<Utc>,
    pub last_heartbeat_at: DateTime<Utc>,
    /// Set once the node left or was declared dead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gone_at: Option<DateTime<Utc>>,
    /// Attempts it runs now.
    pub running_attempts: u32,
}

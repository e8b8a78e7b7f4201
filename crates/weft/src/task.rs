//! Task handles and task options.

use std::fmt;
use std::marker::PhantomData;

use weft_protocol::socket as wire;

/// A typed handle on a task: its name, and the types of its input `I` and
/// output `O`.
///
/// [`Workflows::task`](crate::Workflows::task) returns one when it registers
/// a task; a parent passes it to [`TaskContext::run`](crate::TaskContext::run)
/// to run the task as a child. A handle is `Copy`, so closures capture it
/// without clones, and it can be a `const` next to the function it names:
///
/// ```
/// use weft::{Task, TaskContext, TaskResult};
///
/// pub const SQUARE: Task<i64, i64> = Task::named("square");
///
/// async fn square(_ctx: TaskContext, x: i64) -> TaskResult<i64> {
///     Ok(x * x)
/// }
///
/// let mut app = weft::Workflows::new();
/// app.register(SQUARE, square);
/// ```
///
/// A handle may also name a task this program does not define (one written
/// with another SDK, say), with `serde_json::Value` for types not modelled in
/// Rust.
pub struct Task<I, O> {
    name: &'static str,
    // `fn(I) -> O`: the handle neither owns an `I` nor an `O`, so it is
    // `Send`, `Sync` and `Copy` whatever they are.
    types: PhantomData<fn(I) -> O>,
}

impl<I, O> Task<I, O> {
    /// A handle on the task called `name`.
    pub const fn named(name: &'static str) -> Self {
        Self {
            name,
            types: PhantomData,
        }
    }

    /// The task's name, as registered and as runs name it.
    pub const fn name(&self) -> &'static str {
        self.name
    }
}

impl<I, O> Clone for Task<I, O> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<I, O> Copy for Task<I, O> {}

impl<I, O> fmt::Debug for Task<I, O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Task").field("name", &self.name).finish()
    }
}

impl<I, O> PartialEq for Task<I, O> {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl<I, O> Eq for Task<I, O> {}

/// How a failed task is retried: after a failed attempt, up to
/// `max_retries` more attempts, the wait before retry `k` (from 0) being
/// `wait_duration_ms * factor^k`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Retry {
    /// Attempts allowed after the first.
    pub max_retries: u32,
    /// The wait before the first retry, in milliseconds.
    pub wait_duration_ms: u64,
    /// How much each wait grows over the one before.
    pub factor: f64,
}

impl Retry {
    /// The backoff factor when none is given (the Python SDK's).
    pub const DEFAULT_FACTOR: f64 = 1.5;

    /// Up to `max_retries` retries, waiting `wait_duration_ms` before the
    /// first and growing by [`Retry::DEFAULT_FACTOR`].
    ///
    /// ```
    /// let retry = weft::Retry::new(3, 500).factor(2.0);
    /// assert_eq!(retry.max_retries, 3);
    /// ```
    pub const fn new(max_retries: u32, wait_duration_ms: u64) -> Self {
        Self {
            max_retries,
            wait_duration_ms,
            factor: Self::DEFAULT_FACTOR,
        }
    }

    /// Sets how much each wait grows over the one before.
    pub const fn factor(mut self, factor: f64) -> Self {
        self.factor = factor;
        self
    }

    pub(crate) fn to_wire(self) -> wire::RetryPolicy {
        wire::RetryPolicy {
            max_retries: Some(i64::from(self.max_retries)),
            wait_duration_ms: Some(self.wait_duration_ms),
            factor: Some(self.factor),
        }
    }
}

/// A task's options, sent when the app registers its tasks. Unset fields
/// take the app's defaults (see [`Workflows::default_retry`](crate::Workflows::default_retry)).
///
/// ```
/// use weft::{Retry, TaskOptions};
///
/// let options = TaskOptions::new()
///     .retry(Retry::new(3, 250))
///     .timeout_seconds(60)
///     .plan("starter")
///     .parameters(["path", "limit"]);
/// # let _ = options;
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskOptions {
    /// How failed attempts are retried.
    pub retry: Option<Retry>,
    /// How long one attempt may run.
    pub timeout_seconds: Option<u64>,
    /// The instance type an attempt runs on (`starter`, `standard`, `pro`, …).
    pub plan: Option<String>,
    /// The names of the task's parameters, reported at registration. When
    /// unset they are the field names of a struct input; tuple and scalar
    /// inputs report none.
    pub parameters: Option<Vec<String>>,
}

impl TaskOptions {
    /// No options: the app's defaults apply.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the retry policy.
    pub fn retry(mut self, retry: Retry) -> Self {
        self.retry = Some(retry);
        self
    }

    /// Sets the timeout of one attempt.
    pub fn timeout_seconds(mut self, seconds: u64) -> Self {
        self.timeout_seconds = Some(seconds);
        self
    }

    /// Sets the instance type.
    pub fn plan(mut self, plan: impl Into<String>) -> Self {
        self.plan = Some(plan.into());
        self
    }

    /// Names the task's parameters, in order.
    pub fn parameters<S: Into<String>>(mut self, names: impl IntoIterator<Item = S>) -> Self {
        self.parameters = Some(names.into_iter().map(Into::into).collect());
        self
    }

    /// These options, with unset fields taken from `defaults`.
    pub(crate) fn or(self, defaults: &TaskOptions) -> TaskOptions {
        TaskOptions {
            retry: self.retry.or(defaults.retry),
            timeout_seconds: self.timeout_seconds.or(defaults.timeout_seconds),
            plan: self.plan.or_else(|| defaults.plan.clone()),
            parameters: self.parameters,
        }
    }

    /// The wire options (parameters travel apart).
    pub(crate) fn to_wire(&self) -> wire::TaskOptions {
        wire::TaskOptions {
            retry: self.retry.map(Retry::to_wire),
            timeout_seconds: self.timeout_seconds.map(|t| t.min(i64::MAX as u64) as i64),
            plan: self.plan.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn handles_are_copy_and_compare_by_name() {
        const SQUARE: Task<i64, i64> = Task::named("square");
        let copy = SQUARE;
        assert_eq!(copy, SQUARE);
        assert_eq!(SQUARE.name(), "square");
        assert_eq!(format!("{SQUARE:?}"), r#"Task { name: "square" }"#);
    }

    #[test]
    fn options_take_unset_fields_from_defaults() {
        let defaults = TaskOptions::new()
            .retry(Retry::new(2, 100))
            .timeout_seconds(300)
            .plan("starter");
        let options = TaskOptions::new().timeout_seconds(5).or(&defaults);
        assert_eq!(options.retry, Some(Retry::new(2, 100)));
        assert_eq!(options.timeout_seconds, Some(5));
        assert_eq!(options.plan.as_deref(), Some("starter"));
    }

    #[test]
    fn options_on_the_wire() {
        let options = TaskOptions::new()
            .retry(Retry::new(3, 250).factor(2.0))
            .timeout_seconds(60);
        assert_eq!(
            serde_json::to_value(options.to_wire()).unwrap(),
            json!({"retry": {"max_retries": 3, "wait_duration_ms": 250, "factor": 2.0},
                   "timeout_seconds": 60})
        );
        assert_eq!(
            serde_json::to_value(TaskOptions::new().to_wire()).unwrap(),
            json!({})
        );
        assert_eq!(Retry::new(1, 1).factor, 1.5);
    }
}

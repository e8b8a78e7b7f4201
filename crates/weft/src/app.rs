//! The app: a set of named tasks, each with its options and its function.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use weft_protocol::socket::{TaskDefinition, TaskParameter};

use crate::payload::{decode_input, encode_output, struct_field_names};
use crate::{Retry, Task, TaskContext, TaskOptions};

/// The error a task returns: any error type converts into it with `?`
/// (including `anyhow::Error`, `String` and `&str`).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What a task function returns.
pub type TaskResult<T> = Result<T, BoxError>;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// A task function with its input and output types erased to JSON.
pub(crate) type Handler =
    Arc<dyn Fn(TaskContext, Value) -> BoxFuture<Result<Value, Failure>> + Send + Sync>;

/// Why an attempt failed, as the error callback reports it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Failure {
    pub details: String,
    pub stack_trace: Option<String>,
}

impl Failure {
    /// A task's error, with its sources' messages (see [`error_chain`]).
    pub fn from_error(err: &(dyn std::error::Error + 'static)) -> Self {
        Self {
            details: error_chain(err),
            stack_trace: None,
        }
    }
}

/// An error's message followed by its sources' messages, each once: many
/// errors repeat their source in their own message, others (reqwest's,
/// anyhow's contexts) say why only in their sources.
pub(crate) fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

/// Why an app's tasks could not be combined.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DefinitionError {
    /// Two apps define a task of the same name.
    #[error("task '{0}' is defined in more than one app")]
    DuplicateTask(String),
}

/// One registered task.
#[derive(Clone)]
pub(crate) struct Registered {
    pub name: &'static str,
    pub options: TaskOptions,
    pub handler: Handler,
}

impl Registered {
    fn definition(&self) -> TaskDefinition {
        let parameters = self.options.parameters.as_ref().map(|names| {
            names
                .iter()
                .map(|name| TaskParameter {
                    name: name.clone(),
                    has_default: false,
                    type_: None,
                    default_value: None,
                })
                .collect()
        });
        TaskDefinition {
            name: self.name.to_string(),
            options: Some(self.options.to_wire()),
            parameters,
        }
    }
}

/// A workflow app: tasks registered by name, each with its options, and
/// app-wide defaults for those options.
///
/// Register tasks with [`task`](Workflows::task) (or
/// [`register`](Workflows::register) for a `const` [`Task`] handle), then
/// hand control to the runtime with [`main`](Workflows::main) or
/// [`start`](Workflows::start):
///
/// ```no_run
/// use weft::{Retry, TaskContext, TaskResult, Workflows};
///
/// async fn square(_ctx: TaskContext, x: i64) -> TaskResult<i64> {
///     Ok(x * x)
/// }
///
/// fn main() {
///     let mut app = Workflows::new().default_retry(Retry::new(2, 1_000));
///     app.task("square", square);
///     app.main();
/// }
/// ```
#[derive(Clone, Default)]
pub struct Workflows {
    tasks: Vec<Registered>,
    defaults: TaskOptions,
    /// [`main`](Workflows::main) builds a multi-threaded runtime.
    pub(crate) multi_threaded: bool,
}

impl fmt::Debug for Workflows {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Workflows")
            .field("tasks", &self.task_names().collect::<Vec<_>>())
            .field("defaults", &self.defaults)
            .field("multi_threaded", &self.multi_threaded)
            .finish()
    }
}

impl Workflows {
    /// An app with no tasks and no defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes [`main`](Workflows::main) run the worker on tokio's
    /// multi-threaded runtime (a worker thread per CPU) instead of on the
    /// current thread alone: for tasks that spread work over
    /// `tokio::spawn` or call `tokio::task::block_in_place`. Each task
    /// process then pays for starting its threads.
    pub fn multi_threaded(mut self) -> Self {
        self.multi_threaded = true;
        self
    }

    /// The retry policy of tasks registered after this call that set none.
    pub fn default_retry(mut self, retry: Retry) -> Self {
        self.defaults.retry = Some(retry);
        self
    }

    /// The timeout of tasks registered after this call that set none.
    pub fn default_timeout_seconds(mut self, seconds: u64) -> Self {
        self.defaults.timeout_seconds = Some(seconds);
        self
    }

    /// The plan of tasks registered after this call that set none.
    pub fn default_plan(mut self, plan: impl Into<String>) -> Self {
        self.defaults.plan = Some(plan.into());
        self
    }

    /// Registers `f` as the task `name` with the app's default options, and
    /// returns its handle.
    ///
    /// `f` takes the [`TaskContext`] and the task's input `I`, and returns a
    /// future of [`TaskResult<O>`]. `I` reads the wire input (see
    /// [`payload::decode_input`](crate::payload::decode_input)): a tuple for
    /// positional arguments, a serde-derived struct for named or positional
    /// ones, a single type for one argument, `()` for none. `O` is any
    /// `Serialize` type.
    ///
    /// ```
    /// # use weft::{TaskResult, Workflows};
    /// let mut app = Workflows::new();
    /// let add = app.task("add", |_ctx, (a, b): (i64, i64)| async move { Ok(a + b) });
    /// assert_eq!(add.name(), "add");
    /// ```
    ///
    /// # Panics
    ///
    /// If the app already has a task called `name`: a task name is fixed in
    /// the code, so this is a programming error, found at startup.
    pub fn task<I, O, F, Fut>(&mut self, name: impl Into<String>, f: F) -> Task<I, O>
    where
        I: DeserializeOwned + Send + 'static,
        O: Serialize + Send + 'static,
        F: Fn(TaskContext, I) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = TaskResult<O>> + Send + 'static,
    {
        self.task_with(name, TaskOptions::new(), f)
    }

    /// [`task`](Workflows::task) with options; unset fields take the app's
    /// defaults.
    ///
    /// ```
    /// # use weft::{Retry, TaskOptions, Workflows};
    /// let mut app = Workflows::new();
    /// app.task_with(
    ///     "fetch",
    ///     TaskOptions::new().retry(Retry::new(3, 500)).timeout_seconds(60),
    ///     |_ctx, url: String| async move { Ok(url.len()) },
    /// );
    /// ```
    ///
    /// # Panics
    ///
    /// If the app already has a task called `name`.
    pub fn task_with<I, O, F, Fut>(
        &mut self,
        name: impl Into<String>,
        options: TaskOptions,
        f: F,
    ) -> Task<I, O>
    where
        I: DeserializeOwned + Send + 'static,
        O: Serialize + Send + 'static,
        F: Fn(TaskContext, I) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = TaskResult<O>> + Send + 'static,
    {
        // Task names live as long as the program: leaking one string per
        // registered task lets handles be `Copy`.
        let name: &'static str = Box::leak(name.into().into_boxed_str());
        self.register_with(Task::named(name), options, f)
    }

    /// Registers `f` as the task `task` names, with the app's default
    /// options. The handle's types must match the function's.
    ///
    /// # Panics
    ///
    /// If the app already has a task of that name.
    pub fn register<I, O, F, Fut>(&mut self, task: Task<I, O>, f: F) -> Task<I, O>
    where
        I: DeserializeOwned + Send + 'static,
        O: Serialize + Send + 'static,
        F: Fn(TaskContext, I) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = TaskResult<O>> + Send + 'static,
    {
        self.register_with(task, TaskOptions::new(), f)
    }

    /// [`register`](Workflows::register) with options.
    ///
    /// # Panics
    ///
    /// If the app already has a task of that name.
    pub fn register_with<I, O, F, Fut>(
        &mut self,
        task: Task<I, O>,
        options: TaskOptions,
        f: F,
    ) -> Task<I, O>
    where
        I: DeserializeOwned + Send + 'static,
        O: Serialize + Send + 'static,
        F: Fn(TaskContext, I) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = TaskResult<O>> + Send + 'static,
    {
        let name = task.name();
        assert!(
            !self.has_task(name),
            "task '{name}' is registered twice in one Workflows app"
        );
        let mut options = options.or(&self.defaults);
        if options.parameters.is_none() {
            options.parameters = struct_field_names::<I>()
                .map(|fields| fields.iter().map(|f| f.to_string()).collect());
        }
        self.tasks.push(Registered {
            name,
            options,
            handler: erase(name, f),
        });
        task
    }

    /// Combines apps defined in several modules into one. Tasks keep the
    /// options they were registered with.
    ///
    /// ```
    /// # use weft::Workflows;
    /// let mut a = Workflows::new();
    /// a.task("one", |_ctx, ()| async { Ok(1) });
    /// let mut b = Workflows::new();
    /// b.task("two", |_ctx, ()| async { Ok(2) });
    /// let app = Workflows::from_workflows([a, b.clone()]).unwrap();
    /// assert_eq!(app.task_names().collect::<Vec<_>>(), ["one", "two"]);
    /// assert!(Workflows::from_workflows([app, b]).is_err());
    /// ```
    pub fn from_workflows(
        apps: impl IntoIterator<Item = Workflows>,
    ) -> Result<Self, DefinitionError> {
        let mut combined = Self::new();
        for app in apps {
            combined.merge(app)?;
        }
        Ok(combined)
    }

    /// Adds another app's tasks to this one; fails, adding none, if a name
    /// is taken.
    pub fn merge(&mut self, other: Workflows) -> Result<(), DefinitionError> {
        if let Some(taken) = other.tasks.iter().find(|t| self.has_task(t.name)) {
            return Err(DefinitionError::DuplicateTask(taken.name.to_string()));
        }
        self.tasks.extend(other.tasks);
        Ok(())
    }

    /// The names of the registered tasks, in registration order.
    pub fn task_names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.tasks.iter().map(|t| t.name)
    }

    /// The options a task was registered with, defaults applied.
    pub fn task_options(&self, name: &str) -> Option<&TaskOptions> {
        self.find(name).map(|t| &t.options)
    }

    /// The tasks as `POST /register-tasks` lists them.
    pub fn definitions(&self) -> Vec<TaskDefinition> {
        self.tasks.iter().map(Registered::definition).collect()
    }

    fn has_task(&self, name: &str) -> bool {
        self.find(name).is_some()
    }

    pub(crate) fn find(&self, name: &str) -> Option<&Registered> {
        self.tasks.iter().find(|t| t.name == name)
    }
}

/// Erases a task function's types: JSON input in, JSON array of results out.
fn erase<I, O, F, Fut>(name: &'static str, f: F) -> Handler
where
    I: DeserializeOwned + Send + 'static,
    O: Serialize + Send + 'static,
    F: Fn(TaskContext, I) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = TaskResult<O>> + Send + 'static,
{
    Arc::new(move |ctx, input| {
        let future = decode_input::<I>(&input).map(|input| f(ctx, input));
        Box::pin(async move {
            let output = future
                .map_err(|err| Failure {
                    details: format!("invalid input for task '{name}': {err}"),
                    stack_trace: None,
                })?
                .await
                .map_err(|err| Failure::from_error(err.as_ref()))?;
            encode_output(&output).map_err(|err| Failure {
                details: format!("the result of task '{name}' does not serialise to JSON: {err}"),
                stack_trace: None,
            })
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;

    #[derive(Serialize, Deserialize)]
    struct Greeting {
        name: String,
        excited: bool,
    }

    fn app() -> Workflows {
        let mut app = Workflows::new()
            .default_retry(Retry::new(2, 100))
            .default_plan("starter");
        app.task("square", |_ctx, x: i64| async move { Ok(x * x) });
        app.task_with(
            "greet",
            TaskOptions::new().timeout_seconds(30),
            |_ctx, g: Greeting| async move {
                Ok(format!(
                    "hello {}{}",
                    g.name,
                    if g.excited { "!" } else { "" }
                ))
            },
        );
        app.task_with(
            "fail",
            TaskOptions::new()
                .retry(Retry::new(0, 0))
                .parameters(["why"]),
            |_ctx, (why,): (String,)| async move { Err::<(), _>(why.into()) },
        );
        app
    }

    async fn call(app: &Workflows, name: &str, input: Value) -> Result<Value, Failure> {
        let handler = app.find(name).unwrap().handler.clone();
        handler(TaskContext::detached(name), input).await
    }

    #[test]
    fn registration_lists_names_options_and_parameters() {
        let defs = serde_json::to_value(app().definitions()).unwrap();
        assert_eq!(
            defs,
            json!([
                {"name": "square",
                 "options": {"retry": {"max_retries": 2, "wait_duration_ms": 100, "factor": 1.5},
                             "plan": "starter"}},
                {"name": "greet",
                 "options": {"retry": {"max_retries": 2, "wait_duration_ms": 100, "factor": 1.5},
                             "timeout_seconds": 30, "plan": "starter"},
                 "parameters": [{"name": "name", "has_default": false},
                                {"name": "excited", "has_default": false}]},
                {"name": "fail",
                 "options": {"retry": {"max_retries": 0, "wait_duration_ms": 0, "factor": 1.5},
                             "plan": "starter"},
                 "parameters": [{"name": "why", "has_default": false}]},
            ])
        );
    }

    #[tokio::test]
    async fn handlers_read_positional_and_named_inputs() {
        let app = app();
        assert_eq!(call(&app, "square", json!([3])).await.unwrap(), json!([9]));
        assert_eq!(
            call(&app, "square", json!({"x": 4})).await.unwrap(),
            json!([16])
        );
        let named = json!({"name": "ada", "excited": true});
        assert_eq!(
            call(&app, "greet", named).await.unwrap(),
            json!(["hello ada!"])
        );
        let positional = json!(["bob", false]);
        assert_eq!(
            call(&app, "greet", positional).await.unwrap(),
            json!(["hello bob"])
        );
    }

    #[tokio::test]
    async fn handler_errors_become_failures() {
        let app = app();
        let failure = call(&app, "fail", json!(["no reason"])).await.unwrap_err();
        assert_eq!(failure.details, "no reason");
        let failure = call(&app, "square", json!(["three"])).await.unwrap_err();
        assert!(
            failure
                .details
                .starts_with("invalid input for task 'square': invalid type"),
            "{}",
            failure.details
        );
    }

    #[test]
    fn error_details_follow_the_source_chain_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("reading config")]
        struct Outer(#[source] std::io::Error);
        #[derive(Debug, thiserror::Error)]
        #[error("reading config: {0}")]
        struct Repeats(#[source] std::io::Error);
        let io = || std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        assert_eq!(
            Failure::from_error(&Outer(io())).details,
            "reading config: no such file"
        );
        assert_eq!(
            Failure::from_error(&Repeats(io())).details,
            "reading config: no such file"
        );
    }

    #[test]
    #[should_panic(expected = "task 'square' is registered twice")]
    fn a_duplicate_name_panics() {
        let mut app = app();
        app.task("square", |_ctx, x: i64| async move { Ok(x) });
    }

    #[test]
    fn merging_refuses_duplicates() {
        let mut other = Workflows::new();
        other.task("cube", |_ctx, x: i64| async move { Ok(x * x * x) });
        other.task("square", |_ctx, x: i64| async move { Ok(x) });
        let mut combined = app();
        assert_eq!(
            combined.merge(other),
            Err(DefinitionError::DuplicateTask("square".into()))
        );
        assert_eq!(combined.task_names().count(), 3, "nothing added");
        let mut other = Workflows::new();
        other.task("cube", |_ctx, x: i64| async move { Ok(x * x * x) });
        let combined = Workflows::from_workflows([app(), other]).unwrap();
        assert_eq!(
            combined.task_names().collect::<Vec<_>>(),
            ["square", "greet", "fail", "cube"]
        );
        // Tasks keep the defaults of the app they came from.
        assert_eq!(
            combined.task_options("square").unwrap().plan.as_deref(),
            Some("starter")
        );
        assert_eq!(combined.task_options("cube").unwrap().plan, None);
    }
}

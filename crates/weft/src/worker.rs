//! The worker: what the program does when the runtime starts it, in
//! register mode (list the tasks) or run mode (run one attempt of one task).

use std::any::Any;
use std::cell::RefCell;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::Once;

use futures::FutureExt as _;
use serde_json::Value;
use weft_protocol::payload::{TaskInput, encode_base64_json};
use weft_protocol::socket::{
    CallbackRequest, ENV_MODE, ENV_SOCKET_PATH, Mode, RegisterTasksRequest, TaskComplete, TaskError,
};

use crate::app::Failure;
use crate::context::TaskRunMetadata;
use crate::socket::{SocketClient, SocketError};
use crate::{TaskContext, Workflows};

/// Why the worker stopped without doing its job.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// `RENDER_SDK_MODE` or `RENDER_SDK_SOCKET_PATH` is not set: the program
    /// was not started by a workflow runtime.
    #[error(
        "{variable} is not set: this program is a workflow worker, meant to be started by a \
         runtime (for instance `weft dev -- <this program>`); its tasks are: {tasks}"
    )]
    MissingEnv {
        variable: &'static str,
        tasks: String,
    },
    /// `RENDER_SDK_MODE` is neither `register` nor `run`.
    #[error("{ENV_MODE} is '{0}', expected 'register' or 'run'")]
    UnknownMode(String),
    /// The task socket failed (after retries).
    #[error(transparent)]
    Socket(#[from] SocketError),
    /// The task failed; the error callback that reported it was sent.
    #[error("task '{task}' failed: {message}")]
    TaskFailed { task: String, message: String },
}

impl Workflows {
    /// Runs the worker as the runtime asks through the environment:
    /// `RENDER_SDK_MODE` (`register` or `run`) and `RENDER_SDK_SOCKET_PATH`.
    ///
    /// In register mode it lists the app's tasks; in run mode it fetches
    /// one task name and input, runs the task, and reports the outcome. A
    /// task that returns an error or panics is reported with an error
    /// callback, and then this returns [`WorkerError::TaskFailed`].
    pub async fn start(&self) -> Result<(), WorkerError> {
        let tasks = || self.task_names().collect::<Vec<_>>().join(", ");
        let mode = std::env::var(ENV_MODE).map_err(|_| WorkerError::MissingEnv {
            variable: ENV_MODE,
            tasks: tasks(),
        })?;
        let socket_path =
            std::env::var_os(ENV_SOCKET_PATH).ok_or_else(|| WorkerError::MissingEnv {
                variable: ENV_SOCKET_PATH,
                tasks: tasks(),
            })?;
        let mode = match mode.as_str() {
            "register" => Mode::Register,
            "run" => Mode::Run,
            _ => return Err(WorkerError::UnknownMode(mode)),
        };
        self.start_with(mode, socket_path).await
    }

    /// Runs the worker in `mode` against the task socket at `socket_path`,
    /// without reading the environment.
    pub async fn start_with(
        &self,
        mode: Mode,
        socket_path: impl Into<PathBuf>,
    ) -> Result<(), WorkerError> {
        self.serve(mode, SocketClient::new(socket_path)).await
    }

    /// Blocking [`start`](Workflows::start): builds a tokio runtime, runs
    /// the worker, and exits the process with status 1 (after printing why
    /// to stderr) if it fails. Meant to be the last line of `main`.
    ///
    /// The runtime runs on this thread alone, as the official SDKs run a
    /// task on one event loop: a task process runs one attempt, and work
    /// spreads over processes (subtasks). Blocking or CPU-heavy work goes
    /// to [`tokio::task::spawn_blocking`], which has its own threads. Apps
    /// whose tasks want tokio's worker threads (parallel `tokio::spawn`,
    /// `block_in_place`) ask for them with
    /// [`multi_threaded`](Workflows::multi_threaded), or call
    /// [`start`](Workflows::start) from a runtime of their own.
    pub fn main(&self) {
        let runtime = self.runtime().expect("a tokio runtime starts");
        if let Err(err) = runtime.block_on(self.start()) {
            eprintln!("error: {err}");
            std::process::exit(1);
        }
    }

    /// The runtime [`main`](Workflows::main) runs the worker on.
    fn runtime(&self) -> std::io::Result<tokio::runtime::Runtime> {
        // One thread by default: a no-op task process spent a sixth of its
        // CPU starting, waking and joining worker threads (BENCHMARKS.md,
        // "The runtime, per Rust child").
        let mut builder = if self.multi_threaded {
            tokio::runtime::Builder::new_multi_thread()
        } else {
            tokio::runtime::Builder::new_current_thread()
        };
        builder.enable_all().build()
    }

    pub(crate) async fn serve(&self, mode: Mode, socket: SocketClient) -> Result<(), WorkerError> {
        match mode {
            Mode::Register => {
                let request = RegisterTasksRequest {
                    tasks: self.definitions(),
                };
                socket.register_tasks(&request).await?;
                Ok(())
            }
            Mode::Run => self.run_attempt(socket).await,
        }
    }

    async fn run_attempt(&self, socket: SocketClient) -> Result<(), WorkerError> {
        let started_at_ns = chrono::Utc::now().timestamp_nanos_opt();
        let input = socket.get_input(started_at_ns).await?;
        let metadata = TaskRunMetadata::from_input(&input);
        let task_name = metadata.task_name.clone();
        let outcome = match TaskInput::from_base64(&input.input) {
            Ok(args) => {
                let ctx = TaskContext::new(metadata, socket.clone());
                #[cfg(feature = "otel")]
                {
                    use opentelemetry::context::FutureExt as _;
                    let parent = crate::context::attempt_trace();
                    self.execute(ctx, args.into_value())
                        .with_context(parent)
                        .await
                }
                #[cfg(not(feature = "otel"))]
                self.execute(ctx, args.into_value()).await
            }
            Err(err) => Err(Failure {
                details: format!("invalid input for task '{task_name}': {err}"),
                stack_trace: None,
            }),
        };
        let callback = match &outcome {
            Ok(results) => CallbackRequest {
                complete: Some(TaskComplete {
                    output: encode_base64_json(results),
                }),
                error: None,
            },
            Err(failure) => CallbackRequest {
                complete: None,
                error: Some(TaskError {
                    details: failure.details.clone(),
                    stack_trace: failure.stack_trace.clone(),
                }),
            },
        };
        socket.post_callback(&callback).await?;
        outcome
            .map(drop)
            .map_err(|failure| WorkerError::TaskFailed {
                task: task_name,
                message: failure.details,
            })
    }

    /// Runs the named task to its JSON array of results, turning a missing
    /// task, an error or a panic into a failure.
    async fn execute(&self, ctx: TaskContext, input: Value) -> Result<Value, Failure> {
        let name = ctx.task_name().to_string();
        let Some(task) = self.find(&name) else {
            let details = if name.is_empty() {
                "no task name in the input".to_string()
            } else {
                format!("Task '{name}' not found")
            };
            return Err(Failure {
                details,
                stack_trace: None,
            });
        };
        let handler = task.handler.clone();
        install_panic_hook();
        // The async block defers the call, so a panic in the function's
        // synchronous part is caught along with those of its future.
        match AssertUnwindSafe(async move { handler(ctx, input).await })
            .catch_unwind()
            .await
        {
            Ok(outcome) => outcome,
            Err(payload) => Err(Failure {
                details: format!("panicked: {}", panic_message(payload.as_ref())),
                stack_trace: LAST_PANIC.with(|p| p.borrow_mut().take()),
            }),
        }
    }
}

thread_local! {
    /// Where and how the last panic on this thread happened. A panic unwinds
    /// on the thread that polls the panicking future, which is the thread
    /// that catches it, so the catcher finds it here.
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Records each panic's location (and backtrace, when `RUST_BACKTRACE` asks
/// for one) for the error callback, then defers to the previous hook so the
/// panic is still printed.
fn install_panic_hook() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let mut trace = match info.location() {
                Some(at) => format!("panicked at {}:{}:{}", at.file(), at.line(), at.column()),
                None => "panicked".to_string(),
            };
            let backtrace = std::backtrace::Backtrace::capture();
            if backtrace.status() == std::backtrace::BacktraceStatus::Captured {
                trace.push_str(&format!("\n{backtrace}"));
            }
            LAST_PANIC.with(|p| *p.borrow_mut() = Some(trace));
            previous(info);
        }));
    });
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-string payload".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn app() -> Workflows {
        let mut app = Workflows::new();
        app.task("square", |_ctx, x: i64| async move { Ok(x * x) });
        app.task("boom", |_ctx, ()| async move {
            if true {
                panic!("kaboom {}", 42);
            }
            Ok(())
        });
        app.task(
            "boom_early",
            |_ctx, ()| -> std::future::Ready<crate::TaskResult<()>> { panic!("before the future") },
        );
        app
    }

    #[tokio::test]
    async fn panics_become_failures_with_their_location() {
        let app = app();
        let failure = app
            .execute(TaskContext::detached("boom"), json!([]))
            .await
            .unwrap_err();
        assert_eq!(failure.details, "panicked: kaboom 42");
        let trace = failure.stack_trace.unwrap();
        assert!(
            trace.starts_with("panicked at crates/weft/src/worker.rs:"),
            "{trace}"
        );
        let failure = app
            .execute(TaskContext::detached("boom_early"), json!([]))
            .await
            .unwrap_err();
        assert_eq!(failure.details, "panicked: before the future");
    }

    #[tokio::test]
    async fn a_missing_task_is_a_failure() {
        let failure = app()
            .execute(TaskContext::detached("cube"), json!([2]))
            .await
            .unwrap_err();
        assert_eq!(failure.details, "Task 'cube' not found");
    }

    #[tokio::test]
    async fn results_are_wrapped() {
        let results = app()
            .execute(TaskContext::detached("square"), json!([7]))
            .await
            .unwrap();
        assert_eq!(results, json!([49]));
    }

    #[test]
    fn main_runs_on_this_thread_unless_the_app_asks_for_workers() {
        use tokio::runtime::RuntimeFlavor;
        let flavor = |app: Workflows| app.runtime().unwrap().handle().runtime_flavor();
        assert_eq!(flavor(app()), RuntimeFlavor::CurrentThread);
        assert_eq!(flavor(app().multi_threaded()), RuntimeFlavor::MultiThread);
        // Blocking work still has threads of its own.
        let rt = app().runtime().unwrap();
        let other = rt.block_on(async { tokio::task::spawn_blocking(std::thread::current).await });
        assert_ne!(other.unwrap().id(), std::thread::current().id());
    }
}

//! The supervisor: the mechanics of one attempt. It opens the attempt's
//! task socket, starts its process with the executor, and waits for the
//! process to report, exit, time out or be killed; it decides nothing about
//! the run, which is the coordinator's part.

use std::sync::Arc;
use std::time::Duration;

use crate::attempt::{Attempt, AttemptHost};
use crate::executor::{Executor, ExitReason};
use crate::logs::{LogBudget, LogSink, Source};
use crate::{RuntimeConfig, RuntimeError, task_socket};

/// Runs attempts' processes. One per runtime.
pub struct Supervisor {
    executor: Executor,
    logs: LogSink,
    exit_grace: Duration,
    max_log_bytes: u64,
    routes: task_socket::AttemptRoutes,
}

/// How an attempt's process ended, from the supervisor's side.
#[derive(Debug)]
pub enum AttemptExit {
    /// It reported (or another report came first, a timeout's say).
    Reported,
    /// It was killed because its run was canceled or the runtime stops.
    Canceled,
    /// It failed without reporting: this is why.
    Failed(String),
}

impl Supervisor {
    /// Prepares the private socket directory and the executor.
    pub fn new(config: &RuntimeConfig, logs: LogSink) -> Result<Self, RuntimeError> {
        Ok(Self {
            executor: Executor::new(config)?,
            logs,
            exit_grace: config.exit_grace,
            max_log_bytes: config.max_log_bytes,
            routes: task_socket::AttemptRoutes::new(config.max_payload_bytes),
        })
    }

    /// The executor, for registration runs.
    pub fn executor(&self) -> &Executor {
        &self.executor
    }

    /// Runs `attempt` until its process is gone. `stored_log_bytes` is what
    /// earlier attempts of the run have stored already.
    pub async fn run(
        &self,
        attempt: &Arc<Attempt>,
        host: Arc<dyn AttemptHost>,
        timeout: Option<Duration>,
        stored_log_bytes: u64,
    ) -> AttemptExit {
        let socket_path = self.executor.socket_path(&attempt.socket_name());
        let server = match self.routes.serve(&socket_path, host, attempt.clone()) {
            Ok(server) => server,
            Err(e) => {
                attempt.close();
                return AttemptExit::Failed(format!(
                    "could not open the task socket {}: {e}",
                    socket_path.display()
                ));
            }
        };
        let source = Source {
            run_id: attempt.run.id.clone(),
            task_name: attempt.run.task_name.clone(),
            attempt: attempt.number,
            budget: LogBudget::new(self.max_log_bytes, stored_log_bytes),
        };
        let exit = self
            .executor
            .run_attempt(
                attempt,
                &socket_path,
                &self.logs,
                source,
                timeout,
                self.exit_grace,
            )
            .await;
        attempt.close();
        server.abort();
        let _ = std::fs::remove_file(&socket_path);
        if attempt.was_reported() {
            return AttemptExit::Reported;
        }
        match exit {
            ExitReason::Reported => AttemptExit::Reported,
            ExitReason::Canceled => AttemptExit::Canceled,
            ExitReason::Lost(e) => AttemptExit::Failed(format!(
                "the task process ended before reporting a result: {e}"
            )),
            ExitReason::SpawnFailed(e) => AttemptExit::Failed(format!(
                "could not start the start command {}: {e}",
                shell_words::join(self.executor.start_command())
            )),
            ExitReason::TimedOut(t) => AttemptExit::Failed(format!(
                "timed out after {} s (timeout_seconds); the task's processes were killed",
                t.as_secs()
            )),
            ExitReason::Exited(status) => AttemptExit::Failed(format!(
                "the task process exited ({status}) before reporting a result"
            )),
        }
    }
}

//! The client's errors.

use weft_protocol::api::TaskRunDetails;

use crate::app::error_chain;

/// Why a REST call, or a run it waited for, failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server refused the request (4xx, including 429), with its message.
    #[error("{operation} failed with status {status}: {message}")]
    Client {
        operation: &'static str,
        status: u16,
        message: String,
    },
    /// The server failed (5xx), or could not be reached.
    #[error("{operation} failed{}: {message}", status.map(|s| format!(" with status {s}")).unwrap_or_default())]
    Server {
        operation: &'static str,
        /// `None` for a network error.
        status: Option<u16>,
        message: String,
    },
    /// The run ended with an error. The details hold the whole run.
    #[error("task run {task_run_id} failed: {message}")]
    TaskRunFailed {
        task_run_id: String,
        /// The run's error, as the task reported it.
        message: String,
        details: Box<TaskRunDetails>,
    },
    /// The request got no answer in time.
    #[error("{operation} timed out: {message}")]
    Timeout {
        operation: &'static str,
        message: String,
    },
    /// The answer was not what the API returns.
    #[error("{operation} failed: unexpected response: {message}")]
    Decode {
        operation: &'static str,
        message: String,
    },
    /// A task input that does not serialise to JSON.
    #[error("task input does not serialise to JSON: {0}")]
    InvalidInput(#[source] serde_json::Error),
    /// The client is not configured (no API key, a malformed URL).
    #[error("{0}")]
    Config(String),
}

impl Error {
    /// The HTTP status of a refused or failed request.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Client { status, .. } => Some(*status),
            Self::Server { status, .. } => *status,
            _ => None,
        }
    }

    /// Whether the server said the thing asked for does not exist (404).
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }

    /// Maps a transport error of `operation`.
    pub(crate) fn from_reqwest(operation: &'static str, err: reqwest::Error) -> Self {
        // reqwest's own message says little ("error sending request");
        // its sources say why (connection refused, …).
        let message = error_chain(&err);
        if err.is_timeout() {
            Self::Timeout { operation, message }
        } else if err.is_decode() {
            Self::Decode { operation, message }
        } else if err.is_builder() {
            Self::Config(format!("{operation}: {message}"))
        } else {
            Self::Server {
                operation,
                status: None,
                message,
            }
        }
    }

    /// Maps an error answer of `operation`.
    pub(crate) fn from_status(operation: &'static str, status: u16, message: String) -> Self {
        if (400..500).contains(&status) {
            Self::Client {
                operation,
                status,
                message,
            }
        } else {
            Self::Server {
                operation,
                status: Some(status),
                message,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_kinds() {
        let err = Error::from_status("get task run", 404, "task run trn-x not found".into());
        assert!(matches!(err, Error::Client { status: 404, .. }));
        assert!(err.is_not_found());
        assert_eq!(
            err.to_string(),
            "get task run failed with status 404: task run trn-x not found"
        );
        assert!(matches!(
            Error::from_status("x", 429, String::new()),
            Error::Client { status: 429, .. }
        ));
        let err = Error::from_status("start task", 503, "busy".into());
        assert!(matches!(
            err,
            Error::Server {
                status: Some(503),
                ..
            }
        ));
        assert_eq!(err.to_string(), "start task failed with status 503: busy");
        let network = Error::Server {
            operation: "list tasks",
            status: None,
            message: "connection refused".into(),
        };
        assert_eq!(network.to_string(), "list tasks failed: connection refused");
        assert_eq!(network.status(), None);
    }

    #[tokio::test]
    async fn network_errors_are_server_errors_naming_the_cause() {
        // Nothing listens on port 9 (discard) on a test machine.
        let err = reqwest::get("http://127.0.0.1:9/").await.unwrap_err();
        let err = Error::from_reqwest("list tasks", err);
        assert!(matches!(err, Error::Server { status: None, .. }), "{err}");
        assert!(err.to_string().starts_with("list tasks failed: "), "{err}");
    }
}

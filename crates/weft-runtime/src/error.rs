//! What can go wrong in the runtime: what stops it ([`RuntimeError`]), and
//! why a request about a run was refused ([`RunError`]).

use weft_store::{RunState, StoreError};

/// What can stop the runtime.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Config(String),
    #[error("task registration failed: {0}")]
    Registration(String),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// Why a request to start or change a run was refused.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("task not found: {0}")]
    UnknownTask(String),
    #[error("task run not found: {0}")]
    UnknownRun(String),
    #[error("task run {id} has already ended ({status})")]
    AlreadyEnded { id: String, status: RunState },
    #[error("{0}")]
    BadInput(String),
    #[error("{what} is {size} bytes, over the limit of {limit} bytes")]
    TooLarge {
        what: &'static str,
        size: usize,
        limit: usize,
    },
    #[error("the attempt that asked has already ended")]
    AttemptEnded,
    #[error(
        "this weft node fenced itself (it could not renew its lease on the database): its attempts are stopped and run again"
    )]
    Fenced,
    #[error(
        "subtask {task:?} would be nested {depth} deep, past the limit of {limit} (--max-depth): {chain}"
    )]
    TooDeep {
        task: String,
        depth: usize,
        limit: usize,
        chain: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

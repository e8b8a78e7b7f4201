use weft_store::StoreError;

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

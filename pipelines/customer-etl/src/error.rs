//! The errors that fail a whole run (bad rows never do: they become rejects).

use std::path::PathBuf;

/// Why a run, or one step of it, failed. Every variant names the input that caused it.
#[derive(Debug, thiserror::Error)]
pub enum EtlError {
    /// One of the four input files does not exist.
    #[error("input file {path} is missing")]
    MissingFile {
        /// The file that was expected.
        path: PathBuf,
    },
    /// An input file has no header row (it is empty or holds only blank lines).
    #[error("input file {path} has no header row")]
    MissingHeader {
        /// The file without a header.
        path: PathBuf,
    },
    /// An input file's header lacks a column the contract requires.
    #[error("input file {path} has no column `{column}` in its header")]
    MissingColumn {
        /// The file whose header is incomplete.
        path: PathBuf,
        /// The required column that was not found.
        column: &'static str,
    },
    /// An input file is not valid UTF-8.
    #[error("input file {path} is not valid UTF-8 at byte offset {offset}")]
    InvalidUtf8 {
        /// The file.
        path: PathBuf,
        /// Absolute byte offset of the first invalid byte.
        offset: u64,
    },
    /// Reading or writing a file failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done, e.g. "reading".
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A work-directory file is not what the partition step writes.
    #[error("work file {path} is invalid: {detail}")]
    BadWorkFile {
        /// The offending file.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
    /// Writing Parquet failed.
    #[error("writing Parquet file {path}: {source}")]
    Parquet {
        /// The file being written.
        path: PathBuf,
        /// The underlying error.
        source: parquet::errors::ParquetError,
    },
    /// A run parameter is out of range.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

impl EtlError {
    /// An I/O error while doing `action` on `path`.
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        EtlError::Io {
            action,
            path: path.into(),
            source,
        }
    }

    /// A work-directory file that does not parse.
    pub(crate) fn bad_work_file(path: impl Into<PathBuf>, detail: impl Into<String>) -> Self {
        EtlError::BadWorkFile {
            path: path.into(),
            detail: detail.into(),
        }
    }
}

/// Result alias for this crate.
pub type Result<T, E = EtlError> = std::result::Result<T, E>;

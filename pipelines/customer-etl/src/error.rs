//! The errors that fail a whole run (bad rows never do: they become rejects).

use crate::location::Location;

/// Why a run, or one step of it, failed. Every variant names the input that caused it.
#[derive(Debug, thiserror::Error)]
pub enum EtlError {
    /// One of the four input files does not exist.
    #[error("input file {path} is missing")]
    MissingFile {
        /// The file that was expected.
        path: Location,
    },
    /// An input file has no header row (it is empty or holds only blank lines).
    #[error("input file {path} has no header row")]
    MissingHeader {
        /// The file without a header.
        path: Location,
    },
    /// An input file's header lacks a column the contract requires.
    #[error("input file {path} has no column `{column}` in its header")]
    MissingColumn {
        /// The file whose header is incomplete.
        path: Location,
        /// The required column that was not found.
        column: &'static str,
    },
    /// An input file is not valid UTF-8.
    #[error("input file {path} is not valid UTF-8 at byte offset {offset}")]
    InvalidUtf8 {
        /// The file.
        path: Location,
        /// Absolute byte offset of the first invalid byte.
        offset: u64,
    },
    /// Reading or writing a file failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done, e.g. "reading".
        action: &'static str,
        /// The file or directory.
        path: Location,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A work-directory file is not what the partition step writes.
    #[error("work file {path} is invalid: {detail}")]
    BadWorkFile {
        /// The offending file.
        path: Location,
        /// What is wrong with it.
        detail: String,
    },
    /// Writing Parquet failed.
    #[error("writing Parquet file {path}: {source}")]
    Parquet {
        /// The file being written.
        path: Location,
        /// The underlying error.
        source: parquet::errors::ParquetError,
    },
    /// A file or object that should be there is not.
    #[error("{path} does not exist")]
    NotFound {
        /// What was looked for.
        path: Location,
    },
    /// An `s3://` URL names a bucket the store does not have.
    #[error("the bucket {url} does not exist (or is not visible with these credentials)")]
    NoSuchBucket {
        /// `s3://bucket`.
        url: String,
    },
    /// An `s3://` URL was given but no credentials are in the environment.
    #[error(
        "no credentials for {url}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_WEB_IDENTITY_TOKEN_FILE and AWS_ROLE_ARN, AWS_METADATA_ENDPOINT for an instance profile, or AWS_SKIP_SIGNATURE=true for a public bucket)"
    )]
    MissingCredentials {
        /// The URL that needed them.
        url: String,
    },
    /// The store refused the credentials or the request.
    #[error("access to {url} was refused ({code}): check the credentials and the bucket's policy")]
    AccessDenied {
        /// The URL.
        url: String,
        /// The store's error code, e.g. `InvalidAccessKeyId`.
        code: &'static str,
    },
    /// The store's endpoint did not answer.
    #[error("cannot reach the object store at {endpoint} for {url}: {detail}")]
    Unreachable {
        /// The URL.
        url: String,
        /// `AWS_ENDPOINT_URL`, or Amazon S3.
        endpoint: String,
        /// The connection error.
        detail: String,
    },
    /// The store's configuration (from the `AWS_*` variables) is unusable.
    #[error("cannot use {url}: {detail}")]
    StoreConfig {
        /// The URL.
        url: String,
        /// What object_store said.
        detail: String,
    },
    /// Any other object-store failure.
    #[error("{action} {path}: {detail}")]
    Store {
        /// What was being done, e.g. "reading".
        action: &'static str,
        /// The object.
        path: Location,
        /// The store's error.
        detail: String,
    },
    /// A run parameter is out of range.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

impl EtlError {
    /// An I/O error while doing `action` on `path`.
    pub fn io(action: &'static str, path: impl Into<Location>, source: std::io::Error) -> Self {
        EtlError::Io {
            action,
            path: path.into(),
            source,
        }
    }

    /// A work-directory file that does not parse.
    pub(crate) fn bad_work_file(path: impl Into<Location>, detail: impl Into<String>) -> Self {
        EtlError::BadWorkFile {
            path: path.into(),
            detail: detail.into(),
        }
    }
}

impl EtlError {
    /// Whether the error says a file or object is not there.
    pub fn is_not_found(&self) -> bool {
        match self {
            EtlError::NotFound { .. } | EtlError::MissingFile { .. } => true,
            EtlError::Io { source, .. } => source.kind() == std::io::ErrorKind::NotFound,
            _ => false,
        }
    }
}

/// Result alias for this crate.
pub type Result<T, E = EtlError> = std::result::Result<T, E>;

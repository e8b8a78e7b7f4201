//! Reading and writing [`Location`]s: local files and objects in a bucket.
//!
//! Every step reads and writes through this module, so the same code runs
//! on one machine's disk and on an object store that every node reaches:
//!
//! - reads are by byte range ([`InputFile::read_range`], ranged GETs on a
//!   store), so the partition step reads only its chunk of an input and a
//!   shard only its own segments of each part;
//! - writes go through [`OutputFile`], atomic at the file or object level:
//!   a local file is written under a hidden temporary name and renamed into
//!   place; an object is uploaded in one PUT, or, past
//!   [`upload_part_bytes`], as a multipart upload that becomes visible only
//!   when it completes. A retried step replaces its object; a killed one
//!   leaves no object under the final name (only an incomplete multipart
//!   upload, which the bucket's `AbortIncompleteMultipartUpload` lifecycle
//!   rule expires).
//!
//! Stores are configured from the standard AWS environment variables
//! (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`,
//! `AWS_REGION`, `AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP`, ...) through
//! `object_store`'s `AmazonS3Builder::from_env`, one client per bucket per
//! process. The pipeline's steps are synchronous (they run on plain threads,
//! or in `spawn_blocking` in a task process), so object requests run on a
//! small private tokio runtime, started the first time an object is used:
//! local runs never start it.

use crate::error::{EtlError, Result};
use crate::location::{Location, ObjectUrl};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectKey;
use object_store::{
    BackoffConfig, GetOptions, GetRange, ObjectStore, PutPayload, RetryConfig, WriteMultipart,
};
use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::{Read, Write};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// Reading and writing (see the module docs).
impl Location {
    /// Opens the file or object for reading by byte ranges. A missing local
    /// file fails here; a missing object fails at the first read.
    pub fn open(&self) -> Result<InputFile> {
        let inner = match self {
            Location::Local(path) => {
                InputInner::Local(File::open(path).map_err(|e| EtlError::io("opening", self, e))?)
            }
            Location::Object(url) => {
                let (store, key) = object(url)?;
                InputInner::Object { store, key }
            }
        };
        Ok(InputFile {
            location: self.clone(),
            inner,
            size: OnceLock::new(),
        })
    }

    /// The whole file or object.
    pub fn read_all(&self) -> Result<Bytes> {
        match self {
            Location::Local(path) => std::fs::read(path)
                .map(Bytes::from)
                .map_err(|e| EtlError::io("reading", self, e)),
            Location::Object(url) => {
                let (store, key) = object(url)?;
                block_on(async { store.get(&key).await?.bytes().await })
                    .map_err(|e| store_error("reading", self, e))
            }
        }
    }

    /// Writes `bytes` atomically (see [`OutputFile`]), replacing what was there.
    pub fn write_atomically(&self, bytes: &[u8]) -> Result<()> {
        let mut out = OutputFile::create(self)?;
        out.write_all(bytes)
            .map_err(|e| EtlError::io("writing", self, e))?;
        out.commit()
    }

    /// Removes the file or object; one that is not there is fine.
    pub fn remove_file(&self) -> Result<()> {
        match self {
            Location::Local(path) => self.unless_missing(std::fs::remove_file(path)),
            Location::Object(url) => {
                let (store, key) = object(url)?;
                match block_on(store.delete(&key)) {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                    Err(e) => Err(store_error("removing", self, e)),
                }
            }
        }
    }

    /// Removes the directory, or every object under the prefix, with all it
    /// holds; one that is not there is fine.
    pub fn remove_tree(&self) -> Result<()> {
        match self {
            Location::Local(path) => self.unless_missing(std::fs::remove_dir_all(path)),
            Location::Object(url) => {
                let (store, prefix) = object(url)?;
                block_on(async {
                    // `list` matches whole segments: `out/.work` never takes `out/.workshop`.
                    let keys = store
                        .list(Some(&prefix))
                        .map_ok(|meta| meta.location)
                        .boxed();
                    store.delete_stream(keys).try_collect::<Vec<_>>().await
                })
                .map(drop)
                .map_err(|e| store_error("removing", self, e))
            }
        }
    }

    /// Empties the directory (or prefix) and makes sure it exists.
    pub fn reset_dir(&self) -> Result<()> {
        self.remove_tree()?;
        self.create_dir_all()
    }

    /// Creates the local directory and its parents (objects need none).
    pub fn create_dir_all(&self) -> Result<()> {
        match self {
            Location::Local(path) => std::fs::create_dir_all(path)
                .map_err(|e| EtlError::io("creating directory", self, e)),
            Location::Object(_) => Ok(()),
        }
    }

    /// Checks, before anything is written or removed, that this output
    /// location can be used: a local directory is created; a bucket is
    /// probed (see [`Location::check_input_dir`]).
    pub fn check_output(&self) -> Result<()> {
        match self {
            Location::Local(_) => self.create_dir_all(),
            Location::Object(url) => self.probe(url),
        }
    }

    /// Checks that this input directory is there: a local directory, or on
    /// a store a bucket that answers, with one listing request that proves
    /// the endpoint answers, the credentials are accepted and the bucket
    /// exists (a missing object is named when it is read).
    pub fn check_input_dir(&self) -> Result<()> {
        match self {
            Location::Local(dir) if !dir.is_dir() => Err(EtlError::InvalidArgument(format!(
                "the data directory {} does not exist",
                dir.display()
            ))),
            Location::Local(_) => Ok(()),
            Location::Object(url) => self.probe(url),
        }
    }

    /// One listing request under the prefix (a HEAD on a missing bucket
    /// answers 404 with no body, which would read as a missing object).
    fn probe(&self, url: &ObjectUrl) -> Result<()> {
        let (store, prefix) = object(url)?;
        block_on(store.list_with_delimiter(Some(&prefix)))
            .map(drop)
            .map_err(|e| store_error("listing", self, e))
    }

    /// `result`, with "not found" as success: removing what is not there.
    fn unless_missing(&self, result: std::io::Result<()>) -> Result<()> {
        match result {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(EtlError::io("removing", self, e))
            }
            _ => Ok(()),
        }
    }

    /// Whether the file or object exists.
    pub fn exists(&self) -> Result<bool> {
        match self {
            Location::Local(path) => Ok(path.exists()),
            Location::Object(url) => {
                let (store, key) = object(url)?;
                match block_on(store.head(&key)) {
                    Ok(_) => Ok(true),
                    Err(e) => match store_error("reading", self, e) {
                        EtlError::NotFound { .. } => Ok(false),
                        other => Err(other),
                    },
                }
            }
        }
    }
}

/// An input opened for reads by byte range.
pub struct InputFile {
    location: Location,
    inner: InputInner,
    /// The length, once asked for (a HEAD request on a store).
    size: OnceLock<u64>,
}

enum InputInner {
    Local(File),
    Object {
        store: Arc<dyn ObjectStore>,
        key: ObjectKey,
    },
}

impl InputFile {
    /// Where it is.
    pub fn location(&self) -> &Location {
        &self.location
    }

    /// Its length in bytes (for an object, a HEAD request the first time,
    /// unless a tail read already learned it).
    pub fn size(&self) -> Result<u64> {
        if let Some(&size) = self.size.get() {
            return Ok(size);
        }
        let size = match &self.inner {
            InputInner::Local(file) => file
                .metadata()
                .map(|m| m.len())
                .map_err(|e| EtlError::io("reading", &self.location, e))?,
            InputInner::Object { store, key } => block_on(store.head(key))
                .map(|meta| meta.size)
                .map_err(|e| store_error("reading", &self.location, e))?,
        };
        Ok(*self.size.get_or_init(|| size))
    }

    /// The bytes of `range` (one ranged GET for an object).
    pub fn read_range(&self, range: Range<u64>) -> Result<Bytes> {
        if range.is_empty() {
            return Ok(Bytes::new());
        }
        match &self.inner {
            InputInner::Local(file) => {
                let mut buf = vec![0u8; (range.end - range.start) as usize];
                file.read_exact_at(&mut buf, range.start)
                    .map_err(|e| EtlError::io("reading", &self.location, e))?;
                Ok(Bytes::from(buf))
            }
            InputInner::Object { store, key } => block_on(store.get_range(key, range))
                .map_err(|e| store_error("reading", &self.location, e)),
        }
    }

    /// The bytes of each range, in order. On a store, nearby ranges are
    /// fetched in one request and the rest concurrently.
    pub fn read_ranges(&self, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        match &self.inner {
            InputInner::Local(_) => ranges.iter().map(|r| self.read_range(r.clone())).collect(),
            InputInner::Object { store, key } => {
                // A zero-length range is an error to S3: serve those here.
                let wanted: Vec<Range<u64>> =
                    ranges.iter().filter(|r| !r.is_empty()).cloned().collect();
                let mut got = block_on(store.get_ranges(key, &wanted))
                    .map_err(|e| store_error("reading", &self.location, e))?
                    .into_iter();
                Ok(ranges
                    .iter()
                    .map(|r| {
                        if r.is_empty() {
                            Bytes::new()
                        } else {
                            got.next().unwrap_or_default()
                        }
                    })
                    .collect())
            }
        }
    }

    /// The last `n` bytes (or all, when shorter) and the total length: one
    /// request for an object (a suffix range).
    pub fn read_tail(&self, n: u64) -> Result<(Bytes, u64)> {
        match &self.inner {
            InputInner::Local(_) => {
                let len = self.size()?;
                let start = len.saturating_sub(n);
                Ok((self.read_range(start..len)?, len))
            }
            InputInner::Object { store, key } => {
                let options = GetOptions {
                    range: Some(GetRange::Suffix(n)),
                    ..GetOptions::default()
                };
                block_on(async {
                    let got = store.get_opts(key, options).await?;
                    let size = got.meta.size;
                    Ok((got.bytes().await?, size))
                })
                .map_err(|e| store_error("reading", &self.location, e))
                .inspect(|&(_, size)| {
                    let _ = self.size.set(size);
                })
            }
        }
    }

    /// A sequential reader from byte `start` to the end: the file itself, or
    /// for an object ranged GETs of [`SEQUENTIAL_BLOCK`] bytes, with the next
    /// [`SEQUENTIAL_AHEAD`] always in flight (one connection's rate is what
    /// limits a single stream from S3).
    pub fn sequential(&self, start: u64) -> Result<Box<dyn Read + Send>> {
        match &self.inner {
            InputInner::Local(file) => {
                let mut file = file
                    .try_clone()
                    .map_err(|e| EtlError::io("opening", &self.location, e))?;
                std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(start))
                    .map_err(|e| EtlError::io("reading", &self.location, e))?;
                Ok(Box::new(file))
            }
            InputInner::Object { store, key } => Ok(Box::new(ObjectReader {
                store: store.clone(),
                key: key.clone(),
                len: self.size()?,
                next_start: start,
                current: Bytes::new(),
                in_flight: VecDeque::new(),
            })),
        }
    }
}

/// Bytes per request of [`InputFile::sequential`] on an object.
pub const SEQUENTIAL_BLOCK: u64 = 8 << 20;
/// Requests [`InputFile::sequential`] keeps in flight on an object.
pub const SEQUENTIAL_AHEAD: usize = 3;

struct ObjectReader {
    store: Arc<dyn ObjectStore>,
    key: ObjectKey,
    len: u64,
    /// Start of the next block to request.
    next_start: u64,
    current: Bytes,
    in_flight: VecDeque<tokio::task::JoinHandle<object_store::Result<Bytes>>>,
}

impl ObjectReader {
    fn request_ahead(&mut self) {
        while self.in_flight.len() < SEQUENTIAL_AHEAD && self.next_start < self.len {
            let end = (self.next_start + SEQUENTIAL_BLOCK).min(self.len);
            let (store, key) = (self.store.clone(), self.key.clone());
            let range = self.next_start..end;
            self.next_start = end;
            self.in_flight
                .push_back(io_runtime().spawn(async move { store.get_range(&key, range).await }));
        }
    }
}

impl Drop for ObjectReader {
    fn drop(&mut self) {
        for request in &self.in_flight {
            request.abort();
        }
    }
}

impl Read for ObjectReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.current.is_empty() {
            self.request_ahead();
            let Some(block) = self.in_flight.pop_front() else {
                return Ok(0);
            };
            self.current = block_on(block)
                .map_err(std::io::Error::other)?
                .map_err(std::io::Error::from)?;
            self.request_ahead();
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// A file or object being written. Nothing appears under the final name
/// until [`OutputFile::commit`]; dropped without it, a local temporary file
/// is removed and a multipart upload aborted.
pub struct OutputFile {
    location: Location,
    inner: Option<OutputInner>,
}

enum OutputInner {
    Local {
        file: File,
        temp: PathBuf,
        path: PathBuf,
        sync: bool,
    },
    Object {
        store: Arc<dyn ObjectStore>,
        key: ObjectKey,
        pending: Vec<u8>,
        upload: Option<WriteMultipart>,
    },
}

/// Parts of one multipart upload in flight at once.
const PARTS_IN_FLIGHT: usize = 4;

/// Environment variable: the size of one multipart upload part in MiB
/// (default 8, at least 1; S3 and most S3-compatible stores refuse parts
/// under 5). Smaller objects are one PUT.
pub const UPLOAD_PART_MIB_ENV: &str = "CUSTOMER_ETL_UPLOAD_PART_MIB";

/// The size of one part of a multipart upload (and the size from which an
/// object is uploaded in parts), from [`UPLOAD_PART_MIB_ENV`].
pub fn upload_part_bytes() -> usize {
    static BYTES: OnceLock<usize> = OnceLock::new();
    *BYTES.get_or_init(|| {
        std::env::var(UPLOAD_PART_MIB_ENV)
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(8)
            .max(1)
            << 20
    })
}

impl OutputFile {
    /// Starts writing `location`; a local file is synced to disk on commit.
    pub fn create(location: &Location) -> Result<Self> {
        Self::create_with(location, true)
    }

    /// Like [`OutputFile::create`], without syncing a local file: for work
    /// files, which a reader checks and a rerun rewrites.
    pub fn create_scratch(location: &Location) -> Result<Self> {
        Self::create_with(location, false)
    }

    fn create_with(location: &Location, sync: bool) -> Result<Self> {
        let inner = match location {
            Location::Local(path) => {
                let temp = temp_path(path);
                let file = File::create(&temp).or_else(|e| {
                    // The directory may not exist yet: make it and try once more.
                    let dir = path
                        .parent()
                        .filter(|_| e.kind() == std::io::ErrorKind::NotFound);
                    let Some(dir) = dir else { return Err(e) };
                    std::fs::create_dir_all(dir)?;
                    File::create(&temp)
                });
                let file = file.map_err(|e| EtlError::io("creating", &temp, e))?;
                OutputInner::Local {
                    file,
                    temp,
                    path: path.clone(),
                    sync,
                }
            }
            Location::Object(url) => {
                let (store, key) = object(url)?;
                OutputInner::Object {
                    store,
                    key,
                    pending: Vec::new(),
                    upload: None,
                }
            }
        };
        Ok(OutputFile {
            location: location.clone(),
            inner: Some(inner),
        })
    }

    /// Where it goes.
    pub fn location(&self) -> &Location {
        &self.location
    }

    /// Makes the whole file or object visible under its name, replacing
    /// what was there: a rename, a PUT, or completing the multipart upload.
    pub fn commit(mut self) -> Result<()> {
        let location = self.location.clone();
        match self.inner.take().expect("an output is committed once") {
            OutputInner::Local {
                file,
                temp,
                path,
                sync,
            } => {
                if sync {
                    file.sync_data()
                        .map_err(|e| EtlError::io("syncing", &temp, e))?;
                }
                drop(file);
                std::fs::rename(&temp, &path).map_err(|e| EtlError::io("renaming", &temp, e))
            }
            OutputInner::Object {
                store,
                key,
                pending,
                upload,
            } => block_on(async move {
                match upload {
                    Some(mut upload) => {
                        upload.put(Bytes::from(pending));
                        upload.finish().await.map(drop)
                    }
                    None => store.put(&key, PutPayload::from(pending)).await.map(drop),
                }
            })
            .map_err(|e| store_error("uploading", &location, e)),
        }
    }

    /// Fault injection only: pushes what is written so far to the disk, or
    /// waits for the upload's parts in flight to land, so that a crash
    /// right after leaves a real half-written file or upload behind.
    pub fn flush_through(&mut self) -> Result<()> {
        match self.inner.as_mut() {
            Some(OutputInner::Local { file, temp, .. }) => file
                .sync_data()
                .map_err(|e| EtlError::io("syncing", &*temp, e)),
            Some(OutputInner::Object {
                upload: Some(upload),
                ..
            }) => block_on(upload.wait_for_capacity(0))
                .map_err(|e| store_error("uploading", &self.location, e)),
            _ => Ok(()),
        }
    }

    /// For an object past one part's size: starts the multipart upload (on
    /// first use) and hands it the buffered part.
    fn upload_pending(&mut self) -> std::io::Result<()> {
        let Some(OutputInner::Object {
            store,
            key,
            pending,
            upload,
        }) = self.inner.as_mut()
        else {
            return Ok(());
        };
        if upload.is_none() {
            let started = block_on(store.put_multipart(key)).map_err(std::io::Error::from)?;
            *upload = Some(WriteMultipart::new_with_chunk_size(
                started,
                upload_part_bytes(),
            ));
        }
        let upload = upload.as_mut().expect("started above");
        {
            // WriteMultipart spawns each part's request on the ambient runtime.
            let _runtime = io_runtime().enter();
            upload.put(Bytes::from(std::mem::take(pending)));
        }
        block_on(upload.wait_for_capacity(PARTS_IN_FLIGHT)).map_err(std::io::Error::from)
    }
}

impl Write for OutputFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self.inner.as_mut() {
            Some(OutputInner::Local { file, .. }) => file.write(buf),
            Some(OutputInner::Object { pending, .. }) => {
                pending.extend_from_slice(buf);
                if pending.len() >= upload_part_bytes() {
                    self.upload_pending()?;
                }
                Ok(buf.len())
            }
            None => Err(std::io::Error::other("the output is already committed")),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        match self.inner.as_mut() {
            Some(OutputInner::Local { file, .. }) => file.write_all(buf),
            _ => self.write(buf).map(drop),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self.inner.as_mut() {
            Some(OutputInner::Local { file, .. }) => file.flush(),
            _ => Ok(()),
        }
    }
}

impl Drop for OutputFile {
    fn drop(&mut self) {
        match self.inner.take() {
            Some(OutputInner::Local { file, temp, .. }) => {
                drop(file);
                let _ = std::fs::remove_file(temp);
            }
            Some(OutputInner::Object {
                upload: Some(upload),
                ..
            }) => {
                let _ = block_on(upload.abort());
            }
            _ => {}
        }
    }
}

/// The temporary name a local file is written under before
/// [`OutputFile::commit`] renames it into place: `dir/.name.tmp`, hidden
/// from globs like `profiles/*.csv`. The name is fixed, so a retried step
/// truncates its failed attempt's file.
pub fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp"))
}

/// The runtime object requests run on; see the module docs.
fn io_runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("etl-object-io")
            .enable_all()
            .build()
            .expect("the object-store I/O runtime starts")
    })
}

/// Runs `future` on the I/O runtime from synchronous code (a plain thread
/// or a `spawn_blocking` one, never an async task).
fn block_on<F: Future>(future: F) -> F::Output {
    io_runtime().block_on(future)
}

/// The variables that give `object_store` credentials without asking the
/// instance metadata service, which it falls back to (and which, off EC2,
/// only times out).
fn has_credentials() -> bool {
    let set = |name: &str| std::env::var_os(name).is_some_and(|v| !v.is_empty());
    (set("AWS_ACCESS_KEY_ID") && set("AWS_SECRET_ACCESS_KEY"))
        || (set("AWS_WEB_IDENTITY_TOKEN_FILE") && set("AWS_ROLE_ARN"))
        || set("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
        || set("AWS_CONTAINER_CREDENTIALS_FULL_URI")
        || set("AWS_METADATA_ENDPOINT")
        || std::env::var("AWS_SKIP_SIGNATURE").is_ok_and(|v| v.eq_ignore_ascii_case("true"))
}

/// The client for `url`'s bucket, made once per process from the environment.
fn store_for(url: &ObjectUrl) -> Result<Arc<dyn ObjectStore>> {
    static STORES: Mutex<Option<HashMap<String, Arc<dyn ObjectStore>>>> = Mutex::new(None);
    let mut stores = STORES.lock().unwrap_or_else(|e| e.into_inner());
    let stores = stores.get_or_insert_with(HashMap::new);
    if let Some(store) = stores.get(url.bucket()) {
        return Ok(store.clone());
    }
    if !has_credentials() {
        return Err(EtlError::MissingCredentials {
            url: url.to_string(),
        });
    }
    // Fail in seconds rather than minutes on a dead endpoint, and still
    // ride out a brief outage or throttling.
    let retry = RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            base: 2.0,
        },
        max_retries: 4,
        retry_timeout: Duration::from_secs(60),
    };
    let store = AmazonS3Builder::from_env()
        .with_bucket_name(url.bucket())
        .with_retry(retry)
        .build()
        .map_err(|e| EtlError::StoreConfig {
            url: url.to_string(),
            detail: e.to_string(),
        })?;
    let store: Arc<dyn ObjectStore> = Arc::new(store);
    stores.insert(url.bucket().to_string(), store.clone());
    Ok(store)
}

/// Names an object-store failure by what the user must fix: the bucket,
/// the endpoint, the credentials, or a missing object.
fn store_error(action: &'static str, location: &Location, err: object_store::Error) -> EtlError {
    let bucket = match location {
        Location::Object(url) => url.bucket_url(),
        Location::Local(_) => String::new(),
    };
    // object_store keeps the S3 error code only in the message text (its
    // retry error type is private), so the codes are matched there; a
    // connection failure shows as the I/O error at the root of the chain.
    let mut text = err.to_string();
    let mut root = text.clone();
    let mut unreachable = false;
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(&err);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            unreachable |= matches!(
                io.kind(),
                ConnectionRefused
                    | ConnectionReset
                    | ConnectionAborted
                    | TimedOut
                    | HostUnreachable
                    | NetworkUnreachable
                    | AddrNotAvailable
                    | NotConnected
            );
        }
        root = cause.to_string();
        text.push_str(": ");
        text.push_str(&root);
        source = cause.source();
    }
    unreachable |= ["client error (Connect)", "dns error", "operation timed out"]
        .iter()
        .any(|sign| text.contains(sign));
    if text.contains("NoSuchBucket") {
        return EtlError::NoSuchBucket { url: bucket };
    }
    if unreachable {
        return EtlError::Unreachable {
            url: location.to_string(),
            endpoint: endpoint(),
            detail: root,
        };
    }
    for code in [
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "AccessDenied",
        "ExpiredToken",
    ] {
        if text.contains(code) {
            return EtlError::AccessDenied {
                url: location.to_string(),
                code,
            };
        }
    }
    if matches!(err, object_store::Error::NotFound { .. }) {
        return EtlError::NotFound {
            path: location.clone(),
        };
    }
    EtlError::Store {
        action,
        path: location.clone(),
        detail: err.to_string(),
    }
}

/// The endpoint requests go to, for messages.
fn endpoint() -> String {
    ["AWS_ENDPOINT_URL", "AWS_ENDPOINT"]
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
        .unwrap_or_else(|| "Amazon S3".to_string())
}

/// The client of `url`'s bucket and the object key of `url` (checked by
/// [`Location::parse`]: every segment is a valid object_store segment).
fn object(url: &ObjectUrl) -> Result<(Arc<dyn ObjectStore>, ObjectKey)> {
    Ok((store_for(url)?, ObjectKey::from(url.key())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn a_local_output_appears_only_on_commit_and_a_dropped_one_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let target = Location::Local(dir.path().join("sub/out.csv"));
        let mut out = OutputFile::create(&target).unwrap();
        out.write_all(b"a,b\n").unwrap();
        assert!(!dir.path().join("sub/out.csv").exists());
        out.commit().unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("sub/out.csv")).unwrap(),
            b"a,b\n"
        );
        let mut abandoned = OutputFile::create(&target).unwrap();
        abandoned.write_all(b"half").unwrap();
        drop(abandoned);
        assert_eq!(
            std::fs::read(dir.path().join("sub/out.csv")).unwrap(),
            b"a,b\n"
        );
        assert_eq!(
            std::fs::read_dir(dir.path().join("sub")).unwrap().count(),
            1
        );
    }

    #[test]
    fn local_reads_by_range_tail_and_sequence() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"0123456789").unwrap();
        let file = Location::Local(path).open().unwrap();
        assert_eq!(file.size().unwrap(), 10);
        assert_eq!(&file.read_range(2..5).unwrap()[..], b"234");
        assert_eq!(
            file.read_ranges(&[0..1, 4..4, 8..10]).unwrap(),
            vec![
                Bytes::from_static(b"0"),
                Bytes::new(),
                Bytes::from_static(b"89")
            ]
        );
        assert_eq!(file.read_tail(3).unwrap(), (Bytes::from_static(b"789"), 10));
        let mut rest = String::new();
        file.sequential(6)
            .unwrap()
            .read_to_string(&mut rest)
            .unwrap();
        assert_eq!(rest, "6789");
    }
}

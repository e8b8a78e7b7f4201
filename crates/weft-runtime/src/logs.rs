//! Task output: every line a task process writes is stored (for `GET
//! /v1/logs` and `weft runs logs`), streamed to subscribers, and echoed on
//! the terminal prefixed with its task name and run id.

use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::{broadcast, mpsc, oneshot};
use weft_store::{NewLogLine, Store};

/// Longest line kept; the rest is cut (a task printing a huge blob should
/// not balloon the database).
const MAX_LINE: usize = 16 * 1024;
/// Lines written per transaction at most.
const BATCH: usize = 512;

/// Whose output a stream is.
#[derive(Debug, Clone)]
pub struct Source {
    pub run_id: String,
    pub task_name: String,
    pub attempt: u32,
}

enum Msg {
    Line(NewLogLine),
    Flush(oneshot::Sender<()>),
}

/// Where task output goes. Cheap to clone.
#[derive(Clone)]
pub struct LogSink {
    tx: mpsc::UnboundedSender<Msg>,
    live: broadcast::Sender<Arc<NewLogLine>>,
    echo: bool,
}

impl LogSink {
    /// Starts the writer that stores lines in batches.
    pub fn start(store: Arc<dyn Store>, echo: bool) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let (live, _) = broadcast::channel(4096);
        tokio::spawn(write_batches(store, rx));
        Self { tx, live, echo }
    }

    /// New lines as they are written.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<NewLogLine>> {
        self.live.subscribe()
    }

    /// Reads `reader` line by line until it closes. Without a source (the
    /// registration run) lines are only echoed.
    pub fn capture(
        &self,
        reader: impl AsyncRead + Unpin + Send + 'static,
        source: Option<Source>,
        stream: &'static str,
    ) -> tokio::task::JoinHandle<()> {
        let sink = self.clone();
        tokio::spawn(async move {
            let mut reader = BufReader::new(reader);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match reader.read_until(b'\n', &mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                while matches!(buf.last(), Some(b'\n' | b'\r')) {
                    buf.pop();
                }
                buf.truncate(MAX_LINE);
                let message = String::from_utf8_lossy(&buf).into_owned();
                sink.line(source.as_ref(), stream, message);
            }
        })
    }

    fn line(&self, source: Option<&Source>, stream: &'static str, message: String) {
        if self.echo {
            let prefix = match source {
                Some(s) => format!("[{} {}]", s.task_name, s.run_id),
                None => "[register]".to_string(),
            };
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{prefix} {message}");
        }
        let Some(source) = source else { return };
        let line = NewLogLine {
            run_id: source.run_id.clone(),
            task_name: source.task_name.clone(),
            attempt: source.attempt,
            stream,
            at: Utc::now(),
            message,
        };
        let _ = self.live.send(Arc::new(line.clone()));
        let _ = self.tx.send(Msg::Line(line));
    }

    /// Waits until every line received so far is stored.
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Msg::Flush(done)).is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(10), wait).await;
        }
    }
}

async fn write_batches(store: Arc<dyn Store>, mut rx: mpsc::UnboundedReceiver<Msg>) {
    let mut batch = Vec::new();
    let mut flushed = Vec::new();
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                Msg::Line(line) => batch.push(line),
                Msg::Flush(done) => flushed.push(done),
            }
            if batch.len() < BATCH {
                next = rx.try_recv().ok();
            }
        }
        if let Err(e) = store.append_logs(std::mem::take(&mut batch)).await {
            tracing::warn!("could not store task output: {e}");
        }
        for done in flushed.drain(..) {
            let _ = done.send(());
        }
    }
}

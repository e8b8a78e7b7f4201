//! Task output: every line a task process writes is stored (for `GET
//! /v1/logs` and `weft runs logs`), streamed to subscribers, and echoed on
//! the terminal prefixed with its task name and run id.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::{broadcast, mpsc, oneshot};
use weft_store::{NewLogLine, Store};

use crate::terminal::{Terminal, escape_controls};

/// Longest line kept; the rest is cut (a task printing a huge blob should
/// not balloon the database).
const MAX_LINE: usize = 16 * 1024;
/// Lines written per transaction at most.
const BATCH: usize = 512;
/// Lines waiting to be stored at most: past it, a task's output waits (its
/// pipe fills and its writes block, as on a slow terminal) rather than
/// weft's memory growing.
const STORE_QUEUE: usize = 8192;

/// Whose output a stream is.
#[derive(Clone)]
pub struct Source {
    pub run_id: String,
    pub task_name: String,
    pub attempt: u32,
    /// What may still be stored of it.
    pub budget: Arc<LogBudget>,
}

/// How much of one attempt's output may still be stored: what its run's
/// `--max-log-bytes` leaves after earlier attempts. Lines past it are still
/// echoed and streamed live, but only counted; when the attempt's last
/// stream closes, one stored line says how much was not kept. A task that
/// prints without end thus cannot fill the disk.
pub struct LogBudget {
    cap: u64,
    state: std::sync::Mutex<BudgetState>,
}

#[derive(Default)]
struct BudgetState {
    left: u64,
    dropped_lines: u64,
    dropped_bytes: u64,
    /// Where the closing line goes (set when the first stream opens).
    sink: Option<(LogSink, NewLogLine)>,
}

impl LogBudget {
    /// A budget of `cap` bytes per run, of which `used` are stored already.
    pub fn new(cap: u64, used: u64) -> Arc<Self> {
        Arc::new(Self {
            cap,
            state: std::sync::Mutex::new(BudgetState {
                left: cap.saturating_sub(used),
                ..BudgetState::default()
            }),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, BudgetState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a line of `bytes` may be stored; counts it when not. Once
    /// one line is refused, every later one is, so what is stored is a
    /// whole beginning, not a patchwork.
    fn take(&self, bytes: u64) -> bool {
        let mut s = self.state();
        if s.dropped_lines == 0 && bytes <= s.left {
            s.left -= bytes;
            return true;
        }
        s.left = 0;
        s.dropped_lines += 1;
        s.dropped_bytes += bytes;
        false
    }
}

impl Drop for LogBudget {
    fn drop(&mut self) {
        let s = self.state();
        if s.dropped_lines == 0 {
            return;
        }
        if let Some((sink, template)) = &s.sink {
            let line = NewLogLine {
                at: Utc::now(),
                message: format!(
                    "weft: {} lines ({} bytes) of this attempt's output were not stored: the run reached --max-log-bytes ({} bytes)",
                    s.dropped_lines, s.dropped_bytes, self.cap
                ),
                ..template.clone()
            };
            // Not awaited (a drop cannot wait): when the queue is full, a
            // task takes it there.
            if let Err(mpsc::error::TrySendError::Full(msg)) = sink.tx.try_send(Msg::Line(line)) {
                let tx = sink.tx.clone();
                tokio::spawn(async move {
                    let _ = tx.send(msg).await;
                });
            }
        }
    }
}

enum Msg {
    Line(NewLogLine),
    Flush(oneshot::Sender<()>),
}

/// Where task output goes. Cheap to clone.
#[derive(Clone)]
pub struct LogSink {
    tx: mpsc::Sender<Msg>,
    live: broadcast::Sender<Arc<NewLogLine>>,
    terminal: Option<Terminal>,
    open: Arc<OpenStreams>,
}

/// Output streams still being read, per run. A process can write its last
/// lines after it has reported (Python flushes stdout at exit), so a run's
/// output is complete only once its streams have closed.
#[derive(Default)]
struct OpenStreams {
    per_run: std::sync::Mutex<std::collections::HashMap<String, usize>>,
    closed: tokio::sync::Notify,
}

impl OpenStreams {
    /// Counts a stream of `run_id` open until the guard is dropped.
    fn open(self: &Arc<Self>, run_id: &str) -> StreamGuard {
        let mut per_run = self.per_run.lock().unwrap_or_else(|p| p.into_inner());
        *per_run.entry(run_id.to_string()).or_default() += 1;
        StreamGuard {
            open: self.clone(),
            run_id: run_id.to_string(),
        }
    }

    fn close(&self, run_id: &str) {
        let mut per_run = self.per_run.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = per_run.get_mut(run_id) {
            *n -= 1;
            if *n == 0 {
                per_run.remove(run_id);
            }
        }
        drop(per_run);
        self.closed.notify_waiters();
    }

    fn any_open(&self, run_ids: &[String]) -> bool {
        let per_run = self.per_run.lock().unwrap_or_else(|p| p.into_inner());
        run_ids.iter().any(|id| per_run.contains_key(id))
    }
}

impl LogSink {
    /// Starts the writer that stores lines in batches.
    pub fn start(store: Arc<dyn Store>, echo: bool) -> Self {
        let (tx, rx) = mpsc::channel(STORE_QUEUE);
        let (live, _) = broadcast::channel(4096);
        tokio::spawn(write_batches(store, rx));
        Self {
            tx,
            live,
            terminal: echo.then(Terminal::stdout),
            open: Arc::default(),
        }
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
        // Closed however the read ends, even if the reader never runs.
        let open = source.as_ref().map(|s| self.open.open(&s.run_id));
        if let Some(s) = &source {
            let mut budget = s.budget.state();
            if budget.sink.is_none() {
                budget.sink = Some((
                    self.clone(),
                    NewLogLine {
                        run_id: s.run_id.clone(),
                        task_name: s.task_name.clone(),
                        attempt: s.attempt,
                        stream: "stderr",
                        at: Utc::now(),
                        message: String::new(),
                    },
                ));
            }
        }
        tokio::spawn(async move {
            // Dropped in this order: the budget's closing line is queued
            // before the stream counts as closed, so a reader waiting for
            // the run's output to settle gets it.
            let _open = open;
            let mut source = source;
            let mut reader = BufReader::new(reader);
            let mut buf = Vec::new();
            while let Ok(Some(cut)) = read_capped_line(&mut reader, &mut buf, MAX_LINE).await {
                while matches!(buf.last(), Some(b'\r')) {
                    buf.pop();
                }
                let mut message = String::from_utf8_lossy(&buf).into_owned();
                if cut > 0 {
                    message.push_str(&format!(" … [{cut} more bytes of this line cut]"));
                }
                sink.line(source.as_ref(), stream, message).await;
            }
            drop(source.take());
        })
    }

    /// Says on the terminal what became of a run (not stored: the run
    /// itself records it), with the same prefix as its output.
    pub fn announce(&self, task_name: &str, run_id: &str, what: &str) {
        if let Some(terminal) = &self.terminal {
            let prefix = format!("[{} {run_id}]", escape_controls(task_name));
            terminal.line(&prefix, what);
        }
    }

    /// One line on the terminal, when echoing.
    fn to_terminal(&self, prefix: &str, text: &str) {
        if let Some(terminal) = &self.terminal {
            terminal.line(prefix, text);
        }
    }

    async fn line(&self, source: Option<&Source>, stream: &'static str, message: String) {
        match source {
            Some(s) => self.announce(&s.task_name, &s.run_id, &message),
            None => self.to_terminal("[register]", &message),
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
        let store = source.budget.take(line.message.len() as u64);
        if store {
            let _ = self.live.send(Arc::new(line.clone()));
            let _ = self.tx.send(Msg::Line(line)).await;
        } else {
            let _ = self.live.send(Arc::new(line));
        }
    }

    /// Runs whose output is still being read.
    pub fn open_runs(&self) -> Vec<String> {
        let per_run = self.open.per_run.lock().unwrap_or_else(|p| p.into_inner());
        per_run.keys().cloned().collect()
    }

    /// Waits, at most `within`, until the output streams of these runs have
    /// closed: for runs that have ended, until their last lines are in.
    pub async fn settled(&self, run_ids: &[String], within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            // Registered before the check, so a close in between is not missed.
            let closed = self.open.closed.notified();
            if !self.open.any_open(run_ids) {
                return;
            }
            if tokio::time::timeout_at(deadline, closed).await.is_err() {
                return;
            }
        }
    }

    /// Waits until every line received so far is stored.
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Msg::Flush(done)).await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(10), wait).await;
        }
    }
}

/// Marks a stream closed when its reader goes away.
struct StreamGuard {
    open: Arc<OpenStreams>,
    run_id: String,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.open.close(&self.run_id);
    }
}

/// Makes stored timestamps strictly increase, to the microsecond (the
/// store's precision), in the order lines are stored. Lines of concurrent
/// processes reach the writer slightly out of time order, and several can
/// share a microsecond; a page of `GET /v1/logs` resumes at the time after
/// its last line, which is then exactly the next line, never past one.
fn order_times(batch: &mut [NewLogLine], last_at: &mut Option<DateTime<Utc>>) {
    for line in batch {
        let micros = line.at.timestamp_micros();
        let at = match *last_at {
            Some(last) if micros <= last.timestamp_micros() => {
                last + chrono::Duration::microseconds(1)
            }
            _ => DateTime::from_timestamp_micros(micros).unwrap_or(line.at),
        };
        line.at = at;
        *last_at = Some(at);
    }
}

/// Reads one line into `buf` (its `\n` left out), keeping at most `max`
/// bytes of it: the rest of a longer line is read and thrown away as it
/// comes, so a line without end costs `max` bytes of memory, not its
/// length. Returns how many bytes were cut, or `None` at the end.
async fn read_capped_line<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<Option<usize>> {
    buf.clear();
    let mut cut = 0;
    let mut read_any = false;
    loop {
        let chunk = reader.fill_buf().await?;
        if chunk.is_empty() {
            return Ok(read_any.then_some(cut));
        }
        read_any = true;
        let end = chunk.iter().position(|b| *b == b'\n');
        let line = &chunk[..end.unwrap_or(chunk.len())];
        let keep = max.saturating_sub(buf.len()).min(line.len());
        buf.extend_from_slice(&line[..keep]);
        cut += line.len() - keep;
        let used = line.len() + usize::from(end.is_some());
        reader.consume(used);
        if end.is_some() {
            return Ok(Some(cut));
        }
    }
}

async fn write_batches(store: Arc<dyn Store>, mut rx: mpsc::Receiver<Msg>) {
    let mut batch = Vec::new();
    let mut flushed = Vec::new();
    let mut last_at = None;
    // Lines lost since the store last took a batch.
    let mut lost = 0usize;
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
        order_times(&mut batch, &mut last_at);
        let lines = batch.len();
        match store.append_logs(std::mem::take(&mut batch)).await {
            Ok(()) if lost > 0 && lines > 0 => {
                tracing::info!("storing task output again; {lost} lines could not be stored");
                lost = 0;
            }
            Ok(()) => {}
            // Said once per fault (a full disk), not once per batch.
            Err(e) => {
                if lost == 0 {
                    tracing::warn!("could not store task output (it is still shown here): {e}");
                }
                lost += lines;
            }
        }
        for done in flushed.drain(..) {
            let _ = done.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_line_without_end_costs_only_what_is_kept() {
        let text: Vec<u8> = [b"short\n".as_slice(), &vec![b'x'; 100_000], b"\nnext\nlast"].concat();
        let mut reader = BufReader::with_capacity(4096, text.as_slice());
        let mut buf = Vec::new();
        let mut lines = Vec::new();
        while let Some(cut) = read_capped_line(&mut reader, &mut buf, 16).await.unwrap() {
            assert!(
                buf.capacity() <= 64,
                "the buffer grew to {}",
                buf.capacity()
            );
            lines.push((String::from_utf8(buf.clone()).unwrap(), cut));
        }
        assert_eq!(
            lines,
            [
                ("short".to_string(), 0),
                ("x".repeat(16), 100_000 - 16),
                ("next".to_string(), 0),
                ("last".to_string(), 0),
            ]
        );
    }

    #[test]
    fn a_budget_counts_what_earlier_attempts_stored_and_stops_at_the_first_refusal() {
        let budget = LogBudget::new(100, 60);
        assert!(budget.take(30));
        assert!(!budget.take(20), "60 + 30 + 20 is over 100");
        assert!(!budget.take(1), "nothing after the first refusal");
        let s = budget.state();
        assert_eq!((s.dropped_lines, s.dropped_bytes), (2, 21));
        drop(s);
        let spent = LogBudget::new(100, 500);
        assert!(!spent.take(1), "an earlier attempt used it all");
    }

    fn line(at: DateTime<Utc>) -> NewLogLine {
        NewLogLine {
            run_id: "trn-1".into(),
            task_name: "t".into(),
            attempt: 1,
            stream: "stdout",
            at,
            message: String::new(),
        }
    }

    #[test]
    fn stored_times_strictly_increase_to_the_microsecond() {
        let t = DateTime::parse_from_rfc3339("2026-11-24T12:00:00.000001500Z")
            .unwrap()
            .to_utc();
        let ns = chrono::Duration::nanoseconds;
        // Same microsecond twice, one out of order, then a later one.
        let mut batch = vec![
            line(t),
            line(t + ns(300)),
            line(t - ns(2000)),
            line(t + ns(9000)),
        ];
        let mut last = None;
        order_times(&mut batch, &mut last);
        let micros: Vec<i64> = batch
            .iter()
            .map(|l| l.at.timestamp_micros() - t.timestamp_micros())
            .collect();
        assert_eq!(micros, [0, 1, 2, 9]);
        assert!(
            batch
                .iter()
                .all(|l| l.at.timestamp_subsec_nanos() % 1000 == 0)
        );
        // The order carries over to the next batch.
        let mut next = vec![line(t)];
        order_times(&mut next, &mut last);
        assert_eq!(next[0].at.timestamp_micros() - t.timestamp_micros(), 10);
    }
}

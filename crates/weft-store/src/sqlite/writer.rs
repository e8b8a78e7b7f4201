//! The writer: one thread owns the store's writing connection and runs the
//! callers' transactions, several in one commit when they queue up together
//! (group commit).
//!
//! A fan-out's parent asks for a thousand children at once: each was its
//! own transaction on tokio's blocking pool, so hundreds of pool threads
//! queued on one mutex and the store committed a thousand times
//! (BENCHMARKS.md, "Spawning without a copy, group commit"). Here the calls
//! wait in a queue instead, and the writer takes what has queued, up to
//! [`MAX_BATCH`], into one transaction: each call inside a savepoint of its
//! own, so one that fails undoes only its own writes, and no caller hears
//! its result before the commit that holds it (or its failure) is known. A
//! call alone in the queue runs as it always did: `BEGIN IMMEDIATE`, its
//! statements, `COMMIT`.

use std::panic::AssertUnwindSafe;
use std::sync::mpsc;
use std::thread::JoinHandle;

use rusqlite::Connection;

use crate::StoreError;

/// The most calls one commit holds: enough to take a fan-out's burst in a
/// few commits, few enough that the first of them waits little.
pub(super) const MAX_BATCH: usize = 128;

/// A caller's transaction, as the writer runs it.
pub(super) trait Call: Send {
    /// Runs the caller's statements inside the open transaction; whether
    /// they succeeded (the writer keeps or undoes their writes).
    fn run(&mut self, conn: &Connection) -> bool;
    /// Hands the result to the caller once the commit's outcome is known:
    /// `lost` when its writes were lost or it never ran.
    fn deliver(self: Box<Self>, lost: Option<StoreError>);
}

enum Job {
    Transaction(Box<dyn Call>),
    /// Runs alone, outside any transaction (a `PRAGMA` that may not run in
    /// one).
    Alone(Box<dyn FnOnce(&Connection) + Send>),
}

/// The writer thread and its queue. Dropping it closes the queue and waits
/// for the thread, which closes the connection (folding the WAL back into
/// the database file), so a store is closed once the last handle is gone.
pub(super) struct Writer {
    queue: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
    /// Commits made (each holding one call or more).
    commits: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Writer {
    /// Starts the writer on `conn`; `location` names the database in
    /// errors.
    pub(super) fn start(conn: Connection, location: std::sync::Arc<str>) -> std::io::Result<Self> {
        let (queue, jobs) = mpsc::channel();
        let commits = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counted = commits.clone();
        let thread = std::thread::Builder::new()
            .name("weft-store-writer".into())
            .spawn(move || serve(conn, jobs, &location, &counted))?;
        Ok(Self {
            queue: Some(queue),
            thread: Some(thread),
            commits,
        })
    }

    /// Queues a transaction; false when the writer has stopped.
    pub(super) fn transaction(&self, call: Box<dyn Call>) -> bool {
        self.send(Job::Transaction(call))
    }

    /// Queues work that runs alone, outside any transaction.
    pub(super) fn alone(&self, work: Box<dyn FnOnce(&Connection) + Send>) -> bool {
        self.send(Job::Alone(work))
    }

    /// Commits made so far.
    pub(super) fn commits(&self) -> u64 {
        self.commits.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn send(&self, job: Job) -> bool {
        self.queue.as_ref().is_some_and(|q| q.send(job).is_ok())
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.queue.take();
        if let Some(thread) = self.thread.take()
            // The last handle may be dropped by a call running on the writer
            // itself: it cannot wait for itself, and ends when this returns.
            && thread.thread().id() != std::thread::current().id()
        {
            let _ = thread.join();
        }
    }
}

/// The writer's loop: until every queue handle is gone.
fn serve(
    conn: Connection,
    jobs: mpsc::Receiver<Job>,
    location: &str,
    commits: &std::sync::atomic::AtomicU64,
) {
    let mut next = None;
    loop {
        let job = match next.take() {
            Some(job) => job,
            None => match jobs.recv() {
                Ok(job) => job,
                Err(_) => return,
            },
        };
        match job {
            Job::Alone(work) => {
                // A panic here is the caller's: its reply channel closes.
                let _ = std::panic::catch_unwind(AssertUnwindSafe(|| work(&conn)));
            }
            Job::Transaction(work) => {
                let mut batch = vec![work];
                while batch.len() < MAX_BATCH {
                    match jobs.try_recv() {
                        Ok(Job::Transaction(work)) => batch.push(work),
                        Ok(alone) => {
                            next = Some(alone);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                commit(&conn, batch, location, commits);
            }
        }
    }
}

/// Runs `batch` in one transaction and delivers every result, counting the
/// commit (before anyone hears of it).
fn commit(
    conn: &Connection,
    batch: Vec<Box<dyn Call>>,
    location: &str,
    commits: &std::sync::atomic::AtomicU64,
) {
    let alone = batch.len() == 1;
    let lost = |detail: &str| StoreError::Unavailable {
        location: location.to_string(),
        detail: detail.to_string(),
    };
    // Calls whose writes are in the open transaction, waiting for its commit.
    let mut held: Vec<Box<dyn Call>> = Vec::with_capacity(batch.len());
    let mut open = false;
    for mut call in batch {
        if !open {
            if let Err(e) = run(conn, "BEGIN IMMEDIATE") {
                // Nothing can be written now: this call hears why, and the
                // next ones try again, as they would have on their own.
                call.deliver(Some(super::classify(e, location)));
                continue;
            }
            open = true;
        }
        if !alone && let Err(e) = run(conn, "SAVEPOINT call") {
            call.deliver(Some(super::classify(e, location)));
            continue;
        }
        match std::panic::catch_unwind(AssertUnwindSafe(|| call.run(conn))) {
            Ok(true) => {
                if !alone {
                    let _ = run(conn, "RELEASE call");
                }
                held.push(call);
            }
            // The call failed, or panicked: its own writes are undone, and
            // it hears its own error now, having nothing to commit.
            failed => {
                let undone = !alone
                    && !conn.is_autocommit()
                    && run(conn, "ROLLBACK TO call")
                        .and_then(|()| run(conn, "RELEASE call"))
                        .is_ok();
                if !undone {
                    // It was alone, or its error ended the whole transaction
                    // (SQLite rolls back by itself after some): the calls
                    // before it lost their writes too.
                    if !conn.is_autocommit() {
                        let _ = run(conn, "ROLLBACK");
                    }
                    open = false;
                    for call in held.drain(..) {
                        call.deliver(Some(lost(
                            "the transaction was rolled back: a write committed with it failed",
                        )));
                    }
                }
                // A panic is a bug, not a fault to wait out: not transient.
                call.deliver(failed.is_err().then(|| StoreError::Query {
                    location: location.to_string(),
                    detail: "the store call panicked".into(),
                }));
            }
        }
    }
    if !open {
        return;
    }
    match run(conn, "COMMIT") {
        Ok(()) => {
            commits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            held.into_iter().for_each(|call| call.deliver(None));
        }
        Err(e) => {
            if !conn.is_autocommit() {
                let _ = run(conn, "ROLLBACK");
            }
            let err = super::classify(e, location);
            for call in held {
                call.deliver(Some(same_error(&err, location)));
            }
        }
    }
}

/// A statement through the connection's cache: parsing `BEGIN` and `COMMIT`
/// anew each time costs a tenth of the runtime's CPU per child in a wide
/// fan-out (BENCHMARKS.md, "The runtime, per Rust child").
pub(super) fn run(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(drop)
}

/// The same failure for each caller of a failed commit (`StoreError` holds
/// an `io::Error` in one variant, so it is not `Clone`).
fn same_error(err: &StoreError, location: &str) -> StoreError {
    match err {
        StoreError::Full { location, detail } => StoreError::Full {
            location: location.clone(),
            detail: detail.clone(),
        },
        StoreError::ReadOnly { location, detail } => StoreError::ReadOnly {
            location: location.clone(),
            detail: detail.clone(),
        },
        StoreError::Damaged { location, detail } => StoreError::Damaged {
            location: location.clone(),
            detail: detail.clone(),
        },
        other => StoreError::Unavailable {
            location: location.to_string(),
            detail: other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a test call does after its insert.
    type Then = fn(&Connection) -> rusqlite::Result<()>;

    /// What each caller heard, by value.
    type Heard = Vec<(i64, Result<(), String>)>;

    /// A call that inserts `value` and then does `then`; its result goes
    /// to a channel.
    struct Insert {
        value: i64,
        then: Then,
        out: Option<bool>,
        reply: mpsc::Sender<(i64, Result<(), String>)>,
    }

    impl Call for Insert {
        fn run(&mut self, conn: &Connection) -> bool {
            let ok = conn
                .execute("INSERT INTO t (v) VALUES (?1)", [self.value])
                .and_then(|_| (self.then)(conn))
                .is_ok();
            self.out = Some(ok);
            ok
        }

        fn deliver(self: Box<Self>, lost: Option<StoreError>) {
            let result = match (lost, self.out) {
                (Some(e), _) => Err(e.to_string()),
                (None, Some(true)) => Ok(()),
                _ => Err("failed".into()),
            };
            let _ = self.reply.send((self.value, result));
        }
    }

    fn ok(_: &Connection) -> rusqlite::Result<()> {
        Ok(())
    }

    fn fails(_: &Connection) -> rusqlite::Result<()> {
        Err(rusqlite::Error::InvalidQuery)
    }

    fn panics(_: &Connection) -> rusqlite::Result<()> {
        panic!("a bug in a store call")
    }

    /// Ends the whole transaction, as SQLite does after some errors.
    fn rolls_everything_back(conn: &Connection) -> rusqlite::Result<()> {
        conn.execute_batch("ROLLBACK")?;
        Err(rusqlite::Error::InvalidQuery)
    }

    /// Runs these calls as one batch: the writer is held up until all are
    /// queued. What each caller heard, and the values the table holds.
    fn batch(calls: &[(i64, Then)]) -> (Heard, Vec<i64>, u64) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (v INTEGER)")
            .unwrap();
        let writer = Writer::start(conn, "w.db".into()).unwrap();
        let (go, wait) = mpsc::channel::<()>();
        assert!(writer.alone(Box::new(move |_| {
            let _ = wait.recv();
        })));
        let (reply, replies) = mpsc::channel();
        for &(value, then) in calls {
            let call = Insert {
                value,
                then,
                out: None,
                reply: reply.clone(),
            };
            assert!(writer.transaction(Box::new(call)));
        }
        go.send(()).unwrap();
        let mut heard: Vec<_> = (0..calls.len()).map(|_| replies.recv().unwrap()).collect();
        heard.sort_by_key(|(v, _)| *v);
        let commits = writer.commits();
        drop(writer);
        let conn = Connection::open(&path).unwrap();
        let mut stored: Vec<i64> = conn
            .prepare("SELECT v FROM t ORDER BY v")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        stored.sort();
        (heard, stored, commits)
    }

    #[test]
    fn calls_queued_together_share_one_commit_and_a_failed_one_undoes_only_its_own() {
        let (heard, stored, commits) = batch(&[(1, ok), (2, fails), (3, ok), (4, panics), (5, ok)]);
        assert_eq!(stored, vec![1, 3, 5]);
        assert_eq!(commits, 1, "one commit for the batch");
        assert!(
            heard[0].1.is_ok() && heard[2].1.is_ok() && heard[4].1.is_ok(),
            "{heard:?}"
        );
        assert_eq!(heard[1].1, Err("failed".into()));
        assert!(
            heard[3].1.as_ref().unwrap_err().contains("panicked"),
            "{heard:?}"
        );
    }

    #[test]
    fn a_call_that_ends_the_transaction_fails_the_calls_before_it_and_not_after() {
        let (heard, stored, commits) = batch(&[(1, ok), (2, rolls_everything_back), (3, ok)]);
        assert_eq!(
            stored,
            vec![3],
            "1 was rolled back with 2; 3 committed after"
        );
        assert_eq!(commits, 1);
        assert!(
            heard[0].1.as_ref().unwrap_err().contains("rolled back"),
            "{heard:?}"
        );
        assert!(heard[1].1.is_err() && heard[2].1.is_ok(), "{heard:?}");
    }

    #[test]
    fn a_call_alone_is_a_transaction_of_its_own() {
        let (heard, stored, commits) = batch(&[(7, ok)]);
        assert_eq!((heard[0].1.clone(), stored, commits), (Ok(()), vec![7], 1));
        let (heard, stored, commits) = batch(&[(8, fails)]);
        assert_eq!(
            (heard[0].1.clone(), stored, commits),
            (Err("failed".into()), vec![], 0)
        );
    }
}

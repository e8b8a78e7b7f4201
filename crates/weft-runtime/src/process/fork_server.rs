//! The fork servers: a process that starts task processes on request, over
//! a socket — the pre-fork server for Python start commands (`weft dev
//! --prefork`), or the runtime's spawner for any other.
//!
//! A Python task process spends most of its life starting: the interpreter
//! and the SDK's imports cost about 60 ms of CPU before the task's first
//! line, ten times what a Rust task process costs in all. With `--prefork`
//! the runtime starts one Python process per runtime, the *server*
//! (`prefork.py`, compiled in), that imports the SDK once and forks a child
//! per attempt; the child becomes the start command (its own process and
//! process group, environment, socket and cgroup, the app's script run as
//! `__main__`). The server reports each child's pid and, at its end, its
//! wait status over a `SOCK_SEQPACKET` socket, on which the runtime also
//! hands it the child's stdin, stdout and stderr (`SCM_RIGHTS`).
//!
//! The runtime kills attempts by process group and cgroup, as it does
//! processes it started itself. If the server dies, its children die
//! with it (`PR_SET_PDEATHSIG`), their attempts end as failed starts, and
//! the next attempt starts a new server.
//!
//! The runtime's own spawner (`spawner`), which forks and execs any start
//! command, speaks the same protocol; [`ForkServer::native`] starts it.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::socket::{
    AddressFamily, Backlog, ControlMessage, MsgFlags, SockFlag, SockType, UnixAddr,
};
use serde::Deserialize;
use tokio::io::unix::AsyncFd;
use tokio::sync::oneshot;

use crate::logs::LogSink;

/// The server's code, written next to the task sockets at first use.
const LAUNCHER_PY: &str = include_str!("prefork.py");

/// Modules the server imports when none are named: the official SDKs'
/// (1.x and the 0.x tutorial releases); those not installed are skipped.
pub const DEFAULT_PRELOAD: &[&str] = &["?render.workflows", "?render_sdk"];

/// How to run a Python start command pre-forked.
#[derive(Debug, Clone)]
pub struct PreforkPlan {
    /// The interpreter and its options (`python -u`).
    interpreter: Vec<String>,
    /// The script and its arguments, or `-m MODULE ARGS`.
    target: Vec<String>,
    /// Modules imported once, before any fork.
    preload: Vec<String>,
}

impl PreforkPlan {
    /// Splits a start command into interpreter and script; only
    /// `PYTHON [OPTIONS] SCRIPT [ARGS]` and `PYTHON [OPTIONS] -m MODULE
    /// [ARGS]` can be pre-forked.
    pub fn new(start_command: &[String], preload: &[String]) -> Result<Self, String> {
        let not_python = || {
            format!(
                "--prefork runs Python start commands (`python app.py`, `python -m pkg`); `{}` is not one",
                shell_words::join(start_command)
            )
        };
        let program = start_command.first().ok_or_else(not_python)?;
        let name = Path::new(program)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !name.starts_with("python") {
            return Err(not_python());
        }
        let mut split = None;
        let mut i = 1;
        while i < start_command.len() {
            let arg = &start_command[i];
            match arg.as_str() {
                "-m" => {
                    split = Some(i);
                    break;
                }
                "-c" | "-" => {
                    return Err(format!(
                        "--prefork runs a script or a module (`python app.py`, `python -m pkg`), not `python {arg}`"
                    ));
                }
                // Options that take a value.
                "-W" | "-X" | "--check-hash-based-pycs" => i += 2,
                _ if arg.starts_with('-') => i += 1,
                _ => {
                    split = Some(i);
                    break;
                }
            }
        }
        let split = split.ok_or_else(not_python)?;
        Ok(Self {
            interpreter: start_command[..split].to_vec(),
            target: start_command[split..].to_vec(),
            preload: if preload.is_empty() {
                DEFAULT_PRELOAD.iter().map(|m| m.to_string()).collect()
            } else {
                preload.to_vec()
            },
        })
    }
}

/// Which server: the Python one, or the runtime's spawner.
enum Kind {
    Python(PreforkPlan),
    /// The start command, exec'd by each child.
    Native(Vec<String>),
}

impl Kind {
    fn name(&self) -> &'static str {
        match self {
            Kind::Python(_) => "the pre-fork server",
            Kind::Native(_) => "weft's spawner",
        }
    }
}

/// Makes the server's command (the runtime's way of starting an app
/// process: environment, process group, lifeline).
pub type CommandFor<'a> = dyn Fn(&[String]) -> tokio::process::Command + Sync + 'a;

/// What the server says.
#[derive(Deserialize)]
#[serde(untagged)]
enum Report {
    Spawned { id: u64, pid: i32 },
    Failed { id: Option<u64>, error: String },
    Exited { exited: i32, status: i32 },
}

/// A child the server forked.
pub struct Forked {
    /// Its pid, leader of its own process group.
    pub pid: i32,
    /// Who forked it.
    by: &'static str,
    exit: oneshot::Receiver<i32>,
    /// Its end once known: the status, or `None` when the server died first.
    ended: Option<Option<ExitStatus>>,
}

impl Forked {
    /// Waits for its end (cancel-safe). An error when the server died
    /// first, taking the child with it.
    pub async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        let ended = match self.ended {
            Some(ended) => ended,
            // A oneshot must not be polled once it has answered.
            None => *self
                .ended
                .insert((&mut self.exit).await.ok().map(ExitStatus::from_raw)),
        };
        ended.ok_or_else(|| {
            std::io::Error::other(format!("{} exited, and its child with it", self.by))
        })
    }

    /// Whether its end is known.
    pub fn ended(&self) -> bool {
        self.ended.is_some()
    }

    /// Whether it has ended, without waiting.
    pub fn poll_ended(&mut self) -> bool {
        if self.ended.is_none() {
            match self.exit.try_recv() {
                Ok(status) => self.ended = Some(Some(ExitStatus::from_raw(status))),
                Err(oneshot::error::TryRecvError::Closed) => self.ended = Some(None),
                Err(oneshot::error::TryRecvError::Empty) => {}
            }
        }
        self.ended.is_some()
    }
}

/// The server's answer to a spawn: the child's pid and where its end
/// will be told, or why there is no child.
type SpawnReply = Result<(i32, oneshot::Receiver<i32>), String>;

#[derive(Default)]
struct Waiting {
    spawns: HashMap<u64, oneshot::Sender<SpawnReply>>,
    exits: HashMap<i32, oneshot::Sender<i32>>,
    /// Set when the server's socket closed: nothing more will arrive.
    closed: bool,
}

/// A running server.
struct Server {
    control: AsyncFd<OwnedFd>,
    waiting: Arc<Mutex<Waiting>>,
    next_id: AtomicU64,
    _process: tokio::process::Child,
    pid: i32,
    reader: tokio::task::JoinHandle<()>,
    /// Resumes the server when something stops it (see [`watch`]).
    watcher: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.reader.abort();
        self.watcher.abort();
    }
}

impl Server {
    /// Kills it (its children die with it) and marks it gone, so that the
    /// next spawn starts a new one at once.
    fn kill(&self) {
        // SAFETY: plain syscall on a child of ours.
        unsafe {
            libc::kill(self.pid, libc::SIGKILL);
        }
        let mut waiting = self.waiting.lock().unwrap();
        waiting.closed = true;
        waiting.spawns.clear();
    }
}

/// How long a server may take to answer a request for a child: it
/// answers in milliseconds; one that does not is stuck (stopped by a
/// signal the watch could not undo, or hung).
const SPAWN_DEADLINE: Duration = Duration::from_secs(10);

/// How often a server is looked at for having been stopped.
const WATCH_EVERY: Duration = Duration::from_millis(250);

/// A task process can signal its parent, the server: it runs as the
/// same user, and nothing in Linux keeps a process from signalling another
/// of its user's. The server ignores every signal it can ignore; SIGSTOP
/// it cannot, and a stopped server starts nothing and reports no child's
/// end. So the runtime looks at it several times a second and resumes it
/// (SIGCONT), saying so; what it cannot resume, the spawn deadline kills.
async fn watch(pid: i32, by: &'static str, waiting: Arc<Mutex<Waiting>>) {
    loop {
        tokio::time::sleep(WATCH_EVERY).await;
        if waiting.lock().unwrap().closed {
            return;
        }
        if process_state(pid) == Some('T') {
            // SAFETY: plain syscall on a child of ours.
            unsafe {
                libc::kill(pid, libc::SIGCONT);
            }
            tracing::warn!(
                "{by} (pid {pid}) was stopped by a signal, most likely from a task process (its parent); resumed it"
            );
        }
    }
}

/// A process's state letter from `/proc/PID/stat` (`T`: stopped by a
/// signal); `None` once it is gone.
fn process_state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command, in parentheses, may hold spaces: the state follows the
    // last closing parenthesis.
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// Starts servers and asks them for children.
pub struct ForkServer {
    kind: Kind,
    /// Where the server's script and control socket go (the runtime's
    /// private socket directory).
    dir: PathBuf,
    /// How long a server may take to be ready.
    start_timeout: Duration,
    current: tokio::sync::Mutex<Option<Arc<Server>>>,
    /// The node's lease deadline (`CLOCK_MONOTONIC` ns), handed to every
    /// server: past it, the server kills every child it forked.
    lease: Mutex<Option<u64>>,
}

impl ForkServer {
    /// For this plan; the server starts at the first spawn.
    pub fn python(plan: PreforkPlan, dir: &Path, start_timeout: Duration) -> Self {
        Self::with(Kind::Python(plan), dir, start_timeout)
    }

    /// The runtime's spawner (see `spawner`), for any start command.
    pub fn spawner(start_command: &[String], dir: &Path, start_timeout: Duration) -> Self {
        Self::with(Kind::Native(start_command.to_vec()), dir, start_timeout)
    }

    fn with(kind: Kind, dir: &Path, start_timeout: Duration) -> Self {
        Self {
            kind,
            dir: dir.to_path_buf(),
            start_timeout,
            current: tokio::sync::Mutex::new(None),
            lease: Mutex::new(None),
        }
    }

    /// The node's lease holds until `deadline`: tells the running
    /// server, and every one started later.
    pub async fn renew_lease(&self, deadline: u64) {
        *self.lease.lock().unwrap() = Some(deadline);
        let server = self.current.lock().await.clone();
        if let Some(server) = server
            && let Err(e) = self.send_lease(&server, deadline).await
        {
            tracing::debug!("could not renew the lease in {}: {e}", self.kind.name());
        }
    }

    async fn send_lease(&self, server: &Server, deadline: u64) -> std::io::Result<()> {
        let message = match &self.kind {
            Kind::Python(_) => serde_json::json!({ "lease_ns": deadline })
                .to_string()
                .into_bytes(),
            Kind::Native(_) => crate::process::spawner::lease_message(deadline),
        };
        send(&server.control, &message, &[]).await
    }

    /// Forks a child with this environment, entering this cgroup, with
    /// these stdin, stdout and stderr. A server that does not answer
    /// within 10 s (stopped by a signal the watch could not
    /// undo, hung) is killed, and the child is asked of a new one, once.
    pub async fn spawn(
        &self,
        command_for: &CommandFor<'_>,
        logs: &LogSink,
        env: Vec<(OsString, OsString)>,
        cgroup_procs: Option<&std::ffi::CStr>,
        stdio: [OwnedFd; 3],
    ) -> std::io::Result<Forked> {
        let by = self.kind.name();
        let request = |id: u64| match &self.kind {
            Kind::Python(_) => {
                let env: serde_json::Map<String, serde_json::Value> = env
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.to_string_lossy().into_owned(),
                            v.to_string_lossy().into_owned().into(),
                        )
                    })
                    .collect();
                serde_json::json!({
                    "id": id,
                    "env": env,
                    "cgroup_procs": cgroup_procs.map(|p| p.to_string_lossy().into_owned()),
                })
                .to_string()
                .into_bytes()
            }
            Kind::Native(_) => crate::process::spawner::request(id, cgroup_procs, &env),
        };
        let fds = stdio.each_ref().map(|fd| fd.as_raw_fd());
        let mut tries = 0;
        loop {
            tries += 1;
            let server = self.server(command_for, logs).await?;
            let id = server.next_id.fetch_add(1, Ordering::Relaxed);
            let (tx, rx) = oneshot::channel();
            {
                let mut waiting = server.waiting.lock().unwrap();
                if waiting.closed {
                    return Err(std::io::Error::other(format!("{by} exited")));
                }
                waiting.spawns.insert(id, tx);
            }
            // The server gets its own copies of the descriptors.
            send(&server.control, &request(id), &fds).await?;
            let reply = match tokio::time::timeout(SPAWN_DEADLINE, rx).await {
                Ok(reply) => reply,
                Err(_) => {
                    let state = process_state(server.pid).unwrap_or('?');
                    tracing::warn!(
                        "{by} (pid {}, state {state}) did not answer a request to start a task process within {} s: killed; {}",
                        server.pid,
                        SPAWN_DEADLINE.as_secs(),
                        if tries == 1 {
                            "asking a new one"
                        } else {
                            "giving up"
                        }
                    );
                    server.kill();
                    if tries == 1 {
                        continue;
                    }
                    return Err(std::io::Error::other(format!(
                        "{by} did not answer within {} s, twice (each was killed)",
                        SPAWN_DEADLINE.as_secs()
                    )));
                }
            };
            return match reply {
                Ok(Ok((pid, exit))) => Ok(Forked {
                    pid,
                    by,
                    exit,
                    ended: None,
                }),
                Ok(Err(message)) => Err(std::io::Error::other(match &self.kind {
                    Kind::Python(_) => format!("{by} could not start the task: {message}"),
                    // The spawner's reason is the exec's, as a plain spawn's is.
                    Kind::Native(_) => message,
                })),
                Err(_) => Err(std::io::Error::other(format!(
                    "{by} exited before starting the task"
                ))),
            };
        }
    }

    /// The running server, started (again) when there is none.
    async fn server(
        &self,
        command_for: &CommandFor<'_>,
        logs: &LogSink,
    ) -> std::io::Result<Arc<Server>> {
        let mut current = self.current.lock().await;
        if let Some(server) = current.as_ref()
            && !server.waiting.lock().unwrap().closed
        {
            return Ok(server.clone());
        }
        *current = None;
        let server = Arc::new(self.start(command_for, logs).await?);
        // Its first word: the lease in force, if the node holds one.
        let lease = *self.lease.lock().unwrap();
        if let Some(deadline) = lease {
            self.send_lease(&server, deadline).await?;
        }
        *current = Some(server.clone());
        Ok(server)
    }

    async fn start(&self, command_for: &CommandFor<'_>, logs: &LogSink) -> std::io::Result<Server> {
        let start_timeout = self.start_timeout;
        let by = self.kind.name();
        let control_path = self
            .dir
            .join(format!("prefork-{}.sock", uuid::Uuid::new_v4().simple()));
        let listener = seqpacket_listener(&control_path)?;
        let argv = match &self.kind {
            Kind::Python(plan) => {
                let script = self.dir.join("weft_prefork.py");
                if !script.exists() {
                    std::fs::write(&script, LAUNCHER_PY)?;
                }
                let mut argv = plan.interpreter.clone();
                argv.push(script.to_string_lossy().into_owned());
                argv.push(control_path.to_string_lossy().into_owned());
                argv.push(plan.preload.join(","));
                argv.extend(plan.target.iter().cloned());
                argv
            }
            Kind::Native(start_command) => {
                let mut argv = crate::process::spawner::prefix(&control_path);
                argv.extend(start_command.iter().cloned());
                argv
            }
        };
        let mut process = command_for(&argv).spawn().map_err(|e| {
            std::io::Error::new(e.kind(), format!("could not start {by} `{}`: {e}", argv[0]))
        })?;
        if let Some(out) = process.stdout.take() {
            logs.capture(out, None, "stdout");
        }
        if let Some(err) = process.stderr.take() {
            logs.capture(err, None, "stderr");
        }
        let accepted = tokio::select! {
            accepted = accept(&listener) => accepted,
            status = process.wait() => Err(std::io::Error::other(format!(
                "{by} exited before it was ready ({}); its output is above",
                status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string())
            ))),
            _ = tokio::time::sleep(start_timeout) => Err(std::io::Error::other(format!(
                "{by} was not ready within {} s", start_timeout.as_secs()
            ))),
        };
        let _ = std::fs::remove_file(&control_path);
        let control = async_fd(accepted?)?;
        let waiting = Arc::new(Mutex::new(Waiting::default()));
        let reader = tokio::spawn(read_reports(
            async_fd(control.get_ref().try_clone()?)?,
            waiting.clone(),
            by,
        ));
        let pid = process.id().map_or(0, |p| p as i32);
        tracing::debug!("{by} ready (pid {pid})");
        let watcher = tokio::spawn(watch(pid, by, waiting.clone()));
        Ok(Server {
            control,
            waiting,
            next_id: AtomicU64::new(1),
            _process: process,
            pid,
            reader,
            watcher,
        })
    }
}

/// Hands each report to whoever waits for it, until the server closes.
async fn read_reports(control: AsyncFd<OwnedFd>, waiting: Arc<Mutex<Waiting>>, by: &str) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let read = control
            .async_io(tokio::io::Interest::READABLE, |fd| {
                nix::sys::socket::recv(fd.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT)
                    .map_err(std::io::Error::from)
            })
            .await;
        let n = match read {
            Ok(n) if n > 0 => n,
            _ => break,
        };
        let report: Report = match serde_json::from_slice(&buf[..n]) {
            Ok(report) => report,
            Err(e) => {
                tracing::warn!("{by} said something unreadable: {e}");
                continue;
            }
        };
        let mut waiting = waiting.lock().unwrap();
        match report {
            Report::Spawned { id, pid } => {
                let (exit_tx, exit_rx) = oneshot::channel();
                waiting.exits.insert(pid, exit_tx);
                if let Some(tx) = waiting.spawns.remove(&id) {
                    let _ = tx.send(Ok((pid, exit_rx)));
                }
            }
            Report::Failed { id, error } => {
                if let Some(tx) = id.and_then(|id| waiting.spawns.remove(&id)) {
                    let _ = tx.send(Err(error));
                } else {
                    tracing::warn!("{by}: {error}");
                }
            }
            Report::Exited { exited, status } => {
                if let Some(tx) = waiting.exits.remove(&exited) {
                    let _ = tx.send(status);
                }
            }
        }
    }
    let mut waiting = waiting.lock().unwrap();
    waiting.closed = true;
    // Dropping the senders tells every waiter the server is gone.
    waiting.spawns.clear();
    waiting.exits.clear();
    tracing::warn!("{by} exited; the next attempt starts a new one");
}

async fn send(control: &AsyncFd<OwnedFd>, data: &[u8], fds: &[i32]) -> std::io::Result<()> {
    let iov = [IoSlice::new(data)];
    let rights = [ControlMessage::ScmRights(fds)];
    // No descriptors: no control message at all.
    let rights: &[ControlMessage] = if fds.is_empty() { &[] } else { &rights };
    control
        .async_io(tokio::io::Interest::WRITABLE, |fd| {
            nix::sys::socket::sendmsg::<UnixAddr>(
                fd.as_raw_fd(),
                &iov,
                rights,
                MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
                None,
            )
            .map_err(std::io::Error::from)
        })
        .await
        .map(drop)
}

fn seqpacket_listener(path: &Path) -> std::io::Result<AsyncFd<OwnedFd>> {
    let fd = nix::sys::socket::socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )?;
    nix::sys::socket::bind(fd.as_raw_fd(), &UnixAddr::new(path)?)?;
    nix::sys::socket::listen(&fd.as_fd(), Backlog::new(1)?)?;
    async_fd(fd)
}

fn async_fd(fd: OwnedFd) -> std::io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: an OwnedFd owns its descriptor and always gives the same one
    // until it is dropped with the AsyncFd.
    Ok(unsafe { AsyncFd::register(fd) }?)
}

async fn accept(listener: &AsyncFd<OwnedFd>) -> std::io::Result<OwnedFd> {
    use std::os::fd::FromRawFd;
    let raw = listener
        .async_io(tokio::io::Interest::READABLE, |fd| {
            nix::sys::socket::accept4(
                fd.as_raw_fd(),
                SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            )
            .map_err(std::io::Error::from)
        })
        .await?;
    // SAFETY: accept4 returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(cmd: &[&str]) -> Result<PreforkPlan, String> {
        PreforkPlan::new(&cmd.iter().map(|s| s.to_string()).collect::<Vec<_>>(), &[])
    }

    #[test]
    fn start_commands_split_into_interpreter_and_script() {
        let p = plan(&["python3", "-u", "-X", "dev", "app.py", "--flag"]).unwrap();
        assert_eq!(p.interpreter, ["python3", "-u", "-X", "dev"]);
        assert_eq!(p.target, ["app.py", "--flag"]);
        let p = plan(&[".venv/bin/python", "-m", "pkg.main", "x"]).unwrap();
        assert_eq!(p.interpreter, [".venv/bin/python"]);
        assert_eq!(p.target, ["-m", "pkg.main", "x"]);
        assert_eq!(p.preload, DEFAULT_PRELOAD);
    }

    #[test]
    fn other_start_commands_are_refused_by_name() {
        let e = plan(&["node", "app.js"]).unwrap_err();
        assert!(e.contains("`node app.js` is not one"), "{e}");
        let e = plan(&["python", "-c", "print(1)"]).unwrap_err();
        assert!(e.contains("not `python -c`"), "{e}");
        assert!(plan(&["python", "-u"]).is_err());
    }
}

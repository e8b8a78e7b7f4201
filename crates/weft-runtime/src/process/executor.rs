//! Starts the app's start command: once in register mode to learn its
//! tasks, and once per attempt in run mode. Each process gets its own
//! process group, so killing an attempt kills every process it started.

use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::sync::oneshot;
use weft_protocol::socket::{ENV_MODE, ENV_SOCKET_PATH, Mode, TaskDefinition};

use crate::attempt::Attempt;
use crate::attempt::task_socket;
use crate::logs::{LogSink, Source};
use crate::process::cgroup::{AttemptCgroup, Cgroups, Limits, Usage};
use crate::process::fork_server::{ForkServer, Forked, PreforkPlan};
use crate::process::lifeline::Lifeline;
use crate::process::npx;
use crate::{RuntimeConfig, RuntimeError};

/// Variables of weft's own that no task process gets, whatever it
/// inherits: the API key and the database URL are secrets (a URL may hold
/// a password), the others settings of the runtime. An env file the user
/// names may still give a task one of them.
const RUNTIME_ONLY: &[&str] = &[
    "RENDER_API_KEY",
    // The OTLP exporter's headers hold the tracing backend's API key.
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
    "WEFT_DATABASE_URL",
    "WEFT_LOG",
    "WEFT_SPAWNER",
    "WEFT_LAUNCHER",
];

/// The W3C trace context of the attempt a task process runs, for the
/// OpenTelemetry SDK of its language (see `traces`).
const ENV_TRACEPARENT: &str = "TRACEPARENT";

/// Longest Unix socket path the kernel accepts (`sun_path` less its NUL).
const MAX_SOCKET_PATH: usize = 107;

/// Starts task processes.
pub struct Executor {
    start_command: Vec<String>,
    env: Vec<(String, String)>,
    socket_dir: PathBuf,
    /// A cgroup per attempt, where Linux allows it.
    cgroups: Option<Cgroups>,
    /// Task processes die with the runtime.
    lifeline: Lifeline,
    /// Task processes started by one fork server: the Python one
    /// (`--prefork`), or the runtime's spawner.
    fork_server: Option<ForkServer>,
    /// Removes a directory made for this runtime when it goes away.
    _owned_dir: Option<tempfile::TempDir>,
}

/// How a task process ended, as the executor saw it (the runner turns it
/// into the attempt's [`AttemptEnd`](crate::attempt::runner::AttemptEnd)).
#[derive(Debug)]
pub enum ProcessEnd {
    /// The attempt reported its outcome on the socket.
    Reported,
    /// The run was canceled; its processes were killed.
    Canceled,
    /// The process could not be started.
    SpawnFailed(std::io::Error),
    /// Its end could not be learned: the fork server that started it died,
    /// taking it along.
    Lost(std::io::Error),
    /// It ran past its timeout and was killed.
    TimedOut(Duration),
    /// It exited without reporting.
    Exited(ExitStatus),
}

/// The start command as task processes run it: `npx NAME` found once (see
/// [`npx`]), with what the user should know about how it starts.
fn start_command_and_env(config: &RuntimeConfig) -> (Vec<String>, Vec<(String, String)>) {
    let mut command = config.start_command.clone();
    let mut env = config.env.clone();
    let resolved = std::env::current_dir()
        .ok()
        .and_then(|cwd| npx::resolve(&command, &cwd));
    if let Some((direct, bin)) = resolved {
        tracing::info!(
            "start command: `{}` runs {} (npx looks for it on every start of a task process; weft found it once)",
            shell_words::join(&command[..2]),
            direct[0]
        );
        match env.iter_mut().find(|(k, _)| k == "PATH") {
            Some((_, path)) => *path = format!("{}:{path}", bin.display()),
            None => env.push(("PATH".into(), npx::path_with(&bin))),
        }
        command = direct;
    }
    let program = std::path::Path::new(&command[0]).file_name();
    if program.is_some_and(|p| p == "tsx") {
        tracing::info!(
            "tip: the tsx command starts two Node processes for each task process; `node --import tsx {}` runs the same code in one, about twice as fast to start, and compiled JavaScript (`tsc`, then `node dist/main.js`) faster still (docs/typescript.md)",
            shell_words::join(&command[1..])
        );
    }
    (command, env)
}

impl Executor {
    /// Prepares the socket directory: readable by this user only.
    pub fn new(config: &RuntimeConfig) -> Result<Self, RuntimeError> {
        if config.start_command.is_empty() {
            return Err(RuntimeError::Config("no start command given".into()));
        }
        let (socket_dir, owned) = match &config.socket_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir)?;
                (dir.clone(), None)
            }
            None => {
                let base = std::env::temp_dir();
                sweep_stale_socket_dirs(&base);
                let dir = tempfile::Builder::new()
                    .prefix(&format!("{SOCKET_DIR_PREFIX}{}-", std::process::id()))
                    .tempdir_in(&base)?;
                (dir.path().to_path_buf(), Some(dir))
            }
        };
        restrict_to_owner(&socket_dir)?;
        // The longest socket name: a run id, an attempt number, `.sock`.
        let longest = socket_dir.join(format!("trn-{}-999999.sock", "0".repeat(32)));
        if longest.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(RuntimeError::Config(format!(
                "the socket directory {} is too long for Unix sockets (their paths may have {MAX_SOCKET_PATH} bytes; this one would need {}); set TMPDIR to a shorter directory",
                socket_dir.display(),
                longest.as_os_str().len()
            )));
        }
        let cgroups = match Cgroups::create() {
            Ok(cgroups) => {
                tracing::debug!(
                    "each attempt in a cgroup of its own ({})",
                    cgroups.describe()
                );
                if config.plans == crate::Plans::Enforce && !cgroups.limits_memory() {
                    tracing::warn!(
                        "{} has no memory controller weft may use: plans are not enforced (--plans)",
                        cgroups.describe()
                    );
                }
                Some(cgroups)
            }
            Err(why) => {
                tracing::warn!(
                    "no cgroup per attempt ({why}): plans are not enforced (--plans), and a task's processes that leave its process group (setsid) may outlive its timeout or cancel"
                );
                None
            }
        };
        let (start_command, env) = start_command_and_env(config);
        let fork_server = match &config.prefork {
            Some(preload) => Some(ForkServer::python(
                PreforkPlan::new(&config.start_command, preload).map_err(RuntimeError::Config)?,
                &socket_dir,
                config.register_timeout,
            )),
            // Any other start command through the spawner where it can run
            // (see `spawner`): a fork of a small process, then one exec.
            None if crate::process::launcher::enabled() && crate::process::spawner::wanted() => {
                Some(ForkServer::spawner(
                    &start_command,
                    &socket_dir,
                    config.register_timeout,
                ))
            }
            None => None,
        };
        Ok(Self {
            start_command,
            env,
            socket_dir,
            cgroups,
            lifeline: Lifeline::new()?,
            fork_server,
            _owned_dir: owned,
        })
    }

    /// Hands the node's lease deadline to the spawner (or the pre-fork
    /// server), which kills every task process it started once the
    /// deadline passes unrenewed. Processes the runtime starts itself
    /// (`WEFT_SPAWNER=off`) are killed by the runtime's fence only.
    pub async fn renew_lease(&self, until: tokio::time::Instant) {
        // A hair later than the runtime's own: a process the spawner
        // killed is then always seen to end after the runtime knows its
        // lease ran out, and its end is never taken for a failure.
        const AFTER_THE_RUNTIME: u64 = 5_000_000;
        if let Some(server) = &self.fork_server {
            let deadline = crate::lease::monotonic_deadline(until) + AFTER_THE_RUNTIME;
            server.renew_lease(deadline).await;
        }
    }

    /// The start command, program and arguments.
    pub fn start_command(&self) -> &[String] {
        &self.start_command
    }

    /// A socket path in the private directory.
    pub fn socket_path(&self, name: &str) -> PathBuf {
        self.socket_dir.join(format!("{name}.sock"))
    }

    /// A task process's command: the start command in this mode.
    fn command(
        &self,
        mode: Mode,
        socket: &Path,
        trace: Option<&str>,
        cgroup: Option<&AttemptCgroup>,
    ) -> tokio::process::Command {
        let mut cmd = self.process_command(&self.start_command, cgroup);
        cmd.env(ENV_MODE, mode.as_str())
            .env(ENV_SOCKET_PATH, socket);
        if let Some(trace) = trace {
            cmd.env(ENV_TRACEPARENT, trace);
        }
        cmd
    }

    /// A process of the app's (a task process, or the pre-fork server):
    /// the app's environment, its own process group, dying with the runtime.
    fn process_command(
        &self,
        argv: &[String],
        cgroup: Option<&AttemptCgroup>,
    ) -> tokio::process::Command {
        // Through the launcher where this binary is one (see `launcher`):
        // spawned, not forked.
        let launched = crate::process::launcher::enabled();
        let mut cmd = if launched {
            let mut cmd = tokio::process::Command::new("/proc/self/exe");
            cmd.args(crate::process::launcher::prefix(
                cgroup.map(AttemptCgroup::procs),
            ))
            .args(argv);
            cmd
        } else {
            let mut cmd = tokio::process::Command::new(&argv[0]);
            cmd.args(&argv[1..]);
            cmd
        };
        // weft's own settings are not the tasks' business (see RUNTIME_ONLY).
        for name in RUNTIME_ONLY {
            cmd.env_remove(name);
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .process_group(0);
        if launched {
            return cmd;
        }
        // The child dies with the runtime (see `lifeline`), and enters its
        // cgroup before exec, so nothing the task starts is ever outside it.
        let lifeline = self.lifeline.child_setup();
        let procs = cgroup.map(AttemptCgroup::enter_fn);
        // SAFETY: both steps make only async-signal-safe calls and allocate
        // nothing.
        unsafe {
            cmd.pre_exec(move || {
                lifeline()?;
                if let Some(enter) = &procs {
                    enter()?;
                }
                Ok(())
            });
        }
        cmd
    }

    /// The environment `command` gives a task process, whole (for a
    /// pre-forked one, which inherits nothing).
    fn task_env(
        &self,
        mode: Mode,
        socket: &Path,
        trace: Option<&str>,
    ) -> Vec<(OsString, OsString)> {
        let mut env: std::collections::BTreeMap<OsString, OsString> = std::env::vars_os()
            .filter(|(k, _)| !RUNTIME_ONLY.iter().any(|own| k == own))
            .collect();
        env.extend(self.env.iter().map(|(k, v)| (k.into(), v.into())));
        env.insert(ENV_MODE.into(), mode.as_str().into());
        env.insert(ENV_SOCKET_PATH.into(), socket.into());
        if let Some(trace) = trace {
            env.insert(ENV_TRACEPARENT.into(), trace.into());
        }
        env.into_iter().collect()
    }

    /// Starts a task process; its output waits in its pipes until
    /// [`TaskProcess::capture`].
    async fn spawn(
        &self,
        mode: Mode,
        socket: &Path,
        trace: Option<&str>,
        logs: &LogSink,
    ) -> std::io::Result<TaskProcess> {
        if socket.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(std::io::Error::other(format!(
                "socket path {} is longer than {MAX_SOCKET_PATH} bytes; set TMPDIR to a shorter directory",
                socket.display()
            )));
        }
        let cgroup = self.cgroups.as_ref().and_then(Cgroups::attempt);
        if let Some(server) = &self.fork_server {
            return self
                .spawn_forked(server, mode, socket, trace, logs, cgroup)
                .await;
        }
        let mut child = self.command(mode, socket, trace, cgroup.as_ref()).spawn()?;
        let pid = child.id().map(|p| p as i32);
        let mut output: Vec<(Output, &'static str)> = Vec::new();
        if let Some(out) = child.stdout.take() {
            output.push((Box::new(out), "stdout"));
        }
        if let Some(err) = child.stderr.take() {
            output.push((Box::new(err), "stderr"));
        }
        Ok(TaskProcess {
            process: Process::Child(child),
            pid,
            output,
            pumps: Vec::new(),
            cgroup,
        })
    }

    /// Asks the pre-fork server for the task process.
    async fn spawn_forked(
        &self,
        server: &ForkServer,
        mode: Mode,
        socket: &Path,
        trace: Option<&str>,
        logs: &LogSink,
        cgroup: Option<AttemptCgroup>,
    ) -> std::io::Result<TaskProcess> {
        let (out_r, out_w) = std::io::pipe()?;
        let (err_r, err_w) = std::io::pipe()?;
        let stdin = OwnedFd::from(std::fs::File::open("/dev/null")?);
        let command_for = |argv: &[String]| self.process_command(argv, None);
        let forked = server
            .spawn(
                &command_for,
                logs,
                self.task_env(mode, socket, trace),
                cgroup.as_ref().map(AttemptCgroup::procs),
                [stdin, out_w.into(), err_w.into()],
            )
            .await?;
        let out = tokio::net::unix::pipe::Receiver::from_owned_fd(out_r.into())?;
        let err = tokio::net::unix::pipe::Receiver::from_owned_fd(err_r.into())?;
        Ok(TaskProcess {
            pid: Some(forked.pid),
            process: Process::Forked(forked),
            output: vec![(Box::new(out), "stdout"), (Box::new(err), "stderr")],
            pumps: Vec::new(),
            cgroup,
        })
    }

    /// Runs the start command in register mode and returns the tasks it lists.
    pub async fn register(
        &self,
        config: &RuntimeConfig,
        logs: &LogSink,
    ) -> Result<Vec<TaskDefinition>, RuntimeError> {
        let socket = self.socket_path(&format!("register-{}", uuid::Uuid::new_v4().simple()));
        let (tx, rx) = oneshot::channel();
        let server = task_socket::serve_register(&socket, tx, config.max_payload_bytes)?;
        let cmd = shell_words::join(&self.start_command);
        let mut process = self
            .spawn(Mode::Register, &socket, None, logs)
            .await
            .map_err(|e| RuntimeError::Registration(format!("could not start `{cmd}`: {e}")))?;
        process.capture(logs, None);
        // Biased: the registration is handed over before the app is answered,
        // so it is always there by the time the app exits; an unbiased select
        // could see a fast app's exit first and call it a failure.
        let outcome = tokio::select! {
            biased;
            defs = rx => {
                process.wait_or_kill(config.exit_grace).await;
                defs.map_err(|_| RuntimeError::Registration("the task socket closed".into()))
            }
            status = process.wait() => Err(RuntimeError::Registration(format!(
                "`{cmd}` exited ({}) without registering any task; its output is above",
                status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string())
            ))),
            _ = tokio::time::sleep(config.register_timeout) => Err(RuntimeError::Registration(format!(
                "`{cmd}` did not register its tasks within {} s", config.register_timeout.as_secs()
            ))),
        };
        process.kill_tree();
        process.drain_output().await;
        process.release().await;
        drop(server);
        outcome
    }

    /// Starts a task process in run mode on `socket`, ahead of the
    /// attempt it will run (see [`TaskProcess::capture`] and
    /// [`Executor::supervise`]).
    pub async fn start_process(
        &self,
        socket: &Path,
        trace: Option<&str>,
        logs: &LogSink,
    ) -> std::io::Result<TaskProcess> {
        self.spawn(Mode::Run, socket, trace, logs).await
    }

    /// Runs one attempt's process until it reports, exits, times out or is
    /// canceled; every process of the attempt is dead when this returns.
    pub async fn run_attempt(
        &self,
        attempt: &Attempt,
        socket: &Path,
        logs: &LogSink,
        source: Source,
        bounds: Bounds,
    ) -> (ProcessEnd, Option<Usage>) {
        // The timeout counts from the attempt's start, its process's start
        // included: a spawner that is slow (or stopped) does not stretch it.
        let started = tokio::time::Instant::now();
        let spawn = self.spawn(Mode::Run, socket, attempt.traceparent.as_deref(), logs);
        let spawned = match bounds.timeout {
            Some(t) => match tokio::time::timeout(t, spawn).await {
                Ok(spawned) => spawned,
                Err(_) => return (ProcessEnd::TimedOut(t), None),
            },
            None => spawn.await,
        };
        let mut process = match spawned {
            Ok(p) => p,
            // Canceled meanwhile (a fenced spawner refuses, say): no failure.
            Err(_) if attempt.cancellation().is_cancelled() => {
                return (ProcessEnd::Canceled, None);
            }
            Err(e) => return (ProcessEnd::SpawnFailed(e), None),
        };
        process.capture(logs, Some(source));
        Self::supervise(attempt, process, started, bounds).await
    }

    /// Watches `attempt`'s process (its output captured) until it reports,
    /// exits, times out (the timeout counted from `started`, the attempt's
    /// start) or is canceled, held to `bounds.limits`; every process of the
    /// attempt is dead when this returns, with what they used where the
    /// attempt had a cgroup.
    pub async fn supervise(
        attempt: &Attempt,
        mut process: TaskProcess,
        started: tokio::time::Instant,
        bounds: Bounds,
    ) -> (ProcessEnd, Option<Usage>) {
        let Bounds {
            timeout,
            exit_grace,
            limits,
        } = bounds;
        if let (Some(cgroup), Some(limits)) = (&mut process.cgroup, limits) {
            cgroup.limit(limits);
        }
        let deadline = async {
            match timeout {
                Some(t) => tokio::time::sleep_until(started + t).await,
                None => std::future::pending().await,
            }
        };
        let reason = tokio::select! {
            biased;
            _ = attempt.cancellation().cancelled() => ProcessEnd::Canceled,
            _ = attempt.reported() => {
                process.wait_or_kill(exit_grace).await;
                ProcessEnd::Reported
            }
            status = process.wait() => match status {
                Ok(status) => ProcessEnd::Exited(status),
                Err(e) => ProcessEnd::Lost(e),
            },
            _ = deadline => ProcessEnd::TimedOut(timeout.unwrap_or_default()),
        };
        process.kill_tree();
        let _ = process.wait().await;
        process.drain_output().await;
        let usage = process.cgroup.as_ref().map(AttemptCgroup::usage);
        process.release().await;
        (reason, usage)
    }
}

/// What an attempt's process may take: time and (where it has a cgroup)
/// memory and CPU.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// From the attempt's start.
    pub timeout: Option<Duration>,
    /// How long a process that reported may take to exit on its own.
    pub exit_grace: Duration,
    /// Its plan's memory and CPUs, when they are enforced.
    pub limits: Option<Limits>,
}

/// A stream of a task process's output, not read yet.
type Output = Box<dyn tokio::io::AsyncRead + Send + Unpin>;

/// A running task process, leader of its own process group.
pub struct TaskProcess {
    process: Process,
    pid: Option<i32>,
    /// Its stdout and stderr until they are captured: a process started
    /// ahead of its attempt writes into its pipes until the attempt is
    /// known, so its lines are that attempt's.
    output: Vec<(Output, &'static str)>,
    /// Readers of its stdout and stderr.
    pumps: Vec<tokio::task::JoinHandle<()>>,
    /// Its cgroup, holding every process it started.
    cgroup: Option<AttemptCgroup>,
}

/// A process the runtime started, or one the pre-fork server forked.
enum Process {
    Child(tokio::process::Child),
    Forked(Forked),
}

impl Drop for TaskProcess {
    fn drop(&mut self) {
        // A child is killed on drop by tokio; a forked one here.
        if let Process::Forked(forked) = &self.process
            && !forked.ended()
        {
            self.kill_tree();
        }
    }
}

impl TaskProcess {
    /// Starts reading its output, as `source`'s (or, without one, echoed
    /// only).
    pub fn capture(&mut self, logs: &LogSink, source: Option<Source>) {
        for (stream, name) in self.output.drain(..) {
            self.pumps.push(logs.capture(stream, source.clone(), name));
        }
    }

    /// Whether it has exited (it is reaped then).
    pub fn has_exited(&mut self) -> bool {
        match &mut self.process {
            Process::Child(child) => !matches!(child.try_wait(), Ok(None)),
            Process::Forked(forked) => forked.poll_ended(),
        }
    }

    /// Kills it and everything it started, and gives back its cgroup.
    pub async fn discard(mut self) {
        self.kill_tree();
        let _ = self.wait().await;
        self.drain_output().await;
        self.release().await;
    }

    /// Waits for the process to exit (cancel-safe).
    async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        match &mut self.process {
            Process::Child(child) => child.wait().await,
            Process::Forked(forked) => forked.wait().await,
        }
    }

    /// Kills the process and everything in its group and its cgroup.
    fn kill_tree(&self) {
        if let Some(pid) = self.pid {
            // SAFETY: plain syscall; a group that no longer exists is ESRCH, ignored.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
        }
        if let Some(cgroup) = &self.cgroup {
            cgroup.kill();
        }
    }

    /// Gives back its cgroup, killing whatever is left in it.
    async fn release(&mut self) {
        if let Some(cgroup) = self.cgroup.take() {
            cgroup.release().await;
        }
    }

    /// Lets the last lines the process wrote reach the log (bounded: a
    /// stray process holding the pipes open must not stall the attempt).
    async fn drain_output(&mut self) {
        let pumps = std::mem::take(&mut self.pumps);
        let _ =
            tokio::time::timeout(Duration::from_secs(2), futures::future::join_all(pumps)).await;
    }

    /// Gives the process `grace` to exit on its own.
    async fn wait_or_kill(&mut self, grace: Duration) {
        if tokio::time::timeout(grace, self.wait()).await.is_err() {
            self.kill_tree();
        }
    }
}

/// Socket directories are named `weft-<pid>-<random>`.
const SOCKET_DIR_PREFIX: &str = "weft-";

/// Removes the socket directories of runtimes that died without cleaning up
/// (SIGKILL, a power cut): ours (same owner), named for a process that no
/// longer exists, holding nothing but sockets. Best effort: anything else is
/// left alone.
fn sweep_stale_socket_dirs(base: &Path) {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(SOCKET_DIR_PREFIX))
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<libc::pid_t>().ok())
            .filter(|pid| *pid > 0)
        else {
            continue;
        };
        let path = entry.path();
        let ours = std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir() && m.uid() == uid);
        if !ours || crate::process::exists(pid) {
            continue;
        }
        let only_sockets = std::fs::read_dir(&path).is_ok_and(|files| {
            files
                .flatten()
                .all(|f| f.file_type().is_ok_and(|t| t.is_socket()))
        });
        if only_sockets && std::fs::remove_dir_all(&path).is_ok() {
            tracing::debug!("removed the stale socket directory {}", path.display());
        }
    }
}

fn restrict_to_owner(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_with_socket(base: &Path, name: &str) -> PathBuf {
        let dir = base.join(name);
        std::fs::create_dir(&dir).unwrap();
        std::os::unix::net::UnixListener::bind(dir.join("trn-1-1.sock")).unwrap();
        dir
    }

    #[test]
    fn only_socket_dirs_of_dead_runtimes_are_swept() {
        let base = tempfile::tempdir().unwrap();
        let mut exited = std::process::Command::new("true").spawn().unwrap();
        exited.wait().unwrap();
        let dead = exited.id();
        let stale = dir_with_socket(base.path(), &format!("weft-{dead}-abc"));
        let live = dir_with_socket(base.path(), &format!("weft-{}-abc", std::process::id()));
        let not_ours = base.path().join(format!("weft-{dead}-data"));
        std::fs::create_dir(&not_ours).unwrap();
        std::fs::write(not_ours.join("notes.txt"), "keep me").unwrap();
        let other_name = dir_with_socket(base.path(), &format!("weft-cache-{dead}"));

        sweep_stale_socket_dirs(base.path());

        assert!(!stale.exists(), "the dead runtime's directory is removed");
        assert!(live.exists(), "a live runtime's directory stays");
        assert!(
            not_ours.join("notes.txt").exists(),
            "a directory with files stays"
        );
        assert!(other_name.exists(), "other names stay");
    }
}

//! The spawner: a small process that starts task processes for the runtime.
//!
//! Starting a task process through the launcher (see `launcher`) costs two
//! execs: the launcher's (this 90 MB binary: its relocations, its C
//! library's start-up) and the start command's. In a fan-out of no-op Rust
//! children the first costs a fifth of all the CPU the machine spends
//! (BENCHMARKS.md, "The runtime, per Rust child"). So on Linux the runtime
//! starts one spawner, this binary run as `__weft-spawner RUNTIME-PID
//! CONTROL-SOCKET PROGRAM ARGS...`, and asks it for each task process. It
//! is single-threaded and small, so starting a child from it is cheap and
//! safe (unlike from the runtime: its page tables, its threads). The child
//! shares the spawner's memory until it execs (`CLONE_VM | CLONE_VFORK`,
//! see `Child::start`), does what the launcher did (its own process group,
//! `PR_SET_PDEATHSIG`, the attempt's cgroup) and execs the start command.
//!
//! It speaks the protocol of the Python pre-fork server (`fork_server`): a
//! `SOCK_SEQPACKET` socket; each request carries the child's stdin, stdout
//! and stderr (`SCM_RIGHTS`); the answers are the child's pid once it has
//! exec'd (or why it could not), and its wait status when it ends. A request
//! is `ID \0 CGROUP-PROCS \0 NAME=VALUE \0 ...` (the whole environment,
//! bytes as they are; an empty `CGROUP-PROCS` for none).
//!
//! Its children die with it (`PR_SET_PDEATHSIG`), and it dies with the
//! runtime, so no task process outlives the runtime. `WEFT_SPAWNER=off`
//! starts each task process through the launcher instead.
//!
//! On a shared store it also holds the node's lease (`lease`): the
//! runtime sends `lease \0 DEADLINE` (`CLOCK_MONOTONIC` nanoseconds) with
//! each renewal, and when the deadline passes unrenewed the spawner kills
//! every child it started (its process group, and its cgroup where it has
//! one) and starts no more until a new lease comes. The runtime fences
//! itself at the same moment; the spawner does it too because it is
//! another process: a runtime that is paused (SIGSTOP, a debugger) or
//! starved cannot, and its task processes would otherwise run on while
//! another node runs their attempts again.

mod child;

use std::ffi::{CString, OsStr, OsString};
use std::io::IoSliceMut;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;

use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::{
    AddressFamily, ControlMessageOwned, MsgFlags, SockFlag, SockType, UnixAddr,
};

use child::{Child, ChildStack};

/// The spawner's first argument.
pub const ARG: &str = "__weft-spawner";

/// Signals the spawner ignores: a task process, its child, runs as the
/// same user and could send it any of them (so could a terminal's Ctrl-C
/// or Ctrl-Z to the whole group, or a `kill` of the group during a drain:
/// the runtime decides when the spawner goes, by closing its socket).
/// SIGSTOP and SIGKILL cannot be ignored: the runtime resumes a stopped
/// spawner (`prefork`), and a dead one is started again. Its children
/// get them back at their default before exec.
const IGNORED: [libc::c_int; 10] = [
    libc::SIGHUP,
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGTERM,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGALRM,
    libc::SIGTSTP,
    libc::SIGTTIN,
    libc::SIGTTOU,
];

/// What a lease message starts with (a request starts with its id).
const LEASE: &[u8] = b"lease\0";

/// The message that renews the lease until `deadline` (`CLOCK_MONOTONIC`
/// nanoseconds).
pub(crate) fn lease_message(deadline: u64) -> Vec<u8> {
    let mut out = LEASE.to_vec();
    out.extend_from_slice(deadline.to_string().as_bytes());
    out
}

/// Whether the spawner is wanted (unless `WEFT_SPAWNER=off`); it runs
/// where the launcher can (this binary, as `launcher::run_if_asked` starts
/// either).
pub(crate) fn wanted() -> bool {
    std::env::var_os("WEFT_SPAWNER").is_none_or(|v| v != "off")
}

/// The spawner's command line before the start command.
pub(crate) fn prefix(control: &std::path::Path) -> Vec<String> {
    vec![
        "/proc/self/exe".into(),
        ARG.into(),
        std::process::id().to_string(),
        control.to_string_lossy().into_owned(),
    ]
}

/// A request for one child, as the runtime writes it.
pub(crate) fn request(
    id: u64,
    cgroup_procs: Option<&std::ffi::CStr>,
    env: &[(OsString, OsString)],
) -> Vec<u8> {
    let mut out = format!("{id}\0").into_bytes();
    if let Some(procs) = cgroup_procs {
        out.extend_from_slice(procs.to_bytes());
    }
    out.push(0);
    for (name, value) in env {
        out.extend_from_slice(name.as_bytes());
        out.push(b'=');
        out.extend_from_slice(value.as_bytes());
        out.push(0);
    }
    out
}

/// A request as the spawner reads it.
#[derive(Debug, PartialEq)]
struct Request {
    id: u64,
    cgroup_procs: Option<CString>,
    env: Vec<(OsString, OsString)>,
}

fn parse_request(bytes: &[u8]) -> Result<Request, String> {
    let mut fields = bytes
        .strip_suffix(b"\0")
        .unwrap_or(bytes)
        .split(|b| *b == 0);
    let id = fields
        .next()
        .and_then(|f| std::str::from_utf8(f).ok())
        .and_then(|f| f.parse().ok())
        .ok_or("a request without an id")?;
    let procs = fields.next().ok_or("a request without its cgroup field")?;
    let cgroup_procs = (!procs.is_empty())
        .then(|| CString::new(procs).map_err(|_| "a cgroup path with a NUL"))
        .transpose()?;
    let env = fields
        .filter(|f| !f.is_empty())
        .map(|f| {
            let at = f.iter().position(|b| *b == b'=').unwrap_or(f.len());
            let value = f.get(at + 1..).unwrap_or_default();
            (
                OsStr::from_bytes(&f[..at]).to_owned(),
                OsStr::from_bytes(value).to_owned(),
            )
        })
        .collect();
    Ok(Request {
        id,
        cgroup_procs,
        env,
    })
}

/// Runs the spawner; returns its exit code.
pub(crate) fn serve(args: Vec<OsString>) -> i32 {
    let [runtime, control, program, rest @ ..] = args.as_slice() else {
        eprintln!("weft: {ARG} RUNTIME-PID CONTROL-SOCKET PROGRAM [ARGS...]");
        return 2;
    };
    let runtime: libc::pid_t = runtime.to_str().and_then(|p| p.parse().ok()).unwrap_or(0);
    // SAFETY: plain system calls on this process.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        for signal in IGNORED {
            libc::signal(signal, libc::SIG_IGN);
        }
    }
    // A runtime that died before the request above sends no signal.
    // SAFETY: getppid has no preconditions.
    if unsafe { libc::getppid() } != runtime {
        return 1;
    }
    match Spawner::connect(control.as_ref(), program, rest) {
        Ok(mut spawner) => match spawner.run() {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("weft spawner: {e}");
                1
            }
        },
        Err(e) => {
            eprintln!(
                "weft spawner: cannot reach the runtime at {}: {e}",
                control.to_string_lossy()
            );
            1
        }
    }
}

struct Spawner<'a> {
    control: OwnedFd,
    children: SignalFd,
    program: &'a OsStr,
    args: &'a [OsString],
    me: libc::pid_t,
    stack: ChildStack,
    /// The node's lease: its deadline, once the runtime sent one.
    lease: Option<u64>,
    /// The lease ran out: every child was killed, and none starts until
    /// a new lease comes.
    lapsed: bool,
    /// The children alive, with their cgroups.
    live: Vec<(libc::pid_t, Option<CString>)>,
}

impl<'a> Spawner<'a> {
    fn connect(
        control: &std::path::Path,
        program: &'a OsStr,
        args: &'a [OsString],
    ) -> std::io::Result<Self> {
        let fd = nix::sys::socket::socket(
            AddressFamily::Unix,
            SockType::SeqPacket,
            SockFlag::SOCK_CLOEXEC,
            None,
        )?;
        nix::sys::socket::connect(fd.as_raw_fd(), &UnixAddr::new(control)?)?;
        // SIGCHLD is read from a descriptor, so the loop below is all there
        // is: no handler runs anywhere.
        let mut chld = SigSet::empty();
        chld.add(Signal::SIGCHLD);
        chld.thread_block()?;
        let children = SignalFd::with_flags(&chld, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)?;
        Ok(Self {
            control: fd,
            children,
            program,
            args,
            me: std::process::id() as libc::pid_t,
            stack: ChildStack::new(),
            lease: None,
            lapsed: false,
            live: Vec::new(),
        })
    }

    /// How long `poll` may wait: until the lease runs out, if one holds.
    fn poll_timeout(&self) -> nix::poll::PollTimeout {
        use nix::poll::PollTimeout;
        match self.lease.filter(|_| !self.lapsed) {
            None => PollTimeout::NONE,
            Some(deadline) => {
                let left = deadline.saturating_sub(crate::lease::monotonic_ns());
                // Rounded up: waking a little late is fine, spinning is not.
                let ms = left.div_ceil(1_000_000).min(60_000) as i32;
                PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
            }
        }
    }

    /// Kills every child once the lease has run out unrenewed.
    fn enforce_lease(&mut self) {
        let Some(deadline) = self.lease else { return };
        if self.lapsed || crate::lease::monotonic_ns() < deadline {
            return;
        }
        self.lapsed = true;
        for (pid, cgroup) in &self.live {
            // SAFETY: plain syscall; a group already gone is ESRCH.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
            if let Some(procs) = cgroup {
                crate::process::cgroup::kill_by_procs(procs);
            }
        }
        if !self.live.is_empty() {
            eprintln!(
                "weft spawner: the node's lease ran out unrenewed; killed its {} task processes",
                self.live.len()
            );
        }
    }

    /// Serves requests until the runtime closes the socket.
    fn run(&mut self) -> std::io::Result<()> {
        use nix::poll::{PollFd, PollFlags, poll};
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let timeout = self.poll_timeout();
            let polled = {
                let mut fds = [
                    PollFd::new(self.control.as_fd(), PollFlags::POLLIN),
                    PollFd::new(self.children.as_fd(), PollFlags::POLLIN),
                ];
                let ready = |fd: &PollFd| fd.revents().is_some_and(|r| !r.is_empty());
                poll(&mut fds, timeout).map(|_| (ready(&fds[0]), ready(&fds[1])))
            };
            // Before anything else: a child must not outlive the lease.
            self.enforce_lease();
            let (requests, ended) = match polled {
                Ok(ready) => ready,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            };
            if ended {
                while let Ok(Some(_)) = self.children.read_signal() {}
                self.reap()?;
            }
            if requests {
                let Some((len, fds)) = self.receive(&mut buf)? else {
                    // The runtime closed the socket: it is gone or stopping.
                    return Ok(());
                };
                if let Some(deadline) = buf[..len].strip_prefix(LEASE) {
                    let deadline = std::str::from_utf8(deadline)
                        .ok()
                        .and_then(|d| d.parse().ok());
                    if deadline.is_some() {
                        self.lease = deadline;
                        self.lapsed = false;
                        self.enforce_lease();
                    }
                    continue;
                }
                let answer = match parse_request(&buf[..len]) {
                    Ok(request) => self.spawn(request, fds),
                    Err(e) => serde_json::json!({ "id": null, "error": e }),
                };
                self.send(&answer)?;
            }
        }
    }

    /// One request and the descriptors sent with it; `None` at the end.
    fn receive(&self, buf: &mut [u8]) -> std::io::Result<Option<(usize, Vec<OwnedFd>)>> {
        let mut space = nix::cmsg_space!([RawFd; 3]);
        let mut iov = [IoSliceMut::new(buf)];
        let msg = nix::sys::socket::recvmsg::<UnixAddr>(
            self.control.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )?;
        let mut fds = Vec::new();
        for cmsg in msg.cmsgs()? {
            if let ControlMessageOwned::ScmRights(received) = cmsg {
                // SAFETY: the kernel just gave us these descriptors.
                fds.extend(
                    received
                        .into_iter()
                        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                );
            }
        }
        if msg.bytes == 0 && fds.is_empty() {
            return Ok(None);
        }
        Ok(Some((msg.bytes, fds)))
    }

    fn send(&self, message: &serde_json::Value) -> std::io::Result<()> {
        let bytes = message.to_string();
        nix::sys::socket::send(
            self.control.as_raw_fd(),
            bytes.as_bytes(),
            MsgFlags::MSG_NOSIGNAL,
        )?;
        Ok(())
    }

    /// Tells the runtime of every child that has ended.
    fn reap(&mut self) -> std::io::Result<()> {
        loop {
            let mut status = 0;
            // SAFETY: waitpid writes the status into a local.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                return Ok(());
            }
            self.live.retain(|(child, _)| *child != pid);
            self.send(&serde_json::json!({ "exited": pid, "status": status }))?;
        }
    }

    /// Starts one child; its pid once it runs the start command, or why it
    /// could not.
    fn spawn(&mut self, request: Request, fds: Vec<OwnedFd>) -> serde_json::Value {
        let id = request.id;
        let Ok(stdio) = <[OwnedFd; 3]>::try_from(fds) else {
            return serde_json::json!({ "id": id, "error": "expected 3 descriptors" });
        };
        if self.lapsed {
            return serde_json::json!({
                "id": id,
                "error": "this weft node's lease on the database ran out: it starts no task process until it has rejoined"
            });
        }
        let child = Child {
            program: self.program,
            args: self.args,
            env: &request.env,
            stdio: stdio.each_ref().map(|fd| fd.as_raw_fd()),
            cgroup_procs: request.cgroup_procs.as_deref(),
            spawner: self.me,
        };
        // The descriptors are closed when `stdio` drops: the child has its
        // own copies by the time `start` returns.
        match child.start(&mut self.stack) {
            Ok(pid) => {
                self.live.push((pid, request.cgroup_procs.clone()));
                serde_json::json!({ "id": id, "pid": pid })
            }
            // Reaped with the others; nobody waits for its end.
            Err(why) => serde_json::json!({ "id": id, "error": why }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_carry_the_environment_byte_for_byte() {
        let env = vec![
            (OsString::from("PATH"), OsString::from("/usr/bin:/bin")),
            (OsString::from("EMPTY"), OsString::new()),
            (OsString::from("EQ"), OsString::from("a=b")),
            (
                OsString::from("RAW"),
                OsStr::from_bytes(b"\xff\xfe").to_owned(),
            ),
        ];
        let procs = CString::new("/sys/fs/cgroup/weft-1/trn-x-1/cgroup.procs").unwrap();
        let parsed = parse_request(&request(7, Some(&procs), &env)).unwrap();
        assert_eq!(
            parsed,
            Request {
                id: 7,
                cgroup_procs: Some(procs),
                env
            }
        );
        let none = parse_request(&request(8, None, &[])).unwrap();
        assert_eq!((none.id, none.cgroup_procs, none.env.len()), (8, None, 0));
        assert!(parse_request(b"x\0\0").is_err());
    }

    /// A spawner on one end of a socket pair, as `serve` makes it.
    fn spawner() -> (Spawner<'static>, OwnedFd) {
        let (ours, theirs) = nix::sys::socket::socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap();
        let spawner = Spawner {
            control: ours,
            children: SignalFd::with_flags(&SigSet::empty(), SfdFlags::SFD_CLOEXEC).unwrap(),
            program: OsStr::new("/bin/sh"),
            args: &[],
            me: std::process::id() as libc::pid_t,
            stack: ChildStack::new(),
            lease: None,
            lapsed: false,
            live: Vec::new(),
        };
        (spawner, theirs)
    }

    /// Starts `sleep 30` in a group of its own, as the spawner starts a
    /// child, and counts it live.
    fn sleeper(spawner: &mut Spawner<'_>) -> libc::pid_t {
        let devnull = std::fs::File::open("/dev/null").unwrap();
        let fd = devnull.as_raw_fd();
        let args = [OsString::from("30")];
        let child = Child {
            program: OsStr::new("sleep"),
            args: &args,
            env: &[(OsString::from("PATH"), OsString::from("/usr/bin:/bin"))],
            stdio: [fd, fd, fd],
            cgroup_procs: None,
            spawner: spawner.me,
        };
        let pid = child.start(&mut spawner.stack).unwrap();
        spawner.live.push((pid, None));
        pid
    }

    fn wait_status(pid: libc::pid_t) -> i32 {
        let mut status = 0;
        // SAFETY: waits for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        status
    }

    #[test]
    fn past_the_lease_every_child_is_killed_and_none_starts_until_renewed() {
        let (mut spawner, _runtime) = spawner();
        // No lease yet (a store of one node): nothing is ever killed.
        let first = sleeper(&mut spawner);
        spawner.enforce_lease();
        assert_eq!(spawner.poll_timeout(), nix::poll::PollTimeout::NONE);
        assert!(crate::process::exists(first));

        let now = crate::lease::monotonic_ns();
        spawner.lease = Some(now + 60_000_000_000);
        spawner.enforce_lease();
        assert!(crate::process::exists(first), "the lease holds");
        let wait: i32 = spawner.poll_timeout().into();
        assert!(
            (59_000..=60_000).contains(&wait),
            "poll wakes at the deadline: {wait} ms"
        );

        let second = sleeper(&mut spawner);
        spawner.lease = Some(now);
        spawner.enforce_lease();
        for pid in [first, second] {
            let status = wait_status(pid);
            assert!(
                libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL,
                "{pid} was killed: {status:#x}"
            );
        }
        assert!(spawner.lapsed);
        let devnull = || OwnedFd::from(std::fs::File::open("/dev/null").unwrap());
        let request = |id| Request {
            id,
            cgroup_procs: None,
            env: vec![],
        };
        let refused = spawner.spawn(request(1), vec![devnull(), devnull(), devnull()]);
        assert!(
            refused["error"].as_str().unwrap().contains("lease"),
            "{refused}"
        );
        // A new lease: children start again.
        spawner.lease = Some(crate::lease::monotonic_ns() + 60_000_000_000);
        spawner.lapsed = false;
        let started = spawner.spawn(request(2), vec![devnull(), devnull(), devnull()]);
        assert!(started["pid"].is_i64(), "{started}");
    }

    #[test]
    fn lease_messages_carry_their_deadline() {
        let message = lease_message(1_234_567_890_123);
        assert_eq!(message, b"lease\x001234567890123");
        assert!(
            parse_request(&message).is_err(),
            "never taken for a request"
        );
    }
}

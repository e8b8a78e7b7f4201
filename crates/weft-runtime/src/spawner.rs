//! The spawner: a small process that starts task processes for the runtime.
//!
//! Starting a task process through the launcher (see `launcher`) costs two
//! execs: the launcher's (this 90 MB binary: its relocations, its C
//! library's start-up) and the start command's. In a fan-out of no-op Rust
//! children the first was a fifth of all the CPU the machine spent
//! (BENCHMARKS.md, "The runtime, per Rust child"). So on Linux the runtime
//! starts one spawner, this binary run as `__weft-spawner RUNTIME-PID
//! CONTROL-SOCKET PROGRAM ARGS...`, and asks it for each task process. It
//! is single-threaded and small, so a `fork()` of it is cheap and safe
//! (unlike one of the runtime's: its page tables, its threads), and its
//! child does what the launcher did (its own process group,
//! `PR_SET_PDEATHSIG`, the attempt's cgroup) and execs the start command.
//!
//! It speaks the protocol of the Python pre-fork launcher (`prefork`): a
//! `SOCK_SEQPACKET` socket; each request carries the child's stdin, stdout
//! and stderr (`SCM_RIGHTS`); the answers are the child's pid once it has
//! exec'd (or why it could not), and its wait status when it ends. A request
//! is `ID \0 CGROUP-PROCS \0 NAME=VALUE \0 ...` (the whole environment,
//! bytes as they are; an empty `CGROUP-PROCS` for none).
//!
//! Its children die with it (`PR_SET_PDEATHSIG`), and it dies with the
//! runtime, so no task process outlives the runtime. `WEFT_SPAWNER=off`
//! starts each task process through the launcher instead.

use std::ffi::{CString, OsStr, OsString};
use std::io::{IoSliceMut, Read as _, Write as _};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;

use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::{
    AddressFamily, ControlMessageOwned, MsgFlags, SockFlag, SockType, UnixAddr,
};

/// The spawner's first argument.
pub const ARG: &str = "__weft-spawner";

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
        })
    }

    /// Serves requests until the runtime closes the socket.
    fn run(&mut self) -> std::io::Result<()> {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let (requests, ended) = {
                let mut fds = [
                    PollFd::new(self.control.as_fd(), PollFlags::POLLIN),
                    PollFd::new(self.children.as_fd(), PollFlags::POLLIN),
                ];
                match poll(&mut fds, PollTimeout::NONE) {
                    Ok(_) => {}
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => return Err(e.into()),
                }
                let ready = |fd: &PollFd| fd.revents().is_some_and(|r| !r.is_empty());
                (ready(&fds[0]), ready(&fds[1]))
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
    fn reap(&self) -> std::io::Result<()> {
        loop {
            let mut status = 0;
            // SAFETY: waitpid writes the status into a local.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                return Ok(());
            }
            self.send(&serde_json::json!({ "exited": pid, "status": status }))?;
        }
    }

    /// Forks and execs one child; its pid once it runs the start command,
    /// or why it could not.
    fn spawn(&self, request: Request, fds: Vec<OwnedFd>) -> serde_json::Value {
        let id = request.id;
        let Ok([stdin, stdout, stderr]) = <[OwnedFd; 3]>::try_from(fds) else {
            return serde_json::json!({ "id": id, "error": "expected 3 descriptors" });
        };
        // The child writes why it failed here; exec closes it (CLOEXEC), so
        // an empty read means the start command is running.
        let (mut report_r, report_w) = match std::io::pipe() {
            Ok(pipe) => pipe,
            Err(e) => return serde_json::json!({ "id": id, "error": format!("pipe: {e}") }),
        };
        let mut command = std::process::Command::new(self.program);
        command
            .args(self.args)
            .env_clear()
            .envs(request.env)
            .stdin(stdin)
            .stdout(stdout)
            .stderr(stderr)
            .process_group(0);
        // SAFETY: this process has one thread, so the child may do anything
        // the parent could (allocate, take locks) before it execs.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            let e = std::io::Error::last_os_error();
            return serde_json::json!({ "id": id, "error": format!("fork failed: {e}") });
        }
        if pid == 0 {
            drop(report_r);
            become_task(command, report_w, self.me, request.cgroup_procs.as_deref());
        }
        drop(report_w);
        // The command (and the descriptors it holds) is the child's now.
        drop(command);
        // Set on both sides, so the group exists before the runtime hears
        // the pid (it kills attempts by group).
        // SAFETY: plain system call on our own child.
        unsafe {
            libc::setpgid(pid, pid);
        }
        let mut why = String::new();
        let _ = report_r.read_to_string(&mut why);
        if why.is_empty() {
            serde_json::json!({ "id": id, "pid": pid })
        } else {
            // Reaped with the others; nobody waits for its end.
            serde_json::json!({ "id": id, "error": why })
        }
    }
}

/// The child: dies with the spawner, enters the attempt's cgroup, and
/// becomes the start command (`Command::exec` also gives it an empty
/// signal mask and the default SIGPIPE). Never returns.
fn become_task(
    mut command: std::process::Command,
    mut report: std::io::PipeWriter,
    spawner: libc::pid_t,
    cgroup_procs: Option<&std::ffi::CStr>,
) -> ! {
    let mut fail = |why: String| -> ! {
        let _ = report.write_all(why.as_bytes());
        // SAFETY: leaving the child without running the spawner's exit path.
        unsafe { libc::_exit(127) }
    };
    // SAFETY: plain system calls on this process.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        if libc::getppid() != spawner {
            libc::_exit(1);
        }
    }
    if let Some(procs) = cgroup_procs
        && let Err(e) = crate::cgroup::enter(procs)
    {
        fail(format!(
            "could not enter the attempt's cgroup {}: {e}",
            procs.to_string_lossy()
        ));
    }
    let err = command.exec();
    fail(err.to_string())
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
}

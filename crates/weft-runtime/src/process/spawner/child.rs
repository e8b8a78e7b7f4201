//! Starting one child on the spawner's memory: `clone(CLONE_VM |
//! CLONE_VFORK)` onto a stack of its own, a few system calls, then the
//! exec, as `posix_spawn` does (see [`Child::start`] for why not a fork).

use std::ffi::{CString, OsStr, OsString};
use std::io::Read as _;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;

use super::IGNORED;

/// One task process to start: everything its start needs.
pub(super) struct Child<'a> {
    pub(super) program: &'a OsStr,
    pub(super) args: &'a [OsString],
    pub(super) env: &'a [(OsString, OsString)],
    /// Its stdin, stdout and stderr.
    pub(super) stdio: [RawFd; 3],
    pub(super) cgroup_procs: Option<&'a std::ffi::CStr>,
    /// The spawner's pid: the child checks it still has that parent.
    pub(super) spawner: libc::pid_t,
}

/// The stack the child runs on between `clone` and `exec`: it shares the
/// spawner's memory, so it needs a stack of its own. What runs on it is
/// [`child_main`], a few system calls.
const CHILD_STACK: usize = 64 * 1024;

/// The child's stack, kept from one start to the next.
pub(super) struct ChildStack(Box<[u128]>);

impl ChildStack {
    pub(super) fn new() -> Self {
        Self(vec![0u128; CHILD_STACK / 16].into_boxed_slice())
    }

    /// Its top (stacks grow down here), 16-byte aligned as the ABI wants.
    fn top(&mut self) -> *mut libc::c_void {
        self.0.as_mut_ptr_range().end.cast()
    }
}

/// What the child needs, made before the clone: it shares the spawner's
/// memory and may not allocate, take a lock or unwind.
struct Prepared<'a> {
    program: CString,
    argv: Vec<*const libc::c_char>,
    /// `/bin/sh PROGRAM ARGS...`: a file without a `#!` line is a shell
    /// script, as `execvp` (and so `Command`) takes it.
    sh_argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
    stdio: [RawFd; 3],
    cgroup_procs: Option<&'a std::ffi::CStr>,
    spawner: libc::pid_t,
    /// Where the child writes how it failed ([`Stage`] and errno); closed
    /// by a successful exec.
    report: RawFd,
}

/// Where a child failed, as it reports it.
#[derive(Clone, Copy)]
#[repr(u8)]
enum Stage {
    Cgroup = 1,
    Exec = 2,
}

impl Child<'_> {
    /// Starts the child: `clone(CLONE_VM | CLONE_VFORK)`, so it runs on the
    /// spawner's memory until it execs, while the spawner waits (glibc's
    /// `posix_spawn` works the same way). A `fork()` copied the spawner's
    /// page tables, took a copy-on-write fault for every page either side
    /// wrote before the exec, and tore the copy down again at the exec: 6 to
    /// 7% of the machine's CPU in a fan-out of no-op Rust children
    /// (BENCHMARKS.md, "Spawning without a copy, group commit").
    /// `posix_spawn` itself cannot set the parent-death signal or enter a
    /// cgroup.
    pub(super) fn start(&self, stack: &mut ChildStack) -> Result<libc::pid_t, String> {
        let to_c = |s: &OsStr| CString::new(s.as_bytes()).map_err(|_| format!("{s:?} holds a NUL"));
        let env_path = self
            .env
            .iter()
            .find(|(name, _)| name == "PATH")
            .map(|(_, value)| value.as_os_str());
        let program = resolve(self.program, env_path)?;
        let argv_c = std::iter::once(self.program)
            .chain(self.args.iter().map(OsString::as_os_str))
            .map(to_c)
            .collect::<Result<Vec<_>, _>>()?;
        let envp_c = self
            .env
            .iter()
            .map(|(name, value)| {
                let mut entry = name.as_bytes().to_vec();
                entry.push(b'=');
                entry.extend_from_slice(value.as_bytes());
                CString::new(entry).map_err(|_| format!("the variable {name:?} holds a NUL"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let pointers = |strings: &[CString]| {
            strings
                .iter()
                .map(|s| s.as_ptr())
                .chain([std::ptr::null()])
                .collect::<Vec<_>>()
        };
        // CLOEXEC: a successful exec closes the child's end, so an empty
        // read below means the start command is running.
        let (mut report_r, report_w) = std::io::pipe().map_err(|e| format!("pipe: {e}"))?;
        // The pointers stay good as `program` moves: they point into its heap.
        let sh_argv = [SH.as_ptr(), program.as_ptr()]
            .into_iter()
            .chain(argv_c[1..].iter().map(|a| a.as_ptr()))
            .chain([std::ptr::null()])
            .collect();
        let prepared = Prepared {
            program,
            argv: pointers(&argv_c),
            sh_argv,
            envp: pointers(&envp_c),
            stdio: self.stdio,
            cgroup_procs: self.cgroup_procs,
            spawner: self.spawner,
            report: report_w.as_raw_fd(),
        };
        // Every signal is blocked across the clone: a handler must not run
        // in the child, on memory it shares with the spawner. The child
        // unblocks them all just before its exec.
        // SAFETY: plain system calls; the child runs only `child_main` on its
        // own stack with `prepared`, which outlives it (the spawner is
        // suspended until the child has exec'd or exited: CLONE_VFORK).
        let pid = unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
            let pid = libc::clone(
                child_main,
                stack.top(),
                libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
                (&raw const prepared).cast_mut().cast(),
            );
            let clone_error = std::io::Error::last_os_error();
            libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
            if pid < 0 {
                return Err(format!("clone failed: {clone_error}"));
            }
            pid
        };
        drop(report_w);
        let mut report = Vec::new();
        let _ = report_r.read_to_end(&mut report);
        match report.as_slice() {
            [] => Ok(pid),
            [stage, errno @ ..] => {
                let errno = <[u8; 4]>::try_from(errno).map_or(0, i32::from_ne_bytes);
                let err = std::io::Error::from_raw_os_error(errno);
                Err(if *stage == Stage::Cgroup as u8 {
                    let procs = self.cgroup_procs.map(|p| p.to_string_lossy());
                    format!(
                        "could not enter the attempt's cgroup {}: {err}",
                        procs.unwrap_or_default()
                    )
                } else {
                    err.to_string()
                })
            }
        }
    }
}

/// The shell that runs a start command without a `#!` line.
const SH: &std::ffi::CStr = c"/bin/sh";

/// The program to exec: as named when the name holds a `/`, else the first
/// executable of that name on the child's `PATH` (as `Command` does: the
/// child's environment decides), or the spawner's when the child has none.
fn resolve(program: &OsStr, path: Option<&OsStr>) -> Result<CString, String> {
    let c = |bytes: &[u8]| CString::new(bytes).map_err(|_| format!("{program:?} holds a NUL"));
    if program.as_bytes().contains(&b'/') {
        return c(program.as_bytes());
    }
    let own = std::env::var_os("PATH");
    let path = path
        .or(own.as_deref())
        .unwrap_or(OsStr::new("/usr/bin:/bin"));
    for dir in std::env::split_paths(path) {
        let candidate = dir.join(program);
        let Ok(candidate) = c(candidate.as_os_str().as_bytes()) else {
            continue;
        };
        // SAFETY: access reads a C string.
        let executable = unsafe { libc::access(candidate.as_ptr(), libc::X_OK) } == 0;
        if executable
            && std::fs::metadata(OsStr::from_bytes(candidate.to_bytes())).is_ok_and(|m| m.is_file())
        {
            return Ok(candidate);
        }
    }
    Err(std::io::Error::from_raw_os_error(libc::ENOENT).to_string())
}

/// The child between `clone` and `exec`: dies with the spawner, enters the
/// attempt's cgroup, takes its descriptors and its own process group, gets
/// the default SIGPIPE (Rust ignores it) and an empty signal mask, and
/// becomes the start command. Only system calls: it runs on the spawner's
/// memory (see [`Child::start`]).
extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `Prepared` that `Child::start` keeps alive until
    // this child has exec'd or exited; everything below is a system call
    // on this process.
    unsafe {
        let p = &*arg.cast::<Prepared<'_>>();
        let fail = |stage: Stage, errno: i32| -> ! {
            let mut message = [0u8; 5];
            message[0] = stage as u8;
            message[1..].copy_from_slice(&errno.to_ne_bytes());
            libc::write(p.report, message.as_ptr().cast(), message.len());
            libc::_exit(127)
        };
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        if libc::getppid() != p.spawner {
            libc::_exit(1);
        }
        if let Some(procs) = p.cgroup_procs
            && let Err(e) = crate::process::cgroup::enter(procs)
        {
            fail(Stage::Cgroup, e.raw_os_error().unwrap_or(0));
        }
        for (target, &fd) in p.stdio.iter().enumerate() {
            let target = target as RawFd;
            if fd == target {
                // dup2 onto itself would leave close-on-exec set.
                libc::fcntl(fd, libc::F_SETFD, 0);
            } else {
                libc::dup2(fd, target);
            }
        }
        libc::setpgid(0, 0);
        // Rust's runtime ignores SIGPIPE and handles SIGSEGV and SIGBUS,
        // and the spawner ignores more (IGNORED); an exec keeps an ignored
        // signal ignored, so each is reset.
        for signal in [libc::SIGPIPE, libc::SIGSEGV, libc::SIGBUS]
            .into_iter()
            .chain(IGNORED)
        {
            libc::signal(signal, libc::SIG_DFL);
        }
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        libc::execve(p.program.as_ptr(), p.argv.as_ptr(), p.envp.as_ptr());
        let errno = *libc::__errno_location();
        if errno == libc::ENOEXEC {
            libc::execve(SH.as_ptr(), p.sh_argv.as_ptr(), p.envp.as_ptr());
        }
        fail(Stage::Exec, errno)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Starts `/bin/sh -c script` (or `program`) as the spawner does, with
    /// this environment; its pid and what it printed, or why it could not.
    fn start(
        program: &str,
        script: &str,
        env: &[(&str, &str)],
    ) -> Result<(libc::pid_t, String), String> {
        start_with_args(program, &["-c", script], env)
    }

    /// Starts `program ARGS...` as the spawner does.
    fn start_with_args(
        program: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<(libc::pid_t, String), String> {
        let (mut out_r, out_w) = std::io::pipe().unwrap();
        let devnull = std::fs::File::open("/dev/null").unwrap();
        let env: Vec<(OsString, OsString)> =
            env.iter().map(|(n, v)| (n.into(), v.into())).collect();
        let args: Vec<OsString> = args.iter().map(OsString::from).collect();
        let child = Child {
            program: OsStr::new(program),
            args: &args,
            env: &env,
            stdio: [devnull.as_raw_fd(), out_w.as_raw_fd(), out_w.as_raw_fd()],
            cgroup_procs: None,
            spawner: std::process::id() as libc::pid_t,
        };
        let pid = child.start(&mut ChildStack::new())?;
        drop(out_w);
        let mut printed = String::new();
        out_r.read_to_string(&mut printed).unwrap();
        let mut status = 0;
        // SAFETY: waits for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        Ok((pid, printed))
    }

    #[test]
    fn a_child_gets_its_environment_descriptors_group_and_default_signals() {
        let script = r#"echo "$GREETING ${HOME-unset}"; cut -d' ' -f5 /proc/$$/stat"#;
        let (pid, printed) = start("/bin/sh", script, &[("GREETING", "hello")]).unwrap();
        assert_eq!(
            printed,
            format!("hello unset\n{pid}\n"),
            "its own process group"
        );
        // The signal state is read by the start command itself, with no shell
        // in between (a shell sets its own mask). Nothing blocked; SIGPIPE
        // (bit 13), which this test process ignores as Rust programs do, back
        // to its default.
        let (_, printed) =
            start_with_args("grep", &["-E", "^Sig(Blk|Ign)", "/proc/self/status"], &[]).unwrap();
        let mask = |name: &str| {
            let line = printed.lines().find(|l| l.starts_with(name)).unwrap();
            u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
        };
        assert_eq!(mask("SigBlk:"), 0, "{printed}");
        // Nothing the spawner ignores is ignored by its child.
        let spawners = IGNORED
            .into_iter()
            .chain([libc::SIGPIPE])
            .fold(0u64, |m, s| m | 1 << (s - 1));
        assert_eq!(mask("SigIgn:") & spawners, 0, "{printed}");
    }

    #[test]
    fn a_program_is_found_on_the_childs_path_and_a_missing_one_is_named() {
        let (_, printed) =
            start("sh", "echo found", &[("PATH", "/nowhere:/usr/bin:/bin")]).unwrap();
        assert_eq!(printed, "found\n");
        let missing = start("weft-no-such-program", "", &[("PATH", "/usr/bin:/bin")]).unwrap_err();
        assert!(missing.contains("No such file or directory"), "{missing}");
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("not-executable");
        std::fs::write(&script, "#!/bin/sh\n").unwrap();
        let not_executable = start(script.to_str().unwrap(), "", &[]).unwrap_err();
        assert!(
            not_executable.contains("Permission denied"),
            "{not_executable}"
        );
    }
}

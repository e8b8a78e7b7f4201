//! A task process dies with the runtime that started it, even one killed
//! with SIGKILL, so no attempt outlives the runtime that would have
//! watched it (and recovery would run it a second time).
//!
//! - On Linux the kernel does it: `PR_SET_PDEATHSIG` sends SIGKILL to the
//!   child when the runtime dies.
//! - Elsewhere (macOS) a *lifeline*: the runtime holds the write end of a
//!   pipe that nothing else keeps open; beside each task process a small
//!   watcher, forked before the exec, blocks reading the other end. When
//!   the runtime dies the pipe closes, the read returns, and the watcher
//!   kills the task's process group (itself included).
//!
//! Either way the child first checks that its parent is still the runtime:
//! a runtime that died between the fork and the setup sends nothing.

use std::io;

/// What every task process is started with.
pub struct Lifeline {
    #[cfg(not(target_os = "linux"))]
    pipe: (libc::c_int, libc::c_int),
}

impl Lifeline {
    pub fn new() -> io::Result<Self> {
        #[cfg(target_os = "linux")]
        {
            Ok(Self {})
        }
        #[cfg(not(target_os = "linux"))]
        {
            let mut fds = [0; 2];
            // SAFETY: pipe writes two descriptors into the array; each is
            // then marked close-on-exec, so no task process keeps either.
            unsafe {
                if libc::pipe(fds.as_mut_ptr()) != 0 {
                    return Err(io::Error::last_os_error());
                }
                for fd in fds {
                    libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
                }
            }
            Ok(Self {
                pipe: (fds[0], fds[1]),
            })
        }
    }

    /// What a child runs between fork and exec. Only async-signal-safe
    /// calls, and no allocation.
    pub fn child_setup(&self) -> impl Fn() -> io::Result<()> + Send + Sync + 'static {
        let runtime = std::process::id() as libc::pid_t;
        #[cfg(not(target_os = "linux"))]
        let (read_end, write_end) = self.pipe;
        #[cfg(not(target_os = "linux"))]
        let max_fd = open_files_limit();
        move || {
            #[cfg(target_os = "linux")]
            // SAFETY: prctl is async-signal-safe.
            unsafe {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            }
            // SAFETY: getppid and _exit are async-signal-safe.
            unsafe {
                if libc::getppid() != runtime {
                    libc::_exit(1);
                }
            }
            #[cfg(not(target_os = "linux"))]
            // SAFETY: fork, close, read, kill and _exit are async-signal-safe;
            // the watcher calls nothing else and returns never.
            unsafe {
                match libc::fork() {
                    -1 => return Err(io::Error::last_os_error()),
                    0 => {
                        // The watcher keeps nothing of the task's open but
                        // the lifeline: not its pipes (the runtime reads
                        // them to their end), not the pipe through which
                        // the runtime learns that the exec happened.
                        let _ = write_end;
                        for fd in 0..max_fd {
                            if fd != read_end {
                                libc::close(fd);
                            }
                        }
                        let mut byte = 0u8;
                        // Returns 0 once every write end is closed: the runtime is gone.
                        loop {
                            let n = libc::read(read_end, (&mut byte as *mut u8).cast(), 1);
                            let interrupted = n < 0
                                && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR);
                            if n <= 0 && !interrupted {
                                break;
                            }
                        }
                        libc::kill(0, libc::SIGKILL);
                        libc::_exit(0);
                    }
                    _ => {}
                }
            }
            Ok(())
        }
    }
}

/// How many descriptors a process may have open (the highest to close).
#[cfg(not(target_os = "linux"))]
fn open_files_limit() -> libc::c_int {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct given.
    let soft = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        limit.rlim_cur
    } else {
        1024
    };
    soft.min(65_536) as libc::c_int
}

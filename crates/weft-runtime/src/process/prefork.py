"""weft's pre-fork server for Python start commands (`weft dev --prefork`).

Started by the runtime as

    PYTHON [FLAGS] prefork.py CONTROL-SOCKET PRELOAD SCRIPT|-m MODULE [ARGS...]

it imports the PRELOAD modules once (comma separated; `?name` when it may be
missing; the SDKs by default),
connects to the runtime's SOCK_SEQPACKET control socket and waits. For each
request (a JSON object with the attempt's whole environment and its cgroup,
and three file descriptors: stdin, stdout, stderr) it forks one child, which
becomes exactly what `PYTHON [FLAGS] SCRIPT [ARGS...]` would have been: its
own process and process group, its own environment and socket, the app's
script run as `__main__`. The server tells the runtime the child's pid and,
when the child ends, its raw wait status.

What forking changes, and how it is handled (README, "Pre-forked Python"):
- threads: forking a process with threads is unsafe, so the server refuses
  to start if the preloaded modules started one;
- random seeds: `random` reseeds itself in every child (os.register_at_fork);
  libraries with their own generators (numpy) do not;
- sockets and files: the server's control socket is closed in the child;
  nothing else is open;
- signals: the child gets the default handlers back;
- exit: the child joins its non-daemon threads, runs its atexit handlers
  (the app's and the preloaded modules', once, in the child; the server
  registers none) and flushes its output, as any interpreter does, then
  leaves without tearing down its modules (objects' `__del__` at interpreter
  shutdown do not run, which Python never promises anyway);
- the interpreter started once: environment variables that Python reads at
  start-up (PYTHONPATH, PYTHONHASHSEED, ...) are the server's, and every
  child shares the server's hash seed.
"""

import ctypes
import gc
import json
import os
import selectors
import signal
import socket
import sys
import threading
import time

PR_SET_PDEATHSIG = 1

# Signals the server ignores (see main); SIGSTOP and SIGKILL it cannot.
IGNORED = (
    signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGTERM, signal.SIGUSR1,
    signal.SIGUSR2, signal.SIGALRM, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU,
)


class Script:
    """The app's script compiled once, again when the file changes (every
    child would otherwise parse and compile it anew)."""

    def __init__(self, path):
        self.path = path
        self.key = None
        self.code = None

    def refresh(self):
        try:
            st = os.stat(self.path)
            key = (st.st_mtime_ns, st.st_size, st.st_ino)
            if key != self.key:
                self.key = key
                with open(self.path, "rb") as f:
                    self.code = compile(f.read(), self.path, "exec", dont_inherit=True)
        except (OSError, SyntaxError, ValueError):
            # The child runs the file the ordinary way and reports the error.
            self.key, self.code = None, None
        return self.code


def kill_cgroup(procs_list):
    """Kills every process of an attempt's cgroup: `cgroup.kill` on v2; on
    v1 (no such file) each member of each controller's group, by pid."""
    folders = [os.path.dirname(p) for p in procs_list.split("\n")]
    if len(folders) == 1 and os.path.exists(os.path.join(folders[0], "cgroup.kill")):
        try:
            with open(os.path.join(folders[0], "cgroup.kill"), "w") as f:
                f.write("1")
        except OSError:
            pass
        return
    for _ in range(20):
        killed = 0
        for folder in folders:
            try:
                with open(os.path.join(folder, "cgroup.procs")) as f:
                    pids = [int(line) for line in f if line.strip()]
            except OSError:
                continue
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed += 1
                except OSError:
                    pass
        if not killed:
            return


def main():
    # No collections in the server, and what it imported frozen out of
    # the collector's reach before the first fork: a collection in a child
    # would otherwise write to every object's page and copy the whole heap.
    gc.disable()
    control_path, preload, target = sys.argv[1], sys.argv[2], sys.argv[3:]
    if not target:
        sys.exit("weft prefork: no script given")
    if target[0] == "-m":
        if len(target) < 2:
            sys.exit("weft prefork: -m needs a module name")
        sys.path[0] = os.getcwd()
    else:
        sys.path[0] = os.path.dirname(os.path.abspath(target[0]))
    for name in filter(None, preload.split(",")):
        # `?name`: preloaded when installed (the SDKs, by default).
        optional = name.startswith("?")
        name = name.lstrip("?")
        try:
            __import__(name)
        except ModuleNotFoundError as e:
            if not optional or (e.name != name and not name.startswith(e.name + ".")):
                raise
    if threading.active_count() > 1:
        sys.exit(
            f"weft prefork: importing {preload} started a thread; forking it is unsafe. "
            "Run without --prefork or preload fewer modules."
        )
    sys.stdout.flush()
    sys.stderr.flush()
    gc.freeze()

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    server = os.getpid()
    # A task process (a child) runs as the same user and could signal the
    # server: every signal it can ignore, it ignores (the runtime resumes
    # it from SIGSTOP and restarts it after SIGKILL). Children get them back.
    for sig in IGNORED:
        signal.signal(sig, signal.SIG_IGN)

    script = None if target[0] == "-m" else Script(target[0])
    control = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    control.connect(control_path)
    # SIGCHLD wakes the loop through a pipe (the handler itself does nothing).
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    events = selectors.DefaultSelector()
    events.register(control, selectors.EVENT_READ)
    events.register(wake_r, selectors.EVENT_READ)

    def send(message):
        control.sendall(json.dumps(message).encode())

    # The node's lease (weft serve): a CLOCK_MONOTONIC deadline in ns. Past
    # it, unrenewed, every child is killed and none is forked until a new
    # lease comes: the runtime fences itself at the same moment, but it
    # cannot when it is paused, and another node may then run these
    # attempts again.
    lease = {"deadline": None, "lapsed": False}
    live = {}  # pid -> its cgroup's cgroup.procs, or None

    def enforce_lease():
        deadline = lease["deadline"]
        if deadline is None or lease["lapsed"] or time.clock_gettime_ns(time.CLOCK_MONOTONIC) < deadline:
            return
        lease["lapsed"] = True
        for pid, cgroup in live.items():
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass
            if cgroup:
                kill_cgroup(cgroup)

    def select_timeout():
        deadline = lease["deadline"]
        if deadline is None or lease["lapsed"]:
            return None
        left = deadline - time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        return max(left, 0) / 1e9 + 0.001

    def reap():
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            live.pop(pid, None)
            send({"exited": pid, "status": status})

    while True:
        ready = events.select(select_timeout())
        enforce_lease()
        for key, _ in ready:
            if key.fileobj == wake_r:
                os.read(wake_r, 512)
                reap()
                continue
            data, fds, _, _ = socket.recv_fds(control, 1 << 20, 3)
            if not data:
                # The runtime closed the socket: it is gone or shutting down.
                os._exit(0)
            request = json.loads(data)
            if "lease_ns" in request:
                lease["deadline"], lease["lapsed"] = int(request["lease_ns"]), False
                enforce_lease()
                continue
            if lease["lapsed"]:
                for fd in fds:
                    os.close(fd)
                send({"id": request.get("id"), "error": "this weft node's lease on the database ran out: "
                      "it starts no task process until it has rejoined"})
                continue
            if len(fds) != 3:
                for fd in fds:
                    os.close(fd)
                send({"id": request.get("id"), "error": f"expected 3 descriptors, got {len(fds)}"})
                continue
            code = script.refresh() if script else None
            gc.freeze()
            try:
                pid = os.fork()
            except OSError as e:
                for fd in fds:
                    os.close(fd)
                send({"id": request["id"], "error": f"fork failed: {e}"})
                continue
            if pid == 0:
                # The child: leave the server's loop and become the app.
                events.close()
                control.close()
                signal.set_wakeup_fd(-1)
                os.close(wake_r)
                os.close(wake_w)
                become(request, fds, libc, server)
                return target, code
            for fd in fds:
                os.close(fd)
            # Set on both sides, so the group exists before the runtime hears
            # the pid (it kills attempts by group).
            try:
                os.setpgid(pid, pid)
            except OSError:
                pass
            live[pid] = request.get("cgroup_procs")
            send({"id": request["id"], "pid": pid})


def become(request, fds, libc, server):
    """Turns a fresh child into the attempt's process."""
    # The handlers the server changed, back as in any Python (SIGPIPE
    # stays ignored and SIGINT raises KeyboardInterrupt).
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    for sig in IGNORED:
        signal.signal(sig, signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL)
    try:
        os.setpgid(0, 0)
    except OSError:
        pass
    # Die with the server, which dies with the runtime.
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != server:
        os._exit(1)
    cgroup = request.get("cgroup_procs")
    if cgroup:
        try:
            # One cgroup.procs on cgroup v2, one per controller on v1.
            for path in cgroup.split("\n"):
                with open(path, "w") as procs:
                    procs.write("0")
        except OSError as e:
            os.write(fds[2], f"weft: could not enter the attempt's cgroup {cgroup}: {e}\n".encode())
            os._exit(126)
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.environ.clear()
    os.environ.update(request["env"])
    gc.enable()


def run(target, compiled):
    """Runs the app's script (or module) as `__main__` and exits as Python would."""
    import runpy
    import types

    code = 0
    try:
        if target[0] == "-m":
            sys.argv = [target[1]] + target[2:]
            runpy.run_module(target[1], run_name="__main__", alter_sys=True)
        elif compiled is None:
            sys.argv = list(target)
            runpy.run_path(target[0], run_name="__main__")
        else:
            # As `python SCRIPT` runs it: a fresh `__main__` module.
            sys.argv = list(target)
            main_module = types.ModuleType("__main__")
            main_module.__file__ = target[0]
            main_module.__cached__ = None
            main_module.__builtins__ = __builtins__
            sys.modules["__main__"] = main_module
            exec(compiled, main_module.__dict__)
    except SystemExit as e:
        if e.code is None:
            code = 0
        elif isinstance(e.code, int):
            code = e.code
        else:
            print(e.code, file=sys.stderr)
            code = 1
    except BaseException:
        sys.excepthook(*sys.exc_info())
        code = 1
    finish(code)


def finish(code):
    """Exits as the interpreter does (non-daemon threads joined, atexit
    handlers run, output flushed) but without tearing down every module and
    object: that writes to every page the child shares with the server,
    and copying them was most of a pre-forked child's cost."""
    try:
        threading._shutdown()
    except Exception:
        pass
    import atexit

    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    os._exit(code & 0xFF)


if __name__ == "__main__":
    # Only a child returns from main().
    run(*main())

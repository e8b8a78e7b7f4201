"""A workflow app on the official Render SDK (`render` on PyPI), used by
weft's end-to-end tests and as the README's Python example.

Run it under weft:  weft dev -- python examples/python-app/app.py
"""

import asyncio
import atexit
import os
import sys
import time
from pathlib import Path

from render.workflows import Retry, Workflows

app = Workflows()

# Tests ask every task process to say when it starts, before it knows its run.
if os.environ.get("WEFT_TEST_SAY_START") and os.environ.get("RENDER_SDK_MODE") == "run":
    print(f"process {os.getpid()} started", flush=True)


@app.task
def square(ctx, x: int) -> int:
    print(f"squaring {x}")
    return x * x


@app.task
async def add_squares(ctx, a: int, b: int) -> int:
    results = await asyncio.gather(ctx.run(square, a), ctx.run(square, b))
    return sum(results)


@app.task
async def fan_out(ctx, n: int) -> int:
    """The tutorial's shape: n children in parallel, summed."""
    results = await asyncio.gather(*[ctx.run(square, i) for i in range(n)])
    return sum(results)


@app.task
def greet(ctx, name: str, greeting: str = "Hello") -> str:
    return f"{greeting}, {name}!"


@app.task
def echo(ctx, *args, **kwargs):
    return {"args": list(args), "kwargs": kwargs, "task_run_id": ctx.metadata.task_run_id,
            "root": ctx.metadata.root_task_run_id, "parent": ctx.metadata.parent_task_run_id}


@app.task
def fail(ctx, message: str) -> None:
    raise ValueError(message)


@app.task
async def catch_child_failure(ctx, message: str) -> str:
    try:
        await ctx.run(fail, message)
    except Exception as e:  # the child's failure surfaces as an exception
        return f"caught: {e}"
    return "no failure"


@app.task(retry=Retry(max_retries=2, wait_duration_ms=300, backoff_scaling=2.0))
def flaky(ctx, marker_dir: str, succeed_on: int) -> dict:
    """Fails until its `succeed_on`-th attempt; attempts are counted in files."""
    marker = Path(marker_dir)
    marker.mkdir(parents=True, exist_ok=True)
    attempt = len(list(marker.iterdir())) + 1
    (marker / f"attempt-{attempt}-{time.time():.3f}").touch()
    if attempt < succeed_on:
        raise RuntimeError(f"attempt {attempt} failed on purpose")
    return {"attempt": attempt}


@app.task
async def mixed_fan_out(ctx, n: int, marker_dir: str) -> dict:
    """A fan-out where one child (flaky) fails once and is retried."""
    results = await asyncio.gather(*[ctx.run(square, i) for i in range(n)], ctx.run(flaky, marker_dir, 2))
    return {"sum": sum(results[:-1]), "flaky": results[-1]}


@app.task(timeout_seconds=1)
def slow(ctx, seconds: float) -> str:
    time.sleep(seconds)
    return "finished"


@app.task
def chatty(ctx, lines: int, pause: float = 0.0) -> int:
    """Prints `lines` numbered lines, odd ones on stderr, `pause` s apart."""
    for i in range(lines):
        print(f"line {i}", file=sys.stderr if i % 2 else sys.stdout, flush=pause > 0)
        time.sleep(pause)
    return lines


def _print_late(lines: int, linger: float) -> None:
    time.sleep(linger)
    for i in range(lines):
        print(f"late {i}", flush=True)


@app.task
def chatty_at_exit(ctx, lines: int, linger: float) -> int:
    """Prints its lines at exit, `linger` seconds after the run has completed."""
    atexit.register(_print_late, lines, linger)
    return lines


@app.task
async def parent_of_chatty_at_exit(ctx, lines: int, linger: float) -> int:
    return await ctx.run(chatty_at_exit, lines, linger)


@app.task
def sleep_for(ctx, seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@app.task
async def sleepy_parent(ctx, n: int, seconds: float) -> list:
    return await asyncio.gather(*[ctx.run(sleep_for, seconds) for _ in range(n)])


@app.task
async def later_child(ctx, delay: float, seconds: float) -> float:
    """Waits `delay` seconds, then runs one child that sleeps `seconds`."""
    await asyncio.sleep(delay)
    return await ctx.run(sleep_for, seconds)


@app.task
async def nested(ctx, n: int) -> int:
    """n levels of subtasks, one inside the other."""
    if n <= 0:
        return 0
    return 1 + await ctx.run(nested, n - 1)


@app.task
def say(ctx, text: str) -> int:
    """Prints `text` as it is, escape sequences and all."""
    print(text, flush=True)
    return len(text)


@app.task
def long_line(ctx, megabytes: int) -> int:
    """Writes one line of `megabytes` MB with no newline in it."""
    chunk = "x" * (1024 * 1024)
    for _ in range(megabytes):
        sys.stdout.write(chunk)
    sys.stdout.write("\n")
    sys.stdout.flush()
    return megabytes


@app.task(timeout_seconds=1)
def escapee(ctx, pid_file: str) -> None:
    """Starts a process in a session of its own (out of its process group),
    writes its pid, and runs past its timeout."""
    import subprocess

    child = subprocess.Popen(["sleep", "120"], start_new_session=True)
    Path(pid_file).write_text(str(child.pid))
    time.sleep(30)


@app.task
def garbled_callback(ctx, status_file: str) -> None:
    """Reports a result that is not base64, as a broken SDK would, writes
    the HTTP status it was answered with, and exits."""
    import http.client
    import json as _json
    import socket

    class UnixConnection(http.client.HTTPConnection):
        def connect(self):
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.connect(os.environ["RENDER_SDK_SOCKET_PATH"])

    conn = UnixConnection("localhost")
    conn.request("POST", "/callback", _json.dumps({"complete": {"output": "!!! not base64 !!!"}}),
                 {"Content-Type": "application/json"})
    answer = conn.getresponse()
    Path(status_file).write_text(f"{answer.status} {answer.read().decode()}")
    sys.stdout.flush()
    os._exit(0)


@app.task
def ordered(ctx) -> dict:
    """A result whose key order and big number a re-serialisation would change."""
    return {"unicode": "é", "nested": {"z": 1, "a": 2}, "big": 12345678901234567890123}


@app.task
def big_error(ctx, size: int) -> None:
    raise ValueError("e" * size)


@app.task
def foreign_result(ctx, task_run_id: str) -> int:
    """Asks the runtime for the result of a run that is not its child, on
    its socket, as a hostile task would; returns the HTTP status."""
    import http.client
    import json as _json
    import socket

    class UnixConnection(http.client.HTTPConnection):
        def connect(self):
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.connect(os.environ["RENDER_SDK_SOCKET_PATH"])

    conn = UnixConnection("localhost")
    conn.request("POST", "/get-subtask-result", _json.dumps({"task_run_id": task_run_id}),
                 {"Content-Type": "application/json"})
    return conn.getresponse().status


@app.task
async def level3(ctx, x: int) -> int:
    return x + 3


@app.task
async def level2(ctx, x: int) -> int:
    return await ctx.run(level3, x * 10)


@app.task
async def level1(ctx, x: int) -> dict:
    y = await ctx.run(level2, x)
    return {"depth": 3, "value": y}


@app.task
def big_result(ctx, size: int) -> str:
    return "x" * size


@app.task(retry=Retry(max_retries=1, wait_duration_ms=0))
def fail_then_hang(ctx, pid_file: str, linger: float) -> None:
    """Attempt 1 fails at once and lingers `linger` s at exit, so its retry
    starts while it is still exiting; attempt 2 writes its pid and hangs."""
    first = Path(pid_file + ".first")
    if not first.exists():
        first.touch()
        atexit.register(time.sleep, linger)
        raise RuntimeError("the first attempt fails on purpose")
    Path(pid_file).write_text(str(os.getpid()))
    time.sleep(600)


@app.task
def whoami(ctx) -> dict:
    """The process running this attempt, and the socket it was given."""
    return {"pid": os.getpid(), "socket": os.environ.get("RENDER_SDK_SOCKET_PATH")}


@app.task
async def whoami_fan_out(ctx, n: int) -> list:
    return await asyncio.gather(*[ctx.run(whoami) for _ in range(n)])


@app.task
def crash(ctx) -> None:
    """Exits without reporting anything, as a segfaulting task would."""
    sys.stdout.flush()
    os._exit(3)


@app.task
def env_value(ctx, name: str):
    return os.environ.get(name)


@app.task
def signal_parent(ctx, name: str) -> int:
    """Sends a signal to this process's parent (weft's spawner, or the
    pre-fork launcher), as a careless or hostile task could."""
    import signal

    parent = os.getppid()
    os.kill(parent, getattr(signal, name))
    return parent


@app.task
def ignored_signals(ctx) -> list:
    """The signals this task process ignores, by name."""
    import signal

    with open("/proc/self/status") as status:
        mask = next(int(l.split()[1], 16) for l in status if l.startswith("SigIgn:"))
    return sorted(signal.Signals(n).name for n in range(1, 32) if mask & (1 << (n - 1)))


if __name__ == "__main__":
    app.start()

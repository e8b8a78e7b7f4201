"""The app of weft's partition tests: tasks that keep a side-effect log.

Each task process takes an exclusive lock named after its run (`flock`,
released by the kernel the moment the process dies, however it dies), so a
second process of the same run alive at the same moment cannot miss it: it
writes an `overlap` line. Every process also writes `start` and `end`
lines with its pid and wall time, as a task that charges a card or sends
an email would leave its own trace.
"""

import asyncio
import fcntl
import os
import time

from render.workflows import Workflows

app = Workflows()


def log(log_dir: str, line: str) -> None:
    # One write per line, O_APPEND: lines of concurrent processes never mix.
    fd = os.open(os.path.join(log_dir, "effects.log"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def hold(ctx, log_dir: str):
    """Takes the run's lock, saying so if another process of the run holds it."""
    run = ctx.metadata.task_run_id
    lock = os.open(os.path.join(log_dir, f"{run}.lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        log(log_dir, f"overlap {run} {os.getpid()} {time.time():.3f}")
        fcntl.flock(lock, fcntl.LOCK_EX)
    log(log_dir, f"start {run} {os.getpid()} {time.time():.3f}")
    return run, lock


@app.task
async def guarded(ctx, log_dir: str, seconds: float) -> float:
    run, _lock = hold(ctx, log_dir)
    await asyncio.sleep(seconds)
    log(log_dir, f"end {run} {os.getpid()} {time.time():.3f}")
    return seconds


@app.task
async def guarded_fan_out(ctx, log_dir: str, seconds: list) -> float:
    run, _lock = hold(ctx, log_dir)
    results = await asyncio.gather(*[ctx.run(guarded, log_dir, s) for s in seconds])
    log(log_dir, f"end {run} {os.getpid()} {time.time():.3f}")
    return sum(results)


if __name__ == "__main__":
    app.start()

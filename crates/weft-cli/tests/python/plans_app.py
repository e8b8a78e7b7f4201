"""The app of weft's plan tests: tasks on Render's plans that take memory
and CPU, on the official SDK."""

import asyncio
import time

from render.workflows import Retry, Workflows

app = Workflows()
ONCE = Retry(max_retries=0, wait_duration_ms=0)


def hold(megabytes: int) -> int:
    # Bytes written, not only reserved: the kernel counts touched pages.
    data = b"x" * (megabytes << 20)
    return len(data) >> 20


@app.task(plan="starter", retry=ONCE)
def hog_starter(ctx, megabytes: int) -> int:
    return hold(megabytes)


@app.task(plan="pro", retry=ONCE)
def hog_pro(ctx, megabytes: int) -> int:
    return hold(megabytes)


@app.task(plan="starter", retry=ONCE)
def spin_starter(ctx, seconds: float) -> float:
    """Spins for `seconds` of wall time; returns the CPU it got per second."""
    wall0, cpu0 = time.monotonic(), time.process_time()
    while time.monotonic() - wall0 < seconds:
        pass
    return (time.process_time() - cpu0) / (time.monotonic() - wall0)


@app.task(plan="starter", retry=ONCE)
def nap_starter(ctx, seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@app.task(plan="pro", retry=ONCE)
def nap_pro(ctx, seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@app.task(retry=ONCE)
async def fan_naps(ctx, task: str, n: int, seconds: float) -> int:
    nap = {"nap_starter": nap_starter, "nap_pro": nap_pro}[task]
    await asyncio.gather(*(ctx.run(nap, seconds) for _ in range(n)))
    return n


@app.task(plan="enormous", retry=ONCE)
def odd_plan(ctx) -> str:
    return "ran"


if __name__ == "__main__":
    app.start()

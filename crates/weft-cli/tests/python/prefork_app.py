"""The app of weft's pre-fork tests (`weft dev --prefork`): each task says
which process ran it and what it saw."""

import asyncio
import atexit
import os
import random
import sys
import threading

from render.workflows import Workflows

app = Workflows()

# Set at import: each child runs this script afresh.
IMPORTED_IN = os.getpid()


@app.task
def whoami(ctx, marker_dir: str = "") -> dict:
    if marker_dir:
        # Written at exit, after the run has reported: the child's atexit
        # handlers run, once, in the child.
        atexit.register(
            lambda: open(os.path.join(marker_dir, f"atexit-{os.getpid()}"), "w").close()
        )
    return {
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "pgid": os.getpgid(0),
        "imported_in": IMPORTED_IN,
        "socket": os.environ.get("RENDER_SDK_SOCKET_PATH"),
        "mode": os.environ.get("RENDER_SDK_MODE"),
        "from_dotenv": os.environ.get("WEFT_TEST_FROM_DOTENV"),
        "api_key": os.environ.get("RENDER_API_KEY"),
        "random": random.random(),
        "main": __name__,
        "argv0": os.path.basename(sys.argv[0]),
        "stdin": sys.stdin.read(),
    }


@app.task
async def fan_whoami(ctx, n: int, marker_dir: str = "") -> list:
    return await asyncio.gather(*[ctx.run(whoami, marker_dir) for _ in range(n)])


@app.task
def hold(ctx, seconds: float) -> float:
    import time

    time.sleep(seconds)
    return seconds


@app.task
def exit_code(ctx, code: int) -> None:
    print("leaving early", flush=True)
    sys.exit(code)


@app.task
def threads_joined(ctx, marker: str) -> str:
    """A non-daemon thread still working when the task returns: the child
    waits for it, as Python does, before it exits."""

    def work():
        import time

        time.sleep(0.5)
        open(marker, "w").close()

    threading.Thread(target=work).start()
    return "started"


if __name__ == "__main__":
    app.start()

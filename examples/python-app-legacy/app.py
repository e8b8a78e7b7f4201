"""The tutorial's style, on the older `render_sdk` 0.8.0: tasks take no
context, and calling a task inside another starts a subtask.

Run it under weft:  weft dev -- python examples/python-app-legacy/app.py
"""

import asyncio

from render_sdk import Retry, Workflows

app = Workflows()


@app.task
def square(x: int) -> int:
    return x * x


@app.task
async def add_squares(a: int, b: int) -> int:
    results = await asyncio.gather(square(a), square(b))
    return sum(results)


@app.task(retry=Retry(max_retries=1, wait_duration_ms=50))
def fail(message: str) -> None:
    raise ValueError(message)


if __name__ == "__main__":
    app.start()

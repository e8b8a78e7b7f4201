"""{{name}}: workflow tasks on the official Render SDK (`render` on PyPI).

Run them locally:   weft dev -- python main.py
Trigger a run:      python client.py 1 2 3
"""

import asyncio

from render.workflows import Retry, Workflows

app = Workflows()


@app.task(retry=Retry(max_retries=2, wait_duration_ms=500, backoff_scaling=2.0))
def square(ctx, x: int) -> int:
    """One subtask: runs in a process of its own, retried up to twice."""
    print(f"squaring {x}")
    return x * x


@app.task(timeout_seconds=300)
async def sum_squares(ctx, values: list[int]) -> int:
    """Fans out: one `square` subtask per value, all at once, then sums them."""
    squares = await asyncio.gather(*[ctx.run(square, v) for v in values])
    total = sum(squares)
    print(f"the sum of the squares of {values} is {total}")
    return total


if __name__ == "__main__":
    app.start()

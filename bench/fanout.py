"""Wall time of `run_task` for a Python parent fanning out to N children
(the tutorial's shape), measured with the official Render client.

    python bench/fanout.py --url http://127.0.0.1:8120 --children 10 --runs 20
"""

import argparse
import os
import statistics
import time

parser = argparse.ArgumentParser()
parser.add_argument("--url", required=True)
parser.add_argument("--children", type=int, default=10)
parser.add_argument("--runs", type=int, default=20)
args = parser.parse_args()
os.environ["RENDER_LOCAL_DEV_URL"] = args.url

from render import Render  # noqa: E402

render = Render()
render.workflows.run_task("fan_out", [args.children])  # warm-up
times = []
for _ in range(args.runs):
    started = time.perf_counter()
    details = render.workflows.run_task("fan_out", [args.children])
    times.append(time.perf_counter() - started)
    assert details.results == [sum(i * i for i in range(args.children))], details.results
times.sort()
p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
print(f"children={args.children} runs={args.runs} median={statistics.median(times):.3f}s "
      f"p95={p95:.3f}s min={times[0]:.3f}s max={times[-1]:.3f}s")

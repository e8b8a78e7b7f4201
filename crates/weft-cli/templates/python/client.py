"""Starts `sum_squares` and waits for its result.

    python client.py 1 2 3

Against `weft dev` (or `render workflows dev`) on this machine by default:
the client reads RENDER_LOCAL_DEV_URL (default http://localhost:8120). To
call the tasks deployed on Render instead, set WORKFLOW_SLUG to your
workflow's slug and RENDER_API_KEY to an API key.
"""

import os
import sys

from render import Render
from render.client.errors import RenderError, TaskRunError

slug = os.getenv("WORKFLOW_SLUG")
if not slug:
    os.environ.setdefault("RENDER_USE_LOCAL_DEV", "true")
task = f"{slug}/sum_squares" if slug else "sum_squares"
values = [int(v) for v in sys.argv[1:]] or [1, 2, 3, 4]

render = Render()
try:
    run = render.workflows.run_task(task, [values])
except TaskRunError as e:
    sys.exit(f"{task} failed: {e}")
except RenderError as e:
    sys.exit(f"{task} did not run: {e}\n(is `weft dev -- python main.py` running?)")
result = run.results[0] if isinstance(run.results, list) else run.results
print(f"{task}({values}) = {result}  [run {run.id}, {run.status}]")

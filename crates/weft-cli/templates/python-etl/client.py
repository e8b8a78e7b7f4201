"""Runs merge_customer_data and prints how many profiles it merged, on
the official SDK (the tutorial's trigger client).

    python client.py [ARGS-JSON]

With no argument it sends no input (`[]`), as the tutorial does; ARGS-JSON
(for instance '{"num_shards": 4, "data_dir": "/abs/data"}') is sent as the
task's named arguments. It works against either app: this folder's main.py
or weft's Rust `customer-etl` under `weft dev`.
"""

import json
import os
import sys
import time

from render import Render

if not os.getenv("WORKFLOW_SLUG"):
    # No deployed workflow named: the local server (`weft dev`).
    os.environ.setdefault("RENDER_USE_LOCAL_DEV", "true")
render = Render()
local = os.getenv("RENDER_USE_LOCAL_DEV") == "true" or bool(os.getenv("RENDER_LOCAL_DEV_URL"))
workflow_slug = os.getenv("WORKFLOW_SLUG")
task_name = "merge_customer_data" if local else f"{workflow_slug}/merge_customer_data"
task_input = json.loads(sys.argv[1]) if len(sys.argv) > 1 else []

started = time.perf_counter()
task_run = render.workflows.run_task(task_name, task_input)
elapsed = time.perf_counter() - started

result = task_run.results[0] if isinstance(task_run.results, list) else task_run.results
print(json.dumps(result), file=sys.stderr)
print(
    f"Merged {result['profiles_generated']} enriched profiles "
    f"across {result['shards_processed']} shards in {elapsed:.2f}s"
)

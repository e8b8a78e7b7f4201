"""Scenarios that drive a running `weft dev` with the official Render
client (`render` on PyPI), exactly as an application would.

Run by the Rust end-to-end tests: `python scenarios.py NAME`, with
RENDER_LOCAL_DEV_URL pointing at the server. Each scenario asserts what
Render's API promises and exits non-zero on the first broken promise.
"""

import asyncio
import json
import os
import sys
import tempfile
import time
import urllib.error
import urllib.request
from datetime import datetime

from render import Render, RenderAsync
from render.client.errors import ClientError, TaskRunError
from render.client.types import ListTaskRunsParams

URL = os.environ["RENDER_LOCAL_DEV_URL"].rstrip("/")
render = Render()


def check(condition, message):
    if not condition:
        raise AssertionError(message)


def http(method, path, body=None, raw=None, headers=None):
    """A raw request, for what the SDK never sends (bad input)."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(URL + path, data=data, method=method, headers=headers or {})
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            text = resp.read().decode()
            return resp.status, json.loads(text) if text else None
    except urllib.error.HTTPError as e:
        text = e.read().decode()
        return e.code, json.loads(text) if text else None


def ts(value):
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def run_task_shapes():
    d = render.workflows.run_task("add_squares", [3, 4])
    check(d.status.value == "completed", d.status)
    check(d.results == [25], d.results)
    check(d.input_ == [3, 4], d.input_)
    check(d.error is None or not d.error, d.error)
    # Named inputs, defaults, a slug with a workflow prefix.
    d = render.workflows.run_task("my-workflow/greet", {"name": "Ada"})
    check(d.results == ["Hello, Ada!"], d.results)
    d = render.workflows.run_task("greet", ["Bob", "Hi"])
    check(d.results == ["Hi, Bob!"], d.results)
    # Three levels of subtasks.
    d = render.workflows.run_task("level1", {"x": 2})
    check(d.results == [{"depth": 3, "value": 23}], d.results)
    # Metadata: a root run is its own root and has no parent.
    d = render.workflows.run_task("echo", {"k": 1})
    meta = d.results[0]
    check(meta["kwargs"] == {"k": 1}, meta)
    check(meta["task_run_id"] == d.id and meta["root"] == d.id and meta["parent"] is None, meta)
    check(d.root_task_run_id == d.id and d.parent_task_run_id == "", (d.root_task_run_id, d.parent_task_run_id))
    # A list result is the results array itself.
    d = render.workflows.run_task("sleepy_parent", [3, 0])
    check(d.results == [0, 0, 0], d.results)
    print("ok")


def subtask_metadata_and_listing():
    d = render.workflows.run_task("fan_out", [5])
    check(d.results == [30], d.results)
    runs = [r.task_run for r in render.workflows.list_task_runs(ListTaskRunsParams(limit=100))]
    children = [r for r in runs if r.root_task_run_id == d.id and r.id != d.id]
    check(len(children) == 5, len(children))
    for c in children:
        check(c.parent_task_run_id == d.id, c.parent_task_run_id)
        check(c.task_id == "tsk-square", c.task_id)
        check(c.status.value == "completed", c.status)
        check(len(c.attempts) == 1 and c.attempts[0].attempt == 1, c.attempts)
    # Paging: newest first, the cursor continues after the last one seen.
    page1 = render.workflows.list_task_runs(ListTaskRunsParams(limit=2))
    page2 = render.workflows.list_task_runs(ListTaskRunsParams(limit=2, cursor=page1[-1].cursor))
    ids1 = [r.task_run.id for r in page1]
    ids2 = [r.task_run.id for r in page2]
    check(len(ids1) == 2 and len(ids2) == 2 and not set(ids1) & set(ids2), (ids1, ids2))
    everything = [r.task_run.id for r in render.workflows.list_task_runs(ListTaskRunsParams(limit=100))]
    check(everything[:4] == ids1 + ids2, "pages follow each other")
    # Filters the SDK does not expose, through the same endpoint.
    status, body = http("GET", f"/v1/task-runs?rootTaskRunId={d.id}&limit=100")
    check(status == 200 and len(body) == 6, (status, len(body)))
    status, body = http("GET", "/v1/task-runs?taskSlug=wf/fan_out")
    check(status == 200 and [r["taskRun"]["id"] for r in body] == [d.id], body)
    print("ok")


def start_get_events():
    run = render.workflows.start_task("sleep_for", [0.5])
    check(run.status.value in ("pending", "running"), run.status)
    details = render.workflows.get_task_run(run.id)
    check(details.status.value in ("pending", "running"), details.status)
    check(details.results == [], details.results)
    other = render.workflows.start_task("square", [9])
    seen = {}
    # As on Render, the stream stays open after the last end: the client
    # stops once it has what it asked for.
    for event in render.workflows.task_run_events([run.id, other.id]):
        check(event.id not in seen, f"{event.id} told twice")
        seen[event.id] = event
        if len(seen) == 2:
            break
    check(set(seen) == {run.id, other.id}, seen.keys())
    check(seen[run.id].results == [0.5], seen[run.id].results)
    check(seen[other.id].results == [81], seen[other.id].results)
    done = render.workflows.get_task_run(run.id)
    check(done.status.value == "completed" and done.completed_at and done.started_at, done)
    check(done.attempts[0].status.value == "completed", done.attempts)
    check(ts(done.attempts[0].completed_at) >= ts(done.attempts[0].started_at), done.attempts)
    # Events for a run that already ended arrive at once.
    t = time.time()
    event = next(iter(render.workflows.task_run_events([other.id])))
    check(event.id == other.id and time.time() - t < 5, event)

    async def awaitable():
        client = RenderAsync()
        started = await client.workflows.start_task("add_squares", [1, 2])
        details = await started
        check(details.results == [5], details.results)
        many = await asyncio.gather(*[client.workflows.run_task("square", [i]) for i in range(5)])
        check([m.results[0] for m in many] == [0, 1, 4, 9, 16], many)

    asyncio.run(awaitable())
    print("ok")


def failures():
    try:
        render.workflows.run_task("fail", ["it broke"])
        check(False, "run_task of a failing task must raise")
    except TaskRunError as e:
        check("it broke" in str(e), str(e))
    runs = render.workflows.list_task_runs(ListTaskRunsParams(limit=1))
    failed = render.workflows.get_task_run(runs[0].task_run.id)
    check(failed.status.value == "failed", failed.status)
    check(failed.error == "it broke", failed.error)
    check(failed.attempts[0].error == "it broke", failed.attempts)
    d = render.workflows.run_task("catch_child_failure", ["bad child"])
    check(d.results == ["caught: Subtask failed: bad child"], d.results)
    # A process that dies without reporting fails its attempt, with a reason.
    try:
        render.workflows.run_task("crash", [])
        check(False, "a crashing task must fail")
    except TaskRunError as e:
        check("exited" in str(e) and "before reporting" in str(e), str(e))
    print("ok")


def retries(marker_root):
    ok_dir = os.path.join(marker_root, "ok")
    d = render.workflows.run_task("flaky", [ok_dir, 3])
    check(d.results == [{"attempt": 3}], d.results)
    check(len(d.attempts) == 3 and d.retries == 2, (len(d.attempts), d.retries))
    statuses = [a.status.value for a in d.attempts]
    check(statuses == ["failed", "failed", "completed"], statuses)
    check("attempt 1 failed on purpose" in d.attempts[0].error, d.attempts[0].error)
    # Backoff: 300 ms before the first retry, 600 ms before the second.
    gap1 = (ts(d.attempts[1].started_at) - ts(d.attempts[0].completed_at)).total_seconds()
    gap2 = (ts(d.attempts[2].started_at) - ts(d.attempts[1].completed_at)).total_seconds()
    check(0.3 <= gap1 < 2.3, f"first backoff {gap1}")
    check(0.6 <= gap2 < 2.6, f"second backoff {gap2}")
    # Out of retries: 1 + max_retries attempts, then failed.
    try:
        render.workflows.run_task("flaky", [os.path.join(marker_root, "never"), 10])
        check(False, "must fail")
    except TaskRunError as e:
        check("attempt 3 failed on purpose" in str(e), str(e))
    check(len(os.listdir(os.path.join(marker_root, "never"))) == 3, "three attempts")
    print("ok")


def timeouts():
    t = time.time()
    try:
        render.workflows.run_task("slow", [30])
        check(False, "must time out")
    except TaskRunError as e:
        check("timed out after 1 s" in str(e), str(e))
    check(time.time() - t < 20, "the timeout ended the run long before the task would have")
    d = render.workflows.run_task("slow", [0.1])
    check(d.results == ["finished"], d.results)
    print("ok")


def cancel(marker):
    root = render.workflows.start_task("sleepy_parent", [3, 60])
    deadline = time.time() + 30
    while time.time() < deadline:
        status, kids = http("GET", f"/v1/task-runs?rootTaskRunId={root.id}")
        running = [k for k in kids if k["taskRun"]["status"] == "running" and k["taskRun"]["id"] != root.id]
        if len(running) >= 2:
            break
        time.sleep(0.1)
    check(len(running) >= 2, "children are running")
    with open(marker, "w") as f:
        f.write("children running\n")
    # The test looks at the children's processes, then says go.
    deadline = time.time() + 30
    while not os.path.exists(marker + ".go") and time.time() < deadline:
        time.sleep(0.05)
    render.workflows.cancel_task_run(root.id)
    tree = [k["taskRun"] for k in http("GET", f"/v1/task-runs?rootTaskRunId={root.id}")[1]]
    check(len(tree) == 4, len(tree))
    check(all(r["status"] == "canceled" for r in tree), [r["status"] for r in tree])
    try:
        render.workflows.cancel_task_run(root.id)
        check(False, "canceling an ended run must be refused")
    except ClientError as e:
        check("already ended (canceled)" in str(e), str(e))
    try:
        render.workflows.cancel_task_run("trn-doesnotexist")
        check(False, "unknown run")
    except ClientError as e:
        check("task run not found: trn-doesnotexist" in str(e), str(e))
    print("ok")


def idempotency():
    a = render.workflows.start_task("square", [7], idempotency_key="order-42")
    b = render.workflows.start_task("square", [7], idempotency_key="order-42")
    check(a.id == b.id, (a.id, b.id))
    c = render.workflows.start_task("square", [7], idempotency_key="order-43")
    check(c.id != a.id, "another key is another run")
    print("ok")


def bad_input():
    status, body = http("POST", "/v1/task-runs", raw=b"{not json")
    check(status == 400 and "malformed JSON" in body["message"], (status, body))
    status, body = http("POST", "/v1/task-runs", {"task": "nope", "input": []})
    check(status == 404 and "task not found: nope" in body["message"], (status, body))
    status, body = http("POST", "/v1/task-runs", {"task": "square", "input": 5})
    check(status == 400 and "array" in body["message"] and "number" in body["message"], (status, body))
    status, body = http("POST", "/v1/task-runs", {"task": "square", "input": ["x" * 300_000]})
    check(status == 413 and "limit" in body["message"], (status, body))
    status, body = http("POST", "/v1/task-runs", raw=b"[" + b"1," * 1_000_000 + b"1]")
    check(status == 413, (status, body))
    status, body = http("GET", "/v1/task-runs/trn-nope")
    check(status == 404 and "trn-nope" in body["message"], (status, body))
    status, body = http("GET", "/v1/task-runs?limit=0")
    check(status == 400 and "limit" in body["message"], (status, body))
    status, body = http("GET", "/v1/task-runs?cursor=abc")
    check(status == 400 and "cursor" in body["message"], (status, body))
    status, body = http("GET", "/v1/task-runs/events")
    check(status == 400 and "taskRunIds" in body["message"], (status, body))
    status, body = http("GET", "/v1/nothing-here")
    check(status == 404 and "nothing-here" in body["message"], (status, body))
    try:
        render.workflows.run_task("square", {"y": 1})  # wrong parameter name
        check(False, "must fail")
    except TaskRunError as e:
        check("unexpected keyword argument 'y'" in str(e), str(e))
    # An oversized result fails the attempt and says why.
    try:
        render.workflows.run_task("big_result", [300_000])
        check(False, "must fail")
    except TaskRunError as e:
        check("result is 300004 bytes, over the limit of 200000 bytes" in str(e), str(e))
    # The server still serves.
    check(render.workflows.run_task("square", [2]).results == [4], "still serving")
    print("ok")


def logs():
    d = render.workflows.run_task("fan_out", [3])
    deadline = time.time() + 10
    while True:
        status, body = http("GET", f"/v1/logs?taskRunID={d.id}&includeSubtasks=true")
        messages = [l["message"] for l in body["logs"]]
        if len(messages) >= 3 or time.time() > deadline:
            break
        time.sleep(0.2)
    check(sorted(m for m in messages if m.startswith("squaring")) == ["squaring 0", "squaring 1", "squaring 2"], messages)
    labels = {l["name"]: l["value"] for l in body["logs"][0]["labels"]}
    check(labels["task"] == "square" and labels["type"] == "stdout", labels)
    status, body = http("GET", f"/v1/logs?taskRunID={d.id}&includeSubtasks=true&text=squaring%201")
    check([l["message"] for l in body["logs"]] == ["squaring 1"], body)
    print("ok")


def wide(n):
    n = int(n)
    d = render.workflows.run_task("fan_out", [n])
    check(d.results == [sum(i * i for i in range(n))], d.results)
    print("ok")


def start_only(task, args_json):
    """Starts a run and prints its id (for tests that crash the server)."""
    run = render.workflows.start_task(task, json.loads(args_json))
    print(run.id)


def await_run(run_id):
    """Waits for a run through the SDK's own wait path and prints its details."""
    for event in render.workflows.task_run_events([run_id]):
        print(json.dumps({"status": event.status.value, "results": event.results, "error": event.error or None}))
        return


def tree(root_id):
    """Prints every run under a root, with attempts, as JSON."""
    status, runs = http("GET", f"/v1/task-runs?rootTaskRunId={root_id}&limit=100")
    check(status == 200, status)
    out = []
    for r in runs:
        status, details = http("GET", f"/v1/task-runs/{r['taskRun']['id']}")
        out.append(details)
    print(json.dumps(out))


def env_from_dotenv():
    d = render.workflows.run_task("env_value", ["WEFT_TEST_FROM_DOTENV"])
    check(d.results == ["loaded"], d.results)
    print("ok")


def with_token():
    d = render.workflows.run_task("square", [5])
    check(d.results == [25], d.results)
    status, body = http("GET", "/v1/task-runs")
    check(status == 401 and "bearer token" in body["message"], (status, body))
    print("ok")


def rust_hello():
    """The Rust example app `hello`, driven by the official client."""
    d = render.workflows.run_task("add_squares", [3, 4])
    check(d.results == [25], d.results)
    d = render.workflows.run_task("square", {"x": 6})
    check(d.results == [36], d.results)
    status, kids = http("GET", f"/v1/task-runs?rootTaskRunId={render.workflows.run_task('add_squares', [1, 1]).id}")
    check(len(kids) == 3, kids)
    print("ok")


def rust_retries():
    """Errors and panics of Rust tasks reach the official client with their messages."""
    try:
        render.workflows.run_task("always_panics", [])
        check(False, "must fail")
    except TaskRunError as e:
        check("panicked: RETRIES_EXAMPLE_SETTINGS is never set" in str(e), str(e))
    d = render.workflows.run_task("survive", [])
    check(d.results == ["the child failed: panicked: RETRIES_EXAMPLE_SETTINGS is never set"], d.results)
    d = render.workflows.run_task("flaky", [1])
    check(d.results == ["attempt 2"] and len(d.attempts) == 2, (d.results, d.attempts))
    print("ok")


if __name__ == "__main__":
    name, *args = sys.argv[1:]
    globals()[name](*args)

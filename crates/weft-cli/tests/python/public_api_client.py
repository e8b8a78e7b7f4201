"""Render's public API client, as the official `render` package ships it
(`render.public_api`, generated from Render's OpenAPI document), against
weft: the list filters of `GET /task-runs`, pinned task slugs, and the
task-run metrics. Prints `ok`."""

import datetime
import os
import sys

import httpx
from render import Render
from render.public_api import Client
from render.public_api.api.metrics import get_task_runs_completed, get_task_runs_queued
from render.public_api.api.workflow_tasks import list_task_runs
from render.public_api.models.error import Error
from render.public_api.models.get_task_runs_completed_aggregate_by import (
    GetTaskRunsCompletedAggregateBy,
)
from render.public_api.models.get_task_runs_completed_state import GetTaskRunsCompletedState

url = os.environ["RENDER_LOCAL_DEV_URL"]
api = Client(base_url=f"{url}/v1")
workflows = Render().workflows
start = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=5)

# Runs: square pinned to v3 and not pinned; add_squares pinned to v7 (its
# two square children run in v7 too); a failed run.
pinned = workflows.run_task("my-workflow/square:v3", [3])
loose = workflows.run_task("square", [4])
tree = workflows.run_task("my-workflow/add_squares:v7", [1, 2])
assert tree.results == [5], tree.results
try:
    workflows.run_task("fail", ["on purpose"])
    raise AssertionError("fail must fail")
except Exception as e:  # the client's TaskRunError
    assert "on purpose" in str(e), e


def ids(**filters):
    rows = list_task_runs.sync(client=api, limit=100, **filters)
    assert not isinstance(rows, Error), rows
    return {r.task_run.id for r in rows}


everything = ids()
children = ids(root_task_run_id=[tree.id]) - {tree.id}
assert len(children) == 2, children

# taskSlug, repeatable: with a version, the runs pinned to it; without,
# every run of the task.
assert ids(task_slug=["my-workflow/square:v3"]) == {pinned.id}
assert ids(task_slug=["my-workflow/square"]) == {pinned.id, loose.id} | children
assert ids(task_slug=["square:v3", "add_squares:v7"]) == {pinned.id, tree.id}
assert ids(task_slug=["square:v4"]) == set()
# rootTaskRunId, repeatable.
assert ids(root_task_run_id=[pinned.id, tree.id]) == {pinned.id, tree.id} | children
# workflowVersionId: runs pinned to that version, subtasks included.
assert ids(workflow_version_id=["v7"]) == {tree.id} | children
# workflowId and ownerId are accepted and narrow nothing (one workflow,
# one owner per weft server).
assert ids(workflow_id=["wfl-anything"], owner_id=["tea-anyone"]) == everything

# The pin is on the run, for whoever reads it.
raw = httpx.get(f"{url}/v1/task-runs/{pinned.id}").json()
assert raw["taskVersion"] == "v3", raw
assert "taskVersion" not in httpx.get(f"{url}/v1/task-runs/{loose.id}").json()
kid = httpx.get(f"{url}/v1/task-runs/{sorted(children)[0]}").json()
assert kid["taskVersion"] == "v7", kid

# Metrics, in Render's time-series shape.
end = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=5)
queued = get_task_runs_queued.sync(
    client=api, start_time=start, end_time=end, resolution_seconds=3600, resource="tsk-square"
)
assert not isinstance(queued, Error), queued
assert len(queued) == 1, queued
series = queued[0]
assert [(l.field, l.value) for l in series.labels] == [("resource", "tsk-square")], series
assert series.unit == "count", series
assert sum(v.value for v in series.values) == 4, series  # 2 roots, 2 children
assert len(series.values) == 1 and series.values[0].timestamp == start, series

everything_queued = get_task_runs_queued.sync(client=api, start_time=start, end_time=end)
by_task = {s.labels[0].value: sum(v.value for v in s.values) for s in everything_queued}
assert by_task["tsk-add_squares"] == 1 and by_task["tsk-fail"] == 1, by_task
assert by_task["tsk-greet"] == 0, "a registered task with no runs has a series of zeros"

completed = get_task_runs_completed.sync(
    client=api,
    start_time=start,
    end_time=end,
    resolution_seconds=3600,
    aggregate_by=GetTaskRunsCompletedAggregateBy.STATE,
)
states = {}
for s in completed:
    labels = dict((l.field, l.value) for l in s.labels)
    states[(labels["resource"], labels["state"])] = sum(v.value for v in s.values)
assert states[("tsk-square", "succeeded")] == 4, states
assert states[("tsk-square", "failed")] == 0, states
assert states[("tsk-fail", "failed")] == 1, states
assert states[("tsk-fail", "succeeded")] == 0, states

only_failed = get_task_runs_completed.sync(
    client=api, start_time=start, end_time=end, state=GetTaskRunsCompletedState.FAILED
)
totals = {s.labels[0].value: sum(v.value for v in s.values) for s in only_failed}
assert totals["tsk-fail"] == 1 and totals["tsk-square"] == 0, totals

# Bad parameters are refused, naming the problem.
bad = get_task_runs_queued.sync(client=api, resolution_seconds=0)
assert isinstance(bad, Error) and "resolutionSeconds" in bad.message, bad
bad = get_task_runs_queued.sync(client=api, start_time=end, end_time=start)
assert isinstance(bad, Error) and "before endTime" in bad.message, bad
bad = httpx.get(f"{url}/v1/metrics/task-runs-completed", params={"aggregateBy": "host"})
assert bad.status_code == 400 and "aggregateBy" in bad.json()["message"], bad.text
bad = httpx.get(f"{url}/v1/metrics/task-runs-queued", params={"startTime": "yesterday"})
assert bad.status_code == 400 and "startTime" in bad.json()["message"], bad.text
# Unix seconds, as Render documents them, work too.
epoch = httpx.get(
    f"{url}/v1/metrics/task-runs-queued",
    params={"startTime": int(start.timestamp()), "resource": "square", "resolutionSeconds": 86400},
)
assert epoch.status_code == 200 and sum(v["value"] for v in epoch.json()[0]["values"]) == 4, epoch.text

print("ok")
sys.exit(0)

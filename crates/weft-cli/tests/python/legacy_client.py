"""The older official client, `render_sdk` 0.8.0, against weft."""

from render_sdk import Render
from render_sdk.client.errors import TaskRunError

render = Render()
d = render.workflows.run_task("add_squares", [3, 4])
assert d.status.value == "completed" and d.results == [25], (d.status, d.results)
run = render.workflows.start_task("square", [6])
assert render.workflows.get_task_run(run.id).id == run.id
try:
    render.workflows.run_task("fail", ["old sdk"])
    raise AssertionError("must fail")
except TaskRunError as e:
    assert "old sdk" in str(e), str(e)
failed = render.workflows.list_task_runs()[0].task_run
assert failed.status.value == "failed" and len(failed.attempts) == 2, (failed.status, failed.attempts)
print("ok")

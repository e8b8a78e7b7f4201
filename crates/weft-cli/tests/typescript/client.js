// The client side of @renderinc/sdk 1.x against a local server
// (RENDER_LOCAL_DEV_URL): each check throws on a difference, and the last
// line printed is `ok`.
const assert = require("node:assert/strict");
const os = require("node:os");
const path = require("node:path");
const sdk = process.env.WEFT_TS_SDK_DIR;
const { Render, ClientError } = require(`${sdk}/dist/index.js`);

async function main() {
  const render = new Render();
  const wf = render.workflows;

  // runTask: a fan-out, its result wrapped in an array.
  const run = await wf.runTask("sumSquares", [[1, 2, 3]]);
  assert.equal(run.status, "completed");
  assert.deepEqual(run.results, [14]);

  // Payloads come back as the task wrote them: key order and numbers.
  const ordered = await wf.runTask("ordered", []);
  assert.deepEqual(Object.keys(ordered.results[0]), ["unicode", "nested", "big"]);
  assert.deepEqual(Object.keys(ordered.results[0].nested), ["z", "a"]);

  // startTask, then get.
  const started = await wf.startTask("square", [7]);
  assert.match(started.taskRunId, /^trn-/);
  const details = await started.get();
  assert.deepEqual(details.results, [49]);

  // A retried task: two attempts, the first failed.
  const marker = path.join(os.tmpdir(), `weft-ts-flaky-${process.pid}-${Date.now()}`);
  const flaky = await wf.runTask("flaky", [marker]);
  assert.deepEqual(flaky.results, [2]);
  const flakyRun = await wf.getTaskRun(flaky.id);
  assert.equal(flakyRun.attempts.length, 2);
  assert.equal(flakyRun.attempts[0].status, "failed");

  // A failed run resolves (SDK 1.0 throws no TaskRunError) with its error.
  const failed = await wf.runTask("fail", ["boom"]);
  assert.equal(failed.status, "failed");
  assert.match(String(failed.error), /boom/);

  // An unknown task: the error names it and carries the error id.
  await assert.rejects(wf.startTask("noSuchTask", []), (err) => {
    assert.ok(err instanceof ClientError, `${err}`);
    const text = `${err.message}`;
    assert.match(text, /noSuchTask/);
    assert.doesNotMatch(text, /undefined/);
    return true;
  });

  // taskRunEvents: two runs, each terminal event exactly once, while the
  // stream is kept open for a while after both (no reconnect repeats them).
  const a = await wf.startTask("square", [3]);
  const b = await wf.startTask("square", [4]);
  const seen = [];
  const abort = new AbortController();
  let lastSeen = null;
  const timer = setInterval(() => {
    if (lastSeen && Date.now() - lastSeen > 4000) abort.abort();
  }, 100);
  try {
    for await (const event of wf.taskRunEvents([a.taskRunId, b.taskRunId], abort.signal)) {
      seen.push(event.id);
      if (seen.length >= 2) lastSeen = lastSeen ?? Date.now();
    }
  } catch (err) {
    if (!abort.signal.aborted) throw err;
  } finally {
    clearInterval(timer);
  }
  assert.deepEqual([...seen].sort(), [a.taskRunId, b.taskRunId].sort());

  // Cancel a running run.
  const slow = await wf.startTask("sleep", [30]);
  for (let i = 0; i < 100; i++) {
    const d = await wf.getTaskRun(slow.taskRunId);
    if (d.status === "running") break;
    await new Promise((r) => setTimeout(r, 100));
  }
  await wf.cancelTaskRun(slow.taskRunId);
  const canceled = await wf.getTaskRun(slow.taskRunId);
  assert.equal(canceled.status, "canceled");

  // listTaskRuns: every run above.
  const runs = await wf.listTaskRuns({ limit: 100 });
  const ids = runs.map((r) => r.taskRun.id); // TaskRunWithCursor, as Render answers
  for (const id of [run.id, started.taskRunId, a.taskRunId, b.taskRunId, slow.taskRunId]) {
    assert.ok(ids.includes(id), `${id} listed`);
  }
  console.log("ok");
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});

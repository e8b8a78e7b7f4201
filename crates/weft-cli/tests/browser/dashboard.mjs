// What a person sees in the dashboard, in Debian's chromium driven by
// playwright-core. Started by crates/weft-cli/tests/dashboard.rs with:
//   WEFT_URL     the loopback server (no token)
//   WEFT_RUNS    JSON {fanOut, failed, canceled} of runs made beforehand
//   WEFT_SECURE  the same kind of server beyond loopback (key WEFT_KEY)
//   WEFT_SCREENSHOTS  a folder to write the README's screenshots to (optional)
// Each check throws on a difference; the last line printed is `ok`.
import assert from "node:assert/strict";
import { chromium } from "playwright-core";

const url = process.env.WEFT_URL;
const runs = JSON.parse(process.env.WEFT_RUNS);
const shots = process.env.WEFT_SCREENSHOTS;
// Generous: the suite runs many servers on two cores at once.
const WAIT = 60_000;

const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
});
const problems = [];
let expectMissing = false;
function watch(page) {
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  page.on("console", (m) => {
    if (m.type() !== "error") return;
    // The bad-URL and wrong-key checks get 404s and 401s on purpose; the
    // browser logs each one.
    if (expectMissing && /Failed to load resource: the server responded with a status of 40[134]/.test(m.text())) return;
    problems.push(`console: ${m.text()}`);
  });
  page.on("dialog", (d) => d.accept());
  return page;
}

async function api(path, options = {}) {
  const res = await fetch(`${url}${path}`, {
    ...options,
    headers: { "Content-Type": "application/json", ...(options.headers || {}) },
    body: options.body && JSON.stringify(options.body),
  });
  assert.ok(res.ok, `${path}: ${res.status} ${await res.clone().text()}`);
  return res.status === 204 ? null : res.json();
}

const step = (name) => console.log(`- ${name}`);

try {
  const context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
  const page = watch(await context.newPage());

  step("the list: root runs newest first, with subtasks and failures counted");
  await page.goto(`${url}/`);
  const fanRow = page.locator(`tr[data-run="${runs.fanOut}"]`);
  await fanRow.waitFor({ timeout: WAIT });
  assert.equal(await fanRow.getAttribute("data-status"), "completed");
  const cells = await fanRow.locator("td").allInnerTexts();
  assert.equal(cells[1], "mixed_fan_out");
  assert.equal(cells[5], "9", `subtasks: ${cells}`);
  const failedRow = page.locator(`tr[data-run="${runs.failed}"]`);
  assert.equal(await failedRow.getAttribute("data-status"), "failed");
  const canceledRow = page.locator(`tr[data-run="${runs.canceled}"]`);
  assert.equal(await canceledRow.getAttribute("data-status"), "canceled");
  // What the database holds, in a size for people.
  assert.match(await page.locator("p.stored").innerText(), /^The database holds [\d.]+ (kB|MB): every run's input/);
  const order = await page.locator("tbody tr[data-run]").evaluateAll((rows) => rows.map((r) => r.dataset.run));
  assert.ok(order.indexOf(runs.canceled) < order.indexOf(runs.fanOut), "newest first");
  // Filtering by status narrows the list and lands in the URL.
  await page.selectOption('select[name="status"]', "failed");
  await page.waitForFunction(() => location.search.includes("status=failed"));
  await page.waitForFunction(
    () => [...document.querySelectorAll("tbody tr[data-run]")].every((r) => r.dataset.status === "failed"),
  );
  await page.goto(`${url}/`);

  step("a new run appears in the list without a reload");
  await page.evaluate(() => (window.__sameDocument = true));
  const fresh = await api("/v1/task-runs", { method: "POST", body: { task: "square", input: [12] } });
  await page.locator(`tr[data-run="${fresh.id}"][data-status="completed"]`).waitFor({ timeout: WAIT });
  assert.equal(await page.evaluate(() => window.__sameDocument), true, "no reload");
  if (shots) await page.screenshot({ path: `${shots}/dashboard-runs.png` });

  step("a run's tree: every child, the retried one marked, the result");
  await page.goto(`${url}/runs/${runs.fanOut}`);
  await page.locator(".node[data-run]").nth(9).waitFor({ timeout: WAIT });
  assert.equal(await page.locator(".node[data-run]").count(), 10, "the root and its 9 children");
  const retried = page.locator('.node[data-run] .attempts', { hasText: "1 retried" });
  assert.equal(await retried.count(), 1, "the flaky child was retried once");
  await page.locator("pre.result").waitFor();
  assert.match(await page.locator("pre.result").innerText(), /"sum": 140/);
  // Selecting a child shows its attempts and keeps a shareable URL.
  await retried.locator("xpath=ancestor::div[contains(@class,'node')]//a").click();
  await page.waitForFunction(() => location.pathname !== "/runs/" + document.body.dataset.arg);
  await page.locator("table.attempts tbody tr").nth(1).waitFor({ timeout: WAIT });
  assert.match(await page.locator("table.attempts").innerText(), /attempt 1 failed on purpose/);
  // Each attempt's peak memory and CPU time, measured in its cgroup (the
  // figures come a moment after the attempt ends).
  assert.match(await page.locator("table.attempts thead").innerText(), /Peak memory\s+CPU/);
  await page.waitForFunction(
    () => [...document.querySelectorAll("table.attempts td.peak-memory")].some((td) => / MB$/.test(td.textContent)),
    null,
    { timeout: WAIT },
  );

  step("a failed run shows its message");
  await page.goto(`${url}/runs/${runs.failed}`);
  await page.locator("pre.error").first().waitFor({ timeout: WAIT });
  assert.match(await page.locator(".error-box pre.error").innerText(), /the disk is on fire/);
  // Its trace, linked where `--trace-url` says (the trace id is the root run's UUID).
  assert.equal(
    await page.locator("a.trace").getAttribute("href"),
    `http://localhost:16686/trace/${runs.failed.replace(/^trn-/, "")}`,
  );

  step("a running run turns completed on the page without a reload, its logs live");
  const sleeper = await api("/v1/task-runs", { method: "POST", body: { task: "chatty", input: [6, 0.5] } });
  await page.goto(`${url}/runs/${sleeper.id}`);
  await page.evaluate(() => (window.__sameDocument = true));
  await page.locator(".run-head .badge", { hasText: "running" }).waitFor({ timeout: WAIT });
  await page.locator(".run-head .badge", { hasText: "completed" }).waitFor({ timeout: WAIT });
  assert.equal(await page.evaluate(() => window.__sameDocument), true, "no reload");
  await page.waitForFunction(() => document.querySelectorAll("pre.logs .line:not(.muted)").length >= 6, null, {
    timeout: WAIT,
  });

  step("cancel: the button cancels the run and its subtree");
  const tree = await api("/v1/task-runs", { method: "POST", body: { task: "sleepy_parent", input: [3, 60] } });
  await page.goto(`${url}/runs/${tree.id}`);
  await page.waitForFunction(() => document.querySelectorAll(".node[data-run]").length === 4, null, { timeout: WAIT });
  await page.click('button[data-action="cancel"]');
  await page.locator(".run-head .badge", { hasText: "canceled" }).waitFor({ timeout: WAIT });
  const after = await api(`/v1/task-runs?rootTaskRunId=${tree.id}&limit=100`);
  assert.equal(after.length, 4);
  assert.ok(after.every((r) => r.taskRun.status === "canceled"), JSON.stringify(after.map((r) => r.taskRun.status)));

  step("rerun: a new root run with the same task and input");
  await page.goto(`${url}/runs/${runs.failed}`);
  await page.locator('button[data-action="rerun"]').waitFor();
  await page.click('button[data-action="rerun"]');
  await page.waitForFunction((old) => location.pathname.startsWith("/runs/") && !location.pathname.endsWith(old), runs.failed);
  const newId = page.url().split("/").pop();
  const again = await api(`/v1/task-runs/${newId}`);
  const original = await api(`/v1/task-runs/${runs.failed}`);
  assert.equal(again.taskId, original.taskId);
  assert.deepEqual(again.input, original.input);
  assert.equal(again.parentTaskRunId, "");

  step("tasks: each task's retries, timeout and parameters with their defaults");
  await page.goto(`${url}/tasks`);
  const row = page.locator('tr[data-task="greet"]');
  await row.waitFor({ timeout: WAIT });
  assert.match(await row.innerText(), /name, greeting="Hello"/);
  assert.match(await page.locator('tr[data-task="flaky"]').innerText(), /2 \(300 ms, ×2\)/);
  assert.match(await page.locator('tr[data-task="slow"]').innerText(), /1 s/);

  step("tasks: the form refuses bad JSON, starts a run with good JSON");
  await row.locator("button", { hasText: "Start" }).click();
  const form = page.locator("tr.start-row:not([hidden]) form");
  await form.locator("textarea").fill('{"name": "Ada",');
  await form.locator('button[type="submit"]').click();
  await form.locator(".form-message.bad", { hasText: "not JSON" }).waitFor();
  assert.ok(page.url().endsWith("/tasks"), "nothing was sent");
  await form.locator("textarea").fill('{"name": "Ada"}');
  await form.locator('button[type="submit"]').click();
  await page.waitForURL(/\/runs\/trn-/);
  await page.locator("pre.result", { hasText: "Hello, Ada!" }).waitFor({ timeout: WAIT });

  step("bad URLs: a clear page with a way back");
  expectMissing = true;
  await page.goto(`${url}/runs/trn-doesnotexist`);
  await page.locator(".problem", { hasText: "There is no task run trn-doesnotexist" }).waitFor({ timeout: WAIT });
  assert.equal(await page.locator('.problem a[href="/"]').count(), 1);
  let res = await page.goto(`${url}/runs/%3Cscript%3Ealert(1)%3C%2Fscript%3E`);
  assert.equal(res.status(), 404);
  await page.locator(".problem", { hasText: "is not a task run id" }).waitFor();
  assert.equal(await page.locator("script:not([src])").count(), 0, "the URL is text, not markup");
  res = await page.goto(`${url}/no/such/page`);
  assert.equal(res.status(), 404);
  await page.locator('.problem a[href="/"]').waitFor();
  expectMissing = false;

  if (shots) {
    step("screenshot of a 30-shard run");
    if (runs.shards) {
      await page.goto(`${url}/runs/${runs.shards}`);
      await page.locator(".node[data-run]").nth(10).waitFor({ timeout: WAIT });
      await page.screenshot({ path: `${shots}/dashboard-run.png`, fullPage: false });
    }
  }

  if (process.env.WEFT_SECURE) {
    step("beyond loopback: a sign-in page, then a session cookie the page cannot read");
    const secure = process.env.WEFT_SECURE;
    const other = await browser.newContext();
    const p2 = watch(await other.newPage());
    expectMissing = true; // the wrong key's 401 is logged by the browser
    await p2.goto(`${secure}/tasks`);
    await p2.waitForURL(/\/signin\?next=/);
    await p2.fill('input[name="token"]', "not-the-key");
    await p2.click('button[type="submit"]');
    await p2.locator(".form-message.bad", { hasText: "not this server's API key" }).waitFor({ timeout: WAIT });
    expectMissing = false;
    await p2.fill('input[name="token"]', process.env.WEFT_KEY);
    await p2.click('button[type="submit"]');
    await p2.waitForURL(`${secure}/tasks`);
    await p2.locator('tr[data-task="greet"]').waitFor({ timeout: WAIT });
    assert.equal(await p2.evaluate(() => document.cookie), "", "HttpOnly");
    const cookies = await other.cookies();
    const session = cookies.find((c) => c.name === "weft_session");
    assert.ok(session && session.httpOnly && session.sameSite === "Strict", JSON.stringify(cookies));
    assert.notEqual(session.value, process.env.WEFT_KEY, "the cookie is not the key");
    // The page's own requests work; one without the CSRF header does not.
    expectMissing = true;
    const status = await p2.evaluate(async (id) => {
      const r = await fetch(`/v1/task-runs/${id}`, { method: "DELETE" });
      return r.status;
    }, runs.failed);
    assert.equal(status, 403);
    expectMissing = false;
    await other.close();

    step("the sign-in leads only to this server's own pages, as the browser resolves them");
    const origin = new URL(secure).origin;
    expectMissing = true; // a same-origin page that does not exist answers 404
    for (const evil of [
      "/\\example.invalid/x",
      "/\t/example.invalid/x",
      "//example.invalid/x",
      "http://example.invalid/x",
      `${secure}//example.invalid/x`,
    ]) {
      const ctx = await browser.newContext();
      const p = watch(await ctx.newPage());
      const signin = `${secure}/signin?next=${encodeURIComponent(evil)}`;
      await p.goto(signin);
      await p.fill('input[name="token"]', process.env.WEFT_KEY);
      await p.click('button[type="submit"]');
      await p.waitForURL((u) => u.href !== signin, { timeout: WAIT });
      assert.equal(new URL(p.url()).origin, origin, `next=${JSON.stringify(evil)} led to ${p.url()}`);
      await ctx.close();
    }
    expectMissing = false;
  }

  assert.deepEqual(problems, [], "no script errors");
  console.log("ok");
} finally {
  await browser.close();
}

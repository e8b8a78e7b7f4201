// weft's dashboard: draws each page from the API and keeps it live.
// Plain JavaScript on purpose (no framework, no build). Every value from
// the API goes into the page as text (textContent), never as HTML.
"use strict";

const main = document.getElementById("main");
const page = document.body.dataset.page;
const arg = document.body.dataset.arg;

// ---- helpers -------------------------------------------------------------

/** An element: h("a", {href: "/"}, "text", child, ...). */
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "style") {
      // Through the CSSOM: the page's CSP refuses style attributes.
      for (const decl of String(v).split(";")) {
        const at = decl.indexOf(":");
        if (at > 0) el.style.setProperty(decl.slice(0, at).trim(), decl.slice(at + 1).trim());
      }
    }
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** Replaces an element's children, leaving out null, undefined and false. */
function put(el, ...children) {
  el.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
}

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** Calls the API; a non-2xx answer throws with the server's message. */
async function api(path, options = {}) {
  const init = { ...options, headers: { Accept: "application/json", ...(options.headers || {}) } };
  if (options.body !== undefined) {
    init.body = JSON.stringify(options.body);
    init.headers["Content-Type"] = "application/json";
  }
  if (init.method && init.method !== "GET") init.headers["X-Weft-Csrf"] = "1";
  const res = await fetch(path, init);
  if (res.status === 401 && page !== "signin") {
    location.href = `/signin?next=${encodeURIComponent(location.pathname + location.search)}`;
    throw new ApiError(401, "signed out");
  }
  if (!res.ok) {
    let message = `${res.status} ${res.statusText}`;
    try {
      const body = await res.json();
      if (body && body.message) message = body.message;
    } catch (_) {}
    throw new ApiError(res.status, message);
  }
  return res.status === 204 ? null : res.json();
}

const TERMINAL = new Set(["completed", "succeeded", "failed", "canceled"]);

function badge(status) {
  return h("span", { class: `badge s-${status}` }, status);
}

function shortId(id) {
  return id.length > 14 ? `${id.slice(0, 8)}…${id.slice(-5)}` : id;
}

function time(t) {
  if (!t) return "";
  const d = new Date(t);
  const today = new Date().toDateString() === d.toDateString();
  return today ? d.toLocaleTimeString() : d.toLocaleString();
}

function duration(from, to) {
  if (!from) return "";
  const ms = (to ? new Date(to) : new Date()) - new Date(from);
  if (ms < 1000) return `${Math.max(0, Math.round(ms))} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)} s`;
  const m = Math.floor(ms / 60_000);
  if (m < 60) return `${m} min ${Math.round((ms % 60_000) / 1000)} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

function pretty(json) {
  if (json === undefined || json === null) return "";
  try {
    return JSON.stringify(typeof json === "string" ? JSON.parse(json) : json, null, 2);
  } catch (_) {
    return String(json);
  }
}

function problem(message, back = true) {
  return h(
    "div",
    { class: "problem", role: "alert" },
    h("p", {}, message),
    back && h("p", {}, h("a", { href: "/" }, "← Back to the runs")),
  );
}

/** Calls `fn` at most once per `ms`, and once more after the last call. */
function throttle(fn, ms) {
  let timer = null;
  let again = false;
  return () => {
    if (timer) {
      again = true;
      return;
    }
    fn();
    timer = setTimeout(function tick() {
      timer = null;
      if (again) {
        again = false;
        fn();
        timer = setTimeout(tick, ms);
      }
    }, ms);
  };
}

/** Follows /weft/v1/changes; calls `onChange` (throttled) on each. */
function followChanges(onChange) {
  const live = document.getElementById("live");
  const source = new EventSource("/weft/v1/changes");
  const run = throttle(onChange, 500);
  source.addEventListener("changed", () => {
    live.classList.add("on");
    // Also on the stream's opening event (and after a reconnect): what
    // changed between the page's first read and the stream's start is read
    // again, so nothing falls in the gap.
    run();
  });
  source.onerror = () => live.classList.remove("on");
  return source;
}

function confirmAction(question) {
  return window.confirm(question);
}

async function cancelRun(id, task) {
  if (!confirmAction(`Cancel ${task} ${id} and every subtask under it?`)) return false;
  await api(`/v1/task-runs/${encodeURIComponent(id)}`, { method: "DELETE" });
  return true;
}

async function rerunRun(id, task) {
  if (!confirmAction(`Start ${task} again with the same input, as a new run?`)) return null;
  return api(`/weft/v1/runs/${encodeURIComponent(id)}/rerun`, { method: "POST" });
}

function setNav(name) {
  for (const a of document.querySelectorAll("[data-nav]")) {
    a.classList.toggle("here", a.dataset.nav === name);
  }
}

// ---- the runs ------------------------------------------------------------

// A size for people: 245 MB, 12 kB.
function bytes(n) {
  const units = ["bytes", "kB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) (n /= 1000), i++;
  return `${i ? n.toFixed(n < 10 ? 1 : 0) : n} ${units[i]}`;
}

async function runsPage() {
  setNav("runs");
  const params = new URLSearchParams(location.search);
  const taskSelect = h("select", { name: "task", "aria-label": "Task" }, h("option", { value: "" }, "every task"));
  const statusSelect = h(
    "select",
    { name: "status", "aria-label": "Status" },
    ["", "pending", "running", "completed", "failed", "canceled"].map((s) =>
      h("option", { value: s }, s || "every status"),
    ),
  );
  statusSelect.value = params.get("status") || "";
  const filters = h(
    "form",
    { class: "filters", onsubmit: (e) => e.preventDefault() },
    h("label", {}, "Task ", taskSelect),
    h("label", {}, "Status ", statusSelect),
  );
  const body = h("tbody");
  const table = h(
    "table",
    { class: "runs" },
    h(
      "thead",
      {},
      h("tr", {}, ["Run", "Task", "Status", "Started", "Duration", "Subtasks", "Failed"].map((c) => h("th", {}, c))),
    ),
    body,
  );
  const pager = h("div", { class: "pager" });
  const note = h("p", { class: "note" });
  const stored = h("p", { class: "note stored" });
  put(main, h("h1", {}, "Runs"), filters, note, table, pager, stored);

  try {
    const tasks = await api("/v1/tasks");
    const names = tasks.map((t) => t.task.name).sort();
    for (const n of names) taskSelect.append(h("option", { value: n }, n));
    if (params.get("task") && !names.includes(params.get("task"))) {
      taskSelect.append(h("option", { value: params.get("task") }, params.get("task")));
    }
    taskSelect.value = params.get("task") || "";
  } catch (_) {}

  const go = (changes) => {
    const p = new URLSearchParams();
    const next = { task: taskSelect.value, status: statusSelect.value, ...changes };
    for (const [k, v] of Object.entries(next)) if (v) p.set(k, v);
    history.pushState(null, "", p.toString() ? `/?${p}` : "/");
    draw();
  };
  taskSelect.onchange = () => go({ cursor: "" });
  statusSelect.onchange = () => go({ cursor: "" });

  async function draw() {
    const now = new URLSearchParams(location.search);
    const q = new URLSearchParams({ limit: "50" });
    for (const k of ["task", "status", "cursor"]) if (now.get(k)) q.set(k, now.get(k));
    let answer;
    try {
      answer = await api(`/weft/v1/runs?${q}`);
    } catch (e) {
      put(note, problem(e.message, false));
      return;
    }
    put(note, );
    put(body, 
      ...answer.runs.map((r) =>
        h(
          "tr",
          { "data-run": r.id, "data-status": r.status },
          h("td", {}, h("a", { href: `/runs/${r.id}`, title: r.id }, shortId(r.id))),
          h("td", {}, r.task),
          h("td", {}, badge(r.status)),
          h("td", {}, time(r.startedAt || r.createdAt)),
          h("td", { class: "num" }, duration(r.startedAt, r.completedAt)),
          h("td", { class: "num" }, r.subtasks.total || ""),
          h("td", { class: r.subtasks.failed ? "num bad" : "num" }, r.subtasks.failed || ""),
        ),
      ),
    );
    if (answer.runs.length === 0) {
      body.append(h("tr", {}, h("td", { colspan: 7, class: "empty" }, "No runs yet. Start one from Tasks, `weft run`, or an SDK client.")));
    }
    put(stored, answer.storedBytes != null && `The database holds ${bytes(answer.storedBytes)}: every run's input, result and output, until --retention prunes it.`);
    put(pager, 
      now.get("cursor") && h("a", { href: "#", onclick: (e) => (e.preventDefault(), go({ cursor: "" })) }, "← Newest"),
      answer.nextCursor &&
        h("a", { href: "#", class: "older", onclick: (e) => (e.preventDefault(), go({ cursor: answer.nextCursor })) }, "Older →"),
    );
  }
  window.onpopstate = () => {
    const p = new URLSearchParams(location.search);
    taskSelect.value = p.get("task") || "";
    statusSelect.value = p.get("status") || "";
    draw();
  };
  await draw();
  followChanges(draw);
}

// ---- one run -------------------------------------------------------------

/** Children shown at once under one parent before "show more". */
const PAGE_OF_CHILDREN = 200;
/** A parent with more children than this starts collapsed. */
const COLLAPSE_OVER = 50;

async function runPage(selectedId) {
  setNav("runs");
  let selected = selectedId;
  const head = h("div", { class: "run-head" });
  const summary = h("div", { class: "summary" });
  const treeBox = h("div", { class: "tree", role: "tree" });
  const details = h("section", { class: "details" });
  put(main, head, summary, h("div", { class: "run-body" }, h("section", { class: "tree-pane" }, treeBox), details));

  const expanded = new Map(); // parent id -> shown count (0: collapsed)
  let onlyFailed = false;
  let tree = null;
  let logs = null;

  async function loadTree() {
    try {
      tree = await api(`/weft/v1/runs/${encodeURIComponent(selected)}/tree`);
    } catch (e) {
      put(main, 
        problem(e.status === 404 ? `There is no task run ${selected}: it may never have existed, or it was pruned.` : e.message),
      );
      return false;
    }
    drawTree();
    return true;
  }

  function drawTree() {
    const byId = new Map(tree.runs.map((r) => [r.id, r]));
    const kids = new Map();
    for (const r of tree.runs) {
      if (r.parentId && byId.has(r.parentId)) {
        if (!kids.has(r.parentId)) kids.set(r.parentId, []);
        kids.get(r.parentId).push(r);
      }
    }
    const root = byId.get(tree.rootId);
    if (!root) return;
    // The time axis: from the root's creation to the last end (or now).
    const t0 = Date.parse(root.createdAt);
    let t1 = t0 + 1;
    for (const r of tree.runs) {
      const end = r.completedAt ? Date.parse(r.completedAt) : TERMINAL.has(r.status) ? t0 : Date.now();
      t1 = Math.max(t1, end, Date.parse(r.createdAt));
    }
    const span = t1 - t0;

    const counts = {};
    for (const r of tree.runs) counts[r.status] = (counts[r.status] || 0) + 1;
    put(summary, 
      h("span", {}, `${tree.runs.length} run${tree.runs.length === 1 ? "" : "s"} in this tree`),
      ...Object.entries(counts).map(([s, n]) => h("span", { class: "count" }, badge(s), ` ${n}`)),
      h("span", { class: "span" }, `over ${duration(new Date(t0), new Date(t1))}`),
      h(
        "label",
        { class: "only-failed" },
        h("input", {
          type: "checkbox",
          checked: onlyFailed,
          onchange: (e) => {
            onlyFailed = e.target.checked;
            drawTree();
          },
        }),
        " only failed",
      ),
      tree.truncated && h("span", { class: "bad" }, " (the tree is larger than shown)"),
    );

    // Which runs lead to a failure, for "only failed".
    const leadsToFailure = new Set();
    for (const r of tree.runs) {
      if (r.status !== "failed" && r.retried === 0) continue;
      let p = r;
      while (p && !leadsToFailure.has(p.id)) {
        leadsToFailure.add(p.id);
        p = byId.get(p.parentId);
      }
    }

    const rows = [];
    const row = (r, depth) => {
      const children = kids.get(r.id) || [];
      const shown = expanded.has(r.id) ? expanded.get(r.id) : children.length > COLLAPSE_OVER ? 0 : PAGE_OF_CHILDREN;
      const start = Date.parse(r.startedAt || r.createdAt);
      const end = r.completedAt ? Date.parse(r.completedAt) : TERMINAL.has(r.status) ? start : Date.now();
      const left = ((start - t0) / span) * 100;
      const width = Math.max(0.4, ((end - start) / span) * 100);
      const wait = ((start - Date.parse(r.createdAt)) / span) * 100;
      const attemptsNote = [
        r.attempts > 1 && `${r.attempts} attempts`,
        r.retried > 0 && `${r.retried} retried`,
        r.interrupted > 0 && `${r.interrupted} interrupted`,
      ].filter(Boolean);
      rows.push(
        h(
          "div",
          {
            class: `node${r.id === selected ? " selected" : ""}`,
            role: "treeitem",
            "data-run": r.id,
            "data-status": r.status,
            "aria-selected": r.id === selected ? "true" : "false",
            style: `--depth:${depth}`,
          },
          h(
            "span",
            { class: "label" },
            children.length
              ? h(
                  "button",
                  {
                    class: "toggle",
                    "aria-label": shown ? "Collapse" : "Expand",
                    onclick: () => {
                      expanded.set(r.id, shown ? 0 : PAGE_OF_CHILDREN);
                      drawTree();
                    },
                  },
                  shown ? "▾" : "▸",
                )
              : h("span", { class: "toggle" }),
            h("a", { href: `/runs/${r.id}`, onclick: (e) => (e.preventDefault(), select(r.id)) }, r.task),
            h("span", { class: "rid" }, shortId(r.id)),
            badge(r.status),
            attemptsNote.length > 0 && h("span", { class: "attempts" }, attemptsNote.join(", ")),
            h("span", { class: "dur" }, duration(r.startedAt, r.completedAt)),
          ),
          h(
            "span",
            { class: "bar-track" },
            wait > 0.2 && h("span", { class: "bar wait", style: `left:${left - wait}%;width:${wait}%` }),
            h("span", { class: `bar b-${r.status}`, style: `left:${left}%;width:${width}%` }),
          ),
        ),
      );
      if (!children.length) return;
      if (!shown) {
        const c = {};
        for (const k of children) c[k.status] = (c[k.status] || 0) + 1;
        rows.push(
          h(
            "div",
            { class: "node folded", style: `--depth:${depth + 1}` },
            h(
              "span",
              { class: "label" },
              h(
                "button",
                {
                  class: "linkish",
                  onclick: () => {
                    expanded.set(r.id, PAGE_OF_CHILDREN);
                    drawTree();
                  },
                },
                `${children.length} subtasks: `,
              ),
              ...Object.entries(c).map(([s, n]) => h("span", { class: "count" }, badge(s), ` ${n} `)),
            ),
          ),
        );
        return;
      }
      const visible = onlyFailed ? children.filter((k) => leadsToFailure.has(k.id)) : children;
      for (const k of visible.slice(0, shown)) row(k, depth + 1);
      if (visible.length > shown) {
        rows.push(
          h(
            "div",
            { class: "node folded", style: `--depth:${depth + 1}` },
            h(
              "button",
              {
                class: "linkish",
                onclick: () => {
                  expanded.set(r.id, shown + PAGE_OF_CHILDREN);
                  drawTree();
                },
              },
              `show ${Math.min(PAGE_OF_CHILDREN, visible.length - shown)} more of ${visible.length - shown}`,
            ),
          ),
        );
      }
    };
    row(root, 0);
    put(treeBox, ...rows);
  }

  async function loadDetails() {
    let run;
    try {
      run = await api(`/weft/v1/runs/${encodeURIComponent(selected)}`);
    } catch (e) {
      put(details, problem(e.message));
      return;
    }
    document.title = `${run.task} ${run.status} · weft`;
    const running = !TERMINAL.has(run.status);
    put(head, 
      h("h1", {}, run.task, " ", badge(run.status)),
      h("code", { class: "id" }, run.id),
      h(
        "div",
        { class: "actions" },
        running &&
          h(
            "button",
            {
              class: "danger",
              "data-action": "cancel",
              onclick: async () => {
                try {
                  if (await cancelRun(run.id, run.task)) refresh();
                } catch (e) {
                  alertBox(e.message);
                }
              },
            },
            "Cancel",
          ),
        h(
          "button",
          {
            "data-action": "rerun",
            onclick: async () => {
              try {
                const created = await rerunRun(run.id, run.task);
                if (created) location.href = `/runs/${created.id}`;
              } catch (e) {
                alertBox(e.message);
              }
            },
          },
          "Rerun",
        ),
      ),
    );
    const facts = [
      ["Created", time(run.createdAt)],
      ["Started", time(run.startedAt)],
      ["Ended", time(run.completedAt)],
      ["Duration", duration(run.startedAt, run.completedAt)],
      run.taskVersion && ["Version", run.taskVersion],
      ["Trace", run.traceUrl ? h("a", { href: run.traceUrl, target: "_blank", rel: "noopener noreferrer", class: "trace" }, run.traceId) : h("code", {}, run.traceId)],
      run.parentId && ["Parent", h("a", { href: `/runs/${run.parentId}`, onclick: (e) => (e.preventDefault(), select(run.parentId)) }, shortId(run.parentId))],
    ].filter(Boolean);
    put(details, 
      h("dl", { class: "facts" }, facts.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])),
      run.error && h("div", { class: "error-box" }, h("h2", {}, "Error"), h("pre", { class: "error" }, run.error)),
      h("h2", {}, "Input"),
      h("pre", { class: "json input" }, pretty(run.input)),
      run.results !== null && run.results !== undefined && h("h2", {}, "Result"),
      run.results !== null && run.results !== undefined && h("pre", { class: "json result" }, pretty(run.results)),
      h("h2", {}, "Attempts"),
      h(
        "table",
        { class: "attempts" },
        h(
          "thead",
          {},
          h("tr", {}, ["#", "Status", "Started", "Duration", "Node", "Peak memory", "CPU", "Error"].map((c) => h("th", {}, c))),
        ),
        h(
          "tbody",
          {},
          run.attempts.map((a) =>
            h(
              "tr",
              {},
              h("td", {}, a.attempt),
              h("td", {}, badge(a.status), a.interrupted ? h("span", { class: "attempts" }, " interrupted") : ""),
              h("td", {}, time(a.startedAt)),
              h("td", { class: "num" }, duration(a.startedAt, a.completedAt)),
              h("td", {}, a.nodeId || ""),
              h("td", { class: "num peak-memory" }, megabytes(a.peakMemoryBytes)),
              h("td", { class: "num cpu-time" }, a.cpuTimeMs == null ? "" : `${(a.cpuTimeMs / 1000).toFixed(2)} s`),
              h("td", {}, a.error ? h("pre", { class: "error small" }, a.error) : ""),
            ),
          ),
        ),
      ),
      logsSection(run),
    );
  }

  // Bytes as Render writes plan memory: MB (MiB), GB from 1 GB up.
  function megabytes(bytes) {
    if (bytes == null) return "";
    const mib = bytes / 1048576;
    return mib >= 1024 ? `${(mib / 1024).toFixed(1)} GB` : `${Math.round(mib)} MB`;
  }

  function logsSection(run) {
    const box = h("pre", { class: "logs", "aria-live": "polite" });
    const withSubtasks = h("input", { type: "checkbox" });
    const section = h(
      "div",
      {},
      h("h2", {}, "Logs ", h("label", { class: "only-failed" }, withSubtasks, " with subtasks")),
      box,
    );
    const start = () => {
      if (logs) logs.close();
      logs = followLogs(run, withSubtasks.checked, box);
    };
    withSubtasks.onchange = start;
    start();
    return section;
  }

  function select(id) {
    if (id === selected) return;
    selected = id;
    history.pushState(null, "", `/runs/${id}`);
    drawTree();
    loadDetails();
  }
  window.onpopstate = () => {
    selected = location.pathname.split("/").pop();
    refresh();
  };

  const refresh = throttle(async () => {
    if (await loadTree()) await loadDetails();
  }, 500);
  if (!(await loadTree())) return;
  await loadDetails();
  followChanges(async () => {
    await loadTree();
    // The details change only while the selected run has not ended.
    const node = tree && tree.runs.find((r) => r.id === selected);
    if (node && (!TERMINAL.has(node.status) || !head.dataset.ended)) {
      await loadDetails();
      head.dataset.ended = TERMINAL.has(node.status) ? "1" : "";
    }
  });
  // Durations of running runs grow with the clock.
  setInterval(() => tree && tree.runs.some((r) => !TERMINAL.has(r.status)) && drawTree(), 1000);
}

function alertBox(message) {
  const box = h("div", { class: "toast", role: "alert" }, message);
  document.body.append(box);
  setTimeout(() => box.remove(), 6000);
}

/** The run's stored lines, then new ones as they come (the log WebSocket). */
function followLogs(run, withSubtasks, box) {
  let closed = false;
  let socket = null;
  const seen = new Set();
  const MAX_LINES = 5000;
  const add = (line) => {
    if (seen.has(line.id)) return;
    seen.add(line.id);
    const labels = Object.fromEntries((line.labels || []).map((l) => [l.name, l.value]));
    const el = h(
      "div",
      { class: labels.type === "stderr" ? "line err" : "line" },
      h("span", { class: "ts" }, new Date(line.timestamp).toLocaleTimeString()),
      withSubtasks && labels.task ? h("span", { class: "who" }, labels.task) : "",
      line.message,
    );
    const atBottom = box.scrollTop + box.clientHeight >= box.scrollHeight - 4;
    box.append(el);
    while (box.childElementCount > MAX_LINES) box.firstChild.remove();
    if (atBottom) box.scrollTop = box.scrollHeight;
  };
  (async () => {
    const q = new URLSearchParams({ taskRunId: run.id, limit: "1000", direction: "forward" });
    if (withSubtasks) q.set("includeSubtasks", "true");
    let last = null;
    try {
      const page = await api(`/v1/logs?${q}`);
      for (const line of page.logs) add(line);
      last = page.logs.length ? page.logs[page.logs.length - 1].timestamp : null;
      if (page.logs.length === 0) box.append(h("div", { class: "line muted" }, "No output yet."));
    } catch (e) {
      put(box, h("div", { class: "line err" }, e.message));
      return;
    }
    if (closed || TERMINAL.has(run.status)) return;
    const live = new URLSearchParams({ taskRunId: run.id });
    if (withSubtasks) live.set("includeSubtasks", "true");
    // From the last line read (or the run's creation): the server then
    // follows the stored lines, whose ids dedupe against those above.
    live.set("startTime", last || run.createdAt);
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    socket = new WebSocket(`${scheme}://${location.host}/v1/logs/subscribe?${live}`);
    socket.onmessage = (m) => {
      try {
        const data = JSON.parse(m.data);
        for (const line of Array.isArray(data) ? data : data.logs || [data]) {
          if (box.querySelector(".muted")) put(box, );
          add(line);
        }
      } catch (_) {}
    };
  })();
  return {
    close() {
      closed = true;
      if (socket) socket.close();
    },
  };
}

// ---- the tasks -----------------------------------------------------------

async function tasksPage() {
  setNav("tasks");
  put(main, h("h1", {}, "Tasks"));
  let tasks;
  try {
    tasks = await api("/v1/tasks");
  } catch (e) {
    main.append(problem(e.message));
    return;
  }
  if (tasks.length === 0) {
    main.append(h("p", { class: "empty" }, "No tasks are registered. Is the app's start command right?"));
    return;
  }
  const rows = tasks
    .map((t) => t.task)
    .sort((a, b) => a.name.localeCompare(b.name))
    .map((t) => {
      // Options and parameters as the SDK registered them: snake_case.
      const o = t.options || {};
      const retry = o.retry || {};
      const params = (t.parameters || []).map((p) => (p.has_default ? `${p.name}=${p.default_value ?? "…"}` : p.name));
      const form = startForm(t);
      return [
        h(
          "tr",
          { "data-task": t.name },
          h("td", {}, h("strong", {}, t.name)),
          h("td", { class: "num" }, retry.max_retries ?? 0, retry.wait_duration_ms ? ` (${retry.wait_duration_ms} ms, ×${retry.factor ?? 1.5})` : ""),
          h("td", { class: "num" }, o.timeout_seconds ? `${o.timeout_seconds} s` : "none"),
          h("td", {}, h("code", {}, params.join(", "))),
          h("td", {}, h("a", { href: `/?task=${encodeURIComponent(t.name)}` }, "runs"), " ", h("button", { onclick: () => form.toggle() }, "Start…")),
        ),
        form.row,
      ];
    });
  main.append(
    h(
      "table",
      { class: "tasks" },
      h("thead", {}, h("tr", {}, ["Task", "Retries", "Timeout", "Parameters", ""].map((c) => h("th", {}, c)))),
      h("tbody", {}, rows.flat()),
    ),
  );
}

function startForm(task) {
  const params = (task.parameters || []).map((p) => p.name);
  const example = params.length ? `{${params.map((p) => `"${p}": null`).join(", ")}}` : "[]";
  const input = h("textarea", { rows: 4, spellcheck: "false", "aria-label": `Input for ${task.name}` }, example);
  const message = h("p", { class: "form-message", role: "status" });
  const submit = h("button", { type: "submit", class: "primary" }, `Start ${task.name}`);
  const form = h(
    "form",
    {
      class: "start",
      onsubmit: async (e) => {
        e.preventDefault();
        let value;
        try {
          value = JSON.parse(input.value.trim() === "" ? "[]" : input.value);
        } catch (err) {
          message.className = "form-message bad";
          message.textContent = `The input is not JSON: ${err.message}`;
          return;
        }
        if (typeof value !== "object" || value === null) {
          message.className = "form-message bad";
          message.textContent = "The input must be a JSON array (positional arguments) or object (named arguments).";
          return;
        }
        submit.disabled = true;
        try {
          const run = await api("/v1/task-runs", { method: "POST", body: { task: task.name, input: value } });
          location.href = `/runs/${run.id}`;
        } catch (err) {
          message.className = "form-message bad";
          message.textContent = err.message;
          submit.disabled = false;
        }
      },
    },
    h("label", {}, "Input (JSON: an array of positional arguments or an object of named ones)"),
    input,
    message,
    submit,
  );
  const row = h("tr", { class: "start-row", hidden: true }, h("td", { colspan: 5 }, form));
  return {
    row,
    toggle() {
      row.hidden = !row.hidden;
      if (!row.hidden) input.focus();
    },
  };
}

// ---- sign-in and not found -----------------------------------------------

function signinPage() {
  const params = new URLSearchParams(location.search);
  // Only this server's pages, resolved as the browser will resolve them
  // (it reads `/\\host` and `/<tab>/host` as another site).
  let next = "/";
  try {
    const to = new URL(params.get("next") || "/", location.origin);
    // The whole URL, not its path: a path such as `//host` is one more way out.
    if (to.origin === location.origin) next = to.href;
  } catch {}
  const token = h("input", { type: "password", name: "token", autocomplete: "current-password", required: true, "aria-label": "API key" });
  const message = h("p", { class: "form-message", role: "status" });
  put(main, 
    h(
      "form",
      {
        class: "signin",
        onsubmit: async (e) => {
          e.preventDefault();
          try {
            await api("/weft/v1/session", { method: "POST", body: { token: token.value } });
            location.href = next;
          } catch (err) {
            message.className = "form-message bad";
            message.textContent = err.message;
          }
        },
      },
      h("h1", {}, "Sign in to weft"),
      h("p", {}, "This server is reachable beyond this machine, so it asks for its API key (RENDER_API_KEY or --api-key-file)."),
      h("label", {}, "API key ", token),
      message,
      h("button", { type: "submit", class: "primary" }, "Sign in"),
    ),
  );
  token.focus();
}

function missingPage() {
  put(main, h("h1", {}, "Not found"), problem(arg || "There is no page here."));
}

// ---- start ---------------------------------------------------------------

({ runs: runsPage, run: () => runPage(arg), tasks: tasksPage, signin: signinPage, missing: missingPage })[page]?.();

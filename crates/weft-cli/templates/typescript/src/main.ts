// {{name}}: workflow tasks on the official Render SDK (@renderinc/sdk).
//
// Run them locally:   npm run build && weft dev -- node dist/main.js
// Trigger a run:      node dist/client.js 1 2 3
import { type TaskContext, task } from "@renderinc/sdk/workflows";

// One subtask: runs in a process of its own, retried up to twice.
const square = task(
  { name: "square", retry: { maxRetries: 2, waitDurationMs: 500, backoffScaling: 2 } },
  function square(_ctx: TaskContext, x: number): number {
    console.log(`squaring ${x}`);
    return x * x;
  },
);

// Fans out: one `square` subtask per value, all at once, then sums them.
task(
  { name: "sumSquares", timeoutSeconds: 300 },
  async function sumSquares(ctx: TaskContext, values: number[]): Promise<number> {
    const squares = await Promise.all(values.map((v) => ctx.run(square, v)));
    const total = squares.reduce((a, b) => a + b, 0);
    console.log(`the sum of the squares of ${JSON.stringify(values)} is ${total}`);
    return total;
  },
);

// The SDK starts the task server by itself when RENDER_SDK_SOCKET_PATH is
// set, as it is under `weft dev`, `render workflows dev` and on Render.

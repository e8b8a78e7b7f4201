// Starts `sumSquares` and waits for its result: node dist/client.js 1 2 3
//
// Against `weft dev` (or `render workflows dev`) on this machine by default:
// the client reads RENDER_LOCAL_DEV_URL (default http://localhost:8120). To
// call the tasks deployed on Render instead, set WORKFLOW_SLUG to your
// workflow's slug and RENDER_API_KEY to an API key.
import { Render } from "@renderinc/sdk";

async function main(): Promise<void> {
  const slug = process.env.WORKFLOW_SLUG;
  if (!slug) {
    process.env.RENDER_USE_LOCAL_DEV ??= "true";
  }
  const taskName = slug ? `${slug}/sumSquares` : "sumSquares";
  const args = process.argv.slice(2).map(Number);
  const values = args.length > 0 ? args : [1, 2, 3, 4];

  const render = new Render();
  const run = await render.workflows.runTask(taskName, [values]);
  if (run.status !== "completed" && run.status !== "succeeded") {
    console.error(`${taskName} ${run.status}: ${run.error ?? "no error given"}  [run ${run.id}]`);
    process.exit(1);
  }
  const result = Array.isArray(run.results) ? run.results[0] : run.results;
  console.log(`${taskName}(${JSON.stringify(values)}) = ${result}  [run ${run.id}, ${run.status}]`);
}

main().catch((err: unknown) => {
  const cause = err instanceof Error && err.cause instanceof Error ? `: ${err.cause.message}` : "";
  console.error(`${err instanceof Error ? err.message : err}${cause}`);
  console.error("(is `weft dev -- node dist/main.js` running?)");
  process.exit(1);
});

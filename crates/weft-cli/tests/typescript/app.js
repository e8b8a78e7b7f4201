// A task app on @renderinc/sdk 1.x (context-first tasks), in plain
// JavaScript so it runs without a build. The SDK is required from
// $WEFT_TS_SDK_DIR (see tests/typescript_sdk.rs).
const sdk = process.env.WEFT_TS_SDK_DIR;
const { task } = require(`${sdk}/dist/workflows/index.js`);

const square = task({ name: "square" }, function square(_ctx, x) {
  console.log(`squaring ${x}`);
  return x * x;
});

task({ name: "sumSquares", timeoutSeconds: 300 }, async function sumSquares(ctx, values) {
  const squares = await Promise.all(values.map((v) => ctx.run(square, v)));
  return squares.reduce((a, b) => a + b, 0);
});

task({ name: "ordered" }, function ordered(_ctx) {
  return { unicode: "héllo ✓", nested: { z: 1, a: [1.5, 2] }, big: 12345678901234567 };
});

task(
  { name: "flaky", retry: { maxRetries: 2, waitDurationMs: 100, backoffScaling: 1 } },
  function flaky(_ctx, marker) {
    const fs = require("node:fs");
    const n = fs.existsSync(marker) ? Number(fs.readFileSync(marker, "utf8")) + 1 : 1;
    fs.writeFileSync(marker, String(n));
    if (n < 2) throw new Error(`attempt ${n} failed on purpose`);
    return n;
  },
);

task({ name: "fail" }, function fail(_ctx, message) {
  throw new Error(message);
});

task({ name: "sleep" }, async function sleep(_ctx, seconds) {
  await new Promise((r) => setTimeout(r, seconds * 1000));
  return seconds;
});

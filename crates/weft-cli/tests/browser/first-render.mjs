// Time to first render of two dashboard pages in Debian's chromium, for
// crates/weft-cli/benches/dashboard.rs: from navigation start to the first
// run row on `/`, and to the tree's rows on `/runs/{id}`. Prints JSON.
import { chromium } from "playwright-core";

const [url, treeRoot, rounds = "5"] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
});
const page = await (await browser.newContext({ viewport: { width: 1400, height: 900 } })).newPage();

async function measure(path, ready) {
  const times = [];
  for (let i = 0; i < Number(rounds); i++) {
    await page.goto("about:blank");
    await page.goto(`${url}${path}`, { waitUntil: "commit" });
    await page.waitForFunction(ready, null, { timeout: 60_000, polling: "raf" });
    // performance.now() counts from this document's navigation start.
    times.push(await page.evaluate(() => performance.now()));
  }
  times.sort((a, b) => a - b);
  return { median_ms: times[Math.floor(times.length / 2)], min_ms: times[0], max_ms: times[times.length - 1] };
}

const list = await measure("/", () => document.querySelectorAll("tbody tr[data-run]").length > 0);
const tree = await measure(`/runs/${treeRoot}`, () => document.querySelectorAll(".node").length > 1 && document.querySelector("pre.input"));
console.log(JSON.stringify({ list, tree }));
await browser.close();

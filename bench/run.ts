// `npm run bench [-- NAME…]`: runs the named benchmarks (default: all) and writes each
// one's section of BENCHMARKS.md.
import path from "node:path";
import { machine, writeSection } from "./support.ts";

const ALL = [
  "foundation",
  "audit",
  "licensing",
  "activation",
  "writes",
  "usage",
  "propagation",
  "uploader",
  "verifiers",
  "webhooks",
  "concurrency",
  "failover",
  "memory",
] as const;
const names = process.argv.length > 2 ? process.argv.slice(2) : [...ALL];
const file = path.resolve(import.meta.dirname, "..", "BENCHMARKS.md");

const started = Date.now();
for (const name of names) {
  if (!(ALL as readonly string[]).includes(name)) throw new Error(`unknown benchmark ${name}; have ${ALL.join(", ")}`);
  console.log(`== ${name}`);
  const mod = (await import(`./${name}.ts`)) as { run(): Promise<string> };
  const body = await mod.run();
  writeSection(file, name, `${body}\n\n_Run ${new Date().toISOString()} on ${machine()}._`);
  console.log(body);
}

// A full run says so at the top: when, where, and how long it took.
if (names.length === ALL.length) {
  const minutes = ((Date.now() - started) / 60_000).toFixed(0);
  writeSection(
    file,
    "run",
    `Last full run (every section, \`npm run bench\`): ${new Date().toISOString().slice(0, 10)} on ${machine()}, ${minutes} min.`,
    { top: true },
  );
}

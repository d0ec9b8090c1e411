// The crash test: an agent process records events with UsageUploader against a live licensd,
// is SIGKILLed in the middle of its upload, and is started again on the same spool. Every event
// it recorded is counted exactly once.
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { createInterface } from "node:readline";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { afterAll, beforeAll, expect, it } from "vitest";
import { ROOT, type ServerProcess, startServer } from "../../../test/support/server.js";
import { within } from "../../../test/support/wait.js";
import { storedEvents, timesEachSeq, vendor } from "./usage-uploader-support.js";

const AGENT = path.join(import.meta.dirname, "fixtures/usage-agent.ts");

// The real `licensd serve` (built by `npm run build`, as `npm test` does first) on a fresh database.
let app: ServerProcess & { dropDatabase(): Promise<void> };
beforeAll(async () => {
  app = await startServer();
});
afterAll(async () => {
  await app?.stop();
  await app?.dropDatabase();
});

/** The agent on the project's Node, reading @licensd/client from its sources; `onLine` sees each report. */
function agent(args: string[], onLine: (o: Record<string, unknown>, child: ChildProcess) => void) {
  const child = spawn(process.execPath, ["--conditions=licensd-source", "--import", "tsx", AGENT, ...args], {
    cwd: ROOT,
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stderr = "";
  child.stderr!.on("data", (d: Buffer) => (stderr += d.toString()));
  createInterface({ input: child.stdout! }).on("line", (line) => onLine(JSON.parse(line), child));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }>((resolve) =>
    child.once("exit", (code, signal) => resolve({ code, signal, stderr })),
  );
  return { child, exited };
}

it("an agent SIGKILLed mid-upload and restarted on its spool has every recorded event counted exactly once", async () => {
  const v = await vendor(app.url, app.superAdminKey, "CRA");
  const license = await v.license();
  const dir = mkdtempSync(path.join(os.tmpdir(), "licensd-agent-"));
  const N = 3000;

  // First run: record N events (each fsync'd before record resolves), kill once some are acknowledged.
  let recorded = 0;
  let ackedAtKill = -1;
  const first = agent([app.url, license.key, dir, "record", String(N)], (o, child) => {
    if (typeof o.recorded === "number") recorded = o.recorded;
    if (recorded === N && ackedAtKill < 0 && typeof o.acked === "number" && o.acked >= 300) {
      ackedAtKill = o.acked;
      child.kill("SIGKILL");
    }
  });
  const killed = await within(first.exited, "the first agent to be killed");
  expect(killed.signal, killed.stderr).toBe("SIGKILL");
  expect(recorded).toBe(N);
  expect(ackedAtKill).toBeGreaterThanOrEqual(300);
  // Killed in the middle: part of the upload landed, part did not.
  const landed = (await storedEvents(v.usage, license.id)).length;
  expect(landed).toBeGreaterThanOrEqual(ackedAtKill);
  expect(landed).toBeLessThan(N);

  // Second run on the same spool: it finds at least everything that did not land, and delivers it.
  let opened = -1;
  let flushed: Record<string, number> | undefined;
  const second = agent([app.url, license.key, dir, "resume"], (o) => {
    if (typeof o.opened === "number") opened = o.opened;
    if (o.flushed) flushed = o.flushed as Record<string, number>;
  });
  const done = await within(second.exited, "the restarted agent to deliver its spool");
  expect(done.code, done.stderr).toBe(0);
  expect(opened).toBeGreaterThanOrEqual(N - landed);
  expect(flushed).toMatchObject({ pending: 0, rejected: 0, corrupt: 0 });
  // What had landed but was still in the spool went again under the same keys: the server answered duplicates.
  expect(flushed!.duplicates).toBeGreaterThanOrEqual(landed - (N - opened));

  const stored = await storedEvents(v.usage, license.id);
  expect(stored).toHaveLength(N);
  const times = timesEachSeq(stored);
  expect(times.size).toBe(N);
  expect([...times.values()].every((n) => n === 1)).toBe(true);
  const expected = BigInt(Array.from({ length: N }, (_, i) => 1 + (i % 7)).reduce((a, b) => a + b, 0));
  const now = Date.now();
  const summary = await v.usage.getUsageSummary({
    licenseId: license.id,
    metric: "tokens",
    startTime: timestampFromDate(new Date(now - 86_400_000)),
    endTime: timestampFromDate(new Date(now + 3_600_000)),
  });
  expect(summary.total).toBe(expected);
  expect(summary.buckets.reduce((n, b) => n + b.events, 0n)).toBe(BigInt(N));
});

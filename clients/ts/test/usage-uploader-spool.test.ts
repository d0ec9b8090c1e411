// The UsageUploader's spool on a real directory: what survives a reopen, what a torn or corrupt
// line costs, the full policy and the lock.
import { spawn } from "node:child_process";
import { appendFileSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { encodeLine, SpoolFullError, type SpooledEvent, UsageSpool } from "../src/node/spool.js";

const tmp = () => mkdtempSync(path.join(os.tmpdir(), "licensd-spool-"));
const event = (i: number, extra: Partial<SpooledEvent> = {}): SpooledEvent => ({
  key: `key-${i}`,
  metric: "tokens",
  quantity: i,
  time: 1_800_000_000_000 + i,
  ...extra,
});
const segments = (dir: string) => readdirSync(dir).filter((n) => n.endsWith(".jsonl"));
const keysOf = async (spool: UsageSpool) => (await spool.take(10_000)).map((e) => e.event.key);

describe("UsageSpool", () => {
  it("keeps appended events, with every field, across a reopen, and hands them out once, in order", async () => {
    const dir = tmp();
    const spool = await UsageSpool.open(dir);
    const special = event(0, { attributes: { model: "gpt-x", ü: 'naïve\n"quoted"' }, agentId: "coder" });
    await spool.append([special]);
    await Promise.all(Array.from({ length: 199 }, (_, i) => spool.append([event(i + 1)])));
    expect(spool.counts().pending).toBe(200);
    await spool.close();

    const again = await UsageSpool.open(dir);
    expect(again.counts()).toMatchObject({ pending: 200, corrupt: 0 });
    const entries = await again.take(150);
    expect(entries[0]!.event).toEqual(special);
    expect(entries.map((e) => e.event.key)).toEqual(Array.from({ length: 150 }, (_, i) => `key-${i}`));
    // What was handed out is not handed out again; the rest follows.
    expect(await keysOf(again)).toEqual(Array.from({ length: 50 }, (_, i) => `key-${i + 150}`));
    expect(await again.take(10)).toEqual([]);
    await again.close();
  });

  it("skips a torn last line and a corrupt line on recovery, and never appends after them", async () => {
    const dir = tmp();
    const spool = await UsageSpool.open(dir);
    for (let i = 0; i < 5; i++) await spool.append([event(i)]);
    await spool.close();
    const [file] = segments(dir);
    const full = path.join(dir, file!);
    // One flipped byte inside the third line's JSON, and a write cut off mid-line (no newline).
    const lines = readFileSync(full, "utf8").split("\n");
    lines[2] = lines[2]!.replace('"tokens"', '"tokenz"');
    writeFileSync(full, lines.join("\n"));
    appendFileSync(full, Buffer.from(encodeLine(event(99))).subarray(0, 30));

    const again = await UsageSpool.open(dir);
    expect(again.counts()).toMatchObject({ pending: 4, corrupt: 2 });
    await again.append([event(5)]);
    // A new segment took the append: the torn file is left as it was.
    expect(segments(dir)).toHaveLength(2);
    expect(readFileSync(full).subarray(-30)).toEqual(Buffer.from(encodeLine(event(99))).subarray(0, 30));
    expect(await keysOf(again)).toEqual(["key-0", "key-1", "key-3", "key-4", "key-5"]);
    await again.close();
  });

  it("forgets settled events across a reopen and deletes segments with nothing left", async () => {
    const dir = tmp();
    const spool = await UsageSpool.open(dir, { maxBytes: 64 * 1024, segmentBytes: 1024 });
    for (let i = 0; i < 40; i++) await spool.append([event(i)]);
    expect(segments(dir).length).toBeGreaterThan(2);
    const first = await spool.take(25);
    await spool.settle(first);
    expect(spool.settledBefore()).toBe(25);
    await spool.close();

    const again = await UsageSpool.open(dir, { maxBytes: 64 * 1024, segmentBytes: 1024 });
    expect(again.counts().pending).toBe(15);
    const rest = await again.take(100);
    expect(rest.map((e) => e.event.key)).toEqual(Array.from({ length: 15 }, (_, i) => `key-${i + 25}`));
    await again.settle(rest);
    expect(again.counts()).toMatchObject({ pending: 0, bytes: 0 });
    await again.close();
    expect(segments(dir)).toEqual([]);
  });

  it("refuses appends past maxBytes with SpoolFullError, writes none of them, and takes them again once acked", async () => {
    const dir = tmp();
    const spool = await UsageSpool.open(dir, { maxBytes: 2048, segmentBytes: 512 });
    let stored = 0;
    let refusal: unknown;
    for (; stored < 1000; stored++) {
      try {
        await spool.append([event(stored)]);
      } catch (err) {
        refusal = err;
        break;
      }
    }
    expect(refusal).toBeInstanceOf(SpoolFullError);
    expect(refusal).toMatchObject({ code: "SPOOL_FULL", maxBytes: 2048 });
    expect(stored).toBeGreaterThan(10);
    const { bytes } = spool.counts();
    expect(bytes).toBeLessThanOrEqual(2048);
    expect(spool.counts().pending).toBe(stored);
    // Space comes back as the server acknowledges.
    await spool.settle(await spool.take(stored));
    await spool.append([event(stored)]);
    await spool.close();
    const again = await UsageSpool.open(dir, { maxBytes: 2048, segmentBytes: 512 });
    expect(await keysOf(again)).toEqual([`key-${stored}`]);
    await again.close();
  });

  it("is held by one live process at a time; a lock left by a dead process, or naming this one, is taken over", async () => {
    const dir = tmp();
    const spool = await UsageSpool.open(dir);
    await spool.append([event(1)]);
    await spool.close();
    // Another process, alive, holds it.
    const other = spawn(process.execPath, ["-e", "setTimeout(() => {}, 60_000)"]);
    writeFileSync(path.join(dir, "lock"), String(other.pid));
    await expect(UsageSpool.open(dir)).rejects.toMatchObject({ name: "SpoolLockedError", pid: other.pid });
    // That process gone, as SIGKILL leaves it: the lock is taken over.
    const exited = new Promise((resolve) => other.once("exit", resolve));
    other.kill("SIGKILL");
    await exited;
    const again = await UsageSpool.open(dir);
    expect(readFileSync(path.join(dir, "lock"), "utf8")).toBe(String(process.pid));
    expect(await keysOf(again)).toEqual(["key-1"]);
    await again.close();
    // A lock naming this very process is an earlier run's (a restarted container's PID 1 has the same pid).
    writeFileSync(path.join(dir, "lock"), String(process.pid));
    await (await UsageSpool.open(dir)).close();
  });
});

import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { pino } from "pino";
import { every } from "../../src/platform/worker.js";

/** A logger that records (level, message) pairs. */
function recordingLogger() {
  const lines: { level: string; msg: string }[] = [];
  const logger = pino(
    { level: "debug" },
    { write: (s: string) => void lines.push(JSON.parse(s) as { level: string; msg: string }) },
  );
  return { logger, lines: () => lines.map((l) => ({ level: pino.levels.labels[Number(l.level)], msg: l.msg })) };
}

/** A promise and the function that settles it. */
function deferred() {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}

describe("every(ms, tick)", () => {
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => vi.useRealTimers());

  it("never runs a slow pass twice at once: the next one is scheduled when it ends", async () => {
    const { logger } = recordingLogger();
    let concurrent = 0;
    let most = 0;
    let passes = 0;
    const gates: (() => void)[] = [];
    const loop = every(
      100,
      async () => {
        passes++;
        most = Math.max(most, ++concurrent);
        const gate = deferred();
        gates.push(gate.resolve);
        await gate.promise;
        concurrent--;
      },
      { name: "slow", logger, jitter: 0 },
    );
    await vi.advanceTimersByTimeAsync(100);
    expect(passes).toBe(1);
    // The pass takes ten intervals: no second one starts meanwhile.
    await vi.advanceTimersByTimeAsync(1_000);
    expect(passes).toBe(1);
    gates.shift()?.();
    await vi.advanceTimersByTimeAsync(99);
    expect(passes).toBe(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(passes).toBe(2);
    gates.shift()?.();
    await loop.stop();
    expect(most).toBe(1);
  });

  it("stop() waits for the running pass, and no pass starts after it", async () => {
    const { logger } = recordingLogger();
    const gate = deferred();
    let passes = 0;
    let finished = false;
    const loop = every(
      50,
      async () => {
        passes++;
        await gate.promise;
        finished = true;
      },
      { name: "w", logger, jitter: 0 },
    );
    await vi.advanceTimersByTimeAsync(50);
    expect(passes).toBe(1);
    let stopped = false;
    const stopping = loop.stop().then(() => (stopped = true));
    await vi.advanceTimersByTimeAsync(10);
    expect(stopped).toBe(false);
    gate.resolve();
    await stopping;
    expect(finished).toBe(true);
    await vi.advanceTimersByTimeAsync(1_000);
    expect(passes).toBe(1);
  });

  it("stop() before the first pass: no pass ever runs", async () => {
    const { logger } = recordingLogger();
    const tick = vi.fn(async () => undefined);
    const loop = every(50, tick, { name: "w", logger });
    await loop.stop();
    await vi.advanceTimersByTimeAsync(10_000);
    expect(tick).not.toHaveBeenCalled();
  });

  it("keeps going after errors, logs once per failure streak, backs off, and says when it recovered", async () => {
    const { logger, lines } = recordingLogger();
    let fail = true;
    const at: number[] = [];
    const loop = every(
      100,
      async () => {
        at.push(Date.now());
        if (fail) throw new Error("database down");
      },
      { name: "w", logger, jitter: 0, maxBackoffMs: 400, repeatLogMs: 60_000 },
    );
    const start = Date.now();
    await vi.advanceTimersByTimeAsync(100 + 200 + 400 + 400 + 400);
    // Waits double per failure up to the cap: 100, then 200, 400, 400, 400.
    expect(at.map((t) => t - start)).toEqual([100, 300, 700, 1_100, 1_500]);
    expect(lines()).toEqual([{ level: "warn", msg: "w pass failed" }]);
    fail = false;
    await vi.advanceTimersByTimeAsync(400);
    expect(lines()).toEqual([
      { level: "warn", msg: "w pass failed" },
      { level: "info", msg: "w recovered" },
    ]);
    // Back to the plain interval.
    await vi.advanceTimersByTimeAsync(100);
    expect(at.length).toBe(7);
    fail = true;
    await vi.advanceTimersByTimeAsync(100);
    expect(lines().filter((l) => l.level === "warn")).toHaveLength(2);
    await loop.stop();
  });

  it("a long failure streak is logged again at most every repeatLogMs", async () => {
    const { logger, lines } = recordingLogger();
    const loop = every(
      100,
      async () => {
        throw new Error("still down");
      },
      { name: "w", logger, jitter: 0, maxBackoffMs: 100, repeatLogMs: 1_000 },
    );
    await vi.advanceTimersByTimeAsync(2_950);
    // 29 failed passes, logged at the 1st, then once 1 s later, and once again another second later.
    expect(lines().filter((l) => l.msg === "w pass failed")).toHaveLength(3);
    await loop.stop();
  });

  it("jitter keeps each wait within ms ± the fraction", async () => {
    const { logger } = recordingLogger();
    for (const [r, expected] of [
      [0, 800],
      [0.5, 1_000],
      [0.999_999, 1_200],
    ] as const) {
      const at: number[] = [];
      const start = Date.now();
      const loop = every(1_000, async () => void at.push(Date.now() - start), {
        name: "w",
        logger,
        jitter: 0.2,
        random: () => r,
      });
      await vi.advanceTimersByTimeAsync(expected - 1);
      expect(at).toEqual([]);
      await vi.advanceTimersByTimeAsync(1);
      expect(at).toEqual([expected]);
      await loop.stop();
    }
  });

  it("with real randomness, waits spread between the bounds", async () => {
    const { logger } = recordingLogger();
    const at: number[] = [];
    let last = Date.now();
    const loop = every(
      1_000,
      async () => {
        at.push(Date.now() - last);
        last = Date.now();
      },
      { name: "w", logger, jitter: 0.1 },
    );
    await vi.advanceTimersByTimeAsync(200_000);
    await loop.stop();
    expect(at.length).toBeGreaterThan(150);
    for (const wait of at) {
      expect(wait).toBeGreaterThanOrEqual(900);
      expect(wait).toBeLessThanOrEqual(1_100);
    }
    expect(new Set(at).size).toBeGreaterThan(10);
  });
});

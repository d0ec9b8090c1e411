import { describe, expect, it } from "vitest";
import { backoff } from "../../src/platform/backoff.js";

describe("backoff", () => {
  it("doubles its ceiling from baseMs up to capMs, and draws each delay from the ceiling's upper half", () => {
    const low = backoff({ baseMs: 100, capMs: 1_000, random: () => 0 });
    expect([1, 2, 3, 4, 5, 6].map(() => low.next())).toEqual([50, 100, 200, 400, 500, 500]);
    const high = backoff({ baseMs: 100, capMs: 1_000, random: () => 0.999 });
    expect(high.next()).toBeCloseTo(99.95);
    for (let i = 0; i < 3; i++) high.next();
    expect(high.next()).toBeCloseTo(999.5); // 1600 capped to 1000
    const mid = backoff({ baseMs: 100, capMs: 1_000, random: () => 0.5 });
    expect([mid.next(), mid.next(), mid.next()]).toEqual([75, 150, 300]);
  });

  it("starts again from baseMs after reset", () => {
    const b = backoff({ baseMs: 100, capMs: 1_000, random: () => 0 });
    b.next();
    b.next();
    b.next();
    b.reset();
    expect(b.next()).toBe(50);
  });

  it("slowest() waits at the cap without moving the sequence", () => {
    const b = backoff({ baseMs: 100, capMs: 1_000, random: () => 0 });
    expect(b.slowest()).toBe(500);
    expect(b.next()).toBe(50);
    expect(b.slowest()).toBe(500);
    expect(b.next()).toBe(100);
  });

  it("stays within [ceiling/2, ceiling) with the real random source, and never grows past the cap", () => {
    const b = backoff({ baseMs: 500, capMs: 30_000 });
    for (let i = 0; i < 2_000; i++) {
      const ceiling = Math.min(30_000, 500 * 2 ** i);
      const d = b.next();
      expect(d).toBeGreaterThanOrEqual(ceiling / 2);
      expect(d).toBeLessThan(ceiling);
    }
  });
});

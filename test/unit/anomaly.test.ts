import { describe, expect, it } from "vitest";
import { classify, FLAT_BASELINE_Z, score } from "../../src/usage/anomaly.js";

// Expected values computed independently with Python's statistics.mean / statistics.stdev (n − 1).
const baseline = [10, 12, 11, 13, 9, 10, 12, 11, 10, 12]; // mean 11, stdev 1.247219128924647

describe("anomaly scoring (Vinzy-Engine's rule)", () => {
  it.each([
    { value: 20, z: 7.216053531635459, severity: "critical" },
    { value: 14, z: 2.4053511772118195, severity: "high" },
    { value: 13, z: 1.6035674514745464, severity: "medium" },
    { value: 12, z: 0.8017837257372732, severity: null },
    { value: 7, z: -3.2071349029490928, severity: "critical" },
  ])("value $value against a 10-day baseline → z $z, $severity", ({ value, z, severity }) => {
    const r = score(baseline, value);
    expect(r.mean).toBe(11);
    expect(r.stddev).toBeCloseTo(1.247219128924647, 12);
    expect(r.z).toBeCloseTo(z, 12);
    expect(r.severity).toBe(severity);
  });

  it("uses the 999 sentinel when the baseline has no spread, and 0 when the value equals it", () => {
    expect(score([10], 11)).toEqual({ mean: 10, stddev: 0, z: FLAT_BASELINE_Z, severity: "critical" }); // one value: stddev 0
    expect(score([10], 10)).toEqual({ mean: 10, stddev: 0, z: 0, severity: null });
    expect(score([5, 5, 5], 4)).toMatchObject({ stddev: 0, z: 999, severity: "critical" });
    expect(score([5, 5, 5], 5)).toMatchObject({ z: 0, severity: null });
    expect(score([], 3)).toMatchObject({ mean: 0, stddev: 0, z: 999 });
  });

  it("uses only the last 30 values", () => {
    const old = Array(10).fill(1_000_000);
    expect(score([...old, ...Array(15).fill(10), ...Array(15).fill(12)], 11)).toMatchObject({
      mean: 11,
      severity: null,
    });
  });

  it("classifies strictly above the thresholds", () => {
    expect([1.5, 1.5001, 2, 2.0001, 3, 3.0001, -1.6, -2.5, -3.5].map(classify)).toEqual([
      null,
      "medium",
      "medium",
      "high",
      "high",
      "critical",
      "medium",
      "high",
      "critical",
    ]);
  });
});

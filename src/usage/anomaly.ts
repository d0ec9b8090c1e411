/** Vinzy-Engine's anomaly rule, exactly; kept pure so the test vectors exercise it directly. */

export type Severity = "medium" | "high" | "critical";

/** How many previous daily values form the baseline. */
export const BASELINE_DAYS = 30;
/** The z-score given to any change from a baseline with no spread. */
export const FLAT_BASELINE_Z = 999;

export interface Score {
  mean: number;
  /** Sample standard deviation (n − 1); 0 with fewer than 2 values. */
  stddev: number;
  z: number;
  severity: Severity | null;
}

/** Scores `value` against `baseline` (the previous daily values, at most the last 30 are used). */
export function score(baseline: number[], value: number): Score {
  const values = baseline.slice(-BASELINE_DAYS);
  const n = values.length;
  const mean = n === 0 ? 0 : values.reduce((a, b) => a + b, 0) / n;
  const stddev = n < 2 ? 0 : Math.sqrt(values.reduce((a, v) => a + (v - mean) ** 2, 0) / (n - 1));
  const z = stddev === 0 ? (value === mean ? 0 : FLAT_BASELINE_Z) : (value - mean) / stddev;
  return { mean, stddev, z, severity: classify(z) };
}

/** |z| > 3 critical, > 2 high, > 1.5 medium, else none. */
export function classify(z: number): Severity | null {
  const a = Math.abs(z);
  if (a > 3) return "critical";
  if (a > 2) return "high";
  if (a > 1.5) return "medium";
  return null;
}

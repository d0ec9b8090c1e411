/**
 * Capped exponential backoff with jitter: the n-th delay is drawn from the top `jitter`
 * fraction (by default the upper half) of min(capMs, baseMs·2^n), so peers cut off together
 * do not come back in step, and none waits less than (1 − jitter) of its ceiling. Used by
 * the audit feed's reconnects, LicenseGuard's retries and `every()`'s failing passes.
 */
export interface BackoffOptions {
  baseMs: number;
  capMs: number;
  /** The fraction of each ceiling that is random (default 0.5: the upper half); 0 gives the ceilings exactly. */
  jitter?: number;
  /** Uniform in [0, 1); tests pass a fixed one. */
  random?: () => number;
}

export interface Backoff {
  /** The delay before the next attempt; each call doubles the ceiling until it reaches the cap. */
  next(): number;
  /** A delay at the cap (jittered the same way), without moving the sequence: for a retry at the slowest pace. */
  slowest(): number;
  /** After a success: the next delay starts from `baseMs` again. */
  reset(): void;
}

export function backoff({ baseMs, capMs, jitter = 0.5, random = Math.random }: BackoffOptions): Backoff {
  let attempt = 0;
  const jittered = (ceiling: number) => ceiling * (1 - jitter) + random() * ceiling * jitter;
  return {
    next() {
      const ceiling = Math.min(capMs, baseMs * 2 ** attempt);
      if (ceiling < capMs) attempt++;
      return jittered(ceiling);
    },
    slowest: () => jittered(capMs),
    reset() {
      attempt = 0;
    },
  };
}

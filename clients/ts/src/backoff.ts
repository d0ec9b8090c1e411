/**
 * Capped exponential backoff with jitter (the client's own; the package imports nothing of
 * the server): the n-th delay is drawn from the upper half of min(maxMs, initialMs·2^n), so
 * clients cut off together do not come back in step, and none waits less than half its ceiling.
 */
export interface Backoff {
  /** The delay before the next attempt; each call doubles the ceiling until it reaches the cap. */
  next(): number;
  /** A delay at the cap (jittered the same way), without moving the sequence: for a retry at the slowest pace. */
  slowest(): number;
  /** After a success: the next delay starts from `initialMs` again. */
  reset(): void;
}

export function backoff(initialMs: number, maxMs: number, random: () => number = Math.random): Backoff {
  let attempt = 0;
  const jittered = (ceiling: number) => ceiling / 2 + (random() * ceiling) / 2;
  return {
    next() {
      const ceiling = Math.min(maxMs, initialMs * 2 ** attempt);
      if (ceiling < maxMs) attempt++;
      return jittered(ceiling);
    },
    slowest: () => jittered(maxMs),
    reset() {
      attempt = 0;
    },
  };
}

/** Resolves after `ms`, or at once when `signal` aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener("abort", done, { once: true });
  });
}

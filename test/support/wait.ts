/**
 * Waiting with a bound instead of timing: tests assert that something happens, and give it
 * a generous bound (15 s) so a busy machine does not fail them; how fast it happens is
 * measured in bench/ and reported in BENCHMARKS.md.
 */
export const BOUND_MS = 15_000;

/** `promise`, or a rejection naming `what` once `ms` have passed without it settling. */
export async function within<T>(promise: Promise<T>, what: string, ms = BOUND_MS): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const bound = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  try {
    return await Promise.race([promise, bound]);
  } finally {
    clearTimeout(timer);
  }
}

/** Calls `fn` until `ok` holds for its value and returns that value; fails naming `what` after `ms`. */
export async function until<T>(
  what: string,
  fn: () => Promise<T> | T,
  ok: (v: T) => boolean = Boolean,
  ms = BOUND_MS,
  pauseMs = 20,
): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (ok(v)) return v;
    if (Date.now() > deadline)
      throw new Error(`timed out after ${ms} ms waiting for ${what}; last value: ${describe(v)}`);
    await new Promise((r) => setTimeout(r, pauseMs));
  }
}

function describe(v: unknown): string {
  try {
    return JSON.stringify(v, (_, x: unknown) => (typeof x === "bigint" ? x.toString() : x)) ?? String(v);
  } catch {
    return String(v);
  }
}

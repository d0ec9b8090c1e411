import { backoff } from "./backoff.js";
import type { Logger } from "./logger.js";

export interface EveryOptions {
  /** Names the loop in log lines ("license worker"). */
  name: string;
  logger: Logger;
  /** Each wait is `ms` ± this fraction, so instances started together do not tick in lockstep (default 0.1). */
  jitter?: number;
  /**
   * After failed passes the wait doubles per failure (platform/backoff.ts, jittered by `jitter`), up to this
   * (default: the larger of `ms` and 5 minutes).
   */
  maxBackoffMs?: number;
  /** While passes keep failing, one more log line at most this often (default 10 minutes). */
  repeatLogMs?: number;
  /** For tests: a number in [0, 1). */
  random?: () => number;
}

export interface Every {
  /** No pass starts after this; resolves once a pass that is running has ended (it never rejects). */
  stop(): Promise<void>;
}

/**
 * Runs `tick` every `ms`, for background work passes. The next pass is scheduled when the
 * previous one has ended, so passes never overlap; the wait is jittered; a failing pass is
 * logged once per failure streak (then at most every `repeatLogMs`, and once on recovery)
 * and the waits back off while it keeps failing. The timer does not keep the process alive.
 */
export function every(ms: number, tick: () => Promise<unknown>, opts: EveryOptions): Every {
  const jitter = opts.jitter ?? 0.1;
  const maxBackoffMs = Math.max(ms, opts.maxBackoffMs ?? 5 * 60_000);
  const repeatLogMs = opts.repeatLogMs ?? 10 * 60_000;
  const random = opts.random ?? Math.random;
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<void> | undefined;
  let stopped = false;
  let failures = 0;
  let loggedAt = 0;

  // After a failure: 2·ms, 4·ms, … capped (the backoff the feed and LicenseGuard use).
  const failing = backoff({ baseMs: 2 * ms, capMs: maxBackoffMs, jitter, random });
  const nextWait = () => ms * (1 - jitter + 2 * jitter * random());
  const schedule = () => {
    if (stopped) return;
    const wait = failures === 0 ? nextWait() : failing.next();
    timer = setTimeout(run, Math.max(0, Math.round(wait)));
    timer.unref();
  };
  const pass = async () => {
    try {
      await tick();
      if (failures > 0) opts.logger.info({ failedPasses: failures }, `${opts.name} recovered`);
      failures = 0;
      failing.reset();
    } catch (err) {
      failures++;
      const now = Date.now();
      if (failures === 1 || now - loggedAt >= repeatLogMs) {
        loggedAt = now;
        opts.logger.warn({ err, failedPasses: failures }, `${opts.name} pass failed`);
      }
    }
  };
  function run() {
    timer = undefined;
    running = pass().finally(() => {
      running = undefined;
      schedule();
    });
  }

  schedule();
  return {
    async stop() {
      stopped = true;
      clearTimeout(timer);
      timer = undefined;
      await running;
    },
  };
}

import type { RateRule } from "../config.js";
import type { Clock } from "./clock.js";
import type { Database } from "./db.js";
import { DomainError } from "./errors.js";
import { Code } from "@connectrpc/connect";

/**
 * Token buckets held in PostgreSQL, so every instance draws from the same bucket: one
 * upsert refills the bucket for the time elapsed, takes a token if there is one, and
 * returns what is left. A refused attempt takes nothing. Time comes from the clock
 * (tests move it), not from the database.
 */
export function createRateLimiter(db: Database, clock: Clock) {
  return {
    /** Takes a token from `key`'s bucket; throws RESOURCE_EXHAUSTED with the retry delay when it is empty. */
    async take(key: string, rule: RateRule, what: string): Promise<void> {
      const rate = rule.capacity / rule.periodSeconds; // tokens per second
      const now = clock.now();
      // Prepared once per pooled connection ($2 capacity, $4 tokens per second).
      const level = `least($2::float8, b.tokens + greatest(0, extract(epoch from (excluded.refilled_at - b.refilled_at))) * $4::float8)`;
      const [row] = await db.prepared<{ tokens: number; granted: boolean }>(
        "licensd-rate-take",
        `insert into rate_buckets as b (key, tokens, granted, refilled_at) values ($1, $2::float8 - 1, true, $3)
         on conflict (key) do update set
           tokens = case when ${level} >= 1 then ${level} - 1 else ${level} end,
           granted = ${level} >= 1,
           refilled_at = greatest(b.refilled_at, excluded.refilled_at)
         returning tokens, granted`,
        [key, rule.capacity, now, rate],
      );
      if (row!.granted) return;
      const retryMs = Math.ceil(((1 - Number(row!.tokens)) / rate) * 1000);
      throw new DomainError(Code.ResourceExhausted, "RATE_LIMITED", `too many ${what}; retry in ${Math.ceil(retryMs / 1000)} s`, {
        retry_delay_ms: String(retryMs),
        limit: `${rule.capacity}/${rule.periodSeconds}s`,
      });
    },

    /** Drops buckets untouched for an hour (full again by then for any sane rule). */
    async purge(): Promise<void> {
      await db.em().execute(`delete from rate_buckets where refilled_at < ?`, [new Date(clock.now().getTime() - 3_600_000)]);
    },
  };
}

export type RateLimiter = ReturnType<typeof createRateLimiter>;

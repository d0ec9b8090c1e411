import type { Clock } from "./clock.js";
import { sql, type Database } from "./db.js";
import { DomainError } from "./errors.js";
import { Code } from "@connectrpc/connect";

/** A token-bucket rule: `capacity` requests, refilled evenly over `periodSeconds`. */
export interface RateRule {
  capacity: number;
  periodSeconds: number;
}

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
      const level = `least($2::float8,
        b.tokens + greatest(0, extract(epoch from (excluded.refilled_at - b.refilled_at))) * $4::float8)`;
      const [row] = await sql<{ tokens: number; granted: boolean }>(
        db,
        `insert into rate_buckets as b (key, tokens, granted, refilled_at) values ($1, $2::float8 - 1, true, $3)
         on conflict (key) do update set
           tokens = case when ${level} >= 1 then ${level} - 1 else ${level} end,
           granted = ${level} >= 1,
           refilled_at = greatest(b.refilled_at, excluded.refilled_at)
         returning tokens, granted`,
        [key, rule.capacity, now, rate],
        { name: "licensd-rate-take" },
      );
      if (row!.granted) return;
      const retryMs = Math.ceil(((1 - Number(row!.tokens)) / rate) * 1000);
      throw new DomainError(
        Code.ResourceExhausted,
        "RATE_LIMITED",
        `too many ${what}; retry in ${Math.ceil(retryMs / 1000)} s`,
        {
          retry_delay_ms: String(retryMs),
          limit: `${rule.capacity}/${rule.periodSeconds}s`,
        },
      );
    },

    /**
     * Takes `n` tokens from `key`'s bucket if it holds them, else empties it; never throws.
     * Returns whether they were granted, what is left, and how long until a token is back.
     */
    async draw(key: string, rule: RateRule, n: number): Promise<{ granted: boolean; tokens: number; retryMs: number }> {
      const rate = rule.capacity / rule.periodSeconds;
      const level = `least($2::float8,
        b.tokens + greatest(0, extract(epoch from (excluded.refilled_at - b.refilled_at))) * $4::float8)`;
      const [row] = await sql<{ tokens: number; granted: boolean }>(
        db,
        `insert into rate_buckets as b (key, tokens, granted, refilled_at)
         values ($1, greatest($2::float8 - $5::float8, 0), $5::float8 <= $2::float8, $3)
         on conflict (key) do update set
           tokens = case when ${level} >= $5::float8 then ${level} - $5::float8 else 0 end,
           granted = ${level} >= $5::float8,
           refilled_at = greatest(b.refilled_at, excluded.refilled_at)
         returning tokens, granted`,
        [key, rule.capacity, clock.now(), rate, n],
        { name: "licensd-rate-draw" },
      );
      const tokens = Number(row!.tokens);
      return { granted: row!.granted, tokens, retryMs: tokens >= 1 ? 0 : Math.ceil(((1 - tokens) / rate) * 1000) };
    },

    /** What `key`'s bucket holds now (without taking anything), and how long until it holds a token. */
    async peek(key: string, rule: RateRule): Promise<{ tokens: number; retryMs: number }> {
      const rate = rule.capacity / rule.periodSeconds;
      const [row] = await sql<{ tokens: number | null }>(
        db,
        `select least($2::float8,
                      tokens + greatest(0, extract(epoch from ($3::timestamptz - refilled_at))) * $4::float8) as tokens
           from rate_buckets where key = $1`,
        [key, rule.capacity, clock.now(), rate],
        { name: "licensd-rate-peek" },
      );
      const tokens = row ? Number(row.tokens) : rule.capacity;
      return { tokens, retryMs: tokens >= 1 ? 0 : Math.ceil(((1 - tokens) / rate) * 1000) };
    },

    /** Drops buckets untouched for an hour (full again by then for any sane rule). */
    async purge(): Promise<void> {
      await sql(db, `delete from rate_buckets where refilled_at < $1`, [new Date(clock.now().getTime() - 3_600_000)]);
    },
  };
}

export type RateLimiter = ReturnType<typeof createRateLimiter>;

import { Code } from "@connectrpc/connect";
import type { RateRule } from "./rate-limit.js";
import { addressBucket } from "./client-address.js";
import type { Clock } from "./clock.js";
import { sql, type Database } from "./db.js";
import { DomainError } from "./errors.js";
import type { Logger } from "./logger.js";
import type { RateLimiter } from "./rate-limit.js";

/** Cross-instance messages (PostgreSQL LISTEN/NOTIFY), as app.ts provides them. */
export interface Notifications {
  /** Calls `onMessage` with every payload NOTIFYed on `channel` by any instance. */
  listen(channel: string, onMessage: (payload: string) => void): Promise<void>;
  /** Calls `listener` whenever the listening connection is re-established: messages may have been missed. */
  onReconnect(listener: () => void): void;
}

export const KEY_FAILURES_CHANNEL = "licensd_key_failures";
const BUCKET_PREFIX = "keyfail:ip:";
/** Blocked addresses kept in memory; past this, expired ones go, then the oldest. */
const MAX_BLOCKED = 100_000;

/** Failures that are a wrong credential: a license key no license has (or malformed, or forged), an unknown API key. */
export const KEY_FAILURE_REASONS = new Set(["INVALID_LICENSE_KEY", "INVALID_API_KEY"]);
const isKeyFailure = (err: unknown) => err instanceof DomainError && KEY_FAILURE_REASONS.has(err.reason);

export function rateLimited(what: string, retryMs: number, rule: RateRule): DomainError {
  return new DomainError(
    Code.ResourceExhausted,
    "RATE_LIMITED",
    `too many ${what}; retry in ${Math.max(1, Math.ceil(retryMs / 1000))} s`,
    {
      retry_delay_ms: String(Math.max(1, retryMs)),
      limit: `${rule.capacity}/${rule.periodSeconds}s`,
    },
  );
}

/**
 * Failed key lookups per client address (LICENSD_KEY_FAILURE_RATE_PER_IP). Only
 * failures draw from the address's token bucket in PostgreSQL, shared by every
 * instance; a success costs nothing. An address whose bucket is empty is blocked until a
 * token is back: every instance then refuses its key-credential calls before looking the
 * key up, so a guess that would hit is refused too. The block is kept in memory (a map
 * look-up per call) and told to the other instances by NOTIFY; an instance that starts
 * or reconnects reads the blocked buckets back.
 */
export function createKeyFailureLimit(deps: {
  db: Database;
  clock: Clock;
  rateLimiter: RateLimiter;
  rule: RateRule | null;
  notifications: Notifications;
  logger: Logger;
}) {
  const { db, clock, rateLimiter, rule, notifications, logger } = deps;
  /** address bucket → blocked until (clock ms) */
  const blocked = new Map<string, number>();

  function block(bucket: string, until: number) {
    if ((blocked.get(bucket) ?? 0) >= until) return;
    if (blocked.size >= MAX_BLOCKED) {
      const now = clock.now().getTime();
      for (const [b, u] of blocked) if (u <= now) blocked.delete(b);
      if (blocked.size >= MAX_BLOCKED) blocked.delete(blocked.keys().next().value!);
    }
    blocked.delete(bucket); // re-inserted last: the oldest entry is the first to go
    blocked.set(bucket, until);
  }

  function onMessage(payload: string) {
    const at = payload.lastIndexOf(" ");
    const until = Number(payload.slice(at + 1));
    if (at > 0 && Number.isFinite(until)) block(payload.slice(0, at), until);
  }

  /** Reads back every bucket that is empty now (an instance that just started or reconnected missed their NOTIFYs). */
  async function load() {
    if (!rule) return;
    const rate = rule.capacity / rule.periodSeconds;
    const rows = await sql<{ key: string; tokens: number; refilled_ms: string }>(
      db,
      `select key, tokens, (extract(epoch from refilled_at) * 1000)::bigint as refilled_ms
         from rate_buckets where key like '${BUCKET_PREFIX}%' and tokens < 1`,
      [],
      { name: "licensd-key-failures-blocked" },
    );
    const now = clock.now().getTime();
    for (const r of rows) {
      const until = Number(r.refilled_ms) + Math.ceil(((1 - Number(r.tokens)) / rate) * 1000);
      if (until > now) block(r.key.slice(BUCKET_PREFIX.length), until);
    }
  }

  function refuseIfBlocked(address: string): void {
    if (!rule || blocked.size === 0 || !address) return;
    const bucket = addressBucket(address);
    const until = blocked.get(bucket);
    if (until === undefined) return;
    const left = until - clock.now().getTime();
    if (left > 0) throw rateLimited("failed key lookups from this address", left, rule);
    blocked.delete(bucket);
  }

  /**
   * Draws `n` failures from the address's bucket; throws RATE_LIMITED when it held fewer (the caller answers nothing
   * else).
   */
  async function failed(address: string, n = 1): Promise<void> {
    if (!rule || !address || n <= 0) return;
    const bucket = addressBucket(address);
    const r = await rateLimiter.draw(BUCKET_PREFIX + bucket, rule, n);
    if (r.tokens < 1) {
      const until = clock.now().getTime() + r.retryMs;
      block(bucket, until);
      const notify = "select pg_notify($1, $2)";
      await sql(db, notify, [KEY_FAILURES_CHANNEL, `${bucket} ${until}`], {
        name: "licensd-key-failures-notify",
      }).catch((err: unknown) => {
        // The other instances still refuse this address's failures (the bucket is shared); they only answer its hits
        // until they hear.
        logger.warn({ err }, "could not tell the other instances about a blocked address");
      });
    }
    if (!r.granted) throw rateLimited("failed key lookups from this address", r.retryMs, rule);
  }

  return {
    async start(): Promise<void> {
      if (!rule) return;
      await notifications.listen(KEY_FAILURES_CHANNEL, onMessage);
      notifications.onReconnect(() => {
        load().catch((err: unknown) => logger.warn({ err }, "could not read blocked addresses back"));
      });
      await load();
    },

    refuseIfBlocked,
    failed,

    /**
     * A key lookup on behalf of `address`: refused at once while the address is blocked;
     * a wrong key draws one failure (and is answered RATE_LIMITED if that spent the last).
     */
    async guard<T>(address: string, lookup: () => Promise<T>): Promise<T> {
      refuseIfBlocked(address);
      try {
        return await lookup();
      } catch (err) {
        if (isKeyFailure(err)) await failed(address);
        throw err;
      }
    },
  };
}

export type KeyFailureLimit = ReturnType<typeof createKeyFailureLimit>;

/**
 * The budget CreateLicense and imports pay from when a custom key is refused because
 * another tenant holds it: one failure of the caller's address and one of its tenant
 * (LICENSD_KEY_COLLISION_RATE_PER_TENANT). A spent budget refuses custom keys before
 * they are looked up. Refusals are logged with ids only, never the key.
 */
export function createForeignKeyBudget(deps: {
  rateLimiter: RateLimiter;
  keyFailures: KeyFailureLimit;
  rule: RateRule | null;
  logger: Logger;
}) {
  const { rateLimiter, keyFailures, rule, logger } = deps;
  const bucket = (tenantId: string) => `keyfail:tenant:${tenantId}`;
  const what = "custom keys refused for this tenant";
  return {
    async admit(tenantId: string, clientAddress: string): Promise<void> {
      keyFailures.refuseIfBlocked(clientAddress);
      if (!rule) return;
      const { tokens, retryMs } = await rateLimiter.peek(bucket(tenantId), rule);
      if (tokens < 1) throw rateLimited(what, retryMs, rule);
    },
    async refused(
      tenantId: string,
      clientAddress: string,
      holder: { tenantId: string; licenseId: string },
    ): Promise<void> {
      logger.warn(
        { tenantId, holderTenantId: holder.tenantId, holderLicenseId: holder.licenseId },
        "custom license key refused: another tenant's license has it",
      );
      await keyFailures.failed(clientAddress);
      if (!rule) return;
      const r = await rateLimiter.draw(bucket(tenantId), rule, 1);
      if (!r.granted) throw rateLimited(what, r.retryMs, rule);
    },
  };
}

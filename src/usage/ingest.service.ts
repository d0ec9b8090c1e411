import type { Principal } from "../platform/auth.js";
import type { Clock } from "../platform/clock.js";
import { DeadlockException, UniqueConstraintViolationException } from "@mikro-orm/core";
import { sql, type Database } from "../platform/db.js";
import type { Events } from "../events/events.js";
import type { LicenseKeyring } from "../licensing/license-key.js";
import { startExpiry, startsExpiry } from "../licensing/license.service.js";
import type { SigningKeyStore } from "../platform/signing-keys.js";
import type { AuditFeed } from "../events/audit-feed.js";
import { createUsageRecords, limitOf, limitState, type LimitState } from "./usage-records.js";
import {
  prepareEvent,
  resolveBatch,
  TimeShapes,
  type IncomingEvent,
  type Prepared,
  type Rejection,
} from "./usage-event.js";
import { fastStatement, type FastGroup } from "./ingest-sql.js";
import { writeBatch } from "./ingest-general.js";
import type { Admission, Turn } from "./stream-order.js";
import type { BatchResult } from "./batch-result.js";

export type { IncomingEvent, Rejection };

/** The caller's failure budget for license keys (platform/key-failures.ts, bound to its address). */
export interface KeyGuard {
  /** Throws RATE_LIMITED while the caller may not have keys looked up. */
  refuseIfBlocked(): void;
  /** Pays for `n` keys that named no license; throws RATE_LIMITED (nothing written) when the budget held fewer. */
  failed(n: number): Promise<void>;
}

export interface IngestOptions {
  requireKey: boolean;
  turn?: Turn;
  keyGuard?: KeyGuard;
}
export type { LimitState };

export type { BatchResult };

/**
 * Usage ingestion. A batch is checked event by event (a bad event is rejected with its
 * index and reason, the rest land), then written. On the general path (ingest-general.ts)
 * that is one transaction: deduplication keys and keyed events first (a key seen before —
 * in this batch or any earlier one, on any instance — makes the event a duplicate), then
 * the period totals of every (license, meter, period) the batch touches are locked, so
 * limits hold across instances, then refused events are taken back and hourly rollups,
 * distinct values and totals written, all with multi-row statements. The common batch,
 * clear of every limit and threshold, does all of it in one statement (`fast`), and falls
 * back to the general path when it is not. The caller acknowledges only after this
 * returns, i.e. after the commit.
 */
export function createIngestService(deps: {
  db: Database;
  clock: Clock;
  events: Events;
  keyring: LicenseKeyring;
  signingKeys: SigningKeyStore;
  feed: AuditFeed;
}) {
  const { db, clock, events, signingKeys } = deps;
  const { lookups } = createUsageRecords(deps);
  const partitions = new Set<number>();

  /** Creates the month partition of usage_events that holds `ts`, once per process (idempotent across instances). */
  async function ensurePartition(ts: Date) {
    const start = Date.UTC(ts.getUTCFullYear(), ts.getUTCMonth(), 1);
    if (partitions.has(start)) return;
    const from = new Date(start);
    const to = new Date(Date.UTC(from.getUTCFullYear(), from.getUTCMonth() + 1, 1));
    const name = `usage_events_${from.getUTCFullYear()}${String(from.getUTCMonth() + 1).padStart(2, "0")}`;
    try {
      await sql(
        db,
        `create table if not exists ${name} partition of usage_events
           for values from ('${from.toISOString()}') to ('${to.toISOString()}')`,
      );
    } catch (err) {
      // Two instances creating the same partition at once: the loser sees a duplicate; the table exists.
      if (!/already exists/.test((err as Error).message)) throw err;
    }
    partitions.add(start);
  }

  /**
   * Ingests one batch; resolves after its transaction committed. With `turn` (a stream's
   * batches, written concurrently), limits are met in stream order, and a key repeated by
   * batches in flight counts in the first (stream-order.ts): on the general path the batch
   * writes its keys and takes its period locks each only after the stream's batches before
   * it did, so no batch ever waits in PostgreSQL for a row a later batch of its stream
   * holds while that one waits here for it. `seen`, when given, receives the batch's
   * prepared events (ingestTogether splits the result by them).
   */
  async function ingest(
    batch: IncomingEvent[],
    principal: Principal,
    opts: IngestOptions,
    seen?: { prepared?: Prepared[] },
  ): Promise<BatchResult> {
    const written: { prepared?: Prepared[] } = seen ?? {};
    let result: BatchResult;
    try {
      result = await ingestBatch(batch, principal, opts, written);
    } finally {
      // idempotent: a batch that failed, or had nothing to write, must not hold up the next
      opts.turn?.finish();
    }
    await startExpiries(written.prepared ?? [], result);
    return result;
  }

  /**
   * Starts the expiry of the licenses whose first use the batch recorded, when their policy's basis waits for it
   * (licensing/expiry-start.ts: once across instances). After the batch's commit, in a transaction of its own: a
   * crash in between leaves the expiry to start at the license's next recorded event.
   */
  async function startExpiries(prepared: Prepared[], result: BatchResult) {
    if (result.accepted === 0) return;
    const refused = new Set(result.rejected.map((r) => r.index));
    const pending = new Set<string>();
    for (const p of prepared)
      if (p.license.expiryPending && !refused.has(p.index) && startsExpiry(p.license.expirationBasis, "use"))
        pending.add(p.license.id);
    for (const id of pending) await db.tx((em) => startExpiry(em, { clock, events }, id, "use"));
  }

  /**
   * Several batches of one stream, in one transaction, as if they were one batch: each
   * gets its own result (indexes within it, the limits its events touched). A stream
   * whose batches arrive faster than they commit writes those that queued up together:
   * one commit, and one update of each total and rollup, for all of them.
   */
  async function ingestTogether(
    batches: IncomingEvent[][],
    principal: Principal,
    opts: IngestOptions,
  ): Promise<BatchResult[]> {
    if (batches.length === 1) return [await ingest(batches[0]!, principal, opts)];
    const seen: { prepared?: Prepared[] } = {};
    const whole = await ingest(batches.flat(), principal, opts, seen);
    return splitResult(
      whole,
      seen.prepared ?? [],
      batches.map((b) => b.length),
    );
  }

  async function ingestBatch(
    batch: IncomingEvent[],
    principal: Principal,
    opts: IngestOptions,
    seen?: { prepared?: Prepared[] },
  ): Promise<BatchResult> {
    const now = clock.now();
    const rejected: Rejection[] = [];
    const prepared: Prepared[] = [];
    if (seen) seen.prepared = prepared;
    const { keyGuard } = opts;
    const byKey = keyGuard !== undefined && batch.some((e) => e.licenseKey);
    if (byKey) keyGuard.refuseIfBlocked();
    const resolved = await resolveBatch(lookups(), signingKeys, batch, principal, now);
    if (byKey) {
      // Every wrong key of the batch is one guess: paid for before anything is written or answered.
      let wrong = 0;
      for (const license of resolved.byKey.values()) if (!license) wrong++;
      if (wrong > 0) await keyGuard.failed(wrong);
    }
    const shapes = new TimeShapes();
    for (let i = 0; i < batch.length; i++) {
      const r = prepareEvent(resolved, shapes, batch[i], i, principal, now, opts.requireKey);
      if ("reason" in r) rejected.push(r);
      else prepared.push(r);
    }
    // (by the batch's distinct hours, not event by event)
    for (const month of new Set([...shapes.hoursSeen()].map((h) => Date.UTC(h.getUTCFullYear(), h.getUTCMonth(), 1))))
      await ensurePartition(new Date(month));
    if (prepared.length === 0) return { accepted: 0, duplicates: 0, duplicateIndexes: [], rejected, limits: [] };

    // A key twice in one batch: the first counts, the others are duplicates.
    const keysOf = new Map<string, Set<string>>(); // tenant → keys (no key string built per event)
    const repeated: number[] = [];
    const distinct = prepared.filter((p) => {
      if (!p.key) return true;
      let keys = keysOf.get(p.license.tenantId);
      if (!keys) {
        keys = new Set();
        keysOf.set(p.license.tenantId, keys);
      }
      if (keys.has(p.key)) {
        repeated.push(p.index);
        return false;
      }
      keys.add(p.key);
      return true;
    });
    // What the batch may add to each additive (SUM, COUNT, agent token) period total.
    const adds = new Map<string, bigint>();
    const add = (group: string, n: bigint) => adds.set(group, (adds.get(group) ?? 0n) + n);
    for (const p of distinct) {
      if (p.meter.aggregation === "sum" || p.meter.aggregation === "count")
        add(p.group, p.meter.aggregation === "count" ? 1n : p.quantity);
      if (p.agentGroup) add(p.agentGroup, p.quantity);
    }
    const { turn } = opts;
    let admission: Admission = { overlaps: false, pending: new Map() };
    if (turn) {
      await turn.admitted;
      admission = turn.admit(keysOf, adds);
    }

    const isResent = (err: unknown) =>
      err instanceof UniqueConstraintViolationException && /usage_dedupe/.test(err.message);
    let careful = false;
    if (
      distinct.length > 0 &&
      distinct.every((p) => p.key) &&
      prepared.every((p) => p.meter.aggregation === "sum" || p.meter.aggregation === "count")
    ) {
      if (admission.overlaps) {
        // A key of an unfinished batch before it: after that batch, so its copy counts.
        await turn?.keys.wait;
        await turn?.limits.wait;
      }
      try {
        return await fast(now, prepared, distinct, repeated, rejected, adds, admission.pending);
      } catch (err) {
        // Nothing was written: the statement stopped itself (a limit or threshold in reach, a
        // total not there yet), met a key seen before (a resent batch), or lost a deadlock
        // (keys sent again in another order while the first copies are being written).
        if (!((err as { code?: string }).code === "LU001" || err instanceof DeadlockException || isResent(err)))
          throw err;
        careful = isResent(err);
      }
    }
    // Keys are written with a plain INSERT first: a batch of keys never seen before is the
    // common case, and a plain insert costs PostgreSQL less than half of ON CONFLICT's
    // speculative one. A key seen before (a resent batch) fails it; the batch then runs again
    // with ON CONFLICT DO NOTHING, which sorts new keys from old. Nothing is locked yet
    // when that happens (keys come first), so the retry costs one statement.
    for (; ; careful = true) {
      try {
        return await db.tx((em) =>
          writeBatch(events, em, now, prepared, distinct, repeated, rejected.slice(), careful, turn),
        );
      } catch (err) {
        if (careful || !isResent(err)) throw err;
      }
    }
  }

  /**
   * The common batch — new keyed events of SUM and COUNT meters, clear of every limit and
   * threshold — in one statement (fastStatement) on its own: one round trip, and its
   * period locks are held only while PostgreSQL finishes the statement and commits, never
   * while this process is busy elsewhere. `pending` is what unfinished batches before it
   * in its stream may still add: its limits are checked as if they had. Throws, having
   * written nothing, when the batch needs the general path.
   */
  async function fast(
    now: Date,
    prepared: Prepared[],
    distinct: Prepared[],
    repeated: number[],
    rejected: Rejection[],
    adds: Map<string, bigint>,
    pending: Map<string, bigint>,
  ): Promise<BatchResult> {
    // Duplicates' totals too: their acknowledgement reports where the license stands.
    const groups = new Map<string, FastGroup>();
    const open = (key: string, p: Prepared, agentId: string) => {
      if (!groups.has(key))
        groups.set(key, {
          sample: p,
          agentId,
          delta: adds.get(key) ?? 0n,
          pending: pending.get(key) ?? 0n,
          ...limitOf(p, agentId),
        });
    };
    for (const p of prepared) {
      open(p.group, p, "");
      if (p.agentGroup) open(p.agentGroup, p, p.agentId);
    }
    const entries = [...groups.entries()].sort(([a], [b]) => (a < b ? -1 : 1));
    const statement = fastStatement(
      now,
      distinct,
      entries.map(([, g]) => g),
    );
    type Raised = { license_id: string; meter_id: string; start_ms: string; agent_id: string; used: string };
    const raised = await sql<Raised>(db, statement.sql, statement.params, { name: "licensd-usage-batch" });
    const used = new Map(
      raised.map((r) => [
        `${r.license_id}|${r.meter_id}|${Number(r.start_ms)}${r.agent_id ? `|${r.agent_id}` : ""}`,
        BigInt(r.used),
      ]),
    );
    const limits: LimitState[] = [];
    for (const [key, g] of entries) {
      const { license, meter } = g.sample;
      // An agent is reported when the license names it.
      if (g.agentId && !license.agentTokens.has(g.agentId)) continue;
      limits.push(
        limitState(license, meter, used.get(key)!, { start: g.sample.periodStart, end: g.sample.periodEnd }, g.agentId),
      );
    }
    rejected.sort((a, b) => a.index - b.index);
    const duplicateIndexes = [...repeated].sort((a, b) => a - b);
    return { accepted: distinct.length, duplicates: duplicateIndexes.length, duplicateIndexes, rejected, limits };
  }

  return { ingest, ingestTogether, ensurePartition, lookups };
}

/** A limit's key: license, metric, period and agent ("" for the metric as a whole). */
const limitKey = (licenseId: string, metric: string, periodStart: Date, agentId: string) =>
  `${licenseId}|${metric}|${periodStart.getTime()}|${agentId}`;

/**
 * The result of batches written as one (`sizes` events each, in order), batch by batch:
 * duplicates and rejections by the batch they fell in, reindexed within it, and the
 * limits of the totals its own events (duplicates too) count toward, as the commit left them.
 */
function splitResult(whole: BatchResult, prepared: Prepared[], sizes: number[]): BatchResult[] {
  const starts: number[] = [];
  let end = 0;
  for (const n of sizes) {
    starts.push(end);
    end += n;
  }
  const batchOf = (index: number) => {
    let b = sizes.length - 1;
    while (starts[b]! > index) b--;
    return b;
  };
  const parts = sizes.map(
    (): BatchResult => ({ accepted: 0, duplicates: 0, duplicateIndexes: [], rejected: [], limits: [] }),
  );
  for (const i of whole.duplicateIndexes) {
    const b = batchOf(i);
    parts[b]!.duplicateIndexes.push(i - starts[b]!);
  }
  for (const r of whole.rejected) {
    const b = batchOf(r.index);
    parts[b]!.rejected.push({ ...r, index: r.index - starts[b]! });
  }
  // The totals each batch's events count toward: their group strings (shared, none built
  // per event), then one limit key per distinct total.
  const groups = sizes.map(() => new Map<string, Prepared>());
  for (const p of prepared) {
    const g = groups[batchOf(p.index)]!;
    if (!g.has(p.group)) g.set(p.group, p);
    // (an agent's own total: meters of agent tokens only)
    if (p.agentGroup && !g.has(p.agentGroup)) g.set(p.agentGroup, p);
  }
  const touched = groups.map(
    (g) =>
      new Set(
        [...g].map(([group, p]) =>
          limitKey(p.license.id, p.meter.metric, p.periodStart, group === p.group ? "" : p.agentId),
        ),
      ),
  );
  parts.forEach((part, b) => {
    part.limits = whole.limits.filter((l) =>
      touched[b]!.has(limitKey(l.licenseId, l.metric, l.periodStart, l.agentId)),
    );
    part.duplicates = part.duplicateIndexes.length;
    part.accepted = sizes[b]! - part.duplicates - part.rejected.length;
  });
  return parts;
}

export type IngestService = ReturnType<typeof createIngestService>;

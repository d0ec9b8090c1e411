import type { Principal } from "../platform/auth.js";
import type { Clock } from "../platform/clock.js";
import { DeadlockException, UniqueConstraintViolationException } from "@mikro-orm/core";
import { query, type Database, type EntityManager } from "../platform/db.js";
import type { Events } from "../events/events.js";
import type { LicenseKeyring } from "../licensing/license-key.js";
import type { SigningKeyStore } from "../platform/signing-keys.js";
import type { AuditFeed } from "../audit/audit-feed.js";
import { createUsageRecords, limitOf, limitState, type LimitState } from "./usage-records.js";
import { prepareEvent, resolveBatch, TimeShapes, type IncomingEvent, type Prepared, type Rejection } from "./usage-event.js";
import { columns, eventRecords, eventsInsert, eventsParams, fastStatement, finishStatement, type FastGroup, type PeriodTotal } from "./ingest-sql.js";
import type { Admission, Turn } from "./stream-order.js";

export type { IncomingEvent, Rejection };
export type { LimitState };

export interface BatchResult {
  accepted: number;
  duplicates: number;
  /** Indexes of duplicate events (RecordUsage reports its one event's). */
  duplicateIndexes: number[];
  rejected: Rejection[];
  limits: LimitState[];
}

/**
 * Usage ingestion. A batch is checked event by event (a bad event is rejected with its
 * index and reason, the rest land), then written in one transaction: deduplication keys
 * and keyed events first (a key seen before — in this batch or any earlier one, on any
 * instance — makes the event a duplicate), then the period totals of every (license,
 * meter, period) the batch touches are locked, so limits hold across instances, then
 * refused events are taken back and hourly rollups, distinct values and totals written,
 * all with multi-row statements. The common batch, clear of every limit and threshold,
 * does all of it in one statement (`fast`), and falls back to that general path when it
 * is not. The caller acknowledges only after this returns, i.e. after the commit.
 */
export function createIngestService(deps: { db: Database; clock: Clock; events: Events; keyring: LicenseKeyring; signingKeys: SigningKeyStore; feed: AuditFeed }) {
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
      await db.em().execute(`create table if not exists ${name} partition of usage_events for values from ('${from.toISOString()}') to ('${to.toISOString()}')`);
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
   * holds while that one waits here for it.
   */
  async function ingest(batch: IncomingEvent[], principal: Principal, opts: { requireKey: boolean; turn?: Turn }): Promise<BatchResult> {
    try {
      return await ingestBatch(batch, principal, opts);
    } finally {
      // idempotent: a batch that failed, or had nothing to write, must not hold up the next
      opts.turn?.finish();
    }
  }

  async function ingestBatch(batch: IncomingEvent[], principal: Principal, opts: { requireKey: boolean; turn?: Turn }): Promise<BatchResult> {
    const now = clock.now();
    const rejected: Rejection[] = [];
    const prepared: Prepared[] = [];
    const resolved = await resolveBatch(lookups(), signingKeys, batch, principal, now);
    const shapes = new TimeShapes();
    for (let i = 0; i < batch.length; i++) {
      const r = prepareEvent(resolved, shapes, batch[i], i, principal, now, opts.requireKey);
      if ("reason" in r) rejected.push(r);
      else prepared.push(r);
    }
    for (const month of new Set(prepared.map((p) => Date.UTC(p.ts.getUTCFullYear(), p.ts.getUTCMonth(), 1)))) await ensurePartition(new Date(month));
    if (prepared.length === 0) return { accepted: 0, duplicates: 0, duplicateIndexes: [], rejected, limits: [] };

    // A key twice in one batch: the first counts, the others are duplicates.
    const keysOf = new Map<string, Set<string>>(); // tenant → keys (no key string built per event)
    const repeated: number[] = [];
    const distinct = prepared.filter((p) => {
      if (!p.key) return true;
      let keys = keysOf.get(p.license.tenantId);
      if (!keys) keysOf.set(p.license.tenantId, (keys = new Set()));
      if (keys.has(p.key)) return (repeated.push(p.index), false);
      keys.add(p.key);
      return true;
    });
    // What the batch may add to each additive (SUM, COUNT, agent token) period total.
    const adds = new Map<string, bigint>();
    const add = (group: string, n: bigint) => adds.set(group, (adds.get(group) ?? 0n) + n);
    for (const p of distinct) {
      if (p.meter.aggregation === "sum" || p.meter.aggregation === "count") add(p.group, p.meter.aggregation === "count" ? 1n : p.quantity);
      if (p.agentGroup) add(p.agentGroup, p.quantity);
    }
    const { turn } = opts;
    let admission: Admission = { overlaps: false, pending: new Map() };
    if (turn) {
      await turn.admitted;
      admission = turn.admit(keysOf, adds);
    }

    const isResent = (err: unknown) => err instanceof UniqueConstraintViolationException && /usage_dedupe/.test(err.message);
    let careful = false;
    if (distinct.length > 0 && distinct.every((p) => p.key) && prepared.every((p) => p.meter.aggregation === "sum" || p.meter.aggregation === "count")) {
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
        if (!((err as { code?: string }).code === "LU001" || err instanceof DeadlockException || isResent(err))) throw err;
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
        return await db.tx((em) => write(em, now, prepared, distinct, repeated, rejected.slice(), careful, turn));
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
  async function fast(now: Date, prepared: Prepared[], distinct: Prepared[], repeated: number[], rejected: Rejection[], adds: Map<string, bigint>, pending: Map<string, bigint>): Promise<BatchResult> {
    // Duplicates' totals too: their acknowledgement reports where the license stands.
    const groups = new Map<string, FastGroup>();
    const open = (key: string, p: Prepared, agentId: string) => {
      if (!groups.has(key)) groups.set(key, { sample: p, agentId, delta: adds.get(key) ?? 0n, pending: pending.get(key) ?? 0n, ...limitOf(p, agentId) });
    };
    for (const p of prepared) {
      open(p.group, p, "");
      if (p.agentGroup) open(p.agentGroup, p, p.agentId);
    }
    const entries = [...groups.entries()].sort(([a], [b]) => (a < b ? -1 : 1));
    const { sql, params } = fastStatement(now, distinct, entries.map(([, g]) => g));
    const raised = await db.prepared<{ license_id: string; meter_id: string; start_ms: string; agent_id: string; used: string }>("licensd-usage-batch", sql, params);
    const used = new Map(raised.map((r) => [`${r.license_id}|${r.meter_id}|${Number(r.start_ms)}${r.agent_id ? `|${r.agent_id}` : ""}`, BigInt(r.used)]));
    const limits: LimitState[] = [];
    for (const [key, g] of entries) {
      const { license, meter } = g.sample;
      // An agent is reported when the license names it.
      if (g.agentId && !license.agentTokens.has(g.agentId)) continue;
      limits.push(limitState(license, meter, used.get(key)!, { start: g.sample.periodStart, end: g.sample.periodEnd }, g.agentId));
    }
    rejected.sort((a, b) => a.index - b.index);
    const duplicateIndexes = [...repeated].sort((a, b) => a - b);
    return { accepted: distinct.length, duplicates: duplicateIndexes.length, duplicateIndexes, rejected, limits };
  }

  async function write(
    em: EntityManager,
    now: Date,
    prepared: Prepared[],
    distinct: Prepared[],
    repeated: number[],
    rejected: Rejection[],
    careful: boolean,
    turn: Turn | undefined,
  ): Promise<BatchResult> {
    // 1. Deduplication: the keys this transaction inserts are the new ones. (A failed plain
    // insert keeps the stream's key turn: the careful retry must not find a later batch's
    // uncommitted copy of a key in its way.)
    const keyed = distinct.filter((p) => p.key);
    let candidates = distinct;
    const duplicateIndexes = [...repeated];
    await turn?.keys.wait;
    if (keyed.length > 0 && !careful) {
      // The keys, and with them (nothing else can refuse them before the limits) the events.
      await query(
        em,
        `with x as (${eventRecords(2)}),
         keys as (insert into usage_dedupe (tenant_id, idempotency_key, received_at) select tenant_id, idempotency_key, $1::timestamptz from x)
         ${eventsInsert("x", "$1")}`,
        [now, ...eventsParams(keyed)],
      );
    } else if (keyed.length > 0) {
      const inserted = await query<{ tenant_id: string; idempotency_key: string }>(
        em,
        `insert into usage_dedupe (tenant_id, idempotency_key, received_at)
         select t, k, $3::timestamptz from unnest($1::text[], $2::text[]) as u (t, k) on conflict do nothing returning tenant_id, idempotency_key`,
        [...columns(keyed, (p) => p.license.tenantId, (p) => p.key), now],
      );
      const fresh = new Set(inserted.map((r) => `${r.tenant_id}|${r.idempotency_key}`));
      candidates = distinct.filter((p) => !p.key || fresh.has(`${p.license.tenantId}|${p.key}`) || (duplicateIndexes.push(p.index), false));
      // 2. The keyed events are written before any lock is taken, so batches insert them in
      // parallel; the rare one a limit then refuses is deleted again below (its key is unique
      // in its tenant: it matches that one row). Keyless events (unary calls) wait for their limits.
      const early = candidates.filter((p) => p.key);
      if (early.length > 0) await query(em, eventsInsert(`(${eventRecords(2)}) e`, "$1"), [now, ...eventsParams(early)]);
    }
    turn?.keys.done();

    // 3. Lock the period totals of every (license, meter, period) touched — and, for a meter
    // counting agent tokens, of every (…, agent) — in a fixed order, after the stream's
    // previous batch locked its own.
    type Group = PeriodTotal & { allowed: bigint | null; changed: boolean };
    const groups = new Map<string, Group>();
    const open = (key: string, p: Prepared, agentId: string) => {
      if (!groups.has(key)) groups.set(key, { sample: p, agentId, allowed: limitOf(p, agentId).allowed, used: null, latestTs: null, warned: false, exceeded: false, changed: false });
    };
    // Duplicates' groups too: their acknowledgement reports where the license stands.
    for (const p of prepared) {
      open(p.group, p, "");
      if (p.agentGroup) open(p.agentGroup, p, p.agentId);
    }
    const ordered = [...groups.entries()].sort(([a], [b]) => (a < b ? -1 : 1)).map(([, g]) => g);
    // One statement creates the missing rows and locks them all, in key order, once the
    // stream's previous batch holds its own. (DO UPDATE, a no-op, is what locks an existing
    // row and returns it.)
    await turn?.limits.wait;
    type Locked = { license_id: string; meter_id: string; start_ms: string; agent_id: string; used: string | null; latest_ms: string | null; warned: boolean; exceeded: boolean };
    const locked = await query<Locked>(
      em,
      `insert into usage_periods as u (tenant_id, license_id, meter_id, period_start, agent_id)
       select * from unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::text[]) order by 2, 3, 4, 5
       on conflict (license_id, meter_id, period_start, agent_id) do update set tenant_id = u.tenant_id
       returning license_id, meter_id, (extract(epoch from period_start) * 1000)::bigint as start_ms, agent_id, used, (extract(epoch from latest_ts) * 1000)::bigint as latest_ms, warned, exceeded`,
      [ordered.map((g) => g.sample.license.tenantId), ...columns(ordered, (g) => g.sample.license.id, (g) => g.sample.meter.id, (g) => g.sample.periodStart, (g) => g.agentId)],
    );
    turn?.limits.done();
    const groupOf = (r: { license_id: string; meter_id: string; start_ms: string; agent_id: string }) => groups.get(`${r.license_id}|${r.meter_id}|${Number(r.start_ms)}${r.agent_id ? `|${r.agent_id}` : ""}`)!;
    // An agent's total starts from what the agent used in the period so far: nothing, unless
    // the meter started counting agent tokens within the period (the rollups know).
    const fresh = locked.filter((r) => r.agent_id && r.used === null);
    if (fresh.length > 0) {
      const rebuilt = await query<Locked>(
        em,
        `update usage_periods u set used = coalesce((select sum(r.total) from usage_rollups r
                  where r.license_id = u.license_id and r.meter_id = u.meter_id and r.agent_id = u.agent_id and r.hour >= u.period_start and (v.period_end is null or r.hour < v.period_end)), 0)
           from unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[], $5::timestamptz[]) as v (license_id, meter_id, period_start, agent_id, period_end)
          where u.license_id = v.license_id and u.meter_id = v.meter_id and u.period_start = v.period_start and u.agent_id = v.agent_id
          returning u.license_id, u.meter_id, (extract(epoch from u.period_start) * 1000)::bigint as start_ms, u.agent_id, u.used, null as latest_ms, u.warned, u.exceeded`,
        columns(fresh.map(groupOf), (g) => g.sample.license.id, (g) => g.sample.meter.id, (g) => g.sample.periodStart, (g) => g.agentId, (g) => g.sample.periodEnd),
      );
      locked.push(...rebuilt);
    }
    for (const r of locked) {
      Object.assign(groupOf(r), { used: r.used === null ? null : BigInt(r.used), latestTs: r.latest_ms === null ? null : new Date(Number(r.latest_ms)), warned: r.warned, exceeded: r.exceeded });
    }

    // Distinct values already counted in their period (under the period lock: stable).
    const uniques = candidates.filter((p) => p.meter.aggregation === "unique_count");
    const known = new Set<string>();
    if (uniques.length > 0) {
      const seen = await query<{ license_id: string; meter_id: string; start_ms: string; value: string }>(
        em,
        `select license_id, meter_id, (extract(epoch from period_start) * 1000)::bigint as start_ms, value from usage_period_unique
          where (license_id, meter_id, period_start, value) in (select * from unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[]))`,
        columns(uniques, (p) => p.license.id, (p) => p.meter.id, (p) => p.periodStart, (p) => p.uniqueValue),
      );
      for (const r of seen) known.add(`${r.license_id}|${r.meter_id}|${Number(r.start_ms)}|${r.value}`);
    }

    // 4. Limits, event by event in order.
    const accepted: Prepared[] = [];
    const newUniques: Prepared[] = [];
    const limitRejected: Prepared[] = [];
    const refuse = (p: Prepared, isNewValue: boolean, message: string) => {
      if (isNewValue) known.delete(`${p.group}|${p.uniqueValue}`);
      limitRejected.push(p);
      rejected.push({ index: p.index, reason: "LIMIT_EXCEEDED", message });
    };
    for (const p of candidates) {
      const g = groups.get(p.group)!;
      let next = g.used;
      let latestTs = g.latestTs;
      let isNewValue = false;
      switch (p.meter.aggregation) {
        case "sum":
          next = (g.used ?? 0n) + p.quantity;
          break;
        case "count":
          next = (g.used ?? 0n) + 1n;
          break;
        case "max":
          next = g.used === null || p.quantity > g.used ? p.quantity : g.used;
          break;
        case "min":
          next = g.used === null || p.quantity < g.used ? p.quantity : g.used;
          break;
        case "latest":
          if (latestTs === null || p.ts >= latestTs) [next, latestTs] = [p.quantity, p.ts];
          break;
        case "unique_count": {
          const u = `${p.group}|${p.uniqueValue}`;
          isNewValue = !known.has(u);
          next = (g.used ?? 0n) + (isNewValue ? 1n : 0n);
          if (isNewValue) known.add(u);
          break;
        }
      }
      const { allowed } = g;
      if (allowed !== null && next !== null && next > allowed && next !== g.used) {
        refuse(p, isNewValue, `${p.meter.metric}: would reach ${next} of an allowed ${allowed} this period`);
        continue;
      }
      const a = p.agentGroup ? groups.get(p.agentGroup)! : undefined;
      const agentNext = a && (a.used ?? 0n) + p.quantity;
      if (a && a.allowed !== null && agentNext! > a.allowed && p.quantity > 0n) {
        refuse(p, isNewValue, `${p.meter.metric}: agent ${JSON.stringify(p.agentId)} would reach ${agentNext} of an allowed ${a.allowed} tokens this period`);
        continue;
      }
      Object.assign(g, { used: next, latestTs, changed: true });
      if (a) Object.assign(a, { used: agentNext, changed: true });
      accepted.push(p);
      if (isNewValue) newUniques.push(p);
    }
    // A refused event was not recorded: its early row goes, and its key is forgotten, so it
    // can be sent again later (a raised limit, a new period).
    const forget = limitRejected.filter((p) => p.key);
    if (forget.length > 0) {
      const [tenants, licenses, times, idempotencyKeys] = columns(forget, (p) => p.license.tenantId, (p) => p.license.id, (p) => p.ts, (p) => p.key);
      await query(
        em,
        `with gone as (delete from usage_dedupe where (tenant_id, idempotency_key) in (select * from unnest($1::text[], $4::text[])))
         delete from usage_events e using unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[]) as f (tenant_id, license_id, ts, idempotency_key)
          where e.license_id = f.license_id and e.ts = f.ts and e.tenant_id = f.tenant_id and e.idempotency_key = f.idempotency_key`,
        [tenants, licenses, times, idempotencyKeys],
      );
    }
    const late = accepted.filter((p) => !p.key);
    if (late.length > 0) await query(em, eventsInsert(`(${eventRecords(2)}) e`, "$1"), [now, ...eventsParams(late)]);

    // 5. Thresholds: a warning at 80% and an exceeded entry past the limit, once per period and metric.
    const limits: LimitState[] = [];
    for (const g of ordered) {
      const { license, meter } = g.sample;
      // An agent is reported (and warned about) when the license names it.
      if (g.agentId && !license.agentTokens.has(g.agentId)) continue;
      const state = limitState(license, meter, g.used ?? 0n, { start: g.sample.periodStart, end: g.sample.periodEnd }, g.agentId);
      const base = { license_id: state.licenseId, metric: state.metric, ...(g.agentId ? { agent_id: g.agentId } : {}), used: Number(state.used), limit: Number(state.limit), period_start: state.periodStart.toISOString() };
      if (state.warning && !g.warned) {
        await events.emit(em, { tenantId: license.tenantId, type: "usage.limit_warning", subject: license.id, actor: "system", payload: base });
        Object.assign(g, { warned: true, changed: true });
      }
      if (state.exceeded && !g.exceeded) {
        await events.emit(em, { tenantId: license.tenantId, type: "usage.limit_exceeded", subject: license.id, actor: "system", payload: { ...base, overage: license.overage } });
        Object.assign(g, { exceeded: true, changed: true });
      }
      limits.push(state);
    }

    // 6. Rollups, distinct values and period totals: one statement.
    const finish = finishStatement(accepted, newUniques, ordered.filter((g) => g.changed));
    if (finish) await query(em, finish.sql, finish.params);
    rejected.sort((a, b) => a.index - b.index);
    duplicateIndexes.sort((a, b) => a - b);
    return { accepted: accepted.length, duplicates: duplicateIndexes.length, duplicateIndexes, rejected, limits };
  }

  return { ingest, ensurePartition, lookups };
}

export type IngestService = ReturnType<typeof createIngestService>;

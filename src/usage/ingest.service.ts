import type { Principal } from "../platform/auth.js";
import type { Clock } from "../platform/clock.js";
import { query, type Database } from "../platform/db.js";
import type { Events } from "../events/events.js";
import type { LicenseKeyring } from "../licensing/license-key.js";
import type { SigningKeyStore } from "../platform/signing-keys.js";
import type { AuditFeed } from "../audit/audit-feed.js";
import { createUsageRecords, limitOf, limitState, type LicenseRow, type LimitState, type MeterRow } from "./usage-records.js";
import { prepareEvent, type IncomingEvent, type Prepared, type Rejection } from "./usage-event.js";

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







/** Column arrays for `unnest($1::text[], …)`: one bind parameter per column, whatever the batch size. */
const columns = <T>(items: T[], ...pick: ((x: T) => unknown)[]) => pick.map((f) => items.map(f));

const groupKey = (p: { license: LicenseRow; meter: MeterRow; periodStart: Date }) => `${p.license.id}|${p.meter.id}|${p.periodStart.getTime()}`;

/**
 * Usage ingestion. A batch is checked event by event (a bad event is rejected with its
 * index and reason, the rest land), then written in one transaction: deduplication keys
 * first (a key seen before — in this batch or any earlier one, on any instance — makes
 * the event a duplicate), then the period totals of every (license, meter, period) the
 * batch touches are locked, so limits hold across instances, then events, hourly
 * rollups, distinct values and totals are written with multi-row statements. The
 * caller acknowledges only after this returns, i.e. after the commit.
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





  /** Ingests one batch; resolves after its transaction committed. */
  /**
   * Ingests one batch; resolves after its transaction committed. With `turn`, the batch
   * takes its period locks only after `turn.wait` (the previous batch of the stream took
   * its own) and calls `turn.done` once it holds them (or failed): batches of a stream
   * then prepare and write concurrently but meet the limits in stream order.
   */
  async function ingest(batch: IncomingEvent[], principal: Principal, opts: { requireKey: boolean; turn?: { wait: Promise<unknown>; done: () => void } }): Promise<BatchResult> {
    try {
      return await ingestBatch(batch, principal, opts);
    } finally {
      opts.turn?.done(); // idempotent: a batch that failed or had nothing to lock must not hold up the next
    }
  }

  async function ingestBatch(batch: IncomingEvent[], principal: Principal, opts: { requireKey: boolean; turn?: { wait: Promise<unknown>; done: () => void } }): Promise<BatchResult> {
    const now = clock.now();
    const rejected: Rejection[] = [];
    const prepared: Prepared[] = [];
    const look = lookups(db.em());
    for (const [i, e] of batch.entries()) {
      const r = await prepareEvent(look, signingKeys, e, i, principal, now, opts.requireKey);
      if ("reason" in r) rejected.push(r);
      else prepared.push(r);
    }
    for (const month of new Set(prepared.map((p) => Date.UTC(p.ts.getUTCFullYear(), p.ts.getUTCMonth(), 1)))) await ensurePartition(new Date(month));
    if (prepared.length === 0) return { accepted: 0, duplicates: 0, duplicateIndexes: [], rejected, limits: [] };

    return db.tx(async (em) => {
      // 1. Deduplication: the keys this transaction inserts are the new ones.
      const keyed = prepared.filter((p) => p.key);
      const fresh = new Set<string>();
      if (keyed.length > 0) {
        const inserted = await query<{ tenant_id: string; idempotency_key: string }>(
          em,
          `insert into usage_dedupe (tenant_id, idempotency_key, received_at)
           select t, k, $3::timestamptz from unnest($1::text[], $2::text[]) as u (t, k) on conflict do nothing returning tenant_id, idempotency_key`,
          [...columns(keyed, (p) => p.license.tenantId, (p) => p.key), now],
        );
        for (const r of inserted) fresh.add(`${r.tenant_id}|${r.idempotency_key}`);
      }
      const duplicateIndexes: number[] = [];
      const candidates: Prepared[] = [];
      for (const p of prepared) {
        const k = `${p.license.tenantId}|${p.key}`;
        if (p.key && !fresh.delete(k)) duplicateIndexes.push(p.index); // seen before, or earlier in this batch
        else candidates.push(p);
      }

      // 2. Lock the period totals of every (license, meter, period) touched, in a fixed order, after the stream's previous batch locked its own.
      await opts.turn?.wait;
      const groups = new Map<string, { sample: Prepared; used: bigint | null; latestTs: Date | null; warned: boolean; exceeded: boolean; changed: boolean }>();
      // Duplicates' groups too: their acknowledgement reports where the license stands.
      for (const p of prepared) if (!groups.has(groupKey(p))) groups.set(groupKey(p), { sample: p, used: null, latestTs: null, warned: false, exceeded: false, changed: false });
      const ordered = [...groups.values()].sort((a, b) => (groupKey(a.sample) < groupKey(b.sample) ? -1 : 1));
      if (ordered.length > 0) {
        const keys = columns(ordered, (g) => g.sample.license.id, (g) => g.sample.meter.id, (g) => g.sample.periodStart);
        await query(
          em,
          `insert into usage_periods (tenant_id, license_id, meter_id, period_start)
           select * from unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[]) order by 2, 3, 4 on conflict do nothing`,
          [ordered.map((g) => g.sample.license.tenantId), ...keys],
        );
        const locked = await query<{ license_id: string; meter_id: string; start_ms: string; used: string | null; latest_ms: string | null; warned: boolean; exceeded: boolean }>(
          em,
          `select license_id, meter_id, (extract(epoch from period_start) * 1000)::bigint as start_ms, used, (extract(epoch from latest_ts) * 1000)::bigint as latest_ms, warned, exceeded
             from usage_periods where (license_id, meter_id, period_start) in (select * from unnest($1::text[], $2::text[], $3::timestamptz[]))
            order by license_id, meter_id, period_start for update`,
          keys,
        );
        for (const r of locked) {
          const g = groups.get(`${r.license_id}|${r.meter_id}|${Number(r.start_ms)}`)!;
          Object.assign(g, { used: r.used === null ? null : BigInt(r.used), latestTs: r.latest_ms === null ? null : new Date(Number(r.latest_ms)), warned: r.warned, exceeded: r.exceeded });
        }
      }

      opts.turn?.done();

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

      // 3. Limits, event by event in order.
      const accepted: Prepared[] = [];
      const newUniques: Prepared[] = [];
      const limitRejected: Prepared[] = [];
      for (const p of candidates) {
        const g = groups.get(groupKey(p))!;
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
            const u = `${groupKey(p)}|${p.uniqueValue}`;
            isNewValue = !known.has(u);
            next = (g.used ?? 0n) + (isNewValue ? 1n : 0n);
            if (isNewValue) known.add(u);
            break;
          }
        }
        const { allowed } = limitOf(p);
        if (allowed !== null && next !== null && next > allowed && next !== g.used) {
          if (isNewValue) known.delete(`${groupKey(p)}|${p.uniqueValue}`);
          limitRejected.push(p);
          rejected.push({ index: p.index, reason: "LIMIT_EXCEEDED", message: `${p.meter.metric}: would reach ${next} of an allowed ${allowed} this period` });
          continue;
        }
        Object.assign(g, { used: next, latestTs, changed: true });
        accepted.push(p);
        if (isNewValue) newUniques.push(p);
      }
      // A refused event was not recorded: forget its key, so it can be sent again later (a raised limit, a new period).
      const forget = limitRejected.filter((p) => p.key);
      if (forget.length > 0) {
        await query(em, `delete from usage_dedupe where (tenant_id, idempotency_key) in (select * from unnest($1::text[], $2::text[]))`, columns(forget, (p) => p.license.tenantId, (p) => p.key));
      }

      // 4. Events, rollups, distinct values, totals: one multi-row statement each.
      if (accepted.length > 0) {
        await query(
          em,
          `insert into usage_events (tenant_id, license_id, meter_id, ts, quantity, idempotency_key, agent_id, attributes, received_at)
           select *, $9::timestamptz from unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::bigint[], $6::text[], $7::text[], $8::jsonb[])`,
          [
            ...columns(
              accepted,
              (p) => p.license.tenantId,
              (p) => p.license.id,
              (p) => p.meter.id,
              (p) => p.ts,
              (p) => p.quantity.toString(),
              (p) => p.key,
              (p) => p.agentId,
              (p) => JSON.stringify(p.attributes),
            ),
            now,
          ],
        );
        const rollups = new Map<string, { p: Prepared; total: bigint; events: number; max: bigint; min: bigint; latest: bigint; latestTs: Date }>();
        for (const p of accepted) {
          const k = `${p.license.id}|${p.meter.id}|${p.hour.getTime()}|${p.agentId}`;
          const r = rollups.get(k);
          if (!r) rollups.set(k, { p, total: p.quantity, events: 1, max: p.quantity, min: p.quantity, latest: p.quantity, latestTs: p.ts });
          else {
            r.total += p.quantity;
            r.events++;
            if (p.quantity > r.max) r.max = p.quantity;
            if (p.quantity < r.min) r.min = p.quantity;
            if (p.ts >= r.latestTs) [r.latest, r.latestTs] = [p.quantity, p.ts];
          }
        }
        // In key order: concurrent batches upsert shared rollup rows in the same order (no deadlocks).
        const rs = [...rollups.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([, r]) => r);
        await query(
          em,
          `insert into usage_rollups as r (tenant_id, license_id, meter_id, hour, agent_id, total, events, max, min, latest, latest_ts)
           select * from unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::text[], $6::numeric[], $7::bigint[], $8::bigint[], $9::bigint[], $10::bigint[], $11::timestamptz[])
           on conflict (license_id, meter_id, hour, agent_id) do update set
             total = r.total + excluded.total, events = r.events + excluded.events,
             max = greatest(r.max, excluded.max), min = least(r.min, excluded.min),
             latest = case when excluded.latest_ts >= r.latest_ts then excluded.latest else r.latest end,
             latest_ts = greatest(r.latest_ts, excluded.latest_ts)`,
          columns(
            rs,
            (r) => r.p.license.tenantId,
            (r) => r.p.license.id,
            (r) => r.p.meter.id,
            (r) => r.p.hour,
            (r) => r.p.agentId,
            (r) => r.total.toString(),
            (r) => r.events,
            (r) => r.max.toString(),
            (r) => r.min.toString(),
            (r) => r.latest.toString(),
            (r) => r.latestTs,
          ),
        );
        const hourly = accepted.filter((p) => p.meter.aggregation === "unique_count");
        if (hourly.length > 0) {
          await query(
            em,
            `insert into usage_unique (license_id, meter_id, hour, agent_id, value) select * from unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[], $5::text[]) on conflict do nothing`,
            columns(hourly, (p) => p.license.id, (p) => p.meter.id, (p) => p.hour, (p) => p.agentId, (p) => p.uniqueValue),
          );
        }
        if (newUniques.length > 0) {
          await query(
            em,
            `insert into usage_period_unique (license_id, meter_id, period_start, value) select * from unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[]) on conflict do nothing`,
            columns(newUniques, (p) => p.license.id, (p) => p.meter.id, (p) => p.periodStart, (p) => p.uniqueValue),
          );
        }
      }

      // 5. Thresholds: a warning at 80% and an exceeded entry past the limit, once per period and metric.
      const limits: LimitState[] = [];
      for (const g of ordered) {
        const state = limitState(g.sample.license, g.sample.meter, g.used ?? 0n, { start: g.sample.periodStart, end: g.sample.periodEnd });
        const base = { license_id: state.licenseId, metric: state.metric, used: Number(state.used), limit: Number(state.limit), period_start: state.periodStart.toISOString() };
        if (state.warning && !g.warned) {
          await events.emit(em, { tenantId: g.sample.license.tenantId, type: "usage.limit_warning", subject: g.sample.license.id, actor: "system", payload: base });
          Object.assign(g, { warned: true, changed: true });
        }
        if (state.exceeded && !g.exceeded) {
          await events.emit(em, { tenantId: g.sample.license.tenantId, type: "usage.limit_exceeded", subject: g.sample.license.id, actor: "system", payload: { ...base, overage: g.sample.license.overage } });
          Object.assign(g, { exceeded: true, changed: true });
        }
        limits.push(state);
      }
      const changed = ordered.filter((g) => g.changed);
      if (changed.length > 0) {
        await query(
          em,
          `update usage_periods u set used = v.used, latest_ts = v.latest_ts, warned = v.warned, exceeded = v.exceeded
             from unnest($1::text[], $2::text[], $3::timestamptz[], $4::numeric[], $5::timestamptz[], $6::boolean[], $7::boolean[]) as v (license_id, meter_id, period_start, used, latest_ts, warned, exceeded)
            where u.license_id = v.license_id and u.meter_id = v.meter_id and u.period_start = v.period_start`,
          columns(
            changed,
            (g) => g.sample.license.id,
            (g) => g.sample.meter.id,
            (g) => g.sample.periodStart,
            (g) => (g.used === null ? null : g.used.toString()),
            (g) => g.latestTs,
            (g) => g.warned,
            (g) => g.exceeded,
          ),
        );
      }
      rejected.sort((a, b) => a.index - b.index);
      return { accepted: accepted.length, duplicates: duplicateIndexes.length, duplicateIndexes, rejected, limits };
    });
  }

  return { ingest, ensurePartition, lookups };
}

export type IngestService = ReturnType<typeof createIngestService>;

/*
 * Ingestion's general path: a batch in one transaction of several statements, for whatever
 * the one-statement path (ingest.service.ts, `fast`) does not take — the first batch of a
 * period, a limit or threshold in reach, keyless events, resent keys, MAX, MIN, LATEST
 * and UNIQUE_COUNT meters.
 */
import { sql, type EntityManager } from "../platform/db.js";
import type { Events } from "../events/events.js";
import { limitOf, limitState, type LimitState } from "./usage-records.js";
import type { Prepared, Rejection } from "./usage-event.js";
import { columns, eventRecords, eventsInsert, eventsParams, finishStatement, type PeriodTotal } from "./ingest-sql.js";
import type { Turn } from "./stream-order.js";
import type { BatchResult } from "./batch-result.js";

/** A (license, meter, period[, agent]) total locked for the batch, with what the batch does to it. */
type Group = PeriodTotal & { allowed: bigint | null; changed: boolean };
type Locked = {
  license_id: string;
  meter_id: string;
  start_ms: string;
  agent_id: string;
  used: string | null;
  latest_ms: string | null;
  warned: boolean;
  exceeded: boolean;
};

/**
 * Writes a batch in the caller's transaction: keys and keyed events, then the period totals
 * locked in key order (after the stream's batches before it, with `turn`), limits checked
 * event by event, refused events taken back, thresholds recorded, rollups and totals written.
 * `careful`: insert the keys with ON CONFLICT DO NOTHING (some may have been seen before).
 */
export async function writeBatch(
  events: Events,
  em: EntityManager,
  now: Date,
  prepared: Prepared[],
  distinct: Prepared[],
  repeated: number[],
  rejected: Rejection[],
  careful: boolean,
  turn: Turn | undefined,
): Promise<BatchResult> {
  const { candidates, duplicateIndexes } = await dedupe(em, now, distinct, repeated, careful, turn);
  const { groups, ordered } = await lockPeriodTotals(em, prepared, turn);
  const known = await knownUniqueValues(em, candidates);
  const { accepted, newUniques, limitRejected } = checkLimits(candidates, groups, known, rejected);
  await takeBackRefused(em, limitRejected);
  await insertKeylessEvents(em, now, accepted);
  const limits = await recordThresholds(events, em, ordered);
  await writeTotals(em, accepted, newUniques, ordered);
  rejected.sort((a, b) => a.index - b.index);
  duplicateIndexes.sort((a, b) => a - b);
  return { accepted: accepted.length, duplicates: duplicateIndexes.length, duplicateIndexes, rejected, limits };
}

/**
 * 1. Deduplication: the keys this transaction inserts are the new ones; returns the events
 * still to write and the indexes of duplicates. (A failed plain insert keeps the stream's
 * key turn: the careful retry must not find a later batch's uncommitted copy of a key in its way.)
 */
async function dedupe(
  em: EntityManager,
  now: Date,
  distinct: Prepared[],
  repeated: number[],
  careful: boolean,
  turn: Turn | undefined,
) {
  const keyed = distinct.filter((p) => p.key);
  let candidates = distinct;
  const duplicateIndexes = [...repeated];
  await turn?.keys.wait;
  if (keyed.length > 0 && !careful) {
    // The keys, and with them (nothing else can refuse them before the limits) the events.
    await sql(
      em,
      `with x as (${eventRecords(2)}),
       keys as (insert into usage_dedupe (tenant_seq, idempotency_key, received_at)
                select tenant_seq, idempotency_key, $1::timestamptz from x)
       ${eventsInsert("x", "$1")}`,
      [now, ...eventsParams(keyed)],
    );
  } else if (keyed.length > 0) {
    const inserted = await sql<{ tenant_seq: number; idempotency_key: string }>(
      em,
      `insert into usage_dedupe (tenant_seq, idempotency_key, received_at)
       select t, k, $3::timestamptz from unnest($1::int[], $2::text[]) as u (t, k)
       on conflict do nothing returning tenant_seq, idempotency_key`,
      [
        ...columns(
          keyed,
          (p) => p.license.tenantSeq,
          (p) => p.key,
        ),
        now,
      ],
    );
    const fresh = new Set(inserted.map((r) => `${r.tenant_seq}|${r.idempotency_key}`));
    candidates = distinct.filter((p) => {
      if (!p.key || fresh.has(`${p.license.tenantSeq}|${p.key}`)) return true;
      duplicateIndexes.push(p.index);
      return false;
    });
    // 2. The keyed events are written before any lock is taken, so batches insert them in
    // parallel; the rare one a limit then refuses is deleted again below (its key is unique
    // in its tenant: it matches that one row). Keyless events (unary calls) wait for their limits.
    const early = candidates.filter((p) => p.key);
    if (early.length > 0) await sql(em, eventsInsert(`(${eventRecords(2)}) e`, "$1"), [now, ...eventsParams(early)]);
  }
  turn?.keys.done();
  return { candidates, duplicateIndexes };
}

/**
 * 3. Locks the period totals of every (license, meter, period) touched — and, for a meter
 * counting agent tokens, of every (…, agent) — in a fixed order, after the stream's
 * previous batch locked its own. Returns them by key, and in lock order.
 */
async function lockPeriodTotals(em: EntityManager, prepared: Prepared[], turn: Turn | undefined) {
  const groups = new Map<string, Group>();
  const open = (key: string, p: Prepared, agentId: string) => {
    if (!groups.has(key))
      groups.set(key, {
        sample: p,
        agentId,
        allowed: limitOf(p, agentId).allowed,
        used: null,
        latestTs: null,
        warned: false,
        exceeded: false,
        changed: false,
      });
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
  const locked = await sql<Locked>(
    em,
    `insert into usage_periods as u (tenant_id, license_id, meter_id, period_start, agent_id)
     select * from unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::text[]) order by 2, 3, 4, 5
     on conflict (license_id, meter_id, period_start, agent_id) do update set tenant_id = u.tenant_id
     returning license_id, meter_id, (extract(epoch from period_start) * 1000)::bigint as start_ms, agent_id, used,
               (extract(epoch from latest_ts) * 1000)::bigint as latest_ms, warned, exceeded`,
    [
      ordered.map((g) => g.sample.license.tenantId),
      ...columns(
        ordered,
        (g) => g.sample.license.id,
        (g) => g.sample.meter.id,
        (g) => g.sample.periodStart,
        (g) => g.agentId,
      ),
    ],
  );
  turn?.limits.done();
  const groupOf = (r: { license_id: string; meter_id: string; start_ms: string; agent_id: string }) =>
    groups.get(`${r.license_id}|${r.meter_id}|${Number(r.start_ms)}${r.agent_id ? `|${r.agent_id}` : ""}`)!;
  // An agent's total starts from what the agent used in the period so far: nothing, unless
  // the meter started counting agent tokens within the period (the rollups know).
  const fresh = locked.filter((r) => r.agent_id && r.used === null);
  if (fresh.length > 0) {
    const rebuilt = await sql<Locked>(
      em,
      `update usage_periods u set used = coalesce((select sum(r.total) from usage_rollups r
                where r.license_id = u.license_id and r.meter_id = u.meter_id and r.agent_id = u.agent_id
                  and r.hour >= u.period_start and (v.period_end is null or r.hour < v.period_end)), 0)
         from unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[], $5::timestamptz[])
              as v (license_id, meter_id, period_start, agent_id, period_end)
        where u.license_id = v.license_id and u.meter_id = v.meter_id and u.period_start = v.period_start
          and u.agent_id = v.agent_id
        returning u.license_id, u.meter_id, (extract(epoch from u.period_start) * 1000)::bigint as start_ms, u.agent_id,
                  u.used, null as latest_ms, u.warned, u.exceeded`,
      columns(
        fresh.map(groupOf),
        (g) => g.sample.license.id,
        (g) => g.sample.meter.id,
        (g) => g.sample.periodStart,
        (g) => g.agentId,
        (g) => g.sample.periodEnd,
      ),
    );
    locked.push(...rebuilt);
  }
  for (const r of locked) {
    Object.assign(groupOf(r), {
      used: r.used === null ? null : BigInt(r.used),
      latestTs: r.latest_ms === null ? null : new Date(Number(r.latest_ms)),
      warned: r.warned,
      exceeded: r.exceeded,
    });
  }
  return { groups, ordered };
}

/** Distinct values already counted in their period (under the period lock: stable). */
async function knownUniqueValues(em: EntityManager, candidates: Prepared[]): Promise<Set<string>> {
  const uniques = candidates.filter((p) => p.meter.aggregation === "unique_count");
  const known = new Set<string>();
  if (uniques.length > 0) {
    const seen = await sql<{ license_id: string; meter_id: string; start_ms: string; value: string }>(
      em,
      `select license_id, meter_id, (extract(epoch from period_start) * 1000)::bigint as start_ms, value
         from usage_period_unique
        where (license_id, meter_id, period_start, value) in
              (select * from unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[]))`,
      columns(
        uniques,
        (p) => p.license.id,
        (p) => p.meter.id,
        (p) => p.periodStart,
        (p) => p.uniqueValue,
      ),
    );
    for (const r of seen) known.add(`${r.license_id}|${r.meter_id}|${Number(r.start_ms)}|${r.value}`);
  }
  return known;
}

/**
 * 4. Limits, event by event in order: each accepted event moves its totals; a refused one
 * is added to `rejected`.
 */
function checkLimits(candidates: Prepared[], groups: Map<string, Group>, known: Set<string>, rejected: Rejection[]) {
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
      refuse(
        p,
        isNewValue,
        `${p.meter.metric}: agent ${JSON.stringify(p.agentId)} would reach ${agentNext} ` +
          `of an allowed ${a.allowed} tokens this period`,
      );
      continue;
    }
    Object.assign(g, { used: next, latestTs, changed: true });
    if (a) Object.assign(a, { used: agentNext, changed: true });
    accepted.push(p);
    if (isNewValue) newUniques.push(p);
  }
  return { accepted, newUniques, limitRejected };
}

/**
 * A refused event was not recorded: its early row goes, and its key is forgotten, so it
 * can be sent again later (a raised limit, a new period).
 */
async function takeBackRefused(em: EntityManager, limitRejected: Prepared[]) {
  const forget = limitRejected.filter((p) => p.key);
  if (forget.length > 0) {
    const [tenants, licenses, times, idempotencyKeys, seqs] = columns(
      forget,
      (p) => p.license.tenantId,
      (p) => p.license.id,
      (p) => p.ts,
      (p) => p.key,
      (p) => p.license.tenantSeq,
    );
    await sql(
      em,
      `with gone as (delete from usage_dedupe
                      where (tenant_seq, idempotency_key) in (select * from unnest($5::int[], $4::text[])))
       delete from usage_events e
        using unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[])
              as f (tenant_id, license_id, ts, idempotency_key)
        where e.license_id = f.license_id and e.ts = f.ts and e.tenant_id = f.tenant_id
          and e.idempotency_key = f.idempotency_key`,
      [tenants, licenses, times, idempotencyKeys, seqs],
    );
  }
}

/** Keyless events (unary calls), written once their limits let them in. */
async function insertKeylessEvents(em: EntityManager, now: Date, accepted: Prepared[]) {
  const late = accepted.filter((p) => !p.key);
  if (late.length > 0) await sql(em, eventsInsert(`(${eventRecords(2)}) e`, "$1"), [now, ...eventsParams(late)]);
}

/**
 * 5. Thresholds: a warning at 80% and an exceeded entry past the limit, once per period and
 * metric; returns where each total stands.
 */
async function recordThresholds(events: Events, em: EntityManager, ordered: Group[]): Promise<LimitState[]> {
  const limits: LimitState[] = [];
  for (const g of ordered) {
    const { license, meter } = g.sample;
    // An agent is reported (and warned about) when the license names it.
    if (g.agentId && !license.agentTokens.has(g.agentId)) continue;
    const state = limitState(
      license,
      meter,
      g.used ?? 0n,
      { start: g.sample.periodStart, end: g.sample.periodEnd },
      g.agentId,
    );
    const base = {
      license_id: state.licenseId,
      metric: state.metric,
      ...(g.agentId ? { agent_id: g.agentId } : {}),
      used: Number(state.used),
      limit: Number(state.limit),
      period_start: state.periodStart.toISOString(),
    };
    if (state.warning && !g.warned) {
      await events.emit(em, {
        tenantId: license.tenantId,
        type: "usage.limit_warning",
        subject: license.id,
        actor: "system",
        payload: base,
      });
      Object.assign(g, { warned: true, changed: true });
    }
    if (state.exceeded && !g.exceeded) {
      await events.emit(em, {
        tenantId: license.tenantId,
        type: "usage.limit_exceeded",
        subject: license.id,
        actor: "system",
        payload: { ...base, overage: license.overage },
      });
      Object.assign(g, { exceeded: true, changed: true });
    }
    limits.push(state);
  }
  return limits;
}

/** 6. Rollups, distinct values and period totals: one statement. */
async function writeTotals(em: EntityManager, accepted: Prepared[], newUniques: Prepared[], ordered: Group[]) {
  const finish = finishStatement(
    accepted,
    newUniques,
    ordered.filter((g) => g.changed),
  );
  if (finish) await sql(em, finish.sql, finish.params);
}

/* The SQL text and parameters ingestion builds for whole batches: the events, and the statement that ends a batch. */
import type { Prepared } from "./usage-event.js";

/**
 * A batch's events as bind parameters: one JSON array of compact records, plus the
 * tenant, license and meter ids they index (from 1). Cheaper to build, to send and for
 * PostgreSQL to read than a column array per field or ids repeated on every event: the
 * time travels as epoch milliseconds, and an empty agent id or attribute map is left out.
 */
export function eventsParams(items: Prepared[]): [json: string, tenants: string[], licenses: string[], meters: string[]] {
  const tenants = new Map<string, number>();
  const licenses = new Map<string, number>();
  const meters = new Map<string, number>();
  const indexOf = (ids: Map<string, number>, id: string) => {
    let i = ids.get(id);
    if (i === undefined) ids.set(id, (i = ids.size + 1));
    return i;
  };
  const parts: string[] = [];
  for (const p of items) {
    let at = "";
    for (const _ in p.attributes) {
      at = `,"at":${JSON.stringify(p.attributes)}`;
      break;
    }
    const agent = p.agentId ? `,"a":${JSON.stringify(p.agentId)}` : "";
    parts.push(`{"t":${indexOf(tenants, p.license.tenantId)},"l":${indexOf(licenses, p.license.id)},"m":${indexOf(meters, p.meter.id)},"ts":${p.ts.getTime()},"q":${p.quantity},"k":${JSON.stringify(p.key)}${agent}${at}}`);
  }
  return [`[${parts.join(",")}]`, [...tenants.keys()], [...licenses.keys()], [...meters.keys()]];
}

/** The rows of eventsParams bound at `$n` … `$n+3`, as a query of usage_events' columns. */
export const eventRecords = (n: number) => `select ($${n + 1}::text[])[t] as tenant_id, ($${n + 2}::text[])[l] as license_id, ($${n + 3}::text[])[m] as meter_id,
         to_timestamp(ts / 1000) as ts, q as quantity, k as idempotency_key, coalesce(a, '') as agent_id, coalesce(at, '{}') as attributes
    from json_to_recordset($${n}::json) as x (t int, l int, m int, ts float8, q bigint, k text, a text, at jsonb)`;

/** Inserts the rows of `source` (a query or CTE with usage_events' columns) received at `receivedAt`. */
export const eventsInsert = (source: string, receivedAt: string) => `insert into usage_events (tenant_id, license_id, meter_id, ts, quantity, idempotency_key, agent_id, attributes, received_at)
  select tenant_id, license_id, meter_id, ts, quantity, idempotency_key, agent_id, attributes, ${receivedAt}::timestamptz from ${source}`;

/** Column arrays for `unnest($1::text[], …)`: one bind parameter per column, whatever the batch size. */
export const columns = <T>(items: T[], ...pick: ((x: T) => unknown)[]) => pick.map((f) => items.map(f));

/** A (license, meter, period[, agent]) total as the batch leaves it. */
export interface PeriodTotal {
  sample: Prepared;
  /** "" for the metric as a whole. */
  agentId: string;
  used: bigint | null;
  latestTs: Date | null;
  warned: boolean;
  exceeded: boolean;
}

/**
 * The statement that ends a batch: hourly rollups of the accepted events (in key order,
 * so concurrent batches upsert shared rows in the same order: no deadlocks), their
 * distinct values, and the changed period totals. Undefined when there is nothing to write.
 */
export function finishStatement(accepted: Prepared[], newUniques: Prepared[], changed: PeriodTotal[]): { sql: string; params: unknown[] } | undefined {
  const parts: string[] = [];
  const params: unknown[] = [];
  const bind = (values: unknown[]) => values.map((v) => (params.push(v), `$${params.length}`));
  if (accepted.length > 0) {
    type Rollup = { p: Prepared; total: bigint; events: number; max: bigint; min: bigint; latest: bigint; latestTs: Date };
    // (license, meter, period) group → hour → agent: the group strings and hour Dates are shared per batch.
    const rollups = new Map<string, Map<Date, Map<string, Rollup>>>();
    for (const p of accepted) {
      let byHour = rollups.get(p.group);
      if (!byHour) rollups.set(p.group, (byHour = new Map()));
      let byAgent = byHour.get(p.hour);
      if (!byAgent) byHour.set(p.hour, (byAgent = new Map()));
      const r = byAgent.get(p.agentId);
      if (!r) byAgent.set(p.agentId, { p, total: p.quantity, events: 1, max: p.quantity, min: p.quantity, latest: p.quantity, latestTs: p.ts });
      else {
        r.total += p.quantity;
        r.events++;
        if (p.quantity > r.max) r.max = p.quantity;
        if (p.quantity < r.min) r.min = p.quantity;
        if (p.ts >= r.latestTs) [r.latest, r.latestTs] = [p.quantity, p.ts];
      }
    }
    // In key order: concurrent batches upsert shared rollup rows in the same order (no deadlocks).
    const rs = [...rollups.values()]
      .flatMap((byHour) => [...byHour.values()].flatMap((byAgent) => [...byAgent.values()]))
      .map((r) => ({ r, k: `${r.p.license.id}|${r.p.meter.id}|${r.p.hour.getTime()}|${r.p.agentId}` }))
      .sort(({ k: a }, { k: b }) => (a < b ? -1 : a > b ? 1 : 0))
      .map(({ r }) => r);
    const $ = bind(
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
    parts.push(`rollups as (insert into usage_rollups as r (tenant_id, license_id, meter_id, hour, agent_id, total, events, max, min, latest, latest_ts)
       select * from unnest(${$[0]}::text[], ${$[1]}::text[], ${$[2]}::text[], ${$[3]}::timestamptz[], ${$[4]}::text[], ${$[5]}::numeric[], ${$[6]}::bigint[], ${$[7]}::bigint[], ${$[8]}::bigint[], ${$[9]}::bigint[], ${$[10]}::timestamptz[])
       on conflict (license_id, meter_id, hour, agent_id) do update set
         total = r.total + excluded.total, events = r.events + excluded.events,
         max = greatest(r.max, excluded.max), min = least(r.min, excluded.min),
         latest = case when excluded.latest_ts >= r.latest_ts then excluded.latest else r.latest end,
         latest_ts = greatest(r.latest_ts, excluded.latest_ts))`);
    const hourly = accepted.filter((p) => p.meter.aggregation === "unique_count");
    if (hourly.length > 0) {
      const h = bind(columns(hourly, (p) => p.license.id, (p) => p.meter.id, (p) => p.hour, (p) => p.agentId, (p) => p.uniqueValue));
      parts.push(`hourly as (insert into usage_unique (license_id, meter_id, hour, agent_id, value) select * from unnest(${h[0]}::text[], ${h[1]}::text[], ${h[2]}::timestamptz[], ${h[3]}::text[], ${h[4]}::text[]) on conflict do nothing)`);
    }
    if (newUniques.length > 0) {
      const u = bind(columns(newUniques, (p) => p.license.id, (p) => p.meter.id, (p) => p.periodStart, (p) => p.uniqueValue));
      parts.push(`period_values as (insert into usage_period_unique (license_id, meter_id, period_start, value) select * from unnest(${u[0]}::text[], ${u[1]}::text[], ${u[2]}::timestamptz[], ${u[3]}::text[]) on conflict do nothing)`);
    }
  }
  if (changed.length > 0) {
    const c = bind(
      columns(
        changed,
        (g) => g.sample.license.id,
        (g) => g.sample.meter.id,
        (g) => g.sample.periodStart,
        (g) => g.agentId,
        (g) => (g.used === null ? null : g.used.toString()),
        (g) => g.latestTs,
        (g) => g.warned,
        (g) => g.exceeded,
      ),
    );
    parts.push(`totals as (update usage_periods u set used = v.used, latest_ts = v.latest_ts, warned = v.warned, exceeded = v.exceeded
         from unnest(${c[0]}::text[], ${c[1]}::text[], ${c[2]}::timestamptz[], ${c[3]}::text[], ${c[4]}::numeric[], ${c[5]}::timestamptz[], ${c[6]}::boolean[], ${c[7]}::boolean[]) as v (license_id, meter_id, period_start, agent_id, used, latest_ts, warned, exceeded)
        where u.license_id = v.license_id and u.meter_id = v.meter_id and u.period_start = v.period_start and u.agent_id = v.agent_id)`);
  }
  return parts.length > 0 ? { sql: `with ${parts.join(",\n")} select 1`, params } : undefined;
}


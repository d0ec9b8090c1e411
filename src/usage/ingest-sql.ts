/* The SQL text and parameters ingestion builds for whole batches. */
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

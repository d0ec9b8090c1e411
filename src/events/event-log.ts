import { sql, timestampOf, type Database, type EntityManager } from "../platform/db.js";
import type { JsonValue } from "./events.js";

/** One audit entry as a reader of the log sees it (the hash chain's fields stay with the audit domain). */
export interface LogEntry {
  seq: number;
  /** The entry's id (`evt_…`). */
  id: string;
  type: string;
  /** The resource id the change is about. */
  subject: string;
  /** Who made the change: `super_admin`, `key:<id>`, `license:<id>`, `system`. */
  actor: string;
  payload: { [key: string]: JsonValue };
  occurredAt: Date;
}

/**
 * The event log's read API for the domains that follow it (with the feed, which says when
 * to read): a reader keeps the last seq it read and asks for the entries after it.
 */
export interface EventLog {
  /** The tenant's newest seq, 0 when its log is empty. */
  head(tenantId: string): Promise<number>;
  /** The newest seq of each of these tenants that has entries (absent: none). */
  heads(tenantIds: readonly string[]): Promise<Map<string, number>>;
  /** The tenant's entries with seq > `afterSeq`, oldest first, at most `limit`. */
  entriesAfter(tenantId: string, afterSeq: number, limit: number): Promise<LogEntry[]>;
}

export function createEventLog(db: Database): EventLog {
  return {
    async head(tenantId) {
      const [head] = await sql<{ seq: string | null }>(
        db,
        `select max(seq) as seq from audit_events where tenant_id = $1`,
        [tenantId],
      );
      return Number(head?.seq ?? 0);
    },
    async heads(tenantIds) {
      const rows = await sql<{ tenant_id: string; seq: string }>(
        db,
        `select tenant_id, seq from audit_heads where tenant_id = any($1::text[]) and seq > 0`,
        [tenantIds],
      );
      return new Map(rows.map((r) => [r.tenant_id, Number(r.seq)]));
    },
    async entriesAfter(tenantId, afterSeq, limit) {
      const rows = await sql<{
        seq: string;
        id: string;
        type: string;
        subject: string;
        actor: string;
        payload: { [key: string]: JsonValue };
        occurred_at: Date | string;
      }>(
        db,
        `select seq, id, type, subject, actor, payload, occurred_at from audit_events
          where tenant_id = $1 and seq > $2 order by seq limit $3`,
        [tenantId, afterSeq, limit],
      );
      return rows.map((r) => ({
        seq: Number(r.seq),
        id: r.id,
        type: r.type,
        subject: r.subject,
        actor: r.actor,
        payload: r.payload,
        occurredAt: timestampOf(r.occurred_at),
      }));
    },
  };
}

/** Entries of one type counted per UTC day and per the value of one payload field (e.g. activations per license). */
export interface DailyCount {
  tenant_id: string;
  /** The payload field's value. */
  key: string;
  /** The UTC day's start, epoch milliseconds. */
  day_ms: string;
  value: string;
}

/**
 * Counts `type` entries in [from, to) per tenant, payload `field` and UTC day, on `em`'s
 * transaction; all tenants' unless `tenantId` is given.
 */
export async function dailyCounts(
  em: EntityManager,
  q: { type: string; field: string; from: Date; to: Date; tenantId?: string },
): Promise<DailyCount[]> {
  const tenant = q.tenantId ? "and tenant_id = $5" : "";
  return sql<DailyCount>(
    em,
    `select tenant_id, payload->>$1::text as key,
            (extract(epoch from date_trunc('day', occurred_at, 'UTC')) * 1000)::bigint as day_ms, count(*) as value
       from audit_events where type = $2 and occurred_at >= $3 and occurred_at < $4 ${tenant}
      group by 1, 2, 3`,
    [q.field, q.type, q.from, q.to, ...(q.tenantId ? [q.tenantId] : [])],
  );
}

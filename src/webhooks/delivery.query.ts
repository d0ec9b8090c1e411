import { sql, timestampOf, type EntityManager } from "../platform/db.js";
import { notFound } from "../platform/errors.js";
import type { Page } from "../platform/pagination.js";
import type { DeliveryStatus, WebhookAttempt, WebhookDelivery } from "./dispatcher.js";

export interface DeliveryFilters {
  endpointId?: string;
  eventId?: string;
  status?: DeliveryStatus;
}

interface DeliveryRow {
  id: string;
  tenant_id: string;
  endpoint_id: string;
  event_id: string;
  event_type: string;
  status: DeliveryStatus;
  attempt_count: number;
  next_attempt_at: string | null;
  payload: string;
  created_at: string;
  updated_at: string;
}

interface AttemptRow {
  delivery_id: string;
  number: number;
  started_at: string;
  http_status: number;
  latency_ms: number;
  response_body: string;
  error: string;
  error_reason: string;
  manual: boolean;
}

/** Reads of delivery history, newest first, with every attempt. */
export function createDeliveryQueries() {
  async function withAttempts(em: EntityManager, rows: DeliveryRow[]): Promise<WebhookDelivery[]> {
    const attempts = await sql<AttemptRow>(
      em,
      `select * from webhook_attempts where delivery_id = any($1::text[]) order by delivery_id, number`,
      [rows.map((r) => r.id)],
    );
    const byDelivery = new Map<string, WebhookAttempt[]>();
    for (const a of attempts) {
      const list = byDelivery.get(a.delivery_id) ?? [];
      list.push({
        number: a.number,
        startedAt: timestampOf(a.started_at),
        httpStatus: a.http_status,
        latencyMs: a.latency_ms,
        responseBody: a.response_body,
        error: a.error,
        errorReason: a.error_reason,
        manual: a.manual,
      });
      byDelivery.set(a.delivery_id, list);
    }
    return rows.map((r) => ({
      id: r.id,
      tenantId: r.tenant_id,
      endpointId: r.endpoint_id,
      eventId: r.event_id,
      eventType: r.event_type,
      status: r.status,
      attemptCount: r.attempt_count,
      // While an attempt is in flight its lease shows here: the time it will be retried if never recorded.
      nextAttemptAt: r.status === "pending" ? timestampOf(r.next_attempt_at) : null,
      payload: r.payload,
      attempts: byDelivery.get(r.id) ?? [],
      createdAt: timestampOf(r.created_at),
      updatedAt: timestampOf(r.updated_at),
    }));
  }

  const COLUMNS = `id, tenant_id, endpoint_id, event_id, event_type, status, attempt_count, next_attempt_at, payload,
    created_at, updated_at`;

  return {
    async get(em: EntityManager, tenantId: string, id: string): Promise<WebhookDelivery> {
      const rows = await sql<DeliveryRow>(
        em,
        `select ${COLUMNS} from webhook_deliveries where tenant_id = $1 and id = $2`,
        [tenantId, id],
      );
      if (rows.length === 0) throw notFound("webhook delivery", id);
      return (await withAttempts(em, rows))[0]!;
    },

    async list(em: EntityManager, tenantId: string, page: Page, f: DeliveryFilters): Promise<WebhookDelivery[]> {
      if (f.endpointId) {
        const found = await sql(em, `select 1 from webhook_endpoints where tenant_id = $1 and id = $2`, [
          tenantId,
          f.endpointId,
        ]);
        if (found.length === 0) throw notFound("webhook endpoint", f.endpointId);
      }
      const rows = await sql<DeliveryRow>(
        em,
        `select ${COLUMNS} from webhook_deliveries
          where tenant_id = $1 and ($2::text is null or id < $2)
            and ($3::text is null or endpoint_id = $3) and ($4::text is null or event_id = $4)
            and ($5::text is null or status = $5)
          order by id desc limit $6`,
        [tenantId, page.after ?? null, f.endpointId ?? null, f.eventId ?? null, f.status ?? null, page.size + 1],
      );
      return withAttempts(em, rows);
    },
  };
}

export type DeliveryQueries = ReturnType<typeof createDeliveryQueries>;

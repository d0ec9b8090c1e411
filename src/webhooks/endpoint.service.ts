import type { Clock } from "../platform/clock.js";
import { type DataKeys, open, seal } from "../platform/crypto.js";
import { sql, timestampOf, type EntityManager } from "../platform/db.js";
import { invalidArgument, notFound } from "../platform/errors.js";
import { newId } from "../platform/ids.js";
import type { Page } from "../platform/pagination.js";
import { checkUrl, classifyAddress, SsrfRefused } from "../platform/safe-http.js";
import type { Events } from "../events/events.js";
import { filterProblem } from "./catalog.js";
import { newSecret, secretText } from "./signature.js";

/** dispatcher.ts's channel (kept here too: the dispatcher imports this file). */
const WEBHOOK_CHANNEL = "licensd_webhooks";

export type DisabledReason = "manual" | "gone" | "failing";

export interface WebhookEndpoint {
  id: string;
  tenantId: string;
  url: string;
  description: string;
  eventTypes: string[];
  enabled: boolean;
  disabledReason: DisabledReason | null;
  failingSince: Date | null;
  previousSecretExpiresAt: Date | null;
  createdAt: Date;
  updatedAt: Date;
}

export interface EndpointRow {
  id: string;
  tenant_id: string;
  url: string;
  description: string;
  event_types: string[];
  enabled: boolean;
  disabled_reason: DisabledReason | null;
  failing_since: Date | null;
  previous_secret_expires_at: Date | null;
  created_at: Date;
  updated_at: Date;
}

export const ENDPOINT_COLUMNS = `id, tenant_id, url, description, event_types, enabled, disabled_reason, failing_since,
  previous_secret_expires_at, created_at, updated_at`;

/** Timestamps come back from raw SQL as text (db.ts, timestampOf). */
export const asDate = (v: Date | string | null): Date | null => timestampOf(v);

export const endpointOf = (r: EndpointRow): WebhookEndpoint => ({
  id: r.id,
  tenantId: r.tenant_id,
  url: r.url,
  description: r.description,
  eventTypes: r.event_types,
  enabled: r.enabled,
  disabledReason: r.disabled_reason,
  failingSince: asDate(r.failing_since),
  previousSecretExpiresAt: asDate(r.previous_secret_expires_at),
  createdAt: asDate(r.created_at)!,
  updatedAt: asDate(r.updated_at)!,
});

export interface NewEndpoint {
  url: string;
  description: string;
  eventTypes: string[];
  enabled: boolean;
}

export type EndpointPatch = Partial<NewEndpoint>;

/** The URL as events show it: a query string (where receivers often put a token) is left out. */
export function shownUrl(url: string): string {
  const u = new URL(url);
  return u.search === "" ? u.href : `${u.origin}${u.pathname}?…`;
}

/** Seals and opens endpoint secrets under the data key, bound to the endpoint's id. */
export const sealSecret = (dataKey: DataKeys, endpointId: string, secret: Buffer) => seal(dataKey, secret, endpointId);
export const openSecret = (dataKey: DataKeys, endpointId: string, sealed: Buffer) => open(dataKey, sealed, endpointId);

/** Endpoints of tenants: their URLs, filters and signing secrets (returned once, stored sealed). */
export function createEndpointService(deps: {
  clock: Clock;
  events: Events;
  dataKey: DataKeys;
  allowHttp: boolean;
  allowPrivate: boolean;
  allowedHosts?: readonly string[];
}) {
  const { clock, events, dataKey } = deps;

  /** The normalised URL, or INVALID_ARGUMENT naming `url` with the sender's reason. */
  function checkedUrl(raw: string): string {
    if (raw.includes("\0")) throw invalidArgument("url", "the URL holds a NUL character", "INVALID_URL");
    try {
      const target = checkUrl(raw, { allowHttp: deps.allowHttp, allowedHosts: deps.allowedHosts });
      if (target.literal && !deps.allowPrivate) {
        const found = classifyAddress(target.hostname);
        if (found.range !== "unicast")
          throw new SsrfRefused(
            "PRIVATE_ADDRESS",
            `${target.hostname} is a ${found.range} address: webhooks go to public addresses ` +
              "(LICENSD_WEBHOOK_ALLOW_PRIVATE=true lifts this)",
          );
      }
      return target.url.href;
    } catch (err) {
      if (err instanceof SsrfRefused) throw invalidArgument("url", err.message, err.reason);
      throw err;
    }
  }

  function checkFilters(filters: string[]): string[] {
    for (const [i, f] of filters.entries()) {
      const problem = filterProblem(f);
      if (problem) throw invalidArgument(`event_types[${i}]`, problem, "UNKNOWN_EVENT_TYPE");
    }
    return filters;
  }

  async function get(em: EntityManager, tenantId: string, id: string, lock = false): Promise<WebhookEndpoint> {
    const [row] = await sql<EndpointRow>(
      em,
      `select ${ENDPOINT_COLUMNS} from webhook_endpoints where tenant_id = $1 and id = $2 ${lock ? "for update" : ""}`,
      [tenantId, id],
    );
    if (!row) throw notFound("webhook endpoint", id);
    return endpointOf(row);
  }

  const described = (e: { url: string; description: string; eventTypes: string[]; enabled: boolean }) => ({
    url: shownUrl(e.url),
    description: e.description,
    event_types: e.eventTypes,
    enabled: e.enabled,
  });

  return {
    get,
    checkedUrl,

    async create(em: EntityManager, tenantId: string, actor: string, input: NewEndpoint) {
      const url = checkedUrl(input.url);
      const eventTypes = checkFilters(input.eventTypes);
      const id = newId("whe");
      const secret = newSecret();
      const now = clock.now();
      const endpoint = { url, description: input.description, eventTypes, enabled: input.enabled };
      // The endpoint hears events committed after the one recording its creation.
      const { seq } = await events.emitSequenced(em, {
        tenantId,
        type: "webhook.endpoint.created",
        subject: id,
        actor,
        payload: described(endpoint),
      });
      await sql(
        em,
        `insert into webhook_endpoints (id, tenant_id, url, description, event_types, enabled, disabled_reason,
           secret_sealed, after_seq, created_at, updated_at)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10)`,
        [
          id,
          tenantId,
          url,
          input.description,
          eventTypes,
          input.enabled,
          input.enabled ? null : "manual",
          sealSecret(dataKey, id, secret.bytes),
          seq,
          now,
        ],
      );
      // The dispatcher's place in this tenant's log, from here (kept if it is already further back).
      const [fresh] = await sql(
        em,
        `insert into webhook_cursors (tenant_id, seq) values ($1, $2) on conflict do nothing returning tenant_id`,
        [tenantId, seq],
      );
      // Every instance's dispatcher follows the tenant from its commit on (dispatcher.ts).
      if (fresh) await sql(em, `select pg_notify($1, $2)`, [WEBHOOK_CHANNEL, `follow:${tenantId}`]);
      return { endpoint: await get(em, tenantId, id), secret: secret.text };
    },

    async list(em: EntityManager, tenantId: string, page: Page): Promise<WebhookEndpoint[]> {
      const rows = await sql<EndpointRow>(
        em,
        `select ${ENDPOINT_COLUMNS} from webhook_endpoints where tenant_id = $1 and ($2::text is null or id > $2)
          order by id limit $3`,
        [tenantId, page.after ?? null, page.size + 1],
      );
      return rows.map(endpointOf);
    },

    async update(em: EntityManager, tenantId: string, actor: string, id: string, patch: EndpointPatch) {
      const before = await get(em, tenantId, id, true);
      const next = {
        url: patch.url === undefined ? before.url : checkedUrl(patch.url),
        description: patch.description ?? before.description,
        eventTypes: patch.eventTypes === undefined ? before.eventTypes : checkFilters(patch.eventTypes),
        enabled: patch.enabled ?? before.enabled,
      };
      let { disabledReason, failingSince } = before;
      if (next.enabled && !before.enabled) [disabledReason, failingSince] = [null, null];
      if (!next.enabled && before.enabled) disabledReason = "manual";
      await sql(
        em,
        `update webhook_endpoints set url = $3, description = $4, event_types = $5, enabled = $6, disabled_reason = $7,
           failing_since = $8, updated_at = $9 where tenant_id = $1 and id = $2`,
        [
          tenantId,
          id,
          next.url,
          next.description,
          next.eventTypes,
          next.enabled,
          disabledReason,
          failingSince,
          clock.now(),
        ],
      );
      await events.emit(em, {
        tenantId,
        type: "webhook.endpoint.updated",
        subject: id,
        actor,
        payload: { changed: Object.keys(patch).map((k) => (k === "eventTypes" ? "event_types" : k)) },
      });
      return get(em, tenantId, id);
    },

    async delete(em: EntityManager, tenantId: string, actor: string, id: string) {
      const endpoint = await get(em, tenantId, id, true);
      await sql(em, `delete from webhook_endpoints where tenant_id = $1 and id = $2`, [tenantId, id]);
      await events.emit(em, {
        tenantId,
        type: "webhook.endpoint.deleted",
        subject: id,
        actor,
        payload: described(endpoint),
      });
      return endpoint;
    },

    /** A new secret; the current one keeps signing for `overlapMs` (0: dropped now, with any older one). */
    async rotateSecret(em: EntityManager, tenantId: string, actor: string, id: string, overlapMs: number) {
      await get(em, tenantId, id, true);
      const [{ secret_sealed: current }] = (await sql<{ secret_sealed: Buffer }>(
        em,
        `select secret_sealed from webhook_endpoints where id = $1`,
        [id],
      )) as [{ secret_sealed: Buffer }];
      const secret = newSecret();
      const now = clock.now();
      const keep = overlapMs > 0;
      await sql(
        em,
        `update webhook_endpoints set secret_sealed = $2, previous_secret_sealed = $3, previous_secret_expires_at = $4,
           updated_at = $5 where id = $1`,
        [
          id,
          sealSecret(dataKey, id, secret.bytes),
          // Re-sealed, not copied: during a data-key rotation the old secret may still be under the previous key.
          keep ? sealSecret(dataKey, id, openSecret(dataKey, id, current)) : null,
          keep ? new Date(now.getTime() + overlapMs) : null,
          now,
        ],
      );
      await events.emit(em, {
        tenantId,
        type: "webhook.endpoint.secret_rotated",
        subject: id,
        actor,
        payload: { overlap_seconds: Math.round(overlapMs / 1000) },
      });
      return { endpoint: await get(em, tenantId, id), secret: secret.text };
    },
  };
}

export type EndpointService = ReturnType<typeof createEndpointService>;

/** The secrets that sign a delivery now: the current one, and a rotated-out one during its overlap. */
export function signingSecrets(
  dataKey: DataKeys,
  row: {
    id: string;
    secret_sealed: Buffer;
    previous_secret_sealed: Buffer | null;
    previous_secret_expires_at: Date | null;
  },
  now: Date,
): Buffer[] {
  const secrets = [openSecret(dataKey, row.id, row.secret_sealed)];
  const expires = asDate(row.previous_secret_expires_at);
  if (row.previous_secret_sealed && expires && expires > now)
    secrets.push(openSecret(dataKey, row.id, row.previous_secret_sealed));
  return secrets;
}

export { secretText };

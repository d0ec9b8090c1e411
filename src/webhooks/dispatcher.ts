import type { AuditFeed } from "../events/audit-feed.js";
import type { EventLog } from "../events/event-log.js";
import type { Events } from "../events/events.js";
import type { Clock } from "../platform/clock.js";
import type { DataKeys } from "../platform/crypto.js";
import { sql, type Database, type EntityManager } from "../platform/db.js";
import { failedPrecondition, notFound } from "../platform/errors.js";
import { newId } from "../platform/ids.js";
import type { Logger } from "../platform/logger.js";
import type { Metrics } from "../platform/metrics.js";
import { DeliveryError, SsrfRefused, type SafeSender } from "../platform/safe-http.js";
import { every, type Every } from "../platform/worker.js";
import { matchesFilters } from "./catalog.js";
import { asDate, shownUrl, signingSecrets } from "./endpoint.service.js";
import { signatureHeader } from "./signature.js";

/**
 * Told when deliveries were created (payload empty), so every instance's sender looks for
 * work, and when a tenant got its first endpoint (`follow:<tenant id>`), so every
 * instance fans its entries out from then on.
 */
export const WEBHOOK_CHANNEL = "licensd_webhooks";

const HOUR = 3_600_000;
/** The waits after the 1st, 2nd, … failed attempt (then ±20%); after the 10th attempt the delivery is FAILED. */
export const RETRY_DELAYS_MS = [
  5_000,
  5 * 60_000,
  30 * 60_000,
  2 * HOUR,
  5 * HOUR,
  10 * HOUR,
  14 * HOUR,
  20 * HOUR,
  24 * HOUR,
];
export const MAX_SCHEDULED_ATTEMPTS = RETRY_DELAYS_MS.length + 1;
/** An endpoint whose attempts have all failed for this long is disabled. */
export const DISABLE_AFTER_FAILING_MS = 5 * 24 * HOUR;
const FAN_OUT_BATCH = 500;

/** The wait before the next attempt after `failed` failed scheduled attempts; undefined when none is left. */
export function retryDelay(failed: number, random: () => number = Math.random): number | undefined {
  const base = RETRY_DELAYS_MS[failed - 1];
  return base === undefined ? undefined : Math.round(base * (0.8 + 0.4 * random()));
}

export type DeliveryStatus = "pending" | "succeeded" | "failed";

export interface WebhookAttempt {
  number: number;
  startedAt: Date;
  httpStatus: number;
  latencyMs: number;
  responseBody: string;
  error: string;
  errorReason: string;
  manual: boolean;
}

export interface WebhookDelivery {
  id: string;
  tenantId: string;
  endpointId: string;
  eventId: string;
  eventType: string;
  status: DeliveryStatus;
  attemptCount: number;
  nextAttemptAt: Date | null;
  payload: string;
  attempts: WebhookAttempt[];
  createdAt: Date;
  updatedAt: Date;
}

/** A delivery being sent, with what sending needs of its endpoint. */
interface Sendable {
  id: string;
  tenant_id: string;
  endpoint_id: string;
  event_id: string;
  payload: string;
  url: string;
  secret_sealed: Buffer;
  previous_secret_sealed: Buffer | null;
  previous_secret_expires_at: Date | null;
}

const SENDABLE = `d.id, d.tenant_id, d.endpoint_id, d.event_id, d.payload, e.url, e.secret_sealed,
  e.previous_secret_sealed, e.previous_secret_expires_at`;

interface Outcome {
  httpStatus: number;
  latencyMs: number;
  body: string;
  error: string;
  reason: string;
}

export interface DispatcherOptions {
  db: Database;
  clock: Clock;
  logger: Logger;
  log: EventLog;
  feed: AuditFeed;
  events: Events;
  dataKey: DataKeys;
  sender: SafeSender;
  metrics?: Metrics;
  /** How often due work is looked for when nothing woke the dispatcher. */
  pollMs: number;
  /** Finished deliveries older than this are pruned. */
  historyDays: number;
  /** Attempts in flight at once (default 16). */
  concurrency?: number;
  /** A claimed delivery is claimable again after this if its attempt was never recorded (default 60 s). */
  leaseMs?: number;
  random?: () => number;
}

/**
 * The webhook dispatcher, safe to run on every instance:
 *
 * - **fan-out** follows each tenant's audit log through the event log's read API from the
 *   tenant's cursor (`webhook_cursors`, claimed `FOR UPDATE SKIP LOCKED`) and creates, in
 *   the transaction that moves the cursor, one delivery per matching enabled endpoint: an
 *   event is never skipped, never fanned out twice;
 * - **sending** claims due deliveries (`FOR UPDATE SKIP LOCKED`, pushing `next_attempt_at`
 *   a lease ahead so no other instance takes them), POSTs them, and records each attempt
 *   with the next one's time. A process that dies mid-send leaves the lease to run out: the
 *   delivery is sent again (at-least-once). All state is in PostgreSQL, none in timers.
 */
export function createDispatcher(o: DispatcherOptions) {
  const { db, clock, logger, log, feed, events, dataKey, sender, metrics } = o;
  const concurrency = o.concurrency ?? 16;
  const leaseMs = o.leaseMs ?? 60_000;
  const random = o.random ?? Math.random;
  let stopped = true;
  let loops: Every[] = [];
  const running = new Set<Promise<unknown>>();
  let inflight = 0;
  let pumping = false;
  let pumpAgain = false;
  /** Tenants with a cursor (refreshed by every poll): only their entries are fanned out. */
  let followed = new Set<string>();
  const dirty = new Set<string>();
  let draining: Promise<void> | undefined;

  /** Fans out the tenant's new entries; -1 when another instance holds its cursor (it is fanning them out). */
  async function fanOut(tenantId: string): Promise<number> {
    let created = 0;
    for (;;) {
      const step = await db.tx(async (em) => {
        const [cursor] = await sql<{ seq: string }>(
          em,
          `select seq from webhook_cursors where tenant_id = $1 for update skip locked`,
          [tenantId],
        );
        if (!cursor) return "busy" as const;
        const entries = await log.entriesAfter(tenantId, Number(cursor.seq), FAN_OUT_BATCH);
        if (entries.length === 0) return undefined;
        const endpoints = await sql<{ id: string; event_types: string[]; after_seq: string }>(
          em,
          `select id, event_types, after_seq from webhook_endpoints where tenant_id = $1 and enabled`,
          [tenantId],
        );
        const now = clock.now();
        const rows = { id: [] as string[], endpoint: [] as string[], event: [] as string[] };
        const more = { seq: [] as number[], type: [] as string[], payload: [] as string[] };
        for (const entry of entries) {
          const body = JSON.stringify({
            type: entry.type,
            timestamp: entry.occurredAt.toISOString(),
            data: {
              id: entry.id,
              tenant_id: tenantId,
              seq: entry.seq,
              subject: entry.subject,
              actor: entry.actor,
              payload: entry.payload,
            },
          });
          for (const endpoint of endpoints) {
            if (entry.seq <= Number(endpoint.after_seq) || !matchesFilters(endpoint.event_types, entry.type)) continue;
            rows.id.push(newId("whd"));
            rows.endpoint.push(endpoint.id);
            rows.event.push(entry.id);
            more.seq.push(entry.seq);
            more.type.push(entry.type);
            more.payload.push(body);
          }
        }
        if (rows.id.length > 0) {
          await sql(
            em,
            `insert into webhook_deliveries (id, tenant_id, endpoint_id, event_id, event_seq, event_type, payload,
               status, next_attempt_at, created_at, updated_at)
             select unnest($1::text[]), $2, unnest($3::text[]), unnest($4::text[]), unnest($5::bigint[]),
                    unnest($6::text[]), unnest($7::text[]), 'pending', $8, $8, $8
             on conflict (endpoint_id, event_id) do nothing`,
            [rows.id, tenantId, rows.endpoint, rows.event, more.seq, more.type, more.payload, now],
          );
          await sql(em, `select pg_notify($1, '')`, [WEBHOOK_CHANNEL]);
        }
        await sql(em, `update webhook_cursors set seq = $2 where tenant_id = $1`, [tenantId, entries.at(-1)!.seq]);
        return { created: rows.id.length, more: entries.length === FAN_OUT_BATCH };
      });
      if (step === "busy") return created > 0 ? created : -1;
      if (!step) break;
      created += step.created;
      if (!step.more) break;
    }
    if (created > 0) void pump();
    return created;
  }

  /** Fans out every tenant whose log is ahead of its cursor (and learns which tenants have one). */
  async function fanOutAll(): Promise<number> {
    const cursors = await sql<{ tenant_id: string; seq: string }>(db, `select tenant_id, seq from webhook_cursors`);
    followed = new Set(cursors.map((c) => c.tenant_id));
    if (cursors.length === 0) return 0;
    const heads = await log.heads([...followed]);
    let created = 0;
    for (const c of cursors) {
      if ((heads.get(c.tenant_id) ?? 0) > Number(c.seq)) created += Math.max(0, await fanOut(c.tenant_id));
    }
    return created;
  }

  /** Fans out the tenants the feed announced entries for, one pass at a time. */
  function drain() {
    if (draining || stopped) return;
    draining = (async () => {
      while (dirty.size > 0 && !stopped) {
        const [tenantId] = dirty;
        dirty.delete(tenantId!);
        const done = await fanOut(tenantId!).catch((err: unknown) => {
          logger.warn({ err, tenantId }, "webhook fan-out failed");
          return 0;
        });
        // Another instance is fanning this tenant out, perhaps from a read taken before this entry
        // committed: look again shortly rather than wait for the next poll.
        if (done === -1) {
          setTimeout(() => {
            dirty.add(tenantId!);
            drain();
          }, 50).unref();
        }
      }
    })().finally(() => (draining = undefined));
  }

  async function claim(n: number): Promise<Sendable[]> {
    const now = clock.now();
    return sql<Sendable>(
      db,
      `with due as (
         select d.id from webhook_deliveries d join webhook_endpoints e on e.id = d.endpoint_id
          where d.status = 'pending' and d.next_attempt_at <= $1 and e.enabled
          order by d.next_attempt_at limit $2
          for update of d skip locked)
       update webhook_deliveries d set next_attempt_at = $3
         from due, webhook_endpoints e where d.id = due.id and e.id = d.endpoint_id
       returning ${SENDABLE}`,
      [now, n, new Date(now.getTime() + leaseMs)],
    );
  }

  /** Claims and sends due deliveries until none is due, `concurrency` at a time. */
  async function pump(): Promise<void> {
    if (stopped) return;
    if (pumping) {
      pumpAgain = true;
      return;
    }
    pumping = true;
    try {
      do {
        pumpAgain = false;
        while (!stopped && inflight < concurrency) {
          const free = concurrency - inflight;
          const batch = await claim(free);
          for (const d of batch) launch(d);
          if (batch.length < free) break;
        }
      } while (pumpAgain && !stopped);
    } catch (err) {
      logger.warn({ err }, "webhook sender could not claim deliveries");
    } finally {
      pumping = false;
    }
  }

  function launch(d: Sendable) {
    inflight++;
    const p = attempt(d, false)
      .catch((err: unknown) => logger.error({ err, delivery: d.id }, "webhook attempt could not be recorded"))
      .finally(() => {
        inflight--;
        running.delete(p);
        void pump();
      });
    running.add(p);
  }

  /** One POST of `d`, recorded; returns the attempt's number (undefined if the delivery is gone). */
  async function attempt(d: Sendable, manual: boolean): Promise<number | undefined> {
    const startedAt = clock.now();
    const timestamp = Math.floor(startedAt.getTime() / 1000);
    const secrets = signingSecrets(dataKey, { ...d, id: d.endpoint_id }, startedAt);
    const headers = {
      "content-type": "application/json",
      "webhook-id": d.event_id,
      "webhook-timestamp": String(timestamp),
      "webhook-signature": signatureHeader(d.event_id, timestamp, d.payload, secrets),
    };
    const t0 = performance.now();
    let outcome: Outcome;
    try {
      const r = await sender.send(d.url, { method: "POST", headers, body: d.payload });
      // (text columns cannot hold NUL)
      const body = r.bodyPrefix.replaceAll("\0", "\uFFFD");
      outcome = { httpStatus: r.status, latencyMs: r.latencyMs, body, error: "", reason: "" };
    } catch (err) {
      if (!(err instanceof SsrfRefused || err instanceof DeliveryError)) throw err;
      outcome = { httpStatus: 0, latencyMs: performance.now() - t0, body: "", error: err.message, reason: err.reason };
    }
    const ok = outcome.httpStatus >= 200 && outcome.httpStatus < 300;
    const result = ok ? "succeeded" : outcome.httpStatus === 410 ? "gone" : outcome.httpStatus > 0 ? "failed" : "error";
    metrics?.webhookAttempts.inc({ outcome: result });
    metrics?.webhookAttemptSeconds.observe(outcome.latencyMs / 1000);
    return record(d, startedAt, outcome, manual);
  }

  async function record(d: Sendable, startedAt: Date, out: Outcome, manual: boolean) {
    const ok = out.httpStatus >= 200 && out.httpStatus < 300;
    const gone = out.httpStatus === 410;
    return db.tx(async (em) => {
      const [cur] = await sql<{
        status: DeliveryStatus;
        scheduled_attempts: number;
        test: boolean;
        next_attempt_at: Date | null;
      }>(
        em,
        `select status, scheduled_attempts, test, next_attempt_at from webhook_deliveries where id = $1 for update`,
        [d.id],
      );
      if (!cur) return undefined; // its endpoint was deleted meanwhile
      const now = clock.now();
      let { status, scheduled_attempts: scheduled, next_attempt_at: next } = cur;
      if (ok) [status, next] = ["succeeded", null];
      else if (cur.test) [status, next] = ["failed", null];
      else if (gone && status !== "succeeded") [status, next] = ["failed", null];
      else if (!manual) {
        scheduled++;
        const wait = retryDelay(scheduled, random);
        if (wait === undefined) [status, next] = ["failed", null];
        else next = new Date(now.getTime() + wait);
      }
      const [{ attempt_count: number }] = (await sql<{ attempt_count: number }>(
        em,
        `update webhook_deliveries set attempt_count = attempt_count + 1, scheduled_attempts = $2, status = $3,
           next_attempt_at = $4, updated_at = $5 where id = $1 returning attempt_count`,
        [d.id, scheduled, status, status === "pending" ? next : null, now],
      )) as [{ attempt_count: number }];
      await sql(
        em,
        `insert into webhook_attempts (delivery_id, number, started_at, http_status, latency_ms, response_body, error,
           error_reason, manual) values ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
        [d.id, number, startedAt, out.httpStatus, Math.round(out.latencyMs), out.body, out.error, out.reason, manual],
      );
      if (ok) {
        await sql(em, `update webhook_endpoints set failing_since = null where id = $1 and failing_since is not null`, [
          d.endpoint_id,
        ]);
      } else if (gone) {
        await disable(em, d.endpoint_id, "gone");
      } else if (!manual) {
        const [e] = await sql<{ failing_since: Date | string }>(
          em,
          `update webhook_endpoints set failing_since = coalesce(failing_since, $2) where id = $1
            returning failing_since`,
          [d.endpoint_id, startedAt],
        );
        if (e && now.getTime() - asDate(e.failing_since)!.getTime() >= DISABLE_AFTER_FAILING_MS)
          await disable(em, d.endpoint_id, "failing");
      }
      return number;
    });
  }

  async function disable(em: EntityManager, endpointId: string, reason: "gone" | "failing") {
    const [e] = await sql<{ tenant_id: string; url: string }>(
      em,
      `update webhook_endpoints set enabled = false, disabled_reason = $2, updated_at = $3
        where id = $1 and enabled returning tenant_id, url`,
      [endpointId, reason, clock.now()],
    );
    if (!e) return;
    logger.warn({ endpoint: endpointId, reason }, "webhook endpoint disabled");
    await events.emit(em, {
      tenantId: e.tenant_id,
      type: "webhook.endpoint.disabled",
      subject: endpointId,
      actor: "system",
      payload: { reason, url: shownUrl(e.url) },
    });
  }

  async function sendable(tenantId: string, deliveryId: string): Promise<Sendable & { enabled: boolean }> {
    const [d] = await sql<Sendable & { enabled: boolean }>(
      db,
      `select ${SENDABLE}, e.enabled from webhook_deliveries d join webhook_endpoints e on e.id = d.endpoint_id
        where d.tenant_id = $1 and d.id = $2`,
      [tenantId, deliveryId],
    );
    if (!d) throw notFound("webhook delivery", deliveryId);
    return d;
  }

  /** Deletes finished deliveries (and test ones never finished) last changed before the history window. */
  async function prune(): Promise<number> {
    const before = new Date(clock.now().getTime() - o.historyDays * 24 * HOUR);
    let removed = 0;
    for (;;) {
      const rows = await sql<{ id: string }>(
        db,
        `delete from webhook_deliveries where id in (
           select id from webhook_deliveries
            where updated_at < $1 and (status <> 'pending' or next_attempt_at is null) limit 1000)
         returning id`,
        [before],
      );
      removed += rows.length;
      if (rows.length < 1000) return removed;
    }
  }

  return {
    fanOut,
    fanOutAll,
    pump,
    prune,

    /** Fan-out and sending, woken by the feed and by polling. */
    async start() {
      stopped = false;
      feed.onEntry((tenantId) => {
        if (stopped || !followed.has(tenantId)) return;
        dirty.add(tenantId);
        drain();
      });
      feed.onReconnect(() => void this.tick());
      await feed.listen(WEBHOOK_CHANNEL, (message) => {
        if (message.startsWith("follow:")) {
          const tenantId = message.slice("follow:".length);
          followed.add(tenantId);
          dirty.add(tenantId);
          drain();
        } else void pump();
      });
      loops = [
        every(o.pollMs, () => this.tick(), { name: "webhook dispatcher", logger }),
        every(HOUR, prune, { name: "webhook history pruning", logger }),
      ];
    },

    /** One pass: fan out whatever is behind, send whatever is due. */
    async tick() {
      if (stopped) return;
      await fanOutAll();
      await pump();
    },

    /** Waits for the attempts in flight; nothing starts after it is called. */
    async stop() {
      stopped = true;
      await Promise.all(loops.map((l) => l.stop()));
      await draining;
      await Promise.all([...running]);
    },

    /** RedeliverWebhook: one more attempt now, same webhook-id and body. */
    async redeliver(tenantId: string, deliveryId: string) {
      const d = await sendable(tenantId, deliveryId);
      if (!d.enabled)
        throw failedPrecondition(
          "WEBHOOK_ENDPOINT_DISABLED",
          `webhook endpoint ${d.endpoint_id} is disabled: enable it to redeliver`,
          { endpoint_id: d.endpoint_id },
        );
      await attempt(d, true);
    },

    /** SendTestWebhook: a `webhook.test` delivery for one endpoint, sent now, never retried. */
    async sendTest(tenantId: string, actor: string, endpointId: string): Promise<string> {
      const id = newId("whd");
      const eventId = newId("evt");
      const now = clock.now();
      const body = JSON.stringify({
        type: "webhook.test",
        timestamp: now.toISOString(),
        data: {
          id: eventId,
          tenant_id: tenantId,
          seq: 0,
          subject: endpointId,
          actor,
          payload: { message: "a test event sent by SendTestWebhook" },
        },
      });
      const inserted = await sql(
        db,
        `insert into webhook_deliveries (id, tenant_id, endpoint_id, event_id, event_seq, event_type, payload, status,
           next_attempt_at, test, created_at, updated_at)
         select $1, $2, e.id, $4, 0, 'webhook.test', $5, 'pending', null, true, $6, $6
           from webhook_endpoints e where e.tenant_id = $2 and e.id = $3
         returning id`,
        [id, tenantId, endpointId, eventId, body, now],
      );
      if (inserted.length === 0) throw notFound("webhook endpoint", endpointId);
      await attempt(await sendable(tenantId, id), true);
      return id;
    },
  };
}

export type Dispatcher = ReturnType<typeof createDispatcher>;

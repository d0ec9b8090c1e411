/*
 * Webhook delivery at scale and across a crash, against real receivers on 127.0.0.1:
 *
 * - three licensd instances on one database share the sending of 1,000 events: every
 *   event reaches the receiver exactly once, correctly signed, and is recorded SUCCEEDED
 *   after one attempt;
 * - a `licensd serve` process killed (SIGKILL) while it is sending leaves nothing behind:
 *   a new process on the same database sends the rest once the lease of the deliveries
 *   that were in flight runs out (at-least-once; only those may arrive twice).
 */
import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AuditService } from "../../gen/ts/licensd/audit/v1/audit_service_pb.js";
import { LicensingService } from "../../gen/ts/licensd/licensing/v1/licensing_service_pb.js";
import { TenantService } from "../../gen/ts/licensd/tenant/v1/tenant_service_pb.js";
import { WebhookDeliveryStatus, type WebhookDelivery } from "../../gen/ts/licensd/webhook/v1/webhook_pb.js";
import { WebhookService } from "../../gen/ts/licensd/webhook/v1/webhook_service_pb.js";
import { connectClient, startTestApp, type TestApp } from "../support/app.js";
import { startServer } from "../support/server.js";
import { until } from "../support/wait.js";
import { type Receiver, startReceiver } from "../support/webhook-sink.js";

/** The dispatcher's default number of attempts in flight per instance. */
const DISPATCHER_CONCURRENCY = 16;

/** Runs `n` calls of `task(i)`, at most `limit` at a time. */
async function bounded(n: number, limit: number, task: (i: number) => Promise<unknown>) {
  let next = 0;
  await Promise.all(
    Array.from({ length: limit }, async () => {
      while (next < n) await task(next++);
    }),
  );
}

/** Every delivery of an endpoint, all pages. */
async function allDeliveries(url: string, key: string, tenantId: string, endpointId: string) {
  const webhooks = connectClient(WebhookService, url, key);
  const out: WebhookDelivery[] = [];
  let pageToken = "";
  do {
    const page = await webhooks.listWebhookDeliveries({ tenantId, endpointId, pageSize: 1000, pageToken });
    out.push(...page.deliveries);
    pageToken = page.nextPageToken;
  } while (pageToken);
  return out;
}

/** The ids of the tenant's `customer.*` audit events, all pages. */
async function customerEventIds(url: string, key: string, tenantId: string) {
  const audit = connectClient(AuditService, url, key);
  const ids: string[] = [];
  let pageToken = "";
  do {
    const page = await audit.listAuditEvents({ tenantId, typePrefix: "customer.", pageSize: 1000, pageToken });
    ids.push(...page.events.map((e) => e.id));
    pageToken = page.nextPageToken;
  } while (pageToken);
  return ids;
}

/** Sets up a tenant and a `customer.*` endpoint pointing at `receiver`; the receiver learns the secret. */
async function tenantWithEndpoint(url: string, key: string, receiver: Receiver) {
  const tenantId = (await connectClient(TenantService, url, key).createTenant({ name: "Webhook scale" })).tenant!.id;
  const created = await connectClient(WebhookService, url, key).createWebhookEndpoint({
    tenantId,
    url: receiver.url,
    eventTypes: ["customer.*"],
  });
  receiver.state.secret = created.secret;
  return { tenantId, endpointId: created.endpoint!.id };
}

/** The succeeded attempts an instance's /metrics counts. */
async function succeededAttempts(url: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const m = text.match(/^licensd_webhook_deliveries_total\{outcome="succeeded"\} (\d+)/m);
  return m ? Number(m[1]) : 0;
}

const sorted = (xs: Iterable<string>) => [...xs].sort();

describe("three instances on one database", () => {
  const EVENTS = 1000;
  const dataKey = randomBytes(32).toString("base64");
  const env = { LICENSD_WEBHOOK_ALLOW_PRIVATE: "true", LICENSD_DATA_KEY: dataKey };
  let instances: TestApp[] = [];
  let receiver: Receiver;

  beforeAll(async () => {
    receiver = await startReceiver();
    const first = await startTestApp({ env });
    instances = [first];
    // One after the other: each applies the (already applied) migrations at start.
    for (let i = 0; i < 2; i++) instances.push(await startTestApp({ env, databaseUrl: first.databaseUrl }));
  });

  afterAll(async () => {
    for (const t of instances.slice(1)) await t.close();
    await instances[0]?.close();
    await receiver?.close();
  });

  it("deliver 1,000 events once each, signed, shared between the instances", async () => {
    const [a] = instances as [TestApp];
    const { tenantId, endpointId } = await tenantWithEndpoint(a.url, a.superAdminKey, receiver);
    const licensing = instances.map((t) => connectClient(LicensingService, t.url, t.superAdminKey));
    await bounded(EVENTS, 24, (i) =>
      licensing[i % licensing.length]!.createCustomer({
        tenantId,
        name: `Customer ${i}`,
        email: `customer-${i}@example.com`,
      }),
    );

    await until(
      `${EVENTS} distinct webhook-ids at the receiver`,
      () => receiver.distinct(),
      (n) => n >= EVENTS,
      120_000,
      50,
    );
    // Every delivery recorded: a second send, had there been one, would have come before.
    const deliveries = await until(
      `${EVENTS} deliveries recorded SUCCEEDED`,
      () => allDeliveries(a.url, a.superAdminKey, tenantId, endpointId),
      (ds) => ds.length === EVENTS && ds.every((d) => d.status === WebhookDeliveryStatus.SUCCEEDED),
      30_000,
      200,
    );

    const eventIds = await customerEventIds(a.url, a.superAdminKey, tenantId);
    expect(eventIds).toHaveLength(EVENTS);
    const received = receiver.receipts.map((r) => r.id);
    const twice = received.filter((id, i) => received.indexOf(id) !== i);
    expect(twice, "webhook-ids received more than once").toEqual([]);
    expect(sorted(received)).toEqual(sorted(eventIds));
    expect(receiver.receipts.filter((r) => !r.verified)).toEqual([]);

    expect(sorted(deliveries.map((d) => d.eventId))).toEqual(sorted(eventIds));
    expect(deliveries.filter((d) => d.attemptCount !== 1 || d.status !== WebhookDeliveryStatus.SUCCEEDED)).toEqual([]);

    // Each instance's own count of succeeded sends: together exactly the events, and more than one instance sent.
    const perInstance = await Promise.all(instances.map((t) => succeededAttempts(t.url)));
    expect(perInstance.reduce((x, y) => x + y, 0)).toBe(EVENTS);
    expect(perInstance.filter((n) => n > 0).length, `sends per instance: ${perInstance.join(", ")}`).toBeGreaterThan(1);
  }, 180_000);
});

describe("a server killed while sending", () => {
  const EVENTS = 200;
  const env = { LICENSD_WEBHOOK_ALLOW_PRIVATE: "true", LICENSD_WEBHOOK_LEASE_MS: "2000" };
  let receiver: Receiver;
  const cleanup: (() => Promise<unknown>)[] = [];

  beforeAll(async () => {
    // Slow answers keep a full window of attempts in flight when the process dies.
    receiver = await startReceiver(300);
  });

  afterAll(async () => {
    for (const step of cleanup.reverse()) await step().catch(() => undefined);
    await receiver?.close();
  });

  it("leave every event delivered by the next process, duplicates only for the attempts in flight", async () => {
    const first = await startServer({ env });
    cleanup.push(
      () => first.dropDatabase(),
      () => first.stop("SIGKILL"),
    );
    const { tenantId, endpointId } = await tenantWithEndpoint(first.url, first.superAdminKey, receiver);
    const licensing = connectClient(LicensingService, first.url, first.superAdminKey);
    await bounded(EVENTS, 10, (i) =>
      licensing.createCustomer({ tenantId, name: `Customer ${i}`, email: `customer-${i}@example.com` }),
    );

    await until(
      "the first deliveries at the receiver",
      () => receiver.distinct(),
      (n) => n >= 20,
      30_000,
      5,
    );
    await first.stop("SIGKILL");
    const killedAt = Date.now();
    const beforeKill = receiver.distinct();
    expect(beforeKill, "deliveries received before the kill").toBeLessThan(EVENTS);

    const second = await startServer({
      env: {
        ...env,
        LICENSD_DATABASE_URL: first.env.LICENSD_DATABASE_URL!,
        LICENSD_DATA_KEY: first.dataKey,
        LICENSD_SUPER_ADMIN_KEY: first.superAdminKey,
      },
    });
    // (startServer made a database of its own for the second process, unused: the first one's is given instead)
    cleanup.push(
      () => second.dropDatabase(),
      () => second.stop(),
    );

    await until(
      `${EVENTS} distinct webhook-ids at the receiver after the restart (${beforeKill} before the kill)`,
      () => receiver.distinct(),
      (n) => n >= EVENTS,
      60_000,
      50,
    );
    const deliveries = await until(
      `${EVENTS} deliveries recorded SUCCEEDED`,
      () => allDeliveries(second.url, second.superAdminKey, tenantId, endpointId),
      (ds) => ds.length === EVENTS && ds.every((d) => d.status === WebhookDeliveryStatus.SUCCEEDED),
      30_000,
      200,
    );

    const eventIds = await customerEventIds(second.url, second.superAdminKey, tenantId);
    expect(eventIds).toHaveLength(EVENTS);
    expect(sorted(new Set(receiver.receipts.map((r) => r.id)))).toEqual(sorted(eventIds));
    expect(sorted(deliveries.map((d) => d.eventId))).toEqual(sorted(eventIds));
    expect(receiver.receipts.filter((r) => !r.verified)).toEqual([]);

    // A second copy only of what the dead process had sent without recording the answer.
    const firstSeen = new Map<string, number>();
    const duplicates: string[] = [];
    for (const r of receiver.receipts) {
      if (firstSeen.has(r.id)) duplicates.push(r.id);
      else firstSeen.set(r.id, r.at);
    }
    // The slow receiver keeps a full window in flight, so the kill always catches some: they come again.
    expect(duplicates.length, "attempts in flight at the kill, sent again").toBeGreaterThan(0);
    expect(duplicates.length, "attempts in flight at the kill, sent again").toBeLessThanOrEqual(DISPATCHER_CONCURRENCY);
    expect(duplicates.filter((id) => firstSeen.get(id)! > killedAt)).toEqual([]);
    expect(
      deliveries.filter((d) => d.attemptCount !== 1).map((d) => d.eventId),
      "deliveries with more than one attempt recorded",
    ).toEqual([]);
  }, 180_000);
});

/**
 * Webhooks end to end on a real server and a real receiver on 127.0.0.1: signed deliveries
 * a receiver verifies, the retry schedule on a moved clock, 410 and 5-day disabling, secret
 * rotation, redeliver and test sends, SSRF refusals (with injected resolvers and connectors:
 * nothing leaves the loopback), tenants kept apart, metrics and the secrets at rest.
 */
import http from "node:http";
import type { AddressInfo } from "node:net";
import { Duplex } from "node:stream";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { Webhook } from "standardwebhooks";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { verifyWebhook } from "@licensd/client";
import { LicensingService } from "../../gen/ts/licensd/licensing/v1/licensing_service_pb.js";
import { ApiKeyScope } from "../../gen/ts/licensd/tenant/v1/api_key_pb.js";
import { TenantService } from "../../gen/ts/licensd/tenant/v1/tenant_service_pb.js";
import {
  WebhookDeliveryStatus,
  WebhookEndpointDisabledReason,
  type WebhookDelivery,
} from "../../gen/ts/licensd/webhook/v1/webhook_pb.js";
import { WebhookService } from "../../gen/ts/licensd/webhook/v1/webhook_service_pb.js";
import { AuditService } from "../../gen/ts/licensd/audit/v1/audit_service_pb.js";
import { ManualClock } from "../../src/platform/clock.js";
import type { ConnectTarget } from "../../src/platform/safe-http.js";
import { RETRY_DELAYS_MS } from "../../src/webhooks/dispatcher.js";
import { connectClient, startTestApp, type TestApp } from "../support/app.js";
import { failure } from "../support/errors.js";
import { findSecretsAtRest } from "../support/secret-scan.js";
import { docExamples } from "../support/webhook-docs.js";

interface Received {
  headers: http.IncomingHttpHeaders;
  body: string;
  at: number;
}

/** A webhook receiver on 127.0.0.1 that records every request and answers `status()`. */
async function startReceiver() {
  const got: Received[] = [];
  let status = () => 204;
  let body = "";
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      got.push({ headers: req.headers, body: Buffer.concat(chunks).toString("utf8"), at: Date.now() });
      res.writeHead(status(), { "content-type": "text/plain" });
      res.end(body);
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/hooks`,
    got,
    answer(s: number, text = "") {
      status = () => s;
      body = text;
    },
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}

type Receiver = Awaited<ReturnType<typeof startReceiver>>;

async function until<T>(what: string, fn: () => T | Promise<T>, ok: (v: T) => boolean, ms = 10_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (ok(v)) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}: last ${JSON.stringify(v)}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

const clock = new ManualClock(new Date("2026-12-06T10:00:00Z"));
let t: TestApp;
let receiver: Receiver;

beforeAll(async () => {
  // Polling is slow here: the tests drive the dispatcher (app.webhooks.tick()) after moving the clock.
  t = await startTestApp({
    clock,
    env: { LICENSD_WEBHOOK_ALLOW_PRIVATE: "true", LICENSD_WEBHOOK_POLL_MS: "60000" },
  });
  receiver = await startReceiver();
});
afterAll(async () => {
  await receiver?.close();
  await t?.close();
});

async function tenantWithKey(name: string) {
  const admin = connectClient(TenantService, t.url, t.superAdminKey);
  const { tenant } = await admin.createTenant({ name });
  const { secret } = await admin.createApiKey({ tenantId: tenant!.id, name: "admin", scopes: [ApiKeyScope.ADMIN] });
  return {
    id: tenant!.id,
    webhooks: connectClient(WebhookService, t.url, secret),
    licensing: connectClient(LicensingService, t.url, secret),
    audit: connectClient(AuditService, t.url, secret),
  };
}

/** Deliveries sent to `r` whose webhook-id is `eventId`. */
const receivedFor = (r: Receiver, eventId: string) => r.got.filter((g) => g.headers["webhook-id"] === eventId);

async function deliveryOf(
  tenant: Awaited<ReturnType<typeof tenantWithKey>>,
  endpointId: string,
  eventId: string,
): Promise<WebhookDelivery> {
  return until(
    `a delivery of ${eventId}`,
    async () => (await tenant.webhooks.listWebhookDeliveries({ endpointId, eventId })).deliveries[0],
    (d) => d !== undefined,
  ).then((d) => d!);
}

/** The audit event id of the newest entry of `type` for `subject`. */
async function eventIdOf(tenant: Awaited<ReturnType<typeof tenantWithKey>>, type: string, subject: string) {
  const { events } = await tenant.audit.listAuditEvents({ pageSize: 1000 });
  const found = events.filter((e) => e.type === type && e.subject === subject).at(-1);
  if (!found) throw new Error(`no ${type} for ${subject}`);
  return found.id;
}

describe("deliveries", () => {
  it("arrive signed (verifyWebhook and the standardwebhooks library accept them), in the documented body", async () => {
    const tenant = await tenantWithKey("Hooked Co");
    const before = await tenant.licensing.createCustomer({ name: "Before", email: "before@example.com" });
    const { endpoint, secret } = await tenant.webhooks.createWebhookEndpoint({
      url: receiver.url,
      description: "billing",
      eventTypes: ["customer.*"],
    });
    expect(secret).toMatch(/^whsec_[A-Za-z0-9+/]{43}=$/);
    expect(endpoint).toMatchObject({ enabled: true, eventTypes: ["customer.*"], url: receiver.url });
    const { customer } = await tenant.licensing.createCustomer({ name: "Ada", email: "ada@example.com" });
    await tenant.licensing.createProduct({ code: "APP", name: "App" }); // filtered out
    const eventId = await eventIdOf(tenant, "customer.created", customer!.id);
    const [got] = await until(
      "the delivery",
      () => receivedFor(receiver, eventId),
      (g) => g.length === 1,
    );

    expect(got!.headers["content-type"]).toBe("application/json");
    expect(got!.headers["user-agent"]).toMatch(/^licensd\/\d+\.\d+\.\d+/);
    const verified = verifyWebhook(got!.body, got!.headers as Record<string, string>, secret, { now: clock.now() });
    expect(verified.ok, JSON.stringify(verified)).toBe(true);
    // The reference implementation (it checks the timestamp against the real time: the clock here is moved).
    expect(Number(got!.headers["webhook-timestamp"])).toBe(Math.floor(clock.now().getTime() / 1000));
    const wh = new Webhook(secret.slice("whsec_".length));
    expect(got!.headers["webhook-signature"]).toBe(wh.sign(eventId, clock.now(), got!.body));

    const body = JSON.parse(got!.body) as { type: string; timestamp: string; data: Record<string, unknown> };
    expect(body).toEqual({
      type: "customer.created",
      timestamp: expect.stringMatching(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/),
      data: {
        id: eventId,
        tenant_id: tenant.id,
        seq: expect.any(Number),
        subject: customer!.id,
        actor: expect.stringMatching(/^key:key_/),
        payload: { email: "ada@example.com" },
      },
    });
    // The same keys as the documented example.
    const example = docExamples().get("customer.created")!;
    expect(Object.keys(body.data).sort()).toEqual(Object.keys(example.data).sort());
    expect(Object.keys(body.data.payload as object).sort()).toEqual(
      Object.keys((example.data as { payload: object }).payload).sort(),
    );

    // Events committed before the endpoint existed, and types its filter leaves out, are not delivered.
    const beforeId = await eventIdOf(tenant, "customer.created", before.customer!.id);
    await t.app.webhooks.tick();
    expect(receivedFor(receiver, beforeId)).toEqual([]);
    // The attempt is recorded once the receiver has answered, which can be a moment after the body arrived.
    const deliveries = await until(
      "the attempt recorded",
      async () => (await tenant.webhooks.listWebhookDeliveries({ endpointId: endpoint!.id })).deliveries,
      (ds) => ds.length > 0 && ds.every((d) => d.status !== WebhookDeliveryStatus.PENDING),
    );
    expect(deliveries.map((d) => d.eventType)).toEqual(["customer.created"]);
    expect(deliveries[0]).toMatchObject({
      eventId,
      status: WebhookDeliveryStatus.SUCCEEDED,
      attemptCount: 1,
      payload: got!.body,
      attempts: [{ number: 1, httpStatus: 204, manual: false, error: "" }],
    });
  });

  it("fail and are retried on the schedule (a moved clock), then FAILED after 10 attempts; the body is kept", async () => {
    const tenant = await tenantWithKey("Retry Co");
    const r = await startReceiver();
    try {
      r.answer(503, `busy\0${"x".repeat(5000)}`);
      const { endpoint } = await tenant.webhooks.createWebhookEndpoint({
        url: r.url,
        eventTypes: ["customer.created"],
      });
      const { customer } = await tenant.licensing.createCustomer({ name: "Bob", email: "bob@example.com" });
      const eventId = await eventIdOf(tenant, "customer.created", customer!.id);
      await until(
        "the first attempt",
        () => receivedFor(r, eventId).length,
        (n) => n === 1,
      );
      let d = await until(
        "the first attempt recorded",
        () => deliveryOf(tenant, endpoint!.id, eventId),
        (x) => x.attemptCount === 1,
      );
      expect(d.status).toBe(WebhookDeliveryStatus.PENDING);
      expect(d.attempts[0]).toMatchObject({ httpStatus: 503, number: 1 });
      // The first 1 KiB of the answer, NUL replaced.
      expect(d.attempts[0]!.responseBody).toBe(`busy\uFFFD${"x".repeat(1024 - 5)}`);

      for (let n = 1; n <= RETRY_DELAYS_MS.length; n++) {
        const wait = RETRY_DELAYS_MS[n - 1]!;
        const due = timestampMs(d.nextAttemptTime!) - clock.now().getTime();
        // ±20% jitter around the schedule.
        expect(due).toBeGreaterThanOrEqual(wait * 0.8 - 1000);
        expect(due).toBeLessThanOrEqual(wait * 1.2 + 1000);
        // Not before it is due …
        clock.advance(Math.max(0, due - 2000));
        await t.app.webhooks.tick();
        expect(receivedFor(r, eventId)).toHaveLength(n);
        // … then it is.
        clock.advance(2000);
        await t.app.webhooks.tick();
        await until(
          `attempt ${n + 1}`,
          () => receivedFor(r, eventId).length,
          (k) => k === n + 1,
        );
        d = await until(
          `attempt ${n + 1} recorded`,
          () => deliveryOf(tenant, endpoint!.id, eventId),
          (x) => x.attemptCount === n + 1,
        );
        // The same webhook-id and body every time; a fresh timestamp.
        const last = receivedFor(r, eventId).at(-1)!;
        expect(last.body).toBe(receivedFor(r, eventId)[0]!.body);
        expect(Number(last.headers["webhook-timestamp"])).toBe(Math.floor(clock.now().getTime() / 1000));
      }
      expect(d.status).toBe(WebhookDeliveryStatus.FAILED);
      expect(d.attempts).toHaveLength(10);
      expect(d.nextAttemptTime).toBeUndefined();
      clock.advance(48 * 3_600_000);
      await t.app.webhooks.tick();
      expect(receivedFor(r, eventId)).toHaveLength(10);
      // Still enabled: it failed for about 3 days, not 5.
      const got = await tenant.webhooks.getWebhookEndpoint({ id: endpoint!.id });
      expect(got.endpoint).toMatchObject({ enabled: true });
      expect(got.endpoint!.failingSince).toBeDefined();

      // A success resets the failing streak.
      r.answer(200, "ok");
      const resent = await tenant.webhooks.redeliverWebhook({ id: d.id });
      expect(resent.delivery).toMatchObject({ status: WebhookDeliveryStatus.SUCCEEDED, attemptCount: 11 });
      expect(resent.delivery!.attempts.at(-1)).toMatchObject({ manual: true, httpStatus: 200, responseBody: "ok" });
      expect(receivedFor(r, eventId).at(-1)!.headers["webhook-id"]).toBe(eventId);
      expect((await tenant.webhooks.getWebhookEndpoint({ id: endpoint!.id })).endpoint!.failingSince).toBeUndefined();
    } finally {
      await r.close();
    }
  });

  it("410 Gone fails the delivery and disables the endpoint at once; the disabled event reaches the other endpoints", async () => {
    const tenant = await tenantWithKey("Gone Co");
    const gone = await startReceiver();
    try {
      gone.answer(410);
      const a = await tenant.webhooks.createWebhookEndpoint({ url: gone.url, eventTypes: ["customer.*"] });
      const b = await tenant.webhooks.createWebhookEndpoint({ url: receiver.url, eventTypes: ["webhook.endpoint.*"] });
      const { customer } = await tenant.licensing.createCustomer({ name: "C", email: "c@example.com" });
      const eventId = await eventIdOf(tenant, "customer.created", customer!.id);
      const d = await until(
        "the 410",
        () => deliveryOf(tenant, a.endpoint!.id, eventId),
        (x) => x.status === WebhookDeliveryStatus.FAILED,
      );
      expect(d.attempts).toHaveLength(1);
      const { endpoint } = await tenant.webhooks.getWebhookEndpoint({ id: a.endpoint!.id });
      expect(endpoint).toMatchObject({ enabled: false, disabledReason: WebhookEndpointDisabledReason.GONE });
      const disabledId = await eventIdOf(tenant, "webhook.endpoint.disabled", a.endpoint!.id);
      const [note] = await until(
        "the disabled event",
        () => receivedFor(receiver, disabledId),
        (g) => g.length === 1,
      );
      expect(
        verifyWebhook(note!.body, note!.headers as Record<string, string>, b.secret, { now: clock.now() }).ok,
      ).toBe(true);
      expect(JSON.parse(note!.body).data.payload).toEqual({ reason: "gone", url: gone.url });

      // Disabled: later events are not sent to it, redelivery is refused; enabling clears the reason.
      await tenant.licensing.createCustomer({ name: "D", email: "d@example.com" });
      await t.app.webhooks.tick();
      expect(gone.got).toHaveLength(1);
      expect(await failure(tenant.webhooks.redeliverWebhook({ id: d.id }))).toMatchObject({
        code: "FailedPrecondition",
        reason: "WEBHOOK_ENDPOINT_DISABLED",
      });
      const enabled = await tenant.webhooks.updateWebhookEndpoint({
        id: a.endpoint!.id,
        enabled: true,
        updateMask: { paths: ["enabled"] },
      });
      expect(enabled.endpoint).toMatchObject({
        enabled: true,
        disabledReason: WebhookEndpointDisabledReason.UNSPECIFIED,
      });
    } finally {
      await gone.close();
    }
  });

  it("an endpoint failing for 5 days straight is disabled (FAILING), with its event", async () => {
    const tenant = await tenantWithKey("Failing Co");
    const r = await startReceiver();
    try {
      r.answer(500);
      const { endpoint } = await tenant.webhooks.createWebhookEndpoint({ url: r.url, eventTypes: ["customer.*"] });
      await tenant.licensing.createCustomer({ name: "E", email: "e@example.com" });
      await until(
        "the first failure",
        () => r.got.length,
        (n) => n === 1,
      );
      for (let day = 1; day <= 5; day++) {
        clock.advance(24 * 3_600_000);
        await tenant.licensing.createCustomer({ name: `E${day}`, email: `e${day}@example.com` });
        await until(
          `day ${day}'s attempt`,
          () => r.got.length,
          (n) => n >= day + 1,
        );
        await t.app.webhooks.tick();
      }
      const got = await until(
        "the endpoint disabled",
        async () => (await tenant.webhooks.getWebhookEndpoint({ id: endpoint!.id })).endpoint!,
        (e) => !e.enabled,
      );
      expect(got.disabledReason).toBe(WebhookEndpointDisabledReason.FAILING);
      expect(await eventIdOf(tenant, "webhook.endpoint.disabled", endpoint!.id)).toMatch(/^evt_/);
    } finally {
      await r.close();
    }
  });
});

describe("endpoints", () => {
  it("rotating the secret signs with both during the overlap, then with the new one only", async () => {
    const tenant = await tenantWithKey("Rotate Co");
    const r = await startReceiver();
    try {
      // (filtered: the rotation's own event is not sent to it)
      const { endpoint, secret: old } = await tenant.webhooks.createWebhookEndpoint({
        url: r.url,
        eventTypes: ["customer.*"],
      });
      const rotated = await tenant.webhooks.rotateWebhookSecret({
        id: endpoint!.id,
        overlap: { seconds: BigInt(3600), nanos: 0 },
      });
      expect(rotated.secret).not.toBe(old);
      expect(timestampMs(rotated.endpoint!.previousSecretExpireTime!)).toBe(clock.now().getTime() + 3_600_000);
      const during = await tenant.webhooks.sendTestWebhook({ endpointId: endpoint!.id });
      expect(during.delivery).toMatchObject({ eventType: "webhook.test", status: WebhookDeliveryStatus.SUCCEEDED });
      const sent = r.got.at(-1)!;
      expect((sent.headers["webhook-signature"] as string).split(" ")).toHaveLength(2);
      const h = sent.headers as Record<string, string>;
      expect(verifyWebhook(sent.body, h, old, { now: clock.now() }).ok).toBe(true);
      expect(verifyWebhook(sent.body, h, rotated.secret, { now: clock.now() }).ok).toBe(true);
      const test = JSON.parse(sent.body);
      expect(test).toMatchObject({ type: "webhook.test", data: { seq: 0, subject: endpoint!.id } });
      expect(h["webhook-id"]).toBe(test.data.id);

      clock.advance(3_600_001);
      await tenant.webhooks.sendTestWebhook({ endpointId: endpoint!.id });
      const after = r.got.at(-1)!;
      const h2 = after.headers as Record<string, string>;
      expect(h2["webhook-signature"]!.split(" ")).toHaveLength(1);
      expect(verifyWebhook(after.body, h2, old, { now: clock.now() })).toMatchObject({ ok: false });
      expect(verifyWebhook(after.body, h2, rotated.secret, { now: clock.now() }).ok).toBe(true);

      // Overlap 0: the old secret stops at once.
      const now = await tenant.webhooks.rotateWebhookSecret({ id: endpoint!.id, overlap: { seconds: 0n, nanos: 0 } });
      expect(now.endpoint!.previousSecretExpireTime).toBeUndefined();
      await tenant.webhooks.sendTestWebhook({ endpointId: endpoint!.id });
      const h3 = r.got.at(-1)!.headers as Record<string, string>;
      expect(h3["webhook-signature"]!.split(" ")).toHaveLength(1);
      expect(verifyWebhook(r.got.at(-1)!.body, h3, now.secret, { now: clock.now() }).ok).toBe(true);
    } finally {
      await r.close();
    }
  });

  it("are created, listed, updated by mask and deleted; bad input names the field and changes nothing", async () => {
    const tenant = await tenantWithKey("Crud Co");
    const { endpoint } = await tenant.webhooks.createWebhookEndpoint({
      url: "http://127.0.0.1:9/a?token=abc",
      enabled: false,
      eventTypes: ["license.*", "machine.activated"],
    });
    expect(endpoint).toMatchObject({ enabled: false, disabledReason: WebhookEndpointDisabledReason.MANUAL });
    const created = await tenant.audit.listAuditEvents({ pageSize: 1000 });
    // The event shows the URL without its query string (where receivers keep tokens).
    expect(created.events.at(-1)!.payload).toMatchObject({ url: "http://127.0.0.1:9/a?…" });

    const bad = [
      [{ url: "ftp://example.com/x" }, "url", "SCHEME_NOT_ALLOWED"],
      [{ url: "not a url" }, "url", "INVALID_URL"],
      [{ url: "https://user:pw@example.com/" }, "url", "CREDENTIALS_IN_URL"],
      [{ url: "https://example.com/\0" }, "url", "INVALID_ARGUMENT"],
      [{ url: receiver.url, eventTypes: ["licence.created"] }, "event_types[0]", "UNKNOWN_EVENT_TYPE"],
      [{ url: receiver.url, eventTypes: ["nothing.*"] }, "event_types[0]", "UNKNOWN_EVENT_TYPE"],
    ] as const;
    for (const [req, field, reason] of bad) {
      const init = { ...req, eventTypes: "eventTypes" in req ? [...req.eventTypes] : [] };
      const f = await failure(tenant.webhooks.createWebhookEndpoint(init));
      expect(f, `${JSON.stringify(req)}: ${JSON.stringify(f)}`).toMatchObject({ code: "InvalidArgument", reason });
      expect(f.message).toContain(field);
    }
    expect(
      await failure(tenant.webhooks.createWebhookEndpoint({ url: receiver.url, eventTypes: ["Bad Type"] })),
    ).toMatchObject({ code: "InvalidArgument" });
    expect((await tenant.webhooks.listWebhookEndpoints({})).endpoints.map((e) => e.id)).toEqual([endpoint!.id]);

    const updated = await tenant.webhooks.updateWebhookEndpoint({
      id: endpoint!.id,
      description: "renamed",
      eventTypes: ["*"],
      url: "ftp://ignored.example.com", // not in the mask
      updateMask: { paths: ["description", "event_types"] },
    });
    expect(updated.endpoint).toMatchObject({ description: "renamed", eventTypes: ["*"], url: endpoint!.url });
    expect(
      await failure(tenant.webhooks.updateWebhookEndpoint({ id: endpoint!.id, updateMask: { paths: ["secret"] } })),
    ).toMatchObject({ code: "InvalidArgument" });
    expect(
      await failure(
        tenant.webhooks.updateWebhookEndpoint({ id: endpoint!.id, url: "gopher://x", updateMask: { paths: ["url"] } }),
      ),
    ).toMatchObject({ code: "InvalidArgument", reason: "SCHEME_NOT_ALLOWED" });

    const deleted = await tenant.webhooks.deleteWebhookEndpoint({ id: endpoint!.id });
    expect(deleted.endpoint!.id).toBe(endpoint!.id);
    expect(await failure(tenant.webhooks.getWebhookEndpoint({ id: endpoint!.id }))).toMatchObject({
      code: "NotFound",
    });
    // Idempotent create: the same key returns the same endpoint and secret.
    const once = await tenant.webhooks.createWebhookEndpoint({ url: receiver.url, idempotencyKey: "wh-1" });
    const twice = await tenant.webhooks.createWebhookEndpoint({ url: receiver.url, idempotencyKey: "wh-1" });
    expect(twice).toEqual(once);
    expect((await tenant.webhooks.listWebhookEndpoints({})).endpoints).toHaveLength(1);
  });

  it("another tenant's endpoints and deliveries are NOT_FOUND, for every RPC", async () => {
    const a = await tenantWithKey("Owner Co");
    const b = await tenantWithKey("Prying Co");
    const { endpoint } = await a.webhooks.createWebhookEndpoint({ url: receiver.url });
    const test = await a.webhooks.sendTestWebhook({ endpointId: endpoint!.id });
    const id = endpoint!.id;
    const calls = [
      () => b.webhooks.getWebhookEndpoint({ id }),
      () => b.webhooks.updateWebhookEndpoint({ id, description: "x", updateMask: { paths: ["description"] } }),
      () => b.webhooks.deleteWebhookEndpoint({ id }),
      () => b.webhooks.rotateWebhookSecret({ id }),
      () => b.webhooks.sendTestWebhook({ endpointId: id }),
      () => b.webhooks.listWebhookDeliveries({ endpointId: id }),
      () => b.webhooks.getWebhookDelivery({ id: test.delivery!.id }),
      () => b.webhooks.redeliverWebhook({ id: test.delivery!.id }),
    ];
    for (const call of calls) expect(await failure(call())).toMatchObject({ code: "NotFound" });
    expect(await failure(b.webhooks.getWebhookEndpoint({ id }))).toMatchObject({
      reason: "WEBHOOK_ENDPOINT_NOT_FOUND",
    });
    expect((await b.webhooks.listWebhookEndpoints({})).endpoints).toEqual([]);
    expect((await b.webhooks.listWebhookDeliveries({})).deliveries).toEqual([]);
    expect((await a.webhooks.getWebhookEndpoint({ id })).endpoint!.description).toBe("");
  });

  it("the secret is never at rest in clear; deliveries and attempts are counted in /metrics", async () => {
    const tenant = await tenantWithKey("Secret Co");
    const { endpoint, secret } = await tenant.webhooks.createWebhookEndpoint({ url: receiver.url });
    const rotated = await tenant.webhooks.rotateWebhookSecret({ id: endpoint!.id });
    await tenant.webhooks.sendTestWebhook({ endpointId: endpoint!.id });
    const hits = await findSecretsAtRest(t.databaseUrl, [
      { name: "webhook secret", value: secret },
      { name: "webhook secret key", value: Buffer.from(secret.slice(6), "base64") },
      { name: "rotated secret", value: rotated.secret },
      { name: "rotated secret key", value: Buffer.from(rotated.secret.slice(6), "base64") },
    ]);
    expect(hits).toEqual([]);
    const metrics = await (await fetch(`${t.url}/metrics`)).text();
    expect(metrics).toMatch(/licensd_webhook_deliveries_total\{outcome="succeeded"\} [1-9]/);
    expect(metrics).toMatch(/licensd_webhook_attempt_duration_seconds_count [1-9]/);
  });
});

describe("history", () => {
  it("finished deliveries are pruned after LICENSD_WEBHOOK_HISTORY_DAYS; pending ones are kept", async () => {
    const tenant = await tenantWithKey("Pruned Co");
    const r = await startReceiver();
    try {
      const { endpoint } = await tenant.webhooks.createWebhookEndpoint({ url: r.url, eventTypes: ["customer.*"] });
      const done = await tenant.webhooks.sendTestWebhook({ endpointId: endpoint!.id });
      expect(done.delivery!.status).toBe(WebhookDeliveryStatus.SUCCEEDED);
      r.answer(500);
      const { customer } = await tenant.licensing.createCustomer({ name: "P", email: "p@example.com" });
      const eventId = await eventIdOf(tenant, "customer.created", customer!.id);
      const pending = await until(
        "a failed first attempt",
        () => deliveryOf(tenant, endpoint!.id, eventId),
        (d) => d.attemptCount === 1,
      );
      clock.advance(29 * 24 * 3_600_000);
      await t.app.webhooks.prune();
      expect((await tenant.webhooks.getWebhookDelivery({ id: done.delivery!.id })).delivery!.id).toBe(
        done.delivery!.id,
      );
      clock.advance(2 * 24 * 3_600_000);
      await t.app.webhooks.prune();
      expect(await failure(tenant.webhooks.getWebhookDelivery({ id: done.delivery!.id }))).toMatchObject({
        code: "NotFound",
      });
      // Still pending (its retries were never run here): kept.
      expect((await tenant.webhooks.getWebhookDelivery({ id: pending.id })).delivery!.status).toBe(
        WebhookDeliveryStatus.PENDING,
      );
    } finally {
      await r.close();
    }
  });
});

describe("SSRF", () => {
  it("refuses loopback, link-local and private addresses before any connection, unless allowed", async () => {
    // A guard on 127.0.0.1 that must never be reached, and a connector that records (and never dials).
    let reached = 0;
    const guard = http.createServer((_, res) => {
      reached++;
      res.end();
    });
    await new Promise<void>((r) => guard.listen(0, "127.0.0.1", r));
    const guardPort = (guard.address() as AddressInfo).port;
    const dialed: ConnectTarget[] = [];
    const strict = await startTestApp({
      env: { LICENSD_WEBHOOK_POLL_MS: "60000" },
      app: {
        webhookNetwork: {
          // Every name resolves to a private address; nothing asks a real DNS server.
          resolve: async (host) => [{ address: host === "metadata.test" ? "169.254.169.254" : "10.1.2.3", family: 4 }],
          connect: (target) => {
            dialed.push(target);
            const s = new Duplex({
              read() {},
              write(_c, _e, cb) {
                cb();
              },
            });
            queueMicrotask(() => s.destroy(new Error("the test connector never connects")));
            return s;
          },
        },
      },
    });
    try {
      const admin = connectClient(TenantService, strict.url, strict.superAdminKey);
      const { tenant } = await admin.createTenant({ name: "Strict Co" });
      const webhooks = connectClient(WebhookService, strict.url, strict.superAdminKey);
      for (const url of [
        `http://127.0.0.1:${guardPort}/`,
        "http://169.254.169.254/latest/meta-data/",
        `http://[::1]:${guardPort}/`,
        "http://10.0.0.8/",
        "http://[::ffff:127.0.0.1]/",
        "http://0.0.0.0/",
      ]) {
        const f = await failure(webhooks.createWebhookEndpoint({ tenantId: tenant!.id, url }));
        expect(f, url).toMatchObject({ code: "InvalidArgument", reason: "PRIVATE_ADDRESS" });
        expect(f.message).toContain("url");
      }
      // A name is resolved at each attempt: one resolving to 10.x (or the metadata address) fails with its reason.
      for (const host of ["hooks.internal.test", "metadata.test"]) {
        const { endpoint } = await webhooks.createWebhookEndpoint({ tenantId: tenant!.id, url: `http://${host}/x` });
        const { delivery } = await webhooks.sendTestWebhook({ tenantId: tenant!.id, endpointId: endpoint!.id });
        expect(delivery).toMatchObject({ status: WebhookDeliveryStatus.FAILED });
        expect(delivery!.attempts[0]).toMatchObject({ httpStatus: 0, errorReason: "PRIVATE_ADDRESS" });
        expect(delivery!.attempts[0]!.error).toMatch(/10\.1\.2\.3|169\.254\.169\.254/);
      }
      expect(dialed).toEqual([]);
      expect(reached).toBe(0);
    } finally {
      await strict.close();
      await new Promise<void>((r) => guard.close(() => r()));
    }
  });
});

/*
 * Provisioning from payments, end to end on a real server: events signed as Stripe and Polar sign them (stripe's own
 * test-header helper; Standard Webhooks keyed as Polar's SDK keys it) are POSTed to the source's hook path, and the
 * licenses they make or change are read back through the API as a vendor would.
 */
import { randomUUID } from "node:crypto";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { Webhook } from "standardwebhooks";
import Stripe from "stripe";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AuditService } from "../../gen/ts/licensd/audit/v1/audit_service_pb.js";
import { LicenseStatus } from "../../gen/ts/licensd/licensing/v1/license_pb.js";
import { LicensingService, ValidationCode } from "../../gen/ts/licensd/licensing/v1/licensing_service_pb.js";
import { ApiKeyScope } from "../../gen/ts/licensd/tenant/v1/api_key_pb.js";
import { TenantService } from "../../gen/ts/licensd/tenant/v1/tenant_service_pb.js";
import { PaymentEventStatus, PaymentProvider } from "../../gen/ts/licensd/webhook/v1/payment_source_pb.js";
import { WebhookService } from "../../gen/ts/licensd/webhook/v1/webhook_service_pb.js";
import { ManualClock } from "../../src/platform/clock.js";
import { connectClient, startTestApp, type TestApp } from "../support/app.js";
import { query } from "../support/database.js";
import { failure } from "../support/errors.js";
import { docExamples } from "../support/webhook-docs.js";

const DAY = 86_400;
const clock = new ManualClock(new Date("2026-12-06T10:00:00Z"));
let t: TestApp;

beforeAll(async () => {
  t = await startTestApp({ clock });
});
afterAll(async () => {
  await t?.close();
});

const seconds = () => Math.floor(clock.now().getTime() / 1000);

/** A tenant with an admin key, a product and two policies: one-time (a year) and monthly (30 days). */
async function vendor(name: string) {
  const admin = connectClient(TenantService, t.url, t.superAdminKey);
  const { tenant } = await admin.createTenant({ name });
  const { secret } = await admin.createApiKey({ tenantId: tenant!.id, name: "admin", scopes: [ApiKeyScope.ADMIN] });
  const licensing = connectClient(LicensingService, t.url, secret);
  const { product } = await licensing.createProduct({ code: "APP", name: "App" });
  const policy = async (policyName: string, days: number) =>
    (
      await licensing.createPolicy({
        productId: product!.id,
        name: policyName,
        duration: { seconds: BigInt(days * DAY), nanos: 0 },
      })
    ).policy!.id;
  return {
    tenantId: tenant!.id,
    licensing,
    webhooks: connectClient(WebhookService, t.url, secret),
    audit: connectClient(AuditService, t.url, secret),
    oneTime: await policy("perpetual-ish", 365),
    monthly: await policy("monthly", 30),
  };
}
type Vendor = Awaited<ReturnType<typeof vendor>>;

const STRIPE_SECRET = "whsec_test_4eC39HqLyjWDarjtT1zdp7dc";
const POLAR_SECRET = "polar_whs_Jx8k2mQ9pR4tV7wY1zA3cE5gH";

async function stripeSource(v: Vendor, secret = STRIPE_SECRET) {
  const { source } = await v.webhooks.createPaymentSource({
    provider: PaymentProvider.STRIPE,
    secret,
    description: "Stripe live",
    mappings: [
      { item: "price_once", policyId: v.oneTime, metadata: { plan: "lifetime" } },
      { item: "price_monthly", policyId: v.monthly, metadata: { plan: "monthly" } },
    ],
  });
  return source!;
}

/** A Stripe event as Stripe sends it (`data.object` given), with its Stripe-Signature. */
function stripeEvent(type: string, object: Record<string, unknown>, opts: { previous?: object; id?: string } = {}) {
  const body = JSON.stringify({
    id: opts.id ?? `evt_${randomUUID().replace(/-/g, "").slice(0, 24)}`,
    object: "event",
    api_version: "2025-03-31.basil",
    created: seconds(),
    type,
    livemode: false,
    data: { object, ...(opts.previous ? { previous_attributes: opts.previous } : {}) },
  });
  return body;
}

const stripeHeaders = (body: string, secret = STRIPE_SECRET, timestamp = seconds()) => ({
  "content-type": "application/json",
  "stripe-signature": Stripe.webhooks.generateTestHeaderString({ payload: body, secret, timestamp }),
});

async function post(path: string, body: string, headers: Record<string, string>) {
  const res = await fetch(`${t.url}${path}`, { method: "POST", headers, body });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

const checkoutCompleted = (email: string, price: string, paymentIntent: string) => ({
  id: `cs_${randomUUID().replace(/-/g, "")}`,
  object: "checkout.session",
  mode: "payment",
  payment_status: "paid",
  status: "complete",
  customer_details: { email, name: "Ada Lovelace" },
  metadata: { licensd_price: price },
  payment_intent: paymentIntent,
});

/** A subscription invoice (API 2025-03-31 and later: the subscription under parent, prices under pricing). */
const subscriptionInvoice = (
  reason: string,
  sub: string,
  price: string,
  periodEnd: number,
  email = "sub@example.com",
) => ({
  id: `in_${randomUUID().replace(/-/g, "").slice(0, 24)}`,
  object: "invoice",
  billing_reason: reason,
  customer_email: email,
  customer_name: "Grace Hopper",
  parent: { type: "subscription_details", subscription_details: { subscription: sub } },
  lines: {
    object: "list",
    data: [
      {
        id: "il_1",
        object: "line_item",
        pricing: { type: "price_details", price_details: { price, product: "prod_app" } },
        period: { start: periodEnd - 30 * DAY, end: periodEnd },
      },
    ],
  },
  status: "paid",
});

async function licenseOf(v: Vendor, id: string) {
  return (await v.licensing.getLicense({ id })).license!;
}

async function validate(v: Vendor, licenseId: string) {
  const { key } = await v.licensing.revealLicenseKey({ id: licenseId });
  return connectClient(LicensingService, t.url).validateLicense({ key });
}

describe("Stripe", () => {
  it("a one-time purchase creates the customer and a license of the mapped policy, once however often delivered", async () => {
    const v = await vendor("Stripe One-time Co");
    const source = await stripeSource(v);
    expect(source.hookPath).toBe(`/hooks/stripe/${source.id}`);
    const body = stripeEvent("checkout.session.completed", checkoutCompleted("Ada@Example.com", "price_once", "pi_1"));
    const first = await post(source.hookPath, body, stripeHeaders(body));
    expect(first).toMatchObject({ status: 200, body: { status: "applied" } });
    const [licenseId] = first.body.license_ids as string[];

    // Stripe retries on timeouts: the same event three times in all, one license.
    for (let i = 0; i < 2; i++) {
      const again = await post(source.hookPath, body, stripeHeaders(body));
      expect(again).toMatchObject({ status: 200, body: { status: "duplicate", event_id: first.body.event_id } });
    }
    const { licenses } = await v.licensing.listLicenses({});
    expect(licenses.map((l) => l.id)).toEqual([licenseId]);
    const license = licenses[0]!;
    expect(license.policyId).toBe(v.oneTime);
    expect(license.metadata).toMatchObject({ plan: "lifetime", payment_source: source.id, payment_item: "price_once" });
    const { customers } = await v.licensing.listCustomers({});
    expect(customers.map((c) => [c.id, c.email])).toEqual([[license.customerId, "Ada@Example.com"]]);
    expect((await validate(v, licenseId!)).valid).toBe(true);

    // A second purchase by the same buyer (any case of the e-mail) finds the customer.
    const other = stripeEvent("checkout.session.completed", checkoutCompleted("ada@example.com", "price_once", "pi_2"));
    const second = await post(source.hookPath, other, stripeHeaders(other));
    const secondLicense = await licenseOf(v, (second.body.license_ids as string[])[0]!);
    expect(secondLicense.customerId).toBe(license.customerId);

    const { events } = await v.webhooks.listPaymentEvents({ sourceId: source.id });
    expect(events.map((e) => [e.action, e.status, e.attempts])).toEqual([
      ["purchase", PaymentEventStatus.APPLIED, 1],
      ["purchase", PaymentEventStatus.APPLIED, 1],
    ]);
    // The audit log says the payment source did it.
    const { events: audited } = await v.audit.listAuditEvents({ pageSize: 1000 });
    expect(audited.find((e) => e.type === "license.created" && e.subject === licenseId)?.actor).toBe(
      `payment:${source.id}`,
    );
  });

  it("follows a subscription: purchase, renewal, cancellation at period end, failed payment, refund", async () => {
    const v = await vendor("Stripe Subscription Co");
    const source = await stripeSource(v);
    const end1 = seconds() + 30 * DAY;
    const created = stripeEvent(
      "invoice.paid",
      subscriptionInvoice("subscription_create", "sub_A", "price_monthly", end1),
    );
    const purchase = await post(source.hookPath, created, stripeHeaders(created));
    expect(purchase.body.status).toBe("applied");
    const licenseId = (purchase.body.license_ids as string[])[0]!;
    let license = await licenseOf(v, licenseId);
    expect(license.policyId).toBe(v.monthly);
    // The license runs to the end of the period paid for.
    expect(timestampDate(license.expireTime!).getTime()).toBe(end1 * 1000);

    // A month later the renewal invoice is paid: the expiry moves to the new period's end.
    clock.advance(30 * DAY * 1000);
    const end2 = end1 + 31 * DAY;
    const cycle = stripeEvent(
      "invoice.paid",
      subscriptionInvoice("subscription_cycle", "sub_A", "price_monthly", end2),
    );
    expect((await post(source.hookPath, cycle, stripeHeaders(cycle))).body).toMatchObject({
      status: "applied",
      license_ids: [licenseId],
    });
    license = await licenseOf(v, licenseId);
    expect(timestampDate(license.expireTime!).getTime()).toBe(end2 * 1000);

    // The customer cancels at period end: the license ends then, not before.
    const subscription = (cancel: boolean) => ({
      id: "sub_A",
      object: "subscription",
      status: "active",
      cancel_at_period_end: cancel,
      cancel_at: cancel ? end2 : null,
      items: { object: "list", data: [{ id: "si_1", current_period_end: end2 }] },
    });
    const cancelled = stripeEvent("customer.subscription.updated", subscription(true), {
      previous: { cancel_at_period_end: false, cancel_at: null },
    });
    expect((await post(source.hookPath, cancelled, stripeHeaders(cancelled))).body.status).toBe("applied");
    expect((await validate(v, licenseId)).valid).toBe(true);
    clock.set(new Date((end2 + 60) * 1000));
    expect((await validate(v, licenseId)).code).toBe(ValidationCode.EXPIRED);

    // A second subscription whose payment fails for good: suspended; paid later: back, renewed.
    const v2 = await vendor("Stripe Dunning Co");
    const source2 = await stripeSource(v2);
    const start = seconds();
    const created2 = stripeEvent(
      "invoice.paid",
      subscriptionInvoice("subscription_create", "sub_B", "price_monthly", start + 30 * DAY),
    );
    const id2 = ((await post(source2.hookPath, created2, stripeHeaders(created2))).body.license_ids as string[])[0]!;
    const retrying = stripeEvent("invoice.payment_failed", {
      ...subscriptionInvoice("subscription_cycle", "sub_B", "price_monthly", start + 60 * DAY),
      status: "open",
      next_payment_attempt: start + 3 * DAY,
    });
    expect((await post(source2.hookPath, retrying, stripeHeaders(retrying))).body.status).toBe("ignored");
    expect((await licenseOf(v2, id2)).status).toBe(LicenseStatus.ACTIVE);
    const final = stripeEvent("invoice.payment_failed", {
      ...subscriptionInvoice("subscription_cycle", "sub_B", "price_monthly", start + 60 * DAY),
      status: "open",
      next_payment_attempt: null,
    });
    expect((await post(source2.hookPath, final, stripeHeaders(final))).body.status).toBe("applied");
    expect((await licenseOf(v2, id2)).status).toBe(LicenseStatus.SUSPENDED);
    const paid = stripeEvent(
      "invoice.paid",
      subscriptionInvoice("subscription_cycle", "sub_B", "price_monthly", start + 60 * DAY),
    );
    expect((await post(source2.hookPath, paid, stripeHeaders(paid))).body.status).toBe("applied");
    license = await licenseOf(v2, id2);
    expect(license.status).toBe(LicenseStatus.ACTIVE);
    expect(timestampDate(license.expireTime!).getTime()).toBe((start + 60 * DAY) * 1000);

    // A one-time purchase refunded in full: revoked. A partial refund changes nothing.
    const bought = stripeEvent("checkout.session.completed", checkoutCompleted("r@example.com", "price_once", "pi_R"));
    const refundable = ((await post(source2.hookPath, bought, stripeHeaders(bought))).body.license_ids as string[])[0]!;
    const charge = (refunded: boolean) => ({
      id: "ch_R",
      object: "charge",
      payment_intent: "pi_R",
      amount: 1000,
      amount_refunded: refunded ? 1000 : 300,
      refunded,
    });
    const partial = stripeEvent("charge.refunded", charge(false));
    expect((await post(source2.hookPath, partial, stripeHeaders(partial))).body.status).toBe("ignored");
    expect((await licenseOf(v2, refundable)).status).toBe(LicenseStatus.ACTIVE);
    const full = stripeEvent("charge.refunded", charge(true));
    expect((await post(source2.hookPath, full, stripeHeaders(full))).body).toMatchObject({
      status: "applied",
      license_ids: [refundable],
    });
    expect((await validate(v2, refundable)).code).toBe(ValidationCode.REVOKED);
  });

  it("applies an event that came before its subscription's purchase once the purchase arrives", async () => {
    const v = await vendor("Stripe Order Co");
    const source = await stripeSource(v);
    const end1 = seconds() + 30 * DAY;
    const end2 = end1 + 30 * DAY;
    // The renewal is delivered first (providers promise no order): FAILED, waiting for its license.
    const early = stripeEvent(
      "invoice.paid",
      subscriptionInvoice("subscription_cycle", "sub_C", "price_monthly", end2),
    );
    const waiting = await post(source.hookPath, early, stripeHeaders(early));
    expect(waiting.body).toMatchObject({ status: "failed" });
    expect(waiting.body.reason).toContain("no license for subscription sub_C");
    const created = stripeEvent(
      "invoice.paid",
      subscriptionInvoice("subscription_create", "sub_C", "price_monthly", end1),
    );
    const purchase = await post(source.hookPath, created, stripeHeaders(created));
    const licenseId = (purchase.body.license_ids as string[])[0]!;
    // The purchase applied the renewal after itself: the expiry is the later period's end.
    expect(timestampDate((await licenseOf(v, licenseId)).expireTime!).getTime()).toBe(end2 * 1000);
    const { events } = await v.webhooks.listPaymentEvents({ sourceId: source.id });
    expect(events.map((e) => [e.action, e.status, e.attempts, e.licenseIds])).toEqual([
      ["purchase", PaymentEventStatus.APPLIED, 1, [licenseId]],
      ["renewal", PaymentEventStatus.APPLIED, 2, [licenseId]],
    ]);
  });

  it("gives concurrent purchases by a new buyer one customer, and each its license", async () => {
    const v = await vendor("Stripe Concurrent Co");
    const source = await stripeSource(v);
    const bodies = Array.from({ length: 6 }, (_, i) =>
      stripeEvent("checkout.session.completed", checkoutCompleted("rush@example.com", "price_once", `pi_rush_${i}`)),
    );
    const answers = await Promise.all(bodies.map((b) => post(source.hookPath, b, stripeHeaders(b))));
    expect(answers.map((a) => a.body.status)).toEqual(Array(6).fill("applied"));
    const { customers } = await v.licensing.listCustomers({});
    expect(customers).toHaveLength(1);
    const { licenses } = await v.licensing.listLicenses({});
    expect(licenses).toHaveLength(6);
    expect(new Set(licenses.map((l) => l.customerId))).toEqual(new Set([customers[0]!.id]));
  });

  it("refuses a bad or stale signature and a body that is not an event with 400, recording nothing", async () => {
    const v = await vendor("Stripe Refusals Co");
    const source = await stripeSource(v);
    const body = stripeEvent("checkout.session.completed", checkoutCompleted("x@example.com", "price_once", "pi_X"));
    const refused = async (b: string, headers: Record<string, string>, error: string) => {
      const got = await post(source.hookPath, b, headers);
      expect(got.status).toBe(400);
      expect(got.body.error).toBe(error);
    };
    await refused(body, stripeHeaders(body, "whsec_another_secret_entirely"), "signature");
    await refused(body, stripeHeaders(body, STRIPE_SECRET, seconds() - 6 * 60), "signature");
    await refused(body, { "content-type": "application/json" }, "signature");
    const tampered = body.replace("x@example.com", "y@example.com");
    await refused(tampered, stripeHeaders(body), "signature");
    await refused("{not json", stripeHeaders("{not json"), "malformed");
    const nul = stripeEvent("checkout.session.completed", checkoutCompleted("x\u0000@example.com", "price_once", "pi"));
    await refused(nul, stripeHeaders(nul), "malformed");

    // A period end no date can hold is not an event.
    const never = stripeEvent(
      "invoice.paid",
      subscriptionInvoice("subscription_create", "sub_Z", "price_monthly", 9e15),
    );
    await refused(never, stripeHeaders(never), "malformed");

    expect((await v.webhooks.listPaymentEvents({})).events).toEqual([]);
    expect((await v.licensing.listLicenses({})).licenses).toEqual([]);

    // One past licensd's latest time (9000-01-01) is recorded FAILED, with nothing created.
    const far = Math.floor(Date.UTC(9500, 0, 1) / 1000);
    const late = stripeEvent("invoice.paid", subscriptionInvoice("subscription_create", "sub_Y", "price_monthly", far));
    const got = await post(source.hookPath, late, stripeHeaders(late));
    expect(got.body).toMatchObject({ status: "failed" });
    expect(got.body.reason).toContain("EXPIRY_OUT_OF_RANGE");
    expect((await v.licensing.listLicenses({})).licenses).toEqual([]);
    expect((await v.licensing.listCustomers({})).customers).toEqual([]);

    // Not a source of this provider, not a source at all, not POST, too large.
    expect((await post(`/hooks/polar/${source.id}`, body, stripeHeaders(body))).status).toBe(404);
    expect((await post("/hooks/stripe/psrc_00000000000000000000000000", body, stripeHeaders(body))).status).toBe(404);
    expect((await fetch(`${t.url}${source.hookPath}`)).status).toBe(405);
    const huge = "x".repeat(1024 * 1024 + 1);
    expect((await post(source.hookPath, huge, stripeHeaders(huge))).status).toBe(413);
    // A disabled source is 404 too: the provider keeps retrying, so nothing is lost if it is enabled again.
    await v.webhooks.updatePaymentSource({ id: source.id, enabled: false, updateMask: { paths: ["enabled"] } });
    expect((await post(source.hookPath, body, stripeHeaders(body))).status).toBe(404);
    await v.webhooks.updatePaymentSource({ id: source.id, enabled: true, updateMask: { paths: ["enabled"] } });
    expect((await post(source.hookPath, body, stripeHeaders(body))).body.status).toBe("applied");
  });

  it("keeps an unmapped purchase as FAILED with its reason, and applies it on replay once mapped", async () => {
    const v = await vendor("Stripe Replay Co");
    const source = await stripeSource(v);
    const body = stripeEvent("checkout.session.completed", checkoutCompleted("late@example.com", "price_new", "pi_N"));
    const got = await post(source.hookPath, body, stripeHeaders(body));
    expect(got).toMatchObject({ status: 200, body: { status: "failed" } });
    expect(got.body.reason).toContain("price_new");
    const [event] = (await v.webhooks.listPaymentEvents({ status: PaymentEventStatus.FAILED })).events;
    expect(event).toMatchObject({ action: "purchase", status: PaymentEventStatus.FAILED, licenseIds: [] });
    expect(event!.reason).toContain("no mapping for price_new");
    expect((await v.licensing.listLicenses({})).licenses).toEqual([]);
    const { events: audited } = await v.audit.listAuditEvents({ pageSize: 1000 });
    const failedEntries = audited.filter((e) => e.type === "payment.event_failed");
    expect(failedEntries.map((e) => e.subject)).toEqual([event!.id]);
    const documented = (docExamples().get("payment.event_failed")!.data as { payload: object }).payload;
    expect(Object.keys(failedEntries[0]!.payload ?? {}).sort()).toEqual(Object.keys(documented).sort());

    await v.webhooks.updatePaymentSource({
      id: source.id,
      mappings: [{ item: "price_new", policyId: v.oneTime, metadata: {} }],
      updateMask: { paths: ["mappings"] },
    });
    const { event: replayed } = await v.webhooks.replayPaymentEvent({ id: event!.id });
    expect(replayed).toMatchObject({ status: PaymentEventStatus.APPLIED, attempts: 2, reason: "" });
    expect(replayed!.licenseIds).toHaveLength(1);
    expect((await v.licensing.listLicenses({})).licenses.map((l) => l.id)).toEqual(replayed!.licenseIds);
    expect(await failure(v.webhooks.replayPaymentEvent({ id: event!.id }))).toMatchObject({
      code: "FailedPrecondition",
      reason: "PAYMENT_EVENT_NOT_FAILED",
    });
    // Redelivered by Stripe after all this: still one license.
    expect((await post(source.hookPath, body, stripeHeaders(body))).body.status).toBe("duplicate");
    expect((await v.licensing.listLicenses({})).licenses).toHaveLength(1);
  });

  it("accepts the previous secret during a rotation's overlap, and not after", async () => {
    const v = await vendor("Stripe Rotation Co");
    const source = await stripeSource(v);
    const NEW = "whsec_rolled_Zq81bXk2LmP0aa";
    await v.webhooks.rotatePaymentSourceSecret({ id: source.id, secret: NEW, overlap: { seconds: 3600n, nanos: 0 } });
    for (const secret of [NEW, STRIPE_SECRET]) {
      const body = stripeEvent("checkout.session.completed", checkoutCompleted("r@example.com", "price_once", "pi"));
      expect((await post(source.hookPath, body, stripeHeaders(body, secret))).status).toBe(200);
    }
    clock.advance(3601 * 1000);
    const late = stripeEvent("checkout.session.completed", checkoutCompleted("r@example.com", "price_once", "pi"));
    expect((await post(source.hookPath, late, stripeHeaders(late, STRIPE_SECRET))).status).toBe(400);
    expect((await post(source.hookPath, late, stripeHeaders(late, NEW))).status).toBe(200);
  });
});

describe("Polar", () => {
  /** Standard Webhooks, keyed with the UTF-8 bytes of the secret as Polar's SDK keys it (validateEvent). */
  function polarHeaders(body: string, secret = POLAR_SECRET, at = clock.now()) {
    const id = `msg_${randomUUID()}`;
    const wh = new Webhook(Buffer.from(secret, "utf8").toString("base64"));
    return {
      "content-type": "application/json",
      "webhook-id": id,
      "webhook-timestamp": String(Math.floor(at.getTime() / 1000)),
      "webhook-signature": wh.sign(id, at, body),
    };
  }

  it("an order.paid creates the license; order.refunded revokes it; a redelivery is a duplicate", async () => {
    const v = await vendor("Polar Co");
    const product = randomUUID();
    const { source } = await v.webhooks.createPaymentSource({
      provider: PaymentProvider.POLAR,
      secret: POLAR_SECRET,
      mappings: [{ item: product, policyId: v.oneTime, metadata: {} }],
    });
    const orderId = randomUUID();
    const order = (status: string) =>
      JSON.stringify({
        type: status === "paid" ? "order.paid" : "order.refunded",
        timestamp: clock.now().toISOString(),
        data: {
          id: orderId,
          status,
          billing_reason: "purchase",
          product_id: product,
          subscription_id: null,
          customer: { id: randomUUID(), email: "polar@example.com", name: "Polar Buyer" },
          items: [{ product_price_id: randomUUID(), label: "App", amount: 1000 }],
        },
      });
    const paid = order("paid");
    const headers = polarHeaders(paid);
    const got = await post(source!.hookPath, paid, headers);
    expect(got.body.status).toBe("applied");
    const licenseId = (got.body.license_ids as string[])[0]!;
    expect((await validate(v, licenseId)).valid).toBe(true);
    expect((await post(source!.hookPath, paid, headers)).body.status).toBe("duplicate");
    // Signed with the secret read as base64 (not as Polar keys it): refused.
    const wrong = polarHeaders(paid);
    wrong["webhook-signature"] = new Webhook(POLAR_SECRET.replace(/_/g, "")).sign(
      wrong["webhook-id"],
      clock.now(),
      paid,
    );
    expect((await post(source!.hookPath, paid, wrong)).status).toBe(400);

    const refunded = order("refunded");
    expect((await post(source!.hookPath, refunded, polarHeaders(refunded))).body.status).toBe("applied");
    expect((await validate(v, licenseId)).code).toBe(ValidationCode.REVOKED);
  });
});

describe("payment sources through the API", () => {
  it("check mappings, keep tenants apart, and store the secret sealed", async () => {
    const a = await vendor("Sources A");
    const b = await vendor("Sources B");
    const source = await stripeSource(a);
    // B cannot see, change or map to A's things: NOT_FOUND, as for every resource.
    expect(await failure(b.webhooks.getPaymentSource({ id: source.id }))).toMatchObject({ code: "NotFound" });
    expect(await failure(b.webhooks.deletePaymentSource({ id: source.id }))).toMatchObject({ code: "NotFound" });
    expect(
      await failure(
        b.webhooks.createPaymentSource({
          provider: PaymentProvider.STRIPE,
          secret: STRIPE_SECRET,
          mappings: [{ item: "price_x", policyId: a.oneTime, metadata: {} }],
        }),
      ),
    ).toMatchObject({
      code: "InvalidArgument",
      reason: "POLICY_NOT_FOUND",
      metadata: { field: "mappings[0].policy_id" },
    });
    expect(
      await failure(
        a.webhooks.createPaymentSource({
          provider: PaymentProvider.STRIPE,
          secret: STRIPE_SECRET,
          mappings: [
            { item: "price_x", policyId: a.oneTime, metadata: {} },
            { item: "price_x", policyId: a.monthly, metadata: {} },
          ],
        }),
      ),
    ).toMatchObject({ code: "InvalidArgument", reason: "DUPLICATE_ITEM", metadata: { field: "mappings[1].item" } });
    expect(
      await failure(a.webhooks.createPaymentSource({ provider: PaymentProvider.STRIPE, secret: "short" })),
    ).toMatchObject({ code: "InvalidArgument" });
    expect(
      await failure(a.webhooks.createPaymentSource({ provider: PaymentProvider.UNSPECIFIED, secret: STRIPE_SECRET })),
    ).toMatchObject({ code: "InvalidArgument" });
    expect((await a.webhooks.listPaymentSources({})).sources.map((s) => s.id)).toEqual([source.id]);
    expect((await b.webhooks.listPaymentSources({})).sources).toEqual([]);

    const rows = await query<{ secret_sealed: Buffer }>(t.databaseUrl, "select secret_sealed from payment_sources");
    for (const row of rows) expect(row.secret_sealed.includes(Buffer.from(STRIPE_SECRET))).toBe(false);

    await a.webhooks.updatePaymentSource({
      id: source.id,
      description: "renamed",
      updateMask: { paths: ["description"] },
    });
    await a.webhooks.rotatePaymentSourceSecret({ id: source.id, secret: "whsec_next_secret_0123" });
    const { source: deleted } = await a.webhooks.deletePaymentSource({ id: source.id });
    expect(deleted!.id).toBe(source.id);
    // Each change is in the audit log (so in webhooks), with the keys docs/webhooks.md documents, and no secret.
    const { events: audited } = await a.audit.listAuditEvents({ pageSize: 1000 });
    const types = ["created", "updated", "secret_rotated", "deleted"].map((k) => `payment_source.${k}`);
    for (const type of types) {
      const entry = audited.find((e) => e.type === type && e.subject === source.id);
      if (!entry) expect.fail(`no ${type}`);
      const documented = (docExamples().get(type)!.data as { payload: object }).payload;
      expect(Object.keys(entry.payload ?? {}).sort(), type).toEqual(Object.keys(documented).sort());
      expect(JSON.stringify(entry.payload)).not.toContain("whsec_");
    }
    const body = stripeEvent("checkout.session.completed", checkoutCompleted("d@example.com", "price_once", "pi"));
    expect((await post(source.hookPath, body, stripeHeaders(body))).status).toBe(404);
  });
});

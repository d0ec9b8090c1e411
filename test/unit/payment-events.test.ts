import { Webhook } from "standardwebhooks";
import Stripe from "stripe";
import { describe, expect, it } from "vitest";
import {
  type PaymentEvent,
  PaymentEventError,
  readPolarEvent,
  readStripeEvent,
} from "../../src/provisioning/payment-events.js";

const NOW = new Date("2026-03-01T12:00:00Z");
const NOW_S = NOW.getTime() / 1000;
const PERIOD_START = NOW_S - 60;
const PERIOD_END = NOW_S + 30 * 86_400;
const at = (seconds: number) => new Date(seconds * 1000);

function thrown(fn: () => unknown): PaymentEventError {
  try {
    fn();
  } catch (err) {
    if (err instanceof PaymentEventError) return err;
    throw err;
  }
  throw new Error("expected a PaymentEventError");
}

// ---- Stripe: events as Stripe sends them, signed with Stripe's own test header ----

const STRIPE_SECRET = "whsec_3b8f1c0e9d2a4f6b8c0d2e4f6a8b0c2d";

function stripeEvent(type: string, object: object, previous?: object) {
  return {
    id: "evt_1QxYz2AbCdEfGh",
    object: "event",
    api_version: "2025-03-31.basil",
    created: NOW_S - 2,
    data: { object, ...(previous && { previous_attributes: previous }) },
    livemode: false,
    pending_webhooks: 1,
    request: { id: null, idempotency_key: null },
    type,
  };
}

function signStripe(body: string, opts: { secret?: string; timestamp?: number } = {}) {
  const header = Stripe.webhooks.generateTestHeaderString({
    payload: body,
    secret: opts.secret ?? STRIPE_SECRET,
    timestamp: opts.timestamp ?? NOW_S - 1,
  });
  return { "stripe-signature": header, "content-type": "application/json" };
}

function readStripe(event: object): PaymentEvent {
  const body = JSON.stringify(event);
  return readStripeEvent(Buffer.from(body), signStripe(body), STRIPE_SECRET, NOW);
}

const checkoutSession = {
  id: "cs_test_a1B2c3",
  object: "checkout.session",
  amount_total: 4900,
  currency: "usd",
  customer: "cus_Q1",
  customer_details: { email: "ada@example.com", name: "Ada Lovelace", phone: null, tax_exempt: "none", tax_ids: [] },
  customer_email: null,
  invoice: null,
  metadata: { licensd_price: "price_pro_lifetime" },
  mode: "payment",
  payment_intent: "pi_3Q1",
  payment_status: "paid",
  status: "complete",
  subscription: null,
};

/** An invoice as API 2025-03-31.basil and later send it. */
const invoiceBasil = {
  id: "in_1Q2",
  object: "invoice",
  billing_reason: "subscription_create",
  customer: "cus_Q1",
  customer_email: "ada@example.com",
  customer_name: "Ada Lovelace",
  status: "paid",
  parent: {
    type: "subscription_details",
    quote_details: null,
    subscription_details: { metadata: {}, subscription: "sub_1Q3" },
  },
  lines: {
    object: "list",
    has_more: false,
    data: [
      {
        id: "il_1Q4",
        object: "line_item",
        amount: 1500,
        period: { start: PERIOD_START, end: PERIOD_END },
        pricing: {
          type: "price_details",
          price_details: { price: "price_pro_monthly", product: "prod_pro" },
          unit_amount_decimal: "1500",
        },
        parent: {
          type: "subscription_item_details",
          subscription_item_details: { subscription: "sub_1Q3", subscription_item: "si_1", proration: false },
        },
      },
    ],
  },
};

/** The same invoice as API versions before 2025-03-31 send it. */
const invoiceLegacy = {
  id: "in_1Q2",
  object: "invoice",
  billing_reason: "subscription_create",
  charge: "ch_3Q5",
  customer: "cus_Q1",
  customer_email: "ada@example.com",
  customer_name: null,
  payment_intent: "pi_3Q5",
  status: "paid",
  subscription: "sub_1Q3",
  lines: {
    object: "list",
    has_more: false,
    data: [
      {
        id: "il_1Q4",
        object: "line_item",
        period: { start: PERIOD_START, end: PERIOD_END },
        price: { id: "price_pro_monthly", object: "price", product: "prod_pro" },
        subscription: "sub_1Q3",
      },
    ],
  },
};

describe("readStripeEvent", () => {
  it("reads a paid one-time checkout as a purchase with its buyer, price and payment refs", () => {
    const event = readStripe(stripeEvent("checkout.session.completed", checkoutSession));
    expect(event).toEqual({
      provider: "stripe",
      id: "evt_1QxYz2AbCdEfGh",
      type: "checkout.session.completed",
      occurredAt: at(NOW_S - 2),
      action: {
        kind: "purchase",
        email: "ada@example.com",
        name: "Ada Lovelace",
        items: ["price_pro_lifetime"],
        orderId: "cs_test_a1B2c3",
        paymentRefs: ["pi_3Q1"],
      },
    });
  });

  it("adds expanded line items' price and product ids, and falls back to customer_email and the email as name", () => {
    const session = {
      ...checkoutSession,
      customer_details: { email: null, name: null },
      customer_email: "bob@example.com",
      metadata: {},
      line_items: {
        object: "list",
        data: [
          { id: "li_1", object: "item", price: { id: "price_a", object: "price", product: "prod_a" }, quantity: 1 },
          { id: "li_2", object: "item", price: { id: "price_b", object: "price", product: { id: "prod_b" } } },
        ],
      },
    };
    const { action } = readStripe(stripeEvent("checkout.session.async_payment_succeeded", session));
    expect(action).toMatchObject({
      kind: "purchase",
      email: "bob@example.com",
      name: "bob@example.com",
      items: ["price_a", "prod_a", "price_b", "prod_b"],
    });
  });

  it("ignores a checkout still awaiting payment, and a subscription checkout (its invoice.paid provisions it)", () => {
    const unpaid = readStripe(
      stripeEvent("checkout.session.completed", { ...checkoutSession, payment_status: "unpaid" }),
    );
    expect(unpaid.action.kind).toBe("ignored");
    const subscription = readStripe(
      stripeEvent("checkout.session.completed", { ...checkoutSession, mode: "subscription", subscription: "sub_1" }),
    );
    expect(subscription.action).toEqual({
      kind: "ignored",
      reason: "a subscription is provisioned from its first invoice.paid (billing_reason subscription_create)",
    });
  });

  it("reads a subscription's first invoice.paid as a purchase (API 2025-03-31 and later)", () => {
    const { action } = readStripe(stripeEvent("invoice.paid", invoiceBasil));
    expect(action).toEqual({
      kind: "purchase",
      email: "ada@example.com",
      name: "Ada Lovelace",
      items: ["price_pro_monthly", "prod_pro"],
      subscriptionId: "sub_1Q3",
      orderId: "in_1Q2",
      paymentRefs: ["in_1Q2"],
      periodEnd: at(PERIOD_END),
    });
  });

  it("reads the same invoice from older API versions (subscription, price, payment_intent and charge on the invoice)", () => {
    const { action } = readStripe(stripeEvent("invoice.paid", invoiceLegacy));
    expect(action).toEqual({
      kind: "purchase",
      email: "ada@example.com",
      name: "ada@example.com",
      items: ["price_pro_monthly", "prod_pro"],
      subscriptionId: "sub_1Q3",
      orderId: "in_1Q2",
      paymentRefs: ["in_1Q2", "pi_3Q5", "ch_3Q5"],
      periodEnd: at(PERIOD_END),
    });
  });

  it("reads a subscription_cycle invoice.paid as a renewal, in both API shapes", () => {
    for (const invoice of [invoiceBasil, invoiceLegacy]) {
      const { action } = readStripe(stripeEvent("invoice.paid", { ...invoice, billing_reason: "subscription_cycle" }));
      expect(action).toMatchObject({ kind: "renewal", subscriptionId: "sub_1Q3", periodEnd: at(PERIOD_END) });
    }
    const withPayments = {
      ...invoiceBasil,
      billing_reason: "subscription_cycle",
      payments: { data: [{ id: "inpay_1", payment: { type: "payment_intent", payment_intent: "pi_7" } }] },
    };
    expect(readStripe(stripeEvent("invoice.paid", withPayments)).action).toMatchObject({
      paymentRefs: ["in_1Q2", "pi_7"],
    });
  });

  it("ignores invoices that are not a subscription's creation or cycle", () => {
    const { action } = readStripe(stripeEvent("invoice.paid", { ...invoiceBasil, billing_reason: "manual" }));
    expect(action).toEqual({ kind: "ignored", reason: "invoice billing_reason manual" });
  });

  const subscriptionBasil = {
    id: "sub_1Q3",
    object: "subscription",
    status: "active",
    cancel_at: PERIOD_END,
    cancel_at_period_end: true,
    canceled_at: NOW_S - 2,
    ended_at: null,
    items: {
      object: "list",
      data: [{ id: "si_1", current_period_start: PERIOD_START, current_period_end: PERIOD_END }],
    },
  };

  it("reads cancel_at_period_end turned on as a cancellation at the period's end (period end on items)", () => {
    const event = stripeEvent("customer.subscription.updated", subscriptionBasil, {
      cancel_at: null,
      cancel_at_period_end: false,
      canceled_at: null,
    });
    expect(readStripe(event).action).toEqual({
      kind: "cancellation",
      subscriptionId: "sub_1Q3",
      endsAt: at(PERIOD_END),
    });
  });

  it("reads the same cancellation from older API versions (current_period_end on the subscription)", () => {
    const legacy = {
      id: "sub_1Q3",
      object: "subscription",
      status: "active",
      cancel_at: null,
      cancel_at_period_end: true,
      current_period_start: PERIOD_START,
      current_period_end: PERIOD_END,
    };
    const event = stripeEvent("customer.subscription.updated", legacy, { cancel_at_period_end: false });
    expect(readStripe(event).action).toEqual({
      kind: "cancellation",
      subscriptionId: "sub_1Q3",
      endsAt: at(PERIOD_END),
    });
  });

  it("reads a withdrawn cancellation as an uncancellation", () => {
    const resumed = { ...subscriptionBasil, cancel_at: null, cancel_at_period_end: false, canceled_at: null };
    const event = stripeEvent("customer.subscription.updated", resumed, {
      cancel_at: PERIOD_END,
      cancel_at_period_end: true,
      canceled_at: NOW_S - 100,
    });
    expect(readStripe(event).action).toEqual({
      kind: "uncancellation",
      subscriptionId: "sub_1Q3",
      periodEnd: at(PERIOD_END),
    });
  });

  it("ignores subscription updates that do not move its scheduled end", () => {
    const active = { ...subscriptionBasil, cancel_at: null, cancel_at_period_end: false };
    const event = stripeEvent("customer.subscription.updated", active, { metadata: { seats: "3" } });
    expect(readStripe(event).action.kind).toBe("ignored");
  });

  it("reads customer.subscription.deleted as a cancellation when it ended", () => {
    const ended = { ...subscriptionBasil, status: "canceled", ended_at: NOW_S - 10 };
    expect(readStripe(stripeEvent("customer.subscription.deleted", ended)).action).toEqual({
      kind: "cancellation",
      subscriptionId: "sub_1Q3",
      endsAt: at(NOW_S - 10),
    });
  });

  it("reads invoice.payment_failed as payment_failed only once Stripe's retries are over", () => {
    const failed = { ...invoiceBasil, billing_reason: "subscription_cycle", status: "open", attempt_count: 4 };
    const final = readStripe(stripeEvent("invoice.payment_failed", { ...failed, next_payment_attempt: null }));
    expect(final.action).toEqual({ kind: "payment_failed", subscriptionId: "sub_1Q3" });
    const legacy = { ...invoiceLegacy, billing_reason: "subscription_cycle", next_payment_attempt: null };
    expect(readStripe(stripeEvent("invoice.payment_failed", legacy)).action).toEqual({
      kind: "payment_failed",
      subscriptionId: "sub_1Q3",
    });
    const retrying = readStripe(
      stripeEvent("invoice.payment_failed", { ...failed, next_payment_attempt: NOW_S + 3 * 86_400 }),
    );
    expect(retrying.action).toEqual({
      kind: "ignored",
      reason: "Stripe retries the payment (next_payment_attempt is set)",
    });
  });

  const charge = {
    id: "ch_3Q5",
    object: "charge",
    amount: 4900,
    amount_refunded: 4900,
    captured: true,
    paid: true,
    payment_intent: "pi_3Q5",
    refunded: true,
    status: "succeeded",
  };

  it("reads a full charge.refunded as a refund naming the charge and payment intent (and invoice on older APIs)", () => {
    expect(readStripe(stripeEvent("charge.refunded", charge)).action).toEqual({
      kind: "refund",
      refs: ["ch_3Q5", "pi_3Q5"],
      reason: "refund",
    });
    expect(readStripe(stripeEvent("charge.refunded", { ...charge, invoice: "in_1Q2" })).action).toMatchObject({
      refs: ["ch_3Q5", "pi_3Q5", "in_1Q2"],
    });
  });

  it("ignores a partial refund", () => {
    const partial = { ...charge, amount_refunded: 1000, refunded: false };
    expect(readStripe(stripeEvent("charge.refunded", partial)).action).toEqual({
      kind: "ignored",
      reason: "partial refund",
    });
  });

  it("reads charge.dispute.created as a chargeback", () => {
    const dispute = {
      id: "du_1Q6",
      object: "dispute",
      amount: 4900,
      charge: "ch_3Q5",
      payment_intent: "pi_3Q5",
      reason: "fraudulent",
      status: "needs_response",
    };
    expect(readStripe(stripeEvent("charge.dispute.created", dispute)).action).toEqual({
      kind: "refund",
      refs: ["ch_3Q5", "pi_3Q5"],
      reason: "chargeback",
    });
  });

  it("ignores event types provisioning does not use", () => {
    const event = readStripe(stripeEvent("customer.created", { id: "cus_Q1", object: "customer" }));
    expect(event.action).toEqual({ kind: "ignored", reason: "event type customer.created is not used" });
  });

  describe("rejects", () => {
    const body = JSON.stringify(stripeEvent("checkout.session.completed", checkoutSession));
    const read = (headers: Record<string, string>, raw = body, secret = STRIPE_SECRET) =>
      thrown(() => readStripeEvent(Buffer.from(raw), headers, secret, NOW));

    it("a body changed after signing", () => {
      const error = read(signStripe(body), body.replace("ada@", "eve@"));
      expect(error.reason).toBe("signature");
    });

    it("a signature made with another secret", () => {
      expect(read(signStripe(body, { secret: "whsec_another" })).reason).toBe("signature");
    });

    it("a timestamp 6 minutes old or 6 minutes ahead, and accepts one 4 minutes old", () => {
      expect(read(signStripe(body, { timestamp: NOW_S - 360 })).reason).toBe("signature");
      expect(read(signStripe(body, { timestamp: NOW_S + 360 })).reason).toBe("signature");
      const fresh = readStripeEvent(
        Buffer.from(body),
        signStripe(body, { timestamp: NOW_S - 240 }),
        STRIPE_SECRET,
        NOW,
      );
      expect(fresh.action.kind).toBe("purchase");
    });

    it("a missing or repeated Stripe-Signature header", () => {
      expect(read({ "content-type": "application/json" }).reason).toBe("signature");
      const header = signStripe(body)["stripe-signature"];
      const repeated = thrown(() =>
        readStripeEvent(Buffer.from(body), { "stripe-signature": [header, header] }, STRIPE_SECRET, NOW),
      );
      expect(repeated.reason).toBe("signature");
    });

    it("a signed body that is not JSON or is a thin event notification, as malformed", () => {
      const raw = "{not json";
      expect(read(signStripe(raw), raw).reason).toBe("malformed");
      const thin = JSON.stringify({ id: "evt_2", object: "v2.core.event", type: "v1.billing.meter.error_report" });
      expect(read(signStripe(thin), thin).reason).toBe("malformed");
    });

    it("a signed event missing what its action needs, or with a NUL in an id or email, as malformed", () => {
      const noEmail = { ...checkoutSession, customer_details: { email: null, name: "Ada" }, customer_email: null };
      const raw = JSON.stringify(stripeEvent("checkout.session.completed", noEmail));
      const error = read(signStripe(raw), raw);
      expect(error.reason).toBe("malformed");
      expect(error.message).toContain("customer_details.email");

      const nul = { ...checkoutSession, customer_details: { email: "ada\u0000@example.com", name: "Ada" } };
      const rawNul = JSON.stringify(stripeEvent("checkout.session.completed", nul));
      expect(read(signStripe(rawNul), rawNul).reason).toBe("malformed");

      const noSubscription = { ...invoiceBasil, parent: null };
      const rawInvoice = JSON.stringify(stripeEvent("invoice.paid", noSubscription));
      expect(read(signStripe(rawInvoice), rawInvoice).reason).toBe("malformed");
    });
  });
});

// ---- Polar: Standard Webhooks, keyed the way Polar's SDK keys it ----

const POLAR_SECRET = "polar_whs_Yx3kP9qL2mN8vB4cR7tW1zH6jF5dS0aG";
const polarKey = (secret: string) => Buffer.from(secret, "utf-8").toString("base64");

function signPolar(body: string, opts: { secret?: string; timestamp?: number; id?: string } = {}) {
  const id = opts.id ?? "msg_2tZ0nQ8WJ1c4dXg7yH3kL5pR9sV";
  const timestamp = opts.timestamp ?? NOW_S - 1;
  const signature = new Webhook(polarKey(opts.secret ?? POLAR_SECRET)).sign(id, at(timestamp), body);
  return { "webhook-id": id, "webhook-timestamp": String(timestamp), "webhook-signature": signature };
}

function polarEvent(type: string, data: object) {
  return { type, timestamp: "2026-03-01T11:59:58.123456Z", data };
}

function readPolar(event: object): PaymentEvent {
  const body = JSON.stringify(event);
  return readPolarEvent(Buffer.from(body), signPolar(body), POLAR_SECRET, NOW);
}

const polarCustomer = {
  id: "992fae2a-2a17-4b7a-8d9e-e287cf90131b",
  created_at: "2026-03-01T11:50:00Z",
  modified_at: null,
  metadata: {},
  external_id: null,
  email: "ada@example.com",
  email_verified: false,
  name: "Ada Lovelace",
  billing_address: null,
  tax_id: null,
  organization_id: "1dbfc517-0bbf-4301-9ba8-555ca42b9737",
  deleted_at: null,
  avatar_url: "https://www.gravatar.com/avatar/xxx?d=404",
};

const polarOrder = {
  id: "b6f4c3a2-8e1d-4f7a-9c2b-5d3e1a0f9b8c",
  created_at: "2026-03-01T11:59:50Z",
  modified_at: "2026-03-01T11:59:57Z",
  status: "paid",
  paid: true,
  subtotal_amount: 4900,
  discount_amount: 0,
  net_amount: 4900,
  tax_amount: 0,
  total_amount: 4900,
  refunded_amount: 0,
  refunded_tax_amount: 0,
  currency: "usd",
  billing_reason: "purchase",
  billing_name: "Ada Lovelace",
  customer_id: polarCustomer.id,
  product_id: "3f1e2d4c-5b6a-4798-8a9b-0c1d2e3f4a5b",
  discount_id: null,
  subscription_id: null,
  checkout_id: "0a9b8c7d-6e5f-4a3b-2c1d-0e9f8a7b6c5d",
  metadata: {},
  customer: polarCustomer,
  product: { id: "3f1e2d4c-5b6a-4798-8a9b-0c1d2e3f4a5b", name: "Pro", is_recurring: false },
  subscription: null,
  items: [
    {
      id: "c1d2e3f4-a5b6-4c7d-8e9f-0a1b2c3d4e5f",
      created_at: "2026-03-01T11:59:50Z",
      modified_at: null,
      label: "Pro",
      amount: 4900,
      tax_amount: 0,
      proration: false,
      product_price_id: "7e6d5c4b-3a29-4180-9f8e-7d6c5b4a3928",
    },
  ],
  description: "Pro",
};

const PERIOD_END_ISO = at(PERIOD_END).toISOString();
const SUBSCRIPTION_ID = "5a4b3c2d-1e0f-4a9b-8c7d-6e5f4a3b2c1d";

const polarSubscription = {
  id: SUBSCRIPTION_ID,
  created_at: "2026-02-01T12:00:00Z",
  modified_at: "2026-03-01T11:59:57Z",
  amount: 1500,
  currency: "usd",
  recurring_interval: "month",
  recurring_interval_count: 1,
  status: "active",
  current_period_start: "2026-03-01T12:00:00Z",
  current_period_end: PERIOD_END_ISO,
  cancel_at_period_end: false,
  canceled_at: null,
  started_at: "2026-02-01T12:00:00Z",
  ends_at: null,
  ended_at: null,
  customer_id: polarCustomer.id,
  product_id: polarOrder.product_id,
  customer: polarCustomer,
  metadata: {},
};

describe("readPolarEvent", () => {
  it("reads a one-time order.paid as a purchase with its product and price ids", () => {
    expect(readPolar(polarEvent("order.paid", polarOrder))).toEqual({
      provider: "polar",
      id: "msg_2tZ0nQ8WJ1c4dXg7yH3kL5pR9sV",
      type: "order.paid",
      occurredAt: new Date("2026-03-01T11:59:58.123Z"),
      action: {
        kind: "purchase",
        email: "ada@example.com",
        name: "Ada Lovelace",
        items: ["3f1e2d4c-5b6a-4798-8a9b-0c1d2e3f4a5b", "7e6d5c4b-3a29-4180-9f8e-7d6c5b4a3928"],
        orderId: polarOrder.id,
        paymentRefs: [polarOrder.id],
      },
    });
  });

  it("reads a subscription's first order as a purchase with the subscription and its period end", () => {
    const order = {
      ...polarOrder,
      billing_reason: "subscription_create",
      subscription_id: SUBSCRIPTION_ID,
      subscription: polarSubscription,
      customer: { ...polarCustomer, name: null },
      billing_name: null,
    };
    expect(readPolar(polarEvent("order.paid", order)).action).toEqual({
      kind: "purchase",
      email: "ada@example.com",
      name: "ada@example.com",
      items: ["3f1e2d4c-5b6a-4798-8a9b-0c1d2e3f4a5b", "7e6d5c4b-3a29-4180-9f8e-7d6c5b4a3928"],
      subscriptionId: SUBSCRIPTION_ID,
      orderId: polarOrder.id,
      paymentRefs: [polarOrder.id],
      periodEnd: at(PERIOD_END),
    });
  });

  it("reads a subscription_cycle order.paid as a renewal", () => {
    const order = {
      ...polarOrder,
      billing_reason: "subscription_cycle",
      subscription_id: SUBSCRIPTION_ID,
      subscription: polarSubscription,
    };
    expect(readPolar(polarEvent("order.paid", order)).action).toEqual({
      kind: "renewal",
      subscriptionId: SUBSCRIPTION_ID,
      periodEnd: at(PERIOD_END),
      paymentRefs: [polarOrder.id],
    });
  });

  it("ignores order.created (may be unpaid) and plan-change orders", () => {
    expect(readPolar(polarEvent("order.created", { ...polarOrder, status: "pending" })).action.kind).toBe("ignored");
    const update = { ...polarOrder, billing_reason: "subscription_update", subscription_id: SUBSCRIPTION_ID };
    expect(readPolar(polarEvent("order.paid", update)).action).toEqual({
      kind: "ignored",
      reason: "order billing_reason subscription_update",
    });
  });

  it("reads subscription.canceled at period end as a cancellation at ends_at", () => {
    const canceled = {
      ...polarSubscription,
      cancel_at_period_end: true,
      canceled_at: "2026-03-01T11:59:57Z",
      ends_at: PERIOD_END_ISO,
      customer_cancellation_reason: "too_expensive",
    };
    expect(readPolar(polarEvent("subscription.canceled", canceled)).action).toEqual({
      kind: "cancellation",
      subscriptionId: SUBSCRIPTION_ID,
      endsAt: at(PERIOD_END),
    });
  });

  it("reads an immediate cancellation and a revocation as a cancellation now", () => {
    const ended = {
      ...polarSubscription,
      status: "canceled",
      canceled_at: "2026-03-01T11:59:50Z",
      ended_at: "2026-03-01T11:59:50Z",
    };
    for (const type of ["subscription.canceled", "subscription.revoked"]) {
      expect(readPolar(polarEvent(type, ended)).action).toEqual({
        kind: "cancellation",
        subscriptionId: SUBSCRIPTION_ID,
        endsAt: new Date("2026-03-01T11:59:50Z"),
      });
    }
  });

  it("reads subscription.revoked with status unpaid as payment_failed, and ignores subscription.past_due", () => {
    const unpaid = { ...polarSubscription, status: "unpaid", ended_at: "2026-03-01T11:59:50Z" };
    expect(readPolar(polarEvent("subscription.revoked", unpaid)).action).toEqual({
      kind: "payment_failed",
      subscriptionId: SUBSCRIPTION_ID,
    });
    const pastDue = { ...polarSubscription, status: "past_due" };
    expect(readPolar(polarEvent("subscription.past_due", pastDue)).action.kind).toBe("ignored");
  });

  it("reads subscription.uncanceled as an uncancellation", () => {
    expect(readPolar(polarEvent("subscription.uncanceled", polarSubscription)).action).toEqual({
      kind: "uncancellation",
      subscriptionId: SUBSCRIPTION_ID,
      periodEnd: at(PERIOD_END),
    });
  });

  it("reads a fully refunded order as a refund, and ignores a partially refunded one", () => {
    const refunded = { ...polarOrder, status: "refunded", refunded_amount: 4900, subscription_id: SUBSCRIPTION_ID };
    expect(readPolar(polarEvent("order.refunded", refunded)).action).toEqual({
      kind: "refund",
      refs: [polarOrder.id, SUBSCRIPTION_ID],
      reason: "refund",
    });
    const partial = { ...polarOrder, status: "partially_refunded", refunded_amount: 1000 };
    expect(readPolar(polarEvent("order.refunded", partial)).action).toEqual({
      kind: "ignored",
      reason: "partial refund",
    });
  });

  it("reads a refund tied to a dispute as a chargeback; other refund.created events are ignored", () => {
    const refund = {
      id: "e1f2a3b4-c5d6-4e7f-8a9b-0c1d2e3f4a5b",
      created_at: "2026-03-01T11:59:57Z",
      modified_at: null,
      metadata: {},
      status: "succeeded",
      reason: "customer_request",
      amount: 4900,
      tax_amount: 0,
      currency: "usd",
      organization_id: polarCustomer.organization_id,
      order_id: polarOrder.id,
      subscription_id: null,
      customer_id: polarCustomer.id,
      revoke_benefits: true,
      dispute: null,
    };
    expect(readPolar(polarEvent("refund.created", refund)).action.kind).toBe("ignored");
    const disputed = {
      ...refund,
      reason: "dispute_prevention",
      dispute: { id: "d1", status: "prevented", resolved: false, closed: true, amount: 4900, order_id: polarOrder.id },
    };
    expect(readPolar(polarEvent("refund.created", disputed)).action).toEqual({
      kind: "refund",
      refs: [polarOrder.id],
      reason: "chargeback",
    });
  });

  it("finds its headers whatever their case", () => {
    const body = JSON.stringify(polarEvent("order.paid", polarOrder));
    const headers = Object.fromEntries(
      Object.entries(signPolar(body)).map(([name, value]) => [name.replace(/\b\w/g, (c) => c.toUpperCase()), value]),
    );
    expect(Object.keys(headers)).toContain("Webhook-Signature");
    expect(readPolarEvent(Buffer.from(body), headers, POLAR_SECRET, NOW).id).toBe("msg_2tZ0nQ8WJ1c4dXg7yH3kL5pR9sV");
  });

  it("ignores event types provisioning does not use", () => {
    expect(readPolar(polarEvent("checkout.created", { id: "c1" })).action).toEqual({
      kind: "ignored",
      reason: "event type checkout.created is not used",
    });
  });

  it("accepts exactly what Polar's SDK (standardwebhooks verify with the base64 of the secret) accepts", () => {
    const body = JSON.stringify(polarEvent("order.paid", polarOrder));
    const now = new Date();
    const headers = signPolar(body, { timestamp: Math.floor(now.getTime() / 1000) });
    expect(() => new Webhook(polarKey(POLAR_SECRET)).verify(body, headers)).not.toThrow();
    expect(readPolarEvent(Buffer.from(body), headers, POLAR_SECRET, now).action.kind).toBe("purchase");
    const tampered = body.replace("ada@", "eve@");
    expect(() => new Webhook(polarKey(POLAR_SECRET)).verify(tampered, headers)).toThrow();
    expect(thrown(() => readPolarEvent(Buffer.from(tampered), headers, POLAR_SECRET, now)).reason).toBe("signature");
  });

  describe("rejects", () => {
    const body = JSON.stringify(polarEvent("order.paid", polarOrder));
    const read = (headers: Record<string, string>, raw = body) =>
      thrown(() => readPolarEvent(Buffer.from(raw), headers, POLAR_SECRET, NOW));

    it("a body changed after signing", () => {
      expect(read(signPolar(body), body.replace("4900", "100")).reason).toBe("signature");
    });

    it("a signature made with another secret, or keyed with the secret read as base64", () => {
      expect(read(signPolar(body, { secret: "polar_whs_another" })).reason).toBe("signature");
      const sign = (key: Uint8Array) => {
        const signature = new Webhook(key, { format: "raw" }).sign("msg_1", NOW, body);
        return { "webhook-id": "msg_1", "webhook-timestamp": String(NOW_S), "webhook-signature": signature };
      };
      // The key is the secret's UTF-8 bytes, whatever the secret looks like.
      expect(readPolarEvent(Buffer.from(body), sign(Buffer.from(POLAR_SECRET)), POLAR_SECRET, NOW).type).toBe(
        "order.paid",
      );
      expect(read(sign(Buffer.from(POLAR_SECRET, "base64"))).reason).toBe("signature");
    });

    it("a timestamp 6 minutes old or 6 minutes ahead, and accepts one 4 minutes old", () => {
      expect(read(signPolar(body, { timestamp: NOW_S - 360 })).message).toContain("too old");
      expect(read(signPolar(body, { timestamp: NOW_S + 360 })).message).toContain("future");
      const fresh = readPolarEvent(Buffer.from(body), signPolar(body, { timestamp: NOW_S - 240 }), POLAR_SECRET, NOW);
      expect(fresh.action.kind).toBe("purchase");
    });

    it("a missing webhook header", () => {
      for (const name of ["webhook-id", "webhook-timestamp", "webhook-signature"]) {
        const headers: Record<string, string> = signPolar(body);
        delete headers[name];
        expect(read(headers).reason).toBe("signature");
      }
    });

    it("a signed body that is not JSON, as malformed", () => {
      const raw = "{not json";
      expect(read(signPolar(raw), raw).reason).toBe("malformed");
    });

    it("a signed event missing what its action needs, or with a NUL in an id or email, as malformed", () => {
      const noEmail = { ...polarOrder, customer: { ...polarCustomer, email: null } };
      const raw = JSON.stringify(polarEvent("order.paid", noEmail));
      const error = read(signPolar(raw), raw);
      expect(error.reason).toBe("malformed");
      expect(error.message).toContain("data.customer.email");

      const nul = { ...polarOrder, id: "b6f4c3a2\u0000" };
      const rawNul = JSON.stringify(polarEvent("order.paid", nul));
      expect(read(signPolar(rawNul), rawNul).reason).toBe("malformed");

      const renewal = { ...polarOrder, billing_reason: "subscription_cycle", subscription_id: null };
      const rawRenewal = JSON.stringify(polarEvent("order.paid", renewal));
      expect(read(signPolar(rawRenewal), rawRenewal).reason).toBe("malformed");
    });
  });
});

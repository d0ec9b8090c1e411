/**
 * Payment providers' webhook events, verified and reduced to what provisioning acts on.
 * Pure: bytes, headers, a secret and a clock in; a PaymentEvent or a PaymentEventError out.
 *
 * Fields read, per provider and event type (docs/provisioning.md says which events a vendor enables):
 *
 * Stripe (Event: id, type, created; data.object; data.previous_attributes)
 * - checkout.session.completed, checkout.session.async_payment_succeeded, mode "payment" with
 *   payment_status "paid" or "no_payment_required" → purchase. email: customer_details.email, else
 *   customer_email; name: customer_details.name, else the email; items: metadata.licensd_price (one
 *   id or a comma-separated list) plus line_items.data[].price.id and .price.product when the vendor
 *   expanded line_items (webhook payloads never include them otherwise); orderId: the session id;
 *   paymentRefs: payment_intent, invoice. mode "subscription" is ignored: the subscription's first
 *   invoice.paid provisions it, and that invoice carries its prices. Unpaid sessions are ignored
 *   (async_payment_succeeded follows).
 * - invoice.paid with billing_reason subscription_create → purchase, subscription_cycle → renewal;
 *   other reasons ignored. subscription: parent.subscription_details.subscription (API 2025-03-31
 *   and later), else subscription (older); email: customer_email; name: customer_name, else the
 *   email; items: lines.data[].pricing.price_details.price and .product (newer), or
 *   lines.data[].price.id and .price.product (older); periodEnd: the latest lines.data[].period.end;
 *   paymentRefs: the invoice id, payment_intent and charge (older API), and
 *   payments.data[].payment.payment_intent/charge when present.
 * - customer.subscription.updated: compares the scheduled end before (previous_attributes) and after
 *   (cancel_at, or the period end when cancel_at_period_end): newly scheduled or moved →
 *   cancellation at it; withdrawn → uncancellation. Period end: current_period_end (older API), else
 *   the latest items.data[].current_period_end (newer).
 * - customer.subscription.deleted → cancellation at ended_at (else the event's time).
 * - invoice.payment_failed on a subscription invoice with next_payment_attempt null (Stripe's
 *   retries are over) → payment_failed; with a next attempt scheduled → ignored.
 * - charge.refunded with refunded true (fully refunded) → refund of [charge id, payment_intent,
 *   invoice (older API)]; a partial refund is ignored.
 * - charge.dispute.created → chargeback of [charge, payment_intent].
 *
 * Polar (Standard Webhooks; body: type, timestamp, data)
 * - order.paid with billing_reason purchase or subscription_create → purchase; subscription_cycle →
 *   renewal; subscription_update ignored. email: data.customer.email; name: data.customer.name,
 *   else billing_name, else the email; items: product_id and items[].product_price_id; orderId and
 *   paymentRefs: data.id; subscriptionId: subscription_id; periodEnd: subscription.current_period_end.
 *   order.created is ignored: the order may not be paid yet, and order.paid follows.
 * - subscription.canceled → cancellation at ends_at (else current_period_end) when
 *   cancel_at_period_end, else at ended_at (else the event's time).
 * - subscription.revoked → payment_failed when status is "unpaid" (Polar's retries are exhausted),
 *   else cancellation at ended_at (else the event's time).
 * - subscription.uncanceled → uncancellation (periodEnd: current_period_end).
 * - subscription.past_due → ignored: Polar still retries, and sends subscription.revoked if it gives up.
 * - order.refunded with status "refunded" (fully) → refund of [order id, subscription_id]; a
 *   partially refunded order is ignored.
 * - refund.created with a dispute → chargeback of [order_id, subscription_id]; others ignored (the
 *   refund itself is read from order.refunded, which says whether the order is fully refunded).
 */
import { timingSafeEqual } from "node:crypto";
import { Webhook } from "standardwebhooks";
import Stripe from "stripe";

export type PaymentProvider = "stripe" | "polar";

/** A verified provider event reduced to what provisioning acts on. */
export interface PaymentEvent {
  provider: PaymentProvider;
  /** The provider's event id: Stripe's event.id (evt_…); Polar's webhook-id header. Idempotency key. */
  id: string;
  /** The provider's event type, e.g. "checkout.session.completed", "order.paid". */
  type: string;
  occurredAt: Date;
  action: PaymentAction;
}

export type PaymentAction =
  /** A first purchase: one-time order or a new subscription. */
  | {
      kind: "purchase";
      email: string;
      name: string;
      items: string[];
      subscriptionId?: string;
      orderId: string;
      /**
       * References a later refund/chargeback may name (Stripe payment_intent, invoice and charge ids;
       * Polar order id).
       */
      paymentRefs: string[];
      periodEnd?: Date;
    }
  /** A subscription's renewal payment (not its first). */
  | { kind: "renewal"; subscriptionId: string; periodEnd?: Date; paymentRefs: string[] }
  /** Cancelled: the license should end at endsAt (end of paid period, or now when ended immediately). */
  | { kind: "cancellation"; subscriptionId: string; endsAt: Date }
  /** A cancellation withdrawn before it took effect. */
  | { kind: "uncancellation"; subscriptionId: string; periodEnd?: Date }
  /** Payment failed and the provider's retries are over. */
  | { kind: "payment_failed"; subscriptionId: string }
  /** Refund (full) or chargeback: revoke. ref is one of the paymentRefs recorded earlier, or a subscription id. */
  | { kind: "refund"; refs: string[]; reason: "refund" | "chargeback" }
  /** A verified event provisioning does not act on (other types, partial refunds, a retry not yet final…). */
  | { kind: "ignored"; reason: string };

export class PaymentEventError extends Error {
  override name = "PaymentEventError";
  constructor(
    /** "signature": bad, missing or stale signature. "malformed": not a valid event of that provider. */
    readonly reason: "signature" | "malformed",
    message: string,
  ) {
    super(message);
  }
}

type Headers = Record<string, string | string[] | undefined>;
type Json = Record<string, unknown>;

/** Both providers' window, either side of now: Stripe's default and Standard Webhooks' fixed one. */
const TOLERANCE_SECONDS = 300;

/** Verify then read a Stripe event. rawBody is the exact bytes received. */
export function readStripeEvent(rawBody: Buffer, headers: Headers, secret: string, now: Date): PaymentEvent {
  const header = singleHeader(headers, "stripe-signature");
  if (!secret) throw new PaymentEventError("signature", "no Stripe signing secret to verify with");
  // Stripe rejects stale timestamps (against receivedAt, our now) but not ones from the future.
  const signedAt = stripeTimestamp(header);
  if (signedAt !== undefined && signedAt - Math.floor(now.getTime() / 1000) > TOLERANCE_SECONDS) {
    throw new PaymentEventError("signature", "Stripe-Signature timestamp is in the future");
  }
  let event: unknown;
  try {
    event = Stripe.webhooks.constructEvent(rawBody, header, secret, TOLERANCE_SECONDS, undefined, now.getTime());
  } catch (err) {
    if (err instanceof Stripe.errors.StripeSignatureVerificationError) {
      throw new PaymentEventError("signature", err.message);
    }
    // Thrown after the signature passed: the body is not JSON, or is a thin (v2) event notification.
    if (err instanceof SyntaxError || (err instanceof Error && err.message.includes("thin event"))) {
      throw new PaymentEventError("malformed", `not a Stripe event: ${err.message}`);
    }
    throw err;
  }
  const body = object(event, "event");
  const type = text(body.type, "type");
  const occurredAt = unixDate(body.created, "created");
  const data = object(body.data, "data");
  const previous = data.previous_attributes == null ? {} : object(data.previous_attributes, "previous_attributes");
  return {
    provider: "stripe",
    id: text(body.id, "id"),
    type,
    occurredAt,
    action: stripeAction(type, object(data.object, "data.object"), previous, occurredAt),
  };
}

/** Stripe's own parser takes the last t= item of the header. */
function stripeTimestamp(header: string): number | undefined {
  let t: number | undefined;
  for (const item of header.split(",")) {
    const [key, value] = item.split("=");
    if (key === "t") t = Number.parseInt(value ?? "", 10);
  }
  return t === undefined || Number.isNaN(t) ? undefined : t;
}

function stripeAction(type: string, o: Json, previous: Json, occurredAt: Date): PaymentAction {
  switch (type) {
    case "checkout.session.completed":
    case "checkout.session.async_payment_succeeded":
      return stripeCheckout(o);
    case "invoice.paid":
      return stripeInvoicePaid(o);
    case "customer.subscription.updated":
      return stripeSubscriptionUpdated(o, previous);
    case "customer.subscription.deleted":
      return {
        kind: "cancellation",
        subscriptionId: text(o.id, "data.object.id"),
        endsAt: o.ended_at == null ? occurredAt : unixDate(o.ended_at, "data.object.ended_at"),
      };
    case "invoice.payment_failed": {
      const subscriptionId = stripeInvoiceSubscription(o);
      if (subscriptionId === undefined) return ignored("not a subscription's invoice");
      if (o.next_payment_attempt === undefined) throw malformed("data.object.next_payment_attempt is missing");
      if (o.next_payment_attempt !== null) return ignored("Stripe retries the payment (next_payment_attempt is set)");
      return { kind: "payment_failed", subscriptionId };
    }
    case "charge.refunded":
      if (o.refunded !== true) return ignored("partial refund");
      return {
        kind: "refund",
        refs: refs([
          text(o.id, "data.object.id"),
          idOf(o.payment_intent, "payment_intent"),
          idOf(o.invoice, "invoice"),
        ]),
        reason: "refund",
      };
    case "charge.dispute.created":
      return {
        kind: "refund",
        refs: refs([requiredId(o.charge, "data.object.charge"), idOf(o.payment_intent, "payment_intent")]),
        reason: "chargeback",
      };
    default:
      return ignored(`event type ${type} is not used`);
  }
}

function stripeCheckout(session: Json): PaymentAction {
  if (session.mode === "subscription") {
    return ignored("a subscription is provisioned from its first invoice.paid (billing_reason subscription_create)");
  }
  if (session.mode !== "payment") return ignored(`checkout mode ${String(session.mode)}`);
  if (session.payment_status !== "paid" && session.payment_status !== "no_payment_required") {
    return ignored("payment not received yet (checkout.session.async_payment_succeeded follows)");
  }
  const details = session.customer_details == null ? {} : object(session.customer_details, "customer_details");
  const email = text(details.email ?? session.customer_email, "data.object.customer_details.email");
  const items: unknown[] = [];
  const metadata = session.metadata == null ? {} : object(session.metadata, "metadata");
  if (metadata.licensd_price != null) {
    items.push(...text(metadata.licensd_price, "metadata.licensd_price").split(","));
  }
  if (session.line_items != null) {
    for (const line of list(object(session.line_items, "line_items").data, "line_items.data")) {
      const price = object(object(line, "line_items.data[]").price, "line_items.data[].price");
      items.push(price.id, idOf(price.product, "line_items.data[].price.product"));
    }
  }
  return {
    kind: "purchase",
    email,
    name: optionalText(details.name, "customer_details.name") ?? email,
    items: refs(items.map((item) => (typeof item === "string" ? item.trim() : item))),
    orderId: text(session.id, "data.object.id"),
    paymentRefs: refs([idOf(session.payment_intent, "payment_intent"), idOf(session.invoice, "invoice")]),
  };
}

function stripeInvoicePaid(invoice: Json): PaymentAction {
  const reason = invoice.billing_reason;
  if (reason !== "subscription_create" && reason !== "subscription_cycle") {
    return ignored(`invoice billing_reason ${String(reason)}`);
  }
  const subscriptionId = stripeInvoiceSubscription(invoice);
  if (subscriptionId === undefined) throw malformed("a subscription invoice names no subscription");
  const lines = list(object(invoice.lines, "data.object.lines").data, "lines.data").map((l) => object(l, "lines[]"));
  const ends = lines.map((line) => (line.period == null ? undefined : object(line.period, "lines[].period").end));
  const periodEnd = latest(ends.filter((end) => end != null).map((end) => unixDate(end, "lines[].period.end")));
  const paymentRefs = [text(invoice.id, "data.object.id"), idOf(invoice.payment_intent, "payment_intent")];
  paymentRefs.push(idOf(invoice.charge, "charge"));
  if (invoice.payments != null) {
    for (const p of list(object(invoice.payments, "payments").data, "payments.data")) {
      const payment = object(object(p, "payments.data[]").payment, "payments.data[].payment");
      paymentRefs.push(idOf(payment.payment_intent, "payment.payment_intent"), idOf(payment.charge, "payment.charge"));
    }
  }
  if (reason === "subscription_cycle") {
    return { kind: "renewal", subscriptionId, ...(periodEnd && { periodEnd }), paymentRefs: refs(paymentRefs) };
  }
  const items: unknown[] = [];
  for (const line of lines) {
    const pricing = line.pricing == null ? undefined : object(line.pricing, "lines[].pricing");
    const details = pricing?.price_details == null ? undefined : object(pricing.price_details, "price_details");
    if (details) items.push(idOf(details.price, "price_details.price"), idOf(details.product, "price_details.product"));
    if (line.price != null) {
      const price = object(line.price, "lines[].price");
      items.push(price.id, idOf(price.product, "lines[].price.product"));
    }
  }
  const email = text(invoice.customer_email, "data.object.customer_email");
  return {
    kind: "purchase",
    email,
    name: optionalText(invoice.customer_name, "customer_name") ?? email,
    items: refs(items),
    subscriptionId,
    orderId: text(invoice.id, "data.object.id"),
    paymentRefs: refs(paymentRefs),
    ...(periodEnd && { periodEnd }),
  };
}

/** API 2025-03-31 moved invoice.subscription to parent.subscription_details.subscription. */
function stripeInvoiceSubscription(invoice: Json): string | undefined {
  const parent = invoice.parent == null ? undefined : object(invoice.parent, "parent");
  const details = parent?.subscription_details;
  const moved = details == null ? undefined : object(details, "parent.subscription_details").subscription;
  return idOf(moved ?? invoice.subscription, "subscription");
}

function stripeSubscriptionUpdated(subscription: Json, previous: Json): PaymentAction {
  if (!("cancel_at_period_end" in previous) && !("cancel_at" in previous)) {
    return ignored("the subscription's scheduled end did not change");
  }
  const subscriptionId = text(subscription.id, "data.object.id");
  const endsAt = stripeScheduledEnd(subscription);
  const endedAt = stripeScheduledEnd({ ...subscription, ...previous });
  if (endsAt && endsAt.getTime() !== endedAt?.getTime()) return { kind: "cancellation", subscriptionId, endsAt };
  if (!endsAt && endedAt) {
    const periodEnd = stripePeriodEnd(subscription);
    return { kind: "uncancellation", subscriptionId, ...(periodEnd && { periodEnd }) };
  }
  return ignored("the subscription's scheduled end did not change");
}

function stripeScheduledEnd(subscription: Json): Date | undefined {
  if (subscription.cancel_at != null) return unixDate(subscription.cancel_at, "data.object.cancel_at");
  if (subscription.cancel_at_period_end !== true) return undefined;
  const end = stripePeriodEnd(subscription);
  if (!end) throw malformed("a subscription cancelled at period end has no current_period_end");
  return end;
}

/** API 2025-03-31 moved current_period_end from the subscription to items.data[]. */
function stripePeriodEnd(subscription: Json): Date | undefined {
  if (subscription.current_period_end != null) {
    return unixDate(subscription.current_period_end, "data.object.current_period_end");
  }
  if (subscription.items == null) return undefined;
  const items = list(object(subscription.items, "items").data, "items.data").map((i) => object(i, "items[]"));
  const ends = items.map((i) => i.current_period_end).filter((end) => end != null);
  return latest(ends.map((end) => unixDate(end, "items.data[].current_period_end")));
}

/** Verify then read a Polar event. rawBody is the exact bytes received. */
export function readPolarEvent(rawBody: Buffer, headers: Headers, secret: string, now: Date): PaymentEvent {
  const id = singleHeader(headers, "webhook-id");
  const timestamp = singleHeader(headers, "webhook-timestamp");
  const signatures = singleHeader(headers, "webhook-signature");
  if (!secret) throw new PaymentEventError("signature", "no Polar webhook secret to verify with");
  if (!/^\d{1,12}$/.test(timestamp)) throw new PaymentEventError("signature", "webhook-timestamp is not a number");
  const signedAt = Number(timestamp);
  const age = Math.floor(now.getTime() / 1000) - signedAt;
  if (age > TOLERANCE_SECONDS) throw new PaymentEventError("signature", "webhook-timestamp is too old");
  if (-age > TOLERANCE_SECONDS) throw new PaymentEventError("signature", "webhook-timestamp is in the future");
  // Polar's SDK (polarsource/polar-js src/webhooks.ts, validateEvent) keys Standard Webhooks with the
  // secret string's UTF-8 bytes: new Webhook(Buffer.from(secret, "utf-8").toString("base64")).
  const webhook = new Webhook(Buffer.from(secret, "utf-8").toString("base64"));
  // Webhook.verify() would check the timestamp against Date.now(), not `now`; so the window is
  // checked above and the signature here, with the library's own sign() (HMAC and encoding).
  const expected = Buffer.from(webhook.sign(id, new Date(signedAt * 1000), rawBody));
  const matches = signatures.split(" ").some((candidate) => {
    const given = Buffer.from(candidate);
    return given.length === expected.length && timingSafeEqual(given, expected);
  });
  if (!matches) throw new PaymentEventError("signature", "no matching webhook-signature");
  let parsed: unknown;
  try {
    parsed = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(rawBody));
  } catch (err) {
    throw new PaymentEventError("malformed", `not a Polar event: ${(err as Error).message}`);
  }
  const body = object(parsed, "event");
  const type = text(body.type, "type");
  const occurredAt = body.timestamp == null ? new Date(signedAt * 1000) : isoDate(body.timestamp, "timestamp");
  return {
    provider: "polar",
    id: text(id, "webhook-id"),
    type,
    occurredAt,
    action: polarAction(type, object(body.data, "data"), occurredAt),
  };
}

function polarAction(type: string, data: Json, occurredAt: Date): PaymentAction {
  switch (type) {
    case "order.paid":
      return polarOrderPaid(data);
    case "order.created":
      return ignored("the order may not be paid yet; order.paid follows");
    case "subscription.canceled": {
      const subscriptionId = text(data.id, "data.id");
      if (data.cancel_at_period_end === true) {
        const endsAt = isoDate(data.ends_at ?? data.current_period_end, "data.ends_at");
        return { kind: "cancellation", subscriptionId, endsAt };
      }
      const endsAt = data.ended_at == null ? occurredAt : isoDate(data.ended_at, "data.ended_at");
      return { kind: "cancellation", subscriptionId, endsAt };
    }
    case "subscription.revoked": {
      const subscriptionId = text(data.id, "data.id");
      if (data.status === "unpaid") return { kind: "payment_failed", subscriptionId };
      const endsAt = data.ended_at == null ? occurredAt : isoDate(data.ended_at, "data.ended_at");
      return { kind: "cancellation", subscriptionId, endsAt };
    }
    case "subscription.uncanceled": {
      const periodEnd = optionalIsoDate(data.current_period_end, "data.current_period_end");
      return { kind: "uncancellation", subscriptionId: text(data.id, "data.id"), ...(periodEnd && { periodEnd }) };
    }
    case "subscription.past_due":
      return ignored("Polar retries the payment; it sends subscription.revoked if the retries are exhausted");
    case "order.refunded":
      if (data.status !== "refunded") return ignored("partial refund");
      return {
        kind: "refund",
        refs: refs([text(data.id, "data.id"), optionalText(data.subscription_id, "data.subscription_id")]),
        reason: "refund",
      };
    case "refund.created":
      if (data.dispute == null) return ignored("refunds are read from order.refunded (full or partial)");
      return {
        kind: "refund",
        refs: refs([text(data.order_id, "data.order_id"), optionalText(data.subscription_id, "data.subscription_id")]),
        reason: "chargeback",
      };
    default:
      return ignored(`event type ${type} is not used`);
  }
}

function polarOrderPaid(order: Json): PaymentAction {
  const reason = order.billing_reason;
  const orderId = text(order.id, "data.id");
  const subscriptionId = optionalText(order.subscription_id, "data.subscription_id");
  const subscription = order.subscription == null ? undefined : object(order.subscription, "data.subscription");
  const periodEnd = optionalIsoDate(subscription?.current_period_end, "data.subscription.current_period_end");
  if (reason === "subscription_cycle") {
    if (subscriptionId === undefined) throw malformed("a renewal order has no subscription_id");
    return { kind: "renewal", subscriptionId, ...(periodEnd && { periodEnd }), paymentRefs: [orderId] };
  }
  if (reason !== "purchase" && reason !== "subscription_create") {
    return ignored(`order billing_reason ${String(reason)}`);
  }
  if (reason === "subscription_create" && subscriptionId === undefined) {
    throw malformed("a subscription's first order has no subscription_id");
  }
  const customer = object(order.customer, "data.customer");
  const email = text(customer.email, "data.customer.email");
  const items: unknown[] = [optionalText(order.product_id, "data.product_id")];
  for (const item of list(order.items, "data.items")) {
    items.push(optionalText(object(item, "data.items[]").product_price_id, "data.items[].product_price_id"));
  }
  return {
    kind: "purchase",
    email,
    name:
      optionalText(customer.name, "data.customer.name") ?? optionalText(order.billing_name, "billing_name") ?? email,
    items: refs(items),
    ...(subscriptionId && { subscriptionId }),
    orderId,
    paymentRefs: [orderId],
    ...(periodEnd && { periodEnd }),
  };
}

function ignored(reason: string): PaymentAction {
  return { kind: "ignored", reason };
}

function malformed(message: string): PaymentEventError {
  return new PaymentEventError("malformed", message);
}

/** One header, any case; absent, repeated or empty is a signature failure. */
function singleHeader(headers: Headers, name: string): string {
  const found = Object.entries(headers).filter(([key, value]) => key.toLowerCase() === name && value !== undefined);
  const value = found.length === 1 ? found[0]![1] : undefined;
  const single = Array.isArray(value) ? (value.length === 1 ? value[0] : undefined) : value;
  if (!single) throw new PaymentEventError("signature", `missing or repeated ${name} header`);
  return single;
}

function object(value: unknown, field: string): Json {
  if (typeof value !== "object" || value === null || Array.isArray(value)) throw malformed(`${field} is not an object`);
  return value as Json;
}

function list(value: unknown, field: string): unknown[] {
  if (!Array.isArray(value)) throw malformed(`${field} is not a list`);
  return value;
}

/** A non-empty string without NUL: ids and emails end up in the database and in license files. */
function text(value: unknown, field: string): string {
  if (typeof value !== "string" || value === "") throw malformed(`${field} is missing`);
  if (value.includes("\0")) throw malformed(`${field} contains a NUL byte`);
  return value;
}

function optionalText(value: unknown, field: string): string | undefined {
  return value == null || value === "" ? undefined : text(value, field);
}

/** Stripe's expandable references: an id, or the expanded object carrying it. */
function idOf(value: unknown, field: string): string | undefined {
  if (value == null) return undefined;
  return typeof value === "string" ? text(value, field) : text(object(value, field).id, `${field}.id`);
}

function requiredId(value: unknown, field: string): string {
  const id = idOf(value, field);
  if (id === undefined) throw malformed(`${field} is missing`);
  return id;
}

/** Distinct ids in order of appearance, without the absent ones. */
function refs(values: unknown[]): string[] {
  const out = new Set<string>();
  for (const value of values) if (value != null && value !== "") out.add(text(value, "id"));
  return [...out];
}

/** The latest time an event may name: the end of year 9999 (past it, no provider date is real). */
const LATEST_TIME_MS = Date.UTC(9999, 11, 31, 23, 59, 59);

function unixDate(value: unknown, field: string): Date {
  if (typeof value !== "number" || !Number.isSafeInteger(value) || value < 0 || value * 1000 > LATEST_TIME_MS)
    throw malformed(`${field} is not a time`);
  return new Date(value * 1000);
}

function isoDate(value: unknown, field: string): Date {
  const date = typeof value === "string" ? new Date(value) : undefined;
  if (!date || Number.isNaN(date.getTime()) || date.getTime() < 0 || date.getTime() > LATEST_TIME_MS)
    throw malformed(`${field} is not a time`);
  return date;
}

function optionalIsoDate(value: unknown, field: string): Date | undefined {
  return value == null ? undefined : isoDate(value, field);
}

function latest(dates: Date[]): Date | undefined {
  return dates.reduce<Date | undefined>((max, d) => (max && max >= d ? max : d), undefined);
}

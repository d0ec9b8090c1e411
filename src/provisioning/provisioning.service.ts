import type { Clock } from "../platform/clock.js";
import { sql, timestampOf, type Database, type EntityManager } from "../platform/db.js";
import { Code } from "@connectrpc/connect";
import { DomainError, failedPrecondition, notFound } from "../platform/errors.js";
import { LATEST_REQUEST_TIME } from "../platform/request-fields.js";
import { newId } from "../platform/ids.js";
import type { Page } from "../platform/pagination.js";
import type { Events } from "../events/events.js";
import type { PaymentAction, PaymentEvent, PaymentEventError, PaymentProvider } from "./payment-events.js";
import type { EmailOutbox } from "./email-outbox.js";
import type { PaymentSource, PaymentSourceService } from "./payment-source.service.js";

/**
 * What provisioning asks of licensing (an interface this domain owns; app.ts fills it with the licensing services):
 * each call runs in the caller's transaction and goes through the same service, checks and audit events as the API.
 */
export interface ProvisioningLicenses {
  /** The tenant's customer with this e-mail (compared case-insensitively), if any. */
  findCustomerByEmail(em: EntityManager, tenantId: string, email: string): Promise<string | undefined>;
  createCustomer(
    em: EntityManager,
    tenantId: string,
    actor: string,
    input: { name: string; email: string; metadata: Record<string, string> },
  ): Promise<string>;
  /** A license of the policy; `expiresAt` undefined takes the policy's duration. */
  createLicense(
    em: EntityManager,
    tenantId: string,
    actor: string,
    input: { policyId: string; customerId: string; expiresAt: Date | undefined; metadata: Record<string, string> },
  ): Promise<{ id: string; key: string }>;
  /** RenewLicense; with `until`, the expiry moves to it (never earlier) rather than by the policy's duration. */
  renew(em: EntityManager, tenantId: string, actor: string, licenseId: string, until: Date | undefined): Promise<void>;
  /** The license's expiry set to `expiresAt` (UpdateLicense's `expire_time`). */
  setExpiry(em: EntityManager, tenantId: string, actor: string, licenseId: string, expiresAt: Date): Promise<void>;
  suspend(em: EntityManager, tenantId: string, actor: string, licenseId: string): Promise<void>;
  reinstate(em: EntityManager, tenantId: string, actor: string, licenseId: string): Promise<void>;
  revoke(em: EntityManager, tenantId: string, actor: string, licenseId: string): Promise<void>;
  /** The license's stored status, or undefined when it was deleted. */
  status(em: EntityManager, tenantId: string, licenseId: string): Promise<string | undefined>;
  /** A signed offline license file for the license (IssueLicenseFile: Ed25519, any machine, until it expires). */
  issueFile(em: EntityManager, tenantId: string, actor: string, licenseId: string): Promise<string>;
  /** What a license-key e-mail names: the product's and the policy's names, and the expiry. */
  describe(
    em: EntityManager,
    tenantId: string,
    licenseId: string,
  ): Promise<{ productName: string; policyName: string; expiresAt: Date | null }>;
}

export type PaymentEventStatus = "applied" | "ignored" | "failed";

export interface RecordedPaymentEvent {
  id: string;
  tenantId: string;
  sourceId: string;
  providerEventId: string;
  type: string;
  action: PaymentAction;
  status: PaymentEventStatus;
  reason: string;
  licenseIds: string[];
  attempts: number;
  occurredAt: Date;
  receivedAt: Date;
  updatedAt: Date;
}

interface EventRow {
  id: string;
  tenant_id: string;
  source_id: string;
  provider_event_id: string;
  type: string;
  occurred_at: Date | string;
  action: Record<string, unknown>;
  status: PaymentEventStatus;
  reason: string;
  license_ids: string[];
  attempts: number;
  received_at: Date | string;
  updated_at: Date | string;
}

const EVENT_COLUMNS = `id, tenant_id, source_id, provider_event_id, type, occurred_at, action, status, reason,
  license_ids, attempts, received_at, updated_at`;

/** The action as stored (jsonb): its dates were written as ISO 8601 text. */
function actionOf(json: Record<string, unknown>): PaymentAction {
  const action = { ...json };
  for (const k of ["periodEnd", "endsAt"]) if (typeof action[k] === "string") action[k] = new Date(action[k]);
  return action as unknown as PaymentAction;
}

const eventOf = (r: EventRow): RecordedPaymentEvent => ({
  id: r.id,
  tenantId: r.tenant_id,
  sourceId: r.source_id,
  providerEventId: r.provider_event_id,
  type: r.type,
  action: actionOf(r.action),
  status: r.status,
  reason: r.reason,
  licenseIds: r.license_ids,
  attempts: r.attempts,
  occurredAt: timestampOf(r.occurred_at),
  receivedAt: timestampOf(r.received_at),
  updatedAt: timestampOf(r.updated_at),
});

/** What a hook request gets: an HTTP status and a small JSON body for the provider's delivery log. */
export interface HookAnswer {
  status: number;
  body: Record<string, unknown>;
}

interface Outcome {
  status: PaymentEventStatus;
  reason: string;
  licenseIds: string[];
}

/** An expiry a provider's date gives, in the range every licensd time has (docs/requests.md); FAILED past it. */
function expiryFrom(date: Date | undefined): Date | undefined {
  if (date !== undefined && date >= LATEST_REQUEST_TIME.date)
    throw new DomainError(
      Code.OutOfRange,
      "EXPIRY_OUT_OF_RANGE",
      `the provider's date ${date.toISOString()} is past ${LATEST_REQUEST_TIME.text}`,
    );
  return date;
}

const applied = (licenseIds: string[]): Outcome => ({ status: "applied", reason: "", licenseIds });
const failed = (reason: string): Outcome => ({ status: "failed", reason, licenseIds: [] });

/**
 * Turns verified provider events into customers and licenses: each event recorded once by its provider id (a
 * redelivery changes nothing), applied in the transaction that records it, through the licensing services.
 */
export function createProvisioningService(deps: {
  db: Database;
  clock: Clock;
  events: Events;
  sources: PaymentSourceService;
  licenses: ProvisioningLicenses;
  outbox: EmailOutbox;
}) {
  const { db, clock, events, sources, licenses, outbox } = deps;
  // Loaded on the first hook request: the stripe package alone adds about 28 MB to the process (measured), which a
  // server that never hears from a provider should not carry.
  let reading: Promise<typeof import("./payment-events.js")> | undefined;
  const readEvents = () => {
    reading ??= import("./payment-events.js");
    return reading;
  };
  const actorOf = (source: PaymentSource) => `payment:${source.id}`;

  async function linked(em: EntityManager, sourceId: string, refs: string[]) {
    const rows = await sql<{ license_id: string; suspended_by_payment: boolean }>(
      em,
      `select distinct license_id, suspended_by_payment from payment_links where source_id = $1 and ref = any($2)
        order by license_id`,
      [sourceId, refs],
    );
    return rows;
  }

  async function link(em: EntityManager, source: PaymentSource, refs: string[], licenseId: string) {
    for (const ref of new Set(refs.filter((r) => r !== "")))
      await sql(
        em,
        `insert into payment_links (source_id, ref, tenant_id, license_id, created_at) values ($1, $2, $3, $4, $5)
          on conflict do nothing`,
        [source.id, ref, source.tenantId, licenseId, clock.now()],
      );
  }

  /** The licenses a subscription's purchase created and still exist, or a failure naming the subscription. */
  /** The licenses linked to any of `refs` that still exist (a vendor may have deleted one). */
  async function linkedLicenses(em: EntityManager, source: PaymentSource, refs: string[]) {
    const live = [];
    for (const row of await linked(em, source.id, refs))
      if ((await licenses.status(em, source.tenantId, row.license_id)) !== undefined) live.push(row);
    return live;
  }

  const subscriptionLicenses = (em: EntityManager, source: PaymentSource, subscriptionId: string) =>
    linkedLicenses(em, source, [subscriptionId]);

  const unlinked = (what: string) =>
    failed(`no license for ${what}: its purchase has not arrived (this event is applied when it does) or failed`);

  /** Applies one action. Throws only for a bug or the database; a DomainError is turned into FAILED by the caller. */
  async function apply(
    em: EntityManager,
    source: PaymentSource,
    action: PaymentAction,
    eventId: string,
  ): Promise<Outcome> {
    const { tenantId } = source;
    const actor = actorOf(source);
    switch (action.kind) {
      case "ignored":
        return { status: "ignored", reason: action.reason, licenseIds: [] };
      case "purchase": {
        const mapped = source.mappings.filter((m) => action.items.includes(m.item));
        if (mapped.length === 0) {
          const what =
            action.items.length === 0 ? "the purchase (it names no price or product)" : action.items.join(", ");
          return failed(`no mapping for ${what}: add one (UpdatePaymentSource), then replay this event`);
        }
        const customerId =
          (await licenses.findCustomerByEmail(em, tenantId, action.email)) ??
          (await licenses.createCustomer(em, tenantId, actor, {
            name: action.name,
            email: action.email,
            metadata: { payment_source: source.id },
          }));
        const created = [];
        for (const m of mapped) {
          const license = await licenses.createLicense(em, tenantId, actor, {
            policyId: m.policyId,
            customerId,
            // A subscription's license runs to the end of the period paid for; a one-time purchase takes the policy's.
            expiresAt: action.subscriptionId ? expiryFrom(action.periodEnd) : undefined,
            metadata: {
              ...m.metadata,
              payment_source: source.id,
              payment_item: m.item,
              ...(action.subscriptionId ? { payment_subscription: action.subscriptionId } : {}),
              payment_order: action.orderId,
            },
          });
          await link(em, source, [action.subscriptionId ?? "", action.orderId, ...action.paymentRefs], license.id);
          if (source.emailLicenseKeys) {
            const about = await licenses.describe(em, tenantId, license.id);
            await outbox.queue(em, {
              tenantId,
              licenseId: license.id,
              paymentEventId: eventId,
              name: action.name,
              key: license.key,
              attachment: m.attachLicenseFile
                ? { filename: `${license.id}.lic`, content: await licenses.issueFile(em, tenantId, actor, license.id) }
                : undefined,
              vars: {
                customer_name: action.name,
                customer_email: action.email,
                license_id: license.id,
                product_name: about.productName,
                policy_name: about.policyName,
                expires_at: about.expiresAt?.toISOString() ?? "",
              },
            });
          }
          created.push(license.id);
        }
        return applied(created);
      }
      case "renewal": {
        const rows = await subscriptionLicenses(em, source, action.subscriptionId);
        if (rows.length === 0) return unlinked(`subscription ${action.subscriptionId}`);
        const changed = [];
        for (const row of rows) {
          const status = await licenses.status(em, tenantId, row.license_id);
          if (status === "revoked") continue;
          // A license this source suspended for a failed payment comes back once one is paid; one a vendor suspended
          // stays suspended.
          if (status === "suspended" && row.suspended_by_payment) {
            await licenses.reinstate(em, tenantId, actor, row.license_id);
            await sql(
              em,
              `update payment_links set suspended_by_payment = false where source_id = $1 and license_id = $2`,
              [source.id, row.license_id],
            );
          }
          await licenses.renew(em, tenantId, actor, row.license_id, action.periodEnd);
          await link(em, source, action.paymentRefs, row.license_id);
          changed.push(row.license_id);
        }
        return changed.length > 0
          ? applied(changed)
          : { status: "ignored", reason: "its licenses are revoked", licenseIds: [] };
      }
      case "cancellation":
      case "uncancellation": {
        const rows = await subscriptionLicenses(em, source, action.subscriptionId);
        if (rows.length === 0) return unlinked(`subscription ${action.subscriptionId}`);
        const until = expiryFrom(action.kind === "cancellation" ? action.endsAt : action.periodEnd);
        if (until === undefined)
          return { status: "ignored", reason: "the provider gave no end of the paid period", licenseIds: [] };
        const now = clock.now();
        for (const row of rows)
          await licenses.setExpiry(
            em,
            tenantId,
            actor,
            row.license_id,
            new Date(Math.max(until.getTime(), now.getTime())),
          );
        return applied(rows.map((r) => r.license_id));
      }
      case "payment_failed": {
        const rows = await subscriptionLicenses(em, source, action.subscriptionId);
        if (rows.length === 0) return unlinked(`subscription ${action.subscriptionId}`);
        const suspended = [];
        for (const row of rows) {
          if ((await licenses.status(em, tenantId, row.license_id)) !== "active") continue;
          await licenses.suspend(em, tenantId, actor, row.license_id);
          await sql(
            em,
            `update payment_links set suspended_by_payment = true where source_id = $1 and license_id = $2`,
            [source.id, row.license_id],
          );
          suspended.push(row.license_id);
        }
        return suspended.length > 0
          ? applied(suspended)
          : { status: "ignored", reason: "its licenses are not active", licenseIds: [] };
      }
      case "refund": {
        const live = (await linkedLicenses(em, source, action.refs)).map((row) => row.license_id);
        if (live.length === 0) return unlinked(`payment ${action.refs.join(", ")}`);
        for (const id of live) await licenses.revoke(em, tenantId, actor, id);
        return applied(live);
      }
    }
  }

  /**
   * Applies `action` inside a savepoint: a DomainError (a policy deleted since, a renewal past the latest expiry…)
   * undoes what the attempt did and makes the event FAILED with its reason; any other error fails the transaction.
   */
  async function attempt(
    em: EntityManager,
    source: PaymentSource,
    action: PaymentAction,
    eventId: string,
  ): Promise<Outcome> {
    for (let tries = 1; ; tries++) {
      await sql(em, "savepoint provisioning");
      try {
        const outcome = await apply(em, source, action, eventId);
        await sql(em, "release savepoint provisioning");
        return outcome;
      } catch (err) {
        if (!(err instanceof DomainError)) throw err;
        await sql(em, "rollback to savepoint provisioning");
        // Entities the attempt loaded or created may no longer match the database.
        em.clear();
        // Two purchases by a new buyer at once: the other one created the customer (committed when our insert saw
        // it); looked up again, it is found.
        if (err.reason === "CUSTOMER_EMAIL_TAKEN" && tries < 2) continue;
        return failed(`${err.reason}: ${err.message}`);
      }
    }
  }

  /** Records the outcome; a FAILED one is also an audit event (`payment.event_failed`): webhooks tell the vendor. */
  async function settle(em: EntityManager, source: PaymentSource, eventId: string, type: string, outcome: Outcome) {
    await sql(
      em,
      `update payment_events set status = $2, reason = $3, license_ids = $4, updated_at = $5 where id = $1`,
      [eventId, outcome.status, outcome.reason, outcome.licenseIds, clock.now()],
    );
    if (outcome.status === "failed")
      await events.emit(em, {
        tenantId: source.tenantId,
        type: "payment.event_failed",
        subject: eventId,
        actor: actorOf(source),
        payload: { source_id: source.id, provider_type: type, reason: outcome.reason },
      });
  }

  /**
   * After a purchase is applied: the events of its subscription or payments that came first (providers promise no
   * order: a renewal or cancellation may arrive before the purchase) and FAILED for want of its license, applied now.
   */
  async function applyWaiting(em: EntityManager, source: PaymentSource, purchase: PaymentAction) {
    if (purchase.kind !== "purchase") return;
    const refs = [purchase.subscriptionId ?? "", purchase.orderId, ...purchase.paymentRefs].filter((r) => r !== "");
    const waiting = await sql<EventRow>(
      em,
      `select ${EVENT_COLUMNS} from payment_events
        where source_id = $1 and status = 'failed' and reason like 'no license for %'
          and (action->>'subscriptionId' = any($2) or action->'refs' ?| $2)
        order by occurred_at, id for update`,
      [source.id, refs],
    );
    for (const row of waiting) {
      const event = eventOf(row);
      await sql(em, `update payment_events set attempts = attempts + 1 where id = $1`, [event.id]);
      await settle(em, source, event.id, event.type, await attempt(em, source, event.action, event.id));
    }
  }

  async function getEvent(em: EntityManager, tenantId: string, id: string, lock = false) {
    const [row] = await sql<EventRow>(
      em,
      `select ${EVENT_COLUMNS} from payment_events where tenant_id = $1 and id = $2 ${lock ? "for update" : ""}`,
      [tenantId, id],
    );
    if (!row) throw notFound("payment event", id);
    return eventOf(row);
  }

  return {
    getEvent,

    /**
     * One POST to a hook path: verified with the source's secrets before anything else, recorded once by the
     * provider's event id, applied. 404 for no such enabled source, 400 for a bad or stale signature or a body that
     * is not that provider's event (nothing recorded), 200 once recorded (whatever became of it: a FAILED event is
     * listed and replayed through the API, not retried by the provider).
     */
    async receive(
      provider: PaymentProvider,
      sourceId: string,
      body: Buffer,
      headers: Record<string, string | string[] | undefined>,
    ): Promise<HookAnswer> {
      const found = await sources.forHook(db.em(), provider, sourceId);
      const missing = { status: 404, body: { error: "not_found", message: `no payment source ${sourceId}` } };
      if (!found) return missing;
      const reader = await readEvents();
      const read = provider === "stripe" ? reader.readStripeEvent : reader.readPolarEvent;
      let event: PaymentEvent | undefined;
      let refusal: PaymentEventError | undefined;
      for (const secret of found.secrets) {
        try {
          event = read(body, headers, secret, clock.now());
          break;
        } catch (err) {
          if (!(err instanceof reader.PaymentEventError)) throw err;
          refusal = err;
          // The signature held: the body itself is wrong, whatever the other secret says.
          if (err.reason === "malformed") break;
        }
      }
      if (!event) return { status: 400, body: { error: refusal!.reason, message: refusal!.message } };
      const verified = event;
      return db.tx(async (em) => {
        // Read again in the transaction: deleted or disabled since, it takes no more events.
        const current = await sources.forHook(em, provider, sourceId);
        if (!current) return missing;
        const { source } = current;
        const now = clock.now();
        const id = newId("pev");
        const [fresh] = await sql<{ id: string }>(
          em,
          `insert into payment_events (id, tenant_id, source_id, provider_event_id, type, occurred_at, action, status,
             reason, license_ids, attempts, received_at, updated_at)
           values ($1, $2, $3, $4, $5, $6, $7, 'failed', '', '{}', 1, $8, $8)
           on conflict (source_id, provider_event_id) do nothing returning id`,
          [
            id,
            source.tenantId,
            source.id,
            verified.id,
            verified.type,
            verified.occurredAt,
            JSON.stringify(verified.action),
            now,
          ],
        );
        if (!fresh) {
          const [first] = await sql<{ id: string; status: string }>(
            em,
            `select id, status from payment_events where source_id = $1 and provider_event_id = $2`,
            [source.id, verified.id],
          );
          return { status: 200, body: { status: "duplicate", event_id: first!.id, first_status: first!.status } };
        }
        const outcome = await attempt(em, source, verified.action, id);
        await settle(em, source, id, verified.type, outcome);
        if (outcome.status === "applied") await applyWaiting(em, source, verified.action);
        return {
          status: 200,
          body: { status: outcome.status, event_id: id, license_ids: outcome.licenseIds, reason: outcome.reason },
        };
      });
    },

    async listEvents(
      em: EntityManager,
      tenantId: string,
      page: Page,
      f: { sourceId: string; status: PaymentEventStatus | undefined },
    ): Promise<RecordedPaymentEvent[]> {
      const rows = await sql<EventRow>(
        em,
        `select ${EVENT_COLUMNS} from payment_events
          where tenant_id = $1 and ($2::text is null or id < $2) and ($3 = '' or source_id = $3)
            and ($4::text is null or status = $4)
          order by id desc limit $5`,
        [tenantId, page.after ?? null, f.sourceId, f.status ?? null, page.size + 1],
      );
      return rows.map(eventOf);
    },

    /** Applies a FAILED event again with the source as it is now (ReplayPaymentEvent). */
    async replay(em: EntityManager, tenantId: string, id: string): Promise<RecordedPaymentEvent> {
      const event = await getEvent(em, tenantId, id, true);
      if (event.status !== "failed")
        throw failedPrecondition(
          "PAYMENT_EVENT_NOT_FAILED",
          `payment event ${id} is ${event.status}: only a failed one is replayed`,
          { id },
        );
      const source = await sources.get(em, tenantId, event.sourceId);
      await sql(em, `update payment_events set attempts = attempts + 1 where id = $1`, [id]);
      const outcome = await attempt(em, source, event.action, id);
      await settle(em, source, id, event.type, outcome);
      if (outcome.status === "applied") await applyWaiting(em, source, event.action);
      return getEvent(em, tenantId, id);
    },
  };
}

export type ProvisioningService = ReturnType<typeof createProvisioningService>;

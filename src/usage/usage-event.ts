/*
 * One usage event, checked: its fields, its license (by key, lease or id) and meter,
 * its hour and limit period. A bad event becomes a rejection with its index, reason and
 * the field it names; the rest of its batch goes on.
 */
import type { Principal } from "../platform/auth.js";
import { hasScope } from "../platform/auth.js";
import type { SigningKeyStore } from "../platform/signing-keys.js";
import { timestampMs, type Timestamp } from "@bufbuild/protobuf/wkt";
import { verifyLease } from "../licensing/lease-verify.js";
import { periodOf, unusable, type LicenseRow, type MeterRow, type UsageLookups } from "./usage-records.js";

/** How far in the past and future an event's time may be. */
export const MAX_PAST_MS = 7 * 86_400_000;
export const MAX_FUTURE_MS = 5 * 60_000;
/** Deduplication keys are kept longer than the oldest event accepted, so a resend is always caught. */
export const DEDUPE_RETENTION_MS = MAX_PAST_MS + 86_400_000;
const MAX_ATTRIBUTES = 16;

const HOUR = 3_600_000;

/** What one event may count: exact in JavaScript; totals are summed in numeric (see int64Total). */
const MAX_QUANTITY = BigInt(Number.MAX_SAFE_INTEGER);

// PostgreSQL text cannot hold NUL. (Half a surrogate pair cannot arrive: both decoders refuse it.)
const storable = (s: string) => !s.includes("\0");

/**
 * One event as received: the proto's fields, so a decoded UsageEvent is one as it stands
 * (no copy per event of a batch of hundreds).
 */
export interface IncomingEvent {
  licenseKey: string;
  licenseId: string;
  metric: string;
  quantity: bigint;
  /** None: now. */
  time?: Timestamp;
  idempotencyKey: string;
  agentId: string;
  attributes: Record<string, string>;
  /** A lease token naming the license (agents that hold one). */
  lease: string;
}

export interface Rejection {
  index: number;
  reason: string;
  message: string;
}

/** An event that passed validation, with everything its transaction needs. */
export interface Prepared {
  index: number;
  license: LicenseRow;
  meter: MeterRow;
  ts: Date;
  hour: Date;
  periodStart: Date;
  periodEnd: Date | null;
  /** license|meter|period start: the period total the event counts toward. */
  group: string;
  /** group|agent: the agent's token total it also counts toward (a meter counting agent tokens), else "". */
  agentGroup: string;
  quantity: bigint;
  key: string;
  agentId: string;
  attributes: Record<string, string>;
  uniqueValue: string;
}

/** What a lease names, or why it is refused. */
type LeaseLookup = { license: LicenseRow | undefined } | { rejection: string };

/**
 * The licenses and meters a batch names, each loaded once (concurrently) before its
 * events are checked: the check itself is then synchronous, with no promise per event.
 */
export interface Resolved {
  /**
   * By presented key: the license, undefined when no license has the key, null for a key that fails its format or HMAC.
   */
  byKey: Map<string, LicenseRow | undefined | null>;
  byId: Map<string, LicenseRow | undefined>;
  byLease: Map<string, LeaseLookup>;
  /** product id → metric → meter */
  meters: Map<string, Map<string, MeterRow>>;
}

const mayNameById = (principal: Principal) => hasScope(principal, "ingest");

/**
 * Loads what the batch's events name: licenses by key, lease and id, then their products' meters (again, once, for a
 * metric not known yet).
 */
export async function resolveBatch(
  look: UsageLookups,
  signingKeys: SigningKeyStore,
  batch: IncomingEvent[],
  principal: Principal,
  now: Date,
): Promise<Resolved> {
  const r: Resolved = { byKey: new Map(), byId: new Map(), byLease: new Map(), meters: new Map() };
  const loads: Promise<unknown>[] = [];
  const metrics = new Set<string>();
  for (const e of batch) {
    metrics.add(e.metric);
    if (e.licenseKey) {
      if (!r.byKey.has(e.licenseKey)) {
        const key = e.licenseKey;
        r.byKey.set(key, null);
        const lookup = look.byPresentedKey(key);
        if (lookup) loads.push(lookup.then((l) => r.byKey.set(key, l)));
      }
    } else if (e.lease) {
      if (!r.byLease.has(e.lease)) {
        const token = e.lease;
        // Only the signature and expiry matter here; the lease names its own machine.
        const fingerprint = /^[^.]+\.([^.]+)\./.exec(token)?.[1];
        let claimed: { fingerprint?: unknown } = {};
        try {
          claimed = JSON.parse(Buffer.from(fingerprint ?? "", "base64url").toString("utf8")) as {
            fingerprint?: unknown;
          };
        } catch {
          // not a lease: verifyLease says so below
        }
        const check = verifyLease(token, signingKeys.publicKeys(), {
          fingerprint: typeof claimed.fingerprint === "string" ? claimed.fingerprint : "",
          now,
        });
        if (!check.valid || !check.lease)
          r.byLease.set(token, {
            rejection:
              check.code === "EXPIRED"
                ? "the lease expired; heartbeat for a fresh one"
                : `does not verify (${check.code})`,
          });
        else {
          r.byLease.set(token, { license: undefined });
          loads.push(look.byId(check.lease.license_id).then((license) => r.byLease.set(token, { license })));
        }
      }
    } else if (e.licenseId && storable(e.licenseId) && mayNameById(principal) && !r.byId.has(e.licenseId)) {
      const id = e.licenseId;
      r.byId.set(id, undefined);
      loads.push(look.byId(id).then((l) => r.byId.set(id, l)));
    }
  }
  await Promise.all(loads);
  const products = new Map<string, string>();
  const licenses = [
    ...r.byKey.values(),
    ...r.byId.values(),
    ...[...r.byLease.values()].map((x) => ("license" in x ? x.license : undefined)),
  ];
  for (const l of licenses) if (l) products.set(l.productId, l.tenantId);
  const loadMeters = (fresh: boolean, ids: Iterable<string>) =>
    Promise.all(
      [...ids].map(async (productId) =>
        r.meters.set(productId, await look.meters(productId, products.get(productId)!, fresh)),
      ),
    );
  await loadMeters(false, products.keys());
  // A metric the cached meters do not know may be new: those products are read again, once.
  // (Event by event only when some product lacks one of the batch's metrics.)
  const stale = new Set<string>();
  const complete = [...r.meters.values()].every((byMetric) => [...metrics].every((m) => byMetric.has(m)));
  if (!complete)
    for (const e of batch) {
      const l = e.licenseKey
        ? r.byKey.get(e.licenseKey)
        : e.lease
          ? (r.byLease.get(e.lease) as { license?: LicenseRow } | undefined)?.license
          : r.byId.get(e.licenseId);
      if (l && !r.meters.get(l.productId)!.has(e.metric)) stale.add(l.productId);
    }
  if (stale.size > 0) await loadMeters(true, stale);
  return r;
}

/** The period total an event counts toward: one per (license, meter, period start) in a batch. */
interface Slot {
  start: Date;
  end: Date | null;
  /** license|meter|period start, one string shared by the slot's events (its hash is worked out once). */
  group: string;
  /** group|agent, per agent, likewise shared. */
  agentGroups: Map<string, string>;
}

/**
 * Per batch: one Date per hour, and one slot per (license, meter, period), found through
 * maps keyed by the (shared) license and meter records rather than by strings built per
 * event: a batch of hundreds of events otherwise spends more on building and hashing
 * keys than on checking the events.
 */
export class TimeShapes {
  private readonly hours = new Map<number, Date>();
  private readonly slots = new Map<LicenseRow, Map<MeterRow, Map<number, Slot>>>();
  /** The hours of the events prepared so far. */
  hoursSeen(): Iterable<Date> {
    return this.hours.values();
  }
  hourOf(ts: Date): Date {
    const ms = Math.floor(ts.getTime() / HOUR) * HOUR;
    let d = this.hours.get(ms);
    if (!d) {
      d = new Date(ms);
      this.hours.set(ms, d);
    }
    return d;
  }
  slotOf(meter: MeterRow, ts: Date, license: LicenseRow): Slot {
    // Keyed by what decides the period (its day, month, or the license), computed before any Date is made.
    const at =
      meter.period === "day"
        ? Math.floor(ts.getTime() / 86_400_000)
        : meter.period === "month"
          ? ts.getUTCFullYear() * 12 + ts.getUTCMonth()
          : 0;
    let byMeter = this.slots.get(license);
    if (!byMeter) {
      byMeter = new Map();
      this.slots.set(license, byMeter);
    }
    let byPeriod = byMeter.get(meter);
    if (!byPeriod) {
      byPeriod = new Map();
      byMeter.set(meter, byPeriod);
    }
    let slot = byPeriod.get(at);
    if (!slot) {
      const { start, end } = periodOf(meter.period, ts, license);
      slot = { start, end, group: `${license.id}|${meter.id}|${start.getTime()}`, agentGroups: new Map() };
      byPeriod.set(at, slot);
    }
    return slot;
  }
  agentGroupOf(slot: Slot, agentId: string): string {
    let g = slot.agentGroups.get(agentId);
    if (g === undefined) {
      g = `${slot.group}|${agentId}`;
      slot.agentGroups.set(agentId, g);
    }
    return g;
  }
}

/** Checks one event against what its batch resolved; a Rejection says why it is refused. */
export function prepareEvent(
  resolved: Resolved,
  shapes: TimeShapes,
  e: IncomingEvent,
  index: number,
  principal: Principal,
  now: Date,
  requireKey: boolean,
): Prepared | Rejection {
  const reject = (reason: string, message: string): Rejection => ({ index, reason, message });
  if (requireKey && !e.idempotencyKey) return reject("INVALID_EVENT", "idempotency_key: required on streams");
  if (e.idempotencyKey.length > 128) return reject("INVALID_EVENT", "idempotency_key: at most 128 characters");
  if (e.quantity < 0n || e.quantity > MAX_QUANTITY)
    return reject("INVALID_QUANTITY", `quantity: must be from 0 to ${MAX_QUANTITY} (2^53−1)`);
  if (e.agentId.length > 128) return reject("INVALID_EVENT", "agent_id: at most 128 characters");
  let attrCount = 0;
  for (const k in e.attributes) {
    const v = e.attributes[k];
    if (++attrCount > MAX_ATTRIBUTES || k.length === 0 || k.length > 63 || v.length > 256) {
      return reject(
        "INVALID_EVENT",
        `attributes: at most ${MAX_ATTRIBUTES}, keys 1 to 63 characters, values up to 256`,
      );
    }
  }
  // Refused here, not failed in the batch's SQL.
  if (!storable(e.idempotencyKey)) return reject("INVALID_EVENT", "idempotency_key: must not contain NUL");
  if (!storable(e.agentId)) return reject("INVALID_EVENT", "agent_id: must not contain NUL");
  if (!storable(e.metric)) return reject("INVALID_EVENT", "metric: must not contain NUL");
  if (!storable(e.licenseId)) return reject("INVALID_EVENT", "license_id: must not contain NUL");
  for (const k in e.attributes)
    if (!storable(k) || !storable(e.attributes[k])) return reject("INVALID_EVENT", "attributes: must not contain NUL");
  const ts = e.time ? new Date(timestampMs(e.time)) : now;
  if (
    Number.isNaN(ts.getTime()) ||
    ts.getTime() > now.getTime() + MAX_FUTURE_MS ||
    ts.getTime() < now.getTime() - MAX_PAST_MS
  ) {
    return reject("INVALID_TIME", "time: must be within the last 7 days and at most 5 minutes ahead");
  }

  let license: LicenseRow | undefined | null;
  if (e.licenseKey) {
    license = resolved.byKey.get(e.licenseKey);
    if (license === null) return reject("INVALID_LICENSE_KEY", "license_key: not a valid license key");
    if (!license) return reject("INVALID_LICENSE_KEY", "license_key: no license has this key");
  } else if (e.lease) {
    const found = resolved.byLease.get(e.lease)!;
    if ("rejection" in found) return reject("INVALID_LEASE", `lease: ${found.rejection}`);
    license = found.license;
    if (!license) return reject("LICENSE_NOT_FOUND", "lease: its license no longer exists");
  } else if (e.licenseId) {
    if (principal.kind === "anonymous")
      return reject("UNAUTHENTICATED", "license_id: naming a license by id needs an API key with the ingest scope");
    if (!mayNameById(principal)) return reject("SCOPE_REQUIRED", "license_id: the API key needs the ingest scope");
    license = resolved.byId.get(e.licenseId);
    if (!license || (principal.kind === "tenant" && license.tenantId !== principal.tenantId))
      return reject("LICENSE_NOT_FOUND", `license_id: license ${JSON.stringify(e.licenseId)} not found`);
  } else {
    return reject("INVALID_EVENT", "license_key, lease or license_id: one is required");
  }
  const bad = unusable(license, now);
  if (bad) return reject(bad.reason, bad.message);
  const meter = resolved.meters.get(license.productId)?.get(e.metric);
  if (!meter) return reject("UNKNOWN_METRIC", `metric: the license's product has no meter ${JSON.stringify(e.metric)}`);
  if (meter.agentTokens && e.agentId && license.disabledAgents.has(e.agentId))
    return reject("AGENT_DISABLED", `agent_id: the license does not entitle agent ${JSON.stringify(e.agentId)}`);
  let uniqueValue = "";
  if (meter.aggregation === "unique_count") {
    uniqueValue = e.attributes[meter.uniqueAttribute] ?? "";
    if (!uniqueValue)
      return reject(
        "INVALID_EVENT",
        `attributes.${meter.uniqueAttribute}: required by the UNIQUE_COUNT meter ${meter.metric}`,
      );
  }
  const slot = shapes.slotOf(meter, ts, license);
  return {
    index,
    license,
    meter,
    ts,
    hour: shapes.hourOf(ts),
    periodStart: slot.start,
    periodEnd: slot.end,
    group: slot.group,
    agentGroup: meter.agentTokens && e.agentId ? shapes.agentGroupOf(slot, e.agentId) : "",
    quantity: e.quantity,
    key: e.idempotencyKey,
    agentId: e.agentId,
    attributes: e.attributes,
    uniqueValue,
  };
}

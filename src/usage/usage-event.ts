/*
 * One usage event, checked: its fields, its license (by key, lease or id) and meter,
 * its hour and limit period. A bad event becomes a rejection with its index, reason and
 * the field it names; the rest of its batch goes on.
 */
import type { Principal } from "../platform/auth.js";
import { hasScope } from "../platform/auth.js";
import type { SigningKeyStore } from "../platform/signing-keys.js";
import { verifyLease } from "../sdk/lease.js";
import { periodOf, unusable, type LicenseRow, type MeterRow, type UsageLookups } from "./usage-records.js";

/** How far in the past and future an event's time may be. */
export const MAX_PAST_MS = 7 * 86_400_000;
export const MAX_FUTURE_MS = 5 * 60_000;
/** Deduplication keys are kept longer than the oldest event accepted, so a resend is always caught. */
export const DEDUPE_RETENTION_MS = MAX_PAST_MS + 86_400_000;
const MAX_ATTRIBUTES = 16;

const HOUR = 3_600_000;

/** One event as received (the proto's fields, transport-neutral). */
export interface IncomingEvent {
  licenseKey: string;
  licenseId: string;
  metric: string;
  quantity: bigint;
  time: Date | undefined;
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
  quantity: bigint;
  key: string;
  agentId: string;
  attributes: Record<string, string>;
  uniqueValue: string;
}

/** Checks one event and resolves its license and meter; a string is the rejection. */
export async function prepareEvent(look: UsageLookups, signingKeys: SigningKeyStore, e: IncomingEvent, index: number, principal: Principal, now: Date, requireKey: boolean): Promise<Prepared | Rejection> {
  const reject = (reason: string, message: string): Rejection => ({ index, reason, message });
  if (requireKey && !e.idempotencyKey) return reject("INVALID_EVENT", "idempotency_key: required on streams");
  if (e.idempotencyKey.length > 128) return reject("INVALID_EVENT", "idempotency_key: at most 128 characters");
  if (e.quantity < 0n) return reject("INVALID_QUANTITY", "quantity: must be 0 or more");
  if (e.agentId.length > 128) return reject("INVALID_EVENT", "agent_id: at most 128 characters");
  const attrs = Object.entries(e.attributes);
  if (attrs.length > MAX_ATTRIBUTES || attrs.some(([k, v]) => k.length === 0 || k.length > 63 || v.length > 256)) {
    return reject("INVALID_EVENT", `attributes: at most ${MAX_ATTRIBUTES}, keys 1 to 63 characters, values up to 256`);
  }
  const ts = e.time ?? now;
  if (Number.isNaN(ts.getTime()) || ts.getTime() > now.getTime() + MAX_FUTURE_MS || ts.getTime() < now.getTime() - MAX_PAST_MS) {
    return reject("INVALID_TIME", "time: must be within the last 7 days and at most 5 minutes ahead");
  }

  let license: LicenseRow | undefined;
  if (e.licenseKey) {
    const lookup = look.byPresentedKey(e.licenseKey);
    if (!lookup) return reject("INVALID_LICENSE_KEY", "license_key: not a valid license key");
    license = await lookup;
    if (!license) return reject("INVALID_LICENSE_KEY", "license_key: no license has this key");
  } else if (e.lease) {
    // Only the signature and expiry matter here; the lease names its own machine.
    const fingerprint = /^[^.]+\.([^.]+)\./.exec(e.lease)?.[1];
    let claimed: { fingerprint?: unknown } = {};
    try {
      claimed = JSON.parse(Buffer.from(fingerprint ?? "", "base64url").toString("utf8")) as { fingerprint?: unknown };
    } catch {
      // not a lease: verifyLease says so below
    }
    const check = verifyLease(e.lease, signingKeys.publicKeys(), { fingerprint: typeof claimed.fingerprint === "string" ? claimed.fingerprint : "", now });
    if (!check.valid || !check.lease) return reject("INVALID_LEASE", `lease: ${check.code === "EXPIRED" ? "the lease expired; heartbeat for a fresh one" : `does not verify (${check.code})`}`);
    license = await look.byId(check.lease.license_id);
    if (!license) return reject("LICENSE_NOT_FOUND", "lease: its license no longer exists");
  } else if (e.licenseId) {
    if (principal.kind === "anonymous") return reject("UNAUTHENTICATED", "license_id: naming a license by id needs an API key with the ingest scope");
    if (principal.kind === "tenant" && !hasScope(principal, "ingest")) return reject("SCOPE_REQUIRED", "license_id: the API key needs the ingest scope");
    license = await look.byId(e.licenseId);
    if (!license || (principal.kind === "tenant" && license.tenantId !== principal.tenantId)) return reject("LICENSE_NOT_FOUND", `license_id: license ${JSON.stringify(e.licenseId)} not found`);
  } else {
    return reject("INVALID_EVENT", "license_key, lease or license_id: one is required");
  }
  const bad = unusable(license, now);
  if (bad) return reject(bad.reason, bad.message);
  const meter = (await look.meters(license.productId, license.tenantId)).get(e.metric) ?? (await look.meters(license.productId, license.tenantId, true)).get(e.metric);
  if (!meter) return reject("UNKNOWN_METRIC", `metric: the license's product has no meter ${JSON.stringify(e.metric)}`);
  let uniqueValue = "";
  if (meter.aggregation === "unique_count") {
    uniqueValue = e.attributes[meter.uniqueAttribute] ?? "";
    if (!uniqueValue) return reject("INVALID_EVENT", `attributes.${meter.uniqueAttribute}: required by the UNIQUE_COUNT meter ${meter.metric}`);
  }
  const period = periodOf(meter.period, ts, license);
  return {
    index,
    license,
    meter,
    ts,
    hour: new Date(Math.floor(ts.getTime() / HOUR) * HOUR),
    periodStart: period.start,
    periodEnd: period.end,
    quantity: e.quantity,
    key: e.idempotencyKey,
    agentId: e.agentId,
    attributes: e.attributes,
    uniqueValue,
  };
}

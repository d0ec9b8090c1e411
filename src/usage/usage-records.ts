/*
 * What ingestion and the usage queries read about licenses and meters: the records,
 * their per-instance cache, and the pure rules over them (period, limit, usability).
 */
import { sql, type Database } from "../platform/db.js";
import type { AuditFeed } from "../events/audit-feed.js";
import { TenantCache } from "../platform/tenant-cache.js";
import {
  effectiveAgents,
  effectiveEntitlements,
  type AgentEntitlement,
  type Entitlement,
  type ExpirationBasis,
  type ExpirationStrategy,
  type OverageStrategy,
  type ResolvedAgent,
} from "../licensing/entitlements.js";
import { lookupLicenseKey, type LicenseKeyring } from "../licensing/license-key.js";
import type { Aggregation, LimitPeriod } from "./meter.entity.js";

export interface LicenseRow {
  id: string;
  tenantId: string;
  /** The tenant's number (tenants.seq): how deduplication keys name it. */
  tenantSeq: number;
  productId: string;
  status: "active" | "suspended" | "revoked";
  createdAt: Date;
  expiresAt: Date | null;
  /** The expiry waits for the policy's expiration basis (licensing/expiry-start.ts). */
  expiryPending: boolean;
  expirationBasis: ExpirationBasis;
  expirationStrategy: ExpirationStrategy;
  graceSeconds: number;
  overage: OverageStrategy;
  entitlements: Entitlement[];
  /** Agent → token limit per period (0: no limit), for meters that count agent tokens; enabled agents only. */
  agentTokens: Map<string, number>;
  /** Agents the license disables: their events on meters that count agent tokens are refused. */
  disabledAgents: Set<string>;
}

export interface MeterRow {
  id: string;
  metric: string;
  aggregation: Aggregation;
  uniqueAttribute: string;
  period: LimitPeriod;
  agentTokens: boolean;
}

/** What an overage strategy lets through, as a factor of the limit (in hundredths, to stay in integers). */
const OVERAGE_PERCENT: Record<OverageStrategy, bigint | null> = {
  no_overage: 100n,
  allow_1_25x: 125n,
  allow_1_5x: 150n,
  allow_2x: 200n,
  always: null,
};

/** The limit period an event at `ts` falls in. */
export function periodOf(
  period: LimitPeriod,
  ts: Date,
  license: { createdAt: Date; expiresAt: Date | null },
): { start: Date; end: Date | null } {
  const y = ts.getUTCFullYear();
  const m = ts.getUTCMonth();
  if (period === "day") {
    const start = Date.UTC(y, m, ts.getUTCDate());
    return { start: new Date(start), end: new Date(start + 86_400_000) };
  }
  if (period === "license_term") return { start: license.createdAt, end: license.expiresAt };
  return { start: new Date(Date.UTC(y, m, 1)), end: new Date(Date.UTC(y, m + 1, 1)) };
}

/**
 * The metric's limit, or with `agentId` (a meter counting agent tokens) that agent's token limit; allowed is null when
 * nothing is refused.
 */
export function limitOf(
  p: { license: LicenseRow; meter: MeterRow },
  agentId = "",
): { limit: bigint; allowed: bigint | null } {
  const n = agentId
    ? (p.license.agentTokens.get(agentId) ?? 0)
    : ((
        p.license.entitlements.find((x) => x.feature === p.meter.metric && "limit" in x) as
          | { limit: number }
          | undefined
      )?.limit ?? 0);
  if (n <= 0) return { limit: 0n, allowed: null };
  const pct = OVERAGE_PERCENT[p.license.overage];
  const limit = BigInt(n);
  return { limit, allowed: pct === null ? null : (limit * pct) / 100n };
}

/** Where a license stands against one metric's limit, given what it used in the period. */
export interface LimitState {
  licenseId: string;
  metric: string;
  /** An agent's token allowance; "" for the metric as a whole. */
  agentId: string;
  used: bigint;
  limit: bigint;
  allowed: bigint;
  warning: boolean;
  exceeded: boolean;
  periodStart: Date;
  periodEnd: Date | null;
}

const INT64_MAX = 2n ** 63n - 1n;

/**
 * A total as the API's int64 fields can carry it: PostgreSQL sums in numeric, so a
 * license's totals may pass 2^63−1 (each event is at most 2^53−1); they saturate there.
 */
export const int64Total = (v: bigint | string): bigint => {
  const n = typeof v === "bigint" ? v : BigInt(v);
  return n > INT64_MAX ? INT64_MAX : n < -INT64_MAX - 1n ? -INT64_MAX - 1n : n;
};

export function limitState(
  license: LicenseRow,
  meter: MeterRow,
  used: bigint,
  period: { start: Date; end: Date | null },
  agentId = "",
): LimitState {
  const { limit, allowed } = limitOf({ license, meter }, agentId);
  return {
    licenseId: license.id,
    metric: meter.metric,
    agentId,
    used: int64Total(used),
    limit,
    allowed: allowed ?? 0n,
    warning: limit > 0n && used * 10n >= limit * 8n,
    exceeded: limit > 0n && used > limit,
    periodStart: period.start,
    periodEnd: period.end,
  };
}

function agentAllowances(agents: ResolvedAgent[]): Pick<LicenseRow, "agentTokens" | "disabledAgents"> {
  return {
    agentTokens: new Map(agents.filter((a) => a.enabled).map((a) => [a.agent, a.tokenLimit])),
    disabledAgents: new Set(agents.filter((a) => !a.enabled).map((a) => a.agent)),
  };
}

/** Why a license may not record usage now, or undefined when it may. */
export function unusable(l: LicenseRow, now: Date): { reason: string; message: string } | undefined {
  if (l.status === "revoked") return { reason: "LICENSE_REVOKED", message: "the license was revoked" };
  if (l.status === "suspended") return { reason: "LICENSE_SUSPENDED", message: "the license is suspended" };
  if (l.expiresAt && l.expiresAt <= now) {
    const inGrace = now.getTime() < l.expiresAt.getTime() + l.graceSeconds * 1000;
    if (!inGrace && l.expirationStrategy !== "allow_access" && l.expirationStrategy !== "maintain_access") {
      return { reason: "LICENSE_EXPIRED", message: `the license expired at ${l.expiresAt.toISOString()}` };
    }
  }
  return undefined;
}

/** Licenses and meters by key digest, id and product, cached per instance. */
export function createUsageRecords(deps: { db: Database; keyring: LicenseKeyring; feed: AuditFeed }) {
  const { db, keyring, feed } = deps;

  // Licenses and meters are cached per instance (TenantCache) like ValidateLicense's snapshots: any audit
  // entry of a tenant (every change writes one) drops that tenant's entries on every
  // instance; entries also expire after 30 s. Misses are not cached, and an unknown metric
  // is looked up again before it is refused, so a new license or meter is usable at once.
  const licenseCache = new TenantCache<Promise<LicenseRow | undefined>>({ max: 50_000, ttlMs: 30_000 }).follow(feed);
  const meterCache = new TenantCache<Promise<Map<string, MeterRow>>>({ max: 50_000, ttlMs: 30_000 }).follow(feed);
  function cached<T>(
    cache: TenantCache<Promise<T>>,
    key: string,
    load: () => Promise<T>,
    tenantOf: (v: T) => string | undefined,
  ): Promise<T> {
    const hit = cache.get(key);
    if (hit) return hit;
    const stamp = cache.stamp();
    const value = load();
    value.then(
      (v) => {
        const tenantId = tenantOf(v);
        if (tenantId !== undefined) cache.set(key, tenantId, value, stamp);
      },
      () => undefined,
    );
    return value;
  }

  /** Licenses and meters read once per batch (statements prepared once per pooled connection). */
  function lookups() {
    const byDigest = new Map<string, Promise<LicenseRow | undefined>>();
    const byId = new Map<string, Promise<LicenseRow | undefined>>();
    const meters = new Map<string, Promise<Map<string, MeterRow>>>();
    const refreshed = new Set<string>();
    const select = `select l.id, l.tenant_id, t.seq as tenant_seq, l.product_id, l.status,
                           (extract(epoch from l.created_at) * 1000)::bigint as created_ms,
                           (extract(epoch from l.expires_at) * 1000)::bigint as expires_ms,
                           l.expiry_pending, p.expiration_basis, l.entitlement_overrides, l.agent_overrides,
                           p.entitlements, p.agent_entitlements, p.overage_strategy, p.expiration_strategy,
                           p.grace_seconds
                      from licenses l
                      join policies p on p.id = l.policy_id
                      join tenants t on t.id = l.tenant_id`;
    type Row = {
      id: string;
      tenant_id: string;
      tenant_seq: number;
      product_id: string;
      status: LicenseRow["status"];
      created_ms: string;
      expires_ms: string | null;
      expiry_pending: boolean;
      expiration_basis: ExpirationBasis;
      entitlement_overrides: Entitlement[];
      entitlements: Entitlement[];
      agent_overrides: AgentEntitlement[];
      agent_entitlements: AgentEntitlement[];
      overage_strategy: OverageStrategy;
      expiration_strategy: ExpirationStrategy;
      grace_seconds: string;
    };
    const toLicense = (r: Row | undefined): LicenseRow | undefined =>
      r && {
        id: r.id,
        tenantId: r.tenant_id,
        tenantSeq: r.tenant_seq,
        productId: r.product_id,
        status: r.status,
        createdAt: new Date(Number(r.created_ms)),
        expiresAt: r.expires_ms === null ? null : new Date(Number(r.expires_ms)),
        expiryPending: r.expiry_pending,
        expirationBasis: r.expiration_basis,
        expirationStrategy: r.expiration_strategy,
        graceSeconds: Number(r.grace_seconds),
        overage: r.overage_strategy,
        entitlements: effectiveEntitlements(r.entitlements, r.entitlement_overrides),
        ...agentAllowances(effectiveAgents(r.agent_entitlements, r.agent_overrides)),
      };
    return {
      /** The license a presented key names (its HMAC checked first); undefined for a bad key. */
      byPresentedKey(raw: string) {
        const found = lookupLicenseKey(raw, keyring);
        return found.ok ? this.byKey(found.digest) : undefined;
      },
      byKey(digest: Buffer) {
        const k = digest.toString("base64");
        if (!byDigest.has(k))
          byDigest.set(
            k,
            cached(
              licenseCache,
              `d:${k}`,
              () =>
                sql<Row>(db, `${select} where l.key_digest = $1`, [digest], {
                  name: "licensd-usage-license-by-digest",
                }).then((r) => toLicense(r[0])),
              (l) => l?.tenantId,
            ),
          );
        return byDigest.get(k)!;
      },
      byId(id: string) {
        if (!byId.has(id))
          byId.set(
            id,
            cached(
              licenseCache,
              `i:${id}`,
              () =>
                sql<Row>(db, `${select} where l.id = $1`, [id], { name: "licensd-usage-license-by-id" }).then((r) =>
                  toLicense(r[0]),
                ),
              (l) => l?.tenantId,
            ),
          );
        return byId.get(id)!;
      },
      /** The product's meters by metric; `fresh` skips the instance cache (a metric it does not know yet). */
      meters(productId: string, tenantId: string, fresh = false) {
        const load = () =>
          sql<{
            id: string;
            metric: string;
            aggregation: Aggregation;
            unique_attribute: string;
            period: LimitPeriod;
            agent_tokens: boolean;
          }>(
            db,
            `select id, metric, aggregation, unique_attribute, period, agent_tokens from meters where product_id = $1`,
            [productId],
            { name: "licensd-usage-meters" },
          ).then(
            (rs) =>
              new Map(
                rs.map((r) => [
                  r.metric,
                  {
                    id: r.id,
                    metric: r.metric,
                    aggregation: r.aggregation,
                    uniqueAttribute: r.unique_attribute,
                    period: r.period,
                    agentTokens: r.agent_tokens,
                  },
                ]),
              ),
          );
        if (fresh && !refreshed.has(productId)) {
          // once per batch: a batch of unknown metrics costs one more query, not one per event
          refreshed.add(productId);
          meterCache.delete(productId);
          meters.delete(productId);
        }
        if (!meters.has(productId))
          meters.set(
            productId,
            cached(meterCache, productId, load, () => tenantId),
          );
        return meters.get(productId)!;
      },
    };
  }

  return { lookups };
}

export type UsageLookups = ReturnType<ReturnType<typeof createUsageRecords>["lookups"]>;

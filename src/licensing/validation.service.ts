import type { Clock } from "../platform/clock.js";
import { sql, type Database } from "../platform/db.js";
import type { AuditFeed } from "../events/audit-feed.js";
import { TenantCache } from "../platform/tenant-cache.js";
import type { Component, LicenseMachine, LicenseMachines } from "./license-machines.js";
import {
  effectiveAgents,
  effectiveEntitlements,
  grants,
  type AgentEntitlement,
  type Entitlement,
  type ComponentMatchingStrategy,
  type ExpirationBasis,
  type ExpirationStrategy,
  type HeartbeatBasis,
  type ProcessLeasingStrategy,
  type FeatureDefinition,
  type ResolvedAgent,
} from "./entitlements.js";
import { lookupLicenseKey, type LicenseKeyring } from "./license-key.js";
import { effectiveStatus, type LicenseStatus } from "./license.service.js";
import type { Events } from "../events/events.js";
import { startExpiry, startsExpiry } from "./expiry-start.js";
import { userIdentity } from "./license-user.service.js";
import { componentsMatched, componentsNeeded } from "./components.js";

export type ValidationCode =
  | "FORMAT_INVALID"
  | "SIGNATURE_INVALID"
  | "NOT_FOUND"
  | "REVOKED"
  | "SUSPENDED"
  | "EXPIRED"
  | "PRODUCT_SCOPE_MISMATCH"
  | "NO_MACHINE"
  | "NO_MACHINES"
  | "FINGERPRINT_SCOPE_MISMATCH"
  | "TOO_MANY_MACHINES"
  | "HEARTBEAT_DEAD"
  | "FINGERPRINT_SCOPE_REQUIRED"
  | "ENTITLEMENTS_MISSING"
  | "USER_SCOPE_REQUIRED"
  | "USER_SCOPE_MISMATCH"
  | "TOO_MANY_PROCESSES"
  | "TOO_MANY_CORES"
  | "COMPONENTS_SCOPE_REQUIRED"
  | "COMPONENTS_SCOPE_MISMATCH"
  | "VALID";

/** Everything a validation needs about one license, read in one query and cached. */
export interface LicenseSnapshot {
  id: string;
  tenantId: string;
  status: "active" | "suspended" | "revoked";
  expiresAt: Date | null;
  /** The expiry waits for the policy's expiration basis (expiry-start.ts); unset is false. */
  expiryPending?: boolean;
  /** Unset is from_creation. */
  expirationBasis?: ExpirationBasis;
  productCode: string;
  productFeatures: FeatureDefinition[];
  policyName: string;
  allFeatures: boolean;
  expirationStrategy: ExpirationStrategy;
  graceSeconds: number;
  maxMachines: number;
  floating: boolean;
  /** Total cores the license's alive machines may report; unset or 0: no limit. */
  maxCores?: number;
  heartbeatSeconds: number | null;
  heartbeatGraceSeconds: number;
  /** Unset is from_activation. */
  heartbeatBasis?: HeartbeatBasis;
  requireFingerprintScope: boolean;
  /** Validation must name one of `users` (unset: false). */
  requireUserScope?: boolean;
  /** The license's users (identities: e-mails in lowercase, vendor ids as given); unset: none. */
  users?: ReadonlySet<string>;
  /** Processes alive at once (0 or unset: no limit), per machine or per license. */
  maxProcesses?: number;
  processLeasingStrategy?: ProcessLeasingStrategy;
  /** How many of a machine's components a validation's must match (unset: match_any). */
  componentMatchingStrategy?: ComponentMatchingStrategy;
  /** Validation must give the machine's components (unset: false). */
  requireComponentsScope?: boolean;
  entitlements: Entitlement[];
  agents: ResolvedAgent[];
  customerEmail: string;
}

export interface Validation {
  /** The cached license state the answer came from (the same object until the cache drops it). */
  snapshot?: LicenseSnapshot;
  valid: boolean;
  code: ValidationCode;
  detail: string;
  license?: LicenseSnapshot & { effectiveStatus: LicenseStatus };
  features: string[];
  entitlements: Entitlement[];
  agents: ResolvedAgent[];
}

const CACHE_TTL_MS = 30_000;
const CACHE_MAX = 50_000;

interface Row {
  id: string;
  tenant_id: string;
  status: "active" | "suspended" | "revoked";
  expires_ms: string | null;
  expiry_pending: boolean;
  expiration_basis: ExpirationBasis;
  heartbeat_basis: HeartbeatBasis;
  entitlement_overrides: Entitlement[];
  agent_overrides: AgentEntitlement[];
  max_machines: number | null;
  code: string;
  features: FeatureDefinition[];
  policy_name: string;
  all_features: boolean;
  expiration_strategy: ExpirationStrategy;
  grace_seconds: string;
  policy_max_machines: number;
  floating: boolean;
  max_cores: number;
  heartbeat_seconds: string | null;
  heartbeat_grace_seconds: string;
  require_fingerprint_scope: boolean;
  require_user_scope: boolean;
  users: string[];
  max_processes: number;
  process_leasing_strategy: ProcessLeasingStrategy;
  component_matching_strategy: ComponentMatchingStrategy;
  require_components_scope: boolean;
  entitlements: Entitlement[];
  agent_entitlements: AgentEntitlement[];
  email: string;
}

/**
 * ValidateLicense's engine. The hot path: the key's HMAC is checked before any lookup;
 * licenses are read with one SQL join (not the ORM; a statement prepared once per pooled
 * connection) and cached per instance by key digest (a TenantCache). Any audit entry of a
 * tenant — every change writes one — drops that tenant's cached licenses on every instance
 * (LISTEN/NOTIFY), so a suspension is seen everywhere within the notification's latency;
 * entries also expire after 30 s as a backstop. A license's users are part of its snapshot:
 * adding or removing one writes an audit entry, so every instance sees it the same way. A machine's components are
 * read on each validation that gives some (like its machines), never cached.
 */
export function createValidationService(deps: {
  db: Database;
  clock: Clock;
  keyring: LicenseKeyring;
  feed: AuditFeed;
  machines: LicenseMachines;
  events: Events;
}) {
  const { db, clock, keyring, feed, machines: licenseMachines, events } = deps;
  // A miss (no license has the key) is cached too, as no tenant's: any change drops it.
  const cache = new TenantCache<LicenseSnapshot | null>({ max: CACHE_MAX, ttlMs: CACHE_TTL_MS }).follow(feed);

  async function load(digest: Buffer): Promise<LicenseSnapshot | null> {
    const cacheKey = digest.toString("base64");
    const hit = cache.get(cacheKey);
    if (hit !== undefined) return hit;
    const stamp = cache.stamp();
    const [r] = await sql<Row>(
      db,
      `select l.id, l.tenant_id, l.status, (extract(epoch from l.expires_at) * 1000)::bigint as expires_ms,
              l.expiry_pending, po.expiration_basis, po.heartbeat_basis,
              l.entitlement_overrides, l.agent_overrides, l.max_machines, pr.code, pr.features,
              po.name as policy_name, po.all_features, po.expiration_strategy, po.grace_seconds,
              po.max_machines as policy_max_machines, po.floating, po.heartbeat_seconds, po.heartbeat_grace_seconds,
              po.require_fingerprint_scope, po.entitlements, po.agent_entitlements, c.email,
              po.require_user_scope, po.max_processes, po.process_leasing_strategy, po.max_cores,
              po.component_matching_strategy, po.require_components_scope,
              array(select u.identity from license_users u where u.license_id = l.id) as users
         from licenses l
         join products pr on pr.id = l.product_id
         join policies po on po.id = l.policy_id
         join customers c on c.id = l.customer_id
        where l.key_digest = $1`,
      [digest],
      { name: "licensd-validate-license" },
    );
    const snapshot: LicenseSnapshot | null = r
      ? {
          id: r.id,
          tenantId: r.tenant_id,
          status: r.status,
          expiresAt: r.expires_ms === null ? null : new Date(Number(r.expires_ms)),
          expiryPending: r.expiry_pending,
          expirationBasis: r.expiration_basis,
          productCode: r.code,
          productFeatures: r.features,
          policyName: r.policy_name,
          allFeatures: r.all_features,
          expirationStrategy: r.expiration_strategy,
          graceSeconds: Number(r.grace_seconds),
          maxMachines: r.max_machines ?? r.policy_max_machines,
          floating: r.floating,
          maxCores: r.max_cores,
          heartbeatSeconds: r.heartbeat_seconds === null ? null : Number(r.heartbeat_seconds),
          heartbeatGraceSeconds: Number(r.heartbeat_grace_seconds),
          heartbeatBasis: r.heartbeat_basis,
          requireFingerprintScope: r.require_fingerprint_scope,
          requireUserScope: r.require_user_scope,
          users: new Set(r.users),
          maxProcesses: r.max_processes,
          processLeasingStrategy: r.process_leasing_strategy,
          componentMatchingStrategy: r.component_matching_strategy,
          requireComponentsScope: r.require_components_scope,
          entitlements: effectiveEntitlements(r.entitlements, r.entitlement_overrides),
          agents: effectiveAgents(r.agent_entitlements, r.agent_overrides),
          customerEmail: r.email,
        }
      : null;
    cache.set(cacheKey, snapshot?.tenantId ?? null, snapshot, stamp);
    return snapshot;
  }

  // What follows from a snapshot alone, worked out once per cached snapshot (and status),
  // not per request. Shared, never changed.
  type Derived = { license: LicenseSnapshot & { effectiveStatus: LicenseStatus }; features: string[] };
  const derived = new WeakMap<LicenseSnapshot, Partial<Record<LicenseStatus, Derived>>>();
  function derivedOf(snapshot: LicenseSnapshot, status: LicenseStatus): Derived {
    let byStatus = derived.get(snapshot);
    if (!byStatus) {
      byStatus = {};
      derived.set(snapshot, byStatus);
    }
    byStatus[status] ??= {
      license: { ...snapshot, effectiveStatus: status },
      features: snapshot.allFeatures
        ? snapshot.productFeatures.map((f) => f.name).sort()
        : snapshot.entitlements.filter(grants).map((e) => e.feature),
    };
    return byStatus[status];
  }

  return {
    /** Validates a key; codes are checked in the documented order, the first that applies wins. */
    async validate(input: {
      key: string;
      productCode: string;
      fingerprint: string;
      requiredEntitlements: string[];
      /** The user asking (ValidateLicenseRequest.user); "" for none. */
      user?: string;
      /** The machine's components (ValidateLicenseRequest.components, names unique); only with a fingerprint. */
      components?: readonly Component[];
    }): Promise<Validation> {
      const none = { features: [], entitlements: [], agents: [] };
      const found = lookupLicenseKey(input.key, keyring);
      if (!found.ok) {
        return found.code === "FORMAT_INVALID"
          ? { valid: false, code: "FORMAT_INVALID", detail: "not a license key", ...none }
          : {
              valid: false,
              code: found.code,
              detail: "the key's signature does not match: forged or mistyped",
              ...none,
            };
      }
      const { digest } = found;
      let snapshot = await load(digest);
      if (!snapshot) return { valid: false, code: "NOT_FOUND", detail: "no license has this key", ...none };
      if (snapshot.expiryPending && startsExpiry(snapshot.expirationBasis ?? "from_creation", "validation")) {
        // The first validation starts the expiry (once, across instances); the answer already counts it. Its audit
        // entry drops the cached snapshot everywhere; this one is dropped at once.
        const id = snapshot.id;
        const { expiresAt } = await db.tx((em) => startExpiry(em, { clock, events }, id, "validation"));
        cache.delete(digest.toString("base64"));
        snapshot = { ...snapshot, expiresAt, expiryPending: false };
      }

      const now = clock.now();
      const status = effectiveStatus(snapshot, now);
      const { license, features } = derivedOf(snapshot, status);
      const granted = { snapshot, license, features, entitlements: snapshot.entitlements, agents: snapshot.agents };
      const fail = (code: ValidationCode, detail: string): Validation => ({ valid: false, code, detail, ...granted });
      const maxCores = snapshot.maxCores ?? 0;
      /** TOO_MANY_CORES when the alive machines report more cores than the limit (one without cores counts as 1). */
      const tooManyCores = (machines: LicenseMachine[]) => {
        if (maxCores <= 0) return undefined;
        const total = machines.reduce((sum, m) => (m.status === "alive" ? sum + Math.max(m.cores, 1) : sum), 0);
        return total > maxCores
          ? fail("TOO_MANY_CORES", `the license's machines report ${total} cores; the license allows ${maxCores}`)
          : undefined;
      };

      if (status === "revoked") return fail("REVOKED", "the license was revoked");
      if (status === "suspended") return fail("SUSPENDED", "the license is suspended");
      let expired = false;
      if (status === "expired") {
        const inGrace = now.getTime() < snapshot.expiresAt!.getTime() + snapshot.graceSeconds * 1000;
        const keepsAccess =
          snapshot.expirationStrategy === "maintain_access" || snapshot.expirationStrategy === "allow_access";
        if (!inGrace && !keepsAccess)
          return fail("EXPIRED", `the license expired at ${snapshot.expiresAt!.toISOString()}`);
        expired = true;
      }
      if (input.productCode && input.productCode !== snapshot.productCode) {
        return fail(
          "PRODUCT_SCOPE_MISMATCH",
          `the license is for product ${snapshot.productCode}, not ${input.productCode}`,
        );
      }
      if (input.fingerprint) {
        // Machines change with every heartbeat: read, never cached.
        const machines = await licenseMachines.ofLicense(snapshot.id);
        const machine = machines.find((m) => m.fingerprint === input.fingerprint);
        if (machines.length === 0) return fail("NO_MACHINES", "the license is not activated on any machine");
        if (!machine) {
          return snapshot.floating
            ? fail("NO_MACHINE", "the license is not activated on this machine")
            : fail("FINGERPRINT_SCOPE_MISMATCH", "the license is node-locked to another machine");
        }
        if (snapshot.maxMachines > 0 && machines.length > snapshot.maxMachines)
          return fail(
            "TOO_MANY_MACHINES",
            `${machines.length} machines are active; the license allows ${snapshot.maxMachines}`,
          );
        const overdue =
          snapshot.heartbeatSeconds !== null &&
          !machine.offline &&
          (snapshot.heartbeatBasis !== "from_first_heartbeat" || machine.heartbeated) &&
          Number(machine.last_ms) + (snapshot.heartbeatSeconds + snapshot.heartbeatGraceSeconds) * 1000 < now.getTime();
        const cores = tooManyCores(machines);
        if (cores) return cores;
        if (machine.status === "dead" || overdue) return fail("HEARTBEAT_DEAD", "the machine stopped heartbeating");
      } else if (snapshot.requireFingerprintScope) {
        return fail("FINGERPRINT_SCOPE_REQUIRED", "the license's policy requires a machine fingerprint");
      } else if (maxCores > 0) {
        // A core limit binds the license as a whole: checked without a fingerprint too (machines read only then).
        const cores = tooManyCores(await licenseMachines.ofLicense(snapshot.id));
        if (cores) return cores;
      }
      if (snapshot.maxProcesses) {
        // Processes change with every ping: read, never cached; only for policies that limit them.
        const max = snapshot.maxProcesses;
        const byMachine = await licenseMachines.aliveProcesses(snapshot.id, now);
        const perMachine = snapshot.processLeasingStrategy !== "per_license";
        const alive = !perMachine
          ? byMachine.reduce((n, m) => n + m.alive, 0)
          : input.fingerprint
            ? (byMachine.find((m) => m.fingerprint === input.fingerprint)?.alive ?? 0)
            : Math.max(0, ...byMachine.map((m) => m.alive));
        if (alive > max)
          return fail(
            "TOO_MANY_PROCESSES",
            `${alive} processes are alive ${perMachine ? "on the machine" : "under the license"}; ` +
              `the policy allows ${max}`,
          );
      }
      // A user is checked when the policy requires one, or when one is given and the license has users
      // (a license without users, under a policy that does not require one, ignores it).
      if (input.user) {
        const users = snapshot.users ?? new Set<string>();
        if ((snapshot.requireUserScope || users.size > 0) && !users.has(userIdentity(input.user)))
          return fail("USER_SCOPE_MISMATCH", "the user is not one of the license's users");
      } else if (snapshot.requireUserScope) {
        return fail("USER_SCOPE_REQUIRED", "the license's policy requires a user");
      }
      // Components are checked when the policy requires them, or when some are given and the machine registered some
      // (a machine without components, under a policy that does not require them, ignores them). Read, never cached.
      if (input.components?.length && input.fingerprint) {
        const registered = await licenseMachines.componentsOf(snapshot.id, input.fingerprint);
        const needed = componentsNeeded(snapshot.componentMatchingStrategy ?? "match_any", registered.length);
        if (
          (snapshot.requireComponentsScope || registered.length > 0) &&
          componentsMatched(registered, input.components) < needed
        )
          return fail(
            "COMPONENTS_SCOPE_MISMATCH",
            `too few of the machine's components match: the policy needs ${needed} of its ${registered.length}`,
          );
      } else if (snapshot.requireComponentsScope) {
        return fail("COMPONENTS_SCOPE_REQUIRED", "the license's policy requires the machine's components");
      }
      const missing = input.requiredEntitlements.filter((f) => !features.includes(f));
      if (missing.length > 0) return fail("ENTITLEMENTS_MISSING", `not entitled to: ${missing.join(", ")}`);
      if (expired)
        return {
          valid: true,
          code: "EXPIRED",
          detail: `expired at ${snapshot.expiresAt!.toISOString()}; access continues (grace period or policy)`,
          ...granted,
        };
      return { valid: true, code: "VALID", detail: "the license is valid", ...granted };
    },
  };
}

export type ValidationService = ReturnType<typeof createValidationService>;

import { Code } from "@connectrpc/connect";
import { LockMode, UniqueConstraintViolationException } from "@mikro-orm/core";
import type { Clock } from "../platform/clock.js";
import { type DataKeys, open, seal, sha256 } from "../platform/crypto.js";
import { sql, type EntityManager } from "../platform/db.js";
import { alreadyExists, DomainError, failedPrecondition, invalidArgument, notFound } from "../platform/errors.js";
import { LATEST_REQUEST_TIME } from "../platform/request-fields.js";
import { newId } from "../platform/ids.js";
import type { Page } from "../platform/pagination.js";
import type { Events } from "../events/events.js";
import { checkAgents, checkEntitlements, checkLicenseSeats, type CatalogService } from "./catalog.service.js";
import type { AgentEntitlement, Entitlement, RenewalBasis } from "./entitlements.js";
import type { SigningKeyStore } from "../platform/signing-keys.js";
import {
  checkLicenseKey,
  CUSTOM_KEY_PATTERN,
  generateLicenseKey,
  KEY_PATTERN,
  normalizeLicenseKey,
  type LicenseKeyring,
} from "./license-key.js";
import { License, type Policy } from "./licensing.entity.js";
import { customerEntitlements } from "./customer-entitlements.js";
import { issueLicenseFile, type LicenseFileOptions } from "./license-file-issue.js";
import type { LicenseStatus } from "./license-plan.js";
import type { LicenseMachines } from "./license-machines.js";

export { effectiveStatus, planClaims, type LicenseStatus } from "./license-plan.js";
export { startExpiry, startsExpiry } from "./expiry-start.js";

export interface NewLicense {
  policyId: string;
  customerId: string;
  expiresAt: Date | null | undefined;
  entitlementOverrides: Entitlement[];
  agentOverrides: AgentEntitlement[];
  maxMachines: number | null;
  metadata: Record<string, string>;
  customKey: string;
  /** The caller's address (its failure budget pays for custom keys another tenant holds); "" when unknown. */
  clientAddress?: string;
}

/**
 * Custom keys another tenant holds: refused without saying why, and paid for from the
 * caller's failure budgets, so CreateLicense and imports are no faster an oracle for
 * which keys exist than the public ValidateLicense (docs/security.md). app.ts fills it.
 */
export interface ForeignKeyBudget {
  /** Throws RATE_LIMITED, before any lookup, while the tenant or the address may not try custom keys. */
  admit(tenantId: string, clientAddress: string): Promise<void>;
  /** Pays for one refusal (and logs it with ids); throws RATE_LIMITED when that spent the budget. */
  refused(tenantId: string, clientAddress: string, holder: { tenantId: string; licenseId: string }): Promise<void>;
}

/** The one answer for a custom key that cannot be used for a reason that is not the caller's to know. */
export const keyRefused = () =>
  invalidArgument("custom_key", "this key cannot be used; choose another", "LICENSE_KEY_REFUSED");

export interface LicensePatch {
  expiresAt?: Date | null;
  entitlementOverrides?: Entitlement[];
  agentOverrides?: AgentEntitlement[];
  maxMachines?: number | null;
  metadata?: Record<string, string>;
}

export interface LicenseFilters {
  productId: string;
  customerId: string;
  status: LicenseStatus | undefined;
  expireBefore: Date | undefined;
}

const keyPrefix = (key: string) => (KEY_PATTERN.test(key) ? `${key.slice(0, 9)}…` : `${key.slice(0, 6)}…`);

const expiryFrom = (policy: Policy, from: Date) =>
  policy.durationSeconds == null ? null : new Date(from.getTime() + policy.durationSeconds * 1000);

/** What a renewal under `basis` extends by the policy's duration; a license whose expiry has not started starts now. */
export function renewalStart(basis: RenewalBasis, expiresAt: Date | null, now: Date): Date {
  if (expiresAt === null || basis === "from_now") return now;
  return basis === "from_expiry" || expiresAt > now ? expiresAt : now;
}

/** Licenses and their lifecycle. Every method runs in the caller's transaction and emits its event. */
export function createLicenseService(deps: {
  clock: Clock;
  events: Events;
  catalog: CatalogService;
  keyring: LicenseKeyring;
  dataKey: DataKeys;
  signingKeys: SigningKeyStore;
  licenseFileHmacSecret: string | undefined;
  foreignKeys?: ForeignKeyBudget;
  /** Activation's answer to whether a license's machines may move into a policy's uniqueness scope. */
  machines: Pick<LicenseMachines, "fingerprintTaken">;
}) {
  const { clock, events, catalog, keyring, dataKey, foreignKeys, machines } = deps;

  async function get(em: EntityManager, tenantId: string, id: string, lock = false): Promise<License> {
    const license = await em.findOne(License, { id, tenantId }, lock ? { lockMode: LockMode.PESSIMISTIC_WRITE } : {});
    if (!license) throw notFound("license", id);
    return license;
  }

  async function change(em: EntityManager, license: License, actor: string, type: string, payload: object = {}) {
    license.updatedAt = clock.now();
    await em.flush();
    await events.emit(em, {
      tenantId: license.tenantId,
      type,
      subject: license.id,
      actor,
      payload: JSON.parse(JSON.stringify(payload)),
    });
    return license;
  }

  return {
    get,

    async create(
      em: EntityManager,
      tenantId: string,
      actor: string,
      input: NewLicense,
    ): Promise<{ license: License; key: string }> {
      const policy = await catalog.getPolicy(em, tenantId, input.policyId);
      const product = await catalog.getProduct(em, tenantId, policy.productId);
      await catalog.getCustomer(em, tenantId, input.customerId);
      checkEntitlements(product, input.entitlementOverrides, "entitlement_overrides");
      checkAgents(input.agentOverrides, "agent_overrides");
      checkLicenseSeats(policy, input.maxMachines);
      let key: string;
      if (input.customKey) {
        key = normalizeLicenseKey(input.customKey);
        if (!KEY_PATTERN.test(key) && !CUSTOM_KEY_PATTERN.test(key))
          throw invalidArgument(
            "custom_key",
            "must be a Vinzy-format key or 16 to 128 of [A-Za-z0-9._-]",
            "FORMAT_INVALID",
          );
        if (KEY_PATTERN.test(key)) {
          const check = checkLicenseKey(key, keyring);
          if (!check.ok)
            throw invalidArgument(
              "custom_key",
              "a key in the Vinzy format must carry a valid HMAC from the configured keyring",
              "SIGNATURE_INVALID",
            );
          if (check.productCode !== product.code)
            throw invalidArgument(
              "custom_key",
              `the key is for product ${check.productCode}, the policy for ${product.code}`,
              "PRODUCT_MISMATCH",
            );
        }
        // Keys are one namespace (the public RPCs take the key alone): the tenant may learn of its own license, nothing
        // of another's.
        const address = input.clientAddress ?? "";
        await foreignKeys?.admit(tenantId, address);
        const [holder] = await sql<{ id: string; tenant_id: string }>(
          em,
          `select id, tenant_id from licenses where key_digest = $1`,
          [sha256(key)],
        );
        if (holder?.tenant_id === tenantId)
          throw alreadyExists("LICENSE_KEY_TAKEN", `custom_key: license ${holder.id} already has this key`, {
            field: "custom_key",
            license_id: holder.id,
          });
        if (holder) {
          await foreignKeys?.refused(tenantId, address, { tenantId: holder.tenant_id, licenseId: holder.id });
          throw keyRefused();
        }
      } else {
        key = generateLicenseKey(product.code, keyring);
      }
      const now = clock.now();
      const id = newId("lic");
      // A duration whose start waits for the license's first activation, validation or use (expiry-start.ts).
      const pending =
        input.expiresAt === undefined && policy.durationSeconds != null && policy.expirationBasis !== "from_creation";
      const license = em.create(License, {
        id,
        tenantId,
        productId: product.id,
        policyId: policy.id,
        customerId: input.customerId,
        status: "active",
        keyDigest: sha256(key),
        keySealed: seal(dataKey, Buffer.from(key), id),
        keyPrefix: keyPrefix(key),
        expiresAt: input.expiresAt === undefined && !pending ? expiryFrom(policy, now) : (input.expiresAt ?? null),
        expiryPending: pending,
        entitlementOverrides: input.entitlementOverrides,
        agentOverrides: input.agentOverrides,
        maxMachines: input.maxMachines,
        metadata: input.metadata,
        suspendedAt: null,
        revokedAt: null,
        createdAt: now,
        updatedAt: now,
      });
      try {
        await em.flush();
      } catch (err) {
        // (a license created with the same key since the look-up above: whose it is cannot be told here)
        if (err instanceof UniqueConstraintViolationException) throw keyRefused();
        throw err;
      }
      await events.emit(em, {
        tenantId,
        type: "license.created",
        subject: id,
        actor,
        payload: {
          product_id: product.id,
          policy_id: policy.id,
          customer_id: input.customerId,
          key_prefix: license.keyPrefix,
          expires_at: license.expiresAt?.toISOString() ?? null,
          ...(pending ? { expiry_pending: true } : {}),
        },
      });
      return { license, key };
    },

    async list(em: EntityManager, tenantId: string, page: Page, f: LicenseFilters): Promise<License[]> {
      const now = clock.now();
      const where: Record<string, unknown> = { tenantId };
      if (f.productId) where.productId = f.productId;
      if (f.customerId) where.customerId = f.customerId;
      if (f.status === "expired") Object.assign(where, { status: "active", expiresAt: { $lte: now } });
      else if (f.status === "active")
        Object.assign(where, { status: "active", $or: [{ expiresAt: null }, { expiresAt: { $gt: now } }] });
      else if (f.status) where.status = f.status;
      if (f.expireBefore) where.expiresAt = { ...((where.expiresAt as object) ?? {}), $lt: f.expireBefore };
      if (page.after) where.id = { $gt: page.after };
      return em.find(License, where, { orderBy: { id: "asc" }, limit: page.size + 1 });
    },

    async update(em: EntityManager, tenantId: string, actor: string, id: string, patch: LicensePatch) {
      const license = await get(em, tenantId, id, true);
      if (patch.entitlementOverrides)
        checkEntitlements(
          await catalog.getProduct(em, tenantId, license.productId),
          patch.entitlementOverrides,
          "entitlement_overrides",
        );
      if (patch.agentOverrides) checkAgents(patch.agentOverrides, "agent_overrides");
      if (patch.maxMachines !== undefined)
        checkLicenseSeats(await catalog.getPolicy(em, tenantId, license.policyId), patch.maxMachines);
      Object.assign(license, patch);
      // An expiry set by hand is the license's: nothing starts it any more.
      if (patch.expiresAt !== undefined) license.expiryPending = false;
      return change(em, license, actor, "license.updated", { changed: Object.keys(patch) });
    },

    async delete(em: EntityManager, tenantId: string, actor: string, id: string) {
      const license = await get(em, tenantId, id, true);
      em.remove(license);
      await em.flush();
      await events.emit(em, {
        tenantId,
        type: "license.deleted",
        subject: id,
        actor,
        payload: { key_prefix: license.keyPrefix },
      });
      return license;
    },

    async suspend(em: EntityManager, tenantId: string, actor: string, id: string) {
      const license = await get(em, tenantId, id, true);
      if (license.status === "revoked") throw failedPrecondition("LICENSE_REVOKED", `license ${id} is revoked`);
      if (license.status === "suspended") return license;
      license.status = "suspended";
      license.suspendedAt = clock.now();
      return change(em, license, actor, "license.suspended");
    },

    async reinstate(em: EntityManager, tenantId: string, actor: string, id: string) {
      const license = await get(em, tenantId, id, true);
      if (license.status !== "suspended")
        throw failedPrecondition("LICENSE_NOT_SUSPENDED", `license ${id} is ${license.status}, not suspended`);
      license.status = "active";
      license.suspendedAt = null;
      return change(em, license, actor, "license.reinstated");
    },

    /**
     * Extends the expiry by the policy's duration (from the expiry, or from now once it passed); with `until` (a paid
     * subscription period's end, provisioning/), to `until` instead, or leaves it where it is when that is later (or
     * when the license has none).
     */
    async renew(em: EntityManager, tenantId: string, actor: string, id: string, until?: Date) {
      const license = await get(em, tenantId, id, true);
      if (license.status === "revoked") throw failedPrecondition("LICENSE_REVOKED", `license ${id} is revoked`);
      if (until !== undefined) {
        if (until >= LATEST_REQUEST_TIME.date)
          throw new DomainError(
            Code.OutOfRange,
            "EXPIRY_OUT_OF_RANGE",
            `the paid period ends ${until.toISOString()}, past ${LATEST_REQUEST_TIME.text}`,
            { id },
          );
        // A license with no expiry keeps none.
        if (license.expiresAt != null && license.expiresAt < until) license.expiresAt = until;
        return change(em, license, actor, "license.renewed", { expires_at: license.expiresAt?.toISOString() ?? null });
      }
      const policy = await catalog.getPolicy(em, tenantId, license.policyId);
      if (policy.durationSeconds == null)
        throw failedPrecondition(
          "PERPETUAL_POLICY",
          `policy ${policy.name} has no duration: its licenses do not expire`,
        );
      const now = clock.now();
      const expiresAt = expiryFrom(policy, renewalStart(policy.renewalBasis, license.expiresAt ?? null, now))!;
      // Renewals add up: each stays in the range every request time has (docs/requests.md).
      if (expiresAt >= LATEST_REQUEST_TIME.date) {
        throw new DomainError(
          Code.OutOfRange,
          "EXPIRY_OUT_OF_RANGE",
          `renewing would move the expiry to ${expiresAt.toISOString()}, past ${LATEST_REQUEST_TIME.text}`,
          { id },
        );
      }
      const started = license.expiryPending;
      license.expiresAt = expiresAt;
      license.expiryPending = false;
      return change(em, license, actor, "license.renewed", {
        expires_at: license.expiresAt.toISOString(),
        ...(started ? { expiry_started: true } : {}),
      });
    },

    async revoke(em: EntityManager, tenantId: string, actor: string, id: string) {
      const license = await get(em, tenantId, id, true);
      if (license.status === "revoked") return license;
      license.status = "revoked";
      license.revokedAt = clock.now();
      return change(em, license, actor, "license.revoked");
    },

    async transfer(
      em: EntityManager,
      tenantId: string,
      actor: string,
      id: string,
      to: { customerId: string; policyId: string },
    ) {
      const license = await get(em, tenantId, id, true);
      if (license.status === "revoked") throw failedPrecondition("LICENSE_REVOKED", `license ${id} is revoked`);
      if (!to.customerId && !to.policyId)
        throw invalidArgument("customer_id", "name a new customer_id and/or policy_id");
      const from = { customer_id: license.customerId, policy_id: license.policyId };
      if (to.customerId) license.customerId = (await catalog.getCustomer(em, tenantId, to.customerId)).id;
      let policy = to.policyId ? undefined : await catalog.getPolicy(em, tenantId, license.policyId);
      if (to.policyId) {
        policy = await catalog.getPolicy(em, tenantId, to.policyId);
        if (policy.productId !== license.productId)
          throw failedPrecondition("PRODUCT_MISMATCH", `policy ${policy.name} is for another product`, {
            field: "policy_id",
          });
        if (!policy.floating && license.maxMachines != null && license.maxMachines > 1) {
          throw failedPrecondition(
            "FLOATING_REQUIRED",
            `policy ${policy.name} is node-locked (floating: false) ` +
              `and the license allows ${license.maxMachines} machines (its max_machines)`,
            { field: "policy_id" },
          );
        }
        // Its alive machines must be free in the new policy's scope, as if each were activated now.
        const taken = await machines.fingerprintTaken(em, {
          id: license.id,
          tenantId,
          policyId: policy.id,
          productId: license.productId,
          scope: policy.machineUniquenessScope,
        });
        if (taken)
          throw failedPrecondition(
            "MACHINE_FINGERPRINT_TAKEN",
            `policy ${policy.name}: the license's machine ${taken} is already activated on another license in ` +
              `the policy's machine uniqueness scope (${policy.machineUniquenessScope}); deactivate one first`,
            { field: "policy_id", fingerprint: taken, scope: policy.machineUniquenessScope },
          );
        license.policyId = policy.id;
      }
      // The policy the license ends with says whether its expiry starts again; a perpetual one has none to wait for.
      const reset = policy!.transferStrategy === "reset_expiry";
      if (reset) license.expiresAt = expiryFrom(policy!, clock.now());
      if (reset || policy!.durationSeconds == null) license.expiryPending = false;
      return change(em, license, actor, "license.transferred", {
        from,
        to: { customer_id: license.customerId, policy_id: license.policyId },
        ...(reset ? { expiry_reset: true, expires_at: license.expiresAt?.toISOString() ?? null } : {}),
      });
    },

    /**
     * An offline license file for the license: the effective plan, signed with the active
     * Ed25519 key (or HMAC with the shared secret), optionally machine-bound and encrypted.
     */
    async issueFile(em: EntityManager, tenantId: string, actor: string, id: string, opts: LicenseFileOptions) {
      return issueLicenseFile(em, { ...deps, license: await get(em, tenantId, id) }, actor, opts);
    },

    /** What a customer's active licenses grant together (Vinzy's composition), with the licenses it came from. */
    customerEntitlements: (em: EntityManager, tenantId: string, customerId: string) =>
      customerEntitlements(em, deps, tenantId, customerId),

    async reveal(em: EntityManager, tenantId: string, actor: string, id: string): Promise<string> {
      const license = await get(em, tenantId, id);
      const key = open(dataKey, Buffer.from(license.keySealed), id).toString();
      await events.emit(em, {
        tenantId,
        type: "license.key_revealed",
        subject: id,
        actor,
        payload: { key_prefix: license.keyPrefix },
      });
      return key;
    },
  };
}

export type LicenseService = ReturnType<typeof createLicenseService>;

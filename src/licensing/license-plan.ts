import { effectiveAgents, effectiveEntitlements, grants } from "./entitlements.js";
import type { License, Policy, Product } from "./licensing.entity.js";

export type LicenseStatus = "active" | "suspended" | "expired" | "revoked";

/** What a license grants, as license files and leases state it. */
export function planClaims(product: Product, policy: Policy, license: License) {
  const entitlements = effectiveEntitlements(policy.entitlements, license.entitlementOverrides);
  return {
    features: policy.allFeatures
      ? product.features.map((f) => f.name).sort()
      : entitlements.filter(grants).map((e) => e.feature),
    entitlements: Object.fromEntries(
      entitlements.map((e) => [e.feature, "enabled" in e ? e.enabled : "limit" in e ? e.limit : e.tier]),
    ) as Record<string, boolean | number | string>,
    agents: Object.fromEntries(
      effectiveAgents(policy.agentEntitlements, license.agentOverrides).map((a) => [
        a.agent,
        { enabled: a.enabled, token_limit: a.tokenLimit, model_tier: a.modelTier },
      ]),
    ),
    max_machines: license.maxMachines ?? policy.maxMachines,
    max_users: policy.maxUsers,
  };
}

/** The status a caller sees: expiry is evaluated at read time, not stored. */
export function effectiveStatus(license: Pick<License, "status" | "expiresAt">, now: Date): LicenseStatus {
  if (license.status !== "active") return license.status;
  return license.expiresAt && license.expiresAt.getTime() <= now.getTime() ? "expired" : "active";
}

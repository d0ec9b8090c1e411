import type { Clock } from "../platform/clock.js";
import type { EntityManager } from "../platform/db.js";
import type { CatalogService } from "./catalog.service.js";
import { compose, type ComposedAgent, type ComposedEntitlement } from "./composition.js";
import { effectiveAgents, effectiveEntitlements } from "./entitlements.js";
import { effectiveStatus } from "./license-plan.js";
import { License, Policy, Product } from "./licensing.entity.js";

/** A customer's active licenses and what they grant together. */
export interface CustomerEntitlements {
  licenseIds: string[];
  entitlements: ComposedEntitlement[];
  agents: ComposedAgent[];
}

/** What a customer's active licenses grant together (Vinzy's composition), with the licenses it came from. */
export async function customerEntitlements(
  em: EntityManager,
  deps: { clock: Clock; catalog: CatalogService },
  tenantId: string,
  customerId: string,
): Promise<CustomerEntitlements> {
  await deps.catalog.getCustomer(em, tenantId, customerId);
  const now = deps.clock.now();
  const held = (await em.find(License, { tenantId, customerId, status: "active" }, { orderBy: { id: "asc" } })).filter(
    (l) => effectiveStatus(l, now) === "active",
  );
  const [products, policies] = await Promise.all([
    em.find(Product, { id: { $in: [...new Set(held.map((l) => l.productId))] } }),
    em.find(Policy, { id: { $in: [...new Set(held.map((l) => l.policyId))] } }),
  ]);
  const productById = new Map(products.map((p) => [p.id, p]));
  const policyById = new Map(policies.map((p) => [p.id, p]));
  const composed = compose(
    held.map((l) => {
      const policy = policyById.get(l.policyId)!;
      return {
        licenseId: l.id,
        productId: l.productId,
        features: productById.get(l.productId)!.features,
        allFeatures: policy.allFeatures,
        entitlements: effectiveEntitlements(policy.entitlements, l.entitlementOverrides),
        agents: effectiveAgents(policy.agentEntitlements, l.agentOverrides),
      };
    }),
  );
  return { licenseIds: held.map((l) => l.id), ...composed };
}

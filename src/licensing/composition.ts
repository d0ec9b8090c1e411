import {
  effectiveEntitlements,
  tierRank,
  type ComposeStrategy,
  type ResolvedAgent,
  type Entitlement,
  type FeatureDefinition,
  type ModelTier,
} from "./entitlements.js";
import { byCodePoint } from "../platform/order.js";

/** One active license, as composition sees it. */
export interface ComposableLicense {
  licenseId: string;
  productId: string;
  features: FeatureDefinition[];
  allFeatures: boolean;
  entitlements: Entitlement[];
  /** Its policy's agent allowances merged with its overrides (effectiveAgents). */
  agents: ResolvedAgent[];
}

export type ComposedValue = boolean | number | ModelTier;

export interface ComposedEntitlement {
  feature: string;
  compose: ComposeStrategy;
  value: ComposedValue;
  sources: { productId: string; licenseId: string; value: ComposedValue }[];
}

export interface ComposedAgent {
  agent: string;
  enabled: boolean;
  /** 0: no limit. */
  tokenLimit: number;
  modelTier: ModelTier | null;
  licenseIds: string[];
}

const entitlementValue = (e: Entitlement): ComposedValue =>
  "enabled" in e ? e.enabled : "limit" in e ? e.limit : e.tier;

function combine(strategy: ComposeStrategy, a: ComposedValue, b: ComposedValue): ComposedValue {
  if (typeof a === "boolean" || typeof b === "boolean") return Boolean(a) || Boolean(b);
  if (typeof a === "number" && typeof b === "number") {
    if (strategy === "sum") return a + b;
    if (strategy === "max") return Math.max(a, b);
    return a; // union: the first value set wins
  }
  if (typeof a === "string" && typeof b === "string") {
    if (strategy === "union") return a;
    return tierRank(b) > tierRank(a) ? b : a; // tiers never add: sum and max both take the highest
  }
  return a;
}

/**
 * Vinzy's cross-product composition over a customer's active licenses: per feature, the
 * product's strategy (sum adds numbers, max takes the highest number or tier, union ORs
 * flags and keeps the first other value); per agent, enabled when any license enables it
 * and, over the licenses that do, token limits add (0, no limit, stays unlimited) and the
 * highest model tier wins. Every value lists the licenses it came from.
 */
export function compose(licenses: ComposableLicense[]): {
  entitlements: ComposedEntitlement[];
  agents: ComposedAgent[];
} {
  const byFeature = new Map<string, ComposedEntitlement>();
  const byAgent = new Map<string, ComposedAgent>();
  for (const l of licenses) {
    const defs = new Map(l.features.map((f) => [f.name, f]));
    const own = new Map(l.entitlements.map((e) => [e.feature, e]));
    if (l.allFeatures)
      for (const f of l.features)
        if (f.kind === "flag" && !own.has(f.name)) own.set(f.name, { feature: f.name, enabled: true });
    for (const e of effectiveEntitlements([...own.values()], [])) {
      const value = entitlementValue(e);
      const existing = byFeature.get(e.feature);
      if (!existing) {
        const compose = defs.get(e.feature)?.compose ?? "union";
        byFeature.set(e.feature, {
          feature: e.feature,
          compose,
          value,
          sources: [{ productId: l.productId, licenseId: l.licenseId, value }],
        });
      } else {
        existing.value = combine(existing.compose, existing.value, value);
        existing.sources.push({ productId: l.productId, licenseId: l.licenseId, value });
      }
    }
    for (const a of l.agents) {
      let composed = byAgent.get(a.agent);
      if (!composed) {
        composed = { agent: a.agent, enabled: false, tokenLimit: 0, modelTier: null, licenseIds: [] };
        byAgent.set(a.agent, composed);
      }
      composed.licenseIds.push(l.licenseId);
      // A license that disables the agent grants it nothing to add.
      if (!a.enabled) continue;
      if (!composed.enabled)
        Object.assign(composed, { enabled: true, tokenLimit: a.tokenLimit, modelTier: a.modelTier });
      else {
        composed.tokenLimit = composed.tokenLimit === 0 || a.tokenLimit === 0 ? 0 : composed.tokenLimit + a.tokenLimit;
        if (tierRank(a.modelTier) > tierRank(composed.modelTier)) composed.modelTier = a.modelTier;
      }
    }
  }
  return {
    entitlements: [...byFeature.values()].sort((a, b) => byCodePoint(a.feature, b.feature)),
    agents: [...byAgent.values()].sort((a, b) => byCodePoint(a.agent, b.agent)),
  };
}

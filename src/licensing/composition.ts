import { effectiveAgents, effectiveEntitlements, tierRank, type AgentEntitlement, type ComposeStrategy, type Entitlement, type FeatureDefinition, type ModelTier } from "./entitlements.js";

/** One active license, as composition sees it. */
export interface ComposableLicense {
  licenseId: string;
  productId: string;
  features: FeatureDefinition[];
  allFeatures: boolean;
  entitlements: Entitlement[];
  agents: AgentEntitlement[];
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
  tokenLimit: number;
  modelTier: ModelTier | null;
  licenseIds: string[];
}

const valueOf = (e: Entitlement): ComposedValue => ("enabled" in e ? e.enabled : "limit" in e ? e.limit : e.tier);

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
 * flags and keeps the first other value); per agent, token limits add (0, no limit, stays
 * unlimited) and the highest model tier wins. Every value lists the licenses it came from.
 */
export function compose(licenses: ComposableLicense[]): { entitlements: ComposedEntitlement[]; agents: ComposedAgent[] } {
  const byFeature = new Map<string, ComposedEntitlement>();
  const byAgent = new Map<string, ComposedAgent>();
  for (const l of licenses) {
    const defs = new Map(l.features.map((f) => [f.name, f]));
    const own = new Map(l.entitlements.map((e) => [e.feature, e]));
    if (l.allFeatures) for (const f of l.features) if (f.kind === "flag" && !own.has(f.name)) own.set(f.name, { feature: f.name, enabled: true });
    for (const e of effectiveEntitlements([...own.values()], [])) {
      const value = valueOf(e);
      const existing = byFeature.get(e.feature);
      if (!existing) {
        const compose = defs.get(e.feature)?.compose ?? "union";
        byFeature.set(e.feature, { feature: e.feature, compose, value, sources: [{ productId: l.productId, licenseId: l.licenseId, value }] });
      } else {
        existing.value = combine(existing.compose, existing.value, value);
        existing.sources.push({ productId: l.productId, licenseId: l.licenseId, value });
      }
    }
    for (const a of effectiveAgents(l.agents, [])) {
      const existing = byAgent.get(a.agent);
      if (!existing) byAgent.set(a.agent, { agent: a.agent, tokenLimit: a.tokenLimit, modelTier: a.modelTier, licenseIds: [l.licenseId] });
      else {
        existing.tokenLimit = existing.tokenLimit === 0 || a.tokenLimit === 0 ? 0 : existing.tokenLimit + a.tokenLimit;
        if (tierRank(a.modelTier) > tierRank(existing.modelTier)) existing.modelTier = a.modelTier;
        existing.licenseIds.push(l.licenseId);
      }
    }
  }
  return {
    entitlements: [...byFeature.values()].sort((a, b) => a.feature.localeCompare(b.feature)),
    agents: [...byAgent.values()].sort((a, b) => a.agent.localeCompare(b.agent)),
  };
}

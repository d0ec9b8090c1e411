/** Plain licensing domain types shared by entities, services and mappers. */

export type FeatureKind = "flag" | "limit" | "tier";
export type ComposeStrategy = "sum" | "max" | "union";
export type ModelTier = "basic" | "standard" | "premium" | "enterprise";
export const TIER_ORDER: ModelTier[] = ["basic", "standard", "premium", "enterprise"];

export interface FeatureDefinition {
  name: string;
  kind: FeatureKind;
  compose: ComposeStrategy;
  description: string;
}

/** A feature's value: exactly one of enabled / limit / tier, matching the feature's kind. */
export type EntitlementValue = { enabled: boolean } | { limit: number } | { tier: ModelTier };
export type Entitlement = { feature: string } & EntitlementValue;

export interface AgentEntitlement {
  agent: string;
  tokenLimit: number;
  modelTier: ModelTier | null;
}

export type ExpirationStrategy = "restrict_access" | "revoke_access" | "maintain_access" | "allow_access";
export type CullStrategy = "deactivate_dead" | "keep_dead";
export type OverageStrategy = "no_overage" | "always" | "allow_1_25x" | "allow_1_5x" | "allow_2x";

export const tierRank = (t: ModelTier | null | undefined) => (t ? TIER_ORDER.indexOf(t) + 1 : 0);

/** Policy entitlements with the license's overrides applied (an override replaces the feature). */
export function effectiveEntitlements(policy: Entitlement[], overrides: Entitlement[]): Entitlement[] {
  const byFeature = new Map(policy.map((e) => [e.feature, e]));
  for (const o of overrides) byFeature.set(o.feature, o);
  return [...byFeature.values()].sort((a, b) => a.feature.localeCompare(b.feature));
}

export function effectiveAgents(policy: AgentEntitlement[], overrides: AgentEntitlement[]): AgentEntitlement[] {
  const byAgent = new Map(policy.map((a) => [a.agent, a]));
  for (const o of overrides) byAgent.set(o.agent, o);
  return [...byAgent.values()].sort((a, b) => a.agent.localeCompare(b.agent));
}

/** Whether an entitlement grants its feature: an enabled flag, a positive limit, any tier. */
export function grants(e: Entitlement): boolean {
  if ("enabled" in e) return e.enabled;
  if ("limit" in e) return e.limit > 0;
  return true;
}

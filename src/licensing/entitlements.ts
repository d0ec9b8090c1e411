/** Plain licensing domain types shared by entities, services and mappers. */
import { byCodePoint } from "../platform/order.js";

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

/**
 * An agent's allowance as a policy or a license override states it. An absent attribute
 * is unset (a default in a policy, inherited in an override); stored as JSON, so absent
 * means the key is missing. `modelTier: null` is "no tier", set (rows written before
 * attributes could be unset hold it, and keep meaning it).
 */
export interface AgentEntitlement {
  agent: string;
  enabled?: boolean;
  /** Tokens per period; 0: no limit. */
  tokenLimit?: number;
  modelTier?: ModelTier | null;
}

/** An agent's allowance with every attribute resolved. */
export interface ResolvedAgent {
  agent: string;
  enabled: boolean;
  /** Tokens per period; 0: no limit. */
  tokenLimit: number;
  modelTier: ModelTier | null;
}

export type ExpirationStrategy = "restrict_access" | "revoke_access" | "maintain_access" | "allow_access";
export type CullStrategy = "deactivate_dead" | "keep_dead";
export type ExpirationBasis = "from_creation" | "from_first_activation" | "from_first_validation" | "from_first_use";
export type HeartbeatBasis = "from_activation" | "from_first_heartbeat";
export type RenewalBasis = "from_now_if_expired" | "from_expiry" | "from_now";
export type TransferStrategy = "keep_expiry" | "reset_expiry";
export type ProcessLeasingStrategy = "per_machine" | "per_license";
/** Where a machine's fingerprint must be unique (machine.service.ts, requireFingerprintFree). */
export type MachineUniquenessScope = "license" | "policy" | "product" | "tenant";
export type ComponentMatchingStrategy = "match_any" | "match_two" | "match_most" | "match_all";
export type OverageStrategy = "no_overage" | "always" | "allow_1_25x" | "allow_1_5x" | "allow_2x";

export const tierRank = (t: ModelTier | null | undefined) => (t ? TIER_ORDER.indexOf(t) + 1 : 0);

/** Policy entitlements with the license's overrides applied (an override replaces the feature). */
export function effectiveEntitlements(policy: Entitlement[], overrides: Entitlement[]): Entitlement[] {
  const byFeature = new Map(policy.map((e) => [e.feature, e]));
  for (const o of overrides) byFeature.set(o.feature, o);
  return [...byFeature.values()].sort((a, b) => byCodePoint(a.feature, b.feature));
}

/**
 * Policy agent allowances with the license's overrides merged in, attribute by attribute
 * as Vinzy-Engine does: the override's value where it sets one, else the policy's, else
 * the default (enabled, no token limit, no tier).
 */
export function effectiveAgents(policy: AgentEntitlement[], overrides: AgentEntitlement[]): ResolvedAgent[] {
  const byAgent = new Map(policy.map((a) => [a.agent, a]));
  for (const o of overrides) {
    const p = byAgent.get(o.agent);
    byAgent.set(o.agent, {
      agent: o.agent,
      enabled: o.enabled ?? p?.enabled,
      tokenLimit: o.tokenLimit ?? p?.tokenLimit,
      modelTier: o.modelTier !== undefined ? o.modelTier : p?.modelTier,
    });
  }
  return [...byAgent.values()]
    .map((a) => ({
      agent: a.agent,
      enabled: a.enabled ?? true,
      tokenLimit: a.tokenLimit ?? 0,
      modelTier: a.modelTier ?? null,
    }))
    .sort((a, b) => byCodePoint(a.agent, b.agent));
}

/** Whether an entitlement grants its feature: an enabled flag, a positive limit, any tier. */
export function grants(e: Entitlement): boolean {
  if ("enabled" in e) return e.enabled;
  if ("limit" in e) return e.limit > 0;
  return true;
}

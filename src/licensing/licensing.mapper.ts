import { create, fromJson } from "@bufbuild/protobuf";
import { timestampFromDate, ValueSchema, type Duration } from "@bufbuild/protobuf/wkt";
import { CustomerSchema } from "../../gen/ts/licensd/licensing/v1/customer_pb.js";
import { LicenseSchema, LicenseStatus as PbLicenseStatus } from "../../gen/ts/licensd/licensing/v1/license_pb.js";
import {
  AgentEntitlementSchema,
  EntitlementSchema,
  ExpirationBasis as PbExpirationBasis,
  ExpirationStrategy as PbExpiration,
  HeartbeatBasis as PbHeartbeatBasis,
  HeartbeatCullStrategy as PbCull,
  MachineUniquenessScope as PbUniquenessScope,
  ModelTier as PbTier,
  OverageStrategy as PbOverage,
  ProcessLeasingStrategy as PbProcessLeasing,
  PolicySchema,
  RenewalBasis as PbRenewalBasis,
  TransferStrategy as PbTransfer,
  ComponentMatchingStrategy as PbComponentMatching,
  type AgentEntitlement as PbAgent,
  type Entitlement as PbEntitlement,
} from "../../gen/ts/licensd/licensing/v1/policy_pb.js";
import {
  ComposeStrategy as PbCompose,
  FeatureKind as PbKind,
  ProductSchema,
  type FeatureDefinition as PbFeature,
} from "../../gen/ts/licensd/licensing/v1/product_pb.js";
import { invalidArgument } from "../platform/errors.js";
import type {
  AgentEntitlement,
  ComposeStrategy,
  ResolvedAgent,
  CullStrategy,
  Entitlement,
  ExpirationBasis,
  ExpirationStrategy,
  FeatureDefinition,
  FeatureKind,
  HeartbeatBasis,
  MachineUniquenessScope,
  ModelTier,
  OverageStrategy,
  ProcessLeasingStrategy,
  RenewalBasis,
  TransferStrategy,
  ComponentMatchingStrategy,
} from "./entitlements.js";
import type { ComposedAgent, ComposedEntitlement } from "./composition.js";
import type { LicenseStatus } from "./license.service.js";
import type { Customer, License, Policy, Product } from "./licensing.entity.js";

/** A two-way map between a domain enum (lowercase names) and its proto enum. */
function enumMap<D extends string, P extends number>(pairs: [D, P][]) {
  const toProto = new Map(pairs);
  const fromProto = new Map(pairs.map(([d, p]) => [p, d]));
  return { toProto: (d: D) => toProto.get(d)!, fromProto: (p: P) => fromProto.get(p) };
}

const kinds = enumMap<FeatureKind, PbKind>([
  ["flag", PbKind.FLAG],
  ["limit", PbKind.LIMIT],
  ["tier", PbKind.TIER],
]);
const composes = enumMap<ComposeStrategy, PbCompose>([
  ["sum", PbCompose.SUM],
  ["max", PbCompose.MAX],
  ["union", PbCompose.UNION],
]);
export const tiers = enumMap<ModelTier, PbTier>([
  ["basic", PbTier.BASIC],
  ["standard", PbTier.STANDARD],
  ["premium", PbTier.PREMIUM],
  ["enterprise", PbTier.ENTERPRISE],
]);
const expirations = enumMap<ExpirationStrategy, PbExpiration>([
  ["restrict_access", PbExpiration.RESTRICT_ACCESS],
  ["revoke_access", PbExpiration.REVOKE_ACCESS],
  ["maintain_access", PbExpiration.MAINTAIN_ACCESS],
  ["allow_access", PbExpiration.ALLOW_ACCESS],
]);
const culls = enumMap<CullStrategy, PbCull>([
  ["deactivate_dead", PbCull.DEACTIVATE_DEAD],
  ["keep_dead", PbCull.KEEP_DEAD],
]);
const overages = enumMap<OverageStrategy, PbOverage>([
  ["no_overage", PbOverage.NO_OVERAGE],
  ["always", PbOverage.ALWAYS],
  ["allow_1_25x", PbOverage.ALLOW_1_25X],
  ["allow_1_5x", PbOverage.ALLOW_1_5X],
  ["allow_2x", PbOverage.ALLOW_2X],
]);
const expirationBases = enumMap<ExpirationBasis, PbExpirationBasis>([
  ["from_creation", PbExpirationBasis.FROM_CREATION],
  ["from_first_activation", PbExpirationBasis.FROM_FIRST_ACTIVATION],
  ["from_first_validation", PbExpirationBasis.FROM_FIRST_VALIDATION],
  ["from_first_use", PbExpirationBasis.FROM_FIRST_USE],
]);
const heartbeatBases = enumMap<HeartbeatBasis, PbHeartbeatBasis>([
  ["from_activation", PbHeartbeatBasis.FROM_ACTIVATION],
  ["from_first_heartbeat", PbHeartbeatBasis.FROM_FIRST_HEARTBEAT],
]);
const renewalBases = enumMap<RenewalBasis, PbRenewalBasis>([
  ["from_now_if_expired", PbRenewalBasis.FROM_NOW_IF_EXPIRED],
  ["from_expiry", PbRenewalBasis.FROM_EXPIRY],
  ["from_now", PbRenewalBasis.FROM_NOW],
]);
const transfers = enumMap<TransferStrategy, PbTransfer>([
  ["keep_expiry", PbTransfer.KEEP_EXPIRY],
  ["reset_expiry", PbTransfer.RESET_EXPIRY],
]);
const processLeasings = enumMap<ProcessLeasingStrategy, PbProcessLeasing>([
  ["per_machine", PbProcessLeasing.PER_MACHINE],
  ["per_license", PbProcessLeasing.PER_LICENSE],
]);

const uniquenessScopes = enumMap<MachineUniquenessScope, PbUniquenessScope>([
  ["license", PbUniquenessScope.LICENSE],
  ["policy", PbUniquenessScope.POLICY],
  ["product", PbUniquenessScope.PRODUCT],
  ["tenant", PbUniquenessScope.TENANT],
]);

const componentMatchings = enumMap<ComponentMatchingStrategy, PbComponentMatching>([
  ["match_any", PbComponentMatching.MATCH_ANY],
  ["match_two", PbComponentMatching.MATCH_TWO],
  ["match_most", PbComponentMatching.MATCH_MOST],
  ["match_all", PbComponentMatching.MATCH_ALL],
]);
const statuses = enumMap<LicenseStatus, PbLicenseStatus>([
  ["active", PbLicenseStatus.ACTIVE],
  ["suspended", PbLicenseStatus.SUSPENDED],
  ["expired", PbLicenseStatus.EXPIRED],
  ["revoked", PbLicenseStatus.REVOKED],
]);

export const expirationFromProto = (p: PbExpiration): ExpirationStrategy =>
  expirations.fromProto(p) ?? "restrict_access";
export const cullFromProto = (p: PbCull): CullStrategy => culls.fromProto(p) ?? "deactivate_dead";
export const overageFromProto = (p: PbOverage): OverageStrategy => overages.fromProto(p) ?? "no_overage";
export const expirationBasisFromProto = (p: PbExpirationBasis): ExpirationBasis =>
  expirationBases.fromProto(p) ?? "from_creation";
export const heartbeatBasisFromProto = (p: PbHeartbeatBasis): HeartbeatBasis =>
  heartbeatBases.fromProto(p) ?? "from_activation";
export const renewalBasisFromProto = (p: PbRenewalBasis): RenewalBasis =>
  renewalBases.fromProto(p) ?? "from_now_if_expired";
export const transferFromProto = (p: PbTransfer): TransferStrategy => transfers.fromProto(p) ?? "keep_expiry";
export const processLeasingFromProto = (p: PbProcessLeasing): ProcessLeasingStrategy =>
  processLeasings.fromProto(p) ?? "per_machine";
export const uniquenessScopeFromProto = (p: PbUniquenessScope): MachineUniquenessScope =>
  uniquenessScopes.fromProto(p) ?? "license";
export const componentMatchingFromProto = (p: PbComponentMatching): ComponentMatchingStrategy =>
  componentMatchings.fromProto(p) ?? "match_any";
export const statusFromProto = (p: PbLicenseStatus): LicenseStatus | undefined => statuses.fromProto(p);
export const statusToProto = (s: LicenseStatus) => statuses.toProto(s);

export const seconds = (d: Duration | undefined): number | null => (d ? Number(d.seconds) : null);
const duration = (s: number | null | undefined) => (s == null ? undefined : { seconds: BigInt(s), nanos: 0 });
const time = (d: Date | null | undefined) => (d ? timestampFromDate(d) : undefined);

export const featuresFromProto = (features: PbFeature[]): FeatureDefinition[] =>
  features.map((f) => ({
    name: f.name,
    kind: kinds.fromProto(f.kind)!,
    compose: composes.fromProto(f.compose)!,
    description: f.description,
  }));

export function entitlementsFromProto(list: PbEntitlement[], field: string): Entitlement[] {
  return list.map((e, i) => {
    switch (e.value.case) {
      case "enabled":
        return { feature: e.feature, enabled: e.value.value };
      case "limit":
        if (e.value.value < 0n || e.value.value > BigInt(Number.MAX_SAFE_INTEGER))
          throw invalidArgument(`${field}[${i}].limit`, "must be from 0 to 2^53-1");
        return { feature: e.feature, limit: Number(e.value.value) };
      case "tier": {
        const tier = tiers.fromProto(e.value.value);
        if (!tier) throw invalidArgument(`${field}[${i}].tier`, "must be BASIC, STANDARD, PREMIUM or ENTERPRISE");
        return { feature: e.feature, tier };
      }
      default:
        throw invalidArgument(`${field}[${i}]`, "set one of enabled, limit or tier");
    }
  });
}

/**
 * Agent allowances as given: unset attributes stay absent (`token_limit`, deprecated, stands in for an unset
 * `token_allowance` when non-zero).
 */
export function agentsFromProto(list: PbAgent[], field: string): AgentEntitlement[] {
  const tokens = (v: bigint, name: string, i: number) => {
    if (v < 0n || v > BigInt(Number.MAX_SAFE_INTEGER))
      throw invalidArgument(`${field}[${i}].${name}`, "must be from 0 to 2^53-1");
    return Number(v);
  };
  return list.map((a, i) => {
    const out: AgentEntitlement = { agent: a.agent };
    if (a.enabled !== undefined) out.enabled = a.enabled;
    if (a.tokenAllowance !== undefined) {
      if (a.tokenLimit !== 0n && a.tokenLimit !== a.tokenAllowance)
        throw invalidArgument(
          `${field}[${i}].token_limit`,
          "differs from token_allowance, which it is the deprecated name of: set one of them",
        );
      out.tokenLimit = tokens(a.tokenAllowance, "token_allowance", i);
    } else if (a.tokenLimit !== 0n) {
      out.tokenLimit = tokens(a.tokenLimit, "token_limit", i);
    }
    if (a.modelTier !== PbTier.UNSPECIFIED) {
      const tier = tiers.fromProto(a.modelTier);
      if (!tier)
        throw invalidArgument(`${field}[${i}].model_tier`, "must be BASIC, STANDARD, PREMIUM or ENTERPRISE, or unset");
      out.modelTier = tier;
    }
    return out;
  });
}

export const entitlementToProto = (e: Entitlement) =>
  create(EntitlementSchema, {
    feature: e.feature,
    value:
      "enabled" in e
        ? { case: "enabled", value: e.enabled }
        : "limit" in e
          ? { case: "limit", value: BigInt(e.limit) }
          : { case: "tier", value: tiers.toProto(e.tier) },
  });

/** A stated allowance keeps its unset attributes unset; a resolved one has them all. */
export const agentToProto = (a: AgentEntitlement | ResolvedAgent) =>
  create(AgentEntitlementSchema, {
    agent: a.agent,
    enabled: a.enabled,
    tokenAllowance: a.tokenLimit === undefined ? undefined : BigInt(a.tokenLimit),
    tokenLimit: BigInt(a.tokenLimit ?? 0),
    modelTier: a.modelTier ? tiers.toProto(a.modelTier) : PbTier.UNSPECIFIED,
  });

export const productToProto = (p: Product) =>
  create(ProductSchema, {
    id: p.id,
    tenantId: p.tenantId,
    code: p.code,
    name: p.name,
    features: p.features.map((f) => ({
      name: f.name,
      kind: kinds.toProto(f.kind),
      compose: composes.toProto(f.compose),
      description: f.description,
    })),
    metadata: p.metadata,
    createTime: time(p.createdAt),
    updateTime: time(p.updatedAt),
  });

export const policyToProto = (p: Policy) =>
  create(PolicySchema, {
    id: p.id,
    tenantId: p.tenantId,
    productId: p.productId,
    name: p.name,
    duration: duration(p.durationSeconds),
    allFeatures: p.allFeatures,
    entitlements: p.entitlements.map(entitlementToProto),
    agentEntitlements: p.agentEntitlements.map(agentToProto),
    maxMachines: p.maxMachines,
    maxUsers: p.maxUsers,
    floating: p.floating,
    heartbeatDuration: duration(p.heartbeatSeconds),
    expirationStrategy: expirations.toProto(p.expirationStrategy),
    gracePeriod: duration(p.graceSeconds),
    overageStrategy: overages.toProto(p.overageStrategy),
    leaseTtl: duration(p.leaseTtlSeconds),
    heartbeatGracePeriod: duration(p.heartbeatGraceSeconds),
    heartbeatCullStrategy: culls.toProto(p.heartbeatCullStrategy),
    heartbeatResurrectionPeriod: duration(p.heartbeatResurrectionSeconds),
    offlineLeaseTtl: duration(p.offlineLeaseTtlSeconds),
    requireFingerprintScope: p.requireFingerprintScope,
    expirationBasis: expirationBases.toProto(p.expirationBasis),
    heartbeatBasis: heartbeatBases.toProto(p.heartbeatBasis),
    renewalBasis: renewalBases.toProto(p.renewalBasis),
    transferStrategy: transfers.toProto(p.transferStrategy),
    requireUserScope: p.requireUserScope,
    maxProcesses: p.maxProcesses,
    processLeasingStrategy: processLeasings.toProto(p.processLeasingStrategy),
    processHeartbeatDuration: duration(p.processHeartbeatSeconds),
    machineUniquenessScope: uniquenessScopes.toProto(p.machineUniquenessScope),
    maxCores: p.maxCores,
    componentMatchingStrategy: componentMatchings.toProto(p.componentMatchingStrategy),
    requireComponentsScope: p.requireComponentsScope,
    metadata: p.metadata,
    createTime: time(p.createdAt),
    updateTime: time(p.updatedAt),
  });

export const customerToProto = (c: Customer) =>
  create(CustomerSchema, {
    id: c.id,
    tenantId: c.tenantId,
    name: c.name,
    email: c.email,
    organization: c.organization,
    metadata: c.metadata,
    createTime: time(c.createdAt),
    updateTime: time(c.updatedAt),
  });

export const licenseToProto = (l: License, status: LicenseStatus) =>
  create(LicenseSchema, {
    id: l.id,
    tenantId: l.tenantId,
    productId: l.productId,
    policyId: l.policyId,
    customerId: l.customerId,
    status: statuses.toProto(status),
    keyPrefix: l.keyPrefix,
    expireTime: time(l.expiresAt),
    entitlementOverrides: l.entitlementOverrides.map(entitlementToProto),
    agentOverrides: l.agentOverrides.map(agentToProto),
    maxMachines: l.maxMachines ?? undefined,
    metadata: l.metadata,
    suspendTime: time(l.suspendedAt),
    revokeTime: time(l.revokedAt),
    createTime: time(l.createdAt),
    updateTime: time(l.updatedAt),
    expiryPending: l.expiryPending,
  });

/** One entitlement of a customer's composition (GetCustomerEntitlements). */
export const composedEntitlementToProto = (e: ComposedEntitlement) => ({
  feature: e.feature,
  compose: { sum: 1, max: 2, union: 3 }[e.compose],
  value: fromJson(ValueSchema, e.value),
  sources: e.sources.map((s) => ({
    productId: s.productId,
    licenseId: s.licenseId,
    value: fromJson(ValueSchema, s.value),
  })),
});

/** One agent allowance of a customer's composition (GetCustomerEntitlements). */
export const composedAgentToProto = (a: ComposedAgent) => ({
  agent: a.agent,
  enabled: a.enabled,
  tokenLimit: BigInt(a.tokenLimit),
  modelTier: a.modelTier ? tiers.toProto(a.modelTier) : 0,
  licenseIds: a.licenseIds,
});

import { defineEntity, p } from "@mikro-orm/core";
import { baseProperties } from "../platform/base-entity.js";
import type {
  AgentEntitlement,
  CullStrategy,
  Entitlement,
  ExpirationBasis,
  ExpirationStrategy,
  HeartbeatBasis,
  FeatureDefinition,
  MachineUniquenessScope,
  OverageStrategy,
  ProcessLeasingStrategy,
  RenewalBasis,
  TransferStrategy,
  ComponentMatchingStrategy,
} from "./entitlements.js";

export const ProductSchema = defineEntity({
  name: "Product",
  tableName: "products",
  properties: {
    ...baseProperties,
    code: p.string(),
    name: p.string(),
    features: p.json<FeatureDefinition[]>(),
    metadata: p.json<Record<string, string>>(),
  },
});
export class Product extends ProductSchema.class {}
ProductSchema.setClass(Product);

export const PolicySchema = defineEntity({
  name: "Policy",
  tableName: "policies",
  properties: {
    ...baseProperties,
    productId: p.string(),
    name: p.string(),
    durationSeconds: p.bigint("number").nullable(),
    allFeatures: p.boolean(),
    entitlements: p.json<Entitlement[]>(),
    agentEntitlements: p.json<AgentEntitlement[]>(),
    maxMachines: p.integer(),
    maxUsers: p.integer(),
    floating: p.boolean(),
    heartbeatSeconds: p.bigint("number").nullable(),
    expirationStrategy: p.string().$type<ExpirationStrategy>(),
    graceSeconds: p.bigint("number"),
    overageStrategy: p.string().$type<OverageStrategy>(),
    leaseTtlSeconds: p.bigint("number").nullable(),
    heartbeatGraceSeconds: p.bigint("number"),
    heartbeatCullStrategy: p.string().$type<CullStrategy>(),
    heartbeatResurrectionSeconds: p.bigint("number").nullable(),
    offlineLeaseTtlSeconds: p.bigint("number").nullable(),
    requireFingerprintScope: p.boolean(),
    expirationBasis: p.string().$type<ExpirationBasis>(),
    heartbeatBasis: p.string().$type<HeartbeatBasis>(),
    renewalBasis: p.string().$type<RenewalBasis>(),
    transferStrategy: p.string().$type<TransferStrategy>(),
    requireUserScope: p.boolean(),
    maxProcesses: p.integer(),
    processLeasingStrategy: p.string().$type<ProcessLeasingStrategy>(),
    processHeartbeatSeconds: p.bigint("number").nullable(),
    machineUniquenessScope: p.string().$type<MachineUniquenessScope>(),
    /** Total cores a license's machines may report; 0 for no limit. */
    maxCores: p.integer(),
    componentMatchingStrategy: p.string().$type<ComponentMatchingStrategy>(),
    requireComponentsScope: p.boolean(),
    metadata: p.json<Record<string, string>>(),
  },
});
export class Policy extends PolicySchema.class {}
PolicySchema.setClass(Policy);

export const CustomerSchema = defineEntity({
  name: "Customer",
  tableName: "customers",
  properties: {
    ...baseProperties,
    name: p.string(),
    email: p.string(),
    organization: p.string(),
    metadata: p.json<Record<string, string>>(),
  },
});
export class Customer extends CustomerSchema.class {}
CustomerSchema.setClass(Customer);

export type StoredLicenseStatus = "active" | "suspended" | "revoked";

export const LicenseSchema = defineEntity({
  name: "License",
  tableName: "licenses",
  properties: {
    ...baseProperties,
    productId: p.string(),
    policyId: p.string(),
    customerId: p.string(),
    status: p.string().$type<StoredLicenseStatus>(),
    /** SHA-256 of the key: how ValidateLicense finds the license. */
    keyDigest: p.blob(),
    /** The key under AES-256-GCM with the data key, for RevealLicenseKey. */
    keySealed: p.blob(),
    keyPrefix: p.string(),
    expiresAt: p.datetime().nullable(),
    /** The policy's expiration basis has not happened yet: no expiry until it does (expiry-start.ts). */
    expiryPending: p.boolean(),
    entitlementOverrides: p.json<Entitlement[]>(),
    agentOverrides: p.json<AgentEntitlement[]>(),
    maxMachines: p.integer().nullable(),
    metadata: p.json<Record<string, string>>(),
    suspendedAt: p.datetime().nullable(),
    revokedAt: p.datetime().nullable(),
  },
});
export class License extends LicenseSchema.class {}
LicenseSchema.setClass(License);

/** A user of the vendor's attached to a license (ValidateLicenseRequest.user). */
export const LicenseUserSchema = defineEntity({
  name: "LicenseUser",
  tableName: "license_users",
  properties: {
    ...baseProperties,
    licenseId: p.string(),
    /** An e-mail in lowercase, or the vendor's user id as given. */
    identity: p.string(),
    name: p.string(),
    metadata: p.json<Record<string, string>>(),
  },
});
export class LicenseUser extends LicenseUserSchema.class {}
LicenseUserSchema.setClass(LicenseUser);

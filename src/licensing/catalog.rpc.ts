import { create } from "@bufbuild/protobuf";
import type { FieldMask } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import * as pb from "../../gen/ts/licensd/licensing/v1/licensing_service_pb.js";
import type { Database } from "../platform/db.js";
import type { ReplicaReads } from "../platform/replicas.js";
import { invalidArgument } from "../platform/errors.js";
import type { Idempotency } from "../platform/idempotency.js";
import type { PageTokens } from "../platform/pagination.js";
import { procedureOf, readTenant, tenantMutation } from "../platform/rpc.js";
import type { CatalogService, PolicyInput } from "./catalog.service.js";
import {
  agentsFromProto,
  customerToProto,
  entitlementsFromProto,
  cullFromProto,
  expirationBasisFromProto,
  expirationFromProto,
  heartbeatBasisFromProto,
  uniquenessScopeFromProto,
  renewalBasisFromProto,
  transferFromProto,
  componentMatchingFromProto,
  featuresFromProto,
  overageFromProto,
  processLeasingFromProto,
  policyToProto,
  productToProto,
  seconds,
} from "./licensing.mapper.js";

type LicensingImpl = ServiceImpl<typeof pb.LicensingService>;
export type CatalogMethods =
  | `${"create" | "get" | "update" | "delete"}${"Product" | "Policy" | "Customer"}`
  | "listProducts"
  | "listPolicies"
  | "listCustomers";

/** The update mask's paths, refused when empty or naming a field that cannot change. */
export function maskPaths(mask: FieldMask | undefined, allowed: string[]): Set<string> {
  const paths = mask?.paths ?? [];
  if (paths.length === 0) throw invalidArgument("update_mask", `name at least one field: ${allowed.join(", ")}`);
  const bad = paths.find((p) => !allowed.includes(p));
  if (bad !== undefined)
    throw invalidArgument("update_mask", `${JSON.stringify(bad)} is not updatable (${allowed.join(", ")} are)`);
  return new Set(paths);
}

/** UpdatePolicy's mask paths and the PolicyInput field each one sets. */
const POLICY_FIELDS: Record<string, keyof PolicyInput> = {
  name: "name",
  duration: "durationSeconds",
  all_features: "allFeatures",
  entitlements: "entitlements",
  agent_entitlements: "agentEntitlements",
  max_machines: "maxMachines",
  max_users: "maxUsers",
  floating: "floating",
  heartbeat_duration: "heartbeatSeconds",
  expiration_strategy: "expirationStrategy",
  grace_period: "graceSeconds",
  overage_strategy: "overageStrategy",
  lease_ttl: "leaseTtlSeconds",
  heartbeat_grace_period: "heartbeatGraceSeconds",
  heartbeat_cull_strategy: "heartbeatCullStrategy",
  heartbeat_resurrection_period: "heartbeatResurrectionSeconds",
  offline_lease_ttl: "offlineLeaseTtlSeconds",
  require_fingerprint_scope: "requireFingerprintScope",
  expiration_basis: "expirationBasis",
  heartbeat_basis: "heartbeatBasis",
  renewal_basis: "renewalBasis",
  transfer_strategy: "transferStrategy",
  require_user_scope: "requireUserScope",
  max_processes: "maxProcesses",
  process_leasing_strategy: "processLeasingStrategy",
  process_heartbeat_duration: "processHeartbeatSeconds",
  machine_uniqueness_scope: "machineUniquenessScope",
  max_cores: "maxCores",
  component_matching_strategy: "componentMatchingStrategy",
  require_components_scope: "requireComponentsScope",
  metadata: "metadata",
};

type PolicyRequest = pb.CreatePolicyRequest | pb.UpdatePolicyRequest;

function policyInput(req: PolicyRequest): PolicyInput {
  return {
    name: req.name,
    durationSeconds: seconds(req.duration),
    allFeatures: req.allFeatures,
    entitlements: entitlementsFromProto(req.entitlements, "entitlements"),
    agentEntitlements: agentsFromProto(req.agentEntitlements, "agent_entitlements"),
    maxMachines: req.maxMachines,
    maxUsers: req.maxUsers,
    floating: req.floating,
    heartbeatSeconds: seconds(req.heartbeatDuration),
    expirationStrategy: expirationFromProto(req.expirationStrategy),
    graceSeconds: seconds(req.gracePeriod) ?? 0,
    overageStrategy: overageFromProto(req.overageStrategy),
    leaseTtlSeconds: seconds(req.leaseTtl),
    heartbeatGraceSeconds: seconds(req.heartbeatGracePeriod) ?? 0,
    heartbeatCullStrategy: cullFromProto(req.heartbeatCullStrategy),
    heartbeatResurrectionSeconds: seconds(req.heartbeatResurrectionPeriod),
    offlineLeaseTtlSeconds: seconds(req.offlineLeaseTtl),
    requireFingerprintScope: req.requireFingerprintScope,
    expirationBasis: expirationBasisFromProto(req.expirationBasis),
    heartbeatBasis: heartbeatBasisFromProto(req.heartbeatBasis),
    renewalBasis: renewalBasisFromProto(req.renewalBasis),
    transferStrategy: transferFromProto(req.transferStrategy),
    requireUserScope: req.requireUserScope,
    maxProcesses: req.maxProcesses,
    processLeasingStrategy: processLeasingFromProto(req.processLeasingStrategy),
    processHeartbeatSeconds: seconds(req.processHeartbeatDuration),
    machineUniquenessScope: uniquenessScopeFromProto(req.machineUniquenessScope),
    maxCores: req.maxCores,
    componentMatchingStrategy: componentMatchingFromProto(req.componentMatchingStrategy),
    requireComponentsScope: req.requireComponentsScope,
    metadata: req.metadata,
  };
}

/** Products, policies and customers of licensd.licensing.v1.LicensingService. */
export function createCatalogRpc(deps: {
  db: Database;
  /** Lists and other reads that tolerate bounded staleness (docs/replicas.md). */
  reads: ReplicaReads;
  idempotency: Idempotency;
  catalog: CatalogService;
  pages: PageTokens;
}): Pick<LicensingImpl, CatalogMethods> {
  const { db, reads, idempotency, catalog, pages } = deps;
  return {
    createProduct: (req, ctx) =>
      tenantMutation(
        idempotency,
        ctx,
        { requestSchema: pb.CreateProductRequestSchema, request: req, responseSchema: pb.CreateProductResponseSchema },
        async (em, m) => {
          const product = await catalog.createProduct(em, m.tenantId, m.actor, {
            code: req.code,
            name: req.name,
            features: featuresFromProto(req.features),
            metadata: req.metadata,
          });
          return create(pb.CreateProductResponseSchema, { product: productToProto(product) });
        },
      ),
    async getProduct(req, ctx) {
      const product = await catalog.getProduct(db.em(), readTenant(ctx, req.tenantId), req.id);
      return create(pb.GetProductResponseSchema, { product: productToProto(product) });
    },
    async listProducts(req, ctx) {
      const tenantId = readTenant(ctx, req.tenantId);
      const page = pages.read(req.pageSize, req.pageToken, { list: procedureOf(ctx), tenantId });
      const { items, nextPageToken } = pages.pageOf(
        await reads.run((em) => catalog.listProducts(em, tenantId, page)),
        page,
      );
      return create(pb.ListProductsResponseSchema, { products: items.map(productToProto), nextPageToken });
    },
    updateProduct: (req, ctx) => {
      const paths = maskPaths(req.updateMask, ["name", "features", "metadata"]);
      return tenantMutation(
        idempotency,
        ctx,
        { requestSchema: pb.UpdateProductRequestSchema, request: req, responseSchema: pb.UpdateProductResponseSchema },
        async (em, m) => {
          const product = await catalog.updateProduct(em, m.tenantId, m.actor, req.id, {
            name: paths.has("name") ? req.name : undefined,
            features: paths.has("features") ? featuresFromProto(req.features) : undefined,
            metadata: paths.has("metadata") ? req.metadata : undefined,
          });
          return create(pb.UpdateProductResponseSchema, { product: productToProto(product) });
        },
      );
    },
    deleteProduct: (req, ctx) =>
      tenantMutation(
        idempotency,
        ctx,
        { requestSchema: pb.DeleteProductRequestSchema, request: req, responseSchema: pb.DeleteProductResponseSchema },
        async (em, m) => {
          return create(pb.DeleteProductResponseSchema, {
            product: productToProto(await catalog.deleteProduct(em, m.tenantId, m.actor, req.id)),
          });
        },
      ),

    createPolicy: (req, ctx) =>
      tenantMutation(
        idempotency,
        ctx,
        { requestSchema: pb.CreatePolicyRequestSchema, request: req, responseSchema: pb.CreatePolicyResponseSchema },
        async (em, m) => {
          const policy = await catalog.createPolicy(em, m.tenantId, m.actor, req.productId, policyInput(req));
          return create(pb.CreatePolicyResponseSchema, { policy: policyToProto(policy) });
        },
      ),
    async getPolicy(req, ctx) {
      const policy = await catalog.getPolicy(db.em(), readTenant(ctx, req.tenantId), req.id);
      return create(pb.GetPolicyResponseSchema, { policy: policyToProto(policy) });
    },
    async listPolicies(req, ctx) {
      const tenantId = readTenant(ctx, req.tenantId);
      const page = pages.read(req.pageSize, req.pageToken, {
        list: procedureOf(ctx),
        tenantId,
        filters: { productId: req.productId },
      });
      const { items, nextPageToken } = pages.pageOf(
        await reads.run((em) => catalog.listPolicies(em, tenantId, page, req.productId)),
        page,
      );
      return create(pb.ListPoliciesResponseSchema, { policies: items.map(policyToProto), nextPageToken });
    },
    updatePolicy: (req, ctx) => {
      const paths = maskPaths(req.updateMask, Object.keys(POLICY_FIELDS));
      const all = policyInput(req);
      const patch: Partial<PolicyInput> = Object.fromEntries(
        [...paths].map((p) => [POLICY_FIELDS[p], all[POLICY_FIELDS[p]]]),
      );
      return tenantMutation(
        idempotency,
        ctx,
        { requestSchema: pb.UpdatePolicyRequestSchema, request: req, responseSchema: pb.UpdatePolicyResponseSchema },
        async (em, m) => {
          const policy = await catalog.updatePolicy(em, m.tenantId, m.actor, req.id, patch);
          return create(pb.UpdatePolicyResponseSchema, { policy: policyToProto(policy) });
        },
      );
    },
    deletePolicy: (req, ctx) =>
      tenantMutation(
        idempotency,
        ctx,
        { requestSchema: pb.DeletePolicyRequestSchema, request: req, responseSchema: pb.DeletePolicyResponseSchema },
        async (em, m) => {
          return create(pb.DeletePolicyResponseSchema, {
            policy: policyToProto(await catalog.deletePolicy(em, m.tenantId, m.actor, req.id)),
          });
        },
      ),

    createCustomer: (req, ctx) =>
      tenantMutation(
        idempotency,
        ctx,
        {
          requestSchema: pb.CreateCustomerRequestSchema,
          request: req,
          responseSchema: pb.CreateCustomerResponseSchema,
        },
        async (em, m) => {
          const customer = await catalog.createCustomer(em, m.tenantId, m.actor, {
            name: req.name,
            email: req.email,
            organization: req.organization,
            metadata: req.metadata,
          });
          return create(pb.CreateCustomerResponseSchema, { customer: customerToProto(customer) });
        },
      ),
    async getCustomer(req, ctx) {
      const customer = await catalog.getCustomer(db.em(), readTenant(ctx, req.tenantId), req.id);
      return create(pb.GetCustomerResponseSchema, { customer: customerToProto(customer) });
    },
    async listCustomers(req, ctx) {
      const tenantId = readTenant(ctx, req.tenantId);
      const page = pages.read(req.pageSize, req.pageToken, {
        list: procedureOf(ctx),
        tenantId,
        filters: { email: req.email.toLowerCase() },
      });
      const { items, nextPageToken } = pages.pageOf(
        await reads.run((em) => catalog.listCustomers(em, tenantId, page, req.email)),
        page,
      );
      return create(pb.ListCustomersResponseSchema, { customers: items.map(customerToProto), nextPageToken });
    },
    updateCustomer: (req, ctx) => {
      const paths = maskPaths(req.updateMask, ["name", "email", "organization", "metadata"]);
      return tenantMutation(
        idempotency,
        ctx,
        {
          requestSchema: pb.UpdateCustomerRequestSchema,
          request: req,
          responseSchema: pb.UpdateCustomerResponseSchema,
        },
        async (em, m) => {
          const patch = Object.fromEntries(
            [...paths].map((p) => [p, req[p as "name" | "email" | "organization" | "metadata"]]),
          );
          const customer = await catalog.updateCustomer(em, m.tenantId, m.actor, req.id, patch);
          return create(pb.UpdateCustomerResponseSchema, { customer: customerToProto(customer) });
        },
      );
    },
    deleteCustomer: (req, ctx) =>
      tenantMutation(
        idempotency,
        ctx,
        {
          requestSchema: pb.DeleteCustomerRequestSchema,
          request: req,
          responseSchema: pb.DeleteCustomerResponseSchema,
        },
        async (em, m) => {
          return create(pb.DeleteCustomerResponseSchema, {
            customer: customerToProto(await catalog.deleteCustomer(em, m.tenantId, m.actor, req.id)),
          });
        },
      ),
  };
}

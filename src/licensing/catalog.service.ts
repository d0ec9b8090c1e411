import { LockMode } from "@mikro-orm/core";
import type { Clock } from "../platform/clock.js";
import { type EntityManager, flushUnique } from "../platform/db.js";
import { alreadyExists, failedPrecondition, invalidArgument, notFound } from "../platform/errors.js";
import { newId } from "../platform/ids.js";
import type { Page } from "../platform/pagination.js";
import type { Events } from "../events/events.js";
import type {
  AgentEntitlement,
  CullStrategy,
  Entitlement,
  ExpirationBasis,
  ExpirationStrategy,
  FeatureDefinition,
  HeartbeatBasis,
  MachineUniquenessScope,
  OverageStrategy,
  ProcessLeasingStrategy,
  RenewalBasis,
  TransferStrategy,
  ComponentMatchingStrategy,
} from "./entitlements.js";
import { Customer, License, Policy, Product } from "./licensing.entity.js";

export interface ProductInput {
  code: string;
  name: string;
  features: FeatureDefinition[];
  metadata: Record<string, string>;
}

export interface PolicyInput {
  name: string;
  durationSeconds: number | null;
  allFeatures: boolean;
  entitlements: Entitlement[];
  agentEntitlements: AgentEntitlement[];
  maxMachines: number;
  maxUsers: number;
  floating: boolean;
  heartbeatSeconds: number | null;
  expirationStrategy: ExpirationStrategy;
  graceSeconds: number;
  overageStrategy: OverageStrategy;
  leaseTtlSeconds: number | null;
  heartbeatGraceSeconds: number;
  heartbeatCullStrategy: CullStrategy;
  heartbeatResurrectionSeconds: number | null;
  offlineLeaseTtlSeconds: number | null;
  requireFingerprintScope: boolean;
  expirationBasis: ExpirationBasis;
  heartbeatBasis: HeartbeatBasis;
  renewalBasis: RenewalBasis;
  transferStrategy: TransferStrategy;
  requireUserScope: boolean;
  maxProcesses: number;
  processLeasingStrategy: ProcessLeasingStrategy;
  processHeartbeatSeconds: number | null;
  machineUniquenessScope: MachineUniquenessScope;
  maxCores: number;
  componentMatchingStrategy: ComponentMatchingStrategy;
  requireComponentsScope: boolean;
  metadata: Record<string, string>;
}

export interface CustomerInput {
  name: string;
  email: string;
  organization: string;
  metadata: Record<string, string>;
}

/** Checks feature definitions: unique names. */
function checkFeatures(features: FeatureDefinition[], field: string) {
  const seen = new Set<string>();
  features.forEach((f, i) => {
    if (seen.has(f.name))
      throw invalidArgument(`${field}[${i}].name`, `feature ${JSON.stringify(f.name)} is defined twice`);
    seen.add(f.name);
  });
}

/** Checks that entitlements name the product's features with values of the right kind. */
export function checkEntitlements(product: Product, entitlements: Entitlement[], field: string) {
  const defs = new Map(product.features.map((f) => [f.name, f]));
  const seen = new Set<string>();
  entitlements.forEach((e, i) => {
    const def = defs.get(e.feature);
    if (!def)
      throw invalidArgument(
        `${field}[${i}].feature`,
        `product ${product.code} defines no feature ${JSON.stringify(e.feature)}`,
        "UNKNOWN_FEATURE",
      );
    const kind = "enabled" in e ? "flag" : "limit" in e ? "limit" : "tier";
    if (kind !== def.kind)
      throw invalidArgument(
        `${field}[${i}]`,
        `feature ${e.feature} is a ${def.kind}, not a ${kind}`,
        "FEATURE_KIND_MISMATCH",
      );
    if ("limit" in e && e.limit < 0) throw invalidArgument(`${field}[${i}].limit`, "must not be negative");
    if (seen.has(e.feature)) throw invalidArgument(`${field}[${i}].feature`, `feature ${e.feature} appears twice`);
    seen.add(e.feature);
  });
}

export function checkAgents(agents: AgentEntitlement[], field: string) {
  const seen = new Set<string>();
  agents.forEach((a, i) => {
    if (!/^[A-Za-z0-9._-]{1,63}$/.test(a.agent))
      throw invalidArgument(`${field}[${i}].agent`, "must be 1 to 63 of [A-Za-z0-9._-]");
    if ((a.tokenLimit ?? 0) < 0) throw invalidArgument(`${field}[${i}].token_allowance`, "must not be negative");
    if (seen.has(a.agent)) throw invalidArgument(`${field}[${i}].agent`, `agent ${a.agent} appears twice`);
    seen.add(a.agent);
  });
}

/**
 * A node-locked policy (`floating: false`) binds its licenses to their first machine, so a
 * seat count above one could never be used: the combination is refused where it is written.
 */
export function checkNodeLocked(policy: Pick<PolicyInput, "maxMachines" | "floating">) {
  if (!policy.floating && policy.maxMachines > 1) {
    throw invalidArgument(
      "floating",
      `must be true when max_machines is ${policy.maxMachines}: ` +
        "a node-locked policy binds one machine (set floating, or max_machines to 0 or 1)",
      "FLOATING_REQUIRED",
    );
  }
}

/** The same rule for a license's own max_machines under its policy. */
export function checkLicenseSeats(policy: Pick<Policy, "name" | "floating">, maxMachines: number | null | undefined) {
  if (!policy.floating && maxMachines != null && maxMachines > 1) {
    throw invalidArgument(
      "max_machines",
      `policy ${policy.name} is node-locked (floating: false) and binds one machine: more needs a floating policy`,
      "FLOATING_REQUIRED",
    );
  }
}

const flushOrExists = (em: EntityManager, reason: string, message: string, field: string) =>
  flushUnique(em, () => alreadyExists(reason, message, { field }));

const listWhere = (tenantId: string, page: Page, extra: Record<string, unknown> = {}) => ({
  tenantId,
  ...extra,
  ...(page.after ? { id: { $gt: page.after } } : {}),
});

/** Products, policies and customers of a tenant. Every method runs in the caller's transaction. */
export function createCatalogService({ clock, events }: { clock: Clock; events: Events }) {
  async function getProduct(em: EntityManager, tenantId: string, id: string, lock = false): Promise<Product> {
    const product = await em.findOne(Product, { id, tenantId }, lock ? { lockMode: LockMode.PESSIMISTIC_WRITE } : {});
    if (!product) throw notFound("product", id);
    return product;
  }
  async function getPolicy(em: EntityManager, tenantId: string, id: string, lock = false): Promise<Policy> {
    const policy = await em.findOne(Policy, { id, tenantId }, lock ? { lockMode: LockMode.PESSIMISTIC_WRITE } : {});
    if (!policy) throw notFound("policy", id);
    return policy;
  }
  async function getCustomer(em: EntityManager, tenantId: string, id: string, lock = false): Promise<Customer> {
    const customer = await em.findOne(Customer, { id, tenantId }, lock ? { lockMode: LockMode.PESSIMISTIC_WRITE } : {});
    if (!customer) throw notFound("customer", id);
    return customer;
  }
  const emit = (
    em: EntityManager,
    tenantId: string,
    type: string,
    subject: string,
    actor: string,
    payload: Record<string, never> | object,
  ) => events.emit(em, { tenantId, type, subject, actor, payload: JSON.parse(JSON.stringify(payload)) });
  const inUse = async (em: EntityManager, where: Record<string, string>, what: string) => {
    if ((await em.count(License, where)) > 0) throw failedPrecondition("IN_USE", `${what} still has licenses`, where);
  };

  return {
    getProduct,
    getPolicy,
    getCustomer,

    async createProduct(em: EntityManager, tenantId: string, actor: string, input: ProductInput): Promise<Product> {
      checkFeatures(input.features, "features");
      const now = clock.now();
      const product = em.create(Product, { id: newId("prod"), tenantId, ...input, createdAt: now, updatedAt: now });
      await flushOrExists(
        em,
        "PRODUCT_CODE_TAKEN",
        `code: product code ${input.code} is already used in this tenant`,
        "code",
      );
      await emit(em, tenantId, "product.created", product.id, actor, { code: product.code, name: product.name });
      return product;
    },
    listProducts: (em: EntityManager, tenantId: string, page: Page) =>
      em.find(Product, listWhere(tenantId, page), { orderBy: { id: "asc" }, limit: page.size + 1 }),
    async updateProduct(
      em: EntityManager,
      tenantId: string,
      actor: string,
      id: string,
      patch: Partial<Pick<ProductInput, "name" | "features" | "metadata">>,
    ) {
      const product = await getProduct(em, tenantId, id, true);
      if (patch.name !== undefined && patch.name === "") throw invalidArgument("name", "must not be empty");
      if (patch.features) {
        checkFeatures(patch.features, "features");
        const kept = new Map(patch.features.map((f) => [f.name, f.kind]));
        const policies = await em.find(Policy, { productId: id });
        for (const policy of policies) {
          for (const e of policy.entitlements) {
            const kind = kept.get(e.feature);
            if (kind === undefined)
              throw failedPrecondition(
                "FEATURE_IN_USE",
                `features: policy ${policy.name} entitles ${e.feature}, which the update removes`,
                { field: "features" },
              );
          }
        }
      }
      Object.assign(product, Object.fromEntries(Object.entries(patch).filter(([, v]) => v !== undefined)));
      product.updatedAt = clock.now();
      await em.flush();
      await emit(em, tenantId, "product.updated", id, actor, { changed: Object.keys(patch) });
      return product;
    },
    async deleteProduct(em: EntityManager, tenantId: string, actor: string, id: string) {
      const product = await getProduct(em, tenantId, id, true);
      await inUse(em, { productId: id }, `product ${product.code}`);
      await em.nativeDelete(Policy, { productId: id });
      em.remove(product);
      await em.flush();
      await emit(em, tenantId, "product.deleted", id, actor, { code: product.code });
      return product;
    },

    async createPolicy(
      em: EntityManager,
      tenantId: string,
      actor: string,
      productId: string,
      input: PolicyInput,
    ): Promise<Policy> {
      const product = await getProduct(em, tenantId, productId);
      checkEntitlements(product, input.entitlements, "entitlements");
      checkAgents(input.agentEntitlements, "agent_entitlements");
      checkNodeLocked(input);
      const now = clock.now();
      const policy = em.create(Policy, {
        id: newId("pol"),
        tenantId,
        productId,
        ...input,
        createdAt: now,
        updatedAt: now,
      });
      await flushOrExists(
        em,
        "POLICY_NAME_TAKEN",
        `name: product ${product.code} already has a policy ${input.name}`,
        "name",
      );
      await emit(em, tenantId, "policy.created", policy.id, actor, { product_id: productId, name: policy.name });
      return policy;
    },
    listPolicies: (em: EntityManager, tenantId: string, page: Page, productId: string) =>
      em.find(Policy, listWhere(tenantId, page, productId ? { productId } : {}), {
        orderBy: { id: "asc" },
        limit: page.size + 1,
      }),
    async updatePolicy(em: EntityManager, tenantId: string, actor: string, id: string, patch: Partial<PolicyInput>) {
      const policy = await getPolicy(em, tenantId, id, true);
      if (patch.name !== undefined && patch.name === "") throw invalidArgument("name", "must not be empty");
      if (patch.entitlements)
        checkEntitlements(await getProduct(em, tenantId, policy.productId), patch.entitlements, "entitlements");
      if (patch.agentEntitlements) checkAgents(patch.agentEntitlements, "agent_entitlements");
      Object.assign(policy, patch);
      checkNodeLocked(policy);
      if (patch.floating === false && (await em.count(License, { policyId: id, maxMachines: { $gt: 1 } })) > 0) {
        throw failedPrecondition(
          "FLOATING_REQUIRED",
          "floating: licenses of this policy allow more than one machine (their max_machines); " +
            "a node-locked policy binds one",
          { field: "floating" },
        );
      }
      policy.updatedAt = clock.now();
      await flushOrExists(em, "POLICY_NAME_TAKEN", `name: the product already has a policy ${patch.name}`, "name");
      await emit(em, tenantId, "policy.updated", id, actor, { changed: Object.keys(patch) });
      return policy;
    },
    async deletePolicy(em: EntityManager, tenantId: string, actor: string, id: string) {
      const policy = await getPolicy(em, tenantId, id, true);
      await inUse(em, { policyId: id }, `policy ${policy.name}`);
      em.remove(policy);
      await em.flush();
      await emit(em, tenantId, "policy.deleted", id, actor, { name: policy.name });
      return policy;
    },

    async createCustomer(em: EntityManager, tenantId: string, actor: string, input: CustomerInput): Promise<Customer> {
      const now = clock.now();
      const customer = em.create(Customer, { id: newId("cus"), tenantId, ...input, createdAt: now, updatedAt: now });
      await flushOrExists(em, "CUSTOMER_EMAIL_TAKEN", `email: a customer with ${input.email} already exists`, "email");
      await emit(em, tenantId, "customer.created", customer.id, actor, { email: customer.email });
      return customer;
    },
    listCustomers: (em: EntityManager, tenantId: string, page: Page, email: string) =>
      em.find(
        Customer,
        listWhere(tenantId, page, email ? { email: { $ilike: email.replace(/[\\%_]/g, (c) => `\\${c}`) } } : {}),
        {
          orderBy: { id: "asc" },
          limit: page.size + 1,
        },
      ),
    async updateCustomer(
      em: EntityManager,
      tenantId: string,
      actor: string,
      id: string,
      patch: Partial<CustomerInput>,
    ) {
      const customer = await getCustomer(em, tenantId, id, true);
      if (patch.name !== undefined && patch.name === "") throw invalidArgument("name", "must not be empty");
      if (patch.email !== undefined && patch.email === "") throw invalidArgument("email", "must not be empty");
      Object.assign(customer, patch);
      customer.updatedAt = clock.now();
      await flushOrExists(em, "CUSTOMER_EMAIL_TAKEN", `email: a customer with ${patch.email} already exists`, "email");
      await emit(em, tenantId, "customer.updated", id, actor, { changed: Object.keys(patch) });
      return customer;
    },
    async deleteCustomer(em: EntityManager, tenantId: string, actor: string, id: string) {
      const customer = await getCustomer(em, tenantId, id, true);
      await inUse(em, { customerId: id }, `customer ${customer.email}`);
      em.remove(customer);
      await em.flush();
      await emit(em, tenantId, "customer.deleted", id, actor, { email: customer.email });
      return customer;
    },
  };
}

export type CatalogService = ReturnType<typeof createCatalogService>;

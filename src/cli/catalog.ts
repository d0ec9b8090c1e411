/* `licensd product …`, `licensd policy …`, `licensd customer …` (LicensingService). */
import { create, type MessageInitShape, type MessageShape, toJson } from "@bufbuild/protobuf";
import { type Duration, FieldMaskSchema, ValueSchema } from "@bufbuild/protobuf/wkt";
import { LicensingService } from "@licensd/client";
import { CustomerSchema } from "@licensd/client/gen/licensd/licensing/v1/customer_pb.js";
import {
  CreateCustomerRequestSchema,
  GetCustomerEntitlementsResponseSchema,
  CreatePolicyRequestSchema,
  CreateProductRequestSchema,
  UpdateCustomerRequestSchema,
  UpdatePolicyRequestSchema,
  UpdateProductRequestSchema,
} from "@licensd/client/gen/licensd/licensing/v1/licensing_service_pb.js";
import {
  type EntitlementSchema,
  ExpirationStrategySchema,
  HeartbeatCullStrategySchema,
  ExpirationBasisSchema,
  HeartbeatBasisSchema,
  RenewalBasisSchema,
  TransferStrategySchema,
  MachineUniquenessScopeSchema,
  ComponentMatchingStrategySchema,
  ModelTierSchema,
  OverageStrategySchema,
  PolicySchema,
  ProcessLeasingStrategySchema,
} from "@licensd/client/gen/licensd/licensing/v1/policy_pb.js";
import {
  ComposeStrategy,
  ComposeStrategySchema,
  type FeatureDefinitionSchema,
  FeatureKind,
  FeatureKindSchema,
  ProductSchema,
} from "@licensd/client/gen/licensd/licensing/v1/product_pb.js";
import { type Command, InvalidArgumentError } from "commander";
import {
  act,
  collectPages,
  duration,
  idempotencyKey,
  type ListOptions,
  listOptions,
  mutationOptions,
  printList,
  time,
  updateMask,
  withBody,
} from "./command.js";
import { fieldsOf, printJson, messageJson, printRecord } from "./output.js";
import { collectPairs, enumParser, parseBody, parseCount, parseDuration, parseYesNo } from "./parse.js";
import type { Context } from "./runtime.js";
import { UsageError } from "./runtime.js";

type FeatureInit = MessageInitShape<typeof FeatureDefinitionSchema>;
export type EntitlementInit = MessageInitShape<typeof EntitlementSchema>;

const DEFAULT_COMPOSE: Record<number, ComposeStrategy> = {
  [FeatureKind.FLAG]: ComposeStrategy.UNION,
  [FeatureKind.LIMIT]: ComposeStrategy.SUM,
  [FeatureKind.TIER]: ComposeStrategy.MAX,
};

/** `--feature sso`, `--feature seats:limit`, `--feature seats:limit:max`. */
function parseFeature(value: string, previous: FeatureInit[] = []): FeatureInit[] {
  const [name, kindText = "flag", composeText] = value.split(":");
  if (!name) throw new InvalidArgumentError("name[:flag|limit|tier[:sum|max|union]]");
  const kind = enumParser(FeatureKindSchema)(kindText) as FeatureKind;
  const compose = composeText
    ? (enumParser(ComposeStrategySchema)(composeText) as ComposeStrategy)
    : DEFAULT_COMPOSE[kind];
  return [...previous, { name, kind, compose }];
}

/** `--entitle sso` (a flag), `--entitle seats=10` (a limit), `--entitle model=premium` (a tier). */
export function parseEntitlement(value: string, previous: EntitlementInit[] = []): EntitlementInit[] {
  const [feature, v] = value.split("=", 2);
  if (!feature) throw new InvalidArgumentError("feature, feature=<limit>, feature=<tier> or feature=false");
  let ent: EntitlementInit;
  if (v === undefined || v === "true") ent = { feature, value: { case: "enabled", value: true } };
  else if (v === "false") ent = { feature, value: { case: "enabled", value: false } };
  else if (/^\d{1,18}$/.test(v)) ent = { feature, value: { case: "limit", value: BigInt(v) } };
  else ent = { feature, value: { case: "tier", value: enumParser(ModelTierSchema)(v) } };
  return [...previous, ent];
}

const bodyOption = ["--body <json>", "more request fields as protobuf JSON, or @file.json", parseBody] as const;

/** One product, policy or customer: `{"<key>": …}` with --json, else its fields. */
function show<T extends typeof ProductSchema | typeof PolicySchema | typeof CustomerSchema>(
  ctx: Context,
  key: string,
  schema: T,
  resource: MessageShape<T> | undefined,
) {
  if (resource === undefined) return;
  if (ctx.json) return printJson({ [key]: messageJson(schema, resource) });
  printRecord(ctx, fieldsOf(schema, resource));
}

export function catalogCommands(program: Command): void {
  const product = program.command("product").description("products: what you license, with their features");
  mutationOptions(
    product
      .command("create")
      .description("create a product")
      .requiredOption("--code <code>", "three capital letters or digits, e.g. PRO (it starts the license keys)")
      .requiredOption("--name <name>", "display name")
      .option("--feature <name[:kind[:compose]]>", "a feature: kind flag|limit|tier (repeatable)", parseFeature)
      .option("--meta <key=value>", "metadata (repeatable)", collectPairs)
      .option(...bodyOption),
  ).action(
    act<{
      code: string;
      name: string;
      feature?: FeatureInit[];
      meta?: Record<string, string>;
      body?: Record<string, unknown>;
      idempotencyKey?: string;
    }>(async (ctx, o) => {
      const { message } = withBody(CreateProductRequestSchema, o.body, {
        tenantId: ctx.tenant,
        code: o.code,
        name: o.name,
        features: o.feature,
        metadata: o.meta,
        idempotencyKey: idempotencyKey(o),
      });
      const res = await ctx.client(LicensingService).createProduct(message);
      show(ctx, "product", ProductSchema, res.product);
    }),
  );
  listOptions(product.command("list").description("list products")).action(
    act<ListOptions>(async (ctx, o) => {
      const page = await collectPages(o, async (pageSize, pageToken) => {
        const r = await ctx.client(LicensingService).listProducts({ tenantId: ctx.tenant, pageSize, pageToken });
        return { items: r.products, next: r.nextPageToken };
      });
      printList(ctx, "products", ProductSchema, page, [
        { header: "ID", value: (p) => p.id },
        { header: "CODE", value: (p) => p.code },
        { header: "NAME", value: (p) => p.name },
        { header: "FEATURES", value: (p) => p.features.map((f) => f.name).join(",") },
        { header: "CREATED", value: (p) => time(p.createTime) },
      ]);
    }),
  );
  product
    .command("show")
    .description("show a product")
    .argument("<id>", "product id (prod_…)")
    .action(
      act(async (ctx, _o, [id]) => {
        const res = await ctx.client(LicensingService).getProduct({ tenantId: ctx.tenant, id });
        show(ctx, "product", ProductSchema, res.product);
      }),
    );
  mutationOptions(
    product
      .command("update")
      .description("change a product (only the fields given change; --feature replaces the list)")
      .argument("<id>", "product id (prod_…)")
      .option("--name <name>", "display name")
      .option("--feature <name[:kind[:compose]]>", "a feature (repeatable)", parseFeature)
      .option("--meta <key=value>", "metadata, replacing all of it (repeatable)", collectPairs)
      .option(...bodyOption),
  ).action(
    act<{
      name?: string;
      feature?: FeatureInit[];
      meta?: Record<string, string>;
      body?: Record<string, unknown>;
      idempotencyKey?: string;
    }>(async (ctx, o, [id]) => {
      const { message, bodyPaths } = withBody(UpdateProductRequestSchema, o.body, {
        tenantId: ctx.tenant,
        id,
        name: o.name,
        features: o.feature,
        metadata: o.meta,
        idempotencyKey: idempotencyKey(o),
      });
      message.updateMask = maskOf(o, { name: "name", feature: "features", meta: "metadata" }, bodyPaths);
      const res = await ctx.client(LicensingService).updateProduct(message);
      show(ctx, "product", ProductSchema, res.product);
    }),
  );
  deleteCommand(
    product,
    "product",
    "prod_",
    (ctx, id, key) =>
      ctx
        .client(LicensingService)
        .deleteProduct({ tenantId: ctx.tenant, id, idempotencyKey: key })
        .then((r) => r.product),
    ProductSchema,
  );

  const policy = program.command("policy").description("policies: the terms a license is issued under");
  const policyFlags = (cmd: Command) =>
    cmd
      .option("--duration <d>", "license term, e.g. 365d (none: perpetual)", parseDuration)
      .option("--all-features", "grant every feature of the product")
      .option(
        "--entitle <feature[=value]>",
        "an entitlement: sso, seats=10, model=premium (repeatable)",
        parseEntitlement,
      )
      .option("--max-machines <n>", "machines per license (0: no limit)", parseCount)
      .option("--max-users <n>", "users per license (0: no limit)", parseCount)
      .option(
        "--require-user-scope <yes|no>",
        "validation must name one of the license's users (USER_SCOPE_REQUIRED otherwise)",
        parseYesNo,
      )
      .option("--max-processes <n>", "processes alive at once, per machine or per license (0: no limit)", parseCount)
      .option(
        "--process-leasing <strategy>",
        "what --max-processes counts: per-machine or per-license",
        enumParser(ProcessLeasingStrategySchema),
      )
      .option("--process-heartbeat <d>", "processes must ping this often (default 10m)", parseDuration)
      .option(
        "--component-matching <strategy>",
        "how many of a machine's components validation must match: match-any, match-two, match-most or match-all",
        enumParser(ComponentMatchingStrategySchema),
      )
      .option(
        "--require-components-scope <yes|no>",
        "validation must give the machine's components (COMPONENTS_SCOPE_REQUIRED otherwise)",
        parseYesNo,
      )
      .option("--floating", "machines may move between hosts")
      .option("--heartbeat <d>", "machines must heartbeat this often", parseDuration)
      .option("--grace <d>", "grace period after expiry", parseDuration)
      .option("--lease-ttl <d>", "how long an activation lease lasts", parseDuration)
      .option("--offline-lease-ttl <d>", "how long an offline (air-gapped) lease lasts", parseDuration)
      .option(
        "--expiration <strategy>",
        "restrict-access, revoke-access, maintain-access or allow-access",
        enumParser(ExpirationStrategySchema),
      )
      .option(
        "--overage <strategy>",
        "no-overage, always, allow-1-25x, allow-1-5x or allow-2x",
        enumParser(OverageStrategySchema),
      )
      .option("--cull <strategy>", "deactivate-dead or keep-dead", enumParser(HeartbeatCullStrategySchema))
      .option(
        "--expiration-basis <basis>",
        "when expiry starts: from-creation, from-first-activation, from-first-validation or from-first-use",
        enumParser(ExpirationBasisSchema),
      )
      .option(
        "--heartbeat-basis <basis>",
        "when heartbeats are required: from-activation or from-first-heartbeat",
        enumParser(HeartbeatBasisSchema),
      )
      .option(
        "--renewal-basis <basis>",
        "what a renewal extends: from-now-if-expired, from-expiry or from-now",
        enumParser(RenewalBasisSchema),
      )
      .option(
        "--transfer-strategy <strategy>",
        "what a transfer does to the expiry: keep-expiry or reset-expiry",
        enumParser(TransferStrategySchema),
      )
      .option(
        "--machine-uniqueness <scope>",
        "where a machine's fingerprint must be unique: license, policy, product or tenant",
        enumParser(MachineUniquenessScopeSchema),
      )
      .option("--max-cores <n>", "total CPU cores of a license's machines (0: no limit)", parseCount)
      .option("--meta <key=value>", "metadata (repeatable)", collectPairs)
      .option(...bodyOption);
  type PolicyFlags = {
    name?: string;
    duration?: Duration;
    allFeatures?: boolean;
    entitle?: EntitlementInit[];
    maxMachines?: number;
    maxUsers?: number;
    requireUserScope?: boolean;
    maxProcesses?: number;
    processLeasing?: number;
    processHeartbeat?: Duration;
    componentMatching?: number;
    requireComponentsScope?: boolean;
    floating?: boolean;
    heartbeat?: Duration;
    grace?: Duration;
    leaseTtl?: Duration;
    offlineLeaseTtl?: Duration;
    expiration?: number;
    overage?: number;
    cull?: number;
    expirationBasis?: number;
    heartbeatBasis?: number;
    renewalBasis?: number;
    transferStrategy?: number;
    machineUniqueness?: number;
    maxCores?: number;
    meta?: Record<string, string>;
    body?: Record<string, unknown>;
    idempotencyKey?: string;
  };
  const policyInit = (o: PolicyFlags) => ({
    name: o.name,
    duration: o.duration,
    allFeatures: o.allFeatures,
    entitlements: o.entitle,
    maxMachines: o.maxMachines,
    maxUsers: o.maxUsers,
    requireUserScope: o.requireUserScope,
    maxProcesses: o.maxProcesses,
    processLeasingStrategy: o.processLeasing,
    processHeartbeatDuration: o.processHeartbeat,
    componentMatchingStrategy: o.componentMatching,
    requireComponentsScope: o.requireComponentsScope,
    floating: o.floating,
    heartbeatDuration: o.heartbeat,
    gracePeriod: o.grace,
    leaseTtl: o.leaseTtl,
    offlineLeaseTtl: o.offlineLeaseTtl,
    expirationStrategy: o.expiration,
    overageStrategy: o.overage,
    heartbeatCullStrategy: o.cull,
    expirationBasis: o.expirationBasis,
    heartbeatBasis: o.heartbeatBasis,
    renewalBasis: o.renewalBasis,
    transferStrategy: o.transferStrategy,
    machineUniquenessScope: o.machineUniqueness,
    maxCores: o.maxCores,
    metadata: o.meta,
    idempotencyKey: idempotencyKey(o),
  });
  mutationOptions(
    policyFlags(
      policy
        .command("create")
        .description("create a policy of a product")
        .requiredOption("--product <id>", "product id (prod_…)")
        .requiredOption("--name <name>", "policy name, e.g. pro-annual (lower case, digits, . _ -)"),
    ),
  ).action(
    act<PolicyFlags & { product: string }>(async (ctx, o) => {
      const { message } = withBody(CreatePolicyRequestSchema, o.body, {
        ...policyInit(o),
        tenantId: ctx.tenant,
        productId: o.product,
      });
      const res = await ctx.client(LicensingService).createPolicy(message);
      show(ctx, "policy", PolicySchema, res.policy);
    }),
  );
  listOptions(
    policy.command("list").description("list policies").option("--product <id>", "only this product's (prod_…)"),
  ).action(
    act<ListOptions & { product?: string }>(async (ctx, o) => {
      const page = await collectPages(o, async (pageSize, pageToken) => {
        const r = await ctx
          .client(LicensingService)
          .listPolicies({ tenantId: ctx.tenant, productId: o.product ?? "", pageSize, pageToken });
        return { items: r.policies, next: r.nextPageToken };
      });
      printList(ctx, "policies", PolicySchema, page, [
        { header: "ID", value: (p) => p.id },
        { header: "NAME", value: (p) => p.name },
        { header: "PRODUCT", value: (p) => p.productId },
        { header: "DURATION", value: (p) => duration(p.duration) || "perpetual" },
        { header: "MACHINES", value: (p) => (p.maxMachines ? String(p.maxMachines) : "unlimited") },
        {
          header: "ENTITLEMENTS",
          value: (p) => (p.allFeatures ? "all" : p.entitlements.map((e) => e.feature).join(",")),
        },
      ]);
    }),
  );
  policy
    .command("show")
    .description("show a policy")
    .argument("<id>", "policy id (pol_…)")
    .action(
      act(async (ctx, _o, [id]) => {
        const res = await ctx.client(LicensingService).getPolicy({ tenantId: ctx.tenant, id });
        show(ctx, "policy", PolicySchema, res.policy);
      }),
    );
  mutationOptions(
    policyFlags(
      policy
        .command("update")
        .description("change a policy (only the fields given change)")
        .argument("<id>", "policy id (pol_…)")
        .option("--name <name>", "policy name"),
    ),
  ).action(
    act<PolicyFlags>(async (ctx, o, [id]) => {
      const { message, bodyPaths } = withBody(UpdatePolicyRequestSchema, o.body, {
        ...policyInit(o),
        tenantId: ctx.tenant,
        id,
      });
      message.updateMask = maskOf(
        o,
        {
          name: "name",
          duration: "duration",
          allFeatures: "all_features",
          entitle: "entitlements",
          maxMachines: "max_machines",
          maxUsers: "max_users",
          requireUserScope: "require_user_scope",
          maxProcesses: "max_processes",
          processLeasing: "process_leasing_strategy",
          processHeartbeat: "process_heartbeat_duration",
          componentMatching: "component_matching_strategy",
          requireComponentsScope: "require_components_scope",
          floating: "floating",
          heartbeat: "heartbeat_duration",
          grace: "grace_period",
          leaseTtl: "lease_ttl",
          offlineLeaseTtl: "offline_lease_ttl",
          expiration: "expiration_strategy",
          overage: "overage_strategy",
          cull: "heartbeat_cull_strategy",
          expirationBasis: "expiration_basis",
          heartbeatBasis: "heartbeat_basis",
          renewalBasis: "renewal_basis",
          transferStrategy: "transfer_strategy",
          machineUniqueness: "machine_uniqueness_scope",
          maxCores: "max_cores",
          meta: "metadata",
        },
        bodyPaths,
      );
      const res = await ctx.client(LicensingService).updatePolicy(message);
      show(ctx, "policy", PolicySchema, res.policy);
    }),
  );
  deleteCommand(
    policy,
    "policy",
    "pol_",
    (ctx, id, key) =>
      ctx
        .client(LicensingService)
        .deletePolicy({ tenantId: ctx.tenant, id, idempotencyKey: key })
        .then((r) => r.policy),
    PolicySchema,
  );

  const customer = program.command("customer").description("customers: who holds licenses");
  const customerFlags = (cmd: Command) =>
    cmd
      .option("--email <email>", "email address")
      .option("--organization <org>", "organization")
      .option("--meta <key=value>", "metadata (repeatable)", collectPairs);
  type CustomerFlags = {
    name?: string;
    email?: string;
    organization?: string;
    meta?: Record<string, string>;
    idempotencyKey?: string;
  };
  mutationOptions(
    customerFlags(customer.command("create").description("create a customer").requiredOption("--name <name>", "name")),
  ).action(
    act<CustomerFlags>(async (ctx, o) => {
      const { message } = withBody(CreateCustomerRequestSchema, undefined, {
        tenantId: ctx.tenant,
        name: o.name,
        email: o.email,
        organization: o.organization,
        metadata: o.meta,
        idempotencyKey: idempotencyKey(o),
      });
      const res = await ctx.client(LicensingService).createCustomer(message);
      show(ctx, "customer", CustomerSchema, res.customer);
    }),
  );
  listOptions(
    customer.command("list").description("list customers").option("--email <email>", "only the one with this email"),
  ).action(
    act<ListOptions & { email?: string }>(async (ctx, o) => {
      const page = await collectPages(o, async (pageSize, pageToken) => {
        const r = await ctx
          .client(LicensingService)
          .listCustomers({ tenantId: ctx.tenant, email: o.email ?? "", pageSize, pageToken });
        return { items: r.customers, next: r.nextPageToken };
      });
      printList(ctx, "customers", CustomerSchema, page, [
        { header: "ID", value: (c) => c.id },
        { header: "NAME", value: (c) => c.name },
        { header: "EMAIL", value: (c) => c.email },
        { header: "ORGANIZATION", value: (c) => c.organization },
        { header: "CREATED", value: (c) => time(c.createTime) },
      ]);
    }),
  );
  customer
    .command("show")
    .description("show a customer and the entitlements its licenses compose to")
    .argument("<id>", "customer id (cus_…)")
    .action(
      act(async (ctx, _o, [id]) => {
        const client = ctx.client(LicensingService);
        const [res, ents] = await Promise.all([
          client.getCustomer({ tenantId: ctx.tenant, id }),
          client.getCustomerEntitlements({ tenantId: ctx.tenant, customerId: id }),
        ]);
        if (ctx.json)
          return printJson({
            customer: messageJson(CustomerSchema, res.customer!),
            ...(messageJson(GetCustomerEntitlementsResponseSchema, ents) as Record<string, unknown>),
          });
        printRecord(ctx, [
          ...fieldsOf(CustomerSchema, res.customer!),
          ["licenses", ents.licenseIds.join(", ")],
          [
            "entitlements",
            ents.entitlements
              .map((e) => `${e.feature}=${e.value ? JSON.stringify(toJson(ValueSchema, e.value)) : ""}`)
              .join(", "),
          ],
        ]);
      }),
    );
  mutationOptions(
    customerFlags(
      customer
        .command("update")
        .description("change a customer (only the fields given change)")
        .argument("<id>", "customer id (cus_…)")
        .option("--name <name>", "name"),
    ),
  ).action(
    act<CustomerFlags>(async (ctx, o, [id]) => {
      const { message } = withBody(UpdateCustomerRequestSchema, undefined, {
        tenantId: ctx.tenant,
        id,
        name: o.name,
        email: o.email,
        organization: o.organization,
        metadata: o.meta,
        idempotencyKey: idempotencyKey(o),
      });
      message.updateMask = maskOf(
        o,
        { name: "name", email: "email", organization: "organization", meta: "metadata" },
        [],
      );
      const res = await ctx.client(LicensingService).updateCustomer(message);
      show(ctx, "customer", CustomerSchema, res.customer);
    }),
  );
  deleteCommand(
    customer,
    "customer",
    "cus_",
    (ctx, id, key) =>
      ctx
        .client(LicensingService)
        .deleteCustomer({ tenantId: ctx.tenant, id, idempotencyKey: key })
        .then((r) => r.customer),
    CustomerSchema,
  );
}

function maskOf(o: Record<string, unknown>, fields: Record<string, string>, bodyPaths: string[]) {
  const skip = new Set(["tenant_id", "id", "update_mask", "idempotency_key"]);
  const paths = [...new Set([...updateMask(o, fields).paths, ...bodyPaths.filter((p) => !skip.has(p))])];
  if (paths.length === 0) throw new UsageError("nothing to change: give at least one field's flag (see --help)");
  return create(FieldMaskSchema, { paths });
}

function deleteCommand<S extends typeof ProductSchema | typeof PolicySchema | typeof CustomerSchema>(
  parent: Command,
  what: string,
  prefix: string,
  call: (ctx: Context, id: string, key: string) => Promise<MessageShape<S> | undefined>,
  schema: S,
) {
  mutationOptions(
    parent.command("delete").description(`delete a ${what}`).argument("<id>", `${what} id (${prefix}…)`),
  ).action(
    act<{ idempotencyKey?: string }>(async (ctx, o, [id]) => {
      const resource = await call(ctx, id, idempotencyKey(o));
      show(ctx, what, schema, resource);
    }),
  );
}

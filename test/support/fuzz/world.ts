import { createHmac, createHash, randomBytes } from "node:crypto";
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import type { DescService } from "@bufbuild/protobuf";
import { ActivationService } from "../../../gen/ts/licensd/activation/v1/activation_service_pb.js";
import { AuditService } from "../../../gen/ts/licensd/audit/v1/audit_service_pb.js";
import { LicensingService } from "../../../gen/ts/licensd/licensing/v1/licensing_service_pb.js";
import { ComposeStrategy, FeatureKind } from "../../../gen/ts/licensd/licensing/v1/product_pb.js";
import { ModelTier } from "../../../gen/ts/licensd/licensing/v1/policy_pb.js";
import { ApiKeyScope } from "../../../gen/ts/licensd/tenant/v1/api_key_pb.js";
import { TenantService } from "../../../gen/ts/licensd/tenant/v1/tenant_service_pb.js";
import { Aggregation } from "../../../gen/ts/licensd/usage/v1/usage_pb.js";
import { UsageService } from "../../../gen/ts/licensd/usage/v1/usage_service_pb.js";
import { createOfflineActivationRequest } from "@licensd/client";
import { normalizeLicenseKey } from "../../../src/licensing/license-key.js";
import { bearer } from "../app.js";

/** The credentials a fuzzed call may carry (its Authorization header), by name. */
export type Credential = "none" | "wrong" | "malformed" | "super_admin" | "a_admin" | "a_read" | "a_ingest" | "b_admin";
export const CREDENTIALS: Credential[] = [
  "none",
  "wrong",
  "malformed",
  "super_admin",
  "a_admin",
  "a_read",
  "a_ingest",
  "b_admin",
];

/**
 * Real values a request can name, by what they are, so that fuzzed calls reach past
 * NOT_FOUND into the services. Tenant A is the caller's own tenant, B another one.
 */
export interface Pools {
  tenant: string[];
  product: string[];
  policy: string[];
  customer: string[];
  license: string[];
  machine: string[];
  meter: string[];
  apiKey: string[];
  event: string[];
  anomaly: string[];
  licenseKey: string[];
  fingerprint: string[];
  lease: string[];
  metric: string[];
  productCode: string[];
  feature: string[];
  agent: string[];
  email: string[];
  offlineRequest: string[];
  pageToken: string[];
}

const mk = <T extends DescService>(service: T, url: string, key: string): Client<T> =>
  createClient(service, createConnectTransport({ baseUrl: url, httpVersion: "1.1", interceptors: bearer(key) }));

/**
 * Two tenants with keys of every scope, and in each a product, policy, customer,
 * licenses, an activated machine, a meter and usage. `refresh()` builds a new set in
 * both tenants (fuzzed calls delete and revoke what they find), keeping tenants and keys.
 */
export class World {
  readonly headers: Record<Credential, Record<string, string>>;
  pools!: Pools;
  /** The same, only tenant A's (the caller's own): what a well-formed request names most often. */
  own!: Pools;
  /** A tenant DeleteTenant may delete (made anew by each refresh). */
  spare = { tenant: "" };
  private tenantA = "";
  private tenantB = "";
  private keys!: Record<"a_admin" | "a_read" | "a_ingest" | "b_admin", string>;
  private spareKeyIds: string[] = [];
  private round = 0;

  private constructor(
    readonly url: string,
    readonly superAdminKey: string,
  ) {
    this.headers = {} as Record<Credential, Record<string, string>>;
  }

  static async create(url: string, superAdminKey: string): Promise<World> {
    const w = new World(url, superAdminKey);
    await w.setUp();
    await w.refresh();
    return w;
  }

  private async setUp() {
    const su = mk(TenantService, this.url, this.superAdminKey);
    this.tenantA = (await su.createTenant({ name: "Fuzz A", metadata: { tier: "gold" } })).tenant!.id;
    this.tenantB = (await su.createTenant({ name: "Fuzz B" })).tenant!.id;
    const key = async (tenantId: string, scope: ApiKeyScope) =>
      (await su.createApiKey({ tenantId, name: `fuzz ${scope}`, scopes: [scope] })).secret;
    this.keys = {
      a_admin: await key(this.tenantA, ApiKeyScope.ADMIN),
      a_read: await key(this.tenantA, ApiKeyScope.READ),
      a_ingest: await key(this.tenantA, ApiKeyScope.INGEST),
      b_admin: await key(this.tenantB, ApiKeyScope.ADMIN),
    };
    const auth = (k: string) => ({ authorization: `Bearer ${k}` });
    Object.assign(this.headers, {
      none: {},
      wrong: auth(`lsk_${randomBytes(24).toString("base64url")}`),
      malformed: { authorization: "Basic Zm9vOmJhcg==" },
      super_admin: auth(this.superAdminKey),
      a_admin: auth(this.keys.a_admin),
      a_read: auth(this.keys.a_read),
      a_ingest: auth(this.keys.a_ingest),
      b_admin: auth(this.keys.b_admin),
    });
  }

  async refresh(): Promise<void> {
    this.round++;
    const [a, b] = await Promise.all([
      this.resources(this.keys.a_admin, `A${this.round}`),
      this.resources(this.keys.b_admin, `B${this.round}`),
    ]);
    const su = mk(TenantService, this.url, this.superAdminKey);
    // Spare API keys: RevokeApiKey may hit these, never the keys the fuzz calls with.
    const spare = await su.createApiKey({
      tenantId: this.tenantA,
      name: `spare ${this.round}`,
      scopes: [ApiKeyScope.READ],
    });
    this.spareKeyIds.push(spare.apiKey!.id);
    this.spare = { tenant: (await su.createTenant({ name: `Spare ${this.round}` })).tenant!.id };
    const audit = mk(AuditService, this.url, this.keys.a_admin);
    const page = await audit.listAuditEvents({ pageSize: 2 });
    const events = page.events.map((e) => e.id);
    const merge = (k: keyof Omit<Pools, "tenant" | "apiKey" | "event" | "anomaly" | "pageToken">) => [...a[k], ...b[k]];
    this.pools = {
      tenant: [this.tenantA, this.tenantB],
      product: merge("product"),
      policy: merge("policy"),
      customer: merge("customer"),
      license: merge("license"),
      machine: merge("machine"),
      meter: merge("meter"),
      apiKey: this.spareKeyIds.slice(-2),
      event: events,
      anomaly: [],
      licenseKey: merge("licenseKey"),
      fingerprint: merge("fingerprint"),
      lease: merge("lease"),
      metric: merge("metric"),
      productCode: merge("productCode"),
      feature: merge("feature"),
      agent: merge("agent"),
      email: merge("email"),
      offlineRequest: merge("offlineRequest"),
      pageToken: page.nextPageToken ? [page.nextPageToken] : [],
    };
    this.own = {
      ...this.pools,
      tenant: [this.tenantA],
      ...Object.fromEntries(Object.entries(a).map(([k, v]) => [k, v])),
    };
  }

  private async resources(key: string, tag: string) {
    const lic = mk(LicensingService, this.url, key);
    const act = mk(ActivationService, this.url, key);
    const usage = mk(UsageService, this.url, key);
    // Fuzzed calls create products with random codes: take the first code still free.
    let code = "";
    let product: Awaited<ReturnType<typeof lic.createProduct>>["product"];
    for (let attempt = 0; !product; attempt++) {
      code = codeFor(`${tag}/${attempt}`);
      product = await lic
        .createProduct({
          code,
          name: `Fuzz ${tag}`,
          features: [
            { name: "reports", kind: FeatureKind.FLAG, compose: ComposeStrategy.UNION },
            { name: "api_calls", kind: FeatureKind.LIMIT, compose: ComposeStrategy.SUM },
            { name: "model", kind: FeatureKind.TIER, compose: ComposeStrategy.MAX },
          ],
        })
        .then(
          (r) => r.product!,
          (err: unknown) => {
            if (attempt < 20 && ConnectError.from(err).code === Code.AlreadyExists) return undefined;
            throw err;
          },
        );
    }
    const policy = (
      await lic.createPolicy({
        productId: product.id,
        name: "pro",
        duration: { seconds: 86400n * 30n },
        maxMachines: 5,
        floating: true,
        heartbeatDuration: { seconds: 600n },
        gracePeriod: { seconds: 3600n },
        entitlements: [
          { feature: "reports", value: { case: "enabled", value: true } },
          { feature: "api_calls", value: { case: "limit", value: 1000n } },
          { feature: "model", value: { case: "tier", value: ModelTier.PREMIUM } },
        ],
        agentEntitlements: [{ agent: "coder", tokenLimit: 5000n, modelTier: ModelTier.STANDARD }],
      })
    ).policy!;
    const email = `fuzz-${tag.toLowerCase()}@example.com`;
    const customer = (await lic.createCustomer({ name: `Customer ${tag}`, email })).customer!;
    const license = await lic.createLicense({ policyId: policy.id, customerId: customer.id });
    const suspended = await lic.createLicense({ policyId: policy.id, customerId: customer.id });
    await lic.suspendLicense({ id: suspended.license!.id });
    const fingerprint = `fp-${tag}`;
    const activated = await act.activate({
      key: license.key,
      fingerprint,
      hostname: "host",
      platform: "linux-x64",
      cores: 4,
    });
    const meter = (
      await usage.createMeter({
        productId: product.id,
        metric: "api_calls",
        aggregation: Aggregation.SUM,
        agentTokens: true,
      })
    ).meter!;
    // No limit on these: their totals only grow, and each aggregation has its own code.
    const others = [
      await usage.createMeter({ productId: product.id, metric: "tokens", aggregation: Aggregation.SUM }),
      await usage.createMeter({
        productId: product.id,
        metric: "users",
        aggregation: Aggregation.UNIQUE_COUNT,
        uniqueAttribute: "user",
      }),
      await usage.createMeter({ productId: product.id, metric: "peak", aggregation: Aggregation.MAX }),
      await usage.createMeter({ productId: product.id, metric: "last", aggregation: Aggregation.LATEST }),
    ].map((r) => r.meter!);
    await usage.recordUsage({
      event: {
        licenseKey: license.key,
        metric: "api_calls",
        quantity: 3n,
        agentId: "coder",
        idempotencyKey: `seed-${tag}`,
      },
    });
    return {
      product: [product.id],
      policy: [policy.id],
      customer: [customer.id],
      license: [license.license!.id, suspended.license!.id],
      machine: [activated.machine!.id],
      meter: [meter.id, ...others.map((m) => m.id)],
      licenseKey: [license.key, suspended.key],
      fingerprint: [fingerprint],
      lease: [activated.lease!.token],
      metric: ["api_calls", ...others.map((m) => m.metric)],
      productCode: [code],
      feature: ["reports", "api_calls", "model"],
      agent: ["coder"],
      email: [email],
      offlineRequest: [createOfflineActivationRequest({ key: license.key, fingerprint: `offline-${tag}` })],
    };
  }
}

/** A product code (three of A–Z0–9) no earlier round used. */
function codeFor(tag: string): string {
  const digest = createHash("sha256").update(tag).digest();
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
  return Array.from(digest.subarray(0, 3), (b) => alphabet[b % 36]).join("");
}

/**
 * An offline activation request file with any JSON payload, MACed with a real license
 * key, so the server gets past the MAC and has to cope with the payload.
 */
export function offlineRequestWith(key: string, payload: unknown): string {
  const input = `licensd-req1.${Buffer.from(JSON.stringify(payload)).toString("base64url")}`;
  const mac = createHmac("sha256", normalizeLicenseKey(key)).update(input).digest("base64url");
  return `${input}.${mac}`;
}

import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ActivationService } from "../../gen/ts/licensd/activation/v1/activation_service_pb.js";
import { MachineStatus } from "../../gen/ts/licensd/activation/v1/machine_pb.js";
import { AuditService } from "../../gen/ts/licensd/audit/v1/audit_service_pb.js";
import { LicensingService } from "../../gen/ts/licensd/licensing/v1/licensing_service_pb.js";
import { ComposeStrategy, FeatureKind } from "../../gen/ts/licensd/licensing/v1/product_pb.js";
import { ApiKeyScope } from "../../gen/ts/licensd/tenant/v1/api_key_pb.js";
import { TenantService } from "../../gen/ts/licensd/tenant/v1/tenant_service_pb.js";
import { Aggregation, Severity } from "../../gen/ts/licensd/usage/v1/usage_pb.js";
import { UsageService } from "../../gen/ts/licensd/usage/v1/usage_service_pb.js";
import { ManualClock } from "../../src/platform/clock.js";
import { connectClient, startTestApp, type TestApp } from "../support/app.js";
import { createTestDatabase } from "../support/database.js";
import { failure } from "../support/errors.js";

const clock = new ManualClock(new Date(Date.UTC(2026, 10, 1, 12)));
let db: { url: string; drop(): Promise<void> };
let a: TestApp;
/** Another instance on the same database and data key. */
let b: TestApp;

interface Vendor {
  tenantId: string;
  secret: string;
  productIds: string[];
  customerIds: string[];
  licenseId: string;
  key: string;
}
let acme: Vendor;
let other: Vendor;

async function vendor(name: string, code: string): Promise<Vendor> {
  const tenants = connectClient(TenantService, a.url, a.superAdminKey);
  const tenantId = (await tenants.createTenant({ name })).tenant!.id;
  const secret = (await tenants.createApiKey({ tenantId, name: "admin", scopes: [ApiKeyScope.ADMIN] })).secret;
  for (const n of ["ci", "ops"]) await tenants.createApiKey({ tenantId, name: n, scopes: [ApiKeyScope.READ] });
  const api = connectClient(LicensingService, a.url, secret);
  const productIds: string[] = [];
  for (const suffix of ["A", "B", "C"]) {
    productIds.push(
      (
        await api.createProduct({
          code: `${code}${suffix}`,
          name: suffix,
          features: [{ name: "tokens", kind: FeatureKind.LIMIT, compose: ComposeStrategy.SUM }],
        })
      ).product!.id,
    );
  }
  const policyIds: string[] = [];
  for (const p of ["basic", "team", "pro"])
    policyIds.push(
      (await api.createPolicy({ productId: productIds[0]!, name: p, floating: true, maxMachines: 100 })).policy!.id,
    );
  const customerIds: string[] = [];
  for (const c of ["ann", "bob", "cy"])
    customerIds.push((await api.createCustomer({ name: c, email: `${c}@${code.toLowerCase()}.example` })).customer!.id);
  const keys: string[] = [];
  for (const customerId of customerIds)
    keys.push((await api.createLicense({ policyId: policyIds[0]!, customerId })).key);
  const usage = connectClient(UsageService, a.url, secret);
  await usage.createMeter({ productId: productIds[0]!, metric: "tokens", aggregation: Aggregation.SUM });
  await usage.createMeter({ productId: productIds[0]!, metric: "calls", aggregation: Aggregation.COUNT });
  await usage.createMeter({ productId: productIds[0]!, metric: "peak", aggregation: Aggregation.MAX });
  const licenseId = (await api.listLicenses({ customerId: customerIds[0]! })).licenses[0]!.id;
  return { tenantId, secret, productIds, customerIds, licenseId, key: keys[0]! };
}

beforeAll(async () => {
  db = await createTestDatabase();
  a = await startTestApp({ databaseUrl: db.url, clock, env: { LICENSD_AUDIT_KEEPALIVE_MS: "200" } });
  b = await startTestApp({
    databaseUrl: db.url,
    clock,
    env: { LICENSD_SUPER_ADMIN_KEY: a.superAdminKey, LICENSD_DATA_KEY: a.app.config.dataKey.toString("base64") },
  });
  acme = await vendor("Acme", "AC");
  other = await vendor("Other", "OT");
  // Ten ordinary days of usage and one new machine a day, then a burst: usage events, machines and two anomalies.
  const key = acme.key;
  const usage = connectClient(UsageService, a.url);
  const activation = connectClient(ActivationService, a.url);
  const day0 = clock.now().getTime();
  for (let i = 0; i < 10; i++) {
    clock.set(new Date(day0 + i * 86_400_000));
    await usage.recordUsage({
      event: { licenseKey: key, metric: "tokens", quantity: BigInt(100 + (i % 3) * 5), idempotencyKey: `day-${i}` },
    });
    await activation.activate({ key, fingerprint: `day-${i}` });
  }
  clock.set(new Date(day0 + 10 * 86_400_000));
  await usage.recordUsage({ event: { licenseKey: key, metric: "tokens", quantity: 5000n, idempotencyKey: "burst" } });
  for (let m = 0; m < 6; m++) await activation.activate({ key, fingerprint: `burst-${m}` });
  const found = await connectClient(UsageService, a.url, acme.secret).detectAnomalies({
    day: timestampFromDate(new Date(Date.UTC(2026, 10, 11))),
  });
  expect(found.anomalies.length).toBeGreaterThanOrEqual(2);
});
afterAll(async () => {
  await a?.close();
  await b?.close();
  await db?.drop();
});

interface PageRequest {
  pageSize: number;
  pageToken: string;
}
interface Listing {
  ids: string[];
  next: string;
}
/**
 * One list RPC as a client calls it: with a key, on an instance, optionally for a tenant (super-admin) and with other
 * filters.
 */
type Lister = (
  opts: { app?: TestApp; key?: string; tenantId?: string; otherFilters?: boolean },
  page: PageRequest,
) => Promise<Listing>;

const listing = <T>(items: T[], id: (x: T) => string, next: string): Listing => ({ ids: items.map(id), next });

/** Every list RPC, with a way to ask it under other filters (where it has filters). */
const LISTS: Record<string, { list: Lister; filtered: boolean; tenantScoped: boolean }> = {
  ListTenants: {
    filtered: false,
    tenantScoped: false,
    list: async (o, p) => {
      const r = await connectClient(TenantService, (o.app ?? a).url, o.key ?? a.superAdminKey).listTenants(p);
      return listing(r.tenants, (x) => x.id, r.nextPageToken);
    },
  },
  ListApiKeys: {
    filtered: true,
    tenantScoped: true,
    list: async (o, p) => {
      const r = await connectClient(TenantService, (o.app ?? a).url, o.key ?? acme.secret).listApiKeys({
        ...p,
        tenantId: o.tenantId,
        showRevoked: o.otherFilters,
      });
      return listing(r.apiKeys, (x) => x.id, r.nextPageToken);
    },
  },
  ListMachines: {
    filtered: true,
    tenantScoped: true,
    list: async (o, p) => {
      const r = await connectClient(ActivationService, (o.app ?? a).url, o.key ?? acme.secret).listMachines({
        ...p,
        tenantId: o.tenantId,
        status: o.otherFilters ? MachineStatus.ALIVE : undefined,
      });
      return listing(r.machines, (x) => x.id, r.nextPageToken);
    },
  },
  ListAuditEvents: {
    filtered: true,
    tenantScoped: true,
    list: async (o, p) => {
      const r = await connectClient(AuditService, (o.app ?? a).url, o.key ?? acme.secret).listAuditEvents({
        ...p,
        tenantId: o.tenantId,
        typePrefix: o.otherFilters ? "license." : "",
      });
      return listing(r.events, (x) => x.id, r.nextPageToken);
    },
  },
  ListProducts: {
    filtered: false,
    tenantScoped: true,
    list: async (o, p) => {
      const r = await connectClient(LicensingService, (o.app ?? a).url, o.key ?? acme.secret).listProducts({
        ...p,
        tenantId: o.tenantId,
      });
      return listing(r.products, (x) => x.id, r.nextPageToken);
    },
  },
  ListPolicies: {
    filtered: true,
    tenantScoped: true,
    list: async (o, p) => {
      const r = await connectClient(LicensingService, (o.app ?? a).url, o.key ?? acme.secret).listPolicies({
        ...p,
        tenantId: o.tenantId,
        productId: o.otherFilters ? acme.productIds[1] : "",
      });
      return listing(r.policies, (x) => x.id, r.nextPageToken);
    },
  },
  ListCustomers: {
    filtered: true,
    tenantScoped: true,
    list: async (o, p) => {
      const r = await connectClient(LicensingService, (o.app ?? a).url, o.key ?? acme.secret).listCustomers({
        ...p,
        tenantId: o.tenantId,
        email: o.otherFilters ? "ann@ac.example" : "",
      });
      return listing(r.customers, (x) => x.id, r.nextPageToken);
    },
  },
  ListLicenses: {
    filtered: true,
    tenantScoped: true,
    list: async (o, p) => {
      const r = await connectClient(LicensingService, (o.app ?? a).url, o.key ?? acme.secret).listLicenses({
        ...p,
        tenantId: o.tenantId,
        customerId: o.otherFilters ? acme.customerIds[1] : "",
      });
      return listing(r.licenses, (x) => x.id, r.nextPageToken);
    },
  },
  ListMeters: {
    filtered: true,
    tenantScoped: true,
    list: async (o, p) => {
      const r = await connectClient(UsageService, (o.app ?? a).url, o.key ?? acme.secret).listMeters({
        ...p,
        tenantId: o.tenantId,
        productId: o.otherFilters ? acme.productIds[1] : "",
      });
      return listing(r.meters, (x) => x.id, r.nextPageToken);
    },
  },
  ListAnomalies: {
    filtered: true,
    tenantScoped: true,
    list: async (o, p) => {
      const r = await connectClient(UsageService, (o.app ?? a).url, o.key ?? acme.secret).listAnomalies({
        ...p,
        tenantId: o.tenantId,
        minSeverity: o.otherFilters ? Severity.CRITICAL : undefined,
      });
      return listing(r.anomalies, (x) => x.id, r.nextPageToken);
    },
  },
  ListUsageEvents: {
    filtered: true,
    tenantScoped: true,
    list: async (o, p) => {
      const r = await connectClient(UsageService, (o.app ?? a).url, o.key ?? acme.secret).listUsageEvents({
        ...p,
        tenantId: o.tenantId,
        licenseId: acme.licenseId,
        metric: o.otherFilters ? "calls" : "",
      });
      return listing(r.events, (x) => `${x.idempotencyKey}`, r.nextPageToken);
    },
  },
};
const NAMES = Object.keys(LISTS);

const refused = { code: "InvalidArgument", reason: "INVALID_PAGE_TOKEN", metadata: { field: "page_token" } };
const b64 = (data: Buffer | string) => Buffer.from(data).toString("base64url");
/** A token's second page: the first token a list hands out, with one row per page. */
const firstToken = async (name: string, o: Parameters<Lister>[0] = {}) =>
  (await LISTS[name]!.list(o, { pageSize: 1, pageToken: "" })).next;

describe("paging", () => {
  it.each(NAMES)("%s: a walk, page by page, returns every row exactly once, in order", async (name) => {
    const whole = await LISTS[name]!.list({}, { pageSize: 1000, pageToken: "" });
    expect(whole.next).toBe("");
    expect(whole.ids.length).toBeGreaterThanOrEqual(2);
    const walked: string[] = [];
    let pageToken = "";
    let pages = 0;
    do {
      // Alternate instances: any instance sharing the data key continues any other's walk.
      const page = await LISTS[name]!.list({ app: pages % 2 === 0 ? a : b }, { pageSize: 2, pageToken });
      expect(page.ids.length).toBeLessThanOrEqual(2);
      walked.push(...page.ids);
      pageToken = page.next;
      pages++;
    } while (pageToken !== "");
    expect(walked).toEqual(whole.ids);
    expect(pages).toBe(Math.ceil(whole.ids.length / 2));
  });
});

describe("page tokens are opaque and tamper-evident", () => {
  it.each(NAMES)("%s: forged, truncated, altered and padded tokens are INVALID_ARGUMENT", async (name) => {
    const token = await firstToken(name);
    expect(token).not.toBe("");
    const flip = (s: string, i: number) => s.slice(0, i) + (s[i] === "A" ? "B" : "A") + s.slice(i + 1);
    const bytes = Buffer.from(token, "base64url");
    const forged = [
      // What the previous format accepted, and what reached queries with it.
      b64(JSON.stringify({ a: "x\u0000", f: "{}" })),
      b64(JSON.stringify({ a: "1e300|0|k", f: "{}" })),
      b64(Buffer.concat([Buffer.of(1), Buffer.from("1e300|0|k"), Buffer.alloc(16)])),
      b64(Buffer.concat([Buffer.of(1), Buffer.from("x\u0000"), bytes.subarray(bytes.length - 16)])),
      token.slice(0, -1),
      token.slice(0, -8),
      token.slice(1),
      flip(token, 1),
      flip(token, Math.floor(token.length / 2)),
      flip(token, token.length - 1),
      `${token}A`,
      `${token}=`,
      token.replace(/-/g, "+").replace(/_/g, "/"),
      b64(Buffer.concat([Buffer.of(2), bytes.subarray(1)])),
      "garbage!",
      "%00",
      "AAAA",
    ].filter((f) => f !== token);
    for (const pageToken of forged) {
      expect(
        await failure(LISTS[name]!.list({}, { pageSize: 1, pageToken })),
        `${name} with ${JSON.stringify(pageToken)}`,
      ).toMatchObject(refused);
    }
  });

  it.each(NAMES)("%s: a token from another list is INVALID_ARGUMENT", async (name) => {
    for (const from of NAMES.filter((n) => n !== name)) {
      const token = await firstToken(from);
      expect(
        await failure(LISTS[name]!.list({}, { pageSize: 1, pageToken: token })),
        `${from}'s token on ${name}`,
      ).toMatchObject(refused);
    }
  });

  it.each(NAMES.filter((n) => LISTS[n]!.filtered))(
    "%s: a token under other filters is INVALID_ARGUMENT",
    async (name) => {
      const token = await firstToken(name);
      expect(await failure(LISTS[name]!.list({ otherFilters: true }, { pageSize: 1, pageToken: token }))).toMatchObject(
        refused,
      );
    },
  );

  it.each(NAMES.filter((n) => LISTS[n]!.tenantScoped))(
    "%s: a token from tenant A is INVALID_ARGUMENT for tenant B",
    async (name) => {
      const token = await firstToken(name);
      // B's own key, on B's list.
      expect(await failure(LISTS[name]!.list({ key: other.secret }, { pageSize: 1, pageToken: token }))).toMatchObject(
        refused,
      );
      // The super-admin, listing A then B.
      const asAdmin = await firstToken(name, { key: a.superAdminKey, tenantId: acme.tenantId });
      expect(
        await failure(
          LISTS[name]!.list({ key: a.superAdminKey, tenantId: other.tenantId }, { pageSize: 1, pageToken: asAdmin }),
        ),
      ).toMatchObject(refused);
      // The same token still works where it was issued.
      expect(
        (
          await LISTS[name]!.list(
            { key: a.superAdminKey, tenantId: acme.tenantId },
            { pageSize: 1, pageToken: asAdmin },
          )
        ).ids,
      ).toHaveLength(1);
    },
  );

  it("an instance with another data key refuses the tokens of this one", async () => {
    const foreign = await startTestApp();
    try {
      const token = await firstToken("ListTenants");
      expect(
        await failure(
          LISTS.ListTenants!.list({ app: foreign, key: foreign.superAdminKey }, { pageSize: 1, pageToken: token }),
        ),
      ).toMatchObject(refused);
    } finally {
      await foreign.close();
    }
  });
});

describe("the audit log's numeric cursors", () => {
  const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);
  const TOO_BIG = [MAX_SAFE + 1n, 9_223_372_036_854_775_807n];
  const audit = () => connectClient(AuditService, a.url, acme.secret);

  it("seq numbers past 2^53 - 1 are INVALID_ARGUMENT naming the field and the range", async () => {
    const calls: [string, (v: bigint) => Promise<unknown>][] = [
      ["start_seq", (v) => audit().verifyAuditChain({ startSeq: v })],
      ["end_seq", (v) => audit().verifyAuditChain({ endSeq: v })],
      ["seq", (v) => audit().getInclusionProof({ seq: v })],
      ["tree_size", (v) => audit().getInclusionProof({ seq: 1n, treeSize: v })],
      ["old_size", (v) => audit().getConsistencyProof({ oldSize: v })],
      ["new_size", (v) => audit().getConsistencyProof({ oldSize: 1n, newSize: v })],
      [
        "after_seq",
        async (v) => {
          for await (const _ of audit().tailAuditEvents({ afterSeq: v }, { timeoutMs: 5_000 })) return;
        },
      ],
    ];
    for (const [field, call] of calls) {
      for (const v of TOO_BIG) {
        const f = await failure(call(v));
        expect(f, `${field} = ${v}`).toMatchObject({ code: "InvalidArgument", metadata: { field } });
        expect(f.message, `${field} = ${v}`).toContain(String(MAX_SAFE));
      }
    }
  });

  it("the largest allowed seq is an ordinary answer, never INTERNAL", async () => {
    expect((await audit().verifyAuditChain({ startSeq: MAX_SAFE })).valid).toBe(true); // an empty range
    expect(await failure(audit().verifyAuditChain({ endSeq: MAX_SAFE }))).toMatchObject({
      code: "InvalidArgument",
      metadata: { field: "end_seq" },
    });
    for (const call of [
      () => audit().getInclusionProof({ seq: MAX_SAFE }),
      () => audit().getConsistencyProof({ oldSize: MAX_SAFE }),
      () => audit().getConsistencyProof({ oldSize: 1n, newSize: MAX_SAFE }),
    ]) {
      expect((await failure(call())).code).not.toBe("Internal");
    }
    // A tail after the end of the log waits, keeping the client's cursor alive.
    const tail = audit().tailAuditEvents({ afterSeq: MAX_SAFE }, { timeoutMs: 10_000 })[Symbol.asyncIterator]();
    expect((await tail.next()).value?.message).toMatchObject({ case: "keepAlive", value: { lastSeq: MAX_SAFE } });
    await tail.return?.();
  });
});

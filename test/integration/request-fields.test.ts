import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { ConnectError } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BadRequestSchema } from "../../gen/ts/google/rpc/error_details_pb.js";
import { ActivationService } from "../../gen/ts/licensd/activation/v1/activation_service_pb.js";
import { AuditService } from "../../gen/ts/licensd/audit/v1/audit_service_pb.js";
import { LicensingService, ValidationCode } from "../../gen/ts/licensd/licensing/v1/licensing_service_pb.js";
import { ComposeStrategy, FeatureKind } from "../../gen/ts/licensd/licensing/v1/product_pb.js";
import { ApiKeyScope } from "../../gen/ts/licensd/tenant/v1/api_key_pb.js";
import { TenantService } from "../../gen/ts/licensd/tenant/v1/tenant_service_pb.js";
import { Aggregation } from "../../gen/ts/licensd/usage/v1/usage_pb.js";
import { UsageService } from "../../gen/ts/licensd/usage/v1/usage_service_pb.js";
import { connectClient, grpcClient, startTestApp, type TestApp } from "../support/app.js";
import { query } from "../support/database.js";
import { failure } from "../support/errors.js";

let t: TestApp;
let tenantId: string;
let admin: string;
let productId: string;
let policyId: string;
let customerId: string;

beforeAll(async () => {
  t = await startTestApp();
  const tenants = connectClient(TenantService, t.url, t.superAdminKey);
  tenantId = (await tenants.createTenant({ name: "Fields" })).tenant!.id;
  admin = (await tenants.createApiKey({ tenantId, name: "admin", scopes: [ApiKeyScope.ADMIN] })).secret;
  const lic = connectClient(LicensingService, t.url, admin);
  productId = (
    await lic.createProduct({
      code: "FLD",
      name: "Fields",
      features: [{ name: "api_calls", kind: FeatureKind.LIMIT, compose: ComposeStrategy.SUM }],
    })
  ).product!.id;
  policyId = (
    await lic.createPolicy({
      productId,
      name: "century",
      duration: { seconds: 100n * 365n * 86_400n },
      floating: true,
      maxMachines: 3,
    })
  ).policy!.id;
  customerId = (await lic.createCustomer({ name: "Ann", email: "ann@example.com" })).customer!.id;
});
afterAll(async () => t?.close());

/** The failure as a client sees it, with the BadRequest's field list. */
async function refused(call: Promise<unknown>) {
  const f = await failure(call);
  let fields: string[] = [];
  try {
    await call;
  } catch (err) {
    fields = ConnectError.from(err)
      .findDetails(BadRequestSchema)
      .flatMap((b) => b.fieldViolations.map((v) => v.field));
  }
  return { ...f, fields };
}

const rows = async (sql: string, params: unknown[] = []) => query(t.databaseUrl, sql, params);

describe("NUL in a string field", () => {
  it("is INVALID_ARGUMENT naming the field, over Connect JSON and gRPC, and changes nothing", async () => {
    const before = (await rows("select count(*)::int as n from tenants"))[0].n;
    for (const client of [
      connectClient(TenantService, t.url, t.superAdminKey),
      grpcClient(TenantService, t.url, t.superAdminKey),
    ]) {
      expect(await refused(client.createTenant({ name: "Acme\u0000" }))).toMatchObject({
        code: "InvalidArgument",
        reason: "INVALID_ARGUMENT",
        message: "name: must not contain the NUL character (U+0000)",
        metadata: { field: "name", rule: "licensd.string.no_nul" },
        fields: ["name"],
      });
      expect(
        await refused(client.createTenant({ name: "Acme", metadata: { "k\u0000": "v", ok: "v\u0000" } })),
      ).toMatchObject({
        code: "InvalidArgument",
        metadata: { field: 'metadata["k\\u0000"]' },
        // protovalidate's own rule on the key's characters names it too.
        fields: ['metadata["k\\u0000"]', 'metadata["ok"]', 'metadata["k\\u0000"]'],
      });
    }
    expect((await rows("select count(*)::int as n from tenants"))[0].n).toBe(before);
  });

  it("is refused in nested messages, repeated fields and public calls without a key", async () => {
    const lic = connectClient(LicensingService, t.url, admin);
    expect(
      await refused(
        lic.updateProduct({
          id: productId,
          features: [{ name: "ok", kind: FeatureKind.FLAG, compose: ComposeStrategy.UNION, description: "x\u0000" }],
          updateMask: { paths: ["features"] },
        }),
      ),
    ).toMatchObject({ code: "InvalidArgument", metadata: { field: "features[0].description" } });
    expect(
      await refused(lic.updateProduct({ id: productId, name: "n", updateMask: { paths: ["na\u0000me"] } })),
    ).toMatchObject({ code: "InvalidArgument", metadata: { field: "update_mask.paths[0]" } });
    const anonymous = grpcClient(LicensingService, t.url);
    expect(
      await refused(
        anonymous.validateLicense({ key: "FLD-AAAAA", fingerprint: "f\u0000", entitlements: ["a", "b\u0000"] }),
      ),
    ).toMatchObject({ code: "InvalidArgument", fields: ["fingerprint", "entitlements[1]"] });
    const activation = connectClient(ActivationService, t.url);
    expect(
      await refused(activation.activate({ key: "FLD-AAAAA", fingerprint: "fp", hostname: "host\u0000" })),
    ).toMatchObject({ code: "InvalidArgument", metadata: { field: "hostname" } });
    const audit = connectClient(AuditService, t.url, admin);
    expect(await refused(audit.listAuditEvents({ actor: "\u0000" }))).toMatchObject({
      code: "InvalidArgument",
      metadata: { field: "actor" },
    });
  });

  it("names a field under a 100,000-character map key in a few hundred bytes (the answer travels in headers)", async () => {
    const huge = "k".repeat(100_000);
    const f = await refused(
      grpcClient(TenantService, t.url, t.superAdminKey).createTenant({ name: "Acme", metadata: { [huge]: "v\u0000" } }),
    );
    expect(f).toMatchObject({ code: "InvalidArgument", reason: "INVALID_ARGUMENT" });
    expect(f.metadata.field).toMatch(/^metadata\["k+…k+"\]$/);
    expect(f.metadata.field.length).toBeLessThanOrEqual(160);
    expect(f.message.length).toBeLessThanOrEqual(2000);
  });

  it("ends a client stream at the message that holds it", async () => {
    const lic = grpcClient(LicensingService, t.url, admin);
    async function* rowsIn() {
      yield { productId, tier: "century", licenseKey: "fld-import-key-0001", customerEmail: "imp1@example.com" };
      yield {
        productId,
        tier: "century",
        licenseKey: "fld-import-key-0002",
        customerEmail: "imp2@example.com",
        customerName: "Bo\u0000b",
      };
    }
    expect(await refused(lic.importLicenses(rowsIn()))).toMatchObject({
      code: "InvalidArgument",
      metadata: { field: "customer_name" },
    });
  });

  it("in a usage event is that event's rejection; the rest of its batch lands", async () => {
    const tenants = connectClient(TenantService, t.url, t.superAdminKey);
    const ingest = (await tenants.createApiKey({ tenantId, name: "ingest", scopes: [ApiKeyScope.INGEST] })).secret;
    const usage = connectClient(UsageService, t.url, admin);
    await usage.createMeter({ productId, metric: "api_calls", aggregation: Aggregation.SUM });
    const { license } = await connectClient(LicensingService, t.url, admin).createLicense({ policyId, customerId });
    const stream = grpcClient(UsageService, t.url, ingest).streamUsage(
      (async function* () {
        yield {
          batchId: "b1",
          events: [
            { licenseId: license!.id, metric: "api_calls", quantity: 2n, idempotencyKey: "e1" },
            { licenseId: `${license!.id}\u0000`, metric: "api_calls", quantity: 1n, idempotencyKey: "e2" },
          ],
        };
      })(),
    );
    const acks = [];
    for await (const ack of stream) acks.push(ack);
    expect(acks.map((a) => [a.accepted, a.rejected.map((r) => [r.index, r.reason, r.message])])).toEqual([
      [1, [[1, "INVALID_EVENT", "license_id: must not contain NUL"]]],
    ]);
  });
});

describe("times and numbers out of range", () => {
  const RANGE = "must be from 1970-01-01T00:00:00Z up to (not including) 9000-01-01T00:00:00Z";

  it("refuses the issue's timestamps with INVALID_ARGUMENT naming the field and the range", async () => {
    const tenants = connectClient(TenantService, t.url, t.superAdminKey);
    const far = { seconds: 253402300799n, nanos: 999_999_999 };
    expect(
      await refused(tenants.createApiKey({ tenantId, name: "far", scopes: [ApiKeyScope.READ], expireTime: far })),
    ).toMatchObject({
      code: "InvalidArgument",
      metadata: { field: "expire_time" },
      message: expect.stringContaining(RANGE),
    });
    const usage = connectClient(UsageService, t.url, admin);
    expect(await refused(usage.detectAnomalies({ day: { seconds: -62135596800n, nanos: 0 } }))).toMatchObject({
      code: "InvalidArgument",
      metadata: { field: "day" },
      message: expect.stringContaining(RANGE),
    });
    const lic = grpcClient(LicensingService, t.url, admin);
    expect(
      await refused(lic.createLicense({ policyId, customerId, expireTime: { seconds: 221845392000n, nanos: 0 } })),
    ).toMatchObject({ code: "InvalidArgument", metadata: { field: "expire_time" } });
    // Nanos past a second have no JSON form: only a binary client can send them.
    const audit = grpcClient(AuditService, t.url, admin);
    expect(await refused(audit.listAuditEvents({ startTime: { seconds: -1n, nanos: 0 } }))).toMatchObject({
      code: "InvalidArgument",
      metadata: { field: "start_time" },
    });
    expect(await refused(audit.listAuditEvents({ endTime: { seconds: 1n, nanos: 1_000_000_000 } }))).toMatchObject({
      code: "InvalidArgument",
      metadata: { field: "end_time" },
    });
  });

  it("takes the edges of the range, and a license valid until then validates", async () => {
    const lic = connectClient(LicensingService, t.url, admin);
    const last = { seconds: 221845391999n, nanos: 999_000_000 };
    const created = await lic.createLicense({ policyId, customerId, expireTime: last });
    expect(created.license!.expireTime!.seconds).toBe(221845391999n);
    expect(await lic.validateLicense({ key: created.key })).toMatchObject({ valid: true, code: ValidationCode.VALID });
    const audit = connectClient(AuditService, t.url, admin);
    expect(
      (await audit.listAuditEvents({ startTime: { seconds: 0n, nanos: 0 }, endTime: last, pageSize: 1 })).events,
    ).toHaveLength(1);
  });

  it("refuses a renewal that would pass the range with OUT_OF_RANGE, and leaves the license as it was", async () => {
    const lic = connectClient(LicensingService, t.url, admin);
    const near = timestampFromDate(new Date(Date.UTC(8950, 0, 1)));
    const { license } = await lic.createLicense({ policyId, customerId, expireTime: near });
    expect(await refused(lic.renewLicense({ id: license!.id }))).toMatchObject({
      code: "OutOfRange",
      reason: "EXPIRY_OUT_OF_RANGE",
      message: expect.stringContaining("9000-01-01T00:00:00Z"),
    });
    expect((await lic.getLicense({ id: license!.id })).license!.expireTime).toEqual(near);
  });

  it("refuses 64-bit integers past 2^53−1 naming the field, unary and streamed", async () => {
    const audit = grpcClient(AuditService, t.url, admin);
    expect(await refused(audit.getInclusionProof({ seq: 2n ** 53n }))).toMatchObject({
      code: "InvalidArgument",
      metadata: { field: "seq", rule: "licensd.int64.range" },
      message: "seq: must be from -9007199254740991 to 9007199254740991 (2^53−1)",
    });
    expect(await refused(audit.verifyAuditChain({ startSeq: 2n ** 63n - 1n }))).toMatchObject({
      code: "InvalidArgument",
      metadata: { field: "start_seq" },
    });
    const tail = audit.tailAuditEvents({ afterSeq: 2n ** 63n - 1n });
    expect(
      await refused(
        (async () => {
          for await (const _ of tail) break;
        })(),
      ),
    ).toMatchObject({ code: "InvalidArgument", metadata: { field: "after_seq" } });
    const lic = connectClient(LicensingService, t.url, admin);
    expect(
      await refused(
        lic.createPolicy({
          productId,
          name: "huge",
          entitlements: [{ feature: "api_calls", value: { case: "limit", value: 2n ** 62n } }],
        }),
      ),
    ).toMatchObject({ code: "InvalidArgument", metadata: { field: "entitlements[0].limit" } });
  });
});

describe("the super-admin naming a tenant", () => {
  it("gets NOT_FOUND writing into a tenant that does not exist or was deleted", async () => {
    const lic = grpcClient(LicensingService, t.url, t.superAdminKey);
    expect(
      await refused(lic.createProduct({ tenantId: "ten_00000000000000000000000000", code: "NOP", name: "x" })),
    ).toMatchObject({ code: "NotFound", reason: "TENANT_NOT_FOUND" });
    const tenants = connectClient(TenantService, t.url, t.superAdminKey);
    const gone = (await tenants.createTenant({ name: "Gone" })).tenant!.id;
    await tenants.deleteTenant({ id: gone });
    expect(await refused(lic.createCustomer({ tenantId: gone, name: "x", email: "x@example.com" }))).toMatchObject({
      code: "NotFound",
      reason: "TENANT_NOT_FOUND",
    });
    const imports = lic.importLicenses(
      (async function* () {
        yield {
          tenantId: gone,
          productId,
          tier: "century",
          licenseKey: "gone-import-key-0001",
          customerEmail: "x@example.com",
        };
      })(),
    );
    expect(await refused(imports)).toMatchObject({ code: "NotFound", reason: "TENANT_NOT_FOUND" });
    expect((await rows("select count(*)::int as n from customers where tenant_id = $1", [gone]))[0].n).toBe(0);
  });
});

describe("usage totals past int64", () => {
  it("refuse an event of more than 2^53−1, saturate totals at 2^63−1, and keep anomaly detection working", async () => {
    const usage = connectClient(UsageService, t.url, admin);
    await usage.createMeter({ productId, metric: "tokens", aggregation: Aggregation.SUM });
    const { license, key } = await connectClient(LicensingService, t.url, admin).createLicense({
      policyId,
      customerId,
    });
    const agent = grpcClient(UsageService, t.url);
    expect(
      await refused(
        agent.recordUsage({
          event: { licenseKey: key, metric: "tokens", quantity: 2n ** 53n, idempotencyKey: "too-big" },
        }),
      ),
    ).toMatchObject({
      code: "InvalidArgument",
      reason: "INVALID_QUANTITY",
      message: "event.quantity: must be from 0 to 9007199254740991 (2^53−1)",
    });
    const max = 2n ** 53n - 1n;
    const sent = await agent.ingestUsage(
      (async function* () {
        for (let i = 0; i < 1100; i++)
          yield { event: { licenseKey: key, metric: "tokens", quantity: max, idempotencyKey: `big-${i}` } };
      })(),
    );
    expect(sent).toMatchObject({ accepted: 1100n, rejected: [] });
    const int64Max = 2n ** 63n - 1n;
    expect((await usage.getQuota({ licenseId: license!.id, metric: "tokens" })).limits[0]).toMatchObject({
      used: int64Max,
    });
    const now = BigInt(Math.floor(Date.now() / 1000));
    const summary = await usage.getUsageSummary({
      licenseId: license!.id,
      metric: "tokens",
      startTime: { seconds: now - 86_400n },
      endTime: { seconds: now + 3600n },
    });
    expect(summary.total).toBe(int64Max);
    expect(summary.buckets.map((b) => b.value)).toEqual([int64Max]);
    await usage.detectAnomalies({ day: { seconds: now } });
  });
});

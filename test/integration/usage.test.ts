import v8 from "node:v8";
import { runInNewContext } from "node:vm";
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AuditService } from "../../gen/ts/licensd/audit/v1/audit_service_pb.js";
import { LicensingService } from "../../gen/ts/licensd/licensing/v1/licensing_service_pb.js";
import { ModelTier, OverageStrategy } from "../../gen/ts/licensd/licensing/v1/policy_pb.js";
import { ComposeStrategy, FeatureKind } from "../../gen/ts/licensd/licensing/v1/product_pb.js";
import { ApiKeyScope } from "../../gen/ts/licensd/tenant/v1/api_key_pb.js";
import { TenantService } from "../../gen/ts/licensd/tenant/v1/tenant_service_pb.js";
import {
  Aggregation,
  LimitPeriod,
  Severity,
  UsageEventSchema,
  type UsageEvent,
} from "../../gen/ts/licensd/usage/v1/usage_pb.js";
import {
  Bucket,
  ResolutionFilter,
  SummaryLayout,
  UsageService,
  type StreamUsageRequest,
  type StreamUsageResponse,
} from "../../gen/ts/licensd/usage/v1/usage_service_pb.js";
import { ActivationService } from "../../gen/ts/licensd/activation/v1/activation_service_pb.js";
import { ManualClock } from "../../src/platform/clock.js";
import { writeInOrder } from "../../src/usage/stream-writer.js";
import { connectClient, grpcClient, startTestApp, type TestApp } from "../support/app.js";
import { createTestDatabase, query } from "../support/database.js";
import { failure } from "../support/errors.js";
import { outbox } from "../support/outbox.js";
import { until } from "../support/wait.js";

let db: { url: string; drop(): Promise<void> };
let a: TestApp;
let b: TestApp;
const clock = new ManualClock(new Date("2026-11-23T12:00:00Z"));

beforeAll(async () => {
  db = await createTestDatabase();
  a = await startTestApp({ databaseUrl: db.url, clock });
  b = await startTestApp({
    databaseUrl: db.url,
    clock,
    env: { LICENSD_SUPER_ADMIN_KEY: a.superAdminKey, LICENSD_DATA_KEY: a.app.config.dataKey.toString("base64") },
  });
});
afterAll(async () => {
  await a?.close();
  await b?.close();
  await db?.drop();
});

/** A tenant, a product with a `tokens` limit feature, a policy (limit, overage) and a license; meters as asked. */
async function setup(
  code: string,
  opts: {
    limit?: number;
    overage?: OverageStrategy;
    agents?: Record<string, number>;
    meters?: {
      metric: string;
      aggregation: Aggregation;
      uniqueAttribute?: string;
      period?: LimitPeriod;
      agentTokens?: boolean;
    }[];
  } = {},
) {
  const tenants = connectClient(TenantService, a.url, a.superAdminKey);
  const { tenant } = await tenants.createTenant({ name: `${code} vendor` });
  const { secret } = await tenants.createApiKey({ tenantId: tenant!.id, name: "admin", scopes: [ApiKeyScope.ADMIN] });
  const ingestKey = (
    await tenants.createApiKey({ tenantId: tenant!.id, name: "uploader", scopes: [ApiKeyScope.INGEST] })
  ).secret;
  const api = connectClient(LicensingService, a.url, secret);
  const product = (
    await api.createProduct({
      code,
      name: "App",
      features: [{ name: "tokens", kind: FeatureKind.LIMIT, compose: ComposeStrategy.SUM }],
    })
  ).product!;
  const policy = (
    await api.createPolicy({
      productId: product.id,
      name: "pro",
      floating: true,
      overageStrategy: opts.overage ?? OverageStrategy.NO_OVERAGE,
      entitlements: opts.limit ? [{ feature: "tokens", value: { case: "limit", value: BigInt(opts.limit) } }] : [],
      agentEntitlements: Object.entries(opts.agents ?? {}).map(([agent, tokenLimit]) => ({
        agent,
        tokenLimit: BigInt(tokenLimit),
      })),
    })
  ).policy!;
  const customer = (await api.createCustomer({ name: "Jane", email: `jane@${code.toLowerCase()}.example` })).customer!;
  const lic = await api.createLicense({ policyId: policy.id, customerId: customer.id });
  const usage = connectClient(UsageService, a.url, secret);
  for (const m of opts.meters ?? [{ metric: "tokens", aggregation: Aggregation.SUM }])
    await usage.createMeter({ productId: product.id, ...m });
  return {
    tenantId: tenant!.id,
    secret,
    ingestKey,
    api,
    usage,
    productId: product.id,
    customerId: customer.id,
    key: lic.key,
    licenseId: lic.license!.id,
  };
}

let n = 0;
const ev = (key: string, quantity: number, extra: Partial<UsageEvent> = {}) =>
  ({
    licenseKey: key,
    metric: "tokens",
    quantity: BigInt(quantity),
    idempotencyKey: `ev-${++n}`,
    ...extra,
  }) as UsageEvent;
const usageOf = async (t: TestApp, secret: string, licenseId: string, metric = "tokens") =>
  (await connectClient(UsageService, t.url, secret).getQuota({ licenseId, metric })).limits[0]!;

/** A StreamUsage client: send batches, read acks. */
function openStream(t: TestApp, key?: string) {
  const requests = outbox<StreamUsageRequest>();
  const responses = grpcClient(UsageService, t.url, key).streamUsage(requests.messages)[Symbol.asyncIterator]();
  return {
    send: (batchId: string, events: UsageEvent[]) => requests.push({ batchId, events } as StreamUsageRequest),
    next: async (): Promise<StreamUsageResponse> => (await responses.next()).value as StreamUsageResponse,
    end: () => requests.end(),
  };
}

describe("meters", () => {
  it("creates, lists, updates and deletes meters, with clear errors", async () => {
    const s = await setup("MTR");
    const { meters } = await s.usage.listMeters({ productId: s.productId });
    expect(meters.map((m) => [m.metric, Aggregation[m.aggregation], LimitPeriod[m.period]])).toEqual([
      ["tokens", "SUM", "MONTH"],
    ]);
    expect(
      await failure(s.usage.createMeter({ productId: s.productId, metric: "tokens", aggregation: Aggregation.COUNT })),
    ).toMatchObject({ code: "AlreadyExists", reason: "METRIC_TAKEN", metadata: { field: "metric" } });
    expect(
      await failure(
        s.usage.createMeter({ productId: s.productId, metric: "users", aggregation: Aggregation.UNIQUE_COUNT }),
      ),
    ).toMatchObject({ code: "InvalidArgument", metadata: { field: "unique_attribute" } });
    expect(
      await failure(s.usage.createMeter({ productId: s.productId, metric: "Bad Name", aggregation: Aggregation.SUM })),
    ).toMatchObject({ code: "InvalidArgument", metadata: { field: "metric" } });
    expect(
      await failure(s.usage.createMeter({ productId: s.productId, metric: "x", aggregation: Aggregation.UNSPECIFIED })),
    ).toMatchObject({ code: "InvalidArgument", metadata: { field: "aggregation" } });
    const calls = (
      await s.usage.createMeter({
        productId: s.productId,
        metric: "calls",
        aggregation: Aggregation.COUNT,
        period: LimitPeriod.DAY,
      })
    ).meter!;
    const updated = (
      await s.usage.updateMeter({ id: calls.id, description: "API calls", updateMask: { paths: ["description"] } })
    ).meter!;
    expect([updated.description, LimitPeriod[updated.period]]).toEqual(["API calls", "DAY"]);
    const other = await setup("MTS");
    expect(await failure(other.usage.getMeter({ id: calls.id }))).toMatchObject({
      code: "NotFound",
      reason: "METER_NOT_FOUND",
    });
    expect(
      await failure(other.usage.createMeter({ productId: s.productId, metric: "z", aggregation: Aggregation.SUM })),
    ).toMatchObject({ code: "NotFound" });
    await s.usage.recordUsage({ event: { ...ev(s.key, 1), metric: "calls" } });
    expect(await failure(s.usage.deleteMeter({ id: calls.id }))).toMatchObject({
      code: "FailedPrecondition",
      reason: "METER_IN_USE",
    });
    const spare = (await s.usage.createMeter({ productId: s.productId, metric: "spare", aggregation: Aggregation.MAX }))
      .meter!;
    await s.usage.deleteMeter({ id: spare.id });
    expect(await failure(s.usage.getMeter({ id: spare.id }))).toMatchObject({ code: "NotFound" });
  });
});

describe("ingestion", () => {
  it("RecordUsage counts an event once, reports duplicates and the limit state, and refuses past a hard limit", async () => {
    const s = await setup("REC", { limit: 100 });
    const usage = connectClient(UsageService, a.url); // public: the license key is the credential
    const first = ev(s.key, 60);
    expect(await usage.recordUsage({ event: first })).toMatchObject({
      duplicate: false,
      limit: { used: 60n, limit: 100n, allowed: 100n, warning: false, exceeded: false },
    });
    expect(await connectClient(UsageService, b.url).recordUsage({ event: first })).toMatchObject({
      duplicate: true,
      limit: { used: 60n },
    });
    expect((await usage.recordUsage({ event: ev(s.key, 30) })).limit).toMatchObject({ used: 90n, warning: true });
    expect(await failure(usage.recordUsage({ event: ev(s.key, 11) }))).toMatchObject({
      code: "FailedPrecondition",
      reason: "LIMIT_EXCEEDED",
    });
    expect((await usage.recordUsage({ event: ev(s.key, 10) })).limit).toMatchObject({ used: 100n, exceeded: false });
    expect(await usageOf(a, s.secret, s.licenseId)).toMatchObject({ used: 100n, limit: 100n });
    // Bad input: the field is named, nothing changes.
    expect(await failure(usage.recordUsage({ event: ev(s.key, -1) }))).toMatchObject({
      code: "InvalidArgument",
      reason: "INVALID_QUANTITY",
      metadata: { field: "event.quantity" },
    });
    expect(await failure(usage.recordUsage({ event: ev(s.key, 1, { metric: "nope" }) }))).toMatchObject({
      code: "InvalidArgument",
      reason: "UNKNOWN_METRIC",
      metadata: { field: "event.metric" },
    });
    expect(
      await failure(usage.recordUsage({ event: ev("REC-AAAAA-BBBBB-CCCCC-DDDDD-EEEEE-FFFFF-GGGGG", 1) })),
    ).toMatchObject({ code: "Unauthenticated", reason: "INVALID_LICENSE_KEY" });
    expect(await failure(usage.recordUsage({ event: ev("", 1, { licenseId: s.licenseId }) }))).toMatchObject({
      code: "Unauthenticated",
    });
    expect(await failure(usage.recordUsage({}))).toMatchObject({
      code: "InvalidArgument",
      metadata: { field: "event" },
    });
    expect(await usageOf(a, s.secret, s.licenseId)).toMatchObject({ used: 100n });
    const audit = await connectClient(AuditService, a.url, s.secret).listAuditEvents({ typePrefix: "usage." });
    expect(audit.events.map((e) => e.type)).toEqual(["usage.limit_warning"]);
  });

  it("takes an agent's lease as the credential while it verifies", async () => {
    const s = await setup("LSE", { limit: 1000 });
    const { lease } = await connectClient(ActivationService, a.url).activate({ key: s.key, fingerprint: "agent-box" });
    const usage = connectClient(UsageService, b.url);
    expect((await usage.recordUsage({ event: { ...ev("", 7), lease: lease!.token } })).limit).toMatchObject({
      licenseId: s.licenseId,
      used: 7n,
    });
    const [p, body, sig] = lease!.token.split(".");
    const forged = JSON.parse(Buffer.from(body!, "base64url").toString());
    forged.license_id = "lic_00000000000000000000000000";
    const tampered = `${p}.${Buffer.from(JSON.stringify(forged)).toString("base64url")}.${sig}`;
    expect(await failure(usage.recordUsage({ event: { ...ev("", 1), lease: tampered } }))).toMatchObject({
      code: "Unauthenticated",
      reason: "INVALID_LEASE",
      metadata: { field: "event.lease" },
    });
    clock.advance(2 * 86_400_000); // past the 24 h lease
    expect(await failure(usage.recordUsage({ event: { ...ev("", 1), lease: lease!.token } }))).toMatchObject({
      code: "Unauthenticated",
      reason: "INVALID_LEASE",
    });
    clock.set(new Date("2026-11-23T12:00:00Z"));
    expect((await usageOf(a, s.secret, s.licenseId)).used).toBe(7n);
  });

  it("refuses events of a license suspended on another instance (cached licenses are dropped on change)", async () => {
    const s = await setup("SUS");
    const usage = connectClient(UsageService, a.url);
    await usage.recordUsage({ event: ev(s.key, 1) }); // the license is now cached on instance a
    await connectClient(LicensingService, b.url, s.secret).suspendLicense({ id: s.licenseId });
    // How soon is measured in bench/propagation.ts; here: instance a refuses without a restart.
    const refused = await until("instance a to refuse the suspended license", () =>
      failure(usage.recordUsage({ event: ev(s.key, 1) })).catch(() => undefined),
    );
    expect(refused).toMatchObject({ code: "FailedPrecondition", reason: "LICENSE_SUSPENDED" });
    // A meter created on another instance is usable at once.
    await connectClient(UsageService, b.url, s.secret).createMeter({
      productId: s.productId,
      metric: "fresh",
      aggregation: Aggregation.COUNT,
    });
    await connectClient(LicensingService, b.url, s.secret).reinstateLicense({ id: s.licenseId });
    const accepted = await until("instance a to accept the reinstated license", () =>
      usage.recordUsage({ event: { ...ev(s.key, 1), metric: "fresh" } }).then(
        () => true,
        () => false,
      ),
    );
    expect(accepted).toBe(true);
    // A meter created on another instance, used at once beside a known one in one batch.
    await connectClient(UsageService, b.url, s.secret).createMeter({
      productId: s.productId,
      metric: "fresher",
      aggregation: Aggregation.COUNT,
    });
    const stream = openStream(a);
    stream.send("fresher", [ev(s.key, 1, { metric: "fresh" }), ev(s.key, 1, { metric: "fresher" })]);
    expect(await stream.next()).toMatchObject({ accepted: 2, rejected: [] });
    stream.end();
  });

  it("lets overage through up to the policy's factor, warning at 80% and flagging once past the limit", async () => {
    const s = await setup("OVR", { limit: 100, overage: OverageStrategy.ALLOW_1_25X });
    const usage = connectClient(UsageService, a.url);
    await usage.recordUsage({ event: ev(s.key, 80) });
    await usage.recordUsage({ event: ev(s.key, 30) });
    expect((await usage.recordUsage({ event: ev(s.key, 15) })).limit).toMatchObject({
      used: 125n,
      allowed: 125n,
      exceeded: true,
    });
    expect(await failure(usage.recordUsage({ event: ev(s.key, 1) }))).toMatchObject({ reason: "LIMIT_EXCEEDED" });
    const audit = await connectClient(AuditService, a.url, s.secret).listAuditEvents({ typePrefix: "usage." });
    expect(audit.events.map((e) => [e.type, e.payload?.used])).toEqual([
      ["usage.limit_warning", 80],
      ["usage.limit_exceeded", 110],
    ]);
    const always = await setup("OVA", { limit: 10, overage: OverageStrategy.ALWAYS });
    expect((await usage.recordUsage({ event: ev(always.key, 1000) })).limit).toMatchObject({
      used: 1000n,
      exceeded: true,
    });
  });

  it("IngestUsage lands the good events of a stream and reports each bad one with its index", async () => {
    const s = await setup("ING", { limit: 1000 });
    const now = clock.now();
    const events = [
      ev(s.key, 5),
      ev(s.key, -3),
      ev(s.key, 5, { metric: "unknown" }),
      ev(s.key, 5, { time: timestampFromDate(new Date(now.getTime() + 3600_000)) }),
      ev(s.key, 5, { attributes: Object.fromEntries(Array.from({ length: 17 }, (_, i) => [`k${i}`, "v"])) }),
      ev(s.key, 5, { idempotencyKey: "" }),
      ev(s.key, 7),
    ];
    const res = await grpcClient(UsageService, b.url).ingestUsage(
      (async function* () {
        for (const event of events) yield { event };
      })(),
    );
    expect(res.accepted).toBe(2n);
    expect(res.rejected.map((r) => [r.index, r.reason])).toEqual([
      [1, "INVALID_QUANTITY"],
      [2, "UNKNOWN_METRIC"],
      [3, "INVALID_TIME"],
      [4, "INVALID_EVENT"],
      [5, "INVALID_EVENT"],
    ]);
    expect((await usageOf(a, s.secret, s.licenseId)).used).toBe(12n);
  });

  it("IngestUsage writes a long stream in chunks that overlap, and still meets its limit in order and indexes rejections across chunks", async () => {
    const s = await setup("INL", { limit: 1500 });
    const events = Array.from({ length: 1700 }, () => ev(s.key, 1));
    events[3] = ev(s.key, -1);
    events[600] = { ...events[10]! };
    events[1234] = ev(s.key, 1, { metric: "unknown" });
    const res = await grpcClient(UsageService, a.url).ingestUsage(
      (async function* () {
        for (const event of events) yield { event };
      })(),
    );
    // 1,697 good events in order: the 1,500th is at index 1502, the rest pass the limit.
    expect([res.accepted, res.duplicates]).toEqual([1500n, 1n]);
    expect(res.rejected.map((r) => [r.index, r.reason])).toEqual([
      [3, "INVALID_QUANTITY"],
      [1234, "UNKNOWN_METRIC"],
      ...Array.from({ length: 197 }, (_, i) => [1503 + i, "LIMIT_EXCEEDED"]),
    ]);
    expect((await usageOf(a, s.secret, s.licenseId)).used).toBe(1500n);
  });

  it("StreamUsage acknowledges each batch after commit; a resent batch is all duplicates, across streams and instances", async () => {
    const s = await setup("STR");
    const batch = Array.from({ length: 500 }, () => ev(s.key, 2));
    const one = openStream(a);
    one.send("b1", batch.slice(0, 250));
    one.send("b2", batch.slice(250));
    const [ack1, ack2] = [await one.next(), await one.next()];
    expect([ack1.batchId, ack1.accepted, ack2.batchId, ack2.accepted]).toEqual(["b1", 250, "b2", 250]);
    expect(ack2.limits).toMatchObject([{ licenseId: s.licenseId, metric: "tokens", used: 1000n }]);
    one.end();
    // The client lost its acks and resends everything, on the other instance: nothing counts twice.
    const two = openStream(b);
    two.send("b1-again", batch);
    expect(await two.next()).toMatchObject({ batchId: "b1-again", accepted: 0, duplicates: 500 });
    two.send("mixed", [ev(s.key, 1), batch[0]!, ev(s.key, -1)]);
    expect(await two.next()).toMatchObject({
      accepted: 1,
      duplicates: 1,
      rejected: [{ index: 2, reason: "INVALID_QUANTITY" }],
    });
    two.end();
    expect((await usageOf(a, s.secret, s.licenseId)).used).toBe(1001n);
    // An API key with the ingest scope uploads by license id; another tenant's license is not found.
    const uploader = openStream(a, s.ingestKey);
    uploader.send("by-id", [{ ...ev("", 4), licenseId: s.licenseId } as UsageEvent]);
    expect(await uploader.next()).toMatchObject({ accepted: 1 });
    const other = await setup("STS");
    uploader.send("foreign", [{ ...ev("", 4), licenseId: other.licenseId } as UsageEvent]);
    expect(await uploader.next()).toMatchObject({ accepted: 0, rejected: [{ reason: "LICENSE_NOT_FOUND" }] });
    uploader.end();
  });

  it("counts a key once when batches in flight on one stream repeat it, in order, without stalling the stream", async () => {
    const s = await setup("RPT");
    const stream = openStream(a);
    // Four batches in flight at once, each repeating the previous one's last two keys (a
    // client resending while the first copies are still being written).
    const batches = Array.from({ length: 4 }, () => Array.from({ length: 50 }, () => ev(s.key, 1)));
    for (let i = 1; i < batches.length; i++) batches[i]!.splice(0, 2, ...batches[i - 1]!.slice(-2));
    for (const [i, events] of batches.entries()) stream.send(`rpt-${i}`, events);
    const acks = [];
    for (let i = 0; i < batches.length; i++) acks.push(await stream.next());
    stream.end();
    expect(acks.map((x) => [x.batchId, x.accepted, x.duplicates])).toEqual([
      ["rpt-0", 50, 0],
      ["rpt-1", 48, 2],
      ["rpt-2", 48, 2],
      ["rpt-3", 48, 2],
    ]);
    expect((await usageOf(a, s.secret, s.licenseId)).used).toBe(194n);
  });

  it("meets a limit in stream order while batches in flight run up to it: the first event past it is refused, none after it lands", async () => {
    const s = await setup("ORD", { limit: 1000 });
    const stream = openStream(a);
    stream.send(
      "ord-0",
      Array.from({ length: 50 }, () => ev(s.key, 5)),
    );
    expect(await stream.next()).toMatchObject({ batchId: "ord-0", accepted: 50 });
    // Five at once: to 500 and 750 (clear of everything), to exactly 1000 (across the 80%
    // warning), then one token each, past the limit. Had a later batch gone ahead of an
    // earlier one, the 1000th token's batch would lose an event to a later single token.
    const batches = [
      ...Array.from({ length: 3 }, () => Array.from({ length: 50 }, () => ev(s.key, 5))),
      [ev(s.key, 1)],
      [ev(s.key, 1)],
    ];
    for (const [i, events] of batches.entries()) stream.send(`ord-${i + 1}`, events);
    const acks = [];
    for (let i = 0; i < batches.length; i++) acks.push(await stream.next());
    stream.end();
    expect(acks.map((x) => [x.batchId, x.accepted, x.rejected.map((r) => [r.index, r.reason])])).toEqual([
      ["ord-1", 50, []],
      ["ord-2", 50, []],
      ["ord-3", 50, []],
      ["ord-4", 0, [[0, "LIMIT_EXCEEDED"]]],
      ["ord-5", 0, [[0, "LIMIT_EXCEEDED"]]],
    ]);
    expect(acks.at(-1)!.limits[0]).toMatchObject({ used: 1000n, limit: 1000n, warning: true, exceeded: false });
    expect((await usageOf(a, s.secret, s.licenseId)).used).toBe(1000n);
    const audit = await connectClient(AuditService, a.url, s.secret).listAuditEvents({ typePrefix: "usage." });
    expect(audit.events.map((e) => [e.type, e.payload?.used])).toEqual([["usage.limit_warning", 1000]]);
  });

  it("stores each event as sent: time to the millisecond, agent and attributes (or none)", async () => {
    const s = await setup("RAW");
    const at = new Date(clock.now().getTime() - 3_723_456);
    const stream = openStream(a);
    stream.send("raw", [
      ev(s.key, 7, {
        idempotencyKey: "raw-1",
        time: timestampFromDate(at),
        agentId: "coder",
        attributes: { model: "large", 'quote"d': "new\nline ✓" },
      }),
      ev(s.key, 0, { idempotencyKey: "raw-2", time: timestampFromDate(new Date(at.getTime() + 1)) }),
      // what array and JSON literals must escape, in each string column
      ev(s.key, 3, {
        idempotencyKey: 'raw-3 "q" \\ {x}, NULL ',
        time: timestampFromDate(new Date(at.getTime() - 1)),
        agentId: 'a\\"b,{} ',
        attributes: { "back\\slash": 'c:\\dir "x" {}' },
      }),
      ev(s.key, 1, { idempotencyKey: "NULL", time: timestampFromDate(new Date(at.getTime() - 2)), agentId: "NULL" }),
    ]);
    expect((await stream.next()).accepted).toBe(4);
    stream.end();
    const { events } = await s.usage.listUsageEvents({ licenseId: s.licenseId });
    expect(events.map((e) => [e.idempotencyKey, e.time, e.quantity, e.agentId, e.attributes])).toEqual([
      ["raw-2", timestampFromDate(new Date(at.getTime() + 1)), 0n, "", {}],
      ["raw-1", timestampFromDate(at), 7n, "coder", { model: "large", 'quote"d': "new\nline ✓" }],
      [
        'raw-3 "q" \\ {x}, NULL ',
        timestampFromDate(new Date(at.getTime() - 1)),
        3n,
        'a\\"b,{} ',
        { "back\\slash": 'c:\\dir "x" {}' },
      ],
      ["NULL", timestampFromDate(new Date(at.getTime() - 2)), 1n, "NULL", {}],
    ]);
  });

  it("lands each event of a batch under its own tenant, license and meter when the batch mixes them", async () => {
    const meters = [
      { metric: "tokens", aggregation: Aggregation.SUM },
      { metric: "calls", aggregation: Aggregation.COUNT },
    ];
    const [x, y] = [await setup("MXA", { meters }), await setup("MXB", { meters })];
    const stream = openStream(a);
    stream.send("mixed", [
      ev(x.key, 5),
      ev(y.key, 7, { metric: "calls" }),
      ev(y.key, 11),
      ev(x.key, 13, { metric: "calls", agentId: "coder" }),
    ]);
    expect((await stream.next()).accepted).toBe(4);
    stream.end();
    for (const [s, want] of [
      [
        x,
        [
          ["calls", 13n, "coder"],
          ["tokens", 5n, ""],
        ],
      ],
      [
        y,
        [
          ["calls", 7n, ""],
          ["tokens", 11n, ""],
        ],
      ],
    ] as const) {
      const { events } = await s.usage.listUsageEvents({ licenseId: s.licenseId });
      expect(
        events.map((e) => [e.metric, e.quantity, e.agentId]).sort((p, q) => String(p[0]).localeCompare(String(q[0]))),
      ).toEqual(want);
      expect((await s.usage.getQuota({ licenseId: s.licenseId })).limits.map((l) => [l.metric, l.used])).toEqual([
        ["calls", 1n],
        ["tokens", want[1][1]],
      ]);
    }
  });

  it("writes batches that queue up behind a stream's transactions together, and still answers each batch for itself", async () => {
    const [x, y] = [await setup("QUX"), await setup("QUY", { limit: 100 })];
    const ones = (key: string, n: number) => Array.from({ length: n }, () => ev(key, 1));
    const batches = [ones(x.key, 20), ones(x.key, 20), [ev(x.key, 1), ev(x.key, 1), ev(x.key, -1), ev(y.key, 10)]];
    batches.push([batches[1]![0]!, ev(y.key, 50)], [ev(y.key, 30), ev(y.key, 30)], ones(x.key, 10), [ev(y.key, 5)]);
    batches.push([batches[5]![3]!, ev(x.key, 2)]);
    const stream = openStream(a);
    // All at once: two transactions start, the rest queue up behind them.
    for (const [i, events] of batches.entries()) stream.send(`q-${i}`, events);
    const acks = [];
    for (let i = 0; i < batches.length; i++) acks.push(await stream.next());
    stream.end();
    const who = (id: string) => (id === x.licenseId ? "x" : "y");
    expect(
      acks.map((k) => [
        k.batchId,
        k.accepted,
        k.duplicates,
        k.rejected.map((r) => [r.index, r.reason]),
        [...new Set(k.limits.map((l) => who(l.licenseId)))].sort(),
      ]),
    ).toEqual([
      ["q-0", 20, 0, [], ["x"]],
      ["q-1", 20, 0, [], ["x"]],
      ["q-2", 3, 0, [[2, "INVALID_QUANTITY"]], ["x", "y"]],
      ["q-3", 1, 1, [], ["x", "y"]],
      ["q-4", 1, 0, [[1, "LIMIT_EXCEEDED"]], ["y"]],
      ["q-5", 10, 0, [], ["x"]],
      ["q-6", 1, 0, [], ["y"]],
      ["q-7", 1, 1, [], ["x"]],
    ]);
    expect(acks[6]!.limits[0]).toMatchObject({ used: 95n, limit: 100n });
    expect([(await usageOf(a, x.secret, x.licenseId)).used, (await usageOf(a, y.secret, y.licenseId)).used]).toEqual([
      54n,
      95n,
    ]);
    // Written together: fewer transactions (rows' xmin) than batches.
    const [{ n }] = await query<{ n: number }>(
      db.url,
      "select count(distinct xmin::text)::int as n from usage_events where license_id in ($1, $2)",
      [x.licenseId, y.licenseId],
    );
    expect(n).toBeLessThan(batches.length);
  });

  it("refuses an event whose strings PostgreSQL cannot store (NUL), and lands the rest of its batch", async () => {
    const s = await setup("NUL");
    const stream = openStream(a);
    stream.send("nul", [
      ev(s.key, 1, { idempotencyKey: "a\u0000b" }),
      ev(s.key, 2),
      ev(s.key, 4, { attributes: { k: "v\u0000" } }),
    ]);
    const ack = await stream.next();
    stream.end();
    expect(ack.accepted).toBe(1);
    expect(ack.rejected.map((r) => [r.index, r.reason, r.message.split(":")[0]])).toEqual([
      [0, "INVALID_EVENT", "idempotency_key"],
      [2, "INVALID_EVENT", "attributes"],
    ]);
    // Half a surrogate pair never gets this far: the JSON decoder refuses it, naming the field.
    expect(await failure(s.usage.recordUsage({ event: ev(s.key, 3, { agentId: "x\ud800" }) }))).toMatchObject({
      code: "InvalidArgument",
      message: expect.stringContaining("agent_id"),
    });
    expect((await usageOf(a, s.secret, s.licenseId)).used).toBe(2n);
  });

  it("never lets a license pass a hard limit, with two instances streaming concurrently", async () => {
    const s = await setup("HRD", { limit: 100 });
    const run = async (t: TestApp, name: string) => {
      const stream = openStream(t);
      let accepted = 0;
      for (let i = 0; i < 10; i++)
        stream.send(
          `${name}-${i}`,
          Array.from({ length: 10 }, () => ev(s.key, 1)),
        );
      for (let i = 0; i < 10; i++) accepted += (await stream.next()).accepted;
      stream.end();
      return accepted;
    };
    const [fromA, fromB] = await Promise.all([run(a, "a"), run(b, "b")]);
    expect(fromA + fromB).toBe(100);
    expect((await usageOf(a, s.secret, s.licenseId)).used).toBe(100n);
    expect(
      (await query(db.url, "select count(*)::int as n from usage_events where license_id = $1", [s.licenseId]))[0].n,
    ).toBe(100);
  });
});

describe("agent token allowances", () => {
  const agentState = (limits: { agentId: string; used: bigint; limit: bigint }[]) =>
    limits.map((l) => [l.agentId, l.used, l.limit]);

  it("holds each agent the license names to its token limit, beside the metric's own limit", async () => {
    const s = await setup("AGT", {
      limit: 1000,
      agents: { coder: 100, reviewer: 0 },
      meters: [{ metric: "tokens", aggregation: Aggregation.SUM, agentTokens: true }],
    });
    const stream = openStream(a);
    const b1 = [
      ev(s.key, 60, { agentId: "coder" }),
      ev(s.key, 50, { agentId: "coder" }), // coder would reach 110 of 100
      ev(s.key, 500, { agentId: "reviewer" }), // 0: no agent limit
      ev(s.key, 300, { agentId: "scripts" }), // not named by the license: the metric's limit only
      ev(s.key, 100),
      ev(s.key, 40, { agentId: "coder" }),
    ];
    stream.send("b1", b1);
    const ack = await stream.next();
    expect(ack.accepted).toBe(5);
    expect(ack.rejected.map((r) => [r.index, r.reason])).toEqual([[1, "LIMIT_EXCEEDED"]]);
    expect(ack.rejected[0]!.message).toContain('agent "coder" would reach 110 of an allowed 100');
    expect(agentState(ack.limits)).toEqual([
      ["", 1000n, 1000n],
      ["coder", 100n, 100n],
      ["reviewer", 500n, 0n],
    ]);
    // A resent batch counts nothing again, for the metric or its agents; the refused event is tried again (and refused
    // again).
    stream.send("b1-again", b1);
    const again = await stream.next();
    expect([again.accepted, again.duplicates, again.rejected.map((r) => [r.index, r.reason])]).toEqual([
      0,
      5,
      [[1, "LIMIT_EXCEEDED"]],
    ]);
    expect(agentState(again.limits)).toEqual(agentState(ack.limits));
    // The metric's limit still holds for every agent.
    stream.send("b2", [ev(s.key, 1, { agentId: "reviewer" }), ev(s.key, 0, { agentId: "coder" })]);
    const second = await stream.next();
    expect([second.accepted, second.rejected.map((r) => [r.index, r.reason])]).toEqual([1, [[0, "LIMIT_EXCEEDED"]]]);
    stream.end();
    const quota = await s.usage.getQuota({ licenseId: s.licenseId });
    expect(agentState(quota.limits)).toEqual([
      ["", 1000n, 1000n],
      ["coder", 100n, 100n],
      ["reviewer", 500n, 0n],
    ]);
    expect(quota.limits[1]).toMatchObject({ metric: "tokens", warning: true, exceeded: false });
    const audit = await connectClient(AuditService, a.url, s.secret).listAuditEvents({ typePrefix: "usage." });
    expect(audit.events.map((e) => [e.type, e.payload?.agent_id ?? ""])).toEqual([
      ["usage.limit_warning", ""],
      ["usage.limit_warning", "coder"],
    ]);
    // Summaries per agent read the same rollups.
    const summary = await s.usage.getUsageSummary({
      licenseId: s.licenseId,
      metric: "tokens",
      startTime: timestampFromDate(new Date("2026-11-23T00:00:00Z")),
      endTime: timestampFromDate(new Date("2026-11-24T00:00:00Z")),
      bucket: Bucket.DAY,
      groupByAgent: true,
    });
    expect(summary.buckets.map((b) => [b.agentId, b.value])).toEqual([
      ["", 100n],
      ["coder", 100n],
      ["reviewer", 500n],
      ["scripts", 300n],
    ]);
  });

  it("holds an agent to the limit its policy sets when the license overrides another attribute, and refuses a disabled agent's tokens", async () => {
    const s = await setup("AGO", {
      agents: { coder: 100, reviewer: 200 },
      meters: [{ metric: "tokens", aggregation: Aggregation.SUM, agentTokens: true }],
    });
    await s.api.updateLicense({
      id: s.licenseId,
      agentOverrides: [
        { agent: "coder", modelTier: ModelTier.PREMIUM },
        { agent: "reviewer", enabled: false },
      ],
      updateMask: { paths: ["agent_overrides"] },
    });
    const usage = connectClient(UsageService, a.url);
    expect((await usage.recordUsage({ event: ev(s.key, 60, { agentId: "coder" }) })).agentLimit).toMatchObject({
      agentId: "coder",
      used: 60n,
      limit: 100n,
    });
    expect(await failure(usage.recordUsage({ event: ev(s.key, 50, { agentId: "coder" }) }))).toMatchObject({
      code: "FailedPrecondition",
      reason: "LIMIT_EXCEEDED",
    });
    const disabled = await failure(usage.recordUsage({ event: ev(s.key, 1, { agentId: "reviewer" }) }));
    expect(disabled).toMatchObject({
      code: "FailedPrecondition",
      reason: "AGENT_DISABLED",
      metadata: { field: "event.agent_id" },
    });
    expect(disabled.message).toContain('"reviewer"');
    // In a batch too, and without touching the other events; the metric's total counts only what was accepted.
    const ack = await grpcClient(UsageService, a.url).ingestUsage(
      (async function* () {
        for (const e of [ev(s.key, 5, { agentId: "reviewer" }), ev(s.key, 7, { agentId: "coder" }), ev(s.key, 9)])
          yield { event: e };
      })(),
    );
    expect([ack.accepted, ack.rejected.map((r) => [r.index, r.reason])]).toEqual([2n, [[0, "AGENT_DISABLED"]]]);
    const quota = await s.usage.getQuota({ licenseId: s.licenseId });
    expect(agentState(quota.limits)).toEqual([
      ["", 76n, 0n],
      ["coder", 67n, 100n],
    ]);
    // Enabled again by the license: its policy's limit applies.
    await s.api.updateLicense({
      id: s.licenseId,
      agentOverrides: [{ agent: "reviewer", enabled: true }],
      updateMask: { paths: ["agent_overrides"] },
    });
    expect((await usage.recordUsage({ event: ev(s.key, 3, { agentId: "reviewer" }) })).agentLimit).toMatchObject({
      agentId: "reviewer",
      used: 3n,
      limit: 200n,
    });
  });

  it("never lets an agent pass its token limit, with two instances streaming concurrently", async () => {
    const s = await setup("AGC", {
      agents: { coder: 50 },
      meters: [{ metric: "tokens", aggregation: Aggregation.SUM, agentTokens: true }],
    });
    const run = async (t: TestApp, name: string) => {
      const stream = openStream(t);
      let accepted = 0;
      for (let i = 0; i < 6; i++)
        stream.send(
          `${name}-${i}`,
          Array.from({ length: 10 }, () => ev(s.key, 1, { agentId: "coder" })),
        );
      for (let i = 0; i < 6; i++) accepted += (await stream.next()).accepted;
      stream.end();
      return accepted;
    };
    const [fromA, fromB] = await Promise.all([run(a, "a"), run(b, "b")]);
    expect(fromA + fromB).toBe(50);
    expect(agentState((await s.usage.getQuota({ licenseId: s.licenseId })).limits)).toEqual([
      ["", 50n, 0n],
      ["coder", 50n, 50n],
    ]);
  });

  it("turned on within a period, counts what each agent used so far; only SUM meters count agent tokens", async () => {
    const s = await setup("AGU", { agents: { coder: 100 } });
    const usage = connectClient(UsageService, a.url);
    await usage.recordUsage({ event: ev(s.key, 70, { agentId: "coder" }) });
    const meter = (await s.usage.listMeters({ productId: s.productId })).meters[0]!;
    expect(agentState((await s.usage.getQuota({ licenseId: s.licenseId })).limits)).toEqual([["", 70n, 0n]]);
    expect(
      (await s.usage.updateMeter({ id: meter.id, agentTokens: true, updateMask: { paths: ["agent_tokens"] } })).meter,
    ).toMatchObject({ agentTokens: true });
    expect(agentState((await s.usage.getQuota({ licenseId: s.licenseId })).limits)).toEqual([
      ["", 70n, 0n],
      ["coder", 70n, 100n],
    ]);
    expect(await failure(usage.recordUsage({ event: ev(s.key, 40, { agentId: "coder" }) }))).toMatchObject({
      code: "FailedPrecondition",
      reason: "LIMIT_EXCEEDED",
    });
    expect(await usage.recordUsage({ event: ev(s.key, 30, { agentId: "coder" }) })).toMatchObject({
      limit: { agentId: "", used: 100n },
      agentLimit: { agentId: "coder", used: 100n, limit: 100n, warning: true },
    });
    expect((await usage.recordUsage({ event: ev(s.key, 0, { agentId: "scripts" }) })).agentLimit).toBeUndefined(); // not named by the license
    expect(agentState((await s.usage.getQuota({ licenseId: s.licenseId })).limits)).toEqual([
      ["", 100n, 0n],
      ["coder", 100n, 100n],
    ]);
    // Off and on again: the agent's total is rebuilt, not left stale.
    await s.usage.updateMeter({ id: meter.id, agentTokens: false, updateMask: { paths: ["agent_tokens"] } });
    await usage.recordUsage({ event: ev(s.key, 5, { agentId: "coder" }) });
    await s.usage.updateMeter({ id: meter.id, agentTokens: true, updateMask: { paths: ["agent_tokens"] } });
    expect(await failure(usage.recordUsage({ event: ev(s.key, 1, { agentId: "coder" }) }))).toMatchObject({
      reason: "LIMIT_EXCEEDED",
    });
    expect(agentState((await s.usage.getQuota({ licenseId: s.licenseId })).limits)).toEqual([
      ["", 105n, 0n],
      ["coder", 105n, 100n],
    ]);
    // Bad input names the field and changes nothing.
    expect(
      await failure(
        s.usage.createMeter({
          productId: s.productId,
          metric: "calls",
          aggregation: Aggregation.COUNT,
          agentTokens: true,
        }),
      ),
    ).toMatchObject({ code: "InvalidArgument", metadata: { field: "agent_tokens" } });
    const calls = (
      await s.usage.createMeter({ productId: s.productId, metric: "calls", aggregation: Aggregation.COUNT })
    ).meter!;
    expect(
      await failure(s.usage.updateMeter({ id: calls.id, agentTokens: true, updateMask: { paths: ["agent_tokens"] } })),
    ).toMatchObject({ code: "InvalidArgument", metadata: { field: "agent_tokens" } });
    expect((await s.usage.getMeter({ id: calls.id })).meter).toMatchObject({ agentTokens: false });
  });
});

describe("a long stream's memory", () => {
  it("holds no batch it acknowledged: what a stream keeps is bounded by its unacknowledged batches, not its length", async () => {
    const s = await setup("MEM");
    v8.setFlagsFromString("--expose-gc");
    const gc = runInNewContext("gc") as () => void;
    // Batches as StreamUsage hands them to writeInOrder (decoded messages), each watched for collection.
    const sent: WeakRef<object>[] = [];
    const batches = (async function* () {
      for (let id = 0; id < 80; id++) {
        const batch = { id, events: Array.from({ length: 20 }, () => create(UsageEventSchema, ev(s.key, 1))) };
        sent.push(new WeakRef(batch));
        yield batch;
      }
    })();
    let acked = 0;
    let keptOfFirst40 = -1;
    for await (const { id, result } of writeInOrder(a.app.ingest, { kind: "anonymous" }, batches)) {
      expect([id, result.accepted]).toEqual([acked, 20]);
      if (++acked === 60) {
        // The stream is still open (20 batches to go); the first 40 were acknowledged long ago.
        await new Promise((resolve) => setImmediate(resolve));
        gc();
        keptOfFirst40 = sent.slice(0, 40).filter((r) => r.deref() !== undefined).length;
      }
    }
    expect(acked).toBe(80);
    expect(keptOfFirst40).toBe(0);
  });
});

describe("aggregations, periods and summaries", () => {
  it("aggregates SUM, COUNT, MAX, MIN, UNIQUE_COUNT and LATEST, in quotas and summaries", async () => {
    const s = await setup("AGG", {
      meters: [
        { metric: "tokens", aggregation: Aggregation.SUM },
        { metric: "calls", aggregation: Aggregation.COUNT },
        { metric: "peak", aggregation: Aggregation.MAX },
        { metric: "low", aggregation: Aggregation.MIN },
        { metric: "users", aggregation: Aggregation.UNIQUE_COUNT, uniqueAttribute: "user" },
        { metric: "seats", aggregation: Aggregation.LATEST },
      ],
    });
    const t0 = clock.now().getTime() - 2 * 3600_000;
    const at = (h: number, m = 0) => timestampFromDate(new Date(t0 + h * 3600_000 + m * 60_000));
    const events: UsageEvent[] = [];
    for (const [h, q, user, agent] of [
      [0, 5, "ann", "coder"],
      [0, 3, "bob", "reviewer"],
      [1, 9, "ann", "coder"],
      [1, 1, "cid", "coder"],
    ] as const) {
      for (const metric of ["tokens", "calls", "peak", "low", "seats"])
        events.push(ev(s.key, q, { metric, time: at(h, 10), agentId: agent }));
      events.push(ev(s.key, 1, { metric: "users", time: at(h, 10), attributes: { user }, agentId: agent }));
    }
    events.push(ev(s.key, 4, { metric: "seats", time: at(1, 30) })); // the latest seat count
    const stream = openStream(a);
    stream.send("all", events);
    expect((await stream.next()).accepted).toBe(events.length);
    stream.end();
    const quota = Object.fromEntries(
      (await s.usage.getQuota({ licenseId: s.licenseId })).limits.map((l) => [l.metric, l.used]),
    );
    expect(quota).toEqual({ calls: 4n, low: 1n, peak: 9n, seats: 4n, tokens: 18n, users: 3n });

    const summary = (metric: string, bucket: Bucket, groupByAgent = false) =>
      s.usage.getUsageSummary({
        licenseId: s.licenseId,
        metric,
        startTime: at(0),
        endTime: at(3),
        bucket,
        groupByAgent,
      });
    const hourly = await summary("tokens", Bucket.HOUR);
    expect([hourly.total, hourly.buckets.map((x) => [x.value, x.events])]).toEqual([
      18n,
      [
        [8n, 2n],
        [10n, 2n],
      ],
    ]);
    expect((await summary("users", Bucket.HOUR)).buckets.map((x) => x.value)).toEqual([2n, 2n]);
    expect((await summary("users", Bucket.DAY)).total).toBe(3n);
    expect((await summary("peak", Bucket.DAY)).total).toBe(9n);
    expect((await summary("low", Bucket.DAY)).total).toBe(1n);
    expect((await summary("seats", Bucket.DAY)).total).toBe(4n);
    const byAgent = await summary("tokens", Bucket.DAY, true);
    expect(byAgent.buckets.map((x) => [x.agentId, x.value])).toEqual([
      ["coder", 15n],
      ["reviewer", 3n],
    ]);
    // By hour and agent: each bucket is one rollup row (SUM, UNIQUE_COUNT and LATEST).
    const rows = async (metric: string) =>
      (await summary(metric, Bucket.HOUR, true)).buckets.map((x) => [
        Number(x.startTime!.seconds) * 1000 - t0,
        x.agentId,
        x.value,
        x.events,
      ]);
    expect(await rows("tokens")).toEqual([
      [0, "coder", 5n, 1n],
      [0, "reviewer", 3n, 1n],
      [3_600_000, "coder", 10n, 2n],
    ]);
    expect(await rows("users")).toEqual([
      [0, "coder", 1n, 1n],
      [0, "reviewer", 1n, 1n],
      [3_600_000, "coder", 2n, 2n],
    ]);
    expect(await rows("seats")).toEqual([
      [0, "coder", 5n, 1n],
      [0, "reviewer", 3n, 1n],
      [3_600_000, "", 4n, 1n],
      [3_600_000, "coder", 1n, 2n],
    ]);
    const perCustomer = await s.usage.getUsageSummary({
      customerId: s.customerId,
      metric: "calls",
      startTime: at(0),
      endTime: at(3),
    });
    expect(perCustomer.total).toBe(4n);
    expect(await failure(s.usage.getUsageSummary({ metric: "calls", startTime: at(0), endTime: at(3) }))).toMatchObject(
      { code: "InvalidArgument" },
    );
    expect(
      await failure(
        s.usage.getUsageSummary({ licenseId: s.licenseId, metric: "calls", startTime: at(3), endTime: at(0) }),
      ),
    ).toMatchObject({ code: "InvalidArgument", metadata: { field: "end_time" } });
    for (const q of [
      { licenseId: s.licenseId, metric: "nope" },
      { licenseId: `lic_${"0".repeat(26)}`, metric: "calls" },
      { customerId: `cus_${"0".repeat(26)}`, metric: "calls" },
    ]) {
      expect(await failure(s.usage.getUsageSummary({ ...q, startTime: at(0), endTime: at(3) }))).toMatchObject({
        code: "NotFound",
      });
    }
    // Agents in byte order (PostgreSQL's "C"), which is not UTF-16's: U+FFFD before U+1F600.
    const agents = ["\u{1F600}", "\uFFFD", "é", "a", "Z"];
    const named = openStream(a);
    named.send(
      "agents",
      agents.map((agentId, i) => ev(s.key, i + 1, { metric: "calls", time: at(2, 5), agentId })),
    );
    expect((await named.next()).accepted).toBe(agents.length);
    named.end();
    const inOrder = ["Z", "a", "é", "\uFFFD", "\u{1F600}"];
    for (const bucket of [Bucket.HOUR, Bucket.DAY]) {
      const got = (await summary("calls", bucket, true)).buckets
        .filter((x) => agents.includes(x.agentId))
        .map((x) => x.agentId);
      expect(got).toEqual(inOrder);
    }

    const page1 = await s.usage.listUsageEvents({ licenseId: s.licenseId, metric: "tokens", pageSize: 3 });
    const page2 = await s.usage.listUsageEvents({
      licenseId: s.licenseId,
      metric: "tokens",
      pageSize: 3,
      pageToken: page1.nextPageToken,
    });
    const listed = [...page1.events, ...page2.events];
    expect(listed.map((e) => e.quantity).sort((x, y) => Number(x - y))).toEqual([1n, 3n, 5n, 9n]);
    expect(new Set(listed.map((e) => e.idempotencyKey)).size).toBe(4);
    expect(listed[0]!.time!.seconds).toBeGreaterThanOrEqual(listed[3]!.time!.seconds); // newest first
    expect(page2.nextPageToken).toBe("");
    const other = await setup("AGH");
    expect(await failure(other.usage.listUsageEvents({ licenseId: s.licenseId }))).toMatchObject({ code: "NotFound" });
    expect(
      await failure(
        other.usage.getUsageSummary({ licenseId: s.licenseId, metric: "calls", startTime: at(0), endTime: at(3) }),
      ),
    ).toMatchObject({ code: "NotFound" });
    expect(
      await failure(
        other.usage.getUsageSummary({ customerId: s.customerId, metric: "calls", startTime: at(0), endTime: at(3) }),
      ),
    ).toMatchObject({ code: "NotFound" });
  });

  it("lays a summary out as series: each bucket start once, a column per agent with zeros where it had none, the rows' numbers", async () => {
    const s = await setup("SER", {
      meters: [
        { metric: "tokens", aggregation: Aggregation.SUM },
        { metric: "users", aggregation: Aggregation.UNIQUE_COUNT, uniqueAttribute: "user" },
        { metric: "seats", aggregation: Aggregation.LATEST },
      ],
    });
    const t0 = clock.now().getTime() - 3 * 3600_000;
    const at = (h: number, m = 0) => timestampFromDate(new Date(t0 + h * 3600_000 + m * 60_000));
    const events: UsageEvent[] = [];
    // hour 0: coder and reviewer; hour 1: nobody; hour 2: reviewer only
    for (const [h, q, user, agent] of [
      [0, 5, "ann", "coder"],
      [0, 3, "bob", "reviewer"],
      [0, 2, "cid", "coder"],
      [2, 7, "ann", "reviewer"],
    ] as const) {
      for (const metric of ["tokens", "seats"]) events.push(ev(s.key, q, { metric, time: at(h, 10), agentId: agent }));
      events.push(ev(s.key, 1, { metric: "users", time: at(h, 10), attributes: { user }, agentId: agent }));
    }
    const stream = openStream(a);
    stream.send("all", events);
    expect((await stream.next()).accepted).toBe(events.length);
    stream.end();
    const ask = (metric: string, bucket: Bucket, groupByAgent: boolean, layout: SummaryLayout) =>
      s.usage.getUsageSummary({
        licenseId: s.licenseId,
        metric,
        startTime: at(0),
        endTime: at(3),
        bucket,
        groupByAgent,
        layout,
      });
    const hour = (t: { seconds: bigint } | undefined) => (Number(t!.seconds) * 1000 - t0) / 3_600_000;

    const tokens = await ask("tokens", Bucket.HOUR, true, SummaryLayout.SERIES);
    expect(tokens.buckets).toEqual([]);
    expect(tokens.total).toBe(17n);
    expect(tokens.bucketStarts.map(hour)).toEqual([0, 2]);
    expect(tokens.series.map((x) => [x.agentId, x.values, x.events])).toEqual([
      ["coder", [7n, 0n], [2n, 0n]],
      ["reviewer", [3n, 7n], [1n, 1n]],
    ]);
    // Every aggregation's and bucket size's series hold what its rows hold (UNIQUE_COUNT and
    // LATEST take their own paths through the rollups).
    for (const metric of ["tokens", "users", "seats"]) {
      for (const bucket of [Bucket.HOUR, Bucket.DAY]) {
        for (const groupByAgent of [true, false]) {
          const rows = await ask(metric, bucket, groupByAgent, SummaryLayout.ROWS);
          const series = await ask(metric, bucket, groupByAgent, SummaryLayout.SERIES);
          expect(series.total).toBe(rows.total);
          expect(series.aggregation).toBe(rows.aggregation);
          const fromSeries = series.bucketStarts.flatMap((t, i) =>
            series.series.filter((x) => x.events[i]! > 0n).map((x) => [t.seconds, x.agentId, x.values[i], x.events[i]]),
          );
          expect(fromSeries).toEqual(rows.buckets.map((b) => [b.startTime!.seconds, b.agentId, b.value, b.events]));
          if (!groupByAgent) expect(series.series.map((x) => x.agentId)).toEqual([""]);
        }
      }
    }
    // Unspecified is rows; nothing in range is an empty answer in either layout.
    expect((await ask("tokens", Bucket.HOUR, true, SummaryLayout.UNSPECIFIED)).buckets).toHaveLength(3);
    const empty = await s.usage.getUsageSummary({
      licenseId: s.licenseId,
      metric: "tokens",
      startTime: at(-48),
      endTime: at(-24),
      layout: SummaryLayout.SERIES,
    });
    expect([empty.bucketStarts, empty.series, empty.total]).toEqual([[], [], 0n]);
    expect(await failure(ask("tokens", Bucket.HOUR, true, 7 as SummaryLayout))).toMatchObject({
      code: "InvalidArgument",
      metadata: { field: "layout" },
    });
  });

  it("resets monthly limits at the month boundary (UTC)", async () => {
    const s = await setup("PER", { limit: 10 });
    const usage = connectClient(UsageService, a.url);
    clock.set(new Date("2026-12-31T23:50:00Z"));
    await usage.recordUsage({ event: ev(s.key, 10) });
    expect(await failure(usage.recordUsage({ event: ev(s.key, 1) }))).toMatchObject({ reason: "LIMIT_EXCEEDED" });
    clock.set(new Date("2027-01-01T00:10:00Z"));
    const jan = await usage.recordUsage({ event: ev(s.key, 10) });
    expect(jan.limit).toMatchObject({ used: 10n, periodStart: timestampFromDate(new Date("2027-01-01T00:00:00Z")) });
    // A late event stamped in December still counts against December's (full) total.
    expect(
      await failure(
        usage.recordUsage({ event: ev(s.key, 1, { time: timestampFromDate(new Date("2026-12-31T23:59:00Z")) }) }),
      ),
    ).toMatchObject({ reason: "LIMIT_EXCEEDED" });
    clock.set(new Date("2026-11-23T12:00:00Z"));
  });
});

describe("anomalies", () => {
  it("flags a day far from the license's 30-day baseline, once, for usage and for activation velocity; lists and resolves", async () => {
    const s = await setup("ANO");
    const usage = connectClient(UsageService, a.url);
    const activate = connectClient(ActivationService, a.url);
    const day0 = Date.UTC(2026, 10, 1, 12);
    const daily = [100, 110, 90, 105, 95, 100, 98, 102, 101, 99];
    for (const [i, q] of daily.entries()) {
      clock.set(new Date(day0 + i * 86_400_000));
      await usage.recordUsage({ event: ev(s.key, q) });
      await activate.activate({ key: s.key, fingerprint: `day-${i}` }); // one new machine a day
    }
    clock.set(new Date(day0 + 10 * 86_400_000));
    await usage.recordUsage({ event: ev(s.key, 1000) });
    for (let m = 0; m < 6; m++) await activate.activate({ key: s.key, fingerprint: `burst-${m}` });
    const day10 = timestampFromDate(new Date(Date.UTC(2026, 10, 11)));

    const found = await s.usage.detectAnomalies({ day: day10 });
    expect(found.anomalies.map((x) => [x.metric, Severity[x.severity], x.value])).toEqual(
      expect.arrayContaining([
        ["tokens", "CRITICAL", 1000n],
        ["activation_velocity", "CRITICAL", 6n], // 1 a day, then 6: a flat baseline → the 999 sentinel
      ]),
    );
    const tokens = found.anomalies.find((x) => x.metric === "tokens")!;
    expect(tokens.mean).toBe(100);
    expect(tokens.zScore).toBeGreaterThan(3);
    expect(found.anomalies.find((x) => x.metric === "activation_velocity")!.zScore).toBe(999);
    // A normal day is not flagged; running again (on another instance) records nothing twice.
    expect(
      (await s.usage.detectAnomalies({ day: timestampFromDate(new Date(Date.UTC(2026, 10, 8))) })).anomalies,
    ).toEqual([]);
    expect((await connectClient(UsageService, b.url, s.secret).detectAnomalies({ day: day10 })).anomalies).toHaveLength(
      2,
    );
    const audit = await connectClient(AuditService, a.url, s.secret).listAuditEvents({ typePrefix: "anomaly." });
    expect(audit.events.map((e) => e.type)).toEqual(["anomaly.detected", "anomaly.detected"]);

    const resolved = await s.usage.resolveAnomaly({ id: tokens.id, note: "customer ran a migration" });
    expect(resolved.anomaly).toMatchObject({
      resolved: true,
      resolutionNote: "customer ran a migration",
      resolver: expect.stringMatching(/^key:/),
    });
    expect(
      (await s.usage.listAnomalies({ resolution: ResolutionFilter.UNRESOLVED })).anomalies.map((x) => x.metric),
    ).toEqual(["activation_velocity"]);
    expect(
      (await s.usage.listAnomalies({ minSeverity: Severity.CRITICAL, licenseId: s.licenseId })).anomalies,
    ).toHaveLength(2);
    const other = await setup("ANP");
    expect((await other.usage.listAnomalies({})).anomalies).toEqual([]);
    expect(await failure(other.usage.resolveAnomaly({ id: tokens.id, note: "x" }))).toMatchObject({
      code: "NotFound",
      reason: "ANOMALY_NOT_FOUND",
    });
    clock.set(new Date("2026-11-23T12:00:00Z"));
  });

  it("scores the day that just closed in the background, once", async () => {
    const s = await setup("ANW");
    const usage = connectClient(UsageService, a.url);
    const day0 = Date.UTC(2026, 9, 1, 12);
    for (const [i, q] of [50, 52, 48, 51, 49, 500].entries()) {
      clock.set(new Date(day0 + i * 86_400_000));
      await usage.recordUsage({ event: ev(s.key, q) });
    }
    clock.set(new Date(day0 + 6 * 86_400_000)); // the next day: the 500 day has closed
    await Promise.all([a.app.usageWorker.tick(), b.app.usageWorker.tick()]);
    const { anomalies } = await s.usage.listAnomalies({ licenseId: s.licenseId });
    expect(anomalies.map((x) => [x.metric, x.value, Severity[x.severity]])).toEqual([["tokens", 500n, "CRITICAL"]]);
    clock.set(new Date("2026-11-23T12:00:00Z"));
  });
});

/*
 * Three real `licensd serve` processes on one PostgreSQL database, as behind a balancer — on the test server's
 * database, and again on a pg_auto_failover formation (primary + synchronous standby, its multi-host URL) where this
 * machine can build one:
 *
 * - a suspension made on one instance is refused by ValidateLicense on all three within a second;
 * - an audit tail on one instance sees every event made on all three, once each, in seq order;
 * - machine limits and usage hard limits hold under concurrent calls spread over the three;
 * - webhooks for events made on all three are delivered once each.
 *
 * LICENSD_CLUSTER_LONG=1 runs the same checks with more load.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ActivationService } from "../../gen/ts/licensd/activation/v1/activation_service_pb.js";
import { AuditService, type TailAuditEventsResponse } from "../../gen/ts/licensd/audit/v1/audit_service_pb.js";
import { LicensingService, ValidationCode } from "../../gen/ts/licensd/licensing/v1/licensing_service_pb.js";
import { OverageStrategy } from "../../gen/ts/licensd/licensing/v1/policy_pb.js";
import { ComposeStrategy, FeatureKind } from "../../gen/ts/licensd/licensing/v1/product_pb.js";
import { ApiKeyScope } from "../../gen/ts/licensd/tenant/v1/api_key_pb.js";
import { TenantService } from "../../gen/ts/licensd/tenant/v1/tenant_service_pb.js";
import { Aggregation, type UsageEvent } from "../../gen/ts/licensd/usage/v1/usage_pb.js";
import { UsageService } from "../../gen/ts/licensd/usage/v1/usage_service_pb.js";
import { WebhookDeliveryStatus } from "../../gen/ts/licensd/webhook/v1/webhook_pb.js";
import { WebhookService } from "../../gen/ts/licensd/webhook/v1/webhook_service_pb.js";
import { connectClient, grpcClient } from "../support/app.js";
import { type Cluster, startCluster } from "../support/cluster.js";
import { query } from "../support/database.js";
import { createFormation, FORMATION_AVAILABLE, type Formation } from "../support/formation.js";
import { until } from "../support/wait.js";
import { type Receiver, startReceiver } from "../support/webhook-sink.js";

const LONG = process.env.LICENSD_CLUSTER_LONG === "1";
let cluster: Cluster;
let urls: string[];
let receiver: Receiver;
/** Where a test reads the database directly: the test database, or the formation's primary node. */
let directUrl: string;

const ENV = {
  LICENSD_WEBHOOK_ALLOW_PRIVATE: "true",
  // The limits under test are the license's, not the per-license and per-address activation rates.
  LICENSD_ACTIVATION_RATE_PER_LICENSE: "0",
  LICENSD_ACTIVATION_RATE_PER_IP: "0",
};

const TARGETS = [
  { name: "one database", formation: false },
  ...(FORMATION_AVAILABLE ? [{ name: "a pg_auto_failover formation", formation: true }] : []),
];

/** A tenant with an admin key, a product with a `tokens` limit feature and a SUM meter, a policy and one license. */
async function vendor(code: string, policy: { maxMachines?: number; tokenLimit?: number } = {}) {
  const tenants = connectClient(TenantService, urls[0]!, cluster.superAdminKey);
  const { tenant } = await tenants.createTenant({ name: `${code} vendor` });
  const { secret } = await tenants.createApiKey({ tenantId: tenant!.id, name: "admin", scopes: [ApiKeyScope.ADMIN] });
  const api = connectClient(LicensingService, urls[0]!, secret);
  const product = (
    await api.createProduct({
      code,
      name: "App",
      features: [{ name: "tokens", kind: FeatureKind.LIMIT, compose: ComposeStrategy.SUM }],
    })
  ).product!;
  await connectClient(UsageService, urls[0]!, secret).createMeter({
    productId: product.id,
    metric: "tokens",
    aggregation: Aggregation.SUM,
  });
  const pol = (
    await api.createPolicy({
      productId: product.id,
      name: "team",
      floating: true,
      maxMachines: policy.maxMachines ?? 0,
      overageStrategy: OverageStrategy.NO_OVERAGE,
      entitlements: policy.tokenLimit
        ? [{ feature: "tokens", value: { case: "limit", value: BigInt(policy.tokenLimit) } }]
        : [],
    })
  ).policy!;
  const customer = (await api.createCustomer({ name: "Jane", email: `jane@${code.toLowerCase()}.example` })).customer!;
  const lic = await api.createLicense({ policyId: pol.id, customerId: customer.id });
  return { tenantId: tenant!.id, secret, key: lic.key, licenseId: lic.license!.id };
}

async function* stream<T>(messages: T[]) {
  yield* messages;
}

const codeOf = (err: unknown) => Code[ConnectError.from(err).code];

describe.each(TARGETS)("three instances on $name", ({ formation: onFormation }) => {
  let formation: Formation | undefined;
  beforeAll(async () => {
    // Each target its own receiver: a delivery is counted against the instances that made it.
    receiver = await startReceiver();
    if (onFormation) {
      formation = await createFormation();
      cluster = await startCluster(3, ENV, { databaseUrl: formation.url });
      const primary = await formation.primary();
      if (!primary) throw new Error("the formation has no primary");
      directUrl = `postgres://postgres@127.0.0.1:${primary.port}/app`;
    } else {
      cluster = await startCluster(3, ENV);
      directUrl = cluster.databaseUrl;
    }
    urls = cluster.instances.map((s) => s.url);
  }, 240_000);
  afterAll(async () => {
    await cluster?.close();
    await formation?.destroy();
    await receiver?.close();
  }, 60_000);

  it("refuse a license suspended on one of them on all three within a second", async () => {
    const v = await vendor("SUS");
    const validators = urls.map((u) => connectClient(LicensingService, u));
    const validate = async (i: number) => ValidationCode[(await validators[i]!.validateLicense({ key: v.key })).code];
    // Each instance has answered VALID (and holds whatever it caches) before the suspension.
    for (let i = 0; i < 3; i++) expect(await validate(i)).toBe("VALID");

    const suspendedAt = performance.now();
    await connectClient(LicensingService, urls[1]!, v.secret).suspendLicense({ id: v.licenseId });
    const committedAt = performance.now();
    const refusedAfterMs = await Promise.all(
      [0, 1, 2].map(async (i) => {
        await until(
          `instance ${i} to answer SUSPENDED`,
          () => validate(i),
          (c) => c === "SUSPENDED",
          5_000,
          5,
        );
        return Math.round(performance.now() - committedAt);
      }),
    );
    console.info(
      `suspension: answered after ${Math.round(committedAt - suspendedAt)} ms; ` +
        `then refused by the three after ${refusedAfterMs.join(", ")} ms`,
    );
    // The promise: refused everywhere within a second of the acknowledged suspension.
    for (const ms of refusedAfterMs) expect(ms).toBeLessThan(1000);
  });

  it("show an audit tail on one instance every event made on all three, once each, in seq order", async () => {
    const v = await vendor("TAL");
    const events = LONG ? 600 : 90;
    const abort = new AbortController();
    const seen: { seq: bigint; id: string }[] = [];
    const tail = grpcClient(AuditService, urls[0]!, v.secret).tailAuditEvents(
      { afterSeq: 0n, typePrefix: "customer." },
      { signal: abort.signal },
    );
    const reading = (async () => {
      try {
        for await (const m of tail as AsyncIterable<TailAuditEventsResponse>)
          if (m.message.case === "event") seen.push({ seq: m.message.value.seq, id: m.message.value.id });
      } catch (err) {
        if (!abort.signal.aborted) throw err;
      }
    })();
    const apis = urls.map((u) => connectClient(LicensingService, u, v.secret));
    await Promise.all(
      [0, 1, 2].map(async (i) => {
        for (let j = i; j < events; j += 3)
          await apis[i]!.createCustomer({ name: `C${j}`, email: `c${j}@tal.example` });
      }),
    );
    await until(
      `${events} events on the tail`,
      () => seen.length,
      (n) => n >= events + 1,
    );
    abort.abort();
    await reading;

    // The vendor's own customer (made before the tail opened) and the ones made on all three instances.
    const listed = await connectClient(AuditService, urls[2]!, v.secret).listAuditEvents({
      typePrefix: "customer.",
      pageSize: 1000,
    });
    expect(listed.events).toHaveLength(events + 1);
    expect(seen.map((e) => e.id)).toEqual([...listed.events].sort((a, b) => Number(a.seq - b.seq)).map((e) => e.id));
    for (let i = 1; i < seen.length; i++) expect(seen[i]!.seq).toBeGreaterThan(seen[i - 1]!.seq);
  });

  it("activate exactly max_machines machines when more are activated concurrently over the three", async () => {
    const max = 5;
    const v = await vendor("MAX", { maxMachines: max });
    const attempts = LONG ? 60 : 18;
    const activations = urls.map((u) => connectClient(ActivationService, u));
    const outcomes = await Promise.all(
      Array.from({ length: attempts }, (_, i) =>
        activations[i % 3]!.activate({ key: v.key, fingerprint: `fp-${i}` }).then(
          () => "OK",
          (err) => `${codeOf(err)}`,
        ),
      ),
    );
    expect(outcomes.filter((o) => o === "OK")).toHaveLength(max);
    expect(outcomes.filter((o) => o !== "OK").every((o) => o === "FailedPrecondition")).toBe(true);
    const machines = await connectClient(ActivationService, urls[2]!, v.secret).listMachines({
      licenseId: v.licenseId,
    });
    expect(machines.machines).toHaveLength(max);
  });

  it("never accept usage past a hard limit, with RecordUsage and IngestUsage spread over the three", async () => {
    const limit = LONG ? 1000 : 100;
    const v = await vendor("HRD", { tokenLimit: limit });
    let n = 0;
    const ev = () => ({ licenseKey: v.key, metric: "tokens", quantity: 1n, idempotencyKey: `e-${++n}` }) as UsageEvent;
    const usage = urls.map((u) => connectClient(UsageService, u));
    const ingest = urls.map((u) => grpcClient(UsageService, u));
    // Half again past the limit: RecordUsage one by one on each instance, and an IngestUsage stream on each.
    const perInstance = Math.ceil((limit * 1.5) / 6);
    const recording = Promise.all(
      [0, 1, 2].map(async (i) => {
        let accepted = 0;
        for (let j = 0; j < perInstance; j++)
          await usage[i]!.recordUsage({ event: ev() }).then(
            () => accepted++,
            (err) => expect(codeOf(err)).toBe("FailedPrecondition"),
          );
        return accepted;
      }),
    );
    const ingesting = Promise.all(
      [0, 1, 2].map(async (i) => {
        const events = Array.from({ length: perInstance }, () => ({ event: ev() }));
        return Number((await ingest[i]!.ingestUsage(stream(events))).accepted);
      }),
    );
    const [recorded, ingested] = await Promise.all([recording, ingesting]);
    const accepted = [...recorded, ...ingested].reduce((x, y) => x + y, 0);
    console.info(
      `hard limit ${limit}: accepted ${recorded.join("+")} (RecordUsage) ${ingested.join("+")} (IngestUsage)`,
    );
    expect(accepted).toBe(limit);
    const stored = await query<{ n: number; total: string }>(
      directUrl,
      "select count(*)::int as n, coalesce(sum(quantity), 0)::text as total from usage_events where license_id = $1",
      [v.licenseId],
    );
    expect(stored[0]).toEqual({ n: limit, total: String(limit) });
  });

  it("deliver the webhooks of events made on all three once each", async () => {
    const tenants = connectClient(TenantService, urls[0]!, cluster.superAdminKey);
    const tenantId = (await tenants.createTenant({ name: "Hooks" })).tenant!.id;
    const created = await connectClient(WebhookService, urls[0]!, cluster.superAdminKey).createWebhookEndpoint({
      tenantId,
      url: receiver.url,
      eventTypes: ["customer.*"],
    });
    receiver.state.secret = created.secret;
    const events = LONG ? 600 : 60;
    const apis = urls.map((u) => connectClient(LicensingService, u, cluster.superAdminKey));
    await Promise.all(
      [0, 1, 2].map(async (i) => {
        for (let j = i; j < events; j += 3)
          await apis[i]!.createCustomer({ tenantId, name: `C${j}`, email: `c${j}@hooks.example` });
      }),
    );
    await until(
      `${events} webhook-ids at the receiver`,
      () => receiver.distinct(),
      (d) => d >= events,
      30_000,
      50,
    );
    const deliveries = await until(
      `${events} deliveries recorded SUCCEEDED`,
      () =>
        connectClient(WebhookService, urls[1]!, cluster.superAdminKey).listWebhookDeliveries({
          tenantId,
          endpointId: created.endpoint!.id,
          pageSize: 1000,
        }),
      (r) => r.deliveries.length === events && r.deliveries.every((d) => d.status === WebhookDeliveryStatus.SUCCEEDED),
      15_000,
      100,
    );
    const received = receiver.receipts.map((r) => r.id);
    expect(
      received.filter((id, i) => received.indexOf(id) !== i),
      "webhook-ids received twice",
    ).toEqual([]);
    expect(new Set(received)).toEqual(new Set(deliveries.deliveries.map((d) => d.eventId)));
    expect(receiver.receipts.filter((r) => !r.verified)).toEqual([]);
  });
});

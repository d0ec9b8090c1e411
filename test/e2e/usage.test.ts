import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, describe, expect, it } from "vitest";
import {
  UsageService,
  type StreamUsageRequest,
  type StreamUsageResponse,
} from "../../gen/ts/licensd/usage/v1/usage_service_pb.js";
import { startServer, type ServerProcess } from "../support/server.js";

const started: (ServerProcess & { dropDatabase(): Promise<void> })[] = [];
afterAll(async () => {
  // Gracefully: on the embedded default a server stops the PostgreSQL it owns (a SIGKILL would leave it running).
  for (const s of started.reverse()) {
    await s.stop();
    await s.dropDatabase();
  }
});

async function call(url: string, procedure: string, body: unknown, bearer: string) {
  const res = await fetch(`${url}/${procedure}`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${bearer}` },
    body: JSON.stringify(body),
  });
  const json = (await res.json()) as Record<string, { id: string }>;
  if (!res.ok) throw new Error(`${procedure}: ${JSON.stringify(json)}`);
  return json;
}

/** Streams `batches` and collects acknowledgements until the stream ends or fails. */
async function stream(url: string, batches: StreamUsageRequest[], onAck: (ack: StreamUsageResponse) => void) {
  const client = createClient(UsageService, createGrpcTransport({ baseUrl: url }));
  try {
    for await (const ack of client.streamUsage(
      (async function* () {
        yield* batches;
      })(),
    ))
      onAck(ack);
    return undefined;
  } catch (err) {
    return err;
  }
}

describe("usage ingestion end to end", () => {
  it("acknowledges only what committed: SIGKILL mid-stream, restart, resend every batch; totals exact", async () => {
    const first = await startServer();
    started.push(first);
    const key = first.superAdminKey;
    const tenantId = (await call(first.url, "licensd.tenant.v1.TenantService/CreateTenant", { name: "Usage E2E" }, key))
      .tenant.id;
    const productId = (
      await call(
        first.url,
        "licensd.licensing.v1.LicensingService/CreateProduct",
        { tenantId, code: "USE", name: "Agents" },
        key,
      )
    ).product.id;
    await call(
      first.url,
      "licensd.usage.v1.UsageService/CreateMeter",
      { tenantId, productId, metric: "tokens", aggregation: "AGGREGATION_SUM" },
      key,
    );
    const policyId = (
      await call(
        first.url,
        "licensd.licensing.v1.LicensingService/CreatePolicy",
        { tenantId, productId, name: "pro" },
        key,
      )
    ).policy.id;
    const customerId = (
      await call(
        first.url,
        "licensd.licensing.v1.LicensingService/CreateCustomer",
        { tenantId, name: "Ann", email: "ann@example.com" },
        key,
      )
    ).customer.id;
    const created = (await call(
      first.url,
      "licensd.licensing.v1.LicensingService/CreateLicense",
      { tenantId, policyId, customerId },
      key,
    )) as unknown as { key: string; license: { id: string } };

    let expected = 0n;
    const batches: StreamUsageRequest[] = Array.from({ length: 60 }, (_, b) => ({
      batchId: `batch-${b}`,
      events: Array.from({ length: 200 }, (_, i) => {
        const quantity = BigInt(1 + ((b * 200 + i) % 17));
        expected += quantity;
        return { licenseKey: created.key, metric: "tokens", quantity, idempotencyKey: `e-${b}-${i}`, agentId: "coder" };
      }),
    })) as StreamUsageRequest[];

    // Kill the server (SIGKILL: no drain) as soon as a few batches are acknowledged.
    const ackedBeforeKill = new Set<string>();
    let killed: Promise<unknown> | undefined;
    const failed = await stream(first.url, batches, (ack) => {
      ackedBeforeKill.add(ack.batchId);
      if (ackedBeforeKill.size >= 5 && !killed) killed = first.stop("SIGKILL");
    });
    await killed;
    expect(failed).toBeDefined(); // the stream broke: the server died under it
    expect(ackedBeforeKill.size).toBeGreaterThanOrEqual(5);
    expect(ackedBeforeKill.size).toBeLessThan(batches.length);

    // Same database and keys (any free port). The client resends everything: acknowledged batches were durable (all
    // duplicates).
    const { LICENSD_PORT: _port, ...sameSetup } = first.env;
    const second = await startServer({ env: sameSetup });
    started.push(second);
    const acks = new Map<string, StreamUsageResponse>();
    expect(await stream(second.url, batches, (ack) => acks.set(ack.batchId, ack))).toBeUndefined();
    expect(acks.size).toBe(batches.length);
    for (const id of ackedBeforeKill) expect(acks.get(id)).toMatchObject({ accepted: 0, duplicates: 200 });
    for (const ack of acks.values()) expect(ack.accepted + ack.duplicates).toBe(200);

    const quota = (await call(
      second.url,
      "licensd.usage.v1.UsageService/GetQuota",
      { tenantId, licenseId: created.license.id, metric: "tokens" },
      key,
    )) as unknown as { limits: { used: string }[] };
    expect(BigInt(quota.limits[0]!.used)).toBe(expected);
    const now = Date.now();
    const summary = (await call(
      second.url,
      "licensd.usage.v1.UsageService/GetUsageSummary",
      {
        tenantId,
        licenseId: created.license.id,
        metric: "tokens",
        startTime: new Date(now - 86_400_000).toISOString(),
        endTime: new Date(now + 3_600_000).toISOString(),
      },
      key,
    )) as unknown as { total: string; buckets: { events: string }[] };
    expect(BigInt(summary.total)).toBe(expected);
    expect(summary.buckets.reduce((n, b) => n + Number(b.events), 0)).toBe(60 * 200);
    // The same as series, in the JSON a browser or curl reads: RFC 3339 starts, int64 as strings.
    const series = (await call(
      second.url,
      "licensd.usage.v1.UsageService/GetUsageSummary",
      {
        tenantId,
        licenseId: created.license.id,
        metric: "tokens",
        startTime: new Date(now - 86_400_000).toISOString(),
        endTime: new Date(now + 3_600_000).toISOString(),
        bucket: "BUCKET_HOUR",
        groupByAgent: true,
        layout: "SUMMARY_LAYOUT_SERIES",
      },
      key,
    )) as unknown as {
      total: string;
      buckets?: unknown;
      bucketStarts: string[];
      series: { agentId: string; values: string[]; events: string[] }[];
    };
    expect(summary.buckets).toBeDefined();
    expect(series.buckets).toBeUndefined();
    expect(series.bucketStarts.length).toBeGreaterThan(0);
    for (const t of series.bucketStarts) expect(t).toMatch(/^\d{4}-\d\d-\d\dT\d\d:00:00Z$/);
    expect(series.series.map((x) => [x.agentId, x.values.length])).toEqual([["coder", series.bucketStarts.length]]);
    expect(series.series[0]!.values.reduce((n, v) => n + BigInt(v), 0n)).toBe(expected);
    expect(series.series[0]!.events.reduce((n, v) => n + Number(v), 0)).toBe(60 * 200);
  });
});

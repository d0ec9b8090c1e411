// The StreamUsage load shared by bench/usage.ts and bench/concurrency.ts: a tenant with a
// metered product whose limit is checked on every event and never reached, 10 licenses,
// StreamUsage rounds over any number of concurrent streams, and the baseline beside them: a
// raw `psql \copy` of the same number of rows into the same usage_events table.
import { execFileSync } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import pg from "pg";
import { UsageService, type StreamUsageRequest } from "../gen/ts/licensd/usage/v1/usage_service_pb.js";
import type { startBenchServer } from "./support.ts";

export const BATCH = 500;

type BenchServer = Awaited<ReturnType<typeof startBenchServer>>;

export interface UsageLoad {
  tenantId: string;
  /** The tenant's meter for `tokens` (for raw inserts). */
  meterId: string;
  licenses: { key: string; license: { id: string } }[];
  /** A client on the server's database. */
  pgc: pg.Client;
  /**
   * `batches` × BATCH events over `streams` concurrent gRPC streams on one HTTP/2 connection (batches dealt
   * round-robin); each stream uploads for its own licenses (dealt round-robin too), as a fleet's agents do, so one
   * stream's batches never wait for another's period locks. Resolves with events/s and each batch's send → ack time.
   */
  streamRound(streams: number, batches: number): Promise<{ rate: number; latencies: number[] }>;
  /** The baseline: the same number of rows, raw, by `psql \copy`; events/s. */
  copyRound(batches: number): number;
  close(): Promise<void>;
}

export async function usageLoad(server: BenchServer): Promise<UsageLoad> {
  const work = mkdtempSync(path.join(os.tmpdir(), "licensd-bench-usage-"));
  const { call } = server;
  const tenantId = (await call("licensd.tenant.v1.TenantService/CreateTenant", { name: "bench" })).tenant.id;
  const productId = (
    await call("licensd.licensing.v1.LicensingService/CreateProduct", {
      tenantId,
      code: "USG",
      name: "Agents",
      features: [{ name: "tokens", kind: "FEATURE_KIND_LIMIT", compose: "COMPOSE_STRATEGY_SUM" }],
    })
  ).product.id;
  await call("licensd.usage.v1.UsageService/CreateMeter", {
    tenantId,
    productId,
    metric: "tokens",
    aggregation: "AGGREGATION_SUM",
  });
  // A limit far above what the run uses: checked on every event, never reached.
  const policyId = (
    await call("licensd.licensing.v1.LicensingService/CreatePolicy", {
      tenantId,
      productId,
      name: "pro",
      entitlements: [{ feature: "tokens", limit: "1000000000000" }],
    })
  ).policy.id;
  const customerId = (
    await call("licensd.licensing.v1.LicensingService/CreateCustomer", {
      tenantId,
      name: "Bench",
      email: "bench@example.com",
    })
  ).customer.id;
  const licenses: { key: string; license: { id: string } }[] = [];
  for (let i = 0; i < 10; i++)
    licenses.push(
      (await call("licensd.licensing.v1.LicensingService/CreateLicense", {
        tenantId,
        policyId,
        customerId,
      })) as unknown as { key: string; license: { id: string } },
    );
  const pgc = new pg.Client({ connectionString: server.database.url });
  await pgc.connect();
  const [{ meter_id: meterId }] = (
    await pgc.query(`select id as meter_id from meters where product_id = $1`, [productId])
  ).rows as { meter_id: string }[];

  const client = createClient(UsageService, createGrpcTransport({ baseUrl: server.url }));
  let round = 0;
  const streamRound = async (streams: number, count: number) => {
    round++;
    const owned = Array.from({ length: streams }, (_, s) => licenses.filter((_, l) => l % streams === s));
    const batches: StreamUsageRequest[] = Array.from({ length: count }, (_, b) => ({
      batchId: `r${round}-b${b}`,
      events: Array.from({ length: BATCH }, (_, i) => ({
        licenseKey: owned[b % streams]![(b + i) % owned[b % streams]!.length]!.key,
        metric: "tokens",
        quantity: BigInt(1 + (i % 50)),
        idempotencyKey: `r${round}-${b}-${i}`,
        agentId: `agent-${i % 4}`,
      })),
    })) as StreamUsageRequest[];
    const sent = new Map<string, number>();
    const latencies: number[] = [];
    const start = performance.now();
    let accepted = 0;
    await Promise.all(
      Array.from({ length: streams }, async (_, s) => {
        const mine = batches.filter((_, b) => b % streams === s);
        for await (const ack of client.streamUsage(
          (async function* () {
            for (const b of mine) {
              sent.set(b.batchId, performance.now());
              yield b;
            }
          })(),
        )) {
          latencies.push(performance.now() - sent.get(ack.batchId)!);
          accepted += ack.accepted;
        }
      }),
    );
    const seconds = (performance.now() - start) / 1000;
    if (accepted !== count * BATCH) throw new Error(`accepted ${accepted} of ${count * BATCH}`);
    return { rate: accepted / seconds, latencies };
  };
  const copyRound = (count: number) => {
    round++;
    const file = path.join(work, `copy-${round}.csv`);
    const now = new Date().toISOString();
    const lines: string[] = [];
    for (let b = 0; b < count; b++) {
      for (let i = 0; i < BATCH; i++)
        lines.push(
          `${tenantId},${licenses[(b + i) % licenses.length]!.license.id},${meterId},${now},${1 + (i % 50)},c${round}-${b}-${i},agent-${i % 4},{},${now}`,
        );
    }
    writeFileSync(file, `${lines.join("\n")}\n`);
    const start = performance.now();
    execFileSync("psql", [
      server.database.url,
      "-q",
      "-c",
      `\\copy usage_events (tenant_id, license_id, meter_id, ts, quantity, idempotency_key, agent_id, attributes, received_at) from '${file}' with (format csv)`,
    ]);
    return (count * BATCH) / ((performance.now() - start) / 1000);
  };
  return { tenantId, meterId, licenses, pgc, streamRound, copyRound, close: () => pgc.end() };
}

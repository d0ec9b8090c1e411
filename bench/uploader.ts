// UsageUploader (@licensd/client/node) against StreamUsage driven directly, on one `licensd serve`:
//  - baseline: StreamUsage with batches of BATCH events, WINDOW batches on the wire, one gRPC stream; the same
//    events as the uploader sends (a UUIDv7 key and a time each), built before the clock starts;
//  - UsageUploader, records not awaited one by one (concurrent `record`s share writes and fsyncs),
//    then flush(): record → fsync'd spool → the same batch size and window → acked, settled;
//  - UsageUploader, each record awaited (one fsync per event), then flush();
// alternating, ROUNDS rounds, each against the baseline run beside it.
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { newEventKey, type UsageBatch, UsageUploader } from "@licensd/client/node";
import { UsageService } from "../gen/ts/licensd/usage/v1/usage_service_pb.js";
import { startBenchServer } from "./support.ts";

const BATCH = 500;
const WINDOW = 8;
const EVENTS = Number(process.env.BENCH_UPLOADER_EVENTS ?? 20_000);
// Awaiting each record costs an fsync per event: fewer events keep that round short.
const AWAITED = Number(process.env.BENCH_UPLOADER_AWAITED ?? 2_000);
const ROUNDS = Number(process.env.BENCH_UPLOADER_ROUNDS ?? 5);

export async function run(): Promise<string> {
  const server = await startBenchServer();
  const work = mkdtempSync(path.join(os.tmpdir(), "licensd-bench-uploader-"));
  try {
    const { call } = server;
    const tenantId = (await call("licensd.tenant.v1.TenantService/CreateTenant", { name: "bench" })).tenant.id;
    const productId = (
      await call("licensd.licensing.v1.LicensingService/CreateProduct", { tenantId, code: "UPL", name: "Agents" })
    ).product.id;
    await call("licensd.usage.v1.UsageService/CreateMeter", {
      tenantId,
      productId,
      metric: "tokens",
      aggregation: "AGGREGATION_SUM",
    });
    const policyId = (
      await call("licensd.licensing.v1.LicensingService/CreatePolicy", { tenantId, productId, name: "pro" })
    ).policy.id;
    const customerId = (
      await call("licensd.licensing.v1.LicensingService/CreateCustomer", {
        tenantId,
        name: "Bench",
        email: "bench@example.com",
      })
    ).customer.id;
    const { key } = (await call("licensd.licensing.v1.LicensingService/CreateLicense", {
      tenantId,
      policyId,
      customerId,
    })) as unknown as { key: string };
    const transport = createGrpcTransport({ baseUrl: server.url });
    const client = createClient(UsageService, transport);
    let round = 0;

    const direct = async () => {
      round++;
      const batches: UsageBatch[] = Array.from({ length: EVENTS / BATCH }, (_, b) => ({
        batchId: `r${round}-b${b}`,
        events: Array.from({ length: BATCH }, (_, i) => ({
          licenseKey: key,
          metric: "tokens",
          quantity: BigInt(1 + (i % 7)),
          idempotencyKey: newEventKey(),
          time: timestampFromMs(Date.now()),
          agentId: "coder",
          attributes: { seq: String(b * BATCH + i) },
        })),
      }));
      const start = performance.now();
      let inFlight = 0;
      let room: (() => void) | undefined;
      let accepted = 0;
      const requests = async function* () {
        for (const b of batches) {
          while (inFlight >= WINDOW) await new Promise<void>((r) => (room = r));
          inFlight++;
          yield b;
        }
      };
      for await (const ack of client.streamUsage(requests())) {
        accepted += ack.accepted;
        inFlight--;
        room?.();
      }
      if (accepted !== EVENTS) throw new Error(`direct: accepted ${accepted} of ${EVENTS}`);
      return EVENTS / ((performance.now() - start) / 1000);
    };

    const uploaded = async (awaitEach: boolean) => {
      round++;
      const n = awaitEach ? AWAITED : EVENTS;
      const dir = path.join(work, `r${round}`);
      const uploader = new UsageUploader({ dir, transport, licenseKey: key, batchSize: BATCH, window: WINDOW });
      await uploader.ready();
      const start = performance.now();
      if (awaitEach) {
        for (let i = 0; i < n; i++)
          await uploader.record("tokens", 1 + (i % 7), { seq: String(i) }, { agentId: "coder" });
      } else {
        await Promise.all(
          Array.from({ length: n }, (_, i) =>
            uploader.record("tokens", 1 + (i % 7), { seq: String(i) }, { agentId: "coder" }),
          ),
        );
      }
      const recorded = performance.now();
      await uploader.flush();
      const acked = performance.now();
      const stats = uploader.stats();
      await uploader.close();
      rmSync(dir, { recursive: true, force: true });
      if (stats.acked !== n || stats.pending !== 0) throw new Error(`uploader: ${JSON.stringify(stats)}`);
      return { recordRate: n / ((recorded - start) / 1000), rate: n / ((acked - start) / 1000) };
    };

    await direct(); // warm-up (JIT, caches, partitions)
    await uploaded(false);
    const rows = { direct: [] as number[], concurrent: [] as number[], awaited: [] as number[] };
    const recordRates = { concurrent: [] as number[], awaited: [] as number[] };
    for (let i = 0; i < ROUNDS; i++) {
      rows.direct.push(await direct());
      const c = await uploaded(false);
      rows.concurrent.push(c.rate);
      recordRates.concurrent.push(c.recordRate);
      const a = await uploaded(true);
      rows.awaited.push(a.rate);
      recordRates.awaited.push(a.recordRate);
    }
    const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
    const against = (rates: number[]) => {
      const ratios = rates.map((x, i) => x / rows.direct[i]!);
      return `${med(ratios).toFixed(2)} | ${Math.min(...ratios).toFixed(2)}–${Math.max(...ratios).toFixed(2)}`;
    };
    const r = (n: number) => Math.round(n).toLocaleString("en");
    return [
      "## UsageUploader (bench/uploader.ts)",
      "",
      `One \`licensd serve\` on the PostgreSQL at 127.0.0.1:5432; one license, a SUM meter, no limit. Baseline: StreamUsage driven directly over one gRPC stream, ${EVENTS.toLocaleString("en")} events in batches of ${BATCH} with up to ${WINDOW} batches awaiting their acks; the events are those the uploader sends (a UUIDv7 idempotency key and a time each), built before the clock starts. UsageUploader (@licensd/client/node, same process as the baseline's client, spool on the machine's disk): the same batch size and window; time from the first \`record\` until \`flush()\` resolved, i.e. every event fsync'd into the spool, sent, committed, acknowledged and settled (segments deleted). Either with the records issued together (concurrent \`record\` calls share writes and fsyncs, up to 256 KiB each), or each \`record\` awaited before the next (one fsync per event; ${AWAITED.toLocaleString("en")} events). Alternating, ${ROUNDS} rounds after a warm-up: events/s are medians, each ratio the median of the rounds' ratios to their own baseline run (their range beside it).`,
      "",
      "| Path | events/s (record → acked) | ÷ direct | rounds' ratios | record alone, events/s |",
      "|---|---:|---:|---:|---:|",
      `| StreamUsage driven directly (baseline) | ${r(med(rows.direct))} | 1.00 | — | — |`,
      `| UsageUploader, records not awaited one by one | ${r(med(rows.concurrent))} | ${against(rows.concurrent)} | ${r(med(recordRates.concurrent))} |`,
      `| UsageUploader, each record awaited (fsync per event) | ${r(med(rows.awaited))} | ${against(rows.awaited)} | ${r(med(recordRates.awaited))} |`,
      "",
      "The awaited row is the disk's fsync latency, one per event: an agent that records from many tasks at once, or does not wait for each `record` before the next, gets the first row's rate; every resolved `record` is on disk either way.",
    ].join("\n");
  } finally {
    await server.stop();
    rmSync(work, { recursive: true, force: true });
  }
}

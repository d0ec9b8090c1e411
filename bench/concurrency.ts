// Throughput against concurrency, charted: ValidateLicense (Connect JSON over HTTP/1.1,
// h2load) at 1 to 64 connections beside Health.Check at each, and StreamUsage at 1 to 8
// concurrent streams beside a raw COPY of the same rows. Every point is a median of rounds
// in which subject and baseline alternate; the ratio is the median of the rounds' ratios.
import { h2load, type Load } from "./licensing.ts";
import { lineChart, writeChart } from "./chart.ts";
import { startBenchServer } from "./support.ts";
import { BATCH, usageLoad } from "./usage-load.ts";

const CONNECTIONS = [1, 2, 4, 8, 16, 32, 64];
const STREAMS = [1, 2, 4, 8];
const ROUNDS = Number(process.env.BENCH_CONCURRENCY_ROUNDS ?? 3);
// Per h2load run: enough requests for about a second at this machine's rates.
const REQUESTS = Number(process.env.BENCH_CONCURRENCY_REQUESTS ?? 5000);
// Per StreamUsage round, whatever the number of streams.
const BATCHES = Number(process.env.BENCH_CONCURRENCY_BATCHES ?? 80);

const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const r = (n: number) => Math.round(n).toLocaleString("en");

/** ROUNDS alternating pairs of (baseline, subject): medians, and the median of the pairs' ratios. */
async function alternate(baseline: () => Promise<number> | number, subject: () => Promise<number> | number) {
  const b: number[] = [];
  const s: number[] = [];
  for (let i = 0; i < ROUNDS; i++) {
    b.push(await baseline());
    s.push(await subject());
  }
  const ratios = s.map((x, i) => x / b[i]!);
  return { baseline: med(b), subject: med(s), ratio: med(ratios), low: Math.min(...ratios), high: Math.max(...ratios) };
}

async function validateSweep() {
  const server = await startBenchServer();
  try {
    const { call } = server;
    const tenantId = (await call("licensd.tenant.v1.TenantService/CreateTenant", { name: "bench" })).tenant.id;
    const productId = (
      await call("licensd.licensing.v1.LicensingService/CreateProduct", {
        tenantId,
        code: "BEN",
        name: "Bench",
        features: [{ name: "reports", kind: "FEATURE_KIND_FLAG", compose: "COMPOSE_STRATEGY_UNION" }],
      })
    ).product.id;
    const policyId = (
      await call("licensd.licensing.v1.LicensingService/CreatePolicy", {
        tenantId,
        productId,
        name: "pro",
        entitlements: [{ feature: "reports", enabled: true }],
      })
    ).policy.id;
    const customerId = (
      await call("licensd.licensing.v1.LicensingService/CreateCustomer", {
        tenantId,
        name: "B",
        email: "b@example.com",
      })
    ).customer.id;
    const { key } = (await call("licensd.licensing.v1.LicensingService/CreateLicense", {
      tenantId,
      policyId,
      customerId,
    })) as unknown as { key: string };
    const body = Buffer.from(JSON.stringify({ key, entitlements: ["reports"] }));
    const health = Buffer.from("{}");
    const failed: Load[] = [];
    const rate = (procedure: string, data: Buffer, connections: number) => {
      const l = h2load(server.url, procedure, data, "connect", [], { requests: REQUESTS, connections });
      if (l.failed > 0) failed.push(l);
      return l.rps;
    };
    // Warm-up: JIT, the license cache, the pool's connections.
    rate("licensd.licensing.v1.LicensingService/ValidateLicense", body, 16);
    const rows = [];
    for (const c of CONNECTIONS) {
      rows.push({
        c,
        ...(await alternate(
          () => rate("grpc.health.v1.Health/Check", health, c),
          () => rate("licensd.licensing.v1.LicensingService/ValidateLicense", body, c),
        )),
      });
      process.stdout.write(`  ValidateLicense at ${c} connections: ${r(rows.at(-1)!.subject)} req/s\n`);
    }
    if (failed.length > 0) throw new Error(`${failed.reduce((n, l) => n + l.failed, 0)} requests failed`);
    return rows;
  } finally {
    await server.stop();
  }
}

async function usageSweep() {
  const server = await startBenchServer();
  try {
    const load = await usageLoad(server);
    await load.streamRound(1, 20); // warm-up (JIT, caches, partitions)
    const rows = [];
    for (const streams of STREAMS) {
      rows.push({
        streams,
        ...(await alternate(
          () => load.copyRound(BATCHES),
          async () => (await load.streamRound(streams, BATCHES)).rate,
        )),
      });
      process.stdout.write(`  StreamUsage over ${streams} streams: ${r(rows.at(-1)!.subject)} events/s\n`);
    }
    await load.close();
    return rows;
  } finally {
    await server.stop();
  }
}

export async function run(): Promise<string> {
  const validate = await validateSweep();
  const usage = await usageSweep();
  const validateChart = await writeChart(
    "validate-concurrency",
    lineChart({
      title: "ValidateLicense vs Health.Check, Connect JSON over HTTP/1.1",
      x: "concurrent connections (h2load -c)",
      y: "requests/s",
      log2x: true,
      points: validate.flatMap((v) => [
        { x: v.c, y: Math.round(v.subject), series: "ValidateLicense" },
        { x: v.c, y: Math.round(v.baseline), series: "Health.Check (baseline)" },
      ]),
    }),
  );
  const usageChart = await writeChart(
    "streamusage-concurrency",
    lineChart({
      title: `StreamUsage vs COPY of the same rows (${BATCHES} batches of ${BATCH} events per round)`,
      x: "concurrent streams",
      y: "events/s",
      log2x: true,
      points: usage.flatMap((u) => [
        { x: u.streams, y: Math.round(u.subject), series: "StreamUsage, acks after commit" },
        { x: u.streams, y: Math.round(u.baseline), series: "psql \\copy (baseline)" },
      ]),
    }),
  );
  const range = (x: { low: number; high: number }) => `${x.low.toFixed(2)}–${x.high.toFixed(2)}`;
  return [
    "## Throughput against concurrency (bench/concurrency.ts)",
    "",
    `One \`licensd serve\` on the PostgreSQL at 127.0.0.1:5432 for each half. At every concurrency, ${ROUNDS} rounds alternate the baseline and the subject; rates are medians, each ratio the median of the rounds' ratios (their range beside it). The load generator shares the two cores with licensd and PostgreSQL, so past two busy processes the curve shows the box, not licensd.`,
    "",
    `ValidateLicense (valid key, one entitlement, signed answer) against Health.Check, Connect JSON over HTTP/1.1, h2load -n${REQUESTS} -c N:`,
    "",
    `![ValidateLicense and Health.Check requests/s against concurrent connections](${validateChart})`,
    "",
    "| connections | Health.Check req/s | ValidateLicense req/s | ratio | rounds' ratios |",
    "|---:|---:|---:|---:|---:|",
    ...validate.map((v) => `| ${v.c} | ${r(v.baseline)} | ${r(v.subject)} | ${v.ratio.toFixed(2)} | ${range(v)} |`),
    "",
    `StreamUsage (gRPC, ${BATCHES} batches of ${BATCH} events per round dealt over N streams on one HTTP/2 connection, each stream for its own licenses; dedupe, limit check, rollup, ack after commit) against \`psql \\copy\` of the same number of raw rows into usage_events:`,
    "",
    `![StreamUsage and COPY events/s against concurrent streams](${usageChart})`,
    "",
    "| streams | COPY events/s | StreamUsage events/s | ÷ COPY | rounds' ratios |",
    "|---:|---:|---:|---:|---:|",
    ...usage.map((u) => `| ${u.streams} | ${r(u.baseline)} | ${r(u.subject)} | ${u.ratio.toFixed(2)} | ${range(u)} |`),
  ].join("\n");
}

// Webhook delivery, `licensd serve` processes on one database sending to a receiver on
// 127.0.0.1 (node:http in this process, answering 204 at once):
//  - deliveries/s with 1 and with 3 dispatching instances: EVENTS events are created on an
//    API-only process, then the dispatching ones start while the receiver holds every
//    request, so all of them are sending when it lets go; the rate is counted over the
//    arrivals after the first quarter (those also pay for the fresh processes' warm-up);
//  - latency from commit (the CreateCustomer answer) to receipt at the receiver, calls made
//    one at a time, spread over the instances.
// Baselines in the same run: the receiver hit directly by a plain node:http client POSTing
// the same bodies with the same headers, a new connection per request as the dispatcher
// makes them, 16 (one dispatcher's window) and 48 (three) at a time; for latency, the
// CreateCustomer round trip itself.
import http from "node:http";
import type { AddressInfo } from "node:net";
import os from "node:os";
import { percentile, startBenchServer } from "./support.ts";

const EVENTS = Number(process.env.BENCH_WEBHOOK_EVENTS ?? 2000);
const LATENCY_CALLS = Number(process.env.BENCH_WEBHOOK_LATENCY_CALLS ?? 200);
/** The dispatcher's attempts in flight per instance (its default). */
const WINDOW = 16;
/** Arrivals after the release left out of the steady-state rate. */
const WARMUP = Math.floor(EVENTS / 4);

interface Delivery {
  headers: Record<string, string>;
  body: string;
}

/** The receiver: records each delivery's arrival; while `held`, answers nothing until `release()`. */
async function startReceiver() {
  const arrived = new Map<string, number>();
  const bodies: Delivery[] = [];
  const bySubject = new Map<string, number>();
  let held: (() => void)[] | undefined;
  let duplicates = 0;
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const at = performance.now();
      const id = String(req.headers["webhook-id"]);
      const body = Buffer.concat(chunks).toString();
      if (arrived.has(id)) duplicates++;
      else {
        arrived.set(id, at);
        bySubject.set((JSON.parse(body) as { data: { subject: string } }).data.subject, at);
        bodies.push({
          body,
          headers: Object.fromEntries(
            ["content-type", "webhook-id", "webhook-timestamp", "webhook-signature"].map((h) => [
              h,
              String(req.headers[h]),
            ]),
          ),
        });
      }
      const answer = () => {
        res.writeHead(204);
        res.end();
      };
      if (held) held.push(answer);
      else answer();
    });
  });
  server.keepAliveTimeout = 0;
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    port,
    url: `http://127.0.0.1:${port}/hooks`,
    arrived,
    bodies,
    bySubject,
    duplicates: () => duplicates,
    heldCount: () => held?.length ?? 0,
    hold() {
      held = [];
    },
    release() {
      const waiting = held ?? [];
      held = undefined;
      for (const answer of waiting) answer();
    },
    reset() {
      arrived.clear();
      bodies.length = 0;
      bySubject.clear();
      duplicates = 0;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
type Receiver = Awaited<ReturnType<typeof startReceiver>>;

async function waitFor(what: string, ok: () => boolean, ms: number) {
  const deadline = performance.now() + ms;
  while (!ok()) {
    if (performance.now() > deadline) throw new Error(`bench: timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** Runs `n` calls of `task(i)`, at most `limit` at a time. */
async function bounded(n: number, limit: number, task: (i: number) => Promise<unknown>) {
  let next = 0;
  await Promise.all(
    Array.from({ length: limit }, async () => {
      while (next < n) await task(next++);
    }),
  );
}

/** The succeeded attempts an instance's /metrics counts. */
async function succeeded(url: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  return Number(text.match(/^licensd_webhook_deliveries_total\{outcome="succeeded"\} (\d+)/m)?.[1] ?? 0);
}

interface Cluster {
  rate: number;
  overall: number;
  perInstance: number[];
  duplicates: number;
  rpc: number[];
  commitToReceipt: number[];
  bodies: Delivery[];
}

/**
 * A fresh database: an API-only process (dispatcher off) where the backlog of EVENTS events is created, then
 * `instances` dispatching processes started while the receiver holds their first windows; the throughput run, then the
 * latency run over the dispatching processes.
 */
async function cluster(receiver: Receiver, instances: number): Promise<Cluster> {
  const env = { LICENSD_WEBHOOK_ALLOW_PRIVATE: "true" };
  const api = await startBenchServer({ ...env, LICENSD_WEBHOOK_DISPATCHER: "false" });
  const servers: Awaited<ReturnType<typeof startBenchServer>>[] = [];
  try {
    const tenantId = (await api.call("licensd.tenant.v1.TenantService/CreateTenant", { name: "bench" })).tenant.id;
    await api.call("licensd.webhook.v1.WebhookService/CreateWebhookEndpoint", {
      tenantId,
      url: receiver.url,
      eventTypes: ["customer.*"],
    });
    const createCustomer = (on: typeof api, i: number) =>
      on.call("licensd.licensing.v1.LicensingService/CreateCustomer", {
        tenantId,
        name: `Customer ${i}`,
        email: `customer-${i}@example.com`,
      });

    // Throughput: the backlog is pending before any dispatcher runs; each dispatcher's first window waits at the
    // receiver until all of them are up (well within the sender's 15 s timeout).
    receiver.reset();
    await bounded(EVENTS, 16, (i) => createCustomer(api, i));
    receiver.hold();
    for (let i = 0; i < instances; i++) servers.push(await startBenchServer(env, api));
    await waitFor(
      `a full window held from each of ${instances} instances`,
      () => receiver.heldCount() >= Math.min(EVENTS, WINDOW * instances),
      10_000,
    );
    const start = performance.now();
    receiver.release();
    await waitFor(`${EVENTS} distinct deliveries`, () => receiver.arrived.size >= EVENTS, 120_000);
    // Steady state: the first WARMUP arrivals after the release also pay for the fresh processes' JIT warm-up.
    const arrivals = [...receiver.arrived.values()].filter((t) => t >= start).sort((a, b) => a - b);
    const overall = EVENTS / ((arrivals.at(-1)! - start) / 1000);
    const rate = (arrivals.length - WARMUP) / ((arrivals.at(-1)! - arrivals[WARMUP - 1]!) / 1000);
    const perInstance = await Promise.all(servers.map((s) => succeeded(s.url)));
    const duplicates = receiver.duplicates();
    const bodies = [...receiver.bodies];

    // Latency: one call at a time over the dispatching processes, a pause between calls so no delivery waits behind
    // another.
    receiver.reset();
    const rpc: number[] = [];
    const commitToReceipt: number[] = [];
    for (let i = 0; i < LATENCY_CALLS; i++) {
      const sent = performance.now();
      const { customer } = await createCustomer(servers[i % servers.length]!, EVENTS + i);
      const answered = performance.now();
      rpc.push(answered - sent);
      await waitFor(`the delivery of customer ${customer.id}`, () => receiver.bySubject.has(customer.id), 30_000);
      commitToReceipt.push(receiver.bySubject.get(customer.id)! - answered);
      await new Promise((r) => setTimeout(r, 10));
    }
    return { rate, overall, perInstance, duplicates, rpc, commitToReceipt, bodies };
  } finally {
    for (const s of servers) await s.stop();
    await api.stop();
  }
}

/** Deliveries/s of a plain node:http client POSTing `bodies` to the receiver, `concurrency` at a time. */
async function direct(receiver: Receiver, bodies: Delivery[], concurrency: number): Promise<number> {
  const post = (d: Delivery) =>
    new Promise<void>((resolve, reject) => {
      const req = http.request(
        { host: "127.0.0.1", port: receiver.port, path: "/hooks", method: "POST", headers: d.headers, agent: false },
        (res) => {
          res.resume();
          res.on("end", resolve);
        },
      );
      req.on("error", reject);
      req.end(d.body);
    });
  receiver.reset();
  const start = performance.now();
  await bounded(bodies.length, concurrency, (i) => post(bodies[i]!));
  return bodies.length / ((performance.now() - start) / 1000);
}

export async function run(): Promise<string> {
  const receiver = await startReceiver();
  try {
    const one = await cluster(receiver, 1);
    const three = await cluster(receiver, 3);
    const direct16 = await direct(receiver, one.bodies, WINDOW);
    const direct48 = await direct(receiver, one.bodies, WINDOW * 3);

    const rateRow = (what: string, rate: number, base: number, note: string) =>
      `| ${what} | ${Math.round(rate)} | ${(rate / base).toFixed(2)} | ${note} |`;
    const ms = (xs: number[], p: number) => percentile(xs, p).toFixed(1);
    const latencyRow = (what: string, xs: number[], base: number[]) =>
      `| ${what} | ${ms(xs, 50)} | ${ms(xs, 99)} | ${(percentile(xs, 50) / percentile(base, 50)).toFixed(2)} |`;
    return [
      "## Webhook delivery (bench/webhooks.ts)",
      "",
      `\`licensd serve\` processes on one database (PostgreSQL at 127.0.0.1:5432), one tenant with one \`customer.*\` endpoint, delivering to a node:http receiver on 127.0.0.1 in the benchmark's process that answers 204 at once. Throughput: ${EVENTS} CreateCustomer events are created on a further process with its dispatcher off; the dispatching processes then start while the receiver holds every request, until each has its window (${WINDOW} attempts) in flight; deliveries/s are counted from the ${WARMUP}th arrival after the release to the last (the first ones also pay for the fresh processes' warm-up; the rate from the release is in the notes). Baseline: the same receiver hit by a plain node:http client POSTing the same ${EVENTS} bodies and headers, a new connection per request as the dispatcher makes them. The dispatcher also records every attempt in a transaction, which the baseline does not. This machine has ${os.cpus().length} cores, shared by PostgreSQL, every licensd process and the receiver: a further instance here adds contention for them, not capacity; the 3-instance row says that the work is shared without duplicates, not how it scales on separate hosts.`,
      "",
      "| deliveries | per s | ratio to baseline | notes |",
      "|---|---:|---:|---|",
      rateRow(`baseline: direct POSTs, ${WINDOW} at a time`, direct16, direct16, "—"),
      rateRow(`baseline: direct POSTs, ${WINDOW * 3} at a time`, direct48, direct16, "—"),
      rateRow(
        "licensd, 1 instance",
        one.rate,
        direct16,
        `${Math.round(one.overall)}/s from the release; duplicates ${one.duplicates}; sent by the instance: ${one.perInstance.join(", ")}`,
      ),
      rateRow(
        "licensd, 3 instances on one database",
        three.rate,
        direct48,
        `${Math.round(three.overall)}/s from the release; duplicates ${three.duplicates}; sent per instance: ${three.perInstance.join(", ")}; ${(three.rate / one.rate).toFixed(2)}× 1 instance`,
      ),
      "",
      `Latency from commit to receipt: ${LATENCY_CALLS} CreateCustomer calls, one at a time (10 ms apart), round-robin over the dispatching instances; from the moment the call's answer is read to the delivery's arrival at the receiver (the path: commit, NOTIFY of the audit feed, fan-out into a delivery, NOTIFY of the webhook channel, claim, POST). Baseline: the CreateCustomer round trip.`,
      "",
      "| what | p50 ms | p99 ms | p50 ratio to baseline |",
      "|---|---:|---:|---:|",
      latencyRow("baseline: CreateCustomer round trip, 1 instance", one.rpc, one.rpc),
      latencyRow("commit to receipt, 1 instance", one.commitToReceipt, one.rpc),
      latencyRow("baseline: CreateCustomer round trip, 3 instances", three.rpc, three.rpc),
      latencyRow("commit to receipt, 3 instances", three.commitToReceipt, three.rpc),
    ].join("\n");
  } finally {
    await receiver.close();
  }
}

// Activation benchmarks, on one `licensd serve`:
//  - Heartbeat and Activate (of an already-activated machine: an agent restarting)
//    against Health.Check: one machine (the row-lock worst case, h2load) and a fleet of
//    1,000 licenses × 5 machines (wrk with a Lua script rotating the request bodies);
//  - ConnectLease: 10,000 open streams (server memory per stream, heartbeat handling
//    rate, revocation push latency);
//  - verifyLease against raw Ed25519 verify, in process.
import { execFileSync } from "node:child_process";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import pg from "pg";
import {
  ActivationService,
  type ConnectLeaseRequest,
  type ConnectLeaseResponse,
} from "../gen/ts/licensd/activation/v1/activation_service_pb.js";
import { generateKeyPairSync, sign, verify } from "node:crypto";
import { mkdtempSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { ED25519_PREFIX, encodeLicenseFile } from "../src/licensing/license-file.js";
import { verifyLease } from "../src/licensing/lease-verify.js";
import { percentile, startBenchServer } from "./support.ts";

const REQUESTS = Number(process.env.BENCH_H2_REQUESTS ?? 10000);
const work = mkdtempSync(path.join(os.tmpdir(), "licensd-bench-act-"));

function rate(url: string, procedure: string, body: string): number {
  const data = path.join(work, `${procedure.replace(/\W/g, "_")}.json`);
  writeFileSync(data, body);
  const out = execFileSync(
    "h2load",
    [
      "--h1",
      "-n",
      String(REQUESTS),
      "-c",
      "16",
      "-t",
      "2",
      "-d",
      data,
      "-H",
      "content-type: application/json",
      `${url}/${procedure}`,
    ],
    { encoding: "utf8" },
  );
  const reqs = /requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed, (\d+) errored/.exec(out)!;
  const status = /status codes: (\d+) 2xx/.exec(out)!;
  if (Number(reqs[2]) + Number(reqs[3]) > 0 || Number(status[1]) !== REQUESTS)
    throw new Error(`${procedure}: failures\n${out}`);
  return Number(/finished in [\d.]+m?s, ([\d.]+) req\/s/.exec(out)![1]);
}

const median3 = (f: () => number) => [f(), f(), f()].sort((a, b) => a - b)[1];

/** wrk for 4 s with 16 connections, POSTing `bodies` in rotation (Lua); returns req/s, refusing any non-2xx. */
function wrkRate(url: string, procedure: string, bodies: string[]): number {
  const script = path.join(work, `${procedure.replace(/\W/g, "_")}.lua`);
  writeFileSync(
    script,
    [
      `local bodies = {${bodies.map((b) => `[==[${b}]==]`).join(",")}}`,
      "local i = 0",
      `wrk.method = "POST"`,
      `wrk.headers["content-type"] = "application/json"`,
      "request = function() i = i % #bodies + 1; return wrk.format(nil, nil, nil, bodies[i]) end",
      'done = function(summary, latency, requests) io.write(string.format("BAD %d\\n", summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout)) end',
    ].join("\n"),
  );
  const out = execFileSync("wrk", ["-t", "2", "-c", "16", "-d", "4s", "-s", script, `${url}/${procedure}`], {
    encoding: "utf8",
  });
  const bad = Number(/BAD (\d+)/.exec(out)![1]);
  if (bad > 0) throw new Error(`${procedure}: ${bad} failed requests\n${out}`);
  return Number(/Requests\/sec:\s+([\d.]+)/.exec(out)![1]);
}

/** One ConnectLease stream: a queue feeds its requests; responses are read as they come. */
function leaseStream(
  client: ReturnType<typeof createClient<typeof ActivationService>>,
  key: string,
  fingerprint: string,
) {
  const queue: ConnectLeaseRequest[] = [{ key, fingerprint } as ConnectLeaseRequest];
  let wake: (() => void) | undefined;
  async function* requests() {
    for (;;) {
      while (queue.length > 0) yield queue.shift()!;
      await new Promise<void>((r) => (wake = r));
    }
  }
  const abort = new AbortController();
  const responses = client.connectLease(requests(), { signal: abort.signal })[Symbol.asyncIterator]();
  return {
    next: (): Promise<IteratorResult<ConnectLeaseResponse>> => responses.next(),
    heartbeat() {
      queue.push({} as ConnectLeaseRequest);
      wake?.();
    },
    close: () => abort.abort(),
  };
}

/** The server's resident memory and V8 heap, from its /metrics. */
async function serverMemory(url: string) {
  const text = await (await fetch(`${url}/metrics`)).text();
  const metric = (name: string) => Number(new RegExp(`^${name} ([\\d.e+]+)$`, "m").exec(text)![1]);
  return { rss: metric("licensd_process_resident_memory_bytes"), heap: metric("licensd_nodejs_heap_size_used_bytes") };
}

export async function run(): Promise<string> {
  // Activation rate limits out of the way: every request comes from 127.0.0.1 (the per-license bucket still runs).
  const server = await startBenchServer({
    LICENSD_ACTIVATION_RATE_PER_IP: "0",
    LICENSD_ACTIVATION_RATE_PER_LICENSE: "1000000/1m",
  });
  const { url, call, database } = server;
  // Before each timed phase the database is settled, as one between bursts would be: otherwise
  // autovacuum (each phase updates the same machine rows tens of thousands of times) and a
  // checkpoint start in the middle of the next phase and take a core from it.
  const settle = async () => {
    const c = new pg.Client({ connectionString: database.url });
    await c.connect();
    await c.query("vacuum (analyze) machines, licenses, rate_buckets");
    await c.query("checkpoint");
    await c.end();
  };
  const tenantId = (await call("licensd.tenant.v1.TenantService/CreateTenant", { name: "bench" })).tenant.id;
  const productId = (
    await call("licensd.licensing.v1.LicensingService/CreateProduct", { tenantId, code: "ACT", name: "Bench" })
  ).product.id;
  const policyId = (
    await call("licensd.licensing.v1.LicensingService/CreatePolicy", {
      tenantId,
      productId,
      name: "pro",
      floating: true,
      maxMachines: 10,
    })
  ).policy.id;
  const customerId = (
    await call("licensd.licensing.v1.LicensingService/CreateCustomer", {
      tenantId,
      name: "Bench",
      email: "bench@example.com",
    })
  ).customer.id;
  const licenseKey = (
    (await call("licensd.licensing.v1.LicensingService/CreateLicense", {
      tenantId,
      policyId,
      customerId,
    })) as unknown as { key: string }
  ).key;
  const machine = JSON.stringify({ key: licenseKey, fingerprint: "bench-host" });
  await call("licensd.activation.v1.ActivationService/Activate", JSON.parse(machine));

  const health = median3(() => rate(url, "grpc.health.v1.Health/Check", "{}"));
  const heartbeat = median3(() => rate(url, "licensd.activation.v1.ActivationService/Heartbeat", machine));
  const activate = median3(() => rate(url, "licensd.activation.v1.ActivationService/Activate", machine));

  // The fleet: 1,000 licenses × 5 machines, activated through the API.
  const fleetPolicy = (
    await call("licensd.licensing.v1.LicensingService/CreatePolicy", {
      tenantId,
      productId,
      name: "fleet",
      floating: true,
      maxMachines: 5,
    })
  ).policy.id;
  const fleetKeys: string[] = [];
  for (let i = 0; i < 1000; i += 50) {
    const batch = await Promise.all(
      Array.from({ length: 50 }, () =>
        call("licensd.licensing.v1.LicensingService/CreateLicense", { tenantId, policyId: fleetPolicy, customerId }),
      ),
    );
    fleetKeys.push(...batch.map((b) => (b as unknown as { key: string }).key));
  }
  const fleet = fleetKeys.flatMap((k, i) =>
    Array.from({ length: 5 }, (_, j) => JSON.stringify({ key: k, fingerprint: `host-${i}-${j}` })),
  );
  for (let i = 0; i < fleet.length; i += 100)
    await Promise.all(
      fleet.slice(i, i + 100).map((b) => call("licensd.activation.v1.ActivationService/Activate", JSON.parse(b))),
    );
  const shuffled = [...fleet].sort(() => Math.random() - 0.5);
  await settle();
  const fleetHealth: number[] = [];
  const fleetBeat: number[] = [];
  const fleetActivate: number[] = [];
  for (let i = 0; i < 3; i++) {
    fleetHealth.push(wrkRate(url, "grpc.health.v1.Health/Check", ["{}"]));
    fleetBeat.push(wrkRate(url, "licensd.activation.v1.ActivationService/Heartbeat", shuffled));
    fleetActivate.push(wrkRate(url, "licensd.activation.v1.ActivationService/Activate", shuffled));
  }
  const m3 = (xs: number[]) => [...xs].sort((a, b) => a - b)[1]!;

  // ConnectLease: 10,000 streams = 100 licenses × 100 machines (machine rows inserted directly: setup, not measured).
  const STREAMS = Number(process.env.BENCH_LEASE_STREAMS ?? 10_000);
  const streamPolicy = (
    await call("licensd.licensing.v1.LicensingService/CreatePolicy", {
      tenantId,
      productId,
      name: "streams",
      floating: true,
    })
  ).policy.id;
  const streamLicenses: { id: string; key: string }[] = [];
  for (let i = 0; i < STREAMS / 100; i++) {
    const created = (await call("licensd.licensing.v1.LicensingService/CreateLicense", {
      tenantId,
      policyId: streamPolicy,
      customerId,
    })) as unknown as { key: string; license: { id: string } };
    streamLicenses.push({ id: created.license.id, key: created.key });
  }
  const pgc = new pg.Client({ connectionString: database.url });
  await pgc.connect();
  for (const l of streamLicenses) {
    await pgc.query(
      `insert into machines (id, tenant_id, license_id, fingerprint, last_heartbeat_at, created_at, updated_at)
       select 'mach_' || lpad(to_hex(n), 8, '0') || substr(md5($1 || n), 1, 18), $2, $1, 'agent-' || n, now(), now(), now() from generate_series(1, 100) n`,
      [l.id, tenantId],
    );
  }
  await pgc.end();
  await settle();
  const before = await serverMemory(url);
  // Agents each hold their own connection in real life; here 40 HTTP/2 connections carry 250 streams each
  // (one connection with 10,000 streams trips Node's per-session memory guard: ENHANCE_YOUR_CALM).
  const CONNECTIONS = 40;
  const clients = Array.from({ length: CONNECTIONS }, () =>
    createClient(ActivationService, createGrpcTransport({ baseUrl: url })),
  );
  const streams: ReturnType<typeof leaseStream>[] = [];
  const openStart = performance.now();
  // 100 opening at a time: more would only queue for the server's 10 database connections.
  for (let i = 0; i < STREAMS; i += 100) {
    const batch = Array.from({ length: Math.min(100, STREAMS - i) }, (_, j) => {
      const n = i + j;
      return leaseStream(clients[n % CONNECTIONS]!, streamLicenses[Math.floor(n / 100)]!.key, `agent-${(n % 100) + 1}`);
    });
    const firsts = await Promise.all(batch.map((s) => s.next()));
    if (firsts.some((r) => r.value?.event.case !== "lease")) throw new Error("a stream did not get its first lease");
    streams.push(...batch);
  }
  const openSeconds = (performance.now() - openStart) / 1000;
  await new Promise((r) => setTimeout(r, 2000));
  const after = await serverMemory(url);
  // Heartbeat handling: one heartbeat on every stream, 200 in flight at a time (agents heartbeat spread
  // over minutes; an unpaced burst of 10,000 would only queue for database connections); time until every renewed lease
  // is back.
  const beatStart = performance.now();
  let cursor = 0;
  const beatWorker = async () => {
    while (cursor < streams.length) {
      const s = streams[cursor++]!;
      s.heartbeat();
      if ((await s.next()).value?.event.case !== "lease") throw new Error("a heartbeat was not answered with a lease");
    }
  };
  await Promise.all(Array.from({ length: 200 }, beatWorker));
  const beatSeconds = (performance.now() - beatStart) / 1000;
  // Push latency: suspend licenses one at a time; each has 100 open streams that must get the revocation.
  const pushMs: number[] = [];
  for (const l of streamLicenses.slice(0, 10)) {
    const idx = streamLicenses.indexOf(l);
    const mine = streams.slice(idx * 100, idx * 100 + 100);
    const t0 = performance.now();
    const got = mine.map((s) =>
      s.next().then((r) => (r.value?.event.case === "revocation" ? performance.now() - t0 : Number.NaN)),
    );
    await call("licensd.licensing.v1.LicensingService/SuspendLicense", { tenantId, id: l.id });
    pushMs.push(...(await Promise.all(got)));
  }
  if (pushMs.some((ms) => Number.isNaN(ms))) throw new Error("a stream missed its revocation");
  for (const s of streams) s.close();

  await server.stop();

  const { publicKey, privateKey } = generateKeyPairSync("ed25519");
  const raw = publicKey.export({ format: "der", type: "spki" }).subarray(12);
  const payload = {
    v: 1,
    typ: "lease",
    license_id: "lic_b",
    tenant_id: "ten_b",
    machine_id: "mach_b",
    fingerprint: "fp",
    product: { code: "ACT", name: "B" },
    status: "active",
    plan: "pro",
    features: ["reports"],
    entitlements: {},
    agents: {},
    max_machines: 10,
    max_users: 0,
    issued_at: new Date().toISOString(),
    expires_at: new Date(Date.now() + 86_400_000).toISOString(),
    kid: "k",
  };
  const token = encodeLicenseFile(ED25519_PREFIX, payload as never, (input) => sign(null, input, privateKey));
  const [, b64, sig] = token.split(".");
  const input = Buffer.from(`${ED25519_PREFIX}.${b64}`);
  const signature = Buffer.from(sig, "base64url");
  const keys = [{ kid: "k", publicKey: raw }];
  if (!verifyLease(token, keys, { fingerprint: "fp" }).valid) throw new Error("lease does not verify");
  const ops = (f: () => unknown) => {
    let n = 0;
    const start = performance.now();
    while (performance.now() - start < 300) for (let i = 0; i < 100; i++, n++) f();
    return n / ((performance.now() - start) / 1000);
  };
  const lease: number[] = [];
  const ed: number[] = [];
  for (let i = 0; i < 7; i++) {
    lease.push(ops(() => verifyLease(token, keys, { fingerprint: "fp" })));
    ed.push(ops(() => verify(null, input, publicKey, signature)));
  }
  const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[3];
  const r = (n: number) => Math.round(n).toLocaleString("en");
  const ratio = (a: number, b: number) => (a / b).toFixed(2);
  const perStream = (bytes: number) => `${(bytes / STREAMS / 1024).toFixed(1)} KiB`;
  return [
    "## Activation (bench/activation.ts)",
    "",
    "One `licensd serve` on the PostgreSQL at 127.0.0.1:5432, Connect JSON over HTTP/1.1. Heartbeat and Activate write the machine row and sign a fresh Ed25519 lease; Activate also takes a token from the license's rate-limit bucket (an upsert). Re-activating a live machine takes no license lock (no seat changes hands): like Heartbeat, it is one prepared statement. The per-IP activation limit is off here: every request comes from 127.0.0.1. Before each timed phase the database is vacuumed and checkpointed, so autovacuum after the previous phase's updates does not run during it.",
    "",
    `One license, one machine (the row-lock worst case; h2load -n${REQUESTS} -c16, medians of 3):`,
    "",
    "| RPC | req/s | ÷ Health.Check |",
    "|---|---:|---:|",
    `| Health.Check (baseline) | ${r(health)} | 1.00 |`,
    `| Heartbeat | ${r(heartbeat)} | ${ratio(heartbeat, health)} |`,
    `| Activate (machine already active) | ${r(activate)} | ${ratio(activate, health)} |`,
    "",
    `A fleet: 1,000 licenses × 5 machines, requests rotating over the 5,000 machines in random order (wrk -c16 -d4s with a Lua body rotation, baseline and subjects alternating, medians of 3):`,
    "",
    "| RPC | req/s | ÷ Health.Check |",
    "|---|---:|---:|",
    `| Health.Check (baseline) | ${r(m3(fleetHealth))} | 1.00 |`,
    `| Heartbeat | ${r(m3(fleetBeat))} | ${ratio(m3(fleetBeat), m3(fleetHealth))} |`,
    `| Activate (machine already active) | ${r(m3(fleetActivate))} | ${ratio(m3(fleetActivate), m3(fleetHealth))} |`,
    "",
    `ConnectLease, ${STREAMS.toLocaleString("en")} streams open at once on one process (gRPC over 40 HTTP/2 connections from the benchmark; 100 licenses × 100 machines):`,
    "",
    "| Measure | Value |",
    "|---|---:|",
    `| opened (each: key check, watch, heartbeat, first lease) | ${r(STREAMS / openSeconds)} streams/s |`,
    `| server memory per open stream (RSS) | ${perStream(after.rss - before.rss)} |`,
    `| server memory per open stream (V8 heap used) | ${perStream(after.heap - before.heap)} |`,
    `| heartbeats handled (one on every stream, 200 in flight, until every renewed lease is back) | ${r(STREAMS / beatSeconds)} /s |`,
    `| revocation push: suspend → all 100 streams of that license notified, p50 / p99 (10 licenses) | ${percentile(pushMs, 50).toFixed(1)} ms / ${percentile(pushMs, 99).toFixed(1)} ms |`,
    "",
    `verifyLease (SDK) ${r(med(lease))} ops/s vs raw Ed25519 verify ${r(med(ed))} ops/s: ${(med(lease) / med(ed)).toFixed(2)} (goal ≥ 0.5: ${med(lease) / med(ed) >= 0.5 ? "met" : "NOT met"}).`,
  ].join("\n");
}

// Server memory, on one `licensd serve` at a time (the process's own resident set and V8 heap, from its
// /metrics; the launcher restarts itself with execve, in place, so there is no second process to count):
//  - idle, once startup's garbage is collected;
//  - during and after a sustained Health.Check load, then a ValidateLicense load (h2load, Connect JSON
//    over HTTP/1.1, as bench/concurrency.ts);
//  - the floor under the idle figure, in the same run: a bare Node process, then one that only imports the
//    libraries `serve` loads, each on the server's own Node and flags;
//  - per idle ConnectLease stream, at 10,000 then 100,000 streams (BENCH_MEMORY_STREAMS) held by
//    several client processes (bench/lease-clients.ts), each with many streams on a few HTTP/2 connections.
import { execFile, fork } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import pg from "pg";
import type { LeaseClientsOrder } from "./lease-clients.ts";
import { startBenchServer } from "./support.ts";

const REQUESTS = Number(process.env.BENCH_MEMORY_REQUESTS ?? 100_000);
/**
 * Stream counts to measure, ascending; each count adds streams to those already open. Opening 100,000 takes the
 * server about 7 minutes on the benchmark machine; BENCH_MEMORY_STREAMS=10000 for a shorter run.
 */
const STREAMS = (process.env.BENCH_MEMORY_STREAMS ?? "10000,100000").split(",").map(Number);
const CLIENT_PROCESSES = Number(process.env.BENCH_MEMORY_CLIENT_PROCESSES ?? 8);
const MB = 2 ** 20;
const work = mkdtempSync(path.join(os.tmpdir(), "licensd-bench-mem-"));

type Server = Awaited<ReturnType<typeof startBenchServer>>;

/** The server's resident set and V8 heap in use, in bytes. */
async function serverMemory(url: string) {
  const text = await (await fetch(`${url}/metrics`)).text();
  const metric = (name: string) => Number(new RegExp(`^${name} ([\\d.e+]+)$`, "m").exec(text)![1]);
  return { rss: metric("licensd_process_resident_memory_bytes"), heap: metric("licensd_nodejs_heap_size_used_bytes") };
}

/** Memory once it stops moving: three readings a second apart within 1 MB of each other (at most 30 s). */
async function settled(url: string) {
  const readings = [await serverMemory(url)];
  for (let i = 0; i < 30; i++) {
    await new Promise((r) => setTimeout(r, 1000));
    readings.push(await serverMemory(url));
    const last = readings.slice(-3).map((m) => m.rss);
    if (last.length === 3 && Math.max(...last) - Math.min(...last) < MB) break;
  }
  return readings.at(-1)!;
}

/** h2load (Connect JSON over HTTP/1.1, 16 connections) against one RPC, sampling the server's RSS every 500 ms. */
async function sustained(url: string, procedure: string, body: unknown) {
  const data = path.join(work, `${procedure.replace(/\W/g, "_")}.json`);
  writeFileSync(data, JSON.stringify(body));
  let peak = 0;
  let loading = true;
  const sampler = (async () => {
    while (loading) {
      peak = Math.max(peak, (await serverMemory(url)).rss);
      await new Promise((r) => setTimeout(r, 500));
    }
  })();
  const args = ["--h1", "-n", String(REQUESTS), "-c", "16", "-t", "2", "-d", data];
  const { stdout } = await promisify(execFile)(
    "h2load",
    [...args, "-H", "content-type: application/json", `${url}/${procedure}`],
    { maxBuffer: 16 * MB },
  ).finally(() => {
    loading = false;
  });
  await sampler;
  const done = /(\d+) succeeded, (\d+) failed, (\d+) errored/.exec(stdout)!;
  if (Number(done[1]) !== REQUESTS) throw new Error(`${procedure}: failures\n${stdout}`);
  const rps = Number(/finished in [\d.]+m?s, ([\d.]+) req\/s/.exec(stdout)![1]);
  return { rps, peak, after: await serverMemory(url) };
}

/**
 * What `licensd serve` loads from node_modules and Node's own modules (its resolved module URLs, listed with
 * module.registerHooks): the packages' entry points, imported with nothing of licensd's.
 */
const LIBRARIES = [
  "node:http2",
  "node:crypto",
  "pg",
  "kysely",
  "@mikro-orm/core",
  "@mikro-orm/postgresql",
  "@mikro-orm/migrations",
  "@bufbuild/protobuf",
  "@bufbuild/protobuf/wkt",
  "@bufbuild/protovalidate",
  "@connectrpc/connect",
  "@connectrpc/connect-node",
  "@opentelemetry/api",
  "pino",
  "prom-client",
  "sodium-native",
  "commander",
  "ulid",
];

/**
 * A Node process on the server's binary and flags (read from its /proc cmdline) that imports `modules` and nothing
 * else, its memory settled as the server's is (after one full collection, as serve runs at start).
 */
async function floor(serverPid: number, modules: string[]) {
  const cmdline = readFileSync(`/proc/${serverPid}/cmdline`, "utf8").split("\0");
  const flags = cmdline.slice(1).filter((a) => a.startsWith("--"));
  const code = `
    for (const m of ${JSON.stringify(modules)}) await import(m);
    globalThis.gc();
    const readings = [];
    for (let i = 0; i < 30; i++) {
      await new Promise((r) => setTimeout(r, 1000));
      readings.push(process.memoryUsage().rss);
      const last = readings.slice(-3);
      if (last.length === 3 && Math.max(...last) - Math.min(...last) < ${MB}) break;
    }
    console.log(JSON.stringify({ rss: readings.at(-1), heap: process.memoryUsage().heapUsed }));`;
  const { stdout } = await promisify(execFile)(cmdline[0], [...flags, "--input-type=module", "-e", code], {
    cwd: path.resolve(import.meta.dirname, ".."),
  });
  return JSON.parse(stdout) as { rss: number; heap: number };
}

async function loads() {
  const server = await startBenchServer();
  try {
    const idle = await settled(server.url);
    const bare = await floor(server.pid, []);
    const libraries = await floor(server.pid, LIBRARIES);
    const health = await sustained(server.url, "grpc.health.v1.Health/Check", {});
    const key = await validKey(server);
    const validate = await sustained(server.url, "licensd.licensing.v1.LicensingService/ValidateLicense", {
      key,
      entitlements: ["reports"],
    });
    return { idle, bare, libraries, health, validate, settledAfter: await settled(server.url) };
  } finally {
    await server.stop();
  }
}

/** A license with one entitlement, as bench/concurrency.ts validates it. */
async function validKey({ call }: Server) {
  const tenantId = (await call("licensd.tenant.v1.TenantService/CreateTenant", { name: "bench" })).tenant.id;
  const productId = (
    await call("licensd.licensing.v1.LicensingService/CreateProduct", {
      tenantId,
      code: "MEM",
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
    await call("licensd.licensing.v1.LicensingService/CreateCustomer", { tenantId, name: "B", email: "b@example.com" })
  ).customer.id;
  const created = await call("licensd.licensing.v1.LicensingService/CreateLicense", { tenantId, policyId, customerId });
  return (created as unknown as { key: string }).key;
}

/** `count` agents: count / 100 licenses of a floating policy, 100 machines each (rows inserted directly: setup). */
async function agents(server: Server, count: number) {
  const { call } = server;
  const tenantId = (await call("licensd.tenant.v1.TenantService/CreateTenant", { name: "streams" })).tenant.id;
  const productId = (
    await call("licensd.licensing.v1.LicensingService/CreateProduct", { tenantId, code: "STR", name: "Streams" })
  ).product.id;
  const policyId = (
    await call("licensd.licensing.v1.LicensingService/CreatePolicy", { tenantId, productId, name: "f", floating: true })
  ).policy.id;
  const customerId = (
    await call("licensd.licensing.v1.LicensingService/CreateCustomer", { tenantId, name: "S", email: "s@example.com" })
  ).customer.id;
  const licenses: { id: string; key: string }[] = [];
  for (let i = 0; i < count / 100; i += 50) {
    const batch = await Promise.all(
      Array.from({ length: Math.min(50, count / 100 - i) }, () =>
        call("licensd.licensing.v1.LicensingService/CreateLicense", { tenantId, policyId, customerId }),
      ),
    );
    licenses.push(...batch.map((b) => ({ id: b.license.id, key: (b as unknown as { key: string }).key })));
  }
  const db = new pg.Client({ connectionString: server.database.url });
  await db.connect();
  await db.query(
    `insert into machines (id, tenant_id, license_id, fingerprint, last_heartbeat_at, created_at, updated_at)
     select 'mach_' || lpad(to_hex(l.n * 100 + m), 10, '0') || substr(md5(l.id || m), 1, 16), $1, l.id,
            'agent-' || m, now(), now(), now()
     from unnest($2::text[]) with ordinality as l(id, n), generate_series(1, 100) m`,
    [tenantId, licenses.map((l) => l.id)],
  );
  await db.query("vacuum (analyze) machines, licenses");
  await db.end();
  return licenses.flatMap((l) =>
    Array.from({ length: 100 }, (_, m) => ({ key: l.key, fingerprint: `agent-${m + 1}` })),
  );
}

/** Client processes, each loaded and waiting for its order. */
async function leaseClients(n: number) {
  const children = Array.from({ length: n }, () =>
    fork(path.join(import.meta.dirname, "lease-clients.ts"), {
      execArgv: ["--import", import.meta.resolve("tsx")],
      stdio: ["ignore", "inherit", "inherit", "ipc"],
    }),
  );
  process.once("exit", () => {
    for (const c of children) c.kill("SIGKILL");
  });
  await Promise.all(children.map((c) => new Promise((resolve) => c.once("message", resolve))));
  return children;
}

/** Streams held open by client processes; resolves once every stream has its first lease. */
async function holdStreams(url: string, agents: { key: string; fingerprint: string }[]) {
  const children = await leaseClients(Math.min(CLIENT_PROCESSES, agents.length));
  const per = Math.ceil(agents.length / children.length);
  const start = performance.now();
  await Promise.all(
    children.map(async (child, i) => {
      const order: LeaseClientsOrder = { url, agents: agents.slice(i * per, (i + 1) * per) };
      child.send(order);
      const answer = await new Promise<{ opened?: number; error?: string }>((resolve, reject) => {
        child.once("message", resolve);
        child.once("exit", (code) => reject(new Error(`lease client exited with ${code}`)));
      });
      if (answer.error) throw new Error(`lease client: ${answer.error}`);
    }),
  );
  const seconds = (performance.now() - start) / 1000;
  const close = () =>
    Promise.all(
      children.map(
        (c) =>
          new Promise((resolve) => {
            c.removeAllListeners("exit");
            c.once("exit", resolve);
            c.send("close");
          }),
      ),
    );
  return { seconds, close };
}

async function streams() {
  const server = await startBenchServer({
    LICENSD_ACTIVATION_RATE_PER_IP: "0",
    LICENSD_ACTIVATION_RATE_PER_LICENSE: "1000000/1m",
  });
  const closers: (() => Promise<unknown>)[] = [];
  try {
    const all = await agents(server, Math.max(...STREAMS));
    const before = await settled(server.url);
    const rows = [];
    let open = 0;
    for (const count of STREAMS) {
      const { seconds, close } = await holdStreams(server.url, all.slice(open, count));
      closers.push(close);
      const rate = (count - open) / seconds;
      open = count;
      const after = await settled(server.url);
      rows.push({
        count,
        rate,
        rss: (after.rss - before.rss) / count,
        heap: (after.heap - before.heap) / count,
        after,
      });
      process.stdout.write(`  ${count} streams: ${((after.rss - before.rss) / count / 1024).toFixed(1)} KiB each\n`);
    }
    return { before, rows };
  } finally {
    for (const close of closers) await close();
    await server.stop();
  }
}

const met = (ok: boolean) => (ok ? "met" : "NOT met");

export async function run(): Promise<string> {
  const { idle, bare, libraries, health, validate, settledAfter } = await loads();
  const lease = await streams();
  const mb = (bytes: number) => `${(bytes / MB).toFixed(0)} MB`;
  const kib = (bytes: number) => `${(bytes / 1024).toFixed(1)} KiB`;
  const r = (n: number) => Math.round(n).toLocaleString("en");
  return [
    "## Memory (bench/memory.ts)",
    "",
    "One `licensd serve` on the PostgreSQL at 127.0.0.1:5432 (an external database: no embedded PostgreSQL in the process), its resident set (RSS) and V8 heap in use as its /metrics reports them. The launcher restarts itself in place (execve): one process. Settled: three readings a second apart within 1 MB.",
    "",
    `| Moment | RSS | V8 heap used |`,
    "|---|---:|---:|",
    `| idle, settled after start | ${mb(idle.rss)} | ${mb(idle.heap)} |`,
    `| (floor) a bare Node process, same binary and flags | ${mb(bare.rss)} | ${mb(bare.heap)} |`,
    `| (floor) a Node process that only imports the libraries serve loads | ${mb(libraries.rss)} | ${mb(libraries.heap)} |`,
    `| Health.Check, h2load -n${REQUESTS} -c16 (${r(health.rps)} req/s): peak during | ${mb(health.peak)} | |`,
    `| right after it | ${mb(health.after.rss)} | ${mb(health.after.heap)} |`,
    `| ValidateLicense, h2load -n${REQUESTS} -c16 (${r(validate.rps)} req/s): peak during | ${mb(validate.peak)} | |`,
    `| right after it | ${mb(validate.after.rss)} | ${mb(validate.after.heap)} |`,
    `| idle again, settled | ${mb(settledAfter.rss)} | ${mb(settledAfter.heap)} |`,
    "",
    `Idle ConnectLease streams (gRPC; ${CLIENT_PROCESSES} client processes, 250 streams per HTTP/2 connection; each stream sent its first message and got its first lease). Per stream: the server's growth over its settled memory before the first stream, divided by the streams open:`,
    "",
    "| Streams open | opened at | RSS | RSS per stream | V8 heap per stream |",
    "|---:|---:|---:|---:|---:|",
    ...lease.rows.map(
      (s) => `| ${r(s.count)} | ${r(s.rate)} /s | ${mb(s.after.rss)} | ${kib(s.rss)} | ${kib(s.heap)} |`,
    ),
    "",
    "Goals (issue 25):",
    "",
    `- idle ≤ 80 MB RSS: ${met(idle.rss <= 80 * MB)} (${mb(idle.rss)}; the libraries alone take ${mb(libraries.rss)}, licensd's own code and state ${mb(idle.rss - libraries.rss)} more);`,
    `- ≤ 160 MB under sustained load: ${met(Math.max(health.peak, validate.peak, settledAfter.rss) <= 160 * MB)} (peak ${mb(Math.max(health.peak, validate.peak))});`,
    `- ≤ 16 KiB per idle ConnectLease stream: ${met(lease.rows.every((s) => s.rss <= 16 * 1024))} (${lease.rows.map((s) => `${kib(s.rss)} at ${r(s.count)}`).join(", ")});`,
    `- 100,000 streams held on one process: ${met(lease.rows.some((s) => s.count >= 100_000))}.`,
  ].join("\n");
}

// Audited writes (issue 25): first activations of new machines — each creates a machine row and appends a
// `machine.activated` entry to its tenant's audit log — spread over 100 licenses of one tenant (every write queues on
// that tenant's log) and over 100 licenses in 100 tenants (one license each), against Health.Check. wrk, Connect JSON
// over HTTP/1.1, 16 connections; rounds alternate baseline and subject, each ratio is the median of the rounds' ratios.
// While activations run, pg_stat_activity is sampled for busy backends waiting on a lock.
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import pg from "pg";
import { startBenchServer } from "./support.ts";

const ROUNDS = Number(process.env.BENCH_WRITES_ROUNDS ?? 5);
const SECONDS = Number(process.env.BENCH_WRITES_SECONDS ?? 5);
const CONNECTIONS = 16;
const LICENSES = 100;
const SAMPLE_MS = 500;
const ACTIVATE = "licensd.activation.v1.ActivationService/Activate";
const HEALTH = "grpc.health.v1.Health/Check";

const work = mkdtempSync(path.join(os.tmpdir(), "licensd-bench-writes-"));
const run$ = promisify(execFile);
const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const r = (n: number) => Math.round(n).toLocaleString("en");

type Server = Awaited<ReturnType<typeof startBenchServer>>;

/** A tenant with one floating, unlimited-machines policy and `count` licenses; returns their keys. */
async function provision(call: Server["call"], name: string, count: number): Promise<string[]> {
  const tenantId = (await call("licensd.tenant.v1.TenantService/CreateTenant", { name })).tenant.id;
  const productId = (
    await call("licensd.licensing.v1.LicensingService/CreateProduct", { tenantId, code: "WRT", name: "Bench" })
  ).product.id;
  const policyId = (
    await call("licensd.licensing.v1.LicensingService/CreatePolicy", {
      tenantId,
      productId,
      name: "fleet",
      floating: true,
      maxMachines: 0,
    })
  ).policy.id;
  const customerId = (
    await call("licensd.licensing.v1.LicensingService/CreateCustomer", {
      tenantId,
      name: "Bench",
      email: "bench@example.com",
    })
  ).customer.id;
  const keys: string[] = [];
  for (let i = 0; i < count; i += 50) {
    const batch = await Promise.all(
      Array.from({ length: Math.min(50, count - i) }, () =>
        call("licensd.licensing.v1.LicensingService/CreateLicense", { tenantId, policyId, customerId }),
      ),
    );
    keys.push(...batch.map((b) => (b as unknown as { key: string }).key));
  }
  return keys;
}

/**
 * A wrk Lua script. With `keys`, every request is a first activation: the license keys in rotation, each with a
 * fingerprint no request has used (a nonce per script, the wrk thread, a counter). Without, it POSTs `{}`.
 * `done` prints the responses counted and the failures (HTTP ≥ 400, socket errors, timeouts).
 */
function wrkScript(keys?: string[]): string {
  const file = path.join(work, `${randomBytes(6).toString("hex")}.lua`);
  const body = keys
    ? [
        `local keys = {${keys.map((k) => `[==[${k}]==]`).join(",")}}`,
        `local nonce = "${randomBytes(6).toString("hex")}"`,
        "local n = 0",
        "request = function()",
        "  n = n + 1",
        "  local fingerprint = nonce .. '-' .. tid .. '-' .. n",
        `  return wrk.format(nil, nil, nil, '{"key":"' .. keys[n % #keys + 1] .. '","fingerprint":"' .. fingerprint .. '"}')`,
        "end",
      ]
    : [`wrk.body = "{}"`];
  writeFileSync(
    file,
    [
      `wrk.method = "POST"`,
      `wrk.headers["content-type"] = "application/json"`,
      "local threads = 0",
      "setup = function(thread) threads = threads + 1; thread:set('tid', threads) end",
      ...body,
      "done = function(summary, latency, requests)",
      "  local e = summary.errors",
      `  io.write(string.format("DONE %d BAD %d\\n", summary.requests, e.status + e.connect + e.read + e.write + e.timeout))`,
      "end",
    ].join("\n"),
  );
  return file;
}

/** licensd's CPU time so far (user + system), in seconds, from its /metrics. */
async function serverCpu(url: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  return Number(/^licensd_process_cpu_seconds_total ([\d.e+-]+)$/m.exec(text)![1]);
}

/**
 * One wrk round of SECONDS at CONNECTIONS, with licensd's CPU milliseconds per counted request; throws on any failed
 * request, so a rate of failures is never reported.
 */
async function wrkRound(url: string, procedure: string, script: string) {
  const cpuBefore = await serverCpu(url);
  const { stdout } = await run$(
    "wrk",
    ["-t", "2", "-c", String(CONNECTIONS), "-d", `${SECONDS}s`, "-s", script, `${url}/${procedure}`],
    { encoding: "utf8" },
  );
  const counts = /DONE (\d+) BAD (\d+)/.exec(stdout);
  const rps = /Requests\/sec:\s+([\d.]+)/.exec(stdout);
  if (!counts || !rps) throw new Error(`${procedure}: unreadable wrk output\n${stdout}`);
  if (Number(counts[2]) > 0 || Number(counts[1]) === 0)
    throw new Error(`${procedure}: ${counts[2]} failed of ${counts[1]} requests\n${stdout}`);
  const requests = Number(counts[1]);
  return { rps: Number(rps[1]), requests, cpuMs: (((await serverCpu(url)) - cpuBefore) * 1000) / requests };
}

/** The start of a statement on one line, literals elided (so one statement groups as one), for a markdown table cell. */
const statement = (query: string) => {
  const line = query
    .replace(/\s+/g, " ")
    .replace(/E?'(?:[^']|'')*'/g, "'…'")
    .trim();
  return (line.length > 70 ? `${line.slice(0, 70)}…` : line).replaceAll("|", "\\|");
};

type Sample = { busy: number; inTransaction: number; waiting: string[] };

/** Samples the server database's busy backends every SAMPLE_MS until stopped; keeps what each lock waiter runs. */
function lockSampler(databaseUrl: string) {
  const client = new pg.Client({ connectionString: databaseUrl });
  const samples: Sample[] = [];
  let timer: NodeJS.Timeout | undefined;
  let pending = Promise.resolve();
  const sample = async () => {
    const { rows } = await client.query<{
      state: string;
      wait_event_type: string | null;
      wait_event: string | null;
      query: string;
    }>(
      `select state, wait_event_type, wait_event, query from pg_stat_activity
       where datname = current_database() and state in ('active', 'idle in transaction') and pid <> pg_backend_pid()`,
    );
    const busy = rows.filter((row) => row.state === "active");
    samples.push({
      busy: busy.length,
      inTransaction: rows.length - busy.length,
      waiting: busy
        .filter((row) => row.wait_event_type === "Lock")
        .map((row) => `Lock:${row.wait_event} in \`${statement(row.query)}\``),
    });
  };
  return {
    samples,
    connect: () => client.connect(),
    start() {
      timer = setInterval(() => {
        pending = pending.then(sample);
      }, SAMPLE_MS);
    },
    async stop() {
      clearInterval(timer);
      await pending;
    },
    end: () => client.end(),
  };
}

/** ROUNDS alternating (Health.Check, first activations over `keys`), lock-sampled while activations run. */
type Round = Awaited<ReturnType<typeof wrkRound>>;

/**
 * Milliseconds until the server's audit queue is empty (polled every 5 ms): an activation answers once its change has
 * committed and may leave its entry's sequencing to the moments after (docs/audit.md), so a round counts until then.
 */
async function drained(db: pg.Client): Promise<number> {
  const start = performance.now();
  while ((await db.query<{ n: number }>("select count(*)::int as n from audit_pending")).rows[0]!.n > 0)
    await new Promise((r) => setTimeout(r, 5));
  return performance.now() - start;
}

async function measure(server: Server, db: pg.Client, keys: string[], sampler: ReturnType<typeof lockSampler>) {
  const health: Round[] = [];
  const activate: Round[] = [];
  const drains: number[] = [];
  const healthScript = wrkScript();
  for (let i = 0; i < ROUNDS; i++) {
    health.push(await wrkRound(server.url, HEALTH, healthScript));
    sampler.start();
    const round = await wrkRound(server.url, ACTIVATE, wrkScript(keys)).finally(() => sampler.stop());
    // The round's rate counts the time its last audit entries took to be sequenced after wrk stopped.
    const drainMs = await drained(db);
    drains.push(drainMs);
    activate.push({ ...round, rps: (round.rps * SECONDS) / (SECONDS + drainMs / 1000) });
    process.stdout.write(
      `  round ${i + 1}: Health.Check ${r(health[i]!.rps)} req/s, Activate ${r(activate[i]!.rps)} req/s` +
        ` (audit queue empty ${Math.round(drainMs)} ms after)\n`,
    );
  }
  const ratios = activate.map((a, i) => a.rps / health[i]!.rps);
  return {
    health: med(health.map((h) => h.rps)),
    activate: med(activate.map((a) => a.rps)),
    healthCpuMs: med(health.map((h) => h.cpuMs)),
    activateCpuMs: med(activate.map((a) => a.cpuMs)),
    activations: activate.reduce((n, a) => n + a.requests, 0),
    ratio: med(ratios),
    drainMs: Math.max(...drains),
    low: Math.min(...ratios),
    high: Math.max(...ratios),
  };
}

/** Lock waiters among busy backends over `samples`, and the statements they waited in, most frequent first. */
function lockSummary(samples: Sample[]) {
  const busy = samples.reduce((n, s) => n + s.busy, 0);
  const waiting = samples.reduce((n, s) => n + s.waiting.length, 0);
  const byStatement = new Map<string, number>();
  for (const w of samples.flatMap((s) => s.waiting)) byStatement.set(w, (byStatement.get(w) ?? 0) + 1);
  const top = [...byStatement].sort((a, b) => b[1] - a[1]).slice(0, 5);
  const inTransaction = samples.reduce((n, s) => n + s.inTransaction, 0);
  const counts = [(s: Sample) => s.waiting.length, (s: Sample) => s.busy, (s: Sample) => s.inTransaction];
  const perSample = counts.map((count) => med(samples.map(count))).join("/");
  return { busy, waiting, inTransaction, top, perSample, count: samples.length };
}

export async function run(): Promise<string> {
  // Both activation rate limits off: every request comes from 127.0.0.1, and each license gets thousands of machines.
  const server = await startBenchServer({
    LICENSD_ACTIVATION_RATE_PER_IP: "0",
    LICENSD_ACTIVATION_RATE_PER_LICENSE: "0",
  });
  const db = new pg.Client({ connectionString: server.database.url });
  const samplers = { one: lockSampler(server.database.url), many: lockSampler(server.database.url) };
  try {
    const oneTenant = await provision(server.call, "bench-one", LICENSES);
    const manyTenants: string[] = [];
    for (let i = 0; i < LICENSES; i += 10)
      manyTenants.push(
        ...(
          await Promise.all(Array.from({ length: 10 }, (_, j) => provision(server.call, `bench-${i + j}`, 1)))
        ).flat(),
      );
    await db.connect();
    await Promise.all([samplers.one.connect(), samplers.many.connect()]);
    // Before each timed phase the database is settled (autovacuum and a checkpoint after the previous phase's
    // inserts would otherwise take a core in the middle of the next); every table, whatever the log's tables are.
    const settle = async () => {
      await db.query("vacuum (analyze)");
      await db.query("checkpoint");
    };
    // Warm-up: JIT, the pool's connections, the license cache.
    await wrkRound(server.url, HEALTH, wrkScript());
    const warm = await wrkRound(server.url, ACTIVATE, wrkScript([...oneTenant, ...manyTenants]));
    await settle();
    console.log("  100 licenses of one tenant");
    const one = await measure(server, db, oneTenant, samplers.one);
    await settle();
    console.log("  100 licenses in 100 tenants");
    const many = await measure(server, db, manyTenants, samplers.many);
    // Every counted response was a first activation: as many machines exist (and at most one more per connection and
    // round, for requests in flight when wrk stopped).
    const counted = warm.requests + one.activations + many.activations;
    const machines = Number((await db.query<{ n: string }>("select count(*) as n from machines")).rows[0]!.n);
    if (machines < counted || machines > counted + CONNECTIONS * (2 * ROUNDS + 1))
      throw new Error(`${machines} machines after ${counted} first activations`);
    return report(one, many, lockSummary(samplers.one.samples), lockSummary(samplers.many.samples));
  } finally {
    await Promise.all([db.end(), samplers.one.end(), samplers.many.end()]).catch(() => {});
    await server.stop();
  }
}

type Measured = Awaited<ReturnType<typeof measure>>;

function report(one: Measured, many: Measured, oneLocks: LockSummary, manyLocks: LockSummary): string {
  const row = (what: string, m: Measured) =>
    `| ${what} | ${r(m.health)} | ${r(m.activate)} | ${m.ratio.toFixed(3)} | ${m.low.toFixed(3)}–${m.high.toFixed(3)} | ` +
    `${m.healthCpuMs.toFixed(2)} | ${m.activateCpuMs.toFixed(2)} |`;
  const locks = (what: string, l: LockSummary) =>
    `${what}: ${l.count} samples, ${l.waiting} of ${l.busy} busy backends waiting on a lock ` +
    `(${l.busy === 0 ? "—" : `${Math.round((100 * l.waiting) / l.busy)} %`}), ${l.inTransaction} more idle in ` +
    `transaction (waiting for licensd); median per sample (lock-waiting/busy/idle in transaction): ${l.perSample}.`;
  return [
    "## Audited writes: first activations (bench/writes.ts)",
    "",
    `One \`licensd serve\` on the PostgreSQL at 127.0.0.1:5432, activation rate limits off. Every request is the first activation of a new machine (wrk Lua script: license keys in rotation, a fingerprint never used before), so each one inserts a machine and queues a \`machine.activated\` entry for its tenant's audit log in one statement (shared with the server's other activations of the moment), and the entry is sequenced right after. An activation answers after its commit, not after its entry's sequencing (docs/audit.md), so each round counts until the audit queue is empty again: its rate is the responses over wrk's ${SECONDS} s plus that time (at most ${Math.round(Math.max(one.drainMs, many.drainMs))} ms here). wrk -t2 -c${CONNECTIONS} -d${SECONDS}s, Connect JSON over HTTP/1.1; ${ROUNDS} rounds alternate Health.Check (same tool, same connections) and Activate; rates are medians, each ratio the median of the rounds' ratios (their range beside it). Any failed request fails the benchmark. licensd's CPU per request is its process CPU time (from its /metrics) over a round divided by the round's requests, median of the rounds: when it times the rate comes near 1,000 ms/s (licensd runs requests on one thread), licensd's own work bounds the rate, not a lock.`,
    "",
    "| first activations spread over | Health.Check req/s | Activate req/s | ratio | rounds' ratios | licensd CPU ms per Health.Check | per Activate |",
    "|---|---:|---:|---:|---:|---:|---:|",
    row(`${LICENSES} licenses of one tenant`, one),
    row(`${LICENSES} licenses in ${LICENSES} tenants`, many),
    "",
    `Goal (issue 25): one tenant ≥ 0.25× Health.Check: ${one.ratio >= 0.25 ? "met" : "NOT met"}.`,
    "",
    `pg_stat_activity on licensd's database every ${SAMPLE_MS} ms while activations ran (busy: \`state = 'active'\`; the sampler excluded):`,
    "",
    `- ${locks("one tenant", oneLocks)}`,
    `- ${locks(`${LICENSES} tenants`, manyLocks)}`,
    "",
    "Where the one-tenant lock waiters were (backend-samples):",
    "",
    "| waits | statement |",
    "|---:|---|",
    ...(oneLocks.top.length > 0 ? oneLocks.top.map(([w, n]) => `| ${n} | ${w} |`) : ["| 0 | — |"]),
  ].join("\n");
}

type LockSummary = ReturnType<typeof lockSummary>;

// Audit log benchmarks: append rate under 1, 8 and 32 concurrent writers; tail delivery
// latency from a commit on instance A to its receipt by a tail on instance B; proof
// generation over a tree of 1M entries. Each beside a baseline from the same run.
import { spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import pg from "pg";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { AuditService } from "../gen/ts/licensd/audit/v1/audit_service_pb.js";
import { TenantService } from "../gen/ts/licensd/tenant/v1/tenant_service_pb.js";
import { AuditFeed } from "../src/events/audit-feed.js";
import { createAuditService } from "../src/audit/audit.service.js";
import { appendLeaf, leafHash } from "../src/events/merkle.js";
import { AuditKeyring } from "../src/events/audit-keyring.js";
import { createEvents } from "../src/events/events.js";
import { AuditSequencer } from "../src/events/sequencer.js";
import { systemClock } from "../src/platform/clock.js";
import { openDatabase, sql, type Database } from "../src/platform/db.js";
import { schema } from "../src/entities.js";
import { createLogger } from "../src/platform/logger.js";
import { migrate } from "../src/platform/migrate.js";
import { SigningKeyStore } from "../src/platform/signing-keys.js";
import { benchDatabase, percentile } from "./support.ts";

const ROOT = path.resolve(import.meta.dirname, "..");
const SECONDS = Number(process.env.BENCH_APPEND_SECONDS ?? 4);
const TREE_SIZE = Number(process.env.BENCH_TREE_SIZE ?? 1_000_000);
const logger = createLogger("warn");
/** One data key for the run: the servers and the in-process services share the signing keys it seals. */
const DATA_KEY = randomBytes(32);

async function newTenant(db: Database, name: string): Promise<string> {
  const id = `ten_${randomBytes(13).toString("hex").slice(0, 26)}`;
  await sql(
    db,
    `insert into tenants (id, name, metadata, created_at, updated_at) values ($1, $2, '{}', now(), now())`,
    [id, name],
  );
  return id;
}

/** Runs `op` from `writers` concurrent loops for SECONDS; returns completed ops per second. */
async function rate(writers: number, op: (writer: number) => Promise<unknown>): Promise<number> {
  const deadline = Date.now() + SECONDS * 1000;
  let done = 0;
  const start = Date.now();
  await Promise.all(
    Array.from({ length: writers }, async (_, w) => {
      while (Date.now() < deadline) {
        await op(w);
        done++;
      }
    }),
  );
  return done / ((Date.now() - start) / 1000);
}

const ROUNDS = Number(process.env.BENCH_APPEND_ROUNDS ?? 3);
const median = (xs: number[]) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)]!;
const range = (xs: number[]) => `${Math.min(...xs).toFixed(2)}–${Math.max(...xs).toFixed(2)}`;

async function appendRates(db: Database) {
  const keyring = new AuditKeyring(randomBytes(32));
  const sequencer = new AuditSequencer(db, keyring, { logger, sweepMs: 60_000 });
  const events = createEvents({
    clock: systemClock,
    keyring,
    sequencer,
    afterCommit: (em, hook) => db.afterCommit(em, hook),
  });
  await sql(
    db,
    `create table bench_baseline (id bigserial primary key, tenant_id text not null, type text not null, payload jsonb not null, created_at timestamptz not null)`,
  );
  const shared = await newTenant(db, "one tenant");
  const own = await Promise.all(Array.from({ length: 32 }, (_, i) => newTenant(db, `writer ${i}`)));
  const payload = { name: "bench", metadata: { plan: "gold", region: "eu-west-1" } };
  const rows: string[] = [];
  for (const writers of [1, 8, 32]) {
    // Alternating rounds: each ratio is to the baseline measured just before it.
    const runs = { baseline: [] as number[], one: [] as number[], own: [] as number[] };
    const ratios = { one: [] as number[], own: [] as number[] };
    for (let r = 0; r < ROUNDS; r++) {
      const baseline = await rate(writers, () =>
        db.tx((em) =>
          sql(
            em,
            `insert into bench_baseline (tenant_id, type, payload, created_at) values ($1, 'tenant.updated', $2::jsonb, now())`,
            [shared, JSON.stringify(payload)],
          ),
        ),
      );
      const oneTenant = await rate(writers, () =>
        db.tx((em) =>
          events.emit(em, { tenantId: shared, type: "tenant.updated", subject: shared, actor: "system", payload }),
        ),
      );
      const perWriter = await rate(writers, (w) =>
        db.tx((em) =>
          events.emit(em, { tenantId: own[w]!, type: "tenant.updated", subject: own[w]!, actor: "system", payload }),
        ),
      );
      runs.baseline.push(baseline);
      runs.one.push(oneTenant);
      runs.own.push(perWriter);
      ratios.one.push(oneTenant / baseline);
      ratios.own.push(perWriter / baseline);
    }
    rows.push(
      `| ${writers} | ${Math.round(median(runs.baseline))} | ${Math.round(median(runs.one))} | ` +
        `${median(ratios.one).toFixed(2)} (${range(ratios.one)}) | ${Math.round(median(runs.own))} | ` +
        `${median(ratios.own).toFixed(2)} (${range(ratios.own)}) |`,
    );
    console.log(rows.at(-1));
  }
  const [check] = await sql<{ n: string; max: string }>(
    db,
    `select count(*) as n, max(seq) as max from audit_events where tenant_id = $1`,
    [shared],
  );
  if (check!.n !== check!.max)
    throw new Error(`gap in the shared tenant's chain: ${check!.n} entries, max seq ${check!.max}`);
  const [left] = await sql<{ n: string }>(db, `select count(*) as n from audit_pending`);
  if (left!.n !== "0") throw new Error(`${left!.n} entries left queued after the appends`);
  return [
    `Append rate (entries/s; each append is its own transaction, and counts once its entry is sequenced, as an RPC`,
    `answers). Baseline: a transaction inserting one row of the same size into a plain table. "One tenant": every`,
    `writer appends to the same tenant's chain; "own tenant": each writer has its own. ${ROUNDS} alternating rounds`,
    `of ${SECONDS} s: rates are medians, each ratio the median of the rounds' ratios to their own baseline (range in`,
    `brackets). A writer appends in its own transaction when the tenant's head is free and uncontended; under`,
    `contention entries are queued and sequenced in batches after commit (docs/audit.md, Sequencing).`,
    "",
    "| writers | baseline tx/s | append, one tenant | ratio | append, own tenant | ratio |",
    "|---:|---:|---:|---:|---:|---:|",
    ...rows,
  ].join("\n");
}

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, "127.0.0.1", () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

async function startServer(databaseUrl: string, superAdminKey: string, dataKey: string) {
  const port = await freePort();
  const child = spawn(process.execPath, [path.join(ROOT, "bin/licensd.js"), "serve"], {
    env: {
      ...process.env,
      LICENSD_PORT: String(port),
      LICENSD_DATABASE_URL: databaseUrl,
      LICENSD_SUPER_ADMIN_KEY: superAdminKey,
      LICENSD_DATA_KEY: dataKey,
      LICENSD_LOG_LEVEL: "warn",
      LICENSD_DATA_DIR: mkdtempSync(path.join(os.tmpdir(), "licensd-bench-")),
    },
    stdio: ["ignore", "ignore", "inherit"],
  });
  const url = `http://127.0.0.1:${port}`;
  for (
    let i = 0;
    i < 600 &&
    !(await fetch(`${url}/healthz`).then(
      (r) => r.ok,
      () => false,
    ));
    i++
  )
    await new Promise((r) => setTimeout(r, 100));
  return {
    url,
    stop: () =>
      new Promise<void>((resolve) => {
        child.once("exit", () => resolve());
        child.kill("SIGTERM");
      }),
  };
}

async function tailLatency(databaseUrl: string) {
  const key = randomBytes(32).toString("base64url");
  const dataKey = DATA_KEY.toString("base64");
  const [a, b] = [await startServer(databaseUrl, key, dataKey), await startServer(databaseUrl, key, dataKey)];
  const auth = [
    (next: Parameters<import("@connectrpc/connect").Interceptor>[0]) => (req: Parameters<typeof next>[0]) => {
      req.header.set("authorization", `Bearer ${key}`);
      return next(req);
    },
  ];
  const tenantsA = createClient(
    TenantService,
    createConnectTransport({ baseUrl: a.url, httpVersion: "1.1", interceptors: auth }),
  );
  const auditB = createClient(AuditService, createGrpcTransport({ baseUrl: b.url, interceptors: auth }));
  const tenantId = (await tenantsA.createTenant({ name: "tailed" })).tenant!.id;
  const N = Number(process.env.BENCH_TAIL_EVENTS ?? 300);
  const WARMUP = 20; // the first changes warm both processes up (JIT, pools); not counted
  const latencies: number[] = [];
  const roundTrips: number[] = [];
  const abort = new AbortController();
  const received = (async () => {
    let seen = 0;
    for await (const msg of auditB.tailAuditEvents({ tenantId, afterSeq: 1n }, { signal: abort.signal })) {
      if (msg.message.case !== "event") continue;
      if (++seen > WARMUP) latencies.push(Date.now() - timestampDate(msg.message.value.occurTime!).getTime());
      if (seen === N + WARMUP) return;
    }
  })();
  for (let i = 0; i < N + WARMUP; i++) {
    const t0 = performance.now();
    await tenantsA.updateTenant({
      tenant: { id: tenantId, metadata: { i: String(i) } },
      updateMask: { paths: ["metadata"] },
    });
    if (i >= WARMUP) roundTrips.push(performance.now() - t0);
    await new Promise((r) => setTimeout(r, 20)); // ~40 changes/s: latency, not throughput
  }
  await received;
  abort.abort();
  await Promise.all([a.stop(), b.stop()]);
  return [
    `Tail delivery: ${N} changes (after ${WARMUP} warm-up ones) made through instance A (UpdateTenant, ~40/s), received by a`,
    "TailAuditEvents stream held on instance B (separate processes, one database). Latency is",
    "receipt time minus the entry's occurred_at, which is set inside the committing transaction.",
    "Baseline: the UpdateTenant round trip on A, measured in the same run.",
    "",
    "| | p50 ms | p99 ms | max ms |",
    "|---|---:|---:|---:|",
    `| commit on A → receipt on B | ${percentile(latencies, 50)} | ${percentile(latencies, 99)} | ${Math.max(...latencies)} |`,
    `| baseline: UpdateTenant round trip | ${percentile(roundTrips, 50).toFixed(1)} | ${percentile(roundTrips, 99).toFixed(1)} | ${Math.max(...roundTrips).toFixed(1)} |`,
    "",
    `Goal p99 < 100 ms: ${percentile(latencies, 99) < 100 ? "met" : "NOT met"}.`,
  ].join("\n");
}

/** Writes a tenant's tree of TREE_SIZE leaves straight into audit_tree_nodes and audit_heads. */
async function syntheticTree(db: Database, url: string, tenantId: string) {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  let frontier: Buffer[] = [];
  let batch: { level: number[]; index: number[]; hash: Buffer[] } = { level: [], index: [], hash: [] };
  const flush = async () => {
    await c.query(
      `insert into audit_tree_nodes (tenant_id, level, index, hash) select $1, * from unnest($2::smallint[], $3::bigint[], $4::bytea[])`,
      [tenantId, batch.level, batch.index, batch.hash],
    );
    batch = { level: [], index: [], hash: [] };
  };
  let last = Buffer.alloc(32);
  for (let i = 0; i < TREE_SIZE; i++) {
    last = createHash("sha256").update(`entry ${i}`).digest();
    const r = appendLeaf(frontier, i, leafHash(last));
    frontier = r.frontier;
    for (const n of r.completed) {
      batch.level.push(n.level);
      batch.index.push(n.index);
      batch.hash.push(n.hash);
    }
    if (batch.level.length >= 50_000) await flush();
  }
  await flush();
  await c.query(`insert into audit_heads (tenant_id, seq, hash, frontier) values ($1, $2, $3, $4)`, [
    tenantId,
    TREE_SIZE,
    last,
    Buffer.concat(frontier),
  ]);
  await c.end();
  void db;
}

async function proofTimes(db: Database, url: string) {
  const tenantId = await newTenant(db, "a million entries");
  const t0 = performance.now();
  await syntheticTree(db, url, tenantId);
  const buildSeconds = (performance.now() - t0) / 1000;
  const signingKeys = new SigningKeyStore(db, DATA_KEY, systemClock, logger);
  await signingKeys.start();
  const keyring = new AuditKeyring(randomBytes(32));
  const audit = createAuditService({
    db,
    clock: systemClock,
    keyring,
    signingKeys,
    feed: new AuditFeed(url, logger),
    events: createEvents({
      clock: systemClock,
      keyring,
      sequencer: new AuditSequencer(db, keyring, { logger, sweepMs: 60_000 }),
      afterCommit: (em, hook) => db.afterCommit(em, hook),
    }),
  });
  const time = async (n: number, op: (i: number) => Promise<unknown>) => {
    const ms: number[] = [];
    for (let i = 0; i < n; i++) {
      const s = performance.now();
      await op(i);
      ms.push(performance.now() - s);
    }
    return ms;
  };
  const rand = (max: number) => 1 + Math.floor(Math.random() * max);
  const baseline = await time(200, () =>
    sql(db, `select hash from audit_tree_nodes where tenant_id = $1 and level = 0 and index = $2`, [
      tenantId,
      rand(TREE_SIZE) - 1,
    ]),
  );
  const checkpoint = await time(200, () => audit.checkpoint(db.em(), tenantId));
  const inclusion = await time(200, () => audit.inclusion(db.em(), tenantId, rand(TREE_SIZE), 0));
  const consistency = await time(200, () => audit.consistency(db.em(), tenantId, rand(TREE_SIZE - 1), 0));
  signingKeys.stop();
  const row = (name: string, ms: number[]) =>
    `| ${name} | ${percentile(ms, 50).toFixed(2)} | ${percentile(ms, 99).toFixed(2)} | ${(percentile(ms, 50) / percentile(baseline, 50)).toFixed(1)} |`;
  return [
    `Proofs over a tenant tree of ${TREE_SIZE.toLocaleString("en")} entries (tree written in ${buildSeconds.toFixed(0)} s, 200 calls each,`,
    "random positions, through the audit service on one pooled connection at a time). Baseline:",
    "one primary-key lookup of a tree node.",
    "",
    "| operation | p50 ms | p99 ms | p50 ÷ baseline p50 |",
    "|---|---:|---:|---:|",
    row("baseline: one node by primary key", baseline),
    row("GetCheckpoint (root + Ed25519 signature)", checkpoint),
    row("GetInclusionProof", inclusion),
    row("GetConsistencyProof", consistency),
  ].join("\n");
}

export async function run(): Promise<string> {
  const database = await benchDatabase();
  const db = await openDatabase(database.url, { poolMax: 40, logger, schema });
  try {
    await migrate(db, database.url, logger);
    const sections = [
      "## Audit log (bench/audit.ts)",
      "",
      await appendRates(db),
      "",
      await tailLatency(database.url),
      "",
      await proofTimes(db, database.url),
    ];
    return sections.join("\n");
  } finally {
    await db.close();
    await database.drop();
  }
}

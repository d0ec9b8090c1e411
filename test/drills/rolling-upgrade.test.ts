/*
 * The runbook "Rolling upgrade across a migration" (docs/operations.md), run as written: three instances of the
 * previous release (a real earlier commit of this repository, built from git history by test/support/old-release.ts)
 * serve one database while a balancer of the drill's own sends them ValidateLicense, CreateCustomer, RecordUsage and
 * StreamUsage streams without pause; the new release's `licensd migrate` adds its tables under them; the instances are
 * replaced one at a time by the new release. Then: no call failed, every acknowledged write is stored exactly once,
 * the audit chain (written by both releases) verifies, and the new tables are there.
 *
 * The balancer is round-robin over its pool, like a real one with health checks: an instance leaves the pool when
 * its /healthz stops answering ok, or when it is taken out before a stop (the runbook's first step per instance). No
 * call is retried: a failed call is counted as a failure.
 *
 * What the drill found: SIGTERM cut the connections as soon as the last call was answered, before HTTP/2 had sent the
 * answers' trailers, so a call the server had committed could reach its client as CANCELED (fixed in src/server.ts,
 * test/unit/server-drain.test.ts). Without the runbook's first step (out of the balancer before SIGTERM), calls sent
 * after the signal are refused (connection refused, REFUSED_STREAM): the runbook says so, and the new release's
 * LICENSD_SHUTDOWN_DELAY_MS lets health checks alone take an instance out, which the drill checks last by stopping one
 * new instance with SIGTERM and nothing else.
 */
import { randomBytes } from "node:crypto";
import { mkdtempSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { Code, ConnectError, type Client } from "@connectrpc/connect";
import { afterAll, describe, expect, it } from "vitest";
import { LicensingService } from "../../gen/ts/licensd/licensing/v1/licensing_service_pb.js";
import { ApiKeyScope } from "../../gen/ts/licensd/tenant/v1/api_key_pb.js";
import { TenantService } from "../../gen/ts/licensd/tenant/v1/tenant_service_pb.js";
import { Aggregation, type UsageEvent } from "../../gen/ts/licensd/usage/v1/usage_pb.js";
import { type StreamUsageRequest, UsageService } from "../../gen/ts/licensd/usage/v1/usage_service_pb.js";
import { connectClient, grpcClient } from "../support/app.js";
import { createTestDatabase, query } from "../support/database.js";
import { buildOldRelease, commitBefore } from "../support/old-release.js";
import { outbox } from "../support/outbox.js";
import { Runbook } from "../support/runbook.js";
import { run, type ServerProcess, startServer } from "../support/server.js";
import { until, within } from "../support/wait.js";

/** The migration the new release has and the previous one lacks. */
const NEW_MIGRATION = "src/migrations/Migration20261206000000Webhooks.ts";
const NEW_TABLES = ["webhook_attempts", "webhook_cursors", "webhook_deliveries", "webhook_endpoints"];

const cleanup: (() => Promise<unknown>)[] = [];
afterAll(async () => {
  for (const step of cleanup.reverse()) await step().catch(() => undefined);
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Member {
  name: string;
  server: ServerProcess;
  release: "old" | "new";
  licensing: Client<typeof LicensingService>;
  usage: Client<typeof UsageService>;
  inFlight: number;
}

/** Round-robin over the instances in its pool; counts calls and failures per phase, never retries. */
class Balancer {
  pool: Member[] = [];
  private next = 0;
  phase = "warm-up";
  readonly calls = new Map<string, number>();
  readonly failures: string[] = [];
  readonly leftByHealth: string[] = [];
  private watching = true;
  private readonly watcher: Promise<void>;

  constructor(private readonly keys: { admin: string; ingest: string }) {
    this.watcher = this.watch();
  }

  member(name: string, server: ServerProcess, release: "old" | "new"): Member {
    return {
      name,
      server,
      release,
      licensing: grpcClient(LicensingService, server.url, this.keys.admin),
      usage: grpcClient(UsageService, server.url, this.keys.ingest),
      inFlight: 0,
    };
  }

  add(m: Member) {
    this.pool.push(m);
  }

  remove(m: Member) {
    this.pool = this.pool.filter((x) => x !== m);
  }

  /** Takes `m` out of the pool and waits until no call of the balancer's is open to it (connection draining). */
  async drain(m: Member) {
    this.remove(m);
    await until(
      `no call open to ${m.name}`,
      () => m.inFlight,
      (n) => n === 0,
      30_000,
      10,
    );
  }

  /**
   * The health checks: every 100 ms; an instance whose /healthz answers not ok leaves the pool, as does one that does
   * not answer three checks in a row (a real balancer's unhealthy threshold: a loaded machine's slow answer is not a
   * failed instance).
   */
  private async watch() {
    const unanswered = new Map<Member, number>();
    while (this.watching) {
      await Promise.all(
        this.pool.map(async (m) => {
          const status = await fetch(`${m.server.url}/healthz`, { signal: AbortSignal.timeout(2000) }).then(
            (r) => r.status,
            () => 0,
          );
          unanswered.set(m, status === 0 ? (unanswered.get(m) ?? 0) + 1 : 0);
          const ok = status >= 200 && status < 300;
          if (!ok && (status !== 0 || unanswered.get(m)! >= 3) && this.pool.includes(m)) {
            this.leftByHealth.push(m.name);
            this.remove(m);
          }
        }),
      );
      await sleep(100);
    }
  }

  async stop() {
    this.watching = false;
    await this.watcher;
  }

  /** One call (or one stream) on the next instance of the pool. */
  async call<T>(what: string, fn: (m: Member) => Promise<T>): Promise<T | undefined> {
    const pool = this.pool;
    if (pool.length === 0) throw new Error("the balancer's pool is empty");
    const m = pool[this.next++ % pool.length]!;
    m.inFlight++;
    this.calls.set(this.phase, (this.calls.get(this.phase) ?? 0) + 1);
    try {
      return await fn(m);
    } catch (err) {
      const e = ConnectError.from(err);
      this.failures.push(`${what} on ${m.name} (${m.release}) during ${this.phase}: ${Code[e.code]} ${e.rawMessage}`);
      return undefined;
    } finally {
      m.inFlight--;
    }
  }
}

describe("rolling upgrade across a migration", () => {
  it("replaces three instances of the previous release by the new one under load, with no failed call", async () => {
    const t0 = Date.now();
    const marks: string[] = [];
    const mark = (what: string) => marks.push(`${what} ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    const old = buildOldRelease(commitBefore(NEW_MIGRATION));
    console.info(
      `previous release: ${old.commit.slice(0, 10)}, ` +
        (old.buildMs > 0 ? `built in ${(old.buildMs / 1000).toFixed(0)} s` : "built before (cached)"),
    );

    const db = await createTestDatabase();
    cleanup.push(() => db.drop());
    const secrets = {
      LICENSD_SUPER_ADMIN_KEY: randomBytes(32).toString("base64url"),
      LICENSD_DATA_KEY: randomBytes(32).toString("base64"),
    };
    const settings = { ...secrets, LICENSD_DATABASE_URL: db.url };
    // The database as the previous release left it: migrated by that release.
    const oldMigrate = await run("bash", ["scripts/with-node.sh", "node", old.bin, "migrate"], {
      env: { ...settings, LICENSD_DATA_DIR: mkdtempSync(path.join(os.tmpdir(), "licensd-drill-upgrade-")) },
    });
    expect(oldMigrate.code, oldMigrate.stdout + oldMigrate.stderr).toBe(0);
    const tables = async () =>
      (
        await query<{ t: string }>(
          db.url,
          "select table_name as t from information_schema.tables where table_name like 'webhook\\_%' order by 1",
        )
      ).map((r) => r.t);
    expect(await tables(), "the previous release has no webhook tables").toEqual([]);

    const servers: ServerProcess[] = [];
    cleanup.push(async () => {
      for (const s of servers) if (s.child.exitCode === null && s.child.signalCode === null) await s.stop("SIGKILL");
    });
    const start = async (release: "old" | "new", port?: number) => {
      const s = await startServer({
        bin: release === "old" ? old.bin : undefined,
        databaseUrl: db.url,
        env: {
          ...settings,
          // The new release's instances keep answering for 3 s after SIGTERM, NOT_SERVING (the runbook's step 1).
          ...(release === "new" ? { LICENSD_SHUTDOWN_DELAY_MS: "3000" } : {}),
          ...(port ? { LICENSD_PORT: String(port) } : {}),
        },
      });
      servers.push(s);
      return s;
    };
    mark("old release migrated");
    // Started together, as after a deploy: each applies the (already applied) migrations under the advisory lock.
    const olds = await Promise.all([start("old"), start("old"), start("old")]);
    mark("three old instances up");

    // A tenant with its catalog, made through the previous release.
    const url = olds[0]!.url;
    const tenants = connectClient(TenantService, url, secrets.LICENSD_SUPER_ADMIN_KEY);
    const { tenant } = await tenants.createTenant({ name: "Upgrade vendor" });
    const tenantId = tenant!.id;
    const admin = (await tenants.createApiKey({ tenantId, name: "admin", scopes: [ApiKeyScope.ADMIN] })).secret;
    const ingest = (await tenants.createApiKey({ tenantId, name: "agent", scopes: [ApiKeyScope.INGEST] })).secret;
    const licensing = connectClient(LicensingService, url, admin);
    const product = (await licensing.createProduct({ code: "UPG", name: "App" })).product!;
    await connectClient(UsageService, url, admin).createMeter({
      productId: product.id,
      metric: "tokens",
      aggregation: Aggregation.SUM,
    });
    const policy = (await licensing.createPolicy({ productId: product.id, name: "pro", floating: true })).policy!;
    const owner = (await licensing.createCustomer({ name: "Owner", email: "owner@upgrade.example" })).customer!;
    const lic = await licensing.createLicense({ policyId: policy.id, customerId: owner.id });
    const licenseKey = lic.key;
    const licenseId = lic.license!.id;

    const balancer = new Balancer({ admin, ingest });
    const members = olds.map((s, i) => balancer.member(`instance ${i + 1}`, s, "old"));
    for (const m of members) balancer.add(m);

    // The load: unary calls from four clients, StreamUsage streams from two, all through the balancer.
    const customersAcked: string[] = [];
    const usageAcked: string[] = [];
    const streamAcked: string[] = [];
    let validations = 0;
    let streams = 0;
    let running = true;
    let n = 0;
    const unaryClient = async () => {
      while (running) {
        const i = n++;
        if (i % 3 === 0) {
          const res = await balancer.call("ValidateLicense", (m) =>
            m.licensing.validateLicense({ key: licenseKey }, { timeoutMs: 15_000 }),
          );
          if (res?.valid) validations++;
          else if (res) balancer.failures.push(`ValidateLicense answered ${res.code}`);
        } else if (i % 3 === 1) {
          const email = `drill-${i}@upgrade.example`;
          const res = await balancer.call("CreateCustomer", (m) =>
            m.licensing.createCustomer({ name: `Customer ${i}`, email }, { timeoutMs: 15_000 }),
          );
          if (res) customersAcked.push(res.customer!.id);
        } else {
          const key = `r${i}`;
          const event = { licenseKey, metric: "tokens", quantity: 1n, idempotencyKey: key } as UsageEvent;
          const res = await balancer.call("RecordUsage", (m) => m.usage.recordUsage({ event }, { timeoutMs: 15_000 }));
          if (res) usageAcked.push(key);
        }
      }
    };
    // A stream: three batches of 50 events, the request side closed after them, every batch acknowledged, status OK.
    const streamClient = async (c: number) => {
      for (let s = 0; running; s++) {
        streams++;
        await balancer.call("StreamUsage", async (m) => {
          const requests = outbox<StreamUsageRequest>();
          const sent: string[] = [];
          for (let b = 0; b < 3; b++) {
            const batchId = `s${c}.${s}.${b}`;
            const events = Array.from(
              { length: 50 },
              (_, j) =>
                ({ licenseKey, metric: "tokens", quantity: 1n, idempotencyKey: `${batchId}.${j}` }) as UsageEvent,
            );
            requests.push({ batchId, events } as StreamUsageRequest);
            sent.push(batchId);
          }
          requests.end();
          const acked: string[] = [];
          for await (const ack of m.usage.streamUsage(requests.messages, { timeoutMs: 30_000 })) {
            acked.push(ack.batchId);
            if (ack.accepted !== 50) throw new Error(`batch ${ack.batchId}: ${ack.accepted} of 50 events accepted`);
            for (let j = 0; j < 50; j++) streamAcked.push(`${ack.batchId}.${j}`);
          }
          if (acked.length !== sent.length) throw new Error(`${acked.length} of ${sent.length} batches acknowledged`);
        });
      }
    };
    const load = Promise.all([
      ...Array.from({ length: 4 }, unaryClient),
      ...Array.from({ length: 2 }, (_, c) => streamClient(c)),
    ]);
    cleanup.push(async () => {
      running = false;
      await load;
      await balancer.stop();
    });
    await sleep(1500);

    const runbook = new Runbook("rolling-upgrade", {
      ...settings,
      LICENSD_DATA_DIR: mkdtempSync(path.join(os.tmpdir(), "licensd-drill-upgrade-")),
      LICENSD_URL: url,
      LICENSD_API_KEY: secrets.LICENSD_SUPER_ADMIN_KEY,
      LICENSD_TENANT: tenantId,
    });

    balancer.phase = "migrate";
    mark("load running");
    await runbook.step("migrate", async (res) => {
      expect(res.stdout + res.stderr).toContain("Migration20261206000000Webhooks");
      expect(await tables()).toEqual(NEW_TABLES);
    });
    // The previous release keeps serving on the migrated schema; one more of its instances still starts there (the
    // runbook's word on crashes, autoscalers and rolling back), and serves the balancer's calls for a while.
    const late = balancer.member("instance 4", await start("old"), "old");
    balancer.add(late);
    await sleep(2000);
    await balancer.drain(late);
    expect(await within(late.server.stop("SIGTERM"), "instance 4 to exit", 30_000)).toBe(0);

    await runbook.step("replace-instances", async () => {
      for (const [i, m] of members.entries()) {
        balancer.phase = `replacing instance ${i + 1}`;
        mark(balancer.phase);
        await balancer.drain(m);
        expect(await within(m.server.stop("SIGTERM"), `${m.name} to exit`, 30_000)).toBe(0);
        const fresh = await start("new", m.server.port);
        // startServer returned once /healthz answered ok: SERVING.
        balancer.add(balancer.member(m.name, fresh, "new"));
        await sleep(1500);
      }
    });
    mark("all replaced");
    // The next upgrade, from this release: SIGTERM alone, no balancer step; its health checks take the instance out
    // during LICENSD_SHUTDOWN_DELAY_MS.
    const HEALTH_ONLY = "SIGTERM only (health checks)";
    balancer.phase = HEALTH_ONLY;
    const target = balancer.pool[0]!;
    expect(await within(target.server.stop("SIGTERM"), `${target.name} to exit`, 30_000)).toBe(0);
    expect(balancer.leftByHealth).toEqual([target.name]);
    balancer.add(balancer.member(target.name, await start("new", target.server.port), "new"));
    await sleep(1000);
    balancer.phase = "after";
    mark("restarted one by health checks alone");
    await sleep(1000);
    running = false;
    await within(load, "the load to end", 60_000);
    await balancer.stop();
    mark("load ended");
    await runbook.step("verify", (res) => {
      console.info(`verify step:\n${res.stdout}`);
      expect(res.stdout).not.toContain("FAIL");
      expect(res.stdout).toMatch(/^ok /m);
      expect(res.stdout.trim().split("\n").at(-1)).toBe("4");
    });
    runbook.finish();
    mark("verified");

    const during = [...balancer.calls].filter(([phase]) => !["warm-up", "after", HEALTH_ONLY].includes(phase));
    const callsDuringUpgrade = during.reduce((x, [, c]) => x + c, 0);
    console.info(
      `rolling upgrade: ${callsDuringUpgrade} calls during the upgrade (${during.map(([p, c]) => `${p}: ${c}`).join(", ")}); ` +
        `${[...balancer.calls.values()].reduce((x, c) => x + c, 0)} in all: ${validations} validations, ` +
        `${customersAcked.length} customers, ${usageAcked.length} RecordUsage, ${streams} streams ` +
        `(${streamAcked.length} events); ${balancer.failures.length} failed; left the pool by health check: ` +
        `${balancer.leftByHealth.join(", ") || "none"}; ${balancer.calls.get(HEALTH_ONLY)} calls while one new ` +
        "instance was stopped by SIGTERM alone",
    );
    console.info(`timeline: ${marks.join(", ")}`);
    if (balancer.failures.length > 0)
      console.info(`failures (first 10):\n${balancer.failures.slice(0, 10).join("\n")}`);
    expect(balancer.failures).toEqual([]);
    expect(balancer.pool.map((m) => m.release)).toEqual(["new", "new", "new"]);
    // Only the instance stopped by SIGTERM alone left the pool by health check; the runbook's were taken out first.
    expect(balancer.leftByHealth).toEqual([target.name]);
    expect(balancer.calls.get(HEALTH_ONLY)).toBeGreaterThan(0);
    for (const [phase, c] of during) expect(c, `calls during ${phase}`).toBeGreaterThan(0);

    // Every acknowledged write is stored, once.
    const customers = await query<{ id: string }>(
      db.url,
      "select id from customers where tenant_id = $1 and email like 'drill-%'",
      [tenantId],
    );
    expect(customers.map((r) => r.id).sort()).toEqual([...customersAcked].sort());
    const events = await query<{ k: string; n: number }>(
      db.url,
      "select idempotency_key as k, count(*)::int as n from usage_events where license_id = $1 group by 1",
      [licenseId],
    );
    expect(events.filter((r) => r.n !== 1)).toEqual([]);
    expect(events.map((r) => r.k).sort()).toEqual([...usageAcked, ...streamAcked].sort());
    // Each acknowledged customer has its audit entry, whichever release wrote it (the chain verified above).
    const audited = await query<{ n: number }>(
      db.url,
      "select count(*)::int as n from audit_events where tenant_id = $1 and type = 'customer.created'",
      [tenantId],
    );
    expect(audited[0]!.n).toBe(customersAcked.length + 1);
  }, 480_000);
});

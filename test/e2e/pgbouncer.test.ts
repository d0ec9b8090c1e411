import { mkdtempSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  ActivationService,
  type ConnectLeaseRequest,
} from "../../gen/ts/licensd/activation/v1/activation_service_pb.js";
import { AuditService } from "../../gen/ts/licensd/audit/v1/audit_service_pb.js";
import { LicensingService, ValidationCode } from "../../gen/ts/licensd/licensing/v1/licensing_service_pb.js";
import { ApiKeyScope } from "../../gen/ts/licensd/tenant/v1/api_key_pb.js";
import { TenantService } from "../../gen/ts/licensd/tenant/v1/tenant_service_pb.js";
import { Aggregation } from "../../gen/ts/licensd/usage/v1/usage_pb.js";
import { UsageService } from "../../gen/ts/licensd/usage/v1/usage_service_pb.js";
import { ComposeStrategy, FeatureKind } from "../../gen/ts/licensd/licensing/v1/product_pb.js";
import { connectClient, grpcClient } from "../support/app.js";
import { TEST_SERVER_URL, createTestDatabase, query } from "../support/database.js";
import { outbox } from "../support/outbox.js";
import { startPgBouncer, type PgBouncer } from "../support/pgbouncer.js";
import { ROOT, run, startServer, type ServerProcess } from "../support/server.js";
import { within } from "../support/wait.js";

// licensd behind a PgBouncer in transaction pooling mode (docs/pgbouncer.md): three server connections shared by two
// instances' pools, LISTEN and migrations on the direct URL.
const POOL_SIZE = 3;
let bouncer: PgBouncer;
let database: { url: string; drop(): Promise<void> };
let env: Record<string, string>;
const servers: (ServerProcess & { dropDatabase(): Promise<void> })[] = [];

beforeAll(async () => {
  database = await createTestDatabase();
  bouncer = await startPgBouncer(TEST_SERVER_URL, { poolSize: POOL_SIZE });
  env = {
    LICENSD_DATABASE_URL: bouncer.through(database.url),
    LICENSD_DATABASE_DIRECT_URL: database.url,
    LICENSD_DATABASE_POOLER: "pgbouncer-transaction",
    LICENSD_DB_POOL_MAX: "10",
    // Tails re-read the log at each keep-alive: past the tests' bound, so only a NOTIFY can wake them in time.
    LICENSD_AUDIT_KEEPALIVE_MS: "60000",
  };
  const a = await startServer({ env });
  servers.push(a);
  // A second instance on the same database and keys: what it changes reaches the first only through NOTIFY.
  servers.push(
    await startServer({ env: { ...env, LICENSD_SUPER_ADMIN_KEY: a.superAdminKey, LICENSD_DATA_KEY: a.dataKey } }),
  );
});

afterAll(async () => {
  for (const s of servers) {
    await s.stop();
    // (startServer made a database of its own, unused: these servers were given ours)
    await s.dropDatabase();
  }
  await bouncer?.stop();
  await database?.drop();
});

describe("behind PgBouncer (transaction pooling)", () => {
  it("migrates, serves a realistic mix over 3 shared server connections, and pushes across instances", async () => {
    const [a, b] = [servers[0]!, servers[1]!];
    const applied = await query<{ n: number }>(database.url, "select count(*)::int as n from mikro_orm_migrations");
    expect(applied[0]!.n).toBeGreaterThan(10);

    const tenants = connectClient(TenantService, a.url, a.superAdminKey);
    const { tenant } = await tenants.createTenant({ name: "Pooled vendor" });
    const { secret } = await tenants.createApiKey({ tenantId: tenant!.id, name: "admin", scopes: [ApiKeyScope.ADMIN] });
    const api = connectClient(LicensingService, a.url, secret);
    const product = (
      await api.createProduct({
        code: "PLB",
        name: "Pooled App",
        features: [{ name: "tokens", kind: FeatureKind.LIMIT, compose: ComposeStrategy.SUM }],
      })
    ).product!;
    await connectClient(UsageService, a.url, secret).createMeter({
      productId: product.id,
      metric: "tokens",
      aggregation: Aggregation.SUM,
    });
    const policy = (await api.createPolicy({ productId: product.id, name: "pro", floating: true, maxMachines: 100 }))
      .policy!;
    const customer = (await api.createCustomer({ name: "Pat", email: "pat@pool.example" })).customer!;
    const { key, license } = await api.createLicense({ policyId: policy.id, customerId: customer.id });

    // The audit tail and the lease stream are on instance a; every change below is made on instance b.
    const abort = new AbortController();
    const tail = grpcClient(AuditService, a.url, secret)
      .tailAuditEvents({ afterSeq: 0n }, { signal: abort.signal })
      [Symbol.asyncIterator]();
    const activation = (url: string) => connectClient(ActivationService, url);
    await activation(b.url).activate({ key, fingerprint: "agent-1" });
    const heartbeats = outbox<ConnectLeaseRequest>();
    heartbeats.push({ key, fingerprint: "agent-1" } as ConnectLeaseRequest);
    const lease = grpcClient(ActivationService, a.url)
      .connectLease(heartbeats.messages, { signal: abort.signal })
      [Symbol.asyncIterator]();
    const first = await within(lease.next(), "the first lease");
    expect(first.value?.event.case).toBe("lease");

    // 50 calls at once from each instance's pool (10 clients each) through PgBouncer's 3 server connections:
    // validations (the named-statement hot path), machines, heartbeats and usage, on both instances.
    const both = [a.url, b.url];
    const calls = Array.from({ length: 50 }, (_, i) => {
      const url = both[i % 2]!;
      switch (i % 5) {
        case 0:
          return activation(url).activate({ key, fingerprint: `agent-${i + 2}` });
        case 1:
          return activation(url).heartbeat({ key, fingerprint: "agent-1" });
        case 2:
          return connectClient(UsageService, url).recordUsage({
            event: { licenseKey: key, metric: "tokens", quantity: 2n, idempotencyKey: `ev-${i}` },
          });
        default:
          return connectClient(LicensingService, url).validateLicense({ key, fingerprint: "agent-1" });
      }
    });
    const results = await Promise.allSettled(calls);
    expect(results.filter((r) => r.status === "rejected")).toEqual([]);
    const codes = results.flatMap((r) =>
      r.status === "fulfilled" && "code" in r.value ? [ValidationCode[r.value.code as ValidationCode]] : [],
    );
    expect(codes).toHaveLength(20);
    expect(new Set(codes)).toEqual(new Set(["VALID"]));
    const quota = await connectClient(UsageService, b.url, secret).getQuota({
      licenseId: license!.id,
      metric: "tokens",
    });
    expect(quota.limits[0]!.used).toBe(20n);
    const machines = await connectClient(ActivationService, b.url, secret).listMachines({ licenseId: license!.id });
    expect(machines.machines).toHaveLength(11);
    // PgBouncer held the database to its pool: at most 3 server connections, plus each instance's LISTEN session.
    const sessions = await query<{ n: number }>(
      TEST_SERVER_URL,
      "select count(*)::int as n from pg_stat_activity where datname = $1 and pid <> pg_backend_pid()",
      [new URL(database.url).pathname.slice(1)],
    );
    expect(sessions[0]!.n).toBeLessThanOrEqual(POOL_SIZE + servers.length);

    // Suspended on b: a's lease stream and a's audit tail hear it through LISTEN on the direct URL.
    await connectClient(LicensingService, b.url, secret).suspendLicense({ id: license!.id });
    for (;;) {
      const next = await within(lease.next(), "the revocation pushed to the lease stream");
      if (next.done || next.value.event.case === "revocation") {
        expect(next.value?.event.value).toMatchObject({ reason: "LICENSE_SUSPENDED" });
        break;
      }
    }
    for (;;) {
      const next = await within(tail.next(), "license.suspended on the audit tail");
      expect(next.done).toBe(false);
      if (next.value.message.case === "event" && next.value.message.value.type === "license.suspended") break;
    }
    abort.abort();
    const after = await connectClient(LicensingService, a.url).validateLicense({ key, fingerprint: "agent-1" });
    expect(ValidationCode[after.code]).toBe("SUSPENDED");
  });

  it("refuses to start behind pgbouncer-transaction without LICENSD_DATABASE_DIRECT_URL, naming it", async () => {
    const res = await run(process.execPath, [path.join(ROOT, "bin/licensd.js"), "serve"], {
      env: {
        LICENSD_DATABASE_URL: bouncer.through(database.url),
        LICENSD_DATABASE_DIRECT_URL: "",
        LICENSD_DATABASE_POOLER: "pgbouncer-transaction",
        LICENSD_DATA_DIR: mkdtempSync(path.join(os.tmpdir(), "licensd-pooler-")),
      },
    });
    expect(res.code).toBe(2);
    expect(res.stderr).toContain("LICENSD_DATABASE_DIRECT_URL: required with LICENSD_DATABASE_POOLER=pgbouncer");
  });
});

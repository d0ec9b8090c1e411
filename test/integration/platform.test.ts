import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Health, HealthCheckResponse_ServingStatus as S } from "../../gen/ts/health/v1/health_pb.js";
import { TenantService } from "../../gen/ts/licensd/tenant/v1/tenant_service_pb.js";
import { licensdServices } from "../../src/connect.js";
import { connectClient, grpcClient, startTestApp, type TestApp } from "../support/app.js";
import { createTestDatabase } from "../support/database.js";
import { failure } from "../support/errors.js";
import { TcpProxy } from "../support/tcp-proxy.js";
import { verifyEd25519 } from "../../src/platform/signing-keys.js";

async function until<T>(fn: () => Promise<T>, ok: (v: T) => boolean, ms = 10_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (ok(v) || Date.now() > deadline) return v;
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe("health, metrics and readiness", () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp();
  });
  afterAll(async () => t?.close());

  it("answers Check and List for the server and each licensd service; unknown services are NOT_FOUND", async () => {
    const health = grpcClient(Health, t.url);
    expect((await health.check({ service: "" })).status).toBe(S.SERVING);
    for (const svc of licensdServices) expect((await health.check({ service: svc.typeName })).status).toBe(S.SERVING);
    expect(await failure(health.check({ service: "no.such.Service" }))).toMatchObject({ code: "NotFound" });
    expect((await health.check({ service: "licensd.webhook.v1.WebhookService" })).status).toBe(S.SERVING);
    const list = await health.list({});
    expect(Object.keys(list.statuses).sort()).toEqual(["", ...licensdServices.map((s) => s.typeName)].sort());
    const res = await fetch(`${t.url}/healthz`);
    expect(res.status).toBe(200);
  });

  it("serves Prometheus metrics with requests by method and code, latency and the DB pool", async () => {
    const admin = connectClient(TenantService, t.url, t.superAdminKey);
    await admin.createTenant({ name: "Metered" });
    await failure(admin.getTenant({ id: "ten_00000000000000000000000000" }));
    const text = await (await fetch(`${t.url}/metrics`)).text();
    expect(text).toContain(
      'licensd_rpc_requests_total{procedure="licensd.tenant.v1.TenantService/CreateTenant",code="ok"} 1',
    );
    expect(text).toContain(
      'licensd_rpc_requests_total{procedure="licensd.tenant.v1.TenantService/GetTenant",code="not_found"} 1',
    );
    expect(text).toMatch(
      /licensd_rpc_duration_seconds_bucket\{le="0.005",procedure="licensd.tenant.v1.TenantService\/CreateTenant"\} \d/,
    );
    expect(text).toMatch(/licensd_db_pool_total \d+/);
  });
});

describe("database outage", () => {
  it("turns NOT_SERVING while the database is unreachable, answers UNAVAILABLE, and recovers", async () => {
    const db = await createTestDatabase();
    const target = new URL(db.url);
    const proxy = new TcpProxy({ host: target.hostname, port: Number(target.port || 5432) });
    const port = await proxy.start();
    const viaProxy = new URL(db.url);
    viaProxy.port = String(port);
    const t = await startTestApp({ databaseUrl: viaProxy.toString() });
    try {
      const health = grpcClient(Health, t.url);
      const watch = health.watch({ service: "licensd.tenant.v1.TenantService" })[Symbol.asyncIterator]();
      expect((await watch.next()).value.status).toBe(S.SERVING);

      await proxy.cut();
      expect((await watch.next()).value.status).toBe(S.NOT_SERVING);
      expect((await health.check({ service: "" })).status).toBe(S.NOT_SERVING);
      expect((await fetch(`${t.url}/healthz`)).status).toBe(503);
      const f = await failure(
        connectClient(TenantService, t.url, t.superAdminKey).createTenant({ name: "during outage" }),
      );
      expect(f).toMatchObject({ code: "Unavailable", reason: "DATABASE_UNAVAILABLE" });

      await proxy.start(port);
      expect((await watch.next()).value.status).toBe(S.SERVING);
      const ok = await until(
        () =>
          connectClient(TenantService, t.url, t.superAdminKey)
            .createTenant({ name: "after outage" })
            .then(
              () => true,
              () => false,
            ),
        (v) => v,
      );
      expect(ok).toBe(true);
      await watch.return?.();
    } finally {
      await t.close();
      await proxy.cut();
      await db.drop();
    }
  });
});

describe("graceful shutdown", () => {
  it("finishes in-flight calls, ends open streams, then refuses new connections", async () => {
    const t = await startTestApp();
    const admin = connectClient(TenantService, t.url, t.superAdminKey);
    const { tenant } = await admin.createTenant({ name: "Before" });

    // Hold the tenant's row lock so an UpdateTenant is provably in flight during shutdown.
    const locker = new pg.Client({ connectionString: t.databaseUrl });
    await locker.connect();
    await locker.query("begin");
    await locker.query("select * from tenants where id = $1 for update", [tenant!.id]);
    const update = admin.updateTenant({ tenant: { id: tenant!.id, name: "After" }, updateMask: { paths: ["name"] } });
    const watch = grpcClient(Health, t.url).watch({ service: "" });
    const received: S[] = [];
    const watching = (async () => {
      for await (const r of watch) received.push(r.status);
    })();
    await until(
      async () => t.app.server.inFlight(),
      (n) => n >= 2,
    );

    const closing = t.app.close();
    await new Promise((r) => setTimeout(r, 300));
    await locker.query("commit");
    await locker.end();

    expect((await update).tenant!.name).toBe("After");
    await watching; // the stream ended instead of hanging
    expect(received[0]).toBe(S.SERVING);
    await closing;
    await expect(fetch(`${t.url}/healthz`)).rejects.toThrow();
    await t.close();
  });
});

describe("signatures made at the end of the turn (ValidateLicense's)", () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp();
  });
  afterAll(async () => t?.close());

  it("signs what a turn asks under the active key, each its own message; after a rotation under the new one", async () => {
    const keys = t.app.signingKeys;
    const publicKey = (kid: string) => keys.publicKeys().find((k) => k.kid === kid)!.publicKey;
    const texts = Array.from({ length: 50 }, (_, i) => `{"n":${i},"text":"é ${"x".repeat(i * 40)}"}`);
    const check = (signed: { kid: string; signature: Buffer }[], kid: string) => {
      for (const [i, s] of signed.entries()) {
        expect(s.kid).toBe(kid);
        expect(verifyEd25519(publicKey(kid), Buffer.from(texts[i]!), s.signature)).toBe(true);
        expect(verifyEd25519(publicKey(kid), Buffer.from(texts[(i + 1) % texts.length]!), s.signature)).toBe(false);
      }
    };
    const first = keys.activeKid();
    check(await Promise.all(texts.map((m) => keys.signLater(m))), first);
    // Asked in separate turns, each on its own.
    const oneByOne = [];
    for (const m of texts.slice(0, 5)) oneByOne.push(await keys.signLater(m));
    check(oneByOne, first);

    const {
      key: { kid: second },
    } = await t.app.db.tx((em) => keys.rotate(em, 3600));
    await keys.reload();
    expect(second).not.toBe(first);
    check(await Promise.all(texts.map((m) => keys.signLater(m))), second);
  });
});

import { existsSync, mkdtempSync, readFileSync, statSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ActivationService } from "../../gen/ts/licensd/activation/v1/activation_service_pb.js";
import { LicensingService } from "../../gen/ts/licensd/licensing/v1/licensing_service_pb.js";
import { ExpirationStrategy } from "../../gen/ts/licensd/licensing/v1/policy_pb.js";
import { ComposeStrategy, FeatureKind } from "../../gen/ts/licensd/licensing/v1/product_pb.js";
import { ApiKeyScope } from "../../gen/ts/licensd/tenant/v1/api_key_pb.js";
import { TenantService } from "../../gen/ts/licensd/tenant/v1/tenant_service_pb.js";
import { type LicenseInfo, verifyLease } from "@licensd/client";
import { LicenseGuard, type LicenseGuardOptions } from "@licensd/client/node";
import { ManualClock } from "../../src/platform/clock.js";
import { connectClient, startTestApp, type TestApp } from "../support/app.js";
import { createTestDatabase } from "../support/database.js";
import { BOUND_MS } from "../support/wait.js";

let db: { url: string; drop(): Promise<void> };
let a: TestApp;
const guards: LicenseGuard[] = [];

beforeAll(async () => {
  db = await createTestDatabase();
  a = await startTestApp({ databaseUrl: db.url });
});
afterAll(async () => {
  await Promise.all(guards.map((g) => g.stop()));
  await a?.close();
  await db?.drop();
});

/** A tenant, a product with a "reports" flag and a floating policy granting it, with a license on it. */
async function setup(code: string) {
  const tenants = connectClient(TenantService, a.url, a.superAdminKey);
  const { tenant } = await tenants.createTenant({ name: `${code} vendor` });
  const { secret } = await tenants.createApiKey({ tenantId: tenant!.id, name: "admin", scopes: [ApiKeyScope.ADMIN] });
  const api = connectClient(LicensingService, a.url, secret);
  const product = (
    await api.createProduct({
      code,
      name: "App",
      features: [{ name: "reports", kind: FeatureKind.FLAG, compose: ComposeStrategy.UNION }],
    })
  ).product!;
  const pol = (
    await api.createPolicy({
      productId: product.id,
      name: "team",
      floating: true,
      maxMachines: 3,
      entitlements: [{ feature: "reports", value: { case: "enabled", value: true } }],
    })
  ).policy!;
  const customer = (await api.createCustomer({ name: "Jane", email: `jane@${code.toLowerCase()}.example` })).customer!;
  const lic = await api.createLicense({ policyId: pol.id, customerId: customer.id });
  return { secret, api, key: lic.key, licenseId: lic.license!.id };
}

const cachePath = () => path.join(mkdtempSync(path.join(os.tmpdir(), "license-guard-")), "lease.json");
const readCache = (file: string) =>
  JSON.parse(readFileSync(file, "utf8")) as { lease: string | null; keys: { kid: string; publicKey: string }[] };

/** A guard with test-sized intervals; every guard is stopped before the servers close. */
function guard(opts: Partial<LicenseGuardOptions> & Pick<LicenseGuardOptions, "key" | "cacheFile">) {
  const g = new LicenseGuard({
    baseUrl: a.url,
    fingerprint: "fp",
    heartbeatIntervalMs: 100,
    backoff: { initialMs: 50, maxMs: 200 },
    ...opts,
  });
  guards.push(g);
  return g;
}

async function waitFor(what: string, cond: () => boolean, timeoutMs = BOUND_MS) {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** A URL nothing listens on. */
/**
 * An address where no licensd answers: connections are refused. Port 1, below the range
 * the kernel hands out (a port taken from listen(0) and closed again could be handed
 * meanwhile to a server another test file starts, and the guard would find a licensd there).
 */
const closedPortUrl = async () => "http://127.0.0.1:1";

/** A guard that is online and holds a lease, and the cache file it wrote. */
async function onlineGuard(code: string, opts: Partial<LicenseGuardOptions> = {}) {
  const s = await setup(code);
  const cacheFile = cachePath();
  const seen: LicenseInfo[] = [];
  const g = guard({ key: s.key, cacheFile, onChange: (i) => seen.push(i), ...opts });
  await g.start();
  await waitFor("the first lease on the stream", () => g.info().online && g.info().valid);
  // (written after the lease arrives, atomically: absent until then)
  await waitFor("the cache file", () => existsSync(cacheFile) && readCache(cacheFile).lease !== null);
  return { s, g, cacheFile, seen };
}

describe("LicenseGuard", () => {
  it("activates, keeps the lease fresh over ConnectLease and caches it (mode 0600)", async () => {
    const s = await setup("LGA");
    const cacheFile = cachePath();
    const seen: LicenseInfo[] = [];
    const g = guard({ key: s.key, cacheFile, onChange: (i) => seen.push(i) });
    await g.start();
    expect(g.info()).toMatchObject({ valid: false, code: "NO_LEASE", features: [] });
    expect(g.hasFeature("reports")).toBe(false);

    await waitFor(
      "three leases (activation and heartbeats)",
      () => seen.filter((i) => i.valid && i.online).length >= 3,
    );
    const [machine] = (await connectClient(ActivationService, a.url, s.secret).listMachines({ licenseId: s.licenseId }))
      .machines;
    expect(machine).toMatchObject({ fingerprint: "fp", licenseId: s.licenseId });
    expect(g.info()).toMatchObject({
      valid: true,
      code: "VALID",
      grace: false,
      status: "active",
      tier: "team",
      features: ["reports"],
      licenseId: s.licenseId,
      machineId: machine!.id,
      online: true,
      error: null,
    });
    expect(g.info().expiry!.getTime()).toBeGreaterThan(Date.now());
    expect(g.hasFeature("reports")).toBe(true);
    expect(g.hasFeature("export")).toBe(false);
    expect(g.entitlement("reports")).toBe(true);
    expect(g.entitlement("export")).toBeUndefined();

    expect(g.running).toBe(true);

    expect(statSync(cacheFile).mode & 0o777).toBe(0o600);
    const cache = readCache(cacheFile);
    await waitFor("the cache to hold the lease the guard holds", () => readCache(cacheFile).lease === g.lease);
    const keys = cache.keys.map((k) => ({ kid: k.kid, publicKey: Buffer.from(k.publicKey, "base64") }));
    expect(await verifyLease(cache.lease!, keys, { fingerprint: "fp" })).toMatchObject({
      valid: true,
      lease: { machine_id: machine!.id, features: ["reports"] },
    });

    await g.stop();
    expect(g.info().online).toBe(false);
    expect(g.running).toBe(false);
    await waitFor("the server to see the stream end", () => a.app.hub.size === 0);
  });

  it("reports a wrong key, keeps no lease and does not retry", async () => {
    const s = await setup("LGW");
    const seen: LicenseInfo[] = [];
    const g = guard({
      key: `${s.key.slice(0, -1)}${s.key.endsWith("A") ? "B" : "A"}`,
      cacheFile: cachePath(),
      onChange: (i) => seen.push(i),
    });
    await g.start();
    await waitFor("the refusal", () => g.info().code === "INVALID_LICENSE_KEY");
    await new Promise((r) => setTimeout(r, 300));
    expect(seen.map((i) => i.code)).toEqual(["INVALID_LICENSE_KEY"]);
    expect(g.hasFeature("reports")).toBe(false);
    expect(g.running).toBe(false);
    expect(g.lease).toBeNull();
    expect(
      (await connectClient(ActivationService, a.url, s.secret).listMachines({ licenseId: s.licenseId })).machines,
    ).toEqual([]);
    await g.stop();
  });

  it("answers from the cache at once when licensd cannot be reached, and stops granting once the lease expires", async () => {
    const { s, g, cacheFile } = await onlineGuard("LGB");
    await g.stop();
    const expiry = g.info().expiry!; // of the last lease, the one the cache holds

    const url = await closedPortUrl();
    const offline = guard({ baseUrl: url, key: s.key, cacheFile });
    await offline.start();
    expect(offline.hasFeature("reports")).toBe(true);
    expect(offline.info()).toMatchObject({ valid: true, online: false, expiry });
    await waitFor("a failed connection attempt", () => offline.info().error !== null);
    expect(offline.info().error).toMatch(/^Unavailable/);
    expect(offline.hasFeature("reports")).toBe(true); // failures keep the cached lease

    const later = guard({ baseUrl: url, key: s.key, cacheFile, now: () => new Date(expiry.getTime() + 1_000) });
    await later.start();
    expect(later.hasFeature("reports")).toBe(false);
    expect(later.info()).toMatchObject({ valid: false, code: "EXPIRED", features: [], expiry });
    await Promise.all([offline.stop(), later.stop()]);
  });

  it("drops the lease on a pushed suspension and takes the reinstated license back", async () => {
    const { s, g, cacheFile } = await onlineGuard("LGC");
    await s.api.suspendLicense({ id: s.licenseId });
    // How soon a suspension reaches a stream is measured in bench/propagation.ts (BENCHMARKS.md).
    await waitFor("the suspension", () => g.info().code === "LICENSE_SUSPENDED");
    expect(g.info()).toMatchObject({ valid: false, features: [] });
    expect(g.hasFeature("reports")).toBe(false);
    await waitFor("the cache without a lease", () => readCache(cacheFile).lease === null);

    // Suspension may be undone: the guard keeps trying (slowly) and is refused until then.
    await new Promise((r) => setTimeout(r, 300));
    expect(g.info().code).toBe("LICENSE_SUSPENDED");
    await s.api.reinstateLicense({ id: s.licenseId });
    await waitFor("a lease after reinstatement", () => g.info().valid);
    expect(g.hasFeature("reports")).toBe(true);
    await waitFor("the cache with a lease", () => readCache(cacheFile).lease !== null);
    await g.stop();
  });

  it("stops for good when the machine is deleted, and does not take the seat back", async () => {
    // No heartbeats: one after the deletion would be refused first (MACHINE_DEACTIVATED), before the push arrives.
    const { s, g, cacheFile } = await onlineGuard("LGD", { heartbeatIntervalMs: 600_000 });
    const admin = connectClient(ActivationService, a.url, s.secret);
    await admin.deleteMachine({ id: g.info().machineId! });
    await waitFor("the deletion", () => g.info().code === "MACHINE_DELETED");
    expect(g.hasFeature("reports")).toBe(false);
    expect(g.lease).toBeNull();
    await waitFor("the guard to give up", () => !g.running);
    await new Promise((r) => setTimeout(r, 600)); // three times the longest retry delay
    expect((await admin.listMachines({ licenseId: s.licenseId })).machines).toEqual([]);
    expect(readCache(cacheFile).lease).toBeNull();
    await g.stop();
  });

  it("refuses a tampered, garbled or foreign cache without throwing", async () => {
    const { s, g, cacheFile } = await onlineGuard("LGE");
    await g.stop();
    const url = await closedPortUrl();
    const offline = async (file: string, fingerprint = "fp") => {
      const o = guard({ baseUrl: url, key: s.key, cacheFile: file, fingerprint });
      await o.start();
      const info = o.info();
      expect(o.hasFeature("reports")).toBe(false);
      await o.stop();
      return info;
    };
    const cache = readCache(cacheFile);
    const [prefix, body, sig] = cache.lease!.split(".");
    const claims = JSON.parse(Buffer.from(body!, "base64url").toString());
    claims.features.push("admin");
    claims.expires_at = "2099-01-01T00:00:00Z";
    const tampered = cachePath();
    writeFileSync(
      tampered,
      JSON.stringify({
        ...cache,
        lease: `${prefix}.${Buffer.from(JSON.stringify(claims)).toString("base64url")}.${sig}`,
      }),
    );
    expect(await offline(tampered)).toMatchObject({ valid: false, code: "BAD_SIGNATURE", features: [], tier: null });

    const garbled = cachePath();
    writeFileSync(garbled, "{not json");
    expect(await offline(garbled)).toMatchObject({
      valid: false,
      code: "NO_LEASE",
      error: expect.stringMatching(/not valid JSON/),
    });

    const badKey = cachePath();
    writeFileSync(badKey, JSON.stringify({ ...cache, keys: cache.keys.map((k) => ({ ...k, publicKey: "AAAA" })) }));
    expect(await offline(badKey)).toMatchObject({ valid: false });

    expect(await offline(cacheFile, "another-machine")).toMatchObject({ valid: false, code: "FINGERPRINT_MISMATCH" });
  });

  it("reconnects when licensd goes away and comes back on the same address", async () => {
    const env = { LICENSD_SUPER_ADMIN_KEY: a.superAdminKey, LICENSD_DATA_KEY: a.app.config.dataKey.toString("base64") };
    const first = await startTestApp({ databaseUrl: db.url, env });
    let second: TestApp | undefined;
    try {
      const { g, seen } = await onlineGuard("LGF", { baseUrl: first.url });
      await first.close();
      await waitFor("the stream to end", () => !g.info().online);
      expect(g.hasFeature("reports")).toBe(true); // the cached lease carries on

      const before = seen.length;
      second = await startTestApp({ databaseUrl: db.url, env: { ...env, LICENSD_PORT: new URL(first.url).port } });
      expect(second.url).toBe(first.url);
      await waitFor("a fresh lease from the new instance", () => seen.slice(before).some((i) => i.online && i.valid));
      expect(g.info()).toMatchObject({ valid: true, online: true, error: null });
      await g.stop();
    } finally {
      await second?.close();
    }
  });

  it("reports a license past its expiry that its policy still grants as valid on grace", async () => {
    // Another instance on the same database whose clock the test moves past the license's expiry.
    const clock = new ManualClock();
    const env = { LICENSD_SUPER_ADMIN_KEY: a.superAdminKey, LICENSD_DATA_KEY: a.app.config.dataKey.toString("base64") };
    const moved = await startTestApp({ databaseUrl: db.url, env, clock });
    try {
      const s = await setup("LGG");
      const pol = (
        await s.api.createPolicy({
          productId: (await s.api.getLicense({ id: s.licenseId })).license!.productId,
          name: "monthly",
          floating: true,
          maxMachines: 3,
          duration: { seconds: BigInt(30 * 86_400) },
          gracePeriod: { seconds: BigInt(7 * 86_400) },
          expirationStrategy: ExpirationStrategy.RESTRICT_ACCESS,
          entitlements: [{ feature: "reports", value: { case: "enabled", value: true } }],
        })
      ).policy!;
      const customer = (await s.api.createCustomer({ name: "Grace", email: "grace@lgg.example" })).customer!;
      const lic = await s.api.createLicense({ policyId: pol.id, customerId: customer.id });
      clock.advance(32 * 86_400_000); // two days past the expiry, five left of the grace period

      const g = guard({ baseUrl: moved.url, key: lic.key, cacheFile: cachePath(), now: () => clock.now() });
      await g.start();
      await waitFor("a lease", () => g.info().valid);
      expect(g.info()).toMatchObject({ valid: true, code: "VALID", grace: true, status: "expired", tier: "monthly" });
      expect(g.hasFeature("reports")).toBe(true);
      await g.stop();
    } finally {
      await moved.close();
    }
  });

  it("registers the machine's components when it activates, if given", async () => {
    const s = await setup("LGC");
    const components = [
      { name: "disk", fingerprint: "disk-1" },
      { name: "board", fingerprint: "board-1" },
    ];
    const g = guard({ key: s.key, cacheFile: cachePath(), fingerprint: "fp-c", components });
    await g.start();
    await waitFor("a lease", () => g.info().valid);
    await g.stop();
    const [machine] = (await connectClient(ActivationService, a.url, s.secret).listMachines({ licenseId: s.licenseId }))
      .machines;
    expect(machine!.components.map((c) => [c.name, c.fingerprint])).toEqual([
      ["board", "board-1"],
      ["disk", "disk-1"],
    ]);
  });
});

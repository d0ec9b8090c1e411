import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ActivationService } from "../../gen/ts/licensd/activation/v1/activation_service_pb.js";
import { AuditService } from "../../gen/ts/licensd/audit/v1/audit_service_pb.js";
import { LicensingService } from "../../gen/ts/licensd/licensing/v1/licensing_service_pb.js";
import { FeatureKind, ComposeStrategy } from "../../gen/ts/licensd/licensing/v1/product_pb.js";
import { ApiKeyScope } from "../../gen/ts/licensd/tenant/v1/api_key_pb.js";
import { TenantService } from "../../gen/ts/licensd/tenant/v1/tenant_service_pb.js";
import { verifyLease } from "@licensd/client";
import { ManualClock } from "../../src/platform/clock.js";
import { SigningKeyStatus } from "../../gen/ts/licensd/activation/v1/signing_key_pb.js";
import { ValidationCode } from "../../gen/ts/licensd/licensing/v1/licensing_service_pb.js";
import { validationSigningBytes } from "../../src/licensing/license.rpc.js";
import { verifyEd25519 } from "../../src/platform/signing-keys.js";
import { connectClient, grpcClient, startTestApp, type TestApp } from "../support/app.js";
import { createTestDatabase, query } from "../support/database.js";
import { failure } from "../support/errors.js";

let db: { url: string; drop(): Promise<void> };
let a: TestApp;
let b: TestApp;

beforeAll(async () => {
  db = await createTestDatabase();
  a = await startTestApp({ databaseUrl: db.url });
  b = await startTestApp({
    databaseUrl: db.url,
    env: { LICENSD_SUPER_ADMIN_KEY: a.superAdminKey, LICENSD_DATA_KEY: a.app.config.dataKey.toString("base64") },
  });
});
afterAll(async () => {
  await a?.close();
  await b?.close();
  await db?.drop();
});

/** A tenant with a product, a floating policy of 3 machines, a node-locked one, and a license on each. */
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
  const floating = (
    await api.createPolicy({
      productId: product.id,
      name: "team",
      floating: true,
      maxMachines: 3,
      entitlements: [{ feature: "reports", value: { case: "enabled", value: true } }],
    })
  ).policy!;
  const locked = (await api.createPolicy({ productId: product.id, name: "single", floating: false, maxMachines: 1 }))
    .policy!;
  const customer = (await api.createCustomer({ name: "Jane", email: `jane@${code.toLowerCase()}.example` })).customer!;
  const team = await api.createLicense({ policyId: floating.id, customerId: customer.id });
  const single = await api.createLicense({ policyId: locked.id, customerId: customer.id });
  return { tenantId: tenant!.id, secret, api, teamKey: team.key, teamId: team.license!.id, singleKey: single.key };
}

const activation = (t: TestApp, key?: string) => connectClient(ActivationService, t.url, key);

describe("activation", () => {
  it("activates, returns the same machine for the same fingerprint, and signs a lease the SDK verifies offline", async () => {
    const s = await setup("ACT");
    const first = await activation(a).activate({
      key: s.teamKey,
      fingerprint: "fp-1",
      hostname: "laptop",
      platform: "linux-x64",
      cores: 8,
    });
    expect(first.machine).toMatchObject({
      fingerprint: "fp-1",
      hostname: "laptop",
      cores: 8,
      licenseId: s.teamId,
      ip: "127.0.0.1",
    });
    const again = await activation(a).activate({ key: s.teamKey, fingerprint: "fp-1" });
    expect(again.machine!.id).toBe(first.machine!.id);
    // An agent restarting: what it leaves out is kept, what it says is recorded, with or
    // without an idempotency key (the one-statement path and the transactional one agree).
    expect(again.machine).toMatchObject({ hostname: "laptop", platform: "linux-x64", cores: 8 });
    expect(
      (await activation(a).activate({ key: s.teamKey, fingerprint: "fp-1", hostname: "laptop-2", cores: 16 })).machine,
    ).toMatchObject({ id: first.machine!.id, hostname: "laptop-2", platform: "linux-x64", cores: 16 });
    expect(
      (
        await activation(b).activate({
          key: s.teamKey,
          fingerprint: "fp-1",
          platform: "linux-arm64",
          idempotencyKey: "restart-1",
        })
      ).machine,
    ).toMatchObject({ id: first.machine!.id, hostname: "laptop-2", platform: "linux-arm64", cores: 16 });
    const keys = (await activation(b).getSigningKeys({})).keys;
    const check = await verifyLease(first.lease!.token, keys, { fingerprint: "fp-1" });
    expect(check).toMatchObject({
      valid: true,
      code: "VALID",
      lease: { typ: "lease", machine_id: first.machine!.id, license_id: s.teamId, features: ["reports"] },
    });
    expect(check.hasFeature("reports")).toBe(true);
    expect(Date.parse(check.lease!.expires_at!) - Date.now()).toBeGreaterThan(86_000_000); // Vinzy's 24 h default
    expect((await verifyLease(first.lease!.token, keys, { fingerprint: "fp-2" })).code).toBe("FINGERPRINT_MISMATCH");
    const [p, body, sig] = first.lease!.token.split(".");
    const forged = JSON.parse(Buffer.from(body, "base64url").toString());
    forged.features.push("everything");
    expect(
      (
        await verifyLease(`${p}.${Buffer.from(JSON.stringify(forged)).toString("base64url")}.${sig}`, keys, {
          fingerprint: "fp-1",
        })
      ).code,
    ).toBe("BAD_SIGNATURE");

    const beat = await grpcClient(ActivationService, b.url).heartbeat({ key: s.teamKey, fingerprint: "fp-1" });
    expect((await verifyLease(beat.lease!.token, keys, { fingerprint: "fp-1" })).valid).toBe(true);
    const audit = await connectClient(AuditService, a.url, s.secret).listAuditEvents({ typePrefix: "machine." });
    expect(audit.events.map((e) => [e.type, e.actor])).toEqual([["machine.activated", `license:${s.teamId}`]]);
  });

  it("creates exactly 3 machines from 20 concurrent activations against a limit of 3, across two instances", async () => {
    const s = await setup("CON");
    const results = await Promise.allSettled(
      Array.from({ length: 20 }, (_, i) =>
        activation(i % 2 ? a : b).activate({ key: s.teamKey, fingerprint: `fp-${i}` }),
      ),
    );
    expect(results.filter((r) => r.status === "fulfilled")).toHaveLength(3);
    for (const r of results.filter((r) => r.status === "rejected")) {
      expect(await failure(Promise.reject((r as PromiseRejectedResult).reason))).toMatchObject({
        code: "FailedPrecondition",
        reason: "TOO_MANY_MACHINES",
      });
    }
    expect(
      (await query(db.url, "select count(*)::int as n from machines where license_id = $1", [s.teamId]))[0].n,
    ).toBe(3);
  });

  it("frees a seat on deactivation, and binds node-locked licenses to their first machine", async () => {
    const s = await setup("SEA");
    for (const fp of ["a", "b", "c"]) await activation(a).activate({ key: s.teamKey, fingerprint: fp });
    expect(await failure(activation(a).activate({ key: s.teamKey, fingerprint: "d" }))).toMatchObject({
      reason: "TOO_MANY_MACHINES",
    });
    await activation(a).deactivate({ key: s.teamKey, fingerprint: "a" });
    expect((await activation(a).activate({ key: s.teamKey, fingerprint: "d" })).machine!.fingerprint).toBe("d");

    await activation(a).activate({ key: s.singleKey, fingerprint: "first" });
    expect(await failure(activation(a).activate({ key: s.singleKey, fingerprint: "second" }))).toMatchObject({
      code: "FailedPrecondition",
      reason: "FINGERPRINT_SCOPE_MISMATCH",
    });
    expect((await activation(a).activate({ key: s.singleKey, fingerprint: "first" })).machine!.fingerprint).toBe(
      "first",
    );
  });

  it("refuses suspended licenses, bad keys and bad input; manages machines by admin key, tenant-scoped", async () => {
    const s = await setup("ADM");
    const m = (await activation(a).activate({ key: s.teamKey, fingerprint: "fp" })).machine!;
    expect(
      await failure(activation(a).activate({ key: "ADM-AAAAA-BBBBB-CCCCC-DDDDD-EEEEE-FFFFF-GGGGG", fingerprint: "x" })),
    ).toMatchObject({ code: "Unauthenticated", reason: "INVALID_LICENSE_KEY" });
    expect(await failure(activation(a).activate({ key: s.teamKey, fingerprint: "" }))).toMatchObject({
      code: "InvalidArgument",
      metadata: { field: "fingerprint" },
    });
    expect(await failure(activation(a).activate({ key: s.teamKey, fingerprint: "x".repeat(256) }))).toMatchObject({
      code: "InvalidArgument",
      metadata: { field: "fingerprint" },
    });
    expect(await failure(activation(a).heartbeat({ key: s.teamKey, fingerprint: "unknown" }))).toMatchObject({
      code: "NotFound",
    });
    await s.api.suspendLicense({ id: s.teamId });
    expect(await failure(activation(a).heartbeat({ key: s.teamKey, fingerprint: "fp" }))).toMatchObject({
      code: "FailedPrecondition",
      reason: "LICENSE_SUSPENDED",
    });
    expect(await failure(activation(a).activate({ key: s.teamKey, fingerprint: "new" }))).toMatchObject({
      reason: "LICENSE_SUSPENDED",
    });
    await s.api.reinstateLicense({ id: s.teamId });

    const admin = activation(a, s.secret);
    expect((await admin.getMachine({ id: m.id })).machine!.fingerprint).toBe("fp");
    expect((await admin.listMachines({ licenseId: s.teamId })).machines.map((x) => x.id)).toEqual([m.id]);
    const other = await setup("OTH");
    expect(await failure(activation(a, other.secret).getMachine({ id: m.id }))).toMatchObject({
      code: "NotFound",
      reason: "MACHINE_NOT_FOUND",
    });
    expect(await failure(activation(a, other.secret).deleteMachine({ id: m.id }))).toMatchObject({ code: "NotFound" });
    expect(await failure(activation(a).listMachines({}))).toMatchObject({ code: "Unauthenticated" });
    await admin.deleteMachine({ id: m.id });
    expect(await failure(admin.getMachine({ id: m.id }))).toMatchObject({ code: "NotFound" });
    expect(await failure(activation(a).deactivate({ key: s.teamKey }))).toMatchObject({ code: "InvalidArgument" });
  });

  it("makes ValidateLicense's machine codes live when a fingerprint is given", async () => {
    const s = await setup("VMC");
    const validate = async (key: string, fingerprint: string) =>
      ValidationCode[(await connectClient(LicensingService, b.url).validateLicense({ key, fingerprint })).code];
    expect(await validate(s.teamKey, "fp-1")).toBe("NO_MACHINES");
    for (const fp of ["fp-1", "fp-2"]) await activation(a).activate({ key: s.teamKey, fingerprint: fp });
    expect(await validate(s.teamKey, "fp-1")).toBe("VALID");
    const withLease = await connectClient(LicensingService, b.url).validateLicense({
      key: s.teamKey,
      fingerprint: "fp-1",
    });
    const keys = (await activation(b).getSigningKeys({})).keys;
    expect((await verifyLease(withLease.lease, keys, { fingerprint: "fp-1" })).valid).toBe(true);
    const signer = keys.find((k) => k.kid === withLease.kid)!;
    expect(verifyEd25519(signer.publicKey, validationSigningBytes(withLease), withLease.signature)).toBe(true); // the lease is signed into the answer
    expect((await connectClient(LicensingService, b.url).validateLicense({ key: s.teamKey })).lease).toBe("");
    expect(await validate(s.teamKey, "fp-9")).toBe("NO_MACHINE");
    await activation(a).activate({ key: s.singleKey, fingerprint: "home" });
    expect(await validate(s.singleKey, "elsewhere")).toBe("FINGERPRINT_SCOPE_MISMATCH");
    await s.api.updateLicense({ id: s.teamId, maxMachines: 1, updateMask: { paths: ["max_machines"] } });
    expect(await validate(s.teamKey, "fp-1")).toBe("TOO_MANY_MACHINES");
    await s.api.updateLicense({ id: s.teamId, updateMask: { paths: ["max_machines"] } }); // back to the policy's 3
    const team = await s.api.getLicense({ id: s.teamId });
    await s.api.updatePolicy({
      id: team.license!.policyId,
      heartbeatDuration: { seconds: 60n, nanos: 0 },
      updateMask: { paths: ["heartbeat_duration"] },
    });
    expect(await validate(s.teamKey, "fp-1")).toBe("VALID");
    await query(
      db.url,
      "update machines set last_heartbeat_at = now() - interval '5 minutes' where license_id = $1 and fingerprint = 'fp-1'",
      [s.teamId],
    );
    expect(await validate(s.teamKey, "fp-1")).toBe("HEARTBEAT_DEAD");
    await activation(a).heartbeat({ key: s.teamKey, fingerprint: "fp-1" });
    expect(await validate(s.teamKey, "fp-1")).toBe("VALID");
  });

  it("rotates signing keys: old leases verify until the old key retires, new ones use the new key", async () => {
    const clock = new ManualClock(new Date());
    const c = await startTestApp({
      databaseUrl: db.url,
      clock,
      env: { LICENSD_SUPER_ADMIN_KEY: a.superAdminKey, LICENSD_DATA_KEY: a.app.config.dataKey.toString("base64") },
    });
    try {
      const s = await setup("ROT");
      const old = (await activation(c).activate({ key: s.teamKey, fingerprint: "fp" })).lease!;
      // Only the super-admin rotates, with a retire_after in range; refusals change nothing.
      expect(await failure(activation(c).rotateSigningKey({}))).toMatchObject({ code: "Unauthenticated" });
      expect(await failure(activation(c, s.secret).rotateSigningKey({}))).toMatchObject({
        code: "PermissionDenied",
        reason: "SUPER_ADMIN_REQUIRED",
      });
      for (const seconds of [-5n, 315_360_001n]) {
        expect(
          await failure(activation(c, a.superAdminKey).rotateSigningKey({ retireAfter: { seconds } })),
        ).toMatchObject({ code: "InvalidArgument", metadata: { field: "retire_after" } });
      }
      expect((await activation(c).getSigningKeys({})).keys.map((k) => k.kid)).toEqual([old.kid]);
      const rotated = await activation(c, a.superAdminKey).rotateSigningKey({
        retireAfter: { seconds: 3600n },
        idempotencyKey: "rot-1",
      });
      const kid = rotated.key!.kid;
      expect(rotated.retiringKids).toEqual([old.kid]);
      // A retry with the same idempotency key rotates nothing more and answers the same.
      expect(
        (
          await activation(c, a.superAdminKey).rotateSigningKey({
            retireAfter: { seconds: 3600n },
            idempotencyKey: "rot-1",
          })
        ).key!.kid,
      ).toBe(kid);
      const keys = (await activation(c).getSigningKeys({})).keys;
      expect(keys.map((k) => [k.kid, SigningKeyStatus[k.status]])).toEqual([
        [kid, "ACTIVE"],
        [old.kid, "RETIRING"],
      ]);
      expect((await verifyLease(old.token, keys, { fingerprint: "fp", now: clock.now() })).valid).toBe(true);
      const fresh = (await activation(c).heartbeat({ key: s.teamKey, fingerprint: "fp" })).lease!;
      expect(fresh.kid).toBe(kid);
      clock.advance(2 * 3600_000);
      const later = (await activation(c).getSigningKeys({})).keys;
      expect(later.map((k) => k.kid)).toEqual([kid]);
      expect((await verifyLease(old.token, later, { fingerprint: "fp", now: clock.now() })).code).toBe("UNKNOWN_KEY");
      expect((await verifyLease(fresh.token, later, { fingerprint: "fp", now: clock.now() })).valid).toBe(true);
    } finally {
      await c.close();
    }
  });

  it("a rotation reaches the other instances at once by NOTIFY; retire_after 0 withdraws every older key", async () => {
    // Two instances started now: their reload every minute is ~a minute away, so only the notification can tell the
    // second one about a rotation within the few seconds this waits.
    const env = { LICENSD_SUPER_ADMIN_KEY: a.superAdminKey, LICENSD_DATA_KEY: a.app.config.dataKey.toString("base64") };
    const d = await startTestApp({ databaseUrl: db.url, env });
    const e = await startTestApp({ databaseUrl: db.url, env });
    try {
      const s = await setup("NTF");
      const activeOn = async (t: TestApp) =>
        (await activation(t).getSigningKeys({})).keys.find((k) => k.status === SigningKeyStatus.ACTIVE)?.kid;
      const seenBy = async (t: TestApp, kid: string) => {
        for (const deadline = Date.now() + 10_000; Date.now() < deadline; ) {
          if ((await activeOn(t)) === kid) return true;
          await new Promise((r) => setTimeout(r, 50));
        }
        return false;
      };
      const before = (await activation(e).getSigningKeys({})).keys.map((k) => k.kid);
      const overlap = await activation(d, a.superAdminKey).rotateSigningKey({ retireAfter: { seconds: 3600n } });
      expect(overlap.retiredKids).toEqual([]);
      expect(await seenBy(e, overlap.key!.kid)).toBe(true);
      const lease = (await activation(e).activate({ key: s.teamKey, fingerprint: "fp" })).lease!;
      expect(lease.kid).toBe(overlap.key!.kid);
      const published = (await activation(e).getSigningKeys({})).keys;
      expect(published.map((k) => k.kid).sort()).toEqual([overlap.key!.kid, ...before].sort());

      // The leaked-key rotation: the active key and the retiring ones leave the published set everywhere at once.
      const now = await activation(e, a.superAdminKey).rotateSigningKey({ retireAfter: { seconds: 0n } });
      expect(now.retiringKids).toEqual([]);
      expect(now.retiredKids.sort()).toEqual([overlap.key!.kid, ...before].sort());
      expect(await seenBy(d, now.key!.kid)).toBe(true);
      for (const t of [d, e]) {
        const keys = (await activation(t).getSigningKeys({})).keys;
        expect(keys.map((k) => k.kid)).toEqual([now.key!.kid]);
        expect((await verifyLease(lease.token, keys, { fingerprint: "fp" })).code).toBe("UNKNOWN_KEY");
      }
      const renewed = (await activation(d).heartbeat({ key: s.teamKey, fingerprint: "fp" })).lease!;
      expect(renewed.kid).toBe(now.key!.kid);
      const current = (await activation(d).getSigningKeys({})).keys;
      expect((await verifyLease(renewed.token, current, { fingerprint: "fp" })).valid).toBe(true);
      const rows = await query<{ kid: string; status: string }>(db.url, "select kid, status from signing_keys");
      expect(rows.filter((r) => r.status !== "retired").map((r) => r.kid)).toEqual([now.key!.kid]);
    } finally {
      await d.close();
      await e.close();
    }
  });
});

/*
 * @licensd/client's verifiers against a real licensd (in this process, on a real port):
 * SigningKeys fetches the keys over Connect GET with the global fetch, follows a key
 * rotation, honours retired keys and survives licensd going away; the signed answers,
 * leases and audit proofs licensd gives out verify.
 */
import {
  SigningKeys,
  SigningKeysUnavailableError,
  verifyAuditProof,
  verifyLease,
  verifyLicenseFile,
  verifyValidationResponse,
} from "@licensd/client";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ActivationService } from "../../gen/ts/licensd/activation/v1/activation_service_pb.js";
import { AuditService } from "../../gen/ts/licensd/audit/v1/audit_service_pb.js";
import { LicensingService } from "../../gen/ts/licensd/licensing/v1/licensing_service_pb.js";
import { ComposeStrategy, FeatureKind } from "../../gen/ts/licensd/licensing/v1/product_pb.js";
import { ApiKeyScope } from "../../gen/ts/licensd/tenant/v1/api_key_pb.js";
import { TenantService } from "../../gen/ts/licensd/tenant/v1/tenant_service_pb.js";
import { ManualClock } from "../../src/platform/clock.js";
import { connectClient, startTestApp, type TestApp } from "../support/app.js";

let app: TestApp;
const clock = new ManualClock(new Date());

beforeAll(async () => {
  app = await startTestApp({ clock });
});
afterAll(async () => {
  await app?.close();
});

/** A tenant with a product, a policy granting "reports", and a license on it. */
async function setup(code: string) {
  const tenants = connectClient(TenantService, app.url, app.superAdminKey);
  const { tenant } = await tenants.createTenant({ name: `${code} vendor` });
  const { secret } = await tenants.createApiKey({ tenantId: tenant!.id, name: "admin", scopes: [ApiKeyScope.ADMIN] });
  const api = connectClient(LicensingService, app.url, secret);
  const product = (
    await api.createProduct({
      code,
      name: "App",
      features: [{ name: "reports", kind: FeatureKind.FLAG, compose: ComposeStrategy.UNION }],
    })
  ).product!;
  const policy = (
    await api.createPolicy({
      productId: product.id,
      name: "team",
      floating: true,
      maxMachines: 3,
      entitlements: [{ feature: "reports", value: { case: "enabled", value: true } }],
    })
  ).policy!;
  const customer = (await api.createCustomer({ name: "Jane", email: `jane@${code.toLowerCase()}.example` })).customer!;
  const license = await api.createLicense({ policyId: policy.id, customerId: customer.id });
  return { tenantId: tenant!.id, secret, api, key: license.key, licenseId: license.license!.id };
}

/** The global fetch, recording what SigningKeys asked (the requests really go to licensd). */
function recordingFetch() {
  const calls: { method: string; cacheControl: string | null }[] = [];
  const fetch: typeof globalThis.fetch = (input, init) => {
    const req = new Request(input, init);
    calls.push({ method: req.method, cacheControl: req.headers.get("cache-control") });
    return globalThis.fetch(req);
  };
  return { calls, fetch };
}

const activation = (key?: string) => connectClient(ActivationService, app.url, key);

describe("SigningKeys against licensd", () => {
  it("fetches once, caches, refetches past caches on a rotated kid, keeps retiring keys until not_after", async () => {
    const s = await setup("SKR");
    const { calls, fetch } = recordingFetch();
    const keys = new SigningKeys({ baseUrl: app.url, fetch, now: () => clock.now(), minRefetchIntervalMs: 10_000 });
    const old = (await activation().activate({ key: s.key, fingerprint: "fp" })).lease!;

    const first = await verifyLease(old.token, keys, { fingerprint: "fp", now: clock.now() });
    expect(first).toMatchObject({
      valid: true,
      code: "VALID",
      lease: { license_id: s.licenseId, features: ["reports"] },
    });
    expect(first.hasFeature("reports")).toBe(true);
    expect((await verifyLease(old.token, keys, { fingerprint: "fp", now: clock.now() })).valid).toBe(true);
    // One Connect GET (cacheable), and the second check came from the cache.
    expect(calls).toEqual([{ method: "GET", cacheControl: null }]);
    expect((await keys.list()).map((k) => [k.kid, k.status])).toEqual([[old.kid, "active"]]);

    const rotated = await activation(app.superAdminKey).rotateSigningKey({ retireAfter: { seconds: 3600n } });
    const newKid = rotated.key!.kid;
    const fresh = (await activation().heartbeat({ key: s.key, fingerprint: "fp" })).lease!;
    expect(fresh.kid).toBe(newKid);
    // The cache does not know the new kid: one fetch, past HTTP caches, finds it.
    clock.advance(10_000);
    expect((await verifyLease(fresh.token, keys, { fingerprint: "fp", now: clock.now() })).code).toBe("VALID");
    expect(calls).toHaveLength(2);
    expect(calls[1]!.cacheControl).toBe("no-cache");
    expect((await keys.list()).map((k) => [k.kid, k.status])).toEqual([
      [newKid, "active"],
      [old.kid, "retiring"],
    ]);
    // What the retiring key signed still verifies.
    expect((await verifyLease(old.token, keys, { fingerprint: "fp", now: clock.now() })).code).toBe("VALID");

    // An unknown kid right after a fetch does not fetch again (rate limit); later it does, once.
    // A kid swapped for another published one names a key that did not sign it.
    const swapped = forgeKid(fresh.token, old.kid);
    expect((await verifyLease(swapped, keys, { fingerprint: "fp", now: clock.now() })).code).toBe("BAD_SIGNATURE");
    const unknown = forgeKid(fresh.token, "sk_00000000000000000000000zzz");
    expect((await verifyLease(unknown, keys, { fingerprint: "fp", now: clock.now() })).code).toBe("UNKNOWN_KEY");
    expect(calls).toHaveLength(2);
    clock.advance(10_000);
    for (let i = 0; i < 3; i++)
      expect((await verifyLease(unknown, keys, { fingerprint: "fp", now: clock.now() })).code).toBe("UNKNOWN_KEY");
    expect(calls).toHaveLength(3);

    // Past the old key's not_after it verifies nothing, even from the cache (no fetch needed).
    clock.advance(3600_000);
    const before = calls.length;
    expect((await verifyLease(old.token, keys, { fingerprint: "fp", now: clock.now() })).code).toBe("UNKNOWN_KEY");
    expect((await verifyLease(fresh.token, keys, { fingerprint: "fp", now: clock.now() })).code).toBe("VALID");
    // The TTL (10 minutes by default) had passed: that check refreshed the keys; licensd no longer lists the old one.
    expect(calls.length).toBe(before + 1);
    expect((await keys.list()).map((k) => k.kid)).toEqual([newKid]);
  });

  it("verifies ValidateLicense answers over Connect JSON (as curl sees them) and from the generated client", async () => {
    const s = await setup("SKV");
    await activation().activate({ key: s.key, fingerprint: "fp-v" });
    const keys = new SigningKeys({ baseUrl: app.url, now: () => clock.now() });
    const nonce = `n-${crypto.randomUUID()}`;
    const res = await fetch(`${app.url}/licensd.licensing.v1.LicensingService/ValidateLicense`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ key: s.key, fingerprint: "fp-v", nonce }),
    });
    const body = await res.text();
    const r = await verifyValidationResponse(body, { keys, nonce, now: clock.now() });
    expect(r).toMatchObject({ verified: true, code: "VERIFIED", valid: true });
    expect(r.response?.features).toEqual(["reports"]);
    // The lease inside the answer verifies too.
    expect((await verifyLease(r.response!.lease, keys, { fingerprint: "fp-v", now: clock.now() })).valid).toBe(true);
    expect((await verifyValidationResponse(body, { keys, nonce: "another", now: clock.now() })).code).toBe(
      "NONCE_MISMATCH",
    );
    // A valid-looking answer whose verdict was flipped on the way does not verify.
    const flipped = JSON.stringify({ ...JSON.parse(body), valid: false });
    expect((await verifyValidationResponse(flipped, { keys, nonce, now: clock.now() })).code).toBe("BAD_SIGNATURE");

    // A relay that asks for an activated machine of its own with the client's nonce gets a signed, valid answer:
    // the signed scope names that machine, so a client checking its own fingerprint refuses it.
    const relayed = await fetch(`${app.url}/licensd.licensing.v1.LicensingService/ValidateLicense`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ key: s.key, fingerprint: "fp-v", nonce: "n-victim" }),
    }).then((x) => x.text());
    expect(JSON.parse(relayed)).toMatchObject({ valid: true, scope: { fingerprint: "fp-v" } });
    const asVictim = { keys, nonce: "n-victim", now: clock.now() };
    expect((await verifyValidationResponse(relayed, asVictim)).code).toBe("VERIFIED");
    expect(
      (await verifyValidationResponse(relayed, { ...asVictim, scope: { fingerprint: "fp-victim", user: "" } })).code,
    ).toBe("SCOPE_MISMATCH");
    expect((await verifyValidationResponse(relayed, { ...asVictim, scope: { fingerprint: "fp-v" } })).code).toBe(
      "VERIFIED",
    );

    const message = await connectClient(LicensingService, app.url).validateLicense({ key: "PRD-NOT-A-KEY", nonce });
    // Nothing scoped, nothing echoed: the answer is as before.
    expect(message.scope).toBeUndefined();
    expect(await verifyValidationResponse(message, { keys, nonce, now: clock.now() })).toMatchObject({
      verified: true,
      valid: false,
    });
  });

  it("verifies a license file and the audit log's checkpoint and proofs", async () => {
    const s = await setup("SKA");
    const keys = new SigningKeys({ baseUrl: app.url, now: () => clock.now() });
    const { licenseFile } = await s.api.issueLicenseFile({ licenseId: s.licenseId });
    expect((await verifyLicenseFile(licenseFile, { keys, now: clock.now() })).code).toBe("VALID");

    const audit = connectClient(AuditService, app.url, s.secret);
    const older = (await audit.getCheckpoint({})).checkpoint!;
    await s.api.suspendLicense({ id: s.licenseId });
    const checkpoint = (await audit.getCheckpoint({})).checkpoint!;
    expect(checkpoint.treeSize).toBeGreaterThan(older.treeSize);
    const { events } = await audit.listAuditEvents({ pageSize: 1000 });
    for (const entry of events) {
      const proof = await audit.getInclusionProof({ seq: entry.seq, treeSize: checkpoint.treeSize });
      expect((await verifyAuditProof({ checkpoint, keys, inclusion: { entry, proof } })).code).toBe("VERIFIED");
    }
    const proof = await audit.getConsistencyProof({ oldSize: older.treeSize, newSize: checkpoint.treeSize });
    const consistent = await verifyAuditProof({ checkpoint, keys, consistency: { older, proof } });
    expect(consistent.code).toBe("VERIFIED");
  });

  it("pinned keys need no network; licensd unreachable is KEYS_UNAVAILABLE, and fetched keys outlive an outage", async () => {
    const s = await setup("SKP");
    const lease = (await activation().activate({ key: s.key, fingerprint: "fp-p" })).lease!;
    const published = (await activation().getSigningKeys({})).keys.map((k) => ({ kid: k.kid, publicKey: k.publicKey }));
    const pinned = new SigningKeys({ pinned: published });
    expect((await verifyLease(lease.token, pinned, { fingerprint: "fp-p", now: clock.now() })).code).toBe("VALID");
    expect(() => new SigningKeys({ pinned: published, baseUrl: app.url })).toThrow(TypeError);
    expect(() => new SigningKeys({})).toThrow(TypeError);

    const cached = new SigningKeys({ baseUrl: app.url, now: () => clock.now(), ttlMs: 1 });
    expect((await verifyLease(lease.token, cached, { fingerprint: "fp-p", now: clock.now() })).code).toBe("VALID");
    // Nothing listens on the port of a closed server.
    const nowhere = new SigningKeys({ baseUrl: "http://127.0.0.1:1", now: () => clock.now() });
    expect((await verifyLease(lease.token, nowhere, { fingerprint: "fp-p", now: clock.now() })).code).toBe(
      "KEYS_UNAVAILABLE",
    );
    await expect(nowhere.refresh()).rejects.toBeInstanceOf(SigningKeysUnavailableError);
    // While licensd is away and nothing is cached, checks fail fast instead of asking at every call.
    const { calls, fetch } = recordingFetch();
    const away = new SigningKeys({ baseUrl: "http://127.0.0.1:1", fetch, now: () => clock.now() });
    for (let i = 0; i < 3; i++)
      expect((await verifyLease(lease.token, away, { fingerprint: "fp-p", now: clock.now() })).code).toBe(
        "KEYS_UNAVAILABLE",
      );
    expect(calls).toHaveLength(1);
    await app.close();
    clock.advance(60_000);
    // Past the TTL, the refetch fails: the keys fetched before still verify.
    expect((await verifyLease(lease.token, cached, { fingerprint: "fp-p", now: clock.now() })).code).toBe("VALID");
    app = undefined as unknown as TestApp;
  });
});

/** The token with its payload's kid replaced, its signature kept. */
function forgeKid(token: string, kid: string): string {
  const [prefix, body, sig] = token.split(".") as [string, string, string];
  const payload = JSON.parse(Buffer.from(body, "base64url").toString("utf8")) as { kid: string };
  return `${prefix}.${Buffer.from(JSON.stringify({ ...payload, kid })).toString("base64url")}.${sig}`;
}

import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { verifyLease } from "@licensd/client";
import { ActivationService } from "../../gen/ts/licensd/activation/v1/activation_service_pb.js";
import { AuditService } from "../../gen/ts/licensd/audit/v1/audit_service_pb.js";
import { LicensingService } from "../../gen/ts/licensd/licensing/v1/licensing_service_pb.js";
import { ComposeStrategy, FeatureKind } from "../../gen/ts/licensd/licensing/v1/product_pb.js";
import { ApiKeyScope } from "../../gen/ts/licensd/tenant/v1/api_key_pb.js";
import { TenantService } from "../../gen/ts/licensd/tenant/v1/tenant_service_pb.js";
import { createMachineService } from "../../src/activation/machine.service.js";
import { createCatalogService } from "../../src/licensing/catalog.service.js";
import { KeyCharacterPool, LicenseKeyring } from "../../src/licensing/license-key.js";
import { ManualClock } from "../../src/platform/clock.js";
import { DataKeyring } from "../../src/platform/crypto.js";
import { connectClient, startTestApp, type TestApp } from "../support/app.js";
import { createTestDatabase, query } from "../support/database.js";
import { failure } from "../support/errors.js";

/*
 * Activate of a new machine without an idempotency key takes the fast path (machine-stamp.ts, activateFast); with one,
 * the full ORM path. These tests hold the two to the same answers, rows, audit entries and seat limits, and check that
 * whatever the fast path refuses reaches the full path's error.
 */

let db: { url: string; drop(): Promise<void> };
let a: TestApp;
let b: TestApp;
// Wall-clock time at the start (requests' expire_time must be in the future), then moved by hand.
const clock = new ManualClock(new Date(Math.ceil(Date.now() / 1000) * 1000));

beforeAll(async () => {
  db = await createTestDatabase();
  a = await startTestApp({ databaseUrl: db.url, clock });
  b = await startTestApp({
    databaseUrl: db.url,
    clock,
    env: { LICENSD_SUPER_ADMIN_KEY: a.superAdminKey, LICENSD_DATA_KEY: a.app.config.dataKey.toString("base64") },
  });
});
afterAll(async () => {
  await a?.close();
  await b?.close();
  await db?.drop();
});

/** Instance a's machine service, called directly: says whether the fast path answered. */
function fastPath() {
  const { app } = a;
  return createMachineService({
    clock,
    events: app.events,
    catalog: createCatalogService({ clock, events: app.events }),
    keyring: new LicenseKeyring(app.licenseKeySecrets, new KeyCharacterPool()),
    signingKeys: app.signingKeys,
    dataKey: new DataKeyring(app.config.dataKey, app.config.previousDataKeys),
  });
}
const info = (fingerprint: string) => ({ fingerprint, hostname: "", platform: "", cores: 0, ip: "", metadata: {} });
const fastActivate = (key: string, fingerprint: string) => fastPath().activateFast(a.app.db, key, info(fingerprint));

/** A tenant, a product and a policy shaped by `policy`, with a license shaped by `license`. */
async function setup(code: string, policy: Record<string, unknown> = {}, license: Record<string, unknown> = {}) {
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
      maxMachines: 5,
      entitlements: [{ feature: "reports", value: { case: "enabled", value: true } }],
      ...policy,
    })
  ).policy!;
  const customer = (await api.createCustomer({ name: "Jane", email: `jane@${code.toLowerCase()}.example` })).customer!;
  const lic = await api.createLicense({ policyId: pol.id, customerId: customer.id, ...license });
  return { secret, api, key: lic.key, licenseId: lic.license!.id };
}

const activation = (t: TestApp) => connectClient(ActivationService, t.url);
const machineCount = async (licenseId: string) =>
  (await query<{ n: number }>(db.url, "select count(*)::int as n from machines where license_id = $1", [licenseId]))[0]!
    .n;
const activatedEntries = async (secret: string) =>
  (await connectClient(AuditService, a.url, secret).listAuditEvents({ typePrefix: "machine.activated" })).events;

describe("Activate of a new machine: fast path and full path", () => {
  it("answer alike: same machine, same row, same lease claims, same audit entry", async () => {
    const s = await setup("AGR");
    const request = { key: s.key, hostname: "laptop", platform: "linux-x64", cores: 8, metadata: { team: "qa" } };
    const fast = await activation(a).activate({ ...request, fingerprint: "fp-fast" });
    const full = await activation(a).activate({ ...request, fingerprint: "fp-full", idempotencyKey: "full-1" });
    expect(fast.machine!.id).not.toBe(full.machine!.id);
    const shape = (m: typeof fast.machine) => ({ ...m, id: "", fingerprint: "" });
    expect(shape(fast.machine)).toEqual(shape(full.machine));
    expect(fast.machine).toMatchObject({ licenseId: s.licenseId, hostname: "laptop", cores: 8, ip: "127.0.0.1" });
    expect(fast.machine!.metadata).toEqual({ team: "qa" });
    expect(fast.lease!.expireTime).toEqual(full.lease!.expireTime);

    const rows = await query(db.url, "select * from machines where license_id = $1 order by fingerprint", [
      s.licenseId,
    ]);
    const [fastRow, fullRow] = rows.map((r) => ({ ...r, id: "", fingerprint: "" })).reverse();
    expect(fastRow).toEqual(fullRow);
    expect(fastRow).toMatchObject({ status: "alive", dead_at: null, offline: false, metadata: { team: "qa" } });

    const keys = (await activation(a).getSigningKeys({})).keys;
    const fastLease = await verifyLease(fast.lease!.token, keys, { fingerprint: "fp-fast" });
    const fullLease = await verifyLease(full.lease!.token, keys, { fingerprint: "fp-full" });
    expect(fastLease.valid).toBe(true);
    const claims = (l: typeof fastLease) => ({ ...l.lease, machine_id: "", fingerprint: "" });
    expect(claims(fastLease)).toEqual(claims(fullLease));
    expect(fastLease.lease).toMatchObject({ machine_id: fast.machine!.id, features: ["reports"] });

    const entries = await activatedEntries(s.secret);
    const bySubject = new Map(entries.map((e) => [e.subject, e]));
    const [fe, ue] = [bySubject.get(fast.machine!.id)!, bySubject.get(full.machine!.id)!];
    expect(entries).toHaveLength(2);
    expect(fe.actor).toBe(`license:${s.licenseId}`);
    expect(fe.actor).toBe(ue.actor);
    expect({ ...fe.payload, fingerprint: "" }).toEqual({ ...ue.payload, fingerprint: "" });
    expect(fe.payload).toMatchObject({ license_id: s.licenseId, fingerprint: "fp-fast", hostname: "laptop" });

    // The service's fast path answers a new machine itself, and leaves an existing one to the stamp.
    const direct = await fastActivate(s.key, "fp-direct");
    expect(direct?.machine).toMatchObject({ fingerprint: "fp-direct", status: "alive", offline: false });
    expect((await fastActivate(s.key, "fp-direct"))?.machine.id).toBe(direct!.machine.id);
    expect(await activatedEntries(s.secret)).toHaveLength(3);
  });

  it("hold the seat limit under concurrent first activations across two instances", async () => {
    const s = await setup("CON");
    const results = await Promise.allSettled(
      Array.from({ length: 20 }, (_, i) => activation(i % 2 ? a : b).activate({ key: s.key, fingerprint: `fp-${i}` })),
    );
    const created = results.filter((r) => r.status === "fulfilled").map((r) => r.value.machine!.id);
    expect(created).toHaveLength(5);
    for (const r of results.filter((r) => r.status === "rejected")) {
      expect(await failure(Promise.reject((r as PromiseRejectedResult).reason))).toMatchObject({
        code: "FailedPrecondition",
        reason: "TOO_MANY_MACHINES",
        metadata: { license_id: s.licenseId, max_machines: "5" },
      });
    }
    expect(await machineCount(s.licenseId)).toBe(5);
    expect((await activatedEntries(s.secret)).map((e) => e.subject).sort()).toEqual(created.sort());
    expect(await fastActivate(s.key, "one-more")).toBeUndefined();

    // The license's own limit wins over its policy's.
    const own = await setup("OWN", {}, { maxMachines: 2 });
    const ownResults = await Promise.allSettled(
      Array.from({ length: 6 }, (_, i) => activation(i % 2 ? a : b).activate({ key: own.key, fingerprint: `fp-${i}` })),
    );
    expect(ownResults.filter((r) => r.status === "fulfilled")).toHaveLength(2);
    expect(await machineCount(own.licenseId)).toBe(2);
    expect(await activatedEntries(own.secret)).toHaveLength(2);
  });

  it("bind a node-locked license to its first machine, even when activations race", async () => {
    const s = await setup("NOD", { floating: false, maxMachines: 1 });
    const results = await Promise.allSettled(
      Array.from({ length: 6 }, (_, i) => activation(i % 2 ? a : b).activate({ key: s.key, fingerprint: `fp-${i}` })),
    );
    expect(results.filter((r) => r.status === "fulfilled")).toHaveLength(1);
    for (const r of results.filter((r) => r.status === "rejected")) {
      expect(await failure(Promise.reject((r as PromiseRejectedResult).reason))).toMatchObject({
        reason: "FINGERPRINT_SCOPE_MISMATCH",
      });
    }
    expect(await fastActivate(s.key, "second")).toBeUndefined();
    expect(await machineCount(s.licenseId)).toBe(1);
    expect(await activatedEntries(s.secret)).toHaveLength(1);
  });

  it("create one machine and one entry when the same new fingerprint races", async () => {
    const s = await setup("DUP");
    const results = await Promise.all(
      Array.from({ length: 10 }, (_, i) => activation(i % 2 ? a : b).activate({ key: s.key, fingerprint: "same" })),
    );
    expect(new Set(results.map((r) => r.machine!.id)).size).toBe(1);
    expect(await machineCount(s.licenseId)).toBe(1);
    expect((await activatedEntries(s.secret)).map((e) => e.subject)).toEqual([results[0]!.machine!.id]);
  });

  it("leave suspended, revoked and expired licenses to the full path's errors, changing nothing", async () => {
    const suspended = await setup("SUS");
    await suspended.api.suspendLicense({ id: suspended.licenseId });
    expect(await fastActivate(suspended.key, "fp")).toBeUndefined();
    expect(await failure(activation(a).activate({ key: suspended.key, fingerprint: "fp" }))).toMatchObject({
      code: "FailedPrecondition",
      reason: "LICENSE_SUSPENDED",
    });

    const revoked = await setup("REV");
    await revoked.api.revokeLicense({ id: revoked.licenseId });
    expect(await fastActivate(revoked.key, "fp")).toBeUndefined();
    expect(await failure(activation(a).activate({ key: revoked.key, fingerprint: "fp" }))).toMatchObject({
      reason: "LICENSE_REVOKED",
    });

    const expire = timestampFromDate(new Date(clock.now().getTime() + 3_600_000));
    const expired = await setup("EXP", {}, { expireTime: expire });
    const grace = await setup("GRC", { gracePeriod: { seconds: 7_200n, nanos: 0 } }, { expireTime: expire });
    clock.advance(3_700_000);
    expect(await fastActivate(expired.key, "fp")).toBeUndefined();
    expect(await failure(activation(a).activate({ key: expired.key, fingerprint: "fp" }))).toMatchObject({
      reason: "LICENSE_EXPIRED",
    });
    // In its grace period a license still takes new machines: the full path's answer.
    expect(await fastActivate(grace.key, "fp")).toBeUndefined();
    expect((await activation(a).activate({ key: grace.key, fingerprint: "fp" })).machine!.fingerprint).toBe("fp");

    for (const s of [suspended, revoked, expired]) {
      expect(await machineCount(s.licenseId)).toBe(0);
      expect(await activatedEntries(s.secret)).toHaveLength(0);
    }
    expect(await failure(activation(a).activate({ key: "NOPE-AAAAA-BBBBB", fingerprint: "fp" }))).toMatchObject({
      code: "Unauthenticated",
      reason: "INVALID_LICENSE_KEY",
    });
  });
});

describe("Activate's fast path under concurrency: one statement for many, its audit entry sequenced after", () => {
  it("answers concurrent activations of one process as one at a time would: adds, restarts, duplicates, full seats", async () => {
    const s = await setup("BAT", { maxMachines: 4 });
    const restarted = await fastActivate(s.key, "old");
    // In one turn of the event loop: the first two go at once (two statements in flight), the rest share one.
    const fingerprints = ["n1", "old", "n2", "n1", "n3", "n4", "n5", "old", "n2", "n6"];
    const answers = await Promise.all(fingerprints.map((fp) => fastActivate(s.key, fp)));
    const byFingerprint = new Map<string, Set<string>>();
    for (const [i, fp] of fingerprints.entries()) {
      const id = answers[i]?.machine.id;
      if (id) byFingerprint.set(fp, (byFingerprint.get(fp) ?? new Set()).add(id));
    }
    // The restarted machine keeps its id; each new fingerprint got one machine, however often it was asked for; the
    // seats (4: "old" and three new ones) were given in the order the batch takes them, the rest left to the full path.
    expect([...byFingerprint.get("old")!]).toEqual([restarted!.machine.id]);
    for (const ids of byFingerprint.values()) expect(ids.size).toBe(1);
    expect(byFingerprint.size).toBe(4);
    expect(await machineCount(s.licenseId)).toBe(4);
    const refused = fingerprints.filter((fp) => !byFingerprint.has(fp));
    expect(refused.length).toBeGreaterThan(0);
    expect(await failure(activation(a).activate({ key: s.key, fingerprint: refused[0]! }))).toMatchObject({
      reason: "TOO_MANY_MACHINES",
    });
    const rows = await query<{ id: string; fingerprint: string }>(
      db.url,
      "select id, fingerprint from machines where license_id = $1",
      [s.licenseId],
    );
    expect(new Map(rows.map((r) => [r.fingerprint, r.id]))).toEqual(
      new Map([...byFingerprint].map(([fp, ids]) => [fp, [...ids][0]])),
    );
    // One entry per machine created, none for a restart or a refusal.
    expect((await activatedEntries(s.secret)).map((e) => e.subject).sort()).toEqual(rows.map((r) => r.id).sort());
  });

  it("never deadlocks when batches on two instances race for one new fingerprint, round after round", async () => {
    // Before the batch locked its licenses first, this deadlocked a few times in 20 rounds: a batch that PostgreSQL
    // aborted was run again one activation at a time, or, alone in its statement, answered INTERNAL.
    const deadlocks = async () =>
      (
        await query<{ n: number }>(
          db.url,
          "select deadlocks::int as n from pg_stat_database where datname = current_database()",
        )
      )[0]!.n;
    const before = await deadlocks();
    const s = await setup("RAC");
    const lic = (await s.api.getLicense({ id: s.licenseId })).license!;
    for (let round = 0; round < 15; round++) {
      const { key, license } = await s.api.createLicense({ policyId: lic.policyId, customerId: lic.customerId });
      const answers = await Promise.all(
        Array.from({ length: 10 }, (_, i) => activation(i % 2 ? a : b).activate({ key, fingerprint: "same" })),
      );
      expect(new Set(answers.map((r) => r.machine!.id)).size).toBe(1);
      expect(await machineCount(license!.id)).toBe(1);
    }
    // A backend reports its counts within a second of going idle.
    await new Promise((r) => setTimeout(r, 2000));
    expect(await deadlocks()).toBe(before);
  });

  it("runs a failed batch again one activation per statement: one activation's error is its own", async () => {
    const s = await setup("BFL", { maxMachines: 0 });
    await query(
      db.url,
      `create function test_refuse_boom() returns trigger language plpgsql as $$
       begin
         if new.fingerprint = 'boom' then raise exception 'refused by the test'; end if;
         return new;
       end $$;
       create trigger test_refuse_boom before insert on machines for each row execute function test_refuse_boom()`,
    );
    try {
      const fingerprints = ["b1", "b2", "b3", "b4", "boom", "b5", "b6", "b7"];
      const answers = await Promise.allSettled(fingerprints.map((fp) => fastActivate(s.key, fp)));
      for (const [i, fp] of fingerprints.entries()) {
        const answer = answers[i]!;
        if (fp === "boom") expect(answer).toMatchObject({ status: "rejected", reason: { message: /refused by/ } });
        else expect(answer).toMatchObject({ status: "fulfilled", value: { machine: { fingerprint: fp } } });
      }
      expect(await machineCount(s.licenseId)).toBe(7);
      expect(await activatedEntries(s.secret)).toHaveLength(7);
    } finally {
      await query(db.url, "drop trigger test_refuse_boom on machines; drop function test_refuse_boom()");
    }
  });

  it("answers before its entry has a place in the log; this instance's caches and the log's readers see it", async () => {
    const s = await setup("ASY");
    const [{ tenant_id: tenantId }] = await query<{ tenant_id: string }>(
      db.url,
      "select tenant_id from licenses where id = $1",
      [s.licenseId],
    );
    const validate = async () =>
      (await connectClient(LicensingService, a.url).validateLicense({ key: s.key, fingerprint: "fp-a" })).valid;
    expect(await validate()).toBe(false); // NO_MACHINES, and now cached
    // Another session holds the tenant's chain head: nothing of the tenant can be sequenced meanwhile.
    const holder = new pg.Client({ connectionString: db.url });
    await holder.connect();
    try {
      await holder.query("begin");
      await holder.query("select 1 from audit_heads where tenant_id = $1 for update", [tenantId]);
      const answer = await activation(a).activate({ key: s.key, fingerprint: "fp-a" });
      expect(answer.machine!.fingerprint).toBe("fp-a");
      const queued = await query(db.url, "select subject from audit_pending where tenant_id = $1", [tenantId]);
      expect(queued).toEqual([{ subject: answer.machine!.id }]);
      expect(await validate()).toBe(true); // the cached answer was dropped when the activation committed
      // A read of the log settles the tenant first: it waits for the head, then reads the entry.
      let listed = false;
      const list = activatedEntries(s.secret).finally(() => {
        listed = true;
      });
      await new Promise((r) => setTimeout(r, 300));
      expect(listed).toBe(false);
      await holder.query("commit");
      expect((await list).map((e) => e.subject)).toEqual([answer.machine!.id]);
      expect(await query(db.url, "select 1 from audit_pending where tenant_id = $1", [tenantId])).toEqual([]);
    } finally {
      await holder.end();
    }
  });
});

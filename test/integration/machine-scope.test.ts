import { createOfflineActivationRequest, describeError } from "@licensd/client";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ActivationService } from "../../gen/ts/licensd/activation/v1/activation_service_pb.js";
import { LicensingService, ValidationCode } from "../../gen/ts/licensd/licensing/v1/licensing_service_pb.js";
import { MachineUniquenessScope } from "../../gen/ts/licensd/licensing/v1/policy_pb.js";
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
import { until } from "../support/wait.js";

/*
 * Machine uniqueness scope (a fingerprint unique per license, policy, product or tenant) and core-based seats
 * (max_cores, TOO_MANY_CORES). Two instances on one database.
 */

let db: { url: string; drop(): Promise<void> };
let a: TestApp;
let b: TestApp;
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

let n = 0;
/** A tenant; products and policies are made with `product` and `policy`, licenses with `license`. */
async function vendor() {
  const tenants = connectClient(TenantService, a.url, a.superAdminKey);
  const { tenant } = await tenants.createTenant({ name: `S${++n} vendor` });
  const { secret } = await tenants.createApiKey({ tenantId: tenant!.id, name: "admin", scopes: [ApiKeyScope.ADMIN] });
  const api = connectClient(LicensingService, a.url, secret);
  const customer = (await api.createCustomer({ name: "Jane", email: `jane@s${n}.example` })).customer!;
  const product = async (code: string) =>
    (
      await api.createProduct({
        code,
        name: code,
        features: [{ name: "reports", kind: FeatureKind.FLAG, compose: ComposeStrategy.UNION }],
      })
    ).product!;
  const policy = async (productId: string, name: string, extra: Record<string, unknown> = {}) =>
    (await api.createPolicy({ productId, name, floating: true, maxMachines: 0, ...extra })).policy!;
  const license = async (policyId: string) => {
    const lic = await api.createLicense({ policyId, customerId: customer.id });
    return { key: lic.key, id: lic.license!.id };
  };
  return { tenantId: tenant!.id, secret, api, product, policy, license };
}

const activation = (t: TestApp, key?: string) => connectClient(ActivationService, t.url, key);
const validation = (t: TestApp) => connectClient(LicensingService, t.url);
const activate = (t: TestApp, key: string, fingerprint: string, cores = 0) =>
  activation(t).activate({ key, fingerprint, cores });
const machinesWith = async (tenantId: string, fingerprint: string) =>
  (
    await query<{ license_id: string }>(
      db.url,
      "select license_id from machines where tenant_id = $1 and fingerprint = $2 and status = 'alive'",
      [tenantId, fingerprint],
    )
  ).map((r) => r.license_id);

/** Instance a's machine service, called directly: says whether Activate's fast path answered. */
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
const info = (fingerprint: string, cores = 0) => ({
  fingerprint,
  hostname: "",
  platform: "",
  cores,
  ip: "",
  metadata: {},
});

describe("machine uniqueness scope", () => {
  it("LICENSE, the default: licenses of one product share a fingerprint, by the fast path, as before", async () => {
    const v = await vendor();
    const prod = await v.product("DEF");
    const pol = await v.policy(prod.id, "pro");
    expect(pol).toMatchObject({ machineUniquenessScope: MachineUniquenessScope.LICENSE, maxCores: 0 });
    const [one, two] = [await v.license(pol.id), await v.license(pol.id)];
    const fast = fastPath();
    expect((await fast.activateFast(a.app.db, one.key, info("shared")))?.machine.licenseId).toBe(one.id);
    expect((await fast.activateFast(a.app.db, two.key, info("shared")))?.machine.licenseId).toBe(two.id);
    await activate(b, two.key, "shared");
    expect((await machinesWith(v.tenantId, "shared")).sort()).toEqual([one.id, two.id].sort());
  });

  it("PRODUCT: one machine cannot hold two trials of a product, whatever the policy; other products are apart", async () => {
    const v = await vendor();
    const prod = await v.product("TRI");
    const other = await v.product("OTH");
    const trial = await v.policy(prod.id, "trial", { machineUniquenessScope: MachineUniquenessScope.PRODUCT });
    const trial2 = await v.policy(prod.id, "trial-2", { machineUniquenessScope: MachineUniquenessScope.PRODUCT });
    const otherTrial = await v.policy(other.id, "trial", { machineUniquenessScope: MachineUniquenessScope.PRODUCT });
    expect(trial.machineUniquenessScope).toBe(MachineUniquenessScope.PRODUCT);
    const first = await v.license(trial.id);
    const second = await v.license(trial.id);
    const third = await v.license(trial2.id);
    const elsewhere = await v.license(otherTrial.id);

    // The fast path leaves such a license to the full path, having changed nothing.
    expect(await fastPath().activateFast(a.app.db, first.key, info("laptop"))).toBeUndefined();
    expect(await machinesWith(v.tenantId, "laptop")).toEqual([]);
    await activate(a, first.key, "laptop");
    // An agent restarting on its own license is answered as before.
    expect((await activate(b, first.key, "laptop")).machine!.licenseId).toBe(first.id);

    for (const [t, lic] of [
      [a, second],
      [b, third],
    ] as const) {
      const refused = await failure(activate(t, lic.key, "laptop"));
      expect(refused).toMatchObject({
        code: "FailedPrecondition",
        reason: "MACHINE_FINGERPRINT_TAKEN",
        metadata: { field: "fingerprint", fingerprint: "laptop", scope: "product" },
      });
      expect(refused.message).toContain("laptop");
      expect(refused.message).not.toContain(first.key);
      expect(refused.message).not.toContain(first.id);
    }
    // Another product's licenses do not see it.
    await activate(a, elsewhere.key, "laptop");
    expect((await machinesWith(v.tenantId, "laptop")).sort()).toEqual([first.id, elsewhere.id].sort());

    // Deactivated there, it may be activated here.
    await activation(a).deactivate({ key: first.key, fingerprint: "laptop" });
    expect((await activate(b, second.key, "laptop")).machine!.licenseId).toBe(second.id);
    // A dead machine holds no fingerprint.
    await query(db.url, "update machines set status = 'dead', dead_at = now() where license_id = $1", [second.id]);
    expect((await activate(a, third.key, "laptop")).machine!.licenseId).toBe(third.id);
    // Revived, the dead one would share it: refused.
    expect(await failure(activate(a, second.key, "laptop"))).toMatchObject({ reason: "MACHINE_FINGERPRINT_TAKEN" });
  });

  it("POLICY: unique among the policy's licenses; another policy of the product may share it", async () => {
    const v = await vendor();
    const prod = await v.product("POL");
    const trial = await v.policy(prod.id, "trial", { machineUniquenessScope: MachineUniquenessScope.POLICY });
    const pro = await v.policy(prod.id, "pro", { machineUniquenessScope: MachineUniquenessScope.POLICY });
    const [t1, t2, p1] = [await v.license(trial.id), await v.license(trial.id), await v.license(pro.id)];
    await activate(a, t1.key, "box");
    expect(await failure(activate(b, t2.key, "box"))).toMatchObject({
      code: "FailedPrecondition",
      reason: "MACHINE_FINGERPRINT_TAKEN",
      metadata: { scope: "policy" },
    });
    expect((await activate(b, p1.key, "box")).machine!.licenseId).toBe(p1.id);
  });

  it("TENANT: unique across the tenant's products; another tenant's machines never matter", async () => {
    const v = await vendor();
    const w = await vendor();
    const [x, y] = [await v.product("TNA"), await v.product("TNB")];
    const px = await v.policy(x.id, "one", { machineUniquenessScope: MachineUniquenessScope.TENANT });
    const py = await v.policy(y.id, "one");
    const lx = await v.license(px.id);
    const ly = await v.license(py.id);
    const wp = await w.policy((await w.product("TNA")).id, "one", {
      machineUniquenessScope: MachineUniquenessScope.TENANT,
    });
    const lw = await w.license(wp.id);
    // A LICENSE-scope license of another product holds it first: the TENANT-scope one is refused.
    await activate(a, ly.key, "srv");
    expect(await failure(activate(b, lx.key, "srv"))).toMatchObject({
      reason: "MACHINE_FINGERPRINT_TAKEN",
      metadata: { scope: "tenant" },
    });
    // The other tenant's license activates the same fingerprint.
    expect((await activate(a, lw.key, "srv")).machine!.licenseId).toBe(lw.id);
    await activation(a).deactivate({ key: ly.key, fingerprint: "srv" });
    expect((await activate(b, lx.key, "srv")).machine!.licenseId).toBe(lx.id);
  });

  it("20 concurrent activations of one fingerprint on two licenses and two instances: exactly one machine", async () => {
    const v = await vendor();
    const prod = await v.product("RAC");
    const pol = await v.policy(prod.id, "trial", { machineUniquenessScope: MachineUniquenessScope.PRODUCT });
    const pol2 = await v.policy(prod.id, "trial-2", { machineUniquenessScope: MachineUniquenessScope.PRODUCT });
    const licenses = [await v.license(pol.id), await v.license(pol2.id)];
    const results = await Promise.allSettled(
      Array.from({ length: 20 }, (_, i) => activate(i % 2 ? a : b, licenses[Math.floor(i / 2) % 2]!.key, "same")),
    );
    const holders = await machinesWith(v.tenantId, "same");
    expect(holders).toHaveLength(1);
    const ok = results.filter((r) => r.status === "fulfilled");
    // Every success is the one machine (its own license's repeats return it); every refusal says why.
    expect(new Set(ok.map((r) => r.value.machine!.id)).size).toBe(1);
    expect(ok.every((r) => r.value.machine!.licenseId === holders[0])).toBe(true);
    for (const r of results.filter((r) => r.status === "rejected")) {
      expect(await failure(Promise.reject(r.reason))).toMatchObject({ reason: "MACHINE_FINGERPRINT_TAKEN" });
      // The client package reads it as a person would act on it.
      expect(describeError(r.reason).hint).toContain("another license holds this machine");
    }
    expect(results.filter((r) => r.status === "rejected")).toHaveLength(10);
  });

  it("ActivateOffline and TransferLicense respect the scope", async () => {
    const v = await vendor();
    const prod = await v.product("OFF");
    const open = await v.policy(prod.id, "open");
    const trial = await v.policy(prod.id, "trial", { machineUniquenessScope: MachineUniquenessScope.PRODUCT });
    const holder = await v.license(trial.id);
    const offline = await v.license(trial.id);
    await activate(a, holder.key, "vault");
    const request = createOfflineActivationRequest({ key: offline.key, fingerprint: "vault", now: clock.now() });
    expect(await failure(activation(b, v.secret).activateOffline({ request }))).toMatchObject({
      code: "FailedPrecondition",
      reason: "MACHINE_FINGERPRINT_TAKEN",
    });
    expect(await machinesWith(v.tenantId, "vault")).toEqual([holder.id]);

    // A license of the open policy shares the fingerprint; moved into the trial policy it would not.
    const moving = await v.license(open.id);
    await activate(b, moving.key, "vault");
    await activate(b, moving.key, "own");
    const refused = await failure(v.api.transferLicense({ id: moving.id, policyId: trial.id }));
    expect(refused).toMatchObject({
      code: "FailedPrecondition",
      reason: "MACHINE_FINGERPRINT_TAKEN",
      metadata: { field: "policy_id", fingerprint: "vault" },
    });
    expect((await v.api.getLicense({ id: moving.id })).license!.policyId).toBe(open.id);
    await activation(a).deactivate({ key: moving.key, fingerprint: "vault" });
    const moved = await v.api.transferLicense({ id: moving.id, policyId: trial.id });
    expect(moved.license!.policyId).toBe(trial.id);
  });

  it("UpdatePolicy sets and clears the scope through the update mask", async () => {
    const v = await vendor();
    const prod = await v.product("UPD");
    const pol = await v.policy(prod.id, "pro");
    const [l1, l2] = [await v.license(pol.id), await v.license(pol.id)];
    await activate(a, l1.key, "fp");
    const updated = await v.api.updatePolicy({
      id: pol.id,
      machineUniquenessScope: MachineUniquenessScope.PRODUCT,
      maxCores: 64,
      updateMask: { paths: ["machine_uniqueness_scope", "max_cores"] },
    });
    expect(updated.policy).toMatchObject({ machineUniquenessScope: MachineUniquenessScope.PRODUCT, maxCores: 64 });
    expect(await failure(activate(b, l2.key, "fp", 2))).toMatchObject({ reason: "MACHINE_FINGERPRINT_TAKEN" });
    const back = await v.api.updatePolicy({ id: pol.id, updateMask: { paths: ["machine_uniqueness_scope"] } });
    expect(back.policy).toMatchObject({ machineUniquenessScope: MachineUniquenessScope.LICENSE, maxCores: 64 });
    await activate(b, l2.key, "fp", 2);
    expect(await failure(v.api.createPolicy({ productId: prod.id, name: "bad", maxCores: -1 }))).toMatchObject({
      code: "InvalidArgument",
    });
  });
});

describe("core-based seats", () => {
  it("refuses past max_cores, requires cores, and the fast path leaves the policy to the full path", async () => {
    const v = await vendor();
    const prod = await v.product("COR");
    const pol = await v.policy(prod.id, "server", { maxCores: 8 });
    expect(pol.maxCores).toBe(8);
    const l = await v.license(pol.id);
    expect(await fastPath().activateFast(a.app.db, l.key, info("n0", 2))).toBeUndefined();
    const missing = await failure(activate(a, l.key, "n0"));
    expect(missing).toMatchObject({ code: "InvalidArgument", reason: "CORES_REQUIRED", metadata: { field: "cores" } });
    expect(missing.message).toContain("cores");
    await activate(a, l.key, "n1", 4);
    await activate(b, l.key, "n2", 4);
    const full = await failure(activate(a, l.key, "n3", 1));
    expect(full).toMatchObject({
      code: "FailedPrecondition",
      reason: "CORE_LIMIT_REACHED",
      metadata: { max_cores: "8", cores: "8" },
    });
    expect(full.message).toContain("8 of 8 cores");
    expect(await validation(b).validateLicense({ key: l.key, fingerprint: "n1" })).toMatchObject({
      valid: true,
      code: ValidationCode.VALID,
    });
    // Deactivating one frees its cores.
    await activation(a).deactivate({ key: l.key, fingerprint: "n2" });
    await activate(b, l.key, "n3", 4);
  });

  it("20 concurrent activations of 2-core machines against max_cores 6 on two instances: exactly 3", async () => {
    const v = await vendor();
    const prod = await v.product("CRC");
    const pol = await v.policy(prod.id, "server", { maxCores: 6 });
    const l = await v.license(pol.id);
    const results = await Promise.allSettled(
      Array.from({ length: 20 }, (_, i) => activate(i % 2 ? a : b, l.key, `node-${i}`, 2)),
    );
    expect(results.filter((r) => r.status === "fulfilled")).toHaveLength(3);
    for (const r of results.filter((r) => r.status === "rejected"))
      expect(await failure(Promise.reject(r.reason))).toMatchObject({ reason: "CORE_LIMIT_REACHED" });
    const [{ total }] = await query<{ total: string }>(
      db.url,
      "select sum(cores)::text as total from machines where license_id = $1",
      [l.id],
    );
    expect(total).toBe("6");
  });

  it("ValidateLicense answers TOO_MANY_CORES after the limit is lowered or a machine reports more cores", async () => {
    const v = await vendor();
    const prod = await v.product("CVL");
    const pol = await v.policy(prod.id, "server", { maxCores: 8 });
    const l = await v.license(pol.id);
    await activate(a, l.key, "n1", 4);
    await activate(a, l.key, "n2", 4);
    expect((await validation(b).validateLicense({ key: l.key })).code).toBe(ValidationCode.VALID);
    // A machine already active may report more cores (re-activated after an upgrade): recorded, and validation says so.
    expect((await activate(b, l.key, "n2", 6)).machine!.cores).toBe(6);
    for (const req of [{ key: l.key, fingerprint: "n1" }, { key: l.key }]) {
      const answer = await validation(b).validateLicense(req);
      expect(answer).toMatchObject({ valid: false, code: ValidationCode.TOO_MANY_CORES });
      expect(answer.detail).toContain("10 cores");
    }
    await activate(a, l.key, "n2", 4);
    expect((await validation(a).validateLicense({ key: l.key, fingerprint: "n1" })).code).toBe(ValidationCode.VALID);
    await v.api.updatePolicy({ id: pol.id, maxCores: 6, updateMask: { paths: ["max_cores"] } });
    // b's cached copy of the license goes with the policy.updated entry's notification.
    await until(
      "instance b to see the lowered limit",
      () => validation(b).validateLicense({ key: l.key, fingerprint: "n2" }),
      (r) => r.code === ValidationCode.TOO_MANY_CORES,
    );
    // Dead machines do not count toward validation's total.
    await query(
      db.url,
      "update machines set status = 'dead', dead_at = now() where fingerprint = 'n2' and license_id = $1",
      [l.id],
    );
    expect((await validation(a).validateLicense({ key: l.key })).code).toBe(ValidationCode.VALID);
  });

  it("a policy without max_cores counts no cores and validates as before", async () => {
    const v = await vendor();
    const prod = await v.product("CNO");
    const pol = await v.policy(prod.id, "pro", { maxMachines: 2 });
    const l = await v.license(pol.id);
    await activate(a, l.key, "big", 100000);
    await activate(b, l.key, "none");
    expect((await validation(a).validateLicense({ key: l.key, fingerprint: "big" })).code).toBe(ValidationCode.VALID);
    expect(await failure(activate(a, l.key, "third", 1))).toMatchObject({ reason: "TOO_MANY_MACHINES" });
  });
});

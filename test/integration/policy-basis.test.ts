import { timestampDate } from "@bufbuild/protobuf/wkt";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ActivationService } from "../../gen/ts/licensd/activation/v1/activation_service_pb.js";
import { AuditService } from "../../gen/ts/licensd/audit/v1/audit_service_pb.js";
import { LicensingService, ValidationCode } from "../../gen/ts/licensd/licensing/v1/licensing_service_pb.js";
import {
  ExpirationBasis,
  HeartbeatBasis,
  RenewalBasis,
  TransferStrategy,
} from "../../gen/ts/licensd/licensing/v1/policy_pb.js";
import { ComposeStrategy, FeatureKind } from "../../gen/ts/licensd/licensing/v1/product_pb.js";
import { ApiKeyScope } from "../../gen/ts/licensd/tenant/v1/api_key_pb.js";
import { TenantService } from "../../gen/ts/licensd/tenant/v1/tenant_service_pb.js";
import { Aggregation } from "../../gen/ts/licensd/usage/v1/usage_pb.js";
import { UsageService } from "../../gen/ts/licensd/usage/v1/usage_service_pb.js";
import { createMachineService } from "../../src/activation/machine.service.js";
import { createCatalogService } from "../../src/licensing/catalog.service.js";
import { KeyCharacterPool, LicenseKeyring } from "../../src/licensing/license-key.js";
import { ManualClock } from "../../src/platform/clock.js";
import { DataKeyring } from "../../src/platform/crypto.js";
import { connectClient, startTestApp, type TestApp } from "../support/app.js";
import { createTestDatabase } from "../support/database.js";
import { failure } from "../support/errors.js";

/*
 * Policy basis strategies: when a license's expiry starts (creation, first activation, validation or use), when a
 * machine's heartbeats are required, what a renewal extends, whether a transfer resets the expiry. Two instances on
 * one database, one moved clock.
 */

let db: { url: string; drop(): Promise<void> };
let a: TestApp;
let b: TestApp;
const clock = new ManualClock(new Date(Math.ceil(Date.now() / 1000) * 1000));
const DAY = 86_400;

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

const move = (seconds: number) => clock.set(new Date(clock.now().getTime() + seconds * 1000));
const days = (n: number) => ({ seconds: BigInt(n * DAY) });
const at = (seconds: number) => new Date(clock.now().getTime() + seconds * 1000);

let n = 0;
/** A tenant with a product, a customer and a policy shaped by `policy`. */
async function vendor(policy: Record<string, unknown> = {}) {
  const code = `B${String(++n).padStart(2, "0")}`;
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
    await api.createPolicy({ productId: product.id, name: "pro", floating: true, maxMachines: 5, ...policy })
  ).policy!;
  const customer = (await api.createCustomer({ name: "Jane", email: `jane@${code.toLowerCase()}.example` })).customer!;
  const license = async (extra: Record<string, unknown> = {}) => {
    const lic = await api.createLicense({ policyId: pol.id, customerId: customer.id, ...extra });
    return { key: lic.key, id: lic.license!.id, license: lic.license! };
  };
  const entries = async (type: string) =>
    (await connectClient(AuditService, a.url, secret).listAuditEvents({ typePrefix: type })).events;
  return { secret, api, product, policy: pol, customer, license, entries };
}

const activation = (t: TestApp) => connectClient(ActivationService, t.url);
const validation = (t: TestApp) => connectClient(LicensingService, t.url);
const expiryOf = async (v: Awaited<ReturnType<typeof vendor>>, id: string) => {
  const { license } = await v.api.getLicense({ id });
  return { expiry: license!.expireTime && timestampDate(license!.expireTime), pending: license!.expiryPending };
};

describe("expiration basis", () => {
  it("FROM_CREATION, the default: the expiry is set at creation, as before", async () => {
    const v = await vendor({ duration: days(30) });
    expect(v.policy).toMatchObject({
      expirationBasis: ExpirationBasis.FROM_CREATION,
      heartbeatBasis: HeartbeatBasis.FROM_ACTIVATION,
      renewalBasis: RenewalBasis.FROM_NOW_IF_EXPIRED,
      transferStrategy: TransferStrategy.KEEP_EXPIRY,
    });
    const l = await v.license();
    expect(l.license.expiryPending).toBe(false);
    expect(timestampDate(l.license.expireTime!)).toEqual(at(30 * DAY));
    await activation(a).activate({ key: l.key, fingerprint: "fp" });
    await validation(a).validateLicense({ key: l.key });
    expect(await v.entries("license.expiry_started")).toHaveLength(0);
  });

  it("FROM_FIRST_ACTIVATION: no expiry until the first machine, then one start and the license expires from it", async () => {
    const v = await vendor({ duration: days(30), expirationBasis: ExpirationBasis.FROM_FIRST_ACTIVATION });
    const l = await v.license();
    expect(l.license.expiryPending).toBe(true);
    expect(l.license.expireTime).toBeUndefined();
    expect((await v.entries("license.created"))[0]!.payload).toMatchObject({ expires_at: null, expiry_pending: true });
    // Validations and time do not start it; a license file would carry no expiry, so none is issued.
    move(100 * DAY);
    const before = await validation(b).validateLicense({ key: l.key });
    expect(before).toMatchObject({ valid: true, code: ValidationCode.VALID });
    expect(before.license!.expireTime).toBeUndefined();
    expect(await failure(v.api.issueLicenseFile({ licenseId: l.id }))).toMatchObject({
      code: "FailedPrecondition",
      reason: "EXPIRY_NOT_STARTED",
    });
    expect(await v.entries("license.expiry_started")).toHaveLength(0);

    // The fast path (no idempotency key) leaves it to the full path, which starts the expiry.
    const first = await activation(a).activate({ key: l.key, fingerprint: "fp-1" });
    const started = at(30 * DAY);
    expect(await expiryOf(v, l.id)).toEqual({ expiry: started, pending: false });
    const [entry, ...more] = await v.entries("license.expiry_started");
    expect(more).toHaveLength(0);
    expect(entry).toMatchObject({ subject: l.id, actor: `license:${l.id}` });
    expect(entry!.payload).toEqual({
      on: "activation",
      started_at: clock.now().toISOString(),
      expires_at: started.toISOString(),
    });
    // Validation sees it (on the instance that has not cached the license: b's copy goes with the audit entry's
    // notification).
    expect(first.machine!.licenseId).toBe(l.id);
    expect(timestampDate((await validation(a).validateLicense({ key: l.key })).license!.expireTime!)).toEqual(started);
    // A second machine does not start it again.
    move(DAY);
    await activation(b).activate({ key: l.key, fingerprint: "fp-2" });
    expect((await expiryOf(v, l.id)).expiry).toEqual(started);
    expect(await v.entries("license.expiry_started")).toHaveLength(1);
    move(30 * DAY);
    expect(await validation(a).validateLicense({ key: l.key })).toMatchObject({
      valid: false,
      code: ValidationCode.EXPIRED,
    });
    // Licenses with an explicit expiry, or of a perpetual policy, never wait.
    const explicit = await v.license({ expireTime: { seconds: BigInt(Math.floor(at(DAY).getTime() / 1000)) } });
    expect(explicit.license.expiryPending).toBe(false);
    const perpetual = await vendor({ expirationBasis: ExpirationBasis.FROM_FIRST_ACTIVATION });
    const forever = (await perpetual.license()).license;
    expect(forever.expiryPending).toBe(false);
    expect(forever.expireTime).toBeUndefined();
  });

  it("Activate's one-statement fast path: kept for the default basis, left to the full path while waiting", async () => {
    const { app } = a;
    const machines = createMachineService({
      clock,
      events: app.events,
      catalog: createCatalogService({ clock, events: app.events }),
      keyring: new LicenseKeyring(app.licenseKeySecrets, new KeyCharacterPool()),
      signingKeys: app.signingKeys,
      dataKey: new DataKeyring(app.config.dataKey, app.config.previousDataKeys),
    });
    const info = (fingerprint: string) => ({ fingerprint, hostname: "", platform: "", cores: 0, ip: "", metadata: {} });
    const usual = await (await vendor({ duration: days(30) })).license();
    expect((await machines.activateFast(app.db, usual.key, info("fp")))?.machine.licenseId).toBe(usual.id);
    const v = await vendor({ duration: days(30), expirationBasis: ExpirationBasis.FROM_FIRST_ACTIVATION });
    const waiting = await v.license();
    expect(await machines.activateFast(app.db, waiting.key, info("fp"))).toBeUndefined();
    expect(await v.entries("machine.activated")).toHaveLength(0);
    await activation(a).activate({ key: waiting.key, fingerprint: "fp" });
    // Started, the license takes the fast path again.
    expect((await machines.activateFast(app.db, waiting.key, info("fp-2")))?.machine.licenseId).toBe(waiting.id);
    expect(await v.entries("license.expiry_started")).toHaveLength(1);
  });

  it("FROM_FIRST_ACTIVATION: 20 concurrent first activations on two instances start it once", async () => {
    const v = await vendor({ duration: days(30), expirationBasis: ExpirationBasis.FROM_FIRST_ACTIVATION });
    const l = await v.license();
    const results = await Promise.allSettled(
      Array.from({ length: 20 }, (_, i) => activation(i % 2 ? a : b).activate({ key: l.key, fingerprint: `fp-${i}` })),
    );
    expect(results.filter((r) => r.status === "fulfilled")).toHaveLength(5);
    expect(await v.entries("license.expiry_started")).toHaveLength(1);
    expect(await expiryOf(v, l.id)).toEqual({ expiry: at(30 * DAY), pending: false });
  });

  it("FROM_FIRST_VALIDATION: 20 concurrent first validations on two instances, one start, one expiry", async () => {
    const v = await vendor({ duration: days(7), expirationBasis: ExpirationBasis.FROM_FIRST_VALIDATION });
    const l = await v.license();
    move(10 * DAY);
    // An activation does not start it.
    await activation(a).activate({ key: l.key, fingerprint: "fp" });
    expect((await expiryOf(v, l.id)).pending).toBe(true);
    const answers = await Promise.all(
      Array.from({ length: 20 }, (_, i) => validation(i % 2 ? a : b).validateLicense({ key: l.key })),
    );
    const expiry = at(7 * DAY);
    for (const r of answers) {
      expect(r).toMatchObject({ valid: true, code: ValidationCode.VALID });
      expect(timestampDate(r.license!.expireTime!)).toEqual(expiry);
    }
    const started = await v.entries("license.expiry_started");
    expect(started).toHaveLength(1);
    expect(started[0]!.payload).toMatchObject({ on: "validation", expires_at: expiry.toISOString() });
    expect(await expiryOf(v, l.id)).toEqual({ expiry, pending: false });
    move(8 * DAY);
    for (const t of [a, b])
      expect(await validation(t).validateLicense({ key: l.key })).toMatchObject({ code: ValidationCode.EXPIRED });
    expect(await v.entries("license.expiry_started")).toHaveLength(1);
  });

  it("FROM_FIRST_USE: the first recorded usage event starts it; validation and activation do not", async () => {
    const v = await vendor({ duration: days(30), expirationBasis: ExpirationBasis.FROM_FIRST_USE });
    const usage = connectClient(UsageService, a.url, v.secret);
    await usage.createMeter({ productId: v.product.id, metric: "calls", aggregation: Aggregation.SUM });
    const l = await v.license();
    await validation(a).validateLicense({ key: l.key });
    await activation(a).activate({ key: l.key, fingerprint: "fp" });
    expect((await expiryOf(v, l.id)).pending).toBe(true);
    move(3 * DAY);
    const events = Array.from({ length: 10 }, (_, i) => ({
      licenseKey: l.key,
      metric: "calls",
      quantity: 1n,
      idempotencyKey: `use-${i}`,
    }));
    await Promise.all(
      events.map((event, i) => connectClient(UsageService, (i % 2 ? a : b).url, v.secret).recordUsage({ event })),
    );
    const started = await v.entries("license.expiry_started");
    expect(started).toHaveLength(1);
    expect(started[0]!.payload).toMatchObject({ on: "use" });
    expect(await expiryOf(v, l.id)).toEqual({ expiry: at(30 * DAY), pending: false });
  });

  it("a policy changed to FROM_CREATION starts a waiting license at its next activation, validation or use", async () => {
    const v = await vendor({ duration: days(30), expirationBasis: ExpirationBasis.FROM_FIRST_USE });
    const l = await v.license();
    await v.api.updatePolicy({
      id: v.policy.id,
      expirationBasis: ExpirationBasis.FROM_CREATION,
      updateMask: { paths: ["expiration_basis"] },
    });
    await validation(b).validateLicense({ key: l.key });
    expect(await expiryOf(v, l.id)).toEqual({ expiry: at(30 * DAY), pending: false });
    expect(await v.entries("license.expiry_started")).toHaveLength(1);
  });

  it("RenewLicense and an expiry set by hand end the wait", async () => {
    const v = await vendor({ duration: days(30), expirationBasis: ExpirationBasis.FROM_FIRST_ACTIVATION });
    const l = await v.license();
    const renewed = await v.api.renewLicense({ id: l.id });
    expect(renewed.license).toMatchObject({ expiryPending: false });
    expect(timestampDate(renewed.license!.expireTime!)).toEqual(at(30 * DAY));
    expect((await v.entries("license.renewed"))[0]!.payload).toMatchObject({ expiry_started: true });
    const other = await v.license();
    const expireTime = { seconds: BigInt(Math.floor(at(5 * DAY).getTime() / 1000)) };
    const updated = await v.api.updateLicense({ id: other.id, expireTime, updateMask: { paths: ["expire_time"] } });
    expect(updated.license).toMatchObject({ expiryPending: false });
    await activation(a).activate({ key: other.key, fingerprint: "fp" });
    expect((await expiryOf(v, other.id)).expiry).toEqual(at(5 * DAY));
    expect(await v.entries("license.expiry_started")).toHaveLength(0);
  });
});

describe("heartbeat basis", () => {
  const heartbeat = { heartbeatDuration: { seconds: 60n }, heartbeatGracePeriod: { seconds: 0n } };

  it("FROM_ACTIVATION, the default: a machine that never heartbeats dies", async () => {
    const v = await vendor(heartbeat);
    const l = await v.license();
    await activation(a).activate({ key: l.key, fingerprint: "fp" });
    move(120);
    expect(await validation(a).validateLicense({ key: l.key, fingerprint: "fp" })).toMatchObject({
      valid: false,
      code: ValidationCode.HEARTBEAT_DEAD,
    });
  });

  it("FROM_FIRST_HEARTBEAT: required only once the machine has heartbeated", async () => {
    const v = await vendor({ ...heartbeat, heartbeatBasis: HeartbeatBasis.FROM_FIRST_HEARTBEAT });
    const l = await v.license();
    await activation(a).activate({ key: l.key, fingerprint: "fp" });
    move(DAY);
    expect(await validation(a).validateLicense({ key: l.key, fingerprint: "fp" })).toMatchObject({
      valid: true,
      code: ValidationCode.VALID,
    });
    await Promise.all([a.app.heartbeatWorker.tick(), b.app.heartbeatWorker.tick()]);
    expect(await v.entries("machine.heartbeat.dead")).toHaveLength(0);
    // The first heartbeat (fast path) starts the clock.
    await activation(b).heartbeat({ key: l.key, fingerprint: "fp" });
    move(30);
    await activation(a).heartbeat({ key: l.key, fingerprint: "fp" });
    move(90);
    expect(await validation(b).validateLicense({ key: l.key, fingerprint: "fp" })).toMatchObject({
      valid: false,
      code: ValidationCode.HEARTBEAT_DEAD,
    });
    await Promise.all([a.app.heartbeatWorker.tick(), b.app.heartbeatWorker.tick()]);
    expect(await v.entries("machine.heartbeat.dead")).toHaveLength(1);
  });
});

describe("renewal basis", () => {
  const renewOnce = async (renewalBasis: RenewalBasis, elapsedDays: number) => {
    const v = await vendor({ duration: days(30), renewalBasis });
    const l = await v.license();
    const created = clock.now().getTime();
    move(elapsedDays * DAY);
    const { license } = await v.api.renewLicense({ id: l.id });
    return { expiry: timestampDate(license!.expireTime!), created };
  };
  const plus = (from: number, d: number) => new Date(from + d * DAY * 1000);

  it("FROM_NOW_IF_EXPIRED (the default): from the expiry while it is ahead, else from now", async () => {
    const ahead = await renewOnce(RenewalBasis.UNSPECIFIED, 10);
    expect(ahead.expiry).toEqual(plus(ahead.created, 60));
    const past = await renewOnce(RenewalBasis.FROM_NOW_IF_EXPIRED, 40);
    expect(past.expiry).toEqual(at(30 * DAY));
  });

  it("FROM_NOW: from the renewal, whatever the expiry", async () => {
    const r = await renewOnce(RenewalBasis.FROM_NOW, 10);
    expect(r.expiry).toEqual(at(30 * DAY));
  });

  it("FROM_EXPIRY: from the expiry, even past", async () => {
    const r = await renewOnce(RenewalBasis.FROM_EXPIRY, 40);
    expect(r.expiry).toEqual(plus(r.created, 60));
  });
});

describe("transfer strategy", () => {
  it("KEEP_EXPIRY (the default) keeps it; RESET_EXPIRY starts it again at the transfer, audited", async () => {
    const v = await vendor({ duration: days(30) });
    const reset = (
      await v.api.createPolicy({
        productId: v.product.id,
        name: "reset",
        floating: true,
        duration: days(10),
        transferStrategy: TransferStrategy.RESET_EXPIRY,
      })
    ).policy!;
    const l = await v.license();
    const expiry = at(30 * DAY);
    const other = (await v.api.createCustomer({ name: "Ann", email: "ann@example.com" })).customer!;
    move(5 * DAY);
    const kept = await v.api.transferLicense({ id: l.id, customerId: other.id });
    expect(timestampDate(kept.license!.expireTime!)).toEqual(expiry);
    const moved = await v.api.transferLicense({ id: l.id, policyId: reset.id });
    expect(timestampDate(moved.license!.expireTime!)).toEqual(at(10 * DAY));
    const entries = await v.entries("license.transferred");
    expect(entries.map((e) => e.payload)).toEqual(
      expect.arrayContaining([
        expect.not.objectContaining({ expiry_reset: true }),
        expect.objectContaining({ expiry_reset: true, expires_at: at(10 * DAY).toISOString() }),
      ]),
    );
    // Under RESET_EXPIRY a transfer to another customer resets it too.
    move(DAY);
    const again = await v.api.transferLicense({ id: l.id, customerId: v.customer.id });
    expect(timestampDate(again.license!.expireTime!)).toEqual(at(10 * DAY));
  });
});

describe("policy fields", () => {
  it("are set, updated by mask, refused when undefined, and another tenant's policy is NOT_FOUND", async () => {
    const v = await vendor();
    const { policy } = await v.api.updatePolicy({
      id: v.policy.id,
      heartbeatBasis: HeartbeatBasis.FROM_FIRST_HEARTBEAT,
      renewalBasis: RenewalBasis.FROM_NOW,
      transferStrategy: TransferStrategy.RESET_EXPIRY,
      expirationBasis: ExpirationBasis.FROM_FIRST_VALIDATION,
      updateMask: { paths: ["heartbeat_basis", "renewal_basis", "transfer_strategy"] },
    });
    expect(policy).toMatchObject({
      expirationBasis: ExpirationBasis.FROM_CREATION,
      heartbeatBasis: HeartbeatBasis.FROM_FIRST_HEARTBEAT,
      renewalBasis: RenewalBasis.FROM_NOW,
      transferStrategy: TransferStrategy.RESET_EXPIRY,
    });
    expect((await v.api.getPolicy({ id: v.policy.id })).policy).toMatchObject({
      heartbeatBasis: HeartbeatBasis.FROM_FIRST_HEARTBEAT,
    });
    for (const [field, value] of [
      ["expiration_basis", { expirationBasis: 9 as ExpirationBasis }],
      ["heartbeat_basis", { heartbeatBasis: 9 as HeartbeatBasis }],
      ["renewal_basis", { renewalBasis: 9 as RenewalBasis }],
      ["transfer_strategy", { transferStrategy: 9 as TransferStrategy }],
    ] as const) {
      expect(
        await failure(v.api.createPolicy({ productId: v.product.id, name: `bad-${field}`, ...value })),
      ).toMatchObject({ code: "InvalidArgument", reason: "INVALID_ARGUMENT", metadata: { field } });
    }
    const other = await vendor();
    expect(
      await failure(
        other.api.updatePolicy({
          id: v.policy.id,
          expirationBasis: ExpirationBasis.FROM_FIRST_USE,
          updateMask: { paths: ["expiration_basis"] },
        }),
      ),
    ).toMatchObject({ code: "NotFound" });
  });
});

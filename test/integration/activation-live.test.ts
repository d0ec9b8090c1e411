import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  ActivationService,
  type ConnectLeaseRequest,
  type ConnectLeaseResponse,
} from "../../gen/ts/licensd/activation/v1/activation_service_pb.js";
import { MachineStatus } from "../../gen/ts/licensd/activation/v1/machine_pb.js";
import { AuditService } from "../../gen/ts/licensd/audit/v1/audit_service_pb.js";
import { LicensingService, ValidationCode } from "../../gen/ts/licensd/licensing/v1/licensing_service_pb.js";
import { HeartbeatCullStrategy } from "../../gen/ts/licensd/licensing/v1/policy_pb.js";
import { ComposeStrategy, FeatureKind } from "../../gen/ts/licensd/licensing/v1/product_pb.js";
import { ApiKeyScope } from "../../gen/ts/licensd/tenant/v1/api_key_pb.js";
import { TenantService } from "../../gen/ts/licensd/tenant/v1/tenant_service_pb.js";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { ManualClock } from "../../src/platform/clock.js";
import { createOfflineActivationRequest, verifyLease, verifyOfflineActivationResponse } from "@licensd/client";
import { connectClient, grpcClient, startTestApp, type TestApp } from "../support/app.js";
import { createTestDatabase, query } from "../support/database.js";
import { failure } from "../support/errors.js";
import { outbox } from "../support/outbox.js";
import { within } from "../support/wait.js";

let db: { url: string; drop(): Promise<void> };
let a: TestApp;
let b: TestApp;
const clock = new ManualClock(new Date("2026-11-23T12:00:00Z"));

beforeAll(async () => {
  db = await createTestDatabase();
  // Two instances on one database and one (moved) clock; activation rate limits at 5 a minute per license.
  const env = { LICENSD_ACTIVATION_RATE_PER_LICENSE: "5/1m", LICENSD_ACTIVATION_RATE_PER_IP: "0" };
  a = await startTestApp({ databaseUrl: db.url, clock, env });
  b = await startTestApp({
    databaseUrl: db.url,
    clock,
    env: {
      ...env,
      LICENSD_SUPER_ADMIN_KEY: a.superAdminKey,
      LICENSD_DATA_KEY: a.app.config.dataKey.toString("base64"),
    },
  });
});
afterAll(async () => {
  await a?.close();
  await b?.close();
  await db?.drop();
});

const sec = (s: number) => ({ seconds: BigInt(s), nanos: 0 });

/** A tenant, a product and one floating policy shaped by `policy`, with a license on it. */
async function setup(code: string, policy: Record<string, unknown> = {}) {
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
      ...policy,
    })
  ).policy!;
  const customer = (await api.createCustomer({ name: "Jane", email: `jane@${code.toLowerCase()}.example` })).customer!;
  const lic = await api.createLicense({ policyId: pol.id, customerId: customer.id });
  return {
    tenantId: tenant!.id,
    secret,
    api,
    key: lic.key,
    licenseId: lic.license!.id,
    policy: pol,
    customerId: customer.id,
  };
}

const activation = (t: TestApp, key?: string) => connectClient(ActivationService, t.url, key);
const auditTypes = async (t: TestApp, secret: string, subject: string) =>
  (await connectClient(AuditService, t.url, secret).listAuditEvents({ subject })).events.map((e) => [e.type, e.actor]);

/** An open ConnectLease stream: send heartbeats, read what the server says. */
function openLease(t: TestApp) {
  const requests = outbox<ConnectLeaseRequest>();
  const abort = new AbortController();
  const responses = grpcClient(ActivationService, t.url)
    .connectLease(requests.messages, { signal: abort.signal })
    [Symbol.asyncIterator]();
  return {
    send: (msg: Partial<ConnectLeaseRequest>) => requests.push(msg as ConnectLeaseRequest),
    next: (): Promise<IteratorResult<ConnectLeaseResponse>> => responses.next(),
    end: () => requests.end(),
    drop: () => abort.abort(),
  };
}

describe("heartbeat monitoring", () => {
  it("declares silent machines dead, revives them within the resurrection period, then deactivates them — once, across instances", async () => {
    const s = await setup("HBD", {
      heartbeatDuration: sec(60),
      heartbeatGracePeriod: sec(30),
      heartbeatCullStrategy: HeartbeatCullStrategy.DEACTIVATE_DEAD,
      heartbeatResurrectionPeriod: sec(120),
    });
    const m = (await activation(a).activate({ key: s.key, fingerprint: "fp" })).machine!;
    expect(MachineStatus[m.status]).toBe("ALIVE");
    const validate = async () =>
      ValidationCode[
        (await connectClient(LicensingService, a.url).validateLicense({ key: s.key, fingerprint: "fp" })).code
      ];

    clock.advance(80_000); // past the duration, within the grace period
    await Promise.all([a.app.heartbeatWorker.tick(), b.app.heartbeatWorker.tick()]);
    expect(await validate()).toBe("VALID");
    clock.advance(20_000); // 100 s of silence > 60 + 30
    const [ra, rb] = await Promise.all([a.app.heartbeatWorker.tick(), b.app.heartbeatWorker.tick()]);
    expect(ra.dead + rb.dead).toBeGreaterThanOrEqual(1);
    const admin = activation(a, s.secret);
    const dead = (await admin.getMachine({ id: m.id })).machine!;
    expect(MachineStatus[dead.status]).toBe("DEAD");
    expect(dead.deathTime).toBeDefined();
    expect((await admin.listMachines({ status: MachineStatus.DEAD })).machines.map((x) => x.id)).toEqual([m.id]);
    expect((await admin.listMachines({ status: MachineStatus.ALIVE })).machines).toEqual([]);
    expect(await validate()).toBe("HEARTBEAT_DEAD");

    clock.advance(60_000); // within the 120 s resurrection period
    const revived = await activation(b).heartbeat({ key: s.key, fingerprint: "fp" });
    expect(MachineStatus[revived.machine!.status]).toBe("ALIVE");
    expect(await validate()).toBe("VALID");

    clock.advance(100_000);
    await Promise.all([a.app.heartbeatWorker.tick(), b.app.heartbeatWorker.tick()]);
    clock.advance(60_000); // dead, still revivable: not culled yet
    await Promise.all([a.app.heartbeatWorker.tick(), b.app.heartbeatWorker.tick()]);
    expect((await admin.getMachine({ id: m.id })).machine!.status).toBe(MachineStatus.DEAD);
    clock.advance(61_000); // resurrection period over: deactivated, seat freed
    await Promise.all([a.app.heartbeatWorker.tick(), b.app.heartbeatWorker.tick()]);
    expect(await failure(admin.getMachine({ id: m.id }))).toMatchObject({ code: "NotFound" });
    expect(await failure(activation(a).heartbeat({ key: s.key, fingerprint: "fp" }))).toMatchObject({
      code: "NotFound",
    });
    expect(await auditTypes(a, s.secret, m.id)).toEqual([
      ["machine.activated", `license:${s.licenseId}`],
      ["machine.heartbeat.dead", "system"],
      ["machine.heartbeat.resurrected", `license:${s.licenseId}`],
      ["machine.heartbeat.dead", "system"],
      ["machine.deactivated", "system"],
    ]);
    const [culled] = (
      await connectClient(AuditService, a.url, s.secret).listAuditEvents({
        subject: m.id,
        typePrefix: "machine.deactivated",
      })
    ).events;
    expect(culled!.payload).toMatchObject({ reason: "heartbeat_dead", license_id: s.licenseId });
  });

  it("keeps dead machines (and their seats) under KEEP_DEAD; a late heartbeat is refused, an activation revives; offline machines are never culled", async () => {
    const s = await setup("HBK", {
      heartbeatDuration: sec(60),
      heartbeatCullStrategy: HeartbeatCullStrategy.KEEP_DEAD,
      maxMachines: 1,
    });
    const m = (await activation(a).activate({ key: s.key, fingerprint: "fp" })).machine!;
    clock.advance(61_000);
    await a.app.heartbeatWorker.tick();
    clock.advance(3600_000);
    await a.app.heartbeatWorker.tick();
    expect((await activation(a, s.secret).getMachine({ id: m.id })).machine!.status).toBe(MachineStatus.DEAD);
    expect(await failure(activation(a).heartbeat({ key: s.key, fingerprint: "fp" }))).toMatchObject({
      code: "FailedPrecondition",
      reason: "HEARTBEAT_DEAD",
    });
    expect(await failure(activation(a).activate({ key: s.key, fingerprint: "other" }))).toMatchObject({
      reason: "TOO_MANY_MACHINES",
    });
    expect(MachineStatus[(await activation(a).activate({ key: s.key, fingerprint: "fp" })).machine!.status]).toBe(
      "ALIVE",
    );
  });

  it("requires a fingerprint in validation when the policy says so", async () => {
    const s = await setup("RFS", { requireFingerprintScope: true });
    const v = connectClient(LicensingService, a.url);
    expect(ValidationCode[(await v.validateLicense({ key: s.key })).code]).toBe("FINGERPRINT_SCOPE_REQUIRED");
    await activation(a).activate({ key: s.key, fingerprint: "fp" });
    expect(ValidationCode[(await v.validateLicense({ key: s.key, fingerprint: "fp" })).code]).toBe("VALID");
    expect((await s.api.getPolicy({ id: s.policy.id })).policy!.requireFingerprintScope).toBe(true);
  });
});

describe("ConnectLease", () => {
  it("renews the lease on every heartbeat and pushes a revocation made on another instance", async () => {
    const s = await setup("CLS");
    await activation(a).activate({ key: s.key, fingerprint: "fp" });
    const keys = (await activation(a).getSigningKeys({})).keys;
    const stream = openLease(a);
    stream.send({ key: s.key, fingerprint: "fp" });
    const first = (await stream.next()).value!;
    expect(first.event.case).toBe("lease");
    expect(
      (await verifyLease((first.event.value as { token: string }).token, keys, { fingerprint: "fp", now: clock.now() }))
        .valid,
    ).toBe(true);
    stream.send({});
    expect((await stream.next()).value!.event.case).toBe("lease");

    // No heartbeat is sent: the revocation is pushed (its latency: bench/propagation.ts, BENCHMARKS.md).
    await connectClient(LicensingService, b.url, s.secret).suspendLicense({ id: s.licenseId });
    const pushed = (await within(stream.next(), "the pushed revocation")).value!;
    expect(pushed.event).toMatchObject({ case: "revocation", value: { reason: "LICENSE_SUSPENDED" } });
    expect((await within(stream.next(), "the end of the stream")).done).toBe(true);
  });

  it("pushes machine deletion, ends for a dead license at once, and treats a dropped stream as silence", async () => {
    const s = await setup("CLD");
    const m = (await activation(a).activate({ key: s.key, fingerprint: "fp" })).machine!;
    const dropped = openLease(b);
    dropped.send({ key: s.key, fingerprint: "fp" });
    expect((await dropped.next()).value!.event.case).toBe("lease");
    dropped.drop();
    await new Promise((r) => setTimeout(r, 100));
    expect((await activation(a, s.secret).getMachine({ id: m.id })).machine!.id).toBe(m.id); // nothing but missed heartbeats

    const stream = openLease(b);
    stream.send({ key: s.key, fingerprint: "fp" });
    expect((await stream.next()).value!.event.case).toBe("lease");
    await activation(a, s.secret).deleteMachine({ id: m.id });
    expect((await stream.next()).value!.event).toMatchObject({
      case: "revocation",
      value: { reason: "MACHINE_DELETED" },
    });
    expect((await stream.next()).done).toBe(true);

    await activation(a).activate({ key: s.key, fingerprint: "fp" });
    await connectClient(LicensingService, a.url, s.secret).revokeLicense({ id: s.licenseId });
    const late = openLease(a);
    late.send({ key: s.key, fingerprint: "fp" });
    expect((await late.next()).value!.event).toMatchObject({
      case: "revocation",
      value: { reason: "LICENSE_REVOKED" },
    });
  });

  it("pushes LICENSE_EXPIRED the moment the license runs out while the stream is open", async () => {
    const s = await setup("CLX");
    const expire = new Date(Date.now() + 3600_000); // validated against the real clock: in the future
    const lic = await s.api.createLicense({
      policyId: s.policy.id,
      customerId: s.customerId,
      expireTime: timestampFromDate(expire),
    });
    const saved = clock.now();
    clock.set(new Date(expire.getTime() - 600)); // the server's clock: 0.6 s before expiry
    try {
      await activation(a).activate({ key: lic.key, fingerprint: "fp" });
      const stream = openLease(a);
      stream.send({ key: lic.key, fingerprint: "fp" });
      expect((await stream.next()).value!.event.case).toBe("lease");
      // No heartbeat is sent: the server's own expiry timer pushes it (its latency: bench/propagation.ts).
      expect((await within(stream.next(), "the pushed expiry")).value!.event).toMatchObject({
        case: "revocation",
        value: { reason: "LICENSE_EXPIRED" },
      });
    } finally {
      clock.set(saved);
    }
  });

  it("answers every activation RPC's wrong key, wrong tenant and bad fingerprint clearly, changing nothing", async () => {
    const s = await setup("CLW");
    const other = await setup("CLV");
    const m = (await activation(a).activate({ key: s.key, fingerprint: "fp" })).machine!;
    const wrongKey = "CLW-AAAAA-BBBBB-CCCCC-DDDDD-EEEEE-FFFFF-GGGGG";
    expect(await failure(activation(a).heartbeat({ key: wrongKey, fingerprint: "fp" }))).toMatchObject({
      code: "Unauthenticated",
      reason: "INVALID_LICENSE_KEY",
    });
    expect(await failure(activation(a).deactivate({ key: wrongKey, fingerprint: "fp" }))).toMatchObject({
      code: "Unauthenticated",
    });
    expect(await failure(activation(a).heartbeat({ key: s.key, fingerprint: "" }))).toMatchObject({
      code: "InvalidArgument",
      metadata: { field: "fingerprint" },
    });
    expect(await failure(activation(a).deactivate({ key: s.key, fingerprint: "x".repeat(256) }))).toMatchObject({
      code: "InvalidArgument",
      metadata: { field: "fingerprint" },
    });
    expect(await failure(activation(a).deactivate({ key: other.key, fingerprint: "fp" }))).toMatchObject({
      code: "NotFound",
    }); // another license's key: not that machine
    expect(await failure(activation(a, other.secret).deactivate({ machineId: m.id }))).toMatchObject({
      code: "NotFound",
      reason: "MACHINE_NOT_FOUND",
    });
    expect(await failure(activation(a, other.secret).getMachine({ id: m.id }))).toMatchObject({ code: "NotFound" });
    expect(await failure(activation(a, other.secret).deleteMachine({ id: m.id }))).toMatchObject({ code: "NotFound" });
    expect((await activation(a, other.secret).listMachines({ licenseId: s.licenseId })).machines).toEqual([]);
    expect(await failure(activation(a, other.secret).listMachines({ tenantId: s.tenantId }))).toMatchObject({
      code: "NotFound",
    });
    expect(await failure(activation(a, "lsk_not_a_key").listMachines({}))).toMatchObject({ code: "Unauthenticated" });
    expect((await activation(a, s.secret).getMachine({ id: m.id })).machine!.fingerprint).toBe("fp"); // still there
  });

  it("refuses a bad first message, a wrong key and an unknown machine with clear errors", async () => {
    const s = await setup("CLE");
    const expectError = async (msg: Partial<ConnectLeaseRequest>, expected: Record<string, unknown>) => {
      const stream = openLease(a);
      stream.send(msg);
      expect(await failure(stream.next())).toMatchObject(expected);
      stream.end();
    };
    await expectError({ fingerprint: "fp" }, { code: "InvalidArgument", metadata: { field: "key" } });
    await expectError({ key: s.key }, { code: "InvalidArgument", metadata: { field: "fingerprint" } });
    await expectError(
      { key: "CLE-AAAAA-BBBBB-CCCCC-DDDDD-EEEEE-FFFFF-GGGGG", fingerprint: "fp" },
      { code: "Unauthenticated", reason: "INVALID_LICENSE_KEY" },
    );
    await expectError({ key: s.key, fingerprint: "nowhere" }, { code: "NotFound", reason: "MACHINE_NOT_FOUND" });
    await expectError(
      { key: s.key, fingerprint: "x".repeat(256) },
      { code: "InvalidArgument", metadata: { field: "fingerprint" } },
    );
    expect(a.app.hub.size + b.app.hub.size).toBe(0);
  });
});

describe("air-gapped activation", () => {
  it("round-trips a request file and a response file the SDK verifies offline", async () => {
    const s = await setup("OFF", { offlineLeaseTtl: sec(30 * 86_400) });
    const requestFile = createOfflineActivationRequest({
      key: s.key,
      fingerprint: "vault-7",
      hostname: "vault",
      platform: "linux-x64",
      cores: 4,
      now: clock.now(),
    });
    expect(requestFile).not.toContain(s.key);
    const admin = activation(a, s.secret);
    const { machine, lease } = await admin.activateOffline({ request: requestFile });
    expect(machine).toMatchObject({ fingerprint: "vault-7", hostname: "vault", offline: true, licenseId: s.licenseId });
    const keys = (await activation(a).getSigningKeys({})).keys;
    const check = await verifyOfflineActivationResponse(lease!.token, keys, {
      fingerprint: "vault-7",
      now: clock.now(),
    });
    expect(check).toMatchObject({ valid: true, lease: { offline: true, machine_id: machine!.id } });
    expect(Date.parse(check.lease!.expires_at!) - clock.now().getTime()).toBe(30 * 86_400_000);
    expect(
      (await verifyOfflineActivationResponse(lease!.token, keys, { fingerprint: "other", now: clock.now() })).valid,
    ).toBe(false);
    expect(
      (
        await verifyOfflineActivationResponse(lease!.token, keys, {
          fingerprint: "vault-7",
          now: new Date(clock.now().getTime() + 31 * 86_400_000),
        })
      ).code,
    ).toBe("EXPIRED");

    // Offline machines are never declared dead.
    await s.api.updatePolicy({
      id: s.policy.id,
      heartbeatDuration: sec(60),
      updateMask: { paths: ["heartbeat_duration"] },
    });
    clock.advance(3600_000);
    await a.app.heartbeatWorker.tick();
    expect((await admin.getMachine({ id: machine!.id })).machine!.status).toBe(MachineStatus.ALIVE);
    clock.advance(-3600_000);
  });

  it("refuses altered requests, other tenants' licenses and garbage, changing nothing", async () => {
    const s = await setup("OFB");
    const other = await setup("OFC");
    const requestFile = createOfflineActivationRequest({ key: s.key, fingerprint: "fp", now: clock.now() });
    expect(await failure(activation(a, other.secret).activateOffline({ request: requestFile }))).toMatchObject({
      code: "NotFound",
    });
    const [p, body, mac] = requestFile.split(".");
    const altered = JSON.parse(Buffer.from(body!, "base64url").toString());
    altered.fingerprint = "someone-else";
    expect(
      await failure(
        activation(a, s.secret).activateOffline({
          request: `${p}.${Buffer.from(JSON.stringify(altered)).toString("base64url")}.${mac}`,
        }),
      ),
    ).toMatchObject({
      code: "InvalidArgument",
      reason: "INVALID_ACTIVATION_REQUEST",
      metadata: { field: "request" },
    });
    expect(await failure(activation(a, s.secret).activateOffline({ request: "hello" }))).toMatchObject({
      code: "InvalidArgument",
      reason: "INVALID_ACTIVATION_REQUEST",
    });
    const stale = createOfflineActivationRequest({
      key: s.key,
      fingerprint: "fp",
      now: new Date(clock.now().getTime() - 91 * 86_400_000),
    });
    expect(await failure(activation(a, s.secret).activateOffline({ request: stale }))).toMatchObject({
      code: "InvalidArgument",
      reason: "ACTIVATION_REQUEST_EXPIRED",
    });
    expect(await failure(activation(a).activateOffline({ request: requestFile }))).toMatchObject({
      code: "Unauthenticated",
    });
    expect(
      (await query(db.url, "select count(*)::int as n from machines where license_id = $1", [s.licenseId]))[0].n,
    ).toBe(0);
  });
});

describe("activation rate limits", () => {
  it("refuses activations past the per-license bucket on any instance, with the retry delay, and refills with time", async () => {
    const s = await setup("RTL", { maxMachines: 0 });
    const other = await setup("RTM");
    for (let i = 0; i < 5; i++) await activation(i % 2 ? a : b).activate({ key: s.key, fingerprint: `fp-${i}` });
    const refused = await failure(activation(b).activate({ key: s.key, fingerprint: "fp-5" }));
    expect(refused).toMatchObject({ code: "ResourceExhausted", reason: "RATE_LIMITED" });
    expect(Number(refused.metadata.retry_delay_ms)).toBeGreaterThan(0);
    expect(Number(refused.metadata.retry_delay_ms)).toBeLessThanOrEqual(12_000); // one token per 12 s
    expect((await activation(a).activate({ key: other.key, fingerprint: "fp" })).machine).toBeDefined(); // another license's bucket
    expect(
      (await query(db.url, "select count(*)::int as n from machines where license_id = $1", [s.licenseId]))[0].n,
    ).toBe(5);
    clock.advance(Number(refused.metadata.retry_delay_ms));
    expect((await activation(a).activate({ key: s.key, fingerprint: "fp-5" })).machine!.fingerprint).toBe("fp-5");
    expect(await failure(activation(a).activate({ key: s.key, fingerprint: "fp-6" }))).toMatchObject({
      code: "ResourceExhausted",
    });
    // The same license's bucket however the key is typed (Vinzy keys are accepted in any case).
    expect(
      await failure(activation(b).activate({ key: ` ${s.key.toLowerCase()} `, fingerprint: "fp-7" })),
    ).toMatchObject({ code: "ResourceExhausted", reason: "RATE_LIMITED" });
  });

  it("limits per client address too", async () => {
    const c = await startTestApp({
      databaseUrl: db.url,
      clock,
      env: {
        LICENSD_ACTIVATION_RATE_PER_IP: "2/1h",
        LICENSD_ACTIVATION_RATE_PER_LICENSE: "0",
        LICENSD_SUPER_ADMIN_KEY: a.superAdminKey,
        LICENSD_DATA_KEY: a.app.config.dataKey.toString("base64"),
      },
    });
    try {
      const s = await setup("RTI", { maxMachines: 0 });
      const bad = "RTI-AAAAA-BBBBB-CCCCC-DDDDD-EEEEE-FFFFF-GGGGG";
      expect(await failure(activation(c).activate({ key: bad, fingerprint: "x" }))).toMatchObject({
        code: "Unauthenticated",
      });
      await activation(c).activate({ key: s.key, fingerprint: "a" });
      // Guessing keys from one address runs out too.
      expect(await failure(activation(c).activate({ key: s.key, fingerprint: "b" }))).toMatchObject({
        code: "ResourceExhausted",
        reason: "RATE_LIMITED",
      });
    } finally {
      await c.close();
    }
  });
});

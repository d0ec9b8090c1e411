import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  ActivationService,
  type ConnectLeaseRequest,
  type ConnectLeaseResponse,
} from "../../gen/ts/licensd/activation/v1/activation_service_pb.js";
import { ProcessStatus } from "../../gen/ts/licensd/activation/v1/process_pb.js";
import { AuditService } from "../../gen/ts/licensd/audit/v1/audit_service_pb.js";
import { LicensingService, ValidationCode } from "../../gen/ts/licensd/licensing/v1/licensing_service_pb.js";
import { ProcessLeasingStrategy } from "../../gen/ts/licensd/licensing/v1/policy_pb.js";
import { ApiKeyScope } from "../../gen/ts/licensd/tenant/v1/api_key_pb.js";
import { TenantService } from "../../gen/ts/licensd/tenant/v1/tenant_service_pb.js";
import { ManualClock } from "../../src/platform/clock.js";
import { connectClient, grpcClient, startTestApp, type TestApp } from "../support/app.js";
import { createTestDatabase, query } from "../support/database.js";
import { failure } from "../support/errors.js";
import { outbox } from "../support/outbox.js";
import { until, within } from "../support/wait.js";

/*
 * Processes: running instances of an app on activated machines, at most the policy's max_processes alive at once per
 * machine or per license. Two instances on one database and one moved clock.
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

const sec = (s: number) => ({ seconds: BigInt(s), nanos: 0 });
const move = (seconds: number) => clock.set(new Date(clock.now().getTime() + seconds * 1000));

let n = 0;
/** A tenant with a floating policy shaped by `policy`, a license on it, and machines `fp-1`, `fp-2` activated. */
async function setup(policy: Record<string, unknown> = {}) {
  const code = `P${String(++n).padStart(2, "0")}`;
  const tenants = connectClient(TenantService, a.url, a.superAdminKey);
  const { tenant } = await tenants.createTenant({ name: `${code} vendor` });
  const { secret } = await tenants.createApiKey({ tenantId: tenant!.id, name: "admin", scopes: [ApiKeyScope.ADMIN] });
  const api = connectClient(LicensingService, a.url, secret);
  const product = (await api.createProduct({ code, name: "App" })).product!;
  const pol = (
    await api.createPolicy({ productId: product.id, name: "team", floating: true, maxMachines: 5, ...policy })
  ).policy!;
  const customer = (await api.createCustomer({ name: "Jane", email: `jane@${code.toLowerCase()}.example` })).customer!;
  const lic = await api.createLicense({ policyId: pol.id, customerId: customer.id });
  const machines = [];
  for (const fingerprint of ["fp-1", "fp-2"])
    machines.push((await connectClient(ActivationService, a.url).activate({ key: lic.key, fingerprint })).machine!);
  return {
    tenantId: tenant!.id,
    secret,
    api,
    admin: (t: TestApp) => connectClient(ActivationService, t.url, secret),
    key: lic.key,
    licenseId: lic.license!.id,
    policy: pol,
    machines,
    entries: async (typePrefix: string) =>
      (await connectClient(AuditService, a.url, secret).listAuditEvents({ typePrefix })).events,
  };
}

const app = (t: TestApp) => connectClient(ActivationService, t.url);
const code = async (t: TestApp, key: string, fingerprint = "") =>
  ValidationCode[(await connectClient(LicensingService, t.url).validateLicense({ key, fingerprint })).code];
const alive = async (licenseId: string) =>
  (
    await query(
      db.url,
      `select count(*)::int as n from processes
        where license_id = $1 and last_heartbeat_at + make_interval(secs => heartbeat_seconds) >= $2`,
      [licenseId, clock.now()],
    )
  )[0].n;

/** An open ConnectLease stream on the lean gRPC path: send heartbeats, read what the server says. */
function openLease(t: TestApp) {
  const requests = outbox<ConnectLeaseRequest>();
  const abort = new AbortController();
  const responses = grpcClient(ActivationService, t.url)
    .connectLease(requests.messages, { signal: abort.signal })
    [Symbol.asyncIterator]();
  return {
    send: (msg: Partial<ConnectLeaseRequest>) => requests.push(msg as ConnectLeaseRequest),
    next: (): Promise<IteratorResult<ConnectLeaseResponse>> => within(responses.next(), "a lease event"),
    end: () => requests.end(),
  };
}

describe("process limits under concurrency", () => {
  it("spawns exactly 3 of 20 concurrent processes on one machine against max_processes 3 per machine", async () => {
    const s = await setup({ maxProcesses: 3 });
    const results = await Promise.allSettled(
      Array.from({ length: 20 }, (_, i) =>
        app(i % 2 ? a : b).spawnProcess({ key: s.key, fingerprint: "fp-1", pid: `pid-${i}` }),
      ),
    );
    expect(results.filter((r) => r.status === "fulfilled")).toHaveLength(3);
    for (const r of results.filter((r) => r.status === "rejected"))
      expect(await failure(Promise.reject((r as PromiseRejectedResult).reason))).toMatchObject({
        code: "FailedPrecondition",
        reason: "PROCESS_LIMIT_REACHED",
        metadata: { license_id: s.licenseId, max_processes: "3", process_leasing_strategy: "per_machine" },
      });
    expect(await alive(s.licenseId)).toBe(3);
    // The limit is per machine: the other machine has its own 3.
    for (const pid of ["x", "y", "z"]) await app(b).spawnProcess({ key: s.key, fingerprint: "fp-2", pid });
    expect(await alive(s.licenseId)).toBe(6);
    expect(await s.entries("process.")).toHaveLength(6);
  });

  it("spawns exactly 3 of 20 concurrent processes across two machines against max_processes 3 per license", async () => {
    const s = await setup({ maxProcesses: 3, processLeasingStrategy: ProcessLeasingStrategy.PER_LICENSE });
    expect(ProcessLeasingStrategy[s.policy.processLeasingStrategy]).toBe("PER_LICENSE");
    const results = await Promise.allSettled(
      Array.from({ length: 20 }, (_, i) =>
        app(i % 2 ? a : b).spawnProcess({ key: s.key, fingerprint: i % 4 < 2 ? "fp-1" : "fp-2", pid: `pid-${i}` }),
      ),
    );
    expect(results.filter((r) => r.status === "fulfilled")).toHaveLength(3);
    for (const r of results.filter((r) => r.status === "rejected"))
      expect(await failure(Promise.reject((r as PromiseRejectedResult).reason))).toMatchObject({
        code: "FailedPrecondition",
        reason: "PROCESS_LIMIT_REACHED",
        metadata: { max_processes: "3", process_leasing_strategy: "per_license" },
      });
    expect(await alive(s.licenseId)).toBe(3);
  });
});

describe("process lifecycle", () => {
  it("spawns, pings, lists, kills (freeing the slot), idempotently and audited", async () => {
    const s = await setup({ maxProcesses: 1, processHeartbeatDuration: sec(120) });
    const spawned = (
      await app(a).spawnProcess({
        key: s.key,
        fingerprint: "fp-1",
        pid: "4242",
        metadata: { build: "1.2" },
        idempotencyKey: "spawn-1",
      })
    ).process!;
    expect(spawned).toMatchObject({
      tenantId: s.tenantId,
      licenseId: s.licenseId,
      machineId: s.machines[0]!.id,
      pid: "4242",
      metadata: { build: "1.2" },
      status: ProcessStatus.ALIVE,
      heartbeatDuration: { seconds: 120n },
    });
    expect(spawned.id).toMatch(/^proc_[0-9a-z]{26}$/);
    // A retry with the same key, on the other instance, is the first answer.
    const retried = await app(b).spawnProcess({
      key: s.key,
      fingerprint: "fp-1",
      pid: "4242",
      metadata: { build: "1.2" },
      idempotencyKey: "spawn-1",
    });
    expect(retried.process!.id).toBe(spawned.id);
    expect(await failure(app(b).spawnProcess({ key: s.key, fingerprint: "fp-1", pid: "4242" }))).toMatchObject({
      code: "AlreadyExists",
      reason: "PROCESS_EXISTS",
    });
    expect(await failure(app(b).spawnProcess({ key: s.key, fingerprint: "fp-1", pid: "4243" }))).toMatchObject({
      code: "FailedPrecondition",
      reason: "PROCESS_LIMIT_REACHED",
    });

    move(60);
    const pinged = (await app(b).pingProcess({ key: s.key, id: spawned.id })).process!;
    expect(pinged.lastHeartbeatTime!.seconds).toBe(BigInt(clock.now().getTime() / 1000));

    const byLicense = await s.admin(b).listProcesses({ licenseId: s.licenseId });
    expect(byLicense.processes.map((p) => p.id)).toEqual([spawned.id]);
    expect((await s.admin(a).listProcesses({ machineId: s.machines[1]!.id })).processes).toEqual([]);
    expect((await s.admin(a).getProcess({ id: spawned.id })).process!.pid).toBe("4242");

    const killed = await app(a).killProcess({ key: s.key, id: spawned.id, idempotencyKey: "kill-1" });
    expect(killed.process!.id).toBe(spawned.id);
    expect((await app(b).killProcess({ key: s.key, id: spawned.id, idempotencyKey: "kill-1" })).process!.id).toBe(
      spawned.id,
    );
    expect(await failure(app(a).pingProcess({ key: s.key, id: spawned.id }))).toMatchObject({
      code: "NotFound",
      reason: "PROCESS_NOT_FOUND",
    });
    // The slot is free again; an admin may spawn by machine id, and kill.
    const second = (await s.admin(a).spawnProcess({ machineId: s.machines[0]!.id, pid: "4243" })).process!;
    await s.admin(b).killProcess({ id: second.id });
    expect((await s.entries("process.")).map((e) => [e.type, e.subject, e.payload?.reason])).toEqual([
      ["process.spawned", spawned.id, undefined],
      ["process.killed", spawned.id, "killed"],
      ["process.spawned", second.id, undefined],
      ["process.killed", second.id, "killed"],
    ]);
  });

  it("counts a process whose last ping is older than its heartbeat duration as dead", async () => {
    const s = await setup({ maxProcesses: 2, processHeartbeatDuration: sec(60) });
    const p1 = (await app(a).spawnProcess({ key: s.key, fingerprint: "fp-1", pid: "1" })).process!;
    await app(b).spawnProcess({ key: s.key, fingerprint: "fp-1", pid: "2" });
    move(40);
    await app(a).pingProcess({ key: s.key, id: p1.id });
    move(30); // pid 2 is 70 s silent: dead; pid 1 pinged 30 s ago
    expect(ProcessStatus[(await s.admin(a).getProcess({ id: p1.id })).process!.status]).toBe("ALIVE");
    const listed = (await s.admin(b).listProcesses({ licenseId: s.licenseId })).processes;
    expect(listed.map((p) => [p.pid, ProcessStatus[p.status]])).toEqual([
      ["1", "ALIVE"],
      ["2", "DEAD"],
    ]);
    const dead = listed[1]!;
    expect(await failure(app(b).pingProcess({ key: s.key, id: dead.id }))).toMatchObject({
      code: "FailedPrecondition",
      reason: "PROCESS_DEAD",
      metadata: { process_id: dead.id },
    });
    // Its slot is free; and its pid may be spawned again (the dead one is replaced).
    const again = (await app(a).spawnProcess({ key: s.key, fingerprint: "fp-1", pid: "2" })).process!;
    expect(again.id).not.toBe(dead.id);
    move(61);
    await Promise.all([a.app.heartbeatWorker.tick(), b.app.heartbeatWorker.tick()]);
    expect((await s.admin(a).listProcesses({ licenseId: s.licenseId })).processes).toEqual([]);
    const killed = (await s.entries("process.killed")).map((e) => [e.subject, e.actor, e.payload?.reason]);
    expect(killed).toHaveLength(3);
    expect(killed).toEqual(
      expect.arrayContaining([
        [dead.id, "system", "heartbeat_dead"],
        [p1.id, "system", "heartbeat_dead"],
        [again.id, "system", "heartbeat_dead"],
      ]),
    );
  });

  it("needs an activated, usable machine; deleting the machine removes its processes", async () => {
    const s = await setup({ maxProcesses: 2 });
    expect(await failure(app(a).spawnProcess({ key: s.key, fingerprint: "fp-9", pid: "1" }))).toMatchObject({
      code: "NotFound",
      reason: "MACHINE_NOT_FOUND",
    });
    await app(a).spawnProcess({ key: s.key, fingerprint: "fp-1", pid: "1" });
    await s.api.suspendLicense({ id: s.licenseId });
    expect(await failure(app(a).spawnProcess({ key: s.key, fingerprint: "fp-1", pid: "2" }))).toMatchObject({
      code: "FailedPrecondition",
      reason: "LICENSE_SUSPENDED",
    });
    await s.api.reinstateLicense({ id: s.licenseId });
    await s.admin(b).deleteMachine({ id: s.machines[0]!.id });
    expect(
      (await query(db.url, "select count(*)::int as n from processes where license_id = $1", [s.licenseId]))[0].n,
    ).toBe(0);
  });

  it("keeps the defaults: no limit, and validation says nothing of processes", async () => {
    const s = await setup();
    expect(s.policy.maxProcesses).toBe(0);
    expect(ProcessLeasingStrategy[s.policy.processLeasingStrategy]).toBe("PER_MACHINE");
    for (let i = 0; i < 12; i++)
      await app(i % 2 ? a : b).spawnProcess({ key: s.key, fingerprint: "fp-1", pid: `${i}` });
    const p = (await s.admin(a).listProcesses({ licenseId: s.licenseId })).processes[0]!;
    expect(p.heartbeatDuration!.seconds).toBe(600n);
    expect(await code(a, s.key, "fp-1")).toBe("VALID");
  });
});

describe("ValidateLicense and processes", () => {
  it("answers TOO_MANY_PROCESSES once more are alive than a lowered limit allows, per machine", async () => {
    const s = await setup({ maxProcesses: 3 });
    for (const pid of ["1", "2"]) await app(a).spawnProcess({ key: s.key, fingerprint: "fp-1", pid });
    await app(a).spawnProcess({ key: s.key, fingerprint: "fp-2", pid: "1" });
    expect(await code(a, s.key, "fp-1")).toBe("VALID");
    await s.api.updatePolicy({ id: s.policy.id, maxProcesses: 1, updateMask: { paths: ["max_processes"] } });
    const answer = await connectClient(LicensingService, b.url).validateLicense({ key: s.key, fingerprint: "fp-1" });
    expect([ValidationCode[answer.code], answer.valid, answer.detail]).toEqual([
      "TOO_MANY_PROCESSES",
      false,
      "2 processes are alive on the machine; the policy allows 1",
    ]);
    expect(await code(b, s.key, "fp-2")).toBe("VALID");
    // Without a fingerprint, any machine over the limit.
    expect(await code(a, s.key)).toBe("TOO_MANY_PROCESSES");
    // Dead processes do not count.
    move(601);
    expect(await code(a, s.key, "fp-1")).toBe("VALID");
  });

  it("counts the whole license under PER_LICENSE", async () => {
    const s = await setup({ maxProcesses: 2, processLeasingStrategy: ProcessLeasingStrategy.PER_LICENSE });
    await app(a).spawnProcess({ key: s.key, fingerprint: "fp-1", pid: "1" });
    await app(a).spawnProcess({ key: s.key, fingerprint: "fp-2", pid: "1" });
    expect(await code(a, s.key, "fp-2")).toBe("VALID");
    await s.api.updatePolicy({ id: s.policy.id, maxProcesses: 1, updateMask: { paths: ["max_processes"] } });
    expect(await code(b, s.key, "fp-2")).toBe("TOO_MANY_PROCESSES");
    expect(await code(b, s.key)).toBe("TOO_MANY_PROCESSES");
  });
});

describe("ConnectLease with a process", () => {
  it("spawns the named process, pings it with each heartbeat, and kills it when the stream closes", async () => {
    const s = await setup({ maxProcesses: 1 });
    const lease = openLease(a);
    lease.send({ key: s.key, fingerprint: "fp-1", processPid: "agent-1" });
    expect((await lease.next()).value?.event.case).toBe("lease");
    const [held] = (await s.admin(b).listProcesses({ licenseId: s.licenseId })).processes;
    expect(held?.pid).toBe("agent-1");
    expect(await failure(app(b).spawnProcess({ key: s.key, fingerprint: "fp-1", pid: "other" }))).toMatchObject({
      reason: "PROCESS_LIMIT_REACHED",
    });
    move(300);
    lease.send({});
    expect((await lease.next()).value?.event.case).toBe("lease");
    const pinged = (await s.admin(a).getProcess({ id: held!.id })).process!;
    expect(pinged.lastHeartbeatTime!.seconds).toBe(BigInt(clock.now().getTime() / 1000));
    lease.end();
    await until(
      "the stream's process killed",
      async () => (await s.admin(a).listProcesses({ licenseId: s.licenseId })).processes.length === 0,
    );
    await app(b).spawnProcess({ key: s.key, fingerprint: "fp-1", pid: "other" });
    expect((await s.entries("process.killed")).map((e) => [e.subject, e.actor])).toEqual([
      [held!.id, `license:${s.licenseId}`],
    ]);
  });

  it("revokes the stream when its process is killed, and refuses a stream over the limit", async () => {
    const s = await setup({ maxProcesses: 1 });
    const lease = openLease(b);
    lease.send({ key: s.key, fingerprint: "fp-2", processPid: "agent-1" });
    expect((await lease.next()).value?.event.case).toBe("lease");
    const over = openLease(a);
    over.send({ key: s.key, fingerprint: "fp-2", processPid: "agent-2" });
    expect(await failure(over.next())).toMatchObject({ code: "FailedPrecondition", reason: "PROCESS_LIMIT_REACHED" });
    const [held] = (await s.admin(a).listProcesses({ licenseId: s.licenseId })).processes;
    await s.admin(a).killProcess({ id: held!.id });
    const ended = (await lease.next()).value!;
    expect(ended.event.case === "revocation" && ended.event.value.reason).toBe("PROCESS_KILLED");
  });

  it("revokes the stream with PROCESS_DEAD when its messages come slower than the process heartbeat", async () => {
    const s = await setup({ maxProcesses: 2, processHeartbeatDuration: sec(60) });
    const lease = openLease(a);
    lease.send({ key: s.key, fingerprint: "fp-1", processPid: "slow" });
    expect((await lease.next()).value?.event.case).toBe("lease");
    move(61);
    lease.send({});
    const ended = (await lease.next()).value!;
    expect(ended.event.case === "revocation" && ended.event.value.reason).toBe("PROCESS_DEAD");
    expect((await lease.next()).done).toBe(true);
  });

  it("holds a process over the Connect protocol (HTTP/2) too", async () => {
    const s = await setup({ maxProcesses: 1 });
    const requests = outbox<ConnectLeaseRequest>();
    const h2 = createConnectTransport({ baseUrl: a.url, httpVersion: "2" });
    const responses = createClient(ActivationService, h2).connectLease(requests.messages)[Symbol.asyncIterator]();
    requests.push({ key: s.key, fingerprint: "fp-1", processPid: "web-1" } as ConnectLeaseRequest);
    expect((await within(responses.next(), "a lease")).value?.event.case).toBe("lease");
    expect((await s.admin(a).listProcesses({ licenseId: s.licenseId })).processes.map((p) => p.pid)).toEqual(["web-1"]);
    requests.end();
    await within(responses.next(), "the stream's end");
    await until(
      "the stream's process killed",
      async () => (await s.admin(a).listProcesses({ licenseId: s.licenseId })).processes.length === 0,
    );
  });
});

describe("process security and bad input", () => {
  it("keeps tenants and licenses apart: NOT_FOUND for another's process", async () => {
    const s = await setup();
    const other = await setup();
    const p = (await app(a).spawnProcess({ key: s.key, fingerprint: "fp-1", pid: "1" })).process!;
    for (const call of [
      () => other.admin(a).getProcess({ id: p.id }),
      () => other.admin(a).killProcess({ id: p.id }),
      () => other.admin(b).pingProcess({ id: p.id }),
      () => app(a).pingProcess({ key: other.key, id: p.id }),
      () => app(b).killProcess({ key: other.key, id: p.id }),
      () => other.admin(a).spawnProcess({ machineId: s.machines[0]!.id, pid: "2" }),
    ])
      expect((await failure(call())).code).toBe("NotFound");
    expect((await other.admin(a).listProcesses({ licenseId: s.licenseId })).processes).toEqual([]);
    expect((await s.admin(a).getProcess({ id: p.id })).process!.id).toBe(p.id);
    // Without a key or an admin key: no tenant to act on.
    expect((await failure(app(a).killProcess({ id: p.id }))).code).toBe("Unauthenticated");
  });

  it("refuses bad input naming the field", async () => {
    const s = await setup();
    expect(await failure(app(a).spawnProcess({ pid: "1" }))).toMatchObject({
      code: "InvalidArgument",
      metadata: { field: "key" },
    });
    expect(await failure(app(a).spawnProcess({ key: s.key, fingerprint: "fp-1", pid: "has space" }))).toMatchObject({
      code: "InvalidArgument",
    });
    expect((await failure(app(a).spawnProcess({ key: s.key, fingerprint: "fp-1", pid: "" }))).message).toMatch(/pid/);
    expect((await failure(app(a).pingProcess({ key: s.key, id: "mach_1" }))).code).toBe("InvalidArgument");
    const bad = await failure(
      s.api.updatePolicy({
        id: s.policy.id,
        processHeartbeatDuration: sec(5),
        updateMask: { paths: ["process_heartbeat_duration"] },
      }),
    );
    expect(bad.code).toBe("InvalidArgument");
    expect(bad.message).toMatch(/process_heartbeat_duration/);
    expect((await failure(app(a).spawnProcess({ key: "nope", fingerprint: "fp-1", pid: "1" }))).code).toBe(
      "Unauthenticated",
    );
  });
});

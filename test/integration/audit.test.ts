import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ActivationService } from "../../gen/ts/licensd/activation/v1/activation_service_pb.js";
import { ApiKeyScope } from "../../gen/ts/licensd/tenant/v1/api_key_pb.js";
import { AuditService, ChainProblem, ListOrder } from "../../gen/ts/licensd/audit/v1/audit_service_pb.js";
import { TenantService } from "../../gen/ts/licensd/tenant/v1/tenant_service_pb.js";
import { auditEntryHash, leafHash, verifyCheckpoint, verifyConsistency, verifyInclusion } from "@licensd/client";
import { connectClient, grpcClient, startTestApp, type TestApp } from "../support/app.js";
import { createTestDatabase, query } from "../support/database.js";
import { AuditFeed } from "../../src/events/audit-feed.js";
import { AuditKeyring } from "../../src/events/audit-keyring.js";
import { createEvents } from "../../src/events/events.js";
import { AuditSequencer } from "../../src/events/sequencer.js";
import { createEventLog, dailyCounts } from "../../src/events/event-log.js";
import { systemClock } from "../../src/platform/clock.js";
import { createLogger } from "../../src/platform/logger.js";
import { failure } from "../support/errors.js";

let db: { url: string; drop(): Promise<void> };
let a: TestApp;
let b: TestApp;

beforeAll(async () => {
  db = await createTestDatabase();
  a = await startTestApp({ databaseUrl: db.url, env: { LICENSD_AUDIT_KEEPALIVE_MS: "300" } });
  b = await startTestApp({
    databaseUrl: db.url,
    env: {
      LICENSD_AUDIT_KEEPALIVE_MS: "300",
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

const tenantsOn = (t: TestApp, key = a.superAdminKey) => connectClient(TenantService, t.url, key);
const auditOn = (t: TestApp, key = a.superAdminKey) => connectClient(AuditService, t.url, key);

async function newTenant(name: string) {
  const { tenant } = await tenantsOn(a).createTenant({ name });
  const { secret } = await tenantsOn(a).createApiKey({
    tenantId: tenant!.id,
    name: "admin",
    scopes: [ApiKeyScope.ADMIN],
  });
  return { id: tenant!.id, secret };
}

async function allEvents(tenantId: string) {
  return (await auditOn(a).listAuditEvents({ tenantId, pageSize: 1000 })).events;
}

/** Runs SQL as the table owner would, with triggers bypassed (session_replication_role). */
async function tamper(sql: string, params: unknown[]) {
  await query(
    db.url,
    `set session_replication_role = replica; ${sql}`.replace(
      /\$(\d)/g,
      (_, n) => `'${String(params[Number(n) - 1]).replace(/'/g, "''")}'`,
    ),
  );
}

describe("the audit log", () => {
  it("records every tenant and API-key change, in order, with its actor", async () => {
    const t = await newTenant("Audited Co");
    const asTenant = tenantsOn(a, t.secret);
    const reader = await asTenant.createApiKey({ name: "reader", scopes: [ApiKeyScope.READ] });
    await tenantsOn(a).updateTenant({ tenant: { id: t.id, name: "Audited Corp" }, updateMask: { paths: ["name"] } });
    await asTenant.revokeApiKey({ id: reader.apiKey!.id });
    await failure(tenantsOn(a).updateTenant({ tenant: { id: t.id, name: "" }, updateMask: { paths: ["name"] } })); // refused: no entry

    const events = await allEvents(t.id);
    expect(events.map((e) => [Number(e.seq), e.type])).toEqual([
      [1, "tenant.created"],
      [2, "tenant.api_key.created"],
      [3, "tenant.api_key.created"],
      [4, "tenant.updated"],
      [5, "tenant.api_key.revoked"],
    ]);
    expect(events[0]).toMatchObject({ actor: "super_admin", subject: t.id, payload: { name: "Audited Co" } });
    expect(events[2].actor).toMatch(/^key:key_/);
    expect(events[4].subject).toBe(reader.apiKey!.id);
    expect(events[0].prevHash).toEqual(new Uint8Array(32));
    for (let i = 1; i < events.length; i++) expect(events[i].prevHash).toEqual(events[i - 1].hash);
    for (const e of events) {
      // The client computes it from the entry as the API gives it.
      expect(Buffer.from(auditEntryHash(e)).equals(Buffer.from(e.hash))).toBe(true);
    }
    expect(JSON.stringify(events.map((e) => e.payload))).not.toContain(reader.secret.slice(4));
  });

  it("filters, orders and pages; Connect GET works; tenants never see each other's log", async () => {
    const t = await newTenant("Filter Co");
    for (let i = 0; i < 5; i++)
      await tenantsOn(a).updateTenant({
        tenant: { id: t.id, metadata: { i: String(i) } },
        updateMask: { paths: ["metadata"] },
      });
    const asTenant = auditOn(a, t.secret);
    const updates = await asTenant.listAuditEvents({ typePrefix: "tenant.upd" });
    expect(updates.events).toHaveLength(5);
    const newest = await asTenant.listAuditEvents({ order: ListOrder.NEWEST_FIRST, pageSize: 2 });
    expect(newest.events.map((e) => Number(e.seq))).toEqual([7, 6]);
    const next = await asTenant.listAuditEvents({
      order: ListOrder.NEWEST_FIRST,
      pageSize: 2,
      pageToken: newest.nextPageToken,
    });
    expect(next.events.map((e) => Number(e.seq))).toEqual([5, 4]);
    expect(await failure(asTenant.listAuditEvents({ pageToken: newest.nextPageToken }))).toMatchObject({
      code: "InvalidArgument",
      metadata: { field: "page_token" },
    });
    const byActor = await asTenant.listAuditEvents({ actor: "super_admin" });
    expect(byActor.events.every((e) => e.actor === "super_admin")).toBe(true);
    const bySubject = await asTenant.listAuditEvents({ subject: t.id });
    expect(bySubject.events.length).toBe(6);
    const got = await asTenant.getAuditEvent({ id: updates.events[0].id });
    expect(got.event!.seq).toBe(updates.events[0].seq);

    const message = encodeURIComponent(JSON.stringify({ typePrefix: "tenant.created" }));
    const res = await fetch(`${a.url}/licensd.audit.v1.AuditService/ListAuditEvents?encoding=json&message=${message}`, {
      headers: { authorization: `Bearer ${t.secret}` },
    });
    expect(((await res.json()) as { events: unknown[] }).events).toHaveLength(1);

    const other = await newTenant("Other Co");
    const asOther = auditOn(a, other.secret);
    expect(await failure(asOther.listAuditEvents({ tenantId: t.id }))).toMatchObject({ code: "NotFound" });
    expect(await failure(asOther.getAuditEvent({ id: updates.events[0].id }))).toMatchObject({
      code: "NotFound",
      reason: "AUDIT_EVENT_NOT_FOUND",
    });
    expect((await asOther.listAuditEvents({})).events.every((e) => e.tenantId === other.id)).toBe(true);
    const ingest = await tenantsOn(a, other.secret).createApiKey({ name: "ingest", scopes: [ApiKeyScope.INGEST] });
    expect(await failure(auditOn(a, ingest.secret).listAuditEvents({}))).toMatchObject({ code: "PermissionDenied" });
    expect(await failure(auditOn(a).listAuditEvents({ tenantId: "ten_00000000000000000000000000" }))).toMatchObject({
      code: "NotFound",
    });
  });

  it("is append-only in the database", async () => {
    const t = await newTenant("Immutable Co");
    for (const sql of [
      `update audit_events set type = 'x' where tenant_id = $1`,
      `delete from audit_events where tenant_id = $1`,
      `update audit_tree_nodes set hash = '\\x00' where tenant_id = $1`,
    ]) {
      await expect(query(db.url, sql, [t.id])).rejects.toThrow(/append-only/);
    }
    await expect(query(db.url, `truncate audit_events`)).rejects.toThrow(/append-only/);
    expect(await allEvents(t.id)).toHaveLength(2);
  });

  it("keeps one gapless chain under 50 concurrent mutations from two instances", async () => {
    const t = await newTenant("Busy Co");
    await Promise.all(
      Array.from({ length: 50 }, (_, i) =>
        tenantsOn(i % 2 ? a : b).updateTenant({
          tenant: { id: t.id, metadata: { n: String(i) } },
          updateMask: { paths: ["metadata"] },
        }),
      ),
    );
    const events = await allEvents(t.id);
    expect(events.map((e) => Number(e.seq))).toEqual(Array.from({ length: 52 }, (_, i) => i + 1));
    const report = await auditOn(b).verifyAuditChain({ tenantId: t.id });
    expect(report).toMatchObject({
      valid: true,
      eventsChecked: 52n,
      firstBadSeq: 0n,
      problem: ChainProblem.UNSPECIFIED,
    });
  });

  it("reads a tenant's entries after a seq through the event log's read API, in order, and counts them per day", async () => {
    const t = await newTenant("Log Reader Co");
    const other = await newTenant("Other Log Co");
    const log = createEventLog(a.app.db);
    expect(await log.head(t.id)).toBe(2);
    expect(await log.head("ten_nosuchtenant")).toBe(0);
    await tenantsOn(a).updateTenant({ tenant: { id: t.id, name: "Log Reader Corp" }, updateMask: { paths: ["name"] } });
    const entry = { id: expect.stringMatching(/^evt_[0-9a-z]{26}$/), occurredAt: expect.any(Date) };
    expect(await log.entriesAfter(t.id, 0, 10)).toEqual([
      { ...entry, seq: 1, type: "tenant.created", subject: t.id, actor: "super_admin", payload: expect.any(Object) },
      {
        ...entry,
        seq: 2,
        type: "tenant.api_key.created",
        subject: expect.stringMatching(/^key_/),
        actor: "super_admin",
        payload: expect.objectContaining({ name: expect.any(String) }),
      },
      {
        ...entry,
        seq: 3,
        type: "tenant.updated",
        subject: t.id,
        actor: "super_admin",
        payload: { name: "Log Reader Corp" },
      },
    ]);
    expect(await log.heads([t.id, other.id, "ten_nosuchtenant"])).toEqual(
      new Map([
        [t.id, 3],
        [other.id, 2],
      ]),
    );
    expect((await log.entriesAfter(t.id, 1, 1)).map((e) => e.seq)).toEqual([2]);
    expect(await log.entriesAfter(t.id, 3, 10)).toEqual([]);
    const now = Date.now();
    const counts = await dailyCounts(a.app.db.em(), {
      type: "tenant.created",
      field: "name",
      from: new Date(now - 86_400_000),
      to: new Date(now + 86_400_000),
      tenantId: t.id,
    });
    expect(counts.map((c) => [c.tenant_id, c.key, Number(c.value)])).toEqual([[t.id, "Log Reader Co", 1]]);
    expect(Number(counts[0]!.day_ms) % 86_400_000).toBe(0);
    expect(await log.head(other.id)).toBe(2); // each tenant its own log
  });

  it("tells this process's listeners of an entry as soon as its transaction commits (before any NOTIFY), and never of a rolled-back one", async () => {
    const t = await newTenant("Read Your Writes Co");
    const { db: database, config } = a.app;
    // A feed that never LISTENs: whatever its listeners hear comes from this process's commits.
    const feed = new AuditFeed(a.databaseUrl, createLogger("silent"));
    const heard: string[] = [];
    feed.onEntry((tenantId) => heard.push(tenantId));
    const keyring = new AuditKeyring(a.app.dataKeyMaterial.auditHmacDk1, config.auditHmacKeys);
    const sequencer = new AuditSequencer(database, keyring, { logger: createLogger("silent"), sweepMs: 60_000 });
    const events = createEvents({
      clock: systemClock,
      keyring,
      sequencer,
      afterCommit: (em, hook) => database.afterCommit(em, hook),
      sequenced: (tenantId) => feed.announce(tenantId),
    });
    const entry = { tenantId: t.id, type: "tenant.noted", subject: t.id, actor: "test", payload: {} };
    await expect(
      database.tx(async (em) => {
        await events.emit(em, entry);
        throw new Error("rolled back");
      }),
    ).rejects.toThrow("rolled back");
    expect(heard).toEqual([]);
    const pending = database.tx(async (em) => {
      await events.emit(em, entry);
      expect(heard).toEqual([]); // not before the commit
    });
    await pending;
    expect(heard).toEqual([t.id]);
    expect((await allEvents(t.id)).map((e) => e.type)).toEqual([
      "tenant.created",
      "tenant.api_key.created",
      "tenant.noted",
    ]);
    expect(await auditOn(a).verifyAuditChain({ tenantId: t.id })).toMatchObject({ valid: true, eventsChecked: 3n });
  });

  it("VerifyAuditChain names exactly the entry whose payload, hash or signature changed, or that was deleted", async () => {
    const cases = [
      [
        "payload",
        `update audit_events set payload = '{"name":"forged"}' where tenant_id = $1 and seq = 3`,
        ChainProblem.HASH_MISMATCH,
      ],
      [
        "hash",
        `update audit_events set hash = sha256('forged'::bytea) where tenant_id = $1 and seq = 3`,
        ChainProblem.HASH_MISMATCH,
      ],
      [
        "signature",
        `update audit_events set signature = sha256('forged'::bytea) where tenant_id = $1 and seq = 3`,
        ChainProblem.BAD_SIGNATURE,
      ],
      ["deleted", `delete from audit_events where tenant_id = $1 and seq = 3`, ChainProblem.MISSING_SEQ],
    ] as const;
    for (const [what, sql, problem] of cases) {
      const t = await newTenant(`Tampered ${what}`);
      for (let i = 0; i < 3; i++)
        await tenantsOn(a).updateTenant({
          tenant: { id: t.id, metadata: { i: String(i) } },
          updateMask: { paths: ["metadata"] },
        });
      expect((await auditOn(a).verifyAuditChain({ tenantId: t.id })).valid).toBe(true);
      await tamper(sql, [t.id]);
      const report = await auditOn(a).verifyAuditChain({ tenantId: t.id });
      expect(report, what).toMatchObject({ valid: false, firstBadSeq: 3n, problem, eventsChecked: 2n });
      expect(report.detail).toContain("3");
      // The range before the damage still verifies.
      expect((await auditOn(a).verifyAuditChain({ tenantId: t.id, startSeq: 1n, endSeq: 2n })).valid).toBe(true);
    }
    const tree = await newTenant("Tree rewritten");
    for (let i = 0; i < 3; i++)
      await tenantsOn(a).updateTenant({
        tenant: { id: tree.id, metadata: { i: String(i) } },
        updateMask: { paths: ["metadata"] },
      });
    await tamper(
      `update audit_tree_nodes set hash = sha256('x'::bytea) where tenant_id = $1 and level = 2 and index = 0`,
      [tree.id],
    );
    expect(await auditOn(a).verifyAuditChain({ tenantId: tree.id })).toMatchObject({
      valid: false,
      firstBadSeq: 4n,
      problem: ChainProblem.TREE_MISMATCH,
    });
    const t = await newTenant("Last deleted");
    await tamper(`delete from audit_events where tenant_id = $1 and seq = 2`, [t.id]);
    expect(await auditOn(a).verifyAuditChain({ tenantId: t.id })).toMatchObject({
      valid: false,
      firstBadSeq: 2n,
      problem: ChainProblem.MISSING_SEQ,
    });
  });
});

describe("tailing", () => {
  it("delivers entries committed on instance A to a tail on instance B, in order; a reconnect misses and repeats nothing", async () => {
    const t = await newTenant("Tailed Co");
    const abort = new AbortController();
    const tail = grpcClient(AuditService, b.url, t.secret)
      .tailAuditEvents({}, { signal: abort.signal })
      [Symbol.asyncIterator]();
    const seen: number[] = [];
    // The first keep-alive shows the tail is established, at the head (seq 2).
    expect((await tail.next()).value.message).toMatchObject({ case: "keepAlive", value: { lastSeq: 2n } });
    const writes = (async () => {
      for (let i = 0; i < 12; i++)
        await tenantsOn(a).updateTenant({
          tenant: { id: t.id, metadata: { i: String(i) } },
          updateMask: { paths: ["metadata"] },
        });
    })();
    while (seen.length < 4) {
      const { value } = await tail.next();
      if (value.message.case === "event") seen.push(Number(value.message.value.seq));
    }
    abort.abort(); // the client drops mid-stream
    await writes;
    const resumed = grpcClient(AuditService, b.url, t.secret)
      .tailAuditEvents({ afterSeq: BigInt(seen.at(-1)!) })
      [Symbol.asyncIterator]();
    while (seen.length < 12) {
      const { value } = await resumed.next();
      if (value.message.case === "event") seen.push(Number(value.message.value.seq));
    }
    expect(seen).toEqual(Array.from({ length: 12 }, (_, i) => i + 3));
    // Idle: a keep-alive naming the last seq passed.
    let keepAlive: bigint | undefined;
    while (keepAlive === undefined) {
      const { value } = await resumed.next();
      if (value.message.case === "keepAlive") keepAlive = value.message.value.lastSeq;
    }
    expect(keepAlive).toBe(14n);
    await resumed.return?.();
  });

  it("filters a tail by type prefix and by subject", async () => {
    const t = await newTenant("Filtered tail");
    const tail = connectClient(AuditService, a.url, t.secret)
      .tailAuditEvents({ afterSeq: 0n, typePrefix: "tenant.api_key." })
      [Symbol.asyncIterator]();
    await tenantsOn(a, t.secret).createApiKey({ name: "k2", scopes: [ApiKeyScope.READ] });
    const types: string[] = [];
    while (types.length < 2) {
      const { value } = await tail.next();
      if (value.message.case === "event") types.push(value.message.value.type);
    }
    expect(types).toEqual(["tenant.api_key.created", "tenant.api_key.created"]);
    await tail.return?.();
  });
});

describe("the verifiable log", () => {
  it("signs checkpoints, proves inclusion of every entry and consistency of every pair of sizes", async () => {
    const t = await newTenant("Proven Co");
    for (let i = 0; i < 9; i++)
      await tenantsOn(a).updateTenant({
        tenant: { id: t.id, metadata: { i: String(i) } },
        updateMask: { paths: ["metadata"] },
      });
    const keys = (await connectClient(ActivationService, b.url).getSigningKeys({})).keys;
    expect(keys[0]).toMatchObject({ algorithm: "Ed25519" });
    const audit = auditOn(b, t.secret);
    const checkpoints = [];
    const cp = (await audit.getCheckpoint({})).checkpoint!;
    expect(cp.treeSize).toBe(11n);
    expect((await verifyCheckpoint(cp, keys)).verified).toBe(true);
    expect((await verifyCheckpoint({ ...cp, treeSize: 12n }, keys)).code).toBe("BAD_SIGNATURE");
    expect((await verifyCheckpoint({ ...cp, rootHash: new Uint8Array(32) }, keys)).code).toBe("BAD_SIGNATURE");

    const events = (await audit.listAuditEvents({})).events;
    // Roots of every size, from consistency with the signed checkpoint.
    for (let size = 1; size <= 11; size++) {
      for (let seq = 1; seq <= size; seq++) {
        const p = await audit.getInclusionProof({ seq: BigInt(seq), treeSize: BigInt(size) });
        expect(Buffer.from(p.entryHash).equals(Buffer.from(events[seq - 1].hash))).toBe(true);
        if (size === 11) expect(verifyInclusion(leafHash(p.entryHash), seq - 1, 11, p.hashes, cp.rootHash)).toBe(true);
      }
      checkpoints.push(size);
    }
    // Consistency of every earlier size with the checkpoint: build each older root by
    // verifying the proof against a root derived client-side from the inclusion data.
    for (let old = 1; old <= 11; old++) {
      const proof = await audit.getConsistencyProof({ oldSize: BigInt(old), newSize: 11n });
      const oldRoot = (await computeRootFromEvents(events.slice(0, old).map((e) => Buffer.from(e.hash)))).root;
      expect(verifyConsistency(old, 11, proof.hashes, oldRoot, cp.rootHash), `size ${old}`).toBe(true);
      if (old < 11)
        expect(verifyConsistency(old, 11, proof.hashes, new Uint8Array(32).fill(7), cp.rootHash)).toBe(false);
    }
    // A tampered entry no longer proves into the signed tree.
    const p5 = await audit.getInclusionProof({ seq: 5n });
    const forged = Buffer.from(p5.entryHash);
    forged[0] ^= 1;
    expect(verifyInclusion(leafHash(forged), 4, 11, p5.hashes, cp.rootHash)).toBe(false);
  });

  it("refuses bad proof requests with clear errors", async () => {
    const t = await newTenant("Bad proofs");
    const audit = auditOn(a, t.secret);
    expect(await failure(audit.getInclusionProof({ seq: -1n }))).toMatchObject({
      code: "InvalidArgument",
      metadata: { field: "seq" },
    });
    expect(await failure(audit.getInclusionProof({ seq: 0n }))).toMatchObject({
      code: "InvalidArgument",
      metadata: { field: "seq" },
    });
    expect(await failure(audit.getInclusionProof({ seq: 2n, treeSize: 1n }))).toMatchObject({
      code: "InvalidArgument",
      metadata: { field: "seq" },
    });
    expect(await failure(audit.getInclusionProof({ seq: 1n, treeSize: 99n }))).toMatchObject({
      code: "InvalidArgument",
      metadata: { field: "tree_size" },
    });
    expect(await failure(audit.getConsistencyProof({ oldSize: 2n, newSize: 1n }))).toMatchObject({
      code: "InvalidArgument",
      metadata: { field: "old_size" },
    });
    expect(await failure(audit.getConsistencyProof({ oldSize: 0n }))).toMatchObject({
      code: "InvalidArgument",
      metadata: { field: "old_size" },
    });
    expect(await failure(audit.verifyAuditChain({ startSeq: -5n }))).toMatchObject({
      code: "InvalidArgument",
      metadata: { field: "start_seq" },
    });
    expect(await failure(audit.verifyAuditChain({ endSeq: 50n }))).toMatchObject({
      code: "InvalidArgument",
      metadata: { field: "end_seq" },
    });
    expect(await failure(auditOn(a).getCheckpoint({ tenantId: "ten_00000000000000000000000000" }))).toMatchObject({
      code: "NotFound",
    });
    expect(await failure(auditOn(a).getCheckpoint({}))).toMatchObject({
      code: "InvalidArgument",
      metadata: { field: "tenant_id" },
    });
  });
});

describe("retention", () => {
  it("cuts a prefix with a signed record; the rest still verifies and proves", async () => {
    const t = await newTenant("Retained Co");
    for (let i = 0; i < 6; i++)
      await tenantsOn(a).updateTenant({
        tenant: { id: t.id, metadata: { i: String(i) } },
        updateMask: { paths: ["metadata"] },
      });
    const before = (await auditOn(a, t.secret).getCheckpoint({})).checkpoint!;
    expect(await auditOn(a, t.secret).pruneAuditLog({ cut: { case: "throughSeq", value: 5n } })).toMatchObject({
      removedCount: 5n,
      throughSeq: 5n,
    });
    const events = await allEvents(t.id);
    expect(events.map((e) => Number(e.seq))).toEqual([6, 7, 8, 9]);
    expect(events.at(-1)).toMatchObject({
      type: "audit.retention.cut",
      actor: expect.stringMatching(/^key:key_/),
      payload: { through_seq: 5, removed: 5 },
    });
    expect(await auditOn(a).verifyAuditChain({ tenantId: t.id })).toMatchObject({
      valid: true,
      eventsChecked: 4n,
      startSeq: 6n,
      endSeq: 9n,
    });
    expect(await failure(auditOn(a).verifyAuditChain({ tenantId: t.id, startSeq: 2n }))).toMatchObject({
      code: "InvalidArgument",
      reason: "PRUNED",
    });
    const proof = await auditOn(a).getConsistencyProof({ tenantId: t.id, oldSize: before.treeSize, newSize: 9n });
    const after = (await auditOn(a).getCheckpoint({ tenantId: t.id })).checkpoint!;
    expect(
      verifyConsistency(Number(before.treeSize), Number(after.treeSize), proof.hashes, before.rootHash, after.rootHash),
    ).toBe(true);
    // Forging the cut record breaks verification at the first kept entry.
    await tamper(`update audit_cuts set hash = sha256('x'::bytea) where tenant_id = $1`, [t.id]);
    expect(await auditOn(a).verifyAuditChain({ tenantId: t.id })).toMatchObject({ valid: false, firstBadSeq: 6n });
    expect(
      await failure(auditOn(a).pruneAuditLog({ tenantId: t.id, cut: { case: "throughSeq", value: 3n } })),
    ).toMatchObject({ code: "FailedPrecondition", reason: "NOTHING_TO_CUT" });
  });

  it("prunes by age, as the tenant's admin or the super-admin, idempotently; others are refused and nothing changes", async () => {
    const t = await newTenant("Aged Co");
    const other = await newTenant("Other Co");
    for (let i = 0; i < 3; i++)
      await tenantsOn(a).updateTenant({
        tenant: { id: t.id, metadata: { i: String(i) } },
        updateMask: { paths: ["metadata"] },
      });
    const reader = (await tenantsOn(a, t.secret).createApiKey({ name: "reader", scopes: [ApiKeyScope.READ] })).secret;
    const head = BigInt((await allEvents(t.id)).length);
    // Nothing is a day old yet: nothing to remove, and no cut is recorded.
    const day = { case: "olderThan" as const, value: { seconds: 86_400n, nanos: 0 } };
    expect(await auditOn(a, t.secret).pruneAuditLog({ cut: day })).toMatchObject({ removedCount: 0n, throughSeq: 0n });
    expect(BigInt((await allEvents(t.id)).length)).toBe(head);
    expect(await failure(auditOn(a, reader).pruneAuditLog({ cut: { case: "throughSeq", value: 1n } }))).toMatchObject({
      code: "PermissionDenied",
    });
    expect(
      await failure(auditOn(a, other.secret).pruneAuditLog({ tenantId: t.id, cut: { case: "throughSeq", value: 1n } })),
    ).toMatchObject({ code: "NotFound" });
    expect(
      await failure(
        connectClient(AuditService, a.url).pruneAuditLog({ tenantId: t.id, cut: { case: "throughSeq", value: 1n } }),
      ),
    ).toMatchObject({ code: "Unauthenticated" });
    expect(
      await failure(
        auditOn(a).pruneAuditLog({
          tenantId: "ten_00000000000000000000000000",
          cut: { case: "throughSeq", value: 1n },
        }),
      ),
    ).toMatchObject({ code: "NotFound" });
    expect(await failure(auditOn(a).pruneAuditLog({ tenantId: t.id }))).toMatchObject({ code: "InvalidArgument" });
    expect(
      await failure(auditOn(a).pruneAuditLog({ tenantId: t.id, cut: { case: "throughSeq", value: 0n } })),
    ).toMatchObject({ code: "InvalidArgument", metadata: { field: "through_seq" } });
    expect(
      await failure(
        auditOn(a).pruneAuditLog({ tenantId: t.id, cut: { case: "olderThan", value: { seconds: -1n, nanos: 0 } } }),
      ),
    ).toMatchObject({ code: "InvalidArgument", metadata: { field: "older_than" } });
    expect(BigInt((await allEvents(t.id)).length)).toBe(head);
    // Everything older than a second from now: the whole log so far, once, even when retried.
    await new Promise((r) => setTimeout(r, 1100));
    const second = { case: "olderThan" as const, value: { seconds: 1n, nanos: 0 } };
    const first = await auditOn(a).pruneAuditLog({ tenantId: t.id, cut: second, idempotencyKey: "prune-1" });
    expect(first).toMatchObject({ removedCount: head, throughSeq: head });
    expect(await auditOn(a).pruneAuditLog({ tenantId: t.id, cut: second, idempotencyKey: "prune-1" })).toEqual(first);
    const left = await allEvents(t.id);
    expect(left.map((e) => [Number(e.seq), e.type, e.actor])).toEqual([
      [Number(head) + 1, "audit.retention.cut", "super_admin"],
    ]);
  });
});

/** The RFC 6962 root of a list of entry hashes, computed client-side. */
async function computeRootFromEvents(hashes: Buffer[]) {
  const { appendLeaf, leafHash, rootHash } = await import("../../src/events/merkle.js");
  const nodes = new Map<string, Buffer>();
  let frontier: Buffer[] = [];
  hashes.forEach((h, i) => {
    const r = appendLeaf(frontier, i, leafHash(h));
    frontier = r.frontier;
    for (const c of r.completed) nodes.set(`${c.level}:${c.index}`, c.hash);
  });
  return { root: rootHash(hashes.length, (l, i) => nodes.get(`${l}:${i}`)!) };
}

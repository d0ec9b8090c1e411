// The audit log's sequencing (src/events/sequencer.ts): changes queue their entries without
// waiting for the tenant's head, and sequencers on any instance move the queue into the log.
// These tests hold the promises of docs/audit.md under it: an entry if and only if its change
// committed, gapless per-tenant seqs, a chain that verifies, tails that see each entry once
// in order; and they stop a writer between its commit and its entry's sequencing, and kill a
// sequencer in the middle of its batch. Activate's fast path answers before its entry is
// sequenced (events.queuedSoon): the same promises hold for it, and reads settle first.
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ActivationService } from "../../gen/ts/licensd/activation/v1/activation_service_pb.js";
import { AuditService } from "../../gen/ts/licensd/audit/v1/audit_service_pb.js";
import { LicensingService } from "../../gen/ts/licensd/licensing/v1/licensing_service_pb.js";
import { ApiKeyScope } from "../../gen/ts/licensd/tenant/v1/api_key_pb.js";
import { TenantService } from "../../gen/ts/licensd/tenant/v1/tenant_service_pb.js";
import { createMachineService } from "../../src/activation/machine.service.js";
import { createEvents } from "../../src/events/events.js";
import { AuditKeyring } from "../../src/events/audit-keyring.js";
import { createCatalogService } from "../../src/licensing/catalog.service.js";
import { KeyCharacterPool, LicenseKeyring } from "../../src/licensing/license-key.js";
import { systemClock } from "../../src/platform/clock.js";
import { DataKeyring } from "../../src/platform/crypto.js";
import { connectClient, startTestApp, type TestApp } from "../support/app.js";
import { createTestDatabase, query } from "../support/database.js";
import { until, within } from "../support/wait.js";

let db: { url: string; drop(): Promise<void> };
let a: TestApp;
let b: TestApp;

beforeAll(async () => {
  db = await createTestDatabase();
  a = await startTestApp({ databaseUrl: db.url, env: { LICENSD_AUDIT_SWEEP_MS: "200" } });
  b = await startTestApp({
    databaseUrl: db.url,
    env: {
      LICENSD_AUDIT_SWEEP_MS: "200",
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

async function newTenant(name: string) {
  const tenants = connectClient(TenantService, a.url, a.superAdminKey);
  const { tenant } = await tenants.createTenant({ name });
  const { secret } = await tenants.createApiKey({ tenantId: tenant!.id, name: "admin", scopes: [ApiKeyScope.ADMIN] });
  return { id: tenant!.id, secret };
}

/** The tenant's log as stored: seqs in order, and each entry's type and subject. */
async function logOf(tenantId: string) {
  return query<{ seq: string; type: string; subject: string }>(
    db.url,
    "select seq, type, subject from audit_events where tenant_id = $1 order by seq",
    [tenantId],
  );
}

const queued = async (tenantId: string) =>
  (
    await query<{ n: number }>(db.url, "select count(*)::int as n from audit_pending where tenant_id = $1", [tenantId])
  )[0]!.n;

async function expectWholeLog(tenantId: string) {
  const log = await logOf(tenantId);
  expect(log.map((e) => Number(e.seq))).toEqual(Array.from({ length: log.length }, (_, i) => i + 1));
  const verified = await connectClient(AuditService, b.url, a.superAdminKey).verifyAuditChain({ tenantId });
  expect(verified).toMatchObject({ valid: true, eventsChecked: BigInt(log.length) });
  expect(await queued(tenantId)).toBe(0);
  return log;
}

/** A session holding the tenant's head, as a sequencer in the middle of a batch does. */
async function holdHead(tenantId: string) {
  const client = new pg.Client({ connectionString: db.url });
  await client.connect();
  await client.query("begin");
  await client.query("select seq from audit_heads where tenant_id = $1 for update", [tenantId]);
  return client;
}

describe("audit sequencing", () => {
  it("many writers on two instances: one entry per committed change, none for a refused one; gapless; tails see each once, in order", async () => {
    const t = await newTenant("Busy Co");
    const tail = connectClient(AuditService, b.url, t.secret).tailAuditEvents({ afterSeq: 0n })[Symbol.asyncIterator]();
    const clients = [a, b].map((app) => connectClient(LicensingService, app.url, t.secret));
    const created: string[] = [];
    let refused = 0;
    await Promise.all(
      Array.from({ length: 16 }, async (_, w) => {
        for (let i = 0; i < 15; i++) {
          // Every fifth email repeats one already taken: that change is refused and rolls back.
          const email = i % 5 === 4 ? `w${w}-0@busy.example` : `w${w}-${i}@busy.example`;
          try {
            const { customer } = await clients[w % 2]!.createCustomer({ name: `W${w} ${i}`, email });
            created.push(customer!.id);
          } catch {
            refused++;
          }
        }
      }),
    );
    expect(refused).toBe(16 * 3);
    const log = await expectWholeLog(t.id);
    const customerEntries = log.filter((e) => e.type === "customer.created").map((e) => e.subject);
    expect(customerEntries.sort()).toEqual([...created].sort());
    const rows = await query<{ id: string }>(db.url, "select id from customers where tenant_id = $1", [t.id]);
    expect(rows.map((r) => r.id).sort()).toEqual([...created].sort());

    const seen: number[] = [];
    while (seen.length < log.length) {
      const { value } = await within(tail.next(), "the tail's next message");
      if (value.message.case === "event") seen.push(Number(value.message.value.seq));
    }
    expect(seen).toEqual(log.map((e) => Number(e.seq)));
    await tail.return?.();
  });

  it("first activations on two instances answer before their entries' sequencing: one entry each, gapless, tailed once in order; a settle that never ran is the sweep's", async () => {
    const t = await newTenant("Fleet Co");
    const licensing = connectClient(LicensingService, a.url, t.secret);
    const product = (await licensing.createProduct({ code: "FLT", name: "Fleet" })).product!;
    const policy = (
      await licensing.createPolicy({ productId: product.id, name: "fleet", floating: true, maxMachines: 0 })
    ).policy!;
    const customer = (await licensing.createCustomer({ name: "F", email: "f@fleet.example" })).customer!;
    const keys = await Promise.all(
      [0, 1, 2, 3].map(
        async () => (await licensing.createLicense({ policyId: policy.id, customerId: customer.id })).key,
      ),
    );
    const tail = connectClient(AuditService, b.url, t.secret).tailAuditEvents({ afterSeq: 0n })[Symbol.asyncIterator]();
    // Activate's fast path: each instance's concurrent activations share statements; each answers at its commit.
    const answers = await Promise.all(
      Array.from({ length: 60 }, (_, i) =>
        connectClient(ActivationService, [a, b][i % 2]!.url).activate({ key: keys[i % 4]!, fingerprint: `fp-${i}` }),
      ),
    );
    const machines = answers.map((r) => r.machine!.id);
    // A read through the API settles the tenant first: every answered activation's entry is in it.
    const listed = await connectClient(AuditService, b.url, t.secret).listAuditEvents({
      typePrefix: "machine.activated",
      pageSize: 100,
    });
    expect(listed.events.map((e) => e.subject).sort()).toEqual([...machines].sort());

    // An activation whose process dies after its commit, before its settle: its entry waits in the queue.
    const silent = createMachineService({
      clock: systemClock,
      events: { ...a.app.events, queuedSoon: () => {} },
      catalog: createCatalogService({ clock: systemClock, events: a.app.events }),
      keyring: new LicenseKeyring(a.app.licenseKeySecrets, new KeyCharacterPool()),
      signingKeys: a.app.signingKeys,
      dataKey: new DataKeyring(a.app.config.dataKey, a.app.config.previousDataKeys),
    });
    const holder = await holdHead(t.id);
    const info = { fingerprint: "fp-silent", hostname: "", platform: "", cores: 0, ip: "", metadata: {} };
    const lone = await within(silent.activateFast(a.app.db, keys[0]!, info), "the activation to commit");
    expect(await queued(t.id)).toBe(1);
    await holder.query("commit");
    await holder.end();
    await until(
      "a sweep to sequence the queued entry",
      () => logOf(t.id),
      (l) => l.some((e) => e.subject === lone!.machine.id),
    );
    const log = await expectWholeLog(t.id);
    expect(
      log
        .filter((e) => e.type === "machine.activated")
        .map((e) => e.subject)
        .sort(),
    ).toEqual([...machines, lone!.machine.id].sort());
    const seen: number[] = [];
    while (seen.length < log.length) {
      const { value } = await within(tail.next(), "the tail's next message");
      if (value.message.case === "event") seen.push(Number(value.message.value.seq));
    }
    expect(seen).toEqual(log.map((e) => Number(e.seq)));
    await tail.return?.();
  });

  it("a writer stopped between its commit and its entry's sequencing: the entry is queued, and a sweep sequences it", async () => {
    const t = await newTenant("Stopped Writer Co");
    const before = (await logOf(t.id)).length;
    // This writer's after-commit step never runs, as when its process dies right after the commit.
    const keyring = new AuditKeyring(a.app.dataKeyMaterial.auditHmacDk1, a.app.config.auditHmacKeys);
    const events = createEvents({ clock: systemClock, keyring, sequencer: a.app.sequencer, afterCommit: () => {} });
    // The head is held (another instance is sequencing): the writer queues its entry rather than wait.
    const holder = await holdHead(t.id);
    const change = a.app.db.tx((em) =>
      events.emit(em, { tenantId: t.id, type: "tenant.noted", subject: t.id, actor: "test", payload: { n: 1 } }),
    );
    const { id } = await within(change, "the change to commit while the head is held");
    expect(await queued(t.id)).toBe(1);
    expect((await logOf(t.id)).length).toBe(before); // readers see only sequenced entries
    await holder.query("commit");
    await holder.end();
    const log = await until(
      "a sweep to sequence the queued entry",
      () => logOf(t.id),
      (l) => l.length === before + 1,
    );
    expect(log.at(-1)).toMatchObject({ seq: String(before + 1), type: "tenant.noted" });
    const [entry] = await query<{ id: string }>(
      db.url,
      "select id from audit_events where tenant_id = $1 and seq = $2",
      [t.id, before + 1],
    );
    expect(entry!.id).toBe(id);
    await expectWholeLog(t.id);
  });

  it("a change that rolls back while its entry is queued leaves nothing, queued or sequenced", async () => {
    const t = await newTenant("Rollback Co");
    const before = (await logOf(t.id)).length;
    const holder = await holdHead(t.id);
    await expect(
      a.app.db.tx(async (em) => {
        await a.app.events.emit(em, {
          tenantId: t.id,
          type: "tenant.noted",
          subject: t.id,
          actor: "test",
          payload: {},
        });
        expect(await queued(t.id)).toBe(0); // not visible to others before the commit
        throw new Error("rolled back");
      }),
    ).rejects.toThrow("rolled back");
    await holder.query("commit");
    await holder.end();
    await a.app.sequencer.sweep();
    expect((await logOf(t.id)).length).toBe(before);
    await expectWholeLog(t.id);
  });

  it("a sequencer killed in the middle of its batch writes nothing; the next one sequences the whole queue", async () => {
    const t = await newTenant("Killed Sequencer Co");
    const before = (await logOf(t.id)).length;
    const holder = await holdHead(t.id);
    // Writes to the tree stall while this session holds the table: the next batch stops half-way through its writes.
    const staller = new pg.Client({ connectionString: db.url });
    await staller.connect();
    await staller.query("begin");
    await staller.query("lock table audit_tree_nodes in share mode");
    const licensing = connectClient(LicensingService, a.url, t.secret);
    const writes = Array.from({ length: 5 }, (_, i) =>
      licensing.createCustomer({ name: `K${i}`, email: `k${i}@killed.example` }),
    );
    await until(
      "five entries queued",
      () => queued(t.id),
      (n) => n === 5,
    );
    await holder.query("commit"); // the sequencers read the queue, and stall on the tree
    await holder.end();
    // Instance A's settle and either instance's sweep may both be in their batch's write, one behind the other.
    const stalled = await until(
      "a sequencer stalled in its batch",
      () =>
        query<{ pid: number }>(
          db.url,
          `select pid from pg_stat_activity
            where datname = current_database() and wait_event_type = 'Lock' and query like '%insert into audit_events%'`,
        ),
      (rows) => rows.length >= 1,
    );
    for (const { pid } of stalled) await query(db.url, "select pg_terminate_backend($1)", [pid]);
    await staller.query("commit");
    await staller.end();
    // The changes committed before the sequencer died: their callers hear success.
    const customers = await within(Promise.all(writes), "the writes to be answered");
    const log = await until(
      "the queue sequenced by a later run",
      () => logOf(t.id),
      (l) => l.length === before + 5,
    );
    expect(
      log
        .slice(before)
        .map((e) => e.subject)
        .sort(),
    ).toEqual(customers.map((c) => c.customer!.id).sort());
    await expectWholeLog(t.id);
  });
});

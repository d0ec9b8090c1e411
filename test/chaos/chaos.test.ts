/*
 * Real `licensd serve` processes treated badly, and what a client must still be able to rely on:
 *
 * - SIGKILL during streaming ingest: every batch acknowledged before the kill is stored, and
 *   after a restart and a resend of everything, each event is stored exactly once;
 * - SIGKILL during an import: re-running the same import on a new process leaves each license
 *   (and each customer) exactly once;
 * - the database unreachable for 10 s under load: calls fail UNAVAILABLE (never INTERNAL), work
 *   again by themselves once it is back, and nothing acknowledged is lost;
 * - slow readers and half-open connections and streams do not stall other clients;
 * - SIGTERM answers what is in flight: every committed StreamUsage batch gets its ack, open
 *   streams end with a status, and the process exits 0.
 *
 * SIGKILL during webhook dispatch is test/integration/webhooks-scale.test.ts ("a server killed
 * while sending"): every delivery completes on the next process.
 * LICENSD_CHAOS_LONG=1 runs them with more data; LICENSD_CHAOS_OUTAGE_MS sets the database outage (10,000 by default).
 */
import { randomBytes } from "node:crypto";
import http2 from "node:http2";
import net from "node:net";
import { create, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { afterAll, describe, expect, it } from "vitest";
import {
  ActivationService,
  type ConnectLeaseRequest,
} from "../../gen/ts/licensd/activation/v1/activation_service_pb.js";
import { AuditService, TailAuditEventsRequestSchema } from "../../gen/ts/licensd/audit/v1/audit_service_pb.js";
import { LicensingService, ValidationCode } from "../../gen/ts/licensd/licensing/v1/licensing_service_pb.js";
import { ApiKeyScope } from "../../gen/ts/licensd/tenant/v1/api_key_pb.js";
import { TenantService } from "../../gen/ts/licensd/tenant/v1/tenant_service_pb.js";
import { Aggregation, type UsageEvent } from "../../gen/ts/licensd/usage/v1/usage_pb.js";
import {
  type StreamUsageRequest,
  type StreamUsageResponse,
  UsageService,
} from "../../gen/ts/licensd/usage/v1/usage_service_pb.js";
import { connectClient, grpcClient } from "../support/app.js";
import { startCluster } from "../support/cluster.js";
import { createTestDatabase, query } from "../support/database.js";
import { outbox } from "../support/outbox.js";
import { type ServerProcess, startServer } from "../support/server.js";
import { TcpProxy } from "../support/tcp-proxy.js";
import { until, within } from "../support/wait.js";

const LONG = process.env.LICENSD_CHAOS_LONG === "1";
const OUTAGE_MS = Number(process.env.LICENSD_CHAOS_OUTAGE_MS ?? 10_000);
const cleanup: (() => Promise<unknown>)[] = [];
afterAll(async () => {
  for (const step of cleanup.reverse()) await step().catch(() => undefined);
});

/** A tenant with admin and ingest keys, a product with a `tokens` SUM meter, a policy and one license. */
async function vendor(url: string, superAdminKey: string, code: string) {
  const tenants = connectClient(TenantService, url, superAdminKey);
  const { tenant } = await tenants.createTenant({ name: `${code} vendor` });
  const admin = (await tenants.createApiKey({ tenantId: tenant!.id, name: "admin", scopes: [ApiKeyScope.ADMIN] }))
    .secret;
  const ingestKey = (
    await tenants.createApiKey({ tenantId: tenant!.id, name: "uploader", scopes: [ApiKeyScope.INGEST] })
  ).secret;
  const licensing = connectClient(LicensingService, url, admin);
  const product = (await licensing.createProduct({ code, name: "App" })).product!;
  await connectClient(UsageService, url, admin).createMeter({
    productId: product.id,
    metric: "tokens",
    aggregation: Aggregation.SUM,
  });
  const policy = (await licensing.createPolicy({ productId: product.id, name: "pro", floating: true })).policy!;
  const customer = (await licensing.createCustomer({ name: "Ann", email: `ann@${code.toLowerCase()}.example` }))
    .customer!;
  const lic = await licensing.createLicense({ policyId: policy.id, customerId: customer.id });
  return { tenantId: tenant!.id, admin, ingestKey, productId: product.id, key: lic.key, licenseId: lic.license!.id };
}

/** A StreamUsage client: batches go out as sent, acks are collected as they come, `ended` is the stream's end. */
function usageStream(url: string, key: string) {
  const requests = outbox<StreamUsageRequest>();
  const acks: StreamUsageResponse[] = [];
  const ended = (async (): Promise<Code | "OK"> => {
    try {
      for await (const ack of grpcClient(UsageService, url, key).streamUsage(requests.messages)) acks.push(ack);
      return "OK";
    } catch (err) {
      return ConnectError.from(err).code;
    }
  })();
  return {
    acks,
    ended,
    send: (batchId: string, events: UsageEvent[]) => requests.push({ batchId, events } as StreamUsageRequest),
    end: () => requests.end(),
  };
}

const batchOf = (key: string, batchId: string, size: number) =>
  Array.from(
    { length: size },
    (_, j) => ({ licenseKey: key, metric: "tokens", quantity: 1n, idempotencyKey: `${batchId}.${j}` }) as UsageEvent,
  );

/** How many times each idempotency key of a license is stored. */
async function storedKeys(databaseUrl: string, licenseId: string) {
  const rows = await query<{ k: string; n: number }>(
    databaseUrl,
    "select idempotency_key as k, count(*)::int as n from usage_events where license_id = $1 group by 1",
    [licenseId],
  );
  return new Map(rows.map((r) => [r.k, r.n]));
}

describe("SIGKILL", () => {
  it("during streaming ingest: acked batches are stored; after a restart and a full resend, each event once", async () => {
    const cluster = await startCluster(1);
    cleanup.push(() => cluster.close());
    const [first] = cluster.instances as [ServerProcess];
    const v = await vendor(first.url, cluster.superAdminKey, "KIL");
    const BATCHES = LONG ? 200 : 30;
    const SIZE = 200;
    const stream = usageStream(first.url, v.ingestKey);
    for (let i = 0; i < BATCHES; i++) stream.send(`b${i}`, batchOf(v.key, `b${i}`, SIZE));
    await until(
      "five acks",
      () => stream.acks.length,
      (n) => n >= 5,
      15_000,
      1,
    );
    await first.stop("SIGKILL");
    const ended = await within(stream.ended, "the stream to fail after the kill");
    const acked = stream.acks.map((a) => a.batchId);
    console.info(`ingest: killed after ${acked.length} of ${BATCHES} acks; the stream ended ${Code[ended as Code]}`);
    expect(acked.length, "the kill came before the last ack").toBeLessThan(BATCHES);
    // A peer that vanished: connect-node reports the reset stream as CANCELED (clients/ts retries it as a transport
    // failure), a closed connection as UNAVAILABLE.
    expect([Code.Canceled, Code.Unavailable]).toContain(ended);

    // Acknowledged means committed: every acked event is there before anything is resent.
    const afterKill = await storedKeys(cluster.databaseUrl, v.licenseId);
    for (const id of acked)
      for (const e of batchOf(v.key, id, SIZE)) expect(afterKill.get(e.idempotencyKey), e.idempotencyKey).toBe(1);

    // The agent resends everything on a new process; what was stored counts as duplicates.
    const second = await cluster.add();
    const again = usageStream(second.url, v.ingestKey);
    for (let i = 0; i < BATCHES; i++) again.send(`b${i}`, batchOf(v.key, `b${i}`, SIZE));
    again.end();
    expect(await within(again.ended, "the resend")).toBe("OK");
    expect(again.acks).toHaveLength(BATCHES);
    for (const a of again.acks) expect(a.accepted + a.duplicates, a.batchId).toBe(SIZE);
    const duplicates = again.acks.reduce((x, a) => x + a.duplicates, 0);
    expect(duplicates).toBeGreaterThanOrEqual(acked.length * SIZE);
    const final = await storedKeys(cluster.databaseUrl, v.licenseId);
    expect(final.size).toBe(BATCHES * SIZE);
    expect([...final.values()].every((n) => n === 1)).toBe(true);
  });

  it("under audited writes on two instances: every committed change has its entry once; the log stays gapless and verifies", async () => {
    const env = { LICENSD_AUDIT_SWEEP_MS: "200" };
    const cluster = await startCluster(2, env);
    cleanup.push(() => cluster.close());
    const [doomed, survivor] = cluster.instances as [ServerProcess, ServerProcess];
    const v = await vendor(survivor.url, cluster.superAdminKey, "AUD");
    const on = (url: string) => connectClient(LicensingService, url, v.admin);
    const acknowledged: string[] = [];
    let stop = false;
    let n = 0;
    // 16 writers, half on the instance that is killed: changes in every state (queued, being sequenced, committed
    // but not yet settled) when it dies.
    const writers = Array.from({ length: 16 }, async (_, w) => {
      const url = w % 2 === 0 ? doomed.url : survivor.url;
      while (!stop) {
        const i = n++;
        try {
          const { customer } = await on(url).createCustomer({ name: `C${i}`, email: `c${i}@aud.example` });
          acknowledged.push(customer!.id);
        } catch {
          if (url === doomed.url) return; // the instance is gone
        }
      }
    });
    await until(
      "200 changes acknowledged",
      () => acknowledged.length,
      (k) => k >= 200,
      30_000,
      5,
    );
    await doomed.stop("SIGKILL");
    const queuedAtKill = (
      await query<{ n: number }>(cluster.databaseUrl, "select count(*)::int as n from audit_pending")
    )[0]!.n;
    await new Promise((r) => setTimeout(r, 500));
    stop = true;
    await within(Promise.all(writers), "the writers to stop");

    await until(
      "the survivor's sweep to empty the queue",
      async () =>
        (await query<{ n: number }>(cluster.databaseUrl, "select count(*)::int as n from audit_pending"))[0]!.n,
      (k) => k === 0,
    );
    const customers = await query<{ id: string }>(
      cluster.databaseUrl,
      "select id from customers where tenant_id = $1 and email like '%@aud.example'",
      [v.tenantId],
    );
    const entries = await query<{ subject: string }>(
      cluster.databaseUrl,
      "select subject from audit_events where tenant_id = $1 and type = 'customer.created'",
      [v.tenantId],
    );
    console.info(
      `audit: ${acknowledged.length} changes acknowledged, ${customers.length} committed, ${queuedAtKill} entries queued at the kill`,
    );
    // Each committed change (acknowledged or not: the kill may cut an answer) has exactly one entry, and no other
    // (the vendor's first customer is one of them).
    const ids = customers.map((c) => c.id).sort();
    expect(entries.map((e) => e.subject).sort()).toEqual(ids);
    for (const id of acknowledged) expect(ids).toContain(id);
    const [chain] = await query<{ n: number; max: number }>(
      cluster.databaseUrl,
      "select count(*)::int as n, max(seq)::int as max from audit_events where tenant_id = $1",
      [v.tenantId],
    );
    expect(chain!.n).toBe(chain!.max);
    expect(
      await connectClient(AuditService, survivor.url, cluster.superAdminKey).verifyAuditChain({
        tenantId: v.tenantId,
      }),
    ).toMatchObject({ valid: true, eventsChecked: BigInt(chain!.n) });
  });

  it("during an import: re-running it on a new process leaves each license and customer exactly once", async () => {
    const cluster = await startCluster(1, { LICENSD_KEY_COLLISION_RATE_PER_TENANT: "0" });
    cleanup.push(() => cluster.close());
    const [first] = cluster.instances as [ServerProcess];
    const v = await vendor(first.url, cluster.superAdminKey, "IMP");
    const ROWS = LONG ? 2000 : 100;
    const tag = randomBytes(4).toString("hex");
    const rows = Array.from({ length: ROWS }, (_, i) => ({
      productId: v.productId,
      tier: "pro",
      licenseKey: `imported-${tag}-${String(i).padStart(5, "0")}`,
      customerEmail: `buyer-${i}@imp.example`,
      customerName: `Buyer ${i}`,
    }));
    const importOn = (url: string) =>
      grpcClient(LicensingService, url, v.admin).importLicenses(
        (async function* () {
          yield* rows;
        })(),
      );
    const countImported = async () =>
      (
        await query<{ n: number }>(
          cluster.databaseUrl,
          "select count(*)::int as n from licenses where tenant_id = $1 and metadata->>'imported' = 'true'",
          [v.tenantId],
        )
      )[0]!.n;

    const killed = importOn(first.url).then(
      () => "finished",
      (err) => Code[ConnectError.from(err).code],
    );
    await until("the import under way", countImported, (n) => n >= 20, 15_000, 5);
    await first.stop("SIGKILL");
    expect(["Canceled", "Unavailable"]).toContain(await within(killed, "the import call to fail"));
    const atKill = await countImported();
    expect(atKill).toBeLessThan(ROWS);

    const second = await cluster.add({ LICENSD_KEY_COLLISION_RATE_PER_TENANT: "0" });
    const rerunAt = performance.now();
    const summary = await within(importOn(second.url), "the second import", 60_000);
    const rerunMs = Math.round(performance.now() - rerunAt);
    console.info(
      `import: ${atKill} of ${ROWS} rows in before the kill; the re-run imported ${summary.imported} in ${rerunMs} ms`,
    );
    expect(Number(summary.imported + summary.failed)).toBe(ROWS);
    expect(Number(summary.imported)).toBe(ROWS - atKill);
    expect(new Set(summary.errors.map((e) => e.reason))).toEqual(new Set(atKill > 0 ? ["LICENSE_KEY_TAKEN"] : []));

    expect(await countImported()).toBe(ROWS);
    const customers = await query<{ n: number; distinct: number }>(
      cluster.databaseUrl,
      "select count(*)::int as n, count(distinct lower(email))::int as distinct from customers where tenant_id = $1",
      [v.tenantId],
    );
    expect(customers[0]).toEqual({ n: ROWS + 1, distinct: ROWS + 1 });
    for (const r of [rows[0]!, rows[ROWS - 1]!])
      expect(
        ValidationCode[(await connectClient(LicensingService, second.url).validateLicense({ key: r.licenseKey })).code],
      ).toBe("VALID");
  });
});

describe("the database unreachable", () => {
  it(`for ${OUTAGE_MS / 1000} s under load: UNAVAILABLE, never INTERNAL; recovery by itself; nothing acked lost`, async () => {
    const db = await createTestDatabase();
    cleanup.push(() => db.drop());
    const target = new URL(db.url);
    const proxy = new TcpProxy({ host: target.hostname, port: Number(target.port || 5432) });
    const proxyPort = await proxy.start();
    cleanup.push(() => proxy.cut());
    const viaProxy = new URL(db.url);
    viaProxy.port = String(proxyPort);
    const server = await startServer({ databaseUrl: viaProxy.toString() });
    cleanup.push(() => server.stop("SIGKILL"));
    const v = await vendor(server.url, server.superAdminKey, "DBX");

    const failures = new Map<string, number>();
    const acked: string[] = [];
    let phase: "before" | "outage" | "after" = "before";
    const okAfter = { record: 0, validate: 0, admin: 0 };
    let stop = false;
    const fail = (what: string, err: unknown) => {
      const code = `${what}: ${Code[ConnectError.from(err).code]}`;
      failures.set(code, (failures.get(code) ?? 0) + 1);
    };
    const pause = () => new Promise((r) => setTimeout(r, 20));
    const usage = connectClient(UsageService, server.url);
    const licensing = connectClient(LicensingService, server.url);
    const admin = connectClient(LicensingService, server.url, v.admin);
    let n = 0;
    const load = [
      ...[0, 1, 2].map(async () => {
        while (!stop) {
          const key = `o-${++n}`;
          await usage
            .recordUsage({ event: { licenseKey: v.key, metric: "tokens", quantity: 1n, idempotencyKey: key } })
            .then(
              () => {
                acked.push(key);
                if (phase === "after") okAfter.record++;
              },
              async (err) => {
                fail("RecordUsage", err);
                await pause();
              },
            );
        }
      }),
      (async () => {
        while (!stop)
          await licensing.validateLicense({ key: v.key }).then(
            () => void (phase === "after" && okAfter.validate++),
            async (err) => {
              fail("ValidateLicense", err);
              await pause();
            },
          );
      })(),
      (async () => {
        while (!stop)
          await admin.listLicenses({}).then(
            () => void (phase === "after" && okAfter.admin++),
            async (err) => {
              fail("ListLicenses", err);
              await pause();
            },
          );
      })(),
    ];

    await until(
      "the load under way",
      () => acked.length,
      (n) => n >= 20,
    );
    const ackedBefore = acked.length;
    await proxy.cut();
    phase = "outage";
    const cutAt = Date.now();
    await new Promise((r) => setTimeout(r, OUTAGE_MS));
    await proxy.start(proxyPort);
    phase = "after";
    const backAt = Date.now();
    await until(
      "every kind of call to succeed again",
      () => okAfter,
      (o) => o.record > 0 && o.validate > 0 && o.admin > 0,
      30_000,
      50,
    );
    const recoveredMs = Date.now() - backAt;
    stop = true;
    await Promise.all(load);
    console.info(
      `outage of ${backAt - cutAt} ms: ${ackedBefore} events acked before, ${acked.length} in all; ` +
        `calls worked again ${recoveredMs} ms after the database came back; failures ${JSON.stringify([...failures])}`,
    );
    expect(ackedBefore).toBeGreaterThan(0);
    expect([...failures.keys()].filter((k) => !k.endsWith(": Unavailable"))).toEqual([]);
    expect(failures.get("RecordUsage: Unavailable") ?? 0, "writes refused during the outage").toBeGreaterThan(0);
    // The operator's log says the database was down (warnings), not that licensd failed (no internal errors).
    const logged = server.output().split("\n");
    expect(logged.filter((l) => l.includes('"msg":"internal error"')).map((l) => l.slice(0, 300))).toEqual([]);
    expect(logged.some((l) => l.includes('"msg":"database unavailable: answered UNAVAILABLE"'))).toBe(true);
    const stored = await storedKeys(db.url, v.licenseId);
    expect(acked.filter((k) => stored.get(k) !== 1)).toEqual([]);
    await until(
      "/healthz to answer 200 again",
      () => fetch(`${server.url}/healthz`).then((r) => r.status),
      (status) => status === 200,
    );
  });
});

describe("slow and silent clients", () => {
  it("a tail nobody reads, a half-open stream and silent connections stall no one else", async () => {
    const server = await startServer();
    cleanup.push(
      () => server.dropDatabase(),
      () => server.stop("SIGKILL"),
    );
    const v = await vendor(server.url, server.superAdminKey, "SLO");
    const admin = connectClient(LicensingService, server.url, v.admin);
    // A backlog larger than an HTTP/2 stream window (64 KiB) for the tail that will not be read.
    const padding = "x".repeat(200);
    await Promise.all(
      [0, 1, 2, 3].map(async (w) => {
        for (let i = w; i < 220; i += 4)
          await admin.createCustomer({ name: `C${i}`, email: `c${i}@slo.example`, organization: padding });
      }),
    );

    // A slow reader: a raw HTTP/2 gRPC call to TailAuditEvents whose answer is never read.
    const session = http2.connect(server.url);
    cleanup.push(async () => session.destroy());
    const body = toBinary(TailAuditEventsRequestSchema, create(TailAuditEventsRequestSchema, { afterSeq: 0n }));
    const frame = Buffer.concat([Buffer.from([0, 0, 0, 0, body.length]), Buffer.from(body)]);
    const slow = session.request({
      ":method": "POST",
      ":path": "/licensd.audit.v1.AuditService/TailAuditEvents",
      "content-type": "application/grpc",
      te: "trailers",
      authorization: `Bearer ${v.admin}`,
    });
    slow.end(frame);
    slow.pause();
    let slowResponded = false;
    slow.once("response", () => (slowResponded = true));
    // Half-open: a StreamUsage whose request side stays open and sends nothing.
    const silentRequests = outbox<StreamUsageRequest>();
    const abort = new AbortController();
    const halfOpen = grpcClient(UsageService, server.url, v.ingestKey)
      .streamUsage(silentRequests.messages, { signal: abort.signal })
      [Symbol.asyncIterator]();
    const halfOpenNext = halfOpen.next().catch(() => undefined);
    // Connections that send a partial HTTP/2 preface, a partial HTTP/1.1 request, or nothing at all.
    const sockets = [
      "PRI * HTTP/2.0\r\n",
      "POST /licensd.licensing.v1.LicensingService/ValidateLicense HTTP/1.1\r\n",
      "",
    ].map((bytes) => {
      const s = net.connect(server.port, "127.0.0.1", () => s.write(bytes));
      s.on("error", () => undefined);
      return s;
    });
    cleanup.push(async () => {
      for (const s of sockets) s.destroy();
      abort.abort();
    });
    await until("the slow tail to be answered", () => slowResponded, Boolean, 15_000, 20);

    // Everyone else: validations, a StreamUsage on its own connection, and a live tail seeing a new event.
    const started = performance.now();
    const validations = await within(
      Promise.all(
        Array.from({ length: 30 }, () => connectClient(LicensingService, server.url).validateLicense({ key: v.key })),
      ),
      "30 validations beside the stalled clients",
    );
    expect(validations.every((r) => r.code === ValidationCode.VALID)).toBe(true);
    const stream = usageStream(server.url, v.ingestKey);
    stream.send("s1", batchOf(v.key, "s1", 10));
    stream.end();
    expect(await within(stream.ended, "a StreamUsage beside the stalled clients")).toBe("OK");
    expect(stream.acks.map((a) => a.accepted)).toEqual([10]);
    const tailAbort = new AbortController();
    const live = grpcClient(AuditService, server.url, v.admin)
      .tailAuditEvents({ typePrefix: "license." }, { signal: tailAbort.signal })
      [Symbol.asyncIterator]();
    const nextEvent = (async () => {
      for (;;) {
        const m = await live.next();
        if (m.done || m.value.message.case === "event") return m;
      }
    })();
    await new Promise((r) => setTimeout(r, 200));
    await admin.suspendLicense({ id: v.licenseId });
    const seen = await within(nextEvent, "a live tail to see a new event");
    expect(seen.done ? "" : seen.value.message.case === "event" ? seen.value.message.value.type : "").toBe(
      "license.suspended",
    );
    tailAbort.abort();
    console.info(`slow clients: the others were served in ${Math.round(performance.now() - started)} ms`);
    // The stalled ones are still there, not failed: the server neither waited on them nor dropped them.
    expect(slow.destroyed).toBe(false);
    expect(
      await Promise.race([halfOpenNext.then(() => "ended"), new Promise((r) => setTimeout(() => r("open"), 100))]),
    ).toBe("open");
    // The stalled tail had more than a stream window to send (so the server was held by the reader), and sends it all
    // once read.
    let received = 0;
    slow.on("data", (d: Buffer) => (received += d.length));
    slow.resume();
    await until(
      "the slow tail's backlog once read",
      () => received,
      (n) => n > 65_535,
    );
  });
});

describe("SIGTERM", () => {
  it("answers every committed StreamUsage batch, ends open lease and usage streams with a status, and exits 0", async () => {
    const server = await startServer({ env: { LICENSD_SHUTDOWN_TIMEOUT_MS: "10000" } });
    cleanup.push(
      () => server.dropDatabase(),
      () => server.stop("SIGKILL"),
    );
    const v = await vendor(server.url, server.superAdminKey, "TRM");
    await connectClient(ActivationService, server.url).activate({ key: v.key, fingerprint: "fp-1" });
    const leaseRequests = outbox<ConnectLeaseRequest>();
    const lease = grpcClient(ActivationService, server.url)
      .connectLease(leaseRequests.messages)
      [Symbol.asyncIterator]();
    leaseRequests.push({ key: v.key, fingerprint: "fp-1" } as ConnectLeaseRequest);
    const firstLease = await within(lease.next(), "the first lease");
    expect(firstLease.value?.event.case).toBe("lease");
    const leaseEnd = (async (): Promise<string> => {
      try {
        for (;;) if ((await lease.next()).done) return "OK";
      } catch (err) {
        return Code[ConnectError.from(err).code];
      }
    })();

    // A stream whose batches were all answered, its request side left open: the drain must end it, not wait on it.
    const idle = usageStream(server.url, v.ingestKey);
    idle.send("i0", batchOf(v.key, "i0", 10));
    await until(
      "the idle stream's ack",
      () => idle.acks.length,
      (n) => n >= 1,
      15_000,
      5,
    );
    // A stream in the middle of an upload.
    const BATCHES = 40;
    const SIZE = 1000;
    const busy = usageStream(server.url, v.ingestKey);
    for (let i = 0; i < BATCHES; i++) busy.send(`t${i}`, batchOf(v.key, `t${i}`, SIZE));
    await until(
      "the first ack",
      () => busy.acks.length,
      (n) => n >= 1,
      15_000,
      1,
    );
    const exit = server.stop("SIGTERM");
    const [idleEnded, busyEnded, leaseEnded] = await within(
      Promise.all([idle.ended, busy.ended, leaseEnd]),
      "the streams to end",
    );
    expect(await within(exit, "the process to exit")).toBe(0);
    const acked = [...idle.acks, ...busy.acks].reduce((x, a) => x + a.accepted, 0);
    const stored = await query<{ n: number }>(
      server.env.LICENSD_DATABASE_URL!,
      "select count(*)::int as n from usage_events where license_id = $1",
      [v.licenseId],
    );
    const name = (c: Code | "OK") => (c === "OK" ? c : Code[c]);
    console.info(
      `SIGTERM: ${busy.acks.length} of ${BATCHES} batches acked (${acked} events, ${stored[0]!.n} stored); ` +
        `streams ended: idle ${name(idleEnded)}, busy ${name(busyEnded)}, lease ${leaseEnded}`,
    );
    // Nothing committed without its answer: what is stored is exactly what was acknowledged.
    expect(stored[0]!.n).toBe(acked);
    // Ended by the drain with a status telling the client to resend elsewhere, not cut at the shutdown timeout. (The
    // busy stream's unread request body is reset after the status: connect-node may report that as CANCELED.)
    expect(idleEnded).toBe(Code.Unavailable);
    expect([Code.Unavailable, Code.Canceled]).toContain(busyEnded);
    expect(["OK", "Unavailable"]).toContain(leaseEnded);
    expect(server.output()).not.toContain("shutdown timeout");
  });
});

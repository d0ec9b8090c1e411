import { mkdtempSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { ActivationService, AuditService, auditEntryHash, verifyAuditProof } from "@licensd/client";
import type { Checkpoint } from "@licensd/client/gen/licensd/audit/v1/audit_event_pb.js";
import { UsageUploader } from "@licensd/client/node";
import pg from "pg";
import { afterAll, describe, expect, it } from "vitest";
import { createFormation, FORMATION_AVAILABLE, type Formation, type FormationNode } from "../support/formation.js";
import { Runbook } from "../support/runbook.js";
import { startServer, type ServerProcess } from "../support/server.js";
import { until, within } from "../support/wait.js";

/**
 * licensd follows a PostgreSQL failover by itself. Two `licensd serve` instances (A and B) on the multi-host URL of a
 * pg_auto_failover formation (primary + synchronous standby) carry continuous load: two agents streaming usage
 * (UsageUploader over StreamUsage, one on each instance), CreateCustomer / RecordUsage on A, Activate + Heartbeat on
 * B, and an audit tail (TailAuditEvents) on B. The primary node is killed hard. Expected: the standby is promoted;
 * both instances answer again without a restart; health goes NOT_SERVING then SERVING; every call in the window is
 * UNAVAILABLE, never INTERNAL; every acknowledged customer, usage event, activation and audit entry is on the new
 * primary exactly once; the tail resumes from its last seq and sees every entry once, in order; the audit chain
 * verifies and checkpoints taken before the kill are consistent with the log after it. Then the old node is brought
 * back by docs/operations.md's runbook "Failover and rejoining the old primary", run as written, and the next round
 * kills the new primary: the failover goes back to the rejoined node.
 *
 * Rounds: LICENSD_FAILOVER_ROUNDS (default 2: there and back, the short variant of `npm test`); `npm run test:failover`
 * runs this file alone with 4.
 */
const ROUNDS = Math.max(1, Number(process.env.LICENSD_FAILOVER_ROUNDS ?? 2));

let formation: Formation | undefined;
const servers: ServerProcess[] = [];
const cleanups: (() => Promise<unknown>)[] = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => undefined);
  for (const s of servers) await s.stop("SIGKILL");
  await formation?.destroy();
}, 120_000);

const began = Date.now();
const log = (line: string) =>
  process.stdout.write(`[failover +${((Date.now() - began) / 1000).toFixed(1)} s] ${line}\n`);
const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function call(url: string, procedure: string, body: unknown, bearer?: string, timeoutMs = 10_000) {
  const res = await fetch(`${url}/${procedure}`, {
    method: "POST",
    headers: { "content-type": "application/json", ...(bearer ? { authorization: `Bearer ${bearer}` } : {}) },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(timeoutMs),
  });
  const json = (await res.json()) as Record<string, Record<string, string>>;
  if (!res.ok) {
    const reason = /"reason":"([A-Z_]+)"/.exec(JSON.stringify(json))?.[1];
    throw new Error(`${procedure.split("/")[1]}: ${res.status} ${reason} ${JSON.stringify(json)}`);
  }
  return json;
}

/** One query on one node of the formation, as the `postgres` user (parameters, so long key lists are no problem). */
async function query(node: FormationNode, text: string, params: unknown[] = []) {
  const client = new pg.Client({ connectionString: `postgres://postgres@127.0.0.1:${node.port}/app` });
  await client.connect();
  try {
    return (await client.query(text, params)).rows;
  } finally {
    await client.end();
  }
}

interface Outcome {
  at: number;
  ok: boolean;
  error?: string;
}

/** The first failed call after `from`, and the first successful one after that: the unavailability window. */
function windowOf(calls: Outcome[], from: number) {
  const after = calls.filter((c) => c.at > from);
  const firstFailure = after.find((c) => !c.ok);
  const recovered = firstFailure && after.find((c) => c.ok && c.at > firstFailure.at);
  return { firstFailure, recovered, failures: after.filter((c) => !c.ok) };
}

/** Health of one instance, sampled every 50 ms: the distinct /healthz answers with their times. */
function sampleHealth(url: string) {
  const seen: { at: number; up: boolean }[] = [];
  let on = true;
  const loop = (async () => {
    while (on) {
      const up = await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(2_000) }).then(
        (r) => r.ok,
        () => false,
      );
      if (seen.at(-1)?.up !== up) seen.push({ at: Date.now(), up });
      await pause(50);
    }
  })();
  return {
    seen,
    stop: async () => {
      on = false;
      await loop;
    },
  };
}

describe.skipIf(!FORMATION_AVAILABLE)("failover on a pg_auto_failover formation", () => {
  it("the primary node is killed under load: the standby takes over, both instances follow, nothing acknowledged is lost, the old node rejoins by the runbook", async () => {
    const t0 = Date.now();
    formation = await createFormation({ log: (l) => log(`formation: ${l}`) });
    const f = formation;
    log(`formation up in ${((Date.now() - t0) / 1000).toFixed(1)} s: ${f.url}`);
    // What is under test is the failover, not the per-license and per-address activation rates: the Activate loop
    // re-activates the same machines as fast as it can, which those limits refuse by design.
    const rates = { LICENSD_ACTIVATION_RATE_PER_LICENSE: "0", LICENSD_ACTIVATION_RATE_PER_IP: "0" };
    const a = await startServer({ databaseUrl: f.url, env: rates });
    servers.push(a);
    const key = a.superAdminKey;
    const b = await startServer({
      databaseUrl: f.url,
      env: { ...rates, LICENSD_SUPER_ADMIN_KEY: key, LICENSD_DATA_KEY: a.dataKey },
    });
    servers.push(b);
    log(`instances A (${a.url}) and B (${b.url}) serving`);

    const tenantId = (await call(a.url, "licensd.tenant.v1.TenantService/CreateTenant", { name: "Failover" }, key))
      .tenant!.id!;
    const lic = "licensd.licensing.v1.LicensingService";
    const productId = (await call(a.url, `${lic}/CreateProduct`, { tenantId, code: "FOV", name: "Failover" }, key))
      .product!.id!;
    await call(
      a.url,
      "licensd.usage.v1.UsageService/CreateMeter",
      { tenantId, productId, metric: "calls", aggregation: "AGGREGATION_SUM" },
      key,
    );
    const policyId = (
      await call(
        a.url,
        `${lic}/CreatePolicy`,
        { tenantId, productId, name: "std", floating: true, maxMachines: 0 },
        key,
      )
    ).policy!.id!;
    const owner = (
      await call(a.url, `${lic}/CreateCustomer`, { tenantId, name: "Owner", email: "owner@example.com" }, key)
    ).customer!.id!;
    const created = await call(a.url, `${lic}/CreateLicense`, { tenantId, policyId, customerId: owner }, key);
    const licenseKey = created.key as unknown as string;
    const licenseId = created.license!.id!;

    const health = [sampleHealth(a.url), sampleHealth(b.url)];
    let loading = true;

    // A: one client, one call at a time: a customer, then a usage event, and so on; every acknowledgement recorded.
    const customers: string[] = [];
    const usageKeys: string[] = [];
    const callsA: Outcome[] = [];
    let n = 0;
    const writesOnA = (async () => {
      while (loading) {
        const i = n++;
        try {
          if (i % 2 === 0) {
            const c = await call(
              a.url,
              `${lic}/CreateCustomer`,
              { tenantId, name: `c-${i}`, email: `c${i}@example.com` },
              key,
            );
            customers.push(c.customer!.id!);
          } else {
            const event = { licenseKey, metric: "calls", quantity: "1", idempotencyKey: `u-${i}` };
            await call(a.url, "licensd.usage.v1.UsageService/RecordUsage", { event }, key);
            usageKeys.push(event.idempotencyKey);
          }
          callsA.push({ at: Date.now(), ok: true });
        } catch (err) {
          callsA.push({ at: Date.now(), ok: false, error: (err as Error).message.slice(0, 200) });
          await pause(50);
        }
      }
    })();

    // B: an agent activates a machine, then heartbeats it; a failed Activate is retried with the same idempotency key.
    const activated = new Map<string, string>(); // fingerprint → machine id
    const callsB: Outcome[] = [];
    let heartbeats = 0;
    const activationsOnB = (async () => {
      let i = 0;
      while (loading) {
        const fingerprint = `fp-${i}`;
        try {
          if (!activated.has(fingerprint)) {
            const r = await call(b.url, "licensd.activation.v1.ActivationService/Activate", {
              key: licenseKey,
              fingerprint,
              hostname: `host-${i}`,
              idempotencyKey: `act-${i}`,
            });
            activated.set(fingerprint, r.machine!.id!);
          } else {
            await call(b.url, "licensd.activation.v1.ActivationService/Heartbeat", { key: licenseKey, fingerprint });
            heartbeats++;
            i++;
          }
          callsB.push({ at: Date.now(), ok: true });
        } catch (err) {
          callsB.push({ at: Date.now(), ok: false, error: (err as Error).message.slice(0, 200) });
          await pause(50);
        }
      }
    })();

    // Two agents streaming usage through the real client, one per instance: each event is on disk before `record`
    // resolves, and sent (again, with its key, after a failure) until the server acknowledges it.
    const agents = [a, b].map((server, i) => {
      const errors: { at: number; code: Code; reason?: string }[] = [];
      const uploader = new UsageUploader({
        dir: mkdtempSync(path.join(os.tmpdir(), `licensd-failover-agent${i}-`)),
        transport: createGrpcTransport({ baseUrl: server.url }),
        licenseKey,
        agentId: `agent-${i}`,
        batchSize: 20,
        batchDelayMs: 20,
        backoff: { initialMs: 100, maxMs: 1_000 },
        onError: (e) => errors.push({ at: Date.now(), code: e.code, reason: e.reason }),
      });
      cleanups.push(() => uploader.close());
      const keys: string[] = [];
      const rejected: string[] = [];
      const loop = (async () => {
        while (loading) {
          keys.push(await uploader.record("calls", 1 + (keys.length % 3)));
          await pause(10);
        }
      })();
      return { name: i === 0 ? "A" : "B", uploader, keys, rejected, errors, loop };
    });

    // B: an audit tail from the first entry on; after an error it reconnects with `after_seq` = the last seq it got.
    const audit = createClient(AuditService, createConnectTransport({ baseUrl: b.url, httpVersion: "1.1" }));
    const headers = { authorization: `Bearer ${key}` };
    const tailed: { seq: number; subject: string; type: string; hashOk: boolean }[] = [];
    const tailErrors: { at: number; code: Code; lastSeq: number; message: string }[] = [];
    const resumes: { at: number; afterSeq: number }[] = [];
    const tailAbort = new AbortController();
    let stream = new AbortController();
    let tailing = true;
    const tailOnB = (async () => {
      while (tailing) {
        const afterSeq = BigInt(tailed.at(-1)?.seq ?? 0);
        if (afterSeq > 0n) resumes.push({ at: Date.now(), afterSeq: Number(afterSeq) });
        stream = new AbortController();
        const signal = AbortSignal.any([tailAbort.signal, stream.signal]);
        try {
          for await (const m of audit.tailAuditEvents({ tenantId, afterSeq }, { headers, signal })) {
            if (m.message.case !== "event") continue;
            const e = m.message.value;
            tailed.push({
              seq: Number(e.seq),
              subject: e.subject,
              type: e.type,
              hashOk: Buffer.from(auditEntryHash(e)).equals(Buffer.from(e.hash)),
            });
          }
        } catch (err) {
          if (!tailing) break;
          const e = ConnectError.from(err);
          tailErrors.push({ at: Date.now(), code: e.code, lastSeq: tailed.at(-1)?.seq ?? 0, message: e.rawMessage });
          if (!stream.signal.aborted) await pause(200);
        }
      }
    })();

    // A test that fails half-way stops its loads too, before the servers and the formation go.
    cleanups.push(async () => {
      loading = false;
      tailing = false;
      tailAbort.abort();
      await Promise.all(health.map((h) => h.stop()));
    });

    const signingKeys = async () =>
      (
        await createClient(
          ActivationService,
          createConnectTransport({ baseUrl: a.url, httpVersion: "1.1" }),
        ).getSigningKeys({})
      ).keys;
    const checkpoint = async (url: string) =>
      (
        await createClient(AuditService, createConnectTransport({ baseUrl: url, httpVersion: "1.1" })).getCheckpoint(
          { tenantId },
          { headers },
        )
      ).checkpoint!;
    const checkpoints: Checkpoint[] = [];

    const progress = () => ({
      a: callsA.filter((c) => c.ok).length,
      b: callsB.filter((c) => c.ok).length,
      agents: agents.map((x) => x.uploader.stats().acked),
      tail: tailed.length,
    });
    /** Every load has made progress past `since` (each instance answered, each agent got acks, the tail got entries). */
    const progressed = (since: ReturnType<typeof progress>, calls = 10) => {
      const now = progress();
      return (
        now.a >= since.a + calls &&
        now.b >= since.b + calls &&
        now.agents.every((x, i) => x >= since.agents[i]! + 20) &&
        now.tail >= since.tail + 3
      );
    };

    const start = { a: 0, b: 0, agents: [0, 0], tail: 0 };
    await until("load on both instances before the first kill", progress, () => progressed(start, 10), 120_000, 100);
    log(`load running: ${JSON.stringify(progress())}`);

    const rounds: { killed: string; promoted: string; promotion: number; windows: (number | undefined)[] }[] = [];
    for (let round = 1; round <= ROUNDS; round++) {
      const old = (await f.primary())!;
      const standby = f.nodes.find((x) => x.name !== old.name)!;
      checkpoints.push(await checkpoint(a.url));
      const before = progress();
      const killedAt = Date.now();
      f.kill(old);
      // The tail's connection drops with the primary (as a client's would through a proxy that resets it): the tail
      // reconnects with after_seq, while no node is writable and then on the new primary.
      stream.abort();
      log(`round ${round}: killed ${old.name} (pg_autoctl and postmaster, SIGKILL)`);

      // pg_auto_failover's own time: from the kill to the monitor seeing the standby as the writable node.
      await until(
        "the standby's promotion",
        () => f.states(),
        (s) => s.some((x) => x.name === standby.name && ["wait_primary", "primary"].includes(x.reported)),
        90_000,
        100,
      );
      const promotedAt = Date.now();
      const atPromotion = progress();
      await until("every load going again after the failover", progress, () => progressed(atPromotion), 90_000, 100);
      await until(
        "health back to SERVING on both instances",
        () => health.map((h) => h.seen.at(-1)?.up),
        (ups) => ups.every((up) => up === true),
        60_000,
      );
      // The audit feeds' LISTEN sessions (a standby refuses LISTEN) are re-established on the new primary.
      await until(
        "both audit feeds listening on the new primary",
        () => query(standby, "select count(*)::int as n from pg_stat_activity where query like 'listen %'"),
        (rows) => rows[0].n >= 2,
        90_000,
        200,
      );

      const windows = [callsA, callsB].map((calls, i) => {
        const w = windowOf(calls, killedAt);
        const h = health[i]!.seen;
        const down = h.find((x) => !x.up && x.at > killedAt);
        const up = down && h.find((x) => x.up && x.at > down.at);
        const s = (t: number | undefined) => (t === undefined ? "-" : `${((t - killedAt) / 1000).toFixed(2)} s`);
        const window = w.firstFailure && w.recovered ? w.recovered.at - w.firstFailure.at : undefined;
        log(
          `round ${round}, instance ${"AB"[i]}: first failed call ${s(w.firstFailure?.at)}, ` +
            `health NOT_SERVING ${s(down?.at)}, SERVING ${s(up?.at)}, first success ${s(w.recovered?.at)}; ` +
            `window ${window === undefined ? "-" : (window / 1000).toFixed(2)} s; ${w.failures.length} failed calls`,
        );
        // Health went NOT_SERVING, then SERVING again.
        expect(down, `instance ${"AB"[i]} health NOT_SERVING`).toBeDefined();
        expect(up, `instance ${"AB"[i]} health SERVING again`).toBeDefined();
        expect(w.firstFailure === undefined || w.recovered !== undefined).toBe(true);
        return window;
      });
      const promotion = promotedAt - killedAt;
      log(
        `round ${round}: ${standby.name} promoted ${(promotion / 1000).toFixed(2)} s after the kill (pg_auto_failover); ` +
          `windows / promotion: ${windows.map((w) => (w === undefined ? "-" : (w / promotion).toFixed(2))).join(", ")}; ` +
          `progress ${JSON.stringify(before)} → ${JSON.stringify(progress())}`,
      );
      rounds.push({ killed: old.name, promoted: standby.name, promotion, windows });
      expect(await f.primary().then((p) => p?.name)).toBe(standby.name);

      // The tail came back from its last seq (its order and completeness are checked at the end).
      expect(resumes.some((r) => r.at > killedAt)).toBe(true);

      // Between rounds (and after a single one) the old node comes back by the runbook, as written, under load.
      if (round === ROUNDS && ROUNDS > 1) continue;
      const drill = new Runbook("failover-rejoin", {
        LICENSD_URL: b.url,
        LICENSD_API_KEY: key,
        LICENSD_DATABASE_URL: f.url,
        PG_AUTOCTL: f.pgAutoctl,
        PGDATA: old.pgdata,
      });
      await drill.step("find-the-new-primary", ({ stdout }) => {
        const line = (name: string) => stdout.split("\n").find((l) => l.startsWith(`${name} `)) ?? "";
        expect(line(standby.name)).toMatch(/\b(wait_primary|primary) +\| +(wait_primary|primary)$/);
        expect(line(old.name)).toMatch(/\| +(demoted|draining|demote_timeout)$/);
      });
      await drill.step("check-licensd", ({ stdout }) => expect(stdout.trim()).toBe("ok"));
      await drill.step("restart-old-node", () => f.restart(old));
      await drill.step("wait-for-secondary", async ({ stdout }) => {
        const line = (name: string) => stdout.split("\n").find((l) => l.startsWith(`${name} `)) ?? "";
        expect(line(old.name), f.output(old).slice(-3000)).toMatch(/secondary +\| +secondary$/);
        expect(line(standby.name)).toMatch(/primary +\| +primary$/);
        expect((await f.states()).map((s) => `${s.name}:${s.reported}`).sort()).toEqual(
          [`${old.name}:secondary`, `${standby.name}:primary`].sort(),
        );
      });
      await drill.step("check-synchronous", ({ stdout }) => {
        const [replication, names] = stdout.trim().split("\n");
        expect(replication).toMatch(/^pgautofailover_standby_\d+\|(quorum|sync)$/);
        expect(names).toMatch(/pgautofailover_standby_/);
      });
      drill.finish();
      log(`round ${round}: ${old.name} rejoined as a synchronous standby by the runbook`);
      const rejoined = progress();
      await until("load going on after the rejoin", progress, () => progressed(rejoined, 5), 60_000, 100);
    }

    // The load stops; the agents deliver what they still hold; the tail catches up with the log.
    loading = false;
    await Promise.all([writesOnA, activationsOnB, ...agents.map((x) => x.loop)]);
    for (const agent of agents) await within(agent.uploader.flush(), `agent ${agent.name}'s flush`, 60_000);
    await Promise.all(health.map((h) => h.stop()));
    const final = await checkpoint(b.url);
    const head = Number(final.treeSize);
    await until(
      "the tail to reach the head of the log",
      () => tailed.at(-1)?.seq ?? 0,
      (s) => s >= head,
      60_000,
    );
    tailing = false;
    tailAbort.abort();
    await tailOnB;

    const primary = (await f.primary())!;
    log(`primary at the end: ${primary.name}`);
    // What the servers logged for a call that was not UNAVAILABLE (the cause of an INTERNAL answer).
    const unexpected = [...callsA, ...callsB].filter((c) => !c.ok && !/ 503 DATABASE_UNAVAILABLE /.test(c.error ?? ""));
    for (const [i, server] of unexpected.length > 0 ? [a, b].entries() : [])
      for (const line of server
        .output()
        .split("\n")
        .filter((l) => l.includes('"msg":"internal error"'))
        .slice(0, 3))
        log(`server ${"AB"[i]}: ${line.slice(0, 1500)}`);

    // Both instances kept serving without a restart.
    expect(a.child.exitCode).toBeNull();
    expect(b.child.exitCode).toBeNull();

    // Calls during the window were refused as retryable (UNAVAILABLE), never INTERNAL; streams too.
    expect(unexpected.map((c) => c.error)).toEqual([]);
    for (const agent of agents) {
      const codes = agent.errors.map((e) => `${Code[e.code]}${e.reason ? ` ${e.reason}` : ""}`);
      log(`agent ${agent.name}: ${agent.keys.length} events, stream errors: ${JSON.stringify(count(codes))}`);
      expect(agent.errors.filter((e) => e.code === Code.Internal)).toEqual([]);
    }
    log(
      `tail: ${tailed.length} entries; resumed ${resumes.length} times, from seqs ${JSON.stringify([
        ...new Set(resumes.map((r) => r.afterSeq)),
      ])}; stream errors ${JSON.stringify(count(tailErrors.map((e) => Code[e.code]!)))}`,
    );
    expect(tailErrors.filter((e) => e.code === Code.Internal || e.code === Code.Unknown)).toEqual([]);

    // The tail saw every entry of the log exactly once, in order, each with its right hash.
    expect(tailed.map((e) => e.seq)).toEqual(Array.from({ length: head }, (_, i) => i + 1));
    expect(tailed.filter((e) => !e.hashOk)).toEqual([]);

    // Every acknowledged write is on the new primary, exactly once (synchronous replication: nothing acked was lost).
    const once = async (what: string, sql: string, ids: string[]) => {
      expect(ids.length, what).toBeGreaterThan(0);
      const [row] = await query(primary, sql, [ids]);
      expect({ what, total: Number(row.total), distinct: Number(row.distinct) }).toEqual({
        what,
        total: ids.length,
        distinct: ids.length,
      });
    };
    await once(
      "customers",
      "select count(*) as total, count(distinct id) as distinct from customers where id = any($1)",
      customers,
    );
    await once(
      "RecordUsage events",
      "select count(*) as total, count(distinct idempotency_key) as distinct from usage_events where idempotency_key = any($1)",
      usageKeys,
    );
    for (const agent of agents) {
      expect(agent.uploader.stats()).toMatchObject({ pending: 0, rejected: 0, halted: false });
      await once(
        `agent ${agent.name}'s events`,
        "select count(*) as total, count(distinct idempotency_key) as distinct from usage_events where idempotency_key = any($1)",
        agent.keys,
      );
    }
    const machines = [...activated.values()];
    await once(
      "activations",
      "select count(*) as total, count(distinct id) as distinct from machines where id = any($1)",
      machines,
    );
    const [{ n: perFingerprint }] = await query(
      primary,
      "select count(*)::int as n from machines where license_id = $1 and fingerprint = any($2)",
      [licenseId, [...activated.keys()]],
    );
    expect(perFingerprint).toBe(activated.size);
    // Each acknowledged customer and activation has its one audit entry, and the tail saw it.
    for (const [what, type, subjects] of [
      ["customer.created entries", "customer.created", customers],
      ["machine.activated entries", "machine.activated", machines],
    ] as const) {
      const [row] = await query(
        primary,
        "select count(*) as total, count(distinct subject) as distinct from audit_events where tenant_id = $1 and type = $2 and subject = any($3)",
        [tenantId, type, subjects],
      );
      expect({ what, total: Number(row.total), distinct: Number(row.distinct) }).toEqual({
        what,
        total: subjects.length,
        distinct: subjects.length,
      });
      const seen = new Set(tailed.filter((e) => e.type === type).map((e) => e.subject));
      expect(subjects.filter((s) => !seen.has(s))).toEqual([]);
    }
    log(
      `acknowledged and on ${primary.name} once: ${customers.length} customers, ${usageKeys.length} RecordUsage events, ` +
        `${agents.map((x) => x.keys.length).join(" + ")} streamed events, ${activated.size} activations ` +
        `(${heartbeats} heartbeats), ${head} audit entries`,
    );

    // The audit chain verifies, and every checkpoint taken before a kill is a prefix of the log after the last one.
    const report = await call(b.url, "licensd.audit.v1.AuditService/VerifyAuditChain", { tenantId }, key);
    expect(report).toMatchObject({ valid: true });
    const keys = (await signingKeys()).map((k) => ({ kid: k.kid, publicKey: k.publicKey }));
    for (const older of checkpoints) {
      const proof = await audit.getConsistencyProof(
        { tenantId, oldSize: older.treeSize, newSize: final.treeSize },
        { headers },
      );
      const result = await verifyAuditProof({ checkpoint: final, keys, consistency: { older, proof } });
      expect({ from: Number(older.treeSize), to: head, ...result }).toMatchObject({ verified: true, code: "VERIFIED" });
    }

    const median = (xs: number[]) => [...xs].sort((x, y) => x - y)[Math.floor((xs.length - 1) / 2)]!;
    const ws = rounds.flatMap((r) => r.windows.filter((w): w is number => w !== undefined));
    log(
      `${rounds.length} rounds: promotion median ${(median(rounds.map((r) => r.promotion)) / 1000).toFixed(2)} s, ` +
        `window median ${ws.length ? (median(ws) / 1000).toFixed(2) : "-"} s`,
    );
  }, 600_000);
});

function count(xs: string[]) {
  const m: Record<string, number> = {};
  for (const x of xs) m[x] = (m[x] ?? 0) + 1;
  return m;
}

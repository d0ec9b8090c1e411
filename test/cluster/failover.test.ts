import { afterAll, describe, expect, it } from "vitest";
import { createFormation, FORMATION_AVAILABLE, type Formation } from "../support/formation.js";
import { startServer, type ServerProcess } from "../support/server.js";
import { until } from "../support/wait.js";

/**
 * licensd follows a PostgreSQL failover by itself: one `licensd serve` on the multi-host URL of a pg_auto_failover
 * formation (primary + synchronous standby), continuous writes from one client, then the primary node is killed hard.
 * The standby is promoted, licensd answers again without a restart, health goes NOT_SERVING then SERVING, and every
 * acknowledged write is on the new primary exactly once. `npm run test:failover` runs this file alone.
 */
let formation: Formation | undefined;
let server: ServerProcess | undefined;
afterAll(async () => {
  await server?.stop("SIGKILL");
  await formation?.destroy();
}, 60_000);

const log = (line: string) => process.stdout.write(`[failover] ${line}\n`);

async function call(url: string, procedure: string, body: unknown, bearer: string, timeoutMs = 5_000) {
  const res = await fetch(`${url}/${procedure}`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${bearer}` },
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

describe.skipIf(!FORMATION_AVAILABLE)("failover on a pg_auto_failover formation", () => {
  it("SIGKILL of the primary node: the standby takes over, licensd follows, nothing acknowledged is lost", async () => {
    const t0 = Date.now();
    formation = await createFormation({ log: (l) => log(`formation: ${l}`) });
    log(`formation up in ${((Date.now() - t0) / 1000).toFixed(1)} s: ${formation.url}`);
    server = await startServer({ databaseUrl: formation.url });
    const { url, superAdminKey: key } = server;

    const tenantId = (await call(url, "licensd.tenant.v1.TenantService/CreateTenant", { name: "Failover" }, key))
      .tenant!.id!;
    const lic = "licensd.licensing.v1.LicensingService";
    const productId = (await call(url, `${lic}/CreateProduct`, { tenantId, code: "FOV", name: "Failover" }, key))
      .product!.id!;
    await call(
      url,
      "licensd.usage.v1.UsageService/CreateMeter",
      { tenantId, productId, metric: "calls", aggregation: "AGGREGATION_SUM" },
      key,
    );
    const policyId = (await call(url, `${lic}/CreatePolicy`, { tenantId, productId, name: "std" }, key)).policy!.id!;
    const owner = (
      await call(url, `${lic}/CreateCustomer`, { tenantId, name: "Owner", email: "owner@example.com" }, key)
    ).customer!.id!;
    const licenseKey = (await call(url, `${lic}/CreateLicense`, { tenantId, policyId, customerId: owner }, key))
      .key as unknown as string;

    // Health, sampled every 50 ms: the sequence of distinct /healthz answers with their times.
    const healthSeen: { at: number; up: boolean }[] = [];
    let sampling = true;
    const healthLoop = (async () => {
      while (sampling) {
        const up = await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(2_000) }).then(
          (r) => r.ok,
          () => false,
        );
        if (healthSeen.at(-1)?.up !== up) healthSeen.push({ at: Date.now(), up });
        await new Promise((r) => setTimeout(r, 50));
      }
    })();

    // One client, one call at a time: a customer, then a usage event, and so on; every acknowledgement is recorded.
    const customers: string[] = [];
    const usageKeys: string[] = [];
    const calls: { at: number; ok: boolean; error?: string }[] = [];
    let loading = true;
    let n = 0;
    const loadLoop = (async () => {
      while (loading) {
        const i = n++;
        try {
          if (i % 2 === 0) {
            const c = await call(
              url,
              `${lic}/CreateCustomer`,
              { tenantId, name: `c-${i}`, email: `c${i}@example.com` },
              key,
            );
            customers.push(c.customer!.id!);
          } else {
            const event = { licenseKey, metric: "calls", quantity: "1", idempotencyKey: `u-${i}` };
            await call(url, "licensd.usage.v1.UsageService/RecordUsage", { event }, key);
            usageKeys.push(event.idempotencyKey);
          }
          calls.push({ at: Date.now(), ok: true });
        } catch (err) {
          calls.push({ at: Date.now(), ok: false, error: (err as Error).message.slice(0, 200) });
          await new Promise((r) => setTimeout(r, 50));
        }
      }
    })();

    await until(
      "writes before the kill",
      () => calls.filter((c) => c.ok).length,
      (k) => k >= 20,
      30_000,
    );
    const old = (await formation.primary())!;
    const standby = formation.nodes.find((x) => x.name !== old.name)!;
    const killedAt = Date.now();
    formation.kill(old);
    log(`killed ${old.name} (pg_autoctl and postmaster, SIGKILL)`);

    // pg_auto_failover's own time: from the kill to the monitor seeing the standby as the writable node.
    await until(
      "the standby's promotion",
      () => formation!.states(),
      (s) => s.some((x) => x.name === standby.name && ["wait_primary", "primary"].includes(x.reported)),
      60_000,
      100,
    );
    const promotedAt = Date.now();
    await until(
      "writes after the failover",
      () => calls.filter((c) => c.ok && c.at > promotedAt).length,
      (k) => k >= 20,
      60_000,
    );
    // The audit feed's LISTEN session (a standby refuses LISTEN) is re-established on the new primary.
    await until(
      "the audit feed listening on the new primary",
      () => formation!.psql(standby, "select count(*) from pg_stat_activity where query like 'listen %'"),
      (v) => Number(v) >= 1,
      45_000,
      200,
    );
    const listeningAt = Date.now();
    await until(
      "health back to SERVING",
      () => healthSeen.at(-1)?.up,
      (up) => up === true,
      30_000,
    );
    loading = false;
    sampling = false;
    await Promise.all([loadLoop, healthLoop]);

    const after = calls.filter((c) => c.at > killedAt);
    const firstFailure = after.find((c) => !c.ok);
    const recovered = firstFailure && after.find((c) => c.ok && c.at > firstFailure.at);
    const failures = after.filter((c) => !c.ok);
    const down = healthSeen.find((h) => !h.up && h.at > killedAt);
    const up = down && healthSeen.find((h) => h.up && h.at > down.at);
    const s = (t: number | undefined) => (t === undefined ? "-" : `${((t - killedAt) / 1000).toFixed(2)} s`);
    log(
      `timeline from the kill: first failed call ${s(firstFailure?.at)}, standby promoted ${s(promotedAt)}, ` +
        `health NOT_SERVING ${s(down?.at)}, SERVING ${s(up?.at)}, first success ${s(recovered?.at)}, ` +
        `audit feed listening again by ${s(listeningAt)}; ` +
        `${failures.length} failed calls (first: ${failures[0]?.error ?? "-"})`,
    );
    if (firstFailure && recovered) {
      const window = recovered.at - firstFailure.at;
      log(
        `unavailability window ${(window / 1000).toFixed(2)} s; pg_auto_failover's promotion ${((promotedAt - killedAt) / 1000).toFixed(2)} s; ` +
          `ratio ${(window / (promotedAt - killedAt)).toFixed(2)}`,
      );
    }

    const reasons = new Map<string, number>();
    for (const f of failures) {
      const reason = f.error?.split(" {", 1)[0] ?? "";
      reasons.set(reason, (reasons.get(reason) ?? 0) + 1);
    }
    log(`failed calls by reason: ${JSON.stringify(Object.fromEntries(reasons))}`);
    // What the server logged as internal errors, if any (the cause of an INTERNAL answer).
    for (const line of server!
      .output()
      .split("\n")
      .filter((l) => l.includes('"msg":"internal error"'))
      .slice(0, 3))
      log(`server: ${line.slice(0, 2000)}`);

    // The standby took over, and licensd kept serving without a restart.
    expect(server.child.exitCode).toBeNull();
    expect(await formation.primary().then((p) => p?.name)).toBe(standby.name);
    expect(recovered).toBeDefined();
    // Calls during the window were refused as retryable (UNAVAILABLE), never INTERNAL.
    expect(failures.filter((f) => !/ 503 DATABASE_UNAVAILABLE /.test(f.error ?? "")).map((f) => f.error)).toEqual([]);
    // Health went NOT_SERVING, then SERVING again.
    expect(down).toBeDefined();
    expect(up).toBeDefined();

    // Every acknowledged write is on the new primary, exactly once (synchronous replication: nothing acked was lost).
    expect(customers.length).toBeGreaterThan(0);
    expect(usageKeys.length).toBeGreaterThan(0);
    const ids = customers.map((c) => `'${c}'`).join(",");
    const stored = await formation.psql(
      standby,
      `select count(*), count(distinct id) from customers where id in (${ids})`,
    );
    expect(stored).toBe(`${customers.length}|${customers.length}`);
    const keys = usageKeys.map((k) => `'${k}'`).join(",");
    const events = await formation.psql(
      standby,
      `select count(*), count(distinct idempotency_key) from usage_events where idempotency_key in (${keys})`,
    );
    expect(events).toBe(`${usageKeys.length}|${usageKeys.length}`);
    log(`${customers.length} customers and ${usageKeys.length} usage events acknowledged, all on ${standby.name} once`);

    const report = await call(url, "licensd.audit.v1.AuditService/VerifyAuditChain", { tenantId }, key);
    expect(report).toMatchObject({ valid: true });
  }, 180_000);
});

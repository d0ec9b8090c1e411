// How long licensd is unavailable when the PostgreSQL primary dies, against pg_auto_failover's own failover time:
// a formation (test/support/formation.ts: monitor, primary, synchronous standby, Debian's PostgreSQL 15, the monitor
// set to call a node dead after ~2 s) and one `licensd serve` on its multi-host URL, under a steady closed-loop load
// (WORKERS clients, each CreateCustomer / RecordUsage in turn, one call at a time, 50 ms pause after a failure).
// ROUNDS rounds of: kill the primary node hard (SIGKILL to its pg_autoctl and postmaster), wait for the promotion and
// for the load to succeed again, start the old node's pg_autoctl again so it rejoins as a synchronous standby.
// Per round: the window (first failed call → first successful call after it), and the baseline measured in the same
// run: pg_auto_failover's promotion time (kill → the monitor reports the standby as the writable node, polled every
// 100 ms).
import { randomBytes } from "node:crypto";
import { createFormation, FORMATION_AVAILABLE } from "../test/support/formation.ts";
import { barChart, writeChart } from "./chart.ts";
import { startBenchServer } from "./support.ts";

const ROUNDS = Number(process.env.BENCH_FAILOVER_ROUNDS ?? 3);
const WORKERS = Number(process.env.BENCH_FAILOVER_WORKERS ?? 4);

interface Outcome {
  /** When the call was sent, and when it was answered. */
  start: number;
  at: number;
  ok: boolean;
  reason?: string;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function waitFor<T>(what: string, fn: () => Promise<T> | T, ok: (v: T) => boolean, ms: number, pauseMs = 100) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (ok(v)) return v;
    if (Date.now() > deadline) throw new Error(`bench failover: timed out waiting for ${what}`);
    await sleep(pauseMs);
  }
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

export async function run(): Promise<string> {
  if (!FORMATION_AVAILABLE)
    throw new Error(
      "bench failover needs pg_autoctl (postgresql-15-auto-failover) and root to run PostgreSQL as postgres",
    );
  const formation = await createFormation();
  const server = await startBenchServer(
    {},
    {
      database: { url: formation.url, drop: async () => undefined },
      key: randomBytes(32).toString("base64url"),
      dataKey: randomBytes(32).toString("base64"),
    },
  );
  let loading = true;
  const workers: Promise<void>[] = [];
  try {
    const { call, url, key } = server;
    const tenantId = (await call("licensd.tenant.v1.TenantService/CreateTenant", { name: "bench" })).tenant.id;
    const lic = "licensd.licensing.v1.LicensingService";
    const productId = (await call(`${lic}/CreateProduct`, { tenantId, code: "FOV", name: "Failover" })).product.id;
    await call("licensd.usage.v1.UsageService/CreateMeter", {
      tenantId,
      productId,
      metric: "calls",
      aggregation: "AGGREGATION_SUM",
    });
    const policyId = (await call(`${lic}/CreatePolicy`, { tenantId, productId, name: "std" })).policy.id;
    const customerId = (await call(`${lic}/CreateCustomer`, { tenantId, name: "Owner", email: "owner@example.com" }))
      .customer.id;
    const licenseKey = (
      (await call(`${lic}/CreateLicense`, { tenantId, policyId, customerId })) as unknown as {
        key: string;
      }
    ).key;

    const calls: Outcome[] = [];
    const post = async (procedure: string, body: unknown) => {
      const res = await fetch(`${url}/${procedure}`, {
        method: "POST",
        headers: { "content-type": "application/json", authorization: `Bearer ${key}` },
        body: JSON.stringify(body),
        signal: AbortSignal.timeout(10_000),
      });
      const text = await res.text();
      if (!res.ok) throw new Error(/"reason":"([A-Z_]+)"/.exec(text)?.[1] ?? `HTTP ${res.status}`);
    };
    let n = 0;
    for (let w = 0; w < WORKERS; w++)
      workers.push(
        (async () => {
          while (loading) {
            const i = n++;
            const start = Date.now();
            try {
              if (i % 2 === 0)
                await post(`${lic}/CreateCustomer`, { tenantId, name: `c-${i}`, email: `c${i}@example.com` });
              else
                await post("licensd.usage.v1.UsageService/RecordUsage", {
                  event: { licenseKey, metric: "calls", quantity: "1", idempotencyKey: `u-${i}` },
                });
              calls.push({ start, at: Date.now(), ok: true });
            } catch (err) {
              calls.push({ start, at: Date.now(), ok: false, reason: (err as Error).message });
              await sleep(50);
            }
          }
        })(),
      );
    const successesSince = (t: number) => calls.filter((c) => c.ok && c.at > t).length;

    const rows: {
      killed: string;
      firstFailure: number;
      promotion: number;
      firstSuccess: number;
      window: number;
      rejoin: number;
      failed: number;
      throughput: number;
    }[] = [];
    const reasons = new Map<string, number>();
    let steadyFrom = Date.now();
    for (let round = 1; round <= ROUNDS; round++) {
      // Steady load first: the calls of the last 2 s before the kill give the throughput it runs at.
      await waitFor(
        "steady load",
        () => Date.now() - steadyFrom > 3_000 && successesSince(steadyFrom) >= 50,
        Boolean,
        120_000,
      );
      const old = (await formation.primary())!;
      const standby = formation.nodes.find((x) => x.name !== old.name)!;
      const killedAt = Date.now();
      const throughput = successesSince(killedAt - 2_000) / 2;
      formation.kill(old);
      await waitFor(
        "the standby's promotion",
        () => formation.states().catch(() => []),
        (s) => s.some((x) => x.name === standby.name && ["wait_primary", "primary"].includes(x.reported)),
        120_000,
      );
      const promotedAt = Date.now();
      const after = () => calls.filter((c) => c.at > killedAt);
      const firstFailure = await waitFor("a failed call", () => after().find((c) => !c.ok), Boolean, 60_000, 20);
      // The first success of a call sent after the first failure (a call sent before it may still have been answered
      // by the old primary: with several clients, answers overtake each other).
      const recovered = await waitFor(
        "a successful call after the failover",
        () => after().find((c) => c.ok && c.start > firstFailure!.at),
        Boolean,
        120_000,
        20,
      );
      await waitFor("the load back", () => successesSince(recovered!.at) >= 20, Boolean, 60_000);
      const failed = after().filter((c) => !c.ok && c.at < recovered!.at);
      for (const f of failed) reasons.set(f.reason ?? "?", (reasons.get(f.reason ?? "?") ?? 0) + 1);

      // The old node rejoins as a synchronous standby (pg_rewind), as docs/operations.md's runbook says.
      const restartedAt = Date.now();
      formation.restart(old);
      await waitFor(
        "the old node back as a synchronous standby",
        () => formation.states().catch(() => []),
        (s) =>
          s
            .map((x) => `${x.reported}/${x.assigned}`)
            .sort()
            .join(",") === "primary/primary,secondary/secondary",
        300_000,
        200,
      );
      rows.push({
        killed: old.name,
        firstFailure: firstFailure!.at - killedAt,
        promotion: promotedAt - killedAt,
        firstSuccess: recovered!.at - killedAt,
        window: recovered!.at - firstFailure!.at,
        rejoin: Date.now() - restartedAt,
        failed: failed.length,
        throughput,
      });
      const r = rows.at(-1)!;
      console.log(
        `round ${round}: window ${(r.window / 1000).toFixed(2)} s, promotion ${(r.promotion / 1000).toFixed(2)} s, ` +
          `ratio ${(r.window / r.promotion).toFixed(2)}, rejoin ${(r.rejoin / 1000).toFixed(1)} s`,
      );
      steadyFrom = Date.now();
    }

    const s = (ms: number) => (ms / 1000).toFixed(2);
    const table = [
      "| round | killed | calls/s before | first failed call s | promotion (baseline) s | first success s | window s | window / promotion | failed calls | rejoin s |",
      "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
      ...rows.map(
        (r, i) =>
          `| ${i + 1} | ${r.killed} | ${r.throughput.toFixed(0)} | ${s(r.firstFailure)} | ${s(r.promotion)} | ` +
          `${s(r.firstSuccess)} | ${s(r.window)} | ${(r.window / r.promotion).toFixed(2)} | ${r.failed} | ` +
          `${(r.rejoin / 1000).toFixed(1)} |`,
      ),
      `| median | | ${median(rows.map((r) => r.throughput)).toFixed(0)} | ${s(median(rows.map((r) => r.firstFailure)))} | ` +
        `${s(median(rows.map((r) => r.promotion)))} | ${s(median(rows.map((r) => r.firstSuccess)))} | ` +
        `${s(median(rows.map((r) => r.window)))} | ${median(rows.map((r) => r.window / r.promotion)).toFixed(2)} | | ` +
        `${(median(rows.map((r) => r.rejoin)) / 1000).toFixed(1)} |`,
    ];
    const byReason = [...reasons].map(([k, v]) => `${k} × ${v}`).join(", ");
    const chart = await writeChart(
      "failover-window",
      barChart({
        title: "Failover: licensd's unavailability window beside pg_auto_failover's promotion",
        x: "round (the node killed)",
        y: "seconds from the kill",
        bars: rows.flatMap((r, i) => [
          { x: `${i + 1} (${r.killed})`, y: Number(s(r.promotion)), series: "promotion (baseline)" },
          { x: `${i + 1} (${r.killed})`, y: Number(s(r.window)), series: "licensd window" },
        ]),
      }),
    );
    return [
      "## Failover on pg_auto_failover (bench/failover.ts)",
      "",
      "A pg_auto_failover 2.0 formation on this machine (Debian PostgreSQL 15: monitor, primary, synchronous standby, all",
      "on 127.0.0.1; the monitor checks health every 1 s, calls a node dead after 2 s and waits at most 5 s for its",
      "demotion), one `licensd serve` on the formation's multi-host URL (`…?target_session_attrs=read-write`), under a",
      `closed-loop load of ${WORKERS} clients (CreateCustomer and RecordUsage in turn, one call at a time each, 50 ms pause`,
      `after a failed call). ${ROUNDS} rounds: the primary node is killed hard (SIGKILL to its \`pg_autoctl\` process group`,
      "and its postmaster), the standby is promoted, then the old node's `pg_autoctl` is started again and rejoins as a",
      "synchronous standby (pg_rewind; docs/operations.md's runbook), so each round kills the other node. Times from the",
      "kill. Baseline, measured in the same run: pg_auto_failover's own promotion time, from the kill to the monitor",
      "reporting the standby as the writable node (`wait_primary`; polled every 100 ms). The window is licensd's: the",
      "first failed call to the first successful answer to a call sent after it.",
      "",
      ...table,
      "",
      `![licensd's unavailability window and pg_auto_failover's promotion time per round](${chart})`,
      "",
      `Failed calls by reason: ${byReason || "none"} (UNAVAILABLE \`DATABASE_UNAVAILABLE\`, retryable, is the only`,
      "expected one). licensd's window is pg_auto_failover's: calls come back as soon as the standby is writable (a",
      "ratio a little below 1: the window opens with the first failed call, after the kill, and the monitor's state is",
      "read up to 0.1 s late). Most of the time is the monitor's: about 2 s to call the primary dead, then the 5 s",
      "demotion timeout it waits because a killed node cannot confirm its own demotion; with pg_auto_failover's default",
      "settings both are longer. The rejoin column is the old node's `pg_autoctl` start to both nodes reporting",
      "primary/secondary. test/cluster/failover.test.ts checks, under load on two instances, that no acknowledged write",
      "is lost and no call is answered INTERNAL.",
    ].join("\n");
  } finally {
    loading = false;
    await Promise.all(workers);
    await server.stop();
    await formation.destroy();
  }
}

import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { createReplicaPair, REPLICA_AVAILABLE, type ReplicaPair } from "../support/replica.js";
import { startServer, type ServerProcess } from "../support/server.js";
import { until } from "../support/wait.js";

/**
 * Read replicas end to end (docs/replicas.md): a real `licensd serve` on a PostgreSQL 15 primary with
 * LICENSD_DATABASE_REPLICA_URL naming a streaming replica of it (test/support/replica.ts), made to lag on purpose.
 */
let pair: ReplicaPair | undefined;
let server: ServerProcess | undefined;
const started: ServerProcess[] = [];

const log = (line: string) => process.stdout.write(`[replicas] ${line}\n`);
const LIC = "licensd.licensing.v1.LicensingService";

async function call(procedure: string, body: unknown, bearer = server!.superAdminKey) {
  const res = await fetch(`${server!.url}/${procedure}`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${bearer}` },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(10_000),
  });
  const json = (await res.json()) as Record<string, unknown>;
  if (!res.ok) throw new Error(`${procedure}: ${res.status} ${JSON.stringify(json)}`);
  return json as Record<string, Record<string, string> & Record<string, Record<string, string>[]>>;
}

/** One sample of the server's Prometheus text, or undefined when the series is absent. */
async function metric(name: string, labels: string): Promise<number | undefined> {
  const text = await (await fetch(`${server!.url}/metrics`)).text();
  const line = text.split("\n").find((l) => l.startsWith(`${name}{${labels}} `));
  if (line === undefined) return undefined;
  const value = line.slice(line.lastIndexOf(" ") + 1);
  return value === "+Inf" ? Number.POSITIVE_INFINITY : Number(value);
}
const replicaName = () => `127.0.0.1:${pair!.replica.port}`;
const servedBy = async (by: "replica" | "primary") =>
  (await metric("licensd_db_stale_ok_reads_total", `served_by="${by}"`)) ?? 0;
const serving = async () => (await metric("licensd_db_replica_serving", `replica="${replicaName()}"`)) === 1;
const lagSeconds = async () => (await metric("licensd_db_replica_lag_seconds", `replica="${replicaName()}"`))!;

interface World {
  tenantId: string;
  licenseId: string;
  key: string;
}

async function world(): Promise<World> {
  const tenantId = (await call("licensd.tenant.v1.TenantService/CreateTenant", { name: "Replicas" })).tenant!.id!;
  const productId = (await call(`${LIC}/CreateProduct`, { tenantId, code: "RPL", name: "Replicas" })).product!.id!;
  const policyId = (await call(`${LIC}/CreatePolicy`, { tenantId, productId, name: "std" })).policy!.id!;
  const customerId = (await call(`${LIC}/CreateCustomer`, { tenantId, name: "C", email: "c@example.com" })).customer!
    .id!;
  const created = await call(`${LIC}/CreateLicense`, { tenantId, policyId, customerId });
  return { tenantId, licenseId: created.license!.id!, key: created.key as unknown as string };
}

/** The license's status as ListLicenses shows it (and how many it lists). */
async function listedStatus(w: World): Promise<string | undefined> {
  const r = await call(`${LIC}/ListLicenses`, { tenantId: w.tenantId });
  const licenses = (r.licenses ?? []) as unknown as { id: string; status: string }[];
  return licenses.find((l) => l.id === w.licenseId)?.status;
}

const validate = async (w: World) =>
  (await call(`${LIC}/ValidateLicense`, { key: w.key })) as unknown as { valid?: boolean; code: string };

/** The keys of the first server: a later one on the same database must keep them (the data key seals secrets). */
let keys: Record<string, string> = {};

async function startOn(maxLagMs: number) {
  const t0 = Date.now();
  server = await startServer({
    databaseUrl: pair!.primary.url,
    env: {
      ...keys,
      LICENSD_DATABASE_REPLICA_URL: pair!.replica.url,
      LICENSD_DATABASE_REPLICA_MAX_LAG_MS: String(maxLagMs),
      LICENSD_LOG_LEVEL: "info",
    },
  });
  started.push(server);
  keys = { LICENSD_SUPER_ADMIN_KEY: server.superAdminKey, LICENSD_DATA_KEY: server.dataKey };
  await until("the replica to serve reads", serving, Boolean);
  log(`licensd with a ${maxLagMs} ms bound up and reading the replica in ${Date.now() - t0} ms`);
}

describe("read replica configuration", () => {
  it("a malformed replica URL is refused at start, naming the setting", async () => {
    await expect(
      startServer({ env: { LICENSD_DATABASE_REPLICA_URL: "postgres://127.0.0.1:notaport/app" } }),
    ).rejects.toThrow(/LICENSD_DATABASE_REPLICA_URL: database URL: bad host "127.0.0.1:notaport"/);
  });
});

describe.skipIf(!REPLICA_AVAILABLE)("read replicas on a streaming replica", () => {
  let w: World;
  beforeAll(async () => {
    const t0 = Date.now();
    pair = await createReplicaPair({ dbname: "licensd", log });
    log(`primary and replica up in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  }, 90_000);
  afterAll(async () => {
    for (const s of started) await s.stop("SIGKILL");
    await pair?.destroy();
  }, 60_000);
  // A test that fails while replay is paused must not leave the next one a replica that never catches up.
  afterEach(async () => {
    await pair?.resumeReplay().catch(() => undefined);
    await pair?.setApplyDelay(0).catch(() => undefined);
  });

  it("lists go to the fresh replica; after a suspension ValidateLicense answers from the primary at once, and past the bound lists fall back to the primary", async () => {
    // A bound of 3 s: short enough to pass on purpose, long enough that a loaded machine does not pass it by accident.
    await startOn(3_000);
    w = await world();
    // The replica is used: the list shows what the primary wrote (once replayed) and is counted as served by it.
    await until("the replica to replay the new license", () => pair!.caughtUp());
    const byReplica = await servedBy("replica");
    expect(await listedStatus(w)).toBe("LICENSE_STATUS_ACTIVE");
    expect(await listedStatus(w)).toBe("LICENSE_STATUS_ACTIVE");
    expect(await servedBy("replica")).toBeGreaterThanOrEqual(byReplica + 2);
    expect(await lagSeconds()).toBeLessThan(3);

    // The replica stops replaying; the suspension commits on the primary only.
    await pair!.pauseReplay();
    await call(`${LIC}/SuspendLicense`, { tenantId: w.tenantId, id: w.licenseId });
    // ValidateLicense never reads a replica: SUSPENDED at once, while the replica still has the license active.
    const v = await validate(w);
    expect(v.code).toBe("VALIDATION_CODE_SUSPENDED");
    expect(v.valid ?? false).toBe(false);
    expect(await pair!.psql(pair!.replica, `select status from licenses where id = '${w.licenseId}'`)).toBe("active");

    // Once the replica is more than the bound (3 s) behind, it serves nothing: lists read the primary.
    await until("the lagging replica to be skipped", serving, (s) => !s);
    expect(await lagSeconds()).toBeGreaterThanOrEqual(3);
    const [replicaBefore, primaryBefore] = [await servedBy("replica"), await servedBy("primary")];
    expect(await listedStatus(w)).toBe("LICENSE_STATUS_SUSPENDED");
    expect((await call(`${LIC}/GetLicense`, { tenantId: w.tenantId, id: w.licenseId })).license!.status).toBe(
      "LICENSE_STATUS_SUSPENDED",
    );
    expect(await servedBy("replica")).toBe(replicaBefore);
    expect(await servedBy("primary")).toBeGreaterThan(primaryBefore);
    // Logged once per change, not once per probe: the state lines alternate (a loaded machine may stall a probe past
    // the bound earlier too, which is a change of its own, logged as one).
    // (The server's log reaches this process through a pipe, after the answers above on their own sockets: wait for it.)
    const changes = await until(
      "the lagging state in the log",
      () => server!.output().match(/replica serving reads|replica skipped \(lagging\)/g) ?? [],
      (c) => c.at(-1) === "replica skipped (lagging)",
    );
    expect(changes.filter((c, i) => c === changes[i - 1])).toEqual([]);
    // Still on the replica: it really is behind.
    expect(await pair!.psql(pair!.replica, `select status from licenses where id = '${w.licenseId}'`)).toBe("active");

    // Replay resumes: the replica catches up and serves again, with the suspension.
    await pair!.resumeReplay();
    await until("the replica to serve again", serving, Boolean);
    const again = await servedBy("replica");
    expect(await listedStatus(w)).toBe("LICENSE_STATUS_SUSPENDED");
    expect(await servedBy("replica")).toBe(again + 1);
    await server!.stop();
  });

  it("within the bound a list may show the state before a write, and shows the write once the replica replays it", async () => {
    await startOn(30_000);
    // Every commit reaches the replica's data 6 s late; 6 s is under the 30 s bound, so the replica keeps serving.
    await pair!.setApplyDelay(6_000);
    await call(`${LIC}/ReinstateLicense`, { tenantId: w.tenantId, id: w.licenseId });
    const acked = Date.now();
    expect((await validate(w)).valid).toBe(true);
    const byReplica = await servedBy("replica");
    // The documented staleness: the list still shows the suspension, served by the replica.
    expect(await listedStatus(w)).toBe("LICENSE_STATUS_SUSPENDED");
    expect(await servedBy("replica")).toBe(byReplica + 1);
    // The measured lag never under-reports: the replica has not replayed a write acknowledged at `acked`.
    const scrapedAt = Date.now();
    expect(await lagSeconds()).toBeGreaterThanOrEqual((scrapedAt - acked) / 1000);
    expect(await serving()).toBe(true);
    // Once replayed, the same list shows the reinstated license.
    await until(
      "the replica to replay the reinstatement",
      () => listedStatus(w),
      (s) => s === "LICENSE_STATUS_ACTIVE",
    );
    log(`the reinstatement listed ${Date.now() - acked} ms after it was acknowledged (apply delay 6000 ms)`);
    expect(await servedBy("replica")).toBeGreaterThan(byReplica + 1);
    await pair!.setApplyDelay(0);
  });

  it("a replica killed: reads keep working from the primary without an error; back again: used again", async () => {
    pair!.killReplica();
    // Whether the probe or the read notices first, no read fails: a replica failure is answered by the primary.
    for (let i = 0; i < 10; i++) expect(await listedStatus(w)).toBe("LICENSE_STATUS_ACTIVE");
    await until("the dead replica to be skipped", serving, (s) => !s);
    expect(await lagSeconds()).toBe(Number.POSITIVE_INFINITY);
    const primaryBefore = await servedBy("primary");
    expect(await listedStatus(w)).toBe("LICENSE_STATUS_ACTIVE");
    expect(await servedBy("primary")).toBe(primaryBefore + 1);
    expect(server!.output()).toMatch(/replica skipped \(unreachable\)/);

    await pair!.startReplica();
    await until("the restarted replica to serve again", serving, Boolean);
    const byReplica = await servedBy("replica");
    expect(await listedStatus(w)).toBe("LICENSE_STATUS_ACTIVE");
    expect(await servedBy("replica")).toBe(byReplica + 1);
    expect(server!.output()).toMatch(/replica serving reads/);
  });
});

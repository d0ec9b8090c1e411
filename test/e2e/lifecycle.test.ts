import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { ROOT, freePort, run, startServer } from "../support/server.js";

const licensd = (args: string[], env: Record<string, string>) => run(process.execPath, [path.join(ROOT, "bin/licensd.js"), ...args], { env });

async function createTenant(url: string, key: string, name: string) {
  const res = await fetch(`${url}/licensd.tenant.v1.TenantService/CreateTenant`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${key}` },
    body: JSON.stringify({ name }),
  });
  expect(res.status).toBe(200);
  return ((await res.json()) as { tenant: { id: string } }).tenant.id;
}

async function getTenant(url: string, key: string, id: string) {
  const res = await fetch(`${url}/licensd.tenant.v1.TenantService/GetTenant`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${key}` },
    body: JSON.stringify({ id }),
  });
  return { status: res.status, body: (await res.json()) as { tenant?: { name: string } } };
}

const childPids = (pid: number) =>
  execFileSync("ps", ["-o", "pid=", "--ppid", String(pid)], { encoding: "utf8" }).split("\n").map((l) => l.trim()).filter((l) => l !== "");
const children = (pid: number) => childPids(pid).length;
/** The node flags a process runs with (from its command line). */
const nodeFlags = (pid: number | string) => readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").filter((a) => a.startsWith("--"));

describe("serve", () => {
  it("stops cleanly on SIGTERM and never logs a secret", async () => {
    const server = await startServer();
    // bin/licensd.js restarts itself in place with AsyncLocalStorage on async context
    // frames (no promise hooks): same process id, so this SIGTERM reaches the server.
    expect(nodeFlags(server.child.pid!)).toContain("--experimental-async-context-frame");
    await createTenant(server.url, server.superAdminKey, "Logged Co");
    expect(await server.stop("SIGTERM")).toBe(0);
    const out = server.output();
    expect(out).toContain('"msg":"licensd stopped"');
    expect(out).toContain('"procedure":"licensd.tenant.v1.TenantService/CreateTenant"');
    expect(out).not.toContain(server.superAdminKey);
    await server.dropDatabase();
  });

  it("runs --workers 2 processes on one port and stops them all", async () => {
    const server = await startServer({ args: ["--workers", "2"] });
    const ids = await Promise.all(Array.from({ length: 20 }, (_, i) => createTenant(server.url, server.superAdminKey, `Worker Co ${i}`)));
    expect(new Set(ids).size).toBe(20);
    const pid = server.child.pid!;
    expect(children(pid)).toBeGreaterThanOrEqual(2);
    const workers = childPids(pid).filter((c) => readFileSync(`/proc/${c}/cmdline`, "utf8").includes("licensd.js"));
    expect(workers.length).toBeGreaterThanOrEqual(2);
    for (const worker of workers) expect(nodeFlags(worker)).toContain("--experimental-async-context-frame");
    // /healthz answers as soon as the first worker listens; wait for both to say so.
    const listening = () => new Set(server.output().match(/"pid":(\d+)[^\n]*"msg":"licensd listening"/g)).size;
    for (let i = 0; i < 300 && listening() < 2; i++) await new Promise((r) => setTimeout(r, 100));
    expect(listening()).toBe(2);
    expect(await server.stop("SIGTERM")).toBe(0);
    // Workers that cannot start (here: a different data key) stop the primary instead of looping.
    const broken = await licensd(["serve", "--workers", "2"], { ...server.env, LICENSD_DATA_KEY: Buffer.alloc(32, 1).toString("base64") });
    expect(broken.code).toBe(1);
    expect(broken.stdout).toContain("a worker failed to start");
    await server.dropDatabase();
  });

  it("refuses insecure production settings with a message per variable", async () => {
    const res = await licensd(["serve"], { LICENSD_ENV: "production", LICENSD_DATABASE_URL: "", LICENSD_SUPER_ADMIN_KEY: "short", LICENSD_DATA_KEY: "", LICENSD_DATA_DIR: mkdtempSync(path.join(os.tmpdir(), "licensd-prod-")) });
    expect(res.code).toBe(2);
    for (const name of ["LICENSD_DATABASE_URL", "LICENSD_SUPER_ADMIN_KEY", "LICENSD_DATA_KEY"]) expect(res.stderr).toContain(name);
    // NODE_ENV=production without LICENSD_ENV is production too: no generated secrets, no embedded database.
    const node = await licensd(["serve"], { NODE_ENV: "production", LICENSD_ENV: "", LICENSD_DATABASE_URL: "", LICENSD_SUPER_ADMIN_KEY: "", LICENSD_DATA_KEY: "", LICENSD_DATA_DIR: mkdtempSync(path.join(os.tmpdir(), "licensd-prod-")) });
    expect(node.code).toBe(2);
    for (const name of ["LICENSD_DATABASE_URL", "LICENSD_SUPER_ADMIN_KEY", "LICENSD_DATA_KEY"]) expect(node.stderr).toContain(`${name}: required in production`);
    // A human-made super-admin key that decodes to 32 bytes is refused, with the rule it breaks.
    const human = await licensd(["serve"], { NODE_ENV: "production", LICENSD_ENV: "", LICENSD_DATABASE_URL: "postgres://127.0.0.1:5432/none", LICENSD_SUPER_ADMIN_KEY: "Password1234567890Password1234567890abcdefg", LICENSD_DATA_KEY: Buffer.alloc(32, 3).toString("base64") });
    expect(human.code).toBe(2);
    expect(human.stderr).toContain("LICENSD_SUPER_ADMIN_KEY: must be at least 32 random bytes written as hex, base64 or base64url");
    expect(human.stderr).toContain("zxcvbn's strength estimate must reach 10^35 guesses");
  });

  it("serves TLS with ALPN for HTTP/1.1 and HTTP/2 on one port", async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), "licensd-tls-"));
    const cert = path.join(dir, "cert.pem");
    const key = path.join(dir, "key.pem");
    execFileSync("openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", key, "-out", cert], { stdio: "ignore" });
    const port = await freePort();
    const server = await startServer({ env: { LICENSD_TLS_CERT: cert, LICENSD_TLS_KEY: key, LICENSD_PORT: String(port) }, healthUrl: `https://127.0.0.1:${port}`, caFile: cert });
    for (const [flag, version] of [["--http1.1", "1.1"], ["--http2", "2"]]) {
      const res = await run("curl", ["-s", "--cacert", cert, flag, "-w", "\n%{http_version}", "-X", "POST", `https://127.0.0.1:${port}/grpc.health.v1.Health/Check`, "-H", "content-type: application/json", "-d", "{}"]);
      const [body, v] = res.stdout.split("\n");
      expect(JSON.parse(body)).toEqual({ status: "SERVING" });
      expect(v).toBe(version);
    }
    expect(await server.stop()).toBe(0);
    await server.dropDatabase();
  });
});

describe("migrate", () => {
  it("applies migrations once when several instances start together", async () => {
    const { createTestDatabase, query } = await import("../support/database.js");
    const db = await createTestDatabase();
    const env = { LICENSD_DATABASE_URL: db.url, LICENSD_DATA_DIR: mkdtempSync(path.join(os.tmpdir(), "licensd-migrate-")) };
    const runs = await Promise.all([licensd(["migrate"], env), licensd(["migrate"], env), licensd(["migrate"], env)]);
    for (const r of runs) expect(r.code, r.stderr).toBe(0);
    const applied = await query(db.url, "select name from mikro_orm_migrations");
    const { migrationsList } = await import("../../src/migrations/index.js");
    expect(applied.map((r) => r.name)).toEqual(migrationsList.map((m) => m.name));
    expect(await query(db.url, "select 1 from information_schema.tables where table_name = 'api_keys'")).toHaveLength(1);
    await db.drop();
  });
});

describe("the embedded default (no database URL)", () => {
  it("starts its own PostgreSQL, keeps data across restarts and adopts a server orphaned by SIGKILL", async () => {
    const dataDir = mkdtempSync(path.join(os.tmpdir(), "licensd-embedded-"));
    const first = await startServer({ embedded: true, dataDir });
    expect(first.output()).toContain('"embeddedDatabase":true');
    const id = await createTenant(first.url, first.superAdminKey, "Embedded Co");
    expect(await first.stop("SIGTERM")).toBe(0);
    expect(readFileSync(path.join(dataDir, "pg", "PG_VERSION"), "utf8").trim()).toBe("18");

    const same = { LICENSD_SUPER_ADMIN_KEY: first.superAdminKey, LICENSD_DATA_KEY: first.dataKey };
    const second = await startServer({ embedded: true, dataDir, env: same });
    expect((await getTenant(second.url, first.superAdminKey, id)).body.tenant?.name).toBe("Embedded Co");
    await second.stop("SIGKILL"); // leaves PostgreSQL running, orphaned

    const third = await startServer({ embedded: true, dataDir, env: same });
    expect(third.output()).toContain("adopting it");
    expect((await getTenant(third.url, first.superAdminKey, id)).body.tenant?.name).toBe("Embedded Co");
    expect(await third.stop("SIGTERM")).toBe(0);
    const pidFile = path.join(dataDir, "pg", "postmaster.pid");
    expect(() => readFileSync(pidFile)).toThrow(); // PostgreSQL was stopped with it
    const wrongKey = await licensd(["serve"], { LICENSD_DATA_DIR: dataDir, LICENSD_SUPER_ADMIN_KEY: first.superAdminKey, LICENSD_DATA_KEY: Buffer.alloc(32, 9).toString("base64"), LICENSD_PORT: "0" });
    expect(wrongKey.code).toBe(1);
    expect(wrongKey.stderr).toContain("LICENSD_DATA_KEY is not the key that sealed it");
    expect(() => readFileSync(pidFile)).toThrow(); // a failed start stops the database it started
  });
});

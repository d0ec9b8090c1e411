import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { describe, expect, it } from "vitest";
import { Health, HealthCheckResponse_ServingStatus as S } from "../../gen/ts/health/v1/health_pb.js";
import { AuditService } from "../../gen/ts/licensd/audit/v1/audit_service_pb.js";
import { bearer } from "../support/app.js";
import { ROOT, freePort, run, startServer } from "../support/server.js";

const licensd = (args: string[], env: Record<string, string>) =>
  run(process.execPath, [path.join(ROOT, "bin/licensd.js"), ...args], { env });

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
  execFileSync("ps", ["-o", "pid=", "--ppid", String(pid)], { encoding: "utf8" })
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l !== "");
const children = (pid: number) => childPids(pid).length;
/** The node flags a process runs with (from its command line). */
const nodeFlags = (pid: number | string) =>
  readFileSync(`/proc/${pid}/cmdline`, "utf8")
    .split("\0")
    .filter((a) => a.startsWith("--"));

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

  it("with LICENSD_SHUTDOWN_DELAY_MS, SIGTERM turns health NOT_SERVING while calls are still answered", async () => {
    // A balancer that follows health checks takes the instance out during the delay, before the port closes.
    const server = await startServer({ env: { LICENSD_SHUTDOWN_DELAY_MS: "3000" } });
    const exit = server.stop("SIGTERM");
    let health = 0;
    for (let i = 0; i < 100 && health !== 503; i++) {
      health = (await fetch(`${server.url}/healthz`)).status;
      if (health !== 503) await new Promise((r) => setTimeout(r, 20));
    }
    expect(health).toBe(503);
    // Health already says NOT_SERVING; the port still takes calls and answers them.
    const id = await createTenant(server.url, server.superAdminKey, "Late Co");
    expect((await getTenant(server.url, server.superAdminKey, id)).status).toBe(200);
    expect(await exit).toBe(0);
    await server.dropDatabase();
  });

  it("runs --workers 2 processes on one port and stops them all", async () => {
    const server = await startServer({ args: ["--workers", "2"] });
    const ids = await Promise.all(
      Array.from({ length: 20 }, (_, i) => createTenant(server.url, server.superAdminKey, `Worker Co ${i}`)),
    );
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
    const broken = await licensd(["serve", "--workers", "2"], {
      ...server.env,
      LICENSD_DATA_KEY: Buffer.alloc(32, 1).toString("base64"),
    });
    expect(broken.code).toBe(1);
    expect(broken.stdout).toContain("a worker failed to start");
    await server.dropDatabase();
  });

  it("refuses insecure production settings with a message per variable", async () => {
    const res = await licensd(["serve"], {
      LICENSD_ENV: "production",
      LICENSD_DATABASE_URL: "",
      LICENSD_SUPER_ADMIN_KEY: "short",
      LICENSD_DATA_KEY: "",
      LICENSD_DATA_DIR: mkdtempSync(path.join(os.tmpdir(), "licensd-prod-")),
    });
    expect(res.code).toBe(2);
    for (const name of ["LICENSD_DATABASE_URL", "LICENSD_SUPER_ADMIN_KEY", "LICENSD_DATA_KEY"])
      expect(res.stderr).toContain(name);
    // NODE_ENV=production without LICENSD_ENV is production too: no generated secrets, no embedded database.
    const node = await licensd(["serve"], {
      NODE_ENV: "production",
      LICENSD_ENV: "",
      LICENSD_DATABASE_URL: "",
      LICENSD_SUPER_ADMIN_KEY: "",
      LICENSD_DATA_KEY: "",
      LICENSD_DATA_DIR: mkdtempSync(path.join(os.tmpdir(), "licensd-prod-")),
    });
    expect(node.code).toBe(2);
    for (const name of ["LICENSD_DATABASE_URL", "LICENSD_SUPER_ADMIN_KEY", "LICENSD_DATA_KEY"])
      expect(node.stderr).toContain(`${name}: required in production`);
    // A human-made super-admin key that decodes to 32 bytes is refused, with the rule it breaks.
    const human = await licensd(["serve"], {
      NODE_ENV: "production",
      LICENSD_ENV: "",
      LICENSD_DATABASE_URL: "postgres://127.0.0.1:5432/none",
      LICENSD_SUPER_ADMIN_KEY: "Password1234567890Password1234567890abcdefg",
      LICENSD_DATA_KEY: Buffer.alloc(32, 3).toString("base64"),
    });
    expect(human.code).toBe(2);
    expect(human.stderr).toContain(
      "LICENSD_SUPER_ADMIN_KEY: must be at least 32 random bytes written as hex, base64 or base64url",
    );
    expect(human.stderr).toContain("zxcvbn's strength estimate must reach 10^35 guesses");
  });

  it("serves TLS with ALPN for HTTP/1.1 and HTTP/2 on one port", async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), "licensd-tls-"));
    const cert = path.join(dir, "cert.pem");
    const key = path.join(dir, "key.pem");
    execFileSync(
      "openssl",
      [
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=127.0.0.1",
        "-addext",
        "subjectAltName=IP:127.0.0.1",
        "-keyout",
        key,
        "-out",
        cert,
      ],
      { stdio: "ignore" },
    );
    const port = await freePort();
    const server = await startServer({
      env: { LICENSD_TLS_CERT: cert, LICENSD_TLS_KEY: key, LICENSD_PORT: String(port) },
      healthUrl: `https://127.0.0.1:${port}`,
      caFile: cert,
    });
    for (const [flag, version] of [
      ["--http1.1", "1.1"],
      ["--http2", "2"],
    ]) {
      const res = await run("curl", [
        "-s",
        "--cacert",
        cert,
        flag,
        "-w",
        "\n%{http_version}",
        "-X",
        "POST",
        `https://127.0.0.1:${port}/grpc.health.v1.Health/Check`,
        "-H",
        "content-type: application/json",
        "-d",
        "{}",
      ]);
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
    const env = {
      LICENSD_DATABASE_URL: db.url,
      LICENSD_DATA_DIR: mkdtempSync(path.join(os.tmpdir(), "licensd-migrate-")),
    };
    const runs = await Promise.all([licensd(["migrate"], env), licensd(["migrate"], env), licensd(["migrate"], env)]);
    for (const r of runs) expect(r.code, r.stderr).toBe(0);
    const applied = await query(db.url, "select name from mikro_orm_migrations");
    const { migrationsList } = await import("../../src/migrations/index.js");
    expect(applied.map((r) => r.name)).toEqual(migrationsList.map((m) => m.name));
    expect(await query(db.url, "select 1 from information_schema.tables where table_name = 'api_keys'")).toHaveLength(
      1,
    );
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
    const wrongKey = await licensd(["serve"], {
      LICENSD_DATA_DIR: dataDir,
      LICENSD_SUPER_ADMIN_KEY: first.superAdminKey,
      LICENSD_DATA_KEY: Buffer.alloc(32, 9).toString("base64"),
      LICENSD_PORT: "0",
    });
    expect(wrongKey.code).toBe(1);
    expect(wrongKey.stderr).toContain("it was sealed under another key than LICENSD_DATA_KEY");
    expect(() => readFileSync(pidFile)).toThrow(); // a failed start stops the database it started
  });
});

describe("the embedded database belongs to the server that started it", () => {
  const postmasterPid = (dataDir: string) =>
    Number(readFileSync(path.join(dataDir, "pg", "postmaster.pid"), "utf8").split("\n")[0]);
  const postmasterPort = (dataDir: string) =>
    Number(readFileSync(path.join(dataDir, "pg", "postmaster.pid"), "utf8").split("\n")[3]);
  const alive = (pid: number) => {
    try {
      process.kill(pid, 0);
      return true;
    } catch {
      return false;
    }
  };
  /** Polls `condition` every 100 ms until it holds, for at most `seconds` (a bound, not a speed goal). */
  async function until(what: string, condition: () => Promise<boolean> | boolean, seconds = 60) {
    for (let i = 0; i < seconds * 10; i++) {
      if (await condition()) return;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`timed out waiting until ${what}`);
  }
  const healthz = (url: string) =>
    fetch(`${url}/healthz`).then(
      (r) => r.status,
      () => 0,
    );

  it("a command or second server next to the server uses its database and never stops it; the guest takes over when the owner is gone", async () => {
    const dataDir = mkdtempSync(path.join(os.tmpdir(), "licensd-guest-"));
    const ownerFile = path.join(dataDir, "embedded-db.owner");
    const owner = () => JSON.parse(readFileSync(ownerFile, "utf8")) as { pid: number; command: string };
    // No keys given: development generates them on the first start and announces the key there only.
    const noKeys = { LICENSD_SUPER_ADMIN_KEY: "", LICENSD_DATA_KEY: "" };
    const server = await startServer({ embedded: true, dataDir, env: noKeys });
    const secretsFile = path.join(dataDir, "secrets.json");
    const superAdminKey = (JSON.parse(readFileSync(secretsFile, "utf8")) as { superAdminKey: string }).superAdminKey;
    expect(server.output()).toContain("DEVELOPMENT MODE: secrets were generated");
    expect(server.output()).toContain(`super-admin key:  ${superAdminKey}`);
    const same = { LICENSD_DATA_DIR: dataDir, ...noKeys };
    const pid = postmasterPid(dataDir);
    expect(owner()).toMatchObject({ pid: server.child.pid, command: "serve" });

    const migrate = await licensd(["migrate"], same);
    expect(migrate.code, migrate.stderr).toBe(0);
    expect(migrate.stdout).toContain("using the embedded PostgreSQL of a running licensd");
    // Through the API: these need no database at all.
    const rotate = await licensd(["keys", "rotate", "--url", server.url], same);
    expect(rotate.code, rotate.stderr).toBe(0);

    expect(postmasterPid(dataDir)).toBe(pid);
    expect(alive(pid)).toBe(true);
    expect(await healthz(server.url)).toBe(200);
    const id = await createTenant(server.url, superAdminKey, "Still Up Co");
    expect((await getTenant(server.url, superAdminKey, id)).body.tenant?.name).toBe("Still Up Co");

    // A second server on the same data dir is a guest; when the owner stops (and stops its
    // postmaster), the guest takes the database over and serves again.
    const guest = await startServer({ embedded: true, dataDir, env: noKeys });
    expect(guest.output()).toContain("using the embedded PostgreSQL of a running licensd");
    // Loaded, not generated: no banner, one line saying where the secrets are, never the key.
    expect(guest.output()).not.toContain("DEVELOPMENT MODE");
    // (Logged once the server is up: it can come a moment after the line startServer waits for.)
    const loaded = `"file":${JSON.stringify(secretsFile)},"msg":"development secrets loaded"`;
    await until("the secrets line", () => guest.output().includes(loaded), 15);
    expect(guest.output()).not.toContain(superAdminKey);
    expect(await server.stop("SIGTERM")).toBe(0);
    expect(alive(pid)).toBe(false);
    await until("the guest owns the database", () => existsSync(ownerFile) && owner().pid === guest.child.pid, 120);
    // The record is written just before the line is logged, and the log reaches us through a pipe.
    await until("the guest says it takes over", () => guest.output().includes("taking it over"), 30);
    // Its health may not have seen the gap yet: wait for the restart itself, then for health.
    await until(
      "the guest restarted the database",
      () => guest.output().includes("embedded PostgreSQL restarted"),
      120,
    );
    await until("the guest serves again", async () => (await healthz(guest.url)) === 200, 120);
    expect((await getTenant(guest.url, superAdminKey, id)).body.tenant?.name).toBe("Still Up Co");
    const taken = postmasterPid(dataDir);
    expect(await guest.stop("SIGTERM")).toBe(0);
    expect(alive(taken)).toBe(false);
    expect(existsSync(ownerFile)).toBe(false);

    // A record naming a live process that is not its owner (a reused pid: same pid, another
    // start time) is stale. Nothing running: migrate starts the database, and stops what it started.
    writeFileSync(ownerFile, JSON.stringify({ pid: process.pid, started: "1", command: "serve", since: "" }));
    const alone = await licensd(["migrate"], same);
    expect(alone.code, alone.stderr).toBe(0);
    expect(alone.stdout).toContain("embedded PostgreSQL started");
    expect(existsSync(path.join(dataDir, "pg", "postmaster.pid"))).toBe(false);
    expect(existsSync(ownerFile)).toBe(false);
  }, 300_000);

  it("with --workers, the primary owns and restarts the postmaster; the workers ride it out", async () => {
    const dataDir = mkdtempSync(path.join(os.tmpdir(), "licensd-workers-embedded-"));
    const server = await startServer({ embedded: true, dataDir, args: ["--workers", "2"] });
    const listening = () => new Set(server.output().match(/"pid":(\d+)[^\n]*"msg":"licensd listening"/g)).size;
    await until("both workers listen", () => listening() === 2);
    const workers = childPids(server.child.pid!).filter((c) =>
      readFileSync(`/proc/${c}/cmdline`, "utf8").includes("licensd.js"),
    );
    const before = await createTenant(server.url, server.superAdminKey, "Workers Before Co");
    const first = postmasterPid(dataDir);
    process.kill(first, "SIGKILL");
    await until(
      "a new postmaster runs",
      () =>
        existsSync(path.join(dataDir, "pg", "postmaster.pid")) &&
        postmasterPid(dataDir) !== first &&
        alive(postmasterPid(dataDir)),
      120,
    );
    await until(
      "the workers serve again",
      async () =>
        (await healthz(server.url)) === 200 &&
        (await getTenant(server.url, server.superAdminKey, before)).status === 200,
      120,
    );
    expect((await getTenant(server.url, server.superAdminKey, before)).body.tenant?.name).toBe("Workers Before Co");
    const after = await createTenant(server.url, server.superAdminKey, "Workers After Co");
    expect((await getTenant(server.url, server.superAdminKey, after)).body.tenant?.name).toBe("Workers After Co");
    // Same workers: the outage did not cost a process.
    expect(childPids(server.child.pid!).filter((c) => workers.includes(c))).toHaveLength(workers.length);
    const second = postmasterPid(dataDir);
    expect(await server.stop("SIGTERM")).toBe(0);
    expect(alive(second)).toBe(false);
  }, 300_000);

  it("serve restarts its postmaster when it dies: NOT_SERVING meanwhile, then SERVING with the data intact; SIGTERM still stops both", async () => {
    const dataDir = mkdtempSync(path.join(os.tmpdir(), "licensd-supervised-"));
    // A long keep-alive: a tail then hears a new entry only through the LISTEN connection.
    const server = await startServer({ embedded: true, dataDir, env: { LICENSD_AUDIT_KEEPALIVE_MS: "600000" } });
    const before = await createTenant(server.url, server.superAdminKey, "Before Co");
    const health = createClient(Health, createGrpcTransport({ baseUrl: server.url }));
    const watching = new AbortController();
    const seen: string[] = [];
    const watch = (async () => {
      for await (const res of health.watch({ service: "" }, { signal: watching.signal })) seen.push(S[res.status]);
    })().catch(() => undefined);
    await until("the watch reports SERVING", () => seen.includes("SERVING"));

    // Freeze licensd, kill the postmaster and hold its port: it cannot come back until released.
    const first = postmasterPid(dataDir);
    const port = postmasterPort(dataDir);
    process.kill(server.child.pid!, "SIGSTOP");
    process.kill(first, "SIGKILL"); // a zombie until licensd, frozen, reaps it: wait for its port instead
    const squatter = net.createServer((socket) => socket.destroy());
    await until(
      "the port is taken over",
      () =>
        new Promise<boolean>((resolve) => {
          squatter.once("error", () => resolve(false));
          squatter.listen(port, "127.0.0.1", () => resolve(true));
        }),
    );
    process.kill(server.child.pid!, "SIGCONT");

    await until("/healthz answers 503", async () => (await healthz(server.url)) === 503);
    await until("the watch reports NOT_SERVING", () => seen.includes("NOT_SERVING"));
    expect((await health.check({ service: "" })).status).toBe(S.NOT_SERVING);
    await until("a restart was tried", () => server.output().includes("embedded PostgreSQL did not start; retrying"));

    await new Promise<void>((resolve) => squatter.close(() => resolve()));
    await until("/healthz answers 200 again", async () => (await healthz(server.url)) === 200, 120);
    await until("the watch reports SERVING again", () => seen.lastIndexOf("SERVING") > seen.indexOf("NOT_SERVING"));
    expect((await health.check({ service: "" })).status).toBe(S.SERVING);
    const second = postmasterPid(dataDir);
    expect(second).not.toBe(first);
    expect(server.output()).toContain("embedded PostgreSQL restarted");

    // The write from before and one from after are both there.
    expect((await getTenant(server.url, server.superAdminKey, before)).body.tenant?.name).toBe("Before Co");
    const after = await createTenant(server.url, server.superAdminKey, "After Co");
    expect((await getTenant(server.url, server.superAdminKey, after)).body.tenant?.name).toBe("After Co");

    // The audit feed's LISTEN connection is back: a live tail hears the next entry.
    const audit = createClient(
      AuditService,
      createGrpcTransport({ baseUrl: server.url, interceptors: bearer(server.superAdminKey) }),
    );
    const tailing = new AbortController();
    const heard = (async () => {
      for await (const res of audit.tailAuditEvents({ tenantId: after, afterSeq: 1n }, { signal: tailing.signal })) {
        if (res.message.case === "event") return res.message.value.type;
      }
      return undefined;
    })();
    await new Promise((r) => setTimeout(r, 500)); // let the tail read its (empty) backlog and wait for news
    const update = await fetch(`${server.url}/licensd.tenant.v1.TenantService/UpdateTenant`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${server.superAdminKey}` },
      body: JSON.stringify({ tenant: { id: after, name: "After Co 2" }, updateMask: "name" }),
    });
    expect(update.status).toBe(200);
    const bound = setTimeout(() => tailing.abort(), 60_000);
    expect(await heard).toBe("tenant.updated");
    clearTimeout(bound);
    tailing.abort();

    // A deliberate stop is not fought: licensd exits cleanly and its postmaster with it.
    watching.abort();
    await watch;
    expect(await server.stop("SIGTERM")).toBe(0);
    expect(alive(second)).toBe(false);
    expect(existsSync(path.join(dataDir, "pg", "postmaster.pid"))).toBe(false);
    expect(server.output().split("the embedded PostgreSQL died; restarting it").length - 1).toBe(1);
  }, 300_000);
});

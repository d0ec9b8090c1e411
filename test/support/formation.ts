import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { chmodSync, chownSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { freePort } from "./server.js";
import { until } from "./wait.js";

/**
 * A pg_auto_failover formation built from Debian's PostgreSQL 15 binaries (package
 * postgresql-15-auto-failover, installed by scripts/ensure-test-deps.sh): a monitor, a
 * primary and a synchronous standby, each a `pg_autoctl … --run` process of the `postgres`
 * user on its own loopback port and data directory under one temp directory. No Docker.
 */
const BIN = "/usr/lib/postgresql/15/bin";
const PG_CTL = `${BIN}/pg_ctl`;

/** Whether this machine can build a formation (pg_autoctl installed, running as root to become `postgres`). */
export const FORMATION_AVAILABLE =
  existsSync("/usr/bin/pg_autoctl") &&
  existsSync("/usr/lib/postgresql/15/lib/pgautofailover.so") &&
  existsSync(PG_CTL) &&
  process.getuid?.() === 0 &&
  hasUser("postgres");

export interface FormationNode {
  name: string;
  port: number;
  pgdata: string;
}

export interface NodeState {
  name: string;
  port: number;
  reported: string;
  assigned: string;
}

export interface Formation {
  /** The formation's multi-host URL as `pg_autoctl show uri` prints it, with `user` put in. */
  url: string;
  monitorPort: number;
  /** The monitor's URL, as `pg_autoctl … --monitor` takes it. */
  monitorUrl: string;
  nodes: FormationNode[];
  /**
   * An executable that runs `pg_autoctl "$@"` as the `postgres` user with this formation's XDG directories (where
   * pg_autoctl finds each node's configuration and state), as `sudo -u postgres pg_autoctl` does on a server.
   */
  pgAutoctl: string;
  /** The monitor's view of every node (reported and assigned state). */
  states(): Promise<NodeState[]>;
  /** The node the monitor reports as primary (or wait_primary) now, if any. */
  primary(): Promise<FormationNode | undefined>;
  /** Runs `text` with psql on a node (as `postgres`, database `app`) and returns its unaligned output. */
  psql(node: FormationNode, text: string): Promise<string>;
  /** Hard stop of a node: SIGKILL to its pg_autoctl process group and its postmaster. */
  kill(node: FormationNode): void;
  /**
   * Starts a node's `pg_autoctl run` again (as its service manager would after a crash or a reboot): a killed primary
   * rejoins as a secondary, rewound with pg_rewind. Stopped and cleaned up like the others.
   */
  restart(node: FormationNode): void;
  /** The last output of a node's current pg_autoctl process (for a failure message). */
  output(node: FormationNode): string;
  /** pg_autoctl stop of every node, bounded; then SIGKILL whatever is left and remove the directories. */
  destroy(): Promise<void>;
}

interface Running {
  pgdata: string;
  child: ChildProcess;
  output: () => string;
}

export interface FormationOptions {
  /** The database the nodes create (default `app`). */
  dbname?: string;
  /** Monitor settings that make it notice a dead node and fail over within a few seconds (default true). */
  fastFailover?: boolean;
  log?: (line: string) => void;
}

export async function createFormation(opts: FormationOptions = {}): Promise<Formation> {
  const dbname = opts.dbname ?? "app";
  const log = opts.log ?? (() => undefined);
  const uid = Number(execFileSync("id", ["-u", "postgres"]).toString().trim());
  const gid = Number(execFileSync("id", ["-g", "postgres"]).toString().trim());
  const base = mkdtempSync(path.join(os.tmpdir(), "licensd-formation-"));
  chownSync(base, uid, gid);
  // pg_autoctl keeps its config, state and pid files under the XDG directories: one formation, one tree.
  const env: Record<string, string> = {
    PATH: `${BIN}:/usr/bin:/bin`,
    HOME: base,
    XDG_CONFIG_HOME: path.join(base, "config"),
    XDG_DATA_HOME: path.join(base, "data"),
    XDG_RUNTIME_DIR: path.join(base, "run"),
    PG_CONFIG: `${BIN}/pg_config`,
    LANG: "C.UTF-8",
  };
  const running: Running[] = [];
  const pgdata = (name: string) => path.join(base, name);
  // If this process dies without cleaning up (SIGKILL of a test worker), a watchdog kills the formation and removes it.
  const watchdog = spawn(
    "bash",
    [
      "-c",
      `while kill -0 ${process.pid} 2>/dev/null; do sleep 1; done
       for f in "$0"/*.pgid; do [ -f "$f" ] && kill -KILL -- "-$(cat "$f")" 2>/dev/null; done
       for f in "$0"/*/postmaster.pid; do [ -f "$f" ] && kill -KILL "$(head -1 "$f")" 2>/dev/null; done
       rm -rf "$0"`,
      base,
    ],
    { detached: true, stdio: "ignore" },
  );
  watchdog.unref();

  const asPostgres = (args: string[], timeoutMs = 30_000) =>
    new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve, reject) => {
      const child = spawn(args[0]!, args.slice(1), { uid, gid, env, cwd: base, timeout: timeoutMs });
      let stdout = "";
      let stderr = "";
      child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
      child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
      child.on("error", reject);
      child.on("close", (code) => resolve({ code, stdout, stderr }));
    });

  const start = (name: string, args: string[]) => {
    // Its own process group: a hard stop kills the supervisor and every service it runs.
    const child = spawn("pg_autoctl", args, { uid, gid, env, cwd: base, detached: true, stdio: "pipe" });
    let out = "";
    child.stdout!.on("data", (d: Buffer) => (out += d.toString()));
    child.stderr!.on("data", (d: Buffer) => (out += d.toString()));
    running.push({ pgdata: pgdata(name), child, output: () => out });
    // One file per process group: the watchdog kills every one (a restarted node has had several).
    if (child.pid) writeFileSync(path.join(base, `${name}-${child.pid}.pgid`), String(child.pid));
  };

  // Whatever happens to the test process, no postgres or pg_autoctl outlives it.
  const killAll = () => {
    for (const r of running) {
      try {
        if (r.child.pid && r.child.exitCode === null && r.child.signalCode === null)
          process.kill(-r.child.pid, "SIGKILL");
      } catch {}
      killPostmaster(r.pgdata);
    }
  };
  process.once("exit", killAll);

  const monitorPort = await freePort();
  const monitorUrl = `postgres://autoctl_node@127.0.0.1:${monitorPort}/pg_auto_failover?sslmode=disable`;
  const common = ["--hostname", "127.0.0.1", "--auth", "trust", "--no-ssl", "--pgctl", PG_CTL];
  const nodes: FormationNode[] = [];

  const psqlOn = async (port: number, db: string, text: string) => {
    const r = await asPostgres([`${BIN}/psql`, "-h", "127.0.0.1", "-p", String(port), "-d", db, "-XAtqc", text]);
    if (r.code !== 0) throw new Error(`psql on ${port}: ${r.stderr.trim()}`);
    return r.stdout.trim();
  };

  const states = async (): Promise<NodeState[]> => {
    const out = await psqlOn(
      monitorPort,
      "pg_auto_failover",
      "select nodename, nodeport, reportedstate, goalstate from pgautofailover.node order by nodeid",
    );
    return out
      .split("\n")
      .filter(Boolean)
      .map((line) => {
        const [name, port, reported, assigned] = line.split("|");
        return { name: name!, port: Number(port), reported: reported!, assigned: assigned! };
      });
  };

  // `pg_autoctl` as the operator runs it on a node: as `postgres`, with the formation's configuration directories.
  const pgAutoctl = path.join(base, "pg_autoctl");
  const envArgs = Object.entries(env)
    .map(([k, v]) => `${k}=${JSON.stringify(v)}`)
    .join(" ");
  writeFileSync(
    pgAutoctl,
    `#!/bin/sh\ncd ${JSON.stringify(base)}\n` +
      `exec setpriv --reuid=${uid} --regid=${gid} --init-groups env ${envArgs} pg_autoctl "$@"\n`,
  );
  chmodSync(pgAutoctl, 0o755);

  const formation: Formation = {
    url: "",
    monitorPort,
    monitorUrl,
    nodes,
    pgAutoctl,
    states,
    async primary() {
      const s = await states().catch(() => []);
      // wait_primary: a primary whose standby is gone (it no longer waits for one to commit).
      const p = s.find((n) => ["primary", "wait_primary"].includes(n.reported) && n.reported === n.assigned);
      return p && nodes.find((n) => n.name === p.name);
    },
    psql: (node, text) => psqlOn(node.port, dbname, text),
    kill(node) {
      for (const r of running.filter((x) => x.pgdata === node.pgdata)) {
        try {
          if (r.child.pid && r.child.exitCode === null && r.child.signalCode === null)
            process.kill(-r.child.pid, "SIGKILL");
        } catch {}
      }
      killPostmaster(node.pgdata);
    },
    restart(node) {
      start(node.name, ["run", "--pgdata", node.pgdata]);
    },
    output(node) {
      return running.findLast((x) => x.pgdata === node.pgdata)?.output() ?? "";
    },
    async destroy() {
      process.removeListener("exit", killAll);
      // Standbys first, the monitor last; each bounded, then nothing is left to chance.
      for (const r of [...running].reverse()) {
        if (r.child.exitCode === null) await asPostgres(["pg_autoctl", "stop", "--pgdata", r.pgdata], 10_000);
      }
      const deadline = Date.now() + 10_000;
      while (running.some((r) => r.child.exitCode === null && r.child.signalCode === null) && Date.now() < deadline)
        await new Promise((res) => setTimeout(res, 100));
      killAll();
      rmSync(base, { recursive: true, force: true });
      if (watchdog.exitCode === null) watchdog.kill("SIGKILL");
    },
  };

  try {
    log(`monitor on ${monitorPort}`);
    start("monitor", [
      "create",
      "monitor",
      "--pgdata",
      pgdata("monitor"),
      "--pgport",
      String(monitorPort),
      ...common,
      "--run",
    ]);
    await until(
      "the pg_auto_failover monitor",
      () => psqlOn(monitorPort, "pg_auto_failover", "select 1").catch(() => ""),
      (v) => v === "1",
      60_000,
      200,
    );
    if (opts.fastFailover ?? true) {
      // pg_auto_failover's defaults wait ~20 s before calling a node dead, then up to 30 s for its demotion: seconds here.
      for (const setting of [
        "pgautofailover.health_check_period = 1000",
        "pgautofailover.health_check_timeout = 1000",
        "pgautofailover.health_check_max_retries = 1",
        "pgautofailover.health_check_retry_delay = 500",
        "pgautofailover.node_considered_unhealthy_timeout = 2000",
        "pgautofailover.primary_demote_timeout = '5s'",
      ]) {
        await psqlOn(monitorPort, "pg_auto_failover", `alter system set ${setting}`);
      }
      await psqlOn(monitorPort, "pg_auto_failover", "select pg_reload_conf()");
    }

    for (const name of ["node1", "node2"]) {
      const port = await freePort();
      const node = { name, port, pgdata: pgdata(name) };
      nodes.push(node);
      log(`${name} on ${port}`);
      start(name, [
        "create",
        "postgres",
        "--pgdata",
        node.pgdata,
        "--pgport",
        String(port),
        ...common,
        "--name",
        name,
        "--dbname",
        dbname,
        "--monitor",
        monitorUrl,
        "--run",
      ]);
      const goal = name === "node1" ? ["single"] : ["secondary"];
      await until(
        `${name} to join the formation`,
        async () => {
          // The standby's pg_basebackup waits for a spread checkpoint on an idle primary: ask for it now.
          if (name !== "node1") await psqlOn(nodes[0]!.port, dbname, "checkpoint").catch(() => "");
          return (await states().catch(() => [])).find((s) => s.name === name);
        },
        (s) => s !== undefined && goal.includes(s.reported) && s.reported === s.assigned,
        90_000,
        500,
      );
    }
    await until(
      "primary and synchronous standby",
      states,
      (s) => s.map((n) => `${n.reported}/${n.assigned}`).join(",") === "primary/primary,secondary/secondary",
      60_000,
      300,
    );
    const uri = await asPostgres([
      "pg_autoctl",
      "show",
      "uri",
      "--formation",
      "default",
      "--pgdata",
      pgdata("monitor"),
    ]);
    if (uri.code !== 0) throw new Error(`pg_autoctl show uri: ${uri.stderr}`);
    // pg_autoctl prints no user (libpq would take the OS user's name); sslmode=prefer asks for TLS these nodes lack.
    formation.url = uri.stdout
      .trim()
      .replace("postgres://", "postgres://postgres@")
      .replace("sslmode=prefer", "sslmode=disable");
    return formation;
  } catch (err) {
    const logs = running.map((r) => `--- ${path.basename(r.pgdata)}\n${r.output().slice(-3000)}`).join("\n");
    await formation.destroy().catch(() => undefined);
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

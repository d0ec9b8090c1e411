import { randomBytes } from "node:crypto";
import { readFileSync, writeFileSync, existsSync } from "node:fs";
import os from "node:os";
import pg from "pg";

export const BENCH_SERVER_URL = process.env.LICENSD_BENCH_DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/test";

/** A fresh database on the benchmark PostgreSQL server. */
export async function benchDatabase(): Promise<{ url: string; drop(): Promise<void> }> {
  const name = `licensd_bench_${randomBytes(4).toString("hex")}`;
  const admin = async (sql: string) => {
    const c = new pg.Client({ connectionString: BENCH_SERVER_URL });
    await c.connect();
    await c.query(sql);
    await c.end();
  };
  await admin(`create database ${name}`);
  const url = new URL(BENCH_SERVER_URL);
  url.pathname = `/${name}`;
  return { url: url.toString(), drop: () => admin(`drop database ${name} with (force)`) };
}

/** p-th percentile (0–100) of numbers. */
export function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
}

export function machine(): string {
  const cpu =
    readFileSync("/proc/cpuinfo", "utf8").match(/model name\s*:\s*(.*)/)?.[1] ?? os.cpus()[0]?.model ?? "unknown";
  return `${os.cpus().length} × ${cpu}, ${Math.round(os.totalmem() / 2 ** 30)} GiB, ${os.type()} ${os.release()}, Node ${process.version}`;
}

/**
 * Replaces one section of BENCHMARKS.md (between `<!-- bench:NAME -->` markers) and keeps
 * the others, so benchmarks can be run one at a time.
 */
export function writeSection(file: string, name: string, body: string, opts: { top?: boolean } = {}) {
  const start = `<!-- bench:${name} -->`;
  const end = `<!-- /bench:${name} -->`;
  let text = existsSync(file) ? readFileSync(file, "utf8") : "";
  if (!text.startsWith("# Benchmarks")) {
    text = [
      "# Benchmarks",
      "",
      "Written by `npm run bench` (bench/). Each section comes from one run on the machine it names;",
      "compare the **ratios**, taken within that run against a baseline measured beside it, not the",
      "absolute numbers: these machines are small and noisy, and the load generator shares their cores.",
      "",
    ].join("\n");
  }
  const section = `${start}\n${body.trim()}\n${end}`;
  const i = text.indexOf(start);
  const j = text.indexOf(end);
  if (i >= 0 && j > i) text = text.slice(0, i) + section + text.slice(j + end.length);
  else if (opts.top) {
    // After the introduction: before the first section.
    const first = text.indexOf("<!-- bench:");
    text =
      first >= 0 ? `${text.slice(0, first)}${section}\n\n${text.slice(first)}` : `${text.trimEnd()}\n\n${section}\n`;
  } else text = `${text.trimEnd()}\n\n${section}\n`;
  writeFileSync(file, text);
}

/**
 * A `licensd serve` (the built bin/licensd.js) on a fresh benchmark database; always stopped and dropped by `stop()` or
 * at exit. With `peer`, a second instance on that server's database and keys (its `stop()` leaves the database to the
 * peer).
 */
export async function startBenchServer(
  env: Record<string, string> = {},
  peer?: { database: { url: string; drop(): Promise<void> }; key: string; dataKey: string },
) {
  const { spawn } = await import("node:child_process");
  const { mkdtempSync } = await import("node:fs");
  const net = await import("node:net");
  const path = await import("node:path");
  const database = peer?.database ?? (await benchDatabase());
  const port = await new Promise<number>((resolve) => {
    const s = net.createServer().listen(0, "127.0.0.1", () => {
      const { port } = s.address() as import("node:net").AddressInfo;
      s.close(() => resolve(port));
    });
  });
  const key = peer?.key ?? randomBytes(32).toString("base64url");
  const dataKey = peer?.dataKey ?? randomBytes(32).toString("base64");
  // BENCH_SERVER_LOG_LEVEL: e.g. "info" (one line per RPC, with its handler time; with BENCH_SERVER_STDOUT=1)
  // BENCH_SERVER_NODE_ARGS: node flags that NODE_OPTIONS refuses, e.g. "--perf-basic-prof" (for perf record)
  const nodeArgs = (process.env.BENCH_SERVER_NODE_ARGS ?? "").split(" ").filter(Boolean);
  const child = spawn(
    process.execPath,
    [...nodeArgs, path.resolve(import.meta.dirname, "..", "bin/licensd.js"), "serve"],
    {
      env: {
        ...process.env,
        LICENSD_PORT: String(port),
        LICENSD_DATABASE_URL: database.url,
        LICENSD_SUPER_ADMIN_KEY: key,
        LICENSD_DATA_KEY: dataKey,
        LICENSD_LOG_LEVEL: process.env.BENCH_SERVER_LOG_LEVEL ?? "warn",
        LICENSD_DATA_DIR: mkdtempSync(path.join(os.tmpdir(), "licensd-bench-")),
        // e.g. BENCH_SERVER_NODE_OPTIONS="--cpu-prof --cpu-prof-dir=/tmp/prof" to profile the server under load
        ...(process.env.BENCH_SERVER_NODE_OPTIONS ? { NODE_OPTIONS: process.env.BENCH_SERVER_NODE_OPTIONS } : {}),
        ...env,
      },
      // BENCH_SERVER_STDOUT=1: the server's stdout too (e.g. with BENCH_SERVER_NODE_ARGS="--trace-gc")
      stdio: ["ignore", process.env.BENCH_SERVER_STDOUT ? "inherit" : "ignore", "inherit"],
    },
  );
  process.once("exit", () => child.kill("SIGKILL"));
  const url = `http://127.0.0.1:${port}`;
  for (
    let i = 0;
    i < 600 &&
    !(await fetch(`${url}/healthz`).then(
      (r) => r.ok,
      () => false,
    ));
    i++
  )
    await new Promise((r) => setTimeout(r, 100));
  const post = (procedure: string, body: unknown) =>
    fetch(`${url}/${procedure}`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${key}` },
      body: JSON.stringify(body),
    });
  return {
    url,
    key,
    dataKey,
    database,
    /** The server's process id (the launcher restarts itself in place, so it is also the server's). */
    pid: child.pid!,
    /**
     * A Connect JSON call as the super-admin (retried once: a load generator may have left a kept-alive socket stale).
     */
    async call(procedure: string, body: unknown) {
      const res = await post(procedure, body).catch(() => post(procedure, body));
      const json = (await res.json()) as Record<string, { id: string }>;
      if (!res.ok) throw new Error(`${procedure}: ${JSON.stringify(json)}`);
      return json;
    },
    async stop() {
      if (child.exitCode === null)
        await new Promise<void>((resolve) => {
          child.once("exit", () => resolve());
          child.kill("SIGTERM");
        });
      if (!peer) await database.drop();
    },
  };
}

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
  const cpu = readFileSync("/proc/cpuinfo", "utf8").match(/model name\s*:\s*(.*)/)?.[1] ?? os.cpus()[0]?.model ?? "unknown";
  return `${os.cpus().length} × ${cpu}, ${Math.round(os.totalmem() / 2 ** 30)} GiB, ${os.type()} ${os.release()}, Node ${process.version}`;
}

/**
 * Replaces one section of BENCHMARKS.md (between `<!-- bench:NAME -->` markers) and keeps
 * the others, so benchmarks can be run one at a time.
 */
export function writeSection(file: string, name: string, body: string) {
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
  text = i >= 0 && j > i ? text.slice(0, i) + section + text.slice(j + end.length) : `${text.trimEnd()}\n\n${section}\n`;
  writeFileSync(file, text);
}

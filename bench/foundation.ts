// Foundation load benchmark on loopback: wrk (HTTP/1.1, Connect JSON) and h2load (h2c,
// gRPC) against the real `licensd serve`, on a fresh database of the local PostgreSQL.
// Figures are reported as ratios to a baseline measured in the same run.
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, writeFileSync } from "node:fs";
import { benchDatabase } from "./support.ts";
import net from "node:net";
import os from "node:os";
import path from "node:path";

const ROOT = path.resolve(import.meta.dirname, "..");
const DURATION = process.env.BENCH_DURATION ?? "8s";
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 32);
const H2_REQUESTS = Number(process.env.BENCH_H2_REQUESTS ?? 40000);
/** One data key for the run: both servers open the signing key it sealed. */
const DATA_KEY = randomBytes(32).toString("base64");
const work = mkdtempSync(path.join(os.tmpdir(), "licensd-bench-"));

interface Result {
  name: string;
  rps: number;
  p50ms?: number;
  p99ms?: number;
  errors: number;
}

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, "127.0.0.1", () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

async function startServer(databaseUrl: string, workers: number, superAdminKey: string) {
  const port = await freePort();
  const child: ChildProcess = spawn(
    process.execPath,
    [path.join(ROOT, "bin/licensd.js"), "serve", "--workers", String(workers)],
    {
      env: {
        ...process.env,
        LICENSD_PORT: String(port),
        LICENSD_DATABASE_URL: databaseUrl,
        LICENSD_SUPER_ADMIN_KEY: superAdminKey,
        LICENSD_DATA_KEY: DATA_KEY,
        LICENSD_DATA_DIR: mkdtempSync(path.join(work, "data-")),
        LICENSD_LOG_LEVEL: "warn",
      },
      stdio: ["ignore", "ignore", "inherit"],
    },
  );
  const url = `http://127.0.0.1:${port}`;
  for (let i = 0; i < 600; i++) {
    if (
      await fetch(`${url}/healthz`).then(
        (r) => r.ok,
        () => false,
      )
    ) {
      return {
        url,
        port,
        stop: () =>
          new Promise<void>((resolve) => {
            child.once("exit", () => resolve());
            child.kill("SIGTERM");
          }),
      };
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  child.kill("SIGKILL");
  throw new Error("server did not start");
}

/** wrk over HTTP/1.1 keep-alive: a Connect JSON POST. */
function wrk(name: string, url: string, body: string, headers: Record<string, string>): Result {
  const script = path.join(work, `${name.replace(/\W+/g, "_")}.lua`);
  const lines = [
    `wrk.method = "POST"`,
    `wrk.body = ${JSON.stringify(body)}`,
    ...Object.entries({ "content-type": "application/json", ...headers }).map(
      ([k, v]) => `wrk.headers[${JSON.stringify(k)}] = ${JSON.stringify(v)}`,
    ),
    `function done(summary, latency, requests)`,
    `  io.write(string.format("RESULT %f %f %f %d\\n", summary.requests / (summary.duration / 1e6), latency:percentile(50) / 1000, latency:percentile(99) / 1000, summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))`,
    `end`,
  ];
  writeFileSync(script, lines.join("\n"));
  const out = execFileSync(
    "wrk",
    ["-t", "2", "-c", String(CONNECTIONS), "-d", DURATION, "--latency", "-s", script, url],
    { encoding: "utf8" },
  );
  const m = /RESULT (\S+) (\S+) (\S+) (\d+)/.exec(out);
  if (!m) throw new Error(`wrk output not understood:\n${out}`);
  return { name, rps: Number(m[1]), p50ms: Number(m[2]), p99ms: Number(m[3]), errors: Number(m[4]) };
}

/** h2load over h2c with prior knowledge: a gRPC unary call (length-prefixed protobuf body). */
function h2load(name: string, url: string, message: Buffer, headers: Record<string, string>): Result {
  const frame = Buffer.alloc(5 + message.length);
  frame.writeUInt32BE(message.length, 1);
  message.copy(frame, 5);
  const data = path.join(work, `${name.replace(/\W+/g, "_")}.bin`);
  writeFileSync(data, frame);
  const args = [
    "-n",
    String(H2_REQUESTS),
    "-c",
    String(Math.min(CONNECTIONS, 16)),
    "-m",
    "8",
    "-t",
    "2",
    "-d",
    data,
    "-H",
    "content-type: application/grpc",
    "-H",
    "te: trailers",
  ];
  for (const [k, v] of Object.entries(headers)) args.push("-H", `${k}: ${v}`);
  const out = execFileSync("h2load", [...args, url], { encoding: "utf8" });
  const rps = /finished in [\d.]+m?s, ([\d.]+) req\/s/.exec(out);
  const status = /status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx/.exec(out);
  const reqs = /requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed, (\d+) errored/.exec(out);
  const lat = /time for request:\s+(\S+)\s+(\S+)\s+(\S+)/.exec(out);
  if (!rps || !status || !reqs) throw new Error(`h2load output not understood:\n${out}`);
  const toMs = (s: string) =>
    s.endsWith("us")
      ? Number(s.slice(0, -2)) / 1000
      : s.endsWith("ms")
        ? Number(s.slice(0, -2))
        : Number(s.slice(0, -1)) * 1000;
  return {
    name,
    rps: Number(rps[1]),
    p50ms: lat ? toMs(lat[3]) : undefined,
    errors: Number(reqs[2]) + Number(reqs[3]) + Number(status[4]),
  };
}

/** A protobuf message with one string field number 1 (HealthCheckRequest.service, GetTenantRequest.id). */
function stringField1(value: string): Buffer {
  const bytes = Buffer.from(value);
  return Buffer.concat([Buffer.from([0x0a, bytes.length]), bytes]);
}

async function grpcStatusOk(url: string, procedure: string, message: Buffer, key: string) {
  // One checked call before measuring, so the figures are for successful calls.
  const frame = Buffer.alloc(5 + message.length);
  frame.writeUInt32BE(message.length, 1);
  message.copy(frame, 5);
  const data = path.join(work, "check.bin");
  writeFileSync(data, frame);
  const out = execFileSync(
    "curl",
    [
      "-s",
      "-o",
      "/dev/null",
      "-w",
      "%{http_code}",
      "--http2-prior-knowledge",
      "-H",
      "content-type: application/grpc",
      "-H",
      "te: trailers",
      "-H",
      `authorization: Bearer ${key}`,
      "--data-binary",
      `@${data}`,
      "-D",
      "-",
      `${url}/${procedure}`,
    ],
    { encoding: "utf8" },
  );
  if (!/grpc-status: 0/.test(out) && !out.includes("200")) throw new Error(`gRPC ${procedure} failed: ${out}`);
}

export async function run(): Promise<string> {
  const key = randomBytes(32).toString("base64url");
  const database = await benchDatabase();
  const databaseUrl = database.url;
  const results: Result[] = [];

  const one = await startServer(databaseUrl, 1, key);
  const created = (await (
    await fetch(`${one.url}/licensd.tenant.v1.TenantService/CreateTenant`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${key}` },
      body: JSON.stringify({ name: "Bench Vendor" }),
    })
  ).json()) as { tenant: { id: string } };
  const tenantId = created.tenant.id;
  const auth = { authorization: `Bearer ${key}` };
  await grpcStatusOk(one.url, "licensd.tenant.v1.TenantService/GetTenant", stringField1(tenantId), key);

  console.log("measuring --workers 1 …");
  results.push(
    wrk("Health.Check · Connect JSON · HTTP/1.1 · 1 worker", `${one.url}/grpc.health.v1.Health/Check`, "{}", {}),
  );
  results.push(
    wrk(
      "GetTenant · Connect JSON · HTTP/1.1 · 1 worker",
      `${one.url}/licensd.tenant.v1.TenantService/GetTenant`,
      JSON.stringify({ id: tenantId }),
      auth,
    ),
  );
  results.push(
    h2load("Health.Check · gRPC · h2c · 1 worker", `${one.url}/grpc.health.v1.Health/Check`, Buffer.alloc(0), {}),
  );
  results.push(
    h2load(
      "GetTenant · gRPC · h2c · 1 worker",
      `${one.url}/licensd.tenant.v1.TenantService/GetTenant`,
      stringField1(tenantId),
      auth,
    ),
  );
  await one.stop();

  console.log("measuring --workers 2 …");
  const two = await startServer(databaseUrl, 2, key);
  results.push(
    wrk("Health.Check · Connect JSON · HTTP/1.1 · 2 workers", `${two.url}/grpc.health.v1.Health/Check`, "{}", {}),
  );
  results.push(
    wrk(
      "GetTenant · Connect JSON · HTTP/1.1 · 2 workers",
      `${two.url}/licensd.tenant.v1.TenantService/GetTenant`,
      JSON.stringify({ id: tenantId }),
      auth,
    ),
  );
  await two.stop();

  await database.drop();

  const by = (name: string) => results.find((r) => r.name === name)!;
  const ratio = (a: string, b: string) => (by(a).rps / by(b).rps).toFixed(2);
  const fmt = (n: number | undefined) => (n === undefined ? "–" : n.toFixed(2));
  if (results.some((r) => r.errors > 0)) throw new Error("some requests failed: the figures are not valid");
  return [
    "## Foundation: requests/s (bench/foundation.ts)",
    "",
    `- load: wrk -t2 -c${CONNECTIONS} -d${DURATION} (HTTP/1.1 keep-alive); h2load -n${H2_REQUESTS} -c${Math.min(CONNECTIONS, 16)} -m8 (h2c, gRPC). The load generator shares the machine's cores with licensd and PostgreSQL.`,
    "- server: `licensd serve`, LICENSD_LOG_LEVEL=warn (per-request info logs off), database pool 10.",
    "",
    "| scenario | req/s | p50 ms | p99 ms | errors |",
    "|---|---:|---:|---:|---:|",
    ...results.map((r) => `| ${r.name} | ${Math.round(r.rps)} | ${fmt(r.p50ms)} | ${fmt(r.p99ms)} | ${r.errors} |`),
    "",
    "Ratios:",
    "",
    "| ratio | value |",
    "|---|---:|",
    `| GetTenant ÷ Health.Check, Connect JSON, 1 worker (an authenticated DB read vs. no I/O) | ${ratio("GetTenant · Connect JSON · HTTP/1.1 · 1 worker", "Health.Check · Connect JSON · HTTP/1.1 · 1 worker")} |`,
    `| GetTenant ÷ Health.Check, gRPC h2c, 1 worker | ${ratio("GetTenant · gRPC · h2c · 1 worker", "Health.Check · gRPC · h2c · 1 worker")} |`,
    `| gRPC h2c ÷ Connect JSON HTTP/1.1, Health.Check | ${ratio("Health.Check · gRPC · h2c · 1 worker", "Health.Check · Connect JSON · HTTP/1.1 · 1 worker")} |`,
    `| 2 workers ÷ 1 worker, Health.Check, Connect JSON | ${ratio("Health.Check · Connect JSON · HTTP/1.1 · 2 workers", "Health.Check · Connect JSON · HTTP/1.1 · 1 worker")} |`,
    `| 2 workers ÷ 1 worker, GetTenant, Connect JSON | ${ratio("GetTenant · Connect JSON · HTTP/1.1 · 2 workers", "GetTenant · Connect JSON · HTTP/1.1 · 1 worker")} |`,
  ].join("\n");
}

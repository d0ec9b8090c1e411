// Activation benchmarks: Heartbeat and Activate (of an already-activated machine: the
// steady state of an agent restarting) against Health.Check on one server, alternating;
// verifyLease against raw Ed25519 verify, in process.
import { spawn, execFileSync } from "node:child_process";
import { generateKeyPairSync, randomBytes, sign, verify } from "node:crypto";
import { mkdtempSync, writeFileSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { ED25519_PREFIX, encodeLicenseFile } from "../src/licensing/license-file.js";
import { verifyLease } from "../src/sdk/lease.js";
import { benchDatabase } from "./support.ts";

const ROOT = path.resolve(import.meta.dirname, "..");
const REQUESTS = Number(process.env.BENCH_H2_REQUESTS ?? 10000);
const work = mkdtempSync(path.join(os.tmpdir(), "licensd-bench-act-"));

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, "127.0.0.1", () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

function rate(url: string, procedure: string, body: string): number {
  const data = path.join(work, `${procedure.replace(/\W/g, "_")}.json`);
  writeFileSync(data, body);
  const out = execFileSync("h2load", ["--h1", "-n", String(REQUESTS), "-c", "16", "-t", "2", "-d", data, "-H", "content-type: application/json", `${url}/${procedure}`], { encoding: "utf8" });
  const reqs = /requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed, (\d+) errored/.exec(out)!;
  const status = /status codes: (\d+) 2xx/.exec(out)!;
  if (Number(reqs[2]) + Number(reqs[3]) > 0 || Number(status[1]) !== REQUESTS) throw new Error(`${procedure}: failures\n${out}`);
  return Number(/finished in [\d.]+m?s, ([\d.]+) req\/s/.exec(out)![1]);
}

const median3 = (f: () => number) => [f(), f(), f()].sort((a, b) => a - b)[1];

export async function run(): Promise<string> {
  const database = await benchDatabase();
  const port = await freePort();
  const key = randomBytes(32).toString("base64url");
  const child = spawn(process.execPath, [path.join(ROOT, "bin/licensd.js"), "serve"], {
    env: { ...process.env, LICENSD_PORT: String(port), LICENSD_DATABASE_URL: database.url, LICENSD_SUPER_ADMIN_KEY: key, LICENSD_DATA_KEY: randomBytes(32).toString("base64"), LICENSD_LOG_LEVEL: "warn", LICENSD_DATA_DIR: mkdtempSync(path.join(work, "data-")) },
    stdio: ["ignore", "ignore", "inherit"],
  });
  const url = `http://127.0.0.1:${port}`;
  for (let i = 0; i < 600 && !(await fetch(`${url}/healthz`).then((r) => r.ok, () => false)); i++) await new Promise((r) => setTimeout(r, 100));
  const call = async (procedure: string, body: unknown) =>
    (await (await fetch(`${url}/${procedure}`, { method: "POST", headers: { "content-type": "application/json", authorization: `Bearer ${key}` }, body: JSON.stringify(body) })).json()) as Record<string, { id: string }>;
  const tenantId = (await call("licensd.tenant.v1.TenantService/CreateTenant", { name: "bench" })).tenant.id;
  const productId = (await call("licensd.licensing.v1.LicensingService/CreateProduct", { tenantId, code: "ACT", name: "Bench" })).product.id;
  const policyId = (await call("licensd.licensing.v1.LicensingService/CreatePolicy", { tenantId, productId, name: "pro", floating: true, maxMachines: 10 })).policy.id;
  const customerId = (await call("licensd.licensing.v1.LicensingService/CreateCustomer", { tenantId, name: "Bench", email: "bench@example.com" })).customer.id;
  const licenseKey = ((await call("licensd.licensing.v1.LicensingService/CreateLicense", { tenantId, policyId, customerId })) as unknown as { key: string }).key;
  const machine = JSON.stringify({ key: licenseKey, fingerprint: "bench-host" });
  await call("licensd.activation.v1.ActivationService/Activate", JSON.parse(machine));

  const health = median3(() => rate(url, "grpc.health.v1.Health/Check", "{}"));
  const heartbeat = median3(() => rate(url, "licensd.activation.v1.ActivationService/Heartbeat", machine));
  const activate = median3(() => rate(url, "licensd.activation.v1.ActivationService/Activate", machine));
  await new Promise<void>((resolve) => (child.once("exit", () => resolve()), child.kill("SIGTERM")));
  await database.drop();

  const { publicKey, privateKey } = generateKeyPairSync("ed25519");
  const raw = publicKey.export({ format: "der", type: "spki" }).subarray(12);
  const payload = { v: 1, typ: "lease", license_id: "lic_b", tenant_id: "ten_b", machine_id: "mach_b", fingerprint: "fp", product: { code: "ACT", name: "B" }, status: "active", plan: "pro", features: ["reports"], entitlements: {}, agents: {}, max_machines: 10, max_users: 0, issued_at: new Date().toISOString(), expires_at: new Date(Date.now() + 86_400_000).toISOString(), kid: "k" };
  const token = encodeLicenseFile(ED25519_PREFIX, payload as never, (input) => sign(null, input, privateKey));
  const [, b64, sig] = token.split(".");
  const input = Buffer.from(`${ED25519_PREFIX}.${b64}`);
  const signature = Buffer.from(sig, "base64url");
  const keys = [{ kid: "k", publicKey: raw }];
  if (!verifyLease(token, keys, { fingerprint: "fp" }).valid) throw new Error("lease does not verify");
  const ops = (f: () => unknown) => {
    let n = 0;
    const start = performance.now();
    while (performance.now() - start < 300) for (let i = 0; i < 100; i++, n++) f();
    return n / ((performance.now() - start) / 1000);
  };
  const lease: number[] = [];
  const ed: number[] = [];
  for (let i = 0; i < 7; i++) (lease.push(ops(() => verifyLease(token, keys, { fingerprint: "fp" }))), ed.push(ops(() => verify(null, input, publicKey, signature))));
  const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[3];
  const r = (n: number) => Math.round(n).toLocaleString("en");
  return [
    "## Activation (bench/activation.ts)",
    "",
    `Connect JSON over HTTP/1.1, h2load -n${REQUESTS} -c16, medians of 3 runs, one \`licensd serve\`. Heartbeat and Activate write the machine row and sign a fresh Ed25519 lease; every request here targets one license and one machine, so the row lock serialises them (the worst case, not a fleet of agents).`,
    "",
    "| RPC | req/s | ÷ Health.Check |",
    "|---|---:|---:|",
    `| Health.Check (baseline) | ${r(health)} | 1.00 |`,
    `| Heartbeat | ${r(heartbeat)} | ${(heartbeat / health).toFixed(2)} |`,
    `| Activate (machine already active) | ${r(activate)} | ${(activate / health).toFixed(2)} |`,
    "",
    `verifyLease (SDK) ${r(med(lease))} ops/s vs raw Ed25519 verify ${r(med(ed))} ops/s: ${(med(lease) / med(ed)).toFixed(2)} (goal ≥ 0.5: ${med(lease) / med(ed) >= 0.5 ? "met" : "NOT met"}). ConnectLease with 10,000 streams: not built yet.`,
  ].join("\n");
}

import { createClient, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { timestampFromDate, timestampDate } from "@bufbuild/protobuf/wkt";
import pg from "pg";
import { Bucket, UsageService } from "../gen/ts/licensd/usage/v1/usage_service_pb.js";
import { percentile, startBenchServer } from "./support.ts";
const server = await startBenchServer();
const { call } = server;
const tenantId = (await call("licensd.tenant.v1.TenantService/CreateTenant", { name: "bench" })).tenant.id;
const productId = (await call("licensd.licensing.v1.LicensingService/CreateProduct", { tenantId, code: "USG", name: "Agents", features: [{ name: "tokens", kind: "FEATURE_KIND_LIMIT", compose: "COMPOSE_STRATEGY_SUM" }] })).product.id;
const meterId = (await call("licensd.usage.v1.UsageService/CreateMeter", { tenantId, productId, metric: "tokens", aggregation: "AGGREGATION_SUM" })).meter.id;
const policyId = (await call("licensd.licensing.v1.LicensingService/CreatePolicy", { tenantId, productId, name: "pro", entitlements: [{ feature: "tokens", limit: "1000000000000" }] })).policy.id;
const customerId = (await call("licensd.licensing.v1.LicensingService/CreateCustomer", { tenantId, name: "Bench", email: "bench@example.com" })).customer.id;
const big = ((await call("licensd.licensing.v1.LicensingService/CreateLicense", { tenantId, policyId, customerId })) as any).license.id;
const pgc = new pg.Client({ connectionString: server.database.url }); await pgc.connect();
const end = new Date(Math.floor(Date.now() / 3_600_000) * 3_600_000);
const from = new Date(end.getTime() - 30 * 86_400_000);
await pgc.query(`insert into usage_rollups (tenant_id, license_id, meter_id, hour, agent_id, total, events, max, min, latest, latest_ts)
  select $1, $2, $3, $4::timestamptz + h * interval '1 hour', 'agent-' || a, 1000 + h, 100, 50, 1, 7, $4::timestamptz + h * interval '1 hour'
  from generate_series(0, 719) h, generate_series(0, 3) a`, [tenantId, big, meterId, from]);
const auth = [(next: Parameters<Interceptor>[0]) => (req: Parameters<ReturnType<Interceptor>>[0]) => (req.header.set("authorization", `Bearer ${server.key}`), next(req))];
const clients = {
  binary: createClient(UsageService, createConnectTransport({ baseUrl: server.url, httpVersion: "1.1", useBinaryFormat: true, interceptors: auth })),
  json: createClient(UsageService, createConnectTransport({ baseUrl: server.url, httpVersion: "1.1", useBinaryFormat: false, interceptors: auth })),
};
const req = { tenantId, licenseId: big, metric: "tokens", startTime: timestampFromDate(from), endTime: timestampFromDate(end), bucket: Bucket.HOUR, groupByAgent: true };
const body = JSON.stringify({ tenantId, licenseId: big, metric: "tokens", startTime: from.toISOString(), endTime: end.toISOString(), bucket: "BUCKET_HOUR", groupByAgent: true });
const raw = async () => { const r = await fetch(`${server.url}/licensd.usage.v1.UsageService/GetUsageSummary`, { method: "POST", headers: { "content-type": "application/json", authorization: `Bearer ${server.key}` }, body }); return (await r.text()).length; };
const t: Record<string, number[]> = { binary: [], json: [], rawjson: [] };
const time = async (k: string, f: () => Promise<unknown>) => { const s = performance.now(); await f(); t[k].push(performance.now() - s); };
for (let i = 0; i < 3; i++) { await clients.binary.getUsageSummary(req); await clients.json.getUsageSummary(req); await raw(); }
console.log("buckets", (await clients.binary.getUsageSummary(req)).buckets.length, "json bytes", await raw());
for (let i = 0; i < Number(process.env.CALLS ?? 60); i++) { await time("binary", () => clients.binary.getUsageSummary(req)); await time("json", () => clients.json.getUsageSummary(req)); await time("rawjson", raw); }
if (process.env.HOLD) { const { execFileSync } = await import("node:child_process"); const pid = execFileSync("pgrep", ["-f", "main/bin/licensd.js serve"], { encoding: "utf8" }).trim(); const rec = (await import("node:child_process")).spawn("perf", ["record", "-F", "4000", "-g", "-p", pid, "-o", "/tmp/perf.sum.data"], { stdio: "ignore" }); await new Promise((r) => setTimeout(r, 1000)); for (let i = 0; i < 100; i++) await raw(); rec.kill("SIGINT"); await new Promise((r) => rec.once("exit", r)); }
for (const [k, v] of Object.entries(t)) console.log(k.padEnd(8), "p50", percentile(v, 50).toFixed(1), "p90", percentile(v, 90).toFixed(1), "p99", percentile(v, 99).toFixed(1));
const s = performance.now(); for (let i = 0; i < 20; i++) await pgc.query(`select 1`); 
await pgc.end(); await server.stop();

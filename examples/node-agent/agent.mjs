/*
 * A Node agent on @licensd/client/node: it activates this machine and holds a
 * ConnectLease stream (LicenseGuard), serves a small HTTP API whose /reports route is
 * gated on the "reports" feature and /sso on "sso", and meters its work through the
 * durable UsageUploader (fsync'd spool, StreamUsage, exactly-once by idempotency key).
 *
 *   npm run build     # builds @licensd/client into clients/ts/dist (or install its tarball)
 *   LICENSD_URL=http://127.0.0.1:8080 LICENSD_LICENSE_KEY=PRD-… node examples/node-agent/agent.mjs
 *
 * AGENT_DIR keeps the lease cache and the usage spool (default: a new temporary directory).
 */
import { mkdtempSync } from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { LicenseGuard, requireFeature, UsageUploader } from "@licensd/client/node";

const baseUrl = process.env.LICENSD_URL ?? "http://127.0.0.1:8080";
const key = process.env.LICENSD_LICENSE_KEY;
if (!key) throw new Error("set LICENSD_LICENSE_KEY");
const dir = process.env.AGENT_DIR ?? mkdtempSync(path.join(os.tmpdir(), "licensd-agent-"));

// 1. License: activate, hold ConnectLease, cache the verified lease (answers offline until it expires).
const guard = new LicenseGuard({
  baseUrl,
  key,
  fingerprint: `${os.hostname()}-example-agent`,
  cacheFile: path.join(dir, "license.json"),
});
await guard.start();
for (let i = 0; i < 150 && !guard.info().valid; i++) await new Promise((r) => setTimeout(r, 100));
const info = guard.info();
console.log(`license: valid=${info.valid} code=${info.code} tier=${info.tier} features=${info.features.join(",")}`);

// 2. Gates: 402 without a valid license, 403 without the feature, HenKaiPan's JSON body.
const reports = requireFeature(guard, "reports");
const sso = requireFeature(guard, "sso");
const ok = (name) => (_req, res) => res.end(JSON.stringify({ ok: name }));
const server = http.createServer((req, res) => {
  if (req.url === "/reports") return reports.handler(ok("reports"))(req, res);
  if (req.url === "/sso") return sso.handler(ok("sso"))(req, res);
  res.statusCode = 404;
  res.end();
});
await new Promise((r) => server.listen(0, "127.0.0.1", r));
const api = `http://127.0.0.1:${server.address().port}`;
for (const route of ["/reports", "/sso"]) {
  const res = await fetch(api + route);
  console.log(`GET ${route} → ${res.status} ${await res.text()}`);
}
server.close();

// 3. Usage: each record is on disk (fsync'd) before it resolves; flush() waits for the acks.
const transport = createGrpcTransport({ baseUrl });
const uploader = new UsageUploader({
  dir: path.join(dir, "usage"),
  transport,
  lease: () => guard.lease, // the current verified lease: usage counts against this machine's license
  agentId: "example-agent",
  onRejected: (events) => console.log(`refused: ${events.map((e) => e.reason).join(", ")}`),
});
for (let i = 0; i < 100; i++) await uploader.record("tokens", 25, { model: i % 2 ? "small" : "large" });
await uploader.flush();
const stats = uploader.stats();
console.log(`usage: acked=${stats.acked} pending=${stats.pending} rejected=${stats.rejected}`);

await uploader.close();
await guard.stop();

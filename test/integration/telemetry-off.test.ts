import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { LicensingService } from "../../gen/ts/licensd/licensing/v1/licensing_service_pb.js";
import { ApiKeyScope } from "../../gen/ts/licensd/tenant/v1/api_key_pb.js";
import { TenantService } from "../../gen/ts/licensd/tenant/v1/tenant_service_pb.js";
import { createLogger } from "../../src/platform/logger.js";
import { bearer, connectClient, startTestApp, type TestApp } from "../support/app.js";
import { failure } from "../support/errors.js";

// Tracing off: no OTEL_* variable names an exporter (this file runs in its own process).
for (const name of Object.keys(process.env)) if (name.startsWith("OTEL_")) delete process.env[name];
const lines: Record<string, unknown>[] = [];
let t: TestApp;

beforeAll(async () => {
  t = await startTestApp({
    logger: createLogger("info", {
      write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>),
    }),
  });
});
afterAll(async () => {
  await t?.close();
});

function licensing(key: string, requestId: string) {
  const traceparent = `00-${randomBytes(16).toString("hex")}-${randomBytes(8).toString("hex")}-01`;
  const transport = createConnectTransport({
    baseUrl: t.url,
    httpVersion: "1.1",
    interceptors: [
      ...bearer(key),
      (next) => (req) => {
        req.header.set("x-request-id", requestId);
        req.header.set("traceparent", traceparent);
        return next(req);
      },
    ],
  });
  return createClient(LicensingService, transport);
}

describe("OpenTelemetry off (no OTEL_* settings)", () => {
  it("starts no SDK: nothing is registered with OpenTelemetry's API, so nothing can be exported", async () => {
    expect(t.app.tracing).toBeUndefined();
    expect((globalThis as Record<symbol, unknown>)[Symbol.for("opentelemetry.js.api.1")]).toBeUndefined();
    expect(lines.some((l) => l.msg === "OpenTelemetry tracing on")).toBe(false);
  });

  it("still puts the request id, and no trace id, on every line logged while a request is handled", async () => {
    const tenants = connectClient(TenantService, t.url, t.superAdminKey);
    const key = `OFF-${randomBytes(6).toString("hex").toUpperCase()}`;
    for (const i of [0, 1]) {
      const { tenant } = await tenants.createTenant({ name: `Untraced ${i}` });
      const { secret } = await tenants.createApiKey({
        tenantId: tenant!.id,
        name: "admin",
        scopes: [ApiKeyScope.ADMIN],
      });
      const api = connectClient(LicensingService, t.url, secret);
      const { product } = await api.createProduct({ code: "OFF", name: "Untraced app" });
      const { policy } = await api.createPolicy({
        productId: product!.id,
        name: "std",
        duration: { seconds: 86_400n, nanos: 0 },
      });
      const { customer } = await api.createCustomer({ name: "Jane Doe", email: `jane${i}@example.com` });
      const create = licensing(secret, `req-off-${i}`).createLicense({
        policyId: policy!.id,
        customerId: customer!.id,
        customKey: key,
      });
      if (i === 0) await create;
      else expect(await failure(create)).toMatchObject({ code: "InvalidArgument" });
    }
    const warning = lines.find((l) => typeof l.msg === "string" && l.msg.startsWith("custom license key refused"));
    expect(warning).toMatchObject({ requestId: "req-off-1" });
    expect(warning).not.toHaveProperty("traceId");
    const rpc = lines.find((l) => l.msg === "rpc" && l.requestId === "req-off-1");
    expect(rpc).toMatchObject({ code: "invalid_argument" });
    expect(rpc).not.toHaveProperty("traceId");
  });
});

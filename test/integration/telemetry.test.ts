import { mkdtempSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { randomBytes } from "node:crypto";
import { InMemorySpanExporter, SimpleSpanProcessor, type ReadableSpan } from "@opentelemetry/sdk-trace";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { AuditService } from "../../gen/ts/licensd/audit/v1/audit_service_pb.js";
import { LicensingService } from "../../gen/ts/licensd/licensing/v1/licensing_service_pb.js";
import { ApiKeyScope } from "../../gen/ts/licensd/tenant/v1/api_key_pb.js";
import { TenantService } from "../../gen/ts/licensd/tenant/v1/tenant_service_pb.js";
import { createApp, type App } from "../../src/app.js";
import { loadConfig } from "../../src/config.js";
import { createLogger } from "../../src/platform/logger.js";
import { bearer, connectClient, grpcClient } from "../support/app.js";
import { createTestDatabase } from "../support/database.js";
import { failure } from "../support/errors.js";
import { until } from "../support/wait.js";

// Tracing on, with an in-memory exporter: every span the server ends is here.
const exporter = new InMemorySpanExporter();
const lines: Record<string, unknown>[] = [];
let db: { url: string; drop(): Promise<void> };
let app: App;
let superAdminKey: string;

beforeAll(async () => {
  db = await createTestDatabase();
  superAdminKey = randomBytes(32).toString("base64url");
  const config = loadConfig({
    LICENSD_PORT: "0",
    LICENSD_DATABASE_URL: db.url,
    LICENSD_DATA_DIR: mkdtempSync(path.join(os.tmpdir(), "licensd-test-")),
    LICENSD_SUPER_ADMIN_KEY: superAdminKey,
    LICENSD_DATA_KEY: randomBytes(32).toString("base64"),
    LICENSD_SHUTDOWN_TIMEOUT_MS: "5000",
  });
  const logger = createLogger("info", {
    write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>),
  });
  app = await createApp(config, { logger, tracing: { spanProcessors: [new SimpleSpanProcessor({ exporter })] } });
});
afterAll(async () => {
  await app?.close();
  await db?.drop();
});

const spansNamed = (name: string) => exporter.getFinishedSpans().filter((s) => s.name === name);
const childrenOf = (span: ReadableSpan) =>
  exporter.getFinishedSpans().filter((s) => s.parentSpanContext?.spanId === span.spanContext().spanId);
const sqlOf = (span: ReadableSpan) => String(span.attributes["db.query.text"] ?? span.attributes["db.statement"] ?? "");
const rpcLine = (requestId: string) => lines.find((l) => l.msg === "rpc" && l.requestId === requestId);

/** A client that sends `x-request-id` (and, when given, `traceparent`) with every call. */
function client<T extends Parameters<typeof createClient>[0]>(
  service: T,
  key: string,
  requestId: string,
  traceparent?: string,
) {
  const transport = createConnectTransport({
    baseUrl: app.url,
    httpVersion: "1.1",
    interceptors: [
      ...bearer(key),
      (next) => (req) => {
        req.header.set("x-request-id", requestId);
        if (traceparent) req.header.set("traceparent", traceparent);
        return next(req);
      },
    ],
  });
  return createClient(service, transport);
}

async function newTenant(name: string) {
  const tenants = connectClient(TenantService, app.url, superAdminKey);
  const { tenant } = await tenants.createTenant({ name });
  const { secret } = await tenants.createApiKey({ tenantId: tenant!.id, name: "admin", scopes: [ApiKeyScope.ADMIN] });
  return { id: tenant!.id, secret };
}

describe("OpenTelemetry tracing", () => {
  it("gives each RPC a span with its procedure, protocol, code and tenant, and its SQL as child spans", async () => {
    const t = await newTenant("Traced Co");
    exporter.reset();
    await client(LicensingService, t.secret, "req-create-product").createProduct({ code: "TRC", name: "Traced app" });

    const [span] = spansNamed("licensd.licensing.v1.LicensingService/CreateProduct");
    expect(span).toBeDefined();
    expect(span.kind).toBe(1); // SERVER
    expect(span.attributes).toMatchObject({
      "rpc.system": "connect_rpc",
      "rpc.service": "licensd.licensing.v1.LicensingService",
      "rpc.method": "CreateProduct",
      "licensd.protocol": "connect",
      "licensd.code": "ok",
      "licensd.tenant": t.id,
      "licensd.request_id": "req-create-product",
    });
    expect(span.status.code).toBe(0); // UNSET: OK
    // PostgreSQL spans from @opentelemetry/instrumentation-pg, in the RPC's trace, under its span.
    const sql = childrenOf(span).map(sqlOf);
    expect(sql.some((q) => /insert into "products"/i.test(q))).toBe(true);
    // MikroORM inlines values into its SQL; the spans carry none of them.
    expect(sql.join("\n")).not.toContain("Traced app");
    for (const s of childrenOf(span)) expect(s.spanContext().traceId).toBe(span.spanContext().traceId);

    // The rpc log line names the same trace and span.
    expect(rpcLine("req-create-product")).toMatchObject({
      traceId: span.spanContext().traceId,
      spanId: span.spanContext().spanId,
      tenant: t.id,
      code: "ok",
    });
  });

  it("marks a refused call's span as an error with the code's name, over gRPC as over Connect", async () => {
    const t = await newTenant("Refused Co");
    exporter.reset();
    expect(
      await failure(client(LicensingService, t.secret, "req-bad-code").createProduct({ code: "lower", name: "x" })),
    ).toMatchObject({ code: "InvalidArgument" });
    const [connectSpan] = spansNamed("licensd.licensing.v1.LicensingService/CreateProduct");
    expect(connectSpan.status).toEqual({ code: 2, message: "invalid_argument" }); // ERROR
    expect(connectSpan.attributes).toMatchObject({
      "rpc.connect_rpc.error_code": "invalid_argument",
      "licensd.code": "invalid_argument",
      "licensd.tenant": t.id,
    });

    exporter.reset();
    expect(
      await failure(grpcClient(LicensingService, app.url, t.secret).getProduct({ id: "prod_nope" })),
    ).toMatchObject({ code: "InvalidArgument" });
    const [grpcSpan] = spansNamed("licensd.licensing.v1.LicensingService/GetProduct");
    expect(grpcSpan.attributes).toMatchObject({
      "rpc.system": "grpc",
      "rpc.grpc.status_code": 3,
      "licensd.protocol": "grpc",
      "licensd.code": "invalid_argument",
    });
    expect(grpcSpan.status).toEqual({ code: 2, message: "invalid_argument" });
  });

  it("gives a request connect refuses before any interceptor its span and trace id too", async () => {
    exporter.reset();
    const res = await fetch(`${app.url}/licensd.tenant.v1.TenantService/CreateTenant`, {
      method: "POST",
      headers: { "content-type": "application/json", "x-request-id": "req-unknown-field" },
      body: JSON.stringify({ name: "x", noSuchField: 1 }),
    });
    expect(res.status).toBe(400);
    const [span] = spansNamed("licensd.tenant.v1.TenantService/CreateTenant");
    expect(span.attributes).toMatchObject({
      "licensd.code": "invalid_argument",
      "licensd.tenant": "unknown",
      "licensd.request_id": "req-unknown-field",
    });
    expect(rpcLine("req-unknown-field")).toMatchObject({ traceId: span.spanContext().traceId });
  });

  it("continues the caller's trace from its traceparent header", async () => {
    const t = await newTenant("Propagated Co");
    exporter.reset();
    const traceId = randomBytes(16).toString("hex");
    const parentId = randomBytes(8).toString("hex");
    await client(LicensingService, t.secret, "req-traceparent", `00-${traceId}-${parentId}-01`).listProducts({});
    const [span] = spansNamed("licensd.licensing.v1.LicensingService/ListProducts");
    expect(span.spanContext().traceId).toBe(traceId);
    expect(span.parentSpanContext?.spanId).toBe(parentId);
    expect(childrenOf(span).length).toBeGreaterThan(0);
  });

  it("puts the request id and trace id on the lines a service logs while it handles the request", async () => {
    // A custom key another tenant's license holds: the service logs a warning inside the call.
    const vendors = [await newTenant("Holder Co"), await newTenant("Guesser Co")];
    const key = `TRC-${randomBytes(6).toString("hex").toUpperCase()}`;
    for (const [i, v] of vendors.entries()) {
      const api = connectClient(LicensingService, app.url, v.secret);
      const { product } = await api.createProduct({ code: "KEY", name: "Keyed app" });
      const { policy } = await api.createPolicy({
        productId: product!.id,
        name: "std",
        duration: { seconds: 86_400n, nanos: 0 },
      });
      const { customer } = await api.createCustomer({ name: "Jane Doe", email: `jane${i}@example.com` });
      exporter.reset();
      const create = client(LicensingService, v.secret, `req-custom-key-${i}`).createLicense({
        policyId: policy!.id,
        customerId: customer!.id,
        customKey: key,
      });
      if (i === 0) await create;
      else
        expect(await failure(create)).toMatchObject({
          code: "InvalidArgument",
          message: "custom_key: this key cannot be used; choose another",
        });
    }
    const [span] = spansNamed("licensd.licensing.v1.LicensingService/CreateLicense");
    const warning = lines.find((l) => typeof l.msg === "string" && l.msg.startsWith("custom license key refused"));
    expect(warning).toMatchObject({
      requestId: "req-custom-key-1",
      traceId: span.spanContext().traceId,
      spanId: span.spanContext().spanId,
    });
    // Lines logged outside any request carry neither.
    const outside = lines.find((l) => l.msg === "licensd listening");
    expect(outside).toBeDefined();
    expect(outside).not.toHaveProperty("requestId");
    expect(outside).not.toHaveProperty("traceId");
  });

  it("covers a streamed answer with one span, the SQL its messages needed as children", async () => {
    const t = await newTenant("Streamed Co");
    exporter.reset();
    const abort = new AbortController();
    const tail = client(AuditService, t.secret, "req-tail")
      .tailAuditEvents({ afterSeq: 0n }, { signal: abort.signal })
      [Symbol.asyncIterator]();
    const first = await tail.next();
    expect(first.value.message.case).toBe("event");
    expect(spansNamed("licensd.audit.v1.AuditService/TailAuditEvents")).toHaveLength(0); // still open
    abort.abort();
    await until("the tail's span", () => spansNamed("licensd.audit.v1.AuditService/TailAuditEvents").length === 1);
    const [span] = spansNamed("licensd.audit.v1.AuditService/TailAuditEvents");
    expect(span.attributes).toMatchObject({
      "licensd.request_id": "req-tail",
      "licensd.tenant": t.id,
      "licensd.code": "canceled",
    });
    expect(
      childrenOf(span)
        .map(sqlOf)
        .some((q) => /audit_events/.test(q)),
    ).toBe(true);
  });
});

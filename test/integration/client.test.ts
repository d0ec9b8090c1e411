/*
 * createLicensdClient against a real licensd on a real port, over Connect, gRPC-Web (fetch)
 * and gRPC (HTTP/2, from "@licensd/client/node"): calls, errors as describeError reads
 * them, and retries through real outages (a relay in front of licensd dropping connections,
 * a relay in front of PostgreSQL, the server's own rate limit).
 */
import { Code } from "@connectrpc/connect";
import { describeError, type LicensdClient, type RetryEvent } from "@licensd/client";
import { ApiKeyScope } from "@licensd/client/gen/licensd/tenant/v1/api_key_pb.js";
import { createLicensdClient as createNodeClient, type LicensdNodeClientOptions } from "@licensd/client/node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestApp, type TestApp } from "../support/app.js";
import { createTestDatabase } from "../support/database.js";
import { TcpProxy } from "../support/tcp-proxy.js";

let db: { url: string; drop(): Promise<void> };
let dbProxy: TcpProxy;
let app: TestApp;
/** A relay in front of licensd: cutting it drops every client connection and refuses new ones. */
let appProxy: TcpProxy;
let adminKey: string;
const clients: LicensdClient[] = [];

/** A client on the node entry (every protocol), closed after the file. */
function client(opts: LicensdNodeClientOptions) {
  const c = createNodeClient(opts);
  clients.push(c);
  return c;
}

beforeAll(async () => {
  db = await createTestDatabase();
  const target = new URL(db.url);
  dbProxy = new TcpProxy({ host: target.hostname, port: Number(target.port || 5432) });
  const via = new URL(db.url);
  via.port = String(await dbProxy.start());
  app = await startTestApp({ databaseUrl: via.toString() });
  appProxy = new TcpProxy({ host: "127.0.0.1", port: Number(new URL(app.url).port) });
  await appProxy.start();
  const root = client({ baseUrl: app.url, apiKey: app.superAdminKey });
  const { tenant } = await root.tenant.createTenant({ name: "Client vendor" });
  ({ secret: adminKey } = await root.tenant.createApiKey({
    tenantId: tenant!.id,
    name: "admin",
    scopes: [ApiKeyScope.ADMIN],
  }));
});
afterAll(async () => {
  for (const c of clients) c.close();
  await appProxy?.cut();
  await app?.close();
  await dbProxy?.cut();
  await db?.drop();
});

async function failure(p: Promise<unknown>) {
  try {
    await p;
  } catch (err) {
    return describeError(err);
  }
  throw new Error("the call succeeded");
}

const viaProxy = () => `http://127.0.0.1:${appProxy.port}`;

describe.each([
  ["connect", "CON"],
  ["grpc-web", "GWB"],
  ["grpc", "GRP"],
] as const)("createLicensdClient over %s", (protocol, code) => {
  it("calls licensd with the API key", async () => {
    const c = client({ baseUrl: app.url, apiKey: adminKey, protocol });
    const { product } = await c.licensing.createProduct({ code, name: `Product ${protocol}` });
    expect(product).toMatchObject({ code, name: `Product ${protocol}` });
    const got = await c.licensing.getProduct({ id: product!.id });
    expect(got.product?.id).toBe(product!.id);
    // The same key reaches every service through the one transport.
    expect((await c.activation.getSigningKeys({})).keys.length).toBeGreaterThan(0);
  });

  it("reads bad input as INVALID_ARGUMENT with every field violation", async () => {
    const c = client({ baseUrl: app.url, apiKey: adminKey, protocol });
    const f = await failure(c.licensing.createProduct({ code: "lower case", name: "" }));
    expect(f).toMatchObject({
      code: Code.InvalidArgument,
      codeName: "invalid_argument",
      reason: "INVALID_ARGUMENT",
      domain: "licensd.dev",
    });
    expect(f.fieldViolations.map((v) => v.field).sort()).toEqual(["code", "name"]);
    expect(f.fieldViolations.find((v) => v.field === "name")?.description).toMatch(/1/);
    expect(f.message).toContain("code");
  });

  it("reads a wrong key as UNAUTHENTICATED INVALID_API_KEY with a hint, and no key as MISSING_API_KEY", async () => {
    const wrong = client({ baseUrl: app.url, apiKey: "lsk_not_a_key_of_this_server", protocol });
    const f = await failure(wrong.licensing.listProducts({}));
    expect(f).toMatchObject({ code: Code.Unauthenticated, reason: "INVALID_API_KEY", domain: "licensd.dev" });
    expect(f.hint).toMatch(/CreateApiKey/);
    const none = client({ baseUrl: app.url, protocol });
    expect(await failure(none.licensing.listProducts({}))).toMatchObject({
      code: Code.Unauthenticated,
      reason: "MISSING_API_KEY",
    });
  });

  it("retries a read while licensd cannot be reached, and it succeeds once licensd is back", async () => {
    const c = client({
      baseUrl: viaProxy(),
      apiKey: adminKey,
      protocol,
      retry: { maxAttempts: 5, initialMs: 10, maxMs: 50 },
      onRetry: (e) => {
        retries.push(e);
        // Licensd comes back after the second failed attempt.
        if (retries.length === 2) void appProxy.start(appProxy.port);
      },
    });
    const retries: RetryEvent[] = [];
    await c.licensing.listProducts({}); // a connection is open before the outage
    await appProxy.cut();
    const { products } = await c.licensing.listProducts({});
    expect(products.length).toBeGreaterThan(0);
    expect(retries).toHaveLength(2);
    expect(retries.map((r) => [r.attempt, r.error.code, r.procedure])).toEqual([
      [1, Code.Unavailable, "licensd.licensing.v1.LicensingService/ListProducts"],
      [2, Code.Unavailable, "licensd.licensing.v1.LicensingService/ListProducts"],
    ]);
  });

  it("never retries a write without an idempotency key; retries one that has a key, and it lands once", async () => {
    const retries: RetryEvent[] = [];
    let restartAfter = Number.POSITIVE_INFINITY;
    const c = client({
      baseUrl: viaProxy(),
      apiKey: adminKey,
      protocol,
      retry: { maxAttempts: 5, initialMs: 10, maxMs: 50 },
      onRetry: (e) => {
        retries.push(e);
        if (retries.length === restartAfter) void appProxy.start(appProxy.port);
      },
    });
    await appProxy.cut();
    const f = await failure(c.licensing.createCustomer({ name: "No key", email: `nokey@${code}.example` }));
    expect(f.code).toBe(Code.Unavailable);
    expect(retries).toHaveLength(0);

    restartAfter = 1;
    const key = `client-test-${protocol}`;
    const { customer } = await c.licensing.createCustomer({
      name: "Keyed",
      email: `keyed@${code}.example`,
      idempotencyKey: key,
    });
    expect(retries).toHaveLength(1);
    expect(customer?.email).toBe(`keyed@${code}.example`);
    // The same key again (a retry from the caller's side) gets the first answer: one customer.
    const again = await c.licensing.createCustomer({
      name: "Keyed",
      email: `keyed@${code}.example`,
      idempotencyKey: key,
    });
    expect(again.customer?.id).toBe(customer!.id);
    const { customers } = await c.licensing.listCustomers({});
    expect(customers.filter((x) => x.email === `keyed@${code}.example`)).toHaveLength(1);
    expect(customers.filter((x) => x.email === `nokey@${code}.example`)).toHaveLength(0);
  });
});

describe("retries", () => {
  it("retry a read while the database is unreachable (UNAVAILABLE, DATABASE_UNAVAILABLE) until it is back", async () => {
    const retries: RetryEvent[] = [];
    const c = client({
      baseUrl: app.url,
      apiKey: adminKey,
      retry: { maxAttempts: 50, initialMs: 10, maxMs: 100 },
      onRetry: (e) => {
        retries.push(e);
        if (retries.length === 1) void dbProxy.start(dbProxy.port);
      },
    });
    await dbProxy.cut();
    const { products } = await c.licensing.listProducts({});
    expect(products.length).toBeGreaterThan(0);
    expect(retries.length).toBeGreaterThanOrEqual(1);
    expect(describeError(retries[0]!.error)).toMatchObject({ code: Code.Unavailable, reason: "DATABASE_UNAVAILABLE" });
  });

  it("give up after maxAttempts with the last error", async () => {
    const retries: RetryEvent[] = [];
    const c = client({
      baseUrl: viaProxy(),
      apiKey: adminKey,
      retry: { maxAttempts: 3, initialMs: 10, maxMs: 20 },
      onRetry: (e) => retries.push(e),
    });
    await appProxy.cut();
    try {
      expect(await failure(c.licensing.listProducts({}))).toMatchObject({ code: Code.Unavailable });
      expect(retries.map((r) => r.attempt)).toEqual([1, 2]);
      // retry: false is one attempt.
      const once = client({ baseUrl: viaProxy(), apiKey: adminKey, retry: false, onRetry: (e) => retries.push(e) });
      expect(await failure(once.licensing.listProducts({}))).toMatchObject({ code: Code.Unavailable });
      expect(retries).toHaveLength(2);
    } finally {
      await appProxy.start(appProxy.port);
    }
  });

  it("end within the call's deadline: no retry starts that would end past it", async () => {
    const retries: RetryEvent[] = [];
    const c = client({
      baseUrl: viaProxy(),
      apiKey: adminKey,
      timeoutMs: 300,
      retry: { maxAttempts: 1_000_000, initialMs: 5, maxMs: 20 },
      onRetry: (e) => retries.push(e),
    });
    await appProxy.cut();
    try {
      const f = await failure(c.licensing.listProducts({}));
      expect([Code.Unavailable, Code.DeadlineExceeded]).toContain(f.code);
      expect(retries.length).toBeGreaterThan(0);
      expect(retries.length).toBeLessThan(1_000_000);
    } finally {
      await appProxy.start(appProxy.port);
    }
  });

  it("wait at least the delay the server asks for when it rate-limits (RATE_LIMITED)", async () => {
    // Its own licensd and database: two failed keys a second from this address, then it is blocked.
    const limited = await startTestApp({ env: { LICENSD_KEY_FAILURE_RATE_PER_IP: "2/1s" } });
    try {
      const root = client({ baseUrl: limited.url, apiKey: limited.superAdminKey, retry: false });
      const wrong = client({ baseUrl: limited.url, apiKey: "lsk_wrong", retry: false });
      for (let i = 0; i < 2; i++) await failure(wrong.tenant.listTenants({}));
      const blocked = await failure(wrong.tenant.listTenants({}));
      expect(blocked).toMatchObject({ code: Code.ResourceExhausted, reason: "RATE_LIMITED" });
      expect(blocked.retryDelayMs).toBeGreaterThan(0);
      expect(await failure(root.tenant.listTenants({}))).toMatchObject({ reason: "RATE_LIMITED" });

      const retries: RetryEvent[] = [];
      const patient = client({
        baseUrl: limited.url,
        apiKey: limited.superAdminKey,
        retry: { maxAttempts: 10, initialMs: 10, maxMs: 5_000 },
        onRetry: (e) => retries.push(e),
      });
      await patient.tenant.listTenants({});
      expect(retries.length).toBeGreaterThanOrEqual(1);
      for (const r of retries) {
        const asked = describeError(r.error);
        expect(asked.reason).toBe("RATE_LIMITED");
        expect(r.delayMs).toBeGreaterThanOrEqual(asked.retryDelayMs!);
      }

      // A wait longer than maxMs is the caller's decision: the error comes back at once, with the delay.
      for (let i = 0; i < 3; i++) await failure(wrong.tenant.listTenants({}));
      const hasty = client({
        baseUrl: limited.url,
        apiKey: limited.superAdminKey,
        retry: { maxAttempts: 10, initialMs: 1, maxMs: 1 },
        onRetry: (e) => retries.push(e),
      });
      const before = retries.length;
      const f = await failure(hasty.tenant.listTenants({}));
      expect(f).toMatchObject({ code: Code.ResourceExhausted, reason: "RATE_LIMITED" });
      expect(f.retryDelayMs).toBeGreaterThan(1);
      expect(retries).toHaveLength(before);
    } finally {
      await limited.close();
    }
  });
});

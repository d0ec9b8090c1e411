/*
 * The real server's artifacts checked by verifiers written from docs/formats.md (the
 * Python client's, licensd_client), not by licensd's own code: signed ValidateLicense answers over gRPC and
 * Connect JSON, audit entry hashes and HMACs, checkpoints, inclusion and consistency proofs.
 */
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ROOT, run, startServer, type ServerProcess } from "../support/server.js";

let server: ServerProcess & { dropDatabase(): Promise<void> };

async function call<T>(procedure: string, body: unknown, bearer: string | null): Promise<T> {
  const res = await fetch(`${server.url}/${procedure}`, {
    method: "POST",
    headers: { "content-type": "application/json", ...(bearer ? { authorization: `Bearer ${bearer}` } : {}) },
    body: JSON.stringify(body),
  });
  const json = (await res.json()) as T;
  if (!res.ok) throw new Error(`${procedure}: ${JSON.stringify(json)}`);
  return json;
}

beforeAll(async () => {
  server = await startServer();
});
afterAll(async () => {
  await server?.stop();
  await server?.dropDatabase();
});

describe("formats, checked from the document", () => {
  it("Python verifiers written from docs/formats.md accept the live server's signed answers and audit log, and refuse altered ones", async () => {
    const admin = server.superAdminKey;
    const L = "licensd.licensing.v1.LicensingService";
    const { tenant } = await call<{ tenant: { id: string } }>(
      "licensd.tenant.v1.TenantService/CreateTenant",
      { name: "Formats" },
      admin,
    );
    const t = { tenantId: tenant.id };
    const { product } = await call<{ product: { id: string } }>(
      `${L}/CreateProduct`,
      {
        ...t,
        code: "FMT",
        name: "Formats — ünïcödé",
        features: [
          { name: "reports", kind: "FEATURE_KIND_FLAG", compose: "COMPOSE_STRATEGY_UNION" },
          { name: "seats", kind: "FEATURE_KIND_LIMIT", compose: "COMPOSE_STRATEGY_SUM" },
          { name: "model", kind: "FEATURE_KIND_TIER", compose: "COMPOSE_STRATEGY_MAX" },
        ],
      },
      admin,
    );
    const { policy } = await call<{ policy: { id: string } }>(
      `${L}/CreatePolicy`,
      {
        ...t,
        productId: product.id,
        name: "pro",
        floating: true,
        maxMachines: 3,
        entitlements: [
          { feature: "reports", enabled: true },
          { feature: "seats", limit: "5" },
          { feature: "model", tier: "MODEL_TIER_PREMIUM" },
        ],
        agentEntitlements: [
          { agent: "coder", tokenAllowance: "100000", modelTier: "MODEL_TIER_STANDARD" },
          { agent: "tester", enabled: false, tokenAllowance: "0" },
        ],
      },
      admin,
    );
    const { customer } = await call<{ customer: { id: string } }>(
      `${L}/CreateCustomer`,
      { ...t, name: "Zoë", email: "zoe@example.com" },
      admin,
    );
    const { key } = await call<{ key: string }>(
      `${L}/CreateLicense`,
      { ...t, policyId: policy.id, customerId: customer.id },
      admin,
    );
    await call("licensd.activation.v1.ActivationService/Activate", { key, fingerprint: "fmt-host" }, null);
    const connectAnswer = await call(
      `${L}/ValidateLicense`,
      { key, fingerprint: "fmt-host", nonce: "curl-nonce" },
      null,
    );

    const res = await run(
      "/usr/bin/python3",
      [
        path.join(ROOT, "test/e2e/python_formats.py"),
        `127.0.0.1:${server.port}`,
        admin,
        tenant.id,
        key,
        "fmt-host",
        server.dataKey,
      ],
      {
        input: JSON.stringify(connectAnswer),
      },
    );
    expect(res.code, res.stderr).toBe(0);
    const checks = JSON.parse(res.stdout) as Record<string, boolean>;
    expect(Object.keys(checks).length).toBeGreaterThanOrEqual(12);
    expect(
      Object.entries(checks)
        .filter(([, ok]) => !ok)
        .map(([name]) => name),
    ).toEqual([]);
  });
});

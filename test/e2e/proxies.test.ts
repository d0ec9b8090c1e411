import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { run, startServer, type ServerProcess } from "../support/server.js";

// The real server behind a "proxy" at 127.0.0.2 (curl --interface picks the source
// address; all of 127.0.0.0/8 is loopback), and clients at other loopback addresses.
type Server = ServerProcess & { dropDatabase(): Promise<void> };
let xff: Server;
let rfc7239: Server;
const env = {
  LICENSD_TRUSTED_PROXIES: "127.0.0.2/32",
  LICENSD_KEY_FAILURE_RATE_PER_IP: "3/1h",
  LICENSD_ACTIVATION_RATE_PER_IP: "0",
};

beforeAll(async () => {
  xff = await startServer({ env });
  rfc7239 = await startServer({ env: { ...env, LICENSD_FORWARDED_HEADER: "forwarded" } });
}, 180_000);
afterAll(async () => {
  for (const s of [xff, rfc7239]) {
    await s?.stop();
    await s?.dropDatabase();
  }
});

/** A Connect JSON call with curl from `source`, with extra headers; status and body. */
async function curl(
  server: Server,
  source: string,
  procedure: string,
  body: unknown,
  headers: string[] = [],
  bearer?: string,
) {
  const args = [
    "-s",
    "--interface",
    source,
    "-w",
    "\n%{http_code}",
    "-X",
    "POST",
    `${server.url}/${procedure}`,
    "-H",
    "content-type: application/json",
    "-d",
    JSON.stringify(body),
  ];
  for (const h of headers) args.push("-H", h);
  if (bearer) args.push("-H", `authorization: Bearer ${bearer}`);
  const res = await run("curl", args);
  const at = res.stdout.lastIndexOf("\n");
  return {
    status: Number(res.stdout.slice(at + 1)),
    body: JSON.parse(res.stdout.slice(0, at)) as Record<string, unknown> & { code?: string },
  };
}

/** A tenant with one floating license, set up from 127.0.0.1. */
async function license(server: Server) {
  const call = async (procedure: string, body: unknown, key: string) => {
    const r = await curl(server, "127.0.0.1", procedure, body, [], key);
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    return r.body as Record<string, Record<string, string> & { id: string }> & { key: string; secret: string };
  };
  const tenant = (await call("licensd.tenant.v1.TenantService/CreateTenant", { name: "Proxied" }, server.superAdminKey))
    .tenant!;
  const { secret } = await call(
    "licensd.tenant.v1.TenantService/CreateApiKey",
    { tenantId: tenant.id, name: "admin", scopes: ["API_KEY_SCOPE_ADMIN"] },
    server.superAdminKey,
  );
  const product = (
    await call("licensd.licensing.v1.LicensingService/CreateProduct", { code: "PRX", name: "App" }, secret)
  ).product!;
  const policy = (
    await call(
      "licensd.licensing.v1.LicensingService/CreatePolicy",
      { productId: product.id, name: "team", floating: true },
      secret,
    )
  ).policy!;
  const customer = (
    await call(
      "licensd.licensing.v1.LicensingService/CreateCustomer",
      { name: "Jane", email: "jane@proxied.example" },
      secret,
    )
  ).customer!;
  return (
    await call(
      "licensd.licensing.v1.LicensingService/CreateLicense",
      { policyId: policy.id, customerId: customer.id },
      secret,
    )
  ).key;
}

const ACTIVATE = "licensd.activation.v1.ActivationService/Activate";
const VALIDATE = "licensd.licensing.v1.LicensingService/ValidateLicense";
const clientIp = async (server: Server, source: string, key: string, fingerprint: string, headers: string[]) => {
  const r = await curl(server, source, ACTIVATE, { key, fingerprint }, headers);
  expect(r.status, JSON.stringify(r.body)).toBe(200);
  return (r.body.machine as { ip: string }).ip;
};

describe("trusted proxies", () => {
  it("X-Forwarded-For: honoured from the trusted proxy (right to left past trusted hops), ignored from anyone else", async () => {
    const key = await license(xff);
    expect(await clientIp(xff, "127.0.0.3", key, "spoofer", ["x-forwarded-for: 198.51.100.9"])).toBe("127.0.0.3");
    expect(await clientIp(xff, "127.0.0.2", key, "proxied", ["x-forwarded-for: 203.0.113.50"])).toBe("203.0.113.50");
    expect(
      await clientIp(xff, "127.0.0.2", key, "chained", ["x-forwarded-for: 1.2.3.4, 203.0.113.51, 127.0.0.2"]),
    ).toBe("203.0.113.51");
    expect(await clientIp(xff, "127.0.0.2", key, "other-header", ['forwarded: for="203.0.113.52"'])).toBe("127.0.0.2");
  });

  it("Forwarded (RFC 7239) when LICENSD_FORWARDED_HEADER=forwarded", async () => {
    const key = await license(rfc7239);
    expect(await clientIp(rfc7239, "127.0.0.2", key, "v6", ['forwarded: for="[2001:db8::7]:4711";proto=https'])).toBe(
      "2001:db8::7",
    );
    expect(await clientIp(rfc7239, "127.0.0.2", key, "v4", ["forwarded: for=203.0.113.53, for=127.0.0.2"])).toBe(
      "203.0.113.53",
    );
    expect(await clientIp(rfc7239, "127.0.0.3", key, "spoofer", ["forwarded: for=198.51.100.9"])).toBe("127.0.0.3");
    expect(await clientIp(rfc7239, "127.0.0.2", key, "xff", ["x-forwarded-for: 198.51.100.9"])).toBe("127.0.0.2");
  });

  it("failed key lookups count against the forwarded client, and spoofed headers do not buy a fresh budget", async () => {
    const key = await license(xff);
    const wrong = (i: number) => ({ key: `wrong-key-0000000${i}-${Date.now()}` });
    // Behind the proxy: each client has its own budget.
    for (let i = 0; i < 3; i++)
      expect((await curl(xff, "127.0.0.2", VALIDATE, wrong(i), ["x-forwarded-for: 203.0.113.70"])).body.code).toBe(
        "VALIDATION_CODE_NOT_FOUND",
      );
    const refused = await curl(xff, "127.0.0.2", VALIDATE, { key }, ["x-forwarded-for: 203.0.113.70"]);
    expect(refused.status).toBe(429);
    expect(refused.body).toMatchObject({
      code: "resource_exhausted",
      message: expect.stringContaining("too many failed key lookups from this address"),
    });
    expect((await curl(xff, "127.0.0.2", VALIDATE, { key }, ["x-forwarded-for: 203.0.113.71"])).body.valid).toBe(true);
    // A client that is not the proxy cannot pick its address.
    for (let i = 0; i < 3; i++) await curl(xff, "127.0.0.4", VALIDATE, wrong(i), [`x-forwarded-for: 198.51.100.${i}`]);
    expect((await curl(xff, "127.0.0.4", VALIDATE, { key }, ["x-forwarded-for: 198.51.100.200"])).status).toBe(429);
  });
});

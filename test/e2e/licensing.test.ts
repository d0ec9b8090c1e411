import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import readline from "node:readline";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ROOT, run, startServer, type ServerProcess } from "../support/server.js";

let server: ServerProcess & { dropDatabase(): Promise<void> };
let key: string;
let licenseId: string;
let adminKey: string;
let productId: string;

async function call(procedure: string, body: unknown, bearer: string | null = adminKey) {
  const res = await fetch(`${server.url}/${procedure}`, {
    method: "POST",
    headers: { "content-type": "application/json", ...(bearer ? { authorization: `Bearer ${bearer}` } : {}) },
    body: JSON.stringify(body),
  });
  return (await res.json()) as Record<string, { id: string }>;
}

beforeAll(async () => {
  server = await startServer();
  const tenant = await call(
    "licensd.tenant.v1.TenantService/CreateTenant",
    { name: "E2E Licensing" },
    server.superAdminKey,
  );
  const apiKey = (await call(
    "licensd.tenant.v1.TenantService/CreateApiKey",
    { tenantId: tenant.tenant.id, name: "admin", scopes: ["API_KEY_SCOPE_ADMIN"] },
    server.superAdminKey,
  )) as unknown as { secret: string };
  adminKey = apiKey.secret;
  const product = await call("licensd.licensing.v1.LicensingService/CreateProduct", {
    code: "E2E",
    name: "E2E App",
    features: [{ name: "reports", kind: "FEATURE_KIND_FLAG", compose: "COMPOSE_STRATEGY_UNION" }],
  });
  productId = product.product.id;
  const policy = await call("licensd.licensing.v1.LicensingService/CreatePolicy", {
    productId: product.product.id,
    name: "pro",
    duration: "2592000s",
    entitlements: [{ feature: "reports", enabled: true }],
  });
  const customer = await call("licensd.licensing.v1.LicensingService/CreateCustomer", {
    name: "Jane",
    email: "jane@example.com",
  });
  const created = (await call("licensd.licensing.v1.LicensingService/CreateLicense", {
    policyId: policy.policy.id,
    customerId: customer.customer.id,
  })) as unknown as { license: { id: string }; key: string };
  key = created.key;
  licenseId = created.license.id;
});
afterAll(async () => {
  await server?.stop();
  await server?.dropDatabase();
});

/** A new license on a new floating policy of the e2e product. */
async function floatingLicense(name: string) {
  const policy = await call("licensd.licensing.v1.LicensingService/CreatePolicy", { productId, name, floating: true });
  const customer = await call("licensd.licensing.v1.LicensingService/CreateCustomer", {
    name,
    email: `${name}@example.com`,
  });
  return (await call("licensd.licensing.v1.LicensingService/CreateLicense", {
    policyId: policy.policy.id,
    customerId: customer.customer.id,
  })) as unknown as { license: { id: string }; key: string };
}

describe("licensing end to end", () => {
  it("validates a key with curl (Connect JSON POST and GET), without credentials", async () => {
    const post = await run("curl", [
      "-s",
      "-X",
      "POST",
      `${server.url}/licensd.licensing.v1.LicensingService/ValidateLicense`,
      "-H",
      "content-type: application/json",
      "-d",
      JSON.stringify({ key, entitlements: ["reports"] }),
    ]);
    expect(JSON.parse(post.stdout)).toMatchObject({
      valid: true,
      code: "VALIDATION_CODE_VALID",
      features: ["reports"],
      license: { productCode: "E2E", policyName: "pro" },
    });
    const message = encodeURIComponent(JSON.stringify({ key: "E2E-AAAAA-BBBBB-CCCCC-DDDDD-EEEEE-FFFFF-GGGGG" }));
    const get = await run("curl", [
      "-s",
      `${server.url}/licensd.licensing.v1.LicensingService/ValidateLicense?encoding=json&message=${message}`,
    ]);
    expect(JSON.parse(get.stdout)).toMatchObject({ code: "VALIDATION_CODE_SIGNATURE_INVALID" });
    expect(JSON.parse(get.stdout).valid).toBeUndefined(); // proto3 JSON omits false
  });

  it("the Python client (licensd_client) verifies an issued license file offline with keys fetched over gRPC", async () => {
    const issued = (await call("licensd.licensing.v1.LicensingService/IssueLicenseFile", {
      licenseId,
      fingerprint: "laptop-1",
    })) as unknown as { licenseFile: string };
    const res = await run(
      "/usr/bin/python3",
      [path.join(ROOT, "test/e2e/python_license_file.py"), `127.0.0.1:${server.port}`, "laptop-1"],
      { input: issued.licenseFile },
    );
    expect(res.code, res.stderr).toBe(0);
    expect(JSON.parse(res.stdout)).toEqual({
      code: "VALID",
      valid: true,
      features: ["reports"],
      wrong_machine: "FINGERPRINT_MISMATCH",
      tampered: "BAD_SIGNATURE",
    });
  });

  it("licensd import streams a DataTools issuance log, reporting bad lines and importing the rest", async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), "licensd-import-"));
    const file = path.join(dir, "issued.jsonl");
    const row = (key: string, email: string) =>
      JSON.stringify({
        license_key: key,
        name: "Buyer",
        email,
        tier: "pro",
        issued_at: "2026-05-13T22:10:27Z",
        expires_at: "2031-05-13T22:10:27Z",
        blob: "DTLIC2:...",
      });
    writeFileSync(
      file,
      `${[
        row("DT1-CORE-5dd8e1db-d90c4656", "michael@example.com"),
        row("DT1-CORE-11111111-22222222", "ann@example.com"),
        "{not json",
        row("DT1-CORE-33333333-44444444", "broken-email"),
      ].join("\n")}\n`,
    );
    const res = await run(process.execPath, [
      path.join(ROOT, "bin/licensd.js"),
      "import",
      file,
      "--product",
      productId,
      "--key",
      adminKey,
      "--url",
      server.url,
    ]);
    expect(res.code, res.stderr).toBe(1);
    expect(res.stdout).toContain("received 3, imported 2 (2 new customers), failed 2");
    expect(res.stdout).toContain("line 3: UNREADABLE");
    expect(res.stdout).toContain("line 4: INVALID_EMAIL");
    expect(res.stderr).toContain("importing [");
    const check = await call(
      "licensd.licensing.v1.LicensingService/ValidateLicense",
      { key: "DT1-CORE-5dd8e1db-d90c4656" },
      null,
    );
    expect(check).toMatchObject({ valid: true, license: { customerEmail: "michael@example.com" } });
  });

  it("the Python client activates a machine over gRPC and verifies its lease offline", async () => {
    const res = await run("/usr/bin/python3", [
      path.join(ROOT, "test/e2e/python_lease.py"),
      `127.0.0.1:${server.port}`,
      key,
    ]);
    expect(res.code, res.stderr).toBe(0);
    expect(JSON.parse(res.stdout)).toEqual({
      machine: "py-host",
      code: "VALID",
      machine_id_matches: true,
      other_machine: "FINGERPRINT_MISMATCH",
      bad_input: "INVALID_ARGUMENT",
    });
  });

  it("buf curl reaches LicensingService through reflection", async () => {
    const res = await run(path.join(ROOT, "node_modules/.bin/buf"), [
      "curl",
      "--http2-prior-knowledge",
      "--protocol",
      "grpc",
      "-d",
      JSON.stringify({ key }),
      `${server.url}/licensd.licensing.v1.LicensingService/ValidateLicense`,
    ]);
    expect(res.code, res.stderr).toBe(0);
    expect(JSON.parse(res.stdout)).toMatchObject({ valid: true });
  });

  it("air-gapped activation: licensd activation request → respond → the Python client (licensd_client) verifies the response file offline", async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), "licensd-offline-"));
    const [req, resp] = [path.join(dir, "request.txt"), path.join(dir, "response.txt")];
    const cli = (args: string[]) => run(process.execPath, [path.join(ROOT, "bin/licensd.js"), "activation", ...args]);
    const { key } = await floatingLicense("offline");
    const wrote = await cli(["request", "--license-key", key, "--fingerprint", "vault-1", "--out", req]);
    expect(wrote.code, wrote.stderr).toBe(0);
    expect(readFileSync(req, "utf8")).not.toContain(key);
    const answered = await cli(["respond", req, "--out", resp, "--key", adminKey, "--url", server.url]);
    expect(answered.code, answered.stderr).toBe(0);
    expect(JSON.parse(answered.stdout)).toMatchObject({ fingerprint: "vault-1" });
    const py = (args: string[], input?: string) =>
      run("/usr/bin/python3", [path.join(ROOT, "test/e2e/python_offline.py"), ...args], { input });
    const res = await py(["verify", `127.0.0.1:${server.port}`, "vault-1"], readFileSync(resp, "utf8"));
    expect(res.code, res.stderr).toBe(0);
    expect(JSON.parse(res.stdout)).toEqual({ code: "VALID", offline: true, other_machine: "FINGERPRINT_MISMATCH" });

    // The Python client writes request files the server accepts too.
    const pyRequest = await py(["request", key.toLowerCase(), "vault-2"]);
    expect(pyRequest.code, pyRequest.stderr).toBe(0);
    writeFileSync(req, pyRequest.stdout);
    const again = await cli(["respond", req, "--out", resp, "--key", adminKey, "--url", server.url]);
    expect(again.code, again.stderr).toBe(0);
    expect(
      JSON.parse((await py(["verify", `127.0.0.1:${server.port}`, "vault-2"], readFileSync(resp, "utf8"))).stdout),
    ).toMatchObject({ code: "VALID", offline: true });
  });

  it("a Python agent on ConnectLease gets renewed leases, then the suspension pushed the moment curl makes it", async () => {
    const created = await floatingLicense("stream");
    await call("licensd.activation.v1.ActivationService/Activate", { key: created.key, fingerprint: "agent-1" }, null);
    const agent = spawn("/usr/bin/python3", [
      path.join(ROOT, "test/e2e/python_connect_lease.py"),
      `127.0.0.1:${server.port}`,
      created.key,
      "agent-1",
    ]);
    let stderr = "";
    agent.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    const lines = readline.createInterface({ input: agent.stdout })[Symbol.asyncIterator]();
    const next = async () =>
      JSON.parse(((await lines.next()).value as string | undefined) ?? `{"exit":${JSON.stringify(stderr)}}`) as unknown;
    expect(await next()).toEqual({ lease: "VALID", n: 1 });
    expect(await next()).toEqual({ lease: "VALID", n: 2 });
    const suspended = await run("curl", [
      "-s",
      "-X",
      "POST",
      `${server.url}/licensd.licensing.v1.LicensingService/SuspendLicense`,
      "-H",
      "content-type: application/json",
      "-H",
      `authorization: Bearer ${adminKey}`,
      "-d",
      JSON.stringify({ id: created.license.id }),
    ]);
    expect(JSON.parse(suspended.stdout)).toMatchObject({ license: { status: "LICENSE_STATUS_SUSPENDED" } });
    expect(await next()).toEqual({ revocation: "LICENSE_SUSPENDED" });
    expect(await next()).toEqual({ ended: true });
  });
});

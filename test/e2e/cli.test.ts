/*
 * The operator CLI as a user drives it: the built `licensd` (bin/licensd.js) spawned against a
 * real server on a real port, its output read as text (plain when piped), as --json, and by its
 * exit codes (0 ok, 1 server refused, 2 usage, 3 unreachable, 4 a check said no).
 */
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { createServer, type IncomingHttpHeaders, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import os from "node:os";
import path from "node:path";
import { verifyWebhook } from "@licensd/client";
import Stripe from "stripe";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freePort, ROOT, run, startServer, type ServerProcess } from "../support/server.js";
import { TcpProxy } from "../support/tcp-proxy.js";

let server: ServerProcess & { dropDatabase(): Promise<void> };
let adminKey = "";
let tenantId = "";
const dir = mkdtempSync(path.join(os.tmpdir(), "licensd-cli-"));
const BIN = path.join(ROOT, "bin/licensd.js");

beforeAll(async () => {
  // Webhook endpoints on 127.0.0.1 (the receiver of `licensd webhook`) are allowed.
  server = await startServer({ embedded: false, env: { LICENSD_WEBHOOK_ALLOW_PRIVATE: "true" } });
}, 120_000);
afterAll(async () => {
  await server?.stop();
  await server?.dropDatabase();
});

type Result = { code: number | null; stdout: string; stderr: string };

/** `licensd …` as the tenant's admin (LICENSD_URL and LICENSD_API_KEY set, as an operator's shell would). */
function licensd(args: string[], opts: { input?: string; env?: Record<string, string> } = {}): Promise<Result> {
  return run(process.execPath, [BIN, ...args], {
    input: opts.input,
    // An empty data dir: no development secrets file to fall back on.
    env: { LICENSD_URL: server.url, LICENSD_API_KEY: adminKey, LICENSD_DATA_DIR: dir, NO_COLOR: "", ...opts.env },
  });
}
const superAdmin = (args: string[]) => licensd(args, { env: { LICENSD_API_KEY: server.superAdminKey } });
const json = <T = Record<string, unknown>>(r: Result): T => {
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout) as T;
};
/** The value of `field: value` in plain output. */
const field = (out: string, name: string) => new RegExp(`^${name}: (.*)$`, "m").exec(out)?.[1];

let productId = "";
let policyId = "";
let customerId = "";
let licenseId = "";
let licenseKey = "";

describe("licensd: the command line itself", () => {
  it("prints its version, and usage errors name the flag with exit 2 and no stack trace", async () => {
    const { version } = JSON.parse(readFileSync(path.join(ROOT, "package.json"), "utf8")) as { version: string };
    const v = await licensd(["--version"]);
    expect(v.code).toBe(0);
    expect(v.stdout.trim()).toBe(version);
    const bad = await licensd(["license", "list", "--limit", "lots"]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain("option '--limit <n>' argument 'lots' is invalid");
    expect(bad.stderr).not.toMatch(/\n\s+at /);
    const badJson = await licensd(["license", "list", "--limit", "lots", "--json"]);
    expect(badJson.code).toBe(2);
    expect(JSON.parse(badJson.stdout)).toMatchObject({ error: { code: "usage", exitCode: 2 } });
    const unknown = await licensd(["licence", "list"]);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toContain("unknown command 'licence'");
    const group = await licensd(["license"]);
    expect(group.code).toBe(2);
    expect(group.stderr).toContain("Usage: licensd license");
  });

  it("an unreachable server is exit 3 with the URL, in text and in --json", async () => {
    const url = `http://127.0.0.1:${await freePort()}`;
    const res = await licensd(["tenant", "list", "--url", url]);
    expect(res.code).toBe(3);
    expect(res.stderr).toContain(`error: cannot reach licensd at ${url}: ECONNREFUSED`);
    expect(res.stderr).toContain("hint: is the server running? set --url or LICENSD_URL");
    const asJson = await licensd(["--json", "health", "--url", url]);
    expect(asJson.code).toBe(3);
    expect(JSON.parse(asJson.stdout)).toMatchObject({ error: { exitCode: 3 } });
    const notUrl = await licensd(["tenant", "list", "--url", "ftp://x"]);
    expect(notUrl.code).toBe(2);
    expect(notUrl.stderr).toContain("--url: not an http(s) URL");
  });

  it("health: SERVING exits 0, as text and --json", async () => {
    const res = await licensd(["health"]);
    expect(res.code, res.stderr).toBe(0);
    expect(res.stdout.trim()).toBe("SERVING");
    expect(json(await licensd(["health", "--json"]))).toMatchObject({ status: "SERVING", url: server.url });
  });
});

describe("licensd tenant and api-key", () => {
  it("creates a tenant and its admin key as the super-admin, lists and shows them", async () => {
    const created = json<{ tenant: { id: string; name: string } }>(
      await superAdmin(["tenant", "create", "--name", "CLI Co", "--json"]),
    );
    tenantId = created.tenant.id;
    expect(tenantId).toMatch(/^ten_/);
    const list = await superAdmin(["tenant", "list"]);
    expect(list.code, list.stderr).toBe(0);
    expect(list.stdout.split("\n")[0]).toBe("ID\tNAME\tCREATED");
    expect(list.stdout).toMatch(new RegExp(`^${tenantId}\tCLI Co\t`, "m"));
    const key = json<{ apiKey: { scopes: string[] }; secret: string }>(
      await superAdmin(["--tenant", tenantId, "api-key", "create", "--name", "ops", "--scope", "admin", "--json"]),
    );
    expect(key.apiKey.scopes).toEqual(["API_KEY_SCOPE_ADMIN"]);
    adminKey = key.secret;
    // The tenant's own key needs no --tenant.
    const keys = await licensd(["api-key", "list"]);
    expect(keys.code, keys.stderr).toBe(0);
    expect(keys.stdout).toMatch(/^key_\w+\tops\tadmin\t\S+\t\tactive$/m);
    const shown = await superAdmin(["tenant", "update", tenantId, "--name", "CLI Company"]);
    expect(field(shown.stdout, "name")).toBe("CLI Company");
  });

  it("refusals show the server's reason: a tenant key cannot list tenants; a bad id names the field", async () => {
    const denied = await licensd(["tenant", "list"]);
    expect(denied.code).toBe(1);
    expect(denied.stderr).toMatch(/^reason: [A-Z_]+$/m);
    expect(denied.stderr).toContain("super-admin");
    const badId = await superAdmin(["tenant", "show", "ten_nope"]);
    expect(badId.code).toBe(1);
    expect(badId.stderr).toMatch(/^error: id: /m);
    expect(badId.stderr).toContain("reason: INVALID_ARGUMENT");
    const noKey = await licensd(["product", "list"], { env: { LICENSD_API_KEY: "" } });
    expect(noKey.code).toBe(1);
    expect(noKey.stderr).toContain("reason: MISSING_API_KEY");
    expect(noKey.stderr).toContain("hint: give an API key: --api-key or LICENSD_API_KEY");
  });
});

describe("licensd product, policy and customer", () => {
  it("creates and lists them, as text and --json", async () => {
    const product = await licensd([
      "product",
      "create",
      "--code",
      "CLI",
      "--name",
      "CLI Pro",
      "--feature",
      "sso",
      "--feature",
      "seats:limit",
    ]);
    expect(product.code, product.stderr).toBe(0);
    expect(field(product.stdout, "features")).toBe("sso:flag:union, seats:limit:sum");
    productId = field(product.stdout, "id")!;
    const products = json<{ products: { id: string; code: string }[]; nextPageToken: string }>(
      await licensd(["product", "list", "--json"]),
    );
    expect(products.products).toEqual([expect.objectContaining({ id: productId, code: "CLI" })]);

    const policy = json<{ policy: { id: string; maxMachines: number; floating: boolean } }>(
      await licensd([
        "policy",
        "create",
        "--product",
        productId,
        "--name",
        "pro",
        "--duration",
        "365d",
        "--entitle",
        "sso",
        "--entitle",
        "seats=5",
        "--max-machines",
        "2",
        "--floating",
        "--json",
      ]),
    );
    policyId = policy.policy.id;
    expect(policy.policy).toMatchObject({ maxMachines: 2, floating: true });
    const policies = await licensd(["policy", "list", "--product", productId]);
    expect(policies.stdout).toMatch(new RegExp(`^${policyId}\tpro\t${productId}\t1y\t2\tsso,seats$`, "m"));

    const customer = await licensd(["customer", "create", "--name", "Ann", "--email", "ann@example.com"]);
    expect(customer.code, customer.stderr).toBe(0);
    customerId = field(customer.stdout, "id")!;
    const found = json<{ customers: { id: string }[] }>(
      await licensd(["customer", "list", "--email", "ann@example.com", "--json"]),
    );
    expect(found.customers.map((c) => c.id)).toEqual([customerId]);
    const updated = await licensd(["customer", "update", customerId, "--organization", "Ann Co"]);
    expect(field(updated.stdout, "organization")).toBe("Ann Co");
    expect(field(updated.stdout, "name")).toBe("Ann");
  });

  it("a bad flag value is a usage error naming the flag; a rule the server enforces shows its reason", async () => {
    const bad = await licensd(["policy", "create", "--product", productId, "--name", "x", "--duration", "3 weeks"]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain("option '--duration <d>' argument '3 weeks' is invalid");
    const nodeLocked = await licensd([
      "policy",
      "create",
      "--product",
      productId,
      "--name",
      "team",
      "--max-machines",
      "3",
    ]);
    expect(nodeLocked.code).toBe(1);
    expect(nodeLocked.stderr).toContain("reason: FLOATING_REQUIRED");
    const nothing = await licensd(["customer", "update", customerId]);
    expect(nothing.code).toBe(2);
    expect(nothing.stderr).toContain("nothing to change");
    const lower = await licensd(["--json", "product", "create", "--code", "cli", "--name", "x"]);
    expect(lower.code).toBe(1);
    expect(JSON.parse(lower.stdout)).toMatchObject({
      error: { reason: "INVALID_ARGUMENT", fieldViolations: [{ field: "code" }] },
    });
  });
});

describe("licensd policy basis flags", () => {
  it("set the basis strategies on create and, by mask, on update; a bad value names the flag", async () => {
    const created = json<{ policy: { id: string } & Record<string, unknown> }>(
      await licensd([
        "policy",
        "create",
        "--product",
        productId,
        "--name",
        "trial",
        "--duration",
        "14d",
        "--expiration-basis",
        "from-first-activation",
        "--heartbeat-basis",
        "from-first-heartbeat",
        "--renewal-basis",
        "from-now",
        "--transfer-strategy",
        "reset-expiry",
        "--json",
      ]),
    );
    expect(created.policy).toMatchObject({
      expirationBasis: "EXPIRATION_BASIS_FROM_FIRST_ACTIVATION",
      heartbeatBasis: "HEARTBEAT_BASIS_FROM_FIRST_HEARTBEAT",
      renewalBasis: "RENEWAL_BASIS_FROM_NOW",
      transferStrategy: "TRANSFER_STRATEGY_RESET_EXPIRY",
    });
    const updated = json<{ policy: Record<string, unknown> }>(
      await licensd(["policy", "update", created.policy.id, "--renewal-basis", "from-expiry", "--json"]),
    );
    expect(updated.policy).toMatchObject({
      expirationBasis: "EXPIRATION_BASIS_FROM_FIRST_ACTIVATION",
      renewalBasis: "RENEWAL_BASIS_FROM_EXPIRY",
    });
    const bad = await licensd(["policy", "update", created.policy.id, "--expiration-basis", "whenever"]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain("--expiration-basis");
  });
});

describe("licensd policy machine uniqueness and core flags", () => {
  it("set the scope and the core limit on create and, by mask, on update; a bad value names the flag", async () => {
    const created = json<{ policy: { id: string } & Record<string, unknown> }>(
      await licensd([
        "policy",
        "create",
        "--product",
        productId,
        "--name",
        "server-trial",
        "--machine-uniqueness",
        "product",
        "--max-cores",
        "16",
        "--json",
      ]),
    );
    expect(created.policy).toMatchObject({ machineUniquenessScope: "MACHINE_UNIQUENESS_SCOPE_PRODUCT", maxCores: 16 });
    const updated = json<{ policy: Record<string, unknown> }>(
      await licensd(["policy", "update", created.policy.id, "--max-cores", "0", "--json"]),
    );
    expect(updated.policy).toMatchObject({ machineUniquenessScope: "MACHINE_UNIQUENESS_SCOPE_PRODUCT" });
    expect(updated.policy.maxCores ?? 0).toBe(0);
    const bad = await licensd(["policy", "update", created.policy.id, "--machine-uniqueness", "galaxy"]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain("--machine-uniqueness");
  });
});

describe("licensd license", () => {
  it("creates, lists, shows, suspends, validates, reinstates, renews and transfers a license", async () => {
    const created = json<{ license: { id: string; status: string }; key: string }>(
      await licensd(["license", "create", "--policy", policyId, "--customer", customerId, "--json"]),
    );
    licenseId = created.license.id;
    licenseKey = created.key;
    expect(created.license.status).toBe("LICENSE_STATUS_ACTIVE");
    const list = await licensd(["license", "list", "--customer", customerId]);
    expect(list.stdout.split("\n")[0]).toBe("ID\tSTATUS\tKEY\tPOLICY\tCUSTOMER\tEXPIRES");
    expect(list.stdout).toMatch(
      new RegExp(`^${licenseId}\tactive\tCLI-\\S+\t${policyId}\t${customerId}\t20\\d\\d-`, "m"),
    );

    const valid = await licensd(["license", "validate", licenseKey, "--feature", "sso"]);
    expect(valid.code, valid.stderr).toBe(0);
    expect(field(valid.stdout, "valid")).toBe("true");
    // The signed answer is checked against the published keys and this call's nonce.
    expect(field(valid.stdout, "answer")).toMatch(/^VERIFIED \(signed by sk_\w+\)$/);
    expect(field(valid.stdout, "features")).toBe("seats, sso");

    expect(field((await licensd(["license", "suspend", licenseId])).stdout, "status")).toBe("suspended");
    const suspended = await licensd(["license", "validate", licenseKey, "--json"]);
    expect(suspended.code).toBe(4);
    expect(JSON.parse(suspended.stdout)).toMatchObject({
      valid: false,
      code: "VALIDATION_CODE_SUSPENDED",
      answer: "VERIFIED",
    });
    expect(field((await licensd(["license", "reinstate", licenseId])).stdout, "status")).toBe("active");

    const before = json<{ license: { expireTime: string } }>(await licensd(["license", "show", licenseId, "--json"]));
    const renewed = json<{ license: { expireTime: string } }>(await licensd(["license", "renew", licenseId, "--json"]));
    expect(Date.parse(renewed.license.expireTime)).toBeGreaterThan(Date.parse(before.license.expireTime));

    const other = json<{ customer: { id: string } }>(
      await licensd(["customer", "create", "--name", "Bob", "--email", "bob@example.com", "--json"]),
    );
    const moved = await licensd(["license", "transfer", licenseId, "--customer", other.customer.id]);
    expect(field(moved.stdout, "customer_id")).toBe(other.customer.id);
    await licensd(["license", "transfer", licenseId, "--customer", customerId]);
  });

  it("issues a license file to a path", async () => {
    const out = path.join(dir, "license.txt");
    const res = await licensd(["license", "file", licenseId, "--out", out, "--fingerprint", "m-1"]);
    expect(res.code, res.stderr).toBe(0);
    expect(readFileSync(out, "utf8")).toMatch(/^licensd1\.[\w-]+\.[\w-]+\n$/);
    expect(field(res.stdout, "kid")).toMatch(/^sk_/);
  });

  it("license user add, list and remove; a policy's max users and user scope; validate --user", async () => {
    const policy = json<{ policy: { id: string; maxUsers: number; requireUserScope: boolean } }>(
      await licensd([
        "policy",
        "create",
        "--product",
        productId,
        "--name",
        "named-users",
        "--max-users",
        "1",
        "--require-user-scope",
        "yes",
        "--json",
      ]),
    );
    expect(policy.policy).toMatchObject({ maxUsers: 1, requireUserScope: true });
    const created = json<{ license: { id: string }; key: string }>(
      await licensd(["license", "create", "--policy", policy.policy.id, "--customer", customerId, "--json"]),
    );
    const id = created.license.id;
    const added = await licensd(["license", "user", "add", id, "Ada@Example.com", "--name", "Ada"]);
    expect(added.code, added.stderr).toBe(0);
    expect(field(added.stdout, "user")).toBe("ada@example.com");
    const full = await licensd(["license", "user", "add", id, "bob"]);
    expect(full.code).toBe(1);
    expect(full.stderr).toContain("reason: LICENSE_USERS_LIMIT");
    const list = await licensd(["license", "user", "list", id]);
    expect(list.stdout.split("\n")[0]).toBe("ID\tUSER\tNAME\tADDED");
    expect(list.stdout).toMatch(/^lusr_\w+\tada@example\.com\tAda\t20\d\d-/m);

    const required = await licensd(["license", "validate", created.key, "--json"]);
    expect(required.code).toBe(4);
    expect(JSON.parse(required.stdout)).toMatchObject({ code: "VALIDATION_CODE_USER_SCOPE_REQUIRED" });
    const ok = await licensd(["license", "validate", created.key, "--user", "ada@example.com"]);
    expect(ok.code, ok.stderr).toBe(0);
    const other = await licensd(["license", "validate", created.key, "--user", "bob", "--json"]);
    expect(JSON.parse(other.stdout)).toMatchObject({ code: "VALIDATION_CODE_USER_SCOPE_MISMATCH", valid: false });

    const removed = await licensd(["license", "user", "remove", id, "ADA@example.com", "--json"]);
    expect(json<{ licenseUser: { user: string } }>(removed).licenseUser.user).toBe("ada@example.com");
    expect(json<{ licenseUsers: unknown[] }>(await licensd(["license", "user", "list", id, "--json"]))).toMatchObject({
      licenseUsers: [],
    });
    const updated = await licensd(["policy", "update", policy.policy.id, "--require-user-scope", "no", "--json"]);
    expect(json<{ policy: { requireUserScope?: boolean } }>(updated).policy.requireUserScope ?? false).toBe(false);
    const bad = await licensd(["policy", "update", policy.policy.id, "--require-user-scope", "maybe"]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain("--require-user-scope");
  });

  it("a policy's process limit; process list, show and kill", async () => {
    const product = json<{ product: { id: string } }>(
      await licensd(["product", "create", "--code", "PRC", "--name", "Procs", "--json"]),
    );
    const policy = json<{
      policy: { id: string; maxProcesses: number; processLeasingStrategy: string; processHeartbeatDuration: string };
    }>(
      await licensd([
        "policy",
        "create",
        "--product",
        product.product.id,
        "--name",
        "one-process",
        "--floating",
        "--max-processes",
        "1",
        "--process-leasing",
        "per-license",
        "--process-heartbeat",
        "2m",
        "--json",
      ]),
    );
    expect(policy.policy).toMatchObject({
      maxProcesses: 1,
      processLeasingStrategy: "PROCESS_LEASING_STRATEGY_PER_LICENSE",
      processHeartbeatDuration: "120s",
    });
    const created = json<{ license: { id: string }; key: string }>(
      await licensd(["license", "create", "--policy", policy.policy.id, "--customer", customerId, "--json"]),
    );
    // The app's side, over Connect JSON as any HTTP client sends it.
    const call = async (method: string, body: unknown) => {
      const res = await fetch(`${server.url}/licensd.activation.v1.ActivationService/${method}`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(body),
      });
      return { status: res.status, body: (await res.json()) as Record<string, unknown> };
    };
    expect((await call("Activate", { key: created.key, fingerprint: "fp-cli" })).status).toBe(200);
    const spawned = await call("SpawnProcess", { key: created.key, fingerprint: "fp-cli", pid: "4242" });
    expect(spawned.status).toBe(200);
    const over = await call("SpawnProcess", { key: created.key, fingerprint: "fp-cli", pid: "4243" });
    expect(over.body).toMatchObject({ code: "failed_precondition" });
    expect(JSON.stringify(over.body)).toContain("PROCESS_LIMIT_REACHED");

    const list = await licensd(["process", "list", "--license", created.license.id]);
    expect(list.code, list.stderr).toBe(0);
    expect(list.stdout.split("\n")[0]).toBe("ID\tMACHINE\tPID\tSTATUS\tLAST PING");
    const id = /^(proc_\w+)\tmach_\w+\t4242\talive\t/m.exec(list.stdout)?.[1];
    expect(id, list.stdout).toBeTruthy();
    const shown = await licensd(["process", "show", id!]);
    expect(field(shown.stdout, "pid")).toBe("4242");
    const killed = json<{ process: { id: string } }>(await licensd(["process", "kill", id!, "--json"]));
    expect(killed.process.id).toBe(id);
    expect(json<{ processes: unknown[] }>(await licensd(["process", "list", "--json"]))).toMatchObject({
      processes: [],
    });
    expect((await call("SpawnProcess", { key: created.key, fingerprint: "fp-cli", pid: "4243" })).status).toBe(200);
    const bad = await licensd(["policy", "update", policy.policy.id, "--process-leasing", "per-tenant"]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain("--process-leasing");
  });

  it("a policy's component matching; validate --component; machine show lists the components", async () => {
    const policy = json<{ policy: { id: string; componentMatchingStrategy: string; requireComponentsScope: boolean } }>(
      await licensd([
        "policy",
        "create",
        "--product",
        productId,
        "--name",
        "components",
        "--floating",
        "--component-matching",
        "match-two",
        "--require-components-scope",
        "yes",
        "--json",
      ]),
    );
    expect(policy.policy).toMatchObject({
      componentMatchingStrategy: "COMPONENT_MATCHING_STRATEGY_MATCH_TWO",
      requireComponentsScope: true,
    });
    const created = json<{ license: { id: string }; key: string }>(
      await licensd(["license", "create", "--policy", policy.policy.id, "--customer", customerId, "--json"]),
    );
    // The SDK activates (Connect JSON), registering the machine's components.
    const res = await fetch(`${server.url}/licensd.activation.v1.ActivationService/Activate`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        key: created.key,
        fingerprint: "m-comp",
        components: [
          { name: "board", fingerprint: "b-1" },
          { name: "disk", fingerprint: "d-1" },
          { name: "cpu", fingerprint: "c-1" },
        ],
      }),
    });
    expect(res.status).toBe(200);
    const { machine } = (await res.json()) as { machine: { id: string } };
    const shown = await licensd(["machine", "show", machine.id]);
    expect(field(shown.stdout, "components")).toBe("board:b-1, cpu:c-1, disk:d-1");

    const required = await licensd(["license", "validate", created.key, "--fingerprint", "m-comp", "--json"]);
    expect(required.code).toBe(4);
    expect(JSON.parse(required.stdout)).toMatchObject({ code: "VALIDATION_CODE_COMPONENTS_SCOPE_REQUIRED" });
    const one = ["--component", "board=b-1", "--component", "disk=other"];
    const mismatch = await licensd(["license", "validate", created.key, "--fingerprint", "m-comp", ...one, "--json"]);
    expect(mismatch.code).toBe(4);
    expect(JSON.parse(mismatch.stdout)).toMatchObject({ code: "VALIDATION_CODE_COMPONENTS_SCOPE_MISMATCH" });
    const two = ["--component", "board=b-1", "--component", "disk=d-1"];
    const ok = await licensd(["license", "validate", created.key, "--fingerprint", "m-comp", ...two]);
    expect(ok.code, ok.stderr).toBe(0);
    expect(field(ok.stdout, "code")).toBe("valid");

    const updated = await licensd([
      "policy",
      "update",
      policy.policy.id,
      "--component-matching",
      "match-all",
      "--json",
    ]);
    expect(json<{ policy: { componentMatchingStrategy: string } }>(updated).policy.componentMatchingStrategy).toBe(
      "COMPONENT_MATCHING_STRATEGY_MATCH_ALL",
    );
    const bad = await licensd(["license", "validate", created.key, "--fingerprint", "m-comp", "--component", "board"]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain("--component");
    const badMatching = await licensd(["policy", "update", policy.policy.id, "--component-matching", "most"]);
    expect(badMatching.code).toBe(2);
  });

  it("errors: an unknown license shows LICENSE_NOT_FOUND; a bad --status is a usage error", async () => {
    const missing = await licensd(["license", "show", "lic_00000000000000000000000000"]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain("reason: LICENSE_NOT_FOUND");
    const asJson = await licensd(["license", "show", "lic_00000000000000000000000000", "--json"]);
    expect(JSON.parse(asJson.stdout)).toMatchObject({ error: { reason: "LICENSE_NOT_FOUND", code: "not_found" } });
    const bad = await licensd(["license", "list", "--status", "paused"]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain("one of active, suspended, expired, revoked");
  });
});

describe("licensd activation, lease, machine and keys", () => {
  it("air-gapped activation, then lease verify offline on the real lease, with saved keys", async () => {
    const [req, resp, keys] = ["request.txt", "response.txt", "keys.json"].map((f) => path.join(dir, f));
    const offline = { LICENSD_URL: `http://127.0.0.1:${await freePort()}` };
    // The offline machine: no server needed.
    const wrote = await licensd(
      ["activation", "request", "--license-key", licenseKey, "--fingerprint", "vault-1", "--out", req],
      { env: offline },
    );
    expect(wrote.code, wrote.stderr).toBe(0);
    expect(readFileSync(req, "utf8")).not.toContain(licenseKey);
    const answered = json<{ machineId: string; fingerprint: string }>(
      await licensd(["activation", "respond", req, "--out", resp, "--json"]),
    );
    expect(answered).toMatchObject({ fingerprint: "vault-1", machineId: expect.stringMatching(/^mach_/) });
    const saved = await licensd(["keys", "list", "--json"]);
    writeFileSync(keys, saved.stdout);

    const verified = await licensd(["lease", "verify", resp, "--keys", keys, "--fingerprint", "vault-1"], {
      env: offline,
    });
    expect(verified.code, verified.stderr).toBe(0);
    expect(field(verified.stdout, "code")).toBe("VALID");
    expect(field(verified.stdout, "licenseId")).toBe(licenseId);
    const wrongMachine = await licensd(
      ["lease", "verify", resp, "--keys", keys, "--fingerprint", "vault-2", "--json"],
      { env: offline },
    );
    expect(wrongMachine.code).toBe(4);
    expect(JSON.parse(wrongMachine.stdout)).toMatchObject({ valid: false, code: "FINGERPRINT_MISMATCH" });
    const lines = readFileSync(resp, "utf8").trim().split(".");
    writeFileSync(path.join(dir, "tampered.txt"), `${lines[0]}.${lines[1]}.${"A".repeat(86)}`);
    const tampered = await licensd(["lease", "verify", path.join(dir, "tampered.txt"), "--fingerprint", "vault-1"]);
    expect(tampered.code).toBe(4);
    expect(field(tampered.stdout, "code")).toBe("BAD_SIGNATURE");
    const noKeys = await licensd(["lease", "verify", resp, "--keys", req]);
    expect(noKeys.code).toBe(2);
    expect(noKeys.stderr).toContain(`--keys ${req}: not a signing-key list`);

    const machines = await licensd(["machine", "list", "--license", licenseId]);
    expect(machines.stdout.split("\n")[0]).toBe("ID\tLICENSE\tFINGERPRINT\tHOSTNAME\tSTATUS\tLAST HEARTBEAT");
    expect(machines.stdout).toMatch(new RegExp(`^${answered.machineId}\t${licenseId}\tvault-1\t`, "m"));
    const deactivated = await licensd(["machine", "deactivate", answered.machineId, "--json"]);
    expect(json<{ machine: { id: string } }>(deactivated).machine.id).toBe(answered.machineId);
    const none = json<{ machines: unknown[] }>(await licensd(["machine", "list", "--license", licenseId, "--json"]));
    expect(none.machines).toEqual([]);
    const quota = await licensd(["usage", "quota", "--license", licenseId]);
    expect(quota.code, quota.stderr).toBe(0);
    expect(quota.stdout.split("\n")[0]).toBe("LICENSE\tMETRIC\tAGENT\tUSED\tLIMIT\tSTATE\tPERIOD END");
    const again = await licensd(["machine", "deactivate", answered.machineId]);
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(/^reason: \w+_NOT_FOUND$/m);
  });

  it("keys list shows the active signing key", async () => {
    const res = await licensd(["keys", "list"]);
    expect(res.code, res.stderr).toBe(0);
    expect(res.stdout).toMatch(/^sk_\w+\tEd25519\tactive\t/m);
  });
});

describe("licensd meter and usage", () => {
  const events = (n: number, quantity = 1, metric = "calls") =>
    Array.from({ length: n }, () => JSON.stringify({ license_id: licenseId, metric, quantity })).join("\n");
  const summary = async () =>
    json<{ total: string }>(await licensd(["usage", "summary", "--license", licenseId, "--metric", "calls", "--json"]));

  it("creates a meter, sends events from stdin, and summarises them", async () => {
    const meter = await licensd([
      "meter",
      "create",
      "--product",
      productId,
      "--metric",
      "calls",
      "--aggregation",
      "sum",
    ]);
    expect(meter.code, meter.stderr).toBe(0);
    expect(field(meter.stdout, "aggregation")).toBe("sum");
    const meters = json<{ meters: { metric: string }[] }>(await licensd(["meter", "list", "--json"]));
    expect(meters.meters.map((m) => m.metric)).toEqual(["calls"]);

    const sent = await licensd(["usage", "send", "--json"], {
      input: `${events(3, 2)}\n\nnot json\n${events(1, 1, "nope")}\n`,
    });
    expect(sent.code).toBe(1); // two lines were refused
    expect(JSON.parse(sent.stdout)).toMatchObject({
      sent: 4,
      accepted: 3,
      rejected: 2,
      rejections: [
        { line: 5, reason: "UNREADABLE" },
        { line: 6, reason: "UNKNOWN_METRIC" },
      ],
    });
    expect((await summary()).total).toBe("6");
    const table = await licensd(["usage", "summary", "--license", licenseId, "--metric", "calls"]);
    expect(table.stdout).toMatch(/^START\tVALUE\tEVENTS\n\d{4}-\d\d-\d\dT00:00:00Z\t6\t3\ntotal \(sum\): 6\n$/);
  });

  it("resumes an interrupted send: after a kill mid-stream, the re-run sends the rest and each event counts once", async () => {
    const before = Number((await summary()).total);
    const n = 20_000;
    const file = path.join(dir, "usage.jsonl");
    writeFileSync(file, `${events(n)}\n`);
    const state = `${file}.licensd-state`;
    const child = spawn(process.execPath, [BIN, "usage", "send", file, "--batch-size", "50"], {
      env: { ...process.env, LICENSD_URL: server.url, LICENSD_API_KEY: adminKey },
      stdio: "ignore",
    });
    const exited = new Promise((resolve) => child.once("exit", resolve));
    // Killed once some batches were acknowledged (and more are in flight).
    let ackedAtKill = 0;
    for (let i = 0; i < 600 && ackedAtKill === 0; i++) {
      await new Promise((r) => setTimeout(r, 25));
      if (existsSync(state))
        ackedAtKill = (JSON.parse(readFileSync(state, "utf8")) as { ackedLines: number }).ackedLines;
    }
    child.kill("SIGKILL");
    await exited;
    expect(ackedAtKill).toBeGreaterThan(0);
    const acked = (JSON.parse(readFileSync(state, "utf8")) as { ackedLines: number }).ackedLines;
    expect(acked).toBeLessThan(n);

    const rerun = json<{ sent: number; skipped: number; accepted: number; duplicates: number; lines: number }>(
      await licensd(["usage", "send", file, "--json"]),
    );
    expect(rerun.skipped).toBe(acked);
    expect(rerun.sent).toBe(n - acked);
    expect(rerun.accepted + rerun.duplicates).toBe(n - acked);
    expect(rerun.lines).toBe(n);
    expect(Number((await summary()).total)).toBe(before + n);
    // A third run finds everything acknowledged and sends nothing.
    expect(json<{ sent: number }>(await licensd(["usage", "send", file, "--json"])).sent).toBe(0);
    // A changed prefix is refused rather than half-resent.
    writeFileSync(file, `${events(1, 7)}\n${events(n)}\n`);
    const changed = await licensd(["usage", "send", file]);
    expect(changed.code).toBe(2);
    expect(changed.stderr).toContain("changed since they were sent");
  });

  it("survives a dropped connection: reconnects, resends the unacknowledged batches, each event counts once", async () => {
    const before = Number((await summary()).total);
    const n = 20_000;
    const file = path.join(dir, "usage-cut.jsonl");
    writeFileSync(file, `${events(n)}\n`);
    const state = `${file}.licensd-state`;
    const target = new URL(server.url);
    const proxy = new TcpProxy({ host: target.hostname, port: Number(target.port) });
    const port = await proxy.start();
    const sending = licensd(["usage", "send", file, "--batch-size", "50", "--json"], {
      env: { LICENSD_URL: `http://127.0.0.1:${port}` },
    });
    let ackedAtCut = 0;
    let res: Result;
    try {
      // Cut once some batches were acknowledged (and more are in flight), then let it back in.
      for (let i = 0; i < 600 && ackedAtCut === 0; i++) {
        await new Promise((r) => setTimeout(r, 25));
        if (existsSync(state))
          ackedAtCut = (JSON.parse(readFileSync(state, "utf8")) as { ackedLines: number }).ackedLines;
      }
      await proxy.cut();
      await new Promise((r) => setTimeout(r, 300));
      await proxy.start(port);
      res = await sending;
    } finally {
      await proxy.cut();
    }
    expect(ackedAtCut).toBeGreaterThan(0);
    expect(ackedAtCut).toBeLessThan(n);
    const out = json<{
      sent: number;
      accepted: number;
      duplicates: number;
      rejected: number;
      reconnects: number;
      lines: number;
    }>(res);
    expect(out).toMatchObject({ sent: n, rejected: 0, lines: n });
    expect(out.reconnects).toBeGreaterThanOrEqual(1);
    expect(out.accepted + out.duplicates).toBe(n);
    expect(res.stderr).toContain("warning: stream broken");
    expect((JSON.parse(readFileSync(state, "utf8")) as { ackedLines: number }).ackedLines).toBe(n);
    expect(Number((await summary()).total)).toBe(before + n);
  });

  it("gives up on an unreachable server after --max-retry-time (exit 3); a refused key ends it at once (exit 1)", async () => {
    const file = path.join(dir, "usage-down.jsonl");
    writeFileSync(file, `${events(3)}\n`);
    const url = `http://127.0.0.1:${await freePort()}`;
    const t0 = Date.now();
    const down = await licensd(["usage", "send", file, "--max-retry-time", "2s"], { env: { LICENSD_URL: url } });
    expect(down.code, down.stderr).toBe(3);
    expect(down.stderr).toContain(`error: cannot reach licensd at ${url}`);
    expect(down.stderr).toContain("gave up after retrying for 2s; 0 lines acknowledged");
    expect(Date.now() - t0).toBeGreaterThanOrEqual(1500);
    const refused = await licensd(["usage", "send", file], { env: { LICENSD_API_KEY: "not-a-key" } });
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/^reason: [A-Z_]+$/m);
    expect(refused.stderr).not.toContain("stream broken");
    const bad = await licensd(["usage", "send", file, "--max-retry-time", "soon"]);
    expect(bad.code).toBe(2);
  });

  it("quota, events, and errors: a bad aggregation names the flag; an unknown meter shows its reason", async () => {
    const evts = await licensd(["usage", "events", "--license", licenseId, "--limit", "2"]);
    expect(evts.stdout.split("\n")[0]).toBe("TIME\tLICENSE\tMETRIC\tQUANTITY\tAGENT\tIDEMPOTENCY KEY");
    expect(evts.stdout.trim().split("\n")).toHaveLength(3);
    expect(evts.stderr).toMatch(/^more: --page-token \S+/m);
    const bad = await licensd(["meter", "create", "--product", productId, "--metric", "x", "--aggregation", "avg"]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain("option '--aggregation <agg>' argument 'avg' is invalid");
    const missing = await licensd(["meter", "show", "mtr_00000000000000000000000000"]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/^reason: METER_NOT_FOUND$/m);
  });
});

describe("licensd anomaly, audit and import", () => {
  it("anomaly list and resolve", async () => {
    const list = await licensd(["anomaly", "list"]);
    expect(list.code, list.stderr).toBe(0);
    expect(list.stdout).toBe("ID\tLICENSE\tMETRIC\tDAY\tVALUE\tZ\tSEVERITY\tSTATE\n");
    expect(json(await licensd(["anomaly", "list", "--unresolved", "--json"]))).toEqual({
      anomalies: [],
      nextPageToken: "",
    });
    const missing = await licensd(["anomaly", "resolve", "anm_00000000000000000000000000", "--note", "ok"]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain("reason: ANOMALY_NOT_FOUND");
  });

  it("audit list, tail and verify", async () => {
    const list = await licensd(["audit", "list", "--type", "license.", "--limit", "3"]);
    expect(list.stdout.split("\n")[0]).toBe("SEQ\tTIME\tTYPE\tSUBJECT\tACTOR\tID");
    expect(list.stdout).toMatch(new RegExp(`^\\d+\t\\S+\tlicense\\.created\t${licenseId}\t`, "m"));
    const all = json<{ events: { seq: string }[]; nextPageToken: string }>(
      await licensd(["audit", "list", "--limit", "2", "--json"]),
    );
    expect(all.events.map((e) => e.seq)).toEqual(["1", "2"]);
    expect(all.nextPageToken).not.toBe("");
    const tail = await licensd(["audit", "tail", "--after-seq", "0", "--count", "2", "--json"]);
    expect(tail.code, tail.stderr).toBe(0);
    expect(
      tail.stdout
        .trim()
        .split("\n")
        .map((l) => (JSON.parse(l) as { seq: string }).seq),
    ).toEqual(["1", "2"]);
    const verify = await licensd(["audit", "verify", "--json"]);
    expect(json<{ ok: boolean }>(verify).ok).toBe(true);
    const bad = await licensd(["audit", "verify", "--seq", "0"]);
    expect(bad.code).toBe(2);
  });

  it("import FILE: imports the good rows, reports the bad ones by line", async () => {
    const file = path.join(dir, "issued.jsonl");
    const row = (key: string, email: string) =>
      JSON.stringify({ license_key: key, name: "Buyer", email, tier: "pro", expires_at: "2031-05-13T22:10:27Z" });
    writeFileSync(file, `${row("DT1-CORE-aaaa1111-bbbb2222", "c@example.com")}\n{oops\n`);
    const res = await licensd(["import", file, "--product", productId, "--json"]);
    expect(res.code).toBe(1);
    expect(JSON.parse(res.stdout)).toMatchObject({ imported: 1, failed: 1, errors: [{ line: 2 }] });
    const missing = await licensd(["import", path.join(dir, "nope.jsonl"), "--product", productId]);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain("no such file");
  });
});

describe("licensd webhook", () => {
  /** A receiver on 127.0.0.1: records every POST, answers with `status`. */
  type Received = { headers: IncomingHttpHeaders; body: string };
  const received: Received[] = [];
  let status = 200;
  let receiver: Server;
  let hookUrl = "";
  let endpointId = "";
  let secret = "";
  // A tenant of its own, so this block runs alone (`-t webhook`) and its lists hold only its endpoints.
  let hookKey = "";
  const hooks = (args: string[]) => licensd(args, { env: { LICENSD_API_KEY: hookKey } });
  beforeAll(async () => {
    const tenant = json<{ tenant: { id: string } }>(
      await superAdmin(["tenant", "create", "--name", "Hooks", "--json"]),
    );
    hookKey = json<{ secret: string }>(
      await superAdmin(["--tenant", tenant.tenant.id, "api-key", "create", "--name", "hooks", "--json"]),
    ).secret;
    receiver = createServer((req, res) => {
      let body = "";
      req.setEncoding("utf8");
      req.on("data", (chunk: string) => (body += chunk));
      req.on("end", () => {
        received.push({ headers: req.headers, body });
        res.writeHead(status, { "content-type": "text/plain" }).end(status < 300 ? "ok" : "broken");
      });
    });
    await new Promise<void>((resolve) => receiver.listen(0, "127.0.0.1", resolve));
    hookUrl = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hook`;
  });
  afterAll(() => new Promise<void>((resolve) => receiver?.close(() => resolve())));
  /** The requests carrying webhook-id `id` (the dispatcher may send the tenant's other events too). */
  const withId = (id: string) => received.filter((r) => r.headers["webhook-id"] === id);
  /** The attempt rows (tab-separated, after the header) that follow a delivery's fields. */
  const attempts = (out: string) => out.split("\n\n")[1]?.trim().split("\n").slice(1) ?? [];

  it("create prints the secret once; list and show never do", async () => {
    const created = await hooks([
      "webhook",
      "create",
      "--endpoint-url",
      hookUrl,
      "--description",
      "CLI hook",
      "--event-type",
      "license.*",
    ]);
    expect(created.code, created.stderr).toBe(0);
    endpointId = field(created.stdout, "id")!;
    secret = field(created.stdout, "secret")!;
    expect(endpointId).toMatch(/^whe_[0-9a-z]{26}$/);
    expect(secret).toMatch(/^whsec_[A-Za-z0-9+/]{43}=$/);
    expect(field(created.stdout, "url")).toBe(hookUrl);
    expect(field(created.stdout, "event_types")).toBe("license.*");
    expect(field(created.stdout, "enabled")).toBe("true");
    expect(created.stderr).toContain("keep the secret now");

    const list = await hooks(["webhook", "list"]);
    expect(list.code, list.stderr).toBe(0);
    expect(list.stdout.split("\n")[0]).toBe("ID\tURL\tEVENT TYPES\tSTATUS\tDISABLED REASON\tDESCRIPTION");
    expect(list.stdout).toContain(`${endpointId}\t${hookUrl}\tlicense.*\tenabled\t\tCLI hook\n`);
    const shown = await hooks(["webhook", "show", endpointId, "--json"]);
    expect(json<{ endpoint: { id: string } }>(shown).endpoint.id).toBe(endpointId);
    for (const out of [list.stdout, shown.stdout, (await hooks(["webhook", "get", endpointId])).stdout])
      expect(out).not.toContain(secret);
  });

  it("test: the receiver gets a signed POST that verifyWebhook accepts; deliveries and delivery show it", async () => {
    const sent = await hooks(["webhook", "test", endpointId]);
    expect(sent.code, sent.stderr).toBe(0);
    expect(field(sent.stdout, "event_type")).toBe("webhook.test");
    expect(field(sent.stdout, "status")).toBe("succeeded");
    const deliveryId = field(sent.stdout, "id")!;
    const eventId = field(sent.stdout, "event_id")!;
    expect(deliveryId).toMatch(/^whd_/);
    expect(sent.stdout.split("\n\n")[1]?.split("\n")[0]).toBe("#\tTIME\tHTTP\tLATENCY MS\tERROR REASON\tERROR\tMANUAL");
    expect(attempts(sent.stdout)).toEqual([expect.stringMatching(/^1\t\S+Z\t200\t\d+\t\t\tyes$/)]);

    // The attempt was made before the call returned.
    const [request] = withId(eventId);
    expect(request, "the receiver got no request with the delivery's webhook-id").toBeDefined();
    expect(request.headers["content-type"]).toMatch(/^application\/json/);
    const verified = verifyWebhook<{ type: string }>(request.body, request.headers, secret);
    expect(verified).toMatchObject({ ok: true, id: eventId, event: { type: "webhook.test" } });
    const forged = `whsec_${Buffer.alloc(32, 1).toString("base64")}`;
    expect(verifyWebhook(request.body, request.headers, forged)).toMatchObject({ ok: false, reason: "BAD_SIGNATURE" });

    const list = await hooks(["webhook", "deliveries", "--endpoint", endpointId, "--status", "succeeded"]);
    expect(list.code, list.stderr).toBe(0);
    expect(list.stdout.split("\n")[0]).toBe("ID\tENDPOINT\tEVENT TYPE\tSTATUS\tATTEMPTS\tLAST HTTP\tNEXT ATTEMPT");
    expect(list.stdout).toContain(`${deliveryId}\t${endpointId}\twebhook.test\tsucceeded\t1\t200\t\n`);
    const failed = json<{ deliveries: unknown[] }>(
      await hooks(["webhook", "deliveries", "--endpoint", endpointId, "--status", "failed", "--json"]),
    );
    expect(failed.deliveries).toEqual([]);
    const one = await hooks(["webhook", "delivery", deliveryId]);
    expect(one.code, one.stderr).toBe(0);
    expect(field(one.stdout, "endpoint_id")).toBe(endpointId);
    expect(attempts(one.stdout)).toHaveLength(1);
    const bad = await hooks(["webhook", "deliveries", "--status", "lost"]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain("one of pending, succeeded, failed");
  });

  it("redeliver: one more attempt with the same webhook-id, shown last", async () => {
    const sent = json<{ delivery: { id: string; eventId: string } }>(
      await hooks(["webhook", "test", endpointId, "--json"]),
    );
    const res = await hooks(["webhook", "redeliver", sent.delivery.id]);
    expect(res.code, res.stderr).toBe(0);
    expect(field(res.stdout, "attempt_count")).toBe("2");
    expect(attempts(res.stdout)).toEqual([
      expect.stringMatching(/^1\t.*\t200\t/),
      expect.stringMatching(/^2\t.*\t200\t\d+\t\t\tyes$/),
    ]);
    const requests = withId(sent.delivery.eventId);
    expect(requests).toHaveLength(2);
    expect(requests[1].body).toBe(requests[0].body);
    expect(verifyWebhook(requests[1].body, requests[1].headers, secret)).toMatchObject({ ok: true });
  });

  it("rotate-secret: prints the new secret once; the old one signs too for --overlap, not at all with 0", async () => {
    const rotated = json<{ endpoint: { previousSecretExpireTime: string }; secret: string }>(
      await hooks(["webhook", "rotate-secret", endpointId, "--overlap", "1h", "--json"]),
    );
    expect(rotated.secret).toMatch(/^whsec_/);
    expect(rotated.secret).not.toBe(secret);
    expect(Date.parse(rotated.endpoint.previousSecretExpireTime) - Date.now()).toBeGreaterThan(50 * 60_000);
    const both = json<{ delivery: { eventId: string } }>(await hooks(["webhook", "test", endpointId, "--json"]));
    const [signedTwice] = withId(both.delivery.eventId);
    expect(verifyWebhook(signedTwice.body, signedTwice.headers, rotated.secret)).toMatchObject({ ok: true });
    expect(verifyWebhook(signedTwice.body, signedTwice.headers, secret)).toMatchObject({ ok: true });

    const again = await hooks(["webhook", "rotate-secret", endpointId, "--overlap", "0"]);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stderr).toContain("keep the secret now");
    const newest = field(again.stdout, "secret")!;
    const only = json<{ delivery: { eventId: string } }>(await hooks(["webhook", "test", endpointId, "--json"]));
    const [signedOnce] = withId(only.delivery.eventId);
    expect(verifyWebhook(signedOnce.body, signedOnce.headers, newest)).toMatchObject({ ok: true });
    expect(verifyWebhook(signedOnce.body, signedOnce.headers, rotated.secret)).toMatchObject({ ok: false });
    secret = newest;
    const bad = await hooks(["webhook", "rotate-secret", endpointId, "--overlap", "a while"]);
    expect(bad.code).toBe(2);
  });

  it("a receiver answering 500 makes test exit 4, with the attempt shown", async () => {
    status = 500;
    try {
      const res = await hooks(["webhook", "test", endpointId]);
      expect(res.code, res.stderr).toBe(4);
      expect(attempts(res.stdout)).toEqual([expect.stringMatching(/^1\t\S+\t500\t/)]);
      expect(res.stderr).toContain("the attempt did not succeed: HTTP 500");
      const asJson = await hooks(["webhook", "test", endpointId, "--json"]);
      expect(asJson.code).toBe(4);
      expect(JSON.parse(asJson.stdout)).toMatchObject({ delivery: { attempts: [{ httpStatus: 500 }] } });
    } finally {
      status = 200;
    }
  });

  it("update: --disable and --enable, other fields by their flags only; a bad --endpoint-url shows the server's message", async () => {
    const disabled = await hooks(["webhook", "update", endpointId, "--disable"]);
    expect(disabled.code, disabled.stderr).toBe(0);
    expect(field(disabled.stdout, "enabled")).toBe("false");
    expect(field(disabled.stdout, "disabled_reason")).toBe("manual");
    expect(field(disabled.stdout, "description")).toBe("CLI hook");
    const list = await hooks(["webhook", "list"]);
    expect(list.stdout).toContain(`${endpointId}\t${hookUrl}\tlicense.*\tdisabled\tmanual\tCLI hook\n`);
    const enabled = await hooks(["webhook", "update", endpointId, "--enable", "--description", "renamed"]);
    expect(field(enabled.stdout, "enabled")).toBe("true");
    expect(field(enabled.stdout, "description")).toBe("renamed");
    expect(field(enabled.stdout, "event_types")).toBe("license.*");
    const both = await hooks(["webhook", "update", endpointId, "--enable", "--disable"]);
    expect(both.code).toBe(2);
    const nothing = await hooks(["webhook", "update", endpointId]);
    expect(nothing.code).toBe(2);
    expect(nothing.stderr).toContain("nothing to change");

    // --url is the global option naming the server: the endpoint's URL has a flag of its own.
    const serverUrl = await hooks(["webhook", "create", "--url", server.url]);
    expect(serverUrl.code).toBe(2);
    expect(serverUrl.stderr).toContain("give the endpoint's URL with --endpoint-url");
    const badUrl = await hooks(["webhook", "create", "--endpoint-url", "ftp://x"]);
    expect(badUrl.code).toBe(1);
    expect(badUrl.stderr).toMatch(/^error: url: .*ftp/m);
    expect(badUrl.stderr).toMatch(/^reason: [A-Z_]+$/m);
    const badJson = await hooks(["webhook", "update", endpointId, "--endpoint-url", "ftp://x", "--json"]);
    expect(badJson.code).toBe(1);
    expect(JSON.parse(badJson.stdout)).toMatchObject({ error: { code: "invalid_argument", exitCode: 1 } });
  });

  it("delete: the endpoint is gone", async () => {
    const deleted = await hooks(["webhook", "delete", endpointId]);
    expect(deleted.code, deleted.stderr).toBe(0);
    expect(field(deleted.stdout, "id")).toBe(endpointId);
    const gone = await hooks(["webhook", "show", endpointId, "--json"]);
    expect(gone.code).toBe(1);
    expect(JSON.parse(gone.stdout)).toMatchObject({ error: { code: "not_found", exitCode: 1 } });
    expect(gone.stderr).toContain(endpointId);
    expect(json<{ endpoints: unknown[] }>(await hooks(["webhook", "list", "--json"])).endpoints).toEqual([]);
  });
});

describe("licensd payment", () => {
  // A tenant of its own, so this block runs alone (`-t "licensd payment"`) and its lists hold only its sources.
  let payKey = "";
  let proId = "";
  let basicId = "";
  let sourceId = "";
  const secret = `whsec_${"s3cretFromStripe".repeat(2)}`;
  const rotated = `whsec_${"r0tatedByStripe".repeat(2)}`;
  const secretFile = path.join(dir, "stripe-secret");
  /** Every result of this block: the secrets must appear in none of them. */
  const outputs: Result[] = [];
  const pay = async (args: string[], input?: string) => {
    const res = await licensd(args, { input, env: { LICENSD_API_KEY: payKey } });
    outputs.push(res);
    return res;
  };
  const mappings = (out: string) => [...out.matchAll(/^mapping: (.*)$/gm)].map((m) => m[1]);
  /** POSTs `event` to the source's hook path, signed as Stripe signs it; the answer must be a 2xx. */
  const postStripe = async (event: object) => {
    const body = JSON.stringify(event);
    const posted = await fetch(`${server.url}/hooks/stripe/${sourceId}`, {
      method: "POST",
      headers: {
        "content-type": "application/json",
        "stripe-signature": Stripe.webhooks.generateTestHeaderString({ payload: body, secret }),
      },
      body,
    });
    expect(posted.status, await posted.text()).toBeLessThan(300);
  };
  /** The license the purchase below created. */
  let boughtId = "";
  beforeAll(async () => {
    const tenant = json<{ tenant: { id: string } }>(await superAdmin(["tenant", "create", "--name", "Pay", "--json"]));
    payKey = json<{ secret: string }>(
      await superAdmin(["--tenant", tenant.tenant.id, "api-key", "create", "--name", "pay", "--json"]),
    ).secret;
    const product = json<{ product: { id: string } }>(
      await pay(["product", "create", "--code", "PAY", "--name", "Paid", "--json"]),
    );
    const policy = async (name: string) =>
      json<{ policy: { id: string } }>(
        await pay(["policy", "create", "--product", product.product.id, "--name", name, "--json"]),
      ).policy.id;
    proId = await policy("pro");
    basicId = await policy("basic");
    writeFileSync(secretFile, `${secret}\n`, { mode: 0o600 });
  });

  it("source create reads the secret from a file and shows the hook path to give Stripe; list and show", async () => {
    const created = await pay([
      "payment",
      "source",
      "create",
      "--provider",
      "stripe",
      "--secret-file",
      secretFile,
      "--description",
      "Stripe live",
      "--map",
      `price_pro=${proId},tier=pro,seats=5`,
      "--map",
      `prod_Basic=${basicId}`,
    ]);
    expect(created.code, created.stderr).toBe(0);
    sourceId = field(created.stdout, "id")!;
    expect(sourceId).toMatch(/^psrc_[0-9a-z]{26}$/);
    expect(field(created.stdout, "provider")).toBe("stripe");
    expect(field(created.stdout, "description")).toBe("Stripe live");
    expect(mappings(created.stdout)).toEqual([`price_pro=${proId},seats=5,tier=pro`, `prod_Basic=${basicId}`]);
    expect(field(created.stdout, "enabled")).toBe("true");
    expect(field(created.stdout, "hook_path")).toBe(`/hooks/stripe/${sourceId}`);
    expect(created.stderr).toContain(`hook path: /hooks/stripe/${sourceId}`);
    expect(created.stderr).toContain(
      `give Stripe this webhook endpoint URL: <licensd public URL>/hooks/stripe/${sourceId}`,
    );

    const list = await pay(["payment", "source", "list"]);
    expect(list.code, list.stderr).toBe(0);
    expect(list.stdout).toBe(
      `ID\tPROVIDER\tHOOK PATH\tMAPPINGS\tSTATUS\tDESCRIPTION\n` +
        `${sourceId}\tstripe\t/hooks/stripe/${sourceId}\t2\tenabled\tStripe live\n`,
    );
    const shown = json<{ source: { id: string; mappings: { item: string; policyId: string; metadata: object }[] } }>(
      await pay(["payment", "source", "get", sourceId, "--json"]),
    );
    expect(shown.source.id).toBe(sourceId);
    expect(shown.source.mappings).toEqual([
      { item: "price_pro", policyId: proId, metadata: { tier: "pro", seats: "5" }, attachLicenseFile: false },
      { item: "prod_Basic", policyId: basicId, metadata: {}, attachLicenseFile: false },
    ]);
    const text = await pay(["payment", "source", "show", sourceId]);
    expect(field(text.stdout, "hook_path")).toBe(`/hooks/stripe/${sourceId}`);
  });

  it("the secret is never taken on the command line; a bad --map or --provider names the flag", async () => {
    const onLine = await pay(["payment", "source", "create", "--provider", "stripe", "--secret", secret]);
    expect(onLine.code).toBe(2);
    expect(onLine.stderr).toContain("--secret is not taken: give the provider's signing secret with --secret-file");
    const none = await pay(["payment", "source", "create", "--provider", "stripe"]);
    expect(none.code).toBe(2);
    expect(none.stderr).toContain("--secret-file <path> or --secret-stdin");
    const missing = await pay(["payment", "source", "create", "--provider", "stripe", "--secret-file", `${dir}/no`]);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain("--secret-file: cannot read");
    const empty = await pay(["payment", "source", "create", "--provider", "stripe", "--secret-stdin"], "\n");
    expect(empty.code).toBe(2);
    expect(empty.stderr).toContain("--secret-stdin: the secret is empty");

    const base = ["payment", "source", "create", "--provider", "stripe", "--secret-file", secretFile];
    const badMap = await pay([...base, "--map", "price_pro"]);
    expect(badMap.code).toBe(2);
    expect(badMap.stderr).toContain("option '--map <mapping>' argument 'price_pro' is invalid");
    const badPolicy = await pay([...base, "--map", "price_pro=pro"]);
    expect(badPolicy.code).toBe(2);
    expect(badPolicy.stderr).toContain("option '--map <mapping>' argument 'price_pro=pro' is invalid. the policy");
    const twice = await pay([...base, "--map", `a=${proId}`, "--map", `a=${basicId}`, "--json"]);
    expect(twice.code).toBe(2);
    expect(JSON.parse(twice.stdout)).toMatchObject({ error: { code: "usage", exitCode: 2 } });
    expect(twice.stderr).toContain("a is mapped twice");
    const badProvider = await pay(["payment", "source", "create", "--provider", "paypal"]);
    expect(badProvider.code).toBe(2);
    expect(badProvider.stderr).toContain("one of stripe, polar");
    const noProvider = await pay(["payment", "source", "create", "--secret-file", secretFile]);
    expect(noProvider.code).toBe(2);
    expect(noProvider.stderr).toContain("required option '--provider <provider>' not specified");
    // A policy the tenant does not have: the server's refusal, naming the mapping.
    const unknown = await pay([...base, "--map", `a=pol_${"0".repeat(26)}`]);
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toContain("mappings[0].policy_id");
    expect(json<{ sources: unknown[] }>(await pay(["payment", "source", "list", "--json"])).sources).toHaveLength(1);
  });

  it("update: --map replaces the mappings, --clear-mappings removes them, --disable and --enable", async () => {
    const withFile = await pay(["payment", "source", "update", sourceId, "--map", `price_file=${proId}+file,tier=x`]);
    expect(withFile.code, withFile.stderr).toBe(0);
    expect(mappings(withFile.stdout)).toEqual([`price_file=${proId}+file,tier=x`]);
    expect(mappings((await pay(["payment", "source", "show", sourceId])).stdout)).toEqual([
      `price_file=${proId}+file,tier=x`,
    ]);
    const fileJson = json<{ source: { mappings: object[] } }>(
      await pay(["payment", "source", "show", sourceId, "--json"]),
    );
    expect(fileJson.source.mappings).toEqual([
      { item: "price_file", policyId: proId, metadata: { tier: "x" }, attachLicenseFile: true },
    ]);
    const badSuffix = await pay(["payment", "source", "update", sourceId, "--map", `a=${proId}+pdf`]);
    expect(badSuffix.code).toBe(2);
    expect(badSuffix.stderr).toContain("the policy: an id pol_…");
    const mapped = await pay(["payment", "source", "update", sourceId, "--map", `price_team=${proId},tier=team`]);
    expect(mapped.code, mapped.stderr).toBe(0);
    expect(mappings(mapped.stdout)).toEqual([`price_team=${proId},tier=team`]);
    expect(field(mapped.stdout, "description")).toBe("Stripe live");
    const disabled = await pay(["payment", "source", "update", sourceId, "--clear-mappings", "--disable"]);
    expect(disabled.code, disabled.stderr).toBe(0);
    expect(mappings(disabled.stdout)).toEqual([]);
    expect(field(disabled.stdout, "enabled")).toBe("false");
    const list = await pay(["payment", "source", "list"]);
    expect(list.stdout).toContain(`${sourceId}\tstripe\t/hooks/stripe/${sourceId}\t0\tdisabled\tStripe live\n`);
    const enabled = await pay(["payment", "source", "update", sourceId, "--enable", "--description", "Stripe"]);
    expect(field(enabled.stdout, "enabled")).toBe("true");
    expect(field(enabled.stdout, "description")).toBe("Stripe");
    const both = await pay(["payment", "source", "update", sourceId, "--enable", "--disable"]);
    expect(both.code).toBe(2);
    const clash = await pay(["payment", "source", "update", sourceId, "--clear-mappings", "--map", `a=${proId}`]);
    expect(clash.code).toBe(2);
    const nothing = await pay(["payment", "source", "update", sourceId]);
    expect(nothing.code).toBe(2);
    expect(nothing.stderr).toContain("nothing to change");
  });

  it("rotate-secret reads the new secret from stdin; the old one is accepted for --overlap", async () => {
    const res = json<{ source: { id: string; previousSecretExpireTime: string } }>(
      await pay(
        ["payment", "source", "rotate-secret", sourceId, "--secret-stdin", "--overlap", "1h", "--json"],
        rotated,
      ),
    );
    expect(res.source.id).toBe(sourceId);
    const left = Date.parse(res.source.previousSecretExpireTime) - Date.now();
    expect(left).toBeGreaterThan(50 * 60_000);
    expect(left).toBeLessThanOrEqual(3_600_000);
    const text = await pay(["payment", "source", "rotate-secret", sourceId, "--secret-file", secretFile]);
    expect(text.code, text.stderr).toBe(0);
    expect(text.stderr).toMatch(/the old secret is also accepted until \S+Z/);
    const noSecret = await pay(["payment", "source", "rotate-secret", sourceId]);
    expect(noSecret.code).toBe(2);
    const badOverlap = await pay([
      "payment",
      "source",
      "rotate-secret",
      sourceId,
      "--secret-file",
      secretFile,
      "--overlap",
      "soon",
    ]);
    expect(badOverlap.code).toBe(2);
    expect(badOverlap.stderr).toContain("option '--overlap <d>' argument 'soon' is invalid");
  });

  it("event list and email list are empty; replay of an unknown event is not found", async () => {
    const emails = await pay(["payment", "email", "list"]);
    expect(emails.code, emails.stderr).toBe(0);
    expect(emails.stdout).toBe("ID\tLICENSE\tTO\tSTATUS\tATTEMPTS\tNEXT ATTEMPT\tSENT\tLAST ERROR\n");
    expect(json(await pay(["payment", "email", "list", "--json"]))).toEqual({ deliveries: [], nextPageToken: "" });
    const list = await pay(["payment", "event", "list", "--source", sourceId, "--status", "failed"]);
    expect(list.code, list.stderr).toBe(0);
    expect(list.stdout).toBe("ID\tSOURCE\tTYPE\tACTION\tSTATUS\tLICENSES\tRECEIVED\tREASON\n");
    expect(json<{ events: unknown[] }>(await pay(["payment", "event", "list", "--json"])).events).toEqual([]);
    const badStatus = await pay(["payment", "event", "list", "--status", "lost"]);
    expect(badStatus.code).toBe(2);
    expect(badStatus.stderr).toContain("one of applied, ignored, failed");
    const unknownId = `pev_${"0".repeat(26)}`;
    const replay = await pay(["payment", "event", "replay", unknownId]);
    expect(replay.code).toBe(1);
    expect(replay.stderr).toContain(unknownId);
    expect(replay.stderr).toMatch(/^reason: [A-Z_]+$/m);
    const asJson = await pay(["payment", "event", "replay", unknownId, "--json"]);
    expect(asJson.code).toBe(1);
    expect(JSON.parse(asJson.stdout)).toMatchObject({ error: { code: "not_found", exitCode: 1 } });
  });

  it("a purchase of an unmapped price is FAILED; replay exits 4 until it is mapped, then applies it", async () => {
    const event = {
      id: "evt_1CliPaymentTest",
      object: "event",
      api_version: "2025-03-31.basil",
      created: Math.floor(Date.now() / 1000) - 5,
      type: "checkout.session.completed",
      data: {
        object: {
          id: "cs_test_cli1",
          object: "checkout.session",
          customer_details: { email: "buyer@example.com", name: "Buyer" },
          metadata: { licensd_price: "price_team" },
          mode: "payment",
          payment_intent: "pi_cli1",
          payment_status: "paid",
          status: "complete",
        },
      },
    };
    await postStripe(event);

    const failed = await pay(["payment", "event", "list", "--status", "failed"]);
    expect(failed.code, failed.stderr).toBe(0);
    const rows = failed.stdout.trim().split("\n").slice(1);
    expect(rows).toHaveLength(1);
    const [eventId, ...cells] = rows[0].split("\t");
    expect(eventId).toMatch(/^pev_[0-9a-z]{26}$/);
    expect(cells.slice(0, 5)).toEqual([sourceId, "checkout.session.completed", "purchase", "failed", ""]);
    expect(cells[5]).toMatch(/^\d{4}-\d\d-\d\dT\S+Z$/);
    expect(cells[6]).toContain("price_team");
    const again = await pay(["payment", "event", "replay", eventId]);
    expect(again.code, again.stderr).toBe(4);
    expect(field(again.stdout, "status")).toBe("failed");
    expect(field(again.stdout, "attempts")).toBe("2");
    expect(again.stderr).toContain(`the event was not applied: ${field(again.stdout, "reason")}`);

    expect((await pay(["payment", "source", "update", sourceId, "--map", `price_team=${proId}`])).code).toBe(0);
    const applied = await pay(["payment", "event", "replay", eventId]);
    expect(applied.code, applied.stderr).toBe(0);
    expect(field(applied.stdout, "status")).toBe("applied");
    const licenseId = field(applied.stdout, "license_ids");
    expect(licenseId).toMatch(/^lic_[0-9a-z]{26}$/);
    boughtId = licenseId!;
    const list = await pay(["payment", "event", "list", "--source", sourceId, "--status", "applied"]);
    expect(list.stdout).toContain(
      `${eventId}\t${sourceId}\tcheckout.session.completed\tpurchase\tapplied\t${licenseId}\t`,
    );
    const license = json<{ license: { policyId: string } }>(await pay(["license", "show", licenseId!, "--json"]));
    expect(license.license.policyId).toBe(proId);
    const done = await pay(["payment", "event", "replay", eventId]);
    expect(done.code).toBe(1);
    expect(done.stderr).toMatch(/^reason: [A-Z_]+$/m);
  });

  it("email list shows the purchase's key e-mail as pending (no SMTP server configured); filters", async () => {
    const list = await pay(["payment", "email", "list"]);
    expect(list.code, list.stderr).toBe(0);
    // Not trimmed: the row ends with empty cells (not sent, no error).
    const rows = list.stdout.replace(/\n$/, "").split("\n");
    expect(rows[0]).toBe("ID\tLICENSE\tTO\tSTATUS\tATTEMPTS\tNEXT ATTEMPT\tSENT\tLAST ERROR");
    expect(rows).toHaveLength(2);
    const [id, license, to, status, attempts, next, sent, lastError] = rows[1].split("\t");
    expect(id).toMatch(/^eml_[0-9a-z]{26}$/);
    // Never tried: without an SMTP server nothing is sent, and the e-mail waits, due since it was queued.
    expect([license, to, status, attempts, sent, lastError]).toEqual([
      boughtId,
      "buyer@example.com",
      "pending",
      "0",
      "",
      "",
    ]);
    expect(next).toMatch(/^\d{4}-\d\d-\d\dT\S+Z$/);
    const pending = json<{ deliveries: { id: string; status: string; licenseId: string }[]; nextPageToken: string }>(
      await pay(["payment", "email", "list", "--license", boughtId, "--status", "pending", "--json"]),
    );
    expect(pending.deliveries).toHaveLength(1);
    expect(pending.deliveries[0]).toMatchObject({ id, licenseId: boughtId, status: "EMAIL_DELIVERY_STATUS_PENDING" });
    expect(pending.nextPageToken).toBe("");
    const sentList = json<{ deliveries: unknown[] }>(
      await pay(["payment", "email", "list", "--status", "sent", "--json"]),
    );
    expect(sentList.deliveries).toEqual([]);
    const badStatus = await pay(["payment", "email", "list", "--status", "lost"]);
    expect(badStatus.code).toBe(2);
    expect(badStatus.stderr).toContain("one of pending, sent, failed");
    const badLicense = await pay(["payment", "email", "list", "--license", "nope"]);
    expect(badLicense.code).toBe(1);
    expect(badLicense.stderr).toContain("license_id");
  });

  it("template: the default, set from files and stdin, placeholders checked by the server", async () => {
    const def = json<{ template: { subject: string; text: string; html: string }; default: boolean }>(
      await pay(["payment", "template", "show", "--json"]),
    );
    expect(def.default).toBe(true);
    expect(def.template.subject).toContain("{{product_name}}");
    expect(def.template.text).toContain("{{license_key}}");
    expect(def.template.html).toContain("<code>{{license_key}}</code>");
    const nl = (t: string) => (t.endsWith("\n") ? t : `${t}\n`);
    const shown = await pay(["payment", "template", "show"]);
    expect(shown.code, shown.stderr).toBe(0);
    expect(shown.stdout).toBe(
      `subject: ${def.template.subject}\ndefault: true\n\ntext:\n${nl(def.template.text)}\nhtml:\n${nl(def.template.html)}`,
    );
    expect((await pay(["payment", "template", "show", "--part", "html"])).stdout).toBe(`${def.template.html}\n`);

    const textFile = path.join(dir, "key.txt");
    const htmlFile = path.join(dir, "key.html");
    writeFileSync(textFile, "Hello {{customer_name}},\n\nyour key: {{license_key}}\n");
    writeFileSync(htmlFile, "<p>Your key: <b>{{ license_key }}</b> ({{expires_at}})</p>\n");
    const set = await pay([
      "payment",
      "template",
      "set",
      "--subject",
      "{{product_name}}: your key",
      "--text-file",
      textFile,
      "--html-file",
      htmlFile,
    ]);
    expect(set.code, set.stderr).toBe(0);
    expect(set.stdout).toBe(
      "subject: {{product_name}}: your key\n\ntext:\nHello {{customer_name}},\n\nyour key: {{license_key}}\n" +
        "\nhtml:\n<p>Your key: <b>{{ license_key }}</b> ({{expires_at}})</p>\n",
    );

    const unknown = await pay(["payment", "template", "set", "--subject", "Hi {{customer_nme}}"]);
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toContain("{{customer_nme}} is not a placeholder");
    expect(unknown.stderr).toMatch(/^reason: UNKNOWN_PLACEHOLDER$/m);
    const noKey = await pay(["payment", "template", "set", "--html-file", "-", "--json"], "<p>{{license_id}}</p>");
    expect(noKey.code).toBe(1);
    expect(JSON.parse(noKey.stdout)).toMatchObject({ error: { reason: "LICENSE_KEY_MISSING", exitCode: 1 } });
    expect(noKey.stderr).toContain("template.html");
    const twoStdin = await pay(["payment", "template", "set", "--text-file", "-", "--html-file", "-"]);
    expect(twoStdin.code).toBe(2);
    expect(twoStdin.stderr).toContain("only one of --text-file and --html-file can be -");
    const nothing = await pay(["payment", "template", "set"]);
    expect(nothing.code).toBe(2);
    const missing = await pay(["payment", "template", "set", "--text-file", path.join(dir, "none.txt")]);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain("--text-file: cannot read");

    // Only the subject, from the command line: the parts set above are kept; the text part from stdin.
    const subject = await pay(
      ["payment", "template", "set", "--subject", "Your key", "--text-file", "-"],
      "{{license_key}}",
    );
    expect(subject.code, subject.stderr).toBe(0);
    const now = json<{ template: { subject: string; text: string; html: string }; default: boolean }>(
      await pay(["payment", "template", "show", "--json"]),
    );
    expect(now).toEqual({
      template: {
        subject: "Your key",
        text: "{{license_key}}",
        html: "<p>Your key: <b>{{ license_key }}</b> ({{expires_at}})</p>\n",
      },
      default: false,
    });
    expect(field((await pay(["payment", "template", "show"])).stdout, "default")).toBe("false");
  });

  it("delete: the source is gone; no output ever showed a secret", async () => {
    const deleted = await pay(["payment", "source", "delete", sourceId]);
    expect(deleted.code, deleted.stderr).toBe(0);
    expect(field(deleted.stdout, "id")).toBe(sourceId);
    const gone = await pay(["payment", "source", "show", sourceId, "--json"]);
    expect(gone.code).toBe(1);
    expect(JSON.parse(gone.stdout)).toMatchObject({ error: { code: "not_found", exitCode: 1 } });
    expect(json<{ sources: unknown[] }>(await pay(["payment", "source", "list", "--json"])).sources).toEqual([]);

    expect(outputs.length).toBeGreaterThan(20);
    for (const { stdout, stderr } of outputs)
      for (const s of [secret, rotated, "s3cretFromStripe", "r0tatedByStripe"]) {
        expect(stdout).not.toContain(s);
        expect(stderr).not.toContain(s);
      }
  });
});

describe("licensd on a terminal", () => {
  const script = ["/usr/bin/script", "/bin/script"].find((p) => existsSync(p));
  it.skipIf(!script)("draws tables with colours, and honours NO_COLOR", async () => {
    const cmd = `${process.execPath} ${BIN} license list`;
    const env = { LICENSD_URL: server.url, LICENSD_API_KEY: adminKey, TERM: "xterm" };
    const coloured = await run(script!, ["-qec", cmd, "/dev/null"], { env });
    expect(coloured.stdout).toContain("┌");
    expect(coloured.stdout).toContain("\u001b[32mactive\u001b[39m");
    const plain = await run(script!, ["-qec", cmd, "/dev/null"], { env: { ...env, NO_COLOR: "1" } });
    expect(plain.stdout).toContain("│ active │");
    expect(plain.stdout).not.toContain("\u001b[32m");
  });
});

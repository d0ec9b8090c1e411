/*
 * Every example in examples/ runs against a live licensd, as its README tells a user to
 * run it: the walkthroughs (curl, buf curl) block by block with their "# →" lines checked,
 * and the programs (Node agent, Python script, Go program) as processes.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ROOT, run, startServer, type ServerProcess } from "../support/server.js";
import { checkOutput, extractWalkthrough } from "../support/walkthrough.js";

let server: ServerProcess & { dropDatabase(): Promise<void> };
/** What the examples are told to use: the server, a tenant admin key, a license key, its product. */
let env: Record<string, string>;

// biome-ignore lint/suspicious/noExplicitAny: the Connect JSON answers are read field by field, as a script would.
type Json = Record<string, any>;

async function call(key: string | undefined, method: string, body: unknown): Promise<Json> {
  const res = await fetch(`${server.url}/${method}`, {
    method: "POST",
    headers: { "content-type": "application/json", ...(key ? { authorization: `Bearer ${key}` } : {}) },
    body: JSON.stringify(body),
  });
  const json = (await res.json()) as Json;
  if (!res.ok) throw new Error(`${method}: ${JSON.stringify(json)}`);
  return json;
}

beforeAll(async () => {
  server = await startServer();
  const su = server.superAdminKey;
  const { tenant } = await call(su, "licensd.tenant.v1.TenantService/CreateTenant", { name: "Example Vendor" });
  const { secret } = await call(su, "licensd.tenant.v1.TenantService/CreateApiKey", {
    tenantId: tenant.id,
    name: "examples",
    scopes: ["API_KEY_SCOPE_ADMIN"],
  });
  const L = "licensd.licensing.v1.LicensingService";
  const { product } = await call(secret, `${L}/CreateProduct`, {
    code: "EXA",
    name: "Example App",
    features: [
      { name: "reports", kind: "FEATURE_KIND_FLAG", compose: "COMPOSE_STRATEGY_UNION" },
      { name: "sso", kind: "FEATURE_KIND_FLAG", compose: "COMPOSE_STRATEGY_UNION" },
      { name: "tokens", kind: "FEATURE_KIND_LIMIT", compose: "COMPOSE_STRATEGY_SUM" },
    ],
  });
  const { policy } = await call(secret, `${L}/CreatePolicy`, {
    productId: product.id,
    name: "pro",
    duration: "31536000s",
    entitlements: [
      { feature: "reports", enabled: true },
      { feature: "tokens", limit: "1000000" },
    ],
    maxMachines: 5,
    floating: true,
  });
  const { customer } = await call(secret, `${L}/CreateCustomer`, { name: "Jane Doe", email: "jane@example.com" });
  const { key } = await call(secret, `${L}/CreateLicense`, { policyId: policy.id, customerId: customer.id });
  await call(secret, "licensd.usage.v1.UsageService/CreateMeter", {
    productId: product.id,
    metric: "tokens",
    aggregation: "AGGREGATION_SUM",
  });
  env = {
    PATH: `${path.join(ROOT, "node_modules/.bin")}:${process.env.PATH}`,
    LICENSD_URL: server.url,
    LICENSD_API_KEY: secret,
    LICENSD_LICENSE_KEY: key,
  };
}, 180_000);

const work = mkdtempSync(path.join(os.tmpdir(), "licensd-examples-"));

afterAll(async () => {
  rmSync(work, { recursive: true, force: true });
  await server?.stop();
  await server?.dropDatabase();
});

describe.each(["curl.md", "buf-curl.md"])("examples/%s", (name) => {
  it("runs as written and prints what it says it prints", { timeout: 120_000 }, async () => {
    const walkthrough = extractWalkthrough([{ name: `examples/${name}`, path: path.join(ROOT, "examples", name) }]);
    expect(walkthrough.checks.length).toBeGreaterThan(4);
    const dir = mkdtempSync(path.join(os.tmpdir(), "licensd-example-"));
    const file = path.join(dir, "example.sh");
    const preamble = [
      "set -eu",
      "exec 2>&1",
      // `npx buf` is the checkout's own buf (spares npm's start-up).
      `npx() { local bin=$1; shift; ${JSON.stringify(path.join(ROOT, "node_modules/.bin"))}/"$bin" "$@"; }`,
      `trap 'echo "example: this command failed (status $?): $BASH_COMMAND"' ERR`,
    ].join("\n");
    writeFileSync(file, `${preamble}\n\n${walkthrough.script}\n`);
    const res = await run("bash", ["--noprofile", "--norc", file], { cwd: dir, env });
    const output = res.stdout + res.stderr;
    expect(res.code, `examples/${name} failed:\n${output}`).toBe(0);
    const problems = checkOutput(walkthrough, output);
    expect(problems, problems.join("\n\n")).toEqual([]);
  });
});

describe("examples/python/validate.py", () => {
  it("runs in a fresh venv with the package installed from clients/python", { timeout: 180_000 }, async () => {
    // As clients/python/README.md says: a venv over Debian's grpcio/protobuf/cryptography, pip from the path.
    const venv = path.join(work, "venv");
    const made = await run("/usr/bin/python3", ["-m", "venv", "--system-site-packages", venv]);
    expect(made.code, made.stderr).toBe(0);
    const pip = await run(path.join(venv, "bin/pip"), [
      "install",
      "--no-index",
      "--no-build-isolation",
      "--disable-pip-version-check",
      "--quiet",
      path.join(ROOT, "clients/python"),
    ]);
    expect(pip.code, pip.stdout + pip.stderr).toBe(0);
    // Run from outside the checkout: only what pip installed is importable.
    const res = await run(path.join(venv, "bin/python"), [path.join(ROOT, "examples/python/validate.py")], {
      cwd: work,
      env,
    });
    expect(res.code, res.stdout + res.stderr).toBe(0);
    expect(res.stdout).toMatch(/^signed answer verified \(kid sk_\w+\)$/m);
    expect(res.stdout).toMatch(/^valid=True code=VALIDATION_CODE_VALID features=.*reports/m);
    expect(res.stdout).toMatch(/^report exported$/m);
    expect(res.stdout).toMatch(/^enable_sso: HTTP 403 .*'error': 'license_required', 'feature': 'sso'/m);
    expect(res.stdout).toMatch(/^refused: INVALID_ARGUMENT reason=\S+ field=key$/m);
  });
});

describe("examples/node-agent/agent.mjs", () => {
  it("activates, gates its routes and meters usage through @licensd/client/node", { timeout: 120_000 }, async () => {
    // Run by the project's Node 22 as `node examples/node-agent/agent.mjs`: @licensd/client resolves to the built package.
    const res = await run(process.execPath, [path.join(ROOT, "examples/node-agent/agent.mjs")], {
      env: { ...env, AGENT_DIR: mkdtempSync(path.join(work, "agent-")) },
    });
    const out = res.stdout + res.stderr;
    expect(res.code, out).toBe(0);
    expect(out).toMatch(/^license: valid=true code=VALID tier=pro features=.*reports/m);
    expect(out).toMatch(/^GET \/reports → 200 \{"ok":"reports"\}$/m);
    expect(out).toMatch(/^GET \/sso → 403 .*"error":"license_required","feature":"sso"/m);
    expect(out).toMatch(/^usage: acked=100 pending=0 rejected=0$/m);
  });
});

describe("examples/go", () => {
  it("builds offline with Debian's Go and gRPC, validates and verifies", { timeout: 300_000 }, async () => {
    const bin = path.join(work, "go-example");
    const built = await run("bash", [
      path.join(ROOT, "scripts/check-go.sh"),
      "build",
      "-o",
      bin,
      "licensd.dev/example-go",
    ]);
    expect(built.code, built.stderr).toBe(0);
    const res = await run(bin, [], { env });
    const out = res.stdout + res.stderr;
    expect(res.code, out).toBe(0);
    expect(out).toMatch(/^validated: signature ok, valid=true code=VALIDATION_CODE_VALID tier=pro reports=true$/m);
    expect(out).toMatch(/^license file: VALID \(reports=true\)$/m);
    expect(out).toMatch(/^on another machine: FINGERPRINT_MISMATCH$/m);
    expect(out).toMatch(/^refused: InvalidArgument reason=\S+ field=key$/m);
  });
});

/*
 * The Go module (clients/go, module licensd.dev/client) as a Go product would use it:
 * compiled offline with Debian's Go toolchain and gRPC (scripts/check-go.sh, GOPATH mode),
 * then run against the real server over gRPC. clients/go/internal/e2eclient creates and
 * validates a license with a tenant API key, verifies the signed answers, a license file,
 * a lease and audit proofs offline, gates HTTP handlers, and reads refusals; the
 * user-facing licensd-check command is run as an operator would run it. A webhook receiver
 * written from docs/webhooks.md (test/e2e/go_webhook_receiver, outside the module, built in
 * the same GOPATH) accepts the server's deliveries.
 */
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ROOT, run, startServer, type ServerProcess } from "../support/server.js";
import { checkDocumentedReceiver, startReceiverProcess } from "../support/webhook-receiver.js";

let server: ServerProcess & { dropDatabase(): Promise<void> };
const bin = mkdtempSync(path.join(os.tmpdir(), "licensd-go-e2e-"));

async function call<T>(procedure: string, body: unknown, bearer: string): Promise<T> {
  const res = await fetch(`${server.url}/${procedure}`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${bearer}` },
    body: JSON.stringify(body),
  });
  const json = (await res.json()) as T;
  if (!res.ok) throw new Error(`${procedure}: ${JSON.stringify(json)}`);
  return json;
}

beforeAll(async () => {
  const [started, built, receiver] = await Promise.all([
    // The webhook receiver listens on 127.0.0.1.
    startServer({ env: { LICENSD_WEBHOOK_ALLOW_PRIVATE: "true" } }),
    run("bash", [
      path.join(ROOT, "scripts/check-go.sh"),
      "build",
      "-o",
      `${bin}/`,
      "./cmd/licensd-check",
      "./internal/e2eclient",
    ]),
    // A program of its own, as a user writes it: built from its file, importing the module from GOPATH.
    run("bash", [
      path.join(ROOT, "scripts/check-go.sh"),
      "build",
      "-o",
      path.join(bin, "go_webhook_receiver"),
      path.join(ROOT, "test/e2e/go_webhook_receiver/main.go"),
    ]),
  ]);
  server = started;
  expect(built.code, built.stderr).toBe(0);
  expect(receiver.code, receiver.stderr).toBe(0);
}, 300_000);
afterAll(async () => {
  await server?.stop();
  await server?.dropDatabase();
});

type Refusal = {
  code: string;
  reason: string;
  domain: string;
  field: string;
  violations: string[] | null;
  errors_as: boolean;
};
type Gate = { status: number; body: Record<string, string> };

describe("Go client (clients/go) against a live licensd", () => {
  it("creates, validates and verifies a license, reads refusals and gates handlers", async () => {
    const { tenant } = await call<{ tenant: { id: string } }>(
      "licensd.tenant.v1.TenantService/CreateTenant",
      { name: "Go client" },
      server.superAdminKey,
    );
    const { secret } = await call<{ secret: string }>(
      "licensd.tenant.v1.TenantService/CreateApiKey",
      { tenantId: tenant.id, name: "go e2e", scopes: ["API_KEY_SCOPE_ADMIN"] },
      server.superAdminKey,
    );
    const licenseFile = path.join(bin, "license.lic");
    const res = await run(path.join(bin, "e2eclient"), [`127.0.0.1:${server.port}`], {
      env: { LICENSD_API_KEY: secret, LICENSE_FILE_OUT: licenseFile },
    });
    const out = JSON.parse(res.stdout);
    expect(out.failed, res.stderr).toBeUndefined();
    expect(res.code).toBe(0);

    // A retried CreateLicense with the same idempotency key gives back the same license.
    expect(out.license.same_on_retry).toBe(true);
    expect(out.license.id).toMatch(/^lic_/);

    // ValidateLicense: valid, signed, verified; replayed or altered answers refused.
    expect(out.validate).toMatchObject({ valid: true, code: "VALID", tier: "pro", nonce_echoed: true });
    expect(out.validate.features).toEqual(expect.arrayContaining(["reports", "seats"]));
    expect(out.validate.features).not.toContain("export");
    expect(out.validate.kid).toMatch(/^sk_/);
    expect(out.validate.replay_refused).toBe(true);
    expect(out.validate.tamper_refused).toBe(true);
    // An unknown key is a normal (signed, verified) answer, not an error.
    expect(out.validate_unknown).toEqual({ valid: false, code: "NOT_FOUND" });

    // License files checked offline.
    expect(out.license_file).toMatchObject({
      code: "VALID",
      license_id: out.license.id,
      plan: "pro",
      tampered: "BAD_SIGNATURE",
      bound_here: "VALID",
      bound_elsewhere: "FINGERPRINT_MISMATCH",
      encrypted: "VALID",
      encrypted_no_key: "DECRYPTION_FAILED",
    });
    expect(out.lease).toMatchObject({ code: "VALID", other_machine: "FINGERPRINT_MISMATCH" });
    expect(out.lease.machine_id).toMatch(/^mach_/);
    // Air-gapped activation: a request file written by the Go client, answered by licensd.
    expect(out.offline_activation).toEqual({ request_check: "VALID", lease: "VALID", offline: true });

    // Refusals: code, ErrorInfo reason and field, BadRequest violations.
    const bad = out.bad_input as Refusal;
    expect(bad).toMatchObject({
      code: "InvalidArgument",
      reason: "INVALID_ARGUMENT",
      domain: "licensd.dev",
      errors_as: true,
    });
    expect(["code", "name"]).toContain(bad.field);
    expect(bad.violations?.join("\n")).toMatch(/^code: /m);
    expect(bad.violations?.join("\n")).toMatch(/^name: /m);
    expect(out.not_found as Refusal).toMatchObject({ code: "NotFound", reason: "LICENSE_NOT_FOUND" });
    expect(out.no_api_key as Refusal).toMatchObject({ code: "Unauthenticated", reason: "MISSING_API_KEY" });
    expect(out.wrong_api_key as Refusal).toMatchObject({ code: "Unauthenticated", reason: "INVALID_API_KEY" });

    // net/http gates over the online license state.
    expect(out.gate.reports as Gate).toMatchObject({ status: 200, body: { ok: "yes", tier: "pro" } });
    expect(out.gate.export as Gate).toMatchObject({
      status: 403,
      body: { error: "license_required", feature: "export", code: "FEATURE_NOT_LICENSED" },
    });

    // Audit proofs against signed checkpoints.
    expect(out.audit.tree_size_after).toBeGreaterThan(out.audit.tree_size_before);
    expect(out.audit).toMatchObject({ inclusion: "ok", consistency: "ok" });
    expect(out.audit.altered_entry).toMatch(/inclusion of entry .*proof does not verify/);
    expect(out.audit.swapped_roots).not.toBe("ok");

    // After SuspendLicense: a signed "not valid" answer, and the gate answers 402.
    expect(out.suspended).toMatchObject({ valid: false, code: "SUSPENDED" });
    expect(out.suspended.gate as Gate).toMatchObject({
      status: 402,
      body: { error: "license_required", feature: "reports", code: "SUSPENDED" },
    });

    // licensd-check, as an operator runs it.
    const check = (...args: string[]) =>
      run(path.join(bin, "licensd-check"), ["-addr", `127.0.0.1:${server.port}`, "-insecure", ...args]);
    const online = await check("-key", out.license.key);
    expect(online.code).toBe(1);
    expect(JSON.parse(online.stdout)).toMatchObject({ valid: false, code: "SUSPENDED", tier: "pro" });
    // The license file was issued before the suspension and is checked offline: still valid.
    expect(readFileSync(licenseFile, "utf8")).toMatch(/^licensd1\./);
    const offline = await check("-file", licenseFile, "-feature", "reports");
    expect(offline.code, offline.stderr).toBe(0);
    expect(JSON.parse(offline.stdout)).toMatchObject({ valid: true, code: "VALID", tier: "pro" });
    expect((await check("-file", licenseFile, "-feature", "export")).code).toBe(1);
    const refused = await check("-key", "K".repeat(200));
    expect(refused.code).toBe(2);
    expect(refused.stderr).toMatch(/InvalidArgument INVALID_ARGUMENT: .*\(field key\)/);
  }, 120_000);

  it("a receiver written from docs/webhooks.md verifies live deliveries and refuses a wrong secret", async () => {
    await checkDocumentedReceiver(server, (port, secrets) =>
      startReceiverProcess(path.join(bin, "go_webhook_receiver"), [], port, secrets),
    );
  }, 120_000);

  it("UsageUploader: an agent killed mid-upload and restarted has every recorded event counted once", async () => {
    const admin = server.superAdminKey;
    const { tenant } = await call<{ tenant: { id: string } }>(
      "licensd.tenant.v1.TenantService/CreateTenant",
      { name: "Go agent" },
      admin,
    );
    const t = { tenantId: tenant.id };
    const { product } = await call<{ product: { id: string } }>(
      "licensd.licensing.v1.LicensingService/CreateProduct",
      { ...t, code: "AGT", name: "Agents" },
      admin,
    );
    await call(
      "licensd.usage.v1.UsageService/CreateMeter",
      { ...t, productId: product.id, metric: "tokens", aggregation: "AGGREGATION_SUM" },
      admin,
    );
    const { policy } = await call<{ policy: { id: string } }>(
      "licensd.licensing.v1.LicensingService/CreatePolicy",
      { ...t, productId: product.id, name: "metered" },
      admin,
    );
    const { customer } = await call<{ customer: { id: string } }>(
      "licensd.licensing.v1.LicensingService/CreateCustomer",
      { ...t, name: "Ann", email: "ann@example.com" },
      admin,
    );
    const created = await call<{ key: string; license: { id: string } }>(
      "licensd.licensing.v1.LicensingService/CreateLicense",
      { ...t, policyId: policy.id, customerId: customer.id },
      admin,
    );
    const spool = mkdtempSync(path.join(os.tmpdir(), "licensd-go-spool-"));
    const recorded = 3000; // 150 batches of 20

    // First run: records everything (each event fsync'd), starts uploading, and is
    // SIGKILLed as soon as licensd acknowledged its first batch.
    const agent = spawn(path.join(bin, "e2eclient"), [
      "agent",
      `127.0.0.1:${server.port}`,
      spool,
      created.key,
      String(recorded),
    ]);
    let firstRun = "";
    let stderr = "";
    agent.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<NodeJS.Signals | null>((resolve) =>
      agent.once("exit", (_code, signal) => resolve(signal)),
    );
    await new Promise<void>((resolve, reject) => {
      agent.stdout.on("data", (d: Buffer) => {
        firstRun += d.toString();
        if (firstRun.includes('"ack"')) {
          agent.kill("SIGKILL");
          resolve();
        }
      });
      agent.once("exit", () => reject(new Error(`the agent ended before its first ack:\n${firstRun}\n${stderr}`)));
    });
    expect(await exited).toBe("SIGKILL");
    expect(firstRun).toContain(`{"recorded":${recorded}}`);

    // Second run: nothing new recorded; it finds what was left and drains it.
    const second = await run(path.join(bin, "e2eclient"), [
      "agent",
      `127.0.0.1:${server.port}`,
      spool,
      created.key,
      "0",
    ]);
    expect(second.code, second.stderr).toBe(0);
    const lines = second.stdout
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as Record<string, number | string | boolean>);
    const left = lines[0].pending_at_start as number;
    // Killed mid-upload: some batches were acknowledged, others were not.
    expect(left).toBeGreaterThan(0);
    expect(left).toBeLessThan(recorded);
    expect(lines.at(-1)).toEqual({ drained: true, pending: 0 });
    expect(lines.filter((l) => "ack" in l).every((l) => l.rejected === 0)).toBe(true);

    // licensd counted every recorded event exactly once.
    const quota = await call<{ limits: { metric: string; used: string }[] }>(
      "licensd.usage.v1.UsageService/GetQuota",
      { ...t, licenseId: created.license.id, metric: "tokens" },
      admin,
    );
    expect(quota.limits.find((l) => l.metric === "tokens")?.used).toBe(String(recorded));
  }, 120_000);
});

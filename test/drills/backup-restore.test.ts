/*
 * The drill of docs/operations.md's "Backup and restore": pg_dump of a live licensd database (an instance serves and
 * writes throughout), pg_restore into a fresh database of the test PostgreSQL, a new `licensd serve` on it, and every
 * claim of the text checked: migrations are a no-op, each tenant's audit chain verifies and its restored signed
 * checkpoint is consistent with the one saved before the dump, what was signed before verifies, what came after the
 * dump is not there, and without the data key the restored database cannot be served.
 */
import { randomBytes } from "node:crypto";
import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { SigningKeys, verifyLicenseFile } from "@licensd/client";
import { afterAll, describe, expect, it } from "vitest";
import { ActivationService } from "../../gen/ts/licensd/activation/v1/activation_service_pb.js";
import { AuditService } from "../../gen/ts/licensd/audit/v1/audit_service_pb.js";
import { LicensingService } from "../../gen/ts/licensd/licensing/v1/licensing_service_pb.js";
import { ApiKeyScope } from "../../gen/ts/licensd/tenant/v1/api_key_pb.js";
import { TenantService } from "../../gen/ts/licensd/tenant/v1/tenant_service_pb.js";
import { connectClient } from "../support/app.js";
import { createTestDatabase, query } from "../support/database.js";
import { Runbook } from "../support/runbook.js";
import { run, startServer, type ServerProcess } from "../support/server.js";

type Server = ServerProcess & { dropDatabase(): Promise<void> };
const cleanups: (() => Promise<unknown>)[] = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => undefined);
});

/** A tenant with a product, a policy, a webhook endpoint (a sealed secret), a license, a file and an activation. */
async function vendor(server: Server, code: string) {
  const tenants = connectClient(TenantService, server.url, server.superAdminKey);
  const { tenant } = await tenants.createTenant({ name: `${code} vendor` });
  const { secret } = await tenants.createApiKey({ tenantId: tenant!.id, name: "admin", scopes: [ApiKeyScope.ADMIN] });
  const api = connectClient(LicensingService, server.url, secret);
  const product = (await api.createProduct({ code, name: "App" })).product!;
  const policy = (await api.createPolicy({ productId: product.id, name: "std", floating: true, maxMachines: 3 }))
    .policy!;
  const customer = (await api.createCustomer({ name: "Ann", email: `ann@${code.toLowerCase()}.example` })).customer!;
  const license = await api.createLicense({ policyId: policy.id, customerId: customer.id });
  const file = (await api.issueLicenseFile({ licenseId: license.license!.id })).licenseFile;
  const lease = (
    await connectClient(ActivationService, server.url).activate({ key: license.key, fingerprint: `${code}-fp` })
  ).lease!;
  return { tenantId: tenant!.id, secret, api, policyId: policy.id, customerId: customer.id, license, file, lease };
}

describe("drill: backup and restore (docs/operations.md)", () => {
  it("dumps a live database, restores it, serves it, and proves the audit logs are the same history", async () => {
    const source = await startServer();
    cleanups.push(
      () => source.dropDatabase(),
      () => source.stop(),
    );
    const target = await createTestDatabase();
    cleanups.push(() => target.drop());
    const acme = await vendor(source, "ACM");
    const globex = await vendor(source, "GLX");

    const rb = new Runbook("backup-restore", {
      LICENSD_URL: source.url,
      LICENSD_API_KEY: source.superAdminKey,
      LICENSD_DATABASE_URL: source.env.LICENSD_DATABASE_URL!,
      LICENSD_DATA_KEY: source.dataKey,
      LICENSD_SUPER_ADMIN_KEY: source.superAdminKey,
      RESTORE_DATABASE_URL: target.url,
    });

    // The instance keeps serving and writing for the whole backup: licenses are created one after another until told
    // to stop.
    let writing = true;
    let written = 0;
    const writer = (async () => {
      while (writing) {
        await acme.api.createLicense({ policyId: acme.policyId, customerId: acme.customerId });
        written++;
      }
    })();

    const saved: Record<string, { treeSize: number }> = {};
    await rb.step("save-checkpoints", async (r) => {
      expect(r.stdout.trim()).toBe("2");
      expect(readdirSync(path.join(rb.cwd, "checkpoints")).sort()).toEqual(
        [`${acme.tenantId}.json`, `${globex.tenantId}.json`].sort(),
      );
      for (const t of [acme.tenantId, globex.tenantId])
        saved[t] = JSON.parse(readFileSync(path.join(rb.cwd, "checkpoints", `${t}.json`), "utf8"));
    });
    const writtenBeforeDump = written;
    await rb.step("dump", (r) => {
      expect(Number(r.stdout.trim())).toBeGreaterThan(10);
    });
    writing = false;
    await writer;
    // The dump ran while licenses were being created (how many depends on the machine's load: at least one).
    expect(written - writtenBeforeDump).toBeGreaterThan(0);
    // A change after the backup, and a verifier that saw it (its state file is past the dump).
    const after = await acme.api.createLicense({ policyId: acme.policyId, customerId: acme.customerId });
    const laterState = path.join(rb.cwd, "later.json");
    const seenLater = await run(
      path.join(rb.bin, "licensd"),
      ["audit", "verify", "--tenant", acme.tenantId, "--state", laterState],
      { env: { LICENSD_URL: source.url, LICENSD_API_KEY: source.superAdminKey } },
    );
    expect(seenLater.code, seenLater.stderr).toBe(0);

    await rb.step("keep-the-secrets");
    await rb.step("restore", async () => {
      const count = async (url: string) =>
        (await query<{ n: number }>(url, "select count(*)::int as n from tenants"))[0]!.n;
      expect(await count(target.url)).toBe(2);
    });
    await rb.step("migrate", async (r) => {
      expect(r.stdout + r.stderr).toContain("no pending migrations");
      const applied = async (url: string) =>
        (await query<{ name: string }>(url, "select name from mikro_orm_migrations order by name")).map((m) => m.name);
      expect(await applied(target.url)).toEqual(await applied(source.env.LICENSD_DATABASE_URL!));
    });

    let restored: Server | undefined;
    await rb.step("start-on-the-restored-database", async () => {
      restored = await startServer({
        databaseUrl: target.url,
        env: { LICENSD_SUPER_ADMIN_KEY: source.superAdminKey, LICENSD_DATA_KEY: source.dataKey },
      });
      cleanups.push(() => restored!.stop());
      rb.env.RESTORED_URL = restored.url;
      // It starts with the backup's signing keys: what was signed before the backup verifies against them.
      const keys = (url: string) => connectClient(ActivationService, url).getSigningKeys({});
      expect((await keys(restored.url)).keys.map((k) => k.kid)).toEqual(
        (await keys(source.url)).keys.map((k) => k.kid),
      );
      const fresh = new SigningKeys({ baseUrl: restored.url });
      for (const v of [acme, globex]) expect((await verifyLicenseFile(v.file, { keys: fresh })).code).toBe("VALID");
      // Sealed secrets open: license keys kept for re-delivery come back as they were.
      const reveal = await connectClient(LicensingService, restored.url, acme.secret).revealLicenseKey({
        id: acme.license.license!.id,
      });
      expect(reveal.key).toBe(acme.license.key);
      // The machines and their seats are there: a heartbeat renews the lease.
      const renewed = await connectClient(ActivationService, restored.url).heartbeat({
        key: globex.license.key,
        fingerprint: "GLX-fp",
      });
      expect(renewed.lease!.token).toMatch(/^licensd1\./);
    });

    await rb.step("verify-the-audit-logs", async (r) => {
      const ok = r.stdout.split("\n").filter((l) => l.startsWith("ok   "));
      for (const t of [acme.tenantId, globex.tenantId]) {
        expect(ok.some((l) => l.includes(`checkpoint of ${t}`))).toBe(true);
        expect(ok).toContain(
          `ok   consistent with the saved checkpoint of ${saved[t]!.treeSize} entries (history only appended to)`,
        );
      }
      // The chain check printed its verdict for each tenant (the loop stops at the first exit 4).
      const audit = connectClient(AuditService, restored!.url, source.superAdminKey);
      for (const t of [acme.tenantId, globex.tenantId]) {
        const chain = await audit.verifyAuditChain({ tenantId: t });
        expect(chain).toMatchObject({ valid: true });
        // The restored log is longer than the saved checkpoint: the writes during the backup are in it.
        const cp = (await audit.getCheckpoint({ tenantId: t })).checkpoint!;
        expect(Number(cp.treeSize)).toBeGreaterThanOrEqual(saved[t]!.treeSize);
      }
      expect(Number((await audit.getCheckpoint({ tenantId: acme.tenantId })).checkpoint!.treeSize)).toBeGreaterThan(
        saved[acme.tenantId]!.treeSize,
      );
      // What was committed after the dump is not in the restore, and a verifier that saw it says the log shrank.
      await expect(
        connectClient(LicensingService, restored!.url, acme.secret).getLicense({ id: after.license!.id }),
      ).rejects.toMatchObject({ code: 5 });
      const shrank = await run(
        path.join(rb.bin, "licensd"),
        ["audit", "verify", "--tenant", acme.tenantId, "--state", laterState],
        { env: { LICENSD_URL: restored!.url, LICENSD_API_KEY: source.superAdminKey } },
      );
      expect(shrank.code).toBe(4);
      expect(shrank.stdout).toMatch(/FAIL the log shrank from \d+ to \d+ entries/);
    });

    await rb.step("the-data-key-is-required", async () => {
      await restored!.stop();
      const wrongKey = randomBytes(32).toString("base64");
      const refused = await startServer({
        databaseUrl: target.url,
        env: { LICENSD_SUPER_ADMIN_KEY: source.superAdminKey, LICENSD_DATA_KEY: wrongKey },
      }).then(
        (s) => {
          cleanups.push(() => s.stop());
          return "started";
        },
        (err: Error) => err.message,
      );
      expect(refused).toMatch(/^licensd exited with 1:/);
      expect(refused).toMatch(
        /licensd: failed to start: no configured data key opens the data-key material "[a-z0-9-]+" stored in this database: it was sealed under another key than LICENSD_DATA_KEY/,
      );
    });
    rb.finish();
  }, 180_000);
});

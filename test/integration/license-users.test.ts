import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AuditService } from "../../gen/ts/licensd/audit/v1/audit_service_pb.js";
import { LicensingService, ValidationCode } from "../../gen/ts/licensd/licensing/v1/licensing_service_pb.js";
import { ApiKeyScope } from "../../gen/ts/licensd/tenant/v1/api_key_pb.js";
import { TenantService } from "../../gen/ts/licensd/tenant/v1/tenant_service_pb.js";
import { connectClient, grpcClient, startTestApp, type TestApp } from "../support/app.js";
import { createTestDatabase, query } from "../support/database.js";
import { failure } from "../support/errors.js";
import { until } from "../support/wait.js";

let db: { url: string; drop(): Promise<void> };
let a: TestApp;
let b: TestApp;

beforeAll(async () => {
  db = await createTestDatabase();
  a = await startTestApp({ databaseUrl: db.url });
  b = await startTestApp({
    databaseUrl: db.url,
    env: { LICENSD_SUPER_ADMIN_KEY: a.superAdminKey, LICENSD_DATA_KEY: a.app.config.dataKey.toString("base64") },
  });
});
afterAll(async () => {
  await a?.close();
  await b?.close();
  await db?.drop();
});

/** A tenant with a product, a policy (`policy` overrides its fields) and one license. */
async function setup(code: string, policy: Record<string, unknown> = {}) {
  const tenants = connectClient(TenantService, a.url, a.superAdminKey);
  const { tenant } = await tenants.createTenant({ name: `${code} vendor` });
  const { secret } = await tenants.createApiKey({ tenantId: tenant!.id, name: "admin", scopes: [ApiKeyScope.ADMIN] });
  const { secret: readKey } = await tenants.createApiKey({
    tenantId: tenant!.id,
    name: "read",
    scopes: [ApiKeyScope.READ],
  });
  const api = connectClient(LicensingService, a.url, secret);
  const apiB = connectClient(LicensingService, b.url, secret);
  const product = (await api.createProduct({ code, name: "App" })).product!;
  const pol = (await api.createPolicy({ productId: product.id, name: "team", floating: true, ...policy })).policy!;
  const customer = (await api.createCustomer({ name: "Jane", email: `jane@${code.toLowerCase()}.example` })).customer!;
  const lic = await api.createLicense({ policyId: pol.id, customerId: customer.id });
  return { tenantId: tenant!.id, secret, readKey, api, apiB, key: lic.key, licenseId: lic.license!.id, policy: pol };
}

const validate = (t: TestApp, key: string, user?: string) =>
  grpcClient(LicensingService, t.url).validateLicense({ key, user });

describe("license users", () => {
  it("attaches exactly 3 users from 20 concurrent adds against max_users 3, across two instances", async () => {
    const s = await setup("LUC", { maxUsers: 3 });
    const results = await Promise.allSettled(
      Array.from({ length: 20 }, (_, i) =>
        (i % 2 ? s.api : s.apiB).addLicenseUser({ licenseId: s.licenseId, user: `user-${i}` }),
      ),
    );
    expect(results.filter((r) => r.status === "fulfilled")).toHaveLength(3);
    for (const r of results.filter((r) => r.status === "rejected")) {
      expect(await failure(Promise.reject((r as PromiseRejectedResult).reason))).toMatchObject({
        code: "FailedPrecondition",
        reason: "LICENSE_USERS_LIMIT",
        metadata: { license_id: s.licenseId, max_users: "3" },
      });
    }
    expect(
      (await query(db.url, "select count(*)::int as n from license_users where license_id = $1", [s.licenseId]))[0].n,
    ).toBe(3);
    const audit = await connectClient(AuditService, a.url, s.secret).listAuditEvents({
      typePrefix: "license.user_",
    });
    expect(audit.events.map((e) => [e.type, e.subject])).toEqual(Array(3).fill(["license.user_added", s.licenseId]));
  });

  it("adds, lists by page, refuses duplicates, removes (freeing a slot), idempotently and audited", async () => {
    const s = await setup("LUA", { maxUsers: 5 });
    const added = await s.api.addLicenseUser({
      licenseId: s.licenseId,
      user: "Ada@Example.COM",
      name: "Ada",
      metadata: { team: "ops" },
      idempotencyKey: "add-ada",
    });
    expect(added.licenseUser).toMatchObject({
      licenseId: s.licenseId,
      tenantId: s.tenantId,
      user: "ada@example.com",
      name: "Ada",
      metadata: { team: "ops" },
    });
    expect(added.licenseUser!.id).toMatch(/^lusr_[0-9a-z]{26}$/);
    // A retry with the same key (on the other instance) is the first answer and adds nothing.
    const retried = await s.apiB.addLicenseUser({
      licenseId: s.licenseId,
      user: "Ada@Example.COM",
      name: "Ada",
      metadata: { team: "ops" },
      idempotencyKey: "add-ada",
    });
    expect(retried.licenseUser!.id).toBe(added.licenseUser!.id);
    expect(await failure(s.api.addLicenseUser({ licenseId: s.licenseId, user: "ada@example.com" }))).toMatchObject({
      code: "AlreadyExists",
      reason: "LICENSE_USER_EXISTS",
    });
    // Vendor ids are kept as given: case matters.
    for (const user of ["u-1", "U-1", "auth0|5f7c8ec7c33c6c004bbafe82", "u-3"])
      await s.api.addLicenseUser({ licenseId: s.licenseId, user });
    expect(await failure(s.api.addLicenseUser({ licenseId: s.licenseId, user: "u-4" }))).toMatchObject({
      code: "FailedPrecondition",
      reason: "LICENSE_USERS_LIMIT",
    });

    const seen: string[] = [];
    let pageToken = "";
    let pages = 0;
    do {
      const page = await connectClient(LicensingService, b.url, s.readKey).listLicenseUsers({
        licenseId: s.licenseId,
        pageSize: 2,
        pageToken,
      });
      expect(page.licenseUsers.length).toBeLessThanOrEqual(2);
      seen.push(...page.licenseUsers.map((u) => u.user));
      pageToken = page.nextPageToken;
      pages++;
    } while (pageToken);
    expect(pages).toBe(3);
    expect(seen).toEqual(["ada@example.com", "u-1", "U-1", "auth0|5f7c8ec7c33c6c004bbafe82", "u-3"]);

    const removed = await s.apiB.removeLicenseUser({
      licenseId: s.licenseId,
      user: "ADA@example.com",
      idempotencyKey: "rm-ada",
    });
    expect(removed.licenseUser!.id).toBe(added.licenseUser!.id);
    expect(
      (await s.api.removeLicenseUser({ licenseId: s.licenseId, user: "ADA@example.com", idempotencyKey: "rm-ada" }))
        .licenseUser!.id,
    ).toBe(added.licenseUser!.id);
    expect(await failure(s.api.removeLicenseUser({ licenseId: s.licenseId, user: "ada@example.com" }))).toMatchObject({
      code: "NotFound",
      reason: "LICENSE_USER_NOT_FOUND",
    });
    expect(await failure(s.api.removeLicenseUser({ licenseId: s.licenseId, user: "u-1 " }))).toMatchObject({
      code: "InvalidArgument",
      metadata: { field: "user" },
    });
    await s.api.addLicenseUser({ licenseId: s.licenseId, user: "u-4" }); // the freed slot

    const audit = await connectClient(AuditService, a.url, s.secret).listAuditEvents({
      typePrefix: "license.user_",
    });
    expect(audit.events.map((e) => e.type)).toEqual([
      ...Array(5).fill("license.user_added"),
      "license.user_removed",
      "license.user_added",
    ]);
    expect(audit.events[5]!.payload).toEqual({
      license_user_id: added.licenseUser!.id,
      user: "ada@example.com",
    });

    // Deleting the license deletes its users.
    await s.api.deleteLicense({ id: s.licenseId });
    expect(await failure(s.api.listLicenseUsers({ licenseId: s.licenseId }))).toMatchObject({ code: "NotFound" });
    expect(
      (await query(db.url, "select count(*)::int as n from license_users where license_id = $1", [s.licenseId]))[0].n,
    ).toBe(0);
  });

  it("is tenant-scoped (another tenant's license is NOT_FOUND) and needs admin scope to change", async () => {
    const s = await setup("LUT");
    const other = await setup("LUO");
    await other.api.addLicenseUser({ licenseId: other.licenseId, user: "theirs@example.com" });
    for (const call of [
      () => s.api.addLicenseUser({ licenseId: other.licenseId, user: "x@example.com" }),
      () => s.api.listLicenseUsers({ licenseId: other.licenseId }),
      () => s.api.removeLicenseUser({ licenseId: other.licenseId, user: "theirs@example.com" }),
    ])
      expect(await failure(call())).toMatchObject({ code: "NotFound", reason: "LICENSE_NOT_FOUND" });
    expect((await other.api.listLicenseUsers({ licenseId: other.licenseId })).licenseUsers).toHaveLength(1);
    expect(
      await failure(
        connectClient(LicensingService, a.url, s.readKey).addLicenseUser({ licenseId: s.licenseId, user: "r" }),
      ),
    ).toMatchObject({ code: "PermissionDenied" });
    expect(
      await failure(connectClient(LicensingService, a.url).listLicenseUsers({ licenseId: s.licenseId })),
    ).toMatchObject({ code: "Unauthenticated" });
    // The super-admin names the tenant.
    const admin = connectClient(LicensingService, a.url, a.superAdminKey);
    await admin.addLicenseUser({ tenantId: s.tenantId, licenseId: s.licenseId, user: "root-added" });
    expect(
      await failure(admin.addLicenseUser({ tenantId: other.tenantId, licenseId: s.licenseId, user: "root-added" })),
    ).toMatchObject({ code: "NotFound" });
    // A page token of one license's list is not good for another's.
    await s.api.addLicenseUser({ licenseId: s.licenseId, user: "second" });
    const first = await s.api.listLicenseUsers({ licenseId: s.licenseId, pageSize: 1 });
    const lic2 = await s.api.createLicense({
      policyId: s.policy.id,
      customerId: (await s.api.listCustomers({})).customers[0]!.id,
    });
    expect(
      await failure(s.api.listLicenseUsers({ licenseId: lic2.license!.id, pageToken: first.nextPageToken })),
    ).toMatchObject({ code: "InvalidArgument", reason: "INVALID_PAGE_TOKEN" });
  });

  it("refuses bad input naming the field, and changes nothing", async () => {
    const s = await setup("LUB");
    const cases: [Record<string, unknown>, string, string?][] = [
      [{ user: "" }, "user"],
      [{ user: "a b" }, "user"],
      [{ user: "nul\u0000id" }, "user"],
      [{ user: "x".repeat(255) }, "user"],
      [{ user: "tab\tid" }, "user"],
      [{ user: "ada@" }, "user", "USER_INVALID"],
      [{ user: "ada@example" }, "user", "USER_INVALID"],
      [{ user: "a@b@example.com" }, "user", "USER_INVALID"],
      [{ user: "ok", name: "n".repeat(201) }, "name"],
      [{ user: "ok", metadata: { "bad key": "v" } }, 'metadata["bad key"]'],
      [{ user: "ok", idempotencyKey: "no spaces" }, "idempotency_key"],
    ];
    for (const [fields, field, reason] of cases) {
      expect(await failure(s.api.addLicenseUser({ licenseId: s.licenseId, ...fields })), field).toMatchObject({
        code: "InvalidArgument",
        metadata: { field },
        ...(reason ? { reason } : {}),
      });
    }
    expect(await failure(s.api.addLicenseUser({ licenseId: "lic_x", user: "ok" }))).toMatchObject({
      code: "InvalidArgument",
      metadata: { field: "license_id" },
    });
    expect(await failure(s.api.listLicenseUsers({ licenseId: s.licenseId, pageSize: 1001 }))).toMatchObject({
      code: "InvalidArgument",
      metadata: { field: "page_size" },
    });
    expect(await failure(validate(a, s.key, "nul\u0000"))).toMatchObject({
      code: "InvalidArgument",
      metadata: { field: "user" },
    });
    expect((await s.api.listLicenseUsers({ licenseId: s.licenseId })).licenseUsers).toEqual([]);
  });
});

describe("validation scoped to a user", () => {
  it("leaves old policies as they were: no user needed, a user given to a license without users ignored", async () => {
    const s = await setup("LVO");
    expect(s.policy.requireUserScope).toBe(false);
    expect((await validate(a, s.key)).code).toBe(ValidationCode.VALID);
    expect((await validate(a, s.key, "anyone@example.com")).code).toBe(ValidationCode.VALID);
  });

  it("checks a given user once the license has users; sees adds and removes made on the other instance", async () => {
    const s = await setup("LVU");
    expect((await validate(b, s.key, "bob")).code).toBe(ValidationCode.VALID); // cached on B, no users yet
    await s.api.addLicenseUser({ licenseId: s.licenseId, user: "Ada@Example.com" });
    await s.api.addLicenseUser({ licenseId: s.licenseId, user: "carol" });
    const mismatch = await until(
      "USER_SCOPE_MISMATCH on instance B",
      () => validate(b, s.key, "bob"),
      (r) => r.code === ValidationCode.USER_SCOPE_MISMATCH,
    );
    expect(mismatch).toMatchObject({ valid: false, detail: "the user is not one of the license's users" });
    expect(mismatch.license?.id).toBe(s.licenseId);
    expect(await validate(b, s.key, "ADA@example.COM")).toMatchObject({ valid: true, code: ValidationCode.VALID });
    expect((await validate(b, s.key, "Carol")).code).toBe(ValidationCode.USER_SCOPE_MISMATCH); // ids: exact
    expect((await validate(b, s.key)).code).toBe(ValidationCode.VALID); // no setting: a user is not required

    expect((await validate(b, s.key, "carol")).code).toBe(ValidationCode.VALID); // cached on B
    await s.api.removeLicenseUser({ licenseId: s.licenseId, user: "carol" });
    expect(
      (
        await until(
          "carol removed, seen on instance B",
          () => validate(b, s.key, "carol"),
          (r) => r.code !== ValidationCode.VALID,
        )
      ).code,
    ).toBe(ValidationCode.USER_SCOPE_MISMATCH);
  });

  it("requires a user under require_user_scope (USER_SCOPE_REQUIRED, then USER_SCOPE_MISMATCH)", async () => {
    const s = await setup("LVR", { requireUserScope: true });
    expect(s.policy.requireUserScope).toBe(true);
    expect(await validate(a, s.key)).toMatchObject({
      valid: false,
      code: ValidationCode.USER_SCOPE_REQUIRED,
      detail: "the license's policy requires a user",
    });
    // Under the setting, a license without users has no user who may validate.
    expect((await validate(a, s.key, "ada@example.com")).code).toBe(ValidationCode.USER_SCOPE_MISMATCH);
    await s.api.addLicenseUser({ licenseId: s.licenseId, user: "ada@example.com" });
    await until(
      "VALID for ada",
      () => validate(a, s.key, "ada@example.com"),
      (r) => r.code === ValidationCode.VALID,
    );
    expect((await validate(b, s.key)).code).toBe(ValidationCode.USER_SCOPE_REQUIRED);

    // The setting changes through UpdatePolicy, and old answers are not kept.
    const updated = await s.api.updatePolicy({
      id: s.policy.id,
      requireUserScope: false,
      updateMask: { paths: ["require_user_scope"] },
    });
    expect(updated.policy!.requireUserScope).toBe(false);
    expect((await s.api.getPolicy({ id: s.policy.id })).policy!.requireUserScope).toBe(false);
    await until(
      "no user required on instance B",
      () => validate(b, s.key),
      (r) => r.code === ValidationCode.VALID,
    );
  });

  it("checks the user after the machine codes and before entitlements", async () => {
    const s = await setup("LVE", { requireUserScope: true, requireFingerprintScope: true });
    expect((await validate(a, s.key)).code).toBe(ValidationCode.FINGERPRINT_SCOPE_REQUIRED);
    const t = await setup("LVF", { requireUserScope: true });
    await t.api.addLicenseUser({ licenseId: t.licenseId, user: "ada" });
    const api = grpcClient(LicensingService, a.url);
    await until(
      "ada attached",
      () => api.validateLicense({ key: t.key, user: "ada" }),
      (r) => r.code === ValidationCode.VALID,
    );
    expect((await api.validateLicense({ key: t.key, user: "bob", entitlements: ["nope"] })).code).toBe(
      ValidationCode.USER_SCOPE_MISMATCH,
    );
    expect((await api.validateLicense({ key: t.key, user: "ada", entitlements: ["nope"] })).code).toBe(
      ValidationCode.ENTITLEMENTS_MISSING,
    );
  });
});

import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ApiKeyScope } from "../../gen/ts/licensd/tenant/v1/api_key_pb.js";
import { ListApiKeysResponseSchema, TenantService } from "../../gen/ts/licensd/tenant/v1/tenant_service_pb.js";
import { toJsonString } from "@bufbuild/protobuf";
import { sha256 } from "../../src/platform/crypto.js";
import { ManualClock } from "../../src/platform/clock.js";
import { connectClient, grpcClient, startTestApp, type TestApp } from "../support/app.js";
import { query } from "../support/database.js";
import { failure } from "../support/errors.js";

let t: TestApp;
const clock = new ManualClock(new Date("2026-11-23T10:00:00Z"));
const admin = () => connectClient(TenantService, t.url, t.superAdminKey);

beforeAll(async () => {
  t = await startTestApp({ clock });
});
afterAll(async () => {
  await t?.close();
});

async function tenantWithKey(name: string, scopes = [ApiKeyScope.ADMIN]) {
  const { tenant } = await admin().createTenant({ name });
  const { secret, apiKey } = await admin().createApiKey({ tenantId: tenant!.id, name: "k", scopes });
  return { tenant: tenant!, secret, apiKey: apiKey! };
}

describe("tenants", () => {
  it("creates, reads, updates by field mask and deletes a tenant", async () => {
    const { tenant } = await admin().createTenant({ name: "Acme", metadata: { plan: "gold", region: "eu" } });
    expect(tenant!.id).toMatch(/^ten_[0-9a-z]{26}$/);
    expect(tenant!.metadata).toEqual({ plan: "gold", region: "eu" });

    const got = await admin().getTenant({ id: tenant!.id });
    expect(got.tenant!.name).toBe("Acme");

    clock.advance(1000);
    const renamed = await admin().updateTenant({
      tenant: { id: tenant!.id, name: "Acme Corp", metadata: {} },
      updateMask: { paths: ["name"] },
    });
    expect(renamed.tenant!.name).toBe("Acme Corp");
    expect(renamed.tenant!.metadata).toEqual({ plan: "gold", region: "eu" }); // not in the mask: untouched
    expect(renamed.tenant!.updateTime!.seconds).toBeGreaterThan(tenant!.updateTime!.seconds);

    const relabelled = await admin().updateTenant({
      tenant: { id: tenant!.id, metadata: { plan: "silver" } },
      updateMask: { paths: ["metadata"] },
    });
    expect(relabelled.tenant).toMatchObject({ name: "Acme Corp", metadata: { plan: "silver" } });

    const deleted = await admin().deleteTenant({ id: tenant!.id });
    expect(deleted.tenant!.id).toBe(tenant!.id);
    expect(await failure(admin().getTenant({ id: tenant!.id }))).toMatchObject({
      code: "NotFound",
      reason: "TENANT_NOT_FOUND",
    });
    expect(await failure(admin().deleteTenant({ id: tenant!.id }))).toMatchObject({ code: "NotFound" });
    const listed = await admin().listTenants({ pageSize: 1000 });
    expect(listed.tenants.map((x) => x.id)).not.toContain(tenant!.id);
  });

  it("refuses bad input with INVALID_ARGUMENT naming the field, and changes nothing", async () => {
    const before = await query(t.databaseUrl, "select count(*)::int as n from tenants");
    const cases = [
      [() => admin().createTenant({ name: "" }), "name"],
      [() => admin().createTenant({ name: "x".repeat(201) }), "name"],
      [() => admin().createTenant({ name: "ok", metadata: { "bad key!": "v" } }), "metadata"],
      [() => admin().createTenant({ name: "ok", idempotencyKey: "spaces are not allowed" }), "idempotency_key"],
      [() => admin().getTenant({ id: "nope" }), "id"],
      [() => admin().listTenants({ pageSize: 1001 }), "page_size"],
      [() => admin().listTenants({ pageToken: "garbage!" }), "page_token"],
      [() => admin().updateTenant({ tenant: { id: "ten_00000000000000000000000000", name: "x" } }), "update_mask"],
      [() => admin().createApiKey({ tenantId: "ten_00000000000000000000000000", name: "k", scopes: [] }), "scopes"],
      [
        () =>
          admin().createApiKey({
            tenantId: "ten_00000000000000000000000000",
            name: "k",
            scopes: [ApiKeyScope.UNSPECIFIED],
          }),
        "scopes[0]",
      ],
      [
        () =>
          admin().createApiKey({
            tenantId: "ten_00000000000000000000000000",
            name: "k",
            scopes: [ApiKeyScope.READ],
            expireTime: { seconds: 1n, nanos: 0 },
          }),
        "expire_time",
      ],
      [() => admin().createApiKey({ name: "k", scopes: [ApiKeyScope.READ] }), "tenant_id"],
    ] as const;
    for (const [call, field] of cases) {
      const f = await failure(call());
      expect(f, `field ${field}`).toMatchObject({ code: "InvalidArgument", domain: "licensd.dev" });
      expect(f.metadata.field?.startsWith(field), `${f.metadata.field} names ${field}`).toBe(true);
      expect(f.message).toContain(field);
    }
    const { tenant } = await admin().createTenant({ name: "Masked" });
    for (const paths of [["id"], [], ["name", "create_time"]]) {
      const f = await failure(
        admin().updateTenant({ tenant: { id: tenant!.id, name: "Changed" }, updateMask: { paths } }),
      );
      expect(f).toMatchObject({ code: "InvalidArgument", metadata: { field: "update_mask" } });
    }
    expect((await admin().getTenant({ id: tenant!.id })).tenant!.name).toBe("Masked");
    const after = await query(t.databaseUrl, "select count(*)::int as n from tenants");
    expect((after[0].n as number) - (before[0].n as number)).toBe(1);
  });

  it("pages through tenants with opaque tokens, oldest first", async () => {
    const created: string[] = [];
    for (let i = 0; i < 7; i++) created.push((await admin().createTenant({ name: `page-${i}` })).tenant!.id);
    const seen: string[] = [];
    let pageToken = "";
    do {
      const page = await admin().listTenants({ pageSize: 3, pageToken });
      expect(page.tenants.length).toBeLessThanOrEqual(3);
      seen.push(...page.tenants.map((x) => x.id));
      pageToken = page.nextPageToken;
    } while (pageToken !== "");
    expect(seen.filter((id) => created.includes(id))).toEqual(created);
    expect(new Set(seen).size).toBe(seen.length);
  });
});

describe("idempotency", () => {
  it("returns the first response to a retry and creates one tenant", async () => {
    const req = { name: "Retry Co", metadata: { a: "1", b: "2" }, idempotencyKey: "create-retry-co" };
    const first = await admin().createTenant(req);
    const second = await admin().createTenant({ ...req, metadata: { b: "2", a: "1" } }); // same body, keys reordered
    expect(second.tenant!.id).toBe(first.tenant!.id);
    const rows = await query(t.databaseUrl, "select count(*)::int as n from tenants where name = 'Retry Co'");
    expect(rows[0].n).toBe(1);
  });

  it("refuses the same key with another body: ALREADY_EXISTS, nothing created", async () => {
    await admin().createTenant({ name: "First body", idempotencyKey: "reused-key" });
    const f = await failure(admin().createTenant({ name: "Second body", idempotencyKey: "reused-key" }));
    expect(f).toMatchObject({
      code: "AlreadyExists",
      reason: "IDEMPOTENCY_KEY_REUSED",
      metadata: { field: "idempotency_key" },
    });
    expect(await query(t.databaseUrl, "select 1 from tenants where name = 'Second body'")).toHaveLength(0);
  });

  it("runs concurrent retries once", async () => {
    const calls = Array.from({ length: 8 }, () =>
      admin().createTenant({ name: "Concurrent Co", idempotencyKey: "concurrent-key" }),
    );
    const results = await Promise.all(calls);
    expect(new Set(results.map((r) => r.tenant!.id)).size).toBe(1);
    expect(
      (await query(t.databaseUrl, "select count(*)::int as n from tenants where name = 'Concurrent Co'"))[0].n,
    ).toBe(1);
  });

  it("keeps keys apart per tenant and per method", async () => {
    const a = await tenantWithKey("Idem A");
    const b = await tenantWithKey("Idem B");
    const ka = await connectClient(TenantService, t.url, a.secret).createApiKey({
      name: "same",
      scopes: [ApiKeyScope.READ],
      idempotencyKey: "k",
    });
    const kb = await connectClient(TenantService, t.url, b.secret).createApiKey({
      name: "same",
      scopes: [ApiKeyScope.READ],
      idempotencyKey: "k",
    });
    expect(ka.apiKey!.tenantId).toBe(a.tenant.id);
    expect(kb.apiKey!.tenantId).toBe(b.tenant.id);
    expect(kb.secret).not.toBe(ka.secret);
  });
});

describe("API keys and auth", () => {
  it("shows the secret once and stores only its SHA-256 digest", async () => {
    const { tenant, secret, apiKey } = await tenantWithKey("Digest Co");
    expect(secret).toMatch(/^lsk_[A-Za-z0-9_-]{43}$/);
    expect(apiKey.prefix).toBe(secret.slice(0, 12));
    const rows = await query<{ secret_digest: Buffer }>(
      t.databaseUrl,
      "select secret_digest from api_keys where id = $1",
      [apiKey.id],
    );
    expect(rows[0].secret_digest.equals(sha256(secret))).toBe(true);
    const leaked = await query(
      t.databaseUrl,
      "select 1 from api_keys where position($1 in row(api_keys.*)::text) > 0",
      [secret.slice(4)],
    );
    expect(leaked).toHaveLength(0);
    const listed = await admin().listApiKeys({ tenantId: tenant.id });
    expect(toJsonString(ListApiKeysResponseSchema, listed)).not.toContain(secret.slice(4));
  });

  it("authenticates tenant keys by scope", async () => {
    const { tenant, secret } = await tenantWithKey("Scoped Co");
    const reader = await admin().createApiKey({ tenantId: tenant.id, name: "reader", scopes: [ApiKeyScope.READ] });
    const asAdmin = connectClient(TenantService, t.url, secret);
    const asReader = connectClient(TenantService, t.url, reader.secret);

    expect((await asAdmin.getTenant({ id: tenant.id })).tenant!.name).toBe("Scoped Co");
    expect((await asReader.getTenant({ id: tenant.id })).tenant!.name).toBe("Scoped Co");
    expect((await asAdmin.listApiKeys({})).apiKeys).toHaveLength(2);
    expect(await failure(asReader.listApiKeys({}))).toMatchObject({
      code: "PermissionDenied",
      reason: "SCOPE_REQUIRED",
    });
    expect(await failure(asReader.createApiKey({ name: "x", scopes: [ApiKeyScope.ADMIN] }))).toMatchObject({
      code: "PermissionDenied",
    });
    expect(await failure(asAdmin.createTenant({ name: "nope" }))).toMatchObject({
      code: "PermissionDenied",
      reason: "SUPER_ADMIN_REQUIRED",
    });
    expect(await failure(asAdmin.listTenants({}))).toMatchObject({ code: "PermissionDenied" });
    expect(await failure(asAdmin.deleteTenant({ id: tenant.id }))).toMatchObject({ code: "PermissionDenied" });
  });

  it("refuses missing, malformed, unknown, revoked and expired keys", async () => {
    const { tenant, secret } = await tenantWithKey("Auth Co");
    const anon = connectClient(TenantService, t.url);
    expect(await failure(anon.getTenant({ id: tenant.id }))).toMatchObject({
      code: "Unauthenticated",
      reason: "MISSING_API_KEY",
    });
    expect(
      await failure(connectClient(TenantService, t.url, "lsk_unknown").getTenant({ id: tenant.id })),
    ).toMatchObject({
      code: "Unauthenticated",
      reason: "INVALID_API_KEY",
    });
    expect(await failure(connectClient(TenantService, t.url, "not-a-key").listTenants({}))).toMatchObject({
      code: "Unauthenticated",
    });

    clock.set(new Date());
    const temp = await admin().createApiKey({
      tenantId: tenant.id,
      name: "temp",
      scopes: [ApiKeyScope.READ],
      expireTime: { seconds: BigInt(Math.floor(Date.now() / 1000) + 3600), nanos: 0 },
    });
    const asTemp = connectClient(TenantService, t.url, temp.secret);
    expect((await asTemp.getTenant({})).tenant!.id).toBe(tenant.id);
    clock.advance(2 * 3600_000);
    expect(await failure(asTemp.getTenant({}))).toMatchObject({ code: "Unauthenticated" });

    const asAdmin = connectClient(TenantService, t.url, secret);
    const other = await asAdmin.createApiKey({ name: "other", scopes: [ApiKeyScope.READ] });
    const revoked = await asAdmin.revokeApiKey({ id: other.apiKey!.id });
    expect(revoked.apiKey!.revokeTime).toBeDefined();
    const again = await asAdmin.revokeApiKey({ id: other.apiKey!.id });
    expect(again.apiKey!.revokeTime).toEqual(revoked.apiKey!.revokeTime);
    expect(await failure(connectClient(TenantService, t.url, other.secret).getTenant({}))).toMatchObject({
      code: "Unauthenticated",
    });
    const live = await asAdmin.listApiKeys({});
    expect(live.apiKeys.map((k) => k.id)).not.toContain(other.apiKey!.id);
    const all = await asAdmin.listApiKeys({ showRevoked: true });
    expect(all.apiKeys.map((k) => k.id)).toContain(other.apiKey!.id);
  });

  it("stops a deleted tenant's keys at once", async () => {
    const { tenant, secret } = await tenantWithKey("Doomed Co");
    const asTenant = connectClient(TenantService, t.url, secret);
    expect((await asTenant.getTenant({})).tenant!.id).toBe(tenant.id);
    await admin().deleteTenant({ id: tenant.id });
    expect(await failure(asTenant.getTenant({}))).toMatchObject({ code: "Unauthenticated" });
  });

  it("keeps tenants apart: another tenant's ids are NOT_FOUND, never PERMISSION_DENIED", async () => {
    const a = await tenantWithKey("Tenant A");
    const b = await tenantWithKey("Tenant B");
    const asB = grpcClient(TenantService, t.url, b.secret);
    expect(await failure(asB.getTenant({ id: a.tenant.id }))).toMatchObject({ code: "NotFound" });
    expect(await failure(asB.listApiKeys({ tenantId: a.tenant.id }))).toMatchObject({ code: "NotFound" });
    expect(
      await failure(asB.createApiKey({ tenantId: a.tenant.id, name: "x", scopes: [ApiKeyScope.ADMIN] })),
    ).toMatchObject({ code: "NotFound" });
    expect(await failure(asB.revokeApiKey({ id: a.apiKey.id }))).toMatchObject({
      code: "NotFound",
      reason: "API_KEY_NOT_FOUND",
    });
    const mine = await asB.listApiKeys({});
    expect(mine.apiKeys.every((k) => k.tenantId === b.tenant.id)).toBe(true);
    // A's key is still live after B's attempt.
    expect((await connectClient(TenantService, t.url, a.secret).getTenant({})).tenant!.id).toBe(a.tenant.id);
    // Unknown ids look the same as other tenants' ids.
    expect(await failure(asB.revokeApiKey({ id: "key_00000000000000000000000000" }))).toMatchObject({
      code: "NotFound",
      reason: "API_KEY_NOT_FOUND",
    });
  });
});

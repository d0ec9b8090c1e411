import { create, toBinary, toJson } from "@bufbuild/protobuf";
import canonicalize from "canonicalize";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ApiKeyScope } from "../../gen/ts/licensd/tenant/v1/api_key_pb.js";
import {
  CreateApiKeyRequestSchema,
  CreateTenantRequestSchema,
  TenantService,
} from "../../gen/ts/licensd/tenant/v1/tenant_service_pb.js";
import { sha256 } from "../../src/platform/crypto.js";
import { openDatabase } from "../../src/platform/db.js";
import { schema } from "../../src/entities.js";
import { createLogger } from "../../src/platform/logger.js";
import { connectClient, startTestApp, type TestApp } from "../support/app.js";
import { createTestDatabase, query } from "../support/database.js";
import { failure } from "../support/errors.js";

let t: TestApp;
let tenantId: string;
let adminSecret: string;

beforeAll(async () => {
  t = await startTestApp();
  const tenants = connectClient(TenantService, t.url, t.superAdminKey);
  tenantId = (await tenants.createTenant({ name: "Idem Co" })).tenant!.id;
  adminSecret = (await tenants.createApiKey({ tenantId, name: "admin", scopes: [ApiKeyScope.ADMIN] })).secret;
});
afterAll(async () => {
  await t?.close();
});

/** One unary Connect call as raw bytes: what a client receives, byte for byte. */
async function post(
  procedure: string,
  body: Uint8Array | string,
  contentType: "application/json" | "application/proto",
) {
  const res = await fetch(`${t.url}/${procedure}`, {
    method: "POST",
    headers: { "content-type": contentType, authorization: `Bearer ${adminSecret}` },
    body,
  });
  return { status: res.status, body: Buffer.from(await res.arrayBuffer()) };
}

describe("recorded answers", () => {
  it("are replayed byte for byte, in JSON and in binary, and the call runs once", async () => {
    const procedure = "licensd.tenant.v1.TenantService/CreateApiKey";
    const json = JSON.stringify({
      name: "replayed-json",
      scopes: ["API_KEY_SCOPE_READ"],
      idempotencyKey: "replay-json",
    });
    const first = await post(procedure, json, "application/json");
    expect(first.status).toBe(200);
    expect(JSON.parse(first.body.toString()).secret).toMatch(/^lsk_/);
    expect(await post(procedure, json, "application/json")).toEqual(first);

    const binary = toBinary(
      CreateApiKeyRequestSchema,
      create(CreateApiKeyRequestSchema, {
        name: "replayed-binary",
        scopes: [ApiKeyScope.READ],
        idempotencyKey: "replay-binary",
      }),
    );
    const firstBinary = await post(procedure, binary, "application/proto");
    expect(firstBinary.status).toBe(200);
    expect(await post(procedure, binary, "application/proto")).toEqual(firstBinary);

    const keys = await query(t.databaseUrl, "select name from api_keys where name like 'replayed-%' order by name");
    expect(keys.map((k) => k.name)).toEqual(["replayed-binary", "replayed-json"]);
  });

  it("are stored sealed, and a sealed answer moved to another key's row does not open", async () => {
    const tenants = connectClient(TenantService, t.url, adminSecret);
    const a = await tenants.createApiKey({ name: "moved-a", scopes: [ApiKeyScope.READ], idempotencyKey: "moved-a" });
    const b = await tenants.createApiKey({ name: "moved-b", scopes: [ApiKeyScope.READ], idempotencyKey: "moved-b" });
    const rows = await query<{ key: string; response_sealed: Buffer }>(
      t.databaseUrl,
      "select key, response_sealed from idempotency_records where key in ('moved-a', 'moved-b') order by key",
    );
    expect(rows.map((r) => r.key)).toEqual(["moved-a", "moved-b"]);
    for (const [row, secret] of [
      [rows[0]!, a.secret],
      [rows[1]!, b.secret],
    ] as const) {
      expect(row.response_sealed.includes(Buffer.from(secret))).toBe(false);
      expect(row.response_sealed.length).toBeGreaterThan(28 + secret.length); // iv, tag, then the ciphertext
    }
    // b's sealed answer put in a's row (as someone with write access to the table might): it does not open there.
    await query(t.databaseUrl, "update idempotency_records set response_sealed = $1 where key = 'moved-a'", [
      rows[1]!.response_sealed,
    ]);
    const replay = await failure(
      tenants.createApiKey({ name: "moved-a", scopes: [ApiKeyScope.READ], idempotencyKey: "moved-a" }),
    );
    expect(replay.code).toBe("Internal");
    expect(replay.message).not.toContain(b.secret);
  });
});

describe("the upgrade to sealed answers", () => {
  it("discards answers recorded in clear but keeps their keys spent: a retry is refused, not run again", async () => {
    const db = await createTestDatabase();
    try {
      const orm = await openDatabase(db.url, { poolMax: 2, logger: createLogger("silent"), schema });
      try {
        await orm.orm.migrator.up({ to: "Migration20261123110000UsageDedupeTenantSeq" });
      } finally {
        await orm.close();
      }
      // A row as the previous release wrote it: the CreateTenant answer in clear.
      const request = create(CreateTenantRequestSchema, { name: "Legacy Co", idempotencyKey: "" });
      const digest = sha256(canonicalize(toJson(CreateTenantRequestSchema, request)) ?? "");
      const clear = Buffer.from("a recorded answer, in clear: lsk_legacy-secret-legacy-secret-legacy-secret");
      await query(
        db.url,
        "insert into idempotency_records (scope, procedure, key, request_digest, response, created_at) values ('*', 'licensd.tenant.v1.TenantService/CreateTenant', 'legacy-1', $1, $2, now())",
        [digest, clear],
      );

      const upgraded = await startTestApp({ databaseUrl: db.url });
      try {
        const rows = await query<{ key: string; response_sealed: Buffer | null }>(
          db.url,
          "select key, response_sealed from idempotency_records",
        );
        expect(rows).toEqual([{ key: "legacy-1", response_sealed: null }]);
        const admin = connectClient(TenantService, upgraded.url, upgraded.superAdminKey);
        expect(await failure(admin.createTenant({ name: "Legacy Co", idempotencyKey: "legacy-1" }))).toMatchObject({
          code: "FailedPrecondition",
          reason: "IDEMPOTENCY_RESPONSE_DISCARDED",
          metadata: { field: "idempotency_key" },
        });
        expect(await query(db.url, "select 1 from tenants where name = 'Legacy Co'")).toHaveLength(0);
        // Another body under the spent key is still a reuse; a new key runs the call.
        expect(await failure(admin.createTenant({ name: "Other Co", idempotencyKey: "legacy-1" }))).toMatchObject({
          code: "AlreadyExists",
          reason: "IDEMPOTENCY_KEY_REUSED",
        });
        expect((await admin.createTenant({ name: "Legacy Co", idempotencyKey: "legacy-2" })).tenant!.name).toBe(
          "Legacy Co",
        );
      } finally {
        await upgraded.close();
      }
    } finally {
      await db.drop();
    }
  });
});

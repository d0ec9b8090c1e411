import net from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createClient, type Client } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import type { DescService } from "@bufbuild/protobuf";
import { ActivationService } from "../../gen/ts/licensd/activation/v1/activation_service_pb.js";
import { LicensingService, ValidationCode } from "../../gen/ts/licensd/licensing/v1/licensing_service_pb.js";
import { ComposeStrategy, FeatureKind } from "../../gen/ts/licensd/licensing/v1/product_pb.js";
import { ApiKeyScope } from "../../gen/ts/licensd/tenant/v1/api_key_pb.js";
import { TenantService } from "../../gen/ts/licensd/tenant/v1/tenant_service_pb.js";
import { Aggregation, type UsageEvent } from "../../gen/ts/licensd/usage/v1/usage_pb.js";
import { UsageService } from "../../gen/ts/licensd/usage/v1/usage_service_pb.js";
import { ManualClock } from "../../src/platform/clock.js";
import { bearer, connectClient, startTestApp, type TestApp } from "../support/app.js";
import { createTestDatabase, query } from "../support/database.js";
import { failure } from "../support/errors.js";

// Every client here connects from its own loopback address (127.0.0.0/8 is all loopback on
// Linux), so each test has an address whose failure budget it alone spends.
let db: { url: string; drop(): Promise<void> };
let a: TestApp;
let b: TestApp;
const clock = new ManualClock(new Date("2026-11-23T12:00:00Z"));
// Five failures a minute per address; custom keys of other tenants: three an hour per tenant.
const env = {
  LICENSD_KEY_FAILURE_RATE_PER_IP: "5/1m",
  LICENSD_KEY_COLLISION_RATE_PER_TENANT: "3/1h",
  LICENSD_ACTIVATION_RATE_PER_IP: "0",
};

beforeAll(async () => {
  db = await createTestDatabase();
  a = await startTestApp({ databaseUrl: db.url, clock, env });
  b = await startTestApp({
    databaseUrl: db.url,
    clock,
    env: {
      ...env,
      LICENSD_SUPER_ADMIN_KEY: a.superAdminKey,
      LICENSD_DATA_KEY: a.app.config.dataKey.toString("base64"),
    },
  });
});
afterAll(async () => {
  await a?.close();
  await b?.close();
  await db?.drop();
});

let lastAddress = 10;
/** A loopback address no other test uses. */
const freshAddress = () => `127.0.0.${++lastAddress}`;

/** Clients of `t` whose connections leave from `address`. */
function from(address: string, t: TestApp = a, key?: string) {
  const url = new URL(t.url);
  return {
    connect: <S extends DescService>(service: S): Client<S> =>
      createClient(
        service,
        createConnectTransport({
          baseUrl: t.url,
          httpVersion: "1.1",
          useBinaryFormat: false,
          interceptors: bearer(key),
          nodeOptions: { localAddress: address },
        }),
      ),
    grpc: <S extends DescService>(service: S): Client<S> =>
      createClient(
        service,
        createGrpcTransport({
          baseUrl: t.url,
          interceptors: bearer(key),
          nodeOptions: {
            createConnection: () => net.connect({ host: url.hostname, port: Number(url.port), localAddress: address }),
          },
        }),
      ),
  };
}

let codes = 0;
/** A tenant with a product (and a meter), a policy, and a license activated on machine "fp". */
async function setup() {
  const code = `G${String(++codes).padStart(2, "0")}`;
  const tenants = connectClient(TenantService, a.url, a.superAdminKey);
  const { tenant } = await tenants.createTenant({ name: `${code} vendor` });
  const { secret } = await tenants.createApiKey({ tenantId: tenant!.id, name: "admin", scopes: [ApiKeyScope.ADMIN] });
  const api = connectClient(LicensingService, a.url, secret);
  const product = (
    await api.createProduct({
      code,
      name: "App",
      features: [{ name: "reports", kind: FeatureKind.FLAG, compose: ComposeStrategy.UNION }],
    })
  ).product!;
  const policy = (await api.createPolicy({ productId: product.id, name: "team", floating: true, maxMachines: 0 }))
    .policy!;
  const customer = (await api.createCustomer({ name: "Jane", email: `jane@${code.toLowerCase()}.example` })).customer!;
  const lic = await api.createLicense({ policyId: policy.id, customerId: customer.id });
  await connectClient(UsageService, a.url, secret).createMeter({
    productId: product.id,
    metric: "tokens",
    aggregation: Aggregation.SUM,
  });
  await connectClient(ActivationService, a.url).activate({ key: lic.key, fingerprint: "fp" });
  return {
    tenantId: tenant!.id,
    secret,
    api,
    key: lic.key,
    licenseId: lic.license!.id,
    policyId: policy.id,
    customerId: customer.id,
  };
}

let events = 0;
const usageEvent = (key: string) =>
  ({ licenseKey: key, metric: "tokens", quantity: 1n, idempotencyKey: `g-${++events}` }) as UsageEvent;
const wrongKey = (i: number) => `wrong-key-${String(i).padStart(8, "0")}-${Math.random().toString(36).slice(2)}`;
/** A client stream's messages (Connect clients take an AsyncIterable). */
async function* stream<T>(...messages: T[]) {
  yield* messages;
}
const countEvents = async (licenseId: string) =>
  (await query(db.url, "select count(*)::int as n from usage_events where license_id = $1", [licenseId]))[0]
    .n as number;

describe("failed key lookups per client address", () => {
  it("ValidateLicense: after the budget, the address is refused before the look-up, a real key too, on every instance, until a token is back", async () => {
    const s = await setup();
    const attacker = freshAddress();
    const lic = from(attacker).connect(LicensingService);
    for (let i = 0; i < 5; i++)
      expect(ValidationCode[(await lic.validateLicense({ key: wrongKey(i) })).code]).toBe("NOT_FOUND");
    // The budget is spent: even the key that would hit is not looked up.
    const refused = await failure(lic.validateLicense({ key: s.key }));
    expect(refused).toMatchObject({ code: "ResourceExhausted", reason: "RATE_LIMITED", metadata: { limit: "5/60s" } });
    const retry = Number(refused.metadata.retry_delay_ms);
    expect(retry).toBeGreaterThan(0);
    expect(retry).toBeLessThanOrEqual(12_000); // one token every 12 s
    // The other instance hears of it (NOTIFY) and refuses the hit as well.
    const onB = from(attacker, b).connect(LicensingService);
    let seenOnB: Awaited<ReturnType<typeof failure>> | undefined;
    for (let i = 0; i < 100 && !seenOnB; i++) {
      seenOnB = await failure(onB.validateLicense({ key: s.key })).catch(() => undefined);
      if (!seenOnB) await new Promise((r) => setTimeout(r, 50));
    }
    expect(seenOnB).toMatchObject({ code: "ResourceExhausted", reason: "RATE_LIMITED" });
    // Another address is not affected.
    expect((await from(freshAddress()).connect(LicensingService).validateLicense({ key: s.key })).valid).toBe(true);
    clock.advance(retry);
    expect((await lic.validateLicense({ key: s.key })).valid).toBe(true);
  });

  it("successes never draw from the budget", async () => {
    const s = await setup();
    const lic = from(freshAddress()).connect(LicensingService);
    for (let i = 0; i < 40; i++) expect((await lic.validateLicense({ key: s.key })).valid).toBe(true);
    // All five failures are still there.
    for (let i = 0; i < 5; i++)
      expect(ValidationCode[(await lic.validateLicense({ key: wrongKey(i) })).code]).toBe("NOT_FOUND");
    expect(await failure(lic.validateLicense({ key: s.key }))).toMatchObject({
      code: "ResourceExhausted",
      reason: "RATE_LIMITED",
    });
  });

  it("an instance that starts after an address was blocked refuses it too", async () => {
    const s = await setup();
    const attacker = freshAddress();
    const lic = from(attacker).connect(LicensingService);
    for (let i = 0; i < 5; i++) await lic.validateLicense({ key: wrongKey(i) });
    const c = await startTestApp({
      databaseUrl: db.url,
      clock,
      env: {
        ...env,
        LICENSD_SUPER_ADMIN_KEY: a.superAdminKey,
        LICENSD_DATA_KEY: a.app.config.dataKey.toString("base64"),
      },
    });
    try {
      expect(await failure(from(attacker, c).connect(LicensingService).validateLicense({ key: s.key }))).toMatchObject({
        code: "ResourceExhausted",
        reason: "RATE_LIMITED",
      });
    } finally {
      await c.close();
    }
  });

  // Each RPC that takes a key as its credential: a wrong key, answered as usual, and the call a real key makes.
  const rpcs: {
    name: string;
    wrong(address: string, i: number): Promise<unknown>;
    real(address: string, s: Awaited<ReturnType<typeof setup>>): Promise<unknown>;
  }[] = [
    {
      name: "Activate",
      wrong: (ip, i) =>
        from(ip)
          .connect(ActivationService)
          .activate({ key: wrongKey(i), fingerprint: "x" }),
      real: (ip, s) => from(ip).connect(ActivationService).activate({ key: s.key, fingerprint: "fp" }),
    },
    {
      name: "Heartbeat",
      wrong: (ip, i) =>
        from(ip)
          .connect(ActivationService)
          .heartbeat({ key: wrongKey(i), fingerprint: "fp" }),
      real: (ip, s) => from(ip).connect(ActivationService).heartbeat({ key: s.key, fingerprint: "fp" }),
    },
    {
      name: "Deactivate",
      wrong: (ip, i) =>
        from(ip)
          .connect(ActivationService)
          .deactivate({ key: wrongKey(i), fingerprint: "fp" }),
      real: (ip, s) => from(ip).connect(ActivationService).deactivate({ key: s.key, fingerprint: "not-activated" }),
    },
    {
      name: "ConnectLease",
      wrong: async (ip, i) => {
        for await (const _ of from(ip)
          .grpc(ActivationService)
          .connectLease(stream({ key: wrongKey(i), fingerprint: "fp" })))
          return;
      },
      real: async (ip, s) => {
        for await (const _ of from(ip)
          .grpc(ActivationService)
          .connectLease(stream({ key: s.key, fingerprint: "fp" })))
          return;
      },
    },
    {
      name: "RecordUsage",
      wrong: (ip, i) =>
        from(ip)
          .connect(UsageService)
          .recordUsage({ event: usageEvent(wrongKey(i)) }),
      real: (ip, s) =>
        from(ip)
          .connect(UsageService)
          .recordUsage({ event: usageEvent(s.key) }),
    },
    {
      name: "IngestUsage",
      wrong: (ip, i) =>
        from(ip)
          .grpc(UsageService)
          .ingestUsage(stream({ event: usageEvent(wrongKey(i)) })),
      real: (ip, s) =>
        from(ip)
          .grpc(UsageService)
          .ingestUsage(stream({ event: usageEvent(s.key) })),
    },
    {
      name: "StreamUsage",
      wrong: async (ip, i) => {
        for await (const _ of from(ip)
          .grpc(UsageService)
          .streamUsage(stream({ batchId: "1", events: [usageEvent(wrongKey(i))] })));
      },
      real: async (ip, s) => {
        for await (const _ of from(ip)
          .grpc(UsageService)
          .streamUsage(stream({ batchId: "1", events: [usageEvent(s.key)] })));
      },
    },
    {
      name: "an API key (Authorization: Bearer)",
      wrong: (ip, i) =>
        from(ip, a, `lsk_${wrongKey(i)}`)
          .connect(LicensingService)
          .listProducts({}),
      real: (ip, s) => from(ip, a, s.secret).connect(LicensingService).listProducts({}),
    },
  ];

  for (const rpc of rpcs) {
    it(`${rpc.name}: wrong keys spend the address's budget, then even a real key is refused`, async () => {
      const s = await setup();
      const ip = freshAddress();
      await rpc.real(ip, s).catch(() => undefined); // a hit (or a refusal of a known license) costs nothing
      for (let i = 0; i < 5; i++) {
        const f = await rpc.wrong(ip, i).then(
          () => undefined,
          (err: unknown) => failure(Promise.reject(err)),
        );
        // Usage batches answer per event; everything else refuses the call.
        if (f) expect(f).toMatchObject({ code: "Unauthenticated" });
      }
      expect(await failure(rpc.real(ip, s))).toMatchObject({ code: "ResourceExhausted", reason: "RATE_LIMITED" });
      expect(await failure(rpc.real(ip, s))).toMatchObject({ metadata: { limit: "5/60s" } });
    });
  }

  it("a usage batch pays for each wrong key it holds: more than the budget is refused whole, nothing written", async () => {
    const s = await setup();
    const ip = freshAddress();
    const batch = [
      usageEvent(s.key),
      ...Array.from({ length: 8 }, (_, i) => usageEvent(wrongKey(i))),
      usageEvent(s.key),
    ];
    expect(
      await failure(
        from(ip)
          .grpc(UsageService)
          .ingestUsage(stream(...batch.map((event) => ({ event })))),
      ),
    ).toMatchObject({ code: "ResourceExhausted", reason: "RATE_LIMITED" });
    expect(await countEvents(s.licenseId)).toBe(0);
    // Within the budget, a batch is answered event by event as always.
    const ok = await from(freshAddress())
      .grpc(UsageService)
      .ingestUsage(stream(...batch.slice(0, 4).map((event) => ({ event }))));
    expect(ok).toMatchObject({ accepted: 1n });
    expect(ok.rejected.map((r) => r.reason)).toEqual([
      "INVALID_LICENSE_KEY",
      "INVALID_LICENSE_KEY",
      "INVALID_LICENSE_KEY",
    ]);
    expect(await countEvents(s.licenseId)).toBe(1);
  });

  it("with the default budget, 300 wrong keys from one address are not all answered", async () => {
    const c = await startTestApp({
      databaseUrl: db.url,
      clock,
      env: { LICENSD_SUPER_ADMIN_KEY: a.superAdminKey, LICENSD_DATA_KEY: a.app.config.dataKey.toString("base64") },
    });
    try {
      const lic = from(freshAddress(), c).connect(LicensingService);
      let answered = 0;
      let refused = 0;
      for (let i = 0; i < 300; i++) {
        try {
          await lic.validateLicense({ key: wrongKey(i) });
          answered++;
        } catch (err) {
          expect(await failure(Promise.reject(err))).toMatchObject({
            code: "ResourceExhausted",
            reason: "RATE_LIMITED",
          });
          refused++;
        }
      }
      expect(answered).toBe(60); // LICENSD_KEY_FAILURE_RATE_PER_IP=60/1m (the clock does not move)
      expect(refused).toBe(240);
    } finally {
      await c.close();
    }
  });

  it("keeps no license key in clear in its buckets", async () => {
    const ip = freshAddress();
    const key = wrongKey(1);
    await from(ip).connect(LicensingService).validateLicense({ key });
    const keys = (await query(db.url, "select key from rate_buckets", [])).map((r) => r.key as string);
    expect(keys).toContain(`keyfail:ip:${ip}`);
    expect(keys.some((k) => k.includes(key))).toBe(false);
  });
});

describe("custom keys are one namespace", () => {
  it("names the caller's own license, refuses another tenant's key without saying why, and budgets those refusals per tenant", async () => {
    const owner = await setup();
    const other = await setup();
    // (the caller's address pays too: this test's own, so the others' setups are not refused)
    const otherApi = from(freshAddress(), a, other.secret);
    other.api = otherApi.connect(LicensingService);
    const custom = "acme-custom-key-000000001";
    const mine = (
      await owner.api.createLicense({ policyId: owner.policyId, customerId: owner.customerId, customKey: custom })
    ).license!;
    // The caller's own license: named (its own data).
    expect(
      await failure(
        owner.api.createLicense({ policyId: owner.policyId, customerId: owner.customerId, customKey: custom }),
      ),
    ).toMatchObject({
      code: "AlreadyExists",
      reason: "LICENSE_KEY_TAKEN",
      metadata: { field: "custom_key", license_id: mine.id },
    });
    // Another tenant's: refused, with nothing about who holds it.
    const refused = await failure(
      other.api.createLicense({ policyId: other.policyId, customerId: other.customerId, customKey: custom }),
    );
    expect(refused).toEqual({
      code: "InvalidArgument",
      reason: "LICENSE_KEY_REFUSED",
      domain: "licensd.dev",
      message: "custom_key: this key cannot be used; choose another",
      metadata: { field: "custom_key" },
    });
    expect(JSON.stringify(refused)).not.toContain(mine.id);
    // Imports follow the same rule.
    const imported = await otherApi.grpc(LicensingService).importLicenses(
      stream({
        productId: (await other.api.getPolicy({ id: other.policyId })).policy!.productId,
        policyId: other.policyId,
        licenseKey: custom,
        customerEmail: "x@other.example",
      }),
    );
    expect(imported.errors.map((e) => [e.reason, e.field])).toEqual([["LICENSE_KEY_REFUSED", "license_key"]]);
    expect(
      await failure(
        other.api.createLicense({ policyId: other.policyId, customerId: other.customerId, customKey: custom }),
      ),
    ).toMatchObject({ reason: "LICENSE_KEY_REFUSED" });
    // Three such refusals an hour: then custom keys are refused before they are looked up, even a free one.
    const limited = await failure(
      other.api.createLicense({
        policyId: other.policyId,
        customerId: other.customerId,
        customKey: "never-used-key-000000002",
      }),
    );
    expect(limited).toMatchObject({
      code: "ResourceExhausted",
      reason: "RATE_LIMITED",
      metadata: { limit: "3/3600s" },
    });
    expect(
      await query(db.url, "select count(*)::int as n from licenses where tenant_id = $1", [other.tenantId]),
    ).toEqual([{ n: 1 }]);
    // Generated keys and the other tenants are unaffected.
    expect((await other.api.createLicense({ policyId: other.policyId, customerId: other.customerId })).key).toMatch(
      /^G\d\d-/,
    );
    expect(
      (
        await owner.api.createLicense({
          policyId: owner.policyId,
          customerId: owner.customerId,
          customKey: "acme-custom-key-000000003",
        })
      ).license,
    ).toBeDefined();
    clock.advance(Number(limited.metadata.retry_delay_ms));
    expect(
      (
        await other.api.createLicense({
          policyId: other.policyId,
          customerId: other.customerId,
          customKey: "never-used-key-000000002",
        })
      ).license,
    ).toBeDefined();
  });
});

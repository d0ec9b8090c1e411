import { hkdfSync, randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  ActivationService,
  type ConnectLeaseRequest,
} from "../../gen/ts/licensd/activation/v1/activation_service_pb.js";
import { LicensingService } from "../../gen/ts/licensd/licensing/v1/licensing_service_pb.js";
import { ComposeStrategy, FeatureKind } from "../../gen/ts/licensd/licensing/v1/product_pb.js";
import { ApiKeyScope } from "../../gen/ts/licensd/tenant/v1/api_key_pb.js";
import { TenantService } from "../../gen/ts/licensd/tenant/v1/tenant_service_pb.js";
import { Aggregation } from "../../gen/ts/licensd/usage/v1/usage_pb.js";
import { UsageService } from "../../gen/ts/licensd/usage/v1/usage_service_pb.js";
import { PaymentProvider } from "../../gen/ts/licensd/webhook/v1/payment_source_pb.js";
import { WebhookService } from "../../gen/ts/licensd/webhook/v1/webhook_service_pb.js";
import Stripe from "stripe";
import { open, sha256 } from "../../src/platform/crypto.js";
import { createOfflineActivationRequest } from "@licensd/client";
import { connectClient, grpcClient, startTestApp, type TestApp } from "../support/app.js";
import { query } from "../support/database.js";
import { outbox } from "../support/outbox.js";
import { findSecretsAtRest, findSecretsInText, secretForms, type Secret } from "../support/secret-scan.js";
import { createLogger } from "../../src/platform/logger.js";

/*
 * After each call that hands out or takes a secret, every column of every table that can
 * hold text or bytes, and the server's log at its most verbose level, are searched for
 * every secret seen so far, in clear, hex and base64.
 */

const LICENSE_FILE_HMAC_SECRET = randomBytes(32).toString("base64url");
const AUDIT_HMAC_KEY = randomBytes(32);
let t: TestApp;
const secrets: Secret[] = [];
const keep = (name: string, value: string | Buffer) => {
  secrets.push({ name, value });
  return value;
};

let log = "";
const reported = new Set<string>();
/**
 * Fails naming the secret, the form, the table and the column of every hit that an
 * earlier test did not already report, so each failure points at the call that stored it.
 */
async function expectNoSecretAtRest() {
  await keepSigningKeys();
  const logged = findSecretsInText(log, secrets).map((h) => ({ ...h, table: "(the server's log)", column: "" }));
  const hits = [...(await findSecretsAtRest(t.databaseUrl, secrets)), ...logged].filter(
    (h) => !reported.has(JSON.stringify(h)),
  );
  for (const h of hits) reported.add(JSON.stringify(h));
  expect(hits).toEqual([]);
}

/**
 * The Ed25519 private keys (PKCS#8 and the bare 32-byte seed), opened from their sealed rows: new ones too (rotation).
 */
const seenKids = new Set<string>();
async function keepSigningKeys() {
  const rows = await query<{ kid: string; private_key_sealed: Buffer }>(
    t.databaseUrl,
    "select kid, private_key_sealed from signing_keys",
  );
  expect(rows.length).toBeGreaterThan(0);
  for (const { kid, private_key_sealed } of rows) {
    if (seenKids.has(kid)) continue;
    seenKids.add(kid);
    const der = open(t.app.config.dataKey, private_key_sealed, kid);
    keep(`signing key ${kid} (PKCS#8)`, der);
    keep(`signing key ${kid} (seed)`, der.subarray(der.length - 32));
  }
}

let n = 0;
/** An idempotency key for the call, or none: every call below is made both ways. */
const idem = (withKey: boolean) => (withKey ? `scan-${++n}` : "");
const BOTH = [false, true] as const;

let tenantId: string;
let adminSecret: string;
let policyId: string;
let customerId: string;
let productId: string;
const admin = () => connectClient(LicensingService, t.url, adminSecret);

beforeAll(async () => {
  t = await startTestApp({
    logger: createLogger("trace", {
      write: (line: string) => {
        log += line;
      },
    }),
    env: {
      LICENSD_LICENSE_FILE_HMAC_SECRET: LICENSE_FILE_HMAC_SECRET,
      LICENSD_AUDIT_HMAC_KEYS: JSON.stringify({ a1: AUDIT_HMAC_KEY.toString("base64") }),
    },
  });
  // The server's own keys: configured, and derived from the data key.
  const dataKey = t.app.config.dataKey;
  keep("LICENSD_SUPER_ADMIN_KEY", t.superAdminKey);
  keep("LICENSD_DATA_KEY", dataKey);
  keep("LICENSD_LICENSE_FILE_HMAC_SECRET", LICENSE_FILE_HMAC_SECRET);
  keep("LICENSD_AUDIT_HMAC_KEYS a1", AUDIT_HMAC_KEY);
  for (const [version, secret] of Object.entries(t.app.licenseKeySecrets))
    keep(`license key HMAC secret v${version}`, secret);
  for (const info of ["licensd audit hmac v1", "licensd page token v1"])
    keep(`data key HKDF "${info}"`, Buffer.from(hkdfSync("sha256", dataKey, Buffer.alloc(0), info, 32)));

  const tenants = connectClient(TenantService, t.url, t.superAdminKey);
  tenantId = (await tenants.createTenant({ name: "Scan Co" })).tenant!.id;
  adminSecret = (await tenants.createApiKey({ tenantId, name: "admin", scopes: [ApiKeyScope.ADMIN] })).secret;
  keep("admin API key", adminSecret);
  productId = (
    await admin().createProduct({
      code: "SCN",
      name: "Scanner",
      features: [{ name: "reports", kind: FeatureKind.FLAG, compose: ComposeStrategy.UNION }],
    })
  ).product!.id;
  policyId = (await admin().createPolicy({ productId, name: "team", floating: true, maxMachines: 10 })).policy!.id;
  customerId = (await admin().createCustomer({ name: "Jane", email: "jane@scan.example" })).customer!.id;
  await connectClient(UsageService, t.url, adminSecret).createMeter({
    productId,
    metric: "tokens",
    aggregation: Aggregation.SUM,
  });
});
afterAll(async () => {
  await t?.close();
});

async function newLicense(withKey: boolean, customKey = ""): Promise<{ id: string; key: string }> {
  const res = await admin().createLicense({ policyId, customerId, customKey, idempotencyKey: idem(withKey) });
  return { id: res.license!.id, key: res.key };
}

describe("the scan", () => {
  it("finds what is stored, in clear, hex, base64 at any alignment and as raw bytes, naming table and column", async () => {
    const canary = `canary-${randomBytes(12).toString("hex")}`;
    const embedded = `canary-${randomBytes(12).toString("hex")}`;
    await admin().createCustomer({
      name: canary,
      email: "canary@scan.example",
      metadata: { note: Buffer.from(`xy${embedded}z`).toString("base64") },
    });
    const hits = await findSecretsAtRest(t.databaseUrl, [
      { name: "canary", value: canary },
      { name: "embedded", value: embedded },
      { name: "admin key digest", value: sha256(adminSecret) },
    ]);
    const where = (name: string) =>
      new Set(hits.filter((h) => h.secret === name).map((h) => `${h.table}.${h.column}:${h.form}`));
    expect(where("canary")).toContain("customers.name:plain");
    expect(where("embedded")).toContain("customers.metadata:base64@2");
    expect(where("admin key digest")).toContain("api_keys.secret_digest:raw bytes");
    expect(where("admin key digest")).toContain("api_keys.secret_digest:hex");
    // The log is captured, and searched the same way.
    expect(log).toContain("CreateCustomer");
    expect(findSecretsInText(log, [{ name: "tenant", value: tenantId }])).toContainEqual({
      secret: "tenant",
      form: "plain",
    });
    // The forms cut off only the characters that depend on the neighbours.
    for (const f of secretForms("0123456789abcdef")) expect(f.text.length, f.form).toBeGreaterThanOrEqual(16);
  });
});

describe("no secret is stored in clear", () => {
  it("the server's own keys", async () => {
    await expectNoSecretAtRest();
  });

  it.each(BOTH)("CreateApiKey, by the super-admin and by a tenant admin (idempotency key: %s)", async (withKey) => {
    const bySuperAdmin = await connectClient(TenantService, t.url, t.superAdminKey).createApiKey({
      tenantId,
      name: "ops",
      scopes: [ApiKeyScope.READ],
      idempotencyKey: idem(withKey),
    });
    const byTenant = await connectClient(TenantService, t.url, adminSecret).createApiKey({
      name: "ci",
      scopes: [ApiKeyScope.INGEST],
      idempotencyKey: idem(withKey),
    });
    for (const [who, secret] of [
      ["super-admin", bySuperAdmin.secret],
      ["tenant", byTenant.secret],
    ]) {
      keep(`CreateApiKey (${who}) secret`, secret);
      keep(`CreateApiKey (${who}) secret, decoded`, Buffer.from(secret.replace(/^lsk_/, ""), "base64url"));
    }
    await expectNoSecretAtRest();
  });

  it.each(BOTH)("CreateLicense with a generated key (idempotency key: %s)", async (withKey) => {
    keep("CreateLicense generated key", (await newLicense(withKey)).key);
    await expectNoSecretAtRest();
  });

  it.each(BOTH)("CreateLicense with a custom key (idempotency key: %s)", async (withKey) => {
    const custom = `custom.${randomBytes(18).toString("base64url")}`;
    keep("CreateLicense custom key", custom);
    expect((await newLicense(withKey, custom)).key).toBe(custom);
    await expectNoSecretAtRest();
  });

  it("RevealLicenseKey", async () => {
    const { id } = await newLicense(false);
    keep("RevealLicenseKey key", (await admin().revealLicenseKey({ id })).key);
    await expectNoSecretAtRest();
  });

  it("ImportLicenses", async () => {
    const imported = [`imported-${randomBytes(16).toString("hex")}`, `imported-${randomBytes(16).toString("hex")}`];
    for (const key of imported) keep("ImportLicenses license_key", key);
    const summary = await grpcClient(LicensingService, t.url, adminSecret).importLicenses(
      (async function* () {
        for (const [i, key] of imported.entries())
          yield { productId, tier: "team", licenseKey: key, customerEmail: `imported${i}@scan.example` };
        yield {
          productId,
          tier: "no-such-tier",
          licenseKey: keep(
            "ImportLicenses license_key of a refused row",
            `refused-${randomBytes(16).toString("hex")}`,
          ) as string,
          customerEmail: "x@scan.example",
        };
      })(),
    );
    expect(summary).toMatchObject({ imported: 2n, failed: 1n });
    await expectNoSecretAtRest();
  });

  it.each(BOTH)(
    "Activate, Heartbeat, ValidateLicense and Deactivate with the key, and their leases (idempotency key: %s)",
    async (withKey) => {
      const { key } = await newLicense(false);
      keep("license key", key);
      const activation = connectClient(ActivationService, t.url);
      const activated = await activation.activate({
        key,
        fingerprint: "fp-1",
        hostname: "host",
        idempotencyKey: idem(withKey),
      });
      keep("Activate lease", activated.lease!.token);
      keep("Heartbeat lease", (await activation.heartbeat({ key, fingerprint: "fp-1" })).lease!.token);
      const validated = await connectClient(LicensingService, t.url).validateLicense({
        key,
        fingerprint: "fp-1",
        nonce: "n",
      });
      expect(validated.valid).toBe(true);
      keep("ValidateLicense lease", validated.lease);
      await activation.deactivate({ key, fingerprint: "fp-1", idempotencyKey: idem(withKey) });
      await expectNoSecretAtRest();
    },
  );

  it("ConnectLease", async () => {
    const { key } = await newLicense(false);
    keep("license key", key);
    await connectClient(ActivationService, t.url).activate({ key, fingerprint: "fp-stream" });
    const requests = outbox<ConnectLeaseRequest>();
    const responses = grpcClient(ActivationService, t.url).connectLease(requests.messages)[Symbol.asyncIterator]();
    requests.push({ key, fingerprint: "fp-stream" } as ConnectLeaseRequest);
    const first = (await responses.next()).value;
    expect(first?.event.case).toBe("lease");
    if (first?.event.case === "lease") keep("ConnectLease lease", first.event.value.token);
    requests.end();
    while (!(await responses.next()).done);
    await expectNoSecretAtRest();
  });

  it.each(BOTH)("ActivateOffline (idempotency key: %s)", async (withKey) => {
    const { key } = await newLicense(false);
    keep("license key", key);
    const request = createOfflineActivationRequest({ key, fingerprint: `offline-${withKey}` });
    const res = await connectClient(ActivationService, t.url, adminSecret).activateOffline({
      request,
      idempotencyKey: idem(withKey),
    });
    keep("ActivateOffline lease", res.lease!.token);
    await expectNoSecretAtRest();
  });

  it("IssueLicenseFile, signed, HMAC and encrypted", async () => {
    const { id, key } = await newLicense(false);
    keep("license key", key);
    keep("license file (Ed25519)", (await admin().issueLicenseFile({ licenseId: id })).licenseFile);
    keep("license file (HMAC)", (await admin().issueLicenseFile({ licenseId: id, format: 2 })).licenseFile);
    keep("license file (encrypted)", (await admin().issueLicenseFile({ licenseId: id, encrypt: true })).licenseFile);
    await expectNoSecretAtRest();
  });

  it("usage recorded by license key and by lease", async () => {
    const { key } = await newLicense(false);
    keep("license key", key);
    const { lease } = await connectClient(ActivationService, t.url).activate({ key, fingerprint: "fp-usage" });
    keep("Activate lease", lease!.token);
    const usage = connectClient(UsageService, t.url);
    await usage.recordUsage({ event: { licenseKey: key, metric: "tokens", quantity: 5n, idempotencyKey: "by-key" } });
    await usage.recordUsage({
      event: { lease: lease!.token, metric: "tokens", quantity: 5n, idempotencyKey: "by-lease" },
    });
    const streamed = grpcClient(UsageService, t.url);
    await streamed.ingestUsage(
      (async function* () {
        yield { event: { licenseKey: key, metric: "tokens", quantity: 1n, idempotencyKey: "ingested" } };
      })(),
    );
    for await (const ack of streamed.streamUsage(
      (async function* () {
        yield {
          batchId: "b1",
          events: [{ licenseKey: key, metric: "tokens", quantity: 1n, idempotencyKey: "streamed" }],
        };
      })(),
    )) {
      expect(ack.batchId).toBe("b1");
    }
    await expectNoSecretAtRest();
  });

  it("keys that match no license, tried on every RPC that takes a key", async () => {
    // Possibly another tenant's key, or a real key mistyped: as secret as a real one.
    const unknown = keep("unknown key", `unknown-${randomBytes(16).toString("hex")}`) as string;
    const activation = connectClient(ActivationService, t.url);
    const attempts: Promise<unknown>[] = [
      connectClient(LicensingService, t.url).validateLicense({ key: unknown }),
      activation.activate({ key: unknown, fingerprint: "fp", idempotencyKey: idem(true) }),
      activation.activate({ key: unknown, fingerprint: "fp" }),
      activation.heartbeat({ key: unknown, fingerprint: "fp" }),
      activation.deactivate({ key: unknown, fingerprint: "fp", idempotencyKey: idem(true) }),
      connectClient(UsageService, t.url).recordUsage({
        event: { licenseKey: unknown, metric: "tokens", quantity: 1n, idempotencyKey: "unknown" },
      }),
      grpcClient(UsageService, t.url).ingestUsage(
        (async function* () {
          yield { event: { licenseKey: unknown, metric: "tokens", quantity: 1n, idempotencyKey: "unknown-ingested" } };
        })(),
      ),
      (async () => {
        for await (const _ of grpcClient(ActivationService, t.url).connectLease(
          (async function* () {
            yield { key: unknown, fingerprint: "fp" } as ConnectLeaseRequest;
          })(),
        ));
      })(),
    ];
    await Promise.allSettled(attempts);
    await expectNoSecretAtRest();
  });

  it("CreateWebhookEndpoint and RotateWebhookSecret (with idempotency keys)", async () => {
    const webhooks = connectClient(WebhookService, t.url, adminSecret);
    const keepWebhookSecret = (name: string, secret: string) => {
      keep(name, secret);
      keep(`${name} (key bytes)`, Buffer.from(secret.slice("whsec_".length), "base64"));
    };
    const { endpoint, secret } = await webhooks.createWebhookEndpoint({
      url: "https://hooks.example.com/licensd",
      enabled: false, // never sent: the test sends nothing off this machine
      idempotencyKey: idem(true),
    });
    keepWebhookSecret("webhook secret", secret);
    const rotated = await webhooks.rotateWebhookSecret({ id: endpoint!.id, idempotencyKey: idem(true) });
    keepWebhookSecret("rotated webhook secret", rotated.secret);
    await expectNoSecretAtRest();
  });

  it("payment sources' signing secrets, and the keys of licenses bought through them (e-mail outbox)", async () => {
    const webhooks = connectClient(WebhookService, t.url, adminSecret);
    const first = keep("Stripe signing secret", `whsec_${randomBytes(24).toString("base64url")}`) as string;
    const { source } = await webhooks.createPaymentSource({
      provider: PaymentProvider.STRIPE,
      secret: first,
      mappings: [{ item: "price_scan", policyId, metadata: {} }],
      idempotencyKey: idem(true),
    });
    const rolled = keep("rolled Stripe signing secret", `whsec_${randomBytes(24).toString("base64url")}`) as string;
    await webhooks.rotatePaymentSourceSecret({ id: source!.id, secret: rolled, idempotencyKey: idem(true) });
    // A purchase: its license key waits in the e-mail outbox (no SMTP server here), sealed.
    const body = JSON.stringify({
      id: `evt_${randomBytes(8).toString("hex")}`,
      object: "event",
      created: Math.floor(Date.now() / 1000),
      type: "checkout.session.completed",
      data: {
        object: {
          id: "cs_scan",
          mode: "payment",
          payment_status: "paid",
          customer_details: { email: "buyer@scan.example", name: "Buyer" },
          metadata: { licensd_price: "price_scan" },
          payment_intent: "pi_scan",
        },
      },
    });
    const res = await fetch(`${t.url}${source!.hookPath}`, {
      method: "POST",
      headers: {
        "content-type": "application/json",
        "stripe-signature": Stripe.webhooks.generateTestHeaderString({ payload: body, secret: rolled }),
      },
      body,
    });
    const { license_ids } = (await res.json()) as { license_ids: string[] };
    expect(license_ids).toHaveLength(1);
    keep("license key bought through Stripe", (await admin().revealLicenseKey({ id: license_ids[0]! })).key);
    const [queued] = await query<{ key_sealed: Buffer | null }>(t.databaseUrl, "select key_sealed from email_outbox");
    expect(queued!.key_sealed).not.toBeNull();
    await expectNoSecretAtRest();
  });
});

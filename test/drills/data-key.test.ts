/*
 * The data-key rotation runbook (docs/operations.md, "Data-key rotation"), run exactly as written against two real
 * `licensd serve` instances on one database, with state that depends on the data key loaded first: license keys
 * (custom and generated), an encrypted license file, a webhook endpoint with a rotated secret, an idempotent answer,
 * a rotated signing key, a page token, the audit chain, a payment source with a rotated secret and a license key
 * waiting in the e-mail outbox. Afterwards every sealed value is under the new key alone and
 * everything still works the same; an instance given only the old key refuses to start, saying why.
 */
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, statSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ActivationService } from "../../gen/ts/licensd/activation/v1/activation_service_pb.js";
import { AuditService } from "../../gen/ts/licensd/audit/v1/audit_service_pb.js";
import { LicensingService, ValidationCode } from "../../gen/ts/licensd/licensing/v1/licensing_service_pb.js";
import { ComposeStrategy, FeatureKind } from "../../gen/ts/licensd/licensing/v1/product_pb.js";
import { ApiKeyScope } from "../../gen/ts/licensd/tenant/v1/api_key_pb.js";
import { TenantService } from "../../gen/ts/licensd/tenant/v1/tenant_service_pb.js";
import { PaymentProvider } from "../../gen/ts/licensd/webhook/v1/payment_source_pb.js";
import { WebhookService } from "../../gen/ts/licensd/webhook/v1/webhook_service_pb.js";
import Stripe from "stripe";
import { open } from "../../src/platform/crypto.js";
import { SEALED_COLUMNS } from "../../src/platform/data-key-rotation.js";
import { connectClient } from "../support/app.js";
import { query } from "../support/database.js";
import { Runbook } from "../support/runbook.js";
import { run, type ServerProcess, startServer } from "../support/server.js";
import { until } from "../support/wait.js";
import { type Receiver, startReceiver } from "../support/webhook-sink.js";

const oldKey = randomBytes(32).toString("base64");
let newKey = "";
let receiver: Receiver;
let databaseUrl = "";
let superAdminKey = "";
let dropDatabase: () => Promise<void>;
/** The two instances "behind a balancer"; a restart replaces one in place, on the same port. */
const instances: ServerProcess[] = [];
/** Every instance's output, the stopped ones' too. */
const outputs: (() => string)[] = [];
const base = { LICENSD_WEBHOOK_ALLOW_PRIVATE: "true", LICENSD_WEBHOOK_POLL_MS: "100" };

/** What was made before the rotation, to check after it. */
const before = {
  tenantId: "",
  adminKey: "",
  customKey: "DRILL-custom.key_0001",
  custom: { id: "" },
  generated: { id: "", key: "" },
  encryptedFile: "",
  webhookSecret: "",
  endpointId: "",
  idempotentCustomerId: "",
  pageToken: "",
  signingKids: [] as string[],
  auditEvents: 0n,
  paymentHookPath: "",
  paymentSecret: `whsec_${randomBytes(24).toString("base64url")}`,
};

/** A paid Stripe Checkout of the drill's mapped price, signed with the payment source's current secret. */
async function purchase(i: number, email: string) {
  const body = JSON.stringify({
    id: `evt_${randomBytes(8).toString("hex")}`,
    object: "event",
    created: Math.floor(Date.now() / 1000),
    type: "checkout.session.completed",
    data: {
      object: {
        id: `cs_${randomBytes(8).toString("hex")}`,
        mode: "payment",
        payment_status: "paid",
        customer_details: { email, name: "Drill Buyer" },
        metadata: { licensd_price: "price_drill" },
        payment_intent: `pi_${randomBytes(8).toString("hex")}`,
      },
    },
  });
  const res = await fetch(`${url(i)}${before.paymentHookPath}`, {
    method: "POST",
    headers: {
      "content-type": "application/json",
      "stripe-signature": Stripe.webhooks.generateTestHeaderString({ payload: body, secret: before.paymentSecret }),
    },
    body,
  });
  return { status: res.status, body: (await res.json()) as { status: string } };
}

beforeAll(async () => {
  receiver = await startReceiver();
  const first = await startServer({ env: { ...base, LICENSD_DATA_KEY: oldKey } });
  databaseUrl = first.env.LICENSD_DATABASE_URL!;
  superAdminKey = first.superAdminKey;
  dropDatabase = first.dropDatabase;
  instances.push(first);
  outputs.push(first.output);
  instances.push(await start({ LICENSD_DATA_KEY: oldKey }));
});

afterAll(async () => {
  for (const s of instances) if (s.child.exitCode === null && s.child.signalCode === null) await s.stop("SIGKILL");
  await dropDatabase?.();
  await receiver?.close();
});

/** Another instance on the database, with these data-key settings (and the same super-admin key). */
async function start(keys: Record<string, string>, port?: number): Promise<ServerProcess> {
  const s = await startServer({
    databaseUrl,
    env: {
      ...base,
      LICENSD_SUPER_ADMIN_KEY: superAdminKey,
      ...keys,
      ...(port ? { LICENSD_PORT: String(port) } : {}),
    },
  });
  outputs.push(s.output);
  return s;
}

/** Restarts instance `i` with new data-key settings, on its port (a graceful stop, as a deployment does). */
async function restart(i: number, keys: Record<string, string>) {
  const old = instances[i]!;
  expect(await old.stop()).toBe(0);
  instances[i] = await start(keys, old.port);
}

const url = (i: number) => instances[i]!.url;
const licensing = (i: number) => connectClient(LicensingService, url(i), before.adminKey);

async function validate(i: number, key: string) {
  return (await connectClient(LicensingService, url(i)).validateLicense({ key })).code;
}

describe("data-key rotation, as docs/operations.md says", () => {
  it("loads state sealed under the old key", async () => {
    const tenants = connectClient(TenantService, url(0), superAdminKey);
    before.tenantId = (await tenants.createTenant({ name: "Drill Co" })).tenant!.id;
    before.adminKey = (
      await tenants.createApiKey({ tenantId: before.tenantId, name: "admin", scopes: [ApiKeyScope.ADMIN] })
    ).secret;
    const api = licensing(0);
    const product = (
      await api.createProduct({
        code: "DKR",
        name: "Drill",
        features: [{ name: "reports", kind: FeatureKind.FLAG, compose: ComposeStrategy.UNION }],
      })
    ).product!;
    const policy = (await api.createPolicy({ productId: product.id, name: "team", floating: true })).policy!;
    const customer = (await api.createCustomer({ name: "Jane", email: "jane@drill.example" })).customer!;
    before.custom.id = (
      await api.createLicense({ policyId: policy.id, customerId: customer.id, customKey: before.customKey })
    ).license!.id;
    const generated = await licensing(1).createLicense({ policyId: policy.id, customerId: customer.id });
    before.generated = { id: generated.license!.id, key: generated.key };

    // A rotated signing key (two rows sealed), then a license file encrypted with the generated key.
    const rotated = await connectClient(ActivationService, url(0), superAdminKey).rotateSigningKey({});
    before.signingKids = [rotated.key!.kid, ...rotated.retiringKids];
    expect(before.signingKids).toHaveLength(2);
    before.encryptedFile = (
      await licensing(0).issueLicenseFile({ licenseId: before.generated.id, encrypt: true })
    ).licenseFile;

    // A webhook endpoint whose secret was rotated (both secret columns sealed); the receiver knows the current one.
    const hooks = connectClient(WebhookService, url(0), before.adminKey);
    const { endpoint } = await hooks.createWebhookEndpoint({ url: receiver.url, eventTypes: ["customer.*"] });
    before.endpointId = endpoint!.id;
    before.webhookSecret = (await hooks.rotateWebhookSecret({ id: endpoint!.id })).secret;
    receiver.state.secret = before.webhookSecret;

    // A payment source whose secret was replaced, keeping the old one for a while (both columns sealed), and a
    // purchase through it whose license key waits in the e-mail outbox (no SMTP server here: it stays queued).
    const { source } = await hooks.createPaymentSource({
      provider: PaymentProvider.STRIPE,
      secret: `whsec_${randomBytes(24).toString("base64url")}`,
      mappings: [{ item: "price_drill", policyId: policy.id, metadata: {}, attachLicenseFile: false }],
    });
    before.paymentHookPath = source!.hookPath;
    await hooks.rotatePaymentSourceSecret({ id: source!.id, secret: before.paymentSecret });
    expect((await purchase(0, "buyer@drill.example")).body.status).toBe("applied");

    // An idempotent call, whose answer is recorded sealed, and a page token.
    before.idempotentCustomerId = (
      await api.createCustomer({ name: "Once", email: "once@drill.example", idempotencyKey: "drill-once" })
    ).customer!.id;
    const page = await api.listCustomers({ pageSize: 1 });
    expect(page.nextPageToken).not.toBe("");
    before.pageToken = page.nextPageToken;

    expect(await validate(0, before.customKey)).toBe(ValidationCode.VALID);
    expect(await validate(1, before.generated.key)).toBe(ValidationCode.VALID);
  });

  it("runs the runbook's steps in order, exactly as written", async () => {
    const rb = new Runbook("data-key-rotation", {
      LICENSD_DATABASE_URL: databaseUrl,
      LICENSD_SUPER_ADMIN_KEY: superAdminKey,
      LICENSD_DATA_KEY: oldKey,
      LICENSD_DATA_DIR: mkdtempSync(path.join(os.tmpdir(), "licensd-drill-data-")),
    });

    await rb.step("generate-key", () => {
      const file = path.join(rb.cwd, "new-data-key");
      newKey = readFileSync(file, "utf8").trim();
      expect(Buffer.from(newKey, "base64")).toHaveLength(32);
      expect(statSync(file).mode & 0o077).toBe(0); // readable by its owner only
    });

    await rb.step("stage-new-key", async () => {
      for (const i of [0, 1]) await restart(i, { LICENSD_DATA_KEY: oldKey, LICENSD_DATA_KEY_PREVIOUS: newKey });
    });

    await rb.step("switch-key", async () => {
      await restart(0, { LICENSD_DATA_KEY: newKey, LICENSD_DATA_KEY_PREVIOUS: oldKey });
      // Mid-restart: a license made on the switched instance (sealed under the new key) is revealed by the other,
      // which still seals under the old key but opens the new one since the previous step.
      const made = await licensing(0).createLicense({
        policyId: (await licensing(0).listPolicies({})).policies[0]!.id,
        customerId: before.idempotentCustomerId,
      });
      expect((await licensing(1).revealLicenseKey({ id: made.license!.id })).key).toBe(made.key);
      await restart(1, { LICENSD_DATA_KEY: newKey, LICENSD_DATA_KEY_PREVIOUS: oldKey });
    });

    await rb.step("rotate", ({ stdout }) => {
      const counts = tableCounts(stdout);
      expect(Object.keys(counts)).toEqual(SEALED_COLUMNS.map((t) => t.table));
      for (const table of [
        "data_key_material",
        "signing_keys",
        "licenses",
        "webhook_endpoints",
        "payment_sources",
        "email_outbox",
        "idempotency_records",
      ])
        expect(counts[table]!.resealed, table).toBeGreaterThan(0);
      expect(counts.payment_sources!.resealed).toBe(2); // the secret and the replaced one, still accepted
      expect(counts.email_outbox!.resealed).toBe(1); // the key waiting to be e-mailed
      expect(counts.data_key_material!.resealed).toBe(3);
      expect(counts.signing_keys!.resealed).toBe(2);
      expect(counts.webhook_endpoints!.resealed).toBe(2); // the secret and the rotated-out one
      expect(counts.licenses).toMatchObject({ values: 4, current: 1, resealed: 3, unopenable: 0 });
      for (const c of Object.values(counts)) expect(c.unopenable).toBe(0);
      expect(stdout).toMatch(/re-sealed \d+ values under the current data key\n$/);
    });

    await rb.step("check", ({ stdout }) => {
      expect(stdout).toContain("every sealed value is under the current data key");
      for (const c of Object.values(tableCounts(stdout))) expect(c.previous).toBe(0);
    });

    await rb.step("retire-old-key", async () => {
      for (const i of [0, 1]) await restart(i, { LICENSD_DATA_KEY: newKey });
    });

    await rb.step("confirm", ({ stdout }) => {
      expect(stdout).toMatch(/^current data key [0-9a-f]{8}; previous: none\n/);
      expect(stdout).toContain("every sealed value is under the current data key");
    });
    rb.finish();
  }, 180_000); // six restarts: about a minute on a quiet machine, more on a loaded one

  it("leaves every sealed value under the new key alone", async () => {
    const key = Buffer.from(newKey, "base64");
    for (const spec of SEALED_COLUMNS) {
      const rows = await query(databaseUrl, `select ${[...spec.key, ...spec.columns].join(", ")} from ${spec.table}`);
      expect(rows.length, spec.table).toBeGreaterThan(0);
      for (const row of rows) {
        const aad = spec.aad(spec.key.map((k) => row[k] as string));
        for (const column of spec.columns) {
          const value = row[column] as Buffer | null;
          if (value === null) continue;
          expect(() => open(key, value, aad), `${spec.table}.${column}`).not.toThrow();
          expect(() => open(Buffer.from(oldKey, "base64"), value, aad), `${spec.table}.${column}`).toThrow();
        }
      }
    }
  });

  it("keeps license keys, reveal-key, license files, signing keys, idempotent answers and page tokens working", async () => {
    for (const i of [0, 1]) {
      expect(await validate(i, before.customKey)).toBe(ValidationCode.VALID);
      expect(await validate(i, before.generated.key)).toBe(ValidationCode.VALID);
    }
    // `license reveal-key`, the CLI an operator uses, gives the same key.
    const revealed = await run(
      "bash",
      [
        path.join(process.cwd(), "scripts/with-node.sh"),
        "node",
        "bin/licensd.js",
        "license",
        "reveal-key",
        before.generated.id,
      ],
      { env: { LICENSD_URL: url(1), LICENSD_API_KEY: before.adminKey } },
    );
    expect(revealed).toMatchObject({ code: 0, stdout: `${before.generated.key}\n` });

    // The signing keys still sign: a new encrypted license file verifies with the published keys, as does the old.
    const { verifyLicenseFile } = await import("@licensd/client");
    const keys = (await connectClient(ActivationService, url(1)).getSigningKeys({})).keys;
    expect(keys.map((k) => k.kid).sort()).toEqual([...before.signingKids].sort());
    const fresh = await licensing(1).issueLicenseFile({ licenseId: before.generated.id, encrypt: true });
    expect(fresh.kid).toBe(before.signingKids[0]);
    for (const file of [before.encryptedFile, fresh.licenseFile])
      expect((await verifyLicenseFile(file, { keys, licenseKey: before.generated.key })).code).toBe("VALID");

    // The recorded answer replays; the page token from before the rotation still reads the next page.
    const replay = await licensing(0).createCustomer({
      name: "Once",
      email: "once@drill.example",
      idempotencyKey: "drill-once",
    });
    expect(replay.customer!.id).toBe(before.idempotentCustomerId);
    const next = await licensing(1).listCustomers({ pageSize: 1, pageToken: before.pageToken });
    expect(next.customers).toHaveLength(1);
  });

  it("verifies payment events with the same secret", async () => {
    for (const i of [0, 1]) expect((await purchase(i, `after-${i}@drill.example`)).body.status).toBe("applied");
  });

  it("signs webhook deliveries with the same secret", async () => {
    const { customer } = await licensing(0).createCustomer({ name: "After", email: "after@drill.example" });
    const deliveries = await until(
      "the customer.created delivery after the rotation",
      () =>
        connectClient(WebhookService, url(1), before.adminKey).listWebhookDeliveries({
          endpointId: before.endpointId,
          pageSize: 1000,
        }),
      (r) => r.deliveries.some((d) => d.payload.includes(customer!.id)),
      20_000,
      100,
    );
    const delivery = deliveries.deliveries.find((d) => d.payload.includes(customer!.id))!;
    const receipt = await until(
      "its receipt",
      () => receiver.receipts.find((r) => r.id === delivery.eventId),
      (r) => r !== undefined,
      20_000,
      50,
    );
    expect(receipt).toMatchObject({ verified: true, failure: "" });
    expect(receiver.receipts.every((r) => r.verified)).toBe(true);
  });

  it("verifies the audit chain across the rotation", async () => {
    const res = await connectClient(AuditService, url(0), before.adminKey).verifyAuditChain({});
    expect(res).toMatchObject({ valid: true });
    expect(res.eventsChecked).toBeGreaterThan(8n);
  });

  it("refuses to start an instance given only the old key, saying which settings to fix", async () => {
    const refused = await start({ LICENSD_DATA_KEY: oldKey }).then(
      () => "started",
      (err: Error) => err.message,
    );
    expect(refused).toMatch(/^licensd exited with 1:/);
    expect(refused).toContain("licensd: failed to start: no configured data key opens the data-key material");
    expect(refused).toContain("LICENSD_DATA_KEY (fingerprint");
    expect(refused).toContain("LICENSD_DATA_KEY_PREVIOUS is unset");
    expect(refused).not.toMatch(/\n\s+at /); // no stack trace
  });

  it("never wrote a data key to any instance's output", () => {
    for (const out of outputs.map((o) => o())) {
      for (const key of [oldKey, newKey]) {
        expect(out).not.toContain(key);
        expect(out).not.toContain(Buffer.from(key, "base64").toString("hex"));
      }
    }
  });
});

/** The rows of `data-key rotate|check`'s table (tab-separated, under a header), by table. */
function tableCounts(stdout: string) {
  const lines = stdout.split("\n");
  const header = lines.findIndex((l) => l.startsWith("table\tvalues\t"));
  expect(header).toBeGreaterThanOrEqual(0);
  const names = lines[header]!.split("\t");
  const counts: Record<string, Record<string, number>> = {};
  for (const line of lines.slice(header + 1)) {
    const cells = line.split("\t");
    if (cells.length !== names.length) break;
    counts[cells[0]!] = Object.fromEntries(names.slice(1).map((n, i) => [n, Number(cells[i + 1])]));
  }
  return counts;
}

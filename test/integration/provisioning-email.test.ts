/*
 * License keys e-mailed after a purchase, to a real SMTP server on 127.0.0.1 (smtp-server) through licensd's real
 * transport (nodemailer): once however often the event is delivered, after the server comes back when it was down, by
 * one of two instances, with the tenant's template; and the key leaves the outbox once sent.
 */
import { randomBytes, randomUUID } from "node:crypto";
import type { AddressInfo } from "node:net";
import { SigningKeys, verifyLicenseFile } from "@licensd/client";
import { SMTPServer } from "smtp-server";
import Stripe from "stripe";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LicensingService } from "../../gen/ts/licensd/licensing/v1/licensing_service_pb.js";
import { ApiKeyScope } from "../../gen/ts/licensd/tenant/v1/api_key_pb.js";
import { TenantService } from "../../gen/ts/licensd/tenant/v1/tenant_service_pb.js";
import { EmailDeliveryStatus, PaymentProvider } from "../../gen/ts/licensd/webhook/v1/payment_source_pb.js";
import { WebhookService } from "../../gen/ts/licensd/webhook/v1/webhook_service_pb.js";
import { ManualClock } from "../../src/platform/clock.js";
import { connectClient, startTestApp, type TestApp } from "../support/app.js";
import { query } from "../support/database.js";
import { failure } from "../support/errors.js";
import { freePort } from "../support/server.js";
import { until } from "../support/wait.js";

interface Received {
  from: string;
  to: string[];
  raw: string;
}

/** An SMTP server on 127.0.0.1 that keeps what it is sent; stop() and start() again on the same port. */
function smtpSink(port: number) {
  const got: Received[] = [];
  let server: SMTPServer | undefined;
  return {
    got,
    async start() {
      server = new SMTPServer({
        authOptional: true,
        disabledCommands: ["STARTTLS", "AUTH"],
        logger: false,
        onData(stream, session, done) {
          const chunks: Buffer[] = [];
          stream.on("data", (c: Buffer) => chunks.push(c));
          stream.on("end", () => {
            got.push({
              from: session.envelope.mailFrom ? session.envelope.mailFrom.address : "",
              to: session.envelope.rcptTo.map((r) => r.address),
              raw: Buffer.concat(chunks).toString("utf8"),
            });
            done();
          });
        },
      });
      await new Promise<void>((resolve) => server!.listen(port, "127.0.0.1", () => resolve()));
      return (server.server.address() as AddressInfo).port;
    },
    stop: () => new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve())),
  };
}

const SECRET = "whsec_email_test_K8s2Lp0QmZ";
const clock = new ManualClock(new Date("2026-12-06T10:00:00Z"));
let port: number;
let sink: ReturnType<typeof smtpSink>;
let t: TestApp;
let second: TestApp;

beforeAll(async () => {
  port = await freePort();
  sink = smtpSink(port);
  await sink.start();
  const env = {
    LICENSD_SMTP_HOST: "127.0.0.1",
    LICENSD_SMTP_PORT: String(port),
    LICENSD_SMTP_TLS: "none",
    LICENSD_SMTP_FROM: "Acme Licensing <licenses@acme.example>",
    // The tests drive the outbox (app.outbox.tick()) after moving the clock.
    LICENSD_EMAIL_POLL_MS: "60000",
    // One data key for both instances: the second opens what the first sealed.
    LICENSD_DATA_KEY: randomBytes(32).toString("base64"),
  };
  t = await startTestApp({ clock, env });
  second = await startTestApp({ clock, env, databaseUrl: t.databaseUrl });
});
afterAll(async () => {
  await second?.close();
  await t?.close();
  await sink?.stop();
});

async function vendor(name: string, emailLicenseKeys = true, attachLicenseFile = false) {
  const admin = connectClient(TenantService, t.url, t.superAdminKey);
  const { tenant } = await admin.createTenant({ name });
  const { secret } = await admin.createApiKey({ tenantId: tenant!.id, name: "admin", scopes: [ApiKeyScope.ADMIN] });
  const licensing = connectClient(LicensingService, t.url, secret);
  const webhooks = connectClient(WebhookService, t.url, secret);
  const { product } = await licensing.createProduct({ code: "APP", name: "Acme <Studio>" });
  const { policy } = await licensing.createPolicy({ productId: product!.id, name: "pro" });
  const { source } = await webhooks.createPaymentSource({
    provider: PaymentProvider.STRIPE,
    secret: SECRET,
    mappings: [{ item: "price_pro", policyId: policy!.id, metadata: {}, attachLicenseFile }],
    emailLicenseKeys,
  });
  return { tenantId: tenant!.id, licensing, webhooks, source: source! };
}

/** A paid checkout, signed as Stripe signs it, POSTed to the source's hook path. */
async function purchase(hookPath: string, email: string, name = "Ada Lovelace", id = `evt_${randomUUID()}`) {
  const body = JSON.stringify({
    id,
    object: "event",
    created: Math.floor(clock.now().getTime() / 1000),
    type: "checkout.session.completed",
    data: {
      object: {
        id: `cs_${randomUUID()}`,
        object: "checkout.session",
        mode: "payment",
        payment_status: "paid",
        customer_details: { email, name },
        metadata: { licensd_price: "price_pro" },
        payment_intent: `pi_${randomUUID()}`,
      },
    },
  });
  const signature = Stripe.webhooks.generateTestHeaderString({
    payload: body,
    secret: SECRET,
    timestamp: Math.floor(clock.now().getTime() / 1000),
  });
  const res = await fetch(`${t.url}${hookPath}`, {
    method: "POST",
    headers: { "content-type": "application/json", "stripe-signature": signature },
    body,
  });
  expect(res.status).toBe(200);
  return { id, body: (await res.json()) as { status: string; license_ids: string[] } };
}

const mailsTo = (address: string) => sink.got.filter((m) => m.to.includes(address));

/** The text part of a message as sent (quoted-printable soft breaks joined). */
const textOf = (raw: string) => raw.replace(/=\r?\n/g, "");

describe("license keys by e-mail", () => {
  it("are sent once after the purchase commits, with the key that validates, and leave the outbox", async () => {
    const v = await vendor("Mail Co");
    const { body } = await purchase(v.source.hookPath, "ada@example.com");
    const licenseId = body.license_ids[0]!;
    const [mail] = await until(
      "the e-mail",
      () => mailsTo("ada@example.com"),
      (m) => m.length === 1,
    );
    const { key } = await v.licensing.revealLicenseKey({ id: licenseId });
    expect(mail!.from).toBe("licenses@acme.example");
    expect(textOf(mail!.raw)).toContain(key);
    expect(mail!.raw).toMatch(/^Subject: Your Acme <Studio> license key/m);
    // In the HTML part, the product's name is escaped.
    expect(textOf(mail!.raw)).toContain("Acme &lt;Studio&gt;");
    expect((await connectClient(LicensingService, t.url).validateLicense({ key })).valid).toBe(true);

    const { deliveries } = await v.webhooks.listEmailDeliveries({ licenseId });
    expect(deliveries).toHaveLength(1);
    expect(deliveries[0]).toMatchObject({
      status: EmailDeliveryStatus.SENT,
      toAddress: "ada@example.com",
      attempts: 1,
      lastError: "",
    });
    const [row] = await query<{ key_sealed: Buffer | null }>(
      t.databaseUrl,
      "select key_sealed from email_outbox where id = $1",
      [deliveries[0]!.id],
    );
    expect(row!.key_sealed).toBeNull();
  });

  it("are sent once for an event delivered three times, and not at all for a source that does not e-mail", async () => {
    const v = await vendor("Retry Mail Co");
    const id = `evt_${randomUUID()}`;
    for (let i = 0; i < 3; i++) await purchase(v.source.hookPath, "grace@example.com", "Grace", id);
    await until(
      "the e-mail",
      () => mailsTo("grace@example.com"),
      (m) => m.length === 1,
    );
    await Promise.all([t.app.outbox.tick(), second.app.outbox.tick()]);
    expect(mailsTo("grace@example.com")).toHaveLength(1);

    const quiet = await vendor("Quiet Co", false);
    const { body } = await purchase(quiet.source.hookPath, "quiet@example.com");
    expect(body.status).toBe("applied");
    await Promise.all([t.app.outbox.tick(), second.app.outbox.tick()]);
    expect(mailsTo("quiet@example.com")).toEqual([]);
    expect((await quiet.webhooks.listEmailDeliveries({})).deliveries).toEqual([]);
  });

  it("wait while the SMTP server is down, then arrive once, from one of two instances", async () => {
    const v = await vendor("Outage Co");
    await sink.stop();
    const { body } = await purchase(v.source.hookPath, "outage@example.com");
    const licenseId = body.license_ids[0]!;
    const failed = await until(
      "a failed attempt",
      async () => (await v.webhooks.listEmailDeliveries({ licenseId })).deliveries[0],
      (d) => d !== undefined && d.lastError !== "",
    );
    expect(failed).toMatchObject({ status: EmailDeliveryStatus.PENDING, attempts: 1 });
    expect(failed!.nextAttemptTime).toBeDefined();
    // Not due yet: nothing is tried.
    expect(await t.app.outbox.tick()).toBe(0);

    await sink.start();
    clock.advance(2 * 60_000);
    // Both instances look at once: one claims it, the other skips it.
    const tried = await Promise.all([t.app.outbox.tick(), second.app.outbox.tick()]);
    expect(tried.sort()).toEqual([0, 1]);
    expect(mailsTo("outage@example.com")).toHaveLength(1);
    expect((await v.webhooks.listEmailDeliveries({ licenseId })).deliveries[0]).toMatchObject({
      status: EmailDeliveryStatus.SENT,
      attempts: 2,
      lastError: "",
    });
  });

  it("carry a signed license file when the mapping asks for one", async () => {
    const v = await vendor("File Co", true, true);
    const { body } = await purchase(v.source.hookPath, "file@example.com");
    const licenseId = body.license_ids[0]!;
    const [mail] = await until(
      "the e-mail",
      () => mailsTo("file@example.com"),
      (m) => m.length === 1,
    );
    // The attachment part, as a mail client reads it.
    const part = mail!.raw.split(/\r?\n--/).find((p) => p.includes(`filename=${licenseId}.lic`));
    if (!part) expect.fail(`no ${licenseId}.lic attachment in:\n${mail!.raw}`);
    const [headers, ...rest] = part.split(/\r?\n\r?\n/);
    const encoded = rest.join("\n\n").trim();
    const file = /base64/i.test(headers!)
      ? Buffer.from(encoded, "base64").toString("utf8")
      : encoded
          .replace(/=\r?\n/g, "")
          .replace(/=([0-9A-F]{2})/g, (_, h: string) => String.fromCharCode(Number.parseInt(h, 16)));
    const keys = new SigningKeys({ baseUrl: t.url, now: () => clock.now() });
    const verified = await verifyLicenseFile(file.trim(), { keys, now: clock.now() });
    expect(verified.code).toBe("VALID");
    expect(verified.payload).toMatchObject({ license_id: licenseId });
  });

  it("use the tenant's template, with its placeholders filled and checked", async () => {
    const v = await vendor("Template Co");
    const before = await v.webhooks.getEmailTemplate({});
    expect(before.default).toBe(true);
    expect(
      await failure(
        v.webhooks.updateEmailTemplate({
          template: { subject: "Key for {{customer}}", text: "{{license_key}}", html: "{{license_key}}" },
        }),
      ),
    ).toMatchObject({
      code: "InvalidArgument",
      reason: "UNKNOWN_PLACEHOLDER",
      metadata: { field: "template.subject" },
    });
    expect(
      await failure(
        v.webhooks.updateEmailTemplate({
          template: { subject: "Your key", text: "no key here", html: "{{license_key}}" },
        }),
      ),
    ).toMatchObject({ code: "InvalidArgument", reason: "LICENSE_KEY_MISSING", metadata: { field: "template.text" } });
    await v.webhooks.updateEmailTemplate({
      template: {
        subject: "{{product_name}} for {{customer_name}}",
        text: "Dear {{customer_name}}, key {{license_key}} ({{license_id}})",
        html: "<p>Dear {{ customer_name }}, <b>{{license_key}}</b></p>",
      },
    });
    expect((await v.webhooks.getEmailTemplate({})).default).toBe(false);
    const { body } = await purchase(v.source.hookPath, "tpl@example.com", "Bob <script>");
    const [mail] = await until(
      "the e-mail",
      () => mailsTo("tpl@example.com"),
      (m) => m.length === 1,
    );
    const { key } = await v.licensing.revealLicenseKey({ id: body.license_ids[0]! });
    const text = textOf(mail!.raw);
    expect(mail!.raw).toMatch(/^Subject: Acme <Studio> for Bob <script>/m);
    expect(text).toContain(`Dear Bob <script>, key ${key} (${body.license_ids[0]})`);
    expect(text).toContain(`<p>Dear Bob &lt;script&gt;, <b>${key}</b></p>`);
  });
});

/*
 * The outside reviewer's check of docs/webhooks.md: a receiver program written from its
 * "Verifying a delivery" section (test/e2e/python_webhook_receiver.py,
 * test/e2e/go_webhook_receiver) runs on 127.0.0.1 and a live licensd delivers to it. The
 * program takes a port and WEBHOOK_SECRETS (a JSON map from URL path to `whsec_…` secret),
 * prints {"listening": port} once bound, then one JSON line per delivery.
 */
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { expect } from "vitest";
import { AuditService } from "../../gen/ts/licensd/audit/v1/audit_service_pb.js";
import { LicensingService } from "../../gen/ts/licensd/licensing/v1/licensing_service_pb.js";
import { ApiKeyScope } from "../../gen/ts/licensd/tenant/v1/api_key_pb.js";
import { TenantService } from "../../gen/ts/licensd/tenant/v1/tenant_service_pb.js";
import { WebhookDeliveryStatus } from "../../gen/ts/licensd/webhook/v1/webhook_pb.js";
import { WebhookService } from "../../gen/ts/licensd/webhook/v1/webhook_service_pb.js";
import { connectClient } from "./app.js";
import { freePort } from "./server.js";
import { BOUND_MS, until, within } from "./wait.js";

/** What the receiver printed for one request; a refusal's `id` is the unverified webhook-id header. */
export interface ReceiverLine {
  path: string;
  ok: boolean;
  id: string | null;
  type: string | null;
  reason: string | null;
  /** How many signatures the webhook-signature header carried. */
  signatures: number;
}

export interface ReceiverProcess {
  lines: ReceiverLine[];
  /** The first line `match` accepts, waited for within the bound. */
  next(what: string, match: (l: ReceiverLine) => boolean): Promise<ReceiverLine>;
  stop(): Promise<void>;
}

/** Starts `cmd args… port` with WEBHOOK_SECRETS and resolves once it says it is listening. */
export async function startReceiverProcess(
  cmd: string,
  args: string[],
  port: number,
  secrets: Record<string, string>,
  env: Record<string, string> = {},
): Promise<ReceiverProcess> {
  const child = spawn(cmd, [...args, String(port)], {
    env: { ...(process.env as Record<string, string>), ...env, WEBHOOK_SECRETS: JSON.stringify(secrets) },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const lines: ReceiverLine[] = [];
  let stdout = "";
  let stderr = "";
  let listening = false;
  child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
  child.stdout.on("data", (d: Buffer) => {
    stdout += d.toString();
    for (let nl = stdout.indexOf("\n"); nl >= 0; nl = stdout.indexOf("\n")) {
      const line = JSON.parse(stdout.slice(0, nl)) as ReceiverLine | { listening: number };
      stdout = stdout.slice(nl + 1);
      if ("listening" in line) listening = line.listening === port;
      else lines.push(line);
    }
  });
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  await until(
    `${cmd} to listen on 127.0.0.1:${port}`,
    () => {
      if (child.exitCode !== null) throw new Error(`${cmd} exited with ${child.exitCode}:\n${stderr}`);
      return listening;
    },
    Boolean,
    BOUND_MS,
  );
  return {
    lines,
    next: (what, match) =>
      until(
        `${what} (received so far: ${JSON.stringify(lines)}; stderr: ${stderr})`,
        () => lines.find(match),
        (l) => l !== undefined,
      ) as Promise<ReceiverLine>,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
      await within(exited, `${cmd} to stop`);
    },
  };
}

type StartReceiver = (port: number, secrets: Record<string, string>) => Promise<ReceiverProcess>;

/**
 * A tenant with two endpoints on one receiver: /ok, whose secret the receiver knows, and
 * /wrong, for which it holds another well-formed secret. A test event and a real
 * `customer.created` are verified at /ok and refused (BAD_SIGNATURE) at /wrong; after
 * RotateWebhookSecret (1 h overlap) a receiver knowing only the new secret accepts the next.
 */
export async function checkDocumentedReceiver(server: { url: string; superAdminKey: string }, start: StartReceiver) {
  const admin = connectClient(TenantService, server.url, server.superAdminKey);
  const { tenant } = await admin.createTenant({ name: "Webhook receiver" });
  const { secret: apiKey } = await admin.createApiKey({
    tenantId: tenant!.id,
    name: "webhooks",
    scopes: [ApiKeyScope.ADMIN],
  });
  const webhooks = connectClient(WebhookService, server.url, apiKey);
  const licensing = connectClient(LicensingService, server.url, apiKey);
  const audit = connectClient(AuditService, server.url, apiKey);

  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const ok = await webhooks.createWebhookEndpoint({ url: `${base}/ok`, eventTypes: ["customer.created"] });
  const wrong = await webhooks.createWebhookEndpoint({ url: `${base}/wrong`, eventTypes: ["customer.created"] });
  const okId = ok.endpoint!.id;
  const wrongId = wrong.endpoint!.id;
  expect(ok.secret).toMatch(/^whsec_/);
  const unknownSecret = `whsec_${randomBytes(32).toString("base64")}`;

  /** The first delivery of a `customer.created` to `endpointId` other than `skip`, once attempted. */
  const customerDelivery = (endpointId: string, status: WebhookDeliveryStatus, skip = "") =>
    until(
      `a customer.created delivery to ${endpointId} with status ${WebhookDeliveryStatus[status]}`,
      async () =>
        (await webhooks.listWebhookDeliveries({ endpointId, status })).deliveries.find(
          (d) => d.eventType === "customer.created" && d.eventId !== skip && d.attempts.length > 0,
        ),
      (d) => d !== undefined,
    ).then((d) => d!);

  let receiver = await start(port, { "/ok": ok.secret, "/wrong": unknownSecret });
  try {
    // SendTestWebhook makes its one attempt before it answers.
    const test = (await webhooks.sendTestWebhook({ endpointId: okId })).delivery!;
    expect(test.attempts.map((a) => a.httpStatus)).toEqual([204]);
    expect(await receiver.next("the test delivery at /ok", (l) => l.path === "/ok")).toEqual({
      path: "/ok",
      ok: true,
      id: test.eventId,
      type: "webhook.test",
      reason: null,
      signatures: 1,
    });

    const refusedTest = (await webhooks.sendTestWebhook({ endpointId: wrongId })).delivery!;
    expect(refusedTest.attempts.map((a) => a.httpStatus)).toEqual([400]);
    expect(refusedTest.attempts[0].responseBody).toMatch(/^BAD_SIGNATURE/);
    expect(await receiver.next("the test delivery at /wrong", (l) => l.path === "/wrong")).toEqual({
      path: "/wrong",
      ok: false,
      id: refusedTest.eventId,
      type: null,
      reason: "BAD_SIGNATURE",
      signatures: 1,
    });

    // A real change, delivered by the dispatcher from the audit log.
    const { customer } = await licensing.createCustomer({ name: "Receiver", email: "receiver@example.com" });
    const real = await customerDelivery(okId, WebhookDeliveryStatus.SUCCEEDED);
    const { event } = await audit.getAuditEvent({ id: real.eventId });
    expect(event).toMatchObject({ type: "customer.created", subject: customer!.id });
    expect(
      await receiver.next("the customer.created at /ok", (l) => l.path === "/ok" && l.id === real.eventId),
    ).toEqual({
      path: "/ok",
      ok: true,
      id: real.eventId,
      type: "customer.created",
      reason: null,
      signatures: 1,
    });
    const refusedReal = await customerDelivery(wrongId, WebhookDeliveryStatus.PENDING);
    expect(refusedReal.eventId).toBe(real.eventId);
    expect(refusedReal.attempts[0].httpStatus).toBe(400);
    expect(
      await receiver.next("the customer.created at /wrong", (l) => l.path === "/wrong" && l.id === real.eventId),
    ).toMatchObject({ ok: false, type: null, reason: "BAD_SIGNATURE" });
    // Nothing was accepted at /wrong, and everything at /ok was.
    expect(receiver.lines.filter((l) => l.path === "/wrong" && l.ok)).toEqual([]);
    expect(receiver.lines.filter((l) => l.path === "/ok" && !l.ok)).toEqual([]);

    // Rotation: deliveries now carry both signatures; the receiver redeployed with only
    // the new secret accepts them.
    const rotated = await webhooks.rotateWebhookSecret({ id: okId, overlap: { seconds: 3600n } });
    expect(rotated.secret).toMatch(/^whsec_/);
    expect(rotated.secret).not.toBe(ok.secret);
    await receiver.stop();
    receiver = await start(port, { "/ok": rotated.secret });
    const { customer: next } = await licensing.createCustomer({ name: "After", email: "after@example.com" });
    const afterRotation = await customerDelivery(okId, WebhookDeliveryStatus.SUCCEEDED, real.eventId);
    expect((await audit.getAuditEvent({ id: afterRotation.eventId })).event?.subject).toBe(next!.id);
    expect(
      await receiver.next(
        "the customer.created at /ok after rotation",
        (l) => l.path === "/ok" && l.id === afterRotation.eventId,
      ),
    ).toEqual({
      path: "/ok",
      ok: true,
      id: afterRotation.eventId,
      type: "customer.created",
      reason: null,
      signatures: 2,
    });
  } finally {
    await receiver.stop();
  }
}

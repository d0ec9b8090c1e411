/**
 * The console's admin pages in a real browser (Debian's Chromium through playwright-core)
 * against a real server: the audit log checked in the browser (chain, signed checkpoint,
 * an entry's inclusion proof), webhooks sent to a receiver on 127.0.0.1 (send test,
 * a failed delivery redelivered), and the super-admin's tenants and API keys. No
 * Content-Security-Policy violation anywhere. Screenshots go to test/e2e/screenshots/.
 */
import { createServer, type IncomingHttpHeaders, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { verifyWebhook } from "@licensd/client";
import type { Browser } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { fromBinary, toBinary } from "@bufbuild/protobuf";
import { ListAuditEventsResponseSchema } from "../../gen/ts/licensd/audit/v1/audit_service_pb.js";
import { LicensingService } from "../../gen/ts/licensd/licensing/v1/licensing_service_pb.js";
import { ApiKeyScope } from "../../gen/ts/licensd/tenant/v1/api_key_pb.js";
import { TenantService } from "../../gen/ts/licensd/tenant/v1/tenant_service_pb.js";
import { connectClient } from "../support/app.js";
import { launchBrowser, openConsole, openSection, signIn } from "../support/console.js";
import { startServer, type ServerProcess } from "../support/server.js";

let server: ServerProcess & { dropDatabase(): Promise<void> };
let browser: Browser;
let tenant: { id: string; key: string };

/** The webhook receiver: records every POST, answers `answer.status`. */
const received: { headers: IncomingHttpHeaders; body: string }[] = [];
const answer = { status: 204 };
let receiver: Server;
let receiverUrl: string;

beforeAll(async () => {
  receiver = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      received.push({ headers: req.headers, body: Buffer.concat(chunks).toString("utf8") });
      res.writeHead(answer.status, { "content-type": "text/plain" });
      res.end(answer.status >= 300 ? "receiver says no" : "");
    });
  });
  await new Promise<void>((resolve) => receiver.listen(0, "127.0.0.1", resolve));
  receiverUrl = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hooks`;
  [server, browser] = await Promise.all([
    startServer({ env: { LICENSD_WEBHOOK_ALLOW_PRIVATE: "true" } }),
    launchBrowser(),
  ]);
  const admin = connectClient(TenantService, server.url, server.superAdminKey);
  const { tenant: t } = await admin.createTenant({ name: "Admin Pages Co" });
  const { secret } = await admin.createApiKey({ tenantId: t!.id, name: "console", scopes: [ApiKeyScope.ADMIN] });
  tenant = { id: t!.id, key: secret };
}, 120_000);
afterAll(async () => {
  await browser?.close();
  await server?.stop();
  await server?.dropDatabase();
  await new Promise((r) => receiver?.close(r));
});

describe("audit", () => {
  it("shows the timeline, the chain verified, and an entry's inclusion proof verified in the browser", async () => {
    const licensing = connectClient(LicensingService, server.url, tenant.key);
    const { customer } = await licensing.createCustomer({ name: "Audited Ltd", email: "a@example.com" });
    const c = await openConsole(browser, server.url);
    await signIn(c.page, tenant.key);
    await openSection(c.page, "Audit");
    const entries = c.page.getByRole("table", { name: "audit entries" });
    await entries.getByText(customer!.id).waitFor();
    await expect.poll(() => c.page.getByTestId("chain-status").textContent()).toMatch(/verified.*entries checked/);
    await expect.poll(() => c.page.getByTestId("checkpoint-status").textContent()).toContain("signature verified");
    // Entry 1 (the tenant's API key) and the newest one, proven against a fresh signed checkpoint.
    for (const seq of [1, 3]) {
      await c.page.getByRole("button", { name: `Verify entry ${seq}` }).click();
      await expect.poll(() => c.page.getByTestId(`proof-${seq}`).textContent()).toMatch(/verified in the signed tree/);
    }
    // Filters: a type prefix that matches only the customer's entry.
    await c.page.getByText("Filter", { exact: true }).click();
    await c.page.getByLabel("Type starts with").fill("customer.");
    await c.page.getByRole("button", { name: "Apply" }).click();
    await expect.poll(() => entries.locator("tbody tr").count()).toBe(1);
    await c.page.getByLabel("Type starts with").fill("nothing.");
    await c.page.getByRole("button", { name: "Apply" }).click();
    await c.page.getByText("No entry matches these filters").waitFor();
    await c.shot("audit");
    expect(c.problems).toEqual([]);
    await c.context.close();
  });
  it("an entry altered on its way to the browser fails its inclusion proof there", async () => {
    const c = await openConsole(browser, server.url);
    // The server's answer is changed in flight: the customer.created entry names another subject.
    await c.page.route("**/licensd.audit.v1.AuditService/ListAuditEvents*", async (route) => {
      const response = await route.fetch();
      const list = fromBinary(ListAuditEventsResponseSchema, new Uint8Array(await response.body()));
      for (const e of list.events) if (e.type === "customer.created") e.subject = "cus_someone_else";
      await route.fulfill({ response, body: Buffer.from(toBinary(ListAuditEventsResponseSchema, list)) });
    });
    await signIn(c.page, tenant.key);
    await openSection(c.page, "Audit");
    await c.page.getByText("cus_someone_else").waitFor();
    const row = c.page.getByRole("row", { name: /customer\.created/ });
    const seq = (await row.locator("td[data-label=Seq]").textContent()) ?? "";
    // Keyboard only: focus the row's button, press Enter.
    await c.page.getByRole("button", { name: `Verify entry ${seq}` }).focus();
    await c.page.keyboard.press("Enter");
    await expect.poll(() => c.page.getByTestId(`proof-${seq}`).textContent()).toMatch(/NOT_INCLUDED/);
    await c.shot("audit-altered");
    expect(c.problems).toEqual([]);
    await c.context.close();
  });
});

describe("webhooks", () => {
  it("creates an endpoint (secret shown once), sends a test, redelivers a failed delivery", async () => {
    const c = await openConsole(browser, server.url);
    await signIn(c.page, tenant.key);
    await openSection(c.page, "Webhooks");
    await c.page.getByText("No webhook endpoints yet").waitFor();
    // From the keyboard: the fields in order, the checkbox, then the button.
    await c.page.getByLabel("URL").focus();
    await c.page.keyboard.type(receiverUrl);
    await c.page.keyboard.press("Tab");
    await c.page.keyboard.type("the test receiver");
    await c.page.keyboard.press("Tab");
    await c.page.keyboard.type("license.*");
    await c.page.keyboard.press("Tab");
    expect(await c.page.getByLabel("Enabled").evaluate((el) => el === el.ownerDocument.activeElement)).toBe(true);
    await c.page.keyboard.press("Tab");
    await c.page.keyboard.press("Enter");
    const secret = (await c.page.getByTestId("secret").textContent()) ?? "";
    expect(secret).toMatch(/^whsec_/);
    await c.shot("webhooks-created");
    await c.page.getByRole("button", { name: "Done" }).click();
    expect(await c.page.getByTestId("secret").count()).toBe(0);
    await c.page.getByRole("link", { name: receiverUrl }).click();
    await c.page.getByRole("heading", { level: 1, name: "Webhook endpoint" }).waitFor();
    await c.page.getByText("No deliveries yet").waitFor();
    expect(await c.page.content()).not.toContain(secret);

    // Send test: the receiver gets a POST signed with the secret shown; the attempt shows 204.
    answer.status = 204;
    await c.page.getByRole("button", { name: "Send test" }).click();
    const newest = c.page.getByTestId("delivery").first();
    await newest.getByText("succeeded").waitFor();
    await newest.getByText("webhook.test").waitFor();
    expect(await newest.locator("td[data-label=HTTP]").first().textContent()).toBe("204");
    expect(received).toHaveLength(1);
    const verified = verifyWebhook<{ type: string }>(received[0]!.body, received[0]!.headers, secret);
    expect(verified.ok && verified.event.type).toBe("webhook.test");

    // The receiver fails: the delivery is not succeeded and its attempt shows 500 and the body.
    answer.status = 500;
    await c.page.getByRole("button", { name: "Send test" }).click();
    await expect.poll(() => c.page.getByTestId("delivery").count()).toBe(2);
    const failed = c.page.getByTestId("delivery").first();
    const id = await failed.getAttribute("data-delivery");
    await failed.locator("td[data-label=HTTP]", { hasText: "500" }).waitFor();
    await failed.getByText("receiver says no").waitFor();
    expect(await failed.getByText("succeeded").count()).toBe(0);
    expect(received).toHaveLength(2);

    // It answers 204 again: Redeliver makes one more attempt, shown at once, and the delivery succeeds.
    answer.status = 204;
    await failed.getByRole("button", { name: `Redeliver webhook.test ${id}` }).click();
    const again = c.page.locator(`[data-delivery="${id}"]`);
    await again.getByText("succeeded").waitFor();
    await again.getByText("2 attempts").waitFor();
    expect(await again.locator("td[data-label=HTTP]").allTextContents()).toEqual(["204", "500"]);
    expect(await again.locator("td[data-label='#']").first().textContent()).toBe("2 (manual)");
    expect(received).toHaveLength(3);
    expect(received[2]!.headers["webhook-id"]).toBe(received[1]!.headers["webhook-id"]);
    await c.shot("webhooks-deliveries");

    // Edit (only the description changes: the update mask names it alone).
    await c.page.locator("summary", { hasText: "Edit" }).click();
    await c.page.locator("#edit-description").fill("renamed receiver");
    await c.page.getByRole("button", { name: "Save" }).click();
    await c.page.locator(".facts").getByText("renamed receiver").waitFor();

    // Rotate with an hour of overlap: the new secret is shown once; both secrets sign the next test.
    await c.page.locator("summary", { hasText: "Rotate secret" }).click();
    await c.page.getByLabel("Old secret keeps signing for").selectOption("1");
    await c.page.getByRole("button", { name: "Rotate secret" }).click();
    const rotated = (await c.page.getByTestId("secret").textContent()) ?? "";
    expect(rotated).toMatch(/^whsec_/);
    expect(rotated).not.toBe(secret);
    await c.page.getByText("Previous secret").waitFor();
    await c.page.getByRole("button", { name: "Send test" }).click();
    await expect.poll(() => received.length).toBe(4);
    expect(verifyWebhook(received[3]!.body, received[3]!.headers, rotated).ok).toBe(true);
    expect(verifyWebhook(received[3]!.body, received[3]!.headers, secret).ok).toBe(true);

    // Disable, then delete with a confirmation.
    await c.page.getByRole("button", { name: "Disable" }).click();
    await expect.poll(() => c.page.getByTestId("endpoint-status").textContent()).toMatch(/disabled/);
    await c.page.getByRole("button", { name: "Delete" }).click();
    await c.page.getByRole("button", { name: "Yes, delete" }).click();
    await c.page.getByText("The endpoint was deleted").waitFor();
    expect(c.problems).toEqual([]);
    await c.context.close();
  });
});

describe("tenants and API keys", () => {
  it("the super-admin creates and renames a tenant, creates an API key (secret shown once) and revokes it", async () => {
    const c = await openConsole(browser, server.url);
    await signIn(c.page, server.superAdminKey);
    await openSection(c.page, "Tenants");
    await c.page.getByLabel("New tenant name").fill("Fresh Vendor");
    await c.page.getByRole("button", { name: "Create tenant" }).click();
    await c.page.getByRole("heading", { level: 1, name: "Tenant Fresh Vendor" }).waitFor();
    await c.page.getByLabel("Tenant name").fill("Fresh Vendor GmbH");
    await c.page.getByRole("button", { name: "Rename" }).click();
    await c.page.getByRole("heading", { level: 1, name: "Tenant Fresh Vendor GmbH" }).waitFor();

    await c.page.getByText("No live API keys").waitFor();
    await c.page.getByLabel("Key name").fill("ci deploys");
    await c.page.getByLabel(/^admin/).check();
    await c.page.getByRole("button", { name: "Create API key" }).click();
    const secret = (await c.page.getByTestId("secret").textContent()) ?? "";
    expect(secret).toMatch(/^lsk_/);
    const keys = c.page.getByRole("table", { name: "API keys" });
    await keys.getByText("ci deploys").waitFor();
    expect(await keys.locator("td[data-label=Scopes]").textContent()).toBe("admin, read");
    await c.shot("tenant-api-key");
    // The secret works against the API, for the new tenant.
    const asKey = connectClient(TenantService, server.url, secret);
    const { tenant: own } = await asKey.getTenant({ id: "" });
    expect(own?.name).toBe("Fresh Vendor GmbH");

    await c.page.getByRole("button", { name: "Done" }).click();
    await c.page.getByRole("button", { name: "Revoke ci deploys" }).click();
    await c.page.getByRole("button", { name: "Yes, revoke" }).click();
    await c.page.getByText("No live API keys").waitFor();
    await expect(asKey.getTenant({ id: "" })).rejects.toThrow(/unauthenticated/i);
    await c.page.getByLabel("Show revoked keys").check();
    await keys.locator("td[data-label=Status]", { hasText: "revoked" }).waitFor();

    // Delete the tenant, after a confirmation: it is gone from the list.
    await c.page.getByRole("button", { name: "Delete tenant" }).click();
    await c.page.getByRole("button", { name: "Yes, delete" }).click();
    await c.page.getByText("The tenant was deleted").waitFor();
    await c.page.getByRole("link", { name: "Back to the tenants" }).click();
    await c.page.getByRole("table", { name: "tenants" }).getByText("Admin Pages Co").waitFor();
    expect(await c.page.getByText("Fresh Vendor GmbH").count()).toBe(0);
    expect(c.problems).toEqual([]);
    await c.context.close();
  });

  it("a tenant's admin key manages its own keys; Tenants is not in its navigation; readable at 360 px", async () => {
    const c = await openConsole(browser, server.url, 360);
    await signIn(c.page, tenant.key);
    const nav = c.page.getByRole("navigation", { name: "sections" });
    await nav.getByRole("link", { name: "API keys" }).waitFor();
    expect(await nav.getByRole("link", { name: "Tenants" }).count()).toBe(0);
    await openSection(c.page, "API keys");
    await c.page.getByText("console", { exact: true }).waitFor();
    const width = await c.page.evaluate<number>("document.documentElement.scrollWidth");
    expect(width).toBeLessThanOrEqual(360);
    await c.shot("api-keys-360");
    for (const section of ["Audit", "Webhooks"]) {
      await openSection(c.page, section);
      await c.page.waitForLoadState("networkidle");
      expect(await c.page.evaluate<number>("document.documentElement.scrollWidth"), section).toBeLessThanOrEqual(360);
      await c.shot(`${section.toLowerCase()}-360`);
    }
    expect(c.problems).toEqual([]);
    await c.context.close();
  });
});

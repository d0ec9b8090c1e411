/**
 * The admin console in a real browser (Debian's Chromium through playwright-core) against a
 * real server: how it is served, signing in and out, the overview's live audit feed, a
 * phone-sized screen, and no Content-Security-Policy violation anywhere. Screenshots of
 * each page go to test/e2e/screenshots/ (not committed) for review.
 */
import type { Browser } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LicensingService } from "../../gen/ts/licensd/licensing/v1/licensing_service_pb.js";
import { ApiKeyScope } from "../../gen/ts/licensd/tenant/v1/api_key_pb.js";
import { TenantService } from "../../gen/ts/licensd/tenant/v1/tenant_service_pb.js";
import { connectClient } from "../support/app.js";
import { launchBrowser, openConsole, signIn } from "../support/console.js";
import { startServer, type ServerProcess } from "../support/server.js";

let server: ServerProcess & { dropDatabase(): Promise<void> };
let browser: Browser;
let tenant: { id: string; key: string };

beforeAll(async () => {
  [server, browser] = await Promise.all([startServer(), launchBrowser()]);
  const admin = connectClient(TenantService, server.url, server.superAdminKey);
  const { tenant: t } = await admin.createTenant({ name: "Console Co" });
  const { secret } = await admin.createApiKey({ tenantId: t!.id, name: "console", scopes: [ApiKeyScope.ADMIN] });
  tenant = { id: t!.id, key: secret };
}, 120_000);
afterAll(async () => {
  await browser?.close();
  await server?.stop();
  await server?.dropDatabase();
});

describe("serving /console", () => {
  it("index.html uncached under a strict CSP; hashed assets immutable; nothing else", async () => {
    const bare = await fetch(`${server.url}/console`, { redirect: "manual" });
    expect(bare.status).toBe(308);
    expect(bare.headers.get("location")).toBe("/console/");
    const index = await fetch(`${server.url}/console/`);
    expect(index.status).toBe(200);
    expect(index.headers.get("cache-control")).toBe("no-store");
    const csp = index.headers.get("content-security-policy")!;
    expect(csp).toContain("script-src 'self'");
    expect(csp).toContain("default-src 'none'");
    expect(csp).not.toContain("unsafe-inline");
    expect(index.headers.get("x-frame-options")).toBe("DENY");
    const html = await index.text();
    // No inline script: every <script> has a src under /console/assets/ with a hashed name.
    const scripts = [...html.matchAll(/<script\b[^>]*>/g)].map((m) => m[0]);
    expect(scripts.length).toBeGreaterThan(0);
    for (const s of scripts) expect(s).toMatch(/src="\/console\/assets\/[\w-]+-[\w-]{8}\.js"/);
    expect(html).not.toMatch(/<script\b[^>]*>[^<]+<\/script>/);
    const asset = /src="(\/console\/assets\/[^"]+)"/.exec(html)![1]!;
    const js = await fetch(`${server.url}${asset}`);
    expect(js.status).toBe(200);
    expect(js.headers.get("cache-control")).toBe("public, max-age=31536000, immutable");
    expect(js.headers.get("content-type")).toMatch(/^text\/javascript/);
    for (const p of ["/console/assets/../../package.json", "/console/assets/%2e%2e%2fpackage.json", "/console/x"]) {
      expect((await fetch(`${server.url}${p}`)).status, p).toBe(404);
    }
    expect((await fetch(`${server.url}/console/`, { method: "POST" })).status).toBe(405);
    // The console holds no data of its own: the API still wants a key.
    const anonymous = connectClient(TenantService, server.url);
    await expect(anonymous.getTenant({ id: tenant.id })).rejects.toThrow(/unauthenticated/i);
  });
});

describe("signing in", () => {
  it("refuses a wrong key with a readable message; a tenant key signs in; sign-out forgets the key", async () => {
    const c = await openConsole(browser, server.url);
    await c.page.getByLabel("API key").fill("lsk_not-a-real-key");
    await c.page.getByRole("button", { name: "Sign in" }).click();
    await expect.poll(() => c.page.getByRole("alert").textContent()).toMatch(/API key|unauthenticated/i);
    await c.shot("signin-refused");
    await signIn(c.page, tenant.key);
    await c.page.getByRole("heading", { level: 1, name: "Overview" }).waitFor();
    expect(await c.page.evaluate(() => Object.keys(sessionStorage))).toContain("licensd.console.key");
    // A reload keeps the session (sessionStorage); a new tab of another context would not.
    await c.page.reload();
    await c.page.getByRole("heading", { level: 1, name: "Overview" }).waitFor();
    await c.page.getByRole("button", { name: "Sign out" }).click();
    await c.page.getByLabel("API key").waitFor();
    expect(await c.page.evaluate(() => sessionStorage.length)).toBe(0);
    expect(c.problems).toEqual([]);
    await c.context.close();
  });

  it("the super-admin picks a tenant first", async () => {
    const c = await openConsole(browser, server.url);
    await signIn(c.page, server.superAdminKey);
    await c.page.getByText("Pick a tenant above").waitFor();
    await c.page.getByLabel("Tenant").selectOption(tenant.id);
    await c.page.getByRole("heading", { level: 1, name: "Overview" }).waitFor();
    await c.page.getByTestId("licenses-active").waitFor();
    expect(c.problems).toEqual([]);
    await c.context.close();
  });
});

describe("overview", () => {
  it("counts the tenant's resources and shows audit events live as they commit", async () => {
    const c = await openConsole(browser, server.url);
    await signIn(c.page, tenant.key);
    await c.page.getByTestId("licenses-active").waitFor();
    await c.page.getByText("live", { exact: true }).waitFor();
    const licensing = connectClient(LicensingService, server.url, tenant.key);
    const { customer } = await licensing.createCustomer({ name: "Live Ltd", email: "live@example.com" });
    const item = c.page.locator('.events li[data-type="customer.created"]', { hasText: customer!.id });
    await item.waitFor({ timeout: 15_000 });
    await c.shot("overview");
    expect(c.problems).toEqual([]);
    await c.context.close();
  });

  it("is readable at 360 px: nothing wider than the screen", async () => {
    const c = await openConsole(browser, server.url, 360);
    await signIn(c.page, tenant.key);
    await c.page.getByTestId("licenses-active").waitFor();
    // (a string: this file is type-checked without the DOM's types)
    const width = await c.page.evaluate<number>("document.documentElement.scrollWidth");
    expect(width).toBeLessThanOrEqual(360);
    await c.shot("overview-360");
    await c.context.close();
  });
});

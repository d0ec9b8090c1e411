/**
 * One person's first session in the console, in one browser tab, page to page, the way
 * issue 23 tells it: sign in, create a product → a policy → a customer → a license, copy
 * the key, validate it with curl, suspend it and see the status change, and watch the
 * suspension arrive in the Overview's live audit feed. Everything through the UI; curl and
 * the API only to check.
 */
import type { Browser } from "playwright-core";
import { afterAll, beforeAll, expect, it } from "vitest";
import { ApiKeyScope } from "../../gen/ts/licensd/tenant/v1/api_key_pb.js";
import { TenantService } from "../../gen/ts/licensd/tenant/v1/tenant_service_pb.js";
import { connectClient } from "../support/app.js";
import { launchBrowser, openConsole, openSection, signIn } from "../support/console.js";
import { run, startServer, type ServerProcess } from "../support/server.js";

let server: ServerProcess & { dropDatabase(): Promise<void> };
let browser: Browser;
let key: string;

beforeAll(async () => {
  [server, browser] = await Promise.all([startServer(), launchBrowser()]);
  const admin = connectClient(TenantService, server.url, server.superAdminKey);
  const { tenant } = await admin.createTenant({ name: "Journey Co" });
  key = (await admin.createApiKey({ tenantId: tenant!.id, name: "me", scopes: [ApiKeyScope.ADMIN] })).secret;
}, 120_000);
afterAll(async () => {
  await browser?.close();
  await server?.stop();
  await server?.dropDatabase();
});

async function curlValidate(licenseKey: string) {
  const res = await run("curl", [
    "-s",
    "-X",
    "POST",
    `${server.url}/licensd.licensing.v1.LicensingService/ValidateLicense`,
    "-H",
    "content-type: application/json",
    "-d",
    JSON.stringify({ key: licenseKey }),
  ]);
  expect(res.code, res.stderr).toBe(0);
  return JSON.parse(res.stdout) as { valid?: boolean; code: string };
}

it("product → policy → customer → license, the key copied and validated with curl, suspended, seen live", async () => {
  const c = await openConsole(browser, server.url);
  const { page } = c;
  await signIn(page, key);

  await openSection(page, "Products");
  await page.getByRole("button", { name: "New product" }).click();
  const product = page.getByRole("form", { name: "New product" });
  await product.getByLabel("Code").fill("JRN");
  await product.getByLabel("Product name").fill("Journey App");
  await product.getByRole("button", { name: "Add feature" }).click();
  await product.getByRole("group", { name: "Feature 1" }).getByLabel("Name").fill("export");
  await product.getByRole("button", { name: "Create product" }).click();
  await page
    .getByRole("table", { name: "Products" })
    .getByRole("row", { name: /Journey App/ })
    .waitFor();

  await openSection(page, "Policies");
  await page.getByRole("button", { name: "New policy" }).click();
  const policy = page.getByRole("form", { name: "New policy" });
  await policy.getByLabel("Product", { exact: true }).selectOption({ label: "Journey App (JRN)" });
  await policy.getByLabel("Plan name").fill("standard");
  await policy.getByLabel("Duration (days)").fill("365");
  await policy.getByRole("button", { name: "Create policy" }).click();
  await page
    .getByRole("table", { name: "Policies" })
    .getByRole("row", { name: /standard/ })
    .waitFor();

  await openSection(page, "Customers");
  await page.getByRole("button", { name: "New customer" }).click();
  const customer = page.getByRole("form", { name: "New customer" });
  await customer.getByLabel("Name").fill("Grace Hopper");
  await customer.getByLabel("Email").fill("grace@example.com");
  await customer.getByRole("button", { name: "Create customer" }).click();
  await page.getByText("grace@example.com").first().waitFor();

  await openSection(page, "Licenses");
  await page.getByText("New license", { exact: true }).click();
  const license = page.getByRole("form", { name: "new license" });
  await license.getByLabel("Product").selectOption({ label: "Journey App (JRN)" });
  await expect.poll(() => license.getByLabel("Policy").inputValue()).toMatch(/^pol_/);
  await license.getByLabel("Customer").selectOption({ index: 1 });
  await page.getByRole("button", { name: "Create license" }).click();
  await page.getByText("it will not be shown again").waitFor();
  await page.getByRole("button", { name: "Copy key" }).click();
  await page.getByRole("button", { name: "Copied", exact: true }).waitFor();
  const licenseKey = String(await page.evaluate("navigator.clipboard.readText()"));
  expect(licenseKey).toMatch(/^JRN-/);
  expect(await curlValidate(licenseKey)).toMatchObject({ valid: true, code: "VALIDATION_CODE_VALID" });

  await page.getByRole("link", { name: "Open the license" }).click();
  await expect.poll(() => page.getByTestId("license-status").textContent()).toBe("active");
  const licenseId = /#\/licenses\/(lic_\w+)/.exec(page.url())![1]!;

  // A second tab on the Overview watches the live feed while the first suspends the license.
  const watcher = await c.context.newPage();
  // Its tail reaches the server late (as on a slow network): "live" must still mean nothing committed after it is
  // missed.
  await watcher.route("**/licensd.audit.v1.AuditService/TailAuditEvents", async (route) => {
    await new Promise((r) => setTimeout(r, 1500));
    await route.continue();
  });
  await watcher.goto(`${server.url}/console/`);
  await signIn(watcher, key); // (sessionStorage is per tab)
  await watcher.getByText("live", { exact: true }).waitFor();
  await page.getByRole("button", { name: "Suspend" }).click();
  await expect.poll(() => page.getByTestId("license-status").textContent()).toBe("suspended");
  await watcher.locator('.events li[data-type="license.suspended"]', { hasText: licenseId }).waitFor();
  const refused = await curlValidate(licenseKey);
  expect(refused.valid ?? false).toBe(false);
  expect(refused.code).toBe("VALIDATION_CODE_SUSPENDED");
  await c.shot("journey-suspended");
  expect(c.problems).toEqual([]);
  await c.context.close();
});

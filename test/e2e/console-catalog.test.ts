/**
 * The console's Products, Policies and Customers pages in a real browser (Debian's
 * Chromium through playwright-core) against a real server, used as a person would: by
 * labels and roles. Every change is checked through the API as well. Screenshots go to
 * test/e2e/screenshots/ (not committed).
 */
import type { Browser } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LicensingService } from "../../gen/ts/licensd/licensing/v1/licensing_service_pb.js";
import {
  ComponentMatchingStrategy,
  ExpirationBasis,
  HeartbeatBasis,
  ProcessLeasingStrategy,
  MachineUniquenessScope,
  RenewalBasis,
  TransferStrategy,
} from "../../gen/ts/licensd/licensing/v1/policy_pb.js";
import { ApiKeyScope } from "../../gen/ts/licensd/tenant/v1/api_key_pb.js";
import { TenantService } from "../../gen/ts/licensd/tenant/v1/tenant_service_pb.js";
import { connectClient } from "../support/app.js";
import { type ConsolePage, launchBrowser, openConsole, openSection, signIn } from "../support/console.js";
import { type ServerProcess, startServer } from "../support/server.js";

let server: ServerProcess & { dropDatabase(): Promise<void> };
let browser: Browser;
let tenant: { id: string; key: string };
let api: ReturnType<typeof connectClient<typeof LicensingService>>;

beforeAll(async () => {
  [server, browser] = await Promise.all([startServer(), launchBrowser()]);
  const admin = connectClient(TenantService, server.url, server.superAdminKey);
  const { tenant: t } = await admin.createTenant({ name: "Catalog Co" });
  const { secret } = await admin.createApiKey({ tenantId: t!.id, name: "console", scopes: [ApiKeyScope.ADMIN] });
  tenant = { id: t!.id, key: secret };
  api = connectClient(LicensingService, server.url, secret);
}, 120_000);
afterAll(async () => {
  await browser?.close();
  await server?.stop();
  await server?.dropDatabase();
});

/** The alert's text once one shows. */
const alertText = async (c: ConsolePage) => {
  const alert = c.page.getByRole("alert");
  await alert.waitFor();
  return (await alert.textContent()) ?? "";
};

describe("catalog pages", () => {
  it("products: create with two features, a refused code changes nothing, edit", async () => {
    const c = await openConsole(browser, server.url);
    const { page } = c;
    await signIn(page, tenant.key);
    await openSection(page, "Products");
    await page.getByText("No products yet — create one to define features and plans").waitFor();
    await c.shot("products-empty");

    await page.getByRole("button", { name: "New product" }).click();
    const form = page.getByRole("form", { name: "New product" });
    await form.getByLabel("Code").fill("CAT");
    await form.getByLabel("Product name").fill("Catalog App");
    await form.getByRole("button", { name: "Add feature" }).click();
    await form.getByRole("button", { name: "Add feature" }).click();
    const f1 = form.getByRole("group", { name: "Feature 1" });
    await f1.getByLabel("Name").fill("reports");
    await f1.getByLabel("Description").fill("PDF reports");
    const f2 = form.getByRole("group", { name: "Feature 2" });
    await f2.getByLabel("Name").fill("seats");
    await f2.getByLabel("Kind").selectOption({ label: "Limit (a number)" });
    // Picking a kind picks the strategy that fits it: limits add up.
    expect(await f2.getByLabel("Across licenses").inputValue()).toBe("1");
    await c.shot("products-new");
    await form.getByRole("button", { name: "Create product" }).click();
    const row = page.getByRole("table", { name: "Products" }).getByRole("row", { name: /Catalog App/ });
    await row.waitFor();
    expect(await row.textContent()).toContain("reports, seats");

    const { products } = await api.listProducts({});
    expect(products).toHaveLength(1);
    expect(products[0]!.code).toBe("CAT");
    expect(products[0]!.features.map((f) => [f.name, f.kind, f.compose, f.description])).toEqual([
      ["reports", 1, 3, "PDF reports"],
      ["seats", 2, 1, ""],
    ]);

    // A code the server refuses: its message names the field, and nothing is created.
    await page.getByRole("button", { name: "New product" }).click();
    const bad = page.getByRole("form", { name: "New product" });
    await bad.getByLabel("Code").fill("ab");
    await bad.getByLabel("Product name").fill("Bad One");
    await bad.getByRole("button", { name: "Create product" }).click();
    expect(await alertText(c)).toMatch(/code/);
    await c.shot("products-refused");
    // The same code twice: refused too, by name.
    await bad.getByLabel("Code").fill("CAT");
    await bad.getByRole("button", { name: "Create product" }).click();
    await expect.poll(() => alertText(c)).toMatch(/code: product code CAT is already used/);
    expect((await api.listProducts({})).products).toHaveLength(1);
    await bad.getByRole("button", { name: "Cancel" }).click();

    // Edit: rename, describe the second feature; the detail page shows it.
    await page.getByRole("link", { name: "Catalog App" }).click();
    await page.getByRole("heading", { level: 1, name: "Product Catalog App" }).waitFor();
    expect(page.url()).toContain(`#/products/${products[0]!.id}`);
    await page.getByRole("button", { name: "Edit product" }).click();
    const edit = page.getByRole("form", { name: "Edit product" });
    await edit.getByLabel("Product name").fill("Catalog Pro");
    await edit.getByRole("group", { name: "Feature 2" }).getByLabel("Description").fill("Concurrent seats");
    await edit.getByRole("button", { name: "Save product" }).click();
    await page.getByRole("heading", { level: 1, name: "Product Catalog Pro" }).waitFor();
    await page.getByText("Concurrent seats").waitFor();
    await page.getByText("No policies for this product yet").waitFor();
    await c.shot("product-detail");
    const { product } = await api.getProduct({ id: products[0]!.id });
    expect(product!.name).toBe("Catalog Pro");
    expect(product!.code).toBe("CAT");
    expect(product!.features.map((f) => f.description)).toEqual(["PDF reports", "Concurrent seats"]);
    expect(c.problems).toEqual([]);
    await c.context.close();
  });

  it("policies: create one for the product with entitlements, then edit it", async () => {
    const c = await openConsole(browser, server.url);
    const { page } = c;
    await signIn(page, tenant.key);
    await openSection(page, "Policies");
    await page.getByText("No policies yet").waitFor();
    await page.getByRole("button", { name: "New policy" }).click();
    const form = page.getByRole("form", { name: "New policy" });
    await form.getByLabel("Product", { exact: true }).selectOption({ label: "Catalog Pro (CAT)" });
    await form.getByLabel("Plan name").fill("pro");
    await form.getByLabel("Duration (days)").fill("30");
    await form.getByLabel("Max machines").fill("3");
    await form.getByLabel("Heartbeat every (minutes)").fill("10");
    await form.getByLabel("Floating").check();
    await form.getByRole("button", { name: "Add entitlement" }).click();
    await form.getByRole("button", { name: "Add entitlement" }).click();
    // Every feature is used: no third row to add.
    expect(await form.getByRole("button", { name: "Add entitlement" }).count()).toBe(0);
    const e1 = form.getByRole("group", { name: "Entitlement 1" });
    expect(await e1.getByLabel("Feature").inputValue()).toBe("reports");
    expect(await e1.getByLabel("Enabled").isChecked()).toBe(true);
    const e2 = form.getByRole("group", { name: "Entitlement 2" });
    expect(await e2.getByLabel("Feature").inputValue()).toBe("seats");
    await e2.getByLabel("Limit").fill("5");
    await c.shot("policies-new");
    await form.getByRole("button", { name: "Create policy" }).click();
    const row = page.getByRole("table", { name: "Policies" }).getByRole("row", { name: /pro/ });
    await row.waitFor();
    expect(await row.textContent()).toContain("reports: on, seats: 5");

    const { policies } = await api.listPolicies({});
    expect(policies).toHaveLength(1);
    const p = policies[0]!;
    expect(p.name).toBe("pro");
    expect(p.duration?.seconds).toBe(30n * 86_400n);
    expect(p.heartbeatDuration?.seconds).toBe(600n);
    expect(p.maxMachines).toBe(3);
    expect(p.floating).toBe(true);
    expect(p.entitlements.map((e) => [e.feature, e.value.case, e.value.value])).toEqual([
      ["reports", "enabled", true],
      ["seats", "limit", 5n],
    ]);

    await page.getByRole("link", { name: "pro", exact: true }).click();
    await page.getByRole("heading", { level: 1, name: "Policy pro" }).waitFor();
    await page.getByRole("button", { name: "Edit policy" }).click();
    const edit = page.getByRole("form", { name: "Edit policy" });
    await edit.getByLabel("Max machines").fill("5");
    await edit.getByLabel("Max users").fill("2");
    await edit.getByLabel(/^Require a user/).check();
    await edit.getByLabel("Max processes").fill("4");
    await edit.getByLabel("Processes counted").selectOption({ label: "Per license (all its machines)" });
    await edit.getByLabel("Machine components").selectOption({ label: "Match most (more than half)" });
    await edit.getByLabel(/^Require components/).check();
    await edit.getByRole("group", { name: "Entitlement 2" }).getByLabel("Limit").fill("8");
    await edit.getByRole("button", { name: "Save policy" }).click();
    await page.getByRole("button", { name: "Edit policy" }).waitFor();
    await page.getByText("seats: 8").waitFor();
    await c.shot("policy-detail");
    const { policy } = await api.getPolicy({ id: p.id });
    expect(policy!.maxMachines).toBe(5);
    expect(policy!.maxUsers).toBe(2);
    expect(policy!.requireUserScope).toBe(true);
    expect([policy!.maxProcesses, ProcessLeasingStrategy[policy!.processLeasingStrategy]]).toEqual([4, "PER_LICENSE"]);
    expect(policy!.processHeartbeatDuration).toBeUndefined();
    expect(await page.getByTestId("policy-max-processes").textContent()).toBe("4 per license");
    expect(p.requireUserScope).toBe(false); // the default, as before
    expect(policy!.componentMatchingStrategy).toBe(ComponentMatchingStrategy.MATCH_MOST);
    expect(policy!.requireComponentsScope).toBe(true);
    expect(p.componentMatchingStrategy).toBe(ComponentMatchingStrategy.MATCH_ANY); // the default
    await expect
      .poll(() => page.getByTestId("policy-components").textContent())
      .toBe("Match most (more than half); required");
    expect(policy!.entitlements.map((e) => e.value.value)).toEqual([true, 8n]);
    // Unchanged fields kept: only the mask's fields were sent as changes.
    expect(policy!.duration?.seconds).toBe(30n * 86_400n);
    expect(policy!.floating).toBe(true);
    expect(c.problems).toEqual([]);
    await c.context.close();
  });

  it("customers: create with metadata, see it listed, delete it after confirming", async () => {
    const c = await openConsole(browser, server.url);
    const { page } = c;
    await signIn(page, tenant.key);
    await openSection(page, "Customers");
    await page.getByText("No customers yet").waitFor();
    await page.getByRole("button", { name: "New customer" }).click();
    const form = page.getByRole("form", { name: "New customer" });
    await form.getByLabel("Name").fill("Ada Lovelace");
    await form.getByLabel("Email").fill("ada@example.com");
    await form.getByLabel("Organization").fill("Analytical Engines");
    await form.getByRole("button", { name: "Add metadata" }).click();
    const m1 = form.getByRole("group", { name: "Metadata 1" });
    await m1.getByLabel("Key").fill("crm");
    await m1.getByLabel("Value").fill("42");
    await form.getByRole("button", { name: "Create customer" }).click();
    const row = page.getByRole("table", { name: "Customers" }).getByRole("row", { name: /Ada Lovelace/ });
    await row.waitFor();
    expect(await row.textContent()).toContain("ada@example.com");
    await c.shot("customers-list");
    const { customers } = await api.listCustomers({});
    expect(customers.map((x) => [x.name, x.email, x.organization, x.metadata])).toEqual([
      ["Ada Lovelace", "ada@example.com", "Analytical Engines", { crm: "42" }],
    ]);

    await page.getByRole("link", { name: "Ada Lovelace" }).click();
    await page.getByRole("heading", { level: 1, name: "Customer Ada Lovelace" }).waitFor();
    await page.getByRole("button", { name: "Delete customer Ada Lovelace" }).click();
    // The first click only asks; Cancel keeps the customer.
    await page.getByRole("button", { name: "Cancel" }).click();
    expect((await api.listCustomers({})).customers).toHaveLength(1);
    await page.getByRole("button", { name: "Delete customer Ada Lovelace" }).click();
    await c.shot("customer-delete-confirm");
    await page.getByRole("button", { name: "Yes, delete customer Ada Lovelace" }).click();
    await page.getByRole("heading", { level: 1, name: "Customers" }).waitFor();
    await page.getByText("No customers yet").waitFor();
    expect((await api.listCustomers({})).customers).toHaveLength(0);
    expect(c.problems).toEqual([]);
    await c.context.close();
  });

  it("pages through a long list with page tokens", async () => {
    for (let i = 0; i < 55; i++) {
      await api.createCustomer({ name: `Bulk ${String(i).padStart(2, "0")}`, email: `bulk${i}@example.com` });
    }
    const c = await openConsole(browser, server.url);
    const { page } = c;
    await signIn(page, tenant.key);
    await openSection(page, "Customers");
    const rows = page.getByRole("table", { name: "Customers" }).locator("tbody tr");
    await page.getByRole("link", { name: "Bulk 49" }).waitFor();
    expect(await rows.count()).toBe(50);
    await page.getByRole("button", { name: "Next →" }).click();
    await page.getByRole("link", { name: "Bulk 54" }).waitFor();
    expect(await rows.count()).toBe(5);
    expect(await page.getByRole("button", { name: "Next →" }).isDisabled()).toBe(true);
    await page.getByRole("button", { name: "← Previous" }).click();
    await page.getByRole("link", { name: "Bulk 00" }).waitFor();
    expect(await rows.count()).toBe(50);
    expect(c.problems).toEqual([]);
    await c.context.close();
  });

  it("the super-admin sees the picked tenant's catalog", async () => {
    const c = await openConsole(browser, server.url);
    await signIn(c.page, server.superAdminKey);
    await c.page.getByLabel("Tenant").selectOption(tenant.id);
    await openSection(c.page, "Products");
    await c.page.getByRole("link", { name: "Catalog Pro" }).click();
    await c.page.getByRole("heading", { level: 1, name: "Product Catalog Pro" }).waitFor();
    // The product's policies, linked from its page.
    await c.page.getByRole("link", { name: "pro", exact: true }).click();
    await c.page.getByRole("heading", { level: 1, name: "Policy pro" }).waitFor();
    expect(c.problems).toEqual([]);
    await c.context.close();
  });

  it("policies: the basis strategies are chosen in the form and shown", async () => {
    const c = await openConsole(browser, server.url);
    const { page } = c;
    await signIn(page, tenant.key);
    await openSection(page, "Policies");
    await page.getByRole("link", { name: "pro", exact: true }).click();
    await page.getByRole("heading", { level: 1, name: "Policy pro" }).waitFor();
    expect(await page.getByTestId("policy-expiration-basis").textContent()).toBe("At creation");
    await page.getByRole("button", { name: "Edit policy" }).click();
    const edit = page.getByRole("form", { name: "Edit policy" });
    await edit.getByLabel("Expiry starts").selectOption({ label: "At the first activation" });
    await edit.getByLabel("Heartbeats required").selectOption({ label: "From the first heartbeat" });
    await edit.getByLabel("Renewal extends").selectOption({ label: "From now" });
    await edit.getByLabel("On transfer").selectOption({ label: "Start the expiry again" });
    await edit.getByRole("button", { name: "Save policy" }).click();
    await page.getByRole("button", { name: "Edit policy" }).waitFor();
    await page.getByTestId("policy-expiration-basis").getByText("At the first activation").waitFor();
    const { policies } = await api.listPolicies({});
    const { policy } = await api.getPolicy({ id: policies.find((p) => p.name === "pro")!.id });
    expect(policy).toMatchObject({
      expirationBasis: ExpirationBasis.FROM_FIRST_ACTIVATION,
      heartbeatBasis: HeartbeatBasis.FROM_FIRST_HEARTBEAT,
      renewalBasis: RenewalBasis.FROM_NOW,
      transferStrategy: TransferStrategy.RESET_EXPIRY,
    });
    // Unchanged fields kept.
    expect(policy!.maxMachines).toBe(5);
    expect(c.problems).toEqual([]);
    await c.context.close();
  });

  it("policies: the machine uniqueness scope and max cores are set in the form and shown", async () => {
    const c = await openConsole(browser, server.url);
    const { page } = c;
    await signIn(page, tenant.key);
    await openSection(page, "Policies");
    await page.getByRole("link", { name: "pro", exact: true }).click();
    await page.getByRole("heading", { level: 1, name: "Policy pro" }).waitFor();
    expect(await page.getByTestId("policy-machine-uniqueness").textContent()).toBe("Unique per license");
    expect(await page.getByTestId("policy-max-cores").textContent()).toBe("unlimited");
    await page.getByRole("button", { name: "Edit policy" }).click();
    const edit = page.getByRole("form", { name: "Edit policy" });
    await edit.getByLabel("Machine fingerprint").selectOption({ label: "Unique per product" });
    await edit.getByLabel("Max cores", { exact: true }).fill("32");
    await edit.getByRole("button", { name: "Save policy" }).click();
    await page.getByRole("button", { name: "Edit policy" }).waitFor();
    await page.getByTestId("policy-machine-uniqueness").getByText("Unique per product").waitFor();
    expect(await page.getByTestId("policy-max-cores").textContent()).toBe("32");
    const { policies } = await api.listPolicies({});
    const { policy } = await api.getPolicy({ id: policies.find((p) => p.name === "pro")!.id });
    expect(policy).toMatchObject({ machineUniquenessScope: MachineUniquenessScope.PRODUCT, maxCores: 32 });
    expect(policy!.maxMachines).toBe(5);
    expect(c.problems).toEqual([]);
    await c.context.close();
  });

  it("is readable at 360 px: the policy form fits the screen", async () => {
    const c = await openConsole(browser, server.url, 360);
    await signIn(c.page, tenant.key);
    await openSection(c.page, "Policies");
    await c.page.getByRole("button", { name: "New policy" }).click();
    await c.page.getByRole("button", { name: "Add entitlement" }).click();
    // A string: the test's tsconfig has no DOM types.
    const width = await c.page.evaluate<number>("document.documentElement.scrollWidth");
    expect(width).toBeLessThanOrEqual(360);
    await c.shot("policies-360");
    expect(c.problems).toEqual([]);
    await c.context.close();
  });
});

/**
 * The console's Usage and Anomalies pages in a real browser (Debian's Chromium through
 * playwright-core) against a real server. Everything is set up through the API: a product
 * with a `tokens` meter, a policy with a 5000-token limit, a license; six days of usage
 * recorded with past event times (the API takes events up to 7 days old), the last day
 * ten times the others, then DetectAnomalies scores that day (yesterday) as the server
 * would after the day closed. Screenshots go to test/e2e/screenshots/ (not committed).
 */
import { timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { Browser } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LicensingService } from "../../gen/ts/licensd/licensing/v1/licensing_service_pb.js";
import { OverageStrategy } from "../../gen/ts/licensd/licensing/v1/policy_pb.js";
import { ComposeStrategy, FeatureKind } from "../../gen/ts/licensd/licensing/v1/product_pb.js";
import { ApiKeyScope } from "../../gen/ts/licensd/tenant/v1/api_key_pb.js";
import { TenantService } from "../../gen/ts/licensd/tenant/v1/tenant_service_pb.js";
import { Aggregation, Severity } from "../../gen/ts/licensd/usage/v1/usage_pb.js";
import { ResolutionFilter, UsageService } from "../../gen/ts/licensd/usage/v1/usage_service_pb.js";
import { connectClient } from "../support/app.js";
import { launchBrowser, openConsole, openSection, signIn } from "../support/console.js";
import { startServer, type ServerProcess } from "../support/server.js";

const DAY = 86_400_000;
const LIMIT = 5000n;
/** Quantities for 6, 5, 4, 3 and 2 days ago (the baseline), yesterday (the spike), and today. */
const DAILY = [100n, 110n, 90n, 105n, 95n, 1000n, 42n];

let server: ServerProcess & { dropDatabase(): Promise<void> };
let browser: Browser;
let key: string;
let licenseId: string;
let usage: ReturnType<typeof connectClient<typeof UsageService>>;
let events: { time: Date; quantity: bigint }[];

beforeAll(async () => {
  [server, browser] = await Promise.all([startServer(), launchBrowser()]);
  const admin = connectClient(TenantService, server.url, server.superAdminKey);
  const { tenant } = await admin.createTenant({ name: "Usage Console Co" });
  key = (await admin.createApiKey({ tenantId: tenant!.id, name: "console", scopes: [ApiKeyScope.ADMIN] })).secret;
  const licensing = connectClient(LicensingService, server.url, key);
  const { product } = await licensing.createProduct({
    code: "AGT",
    name: "Agents",
    features: [{ name: "tokens", kind: FeatureKind.LIMIT, compose: ComposeStrategy.SUM }],
  });
  usage = connectClient(UsageService, server.url, key);
  await usage.createMeter({
    productId: product!.id,
    metric: "tokens",
    aggregation: Aggregation.SUM,
    description: "model tokens",
  });
  const { policy } = await licensing.createPolicy({
    productId: product!.id,
    name: "pro",
    overageStrategy: OverageStrategy.NO_OVERAGE,
    entitlements: [{ feature: "tokens", value: { case: "limit", value: LIMIT } }],
  });
  const { customer } = await licensing.createCustomer({ name: "Ann", email: "ann@example.com" });
  const created = await licensing.createLicense({ policyId: policy!.id, customerId: customer!.id });
  licenseId = created.license!.id;
  // Event times one day apart ending now; the oldest is 6 days old, within the API's 7.
  const now = Date.now();
  events = DAILY.map((quantity, i) => ({ time: new Date(now - (DAILY.length - 1 - i) * DAY), quantity }));
  for (const [i, e] of events.entries()) {
    const r = await usage.recordUsage({
      event: {
        licenseKey: created.key,
        metric: "tokens",
        quantity: e.quantity,
        time: timestampFromDate(e.time),
        idempotencyKey: `day-${i}`,
        agentId: "coder",
      },
    });
    expect(r.duplicate).toBe(false);
  }
  // Yesterday's 1000 against a baseline of about 100: a critical anomaly (unset day = yesterday).
  const { anomalies } = await usage.detectAnomalies({});
  expect(anomalies.map((a) => [a.licenseId, a.metric, a.value, Severity[a.severity]])).toEqual([
    [licenseId, "tokens", 1000n, "CRITICAL"],
  ]);
}, 120_000);
afterAll(async () => {
  await browser?.close();
  await server?.stop();
  await server?.dropDatabase();
});

const thisMonth = (d: Date) => d.toISOString().slice(0, 7) === new Date().toISOString().slice(0, 7);
const en = (n: bigint) => n.toLocaleString("en-US");

describe("usage page", () => {
  it("charts the license's daily usage with uPlot and shows the quota bar with the API's numbers", async () => {
    const c = await openConsole(browser, server.url);
    await signIn(c.page, key);
    // Overview: today's usage over the tenant's customers (only today's event).
    await expect.poll(() => c.page.getByTestId("usage-today").textContent()).toMatch(/^42\s*tokens$/);
    await openSection(c.page, "Usage");
    await expect(c.page.getByLabel("License").inputValue()).resolves.toBe(licenseId);
    await expect(c.page.getByLabel("Metric").inputValue()).resolves.toBe("tokens");
    const chart = c.page.getByTestId("usage-chart");
    await chart.locator("canvas").waitFor();
    expect(await chart.locator(".u-legend").textContent()).toContain("tokens");
    const total = DAILY.reduce((a, b) => a + b, 0n);
    expect(await c.page.getByTestId("usage-total").textContent()).toBe(en(total));
    // The quota: used this month (the month may have begun within the six days) of 5000.
    const used = events.filter((e) => thisMonth(e.time)).reduce((a, e) => a + e.quantity, 0n);
    const { limits } = await usage.getQuota({ licenseId });
    expect(limits.map((l) => [l.metric, l.used, l.limit])).toEqual([["tokens", used, LIMIT]]);
    const pct = Math.round((Number(used) / Number(LIMIT)) * 100);
    expect(await c.page.getByTestId("quota-text-tokens").textContent()).toBe(
      `${en(used)} of ${en(LIMIT)} used (${pct}%)`,
    );
    const bar = c.page.locator('li.quota[data-metric="tokens"] meter');
    expect(await bar.getAttribute("value")).toBe(String(used));
    expect(await bar.getAttribute("max")).toBe(String(LIMIT));
    await c.page.getByRole("table", { name: "meters" }).getByText("model tokens").waitFor();
    await c.shot("usage");

    // A range with no usage says so; the chart goes away.
    const yearAgo = new Date(Date.now() - 365 * DAY).toISOString().slice(0, 10);
    await c.page.getByLabel("To (UTC day, included)").fill(yearAgo);
    await c.page.getByLabel("From (UTC day)").fill(yearAgo);
    await c.page.getByText("No tokens recorded for this license").waitFor();
    expect(await chart.count()).toBe(0);
    expect(c.problems).toEqual([]);
    await c.context.close();
  });

  it("is readable at 360 px: the chart fits the screen", async () => {
    const c = await openConsole(browser, server.url, 360);
    await signIn(c.page, key);
    await c.page.goto(`${server.url}/console/#/usage/${licenseId}`);
    const canvas = c.page.getByTestId("usage-chart").locator("canvas");
    await canvas.waitFor();
    const box = await canvas.boundingBox();
    expect(box!.width).toBeLessThanOrEqual(360);
    expect(await c.page.evaluate<number>("document.documentElement.scrollWidth")).toBeLessThanOrEqual(360);
    await c.page.getByTestId("quota-text-tokens").waitFor();
    await c.shot("usage-360");
    expect(c.problems).toEqual([]);
    await c.context.close();
  });
});

describe("anomalies page", () => {
  it("lists the unresolved anomaly; resolving it with a note (from the keyboard) takes it off the list", async () => {
    const c = await openConsole(browser, server.url);
    await signIn(c.page, key);
    await openSection(c.page, "Anomalies");
    expect(await c.page.getByLabel("Status").inputValue()).toBe(String(ResolutionFilter.UNRESOLVED));
    const table = c.page.getByRole("table", { name: "anomalies" });
    const row = table.getByRole("row").filter({ hasText: licenseId });
    await row.waitFor();
    expect(await row.textContent()).toMatch(/tokens.*1,000.*critical.*unresolved/);
    // Filters: a license id narrows the list; critical still shows it.
    await c.page.getByLabel("Severity").selectOption(String(Severity.CRITICAL));
    await c.page.getByLabel("License").fill(licenseId);
    await c.page.getByRole("button", { name: "Apply" }).click();
    await row.waitFor();
    await c.shot("anomalies");

    const yesterday = new Date(Date.now() - DAY).toISOString().slice(0, 10);
    await row.getByRole("button", { name: `Resolve tokens on ${yesterday} for ${licenseId}` }).focus();
    await c.page.keyboard.press("Enter");
    const note = c.page.getByLabel("Note");
    await expect.poll(() => c.page.evaluate<string>("document.activeElement.id")).toBe("resolve-note");
    await c.page.keyboard.type("customer ran a migration");
    expect(await note.inputValue()).toBe("customer ran a migration");
    await c.page.keyboard.press("Tab");
    await c.page.keyboard.press("Enter");
    await c.page.getByText("No anomalies match these filters").waitFor();
    expect(await table.count()).toBe(0);

    // The API agrees: no unresolved anomaly; the resolved one carries the note.
    expect((await usage.listAnomalies({ resolution: ResolutionFilter.UNRESOLVED })).anomalies).toEqual([]);
    const resolved = (await usage.listAnomalies({ resolution: ResolutionFilter.RESOLVED })).anomalies;
    expect(resolved.map((a) => [a.licenseId, a.resolved, a.resolutionNote])).toEqual([
      [licenseId, true, "customer ran a migration"],
    ]);
    expect(timestampDate(resolved[0]!.resolveTime!).getTime()).toBeGreaterThan(Date.now() - 60_000);
    await c.page.getByLabel("Status").selectOption(String(ResolutionFilter.RESOLVED));
    await row.getByText("customer ran a migration").waitFor();
    await c.shot("anomalies-resolved");

    // With no filter left, an unresolved-only tenant list is empty and says what happens next.
    await c.page.getByLabel("Severity").selectOption(String(Severity.UNSPECIFIED));
    await c.page.getByLabel("Status").selectOption(String(ResolutionFilter.UNRESOLVED));
    await c.page.getByLabel("License").fill("");
    await c.page.getByRole("button", { name: "Apply" }).click();
    await c.page.getByText("no unresolved anomalies").waitFor();
    expect(c.problems).toEqual([]);
    await c.context.close();
  });
});

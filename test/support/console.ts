import { existsSync, mkdirSync } from "node:fs";
import path from "node:path";
import { type Browser, type BrowserContext, chromium, type Page } from "playwright-core";
import { ROOT } from "./server.js";

/** Debian's Chromium (scripts/ensure-test-deps.sh installs it), driven headless by playwright-core. */
export const CHROMIUM = ["/usr/bin/chromium", "/usr/bin/chromium-browser"].find((p) => existsSync(p));

export const SCREENSHOTS = path.join(ROOT, "test", "e2e", "screenshots");

export async function launchBrowser(): Promise<Browser> {
  if (!CHROMIUM) throw new Error("no chromium on this machine: run scripts/ensure-test-deps.sh");
  return chromium.launch({
    executablePath: CHROMIUM,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
  });
}

export interface ConsolePage {
  page: Page;
  context: BrowserContext;
  /** Content-Security-Policy violations and page errors seen so far: a test expects none. */
  problems: string[];
  shot(name: string): Promise<void>;
}

/** A fresh browser context (its own sessionStorage) on the console, clipboard allowed. */
export async function openConsole(browser: Browser, baseUrl: string, width = 1280): Promise<ConsolePage> {
  const context = await browser.newContext({
    viewport: { width, height: 900 },
    permissions: ["clipboard-read", "clipboard-write"],
  });
  const page = await context.newPage();
  const problems: string[] = [];
  page.on("pageerror", (err) => problems.push(`page error: ${err.message}`));
  page.on("console", (msg) => {
    if (msg.type() === "error" && /Content Security Policy|Refused to/i.test(msg.text())) problems.push(msg.text());
  });
  await page.goto(`${baseUrl}/console/`);
  return {
    page,
    context,
    problems,
    async shot(name) {
      mkdirSync(SCREENSHOTS, { recursive: true });
      await page.screenshot({ path: path.join(SCREENSHOTS, `${name}.png`), fullPage: true });
    },
  };
}

/** Signs in with `key` through the form, as a person would (by the field's label). */
export async function signIn(page: Page, key: string) {
  await page.getByLabel("API key").fill(key);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("button", { name: "Sign out" }).waitFor();
}

/** Opens a section from the navigation. */
export async function openSection(page: Page, title: string) {
  await page.getByRole("navigation", { name: "sections" }).getByRole("link", { name: title, exact: true }).click();
  await page.getByRole("heading", { level: 1, name: title }).waitFor();
}

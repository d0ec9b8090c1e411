/*
 * The verifiers run outside Node 22 and without Node APIs: the package's entry point,
 * bundled by esbuild for the browser, passes docs/test-vectors.json in headless Chromium
 * (WebCrypto's Ed25519 on an https-like page; @noble/curves on a plain-http page, where
 * browsers give no crypto.subtle) and under the machine's Node 20.
 */
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import os from "node:os";
import path from "node:path";
import { build } from "esbuild";
import { chromium, type Browser } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

const RUNNER = path.join(import.meta.dirname, "portable", "run-vectors.ts");
const NODE20 = "/usr/bin/node";
const CHROMIUM = ["/usr/bin/chromium", "/usr/bin/chromium-browser"].find((p) => existsSync(p));

interface Report {
  backend: string;
  secureContext: boolean | undefined;
  checked: number;
  failures: string[];
}

/** The runner and everything it imports as one script; `platform: "browser"` refuses Node built-ins. */
async function bundle(): Promise<{ text: string; inputs: string[] }> {
  const out = await build({
    entryPoints: [RUNNER],
    bundle: true,
    write: false,
    platform: "browser",
    format: "iife",
    globalName: "licensdVectors",
    target: "es2022",
    logLevel: "silent",
    metafile: true,
  });
  return { text: out.outputFiles[0]!.text, inputs: Object.keys(out.metafile.inputs) };
}

let browser: Browser | undefined;
let server: Server | undefined;
let script = "";
let inputs: string[] = [];

beforeAll(async () => {
  ({ text: script, inputs } = await bundle());
  if (!CHROMIUM) return;
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-dev-shm-usage"],
  });
  // One page, served over plain HTTP to whoever asks.
  server = createServer((_, res) => {
    res.writeHead(200, { "content-type": "text/html" });
    res.end(`<!doctype html><script>${script.replace(/<\/script/gi, "<\\/script")}</script>`);
  });
  await new Promise<void>((resolve) => server!.listen(0, "0.0.0.0", resolve));
});
afterAll(async () => {
  await browser?.close();
  await new Promise((resolve) => (server ? server.close(resolve) : resolve(undefined)));
});

async function inChromium(url: string): Promise<Report> {
  const page = await browser!.newPage();
  try {
    await page.goto(url);
    return (await page.evaluate("licensdVectors.runVectors()")) as Report;
  } finally {
    await page.close();
  }
}

const port = () => (server!.address() as { port: number }).port;
/** An address of this machine that is not loopback: a page from it is not a secure context. */
const lanAddress = () =>
  Object.values(os.networkInterfaces())
    .flat()
    .find((a) => a?.family === "IPv4" && !a.internal)?.address;

describe("portability", () => {
  it("the bundle has no Node built-ins and nothing of the server in it", () => {
    expect(script.length).toBeGreaterThan(1000);
    expect(script).not.toMatch(/require\(["']node:|from ["']node:/);
    // Paths are relative to the repository: the package, its dependencies and the vectors only.
    const outside = inputs.filter((i) => !/^(clients\/ts\/|node_modules\/)/.test(i) && i !== "docs/test-vectors.json");
    expect(outside).toEqual([]);
    expect(inputs.filter((i) => i.startsWith("clients/ts/src/verify/")).length).toBeGreaterThan(5);
  });

  it.skipIf(!CHROMIUM)("passes every vector in headless Chromium, with WebCrypto's Ed25519", async () => {
    // localhost is a secure context: crypto.subtle is there.
    const r = await inChromium(`http://127.0.0.1:${port()}/`);
    expect(r.failures).toEqual([]);
    expect(r).toMatchObject({ backend: "webcrypto", secureContext: true });
    expect(r.checked).toBeGreaterThan(100);
  });

  it.skipIf(!CHROMIUM || !lanAddress())(
    "passes every vector in Chromium on a plain-http page (no crypto.subtle), with @noble/curves",
    async () => {
      const r = await inChromium(`http://${lanAddress()}:${port()}/`);
      expect(r.failures).toEqual([]);
      expect(r).toMatchObject({ backend: "noble", secureContext: false });
    },
  );

  it.skipIf(!existsSync(NODE20))("passes every vector under the machine's Node (20)", async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), "licensd-client-"));
    const file = path.join(dir, "vectors.mjs");
    writeFileSync(file, `${script}\nconsole.log(JSON.stringify(await licensdVectors.runVectors()));\n`);
    const version = spawnSync(NODE20, ["--version"], { encoding: "utf8" }).stdout.trim();
    const res = spawnSync(NODE20, [file], { encoding: "utf8" });
    expect(res.status, res.stderr).toBe(0);
    const r = JSON.parse(res.stdout) as Report;
    expect({ version: version.split(".")[0], failures: r.failures }).toEqual({ version: "v20", failures: [] });
    expect(r.checked).toBeGreaterThan(100);
  });
});

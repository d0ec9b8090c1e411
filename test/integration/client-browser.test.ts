/*
 * createLicensdClient in a browser: the "@licensd/client" entry point, bundled by esbuild
 * for the browser (no Node built-ins), runs in headless Chromium over Connect and gRPC-Web
 * against a real licensd. licensd sends no CORS headers, so the page's own server serves
 * the page and relays everything else to licensd, as a same-origin reverse proxy would.
 */
import { existsSync } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { build } from "esbuild";
import { type Browser, chromium } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connectClient, startTestApp, type TestApp } from "../support/app.js";
import { ApiKeyScope } from "../../gen/ts/licensd/tenant/v1/api_key_pb.js";
import { LicensingService } from "../../gen/ts/licensd/licensing/v1/licensing_service_pb.js";
import { TenantService } from "../../gen/ts/licensd/tenant/v1/tenant_service_pb.js";

/** What the bundle puts on the page (its iife's global). */
type Bundle = { licensdClient: { run(protocol: string, apiKey: string): Promise<unknown> } };

const CHROMIUM = ["/usr/bin/chromium", "/usr/bin/chromium-browser"].find((p) => existsSync(p));

let app: TestApp;
let page: http.Server;
let browser: Browser | undefined;
let script = "";
let inputs: string[] = [];
let apiKey: string;

beforeAll(async () => {
  const out = await build({
    entryPoints: [path.join(import.meta.dirname, "browser", "client-entry.ts")],
    bundle: true,
    write: false,
    platform: "browser",
    format: "iife",
    globalName: "licensdClient",
    target: "es2022",
    conditions: ["licensd-source"],
    logLevel: "silent",
    metafile: true,
  });
  script = out.outputFiles[0]!.text;
  inputs = Object.keys(out.metafile.inputs);

  app = await startTestApp();
  const target = new URL(app.url);
  const { tenant } = await connectClient(TenantService, app.url, app.superAdminKey).createTenant({ name: "Browser" });
  ({ secret: apiKey } = await connectClient(TenantService, app.url, app.superAdminKey).createApiKey({
    tenantId: tenant!.id,
    name: "admin",
    scopes: [ApiKeyScope.ADMIN],
  }));
  await connectClient(LicensingService, app.url, apiKey).createProduct({ code: "WEB", name: "Web app" });

  page = http.createServer((req, res) => {
    if (req.url === "/") {
      res.writeHead(200, { "content-type": "text/html" });
      res.end(`<!doctype html><script>${script.replace(/<\/script/gi, "<\\/script")}</script>`);
      return;
    }
    if (req.url?.startsWith("/dead/")) return req.socket.destroy();
    const upstream = http.request(
      { host: target.hostname, port: target.port, method: req.method, path: req.url, headers: req.headers },
      (up) => {
        res.writeHead(up.statusCode ?? 502, up.headers);
        up.pipe(res);
      },
    );
    upstream.on("error", () => res.destroy());
    req.pipe(upstream);
  });
  await new Promise<void>((resolve) => page.listen(0, "127.0.0.1", resolve));
  if (CHROMIUM)
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
    });
});
afterAll(async () => {
  await browser?.close();
  page?.closeAllConnections();
  await new Promise((r) => (page ? page.close(r) : r(undefined)));
  await app?.close();
});

describe("@licensd/client in a browser", () => {
  it("bundles for the browser with nothing of Node or of the server in it", () => {
    expect(script).not.toMatch(/require\(["']node:|from ["']node:/);
    const outside = inputs.filter((i) => !/^(clients\/ts\/|node_modules\/|test\/integration\/browser\/)/.test(i));
    expect(outside).toEqual([]);
    expect(inputs).toContain("clients/ts/src/client.ts");
  });

  it.skipIf(!CHROMIUM).each(["connect", "grpc-web"])("calls licensd over %s from Chromium", async (protocol) => {
    const tab = await browser!.newPage();
    try {
      await tab.goto(`http://127.0.0.1:${(page.address() as AddressInfo).port}/`);
      const r = await tab.evaluate(
        ([p, k]) => (globalThis as unknown as Bundle).licensdClient.run(p, k),
        [protocol, apiKey],
      );
      expect(r).toEqual({
        products: ["WEB"],
        bad: { codeName: "invalid_argument", reason: "INVALID_ARGUMENT", fields: ["code", "name"] },
        wrong: { codeName: "unauthenticated", reason: "INVALID_API_KEY", fields: [] },
        // A failed fetch is UNAVAILABLE, retried for a read: three attempts, two retries.
        dead: { codeName: "unavailable", reason: "UNAVAILABLE", fields: [] },
        retries: [1, 2],
        gate: false,
      });
    } finally {
      await tab.close();
    }
  });
});

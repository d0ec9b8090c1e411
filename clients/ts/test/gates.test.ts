/*
 * requireLicense / requireFeature over real servers: a Connect service of the vendor's own
 * (grpc.health.v1.Health stands in for it), a plain Node HTTP server and an Express app,
 * each reached over HTTP on a loopback port, with the license changing between requests.
 */
import { readFileSync } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { createConnectTransport } from "@connectrpc/connect-web";
import {
  decide,
  describeError,
  fixedLicense,
  invalidLicense,
  licenseFileSource,
  type LicenseInfo,
  type LicenseSource,
  requireFeature as requireFeatureConnect,
} from "@licensd/client";
import { requireFeature, requireLicense } from "@licensd/client/node";
import express from "express";
import { afterAll, describe, expect, it } from "vitest";
import { Health, HealthCheckResponse_ServingStatus } from "../../../gen/ts/health/v1/health_pb.js";

const valid = (features: string[], more: Partial<LicenseInfo> = {}): LicenseInfo => ({
  ...invalidLicense("VALID"),
  valid: true,
  features,
  tier: "team",
  expiry: new Date("2030-01-01T00:00:00Z"),
  status: "active",
  ...more,
});

/** A license source the test changes between requests, as a LicenseGuard's changes over time. */
class Switchable implements LicenseSource {
  constructor(public current: LicenseInfo) {}
  info() {
    return this.current;
  }
}

const servers: http.Server[] = [];
afterAll(async () => {
  for (const s of servers) {
    s.closeAllConnections();
    await new Promise((r) => s.close(r));
  }
});

async function listen(server: http.Server): Promise<string> {
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

async function get(url: string) {
  const res = await fetch(url);
  const text = await res.text();
  return { status: res.status, type: res.headers.get("content-type"), body: text ? JSON.parse(text) : null };
}

describe("decide", () => {
  it("allows a valid license, and the feature only when the license has it", () => {
    expect(decide(fixedLicense(valid(["reports"])), null).allowed).toBe(true);
    expect(decide(fixedLicense(valid(["reports"])), "reports").allowed).toBe(true);
    expect(decide(fixedLicense(valid(["reports"])), "sso")).toMatchObject({
      allowed: false,
      missing: "feature",
      feature: "sso",
    });
    expect(decide(fixedLicense(invalidLicense("EXPIRED")), "reports")).toMatchObject({
      allowed: false,
      missing: "license",
      info: { code: "EXPIRED" },
    });
  });

  it("counts a source that throws as no license, never as one", () => {
    const broken: LicenseSource = {
      info() {
        throw new Error("disk on fire");
      },
    };
    expect(decide(broken, "reports")).toMatchObject({
      allowed: false,
      missing: "license",
      info: { valid: false, code: "SOURCE_FAILED", error: "disk on fire", features: [] },
    });
  });

  it("invalidLicense never carries features or entitlements, whatever it is given", () => {
    const info = invalidLicense("LICENSE_SUSPENDED", { features: ["x"], entitlements: { x: true }, tier: "team" });
    expect(info).toMatchObject({ valid: false, code: "LICENSE_SUSPENDED", features: [], entitlements: {} });
    expect(info.tier).toBe("team");
  });
});

describe("requireFeature as a Connect interceptor", () => {
  it("refuses with FAILED_PRECONDITION / PERMISSION_DENIED and an ErrorInfo reason, then lets calls through", async () => {
    const source = new Switchable(invalidLicense("NO_LEASE"));
    const gate = requireFeatureConnect(source, "reports");
    const handler = connectNodeAdapter({
      routes: (router) =>
        router.service(
          Health,
          {
            check: () => ({ status: HealthCheckResponse_ServingStatus.SERVING }),
            list: () => ({ statuses: {} }),
            async *watch() {
              yield { status: HealthCheckResponse_ServingStatus.SERVING };
            },
          },
          { interceptors: [gate.interceptor] },
        ),
    });
    const url = await listen(http.createServer(handler));
    const client = createClient(Health, createConnectTransport({ baseUrl: url }));

    const refused = async (call: Promise<unknown>) => {
      try {
        await call;
      } catch (err) {
        expect(err).toBeInstanceOf(ConnectError);
        return describeError(err);
      }
      throw new Error("the call went through");
    };

    expect(await refused(client.check({}))).toMatchObject({
      code: Code.FailedPrecondition,
      reason: "LICENSE_REQUIRED",
      domain: "licensd.dev",
      metadata: { license_code: "NO_LEASE", feature: "reports" },
    });
    // Server streams are checked when they open.
    expect(
      await refused(
        (async () => {
          for await (const _ of client.watch({})) break;
        })(),
      ),
    ).toMatchObject({ reason: "LICENSE_REQUIRED" });

    source.current = valid(["other"]);
    const f = await refused(client.check({}));
    expect(f).toMatchObject({
      code: Code.PermissionDenied,
      reason: "FEATURE_NOT_LICENSED",
      metadata: { license_code: "VALID", feature: "reports", tier: "team" },
    });
    expect(f.message).toContain('"reports"');

    source.current = valid(["reports"]);
    expect((await client.check({})).status).toBe(HealthCheckResponse_ServingStatus.SERVING);
  });
});

describe("the gates on a plain Node HTTP server", () => {
  it("answers 402 without a valid license, 403 without the feature, and runs the handler otherwise", async () => {
    const source = new Switchable(invalidLicense("EXPIRED", { tier: "team" }));
    const reports = requireFeature(source, "reports");
    const anyLicense = requireLicense(source);
    let handled = 0;
    const ok = (_req: http.IncomingMessage, res: http.ServerResponse) => {
      handled++;
      res.end(JSON.stringify({ ok: true }));
    };
    const routes = { "/reports": reports.handler(ok), "/home": anyLicense.handler(ok) };
    const url = await listen(
      http.createServer((req, res) => {
        const route = routes[req.url as keyof typeof routes];
        if (route) return route(req, res);
        res.statusCode = 404;
        res.end();
      }),
    );

    expect(await get(`${url}/reports`)).toEqual({
      status: 402,
      type: "application/json; charset=utf-8",
      body: {
        error: "license_required",
        feature: "reports",
        code: "EXPIRED",
        message: "this needs a valid license (EXPIRED)",
      },
    });
    expect(await get(`${url}/home`)).toMatchObject({
      status: 402,
      body: { error: "license_required", feature: null, code: "EXPIRED" },
    });
    expect(handled).toBe(0);

    source.current = valid(["sso"]);
    expect(await get(`${url}/reports`)).toMatchObject({
      status: 403,
      body: { error: "license_required", feature: "reports", code: "VALID" },
    });
    expect(await get(`${url}/home`)).toEqual({ status: 200, type: null, body: { ok: true } });
    expect(handled).toBe(1);

    source.current = valid(["sso", "reports"]);
    expect(await get(`${url}/reports`)).toMatchObject({ status: 200, body: { ok: true } });
    expect(handled).toBe(2);
  });
});

describe("the gates as Express middleware", () => {
  it("answers 402 / 403 with the JSON body, and calls next() when the license allows", async () => {
    const source = new Switchable(invalidLicense("NO_LEASE"));
    const app = express();
    app.get("/api/schedules", requireFeature(source, "scheduling").middleware, (_req, res) => {
      res.json({ schedules: [] });
    });
    app.use("/api/licensed", requireLicense(source).middleware);
    app.get("/api/licensed/status", (_req, res) => {
      res.json({ licensed: true });
    });
    app.get("/api/free", (_req, res) => {
      res.json({ free: true });
    });
    const url = await listen(http.createServer(app));

    expect(await get(`${url}/api/schedules`)).toMatchObject({
      status: 402,
      body: { error: "license_required", feature: "scheduling", code: "NO_LEASE" },
    });
    expect(await get(`${url}/api/licensed/status`)).toMatchObject({
      status: 402,
      body: { error: "license_required", feature: null },
    });
    expect(await get(`${url}/api/free`)).toMatchObject({ status: 200, body: { free: true } });

    source.current = valid(["reports"]);
    expect(await get(`${url}/api/schedules`)).toMatchObject({
      status: 403,
      body: { error: "license_required", feature: "scheduling" },
    });
    expect(await get(`${url}/api/licensed/status`)).toMatchObject({ status: 200, body: { licensed: true } });

    source.current = valid(["reports", "scheduling"]);
    expect(await get(`${url}/api/schedules`)).toMatchObject({ status: 200, body: { schedules: [] } });
  });
});

describe("licenseFileSource", () => {
  // docs/test-vectors.json: license files signed with the published test keys.
  const vectors = JSON.parse(readFileSync(path.join(import.meta.dirname, "../../../docs/test-vectors.json"), "utf8"));
  const keys = (vectors.keys.ed25519 as { kid: string; public_key_hex: string }[]).map((k) => ({
    kid: k.kid,
    publicKey: Uint8Array.from(Buffer.from(k.public_key_hex, "hex")),
  }));
  const cases = vectors.license_files.cases as { name: string; file: string; now: string; fingerprint?: string }[];
  const file = (name: string) => cases.find((c) => c.name === name)!;

  it("grants the file's features until its expiry, read against the clock at every check", async () => {
    const c = file("Ed25519 file");
    let now = new Date(c.now);
    const source = await licenseFileSource(c.file, { keys, now: () => now });
    expect(source.info()).toMatchObject({ valid: true, code: "VALID", tier: "pro", grace: false });
    expect(decide(source, "reports").allowed).toBe(true);
    expect(decide(source, "sso")).toMatchObject({ allowed: false, missing: "feature" });
    const expiry = source.info().expiry!;
    now = new Date(expiry.getTime() + 1);
    expect(source.info()).toMatchObject({ valid: false, code: "EXPIRED", features: [], expiry });
    expect(decide(source, "reports")).toMatchObject({ allowed: false, missing: "license" });
  });

  it("never grants anything for a file that does not verify", async () => {
    const c = file("Ed25519 file");
    const [prefix, body, sig] = c.file.split(".");
    const claims = JSON.parse(Buffer.from(body!, "base64url").toString());
    claims.features.push("everything");
    const forged = `${prefix}.${Buffer.from(JSON.stringify(claims)).toString("base64url")}.${sig}`;
    const now = () => new Date(c.now);
    expect((await licenseFileSource(forged, { keys, now })).info()).toMatchObject({
      valid: false,
      code: "BAD_SIGNATURE",
      features: [],
    });
    expect((await licenseFileSource(c.file, { keys: [], now })).info()).toMatchObject({ code: "UNKNOWN_KEY" });
    expect((await licenseFileSource("not a license", { keys, now })).info()).toMatchObject({ code: "MALFORMED" });
    const bound = file("bound to another machine");
    expect((await licenseFileSource(bound.file, { keys, fingerprint: bound.fingerprint, now })).info()).toMatchObject({
      valid: false,
      code: "FINGERPRINT_MISMATCH",
    });
  });
});

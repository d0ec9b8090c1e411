/**
 * The SSRF-safe sender (src/platform/safe-http.ts). Real sockets only on 127.0.0.1: every
 * other name or address goes through an injected resolver and is refused before any
 * connect, or (rebinding) reaches an injected connect that dials the loopback receiver
 * instead. No test sends a packet off the loopback.
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import http from "node:http";
import https from "node:https";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import tls from "node:tls";
import type { AddressInfo } from "node:net";
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import {
  type ConnectFn,
  type ResolvedAddress,
  DeliveryError,
  SsrfRefused,
  checkUrl,
  classifyAddress,
  createSafeSender,
  hostAllowed,
} from "../../src/platform/safe-http.js";

interface Receiver {
  port: number;
  connections: number;
  requests: Array<{ method: string; url: string; headers: http.IncomingHttpHeaders; body: string }>;
  sockets: Set<net.Socket>;
  close(): Promise<void>;
}

async function receiver(handler: (req: http.IncomingMessage, res: http.ServerResponse) => void): Promise<Receiver> {
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      r.requests.push({
        method: req.method ?? "",
        url: req.url ?? "",
        headers: req.headers,
        body: Buffer.concat(chunks).toString(),
      });
      handler(req, res);
    });
  });
  const r: Receiver = {
    port: 0,
    connections: 0,
    requests: [],
    sockets: new Set(),
    close: () =>
      new Promise<void>((done) => {
        for (const s of r.sockets) s.destroy();
        server.close(() => done());
      }),
  };
  server.on("connection", (s: net.Socket) => {
    r.connections++;
    r.sockets.add(s);
    s.on("close", () => r.sockets.delete(s));
  });
  await new Promise<void>((ok) => server.listen(0, "127.0.0.1", ok));
  r.port = (server.address() as AddressInfo).port;
  return r;
}

/** A raw TCP server on 127.0.0.1 (for peers that never answer, or reset). */
async function tcpServer(onSocket: (s: net.Socket) => void) {
  const sockets = new Set<net.Socket>();
  let connections = 0;
  const server = net.createServer((s) => {
    connections++;
    sockets.add(s);
    s.on("error", () => {});
    s.on("close", () => sockets.delete(s));
    onSocket(s);
  });
  await new Promise<void>((ok) => server.listen(0, "127.0.0.1", ok));
  return {
    port: (server.address() as AddressInfo).port,
    connections: () => connections,
    open: () => sockets.size,
    close: () =>
      new Promise<void>((done) => {
        for (const s of sockets) s.destroy();
        server.close(() => done());
      }),
  };
}

const UA = "licensd/test";
const open: Array<{ close(): Promise<void> }> = [];
const track = <T extends { close(): Promise<void> }>(x: T) => {
  open.push(x);
  return x;
};
afterEach(async () => {
  await Promise.all(open.splice(0).map((x) => x.close()));
});

async function refusal(p: Promise<unknown>): Promise<SsrfRefused> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(SsrfRefused);
  return err as SsrfRefused;
}

describe("safe sender: delivery to a real receiver on 127.0.0.1", () => {
  it("POSTs the body and headers, returns status, latency and the body prefix (default resolve and connect)", async () => {
    const rx = track(
      await receiver((_req, res) => {
        res.writeHead(202, { "content-type": "text/plain" });
        res.end("accepted");
      }),
    );
    const send = createSafeSender({ allowPrivate: true, allowHttp: true, userAgent: UA }).send;
    const body = JSON.stringify({ type: "webhook.test", timestamp: "2026-01-01T00:00:00Z", data: {} });
    const result = await send(`http://127.0.0.1:${rx.port}/hooks?x=1`, {
      method: "POST",
      headers: { "content-type": "application/json", "webhook-id": "evt_1", Host: "evil.example" },
      body,
    });
    expect(result).toMatchObject({ status: 202, bodyPrefix: "accepted", address: "127.0.0.1" });
    expect(result.latencyMs).toBeGreaterThan(0);
    expect(rx.requests).toHaveLength(1);
    const got = rx.requests[0]!;
    expect(got).toMatchObject({ method: "POST", url: "/hooks?x=1", body });
    expect(got.headers).toMatchObject({
      "content-type": "application/json",
      "webhook-id": "evt_1",
      "user-agent": UA,
      host: `127.0.0.1:${rx.port}`, // the URL's host; a caller's Host header is dropped
      "content-length": String(Buffer.byteLength(body)),
    });
  });

  it("connects to the resolved address, with the URL's name as Host and servername", async () => {
    const rx = track(await receiver((_req, res) => res.end("ok")));
    const resolve = vi.fn(async (): Promise<ResolvedAddress[]> => [{ address: "127.0.0.1", family: 4 }]);
    const targets: Parameters<ConnectFn>[0][] = [];
    const connect: ConnectFn = (t) => {
      targets.push(t);
      return net.connect({ host: t.address, port: t.port });
    };
    const { send } = createSafeSender({ allowPrivate: true, allowHttp: true, userAgent: UA, resolve, connect });
    const result = await send(`http://hooks.example.test:${rx.port}/in`, { body: "{}" });
    expect(result.status).toBe(200);
    expect(resolve).toHaveBeenCalledExactlyOnceWith("hooks.example.test");
    expect(targets).toEqual([
      { address: "127.0.0.1", family: 4, port: rx.port, tls: false, servername: "hooks.example.test" },
    ]);
    expect(rx.requests[0]!.headers.host).toBe(`hooks.example.test:${rx.port}`);
  });
});

describe("safe sender: refusals come before any connect", () => {
  let guard: Receiver;
  beforeAll(async () => {
    // Every refused URL points at this port: had anything connected, it would count.
    guard = await receiver((_req, res) => res.end("should never be reached"));
  });
  afterAll(() => guard.close());

  function refusingSender(answers: Record<string, ResolvedAddress[]> = {}, opts: { allowHttp?: boolean } = {}) {
    const resolve = vi.fn(async (name: string) => {
      const found = answers[name];
      if (!found) throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${name}`), { code: "ENOTFOUND" });
      return found;
    });
    const connect = vi.fn<ConnectFn>(() => {
      throw new Error("connect must not be called");
    });
    const sender = createSafeSender({
      allowPrivate: false,
      allowHttp: opts.allowHttp ?? true,
      userAgent: UA,
      resolve,
      connect,
    });
    return { send: sender.send, resolve, connect };
  }

  const v4 = (address: string): ResolvedAddress => ({ address, family: 4 });
  const v6 = (address: string): ResolvedAddress => ({ address, family: 6 });

  it.each([
    ["127.0.0.1", (p: number) => `http://127.0.0.1:${p}/`, "127.0.0.1", "loopback", "127.0.0.0/8"],
    ["[::1]", (p: number) => `http://[::1]:${p}/`, "::1", "loopback", "::1/128"],
    ["169.254.169.254 (metadata)", () => "http://169.254.169.254/latest/meta-data/", "169.254.169.254", "linkLocal"],
    ["::ffff:127.0.0.1", (p: number) => `http://[::ffff:127.0.0.1]:${p}/`, "::ffff:7f00:1", "loopback", "127.0.0.0/8"],
    ["0.0.0.0", (p: number) => `http://0.0.0.0:${p}/`, "0.0.0.0", "unspecified"],
    ["127.1 (short form)", (p: number) => `http://127.1:${p}/`, "127.0.0.1", "loopback"],
  ])("refuses the literal %s", async (_name, url, address, range, cidr?: string) => {
    const { send, resolve, connect } = refusingSender();
    const err = await refusal(send(url(guard.port), { body: "{}" }));
    expect(err).toMatchObject({ reason: "PRIVATE_ADDRESS", address, range });
    expect(err.message).toContain(address);
    expect(err.message).toContain(range);
    if (cidr) expect(err.message).toContain(cidr);
    expect(resolve).not.toHaveBeenCalled(); // a literal is never resolved
    expect(connect).not.toHaveBeenCalled();
    expect(guard.connections).toBe(0);
  });

  it.each([
    ["a name answering 10.0.0.5", [v4("10.0.0.5")], "10.0.0.5", "private", "10.0.0.0/8"],
    ["a name answering one public and one private address", [v4("93.184.215.14"), v4("10.0.0.5")], "10.0.0.5"],
    ["a name answering ::ffff:10.0.0.5", [v6("::ffff:10.0.0.5")], "::ffff:10.0.0.5", "private", "10.0.0.0/8"],
    ["a name answering fd00::1", [v6("fd00::1")], "fd00::1", "uniqueLocal", "fc00::/7"],
    ["a name answering 100.64.0.1 (CGNAT)", [v4("100.64.0.1")], "100.64.0.1", "carrierGradeNat", "100.64.0.0/10"],
    ["a name answering 169.254.169.254", [v4("169.254.169.254")], "169.254.169.254", "linkLocal", "169.254.0.0/16"],
    ["a name answering localhost", [v4("127.0.0.1"), v6("::1")], "127.0.0.1", "loopback"],
  ])("refuses %s", async (_name, answers, address, range?: string, cidr?: string) => {
    const { send, resolve, connect } = refusingSender({ "hooks.example.test": answers });
    const err = await refusal(send(`http://hooks.example.test:${guard.port}/`, { body: "{}" }));
    expect(err).toMatchObject({ reason: "PRIVATE_ADDRESS", address });
    expect(err.message).toContain(`${address} (resolved from hooks.example.test)`);
    if (range) expect(err.range).toBe(range);
    if (cidr) expect(err.message).toContain(cidr);
    expect(resolve).toHaveBeenCalledExactlyOnceWith("hooks.example.test");
    expect(connect).not.toHaveBeenCalled();
    expect(guard.connections).toBe(0);
  });

  it.each([["2130706433"], ["0x7f.1"], ["localhost"]])(
    "refuses a resolver answer that is not a canonical IP address (%s): connect would resolve it",
    async (bad) => {
      const { send, connect } = refusingSender({ "odd.example.test": [{ address: bad, family: 4 }] });
      const err = await refusal(send(`http://odd.example.test:${guard.port}/`));
      expect(err.reason).toBe("INVALID_ADDRESS");
      expect(connect).not.toHaveBeenCalled();
      expect(guard.connections).toBe(0);
    },
  );

  it("refuses a name that does not resolve, or resolves to nothing (RESOLVE_FAILED)", async () => {
    const { send, connect } = refusingSender({ "empty.example.test": [] });
    const missing = await refusal(send(`http://missing.example.test:${guard.port}/`));
    expect(missing.reason).toBe("RESOLVE_FAILED");
    expect(missing.message).toContain("ENOTFOUND");
    const empty = await refusal(send(`http://empty.example.test:${guard.port}/`));
    expect(empty.reason).toBe("RESOLVE_FAILED");
    expect(connect).not.toHaveBeenCalled();
    expect(guard.connections).toBe(0);
  });

  it("refuses http unless allowHttp, other schemes always, credentials, and non-URLs", async () => {
    const { send, resolve, connect } = refusingSender({}, { allowHttp: false });
    expect((await refusal(send(`http://127.0.0.1:${guard.port}/`))).reason).toBe("SCHEME_NOT_ALLOWED");
    expect((await refusal(send(`ftp://127.0.0.1:${guard.port}/`))).reason).toBe("SCHEME_NOT_ALLOWED");
    expect((await refusal(send("file:///etc/passwd"))).reason).toBe("SCHEME_NOT_ALLOWED");
    expect((await refusal(send("https://user:pw@hooks.example.test/"))).reason).toBe("CREDENTIALS_IN_URL");
    expect((await refusal(send("not a url"))).reason).toBe("INVALID_URL");
    expect(resolve).not.toHaveBeenCalled();
    expect(connect).not.toHaveBeenCalled();
    expect(guard.connections).toBe(0);
  });
});

describe("safe sender: one resolution only (DNS rebinding)", () => {
  it("connects to the address it checked, even if the name answers a private address afterwards", async () => {
    const rx = track(await receiver((_req, res) => res.end("ok")));
    const PUBLIC = "93.184.215.14";
    let calls = 0;
    // First answer public (passes the check), every later one loopback: a rebinding attacker.
    const resolve = vi.fn(async (): Promise<ResolvedAddress[]> => {
      calls++;
      return [{ address: calls === 1 ? PUBLIC : "127.0.0.1", family: 4 }];
    });
    const dialed: string[] = [];
    // Stands in for the network: records where the sender asked to go and dials the
    // loopback receiver instead, so no packet leaves 127.0.0.1.
    const connect: ConnectFn = (t) => {
      dialed.push(`${t.address}:${t.port} sni=${t.servername}`);
      return net.connect({ host: "127.0.0.1", port: rx.port });
    };
    const { send } = createSafeSender({ allowPrivate: false, allowHttp: true, userAgent: UA, resolve, connect });
    const result = await send(`http://rebind.example.test:${rx.port}/`, { body: "{}" });
    expect(result).toMatchObject({ status: 200, address: PUBLIC });
    expect(resolve).toHaveBeenCalledTimes(1);
    expect(dialed).toEqual([`${PUBLIC}:${rx.port} sni=rebind.example.test`]);

    // A second send resolves again (once), gets the loopback answer and is refused before connecting.
    const err = await refusal(send(`http://rebind.example.test:${rx.port}/`, { body: "{}" }));
    expect(err).toMatchObject({ reason: "PRIVATE_ADDRESS", address: "127.0.0.1" });
    expect(resolve).toHaveBeenCalledTimes(2);
    expect(dialed).toHaveLength(1);
    expect(rx.connections).toBe(1);
  });
});

describe("safe sender: responses", () => {
  const sender = (opts: { timeoutMs?: number; maxResponseBytes?: number } = {}) =>
    createSafeSender({ allowPrivate: true, allowHttp: true, userAgent: UA, ...opts }).send;

  it("never follows a redirect: a 302 is just a status", async () => {
    const other = track(await receiver((_req, res) => res.end("followed")));
    const rx = track(
      await receiver((_req, res) => {
        res.writeHead(302, { location: `http://127.0.0.1:${other.port}/landing` });
        res.end("moved");
      }),
    );
    const result = await sender()(`http://127.0.0.1:${rx.port}/`, { body: "{}" });
    expect(result).toMatchObject({ status: 302, bodyPrefix: "moved" });
    expect(rx.requests).toHaveLength(1);
    expect(other.connections).toBe(0);
    expect(other.requests).toHaveLength(0);
  });

  it("keeps at most maxResponseBytes of the body (1 KiB by default)", async () => {
    const rx = track(await receiver((_req, res) => res.end("x".repeat(64 * 1024))));
    expect((await sender()(`http://127.0.0.1:${rx.port}/`)).bodyPrefix).toBe("x".repeat(1024));
    expect((await sender({ maxResponseBytes: 10 })(`http://127.0.0.1:${rx.port}/`)).bodyPrefix).toBe("x".repeat(10));
  });

  it("stops reading at the bound: a body that never ends does not hold the send", async () => {
    const rx = track(
      await receiver((_req, res) => {
        res.writeHead(500);
        res.write("y".repeat(4096)); // and never ends
      }),
    );
    const started = Date.now();
    const result = await sender({ timeoutMs: 5_000 })(`http://127.0.0.1:${rx.port}/`);
    expect(result).toMatchObject({ status: 500, bodyPrefix: "y".repeat(1024) });
    expect(Date.now() - started).toBeLessThan(4_000);
  });

  it("times out on a receiver that never answers, and closes the connection", async () => {
    const silent = track(await tcpServer((s) => s.resume())); // reads, never answers
    const err = await sender({ timeoutMs: 200 })(`http://127.0.0.1:${silent.port}/`, { body: "{}" }).catch(
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(DeliveryError);
    expect(err).toMatchObject({ reason: "TIMEOUT" });
    expect(silent.connections()).toBe(1);
    await vi.waitFor(() => expect(silent.open()).toBe(0));
  });

  it("times out on a resolver that never answers", async () => {
    const resolve = () => new Promise<ResolvedAddress[]>(() => {});
    const connect = vi.fn<ConnectFn>();
    const { send } = createSafeSender({
      allowPrivate: true,
      allowHttp: true,
      userAgent: UA,
      timeoutMs: 100,
      resolve,
      connect,
    });
    await expect(send("http://slow.example.test/")).rejects.toMatchObject({ name: "DeliveryError", reason: "TIMEOUT" });
    expect(connect).not.toHaveBeenCalled();
  });

  it("reports a reset or a refused connection as a DeliveryError", async () => {
    const resetting = track(await tcpServer((s) => s.resetAndDestroy()));
    await expect(sender()(`http://127.0.0.1:${resetting.port}/`, { body: "{}" })).rejects.toMatchObject({
      name: "DeliveryError",
      reason: "CONNECTION_FAILED",
    });
    const closed = await tcpServer(() => {});
    const port = closed.port;
    await closed.close();
    await expect(sender()(`http://127.0.0.1:${port}/`)).rejects.toMatchObject({
      name: "DeliveryError",
      reason: "CONNECTION_FAILED",
    });
  });
});

describe("safe sender: https with the default connect (TLS to the checked address, name for SNI and certificate)", () => {
  const NAME = "hooks.example.test";
  let dir: string;
  let cert: string;
  let server: https.Server;
  let port: number;
  const seen: Array<{ servername: string | false | null | undefined; host: string | undefined }> = [];
  let savedCAs: string[];

  beforeAll(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), "licensd-safe-http-"));
    execFileSync(
      "openssl",
      ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1"]
        .concat(["-keyout", path.join(dir, "key.pem"), "-out", path.join(dir, "cert.pem")])
        .concat(["-subj", `/CN=${NAME}`, "-addext", `subjectAltName=DNS:${NAME}`]),
      { stdio: "ignore" },
    );
    cert = readFileSync(path.join(dir, "cert.pem"), "utf8");
    server = https.createServer({ key: readFileSync(path.join(dir, "key.pem")), cert }, (req, res) => {
      seen.push({ servername: (req.socket as tls.TLSSocket).servername, host: req.headers.host });
      req.resume();
      req.on("end", () => res.end("tls ok"));
    });
    await new Promise<void>((ok) => server.listen(0, "127.0.0.1", ok));
    port = (server.address() as AddressInfo).port;
    savedCAs = tls.getCACertificates("default");
  });
  afterAll(async () => {
    tls.setDefaultCACertificates(savedCAs);
    server.closeAllConnections();
    await new Promise<void>((done) => server.close(() => done()));
    rmSync(dir, { recursive: true, force: true });
  });

  const httpsSender = (name: string) =>
    createSafeSender({
      allowPrivate: true,
      allowHttp: false,
      userAgent: UA,
      resolve: async (n) => (n === name ? [{ address: "127.0.0.1", family: 4 }] : []),
    }).send;

  it("refuses an untrusted certificate (TLS_FAILED)", async () => {
    tls.setDefaultCACertificates(savedCAs);
    await expect(httpsSender(NAME)(`https://${NAME}:${port}/`, { body: "{}" })).rejects.toMatchObject({
      name: "DeliveryError",
      reason: "TLS_FAILED",
    });
  });

  it("delivers when the certificate is trusted and names the URL's host, sent as SNI", async () => {
    tls.setDefaultCACertificates([...savedCAs, cert]);
    const result = await httpsSender(NAME)(`https://${NAME}:${port}/in`, { body: "{}" });
    expect(result).toMatchObject({ status: 200, bodyPrefix: "tls ok", address: "127.0.0.1" });
    expect(seen.at(-1)).toEqual({ servername: NAME, host: `${NAME}:${port}` });
  });

  it("refuses a trusted certificate for another name (the check uses the URL's host, not the address)", async () => {
    tls.setDefaultCACertificates([...savedCAs, cert]);
    const other = "other.example.test";
    await expect(httpsSender(other)(`https://${other}:${port}/`, { body: "{}" })).rejects.toMatchObject({
      name: "DeliveryError",
      reason: "TLS_FAILED",
    });
  });
});

describe("safe sender: pure checks", () => {
  it.each([
    ["10.1.2.3", "private"],
    ["172.16.0.1", "private"],
    ["172.31.255.255", "private"],
    ["192.168.1.1", "private"],
    ["127.0.0.53", "loopback"],
    ["169.254.169.254", "linkLocal"],
    ["100.64.0.1", "carrierGradeNat"],
    ["224.0.0.1", "multicast"],
    ["255.255.255.255", "broadcast"],
    ["0.0.0.0", "unspecified"],
    ["240.0.0.1", "reserved"],
    ["::", "unspecified"],
    ["::1", "loopback"],
    ["fe80::1", "linkLocal"],
    ["fc00::1", "uniqueLocal"],
    ["ff02::1", "multicast"],
    ["::ffff:169.254.169.254", "linkLocal"],
    ["64:ff9b::a00:5", "rfc6052"],
    ["2002:a00:5::", "6to4"],
    ["8.8.8.8", "unicast"],
    ["2606:4700::1111", "unicast"],
    ["172.32.0.1", "unicast"],
  ])("classifies %s as %s", (address, range) => {
    expect(classifyAddress(address).range).toBe(range);
  });

  it("checkUrl keeps the port as given and knows literals", () => {
    expect(checkUrl("https://hooks.example.test:8443/x", { allowHttp: false })).toMatchObject({
      hostname: "hooks.example.test",
      port: 8443,
      tls: true,
      literal: false,
    });
    expect(checkUrl("https://[2606:4700::1111]/", { allowHttp: false })).toMatchObject({
      hostname: "2606:4700::1111",
      port: 443,
      literal: true,
    });
  });
});

describe("safe sender: allowed hosts (LICENSD_WEBHOOK_ALLOWED_HOSTS)", () => {
  it("matches exact names and IP literals, and *.domain below the domain only, case-insensitively", () => {
    const patterns = ["hooks.example.com", "*.vendor.test", "203.0.113.7"];
    expect(hostAllowed("hooks.example.com", patterns)).toBe(true);
    expect(hostAllowed("HOOKS.Example.com.", patterns)).toBe(true);
    expect(hostAllowed("a.b.vendor.test", patterns)).toBe(true);
    expect(hostAllowed("vendor.test", patterns)).toBe(false);
    expect(hostAllowed("evilvendor.test", patterns)).toBe(false);
    expect(hostAllowed("hooks.example.com.evil.test", patterns)).toBe(false);
    expect(hostAllowed("203.0.113.7", patterns)).toBe(true);
    expect(hostAllowed("203.0.113.8", patterns)).toBe(false);
  });

  it("refuses other hosts before resolving or connecting", async () => {
    const resolve = vi.fn(async () => [{ address: "127.0.0.1", family: 4 as const }]);
    const connect = vi.fn<ConnectFn>(() => {
      throw new Error("connect must not be called");
    });
    const sender = createSafeSender({
      allowPrivate: true,
      allowHttp: true,
      allowedHosts: ["hooks.example.com"],
      userAgent: "licensd/test",
      resolve,
      connect,
    });
    const err = await sender.send("http://other.example.com/x", { body: "{}" }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SsrfRefused);
    expect((err as SsrfRefused).reason).toBe("HOST_NOT_ALLOWED");
    expect(resolve).not.toHaveBeenCalled();
    expect(connect).not.toHaveBeenCalled();
    expect(() =>
      checkUrl("https://hooks.example.com/", { allowHttp: false, allowedHosts: ["hooks.example.com"] }),
    ).not.toThrow();
  });
});

/**
 * The SSRF-safe outbound HTTP sender (issue 22): what the webhook dispatcher uses to POST a
 * delivery to a URL a tenant gave us.
 *
 *   1. The URL is checked: https only (http when `allowHttp`, for development), no
 *      credentials in it; any port is allowed as given.
 *   2. The host is resolved exactly once (an IP literal is not resolved at all) and EVERY
 *      address it resolved to is classified with ipaddr.js; loopback, private, link-local
 *      (cloud metadata 169.254.169.254 included), multicast, unspecified, CGNAT, reserved,
 *      IPv4-mapped/-translated IPv6 of those, … are refused unless `allowPrivate`. One bad
 *      address refuses the whole name: an attacker who controls DNS can otherwise make the
 *      client pick the private one.
 *   3. The connection goes to the address that was checked, never to the name: DNS
 *      rebinding (a second lookup answering 127.0.0.1) cannot swap it. For https, the name
 *      is still the TLS servername, so SNI and the certificate check use it.
 *   4. Redirects are never followed (a 3xx is just a status); at most `maxResponseBytes`
 *      of the body are read, then the connection is dropped; one timeout covers it all.
 *
 * Every refusal is an `SsrfRefused` (with a stable `reason`) thrown before any connection
 * is attempted; a failure on the wire is a `DeliveryError`.
 *
 * Why node:http with `createConnection` rather than undici or an Agent's `lookup`: the
 * request gets exactly the socket we opened to the checked address, and node:http never
 * resolves anything itself (it is given no agent, so no keep-alive socket opened for an
 * earlier answer is reused). `createConnection` is a documented, stable node:http option.
 * undici's Agent `connect` hook would give the same guarantee, but undici is not a
 * dependency of licensd (Node's bundled copy does not expose its Agent). An http.Agent
 * `lookup` override would also work, but the check would then run inside net.connect, per
 * socket, mixed with pooling; here "resolve once, check all, dial the checked address" is
 * three visible steps, and tests can replace the resolver and the dialer.
 */
import dns from "node:dns";
import http from "node:http";
import net from "node:net";
import type { Duplex } from "node:stream";
import tls from "node:tls";
import ipaddr from "ipaddr.js";

/** One resolved address, as node:dns lookup({ all: true }) gives it. */
export interface ResolvedAddress {
  address: string;
  family: 4 | 6;
}

/** Resolves a host name to all its addresses (default: node:dns lookup with all: true). */
export type ResolveFn = (hostname: string) => Promise<ResolvedAddress[]>;

/** Where the sender connects: always the checked address, never a name. */
export interface ConnectTarget {
  /** The checked IP address to dial. */
  address: string;
  family: 4 | 6;
  port: number;
  /** true for https: the socket must be TLS, verified against `servername` (or `address` for an IP literal). */
  tls: boolean;
  /** The URL's host name, for SNI and the certificate check; undefined when the URL holds an IP literal. */
  servername: string | undefined;
}

/** Opens the socket the request is written to (default: net.connect / tls.connect to target.address). */
export type ConnectFn = (target: ConnectTarget) => Duplex;

export interface SafeSenderOptions {
  /** Allow loopback, private, link-local, … addresses (LICENSD_WEBHOOK_ALLOW_PRIVATE; tests). */
  allowPrivate: boolean;
  /** Allow http:// URLs (development only). */
  allowHttp: boolean;
  /** When not empty, only these hosts (`hostAllowed` patterns) are sent to (LICENSD_WEBHOOK_ALLOWED_HOSTS). */
  allowedHosts?: readonly string[];
  /** One deadline for resolving, connecting, sending and reading (default 15 s). */
  timeoutMs?: number;
  /** How much of the response body is kept (default 1 KiB); the rest is never read. */
  maxResponseBytes?: number;
  resolve?: ResolveFn;
  connect?: ConnectFn;
  /** Sent as user-agent on every request, e.g. `licensd/0.1.0`. */
  userAgent: string;
}

export interface SendRequest {
  method?: "POST" | "PUT";
  headers?: Record<string, string>;
  body?: string | Uint8Array;
}

export interface SendResult {
  status: number;
  /** From send() to the end of the (bounded) response body. */
  latencyMs: number;
  /** The first maxResponseBytes of the body, decoded as UTF-8 (a cut character becomes U+FFFD). */
  bodyPrefix: string;
  /** The address connected to (for delivery history and logs). */
  address: string;
}

export type SsrfReason =
  | "INVALID_URL"
  | "SCHEME_NOT_ALLOWED"
  | "CREDENTIALS_IN_URL"
  | "RESOLVE_FAILED"
  | "PRIVATE_ADDRESS"
  | "INVALID_ADDRESS"
  | "HOST_NOT_ALLOWED";

/** The URL or its addresses are not allowed; nothing was sent, no connection attempted. */
export class SsrfRefused extends Error {
  constructor(
    readonly reason: SsrfReason,
    message: string,
    /** The offending address and its ipaddr.js range, for PRIVATE_ADDRESS. */
    readonly address?: string,
    readonly range?: string,
  ) {
    super(message);
    this.name = "SsrfRefused";
  }
}

export type DeliveryFailure = "TIMEOUT" | "CONNECTION_FAILED" | "TLS_FAILED";

/** The request was allowed but did not get a response: retry later. */
export class DeliveryError extends Error {
  constructor(
    readonly reason: DeliveryFailure,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = "DeliveryError";
  }
}

// The CIDRs behind ipaddr.js's range names, only to say which block an address fell in.
const RANGE_CIDRS: Record<string, string[]> = {
  unspecified: ["0.0.0.0/8", "::/128"],
  broadcast: ["255.255.255.255/32"],
  multicast: ["224.0.0.0/4", "ff00::/8"],
  linkLocal: ["169.254.0.0/16", "fe80::/10"],
  loopback: ["127.0.0.0/8", "::1/128"],
  carrierGradeNat: ["100.64.0.0/10"],
  private: ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"],
  uniqueLocal: ["fc00::/7"],
  ipv4Mapped: ["::ffff:0:0/96"],
  rfc6145: ["::ffff:0:0:0/96"],
  rfc6052: ["64:ff9b::/96", "64:ff9b:1::/48"],
  "6to4": ["2002::/16"],
  teredo: ["2001::/32"],
  deprecatedSiteLocal: ["fec0::/10"],
  reserved: ["192.0.0.0/24", "192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "240.0.0.0/4", "2001:db8::/32"],
  benchmarking: ["198.18.0.0/15", "2001:2::/48"],
};

export interface AddressClass {
  /** ipaddr.js's range name: "unicast" is the only one allowed without allowPrivate. */
  range: string;
  /** The CIDR block, when known. */
  cidr?: string;
  /** For an IPv4-mapped IPv6 address, the IPv4 address it stands for (which was classified). */
  mappedFrom?: string;
}

/**
 * Classifies an IP address; an IPv4-mapped IPv6 address (::ffff:127.0.0.1) is classified as
 * the IPv4 address it carries. Throws on a string that is not an address.
 */
export function classifyAddress(address: string): AddressClass {
  let addr = ipaddr.parse(address);
  let mappedFrom: string | undefined;
  if (addr.kind() === "ipv6" && (addr as ipaddr.IPv6).isIPv4MappedAddress()) {
    addr = (addr as ipaddr.IPv6).toIPv4Address();
    mappedFrom = addr.toString();
  }
  const range = addr.range();
  const cidr = RANGE_CIDRS[range]?.find((c) => {
    const parsed = ipaddr.parseCIDR(c);
    return parsed[0].kind() === addr.kind() && addr.match(parsed);
  });
  return { range, ...(cidr ? { cidr } : {}), ...(mappedFrom ? { mappedFrom } : {}) };
}

/** Only global unicast is public; every other ipaddr.js range (NAT64, 6to4, teredo included) is refused. */
export const isPublicAddress = (address: string) => classifyAddress(address).range === "unicast";

export interface CheckedUrl {
  url: URL;
  /** The host without IPv6 brackets. */
  hostname: string;
  port: number;
  tls: boolean;
  /** true when the host is an IP literal (not resolved). */
  literal: boolean;
}

/** The URL checks that need no DNS: for validating an endpoint URL when it is created, too. */
export function checkUrl(
  raw: string,
  { allowHttp, allowedHosts }: { allowHttp: boolean; allowedHosts?: readonly string[] },
): CheckedUrl {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new SsrfRefused("INVALID_URL", `not a URL: ${JSON.stringify(raw)}`);
  }
  if (url.protocol !== "https:" && !(allowHttp && url.protocol === "http:")) {
    const allowed = allowHttp ? "https or http" : "https";
    throw new SsrfRefused("SCHEME_NOT_ALLOWED", `scheme ${url.protocol.replace(/:$/, "")} not allowed: use ${allowed}`);
  }
  if (url.username !== "" || url.password !== "") {
    throw new SsrfRefused("CREDENTIALS_IN_URL", "URLs with credentials (user:password@) are not allowed");
  }
  const tlsWanted = url.protocol === "https:";
  const hostname = url.hostname.startsWith("[") ? url.hostname.slice(1, -1) : url.hostname;
  if (hostname === "") throw new SsrfRefused("INVALID_URL", "the URL has no host");
  const port = url.port === "" ? (tlsWanted ? 443 : 80) : Number(url.port);
  if (allowedHosts && allowedHosts.length > 0 && !hostAllowed(hostname, allowedHosts)) {
    throw new SsrfRefused("HOST_NOT_ALLOWED", `host ${hostname} is not among the allowed hosts`);
  }
  return { url, hostname, port, tls: tlsWanted, literal: net.isIP(hostname) !== 0 };
}

/**
 * Whether `hostname` is one of `patterns`: a host name or IP literal (exactly), or
 * `*.example.com` (any name under example.com, not example.com itself). Case-insensitive.
 */
export function hostAllowed(hostname: string, patterns: readonly string[]): boolean {
  const host = hostname.toLowerCase().replace(/\.$/, "");
  return patterns.some((p) => {
    const pattern = p.toLowerCase();
    return pattern.startsWith("*.")
      ? host.endsWith(pattern.slice(1)) && host.length > pattern.length - 1
      : host === pattern;
  });
}

const defaultResolve: ResolveFn = async (hostname) => {
  const found = await dns.promises.lookup(hostname, { all: true, verbatim: true });
  return found.map((a) => ({ address: a.address, family: a.family === 6 ? 6 : 4 }));
};

const defaultConnect: ConnectFn = (t) =>
  t.tls
    ? // rejectUnauthorized is the default; it is spelt out because it is the point.
      tls.connect({
        host: t.address,
        port: t.port,
        ...(t.servername ? { servername: t.servername } : {}),
        rejectUnauthorized: true,
        ALPNProtocols: ["http/1.1"],
      })
    : net.connect({ host: t.address, port: t.port });

// Headers the sender sets itself; a caller's copy is dropped.
const OWN_HEADERS = new Set(["host", "content-length", "transfer-encoding", "connection", "user-agent"]);

const TLS_ERROR = /CERT|TLS|SSL|ALTNAME|SIGNATURE|HANDSHAKE/i;

export interface SafeSender {
  send(url: string, request?: SendRequest): Promise<SendResult>;
}

export function createSafeSender(options: SafeSenderOptions): SafeSender {
  const {
    allowPrivate,
    allowHttp,
    timeoutMs = 15_000,
    maxResponseBytes = 1024,
    resolve = defaultResolve,
    connect = defaultConnect,
    userAgent,
    allowedHosts,
  } = options;

  /** Resolves once and checks every address; returns the one to connect to. */
  async function pickAddress(target: CheckedUrl, deadline: Promise<never>): Promise<ResolvedAddress> {
    let addresses: ResolvedAddress[];
    if (target.literal) {
      addresses = [{ address: target.hostname, family: net.isIP(target.hostname) === 6 ? 6 : 4 }];
    } else {
      try {
        addresses = await Promise.race([resolve(target.hostname), deadline]);
      } catch (err) {
        if (err instanceof DeliveryError) throw err;
        const why = err instanceof Error ? err.message : String(err);
        throw new SsrfRefused("RESOLVE_FAILED", `could not resolve ${target.hostname}: ${why}`);
      }
      if (addresses.length === 0) {
        throw new SsrfRefused("RESOLVE_FAILED", `${target.hostname} resolved to no address`);
      }
    }
    for (const { address } of addresses) {
      let cls: AddressClass;
      try {
        // Only canonical IP strings: net.connect would resolve anything else (ipaddr.js reads
        // "0x7f.1" or "2130706433" as 127.0.0.1; net.connect would look them up as names).
        if (typeof address !== "string" || net.isIP(address) === 0) throw new Error("not an IP address");
        cls = classifyAddress(address);
      } catch {
        throw new SsrfRefused("INVALID_ADDRESS", `${target.hostname} resolved to ${JSON.stringify(address)}`);
      }
      if (cls.range !== "unicast" && !allowPrivate) {
        const of = target.literal ? "" : ` (resolved from ${target.hostname})`;
        const mapped = cls.mappedFrom ? ` (IPv4-mapped ${cls.mappedFrom})` : "";
        const block = cls.cidr ? ` ${cls.cidr}` : "";
        throw new SsrfRefused(
          "PRIVATE_ADDRESS",
          `address ${address}${of}${mapped} is in the ${cls.range}${block} range: not allowed`,
          address,
          cls.range,
        );
      }
    }
    // The first answer, as the resolver ordered them (verbatim); only this one is dialed.
    const first = addresses[0]!.address;
    return { address: first, family: net.isIP(first) === 6 ? 6 : 4 };
  }

  return {
    async send(rawUrl, { method = "POST", headers = {}, body } = {}) {
      const started = performance.now();
      const target = checkUrl(rawUrl, { allowHttp, allowedHosts });
      // One deadline for everything: it rejects `deadline` (raced against resolving) and
      // aborts `signal` (which tears the request and its socket down).
      const abort = new AbortController();
      const deadline = new Promise<never>((_, reject) => {
        abort.signal.addEventListener("abort", () => reject(abort.signal.reason), { once: true });
      });
      deadline.catch(() => {}); // observed where it is raced; never an unhandled rejection
      const timer = setTimeout(
        () => abort.abort(new DeliveryError("TIMEOUT", `no response from ${target.url.host} within ${timeoutMs} ms`)),
        timeoutMs,
      );
      try {
        const picked = await pickAddress(target, deadline);
        return await request(target, picked, { method, headers, body }, started, abort.signal);
      } finally {
        clearTimeout(timer);
      }
    },
  };

  function request(
    target: CheckedUrl,
    picked: ResolvedAddress,
    { method, headers: callerHeaders, body }: Required<Pick<SendRequest, "method" | "headers">> & SendRequest,
    started: number,
    signal: AbortSignal,
  ): Promise<SendResult> {
    return new Promise<SendResult>((resolvePromise, reject) => {
      if (signal.aborted) return reject(signal.reason);
      const payload = body === undefined ? undefined : typeof body === "string" ? Buffer.from(body) : body;
      const headers: Record<string, string> = {};
      for (const [k, v] of Object.entries(callerHeaders)) {
        if (!OWN_HEADERS.has(k.toLowerCase())) headers[k] = v;
      }
      headers.host = target.url.host; // as written in the URL: the default port is left out
      headers["user-agent"] = userAgent;
      headers["content-length"] = String(payload?.byteLength ?? 0);
      headers.connection = "close";

      let settled = false;
      let socket: Duplex | undefined;
      const fail = (err: DeliveryError) => {
        if (settled) return;
        settled = true;
        signal.removeEventListener("abort", onAbort);
        req.destroy();
        socket?.destroy();
        reject(err);
      };

      const makeRequest = () =>
        http.request({
          method,
          // The hostname here only names the request; createConnection decides where it goes.
          host: target.hostname,
          port: target.port,
          path: `${target.url.pathname}${target.url.search}`,
          headers,
          setHost: false,
          // No agent: no pooled socket is reused and node:http performs no lookup of its own.
          agent: undefined,
          createConnection: () => {
            socket = connect({
              address: picked.address,
              family: picked.family,
              port: target.port,
              tls: target.tls,
              servername: target.literal ? undefined : target.hostname,
            });
            return socket as net.Socket;
          },
        });
      let req: http.ClientRequest;
      try {
        req = makeRequest();
      } catch (err) {
        // A connect function that throws (bad options, …): no request went out.
        const why = err instanceof Error ? err.message : String(err);
        reject(
          new DeliveryError("CONNECTION_FAILED", `${target.url.host} (${picked.address}): ${why}`, { cause: err }),
        );
        return;
      }
      const onAbort = () => fail(signal.reason as DeliveryError);
      signal.addEventListener("abort", onAbort, { once: true });

      req.on("error", (err: NodeJS.ErrnoException) => {
        const code = err.code ?? "";
        const reason: DeliveryFailure =
          target.tls && TLS_ERROR.test(`${code} ${err.message}`) ? "TLS_FAILED" : "CONNECTION_FAILED";
        fail(
          new DeliveryError(reason, `${method} ${target.url.host} (${picked.address}): ${code || err.message}`, {
            cause: err,
          }),
        );
      });

      req.on("response", (res) => {
        const chunks: Buffer[] = [];
        let kept = 0;
        const finish = () => {
          if (settled) return;
          settled = true;
          signal.removeEventListener("abort", onAbort);
          const prefix = Buffer.concat(chunks).subarray(0, maxResponseBytes);
          resolvePromise({
            status: res.statusCode ?? 0,
            latencyMs: performance.now() - started,
            bodyPrefix: new TextDecoder("utf-8", { fatal: false }).decode(prefix),
            address: picked.address,
          });
          // Whatever is left of the body is never read.
          res.destroy();
          req.destroy();
          socket?.destroy();
        };
        res.on("data", (chunk: Buffer) => {
          if (kept < maxResponseBytes) {
            chunks.push(chunk);
            kept += chunk.length;
          }
          if (kept >= maxResponseBytes) finish();
        });
        res.on("end", finish);
        // A reset mid-body still gives the status: the receiver answered.
        res.on("error", finish);
        res.on("aborted", finish);
        if (maxResponseBytes === 0) finish();
      });

      req.end(payload);
    });
  }
}

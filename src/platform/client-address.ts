import type http from "node:http";
import type http2 from "node:http2";
import parseForwarded from "forwarded-parse";
import ipaddr from "ipaddr.js";
import proxyaddr from "proxy-addr";

/** Which header trusted proxies write the client's address in. */
export type ForwardedHeader = "x-forwarded-for" | "forwarded";

type Request = Pick<http.IncomingMessage | http2.Http2ServerRequest, "headers" | "socket">;

/**
 * Checks `LICENSD_TRUSTED_PROXIES` (CIDRs, addresses, or proxy-addr's names `loopback`,
 * `linklocal`, `uniquelocal`): the trust function, or the entries that do not parse.
 */
export function compileTrustedProxies(
  entries: string[],
): { trust: (addr: string, i: number) => boolean } | { bad: string[] } {
  const bad = entries.filter((e) => {
    try {
      proxyaddr.compile(e);
      return false;
    } catch {
      return true;
    }
  });
  return bad.length > 0 ? { bad } : { trust: proxyaddr.compile(entries) };
}

/**
 * How licensd names the client of a request: the TCP peer, unless the peer is a trusted
 * proxy; then the header it wrote is read right to left, past every trusted hop, to the
 * first address that is not trusted. Headers from an untrusted peer are never read.
 */
export function createClientAddress(trustedProxies: string[], header: ForwardedHeader): (req: Request) => string {
  const peer = (req: Request) => req.socket?.remoteAddress ?? "";
  if (trustedProxies.length === 0) return peer;
  const compiled = compileTrustedProxies(trustedProxies);
  if ("bad" in compiled) throw new Error(`not an address or CIDR: ${compiled.bad.join(", ")}`);
  const { trust } = compiled;
  // X-Forwarded-For: proxy-addr walks it (the socket first, then the header right to left).
  if (header === "x-forwarded-for") return (req) => (peer(req) ? proxyaddr(req as http.IncomingMessage, trust) : "");
  return (req) => {
    let addr = peer(req);
    const value = req.headers.forwarded;
    if (!addr || !value || !trust(addr, 0)) return addr;
    let hops: string[];
    try {
      hops = parseForwarded(Array.isArray(value) ? value.join(",") : value).map((element) => element.for ?? "");
    } catch {
      return addr; // a header the proxy would not have written: the proxy is the client we know
    }
    // proxy-addr walks only X-Forwarded-For: the same walk over RFC 7239's `for=` values.
    for (let i = hops.length - 1, hop = 1; i >= 0; i--, hop++) {
      const next = forNode(hops[i]!);
      if (next === undefined) break; // `unknown`, an obfuscated name: stop at the last address known
      addr = next;
      if (!trust(addr, hop)) break;
    }
    return addr;
  };
}

/** The IP address of a `for=` node (`192.0.2.1`, `192.0.2.1:4711`, `[2001:db8::1]:80`), or undefined. */
function forNode(node: string): string | undefined {
  const bracketed = /^\[([^\]]+)\](?::\d+)?$/.exec(node);
  const host = bracketed ? bracketed[1]! : node.includes(".") ? node.replace(/:\d+$/, "") : node;
  return isAddress(host) ? host : undefined;
}

/** Dotted-quad IPv4 or IPv6 (not the legacy forms ipaddr.js also parses, like `127.1`). */
const isAddress = (s: string) => ipaddr.IPv4.isValidFourPartDecimal(s) || ipaddr.IPv6.isValid(s);

/**
 * What per-address limits count by: an IPv4 address (IPv4-mapped IPv6 included) as it
 * is, an IPv6 address by its /64, since one subscriber usually holds a whole /64.
 */
export function addressBucket(address: string): string {
  if (!isAddress(address)) return address;
  const parsed = ipaddr.process(address);
  if (parsed.kind() === "ipv4") return parsed.toString();
  const parts = (parsed as ipaddr.IPv6).parts.slice(0, 4);
  return `${new ipaddr.IPv6([...parts, 0, 0, 0, 0]).toString()}/64`;
}

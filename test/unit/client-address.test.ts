import { describe, expect, it } from "vitest";
import { addressBucket, createClientAddress } from "../../src/platform/client-address.js";

/** What the function reads of a request: its headers and the TCP peer. */
const req = (peer: string, headers: Record<string, string> = {}) =>
  ({ headers, socket: { remoteAddress: peer } }) as never;

describe("client address", () => {
  it("is the TCP peer when no proxy is trusted, whatever the headers say", () => {
    const address = createClientAddress([], "x-forwarded-for");
    expect(address(req("127.0.0.1", { "x-forwarded-for": "203.0.113.9" }))).toBe("127.0.0.1");
    expect(createClientAddress([], "forwarded")(req("::1", { forwarded: "for=203.0.113.9" }))).toBe("::1");
  });

  it("reads X-Forwarded-For right to left past trusted hops, and only from a trusted peer", () => {
    const address = createClientAddress(["10.0.0.0/8", "2001:db8::/32"], "x-forwarded-for");
    expect(address(req("10.1.2.3", { "x-forwarded-for": "198.51.100.7" }))).toBe("198.51.100.7");
    // spoofed entries to the left of the first untrusted hop are ignored
    expect(address(req("10.1.2.3", { "x-forwarded-for": "1.1.1.1, 198.51.100.7, 10.9.9.9" }))).toBe("198.51.100.7");
    expect(address(req("2001:db8::5", { "x-forwarded-for": "2001:db8:1::1, 192.0.2.44" }))).toBe("192.0.2.44");
    expect(address(req("192.0.2.1", { "x-forwarded-for": "198.51.100.7" }))).toBe("192.0.2.1"); // untrusted peer
    expect(address(req("10.1.2.3"))).toBe("10.1.2.3"); // a trusted peer without the header
    expect(address(req("::ffff:10.1.2.3", { "x-forwarded-for": "198.51.100.8" }))).toBe("198.51.100.8");
  });

  it("reads RFC 7239 Forwarded the same way: quoted IPv6, ports, several elements, obfuscated nodes", () => {
    const address = createClientAddress(["127.0.0.0/8"], "forwarded");
    expect(address(req("127.0.0.2", { forwarded: "for=198.51.100.7;proto=https" }))).toBe("198.51.100.7");
    expect(address(req("127.0.0.2", { forwarded: 'for="[2001:db8:cafe::17]:4711"' }))).toBe("2001:db8:cafe::17");
    expect(address(req("127.0.0.2", { forwarded: 'for="192.0.2.60:8080", for=127.0.0.9;by=127.0.0.2' }))).toBe(
      "192.0.2.60",
    );
    expect(address(req("127.0.0.2", { forwarded: "for=1.2.3.4, for=198.51.100.7" }))).toBe("198.51.100.7");
    // `unknown` and obfuscated identifiers name no address: the last known one stands
    expect(address(req("127.0.0.2", { forwarded: "for=_hidden" }))).toBe("127.0.0.2");
    expect(address(req("127.0.0.2", { forwarded: "for=203.0.113.5, for=unknown" }))).toBe("127.0.0.2");
    // a header no proxy writes
    expect(address(req("127.0.0.2", { forwarded: 'for="unterminated' }))).toBe("127.0.0.2");
    expect(address(req("192.0.2.1", { forwarded: "for=198.51.100.7" }))).toBe("192.0.2.1");
    // the other header is not read
    expect(address(req("127.0.0.2", { "x-forwarded-for": "198.51.100.7" }))).toBe("127.0.0.2");
  });

  it("counts IPv6 clients by their /64 and IPv4-mapped addresses as IPv4", () => {
    expect(addressBucket("203.0.113.9")).toBe("203.0.113.9");
    expect(addressBucket("::ffff:203.0.113.9")).toBe("203.0.113.9");
    expect(addressBucket("2001:db8:1:2:aaaa:bbbb:cccc:dddd")).toBe("2001:db8:1:2::/64");
    expect(addressBucket("2001:db8:1:2::1")).toBe(addressBucket("2001:db8:1:2:ffff::9"));
    expect(addressBucket("2001:db8:1:3::1")).not.toBe(addressBucket("2001:db8:1:2::1"));
  });
});

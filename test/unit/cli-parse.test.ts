/* The CLI's flag parsers: what an operator types, turned into request fields or refused by name. */
import { LicenseStatus, LicenseStatusSchema } from "@licensd/client/gen/licensd/licensing/v1/license_pb.js";
import { CreateProductRequestSchema } from "@licensd/client/gen/licensd/licensing/v1/licensing_service_pb.js";
import { ModelTier } from "@licensd/client/gen/licensd/licensing/v1/policy_pb.js";
import { InvalidArgumentError } from "commander";
import { describe, expect, it } from "vitest";
import { parseEntitlement } from "../../src/cli/catalog.js";
import { collectPages, withBody } from "../../src/cli/command.js";
import { collectPairs, enumParser, parseBody, parseSeconds, parseTime } from "../../src/cli/parse.js";
import { UsageError } from "../../src/cli/runtime.js";

describe("CLI flag parsers", () => {
  it("durations: units and plain seconds; anything else is refused", () => {
    expect(parseSeconds("90")).toBe(90n);
    expect(parseSeconds("15m")).toBe(900n);
    expect(parseSeconds("30d")).toBe(2_592_000n);
    expect(parseSeconds("1y")).toBe(31_536_000n);
    for (const bad of ["", "-1", "3x", "1.5h", "3 weeks"])
      expect(() => parseSeconds(bad)).toThrow(InvalidArgumentError);
  });

  it("times: ISO 8601, now, and relative to now", () => {
    expect(parseTime("2027-01-31T12:00:00Z").seconds).toBe(BigInt(Date.UTC(2027, 0, 31, 12) / 1000));
    const now = Date.now() / 1000;
    expect(Number(parseTime("+1d").seconds) - now).toBeGreaterThan(86_399);
    expect(now - Number(parseTime("-7d").seconds)).toBeGreaterThan(7 * 86_400 - 1);
    for (const bad of ["tomorrow", "31/01/2027", "+3x", "2027-13-45"])
      expect(() => parseTime(bad)).toThrow(InvalidArgumentError);
  });

  it("enums by short name in any case, refusing others with the list of names", () => {
    const status = enumParser(LicenseStatusSchema);
    expect(status("suspended")).toBe(LicenseStatus.SUSPENDED);
    expect(status("REVOKED")).toBe(LicenseStatus.REVOKED);
    expect(() => status("unspecified")).toThrow("one of active, suspended, expired, revoked");
  });

  it("entitlements: a flag, a limit, a tier, a disabled flag", () => {
    const all = ["sso", "seats=10", "model=premium", "beta=false"].reduce(
      (acc: ReturnType<typeof parseEntitlement>, v) => parseEntitlement(v, acc),
      [],
    );
    expect(all).toEqual([
      { feature: "sso", value: { case: "enabled", value: true } },
      { feature: "seats", value: { case: "limit", value: 10n } },
      { feature: "model", value: { case: "tier", value: ModelTier.PREMIUM } },
      { feature: "beta", value: { case: "enabled", value: false } },
    ]);
    expect(() => parseEntitlement("model=platinum")).toThrow("one of basic, standard, premium, enterprise");
  });

  it("metadata pairs and --body", () => {
    expect(collectPairs("b=2=3", collectPairs("a=1"))).toEqual({ a: "1", b: "2=3" });
    expect(() => collectPairs("novalue")).toThrow("key=value");
    expect(parseBody('{"name":"x"}')).toEqual({ name: "x" });
    expect(() => parseBody("[1]")).toThrow("a JSON object");
    expect(() => parseBody("@/nonexistent/body.json")).toThrow("cannot read /nonexistent/body.json");
  });

  it("withBody: flags win over the body; an unknown body field is a usage error naming it", () => {
    const { message, bodyPaths } = withBody(
      CreateProductRequestSchema,
      { name: "from body", code: "ABC", metadata: { a: "1" } },
      { name: "from flag" },
    );
    expect(message).toMatchObject({ name: "from flag", code: "ABC", metadata: { a: "1" } });
    expect(bodyPaths.sort()).toEqual(["code", "metadata", "name"]);
    expect(() => withBody(CreateProductRequestSchema, { nmae: "x" }, {})).toThrow(UsageError);
    expect(() => withBody(CreateProductRequestSchema, { nmae: "x" }, {})).toThrow(/nmae/);
  });

  it("collectPages stops at the limit, or at the last page with --limit 0", async () => {
    // A server of 7 items whose page tokens are offsets, honouring page_size as licensd does (at most 1000).
    const asked: number[] = [];
    const fetch = async (size: number, token: string) => {
      asked.push(size);
      const from = Number(token || "0");
      const items = [1, 2, 3, 4, 5, 6, 7].slice(from, from + Math.min(size, 3));
      const next = from + items.length < 7 ? String(from + items.length) : "";
      return { items, next };
    };
    expect(await collectPages({ limit: 4 }, fetch)).toEqual({ items: [1, 2, 3, 4], next: "4" });
    expect(asked).toEqual([4, 1]);
    expect(await collectPages({ limit: 0 }, fetch)).toEqual({ items: [1, 2, 3, 4, 5, 6, 7], next: "" });
    expect(await collectPages({ limit: 0, pageToken: "6" }, fetch)).toEqual({ items: [7], next: "" });
  });
});

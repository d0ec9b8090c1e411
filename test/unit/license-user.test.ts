import { InvalidArgumentError } from "commander";
import { describe, expect, it } from "vitest";
import { parseYesNo } from "../../src/cli/parse.js";
import { checkedUserIdentity, userIdentity } from "../../src/licensing/license-user.service.js";
import { DomainError } from "../../src/platform/errors.js";

describe("license user identities", () => {
  it("keeps e-mails in lowercase and vendor ids as given", () => {
    expect(checkedUserIdentity("Ada@Example.COM")).toBe("ada@example.com");
    expect(checkedUserIdentity("first.last+tag@sub.example.co.uk")).toBe("first.last+tag@sub.example.co.uk");
    expect(checkedUserIdentity("User-42")).toBe("User-42");
    expect(checkedUserIdentity("auth0|5f7c8ec7c33c6c004bbafe82")).toBe("auth0|5f7c8ec7c33c6c004bbafe82");
    expect(userIdentity("ADA@example.com")).toBe(userIdentity("ada@EXAMPLE.com"));
    expect(userIdentity("User-42")).not.toBe(userIdentity("user-42"));
  });

  it("refuses a value with @ that is not an e-mail, naming the field", () => {
    for (const bad of [
      "@",
      "ada@",
      "@example.com",
      "ada@example",
      "a@b@example.com",
      "ada@-example.com",
      "ada@ex..com",
    ]) {
      let thrown: unknown;
      try {
        checkedUserIdentity(bad);
      } catch (err) {
        thrown = err;
      }
      expect(thrown, bad).toBeInstanceOf(DomainError);
      expect((thrown as DomainError).reason, bad).toBe("USER_INVALID");
      expect((thrown as DomainError).metadata, bad).toEqual({ field: "user" });
    }
  });
});

describe("licensd policy --require-user-scope", () => {
  it("takes yes or no (so the setting can be turned off again); anything else is refused", () => {
    for (const yes of ["yes", "true", "on", "1"]) expect(parseYesNo(yes)).toBe(true);
    for (const no of ["no", "false", "off", "0"]) expect(parseYesNo(no)).toBe(false);
    for (const bad of ["", "maybe", "YES!", "2"]) expect(() => parseYesNo(bad)).toThrow(InvalidArgumentError);
  });
});

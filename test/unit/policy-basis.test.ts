import { describe, expect, it } from "vitest";
import { startsExpiry } from "../../src/licensing/expiry-start.js";
import { renewalStart } from "../../src/licensing/license.service.js";

const now = new Date("2027-03-01T00:00:00Z");
const ahead = new Date("2027-04-01T00:00:00Z");
const past = new Date("2027-02-01T00:00:00Z");

describe("renewalStart", () => {
  it("FROM_NOW_IF_EXPIRED (the default): the expiry while ahead, else now", () => {
    expect(renewalStart("from_now_if_expired", ahead, now)).toEqual(ahead);
    expect(renewalStart("from_now_if_expired", past, now)).toEqual(now);
    expect(renewalStart("from_now_if_expired", now, now)).toEqual(now);
  });
  it("FROM_EXPIRY: the expiry, even past; FROM_NOW: now, even with the expiry ahead", () => {
    expect(renewalStart("from_expiry", past, now)).toEqual(past);
    expect(renewalStart("from_expiry", ahead, now)).toEqual(ahead);
    expect(renewalStart("from_now", ahead, now)).toEqual(now);
  });
  it("an expiry that has not started starts now, whatever the basis", () => {
    for (const basis of ["from_now_if_expired", "from_expiry", "from_now"] as const)
      expect(renewalStart(basis, null, now)).toEqual(now);
  });
});

describe("startsExpiry", () => {
  it("only the event the basis names starts a waiting expiry; under FROM_CREATION any does", () => {
    expect(startsExpiry("from_first_activation", "activation")).toBe(true);
    expect(startsExpiry("from_first_activation", "validation")).toBe(false);
    expect(startsExpiry("from_first_activation", "use")).toBe(false);
    expect(startsExpiry("from_first_validation", "validation")).toBe(true);
    expect(startsExpiry("from_first_validation", "activation")).toBe(false);
    expect(startsExpiry("from_first_use", "use")).toBe(true);
    expect(startsExpiry("from_first_use", "validation")).toBe(false);
    for (const event of ["activation", "validation", "use"] as const)
      expect(startsExpiry("from_creation", event)).toBe(true);
  });
});

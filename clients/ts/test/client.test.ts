/* createLicensdClient's pure parts: which calls are retried, and how errors are described. */
import { Code, ConnectError } from "@connectrpc/connect";
import {
  AuditService,
  createLicensdClient,
  describeError,
  isIdempotentCall,
  LicensingService,
  UsageService,
} from "@licensd/client";
import { describe, expect, it } from "vitest";

describe("isIdempotentCall", () => {
  const m = LicensingService.method;
  it("is true for reads and for writes that carry an idempotency key, never for streams", () => {
    expect(isIdempotentCall(m.getLicense, { id: "lic_x" })).toBe(true);
    expect(isIdempotentCall(m.validateLicense, { key: "K" })).toBe(true);
    expect(isIdempotentCall(m.createProduct, { code: "ABC", name: "x" })).toBe(false);
    expect(isIdempotentCall(m.createProduct, { code: "ABC", name: "x", idempotencyKey: "k1" })).toBe(true);
    expect(isIdempotentCall(m.suspendLicense, { id: "lic_x", idempotencyKey: "" })).toBe(false);
    const u = UsageService.method;
    expect(isIdempotentCall(u.recordUsage, { event: { metric: "m", idempotencyKey: "e1" } })).toBe(true);
    expect(isIdempotentCall(u.recordUsage, { event: { metric: "m" } })).toBe(false);
    expect(isIdempotentCall(u.streamUsage, {})).toBe(false);
    expect(isIdempotentCall(AuditService.method.tailAuditEvents, {})).toBe(false);
  });
});

describe("describeError", () => {
  it("describes anything thrown, never throwing itself", () => {
    expect(describeError(new Error("boom"))).toMatchObject({ code: Code.Unknown, reason: "UNKNOWN", message: "boom" });
    expect(describeError(new ConnectError("gone", Code.NotFound))).toMatchObject({
      codeName: "not_found",
      reason: "NOT_FOUND",
      domain: "",
      fieldViolations: [],
    });
    expect(describeError(undefined).code).toBe(Code.Unknown);
  });

  it("refuses the gRPC protocol in the browser entry, naming the node one", () => {
    expect(() => createLicensdClient({ baseUrl: "http://127.0.0.1:1", protocol: "grpc" as "connect" })).toThrow(
      /@licensd\/client\/node/,
    );
  });
});
